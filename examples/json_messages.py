"""The seed's "JSON Messages": a chat of ``{type, content, from}`` messages on a Hub.

``chat`` messages are broadcast to every connected client; ``ping`` gets a ``pong``
back on the same connection; anything that is not valid JSON is logged and ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import rue_trio
from rue_trio import Context, Hub, MessageType, TextMessage, WebSocketConn, WebSocketHandler

log = logging.getLogger("json_messages")


@dataclass
class Message:
    type: str
    content: str = ""
    from_: str = ""

    def to_json(self) -> str:
        fields = asdict(self)
        fields["from"] = fields.pop("from_")
        return json.dumps(fields, separators=(",", ":"))


app = rue_trio.default()
hub = Hub()
app.add_background(hub.run)


async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    try:
        raw = json.loads(data)
        msg = Message(type=raw["type"], content=raw.get("content", ""), from_=raw.get("from", ""))
    except (ValueError, KeyError, TypeError) as err:
        log.info("Invalid JSON: %s", err)
        return
    if msg.type == "chat":
        # Handle chat message
        response = Message(type="chat", content=msg.content, from_=msg.from_)
        await hub.broadcast(TextMessage, response.to_json())
    elif msg.type == "ping":
        # Handle ping
        await conn.send(TextMessage, Message(type="pong").to_json())


handler = WebSocketHandler(hub=hub, on_message=on_message)


@app.get("/ws")
async def ws(c: Context) -> None:
    await handler.handle(c)


if __name__ == "__main__":
    app.run(":8080")
