"""The request context (``c``), the middleware chain and the endpoint at its end."""

from __future__ import annotations

import builtins
import json
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import trio

from rue_trio._proxies import client_address
from rue_trio.app._responses import HTML, JSON, TEXT, not_found, send_file
from rue_trio.http import HeaderList, HTTPConnection, Lookup, MethodNotAllowed, Request, RouteMatch

if TYPE_CHECKING:
    from rue_trio.app._app import App

#: A route function: ``fn(c)``, async or plain (a plain one may return an awaitable).
RouteFunction: TypeAlias = Callable[["Context"], Awaitable[None] | None]

#: Calls the rest of the middleware chain.
Next: TypeAlias = Callable[[], Awaitable[None]]

#: ``async def mw(c, next)``: runs around the rest of the chain.
Middleware: TypeAlias = Callable[["Context", Next], Awaitable[None]]


class Context:
    """Everything about one request, and the ways to answer it (``c`` in a route).

    Attributes:
        request: the request.
        app: the app serving it.
    """

    __slots__ = (
        "_client",
        "_client_known",
        "_conn",
        "_lookup",
        "_on_upgrade",
        "_values",
        "app",
        "request",
    )

    def __init__(
        self, app: App, conn: HTTPConnection, request: Request, lookup: Lookup[RouteFunction]
    ) -> None:
        self.app = app
        self.request = request
        self._conn = conn
        self._lookup = lookup
        self._values: dict[str, object] | None = None
        self._on_upgrade: list[Callable[[], None]] | None = None
        self._client: tuple[str, int] | None = None
        self._client_known = False

    def param(self, name: str) -> str:
        """The path parameter ``name`` (``c.param("room")`` for ``/ws/:room``).

        Raises:
            KeyError: the route has no such parameter.
        """
        try:
            return self.request.params[name]
        except KeyError:
            raise KeyError(f"no path parameter {name!r} in route {self.full_path!r}") from None

    def query(self, name: str, default: str | None = None) -> str | None:
        """The first value of the query parameter ``name``, or ``default``."""
        value = self.request.query(name)
        return default if value is None else value

    def header(self, name: str, default: str | None = None) -> str | None:
        """The request header ``name`` (repeated fields comma-joined), or ``default``."""
        value = self.request.header(name)
        return default if value is None else value

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The client's ``(host, port)``, or ``None`` when unknown.

        Behind a reverse proxy listed in the app's ``trusted_proxies``, this is the
        client the proxy names in ``Forwarded`` or ``X-Forwarded-For`` (port 0 when the
        proxy gives none); ``request.remote_address`` stays the proxy's.
        """
        proxies = self.app._proxies
        if not proxies:
            return self.request.remote_address
        if not self._client_known:
            request = self.request
            self._client = client_address(request.remote_address, request.headers, proxies)
            self._client_known = True
        return self._client

    @property
    def body(self) -> builtins.bytes:
        """The request body (read in full before the route runs)."""
        return self.request.body

    @property
    def values(self) -> dict[str, object]:
        """Per-request storage, for middleware to pass things to routes."""
        if self._values is None:
            self._values = {}
        return self._values

    @property
    def full_path(self) -> str | None:
        """The matched route's pattern, such as ``/ws/:room``; ``None`` on 404 or 405."""
        lookup = self._lookup
        return lookup.pattern if isinstance(lookup, RouteMatch) else None

    @property
    def responded(self) -> bool:
        """Whether a response (or a ``101``) was sent for this request."""
        return self._conn.status is not None

    @property
    def status(self) -> int | None:
        """The status sent for this request (101 after an upgrade), or ``None``."""
        return self._conn.status

    @property
    def shutting_down(self) -> bool:
        """Whether the server is draining: answer a new WebSocket handshake with 503."""
        return self._conn.shutting_down

    async def respond(
        self, status: int, body: builtins.bytes = b"", *, headers: HeaderList = ()
    ) -> None:
        """Send a response with a complete body.

        ``Date``, ``Server`` and ``Content-Length`` are set for you.

        Args:
            status: the status code (200 to 999).
            body: the body.
            headers: extra header fields, as ``(name, value)`` pairs of bytes or ASCII
                strings.

        Raises:
            RuntimeError: a response was already sent.
            ValueError: the status or a header is invalid.

        Cancellation: a partly written response closes the connection.
        """
        await self._conn.respond(status, headers, body)

    async def string(self, status: int, text: str, *, headers: HeaderList = ()) -> None:
        """Send ``text`` as ``text/plain; charset=utf-8``; see :meth:`respond`."""
        await self._conn.respond(status, (TEXT, *headers), text.encode())

    async def html(self, status: int, text: str, *, headers: HeaderList = ()) -> None:
        """Send ``text`` as ``text/html; charset=utf-8``; see :meth:`respond`."""
        await self._conn.respond(status, (HTML, *headers), text.encode())

    async def json(self, status: int, obj: object, *, headers: HeaderList = ()) -> None:
        """Send ``obj`` as compact JSON (UTF-8); see :meth:`respond`.

        Raises:
            TypeError: ``obj`` is not JSON-serializable.
        """
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        await self._conn.respond(status, (JSON, *headers), data)

    async def bytes(
        self,
        status: int,
        data: builtins.bytes,
        content_type: str = "application/octet-stream",
        *,
        headers: HeaderList = (),
    ) -> None:
        """Send ``data`` with the given content type; see :meth:`respond`."""
        await self._conn.respond(status, ((b"content-type", content_type), *headers), data)

    async def file(
        self,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        headers: HeaderList = (),
    ) -> None:
        """Send a file with status 200, or a 404 if it is not a readable regular file.

        The content type is guessed from the name (text types in UTF-8) unless given.
        The file is read in chunks, not loaded whole.

        Args:
            path: the file.
            content_type: the ``Content-Type``, instead of the guess.
            headers: extra header fields.

        Cancellation: a partly sent file closes the connection.
        """
        file_path = trio.Path(path)
        try:
            info = await file_path.stat()
        except OSError:
            await not_found(self)
            return
        if not stat.S_ISREG(info.st_mode):
            await not_found(self)
            return
        await send_file(self, file_path, info.st_size, content_type, headers)

    def on_upgrade(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` right after a ``101`` response is written.

        The request logger uses it to log a WebSocket request when it is upgraded,
        not when the WebSocket closes.
        """
        if self._on_upgrade is None:
            self._on_upgrade = []
        self._on_upgrade.append(callback)

    async def switch_protocols(
        self, response: builtins.bytes
    ) -> tuple[trio.abc.Stream, builtins.bytes]:
        """Write a complete ``101 Switching Protocols`` response and take the stream.

        After this, the HTTP layer never reads or writes the stream; it is closed when
        the route function returns. :attr:`request` becomes its light copy
        (:meth:`~rue_trio.http.Request.light`: no body, at most
        ``limits.upgraded_field_bytes`` of header fields).

        Args:
            response: the raw response (from ``rue_trio.protocol.accept_response``).

        Returns:
            ``(stream, trailing_data)``: the stream and the bytes the client already
            sent after its request (they belong to the new protocol).

        Raises:
            RuntimeError: a response was already sent, or the request had a body.

        Cancellation: if cancelled during the write, the connection closes.
        """
        result = await self._conn.switch_protocols(response)
        if self._on_upgrade is not None:
            for callback in self._on_upgrade:
                callback()
        # From now on the request lives as long as the new protocol: keep it light.
        self.request = self.request.light(self.app.limits.upgraded_field_bytes)
        return result


async def endpoint(c: Context) -> None:
    """The end of the chain: the route function, or the app's 404 or 405."""
    lookup = c._lookup
    if isinstance(lookup, RouteMatch):
        result = lookup.handler(c)
        if result is None:
            await trio.lowlevel.checkpoint()
        else:
            await result
    elif isinstance(lookup, MethodNotAllowed):
        allow = ", ".join(lookup.allowed)
        await c.respond(
            405, b"405 method not allowed", headers=(TEXT, (b"allow", allow.encode("ascii")))
        )
    else:
        await not_found(c)


class Chain:
    """Runs the middleware, then the endpoint; it is the ``next`` a middleware gets."""

    __slots__ = ("_c", "_index", "_middleware")

    def __init__(self, middleware: Sequence[Middleware], c: Context) -> None:
        self._middleware = middleware
        self._c = c
        self._index = 0

    async def __call__(self) -> None:
        index = self._index
        self._index = index + 1
        if index < len(self._middleware):
            await self._middleware[index](self._c, self)
        elif index == len(self._middleware):
            await endpoint(self._c)
        else:
            # ``next`` called again after the endpoint ran: nothing left to run.
            await trio.lowlevel.checkpoint()
