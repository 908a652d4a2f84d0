"""A hostile peer cannot make one connection hold more than its byte budget.

The worst case with the default settings is stated in docs/topics/security.md; these tests
put 100 attackers on real sockets and measure what the server holds with tracemalloc.
Run with ``-s`` to print the figures.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosed, ConnectionClosedError
from rue_trio.protocol import MessageType, Role, WebSocketProtocol
from rue_trio.websocket import WebSocketConn, open_websocket_conn

from ._ws import bomb_payload, client_frame, flood, held_per_connection

MiB = 1 << 20
BUDGET = 4 * MiB
CONNECTIONS = 100


async def _never_read(conn: WebSocketConn) -> None:
    await trio.sleep_forever()


async def _echo(conn: WebSocketConn) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in conn:
            await conn.send(message.type, message.data)


@pytest.mark.parametrize("route", [_never_read, _echo], ids=["not reading", "echo"])
async def test_server_memory_compressed_bombs_bounded(
    route: Callable[[WebSocketConn], Awaitable[None]],
) -> None:
    """Messages of ~1 KB inflating to 1 MiB, the attacker never reading our replies."""
    bomb = client_frame(2, bomb_payload(), rsv1=True)

    async def attack(stream: trio.SocketStream) -> None:
        await flood(stream, bomb * 64)

    with trio.fail_after(60):
        held = await held_per_connection(CONNECTIONS, attack, route, deflate=True)
    print(f"\ncompressed bombs, {route.__name__}: {held / MiB:.2f} MiB per connection")
    assert held < BUDGET


async def test_server_memory_empty_fragments_bounded() -> None:
    """A first frame, then endless empty continuations: failed with 1009, memory bounded."""
    start = client_frame(1, b"x", fin=False)
    # 20,000 frames: past the 16,384 that reach the 1 MiB limit.
    empty = client_frame(0, b"", fin=False) * 10_000

    async def attack(stream: trio.SocketStream) -> None:
        await stream.send_all(start)
        await flood(stream, empty, 2)

    # Fewer connections: parsing 20,000 frames each is slow under tracemalloc.
    with trio.fail_after(60):
        held = await held_per_connection(10, attack, _never_read)
    print(f"\nempty fragments: {held / MiB:.3f} MiB per connection")
    assert held < BUDGET


async def test_server_empty_fragments_fail_1009_quickly(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    fed = 0
    with trio.fail_after(60):
        async with open_websocket_conn(server_stream, WebSocketProtocol(Role.SERVER)) as conn:
            await client_stream.send_all(client_frame(1, b"x", fin=False))
            empty = client_frame(0, b"", fin=False) * 1000
            while conn.state.name == "OPEN" and fed < 10 * MiB:
                await client_stream.send_all(empty)
                fed += len(empty)
                await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(Exception) as info:
                await conn.receive()
    assert getattr(info.value, "code", None) == 1009
    # 1 MiB of budget at 64 bytes per frame: 16,384 frames, 6 bytes each on the wire.
    assert fed <= 200_000


async def test_server_memory_tiny_fragments_bounded() -> None:
    """One-byte fragments cost about their bytes, not a Python object each."""
    start = client_frame(2, b"x", fin=False)
    tiny = client_frame(0, b"y", fin=False) * 10_000

    async def attack(stream: trio.SocketStream) -> None:
        await stream.send_all(start)
        await flood(stream, tiny, 2)

    with trio.fail_after(60):
        held = await held_per_connection(10, attack, _never_read)
    print(f"\ntiny fragments: {held / MiB:.3f} MiB per connection")
    assert held < BUDGET


async def test_server_closed_connections_leave_no_cycles(autojump_clock: MockClock) -> None:
    """1,000 connections open, exchange a message and close: no garbage of ours to collect."""

    async def one(ending: int) -> None:
        server_stream, client_stream = trio.testing.memory_stream_pair()
        async with open_websocket_conn(server_stream, WebSocketProtocol(Role.SERVER)) as server:
            if ending == 0:
                # A normal exchange and closing handshake.
                async with open_websocket_conn(
                    client_stream, WebSocketProtocol(Role.CLIENT)
                ) as client:
                    await client.send_text("hello")
                    assert (await server.receive()).data == "hello"
                    await server.send_text("bye")
                    assert (await client.receive()).data == "bye"
            elif ending == 1:
                # A protocol violation (reserved opcode): failed with 1002.
                await client_stream.send_all(client_frame(3, b""))
                with pytest.raises(ConnectionClosedError):
                    await server.receive()
            elif ending == 2:
                # A message too big, inflated: failed with 1009.
                await client_stream.send_all(client_frame(2, bytes(2 * MiB)))
                with pytest.raises(ConnectionClosedError):
                    await server.receive()
            else:
                # The peer vanishes: 1006.
                await client_stream.aclose()
                with pytest.raises(ConnectionClosedError):
                    await server.receive()

    assert await _garbage_of_ours(one, 4, 1000) == []


async def test_server_owner_read_connections_leave_no_cycles(autojump_clock: MockClock) -> None:
    """The handler's way (the owner task reads): every ending, raising ones included."""

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "boom":
            raise RuntimeError("callback bug")
        if data == "stuck":
            await trio.sleep_forever()
        await conn.send(msg_type, data)

    async def owner(server_stream: trio.abc.Stream) -> None:
        async with open_websocket_conn(
            server_stream, WebSocketProtocol(Role.SERVER), _owner_reads=True
        ) as server:
            try:
                await server._run_reader(on_message)
            except RuntimeError:
                with trio.CancelScope(shield=True):
                    await server.close(1011)
            except ConnectionClosedError:
                pass

    async def one(ending: int) -> None:
        server_stream, client_stream = trio.testing.memory_stream_pair()
        async with (
            trio.open_nursery() as nursery,
            open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT)) as client,
        ):
            scope = trio.CancelScope()

            async def cancellable() -> None:
                with scope:
                    await owner(server_stream)

            nursery.start_soon(cancellable)
            if ending == 4:
                await client._out.send(client_frame(3, b""))  # reserved opcode: 1002
            else:
                await client.send_text(["hello", "boom", "stuck", "stuck"][ending])
            if ending == 0:
                assert (await client.receive()).data == "hello"
                await client.close()
            elif ending == 2:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()  # the owner going away: 1001
            elif ending == 3:
                await trio.testing.wait_all_tasks_blocked()
                client._abort(OSError("the peer vanishes"))  # 1006
            with contextlib.suppress(ConnectionClosed):
                await client.receive()

    assert await _garbage_of_ours(one, 5, 500) == []


async def _garbage_of_ours(
    one: Callable[[int], Awaitable[None]], endings: int, count: int
) -> list[object]:
    """Run ``one(i % endings)`` ``count`` times with the collector off; what only it frees."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(count):
            await one(i % endings)
        gc.collect()
        return [obj for obj in gc.garbage if _is_ours(obj)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _is_ours(obj: object) -> bool:
    """Whether ``obj`` is a rue_trio object, or the frame or coroutine of rue_trio code."""
    code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None)
    if code is not None:
        return "rue_trio" in code.co_filename and "tests" not in code.co_filename
    return type(obj).__module__.startswith("rue_trio")
