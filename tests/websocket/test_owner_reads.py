"""The owner task as the reader (WebSocketHandler's connections): callbacks between reads.

``open_websocket_conn(..., _owner_reads=True)`` spawns only the writer; the owner task runs
the read loop with ``conn._run_reader(deliver)`` and calls ``deliver`` for each message.
What changes when the callbacks run in the only task that reads: backpressure, the
keepalive, closing and pinging from a callback, errors and cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosedError, ConnectionClosedOK, ProtocolError
from rue_trio.protocol import (
    CloseReceived,
    Message,
    MessageType,
    Ping,
    Role,
    State,
    WebSocketProtocol,
)
from rue_trio.websocket import (
    ConnectionConfig,
    WebSocketConn,
    _output,
    _writer,
    open_websocket_conn,
)

from ._util import QUIET, RawPeer, task_names

Deliver = Callable[[WebSocketConn, MessageType, "str | bytes"], "Awaitable[None] | None"]


class Served:
    """What the owner task saw: the connection, and how ``_run_reader`` ended."""

    def __init__(self) -> None:
        self.conn: WebSocketConn | None = None
        self.outcome: BaseException | None = None
        self.done = trio.Event()
        self.block_exc: BaseException | None = None


async def serve(
    stream: trio.abc.HalfCloseableStream,
    deliver: Deliver,
    served: Served,
    config: ConnectionConfig = QUIET,
    *,
    close_on_error: bool = True,
) -> None:
    """The owner task: open, read inline, close 1011 after a callback's exception."""
    try:
        async with open_websocket_conn(
            stream, WebSocketProtocol(Role.SERVER), config=config, _owner_reads=True
        ) as conn:
            served.conn = conn
            try:
                await conn._run_reader(deliver)
            except Exception as exc:
                served.outcome = exc
                if close_on_error and conn.state is State.OPEN:
                    with trio.CancelScope(shield=True):
                        await conn.close(1011, "internal error")
    except BaseException as exc:
        served.block_exc = exc
        raise
    finally:
        served.done.set()


@asynccontextmanager
async def owner_reading(
    deliver: Deliver, config: ConnectionConfig = QUIET
) -> AsyncIterator[tuple[Served, WebSocketConn]]:
    """A server whose owner task reads, and a client (with a reader task) talking to it."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    served = Served()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, server_stream, deliver, served, config)
        async with open_websocket_conn(
            client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
        ) as client:
            yield served, client


@asynccontextmanager
async def raw_peer_of(
    deliver: Deliver, config: ConnectionConfig = QUIET, *, lockstep: bool = False
) -> AsyncIterator[tuple[Served, RawPeer]]:
    """A server whose owner task reads, and a hand-driven peer; waits for the server's end."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    server_stream, client_stream = pair()
    served = Served()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, server_stream, deliver, served, config)
        yield served, RawPeer(client_stream, Role.CLIENT)
        with trio.fail_after(60):
            await served.done.wait()


