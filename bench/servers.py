"""The servers compared by bench/driver.py: one process per server, one server per process.

Usage (the driver starts these itself; by hand only to try one)::

    python bench/servers.py --server NAME [--mode echo|bcast] [--compression] [--port 0]

The server binds 127.0.0.1 (port 0 by default: the kernel picks a free port), prints
``PORT <n>`` on stdout once it accepts connections, and stops by itself after
``--lifetime`` seconds (a bound in case the driver dies without killing it). It raises its own
RLIMIT_NOFILE to the hard limit so that it can hold 10,000 connections.

Modes:

* ``echo``: every message received is sent back to its sender, with the same type.
* ``bcast``: every message received is sent to every *other* connected client (the driver's
  publisher is the only one that sends; its subscribers only receive). Each server does it
  in its library's own idiom, described in a comment where the server defines it.

Every WebSocket server serves its handler on ``/ws`` and ``/bcast`` (the paths the driver
uses for echo and broadcast; some serve any path), with keepalive pings off (the benchmark
measures traffic, not timers), message size limits raised to 16 MiB (scenario d sends 1 MiB
messages, exactly some libraries' default limit) and permessage-deflate off unless
``--compression`` is given (then each library's default deflate settings).

``plain-trio`` speaks no WebSocket at all: length-prefixed frames (4-byte big-endian length,
then the payload) over a Trio TCP stream, with no handshake. It is the floor any Trio server
pays for reading and writing the same messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import trio

MAX_SIZE = 16 * 1024 * 1024
# plain-trio's per-connection outbound buffer in bcast mode: a burst of the driver (200
# messages) fits; a subscriber that falls further behind is disconnected (the gorilla/Rue
# slow-consumer policy) rather than stalling the publisher.
PLAIN_BCAST_BUFFER = 1024


def raise_nofile_limit() -> None:
    """Raise this process's open-file limit to the hard limit (benchmark processes only)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(port: int) -> None:
    """Tell the driver which port we listen on."""
    print(f"PORT {port}", flush=True)


# ---------------------------------------------------------------------------------------
# plain-trio: length-prefixed frames, the floor.


async def plain_echo(stream: trio.SocketStream) -> None:
    """Echo length-prefixed messages: one receive per chunk, one send_all per chunk.

    Every complete message of a chunk is cut out as its own bytes object (what a server hands
    to a handler), and the replies to one chunk go out in one send_all: the least a Trio
    server can do per message and per chunk.
    """
    buf = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            replies = []
            pos = 0
            n = len(buf)
            while n - pos >= 4:
                end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
                if end > n:
                    break
                message = bytes(buf[pos + 4 : end])
                replies.append(len(message).to_bytes(4, "big"))
                replies.append(message)
                pos = end
            if pos:
                del buf[:pos]
            if replies:
                await stream.send_all(b"".join(replies))
    except trio.BrokenResourceError:
        return
    finally:
        await stream.aclose()


class PlainHub:
    """plain-trio's broadcast idiom: a send channel per connection, a writer task each.

    The reader that gets a message frames it once and offers the same bytes to every other
    connection's channel without blocking; a full channel disconnects that subscriber. Each
    writer drains whatever is queued into one send_all (coalesced writes).
    """

    def __init__(self) -> None:
        self.members: dict[int, tuple[trio.MemorySendChannel[bytes], trio.CancelScope]] = {}
        self.next_id = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        me = self.next_id
        self.next_id += 1
        send, receive = trio.open_memory_channel[bytes](PLAIN_BCAST_BUFFER)
        try:
            async with trio.open_nursery() as nursery:
                self.members[me] = (send, nursery.cancel_scope)
                nursery.start_soon(self.writer, stream, receive)
                await self.reader(me, stream)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            # The subscriber went away (reset while writing or reading): drop it quietly.
            pass
        finally:
            self.members.pop(me, None)
            await stream.aclose()

    async def reader(self, me: int, stream: trio.SocketStream) -> None:
        buf = bytearray()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            while len(buf) >= 4:
                end = 4 + int.from_bytes(buf[:4], "big")
                if len(buf) < end:
                    break
                frame = bytes(buf[:end])
                del buf[:end]
                for member, (channel, scope) in list(self.members.items()):
                    if member == me:
                        continue
                    try:
                        channel.send_nowait(frame)
                    except trio.WouldBlock:
                        scope.cancel()

    @staticmethod
    async def writer(stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        while True:
            first = await receive.receive()
            batch = [first]
            with contextlib.suppress(trio.WouldBlock):
                while len(batch) < 256:
                    batch.append(receive.receive_nowait())
            await stream.send_all(b"".join(batch) if len(batch) > 1 else first)


async def run_plain_trio(args: argparse.Namespace) -> None:
    handler: Callable[[trio.SocketStream], Awaitable[None]]
    handler = PlainHub().handle if args.mode == "bcast" else plain_echo
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, args.port, host=HOST))
        announce(listeners[0].socket.getsockname()[1])


