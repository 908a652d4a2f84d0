"""Write-through when the writer is idle, and the hub's flush, over real sockets on 127.0.0.1.

The server side is a :class:`WebSocketConn` on a ``trio.SocketStream``; the peer is a raw
TCP socket that reads unmasked server frames, so a test decides when the peer reads.
"""

from __future__ import annotations

import select
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing

from rue_trio.exceptions import ConnectionClosedError
from rue_trio.hub import Hub
from rue_trio.protocol import MessageType, Role, WebSocketProtocol, encode_message
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn
from rue_trio.websocket._output import _for_write

from ._util import WriterSteps

QUIET = ConnectionConfig(ping_interval=None, close_timeout=1)


@asynccontextmanager
async def tcp_conn(
    config: ConnectionConfig = QUIET, *, small_buffers: bool = False
) -> AsyncIterator[tuple[WebSocketConn, trio.SocketStream]]:
    """A server connection on a socket over 127.0.0.1, and the raw peer socket."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    sock = trio.socket.socket()
    if small_buffers:
        # The kernel takes little at once: partial writes come early. Set before the
        # connection exists (the accepted socket inherits the listener's).
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    async with listener:
        await sock.connect(("127.0.0.1", port))
        peer = trio.SocketStream(sock)
        stream = await listener.accept()
    async with peer:
        with trio.fail_after(10):
            async with open_websocket_conn(
                stream, WebSocketProtocol(Role.SERVER), config=config
            ) as conn:
                await trio.testing.wait_all_tasks_blocked()  # the writer waits for frames
                yield conn, peer
                # The peer's end: the connection ends at once, not after close_timeout.
                await peer.aclose()


async def read_payloads(peer: trio.SocketStream, count: int) -> list[bytes]:
    """Read ``count`` unmasked binary or text frames; return their payloads."""
    buffer = bytearray()
    payloads: list[bytes] = []
    while len(payloads) < count:
        chunk = await peer.receive_some(1 << 16)
        assert chunk, f"closed after {len(payloads)} frames"
        buffer += chunk
        while len(buffer) >= 2:
            length = buffer[1]
            head = 2
            if length == 126:
                head, length = 4, struct.unpack("!H", buffer[2:4])[0]
            elif length == 127:
                head, length = 10, struct.unpack("!Q", buffer[2:10])[0]
            if len(buffer) < head + length:
                break
            payloads.append(bytes(buffer[head : head + length]))
            del buffer[: head + length]
    return payloads


def nothing_readable(peer: trio.SocketStream) -> bool:
    readable, _, _ = select.select([peer.socket.fileno()], [], [], 0)
    return not readable


async def test_idle_writer_send_is_written_by_the_sending_task() -> None:
    """The frame is on the wire when ``send`` returns, and the writer never ran."""
    async with tcp_conn() as (conn, peer):
        steps = WriterSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            await conn.send_text("hello")
            assert conn.statistics().bytes_sent == 7  # before any other task ran
            assert await read_payloads(peer, 1) == [b"hello"]
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 0


async def test_partial_write_hands_the_rest_to_the_writer_in_order() -> None:
    """A peer that stops reading, then resumes: every message arrives, in order.

    The first send is written through, but the kernel takes only part of it: the rest is
    queued for the writer, and every later send queues behind it.
    """
    big = b"B" * (1 << 19)
    small = [bytes([i]) * 100 for i in range(20)]
    async with tcp_conn(small_buffers=True) as (conn, peer):
        await conn.send_bytes(big)
        stats = conn.statistics()
        assert 0 < stats.bytes_sent < len(big)  # a partial write, by this task
        assert stats.queued_frames == 1  # its rest
        for payload in small:
            await conn.send_bytes(payload)
        await trio.testing.wait_all_tasks_blocked()
        # The peer resumes reading.
        assert await read_payloads(peer, 21) == [big, *small]
        await trio.testing.wait_all_tasks_blocked()
        total = len(big) + 10 + 20 * 102
        assert conn.statistics().bytes_sent == total
        # Idle again: the next one is written through.
        await conn.send_bytes(b"after")
        assert conn.statistics().bytes_sent == total + 7
        assert await read_payloads(peer, 1) == [b"after"]


async def test_partial_flush_hands_the_rest_to_the_writer_in_order() -> None:
    """A flush that writes only part of the batch: the writer sends the rest, in order."""
    config = ConnectionConfig(ping_interval=None, close_timeout=1, outbound_queue_messages=256)
    payloads = [bytes([i]) * 8192 for i in range(100)]
    async with tcp_conn(config, small_buffers=True) as (conn, peer):
        for payload in payloads[:50]:
            conn._hub_offer(encode_message(MessageType.BINARY, payload))
        conn._hub_flush()
        assert 0 < conn.statistics().bytes_sent < 50 * 8196
        for payload in payloads[50:]:
            await conn.send_bytes(payload)
        assert await read_payloads(peer, 100) == payloads
        await trio.testing.wait_all_tasks_blocked()
        assert conn.statistics().bytes_sent == 100 * 8196


async def test_peer_reset_mid_send_fails_through_the_writer() -> None:
    """A send that meets a reset socket queues its frame; the connection ends with 1006."""
    async with tcp_conn() as (conn, peer):
        await conn.send_text("first")
        assert await read_payloads(peer, 1) == [b"first"]
        peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.aclose()  # a reset
        with pytest.raises(ConnectionClosedError):
            for _ in range(1000):
                await conn.send_text("into the void")
                await trio.lowlevel.checkpoint()
        assert conn.close_code == 1006


async def test_cancelled_send_writes_nothing_even_to_an_idle_writer() -> None:
    async with tcp_conn() as (conn, peer):
        with trio.CancelScope() as scope:
            scope.cancel()
            await conn.send_text("never")
        assert conn.statistics().bytes_sent == 0
        await conn.send_text("sent")
        assert await read_payloads(peer, 1) == [b"sent"]


async def test_send_cancelled_waiting_for_room_queues_nothing() -> None:
    """Whole messages or nothing: the cancelled one is missing, the others are in order."""
    config = ConnectionConfig(ping_interval=None, close_timeout=1, outbound_queue_messages=2)
    payloads = [bytes([i]) * 8192 for i in range(40)]
    async with tcp_conn(config, small_buffers=True) as (conn, peer):
        sent: list[bytes] = []
        cancelled: list[bytes] = []
        for payload in payloads:
            ok = await send_unless_it_waits(conn, MessageType.BINARY, payload)
            (sent if ok else cancelled).append(payload)
        assert cancelled
        assert await read_payloads(peer, len(sent)) == sent


async def send_unless_it_waits(conn: WebSocketConn, type: MessageType, data: str | bytes) -> bool:
    """Send; if the queue is full, cancel the send once it waits for room.

    Returns:
        Whether the message was sent (else it was cancelled).
    """
    with trio.CancelScope() as scope:
        if conn.statistics().queued_frames >= conn._out.statistics().max_frames:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_blocked, scope)
                await conn.send(type, data)
        else:
            await conn.send(type, data)
    return not scope.cancelled_caught


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_send_waiting_for_room_behind_hub_offers_wakes_the_writer() -> None:
    """A queue the hub filled (no writer woken yet) is written by the writer: the send gets
    its room."""
    config = ConnectionConfig(ping_interval=None, close_timeout=1, outbound_queue_messages=2)
    async with tcp_conn(config) as (conn, peer):
        for i in range(2):
            conn._hub_offer(encode_message(MessageType.TEXT, f"m{i}"))
        for i in range(2, 5):
            await conn.send_text(f"m{i}")
        assert await read_payloads(peer, 5) == [f"m{i}".encode() for i in range(5)]


async def test_hub_offers_do_not_hold_back_the_close() -> None:
    """A control frame wakes the writer before the hub's flush: what was queued goes first."""
    async with tcp_conn() as (conn, peer):
        conn._hub_offer(encode_message(MessageType.TEXT, "before"))
        conn.close_nowait(1001)
        assert await read_payloads(peer, 2) == [b"before", b"\x03\xe9"]