async def cancel_owner_then_expect_1001(deliver: Deliver, message: str, ready: trio.Event) -> None:
    """Send ``message``, cancel the owner once ``ready``: the peer sees 1001, Cancelled goes on."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    served = Served()
    async with (
        trio.open_nursery() as nursery,
        open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET) as client,
    ):
        scope = trio.CancelScope()

        async def owner() -> None:
            with scope:
                await serve(server_stream, deliver, served)

        nursery.start_soon(owner)
        await client.send_text(message)
        await ready.wait()
        scope.cancel()
        with pytest.raises(ConnectionClosedOK) as info:
            await client.receive()
        assert info.value.code == 1001
        await served.done.wait()
    assert isinstance(served.block_exc, trio.Cancelled)
    assert served.conn is not None
    assert served.conn.closed


async def echo(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    await conn.send(msg_type, data)


async def test_server_owner_reads_spawns_no_reader_task() -> None:
    """Only the writer: the owner task delivers each message itself, in order."""
    async with owner_reading(echo) as (served, client):
        for i in range(100):
            await client.send_text(f"m{i}")
        assert [(await client.receive()).data for _ in range(100)] == [f"m{i}" for i in range(100)]
        root = trio.lowlevel.current_root_task()
        assert root is not None
        names = task_names(root)
        assert names.count("rue_trio websocket writer") == 2
        assert names.count("rue_trio websocket reader") == 1  # the client's
        await client.close()
    assert isinstance(served.conn, WebSocketConn)
    assert served.conn.close_code == 1000
    assert served.outcome is None


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_server_owner_reads_sync_and_async_callbacks(asynchronous: bool) -> None:
    seen: list[str | bytes] = []

    def sync_deliver(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        seen.append(data)

    async def async_deliver(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(data)

    async with owner_reading(async_deliver if asynchronous else sync_deliver) as (_, client):
        await client.send_text("a")
        await client.send_bytes(b"b")
        await client.close()
    assert seen == ["a", b"b"]


async def test_server_owner_reads_slow_callback_stops_reading(autojump_clock: MockClock) -> None:
    """Backpressure: while a callback runs nothing more is read from the transport."""
    release = trio.Event()
    seen: list[str | bytes] = []

    async def slow(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        seen.append(data)
        await release.wait()

    config = ConnectionConfig(ping_interval=None, read_size=256)
    async with owner_reading(slow, config) as (served, client):
        for i in range(50):
            await client.send_text(f"{i:03d}" * 30)  # 90 bytes each
        await trio.testing.wait_all_tasks_blocked()
        assert served.conn is not None
        stats = served.conn.statistics()
        assert stats.bytes_received <= 256
        assert seen == ["000" * 30]
        assert stats.inbound_messages == 0
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(seen) == 50
        assert served.conn.statistics().bytes_received > 50 * 90


async def test_server_owner_reads_keepalive_spares_peer_while_callback_runs(
    autojump_clock: MockClock,
) -> None:
    """The pong waits unread behind a long callback: we are the slow side, not the peer."""
    config = ConnectionConfig(ping_interval=1, ping_timeout=1)

    async def slow(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "slow":
            await trio.sleep(30)
        await conn.send(msg_type, data)

    async with owner_reading(slow, config) as (served, client):
        await client.send_text("slow")
        assert (await client.receive()).data == "slow"
        assert trio.current_time() >= 30
        await client.send_text("after")
        assert (await client.receive()).data == "after"
        await trio.sleep(10)
        assert served.conn is not None
        assert served.conn.state is State.OPEN
        assert served.conn.statistics().last_ping_rtt is not None
        await client.close()
    assert served.conn.close_code == 1000


async def test_server_owner_reads_keepalive_still_fails_silent_peer(
    autojump_clock: MockClock,
) -> None:
    """No callback running: a peer that does not answer the ping is failed with 1011."""
    config = ConnectionConfig(ping_interval=5, ping_timeout=3, close_timeout=2)
    async with raw_peer_of(echo, config) as (served, peer):
        assert isinstance(await peer.next_event(), Ping)
        assert trio.current_time() == 5
        assert await peer.next_event() == CloseReceived(1011, "keepalive ping timeout")
        assert trio.current_time() == 5 + 3
    assert isinstance(served.outcome, ConnectionClosedError)
    assert served.outcome.code == 1011
    assert isinstance(served.outcome.__cause__, TimeoutError)


async def test_server_owner_reads_keepalive_fails_peer_after_long_callback(
    autojump_clock: MockClock,
) -> None:
    """The grace for a long callback is bounded: a dead peer is found once it returns."""
    config = ConnectionConfig(ping_interval=5, ping_timeout=3, close_timeout=1)

    async def slow(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await trio.sleep(20)

    async with raw_peer_of(slow, config) as (served, peer):
        peer.protocol.send_text("work")
        await peer.flush()
        assert isinstance(await peer.next_event(), Ping)  # at 5, during the callback
        assert await peer.next_event() == CloseReceived(1011, "keepalive ping timeout")
        # Held while the callback ran (to 20), then ping_timeout once it reads again.
        assert trio.current_time() == 20 + 3
    assert isinstance(served.outcome, ConnectionClosedError)
    assert served.outcome.code == 1011


async def test_server_owner_reads_close_in_callback_returns_and_loop_finishes(
    autojump_clock: MockClock,
) -> None:
    """close() from a callback starts the handshake and returns; the loop completes it."""
    returned_at: list[float] = []

    async def closer(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "bye":
            await conn.close(1000, "bye")
            returned_at.append(trio.current_time())
            assert conn.state is State.CLOSING
        else:
            await conn.send(msg_type, data)

    async with owner_reading(closer) as (served, client):
        await client.send_text("bye")
        with pytest.raises(ConnectionClosedOK) as info:
            await client.receive()
        assert info.value.code == 1000
        await served.done.wait()
    assert returned_at == [0.0]
    assert served.conn is not None
    assert served.conn.close_code == 1000
    assert served.outcome is None
    assert trio.current_time() < 1


async def test_server_owner_reads_close_in_callback_still_delivers_earlier_messages(
    autojump_clock: MockClock,
) -> None:
    """Messages the peer sent before it saw our close frame still reach the callback."""
    seen: list[str | bytes] = []

    async def closer(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        seen.append(data)
        if data == "first":
            await conn.close()

    async with raw_peer_of(closer) as (served, peer):
        peer.protocol.send_text("first")
        await peer.flush()
        await trio.testing.wait_all_tasks_blocked()  # our close frame is on its way
        peer.protocol.send_text("late")
        await peer.flush()
        assert await peer.next_event() == CloseReceived(1000, "")
        await peer.flush()  # the close echo
    assert seen == ["first", "late"]
    assert served.conn is not None
    assert served.conn.close_code == 1000


async def test_server_owner_reads_ping_and_receive_in_callback_fail_at_once() -> None:
    """They would wait for what only this task can read: one clear error, at once."""
    errors: list[BaseException] = []

    async def misuse(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        try:
            if data == "ping":
                await conn.ping()
            elif data == "receive":
                await conn.receive()
            else:
                async for _ in conn:
                    pass
        except trio.BusyResourceError as exc:
            errors.append(exc)
        await conn.send_text("ok")

    async with owner_reading(misuse) as (_, client):
        for what in ("ping", "receive", "iterate"):
            await client.send_text(what)
            assert (await client.receive()).data == "ok"
        await client.close()
    assert len(errors) == 3
    assert "another task" in str(errors[0])
    assert "on_message" in str(errors[1])
    assert "open_websocket_conn" in str(errors[2])


async def test_server_owner_reads_ping_from_another_task_works() -> None:
    """The owner reads between callbacks, so a ping from another task gets its pong."""
    async with owner_reading(echo) as (served, client):
        await trio.testing.wait_all_tasks_blocked()
        assert served.conn is not None
        with trio.fail_after(5):
            assert await served.conn.ping() >= 0
        await client.close()


async def test_server_owner_reads_callback_error_leaves_connection_to_caller() -> None:
    """A callback's exception propagates as itself; the caller's close(1011) finishes."""
    seen: list[str | bytes] = []

    async def failing(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        seen.append(data)
        if data == "boom":
            raise OSError("the callback's own I/O failed")

    async with owner_reading(failing) as (served, client):
        await client.send_text("boom")
        await client.send_text("never delivered")
        with pytest.raises(ConnectionClosedError) as info:
            await client.receive()
        assert info.value.code == 1011
        await served.done.wait()
    assert type(served.outcome) is OSError  # not taken for a transport error
    assert seen == ["boom"]
    assert served.conn is not None
    assert served.conn.closed
    assert served.block_exc is None


async def test_server_owner_reads_cancelled_owner_in_callback_closes_1001() -> None:
    """The owner task cancelled (the server going away) in a callback: 1001, then Cancelled."""
    entered = trio.Event()

    async def stuck(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        entered.set()
        await trio.sleep_forever()

    await cancel_owner_then_expect_1001(stuck, "work", entered)


async def test_server_owner_reads_cancelled_owner_while_reading_closes_1001() -> None:
    echoed = trio.Event()

    async def echo_once(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        echoed.set()

    await cancel_owner_then_expect_1001(echo_once, "one", echoed)


async def test_server_owner_reads_keyboard_interrupt_is_never_swallowed() -> None:
    async def interrupt(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        raise KeyboardInterrupt

    server_stream, client_stream = trio.testing.memory_stream_pair()
    served = Served()
    with pytest.raises(BaseExceptionGroup) as group:
        async with (
            trio.open_nursery() as nursery,
            open_websocket_conn(
                client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
            ) as client,
        ):
            nursery.start_soon(serve, server_stream, interrupt, served)
            await client.send_text("now")
            with pytest.raises(ConnectionClosedOK) as info:
                await client.receive()
            assert info.value.code == 1001
    # The owner task's nursery groups it, as any task's exception: it is not lost.
    assert [type(e) for e in group.value.exceptions] == [KeyboardInterrupt]
    assert isinstance(served.block_exc, KeyboardInterrupt)
    assert served.conn is not None
    assert served.conn.closed


async def test_server_owner_reads_violation_after_messages_delivered_first(
    autojump_clock: MockClock,
) -> None:
    """Messages before a protocol violation reach the callback, and its replies go first."""
    async with raw_peer_of(echo) as (served, peer):
        peer.protocol.send_text("one")
        peer.protocol.send_text("two")
        await peer.flush()
        await peer.stream.send_all(b"\x81\x02hi")  # unmasked: RFC 6455 section 5.1
        events = await peer.read_until_eof()
    assert events[:2] == [Message(MessageType.TEXT, "one"), Message(MessageType.TEXT, "two")]
    assert isinstance(events[2], CloseReceived)
    assert events[2].code == 1002
    assert isinstance(served.outcome, ConnectionClosedError)
    assert isinstance(served.outcome.__cause__, ProtocolError)


async def test_server_owner_reads_abort_while_callback_waits_for_room(
    autojump_clock: MockClock,
) -> None:
    """A peer that stops reading: the write bound aborts, the callback's send gives up."""
    failures: list[BaseException] = []
    config = ConnectionConfig(
        ping_interval=None, write_timeout=5, outbound_queue_bytes=1024, close_timeout=1
    )

    async def flood(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        try:
            while True:
                await conn.send_bytes(b"x" * 512)
        except BaseException as exc:
            failures.append(exc)
            raise

    # Lockstep: send_all returns only once the peer has read, and the peer never does.
    async with raw_peer_of(flood, config, lockstep=True) as (served, peer):
        peer.protocol.send_text("go")
        await peer.flush()
    assert served.conn is not None
    assert served.conn.closed
    assert failures
    assert served.conn.close_code == 1006


async def test_server_owner_reads_batch_replies_go_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over a socket, the replies to one parsed batch are written together."""
    writes: list[int] = []
    write_now = _output._write_now

    def counting(sock: trio.socket.SocketType, data: bytes) -> int:
        writes.append(len(data))
        return write_now(sock, data)

    # Written through by the sending task (_output) or by the writer (_writer).
    monkeypatch.setattr(_output, "_write_now", counting)
    monkeypatch.setattr(_writer, "_write_now", counting)
    ours, theirs = trio.socket.socketpair()
    served = Served()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    async with peer.stream, trio.open_nursery() as nursery:
        nursery.start_soon(serve, trio.SocketStream(ours), echo, served)
        for i in range(10):
            peer.protocol.send_text(f"m{i}")
        await peer.flush()  # one write: one read, one batch on the other side
        with trio.fail_after(10):
            received = [await peer.next_event() for _ in range(10)]
        assert received == [Message(MessageType.TEXT, f"m{i}") for i in range(10)]
        assert len(writes) == 1, writes
        peer.protocol.send_close(1000)
        await peer.flush()
        await served.done.wait()


async def test_server_owner_reads_batch_replies_past_the_queue_bound_do_not_stall(
    autojump_clock: MockClock,
) -> None:
    """In a batch, a send waiting for room still gets the writer to drain."""
    config = ConnectionConfig(ping_interval=None, outbound_queue_bytes=1024)

    async def big_reply(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await conn.send_bytes(bytes(700))

    async with raw_peer_of(big_reply, config) as (served, peer):
        for i in range(4):
            peer.protocol.send_text(f"m{i}")
        await peer.flush()  # one write: one batch of four
        with trio.fail_after(5):
            replies = [await peer.next_event() for _ in range(4)]
        assert replies == [Message(MessageType.BINARY, bytes(700))] * 4
        peer.protocol.send_close(1000)
        await peer.flush()
    assert served.outcome is None


async def test_server_owner_reads_reply_not_held_by_a_later_waiting_callback(
    autojump_clock: MockClock,
) -> None:
    """In one batch, a callback that waits does not hold the replies sent before it."""
    go_on = trio.Event()

    async def reply_then_wait(
        conn: WebSocketConn, msg_type: MessageType, data: str | bytes
    ) -> None:
        if data == "second":
            await go_on.wait()  # set once the peer has the first reply
        await conn.send(msg_type, data)

    async with raw_peer_of(reply_then_wait) as (served, peer):
        peer.protocol.send_text("first")
        peer.protocol.send_text("second")
        await peer.flush()  # one write: one batch of two
        with trio.fail_after(5):
            assert await peer.next_event() == Message(MessageType.TEXT, "first")
        go_on.set()
        assert await peer.next_event() == Message(MessageType.TEXT, "second")
        peer.protocol.send_close(1000)
        await peer.flush()
    assert served.outcome is None
