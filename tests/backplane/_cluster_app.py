"""A chat app whose workers share one port and one hub over Redis (issue 5).

Usage: ``python -m tests.backplane._cluster_app WORKERS`` with ``RUE_TRIO_REDIS_URL`` and
``RUE_TRIO_TEST_NAMESPACE`` set. Each connection first gets ``worker <pid>``; then every
message is broadcast to the others in its room, on every worker.
"""

from __future__ import annotations

import os
import sys

import rue_trio
from rue_trio import Context, Hub, MessageType, WebSocketConn, WebSocketHandler
from rue_trio.backplane import RedisBackplane

app = rue_trio.App()
hub = Hub(
    backplane=RedisBackplane(
        os.environ["RUE_TRIO_REDIS_URL"], namespace=os.environ["RUE_TRIO_TEST_NAMESPACE"]
    )
)
app.add_background(hub.run)


@app.get("/ws/:room")
async def ws(c: Context) -> None:
    room = c.param("room")

    async def on_connect(conn: WebSocketConn) -> None:
        await hub.join(room, conn)
        await conn.send(MessageType.TEXT, f"worker {os.getpid()}")

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await hub.broadcast(msg_type, data, room=room, exclude=conn)

    await WebSocketHandler(hub=hub, on_connect=on_connect, on_message=on_message).handle(c)


if __name__ == "__main__":
    app.run("127.0.0.1:0", workers=int(sys.argv[1]))
