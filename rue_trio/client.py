"""The WebSocket client: ``open_websocket("ws://...")`` yields a client-role connection.

A composition root: it opens the TCP (and TLS) stream with Trio, writes the opening
handshake built by :func:`rue_trio.protocol.client_request`, reads the server's answer
with h11, checks it with :func:`rue_trio.protocol.check_response`, and hands the stream
to :func:`rue_trio.websocket.open_websocket_conn` in the client role.

Errors are translated at this boundary, with the original as ``__cause__``:

* the TCP connection or the TLS handshake fails (refused, unreachable, DNS, certificate)
  → :class:`~rue_trio.exceptions.ConnectError`;
* the server answers with a status other than 101
  → :class:`~rue_trio.exceptions.InvalidStatusError` (status, headers, and the start of
  the body, at most 64 KiB);
* the answer is not valid HTTP, the connection drops during the handshake, or the
  upgrade headers are wrong → :class:`~rue_trio.exceptions.HandshakeError`; a
  subprotocol or extension we did not offer → :class:`~rue_trio.exceptions.NegotiationError`;
* ``open_timeout`` expires → :class:`~rue_trio.exceptions.ConnectError` while connecting,
  :class:`~rue_trio.exceptions.HandshakeError` during the handshake; both have a
  :class:`TimeoutError` as ``__cause__``, so one ``except`` clause on
  :class:`~rue_trio.exceptions.RueTrioError` catches every failure to open.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import h11
import trio

from rue_trio.exceptions import ConnectError, HandshakeError, InvalidStatusError
from rue_trio.protocol import (
    ClientHandshake,
    DeflateConfig,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
    WebSocketURI,
    check_response,
    client_request,
    generate_key,
    parse_uri,
)
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

__all__ = ["open_websocket", "open_websocket_stream"]

# How much of a refusal's body InvalidStatusError keeps.
_MAX_BODY = 64 * 1024
_READ_SIZE = 65536
_DEFAULT_CONFIG = ConnectionConfig()


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    compression: bool | DeflateConfig | None = True,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int | None = 1 << 20,
    config: ConnectionConfig = _DEFAULT_CONFIG,
    open_timeout: float | None = 10.0,
) -> AsyncIterator[WebSocketConn]:
    """Connect to a WebSocket server and yield the open connection.

    Leaving the block closes the connection as :func:`rue_trio.websocket.open_websocket_conn`
    does: 1000 on a normal exit, 1011 when the block raises, 1001 when the task is
    cancelled.

    Cancellation: while connecting, the half-open stream is closed and ``Cancelled``
    propagates; inside the block, as :func:`~rue_trio.websocket.open_websocket_conn`.

    Args:
        url: a ``ws://`` or ``wss://`` URL.
        subprotocols: subprotocols to offer, most preferred first.
        headers: extra request headers as ``(name, value)`` strings.
        origin: the ``Origin`` header to send, or ``None`` for none.
        compression: ``True`` to offer permessage-deflate with the default
            :class:`~rue_trio.protocol.DeflateConfig`, a ``DeflateConfig`` to offer those
            parameters, ``False`` or ``None`` to offer no compression.
        ssl_context: the TLS context for ``wss://``; by default
            :func:`ssl.create_default_context` (certificates and host name verified).
        max_message_size: the largest incoming message, in bytes after decompression;
            ``None`` for no limit.
        config: the connection's timeouts and buffer bounds.
        open_timeout: seconds for the TCP connection, the TLS handshake and the opening
            handshake together; ``None`` for no limit.

    Yields:
        The connection, in the client role.

    Raises:
        InvalidURIError: ``url`` is not a usable WebSocket URL.
        ConnectError: the TCP or TLS connection could not be made, or ``open_timeout``
            expired while making it.
        InvalidStatusError: the server answered with a status other than 101.
        HandshakeError: the server's answer is not a valid WebSocket upgrade, the
            connection dropped during the handshake, or ``open_timeout`` expired.
        NegotiationError: the server chose a subprotocol or an extension we did not offer.
        ValueError: an invalid header or subprotocol.
    """
    opening = _Opening(url, subprotocols, headers, origin, compression)
    deadline = _deadline(open_timeout)
    stream: trio.abc.Stream | None = None
    with trio.move_on_at(deadline):
        stream = await _connect(opening.uri, ssl_context)
    if stream is None:
        raise ConnectError(f"timed out connecting to {opening.where}") from _timeout(open_timeout)
    async with opening.run(stream, deadline, open_timeout, max_message_size, config) as conn:
        yield conn


@asynccontextmanager
async def open_websocket_stream(
    stream: trio.abc.Stream,
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    compression: bool | DeflateConfig | None = True,
    max_message_size: int | None = 1 << 20,
    config: ConnectionConfig = _DEFAULT_CONFIG,
    open_timeout: float | None = 10.0,
) -> AsyncIterator[WebSocketConn]:
    """Perform the client's opening handshake over ``stream`` and yield the connection.

    For transports :func:`open_websocket` does not make itself: a memory stream in tests
    (:mod:`rue_trio.testing`), a proxy tunnel, a Unix socket. The stream is owned from
    the call on: it is closed if the handshake fails, and when the block ends.

    Cancellation: during the handshake the stream is closed and ``Cancelled``
    propagates; inside the block, as :func:`~rue_trio.websocket.open_websocket_conn`.

    Args:
        stream: a connected stream to the server.
        url: the ``ws://`` or ``wss://`` URL: it gives the ``Host`` header and the
            resource; the scheme only chooses the default port.
        subprotocols: as for :func:`open_websocket`.
        headers: as for :func:`open_websocket`.
        origin: as for :func:`open_websocket`.
        compression: as for :func:`open_websocket`.
        max_message_size: as for :func:`open_websocket`.
        config: as for :func:`open_websocket`.
        open_timeout: seconds for the opening handshake; ``None`` for no limit.

    Yields:
        The connection, in the client role.

    Raises:
        InvalidURIError: ``url`` is not a usable WebSocket URL.
        InvalidStatusError: the server answered with a status other than 101.
        HandshakeError: the answer is not a valid WebSocket upgrade, the connection
            dropped during the handshake, or ``open_timeout`` expired.
        NegotiationError: the server chose a subprotocol or an extension we did not offer.
        ValueError: an invalid header or subprotocol.
    """
    try:
        opening = _Opening(url, subprotocols, headers, origin, compression)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    deadline = _deadline(open_timeout)
    async with opening.run(stream, deadline, open_timeout, max_message_size, config) as conn:
        yield conn


def _deadline(open_timeout: float | None) -> float:
    return trio.current_time() + open_timeout if open_timeout is not None else float("inf")


def _timeout(open_timeout: float | None) -> TimeoutError:
    return TimeoutError(f"open_timeout of {open_timeout} s expired")


class _Opening:
    """One opening handshake, prepared before any I/O so that bad arguments fail first."""

    def __init__(
        self,
        url: str,
        subprotocols: Sequence[str],
        headers: Sequence[tuple[str, str]],
        origin: str | None,
        compression: bool | DeflateConfig | None,
    ) -> None:
        self.uri = uri = parse_uri(url)
        self.where = f"{uri.host}:{uri.port}"
        self.subprotocols = subprotocols
        self.deflate = DeflateConfig() if compression is True else (compression or None)
        self.key = generate_key()
        self.request = client_request(
            uri.host,
            uri.port,
            uri.resource,
            secure=uri.secure,
            key=self.key,
            subprotocols=subprotocols,
            deflate=self.deflate,
            extra_headers=headers,
            origin=origin,
        )

    @asynccontextmanager
    async def run(
        self,
        stream: trio.abc.Stream,
        deadline: float,
        open_timeout: float | None,
        max_message_size: int | None,
        config: ConnectionConfig,
    ) -> AsyncIterator[WebSocketConn]:
        """Handshake over ``stream`` by ``deadline``, then run the connection."""
        result: tuple[ClientHandshake, bytes] | None = None
        try:
            with trio.move_on_at(deadline):
                result = await self._handshake(stream)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        if result is None:
            await trio.aclose_forcefully(stream)
            raise HandshakeError(
                f"timed out waiting for the handshake response of {self.where}"
            ) from _timeout(open_timeout)
        handshake, trailing_data = result
        codec = None
        if handshake.deflate_params is not None:
            # check_response accepts no extension we did not offer.
            assert self.deflate is not None
            codec = PerMessageDeflate(
                handshake.deflate_params, is_server=False, config=self.deflate
            )
        protocol = WebSocketProtocol(Role.CLIENT, max_message_size=max_message_size, deflate=codec)
        async with open_websocket_conn(
            stream,
            protocol,
            trailing_data=trailing_data,
            subprotocol=handshake.subprotocol,
            config=config,
        ) as conn:
            yield conn

    async def _handshake(self, stream: trio.abc.Stream) -> tuple[ClientHandshake, bytes]:
        """Write the request, read the response with h11, check it.

        Returns:
            What the server agreed to, and the bytes it sent after its response.
        """
        uri = self.uri
        # h11 is told of the request only so that its state machine expects the response
        # and recognizes the switch to WebSocket; the bytes written are client_request's.
        http = h11.Connection(h11.CLIENT)
        http.send(
            h11.Request(
                method="GET",
                target=uri.resource,
                headers=[("Host", uri.host), ("Upgrade", "websocket"), ("Connection", "Upgrade")],
            )
        )
        http.send(h11.EndOfMessage())
        try:
            await stream.send_all(self.request)
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(_READ_SIZE)
                    if not data:
                        raise HandshakeError(
                            "the server closed the connection during the handshake"
                        )
                    http.receive_data(bytes(data))
                elif isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        handshake = check_response(
                            101,
                            list(event.headers),
                            key=self.key,
                            subprotocols=self.subprotocols,
                            deflate=self.deflate,
                        )
                        return handshake, bytes(http.trailing_data[0])
                    # Section 4.1: only 101 completes the handshake; other 1xx are interim.
                elif isinstance(event, h11.Response):
                    body = await _read_body(http, stream)
                    raise InvalidStatusError(event.status_code, list(event.headers), body)
                else:
                    raise HandshakeError(f"unexpected HTTP event in the handshake: {event!r}")
        except h11.RemoteProtocolError as exc:
            raise HandshakeError(f"invalid HTTP response to the handshake: {exc}") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise HandshakeError(f"the connection failed during the handshake: {exc}") from exc


async def _connect(uri: WebSocketURI, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """Open the TCP connection, and the TLS session for ``wss://``."""
    where = f"{uri.host}:{uri.port}"
    try:
        tcp = await trio.open_tcp_stream(uri.host, uri.port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {where}: {exc}") from exc
    if not uri.secure:
        return tcp
    context = ssl_context if ssl_context is not None else ssl.create_default_context()
    tls = trio.SSLStream(tcp, context, server_hostname=uri.host)
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, OSError) as exc:
        await trio.aclose_forcefully(tls)
        detail = exc.__cause__ if exc.__cause__ is not None else exc
        raise ConnectError(f"TLS handshake with {where} failed: {detail}") from exc
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls


async def _read_body(http: h11.Connection, stream: trio.abc.Stream) -> bytes:
    """Read the start of a refusal's body, at most :data:`_MAX_BODY` bytes."""
    parts: list[bytes] = []
    size = 0
    await trio.lowlevel.checkpoint()
    while size < _MAX_BODY:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
            size += len(event.data)
        else:
            break
    return b"".join(parts)[:_MAX_BODY]
