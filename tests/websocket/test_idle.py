"""What a connection keeps while it waits for the peer."""

from __future__ import annotations

import gc
import socket
import struct
import tracemalloc

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosedError
from rue_trio.protocol import Role, WebSocketProtocol
from rue_trio.websocket import WebSocketConn, open_websocket_conn

from ..protocol._util import raw_frame
from ._util import QUIET


def _stream_pair(transport: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    if transport == "memory":
        return trio.testing.memory_stream_pair()
    # A socket is read through its descriptor, not through SocketStream.receive_some.
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


@pytest.mark.parametrize("transport", ["memory", "socket"])
async def test_idle_reader_drops_its_last_read(transport: str, autojump_clock: MockClock) -> None:
    """Once a message is taken, a waiting reader no longer holds the bytes it last read."""
    server_stream, client_stream = _stream_pair(transport)
    protocol = WebSocketProtocol(Role.SERVER)
    async with open_websocket_conn(server_stream, protocol, config=QUIET) as conn:
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await client_stream.send_all(raw_frame(2, b"x" * 60_000))
            message = await conn.receive()
            assert len(message.data) == 60_000
            del message
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # The peer goes: the connection ends without waiting for a close frame.
        await client_stream.aclose()
    # Before, the reader held its last read (here the whole frame) while it waited.
    assert held < 8 * 1024, held


async def test_block_that_cannot_start_its_tasks_leaves_its_nursery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """open_websocket_conn's block is a plain object: a failed start still exits its nursery."""

    def broken_start(self: WebSocketConn, nursery: trio.Nursery) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(WebSocketConn, "_start", broken_start)
    server_stream, _ = trio.testing.memory_stream_pair()
    with pytest.RaisesGroup(RuntimeError):
        async with open_websocket_conn(server_stream, WebSocketProtocol(Role.SERVER)):
            pytest.fail("the block ran")
    # Trio's scopes are intact: this task can still be cancelled and checkpoint.
    with trio.move_on_after(0):
        await trio.sleep_forever()


@pytest.mark.parametrize("reset", [False, True], ids=["end of stream", "reset"])
async def test_reader_parked_on_a_socket_sees_the_peer_go(reset: bool) -> None:
    """The reader waits on the descriptor: the peer's end or reset still ends it (1006)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        peer = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
        server_stream = await listener.accept()
    protocol = WebSocketProtocol(Role.SERVER)
    with trio.fail_after(10):
        async with open_websocket_conn(server_stream, protocol, config=QUIET) as conn:
            await trio.testing.wait_all_tasks_blocked()  # parked in wait_readable
            if reset:
                linger = struct.pack("ii", 1, 0)
                peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            await peer.aclose()
            with pytest.raises(ConnectionClosedError) as info:
                await conn.receive()
    assert conn.close_code == 1006
    cause = info.value.__cause__
    if reset:
        assert isinstance(cause, trio.BrokenResourceError), repr(cause)
    else:
        assert cause is None, repr(cause)
