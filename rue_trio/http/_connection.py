"""Serve one HTTP/1.1 connection over any :class:`trio.abc.Stream`, with h11.

Theory of operation
-------------------
:class:`HTTPConnection` owns one stream and one :class:`h11.Connection`. Its
:meth:`~HTTPConnection.serve` loop reads a request (head and body, under a deadline),
asks the router where it goes, and hands the request to a *dispatch* function (the
app), which answers through :meth:`~HTTPConnection.respond`,
:meth:`~HTTPConnection.respond_stream` or :meth:`~HTTPConnection.switch_protocols`.
Then, if both sides allow it, the loop starts the next request on the same connection
(keep-alive, RFC 9112 section 9.3); otherwise it returns and the owner closes the stream.

The connection is in one of three phases, which graceful shutdown reads:

* idle: waiting for a request and no byte of it has arrived: safe to cancel;
* active: a request is being read or handled: let it finish, then close;
* upgraded: the stream was handed to another protocol (a WebSocket) by
  :meth:`~HTTPConnection.switch_protocols`: the HTTP layer never touches it again.

:meth:`~HTTPConnection.shutdown` marks the connection as draining (an active request
sees :attr:`~HTTPConnection.shutting_down`, and its response carries
``Connection: close``) and cancels the connection at once if it is idle or upgraded (a
WebSocket reacts to the cancellation of its task by closing with 1001).

Limits, each answered with its status before the connection closes:

* the request head must fit in ``max_header_size`` bytes and hold at most
  ``max_header_count`` fields (431, RFC 6585 section 5), however its bytes arrive (h11
  alone bounds only a head still incomplete: a whole one in a single read would pass);
* the body may not exceed ``max_body_size`` bytes (413, RFC 9110 section 15.5.14),
  checked against ``Content-Length`` or each chunk's announced size before any of it is
  read; a chunk size beyond 63 bits gets 400;
* a request with both ``Transfer-Encoding`` and ``Content-Length``, or an HTTP/1.0
  request with ``Transfer-Encoding``, gets 400 (RFC 9112 section 6.1: such a message
  is how requests are smuggled past proxies), and the connection closes, so nothing
  after it is answered;
* a target in none of the request forms (RFC 9112 section 3.2) gets 400;
* only HTTP/1.0 and HTTP/1.1 are served; another version gets 505 (RFC 9110 section
  15.6.6);
* every response write must complete within ``write_timeout`` seconds: a client that
  stops reading is dropped (RFC 9110 has no status for it; the connection just closes);
* a request (head and body) must arrive within ``request_timeout`` seconds: counted
  from the connection's creation for the first request (a TLS handshake included),
  from its first byte for the next ones (408, RFC 9110 section 15.5.9), which defeats
  slowloris. A connection that never sent a byte of the request is closed without
  an answer;
* between requests, a keep-alive connection may stay silent ``keep_alive_timeout``
  seconds before it is closed;
* anything h11 cannot parse gets 400 (or h11's own status hint).

After such an error response the connection closes gracefully: it half-closes if the
stream can, and reads and discards what the client still sends for a short while, so
that the client reads the answer instead of a TCP reset.

A client that vanishes (:class:`trio.BrokenResourceError`,
:class:`trio.ClosedResourceError`) ends the connection quietly: this is not an error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, TypeAlias, TypeVar, cast

import h11
import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio.http._request import Request, split_target
from rue_trio.http._router import MethodNotAllowed, RouteMatch, Router
from rue_trio.http._socket_io import read_now, write_now

__all__ = ["READ_SIZE", "Dispatch", "HTTPConnection", "HTTPLimits", "HeaderList", "Lookup"]

_log = logging.getLogger("rue_trio.http")

H = TypeVar("H")

#: How many bytes one ``receive_some`` call asks for.
READ_SIZE: Final = 65536

#: After an error response: how long and how much to read and discard before closing.
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 1 << 20

#: A chunk size this large is no body size but an attack (it does not fit 63 bits).
_ABSURD_CHUNK: Final = 1 << 63

_IDLE: Final = 0
_ACTIVE: Final = 1
_UPGRADED: Final = 2

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)

#: Response header fields as the app passes them.
HeaderList: TypeAlias = Sequence[tuple[bytes | str, bytes | str]]

#: What the router found for a request.
Lookup: TypeAlias = RouteMatch[H] | MethodNotAllowed | None

#: The app's side: answer one request through the connection.
Dispatch: TypeAlias = Callable[["HTTPConnection", Request, Lookup[H]], Awaitable[None]]

_EMPTY_PARAMS: dict[str, str] = {}

# Interned method names: most requests use one of these, and the router hashes them.
_METHODS: dict[bytes, str] = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD")}

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

_CLOSE: Final = (b"connection", b"close")


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """The limits that protect a server from oversized or slow requests.

    Attributes:
        max_header_size: the largest request head (request line and header fields),
            in bytes (else 431).
        max_header_count: the most header fields in a request head (else 431).
        max_body_size: the largest request body, in bytes (else 413).
        request_timeout: seconds a new connection has to deliver its first request
            (head and body), and a later request has from its first byte (else 408).
        keep_alive_timeout: seconds an idle keep-alive connection is kept open.
        write_timeout: seconds one write of a response (at most 64 KiB, or a whole
            small response) may take; a client that does not read for that long is
            dropped, which frees its task, its socket and any file being sent.
        upgraded_field_bytes: after a WebSocket upgrade, how many bytes of header
            fields the connection keeps in its request record for its whole life
            (see :meth:`Request.light`).
    """

    max_header_size: int = 16 * 1024
    max_header_count: int = 100
    max_body_size: int = 1024 * 1024
    request_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    write_timeout: float = 30.0
    upgraded_field_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.max_header_size <= 0 or self.max_header_count <= 0:
            raise ValueError("max_header_size and max_header_count must be positive")
        if self.max_body_size < 0 or self.upgraded_field_bytes < 0:
            raise ValueError("max_body_size and upgraded_field_bytes must not be negative")
        if self.request_timeout <= 0 or self.keep_alive_timeout <= 0 or self.write_timeout <= 0:
            raise ValueError(
                "request_timeout, keep_alive_timeout and write_timeout must be positive"
            )


class _DateCache:
    """The ``Date`` header value (RFC 9110 section 6.6.1), formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True).encode("ascii")
            self._second = now
        return self._value


