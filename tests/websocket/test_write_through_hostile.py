"""Attacks on write-through and the hub's per-batch flush, over 127.0.0.1.

Write-through lets a sending task (or the hub's) write a frame to the socket itself. These
tests try to make a frame reach the wire out of the order it was encoded in, after the close
frame, on a descriptor the connection no longer owns, or to make the bounds (write timeout,
keepalive, slow-consumer policy) miss a peer whose bytes mostly went through.
"""

from __future__ import annotations

import gc
import random
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from rue_trio.hub import Hub
from rue_trio.protocol import (
    DeflateConfig,
    DeflateParams,
    MessageType,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
)
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

from .test_write_through import QUIET, read_payloads, send_unless_it_waits, tcp_conn

_SMALL = 16384


async def _socket_pair(
    small_buffers: bool,
) -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected socket streams over 127.0.0.1 (server's end, client's end)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    sock = trio.socket.socket()
    if small_buffers:
        for s in (listener.socket, sock):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL)
    async with listener:
        await sock.connect(("127.0.0.1", port))
        client = trio.SocketStream(sock)
        server = await listener.accept()
    return server, client


def _deflate(is_server: bool) -> PerMessageDeflate:
    # Context takeover both ways, every message compressed: a frame written out of the
    # order it was compressed in cannot be inflated by the peer.
    return PerMessageDeflate(
        DeflateParams(), is_server=is_server, config=DeflateConfig(min_size=0)
    )


@asynccontextmanager
async def deflate_pair(
    config: ConnectionConfig = QUIET,
) -> AsyncIterator[tuple[WebSocketConn, WebSocketConn]]:
    """A server and a client connection compressing with context takeover, on sockets."""
    server_stream, client_stream = await _socket_pair(small_buffers=True)
    async with trio.open_nursery() as nursery:
        client_ready = trio.Event()
        client_box: list[WebSocketConn] = []
        client_done = trio.Event()

        async def run_client() -> None:
            async with open_websocket_conn(
                client_stream,
                WebSocketProtocol(Role.CLIENT, deflate=_deflate(False)),
                config=config,
            ) as client:
                client_box.append(client)
                client_ready.set()
                await client_done.wait()

        nursery.start_soon(run_client)
        await client_ready.wait()
        async with open_websocket_conn(
            server_stream, WebSocketProtocol(Role.SERVER, deflate=_deflate(True)), config=config
        ) as server:
            await trio.testing.wait_all_tasks_blocked()
            try:
                yield server, client_box[0]
            finally:
                client_done.set()


_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


def _text(source: str, i: int) -> str:
    # Words shared by every message: each compresses against the ones before it, and
    # in no regular pattern, so a back-reference into a message the peer did not get
    # (or got in another order) lands on other bytes.
    rng = random.Random(f"{source} {i}")
    return f"{source} {i:05d} " + " ".join(rng.choices(_WORDS, k=20 + i % 200))


def _assert_same(got: list[str], expected: list[str]) -> None:
    """``got == expected``, reported by the first difference (pytest's diff of two long
    lists of long texts takes minutes)."""
    assert len(got) == len(expected)
    pairs = enumerate(zip(got, expected, strict=True))
    first = next((i for i, (a, b) in pairs if a != b), None)
    assert first is None, f"message {first} differs: {got[first][:60]!r}"


