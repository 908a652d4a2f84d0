"""Closing: the handshake both ways, timeouts, leaving the block, failures and their causes."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidPayloadError,
    MessageTooBigError,
    ProtocolError,
)
from rue_trio.protocol import CloseReceived, Message, MessageType, Role, State, WebSocketProtocol
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

from ..protocol._util import raw_frame
from ._util import QUIET, RawPeer, WrappedStream, conn_pair


async def test_client_close_with_code_server_sees_code(autojump_clock: MockClock) -> None:
    """RFC 6455 section 7.1.2: the code and reason go to the peer; it echoes the code."""
    async with conn_pair() as (server, client):
        await client.close(4000, "bye")
        assert client.closed
        assert client.state is State.CLOSED
        assert client.close_code == 4000
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert (info.value.code, info.value.reason) == (4000, "bye")
        assert info.value.rcvd_then_sent
        assert server.close_code == 4000
        assert server.close_reason == "bye"


async def test_server_close_going_away_client_sees_ok(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await server.close(1001, "restarting")
        with pytest.raises(ConnectionClosedOK) as info:
            await client.receive()
        assert info.value.code == 1001
        assert info.value.reason == "restarting"
        assert server.closed
        assert client.closed


async def test_client_close_queued_messages_flushed_before_close_frame(
    autojump_clock: MockClock,
) -> None:
    """Cancellation-safe (design.md): what was queued before close() goes out first."""
    async with conn_pair() as (server, client):
        for i in range(10):
            await client.send_text(str(i))
        await client.close()
        received = [message.data async for message in server]
        assert received == [str(i) for i in range(10)]


async def test_client_close_returns_at_once_with_healthy_peer(autojump_clock: MockClock) -> None:
    async with conn_pair() as (_server, client):
        start = trio.current_time()
        await client.close()
        assert trio.current_time() == start


async def test_client_close_twice_is_harmless(autojump_clock: MockClock) -> None:
    async with conn_pair() as (_server, client):
        await client.close()
        await client.close(4001)
        await client.aclose()
        assert client.close_code == 1000


async def test_client_close_invalid_code_value_error(autojump_clock: MockClock) -> None:
    async with conn_pair() as (_server, client):
        with pytest.raises(ValueError):
            await client.close(999)
        assert client.state is State.OPEN


async def test_server_receive_blocked_then_peer_closes_raises_ok(
    autojump_clock: MockClock,
) -> None:
    async with conn_pair() as (server, client), trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(ConnectionClosedOK):
                await server.receive()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await client.close()


async def test_client_send_after_close_raises_ok(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await server.close()
        with pytest.raises(ConnectionClosedOK):
            await client.send_text("too late")
        with pytest.raises(ConnectionClosedOK):
            await client.ping()


async def test_server_close_silent_peer_aborts_after_close_timeout(
    autojump_clock: MockClock,
) -> None:
    """RFC 6455 section 7.1.1: the wait for the peer's close frame is bounded."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    config = ConnectionConfig(ping_interval=None, close_timeout=7)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=config
    ) as server:
        start = trio.current_time()
        await server.close()
        assert trio.current_time() - start == 7
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert info.value.sent is not None
        assert info.value.rcvd is None
        assert isinstance(info.value.__cause__, TimeoutError)
    assert await peer.next_event() == CloseReceived(1000, "")


