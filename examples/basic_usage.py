"""The seed's "Basic Usage": an echo endpoint with the four callbacks.

Run it with ``python examples/basic_usage.py`` and connect to ws://localhost:8080/ws.
"""

from __future__ import annotations

import logging

import rue_trio
from rue_trio import Context, MessageType, WebSocketConn, WebSocketHandler

log = logging.getLogger("basic_usage")


def on_connect(conn: WebSocketConn) -> None:
    log.info("Client connected: %s", conn.id)


async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    log.info("Received: %s", data)
    # Echo the message back
    await conn.send(msg_type, data)


def on_close(conn: WebSocketConn) -> None:
    log.info("Client disconnected: %s", conn.id)


def on_error(conn: WebSocketConn, err: BaseException) -> None:
    log.info("Error: %s", err)


app = rue_trio.default()


@app.get("/ws")
async def ws(c: Context) -> None:
    handler = WebSocketHandler(
        on_connect=on_connect,
        on_message=on_message,
        on_close=on_close,
        on_error=on_error,
    )
    await handler.handle(c)


if __name__ == "__main__":
    app.run(":8080")
