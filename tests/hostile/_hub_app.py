"""A real server on 127.0.0.1 for the hub's hostile tests: one WebSocket route and a hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from rue_trio.app import App, Context
from rue_trio.client import open_websocket
from rue_trio.exceptions import ConnectionClosed
from rue_trio.handlers import WebSocketHandler
from rue_trio.hub import Hub
from rue_trio.protocol import MessageType
from rue_trio.websocket import WebSocketConn


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


@asynccontextmanager
async def serve_chat(hub: Hub) -> AsyncIterator[str]:
    """A route whose clients name the room they join; yield its URL.

    ``join <room>`` joins the room and answers ``joined``; anything else is broadcast to
    the room ``lobby``.
    """

    async def on_message(conn: WebSocketConn, type: MessageType, data: str | bytes) -> None:
        assert isinstance(data, str)
        if data.startswith("join "):
            await hub.join(data[5:], conn)
            await conn.send_text("joined")
        else:
            await hub.broadcast(MessageType.TEXT, data, room="lobby")

    handler = WebSocketHandler(hub=hub, on_message=on_message, max_message_size=1 << 20)
    async with serve_hub(hub, handler) as port:
        yield f"ws://127.0.0.1:{port}/ws"


async def huge_room_closes_only_the_attacker(url: str) -> None:
    """A client joining a room named with 70,000 bytes is closed with 1011, alone."""
    async with open_websocket(url) as bystander:
        await bystander.send_text("join lobby")
        assert (await bystander.receive()).data == "joined"
        async with open_websocket(url) as attacker:
            await attacker.send_text("join " + "x" * 70_000)
            with pytest.raises(ConnectionClosed) as closed:
                await attacker.receive()
            assert closed.value.code == 1011
        await bystander.send_text("still here")
        assert (await bystander.receive()).data == "still here"
