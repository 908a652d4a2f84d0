"""Hostile WebSocket peers, shared by the tests of the connection layer's limits.

Each attacker is a bare client-side :class:`~rue_trio.protocol.Protocol` writing straight
to a transport and never reading it: what the server under test does with that input is
the point.
"""

from __future__ import annotations

import gc
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing

from rue_trio.protocol import (
    DeflateConfig,
    DeflateParams,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
)
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

_MASK = b"\x00\x00\x00\x00"


def bomb_payload(size: int = 1 << 20) -> bytes:
    """``size`` zero bytes compressed as one permessage-deflate message (about 1 KB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(bytes(size)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame with an all-zero key (masking is then the identity)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((b0, 0x80 | n))
    elif n < 65536:
        header = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + _MASK + payload


def server_protocol(*, deflate: bool = False) -> WebSocketProtocol:
    """A server core; with ``deflate``, it inflates what it receives but sends plain frames
    (the worst case for memory: replies take their full size in the outbound queue)."""
    config = DeflateConfig(min_size=1 << 30)
    codec = PerMessageDeflate(DeflateParams(), is_server=True, config=config) if deflate else None
    return WebSocketProtocol(Role.SERVER, deflate=codec)


async def flood(stream: trio.abc.Stream, chunk: bytes, times: int | None = None) -> None:
    """Write ``chunk`` again and again (``times`` times, or until the transport breaks),
    then wait without reading."""
    try:
        while times is None or times > 0:
            await stream.send_all(chunk)
            if times is not None:
                times -= 1
        await trio.sleep_forever()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


@asynccontextmanager
async def socket_pairs(
    count: int,
) -> AsyncIterator[list[tuple[trio.SocketStream, trio.SocketStream]]]:
    """``count`` connected pairs of real sockets (server end, attacker end)."""
    pairs = []
    try:
        for _ in range(count):
            a, b = trio.socket.socketpair()
            pairs.append((trio.SocketStream(a), trio.SocketStream(b)))
        yield pairs
    finally:
        for server_end, attacker_end in pairs:
            server_end.socket.close()
            attacker_end.socket.close()


async def held_per_connection(
    count: int,
    attack: Callable[[trio.SocketStream], Awaitable[None]],
    route: Callable[[WebSocketConn], Awaitable[None]],
    *,
    deflate: bool = False,
    config: ConnectionConfig | None = None,
) -> float:
    """Bytes the server holds per connection once ``count`` attackers have done their worst.

    Every connection runs ``route``; every attacker runs ``attack`` on its end of a real
    socket pair. Measured with tracemalloc once every task is blocked (the attackers on
    full kernel buffers, the server on whatever bound stopped it).
    """
    # A short close timeout: a failed connection drains the flood until then.
    config = config or ConnectionConfig(ping_interval=None, close_timeout=1)
    gc.collect()
    tracemalloc.start()
    try:
        async with socket_pairs(count) as pairs, trio.open_nursery() as nursery:
            base = tracemalloc.get_traced_memory()[0]

            async def serve(stream: trio.SocketStream) -> None:
                protocol = server_protocol(deflate=deflate)
                async with open_websocket_conn(stream, protocol, config=config) as conn:
                    await route(conn)

            for server_end, attacker_end in pairs:
                nursery.start_soon(serve, server_end)
                nursery.start_soon(attack, attacker_end)
            await trio.testing.wait_all_tasks_blocked(cushion=0.2)
            held = tracemalloc.get_traced_memory()[0] - base
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    return held / count
