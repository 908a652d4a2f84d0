"""The Trio WebSocket connection: one nursery, a reader task and a writer task.

Theory of operation
-------------------
:func:`open_websocket_conn` wraps any :class:`trio.abc.Stream` on which the opening
handshake is done, and a sans-I/O :class:`~rue_trio.protocol.Protocol`, in a
:class:`WebSocketConn`. Inside the context manager a nursery runs two tasks:

* **reader**: ``stream.receive_some`` → ``protocol.buffer_data`` → ``protocol.next_events``,
  as far as there is room: fewer than ``inbound_queue`` messages
  and ``inbound_queue_bytes`` bytes waiting for the application, and an outbound queue
  below its byte bound (the pongs we owe count there). Otherwise the reader waits, so it
  stops parsing, inflating and reading the transport, and TCP pushes back on the peer; it
  reads again only once the last read is parsed. Pongs complete ping waiters. A protocol
  violation fails the connection once the messages before it were taken by the
  application (and its replies queued), within ``close_timeout``. Whatever the
  core wants to send on its own (pongs, the close echo, the "close the transport" marker)
  is moved to the outbound queue after every call into the core (:meth:`_pump`). The
  reader is the connection's lifeline: when it ends (end of stream, transport error,
  close timeout), the connection is closed, and it tears everything down.
* **writer**: waits for the :class:`~rue_trio.websocket.FrameQueue` to be non-empty,
  takes everything queued (up to 1 MiB, or one bigger frame) and writes it at once: on a
  socket, straight to the kernel without yielding when it takes it all, else through
  Trio's ``send`` calls; on any other stream, ``send_all`` per 64 KiB. The ``b""`` marker
  makes it end the transport: after a complete closing handshake it closes the stream
  at once (the peer sends nothing after its close frame);
  when failing, a half-close when the stream allows it (the reader drains until the
  peer's end, so that no reset destroys our close frame), else ``aclose``. A write that
  makes no progress for ``write_timeout`` aborts the connection: the peer does not read.
  The writer also runs the **keepalive**, woken by its scope's deadline (no task of its
  own): a ping every ``ping_interval``; no pong within ``ping_timeout`` fails
  the connection with 1011. Time during which our reader waits on a full inbound buffer
  does not count: the pong may be waiting, unread, behind messages the application has
  not taken yet. Then we are the slow side, not the peer; unless our writer is stuck
  on that peer, which is then the one not reading.

Sending encodes in the caller's task (``protocol.encode`` masks and compresses) after
waiting for room in the outbound queue, with no checkpoint between encoding and queueing:
a cancelled ``send`` queued the whole message or nothing, and never advanced the
compression context (ARCHITECTURE invariant 5).

Checkpoints and batching. ``send`` and ``receive`` are always cancellation points, but
they yield to other tasks only when they have to wait (no room, no message). A loop of
``receive`` then ``send`` therefore handles every buffered message before the writer runs,
and the writer sends all the replies with one system call; it still yields at least once
every ``inbound_queue`` messages (when the buffer runs dry) or ``outbound_queue_messages``
sends (when the queue fills). Yielding on every call, as a Trio memory channel does, made
pipelined messages cost four times more CPU in our measurements: one system call each.

Closing. Once a close frame went either way, the reader's scope gets a deadline of
``close_timeout``: the peer's close frame and the end of TCP must come by then, or the
transport is aborted. A client waits for the server to close TCP (RFC 6455 section
7.1.1); a server closes it as soon as the handshake completes (the core's ``b""``).

Cancellation. The tasks run inside shielded cancel scopes that only the connection
cancels (one each and no other per idle connection: a scope costs about 1 KiB); the
writer's deadline is the write bound or the keepalive's next step, and when it runs out
while the writer is idle, the writer goes on in a fresh scope. When
the task that owns the connection is cancelled (server shutdown), the context manager
still performs the closing handshake with 1001, within ``close_timeout``, and then lets
``Cancelled`` propagate. The tasks never raise into the
nursery: a failure is stored and becomes the ``__cause__`` of the
:class:`~rue_trio.exceptions.ConnectionClosedError` the application sees.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from sys import getsizeof
from types import MappingProxyType
from typing import Any, NoReturn
from typing import Protocol as TypingProtocol

import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio.exceptions import ConnectionClosed, ConnectionClosedOK
from rue_trio.protocol import (
    Message,
    MessageType,
    Pong,
    Protocol,
    Role,
    State,
    detach_traceback,
    encode_message,
)

from ._config import ConnectionConfig, ConnectionStatistics
from ._queue import FrameQueue
from ._waiter import Waiter

__all__ = ["HandshakeRequest", "WebSocketConn", "open_websocket_conn"]

# One write is capped at this size (unless a single frame is bigger): big enough to
# amortize the system call, small enough not to hold megabytes in one joined copy.
_MAX_WRITE = 1 << 20
# A write renews its bound (ConnectionConfig.write_timeout) at least once per this many
# bytes: the bound is on progress, not on a whole write of up to _MAX_WRITE.
_CHUNK = 1 << 16
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# What a closed socket's calls fail with (as trio's SocketStream sees them).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
# Whether a socket's descriptor can be written with os.write (not on Windows).
_WRITE_FD = os.name == "posix"
_DEFAULT_CONFIG = ConnectionConfig()
# The default of WebSocketConn.meta: one read-only empty mapping shared by every connection.
_NO_META: Mapping[str, Any] = MappingProxyType({})

# Connection ids come from a pool of random bits refilled 256 ids at a time: one system
# call per 256 connections instead of one each. Still 64 random bits per id (unique across
# processes and nodes for all practical purposes); a forked child starts a pool of its own.
_ID_BATCH = 256
_id_pool: list[str] = []
os.register_at_fork(after_in_child=_id_pool.clear)


def _new_id() -> str:
    if not _id_pool:
        digits = os.urandom(8 * _ID_BATCH).hex()
        _id_pool.extend(digits[i : i + 16] for i in range(0, len(digits), 16))
    return _id_pool.pop()


class HandshakeRequest(TypingProtocol):
    """What a connection keeps of the HTTP request that opened it (server side).

    The HTTP layer's ``Request`` satisfies this protocol; the connection never looks
    inside it, it only hands it to the application as :attr:`WebSocketConn.request`.
    """

    @property
    def path(self) -> str:
        """The percent-decoded path, e.g. ``"/ws/lobby"``."""

    @property
    def query_string(self) -> str:
        """The raw query string, without ``?``."""

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """The request headers, lowercase names, as ``(name, value)`` byte pairs."""

    @property
    def params(self) -> Mapping[str, str]:
        """The path parameters filled by the router, e.g. ``{"room": "lobby"}``."""


class _PingWaiter:
    """A ping waiting for its pong; ``rtt`` stays ``None`` if the connection closes first."""

    __slots__ = ("event", "rtt", "sent_at")

    def __init__(self, sent_at: float) -> None:
        self.event = trio.Event()
        self.sent_at = sent_at
        self.rtt: float | None = None


def _peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The ``(host, port)`` of the peer of a socket stream (under TLS too), else ``None``."""
    inner: object = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            address = inner.socket.getpeername()
        except OSError:
            return None
        if isinstance(address, tuple) and len(address) >= 2:
            return (str(address[0]), int(address[1]))
    return None