async def test_concurrent_senders_hub_and_pings_keep_the_compressed_stream_in_order() -> None:
    """Two sending tasks, a hub broadcasting, pings both ways, a peer that pauses.

    With context takeover each message compresses against the ones encoded before it,
    so the peer inflates every message correctly only if the frames reach the wire in the
    order they were encoded, whichever path each took (through, queued, the hub's flush).
    The close frame comes after every message, and the byte counts agree.
    """
    config = ConnectionConfig(ping_interval=None, close_timeout=5, outbound_queue_messages=8)
    # Under "drop" a full queue refuses the hub's frame before it is compressed.
    hub = Hub(policy="drop", high_water=1 << 30)
    counts = {"a": 300, "b": 300}
    hub_count = 200
    with trio.fail_after(60):
        async with trio.open_nursery() as outer:
            await outer.start(hub.run)
            async with deflate_pair(config) as (server, client):
                await hub.register(server)
                received: list[str] = []
                total = sum(counts.values())

                async def sender(source: str) -> None:
                    for i in range(counts[source]):
                        await server.send_text(_text(source, i))
                        if i % 7 == 0:
                            await trio.lowlevel.checkpoint()

                async def broadcaster() -> None:
                    for i in range(hub_count):
                        await hub.broadcast(MessageType.TEXT, _text("h", i))
                        if i % 5 == 0:
                            await trio.lowlevel.checkpoint()

                async def pinger(conn: WebSocketConn) -> None:
                    for _ in range(20):
                        await conn.ping()

                async def reader() -> None:
                    while sum(not text.startswith("h ") for text in received) < total:
                        message = await client.receive()
                        assert isinstance(message.data, str)
                        received.append(message.data)
                        if len(received) % 50 == 0:
                            # The peer stops reading for a while: partial writes, EAGAIN.
                            await trio.testing.wait_all_tasks_blocked()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    nursery.start_soon(sender, "a")
                    nursery.start_soon(sender, "b")
                    nursery.start_soon(broadcaster)
                    nursery.start_soon(pinger, client)
                    nursery.start_soon(pinger, server)
                await hub.unregister(server)
                await server.close()
                with pytest.raises(ConnectionClosedOK):
                    await client.receive()
                assert client.close_code == 1000
                for source, count in counts.items():
                    mine = [text for text in received if text.startswith(source + " ")]
                    _assert_same(mine, [_text(source, i) for i in range(count)])
                # The hub's: those not dropped, whole and in order.
                hubs = [text for text in received if text.startswith("h ")]
                numbers = [int(text.split()[1]) for text in hubs]
                assert numbers == sorted(set(numbers))
                _assert_same(hubs, [_text("h", i) for i in numbers])
                assert len(hubs) + hub.statistics().dropped == hub_count
                assert server.statistics().bytes_sent == client.statistics().bytes_received
            outer.cancel_scope.cancel()


async def test_close_never_precedes_a_partially_written_through_frame() -> None:
    """A send the kernel takes only part of, then the close: message, then close, then nothing."""
    big = b"B" * (1 << 19)
    async with tcp_conn(small_buffers=True) as (conn, peer):
        await conn.send_bytes(big)
        assert conn.statistics().queued_frames == 1  # the rest of a partial write
        conn.close_nowait(1001)
        with pytest.raises(ConnectionClosed):
            conn.send_nowait(MessageType.TEXT, "late")
        with pytest.raises(trio.BrokenResourceError):
            conn._hub_offer(b"\x81\x04late")
        conn._hub_flush()
        assert await read_payloads(peer, 2) == [big, struct.pack("!H", 1001)]


async def test_no_write_reaches_a_descriptor_reused_after_the_connection_closed() -> None:
    """The connection's socket is closed; its descriptor number goes to another socket.

    Nothing a stale reference can still call (the hub's offer and flush, ``send_nowait``,
    ``send``) writes a byte there.
    """
    async with tcp_conn() as (conn, peer):
        await conn.send_text("first")
        assert await read_payloads(peer, 1) == [b"first"]
        assert conn._sock is not None
        fd = conn._sock.fileno()
    assert conn.closed
    # Take descriptors until the old number comes back (the lowest free one is reused).
    spares: list[socket.socket] = []
    try:
        victim = None
        for _ in range(64):
            a, b = socket.socketpair()
            spares += (a, b)
            if a.fileno() == fd:
                victim = b
            elif b.fileno() == fd:
                victim = a
            if victim is not None:
                break
        assert victim is not None, "the descriptor number was not reused"
        victim.setblocking(False)
        conn._hub_flush()
        with pytest.raises(trio.BrokenResourceError):
            conn._hub_offer(b"\x81\x05stale")
        with pytest.raises(ConnectionClosed):
            conn.send_nowait(MessageType.TEXT, "stale")
        with pytest.raises(ConnectionClosed):
            await conn.send_text("stale")
        conn._flush()
        with pytest.raises(BlockingIOError):
            victim.recv(100)
    finally:
        for s in spares:
            s.close()


async def test_write_timeout_holds_when_every_send_goes_through(autojump_clock: MockClock) -> None:
    """A peer that stops reading: sends go through until the kernel is full, then the
    writer's write bound ends the connection."""
    config = ConnectionConfig(ping_interval=None, write_timeout=5, close_timeout=1)
    async with tcp_conn(config, small_buffers=True) as (conn, _peer):
        start = trio.current_time()
        through = 0
        with pytest.raises(ConnectionClosedError) as info:
            for _ in range(100_000):
                before = conn.statistics().bytes_sent
                await conn.send_bytes(b"x" * 1000)
                through += conn.statistics().bytes_sent > before
                await trio.sleep(0.01)  # the writer waits again: the next one goes through
        assert through > 10
        assert isinstance(info.value.__cause__, TimeoutError)
        assert trio.current_time() - start <= 100 * 0.01 + 5 + 2 + 1000 * 0.01


