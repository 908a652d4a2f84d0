"""Rue's ``WebSocketHandler``: the upgrade, then the four callbacks, in Python idiom.

Theory of operation
-------------------
``await handler.handle(c)`` runs inside the task that serves one HTTP request. It
validates the upgrade (RFC 6455 section 4.2), answers a bad one with its HTTP status, and
on success switches the stream over to a :class:`~rue_trio.websocket.WebSocketConn`,
which lives in its own nursery (a reader and a writer task) for as long as
``handle`` runs. ``handle`` then delivers the messages one at a time, in order, to
``on_message``.

Whatever ends the connection (the peer, a callback's exception, a protocol violation,
the server shutting down), the same path runs: the connection leaves its hub and every
room, it closes (1000 normally, 1011 after a callback's exception, 1001 when the server
goes away), and ``on_close`` runs exactly once for every connection whose ``on_connect``
ran. A callback's exception reaches ``on_error`` and never leaves ``handle``: it
concerns that connection only, never the server or the others.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import trio

from ._tally import TALLY
from .auth import Authenticate, Identity, Refusal, authenticate_request
from .exceptions import ConnectionClosed, ConnectionClosedError, HandshakeError
from .hub import Hub
from .protocol import (
    DeflateConfig,
    DeflateParams,
    MessageType,
    PerMessageDeflate,
    Role,
    ServerHandshake,
    State,
    WebSocketProtocol,
    server_handshake,
)
from .server import format_address
from .websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

if TYPE_CHECKING:
    from .app import Context
    from .http import Request

__all__ = [
    "SERVER_DEFLATE",
    "OnClose",
    "OnConnect",
    "OnError",
    "OnMessage",
    "WebSocketHandler",
]

logger = logging.getLogger("rue_trio.websocket")

OnConnect: TypeAlias = Callable[[WebSocketConn], Awaitable[None] | None]
"""``on_connect(conn)``: sync or async."""
OnMessage: TypeAlias = Callable[[WebSocketConn, MessageType, str | bytes], Awaitable[None] | None]
"""``on_message(conn, msg_type, data)``: ``data`` is a ``str`` for text, ``bytes`` for binary."""
OnClose: TypeAlias = Callable[[WebSocketConn], Awaitable[None] | None]
"""``on_close(conn)``: sync or async; runs once the connection is closed."""
OnError: TypeAlias = Callable[[WebSocketConn, BaseException], Awaitable[None] | None]
"""``on_error(conn, exc)``: a callback's exception, or what broke the connection."""

_DEFAULT_CONFIG = ConnectionConfig()

#: What an accepted handshake hands to the connection's run: the stream, the bytes the
#: client sent after its request, the subprotocol, the permessage-deflate parameters,
#: the identity from ``authenticate``, the client's address.
_Accepted: TypeAlias = tuple[
    trio.abc.Stream,
    bytes,
    "str | None",
    "DeflateParams | None",
    "Identity | None",
    "tuple[str, int] | None",
]

SERVER_DEFLATE = DeflateConfig(server_no_context_takeover=True, client_max_window_bits=12)
"""The server's permessage-deflate settings for ``compression=True``.

``server_no_context_takeover`` (RFC 7692 section 7.1.1.1) makes every outgoing message
compress from a fresh state: an idle connection holds no compressor (zlib's state is
about 256 KiB at the default window), and a hub compresses a broadcast once for all
members instead of once per member. ``client_max_window_bits=12`` (section 7.1.2.2), when
the client offers it (browsers do), bounds each inflater's window at 4 KiB.
"""
# How long on_close, and leaving the hub, may take once the connection has ended.
_CLEANUP_TIMEOUT = 10.0