_date = _DateCache()


class _Reject(Exception):
    """A request refused while it was being read; answered with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _check_chunk(h: h11.Connection, room: int) -> None:
    """Refuse the chunk h11 is reading if its announced size exceeds ``room`` bytes.

    h11 does not expose a chunk's size; its reader keeps what is left of it. Should a
    later h11 not have it, the body limit still holds as the bytes arrive.
    """
    pending = getattr(getattr(h, "_reader", None), "_bytes_in_chunk", 0)
    if type(pending) is int and pending > room:
        raise _Reject(400 if pending >= _ABSURD_CHUNK else 413)


class HTTPConnection:
    """One HTTP/1.1 connection: reads requests, writes responses, hands over upgrades.

    Args:
        stream: the connected stream (TCP, TLS or in-memory).
        limits: size and time limits.
        remote_address: the peer's ``(host, port)``, if known.
        server_header: the ``Server`` header value, or ``None`` to send none.

    Attributes:
        remote_address: the peer's ``(host, port)``, or ``None``.
        status: the status of the response to the current request once sent (101 after
            :meth:`switch_protocols`), else ``None``.
        client_gone: set when a read or write found the client gone; an exception that
            follows from it is not a server error.
    """

    __slots__ = (
        "_h11",
        "_has_body",
        "_head_only",
        "_limits",
        "_phase",
        "_scope",
        "_server_header",
        "_shutting_down",
        "_stream",
        "client_gone",
        "remote_address",
        "status",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        limits: HTTPLimits | None = None,
        remote_address: tuple[str, int] | None = None,
        server_header: bytes | None = b"rue_trio",
    ) -> None:
        self._stream = stream
        self._limits = limits if limits is not None else HTTPLimits()
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_header_size
        )
        self._server_header = server_header
        # The first request must arrive within request_timeout of the connection.
        self._scope = trio.CancelScope(deadline=trio.current_time() + self._limits.request_timeout)
        self._phase = _IDLE
        self._shutting_down = False
        self._head_only = False
        self._has_body = False
        self.remote_address = remote_address
        self.status: int | None = None
        self.client_gone = False

    @property
    def shutting_down(self) -> bool:
        """Whether the server is draining: a new WebSocket handshake should get 503."""
        return self._shutting_down

    @property
    def responded(self) -> bool:
        """Whether the current request was answered (or handed over with a 101)."""
        return self.status is not None

    @property
    def upgraded(self) -> bool:
        """Whether the stream was handed over by :meth:`switch_protocols`."""
        return self._phase == _UPGRADED

    def shutdown(self) -> None:
        """Start draining: finish the current request, if any, then close.

        An idle or upgraded connection is cancelled at once; a request in progress
        runs on, sees :attr:`shutting_down`, and its response carries
        ``Connection: close``. Safe to call more than once, and before :meth:`serve`.
        """
        self._shutting_down = True
        if self._phase != _ACTIVE:
            self._scope.cancel()

    async def serve(self, router: Router[H], dispatch: Dispatch[H]) -> None:
        """Serve requests until the connection closes, then return.

        The stream is not closed here: its owner closes it (after a switch of
        protocols, when the new protocol's handler is done with it).

        Args:
            router: where requests are looked up.
            dispatch: called once per request, with this connection, the request and
                the lookup result. It answers through :meth:`respond`,
                :meth:`respond_stream` or :meth:`switch_protocols`. An exception it
                raises is logged, answered with 500 when nothing was sent yet, and
                closes the connection. If it returns without answering, an empty 200
                is sent (as Gin does).

        Cancellation: cancelling the caller stops the connection wherever it is; the
        stream may then hold a partial response, and the owner closes it.
        """
        try:
            # The request loop runs in this frame (not a coroutine of its own): an
            # upgraded connection keeps it for its whole life. With App._dispatch no
            # longer a coroutine either, 16.90 -> 16.36 KiB per idle WebSocket
            # (bench/idle_memory.py).
            with self._scope:
                first = True
                while True:
                    try:
                        received = await self._read_request(first)
                    except _Reject as reject:
                        await self._fail(reject.status)
                        return
                    except h11.RemoteProtocolError as exc:
                        await self._fail(exc.error_status_hint)
                        return
                    if received is None:
                        return
                    first = False
                    event, headers, body = received
                    method = _METHODS.get(event.method) or event.method.decode("ascii")
                    target = event.target.decode("utf-8", "replace")
                    try:
                        path, query = split_target(target)
                    except ValueError:
                        # Such as an absolute form with unbalanced brackets (RFC 3986 3.2.2).
                        await self._fail(400)
                        return
                    lookup = router.lookup(method, path)
                    self._head_only = method == "HEAD"
                    self._has_body = bool(body)
                    # Handed over, not kept: the request must not stay referenced from this
                    # frame while it runs, as after an upgrade (for the WebSocket's whole life)
                    # the app keeps only a light copy (Request.light). Nor does h11's event.
                    # Hence dispatch is called, the name dropped, and then its awaitable run.
                    request = Request(
                        method,
                        target,
                        path,
                        query,
                        "1.1"
                        if event.http_version == b"1.1"
                        else event.http_version.decode("ascii"),
                        headers,
                        lookup.params if type(lookup) is RouteMatch else _EMPTY_PARAMS,
                        self.remote_address,
                        body,
                    )
                    del received, event, headers, body, target
                    try:
                        running = dispatch(self, request, lookup)
                        del request
                        await running
                    except Exception:
                        if self.client_gone:
                            return
                        _log.exception("unhandled error while serving %s %s", method, path)
                        await self._fail(500, linger=False)
                        return
                    if self._phase == _UPGRADED:
                        return
                    if self.status is None:
                        await self.respond(200)
                    h = self._h11
                    if (
                        self._shutting_down
                        or h.our_state is not h11.DONE
                        or h.their_state is not h11.DONE
                    ):
                        return
                    h.start_next_cycle()
                    self.status = None
                    self._head_only = False
                    self._has_body = False
                    self._phase = _IDLE
            if (
                self._scope.cancelled_caught
                and self._phase == _ACTIVE
                and self.status is None
                and not self._shutting_down
            ):
                # The read deadline passed with a request started (RFC 9110 section
                # 15.5.9); without a byte of it, the connection just closes.
                await self._fail(408)
        except _TRANSPORT_ERRORS:
            self.client_gone = True
            await trio.lowlevel.checkpoint()

    async def _read_request(
        self, first: bool
    ) -> tuple[h11.Request, tuple[tuple[bytes, bytes], ...], bytes] | None:
        """Read one request, head and body; ``None`` when the connection should end.

        The read runs under a deadline set on the connection's scope (cheaper than a
        scope per request): when it passes, :meth:`serve` answers 408 if the request
        had started. Transport errors propagate (the client left).
        """
        h = self._h11
        limits = self._limits
        stream = self._stream
        scope = self._scope
        # A pipelined request may already be buffered; otherwise the client gets the
        # idle keep-alive time to start the next one.
        buffered = 0 if first else len(h.trailing_data[0])
        if buffered:
            self._phase = _ACTIVE
            scope.deadline = trio.current_time() + limits.request_timeout
            # Let other tasks run even when a client pipelines many requests.
            await trio.lowlevel.checkpoint()
        else:
            if not first:
                scope.deadline = trio.current_time() + limits.keep_alive_timeout
            # What the kernel has at once, without the stream's schedule point (see
            # _socket_io); the stream's own read if it would block.
            now = read_now(stream, READ_SIZE)
            if now is None:
                data = await stream.receive_some(READ_SIZE)
            else:
                await checkpoint_if_cancelled()
                data = now
            if not data:
                return None
            self._phase = _ACTIVE
            if not first:
                scope.deadline = trio.current_time() + limits.request_timeout
            # h11 only appends the chunk to its buffer: a bytearray is fine.
            h.receive_data(cast(bytes, data))
            buffered = len(data)
        event_request: h11.Request | None = None
        headers: tuple[tuple[bytes, bytes], ...] = ()
        length_checked = False
        body: list[bytes] = []
        body_size = 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                if event_request is not None:
                    if not length_checked:
                        # Only now, as a request without a body (the WebSocket
                        # handshake) never gets here.
                        self._check_length(event_request)
                        length_checked = True
                    # A chunk announces its size before its bytes: refuse at once
                    # one that cannot fit rather than wait for it.
                    _check_chunk(h, limits.max_body_size - body_size)
                    if h.they_are_waiting_for_100_continue:
                        # RFC 9110 section 10.1.1: the client waits for a go-ahead.
                        await self._send(
                            h.send(h11.InformationalResponse(status_code=100, headers=[]))
                        )
                data = await stream.receive_some(READ_SIZE)
                if event_request is None:
                    buffered += len(data)
                h.receive_data(cast(bytes, data))
            elif isinstance(event, h11.Data):
                body_size += len(event.data)
                if body_size > limits.max_body_size:
                    raise _Reject(413)
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.Request):
                # h11 bounds a head only while it is incomplete: one that came whole
                # in a read is measured here (cheaply: only if it could be too big).
                if (
                    buffered > limits.max_header_size
                    and buffered - len(h.trailing_data[0]) > limits.max_header_size
                ):
                    raise _Reject(431)
                # Iterated once: h11's Headers is a Sequence (two calls per field).
                headers = tuple(event.headers)
                self._check_head(event, headers)
                event_request = event
            else:
                # ConnectionClosed or PAUSED: h11 yields neither once bytes of a
                # new request arrived; should it ever, end the connection.
                return None
        scope.deadline = math.inf
        assert event_request is not None
        return event_request, headers, body[0] if len(body) == 1 else b"".join(body)

    def _check_head(self, event: h11.Request, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        """Refuse a head h11 accepts but this server does not (see the module docstring)."""
        if len(headers) > self._limits.max_header_count:
            raise _Reject(431)
        version = event.http_version
        if version != b"1.1" and version != b"1.0":
            raise _Reject(505)
        framing = 0
        for name, _ in headers:
            if name == b"content-length":
                framing |= 1
            elif name == b"transfer-encoding":
                framing |= 2
        if framing == 3 or (framing & 2 and version == b"1.0"):
            # RFC 9112 section 6.1: both, or Transfer-Encoding in HTTP/1.0, is faulty
            # framing, on which a proxy and this server could disagree.
            raise _Reject(400)

    def _check_length(self, event: h11.Request) -> None:
        for name, value in event.headers:
            if name == b"content-length" and int(value) > self._limits.max_body_size:
                raise _Reject(413)

    def _head(self, status: int, headers: HeaderList, length: int | None) -> bytes:
        fields: list[tuple[bytes | str, bytes | str]] = [(b"date", _date.get())]
        if self._server_header is not None:
            fields.append((b"server", self._server_header))
        if length is not None and status != 204 and status != 304:
            fields.append((b"content-length", b"%d" % length))
        if self._shutting_down:
            fields.append(_CLOSE)
        fields.extend(headers)
        try:
            # h11 takes str or bytes in each field; its annotation is narrower.
            response = h11.Response(
                status_code=status,
                headers=cast("list[tuple[bytes, bytes]]", fields),
                reason=_REASONS.get(status, b""),
            )
            return self._h11.send(response)
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot send this response: {exc}") from exc

    def _check_unanswered(self) -> None:
        if self.status is not None:
            raise RuntimeError("a response was already sent for this request")

    async def _send(self, data: bytes) -> None:
        """Write under ``write_timeout``: a client that stops reading counts as gone."""
        with trio.move_on_after(self._limits.write_timeout) as scope:
            try:
                await self._stream.send_all(data)
            except _TRANSPORT_ERRORS:
                self.client_gone = True
                raise
        if scope.cancelled_caught:
            self.client_gone = True
            raise trio.BrokenResourceError(
                f"the client read nothing for {self._limits.write_timeout:g}s (write_timeout)"
            )

    async def respond(self, status: int, headers: HeaderList = (), body: bytes = b"") -> None:
        """Send a complete response to the current request.

        ``Date``, ``Server`` and ``Content-Length`` are added here: do not pass them.
        The body is not sent for a ``HEAD`` request, nor with 204 or 304, but the
        headers are those of the ``GET`` response (RFC 9110 section 9.3.2).

        Args:
            status: the status code, 200 to 999.
            headers: extra header fields, as byte or ASCII string pairs.
            body: the whole body.

        Raises:
            RuntimeError: a response was already sent.
            ValueError: the status or a header is invalid.
            trio.BrokenResourceError: the client is gone, or read nothing for
                ``write_timeout`` seconds (:attr:`client_gone` is set).

        Cancellation: a cancelled write may leave a partial response on the stream;
        the connection then closes.
        """
        self._check_unanswered()
        head = self._head(status, headers, len(body))
        self.status = status
        h = self._h11
        if body and not self._head_only and status != 204 and status != 304:
            data = h.send(h11.Data(data=body))
            h.send(h11.EndOfMessage())
            if len(data) <= READ_SIZE:
                await self._send(head + data)
            else:
                await self._send(head)
                await self._send(data)
        else:
            h.send(h11.EndOfMessage())
            await self._send(head)

    async def respond_stream(
        self,
        status: int,
        headers: HeaderList,
        chunks: AsyncIterable[bytes],
        content_length: int | None = None,
    ) -> None:
        """Send a response whose body comes in chunks.

        With ``content_length`` the chunks must add up to exactly that many bytes;
        without it, the body is sent chunked (HTTP/1.1) or delimited by closing the
        connection (HTTP/1.0). For a ``HEAD`` request with ``content_length``, the
        chunks are not consumed.

        Args:
            status: the status code.
            headers: extra header fields (not ``Content-Length``).
            chunks: the body, in order.
            content_length: the body's total size, if known.

        Raises:
            RuntimeError: a response was already sent.
            ValueError: the status or a header is invalid, or the chunks do not add up
                to ``content_length``.
            trio.BrokenResourceError: the client is gone, or read nothing for
                ``write_timeout`` seconds.

        Cancellation: the response is left incomplete and the connection closes.
        """
        self._check_unanswered()
        h = self._h11
        await self._send(self._head(status, headers, content_length))
        self.status = status
        if not (self._head_only and content_length is not None):
            try:
                async for chunk in chunks:
                    if chunk:
                        await self._send(h.send(h11.Data(data=chunk)))
                tail = h.send(h11.EndOfMessage())
            except h11.LocalProtocolError as exc:
                raise ValueError(f"the body does not match the response: {exc}") from exc
        else:
            tail = h.send(h11.EndOfMessage())
        if tail:
            await self._send(tail)

    async def switch_protocols(self, response: bytes) -> tuple[trio.abc.Stream, bytes]:
        """Write a complete ``101 Switching Protocols`` response and hand the stream over.

        After this call the HTTP layer never reads or writes the stream again; it is
        closed by the connection's owner when the dispatch function returns.

        Args:
            response: the raw response bytes, status line to the blank line.

        Returns:
            ``(stream, trailing_data)``: the stream, and the bytes the client sent after
            the request (such as its first WebSocket frame), which belong to the new
            protocol (RFC 9110 section 7.8).

        Raises:
            RuntimeError: a response was already sent, or the request had a body.
            trio.BrokenResourceError: the client is gone.

        Cancellation: if cancelled during the write, the stream may hold part of the
        response; the connection then closes. A client that reads nothing for
        ``write_timeout`` seconds is dropped this way too: the call is cancelled.
        """
        self._check_unanswered()
        if self._has_body:
            raise RuntimeError("cannot switch protocols after a request with a body")
        # The status is set first, so that the scope's 408 (for a request that timed
        # out) is not attempted on a client that stopped reading.
        self.status = 101
        stream = self._stream
        await checkpoint_if_cancelled()
        try:
            # Written at once when the kernel takes it all (the usual case), without
            # the stream's schedule point (see _socket_io).
            sent = write_now(stream, response)
            if sent < len(response):
                # The write bound is the deadline of the connection's scope, already
                # entered, rather than a scope of its own as _send has: one cancel
                # scope less per handshake (profile_server.py --scenario handshake: 5
                # -> 4 scopes, 1,467 -> 1,435 calls).
                scope = self._scope
                scope.deadline = trio.current_time() + self._limits.write_timeout
                await stream.send_all(response[sent:])
                scope.deadline = math.inf
        except _TRANSPORT_ERRORS:
            self.client_gone = True
            raise
        self._phase = _UPGRADED
        if self._shutting_down:
            # The drain started while this handshake ran: the new protocol closes
            # itself (a WebSocket with 1001) when it sees the cancellation.
            self._scope.cancel()
        trailing_data = self._h11.trailing_data[0]
        # The stream is not HTTP any more: let h11's state go (about 1 KiB that an idle
        # WebSocket would keep for its whole life). Nothing reads it after a 101: the
        # response methods refuse first, and _fail only looks at it without a status.
        del self._h11
        return self._stream, trailing_data

    async def _fail(self, status: int, *, linger: bool = True) -> None:
        """Answer an error unless a response (or a 101) went out, then close gracefully."""
        if self.status is None and (
            self._h11.our_state is h11.IDLE or self._h11.our_state is h11.SEND_RESPONSE
        ):
            h = self._h11
            reason = _REASONS.get(status, b"")
            body = b"%d %s" % (status, reason)
            fields = [
                (b"date", _date.get()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                _CLOSE,
            ]
            data = h.send(h11.Response(status_code=status, headers=fields, reason=reason))
            if not self._head_only:
                data += h.send(h11.Data(data=body))
            h.send(h11.EndOfMessage())
            self.status = status
            await self._send(data)
        else:
            await trio.lowlevel.checkpoint()
        if linger:
            await self._linger()

    async def _linger(self) -> None:
        """Half-close, then read and discard for a while (RFC 9112 section 9.6)."""
        stream = self._stream
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        else:
            await trio.lowlevel.checkpoint()
        with trio.move_on_after(_LINGER_SECONDS):
            drained = 0
            while drained < _LINGER_BYTES:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                drained += len(data)
