"""The seed's "Message Types": tell text from binary, and send each kind.

Every message gets two answers: the text ``Hello`` and a binary message holding the
received data's length as four big-endian bytes.
"""

from __future__ import annotations

import logging

import rue_trio
from rue_trio import BinaryMessage, Context, MessageType, TextMessage, WebSocketConn

log = logging.getLogger("message_types")


async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    if msg_type == TextMessage:
        # Handle text message
        log.info("Text: %s", data)
    elif msg_type == BinaryMessage:
        # Handle binary message
        log.info("Binary: %d bytes", len(data))
    # Send text message
    await conn.send(TextMessage, "Hello")
    # Send binary message
    binary_data = len(data).to_bytes(4, "big")
    await conn.send(BinaryMessage, binary_data)


app = rue_trio.default()
handler = rue_trio.WebSocketHandler(on_message=on_message)


@app.get("/ws")
async def ws(c: Context) -> None:
    await handler.handle(c)


if __name__ == "__main__":
    app.run(":8080")