# ---------------------------------------------------------------------------------------
# trio-websocket


async def run_trio_websocket(args: argparse.Namespace) -> None:
    from trio_websocket import ConnectionClosed, WebSocketConnection, serve_websocket

    if args.compression:
        raise SystemExit("trio-websocket does not offer permessage-deflate")
    members: set[WebSocketConnection] = set()

    async def echo(request: Any) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            return

    async def bcast(request: Any) -> None:
        # trio-websocket has no broadcast helper: the idiom is a set of connections and a
        # loop awaiting send_message on each (a slow subscriber delays the others).
        ws = await request.accept()
        members.add(ws)
        try:
            while True:
                message = await ws.get_message()
                for other in list(members):
                    if other is not ws:
                        with contextlib.suppress(ConnectionClosed):
                            await other.send_message(message)
        except ConnectionClosed:
            return
        finally:
            members.discard(ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                bcast if args.mode == "bcast" else echo,
                HOST,
                args.port,
                None,
                max_message_size=MAX_SIZE,
            )
        )
        announce(server.port)


# ---------------------------------------------------------------------------------------
# websockets (Trio implementation, websockets >= 15.1)


async def run_websockets_trio(args: argparse.Namespace) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.trio.server import ServerConnection, broadcast, serve

    members: set[ServerConnection] = set()

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    async def bcast(ws: ServerConnection) -> None:
        # The websockets docs' idiom (topics/broadcast): a set of clients and broadcast(),
        # which in the Trio flavour writes to each connection in its own task.
        members.add(ws)
        try:
            async for message in ws:
                await broadcast([c for c in members if c is not ws], message)
        except ConnectionClosed:
            return
        finally:
            members.discard(ws)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve,
                bcast if args.mode == "bcast" else echo,
                args.port,
                host=HOST,
                compression="deflate" if args.compression else None,
                ping_interval=None,
                max_size=MAX_SIZE,
            )
        )
        announce(server.listeners[0].socket.getsockname()[1])


# ---------------------------------------------------------------------------------------
# websockets (asyncio implementation)


