"""A real server on 127.0.0.1 for the hub's hostile tests: one WebSocket route and a hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from rue_trio.app import App, Context
from rue_trio.handlers import WebSocketHandler
from rue_trio.hub import Hub


@asynccontextmanager
async def serve_hub(hub: Hub, handler: WebSocketHandler) -> AsyncIterator[int]:
    """Serve ``handler`` at ``/ws`` with ``hub`` running in the background; yield the port."""
    app = App()

    async def ws(c: Context) -> None:
        await handler.handle(c)

    app.get("/ws", ws)
    app.add_background(hub.run)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(app.serve, "127.0.0.1", 0)
        yield addresses[0][1]
        nursery.cancel_scope.cancel()