async def test_keepalive_fails_a_peer_that_reads_but_never_answers_while_sends_go_through(
    autojump_clock: MockClock,
) -> None:
    """The keepalive lives in the writer: sends written through must not starve it."""
    config = ConnectionConfig(ping_interval=5, ping_timeout=3, close_timeout=1)
    async with tcp_conn(config) as (conn, peer):

        async def drain() -> None:
            while await peer.receive_some(1 << 16):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            with pytest.raises(ConnectionClosedError):
                for _ in range(1000):
                    await conn.send_text("tick")
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        assert conn.close_code == 1011
        assert trio.current_time() <= 5 + 3 + 1 + 1


async def test_hub_flush_after_the_member_leaves_in_the_same_batch(nursery: trio.Nursery) -> None:
    """Broadcasts offered, then the member unregistered, in one batch: still flushed."""
    hub = Hub()
    await nursery.start(hub.run)
    async with tcp_conn() as (conn, peer):
        await hub.register(conn)
        await hub.flush()
        for i in range(5):
            hub.broadcast_nowait(MessageType.TEXT, f"m{i}")
        await hub.unregister(conn)  # the same batch as the broadcasts
        assert await read_payloads(peer, 5) == [f"m{i}".encode() for i in range(5)]
        assert conn.statistics().queued_frames == 0


@pytest.mark.parametrize("policy", ["close", "drop"])
async def test_slow_consumer_policy_on_a_peer_that_stops_reading(
    nursery: trio.Nursery, policy: str
) -> None:
    """The hub's flushes go through until the kernel is full; then the queue fills and the
    policy applies: 1008 after the frames before it, or dropped frames, the rest in order."""
    hub = Hub(policy=policy, high_water=1 << 30)  # type: ignore[arg-type]
    await nursery.start(hub.run)
    config = ConnectionConfig(ping_interval=None, close_timeout=1, outbound_queue_messages=4)
    async with tcp_conn(config, small_buffers=True) as (conn, peer):
        await hub.register(conn)
        await hub.flush()
        sent = 0
        for sent in range(1, 2001):
            await hub.broadcast(MessageType.BINARY, sent.to_bytes(4, "big") * 256)
            await hub.flush()
            stats = hub.statistics()
            if stats.evicted or stats.dropped:
                break
        stats = hub.statistics()
        assert (stats.evicted if policy == "close" else stats.dropped) == 1
        if policy == "close":
            frames = await _read_frames(peer, None)
        else:
            # The peer reads again while the hub goes on: an increasing run of whole
            # messages, the last one included.
            last = sent + 10
            async with trio.open_nursery() as readers:
                box: list[list[bytes]] = []

                async def read() -> None:
                    box.append(await _read_frames(peer, last))

                readers.start_soon(read)
                for number in range(sent + 1, last + 1):
                    await hub.broadcast(MessageType.BINARY, number.to_bytes(4, "big") * 256)
                    await hub.flush()
                    await trio.testing.wait_all_tasks_blocked()
            (frames,) = box
        numbers = [int.from_bytes(frame[4:8], "big") for frame in frames if frame[0] == 0x82]
        if policy == "close":
            assert frames[-1][0] == 0x88 and frames[-1][2:4] == struct.pack("!H", 1008)
            assert numbers == list(range(1, len(numbers) + 1))
        else:
            assert numbers == sorted(numbers) and numbers[-1] == last and len(numbers) < last
            await hub.unregister(conn)


async def _read_frames(peer: trio.SocketStream, until: int | None) -> list[bytes]:
    """Read whole short server frames until the end of the stream, or until the binary
    frame whose payload starts with the number ``until``."""
    buffer = bytearray()
    frames: list[bytes] = []
    while True:
        while len(buffer) >= 2:
            length, head = buffer[1], 2
            if length == 126:
                head, length = 4, struct.unpack("!H", buffer[2:4])[0]
            if len(buffer) < head + length:
                break
            frame = bytes(buffer[: head + length])
            del buffer[: head + length]
            frames.append(frame)
            if until is not None and int.from_bytes(frame[4:8], "big") == until:
                return frames
        chunk = await peer.receive_some(1 << 16)
        if not chunk:
            assert until is None
            return frames
        buffer += chunk