class WebSocketConn:
    """One open WebSocket connection, server or client side.

    Get one from :func:`open_websocket_conn` (or from the server handler, or from
    :func:`rue_trio.client.open_websocket`); do not create it directly.

    Messages arrive in order through :meth:`receive` or ``async for message in conn``;
    ``send`` and its variants queue messages for the writer task. All methods must be
    called from the Trio run that opened the connection.
    """

    # An idle server may hold many thousands of these: no per-instance dict.
    __slots__ = (
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_closed_event",
        "_closing",
        "_closing_first",
        "_config",
        "_connection_exc",
        "_id",
        "_inbound",
        "_inbound_bytes",
        "_inbound_limit",
        "_ka_credited",
        "_ka_due",
        "_ka_paused",
        "_ka_payload",
        "_ka_ping",
        "_last_rtt",
        "_messages_received",
        "_messages_sent",
        "_out",
        "_paused_since",
        "_paused_total",
        "_pings",
        "_pings_sent",
        "_protocol",
        "_reader_done",
        "_reader_scope",
        "_receiver",
        "_receiving",
        "_remote_address",
        "_request",
        "_room_waiter",
        "_state",
        "_stream",
        "_stream_closed_by_us",
        "_subprotocol",
        "_trailing_data",
        "_writer_scope",
        "_writing",
        "meta",
        "user",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        *,
        trailing_data: bytes = b"",
        request: HandshakeRequest | None = None,
        subprotocol: str | None = None,
        remote_address: tuple[str, int] | None = None,
        config: ConnectionConfig = _DEFAULT_CONFIG,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._config = config
        self._trailing_data = trailing_data
        self._request = request
        self._subprotocol = subprotocol
        self._remote_address = remote_address or _peer_address(stream)
        self._id = _new_id()
        self._out = FrameQueue(config.outbound_queue_messages, config.outbound_queue_bytes)
        # A list, not a deque: it holds at most ``inbound_queue`` messages (16 by
        # default), and an empty list costs 56 bytes where a deque allocates a 64-slot
        # block: most connections are idle most of the time.
        self._inbound: list[Message] = []
        self._inbound_limit = config.inbound_queue
        # What the messages buffered since the buffer was last empty take in memory
        # (sys.getsizeof of their data): at least what the buffer holds.
        self._inbound_bytes = 0
        self._receiver = Waiter()  # the application waiting for a message
        self._room_waiter = Waiter()  # the reader waiting for room in the inbound buffer
        self._receiving = False
        self._pings: dict[bytes, _PingWaiter] = {}
        self._connection_exc: BaseException | None = None
        # Whether this side sent the first close frame (then late messages may be dropped).
        self._closing_first = False
        self._closing = False
        self._reader_done = False
        self._stream_closed_by_us = False
        self._closed = False
        # Created only when a task has to wait for the end.
        self._closed_event: trio.Event | None = None
        # The shielded scopes keep the tasks alive through the owner's cancellation until
        # the connection ends them. The reader's deadline bounds the closing handshake;
        # cancelling it is how the connection aborts (each scope costs about 1 KiB).
        self._reader_scope = trio.CancelScope(shield=True)
        self._writer_scope = trio.CancelScope(shield=True)
        # The keepalive, run by the writer: when it must act next (send a ping, or give
        # up on its pong), the ping waiting for its pong, and the reader's pauses.
        self._ka_due = math.inf
        self._ka_ping: _PingWaiter | None = None
        self._ka_payload = b""
        self._ka_paused = 0.0
        self._ka_credited = 0.0
        # Whether the writer is inside a write: the peer has not taken our bytes yet.
        self._writing = False
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self._messages_received = 0
        self._messages_sent = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        self._pings_sent = 0
        self._last_rtt: float | None = None
        self._state: dict[str, Any] | None = None
        self.user: str | None = None
        """Who is on the other end, as the application knows them, or ``None``.

        Set when the connection is accepted (by the handshake's authentication, or by the
        application in ``on_connect``). The hub's presence counts one user once, however
        many connections (browser tabs) carry the same ``user``; a connection without a
        user is a user of its own, named by its :attr:`id`.
        """
        self.meta: Mapping[str, Any] = _NO_META
        """What the application publishes about this connection in presence listings.

        JSON-serialisable values only (they may cross processes through a backplane),
        for example ``{"name": "ada", "device": "phone"}``. Empty by default.
        """

    def __repr__(self) -> str:
        role = self._protocol.role.value
        return f"<WebSocketConn id={self._id} {role} {self._protocol.state.name}>"

    # ------------------------------------------------------------------ attributes

    @property
    def id(self) -> str:
        """A unique, printable identifier: 16 hex digits, random (unique across nodes)."""
        return self._id

    @property
    def role(self) -> Role:
        """:attr:`Role.SERVER` or :attr:`Role.CLIENT`."""
        return self._protocol.role

    @property
    def request(self) -> HandshakeRequest | None:
        """The HTTP request that opened the connection (server side), else ``None``."""
        return self._request

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, or ``None``."""
        return self._subprotocol

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``, or ``None`` when the transport has no address."""
        return self._remote_address

    @property
    def state(self) -> State:
        """The protocol state: ``OPEN``, ``CLOSING`` (a close frame went) or ``CLOSED``."""
        return self._protocol.state

    @property
    def closed(self) -> bool:
        """Whether the connection is over: closing handshake done or aborted, transport closed."""
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed (1006 without a handshake), else ``None``.

        It is the peer's code if it sent a close frame, else ours.
        """
        if not self._reader_done:
            return None
        return self._protocol.close_exc.code

    @property
    def close_reason(self) -> str | None:
        """The close reason that goes with :attr:`close_code`, else ``None``."""
        if not self._reader_done:
            return None
        return self._protocol.close_exc.reason

    @property
    def app_state(self) -> dict[str, Any]:
        """A dictionary for the application's own per-connection data.

        Nothing in rue_trio reads it: store what a callback needs later (a session, a
        rate limiter, the rooms this connection joined). Created on first use, so an idle
        connection that never uses it does not pay for it.
        """
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    # The hub's private view of a connection (rue_trio.hub's Member port): an id, a key that
    # says which connections can share a broadcast frame, and non-blocking calls. These are
    # private on purpose: encoding a frame without queueing it advances a compression
    # context, so applications must never call them; they use send().

    @property
    def _hub_encode_key(self) -> Hashable | None:
        """Which connections can share the bytes of one broadcast frame.

        :func:`~rue_trio.protocol.encode_message` for a server connection without
        compression (its frames are plain); the compressor's
        :attr:`~rue_trio.protocol.PerMessageDeflate.shared_key` when it compresses each
        message from a fresh state (RFC 7692 section 7.1.1.1); ``None`` when each frame is
        this connection's own: a client masks every frame, a compressor with context
        takeover depends on the messages before.
        """
        protocol = self._protocol
        if protocol.role is not Role.SERVER:
            return None
        deflate = protocol.deflate
        if deflate is None:
            return encode_message
        # min_size too: it decides which messages are compressed at all.
        return (*deflate.shared_key, deflate.min_size) if deflate.shareable else None

    def _hub_encode(self, type: MessageType, data: str | bytes) -> bytes:
        """Return this connection's frame for one message, without queueing it.

        Queue the result at once with :meth:`_hub_offer`. When this connection
        keeps a compression context and its outbound queue has no room, nothing is
        encoded (a frame that would be dropped must not advance the context) and ``b""``
        is returned, which :meth:`_hub_offer` refuses with
        :class:`trio.WouldBlock`.

        Args:
            type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
            data: as for :meth:`send`.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        protocol = self._protocol
        deflate = protocol.deflate
        out = self._out
        if (
            deflate is not None
            and not deflate.shareable
            and out._is_accepting()
            and not out._has_room()
        ):
            return b""
        return protocol.encode(type, data)

    def _hub_offer(self, frame: bytes) -> int:
        """Queue a complete frame valid on this connection, without waiting.

        Args:
            frame: from :meth:`_hub_encode`, or a shared frame for this connection's
                :attr:`_hub_encode_key`; not copied.

        Returns:
            The bytes now queued on this connection, this frame included.

        Raises:
            trio.WouldBlock: the outbound queue is full (or :meth:`_hub_encode` found it full).
            trio.BrokenResourceError: the connection is closing or closed.
        """
        if not frame:
            raise trio.WouldBlock
        return self._out.send_nowait(frame)

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting for it; idempotent.

        Messages already queued are written first; the connection's own tasks finish the
        handshake (bounded by ``close_timeout``).

        Args:
            code: the close code (RFC 6455 section 7.4.1).
            reason: a short UTF-8 reason.

        Raises:
            ValueError: a code that may not be sent, or a reason too long.
        """
        self._start_close(code, reason)

    def statistics(self) -> ConnectionStatistics:
        """Return a snapshot of the connection's counters."""
        out = self._out
        return ConnectionStatistics(
            messages_received=self._messages_received,
            messages_sent=self._messages_sent,
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
            inbound_messages=len(self._inbound),
            inbound_bytes=sum(getsizeof(message.data) for message in self._inbound),
            queued_frames=len(out),
            queued_bytes=out.statistics().queued_bytes,
            pings_sent=self._pings_sent,
            last_ping_rtt=self._last_rtt,
        )

    # --------------------------------------------------------------------- sending

    async def send(
        self, message_type: MessageType, data: str | bytes | bytearray | memoryview
    ) -> None:
        """Send one message: Rue's ``conn.Send(type, data)``.

        Waits for room in the outbound queue, then encodes the message (masking it on a
        client, compressing it when permessage-deflate was agreed) and queues it. It
        returns once the message is queued, before it is written.

        It is always a cancellation point, but a schedule point only when it waits for
        room (see the module's theory of operation: that is what batches writes).

        Cancellation: if cancelled while waiting for room, nothing was queued and the
        compression context is untouched; once queued, the call completes. Either the
        whole message is sent or none of it.

        Args:
            message_type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
            data: for a text message a ``str``, or ``bytes`` that the caller guarantees
                to be UTF-8 (not checked: the fast path for pre-encoded JSON; invalid
                UTF-8 makes the peer fail the connection with 1007); for a binary
                message ``bytes`` (or a ``bytearray`` or ``memoryview``; a ``str`` is sent
                as its UTF-8 encoding).

        Raises:
            ConnectionClosed: the connection is closing or closed
                (:class:`~rue_trio.exceptions.ConnectionClosedOK` after a normal
                closure); it is raised once the connection is fully closed, so it
                tells how it ended.
            ValueError: ``message_type`` is not a data message type.
        """
        await checkpoint_if_cancelled()
        out = self._out
        if not out._has_room():
            if out._is_accepting():
                await out._wait_room()
            if not out._is_accepting():
                await self._raise_closed_to_sender()
        # No checkpoint from here on: the message is encoded and queued at once.
        out._append(self._protocol.encode(message_type, data))
        self._messages_sent += 1

    def send_nowait(
        self, message_type: MessageType, data: str | bytes | bytearray | memoryview
    ) -> None:
        """Send one message if the outbound queue has room, without waiting.

        The room is checked before the message is encoded: a refused message did not
        advance the compression context.

        Args:
            message_type: as for :meth:`send`.
            data: as for :meth:`send`.

        Raises:
            trio.WouldBlock: the outbound queue is full; nothing was queued.
            ConnectionClosed: the connection is closing or closed (as it stands now).
            ValueError: ``message_type`` is not a data message type.
        """
        out = self._out
        if not out._is_accepting():
            raise self._closed_error()
        if not out._has_room():
            raise trio.WouldBlock
        out._append(self._protocol.encode(message_type, data))
        self._messages_sent += 1

    async def send_text(self, text: str) -> None:
        """Send a text message.

        Cancellation: as :meth:`send`: the whole message is queued or none of it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        await self.send(MessageType.TEXT, text)

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message.

        Cancellation: as :meth:`send`: the whole message is queued or none of it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        await self.send(MessageType.BINARY, data)

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as compact JSON in a text message.

        Cancellation: as :meth:`send`: the whole message is queued or none of it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``value`` is not JSON-serializable.
        """
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        await self.send(MessageType.TEXT, text)

    async def ping(self, data: bytes | None = None) -> float:
        """Send a ping and wait for its pong (RFC 6455 section 5.5.2).

        Bound the wait with :func:`trio.fail_after`.

        Cancellation: the ping stays queued (or sent); only the wait is abandoned.

        Args:
            data: the ping's payload, at most 125 bytes; by default 4 random bytes. A pong
                for a later ping answers this one too (section 5.5.3 lets a peer answer
                only the most recent ping).

        Returns:
            The round-trip time, in seconds.

        Raises:
            ConnectionClosed: the connection closed before the pong came.
            ValueError: ``data`` is over 125 bytes, or a ping with the same payload is
                still waiting for its pong.
        """
        await checkpoint_if_cancelled()
        if self._protocol.state is not State.OPEN:
            await self._raise_closed_to_sender()
        if data is None:
            data = self._fresh_ping_payload()
        elif data in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        waiter = self._send_ping(data)
        try:
            await waiter.event.wait()
        finally:
            if self._pings.get(data) is waiter:
                del self._pings[data]
        if waiter.rtt is None:
            await self._raise_closed()
        return waiter.rtt

    def _fresh_ping_payload(self) -> bytes:
        data = os.urandom(4)
        while data in self._pings:
            data = os.urandom(4)
        return data

    def _send_ping(self, data: bytes) -> _PingWaiter:
        self._protocol.send_ping(data)
        self._pump()
        waiter = _PingWaiter(trio.current_time())
        self._pings[data] = waiter
        self._pings_sent += 1
        return waiter

    # ------------------------------------------------------------------- receiving

    async def receive(self) -> Message:
        """Return the next message from the peer.

        Messages received before the connection closed are all delivered first; then
        :class:`~rue_trio.exceptions.ConnectionClosed` is raised. It is always a
        cancellation point, but a schedule point only when it waits for a message.

        Cancellation: safe; no message is lost, the next call returns it.

        Returns:
            The :class:`~rue_trio.protocol.Message`: ``.type`` and ``.data`` (``str`` for
            text, ``bytes`` for binary).

        Raises:
            ConnectionClosedOK: the connection closed normally (1000 or 1001 both ways).
            ConnectionClosedError: it closed any other way; ``__cause__`` says why
                (a transport error, a protocol violation, a timeout).
            trio.BusyResourceError: another task is already receiving.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        # Returns normally only without yielding: the buffer cannot change meanwhile.
        await checkpoint_if_cancelled()
        if not self._inbound:
            await self._wait_message()
        return self._take_message()

    def _take_message(self) -> Message:
        """Take the oldest buffered message (there is one) and make room for the reader."""
        inbound = self._inbound
        message = inbound.pop(0)
        if not inbound:
            # The byte count is of every message buffered since the buffer was last
            # empty: never less than what it holds, and nothing to compute per message
            # taken (0.2 us of a pipelined echo's 5 per message).
            self._inbound_bytes = 0
        if self._room_waiter.task is not None:
            self._room_waiter.wake()
        return message

    async def _wait_message(self) -> None:
        """Sleep until a message is buffered; raise the closing exception at the end."""
        self._receiving = True
        try:
            while True:
                if self._reader_done:
                    await self._raise_closed()
                await self._receiver.wait()
                if self._inbound:
                    return
        finally:
            self._receiving = False

    async def receive_json(self) -> Any:
        """Receive a message and parse it as JSON (text or binary alike).

        Cancellation: as :meth:`receive`: no message is lost.

        Raises:
            ConnectionClosed: as :meth:`receive`.
            ValueError: the message is not valid JSON (the message is consumed).
        """
        message = await self.receive()
        return json.loads(message.data)

    def __aiter__(self) -> WebSocketConn:
        return self

    async def __anext__(self) -> Message:
        """The next message; the iteration ends quietly after a normal closure.

        Cancellation: as :meth:`receive`: no message is lost.

        Raises:
            ConnectionClosedError: the connection closed abnormally.
        """
        # receive() but for the end of the iteration, not awaited through it: one
        # coroutine less per message on the hot path of ``async for message in conn``.
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this connection")
        await checkpoint_if_cancelled()
        if not self._inbound:
            try:
                await self._wait_message()
            except ConnectionClosedOK:
                raise StopAsyncIteration from None
        return self._take_message()

    # --------------------------------------------------------------------- closing

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: Rue's ``conn.Close()``.

        Messages already queued are written before the close frame. Then waits for the
        peer's close frame and the end of the transport, at most ``close_timeout``, after
        which the transport is aborted. Closing a closed or closing connection only waits
        for the end.

        Cancellation: the close frame stays queued and the connection goes on closing in
        the background (bounded by ``close_timeout``); only the wait is abandoned.

        Args:
            code: the close code (RFC 6455 section 7.4.1), 1000 by default.
            reason: a short UTF-8 reason (the code and reason fit in 123 bytes).

        Raises:
            ValueError: a code that may not be sent, or a reason too long.
        """
        await checkpoint_if_cancelled()
        self._start_close(code, reason)
        await self._wait_closed()

    async def aclose(self) -> None:
        """Close the connection with 1000: :meth:`close` under the Trio resource name.

        Cancellation: as :meth:`close`.
        """
        await self.close()

    def _start_close(self, code: int, reason: str) -> None:
        protocol = self._protocol
        if protocol.state is State.OPEN:
            protocol.send_close(code, reason)
            self._closing_first = True
            self._pump()

    def _fail(self, code: int, reason: str, exc: BaseException) -> None:
        if self._protocol.state is State.OPEN:
            self._set_exc(exc)
            self._closing_first = True
            self._protocol.fail(code, reason)
            self._pump()

    def _set_exc(self, exc: BaseException) -> None:
        # Kept without its traceback: its frames refer to this connection, and the
        # cycle would outlive the connection until a full collection.
        if self._connection_exc is None:
            self._connection_exc = detach_traceback(exc)

    def _closed_error(self) -> ConnectionClosed:
        exc = self._protocol.close_exc
        if self._connection_exc is not None:
            exc.__cause__ = self._connection_exc
        return exc

    async def _raise_closed(self) -> NoReturn:
        # Wait for the end (bounded by the close timeout) so the exception says how the
        # connection ended, not how it was ending.
        await self._wait_closed()
        raise self._closed_error()

    async def _raise_closed_to_sender(self) -> NoReturn:
        protocol = self._protocol
        if protocol.close_rcvd is None and protocol.parser_exc is None:
            await self._raise_closed()
        # The peer closed, or broke the protocol: how it ends is known already. Waiting
        # for the end here could deadlock: the reader may be waiting for this very task
        # to take messages from a full inbound buffer.
        await checkpoint_if_cancelled()
        raise self._closed_error()

    async def _wait_closed(self) -> None:
        """Wait for the end of the connection; no schedule point if it is over."""
        if self._closed:
            await checkpoint_if_cancelled()
            return
        event = self._closed_event
        if event is None:
            event = self._closed_event = trio.Event()
        await event.wait()

    def _set_closed(self) -> None:
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()

    def _end_tasks(self) -> None:
        """Cancel whatever of the connection's tasks still runs (after the close)."""
        self._reader_scope.cancel()
        self._writer_scope.cancel()

    def _abort(self, exc: BaseException) -> None:
        """End the connection because of ``exc``: the reader stops and tears down."""
        self._set_exc(exc)
        self._reader_scope.cancel()

    # ----------------------------------------------------------------- the core

    def _pump(self) -> None:
        """Move what the core produced to the outbound queue; notice the start of closing.

        Called after every call into the core that may produce output, with no checkpoint
        in between, so frames keep the core's order.
        """
        out = self._out
        for frame in self._protocol.data_to_send():
            out._append_control(frame)
        if not self._closing and self._protocol.state is not State.OPEN:
            self._closing = True
            # RFC 6455 section 5.5.1: no data frame may follow our close frame.
            out._stop_accepting()
            # Section 7.1.1: bound the wait for the peer's close frame and end of TCP.
            self._reader_scope.deadline = trio.current_time() + self._config.close_timeout
            if self._closing_first:
                # The application asked to close: release a reader waiting for room.
                self._room_waiter.wake()

    # ---------------------------------------------------------------------- tasks

    def _start(self, nursery: trio.Nursery) -> None:
        # Constant task names: formatting one per task and connection costs time and
        # memory; ``repr(conn)`` tells the connections apart.
        nursery.start_soon(self._run_reader, name="rue_trio websocket reader")
        interval = self._config.ping_interval
        if interval is not None:
            # The writer's wait for frames ends at the first ping (see _keepalive_tick).
            self._ka_due = self._writer_scope.deadline = trio.current_time() + interval
        nursery.start_soon(self._run_writer, name="rue_trio websocket writer")

    async def _run_reader(self) -> None:
        clean = False
        with self._reader_scope:
            try:
                clean = await self._read_loop()
            except trio.Cancelled:
                # The scope was cancelled: the writer failed, or the closing handshake
                # timed out. A client that saw both close frames and waited
                # close_timeout for the server to close TCP is not in error (RFC 6455
                # section 7.1.1).
                protocol = self._protocol
                if protocol.close_rcvd is None or protocol.close_sent is None:
                    self._set_exc(TimeoutError("the closing handshake timed out"))
                raise
            except Exception as exc:
                # A bug, not the peer's doing: background tasks never raise into the
                # user's nursery; the failure becomes the ConnectionClosedError's cause.
                self._set_exc(exc)
            finally:
                await self._teardown(clean)

    async def _read_loop(self) -> bool:
        """Read until the end of the stream; return whether it ended cleanly."""
        protocol = self._protocol
        stream = self._stream
        size = self._config.read_size
        inbound = self._inbound
        limit = self._inbound_limit
        byte_limit = self._config.inbound_queue_bytes
        out = self._out
        receiver = self._receiver
        data: bytes | bytearray = self._trailing_data
        self._trailing_data = b""
        await checkpoint_if_cancelled()
        try:
            while True:
                if data:
                    self._bytes_received += len(data)
                    protocol.buffer_data(data)
                    # Parse (and inflate) only as far as there is room: the memory a
                    # peer can make us hold is bounded in bytes. The price, measured on
                    # a pipelined echo of 64-byte texts over memory streams: 5.6 us of
                    # CPU per echoed message against 4.9 when everything read was parsed
                    # at once (one parse per batch of ``inbound_queue`` messages; 6.5
                    # before the byte count was taken once per message and the write
                    # bound set lazily); the cadence of yields is unchanged.
                    while True:
                        count_room = limit - len(inbound)
                        byte_room = byte_limit - self._inbound_bytes
                        if count_room <= 0 or byte_room <= 0:
                            if not self._closing_first:
                                await self._wait_inbound_room()
                                continue
                            # We closed first and the application is not reading: parse
                            # on (for the peer's close), dropping its late messages.
                            count_room = byte_room = 1
                            drop = True
                        else:
                            drop = False
                        if out._bytes_full():
                            # Our pongs are not being read: stop reading pings.
                            await out._wait_bytes_room()
                        events = protocol.next_events(count_room, byte_room)
                        if not events:
                            break
                        for event in events:
                            if type(event) is Message:
                                if drop:
                                    continue
                                inbound.append(event)
                                self._inbound_bytes += getsizeof(event.data)
                                self._messages_received += 1
                            else:
                                if type(event) is Pong:
                                    self._on_pong(event.data)
                                self._pump()
                        if receiver.task is not None:
                            receiver.wake()
                    self._pump()
                    if protocol.parser_exc is not None and self._connection_exc is None:
                        await self._fail_after_replies()
                data = await stream.receive_some(size)
                if not data:
                    return True
        except trio.ClosedResourceError as exc:
            if self._stream_closed_by_us:
                return True
            self._set_exc(exc)
            return False
        except _TRANSPORT_ERRORS as exc:
            self._set_exc(exc)
            return False

    async def _fail_after_replies(self) -> None:
        """Fail for the peer's violation once the messages before it were answered.

        The messages that came before the violation are delivered; the application gets
        until it has taken them all (and yielded once more, which is when its replies are
        queued), at most ``close_timeout``, before the close frame goes after them.
        """
        await checkpoint_if_cancelled()
        protocol = self._protocol
        parser_exc = protocol.parser_exc
        assert parser_exc is not None
        self._set_exc(parser_exc)
        if self._inbound and protocol.state is State.OPEN:
            with trio.move_on_after(self._config.close_timeout):
                while self._inbound and not self._closing_first:
                    await self._room_waiter.wait()
        protocol.fail_on_violation()
        self._pump()

    async def _wait_inbound_room(self) -> None:
        """Wait while the inbound buffer is full, accounting the time as ours."""
        self._paused_since = since = trio.current_time()
        try:
            await self._room_waiter.wait()
        finally:
            self._paused_total += trio.current_time() - since
            self._paused_since = None

    def _paused_time(self) -> float:
        """Total time the reader spent waiting for the application, up to now."""
        since = self._paused_since
        if since is None:
            return self._paused_total
        return self._paused_total + trio.current_time() - since

    def _on_pong(self, data: bytes) -> None:
        pings = self._pings
        if data not in pings:
            return
        now = trio.current_time()
        # RFC 6455 section 5.5.3: a pong may answer only the most recent ping, so it
        # acknowledges every ping sent before the one it matches.
        for payload in list(pings):
            waiter = pings.pop(payload)
            waiter.rtt = now - waiter.sent_at
            waiter.event.set()
            if payload == data:
                self._last_rtt = waiter.rtt
                break
        keepalive = self._ka_ping
        if (
            keepalive is not None
            and keepalive.rtt is not None
            and self._config.ping_timeout is not None
        ):
            # Answered in time: the next keepalive ping goes an interval from now.
            interval = self._config.ping_interval
            assert interval is not None
            self._ka_ping = None
            self._ka_due = now + interval
            # An idle writer is to wake by then (its deadline is the pong's).
            self._out._wake_writer()

    async def _teardown(self, clean: bool) -> None:
        """End the connection: state CLOSED, close the transport, wake everyone."""
        try:
            self._protocol.receive_eof()
            # Nothing can be written any more.
            self._protocol.data_to_send()
            self._closing = True
            self._reader_done = True
            self._out._close()
            for waiter in self._pings.values():
                waiter.event.set()
            self._pings.clear()
            self._ka_due = math.inf
            if self._stream_closed_by_us:
                # The writer closed it after the closing handshake.
                await checkpoint_if_cancelled()
            elif clean:
                self._stream_closed_by_us = True
                # Bounded by the reader's scope (no scope of its own: they cost).
                scope = self._reader_scope
                scope.deadline = min(
                    scope.deadline, trio.current_time() + self._config.close_timeout
                )
                await self._stream.aclose()
            else:
                self._stream_closed_by_us = True
                await trio.aclose_forcefully(self._stream)
        finally:
            # Woken once the transport is closed, the application finds the connection
            # over and does not have to wait a second time.
            self._receiver.wake()
            self._set_closed()

    async def _run_writer(self) -> None:
        while True:
            scope = self._writer_scope
            with scope:
                await checkpoint_if_cancelled()
                try:
                    await self._write_loop()
                except _TRANSPORT_ERRORS as exc:
                    if not self._stream_closed_by_us:
                        self._abort(exc)
                except Exception as exc:
                    # A bug; as in the reader, it must not reach the user's nursery.
                    self._abort(exc)
            now = trio.current_time()
            if not scope.cancelled_caught or self._reader_done or now < scope.deadline:
                return
            # The deadline: the write bound, or the keepalive's next step.
            if self._writing:
                # Cut short, the write leaves the transport unusable: abort.
                if now >= self._keepalive_fail_at():
                    self._keepalive_failed()
                else:
                    timeout = self._config.write_timeout
                    self._abort(TimeoutError(f"a write made no progress for {timeout} s"))
                return
            if now >= self._ka_due:
                try:
                    self._keepalive_tick(now)
                except Exception as exc:
                    self._abort(exc)
                    return
            # Otherwise the write bound left armed after the last write (see _arm_write)
            # ran out while the writer was idle. Go on in a fresh scope.
            self._writer_scope = trio.CancelScope(shield=True, deadline=self._ka_due)

    async def _write_loop(self) -> None:
        out = self._out
        stream = self._stream
        scope = self._writer_scope
        keepalive = self._config.ping_interval is not None
        # A plain socket is written through its own send calls, each one a step of
        # progress that renews the write bound; any other stream by chunks.
        sock = stream.socket if type(stream) is trio.SocketStream else None
        # A cancellation point only: the first wait for frames is the schedule point.
        await checkpoint_if_cancelled()
        while True:
            if not out:
                if out._is_closed():
                    return
                if self._ka_due < scope.deadline:
                    # Wake for the keepalive's next step (a no-op without keepalive).
                    scope.deadline = self._ka_due
                await out._wait_frames()
                continue
            if keepalive and trio.current_time() >= self._ka_due:
                # A busy writer is never idle when the keepalive is due.
                self._keepalive_tick(trio.current_time())
            batch, eof = out._take(_MAX_WRITE)
            if batch:
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                self._writing = True
                if sock is not None:
                    sent = _write_now(sock, data) if _WRITE_FD else 0
                    if sent < len(data):
                        await _send_to_socket(sock, data, sent, self._arm_write)
                elif len(data) <= _CHUNK:
                    self._arm_write()
                    await stream.send_all(data)
                else:
                    with memoryview(data) as view:
                        for start in range(0, len(data), _CHUNK):
                            self._arm_write()
                            await stream.send_all(view[start : start + _CHUNK])
                self._writing = False
                self._bytes_sent += len(data)
            if eof:
                # Ending the transport is bounded by the reader's close timeout.
                scope.deadline = math.inf
                await self._end_transport()
                return

    def _arm_write(self) -> None:
        """Set the writer's deadline for a write (or a chunk of one) that starts now.

        It must not run out before ``write_timeout`` from now, unless the keepalive
        would fail the connection first (a stuck writer cannot deliver the pong's ping);
        it may run out a sixteenth later. The deadline is moved only when it is outside
        that range: a busy writer sets it about once per ``write_timeout / 16`` seconds
        instead of twice per write (setting a scope's deadline cost 0.5 us per message
        of a pipelined echo, where a whole message costs 5), and it stays armed after
        the write.
        """
        scope = self._writer_scope
        timeout = self._config.write_timeout
        fail = self._keepalive_fail_at()
        now = trio.current_time()
        deadline = scope.deadline
        if timeout is None:
            if deadline != fail:
                scope.deadline = fail
        elif deadline > fail or deadline < min(now + timeout, fail) or deadline == math.inf:
            scope.deadline = min(now + timeout + timeout / 16, fail)

    def _keepalive_fail_at(self) -> float:
        """When the keepalive gives up if no pong comes (pauses not credited yet)."""
        timeout = self._config.ping_timeout
        if timeout is None:
            return math.inf
        if self._ka_ping is not None:
            return self._ka_due
        return self._ka_due + timeout

    def _keepalive_tick(self, now: float) -> None:
        """The keepalive's step, due now: send a ping, or give up on its pong.

        The keepalive runs in the writer, whose deadline wakes it: no task, scope or
        sleep of its own (4.1 KiB and 25 objects per idle connection as a task). A pong
        that comes in time moves the next step on (see :meth:`_on_pong`).
        """
        config = self._config
        interval = config.ping_interval
        timeout = config.ping_timeout
        assert interval is not None
        if self._protocol.state is not State.OPEN:
            self._ka_due = math.inf
            return
        waiter = self._ka_ping
        if waiter is not None and timeout is not None:
            # No pong yet. While our reader waited for the application to take messages,
            # it read nothing: the pong may be in the transport's buffer. Give that time
            # back, unless our writer is stuck on this peer (then the application waits
            # for a peer that does not read, and the peer is the slow side).
            paused = self._paused_time() - self._ka_paused
            if paused <= self._ka_credited or self._writing:
                self._keepalive_failed()
                return
            self._ka_due += paused - self._ka_credited
            self._ka_credited = paused
            return
        # Without a ping timeout an unanswered ping is forgotten when the next one goes,
        # so that a silent peer does not grow the table of waiters.
        if waiter is not None and self._pings.get(self._ka_payload) is waiter:
            del self._pings[self._ka_payload]
        payload = self._ka_payload = self._fresh_ping_payload()
        self._ka_ping = self._send_ping(payload)
        if timeout is None:
            self._ka_due = now + interval
        else:
            self._ka_paused = self._paused_time()
            self._ka_credited = 0.0
            self._ka_due = now + timeout

    def _keepalive_failed(self) -> None:
        timeout = self._config.ping_timeout
        self._ka_due = math.inf
        exc = TimeoutError(f"no pong within {timeout} s of a keepalive ping")
        self._fail(1011, "keepalive ping timeout", exc)
        if self._writing:
            # The write was cut short: nothing more can be written.
            self._abort(exc)

    async def _end_transport(self) -> None:
        """The core asked to close TCP: after the closing handshake, or after failing."""
        stream = self._stream
        protocol = self._protocol
        if isinstance(stream, trio.abc.HalfCloseableStream) and (
            protocol.close_rcvd is None or protocol.close_sent is None
        ):
            # Failing: the peer may still be sending. A half-close sends our FIN and lets
            # the reader drain until the peer's end: closing with unread data would
            # send a reset, and the peer could lose our close frame.
            await stream.send_eof()
        else:
            # The closing handshake is complete (RFC 6455 section 7.1.1: the server closes
            # TCP first): the peer sends nothing more, so close at once instead of
            # waiting for its FIN; the reader then ends (its stream is closed by us).
            self._stream_closed_by_us = True
            await stream.aclose()


def _socket_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """The stream error for a socket call's ``exc``, as trio's ``SocketStream`` raises it."""
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def _write_now(sock: trio.socket.SocketType, data: bytes) -> int:
    """Write what the kernel takes of ``data`` at once, without yielding; return how much.

    When it takes everything (the usual case), the writer goes back to its queue, whose
    wait is its schedule point. Trio's ``send`` yields once more after a complete write:
    a task step per write (ping-pong: 4.00 steps and 245 calls per round trip with it,
    3.00 and 215 without, ``bench/profile_server.py --scenario pingpong``), and a woken
    broadcast writer kept its await chain alive until the next pass (23 objects each).

    Raises:
        trio.ClosedResourceError: the socket was closed (by us).
        trio.BrokenResourceError: the connection broke.
    """
    try:
        return os.write(sock.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _socket_error(exc) from exc


async def _send_to_socket(
    sock: trio.socket.SocketType, data: bytes, sent: int, arm: Callable[[], None]
) -> None:
    """Write ``data[sent:]`` to a socket, renewing the write bound on every bit of progress.

    ``SocketStream.send_all`` makes the same calls, but its progress is not visible.

    Raises:
        trio.ClosedResourceError: the socket was closed (by us).
        trio.BrokenResourceError: the connection broke.
    """
    total = len(data)
    with memoryview(data) as view:
        while True:
            arm()
            try:
                sent += await sock.send(view[sent:])
            except OSError as exc:
                raise _socket_error(exc) from exc
            if sent >= total:
                return


@asynccontextmanager
async def open_websocket_conn(
    stream: trio.abc.Stream,
    protocol: Protocol,
    *,
    trailing_data: bytes = b"",
    request: HandshakeRequest | None = None,
    subprotocol: str | None = None,
    remote_address: tuple[str, int] | None = None,
    config: ConnectionConfig = _DEFAULT_CONFIG,
) -> AsyncIterator[WebSocketConn]:
    """Run a WebSocket connection over ``stream`` for the duration of the block.

    The opening handshake must be done: ``stream`` carries frames from now on and
    ``protocol`` was built with what the handshake agreed (role, permessage-deflate).

    On leaving the block the connection is closed, within ``config.close_timeout``:
    with 1000 on a normal exit; with 1011 when the block raises, and the exception is
    re-raised; with 1001 ("going away") when the owner task is cancelled (or
    interrupted), and ``Cancelled`` propagates. The stream is closed in every case.

    Args:
        stream: the transport, e.g. a :class:`trio.SocketStream` or
            :class:`trio.SSLStream`.
        protocol: the sans-I/O core for this connection.
        trailing_data: bytes already read past the handshake (the first frames).
        request: the HTTP request that opened the connection (server side).
        subprotocol: the subprotocol agreed in the handshake.
        remote_address: the peer's ``(host, port)``; by default taken from the socket.
        config: timeouts and buffer bounds.

    Yields:
        The open connection.

    Raises:
        Whatever the block raised: no exception group for a single failure.
    """
    conn = WebSocketConn(
        stream,
        protocol,
        trailing_data=trailing_data,
        request=request,
        subprotocol=subprotocol,
        remote_address=remote_address,
        config=config,
    )
    body_exc: BaseException | None = None
    task_excs: BaseExceptionGroup[BaseException] | None = None
    try:
        async with trio.open_nursery() as nursery:
            conn._start(nursery)
            try:
                yield conn
            except BaseException as exc:
                # Kept out of the nursery, so that it leaves unwrapped.
                body_exc = exc
            if not conn._closed:
                await _shutdown(conn, *_exit_code(body_exc))
            conn._end_tasks()
    except BaseExceptionGroup as group:
        # Only reachable if a task let through what it must not catch (a
        # KeyboardInterrupt delivered to it).
        task_excs = group
    if task_excs is not None:
        # A Cancelled in the block came from the nursery reacting to the task: it must
        # not leave the nursery. Any other exception of the block goes with the tasks'
        # (a KeyboardInterrupt is never dropped). Unwrap a single one; several stay grouped.
        if body_exc is not None and not isinstance(body_exc, trio.Cancelled):
            raise BaseExceptionGroup(
                "a WebSocket connection failed", [body_exc, *task_excs.exceptions]
            )
        raise task_excs.exceptions[0] if len(task_excs.exceptions) == 1 else task_excs
    if body_exc is not None:
        raise body_exc


def _exit_code(exc: BaseException | None) -> tuple[int, str]:
    """The close code for leaving the block with ``exc`` (RFC 6455 section 7.4.1)."""
    if exc is None:
        return 1000, ""
    if isinstance(exc, Exception):
        return 1011, ""
    # Cancelled, KeyboardInterrupt, SystemExit: the endpoint is going away.
    return 1001, "going away"


async def _shutdown(conn: WebSocketConn, code: int, reason: str) -> None:
    """Close ``conn`` within its close timeout.

    Shielded: it runs when the owner task is cancelled too (then with 1001).
    """
    deadline = trio.current_time() + conn._config.close_timeout
    with trio.CancelScope(shield=True, deadline=deadline):
        conn._start_close(code, reason)
        await conn._wait_closed()