async def test_hub_offer_waits_for_the_flush() -> None:
    async with tcp_conn() as (conn, peer):
        frame = encode_message(MessageType.TEXT, "hub")
        assert conn._hub_offer(frame) == len(frame)
        assert conn._hub_offer(frame) == 2 * len(frame)
        await trio.testing.wait_all_tasks_blocked()
        assert nothing_readable(peer)
        conn._hub_flush()
        assert conn.statistics().bytes_sent == 2 * len(frame)
        assert await read_payloads(peer, 2) == [b"hub", b"hub"]


async def test_hub_batch_is_written_by_the_hub_in_order_to_every_member(
    nursery: trio.Nursery,
) -> None:
    """A burst of broadcasts, one batch: each member gets all, in order, with one write.

    The members' writers are idle, so the hub writes each member's frames itself when the
    batch ends: no writer runs.
    """
    hub = Hub()
    await nursery.start(hub.run)
    async with AsyncExitStack() as stack:
        pairs = [await stack.enter_async_context(tcp_conn()) for _ in range(5)]
        for conn, _peer in pairs:
            await hub.register(conn)
        await hub.flush()
        await trio.testing.wait_all_tasks_blocked()
        steps = WriterSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            for i in range(50):
                hub.broadcast_nowait(MessageType.TEXT, f"message {i}")
            await hub.flush()
            frames = sum(len(encode_message(MessageType.TEXT, f"message {i}")) for i in range(50))
            for conn, peer in pairs:
                assert conn.statistics().bytes_sent == frames
                expected = [f"message {i}".encode() for i in range(50)]
                assert await read_payloads(peer, 50) == expected
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 0
        for conn, _peer in pairs:
            await hub.unregister(conn)


async def test_large_send_queues_its_payload_without_copying_it() -> None:
    """A large message's payload goes to the socket from the caller's bytes object.

    The kernel takes part of it at once; the rest is queued as a view of the payload, and
    a second large message behind it as its header and the payload itself: together,
    less than a tenth of their bytes allocated (each was joined behind its header, and
    the rest of a partial write copied, before).
    """
    big = [bytes([i]) * (1 << 20) for i in range(2)]
    async with tcp_conn(small_buffers=True) as (conn, peer):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for payload in big:
                await conn.send_bytes(payload)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        stats = conn.statistics()
        assert 0 < stats.bytes_sent < len(big[0])  # a partial write, by this task
        assert stats.queued_bytes > len(big[0])
        assert grown < (1 << 20) // 10
        assert await read_payloads(peer, 2) == big
        await trio.testing.wait_all_tasks_blocked()
        assert conn.statistics().bytes_sent == 2 * (len(big[0]) + 10)


def test_batch_written_gathered_only_when_large_and_short() -> None:
    """A large batch of few buffers is written as it is; a small or long one is joined."""
    large: list[bytes | memoryview] = [b"h" * 10, b"p" * (1 << 16)]
    assert _for_write(large) == (large, 10 + (1 << 16))
    assert _for_write([b"ab", b"cd"]) == (b"abcd", 4)
    many: list[bytes | memoryview] = [b"x" * 1024] * 300  # more than one writev takes
    assert _for_write(many) == (b"x" * 1024 * 300, 1024 * 300)
    single = memoryview(b"rest")
    assert _for_write([single]) == (single, 4)