async def test_client_close_server_keeps_tcp_open_client_ends_it_after_timeout(
    autojump_clock: MockClock,
) -> None:
    """RFC 6455 section 7.1.1: the client waits for the server to close TCP, not forever."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, Role.SERVER)
    config = ConnectionConfig(ping_interval=None, close_timeout=5)
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=config
    ) as client:
        async with trio.open_nursery() as nursery:

            async def answer_close_keep_tcp() -> None:
                assert await peer.next_event() == CloseReceived(1000, "")
                await peer.flush()  # the echo, but no end of stream

            nursery.start_soon(answer_close_keep_tcp)
            start = trio.current_time()
            await client.close()
            assert trio.current_time() - start == 5
        with pytest.raises(ConnectionClosedOK) as info:
            await client.receive()
        assert info.value.__cause__ is None
    # The client closed its end.
    assert await peer.next_event() is None


async def test_server_peer_closes_first_server_ends_tcp(autojump_clock: MockClock) -> None:
    """RFC 6455 section 7.1.1: after the handshake the server closes the TCP connection."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        peer.protocol.send_close(1000, "done")
        await peer.flush()
        assert await peer.read_until_eof() == [CloseReceived(1000, "")]
        with pytest.raises(ConnectionClosedOK):
            await server.receive()
        assert server.state is State.CLOSED


async def test_server_handshake_complete_closes_tcp_without_waiting_for_peer_eof(
    autojump_clock: MockClock,
) -> None:
    """RFC 6455 section 7.1.1: once both close frames went, the server closes TCP at once.

    The peer sends nothing after its close frame, so the server does not wait for the
    peer's end of the stream (this peer never sends it): the connection is over at once,
    with no timeout and no error.
    """
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        peer.protocol.send_close(1000, "done")
        await peer.flush()
        start = trio.current_time()
        with pytest.raises(ConnectionClosedOK):
            await server.receive()
        assert trio.current_time() == start
        assert server.closed
        assert server.close_code == 1000
    assert await peer.read_until_eof() == [CloseReceived(1000, "")]


