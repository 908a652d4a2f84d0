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

Where it lives: the limits in ``_limits.py``; the connection's fields in ``_core.py``;
responses, the switch of protocols and the graceful close in ``_writing.py``; reading a
request and its checks in ``_reading.py``; the request loop and the drain here. Each
class extends the one before, up to :class:`HTTPConnection`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import h11
import trio

from rue_trio.http._core import _ACTIVE, _IDLE, _TRANSPORT_ERRORS, _UPGRADED
from rue_trio.http._reading import _HTTPReading, _Reject
from rue_trio.http._request import Request, split_target
from rue_trio.http._router import MethodNotAllowed, RouteMatch, Router

__all__ = ["Dispatch", "HTTPConnection", "Lookup"]

_log = logging.getLogger("rue_trio.http")

H = TypeVar("H")

#: What the router found for a request.
Lookup: TypeAlias = RouteMatch[H] | MethodNotAllowed | None

#: The app's side: answer one request through the connection.
Dispatch: TypeAlias = Callable[["HTTPConnection", Request, Lookup[H]], Awaitable[None]]

_EMPTY_PARAMS: dict[str, str] = {}

# Interned method names: most requests use one of these, and the router hashes them.
_METHODS: dict[bytes, str] = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD")}


class HTTPConnection(_HTTPReading):
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

    __slots__ = ()

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
                    if h.their_state is h11.SEND_BODY:
                        # The end of a request without a body, left by _read_request.
                        h.next_event()
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