class WebSocketHandler:
    """Rue's ``WebSocketHandler``: upgrade a request, then run the callbacks.

    Callbacks may be ``async def`` functions or plain ones. Messages are delivered one at
    a time, in order; a slow ``on_message`` slows only its own connection (its inbound
    buffer fills, then TCP pushes back on the peer).

    Example::

        handler = WebSocketHandler(on_message=echo)

        @app.get("/ws")
        async def ws(c: Context) -> None:
            await handler.handle(c)

    Args:
        on_connect: called once the connection is open.
        on_message: called for every message, with its type and data.
        on_close: called once the connection is closed, exactly once for every
            connection that ran ``on_connect``, whatever ended it.
        on_error: called with a callback's exception (the connection then closes with
            1011), or with the :class:`~rue_trio.exceptions.ConnectionClosedError` of a
            connection that ended abnormally (its ``__cause__`` says why). Without it,
            such errors are logged.
        hub: a :class:`~rue_trio.hub.Hub`; each connection is registered on connect and
            removed from it, and from all its rooms, when it ends. The hub must be
            running (``app.add_background(hub.run)``): otherwise each connection is
            closed at once with 1011 and an error naming the fix is logged.
        subprotocols: the subprotocols this endpoint speaks, in order of preference.
        compression: permessage-deflate: ``True`` (:data:`SERVER_DEFLATE`), ``False``,
            or a :class:`~rue_trio.protocol.DeflateConfig`.
        max_message_size: the largest message accepted, after decompression; ``None``
            for no limit.
        allowed_origins: if given, the ``Origin`` values allowed to connect (protection
            against cross-site WebSocket hijacking); others get 403. A request without
            ``Origin`` (not from a browser) is allowed.
        authenticate: ``authenticate(c)``, called before the ``101`` once the upgrade is
            valid and its origin allowed; returns an :class:`~rue_trio.auth.Identity`
            (the connection opens with its user, meta and app state, the ``101``
            carries its headers) or a :class:`~rue_trio.auth.Refusal` (the client gets
            its status and body). See :mod:`rue_trio.auth`.
        config: queue sizes, keepalive and close timeouts.
    """

    def __init__(
        self,
        *,
        on_connect: OnConnect | None = None,
        on_message: OnMessage | None = None,
        on_close: OnClose | None = None,
        on_error: OnError | None = None,
        hub: Hub | None = None,
        subprotocols: Sequence[str] = (),
        compression: bool | DeflateConfig = True,
        max_message_size: int | None = 1 << 20,
        allowed_origins: Iterable[str] | None = None,
        authenticate: Authenticate | None = None,
        config: ConnectionConfig = _DEFAULT_CONFIG,
    ) -> None:
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_close = on_close
        self.on_error = on_error
        self.hub = hub
        self.subprotocols = tuple(subprotocols)
        if compression is True:
            compression = SERVER_DEFLATE
        self.compression: DeflateConfig | None = compression or None
        self.max_message_size = max_message_size
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.authenticate = authenticate
        self.config = config

    async def handle(self, c: Context) -> None:
        """Upgrade the request of ``c``, then run the connection: Rue's ``handler.Handle(c)``.

        A request that is not a valid upgrade is answered with its HTTP status (400,
        also for a request with a body, 403, 405, or 426 for a plain GET, with
        ``Upgrade: websocket``) and ``handle`` returns. During a server's graceful
        shutdown new upgrades get 503.

        Cancellation: cancelling the task closes the connection with 1001 (going away)
        within the close timeout, runs ``on_close``, then lets ``Cancelled`` propagate.
        """
        try:
            accepted = await self._accept(c)
        finally:
            # A 101 is counted when it is sent; a refusal once it is answered.
            if c.status is not None and c.status != 101:
                TALLY.handshakes[c.status] += 1
        if accepted is None:
            return
        # The connection runs in this frame: _accept's (with the handshake, whose offered
        # subprotocols and extensions may fill a head, and the full request) is gone.
        stream, trailing_data, subprotocol, deflate_params, identity, client = accepted
        del accepted
        request = c.request  # the light copy switch_protocols left
        deflate = None
        if deflate_params is not None:
            assert self.compression is not None
            deflate = PerMessageDeflate(deflate_params, is_server=True, config=self.compression)
        protocol = WebSocketProtocol(
            Role.SERVER, max_message_size=self.max_message_size, deflate=deflate
        )
        opened: WebSocketConn | None = None
        connected: WebSocketConn | None = None
        try:
            async with open_websocket_conn(
                stream,
                protocol,
                trailing_data=trailing_data,
                request=request,
                subprotocol=subprotocol,
                remote_address=client,
                config=self.config,
            ) as conn:
                if identity is not None:
                    _apply_identity(conn, identity)
                opened = conn
                TALLY.opened(conn)
                # Its arguments are computed only if the line is logged (INFO is off by
                # default): with the closed line's, 1,339 -> 1,329 calls per connection
                # (bench/profile_server.py --scenario handshake).
                if logger.isEnabledFor(logging.INFO):
                    address = conn.remote_address
                    logger.info(
                        "websocket %s open: %s from %s",
                        conn.id,
                        request.path,
                        "-" if address is None else format_address(*address),
                        extra={"conn_id": conn.id},
                    )
                if self.hub is not None and not self.hub.running:
                    # Registering would wait in the inbox of a hub that never runs.
                    logger.error(
                        "websocket %s: the Hub of this WebSocketHandler is not running: "
                        "start it with app.add_background(hub.run) or run hub.run in your "
                        "nursery",
                        conn.id,
                        extra={"conn_id": conn.id},
                    )
                    with trio.CancelScope(shield=True):
                        await conn.close(1011, "hub not running")
                    return
                try:
                    if self.hub is not None:
                        # A register cancelled while waiting for the hub may still land:
                        # unregister in any case (harmless when it did not).
                        await self.hub.register(conn)
                    connected = conn  # from here on, on_close runs whatever happens
                    if await self._guarded(conn, self._connect):
                        # Guarded here, not through _guarded: this task waits in
                        # _receive for the connection's whole life, and each frame it
                        # holds meanwhile costs about 250 bytes (bench/idle_memory.py).
                        try:
                            await self._receive(conn)
                        except Exception as exc:
                            await self._ended(conn, exc)
                finally:
                    if self.hub is not None:
                        with trio.move_on_after(_CLEANUP_TIMEOUT) as scope:
                            scope.shield = True
                            await self.hub.unregister(conn)
        finally:
            if opened is not None:
                TALLY.closed(opened)
                if logger.isEnabledFor(logging.INFO):
                    logger.info(
                        "websocket %s closed: %s %s",
                        opened.id,
                        opened.close_code,
                        opened.close_reason or "",
                        extra={"conn_id": opened.id},
                    )
            if connected is not None and self.on_close is not None:
                with trio.move_on_after(_CLEANUP_TIMEOUT) as scope:
                    scope.shield = True
                    await self._call_safely(self.on_close, connected)

    async def _accept(self, c: Context) -> _Accepted | None:
        """Answer the handshake: a refusal (``None``), or the 101 and what the run needs."""
        request = c.request
        if c.shutting_down:
            await c.respond(503, b"server shutting down\n", headers=[("retry-after", "1")])
            return None
        if request.header("upgrade") is None:
            # RFC 7231 section 6.5.15 / RFC 6455 section 4.2.2: say which protocol to use.
            await c.respond(
                426,
                b"this endpoint speaks WebSocket only\n",
                headers=[("upgrade", "websocket"), ("connection", "Upgrade")],
            )
            return None
        if request.body:
            # RFC 6455 section 4.1: the opening handshake is a GET without a body.
            await c.respond(400, b"a WebSocket upgrade request has no body\n")
            return None
        try:
            handshake = self._handshake(request)
        except HandshakeError as exc:
            await c.respond(exc.status_code, f"{exc}\n".encode(), headers=exc.headers)
            return None
        origin = handshake.request.origin
        allowed = self.allowed_origins
        if allowed is not None and origin is not None and origin not in allowed:
            await c.respond(403, b"origin not allowed\n")
            return None
        identity = None
        response = handshake.response
        if self.authenticate is not None:
            outcome = await authenticate_request(self.authenticate, c)
            if isinstance(outcome, Refusal):
                if isinstance(outcome.body, str):
                    text = (("content-type", "text/plain; charset=utf-8"), *outcome.headers)
                    await c.respond(outcome.status, outcome.body.encode(), headers=text)
                else:
                    await c.respond(outcome.status, outcome.body, headers=outcome.headers)
                return None
            identity = outcome
            if identity.headers:
                extra = [_header_bytes(field) for field in identity.headers]
                response = self._handshake(request, extra).response
        # Read from the full request (its proxy headers), before the light copy replaces it.
        client = c.remote_address
        stream, trailing_data = await c.switch_protocols(response)
        TALLY.handshakes[101] += 1
        return (
            stream,
            trailing_data,
            handshake.subprotocol,
            handshake.deflate_params,
            identity,
            client,
        )

    def _handshake(
        self, request: Request, extra_headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> ServerHandshake:
        return server_handshake(
            request.method.encode(),
            request.http_version.encode(),
            request.headers,
            subprotocols=self.subprotocols,
            deflate=self.compression,
            extra_headers=extra_headers,
        )

    async def _connect(self, conn: WebSocketConn) -> None:
        result = None if self.on_connect is None else self.on_connect(conn)
        if result is not None:
            await result
        else:
            # A cancellation point, not a schedule point: nothing to wait for.
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _receive(self, conn: WebSocketConn) -> None:
        """Deliver the messages to ``on_message``, one at a time, in order."""
        on_message = self.on_message
        if on_message is None:
            async for _ in conn:
                pass
        elif inspect.iscoroutinefunction(on_message):
            async for msg in conn:
                await on_message(conn, msg.type, msg.data)
        else:
            async for msg in conn:
                result = on_message(conn, msg.type, msg.data)
                if result is not None:
                    await result

    async def _guarded(
        self, conn: WebSocketConn, step: Callable[[WebSocketConn], Awaitable[None]]
    ) -> bool:
        """Run one step; report what ends the connection. Return whether it completed."""
        try:
            await step(conn)
        except Exception as exc:
            await self._ended(conn, exc)
            return False
        return True

    async def _ended(self, conn: WebSocketConn, exc: Exception) -> None:
        """Report what ended a step: the connection's end, or a callback's failure."""
        if not isinstance(exc, ConnectionClosed):
            await self._fail(conn, exc)
        elif conn.state is State.OPEN:
            # Not this connection's end: a callback used another, closed one.
            await self._fail(conn, exc)
        elif isinstance(exc, ConnectionClosedError):
            await self._report(conn, exc)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()  # a clean close

    async def _fail(self, conn: WebSocketConn, exc: Exception) -> None:
        """A callback failed: report it; that connection, and only it, closes with 1011."""
        await self._report(conn, exc, callback_failed=True)
        with trio.CancelScope(shield=True):
            await conn.close(1011, "internal error")

    async def _report(
        self, conn: WebSocketConn, exc: BaseException, *, callback_failed: bool = False
    ) -> None:
        if self.on_error is not None:
            await self._call_safely(self.on_error, conn, exc)
        elif not callback_failed:
            logger.info(
                "websocket %s closed abnormally: %s", conn.id, exc, extra={"conn_id": conn.id}
            )
            await trio.lowlevel.checkpoint()
        else:
            logger.error(
                "websocket %s: callback failed", conn.id, exc_info=exc, extra={"conn_id": conn.id}
            )
            await trio.lowlevel.checkpoint()

    async def _call_safely(
        self, fn: Callable[..., Awaitable[None] | None], conn: WebSocketConn, *args: object
    ) -> None:
        """Call a callback from an error or cleanup path: its own exception is logged."""
        try:
            result = fn(conn, *args)
            if result is not None:
                await result
        except Exception:
            logger.exception(
                "websocket %s: callback %r failed",
                conn.id,
                getattr(fn, "__name__", fn),
                extra={"conn_id": conn.id},
            )
        await trio.lowlevel.checkpoint()


def _header_bytes(field: tuple[bytes | str, bytes | str]) -> tuple[bytes, bytes]:
    name, value = field
    return (
        name.encode("ascii") if isinstance(name, str) else name,
        value.encode("latin-1") if isinstance(value, str) else value,
    )


def _apply_identity(conn: WebSocketConn, identity: Identity) -> None:
    conn.user = identity.user
    conn.meta = identity.meta
    if identity.app_state:
        conn.app_state.update(identity.app_state)
