"""The seed's "Hub for Broadcasting": every message goes to every connected client.

``app.add_background(hub.run)`` is the seed's ``go hub.Run()``: the app runs the hub
beside the server, in its own nursery, and stops it when the server stops.
"""

from __future__ import annotations

import logging

import rue_trio
from rue_trio import Context, Hub, MessageType, WebSocketConn, WebSocketHandler

log = logging.getLogger("hub_broadcast")

app = rue_trio.default()
# Create and start the hub
hub = Hub()
app.add_background(hub.run)


def on_connect(conn: WebSocketConn) -> None:
    log.info("Client %s connected", conn.id)


async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    # Broadcast to all connected clients
    await hub.broadcast(msg_type, data)


@app.get("/ws")
async def ws(c: Context) -> None:
    handler = WebSocketHandler(hub=hub, on_connect=on_connect, on_message=on_message)
    await handler.handle(c)


if __name__ == "__main__":
    app.run(":8080")
