"""Attacks on the handler's owner-reads loop (callbacks run inline in the reading task).

Each test tries to make a ``WebSocketHandler`` connection hang, leak, lose ordering or
run a lifecycle callback twice now that its own task reads and calls ``on_message``
between reads: callbacks that wait long, close then keep sending, raise after closing;
a peer that resets or violates the protocol mid-batch; a server shutdown; huge frames;
compressed messages; callbacks that act on another connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio import (
    App,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    MessageType,
    WebSocketConn,
    WebSocketHandler,
)
from rue_trio.client import open_websocket_stream
from rue_trio.testing import open_test_app
from rue_trio.websocket import ConnectionConfig
from tests._apps import app_with

QUIET = ConnectionConfig(ping_interval=None)


class Log:
    """Every lifecycle callback, in order, with the connection's position."""

    def __init__(self, expect: int = 1) -> None:
        self.expect = expect
        self.events: list[tuple[str, object]] = []
        self.conns: list[WebSocketConn] = []
        self.closed = trio.Event()

    def on_connect(self, conn: WebSocketConn) -> None:
        self.conns.append(conn)
        self.events.append(("connect", len(self.conns) - 1))

    def on_error(self, conn: WebSocketConn, exc: BaseException) -> None:
        self.events.append(("error", type(exc).__name__))

    def on_close(self, conn: WebSocketConn) -> None:
        self.events.append(("close", conn.close_code))
        if self.names().count("close") >= self.expect:
            self.closed.set()

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def handler_with(log: Log, on_message: object, **kwargs: object) -> WebSocketHandler:
    return WebSocketHandler(
        on_message=on_message,  # type: ignore[arg-type]
        on_connect=log.on_connect,
        on_error=log.on_error,
        on_close=log.on_close,
        **kwargs,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def tcp_app(app: App) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 (real sockets): yields the port."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def accept_loop() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(app.serve_stream, stream, ("127.0.0.1", 0))

        nursery.start_soon(accept_loop)
        yield port
        nursery.cancel_scope.cancel()


def _upgrade_request(port: int) -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _masked(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    """A client frame (masked with a zero key, so the payload is as given)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


async def raw_client(port: int) -> trio.SocketStream:
    """A TCP client past the 101, speaking frames by hand."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_upgrade_request(port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk
        head += chunk
    assert head.startswith(b"HTTP/1.1 101")
    return stream


async def read_frames(stream: trio.SocketStream, seed: bytes = b"") -> list[tuple[int, bytes]]:
    """Every (opcode, payload) the server sends until it closes TCP (unmasked frames)."""
    data = bytearray(seed)
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    frames: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        opcode = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        i += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        frames.append((opcode, bytes(data[i : i + n])))
        i += n
    return frames


def close_code(frames: list[tuple[int, bytes]]) -> int:
    closes = [payload for opcode, payload in frames if opcode == 8]
    assert len(closes) == 1, frames
    return int(struct.unpack("!H", closes[0][:2])[0])


async def echo(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    await conn.send(msg_type, data)


# --- callbacks that wait long -------------------------------------------------------


async def test_hostile_owner_callback_sleeping_long_leaves_others_served(
    autojump_clock: MockClock,
) -> None:
    """A callback asleep for an hour holds its own connection only."""
    release = trio.Event()

    async def slow_or_echo(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "sleep":
            with trio.move_on_after(3600):
                await release.wait()
        await conn.send(msg_type, data)

    log = Log()
    async with (
        open_test_app(app_with(handler_with(log, slow_or_echo, config=QUIET))) as client,
        client.websocket("/ws") as sleeper,
        client.websocket("/ws") as other,
    ):
        await sleeper.send_text("sleep")
        await sleeper.send_text("after")
        for i in range(20):
            await other.send_text(f"m{i}")
            assert (await other.receive()).data == f"m{i}"
        release.set()
        assert (await sleeper.receive()).data == "sleep"
        assert (await sleeper.receive()).data == "after"
    assert log.names().count("close") == 2
    assert "error" not in log.names()


async def test_hostile_owner_callback_send_to_unread_peer_ends_by_write_timeout() -> None:
    """A callback waiting for room while its peer reads nothing: write_timeout ends it.

    Real sockets with small buffers; the other connection goes on meanwhile.
    """
    config = ConnectionConfig(ping_interval=None, write_timeout=0.5, close_timeout=0.5)
    blob = b"x" * 65536
    sent = [0]

    async def flood(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "flood":
            for _ in range(10_000):  # bounded: 640 MiB would never fit in the buffers
                await conn.send_bytes(blob)
                sent[0] += 1
            return
        await conn.send(msg_type, data)

    log = Log()
    app = app_with(handler_with(log, flood, config=config))
    with trio.fail_after(30):
        async with tcp_app(app) as port:
            silent = await raw_client(port)
            silent.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await silent.send_all(_masked(1, b"flood"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with open_websocket_stream(
                stream, f"ws://127.0.0.1:{port}/ws", config=QUIET
            ) as other:
                for i in range(10):
                    await other.send_text(f"m{i}")
                    assert (await other.receive()).data == f"m{i}"
                await log.closed.wait()  # the flooded one, ended by write_timeout
                await other.send_text("still")
                assert (await other.receive()).data == "still"
            await silent.aclose()
    assert sent[0] < 10_000
    assert log.names().count("close") == 2
    assert log.names().count("error") == 1


async def test_hostile_owner_callback_hub_broadcast_to_full_room(
    autojump_clock: MockClock,
) -> None:
    """A callback broadcasting in a loop to a room whose members do not read: no deadlock."""
    from rue_trio.hub import Hub

    hub = Hub()
    config = ConnectionConfig(ping_interval=None, write_timeout=5, close_timeout=2)

    async def chatty(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "join":
            await hub.join("room", conn)
            await conn.send_text("joined")
        elif data == "shout":
            for i in range(2000):
                await hub.broadcast(MessageType.TEXT, f"{i:04d}" + "y" * 4096, room="room")
            await conn.send_text("done")
        else:
            await conn.send(msg_type, data)

    log = Log()
    app = app_with(handler_with(log, chatty, config=config, hub=hub))
    app.add_background(hub.run)
    with trio.fail_after(600):
        async with (
            open_test_app(app) as client,
            client.websocket("/ws") as shouter,
            client.websocket("/ws") as deaf,
        ):
            await deaf.send_text("join")
            assert (await deaf.receive()).data == "joined"
            await shouter.send_text("join")
            assert (await shouter.receive()).data == "joined"
            # Neither reads now: the shouter's own callback broadcasts to itself too.
            await shouter.send_text("shout")
            async with client.websocket("/ws") as bystander:
                await bystander.send_text("hi")
                assert (await bystander.receive()).data == "hi"
            await trio.sleep(60)
            # The room's members that did not read were dropped by the hub's policy or
            # by write_timeout; the hub still serves a newcomer.
            async with client.websocket("/ws") as newcomer:
                await newcomer.send_text("join")
                assert (await newcomer.receive()).data == "joined"


# --- close() then more ----------------------------------------------------------------


async def test_hostile_owner_close_then_keep_sending() -> None:
    """close() in a callback, then send: the send fails quietly; the peer sees 1000 once."""
    outcomes: list[str] = []

    async def close_then_send(
        conn: WebSocketConn, msg_type: MessageType, data: str | bytes
    ) -> None:
        await conn.send_text("before")
        await conn.close(1000, "bye")
        try:
            await conn.send_text("after")
            outcomes.append("sent")
        except ConnectionClosed as exc:
            outcomes.append(type(exc).__name__)
            raise

    log = Log()
    async with open_test_app(app_with(handler_with(log, close_then_send, config=QUIET))) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("go")
            assert (await ws.receive()).data == "before"
            with trio.fail_after(5), pytest.raises(ConnectionClosedOK) as info:
                await ws.receive()
            assert info.value.code == 1000
        with trio.fail_after(5):
            await log.closed.wait()
    assert outcomes == ["ConnectionClosedOK"]
    assert log.names() == ["connect", "close"]


async def test_hostile_owner_raise_after_close() -> None:
    """A callback raising after close(): on_error once, the code stays 1000, on_close once."""

    async def close_then_raise(
        conn: WebSocketConn, msg_type: MessageType, data: str | bytes
    ) -> None:
        await conn.close(1000, "bye")
        raise RuntimeError("after close")

    log = Log()
    async with open_test_app(
        app_with(handler_with(log, close_then_raise, config=QUIET))
    ) as client:
        async with client.websocket("/ws") as ws:
            await ws.send_text("go")
            with trio.fail_after(5), pytest.raises(ConnectionClosedOK) as info:
                await ws.receive()
            assert info.value.code == 1000
        with trio.fail_after(5):
            await log.closed.wait()
    assert log.events == [("connect", 0), ("error", "RuntimeError"), ("close", 1000)]


async def test_hostile_owner_close_then_sleep_is_bounded_by_close_timeout(
    autojump_clock: MockClock,
) -> None:
    """close() then a long sleep: the closing deadline cancels the callback."""
    config = ConnectionConfig(ping_interval=None, close_timeout=3)

    async def close_then_sleep(
        conn: WebSocketConn, msg_type: MessageType, data: str | bytes
    ) -> None:
        await conn.close(1000, "bye")
        await trio.sleep(3600)

    log = Log()
    async with (
        open_test_app(app_with(handler_with(log, close_then_sleep, config=config))) as client,
        client.websocket("/ws") as ws,
    ):
        start = trio.current_time()
        await ws.send_text("go")
        with pytest.raises(ConnectionClosed):
            await ws.receive()
        with trio.fail_after(60):
            await log.closed.wait()
        assert trio.current_time() - start <= 10
    assert log.names().count("close") == 1


# --- the peer's doing -------------------------------------------------------------------


async def test_hostile_owner_peer_reset_mid_callback_lifecycle_once() -> None:
    """The peer resets while a callback runs: on_connect, on_error, on_close, once each."""
    in_callback = trio.Event()
    release = trio.Event()

    async def wait_then_send(
        conn: WebSocketConn, msg_type: MessageType, data: str | bytes
    ) -> None:
        in_callback.set()
        await release.wait()
        await conn.send_text("late")

    log = Log()
    app = app_with(handler_with(log, wait_then_send, config=QUIET))
    with trio.fail_after(30):
        async with tcp_app(app) as port:
            peer = await raw_client(port)
            await peer.send_all(_masked(1, b"hello"))
            await in_callback.wait()
            peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.socket.close()  # RST
            await trio.sleep(0.1)
            release.set()
            await log.closed.wait()
    names = log.names()
    assert names[0] == "connect" and names[-1] == "close"
    assert names.count("connect") == 1 and names.count("close") == 1
    assert names.count("error") <= 1


@pytest.mark.parametrize(
    ("bad_frame", "expected"),
    [
        (_masked(1, b"\xff\xfe"), 1007),  # invalid UTF-8
        (_masked(3, b"x"), 1002),  # reserved opcode
        (_masked(2, b"z" * 2000), 1009),  # past max_message_size
    ],
    ids=["1007", "1002", "1009"],
)
async def test_hostile_owner_violation_mid_batch_after_earlier_replies(
    bad_frame: bytes, expected: int
) -> None:
    """Messages before the violation are delivered and answered, then the close code."""
    log = Log()
    app = app_with(handler_with(log, echo, config=QUIET, max_message_size=1000))
    with trio.fail_after(30):
        async with tcp_app(app) as port:
            peer = await raw_client(port)
            batch = b"".join(_masked(1, f"m{i}".encode()) for i in range(5)) + bad_frame
            await peer.send_all(batch + _masked(1, b"never"))
            frames = await read_frames(peer)
            await peer.aclose()
            await log.closed.wait()
    texts = [payload for opcode, payload in frames if opcode == 1]
    assert texts == [f"m{i}".encode() for i in range(5)]
    assert close_code(frames) == expected
    assert log.names().count("close") == 1
    assert log.names().count("connect") == 1


async def test_hostile_owner_shutdown_closes_busy_and_idle_with_1001() -> None:
    """A server shutdown: a connection in a callback and an idle one both get 1001."""
    in_callback = trio.Event()

    async def maybe_block(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "block":
            in_callback.set()
            await trio.sleep_forever()
        await conn.send(msg_type, data)

    log = Log()
    with trio.fail_after(30):
        async with (
            open_test_app(app_with(handler_with(log, maybe_block, config=QUIET))) as client,
            client.websocket("/ws") as busy,
            client.websocket("/ws") as idle,
        ):
            await idle.send_text("x")
            assert (await idle.receive()).data == "x"
            await busy.send_text("block")
            await in_callback.wait()
            client.shutdown()
            for ws in (busy, idle):
                with pytest.raises(ConnectionClosedOK) as info:
                    await ws.receive()
                assert info.value.code == 1001
    assert sorted(log.events) == [("close", 1001), ("close", 1001), ("connect", 0), ("connect", 1)]


async def test_hostile_owner_huge_frame_announced_memory_bounded() -> None:
    """A peer announcing and streaming a frame far past max_message_size: 1009, memory bounded."""
    log = Log()
    config = ConnectionConfig(ping_interval=None, inbound_queue_bytes=1 << 20)
    app = app_with(handler_with(log, echo, config=config, max_message_size=1 << 20))
    tracemalloc.start()
    try:
        with trio.fail_after(30):
            async with tcp_app(app) as port:
                peer = await raw_client(port)
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                await peer.send_all(_masked(2, b"", length=1 << 40))
                chunk = b"\0" * 65536
                with trio.move_on_after(5):
                    for _ in range(256):  # 16 MiB, bounded
                        await peer.send_all(chunk)
                frames = await read_frames(peer)
                peak = tracemalloc.get_traced_memory()[1] - base
                await peer.aclose()
                await log.closed.wait()
    finally:
        tracemalloc.stop()
    assert close_code(frames) == 1009
    assert peak < 4 << 20, peak


async def test_hostile_owner_big_frame_under_limit_memory_bounded() -> None:
    """A frame just under max_message_size read in big reads: about one copy held, not several."""
    log = Log()
    size = 8 << 20
    config = ConnectionConfig(ping_interval=None, inbound_queue_bytes=1 << 20)
    got: list[int] = []

    def count(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        got.append(len(data))

    app = app_with(handler_with(log, count, config=config, max_message_size=size))
    tracemalloc.start()
    try:
        with trio.fail_after(60):
            async with tcp_app(app) as port:
                peer = await raw_client(port)
                payload = b"\1" * size
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                await peer.send_all(_masked(2, b"", length=size))
                view = memoryview(payload)
                for i in range(0, size, 1 << 16):
                    await peer.send_all(view[i : i + (1 << 16)])
                await peer.send_all(_masked(8, struct.pack("!H", 1000)))
                await read_frames(peer)
                peak = tracemalloc.get_traced_memory()[1] - base
                await peer.aclose()
                await log.closed.wait()
    finally:
        tracemalloc.stop()
    assert got == [size]
    # The payload we hold ourselves (size) plus the message assembled (size) plus reads.
    assert peak < 2 * size + (4 << 20), peak


async def test_hostile_owner_compressed_messages_roundtrip_and_bomb() -> None:
    """Deflate through the owner's loop: echoes in order; an inflation bomb closes 1009."""
    log = Log()
    app = app_with(
        handler_with(log, echo, config=QUIET, compression=True, max_message_size=1 << 16)
    )
    async with (
        open_test_app(app) as client,
        client.websocket("/ws", compression=True) as ws,
    ):
        for i in range(50):
            await ws.send_text(f"{i} " + "abc" * i)
        for i in range(50):
            assert (await ws.receive()).data == f"{i} " + "abc" * i
        await ws.send_bytes(b"\0" * (1 << 20))  # compresses to ~1 KiB
        with trio.fail_after(5), pytest.raises(ConnectionClosedError) as info:
            await ws.receive()
        assert info.value.code == 1009
        with trio.fail_after(5):
            await log.closed.wait()
    assert log.names().count("close") == 1


# --- callbacks touching other connections ----------------------------------------------


async def test_hostile_owner_callbacks_close_each_other_crosswise(
    autojump_clock: MockClock,
) -> None:
    """A's callback closes B while B's closes A: each waits on the other's reader; bounded."""
    config = ConnectionConfig(ping_interval=None, close_timeout=5)
    conns: dict[str, WebSocketConn] = {}
    both = trio.Event()
    arrived = [0]

    async def cross(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        assert isinstance(data, str)
        if data.startswith("name:"):
            conns[data[5:]] = conn
            await conn.send_text("ok")
            return
        arrived[0] += 1
        if arrived[0] == 2:
            both.set()
        await both.wait()
        other = conns["b" if data == "a" else "a"]
        await other.close(4000, "closed by the other")

    log = Log(2)
    with trio.fail_after(120):
        async with (
            open_test_app(app_with(handler_with(log, cross, config=config))) as client,
            client.websocket("/ws") as a,
            client.websocket("/ws") as b,
        ):
            for name, ws in (("a", a), ("b", b)):
                await ws.send_text(f"name:{name}")
                assert (await ws.receive()).data == "ok"
            start = trio.current_time()
            await a.send_text("a")
            await b.send_text("b")
            for ws in (a, b):
                with pytest.raises(ConnectionClosed):
                    await ws.receive()
            await log.closed.wait()
            assert trio.current_time() - start <= 3 * 5
    assert log.names().count("close") == 2


async def test_hostile_owner_callback_closes_another_connection() -> None:
    """A callback closes another, idle connection (owned by its own task): it closes 1000."""
    conns: list[WebSocketConn] = []

    async def closer(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "register":
            conns.append(conn)
            await conn.send_text("ok")
        elif data == "kill":
            await conns[0].close(1000, "kicked")
            await conn.send_text(f"killed {conns[0].close_code}")

    log = Log()
    with trio.fail_after(10):
        async with (
            open_test_app(app_with(handler_with(log, closer, config=QUIET))) as client,
            client.websocket("/ws") as victim,
            client.websocket("/ws") as killer,
        ):
            await victim.send_text("register")
            assert (await victim.receive()).data == "ok"
            await killer.send_text("kill")
            with pytest.raises(ConnectionClosed) as info:
                await victim.receive()
            assert info.value.code == 1000
            assert (await killer.receive()).data == "killed 1000"
    assert log.names().count("close") == 2
    assert "error" not in log.names()


async def test_hostile_owner_shutdown_while_callback_waits_for_room() -> None:
    """Shutdown while a callback waits for room to an unread peer: bounded by the timeouts."""
    config = ConnectionConfig(ping_interval=None, write_timeout=30, close_timeout=0.5)
    blocked = trio.Event()
    blob = b"x" * 65536

    async def flood(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        blocked.set()
        for _ in range(10_000):  # bounded: 640 MiB never fit in the socket buffers
            await conn.send_bytes(blob)

    log = Log()
    app = app_with(handler_with(log, flood, config=config))
    with trio.fail_after(20):
        async with tcp_app(app) as port:
            silent = await raw_client(port)
            await silent.send_all(_masked(1, b"flood"))
            await blocked.wait()
            await trio.sleep(0.5)  # the buffers fill: the callback waits for room
            # The tcp_app's exit cancels the accept loop and the served stream.
        await log.closed.wait()
        await silent.aclose()
    assert log.names().count("close") == 1
    assert log.names().count("connect") == 1


async def test_hostile_owner_presence_hook_sends_to_member_in_its_callback(
    autojump_clock: MockClock,
) -> None:
    """on_presence (the hub's task) sends to and closes the member whose callback joins."""
    from rue_trio.hub import Hub, PresenceEvent

    conns: dict[str, WebSocketConn] = {}

    def on_presence(event: PresenceEvent) -> None:
        for conn in conns.values():
            conn.send_nowait(MessageType.TEXT, f"presence {event.room}")
            if event.room == "kick":
                conn.close_nowait(1000, "kicked by presence")

    hub = Hub(on_presence=on_presence)

    async def joiner(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        assert isinstance(data, str)
        conns[data] = conn
        await hub.join(data, conn)
        await conn.send_text(f"joined {data}")

    log = Log()
    app = app_with(handler_with(log, joiner, config=QUIET, hub=hub))
    app.add_background(hub.run)
    with trio.fail_after(60):
        async with open_test_app(app) as client, client.websocket("/ws") as ws:
            await ws.send_text("lobby")
            got = [(await ws.receive()).data, (await ws.receive()).data]
            assert got == ["presence lobby", "joined lobby"]
            await ws.send_text("kick")
            assert (await ws.receive()).data == "presence kick"
            with pytest.raises(ConnectionClosedOK):
                while True:
                    await ws.receive()
        await log.closed.wait()
    assert log.names().count("close") == 1
    assert "error" not in log.names()


@pytest.mark.parametrize("code", [1000, 4000])
async def test_hostile_owner_close_in_on_connect(code: int) -> None:
    """close() in on_connect (before the loop reads): the close ends it, nothing else fails."""
    log = Log()

    async def close_at_once(conn: WebSocketConn) -> None:
        log.on_connect(conn)
        await conn.send_text("hello")
        await conn.close(code, "go away")

    handler = WebSocketHandler(
        on_message=echo, on_connect=close_at_once, on_error=log.on_error, on_close=log.on_close
    )
    with trio.fail_after(10):
        async with open_test_app(app_with(handler)) as client, client.websocket("/ws") as ws:
            assert (await ws.receive()).data == "hello"
            with pytest.raises(ConnectionClosed) as info:
                await ws.receive()
            assert info.value.code == code
        await log.closed.wait()
    names = log.names()
    assert names[0] == "connect" and names[-1] == "close"
    assert ("error", "RuntimeError") not in log.events
    assert log.events[-1] == ("close", code)


async def test_hostile_owner_close_in_callbacks_leaves_no_cycles(
    autojump_clock: MockClock,
) -> None:
    """The handler's closing paths from inside callbacks free everything by refcount."""
    from tests.hostile.test_ws_memory import _garbage_of_ours

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await conn.close(1000)
        if data == "raise":
            raise RuntimeError("after close")
        if data == "send":
            await conn.send_text("after close")

    early = [False]

    async def on_connect(conn: WebSocketConn) -> None:
        if early[0]:
            await conn.close(1000)

    handler = WebSocketHandler(on_message=on_message, on_connect=on_connect, config=QUIET)
    async with open_test_app(app_with(handler)) as client:

        async def one(ending: int) -> None:
            early[0] = ending == 3
            async with client.websocket("/ws") as ws:
                if ending != 3:
                    await ws.send_text(["return", "raise", "send"][ending])
                with contextlib.suppress(ConnectionClosed):
                    await ws.receive()
            await trio.testing.wait_all_tasks_blocked()

        assert await _garbage_of_ours(one, 4, 200) == []


async def test_hostile_owner_callback_floods_another_unread_connection() -> None:
    """A's callback sends to B, whose peer reads nothing: B's write_timeout ends the wait.

    B is aborted (its owner task elsewhere), A's send fails at once, A's callback error
    closes A with 1011 (a callback that used another, closed connection), and a third
    connection is served throughout.
    """
    config = ConnectionConfig(ping_interval=None, write_timeout=0.5, close_timeout=0.5)
    blob = b"x" * 65536
    conns: dict[str, WebSocketConn] = {}
    registered = trio.Event()

    async def relay(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "victim":
            conns["victim"] = conn
            registered.set()
        elif data == "flood":
            for _ in range(10_000):  # bounded: 640 MiB never fit in the socket buffers
                await conns["victim"].send_bytes(blob)
        else:
            await conn.send(msg_type, data)

    log = Log(2)
    app = app_with(handler_with(log, relay, config=config))
    with trio.fail_after(30):
        async with tcp_app(app) as port:
            victim = await raw_client(port)
            victim.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await victim.send_all(_masked(1, b"victim"))
            await registered.wait()
            flooder = await raw_client(port)
            await flooder.send_all(_masked(1, b"flood"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with open_websocket_stream(
                stream, f"ws://127.0.0.1:{port}/ws", config=QUIET
            ) as other:
                for i in range(5):
                    await other.send_text(f"m{i}")
                    assert (await other.receive()).data == f"m{i}"
                await log.closed.wait()  # the victim and the flooder both ended
                await other.send_text("still")
                assert (await other.receive()).data == "still"
            frames = await read_frames(flooder)
            await victim.aclose()
            await flooder.aclose()
    assert close_code(frames) == 1011
    assert log.names().count("close") == 3
