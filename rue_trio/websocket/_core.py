"""The state a WebSocket connection shares between its public API and its tasks.

:class:`_ConnectionCore` holds every field of a :class:`~rue_trio.websocket.WebSocketConn`
and the steps both sides take: moving the core's output to the queue (``_pump``), failing
and closing, waiting for the end, the table of pings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn, Protocol

import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio.exceptions import ConnectionClosed, ConnectionClosedOK
from rue_trio.protocol import (
    Message,
    State,
    WebSocketProtocol,
    detach_traceback,
)

from ._config import ConnectionConfig
from ._queue import FrameQueue
from ._waiter import Waiter

__all__ = ["HandshakeRequest"]

_DEFAULT_CONFIG = ConnectionConfig()
# The default of WebSocketConn.meta: one read-only empty mapping shared by every connection.
_NO_META: Mapping[str, Any] = MappingProxyType({})

# Connection ids come from a pool of random bits refilled 256 ids at a time: one system
# call per 256 connections instead of one each. Still 64 random bits per id (unique across
# processes and nodes for all practical purposes); a forked child starts a pool of its own.
_ID_BATCH = 256
# Close codes of a clean end (as in the protocol's close_exc): normal, going away, none.
_OK_CODES = frozenset({1000, 1001, 1005})
_id_pool: list[str] = []
os.register_at_fork(after_in_child=_id_pool.clear)


def _new_id() -> str:
    if not _id_pool:
        digits = os.urandom(8 * _ID_BATCH).hex()
        _id_pool.extend(digits[i : i + 16] for i in range(0, len(digits), 16))
    return _id_pool.pop()


class HandshakeRequest(Protocol):
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


# The table of pings of a connection that has sent none: shared, never written (see
# _send_ping). 64 bytes less per idle connection than a dict of its own.
_NO_PINGS: dict[bytes, _PingWaiter] = {}


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


class _ConnectionCore:
    """The fields of a connection and the steps its API and its tasks share."""

    __slots__ = (
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_closed_event",
        "_closing",
        "_closing_first",
        "_config",
        "_connection_exc",
        "_dispatching",
        "_id",
        "_inbound",
        "_inbound_bytes",
        "_inbound_limit",
        "_ka_credited",
        "_ka_due",
        "_ka_held",
        "_ka_paused",
        "_ka_payload",
        "_ka_ping",
        "_last_rtt",
        "_messages_received",
        "_messages_sent",
        "_out",
        "_owner",
        "_paused_since",
        "_paused_total",
        "_pings",
        "_pings_sent",
        "_protocol",
        "_reader_scope",
        "_reading",
        "_receiver",
        "_remote_address",
        "_request",
        "_room_waiter",
        "_sock",
        "_state",
        "_stream",
        "_stream_closed_by_us",
        "_subprotocol",
        "_trailing_data",
        "_writer_ends_alone",
        "_writer_scope",
        "_writing",
        "meta",
        "user",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: WebSocketProtocol,
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
        self._id: str | None = None  # drawn when first asked for (see WebSocketConn.id)
        self._out = FrameQueue(config.outbound_queue_messages, config.outbound_queue_bytes)
        # The socket a sending task may write to itself when the writer is idle (see
        # _ConnectionOutput._put), and the reader reads through its descriptor: a plain
        # socket whose descriptor os.write and os.read take; None for TLS, memory streams
        # and Windows, which always go through the stream.
        self._sock = (
            stream.socket if os.name == "posix" and type(stream) is trio.SocketStream else None
        )
        # A list, not a deque: an empty list costs 56 bytes where a deque allocates a
        # 64-slot block at once, and most connections are idle most of the time.
        self._inbound: list[Message] = []
        self._inbound_limit = config.inbound_queue
        # What the messages buffered since the buffer was last empty take in memory
        # (sys.getsizeof of their data): at least what the buffer holds.
        self._inbound_bytes = 0
        self._receiver = Waiter()  # the application waiting for a message
        self._room_waiter = Waiter()  # the reader waiting for room in the inbound buffer
        # When the owner task is the reader (WebSocketHandler's connections, see
        # _ConnectionTasks._run_reader): that task (then nothing is buffered for
        # receive()), whether its read loop runs, and whether it is away from reading
        # (in a callback, or not in the loop yet).
        self._owner: trio.lowlevel.Task | None = None
        self._reading = False
        self._dispatching = False
        # The shared empty table until the first ping (most connections never ping).
        self._pings = _NO_PINGS
        self._connection_exc: BaseException | None = None
        # Whether this side sent the first close frame (then late messages may be dropped).
        self._closing_first = False
        self._closing = False
        self._stream_closed_by_us = False
        self._closed = False
        # Created only when a task has to wait for the end.
        self._closed_event: trio.Event | None = None
        # The shielded scopes keep the tasks alive through the owner's cancellation until
        # the connection ends them. The reader's deadline bounds the closing handshake;
        # cancelling it is how the connection aborts (each scope costs about 1 KiB).
        self._reader_scope = trio.CancelScope(shield=True)
        self._writer_scope = trio.CancelScope(shield=True)
        # Whether the writer ends by itself once the queue is closed, without a cancel
        # (see _end_tasks): not started yet (it starts by looking at its queue), woken
        # from its wait for frames by the queue's close (see _teardown), or ended.
        self._writer_ends_alone = True
        # The keepalive, run by the writer: when it must act next (send a ping, or give
        # up on its pong), the ping waiting for its pong, and the reader's pauses.
        self._ka_due = math.inf
        self._ka_ping: _PingWaiter | None = None
        self._ka_payload = b""
        self._ka_paused = 0.0
        self._ka_credited = 0.0
        # The keepalive's verdict waits for the owner task to read again (see
        # _keepalive_tick): it was in a callback when the pong was due.
        self._ka_held = False
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

    def _fresh_ping_payload(self) -> bytes:
        data = os.urandom(4)
        while data in self._pings:
            data = os.urandom(4)
        return data

    def _send_ping(self, data: bytes) -> _PingWaiter:
        self._protocol.send_ping(data)
        self._pump()
        waiter = _PingWaiter(trio.current_time())
        pings = self._pings
        if pings is _NO_PINGS:
            pings = self._pings = {}
        pings[data] = waiter
        self._pings_sent += 1
        return waiter

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
        exc = self._closed_error()
        sent = exc.sent
        # Still open: in a callback of the owner's loop, after close(), the end is not
        # known yet (only that loop reads the peer's close frame). So far it is our
        # close: a clean one must not read as an abnormal end (ConnectionClosedError).
        if (
            not self._closed
            and exc.rcvd is None
            and exc.__cause__ is None
            and sent is not None
            and sent.code in _OK_CODES
        ):
            exc = ConnectionClosedOK(None, sent)
        # Raised from a local cleared on the way out: the traceback holds this frame.
        try:
            raise exc
        finally:
            del exc

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
        """Cancel whatever of the connection's tasks still runs (after the close).

        A task that ended is left alone: cancelling a scope costs about 15 calls of
        Trio's (bench/profile_server.py --scenario handshake: 1,301 -> 1,266 calls per
        connection, with the writer reading the clock only once its scope caught a
        cancellation). The reader has ended once the connection is closed: setting that
        is the last thing it does. Nor is a writer that ends by itself once the queue is
        closed (not started yet, or woken from its wait for frames by the teardown): a
        cancel would cost it a step more, raising ``Cancelled`` at its first checkpoint
        (bench/profile_server.py --scenario handshake: writer 2.14 -> 1.85 steps, 990
        -> 923 calls, with the reader ending the closing handshake itself).
        """
        if not self._closed:
            self._reader_scope.cancel()
        if not (self._writer_ends_alone and self._out._closed):
            self._writer_scope.cancel()

    def _abort(self, exc: BaseException) -> None:
        """End the connection because of ``exc``: the reader stops and tears down.

        Sends fail from now on: when the owner task is the reader, it may be in a
        callback waiting for room that the ended writer would never make.
        """
        self._set_exc(exc)
        self._out._stop_accepting()
        self._reader_scope.cancel()

    def _pump(self, frames: list[bytes] | None = None) -> None:
        """Move what the core produced to the outbound queue; notice the start of closing.

        Called after every call into the core that may produce output, with no checkpoint
        in between, so frames keep the core's order. ``frames``: what the caller already
        took from the core.
        """
        out = self._out
        for frame in self._protocol.data_to_send() if frames is None else frames:
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
