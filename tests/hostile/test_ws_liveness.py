"""A peer that does not read what we send is closed within a bound the user sets.

Run with ``-s`` to print how long the never-reading flooder lived.
"""

from __future__ import annotations

import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosed
from rue_trio.protocol import Role, WebSocketProtocol
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

from ._ws import client_frame, flood


async def _echo(conn: WebSocketConn) -> None:
    try:
        async for message in conn:
            await conn.send(message.type, message.data)
    except ConnectionClosed:
        pass


async def _seconds_until_flooder_closed(config: ConnectionConfig) -> float | None:
    """Seconds (mock time) until an echo route's connection to a never-reading flooder ends."""
    # Lockstep streams: a write completes only when the other side reads, as a socket
    # whose buffers are full.
    server_stream, attacker = trio.testing.lockstep_stream_pair()
    closed_at = None
    with trio.move_on_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood, attacker, client_frame(2, b"x" * 1024) * 16)
            async with open_websocket_conn(
                server_stream, WebSocketProtocol(Role.SERVER), config=config
            ) as conn:
                await _echo(conn)
            closed_at = trio.current_time()
            nursery.cancel_scope.cancel()
    return closed_at


async def test_server_flooder_never_reading_closed_by_default(autojump_clock: MockClock) -> None:
    seconds = await _seconds_until_flooder_closed(ConnectionConfig())
    print(f"\nnever-reading flooder, default settings: closed after {seconds} s")
    assert seconds is not None
    assert seconds <= 60


async def test_server_flooder_never_reading_closed_after_write_timeout(
    autojump_clock: MockClock,
) -> None:
    """Without keepalive, the write timeout alone closes it."""
    config = ConnectionConfig(ping_interval=None, write_timeout=5, close_timeout=1)
    seconds = await _seconds_until_flooder_closed(config)
    assert seconds is not None
    assert 5 <= seconds <= 5 + 1 + 1


async def test_server_keepalive_never_extends_non_reader_deadline(
    autojump_clock: MockClock,
) -> None:
    """With no write timeout, the keepalive's ping timeout still holds for a non-reader."""
    config = ConnectionConfig(ping_interval=5, ping_timeout=3, write_timeout=None, close_timeout=1)
    seconds = await _seconds_until_flooder_closed(config)
    assert seconds is not None
    assert seconds <= 5 + 3 + 1 + 1


async def _slow_reader(stream: trio.abc.Stream, chunk: int, pause: float, total: int) -> int:
    """Read ``total`` bytes ``chunk`` at a time, ``pause`` seconds apart: a slow link."""
    got = 0
    while got < total:
        await trio.sleep(pause)
        data = await stream.receive_some(chunk)
        if not data:
            break
        got += len(data)
    return got


async def test_server_slow_reading_peer_kept_while_a_write_progresses(
    autojump_clock: MockClock,
) -> None:
    """The write bound is on progress: 1 MiB to a peer reading 16 KiB/s takes a minute."""
    config = ConnectionConfig(ping_interval=None, write_timeout=5, close_timeout=1)
    server_stream, peer = trio.testing.lockstep_stream_pair()
    message = b"x" * (1 << 20)
    received = 0
    done = trio.Event()

    async def read_all() -> None:
        nonlocal received
        received = await _slow_reader(peer, 16 * 1024, 1.0, len(message) + 10)
        done.set()

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            async with open_websocket_conn(
                server_stream, WebSocketProtocol(Role.SERVER), config=config
            ) as conn:
                await conn.send_bytes(message)
                await done.wait()
                assert not conn.closed
                assert trio.current_time() > 60
                nursery.cancel_scope.cancel()
    assert received >= len(message)