async def test_memory_a_peer_that_stops_reading_holds_the_bound_and_one_write() -> None:
    """Sends go through until the kernel is full, then queue; the writer is stuck on its
    write. What the connection holds is its queue's byte bound plus that one write in
    flight (the frames it took, joined), not the taken frames a second time."""
    bound = 1 << 16
    config = ConnectionConfig(
        ping_interval=None, close_timeout=1, outbound_queue_bytes=bound, write_timeout=None
    )
    message = b"m" * 8000
    async with tcp_conn(config, small_buffers=True) as (conn, _peer):
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(1000):
                try:
                    conn.send_nowait(MessageType.BINARY, message)
                except trio.WouldBlock:
                    await trio.testing.wait_all_tasks_blocked()
                    if conn.statistics().queued_bytes >= bound - len(message):
                        break
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        stats = conn.statistics()
        assert stats.bytes_sent > 0  # the first went through, in part
        assert bound - len(message) <= stats.queued_bytes <= bound + len(message)
        # The queue (its bound), the write in flight (a queue's worth taken at once).
        assert held <= 2 * bound + len(message) + 16384


async def test_a_send_from_the_hubs_task_mid_batch_goes_after_the_hubs_offers() -> None:
    """The hub's offers wait for the end of its batch; a send made in its task meanwhile
    (an ``on_presence`` hook) must not write through ahead of them, on a connection
    compressing with context takeover."""
    box: list[WebSocketConn] = []

    def on_presence(event: object) -> None:
        if box:
            box[0].send_nowait(MessageType.TEXT, _text("hook", len(box)))

    hub = Hub(on_presence=on_presence)
    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            await outer.start(hub.run)
            async with deflate_pair() as (server, client):
                await hub.register(server)
                await hub.flush()
                box.append(server)
                hub.broadcast_nowait(MessageType.TEXT, _text("h", 0))
                # The same batch: the broadcast is offered, then the hook sends.
                await hub.unregister(server)
                received = [(await client.receive()).data for _ in range(2)]
                assert received == [_text("h", 0), _text("hook", 1)]
            outer.cancel_scope.cancel()


async def test_cancelled_sends_leave_the_compression_context_untouched() -> None:
    """Sends cancelled while waiting for room are missing whole; every other message,
    written through or queued, after them too, still inflates on a context-takeover
    peer, in order."""
    config = ConnectionConfig(ping_interval=None, close_timeout=5, outbound_queue_messages=2)
    with trio.fail_after(30):
        async with deflate_pair(config) as (server, client):
            sent: list[str] = []
            received: list[str] = []
            cancelled = 0
            for i in range(300):
                text = _text("c", i)
                if await send_unless_it_waits(server, MessageType.TEXT, text):
                    sent.append(text)
                    continue
                cancelled += 1
                # The peer reads a little: the next sends go out, right after the
                # cancelled one, compressed after it.
                for _ in range(min(10, len(sent) - len(received))):
                    message = await client.receive()
                    assert isinstance(message.data, str)
                    received.append(message.data)
            assert cancelled >= 3
            while len(received) < len(sent):
                message = await client.receive()
                assert isinstance(message.data, str)
                received.append(message.data)
            _assert_same(received, sent)


async def test_peer_stops_reading_then_resets_during_a_partial_write() -> None:
    """A rest queued behind a partial write-through, the writer stuck on it, then a reset:
    the connection ends with 1006 at once, every later send raises, nothing is counted
    as sent that the kernel did not take."""
    big = b"B" * (1 << 20)
    async with tcp_conn(small_buffers=True) as (conn, peer):
        await conn.send_bytes(big)
        for _ in range(5):
            await conn.send_bytes(b"after")
        await trio.testing.wait_all_tasks_blocked()
        stats = conn.statistics()
        assert 0 < stats.bytes_sent < len(big)
        assert conn._writing  # the writer holds the rest, stuck on the peer
        peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.aclose()
        with trio.fail_after(5), pytest.raises(ConnectionClosedError):
            for _ in range(1000):
                await conn.send_bytes(b"into the void")
                await trio.sleep(0.001)
        assert conn.close_code == 1006
        assert conn.statistics().bytes_sent < len(big)