async def run_websockets_asyncio(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    members: set[ServerConnection] = set()

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    async def bcast(ws: ServerConnection) -> None:
        # websockets.broadcast(): synchronous, writes into each transport's buffer and skips
        # connections whose buffer is above the high-water mark (slow consumers).
        members.add(ws)
        try:
            async for message in ws:
                broadcast([c for c in members if c is not ws], message)
        except ConnectionClosed:
            return
        finally:
            members.discard(ws)

    async with serve(
        bcast if args.mode == "bcast" else echo,
        HOST,
        args.port,
        compression="deflate" if args.compression else None,
        ping_interval=None,
        max_size=MAX_SIZE,
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await asyncio.sleep(args.lifetime)


# ---------------------------------------------------------------------------------------
# aiohttp


async def run_aiohttp(args: argparse.Namespace) -> None:
    from aiohttp import WSMsgType, web

    members: set[web.WebSocketResponse] = set()

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=args.compression, max_msg_size=MAX_SIZE)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    async def bcast(request: web.Request) -> web.WebSocketResponse:
        # aiohttp's chat-example idiom: keep the responses in a set, await send_* on each.
        ws = web.WebSocketResponse(compress=args.compression, max_msg_size=MAX_SIZE)
        await ws.prepare(request)
        members.add(ws)
        try:
            async for msg in ws:
                others = [c for c in members if c is not ws]
                if msg.type == WSMsgType.TEXT:
                    for other in others:
                        await other.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    for other in others:
                        await other.send_bytes(msg.data)
        finally:
            members.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", bcast if args.mode == "bcast" else echo)
    # No access log: the other servers log nothing per connection either.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, args.port)
    await site.start()
    assert site._server is not None
    announce(site._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    try:
        await asyncio.sleep(args.lifetime)
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------
# picows (Cython, asyncio): the fastest Python peer, frames rather than messages


async def run_picows(args: argparse.Namespace) -> None:
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        ws_create_server,
    )

    members: set[WSTransport] = set()
    bcast = args.mode == "bcast"

    class Listener(WSListener):
        """picows' idiom: a listener per connection, called for each frame."""

        def __init__(self) -> None:
            self.parts: list[bytes] = []
            self.type = WSMsgType.BINARY

        def on_ws_connected(self, transport: WSTransport) -> None:
            if bcast:
                members.add(transport)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            members.discard(transport)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
                return
            if kind not in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
                return  # pings are answered by picows (enable_auto_pong)
            if kind != WSMsgType.CONTINUATION:
                self.type = kind
            if not frame.fin or self.parts:
                # picows hands over frames: a fragmented message is assembled here.
                self.parts.append(frame.get_payload_as_bytes())
                if not frame.fin:
                    return
                payload = b"".join(self.parts)
                self.parts.clear()
            else:
                payload = frame.get_payload_as_bytes()
            if not bcast:
                transport.send(self.type, payload)
                return
            for other in members:
                if other is not transport:
                    other.send(self.type, payload)

    def factory(request: WSUpgradeRequest) -> Listener:
        return Listener()

    server = await ws_create_server(factory, HOST, args.port, max_frame_size=MAX_SIZE)
    announce(server.sockets[0].getsockname()[1])
    try:
        await asyncio.sleep(args.lifetime)
    finally:
        server.close()


# ---------------------------------------------------------------------------------------
# rue_trio, our server


async def run_rue_trio(args: argparse.Namespace) -> None:
    import rue_trio

    app = rue_trio.App(tune_gc=not args.no_tune_gc)
    options = rue_options()
    if args.mode == "bcast":
        # Rue's idiom: a Hub run beside the server; each connection registered on connect;
        # a message from the publisher broadcast to everyone but it (encoded once).
        hub = rue_trio.Hub()
        app.add_background(hub.run)

        async def on_publish(conn: Any, msg_type: Any, data: Any) -> None:
            await hub.broadcast(msg_type, data, exclude=conn)

        handler = rue_trio.WebSocketHandler(
            hub=hub, on_message=on_publish, compression=args.compression, **options
        )
    else:

        async def on_echo(conn: Any, msg_type: Any, data: Any) -> None:
            await conn.send(msg_type, data)

        handler = rue_trio.WebSocketHandler(
            on_message=on_echo, compression=args.compression, **options
        )

    async def route(c: Any) -> None:
        await handler.handle(c)

    app.get("/ws", route)
    app.get("/bcast", route)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(partial(app.serve, HOST, args.port))
        announce(_port_of(addresses, args.port))


def rue_options() -> dict[str, Any]:
    """rue_trio.WebSocketHandler options matching the other servers: no keepalive, 16 MiB.

    Everything else keeps rue_trio's defaults (queues, slow-consumer policy, deflate).
    """
    from rue_trio.websocket import ConnectionConfig

    return {"max_message_size": MAX_SIZE, "config": ConnectionConfig(ping_interval=None)}


def _port_of(started: Any, requested: int) -> int:
    """Find the bound port in what app.serve reports through task_status."""
    for item in started if isinstance(started, list) else [started]:
        if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], int):
            return item[1]
        if isinstance(item, int) and item > 0:
            return item
    if requested:
        return requested
    raise SystemExit(f"cannot find the port in app.serve's task_status value {started!r}")


# ---------------------------------------------------------------------------------------

HOST = "127.0.0.1"

TRIO_SERVERS: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
    "plain-trio": run_plain_trio,
    "trio-websocket": run_trio_websocket,
    "websockets-trio": run_websockets_trio,
    "rue_trio": run_rue_trio,
}
ASYNCIO_SERVERS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, None]]] = {
    "websockets-asyncio": run_websockets_asyncio,
    "aiohttp": run_aiohttp,
    "picows": run_picows,
}
SERVERS = [*TRIO_SERVERS, *ASYNCIO_SERVERS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, choices=SERVERS)
    parser.add_argument("--mode", choices=["echo", "bcast"], default="echo")
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--no-tune-gc", action="store_true", help="rue_trio: App(tune_gc=False)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=900.0, help="stop after this many s")
    args = parser.parse_args()
    raise_nofile_limit()
    if args.server in TRIO_SERVERS:

        async def bounded() -> None:
            with trio.move_on_after(args.lifetime):
                await TRIO_SERVERS[args.server](args)

        trio.run(bounded)
    else:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(ASYNCIO_SERVERS[args.server](args))
    sys.exit(0)


if __name__ == "__main__":
    main()
