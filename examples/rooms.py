"""The seed's "Room-based Broadcasting", with the Hub's rooms instead of a mutex.

The Go version keeps a map of rooms behind a lock; here the Hub owns the room table and
join, leave and broadcast are messages to it. A connection leaves its rooms by itself
when it ends, so ``on_close`` has nothing left to do.
"""

from __future__ import annotations

import rue_trio
from rue_trio import Context, Hub, MessageType, WebSocketConn, WebSocketHandler

app = rue_trio.default()
chat = Hub()
app.add_background(chat.run)


@app.get("/ws/:room")
async def ws(c: Context) -> None:
    room = c.param("room")

    async def on_connect(conn: WebSocketConn) -> None:
        await chat.join(room, conn)

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await chat.broadcast(msg_type, data, room=room)

    handler = WebSocketHandler(hub=chat, on_connect=on_connect, on_message=on_message)
    await handler.handle(c)


if __name__ == "__main__":
    app.run(":8080")
