"""Every exception rue_trio raises, under one base class.

This module imports only the standard library, so that the sans-I/O core in
:mod:`rue_trio.protocol` may raise these without knowing anything about Trio.

The tree::

    RueTrioError
    ├── ProtocolError                 the peer broke RFC 6455 / RFC 7692 (close code hint 1002)
    │   ├── InvalidPayloadError       bad UTF-8 in a text message or a close reason (1007)
    │   └── MessageTooBigError        a message past max_message_size (1009)
    ├── HandshakeError                the opening handshake failed (HTTP status hint)
    │   ├── InvalidStatusError        client side: the server answered with something but 101
    │   └── NegotiationError          a subprotocol or extension could not be agreed on
    ├── InvalidURIError               a ws://, wss:// or redis:// URL that cannot be used
    ├── StartupError                  the server cannot start; the message says what to fix
    │   ├── InvalidAddressError       a listen address that is malformed or not a string
    │   └── BindError                 the address cannot be listened on (in use, not ours)
    ├── WorkerExitedError             app.run(workers=N): a worker process ended on its own
    ├── ConnectError                  client side: the TCP or TLS connection could not be made
    ├── BackplaneError                the hub's backplane (such as Redis) failed or is unreachable
    ├── LiveError                     rue_trio.live client: the server answered with an error op
    ├── RefusedError                  rue_trio.live: an app's hook refuses a subscribe or publish
    └── ConnectionClosed              the connection is closed; see code and reason
        ├── ConnectionClosedOK        ... with 1000 or 1001 both ways
        └── ConnectionClosedError     ... any other way (1002, 1006, 1011, a lost TCP link)

Errors from dependencies (h11, Trio's transport errors, ``OSError``) are translated into
these at the boundary where they occur, with the original kept as ``__cause__``.
Misuse of an API (a control frame payload over 125 bytes, a bad argument) raises the
usual ``ValueError`` or ``TypeError``. Two tasks reading one connection at once get
:class:`trio.BusyResourceError`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BackplaneError",
    "CloseFrame",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "BindError",
    "HandshakeError",
    "InvalidAddressError",
    "InvalidPayloadError",
    "InvalidStatusError",
    "InvalidURIError",
    "MessageTooBigError",
    "NegotiationError",
    "ProtocolError",
    "RueTrioError",
    "StartupError",
    "WorkerExitedError",
]


class RueTrioError(Exception):
    """The base class of every exception raised by rue_trio."""


class ProtocolError(RueTrioError):
    """The peer violated the WebSocket protocol (RFC 6455 or RFC 7692).

    Attributes:
        close_code: the close code the connection is failed with, per RFC 6455
            section 7.4.1: 1002 for a protocol error unless a subclass says otherwise.
    """

    close_code: int = 1002

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class InvalidPayloadError(ProtocolError):
    """A text message or close reason is not valid UTF-8 (close code 1007)."""

    close_code = 1007


class MessageTooBigError(ProtocolError):
    """A message (after decompression) exceeds the configured limit (close code 1009)."""

    close_code = 1009


class HandshakeError(RueTrioError):
    """The opening handshake (RFC 6455 section 4) failed.

    On the server side, ``status_code`` and ``headers`` say how to answer the client:
    400 for a malformed request, 426 with ``Sec-WebSocket-Version: 13`` for a version
    we do not speak, 403 for a forbidden origin.

    Attributes:
        status_code: the HTTP status that describes the failure.
        headers: extra response headers, as ``(name, value)`` byte pairs.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers: list[tuple[bytes, bytes]] = list(headers or [])


class InvalidStatusError(HandshakeError):
    """The server answered the opening handshake with a status other than 101.

    Attributes:
        status_code: the status the server sent.
        headers: the response headers, as ``(name, value)`` byte pairs.
        body: the start of the response body (bounded), as bytes.
    """

    def __init__(
        self,
        status_code: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> None:
        super().__init__(
            f"server rejected the WebSocket handshake: HTTP {status_code}",
            status_code=status_code,
            headers=headers,
        )
        self.body = body


class NegotiationError(HandshakeError):
    """A subprotocol or an extension could not be negotiated."""


class InvalidURIError(RueTrioError, ValueError):
    """A URL that cannot be used: a client's non-WebSocket URL, a malformed Redis URL."""


class StartupError(RueTrioError):
    """The server cannot start. The message is one line that says what to fix.

    The underlying error (an ``OSError`` from ``bind``, say) is kept as ``__cause__``.
    """


class InvalidAddressError(StartupError, ValueError):
    """A listen address that is malformed (``"http://host:80"``) or not a string (``8094``)."""


class BindError(StartupError, OSError):
    """The server cannot listen on the address: in use, not this machine's, unknown host.

    Attributes:
        errno: the ``errno`` of the ``OSError`` that ``bind`` raised (its ``__cause__``).
    """


class WorkerExitedError(RueTrioError):
    """A worker process of ``app.run(address, workers=N)`` ended on its own.

    The other workers were stopped. The worker printed or logged its own reason (such as
    an unreachable Redis) before it ended; this error carries its index and exit status.

    Attributes:
        index: which worker (from 0).
        status: its exit status (negative: the signal that ended it).
    """

    def __init__(self, index: int, status: int) -> None:
        super().__init__(f"worker {index} exited on its own with status {status}")
        self.index = index
        self.status = status


class ConnectError(RueTrioError, OSError):
    """The client could not open the TCP (or TLS) connection to the server."""


class BackplaneError(RueTrioError):
    """The hub's backplane failed: the broker (such as Redis) is unreachable or refused us.

    The broker client's own exception is kept as ``__cause__``.
    """


@dataclass(frozen=True, slots=True)
class CloseFrame:
    """The content of a close frame: a code and a reason (RFC 6455 section 5.5.1).

    Attributes:
        code: the status code, or 1005 when the frame had no payload.
        reason: the UTF-8 reason, possibly empty.
    """

    code: int
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.code} ({self.reason})" if self.reason else str(self.code)


class ConnectionClosed(RueTrioError):
    """The WebSocket connection is closed, or closing: no more messages either way.

    Attributes:
        rcvd: the close frame received from the peer, or ``None`` if none arrived.
        sent: the close frame we sent, or ``None`` if we sent none.
        rcvd_then_sent: whether the peer started the closing handshake; ``None`` when
            only one side (or neither) sent a close frame.
    """

    def __init__(
        self,
        rcvd: CloseFrame | None,
        sent: CloseFrame | None,
        rcvd_then_sent: bool | None = None,
    ) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        """The close code: the peer's if it sent one, else ours, else 1006 (abnormal)."""
        frame = self.rcvd or self.sent
        return frame.code if frame is not None else 1006

    @property
    def reason(self) -> str:
        """The close reason that goes with :attr:`code`."""
        frame = self.rcvd or self.sent
        return frame.reason if frame is not None else ""

    def _describe(self) -> str:
        if self.rcvd is None and self.sent is None:
            return "connection lost without a closing handshake (1006)"
        if self.rcvd is None:
            return f"sent close {self.sent}; no close frame received"
        if self.sent is None:
            return f"received close {self.rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received close {self.rcvd}; then sent {self.sent}"
        return f"sent close {self.sent}; then received {self.rcvd}"


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally: both sides sent 1000 or 1001 (or no code)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed abnormally: an error code, or no closing handshake."""