async def test_server_block_normal_exit_closes_1000(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as client:
        async with open_websocket_conn(
            server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
        ):
            pass
        with pytest.raises(ConnectionClosedOK) as info:
            await client.receive()
        assert info.value.code == 1000


async def test_server_block_raises_closes_1011_and_reraises_unwrapped(
    autojump_clock: MockClock,
) -> None:
    """Errors are local (design.md): no exception group for a single failure."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as client:
        with pytest.raises(KeyError) as raised:
            async with open_websocket_conn(
                server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
            ):
                raise KeyError("boom")
        assert type(raised.value) is KeyError
        with pytest.raises(ConnectionClosedError) as info:
            await client.receive()
        assert info.value.code == 1011


async def test_server_block_raises_after_close_reraises_without_new_frame(
    autojump_clock: MockClock,
) -> None:
    async with conn_pair() as (server, client):
        await client.close()
        with pytest.raises(ConnectionClosedOK):
            await server.receive()
        assert server.close_code == 1000


async def test_server_owner_cancelled_closes_1001_cancelled_propagates(
    autojump_clock: MockClock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    after_block = False

    async def serve() -> None:
        nonlocal after_block
        async with open_websocket_conn(
            server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
        ):
            await trio.sleep_forever()
        after_block = True

    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as client:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        assert not after_block
        # The healthy peer answered at once: no timeout was needed.
        assert trio.current_time() == start
        with pytest.raises(ConnectionClosedOK) as info:
            await client.receive()
        assert (info.value.code, info.value.reason) == (1001, "going away")


async def test_server_owner_cancelled_silent_peer_bounded_by_close_timeout(
    autojump_clock: MockClock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    config = ConnectionConfig(ping_interval=None, close_timeout=3)

    async def serve() -> None:
        async with open_websocket_conn(
            server_stream, WebSocketProtocol(Role.SERVER), config=config
        ):
            await trio.sleep_forever()

    with trio.move_on_after(1):
        await serve()
    assert trio.current_time() == 1 + 3
    assert await peer.next_event() == CloseReceived(1001, "going away")


async def test_server_peer_protocol_violation_closes_1002_with_cause(
    autojump_clock: MockClock,
) -> None:
    """RFC 6455 section 5.1: a server fails the connection on an unmasked client frame."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        await client_stream.send_all(raw_frame(0x1, b"hello", mask=None))
        events = await peer.read_until_eof()
        assert len(events) == 1
        assert isinstance(events[0], CloseReceived)
        assert events[0].code == 1002
        await client_stream.aclose()
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert info.value.code == 1002
        assert type(info.value.__cause__) is ProtocolError
        assert server.close_code == 1002


@pytest.mark.parametrize(
    ("frame", "code", "error"),
    [
        (raw_frame(0x1, b"\xff\xfe"), 1007, InvalidPayloadError),
        (raw_frame(0x2, b"x" * 200), 1009, MessageTooBigError),
    ],
)
async def test_server_peer_bad_payload_closes_with_rfc_code(
    frame: bytes, code: int, error: type[ProtocolError], autojump_clock: MockClock
) -> None:
    """RFC 6455 sections 8.1 and 10.4 / 7.4.1: 1007 for bad UTF-8, 1009 for too big."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    protocol = WebSocketProtocol(Role.SERVER, max_message_size=100)
    async with open_websocket_conn(server_stream, protocol, config=QUIET) as server:
        await client_stream.send_all(raw_frame(0x1, b"fine") + frame)
        event = await peer.next_event()
        assert isinstance(event, CloseReceived)
        assert event.code == code
        await client_stream.aclose()
        assert await server.receive() == Message(MessageType.TEXT, "fine")
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert isinstance(info.value.__cause__, error)


async def test_server_transport_reset_closed_error_with_cause(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    wrapped = WrappedStream(server_stream)
    async with open_websocket_conn(
        wrapped, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        await trio.testing.wait_all_tasks_blocked()
        wrapped.break_receive()
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert info.value.code == 1006
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
        assert isinstance(info.value.__cause__.__cause__, ConnectionResetError)
        with pytest.raises(ConnectionClosedError):
            await server.send_text("nobody listens")
    del client_stream


async def test_server_transport_write_fails_closed_error_with_cause(
    autojump_clock: MockClock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    wrapped = WrappedStream(server_stream)
    async with open_websocket_conn(
        wrapped, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        wrapped.break_send()
        # Sending only queues; the writer's failure ends the connection.
        await server.send_text("lost")
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert info.value.code == 1006
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
        with pytest.raises(ConnectionClosedError) as info:
            await server.send_text("again")
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
    del client_stream


async def test_server_peer_vanishes_without_close_frame_1006(autojump_clock: MockClock) -> None:
    """RFC 6455 section 7.1.5: no close frame means 1006."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        await client_stream.aclose()
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert info.value.code == 1006
        assert server.close_code == 1006
        # An orderly end of stream is not an error of ours: no cause.
        assert info.value.__cause__ is None


async def test_server_close_with_full_inbound_buffer_completes(autojump_clock: MockClock) -> None:
    """The reader waiting for the application must not stall a close the application asked for."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    config = ConnectionConfig(ping_interval=None, inbound_queue=1)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=config
    ) as server:
        for i in range(5):
            peer.protocol.send_text(str(i))
        await peer.flush()
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().inbound_messages == 1
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                assert await peer.next_event() == CloseReceived(1000, "")
                await peer.flush()
                await client_stream.aclose()

            nursery.start_soon(answer)
            start = trio.current_time()
            await server.close()
            assert trio.current_time() == start
        assert await server.receive() == Message(MessageType.TEXT, "0")
        with pytest.raises(ConnectionClosedOK):
            await server.receive()


async def test_client_send_cancelled_waiting_for_room_peer_gets_none_of_it(
    autojump_clock: MockClock,
) -> None:
    """Cancellation-safe (design.md), with compression so that the context would show it."""
    await _check_cancelled_send(deflate=True)
    await _check_cancelled_send(deflate=False)


async def _check_cancelled_send(*, deflate: bool) -> None:
    client_config = ConnectionConfig(ping_interval=None, outbound_queue_messages=1)
    server_config = ConnectionConfig(ping_interval=None, inbound_queue=1)
    async with conn_pair(
        lockstep=True, deflate=deflate, server_config=server_config, client_config=client_config
    ) as (server, client):
        text = "compressible " * 20
        sent = 0
        # Fill everything: the server's buffer, its reader, the lockstep stream and the
        # client's queue, until a send has to wait.
        while True:
            with trio.move_on_after(1) as scope:
                await client.send_text(f"{sent} {text}")
            if scope.cancelled_caught:
                break
            sent += 1
        assert sent >= 3
        assert client._out.statistics().tasks_waiting_room == 0
        async with trio.open_nursery() as nursery:

            async def after() -> None:
                await client.send_text(f"after {text}")

            nursery.start_soon(after)
            received = [(await server.receive()).data for _ in range(sent + 1)]
        assert received == [f"{i} {text}" for i in range(sent)] + [f"after {text}"]
        await _assert_no_more(server)


async def _assert_no_more(conn: WebSocketConn) -> None:
    with trio.move_on_after(1) as scope:
        await conn.receive()
    assert scope.cancelled_caught


class FullCloseOnly(trio.abc.Stream):
    """A stream that cannot half-close, like TLS: ending it means closing it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_server_peer_closes_stream_without_half_close_ends_cleanly(
    autojump_clock: MockClock,
) -> None:
    """Without half-close the server closes its stream after the handshake; not an error."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with (
        open_websocket_conn(
            FullCloseOnly(server_stream), WebSocketProtocol(Role.SERVER), config=QUIET
        ) as server,
        open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET) as client,
    ):
        await client.close(1000)
        with pytest.raises(ConnectionClosedOK) as info:
            await server.receive()
        assert info.value.__cause__ is None


async def test_server_stream_closed_under_it_closed_error_with_cause(
    autojump_clock: MockClock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        await trio.testing.wait_all_tasks_blocked()
        await server_stream.aclose()
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert isinstance(info.value.__cause__, trio.ClosedResourceError)
    del client_stream


async def test_client_ping_pending_when_connection_closes_raises(
    autojump_clock: MockClock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, Role.SERVER)

    async def vanish() -> None:
        await peer.next_event()  # the ping, never answered
        await server_stream.aclose()

    async with (
        open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(vanish)
        with pytest.raises(ConnectionClosedError) as info:
            await client.ping()
        assert info.value.code == 1006


class Boom(BaseException):
    """Something a background task must let through, like a KeyboardInterrupt."""


async def test_server_task_base_exception_leaves_unwrapped(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: WebSocketConn, now: float) -> None:
        raise Boom

    # The keepalive's step, which the writer runs.
    monkeypatch.setattr(WebSocketConn, "_keepalive_tick", explode)
    server_stream, client_stream = trio.testing.memory_stream_pair()
    config = ConnectionConfig(ping_interval=1)
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as client:
        with pytest.raises(Boom):
            async with open_websocket_conn(
                server_stream, WebSocketProtocol(Role.SERVER), config=config
            ):
                await trio.sleep_forever()
        # The writer, which runs the keepalive, is the task that raised: no close frame
        # can follow, and the transport is closed.
        with pytest.raises(ConnectionClosedError) as info:
            await client.receive()
        assert info.value.code == 1006


@pytest.mark.parametrize("task", ["_arm_write", "_keepalive_tick", "_read_loop"])
async def test_server_task_bug_closes_with_cause_never_raises_into_nursery(
    task: str, autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Errors are local (design.md): a background task's failure is the close's cause."""

    async def broken(self: WebSocketConn) -> bool:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("bug")

    def broken_step(self: WebSocketConn, *args: object) -> None:
        raise RuntimeError("bug")

    # The writer's bug comes with its first write: the keepalive's ping.
    monkeypatch.setattr(WebSocketConn, task, broken if task == "_read_loop" else broken_step)
    server_stream, client_stream = trio.testing.memory_stream_pair()
    config = ConnectionConfig(ping_interval=1, close_timeout=1)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=config
    ) as server:
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert isinstance(info.value.__cause__, RuntimeError)
    del client_stream
