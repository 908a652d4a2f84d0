"""The application: routes, middleware, the request context, and how to run it.

Theory of operation
-------------------
An :class:`App` holds a :class:`~rue_trio.http.Router` of route functions and a list of
middleware. For each request the HTTP layer calls the app's dispatch, which builds a
:class:`Context` (``c``) and runs the middleware chain around the *endpoint*: the route
function, or the app's own 404 or 405 (with ``Allow``). A middleware is::

    async def mw(c: Context, next: Next) -> None:
        ...               # before
        await next()      # the rest of the chain
        ...               # after

Middleware run in the order they were added with :meth:`App.use`, around every
request, whatever the order of ``use`` and the route registrations. A route function
takes ``c`` and is either ``async def`` or a plain function; a plain function may return
an awaitable (``return c.string(200, "hi")``, ``return handler.handle(c)``), which is
awaited.

:func:`default` is an :class:`App` with :func:`request_logger` and :func:`recovery`, as
Gin's ``Default()``.

To run an app: :meth:`App.run` blocks (like Go's ``r.Run(":8080")``) and stops
gracefully on Ctrl-C or SIGTERM; :meth:`App.serve` runs inside your nursery;
:meth:`App.serve_stream` serves one already-connected stream (the test client in
:mod:`rue_trio.testing` uses it over memory streams).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import logging
import mimetypes
import os
import signal
import socket
import ssl
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar, overload

import trio

from rue_trio._groups import single_failure
from rue_trio._proxies import client_address, parse_proxies
from rue_trio._workers import exit_with_parent, force_exit, supervise_workers, worker_port
from rue_trio.exceptions import BindError, InvalidAddressError
from rue_trio.http import (
    ALL_METHODS,
    READ_SIZE,
    HeaderList,
    HTTPConnection,
    HTTPLimits,
    Lookup,
    MethodNotAllowed,
    Request,
    RouteMatch,
    Router,
)
from rue_trio.server import (
    BackgroundService,
    Server,
    check_host,
    format_address,
    open_listeners,
    parse_address,
)

__all__ = [
    "App",
    "BackgroundService",
    "Context",
    "Middleware",
    "Next",
    "RouteFunction",
    "default",
    "recovery",
    "request_logger",
]

_server_log = logging.getLogger("rue_trio.server")
_http_log = logging.getLogger("rue_trio.http")

#: A route function: ``fn(c)``, async or plain (a plain one may return an awaitable).
RouteFunction: TypeAlias = Callable[["Context"], Awaitable[None] | None]

#: Calls the rest of the middleware chain.
Next: TypeAlias = Callable[[], Awaitable[None]]

#: ``async def mw(c, next)``: runs around the rest of the chain.
Middleware: TypeAlias = Callable[["Context", Next], Awaitable[None]]

R = TypeVar("R", bound=RouteFunction)
S = TypeVar("S")

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_JSON: Final = (b"content-type", b"application/json; charset=utf-8")
_HTML: Final = (b"content-type", b"text/html; charset=utf-8")


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
        await self._conn.respond(status, (_TEXT, *headers), text.encode())

    async def html(self, status: int, text: str, *, headers: HeaderList = ()) -> None:
        """Send ``text`` as ``text/html; charset=utf-8``; see :meth:`respond`."""
        await self._conn.respond(status, (_HTML, *headers), text.encode())

    async def json(self, status: int, obj: object, *, headers: HeaderList = ()) -> None:
        """Send ``obj`` as compact JSON (UTF-8); see :meth:`respond`.

        Raises:
            TypeError: ``obj`` is not JSON-serializable.
        """
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        await self._conn.respond(status, (_JSON, *headers), data)

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
            await _not_found(self)
            return
        if not stat.S_ISREG(info.st_mode):
            await _not_found(self)
            return
        await _send_file(self, file_path, info.st_size, content_type, headers)

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


async def _not_found(c: Context) -> None:
    await c.respond(404, b"404 page not found", headers=(_TEXT,))


class _Readable(Protocol):
    async def read(self, size: int, /) -> bytes: ...


class _FileChunks:
    """An async iterator over an open file, in ``READ_SIZE`` chunks."""

    __slots__ = ("_file",)

    def __init__(self, file: _Readable) -> None:
        self._file = file

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._file.read(READ_SIZE)
        if not chunk:
            raise StopAsyncIteration
        return chunk


async def _send_file(
    c: Context,
    path: trio.Path,
    size: int,
    content_type: str | None,
    headers: HeaderList,
) -> None:
    if content_type is None:
        guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if guessed.startswith("text/"):
            guessed += "; charset=utf-8"
        content_type = guessed
    fields = ((b"content-type", content_type), *headers)
    try:
        file = await path.open("rb")
    except OSError:
        await _not_found(c)
        return
    async with file:
        await c._conn.respond_stream(200, fields, _FileChunks(file), size)


async def _resolve_static(root: Path, relative: str) -> tuple[trio.Path, int] | None:
    """The file under ``root`` that ``relative`` names, and its size; ``None`` if none.

    ``..`` segments, backslashes and NUL bytes are refused outright; then the path is
    resolved (following symbolic links) and must still be inside ``root``.
    """
    # A checkpoint first, as the refusals just below return without awaiting.
    await trio.lowlevel.checkpoint()
    parts = relative.split("/")
    for part in parts:
        if part == ".." or "\\" in part or "\x00" in part:
            return None
    candidate = trio.Path(root, *(part for part in parts if part and part != "."))
    for _ in range(2):
        try:
            resolved = await candidate.resolve(strict=True)
            info = await resolved.stat()
        except (OSError, RuntimeError):
            # RuntimeError: a symbolic link loop.
            return None
        if not Path(resolved).is_relative_to(root):
            return None
        if stat.S_ISREG(info.st_mode):
            return resolved, info.st_size
        if not stat.S_ISDIR(info.st_mode):
            return None
        candidate = resolved / "index.html"
    return None


async def _checkpoint() -> None:
    """What a route that answered without awaiting (a plain function) is awaited as."""
    await trio.lowlevel.checkpoint()


def _endpoint(c: Context) -> Awaitable[None]:
    """The end of the chain: the route function, or the app's 404 or 405, to await.

    Not a coroutine of its own: the caller awaits the route's awaitable directly, so a
    WebSocket's task keeps one frame less for its whole life (with the handler's
    ``_handle`` frame gone too: 17.38 -> 16.90 KiB per idle WebSocket,
    ``bench/idle_memory.py``).
    """
    lookup = c._lookup
    if isinstance(lookup, RouteMatch):
        result = lookup.handler(c)
        return _checkpoint() if result is None else result
    if isinstance(lookup, MethodNotAllowed):
        allow = ", ".join(lookup.allowed)
        return c.respond(
            405, b"405 method not allowed", headers=(_TEXT, (b"allow", allow.encode("ascii")))
        )
    return _not_found(c)


class _Chain:
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
            await _endpoint(self._c)
        else:
            # ``next`` called again after the endpoint ran: nothing left to run.
            await trio.lowlevel.checkpoint()


class App:
    """A rue_trio application: routes, middleware and background services.

    Args:
        limits: HTTP size and time limits (header and body sizes, request and
            keep-alive timeouts).
        shutdown_timeout: seconds requests in progress get to finish when the server
            shuts down, before they are cancelled.
        server_header: the ``Server`` response header, or ``None`` to send none.
        trusted_proxies: the reverse proxies whose ``Forwarded`` and
            ``X-Forwarded-For`` headers are believed: IP addresses, networks such as
            ``"10.0.0.0/8"``, and ``"unix"`` for a proxy connecting over a Unix socket.
            Requests from them report the client they name as ``c.remote_address``
            (and ``conn.remote_address``). Empty by default: the headers are ignored.
        tune_gc: while :meth:`serve` (or :meth:`run`, :meth:`serve_unix`) serves, set
            the garbage collector for a server: the youngest generation's threshold
            raised from 700 to 100,000, and the objects alive at start-up and after
            each accept burst frozen (:func:`gc.freeze`), so that 10,000 idle members
            do not cost a full collection per broadcast. Both are restored when
            serving stops; a collector the application disabled is left alone.
            ``False`` leaves the collector as it is. Importing rue_trio, or
            :meth:`serve_stream`, never changes it.

    Raises:
        ValueError: an entry of ``trusted_proxies`` is not an address, a network or
            ``"unix"``.
    """

    def __init__(
        self,
        *,
        limits: HTTPLimits | None = None,
        shutdown_timeout: float = 10.0,
        server_header: str | None = "rue_trio",
        trusted_proxies: Iterable[str] = (),
        tune_gc: bool = True,
    ) -> None:
        self.tune_gc = tune_gc
        self.limits = limits if limits is not None else HTTPLimits()
        self.shutdown_timeout = shutdown_timeout
        self._server_header = server_header.encode("ascii") if server_header else None
        self._router: Router[RouteFunction] = Router()
        self._middleware: list[Middleware] = []
        self._background: list[BackgroundService] = []
        self._proxies = parse_proxies(trusted_proxies)

    # Routes -------------------------------------------------------------------------

    @overload
    def handle(self, method: str, path: str) -> Callable[[R], R]: ...
    @overload
    def handle(self, method: str, path: str, fn: R) -> R: ...
    def handle(self, method: str, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register ``fn`` for ``method`` and ``path`` (Gin's ``Handle``).

        Use it directly, ``app.handle("GET", "/x", fn)``, or as a decorator,
        ``@app.handle("GET", "/x")``. Paths take ``:param`` and a final ``*catchall``
        segment (see :mod:`rue_trio.http`).

        Returns:
            ``fn`` itself (or a decorator that registers and returns it).

        Raises:
            ValueError: the path is malformed or conflicts with a registered route.
        """
        return self._register((method,), path, fn)

    @overload
    def get(self, path: str) -> Callable[[R], R]: ...
    @overload
    def get(self, path: str, fn: R) -> R: ...
    def get(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a ``GET`` route (``HEAD`` falls back to it); see :meth:`handle`."""
        return self._register(("GET",), path, fn)

    @overload
    def post(self, path: str) -> Callable[[R], R]: ...
    @overload
    def post(self, path: str, fn: R) -> R: ...
    def post(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a ``POST`` route; see :meth:`handle`."""
        return self._register(("POST",), path, fn)

    @overload
    def put(self, path: str) -> Callable[[R], R]: ...
    @overload
    def put(self, path: str, fn: R) -> R: ...
    def put(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a ``PUT`` route; see :meth:`handle`."""
        return self._register(("PUT",), path, fn)

    @overload
    def delete(self, path: str) -> Callable[[R], R]: ...
    @overload
    def delete(self, path: str, fn: R) -> R: ...
    def delete(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a ``DELETE`` route; see :meth:`handle`."""
        return self._register(("DELETE",), path, fn)

    @overload
    def patch(self, path: str) -> Callable[[R], R]: ...
    @overload
    def patch(self, path: str, fn: R) -> R: ...
    def patch(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a ``PATCH`` route; see :meth:`handle`."""
        return self._register(("PATCH",), path, fn)

    @overload
    def head(self, path: str) -> Callable[[R], R]: ...
    @overload
    def head(self, path: str, fn: R) -> R: ...
    def head(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a ``HEAD`` route (ahead of the ``GET`` fallback); see :meth:`handle`."""
        return self._register(("HEAD",), path, fn)

    @overload
    def options(self, path: str) -> Callable[[R], R]: ...
    @overload
    def options(self, path: str, fn: R) -> R: ...
    def options(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register an ``OPTIONS`` route; see :meth:`handle`."""
        return self._register(("OPTIONS",), path, fn)

    @overload
    def any(self, path: str) -> Callable[[R], R]: ...
    @overload
    def any(self, path: str, fn: R) -> R: ...
    def any(self, path: str, fn: R | None = None) -> R | Callable[[R], R]:
        """Register a route for every method, as Gin's ``Any``; see :meth:`handle`."""
        return self._register(ALL_METHODS, path, fn)

    def _register(self, methods: Sequence[str], path: str, fn: R | None) -> R | Callable[[R], R]:
        def register(route: R) -> R:
            for method in methods:
                self._router.add(method, path, route)
            return route

        return register if fn is None else register(fn)

    def static(self, prefix: str, folder: str | os.PathLike[str]) -> None:
        """Serve the files under ``folder`` at ``prefix`` (``GET`` and ``HEAD``).

        ``app.static("/assets", "public")`` answers ``/assets/css/a.css`` with
        ``public/css/a.css``. A directory is answered with its ``index.html``. Anything
        else is a 404: a missing file, a path with ``..`` (however encoded), a path
        that resolves (through symbolic links) outside ``folder``.

        Args:
            prefix: the URL prefix, such as ``"/static"`` (``"/"`` for the root).
            folder: the directory; it must exist.

        Raises:
            ValueError: ``folder`` is not a directory, or the route conflicts.
        """
        root = Path(folder).resolve()
        if not root.is_dir():
            raise ValueError(f"{folder!r} is not a directory")

        async def serve_static(c: Context) -> None:
            found = await _resolve_static(root, c.param("filepath"))
            if found is None:
                await _not_found(c)
            else:
                await _send_file(c, found[0], found[1], None, ())

        self.get(prefix.rstrip("/") + "/*filepath", serve_static)

    # Middleware and background services --------------------------------------------

    def use(self, *middleware: Middleware) -> None:
        """Add middleware, run in order around every request (404 and 405 included)."""
        self._middleware.extend(middleware)

    def add_background(self, service: BackgroundService) -> None:
        """Run ``service`` alongside the server (such as a Hub's ``run``).

        :meth:`serve` starts it with ``await nursery.start(service)`` before accepting
        connections, and cancels it after the connections have drained at shutdown.
        Each :meth:`serve` call starts its own.

        Args:
            service: an async function taking ``task_status`` (keyword), which calls
                ``task_status.started()`` once ready and runs until cancelled.
        """
        self._background.append(service)

    @property
    def background_services(self) -> tuple[BackgroundService, ...]:
        """The services added with :meth:`add_background`, in order."""
        return tuple(self._background)

    # Serving ------------------------------------------------------------------------

    def _dispatch(
        self, conn: HTTPConnection, request: Request, lookup: Lookup[RouteFunction]
    ) -> Awaitable[None]:
        # Not a coroutine: the HTTP layer awaits the chain (or the route) directly, one
        # frame less in a WebSocket's task (with HTTPConnection.serve's loop inlined:
        # 16.90 -> 16.36 KiB per idle WebSocket, bench/idle_memory.py).
        # The context owns the request: after an upgrade it swaps in a light copy.
        c = Context(self, conn, request, lookup)
        if self._middleware:
            return _Chain(self._middleware, c)()
        return _endpoint(c)

    def _server(
        self, *, ssl_context: ssl.SSLContext | None = None, max_connections: int | None = None
    ) -> Server[RouteFunction]:
        return Server(
            self._router,
            self._dispatch,
            limits=self.limits,
            server_header=self._server_header,
            ssl_context=ssl_context,
            max_connections=max_connections,
            shutdown_timeout=self.shutdown_timeout,
            background=self._background,
            tune_gc=self.tune_gc,
        )

    async def serve(
        self,
        host: str | None = "127.0.0.1",
        port: int = 8080,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        backlog: int | None = None,
        reuse_port: bool = False,
        task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve HTTP (and WebSocket upgrades) until cancelled; use in a nursery.

        ``addresses = await nursery.start(app.serve, "127.0.0.1", 0)`` returns once the
        server listens, with the bound ``(host, port)`` of each listener (port 0 picks
        a free port, reported here).

        Args:
            host: the interface to bind, or ``None`` for all of them.
            port: the port.
            ssl_context: serve HTTPS/WSS with this server-side context.
            max_connections: the most connections served at once (more wait).
            backlog: the listen queue length.
            reuse_port: set ``SO_REUSEPORT``: several processes may serve the port.
            task_status: receives the list of bound ``(host, port)``.

        Raises:
            InvalidAddressError: ``host`` is not a host name or address, or ``port`` not
                an int from 0 to 65535.
            BindError: the address cannot be listened on (in use, not this machine's,
                an unknown host); the ``OSError`` is its ``__cause__``.
            ValueError: ``max_connections`` is less than 1.

        Cancellation: the way to stop serving. Listeners close first, requests in
        progress get ``shutdown_timeout`` seconds, WebSocket connections close with
        1001, background services stop last; then the cancellation propagates.
        """
        server = self._server(ssl_context=ssl_context, max_connections=max_connections)
        check_host(host)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidAddressError(f"the port must be an int from 0 to 65535, not {port!r}")
        try:
            listeners = await open_listeners(host, port, backlog=backlog, reuse_port=reuse_port)
        except OSError as exc:
            raise _bind_error(_bind_failure(host, port, exc), exc.errno) from exc
        await server.serve_listeners(listeners, task_status=task_status)

    async def serve_unix(
        self,
        path: str | os.PathLike[str],
        *,
        mode: int | None = None,
        max_connections: int | None = None,
        backlog: int | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve HTTP (and WebSocket upgrades) on a Unix domain socket until cancelled.

        For a reverse proxy on the same machine (nginx's
        ``proxy_pass http://unix:/run/chat/app.sock``): no port to allocate or to
        firewall, file permissions decide who may connect. List ``"unix"`` in the app's
        ``trusted_proxies`` so that ``c.remote_address`` is the client the proxy names.

        A stale socket file left by a server that died is replaced; a socket on which
        a server still answers is not. The file is removed when serving stops.

        Args:
            path: the socket's file name.
            mode: the file's permissions (such as ``0o660``: the proxy's group may
                connect); by default as the umask leaves them.
            max_connections: the most connections served at once (more wait).
            backlog: the listen queue length.
            task_status: receives ``path`` (as a string) once the server listens.

        Raises:
            BindError: the path is in use by a live server, or cannot be created.

        Cancellation: as :meth:`serve`.
        """
        server = self._server(max_connections=max_connections)
        name = os.fspath(path)
        listener = await _unix_listener(name, mode, backlog)
        try:
            await server.serve_listeners(
                [listener], task_status=_Reporting(task_status, lambda _: name)
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    async def serve_stream(
        self, stream: trio.abc.Stream, remote_address: tuple[str, int] | None = None
    ) -> None:
        """Serve one already-connected stream until its connection ends, then close it.

        Background services are not started here.

        Args:
            stream: the stream, such as one end of a ``trio.testing.memory_stream_pair``.
            remote_address: the client's ``(host, port)`` to report, if any.

        Cancellation: the connection stops and the stream is closed.
        """
        await self._server().serve_stream(stream, remote_address)

    def run(
        self,
        address: str = ":8080",
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        workers: int = 1,
        configure_logging: bool = True,
    ) -> None:
        """Serve until Ctrl-C or SIGTERM, then shut down gracefully (Go's ``r.Run``).

        This starts Trio (``trio.run``) and blocks. If the application configured no
        logging (the root logger has no handler), records at INFO and above from every
        logger, the application's own included, go to stderr
        (``logging.basicConfig(level=logging.INFO)``): the lines an ``on_connect`` logs
        show, as with Rue's ``Default``. Configure logging before calling ``run``, or pass
        ``configure_logging=False``, to decide otherwise. After a graceful shutdown
        ``run`` returns (a script then exits with status 0); a second Ctrl-C or SIGTERM
        during the shutdown exits the process at once, with status 128 + the signal's
        number, without waiting for the connections.

        With ``workers=N`` (N > 1) this process starts N worker processes by running its
        own command line again (``python app.py`` or ``python -m pkg.app``), each serving
        the same port with ``SO_REUSEPORT``; the kernel spreads connections over them.
        The code before ``app.run`` therefore runs in every worker, and each worker has
        its own background services (its own hub: join them with a backplane). Ctrl-C
        or SIGTERM stops them all gracefully. ``":0"`` picks one free port for all.

        Args:
            address: ``":8080"`` (every interface), ``"127.0.0.1:8080"``,
                ``"[::1]:8080"``..., or ``"unix:/run/chat/app.sock"`` for a Unix socket
                (see :meth:`serve_unix`; one process, no TLS).
            ssl_context: serve HTTPS/WSS with this server-side context.
            max_connections: the most connections served at once.
            workers: how many processes serve the port (see above).
            configure_logging: whether to set up logging as above when the application
                did not.

        Raises:
            InvalidAddressError: the address is malformed or not a string.
            BindError: the address cannot be listened on; see :meth:`serve`.
            BackplaneError: a background hub's backplane (Redis) cannot be reached.
            ValueError: ``workers`` is below 1.
            RuntimeError: a worker exited on its own (the others were stopped).

        A single failure is raised as itself, never inside an ``ExceptionGroup``.
        """
        unix_path: str | None = None
        if isinstance(address, str) and address.startswith("unix:"):
            unix_path = address.removeprefix("unix:")
            if workers > 1 or ssl_context is not None:
                raise ValueError("a Unix socket is served by one process, without TLS")
            host, port = None, 0
        else:
            host, port = parse_address(address)
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}")
        if configure_logging:
            _configure_logging()
        shared_port = worker_port()
        if shared_port is None and workers > 1:
            try:
                _run_ungrouped(
                    partial(
                        supervise_workers, host, port, workers, grace=self.shutdown_timeout + 5
                    )
                )
            except OSError as exc:
                # The parent reserves the port before starting the workers.
                if not isinstance(exc, socket.gaierror) and exc.errno not in _BIND_ERRNOS:
                    raise
                raise _bind_error(_bind_failure(host, port, exc), exc.errno) from exc
            return
        _run_ungrouped(
            partial(
                self._run_until_signal,
                host,
                port if shared_port is None else shared_port,
                ssl_context=ssl_context,
                max_connections=max_connections,
                worker=shared_port is not None,
                unix_path=unix_path,
            )
        )

    async def _run_until_signal(
        self,
        host: str | None,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int | None,
        worker: bool = False,
        unix_path: str | None = None,
    ) -> None:
        if worker:
            # A worker may get the signal twice (from the terminal's process group and
            # forwarded by the parent): once it is draining, the second one must not
            # become a KeyboardInterrupt when the receiver below restores the handlers.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                # The first signal cancels only the serving scope: the watcher lives on
                # through the drain, to act on a second one.
                serving = trio.CancelScope()
                nursery.start_soon(_watch_signals, signals, serving, worker)
                scheme = "https" if ssl_context is not None else "http"

                async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
                    with serving:
                        if unix_path is not None:
                            await self.serve_unix(
                                unix_path,
                                max_connections=max_connections,
                                task_status=_Reporting(task_status, lambda path: [f"unix:{path}"]),
                            )
                        else:
                            await self.serve(
                                host,
                                port,
                                ssl_context=ssl_context,
                                max_connections=max_connections,
                                reuse_port=worker,
                                task_status=_Reporting(
                                    task_status,
                                    lambda bound: [
                                        f"{scheme}://{format_address(*address)}"
                                        for address in bound
                                    ],
                                ),
                            )
                    nursery.cancel_scope.cancel()

                for where in await nursery.start(serve):
                    _server_log.info("listening on %s", where)
                if worker:
                    nursery.start_soon(exit_with_parent, serving)


async def _watch_signals(
    signals: AsyncIterator[int], serving: trio.CancelScope, worker: bool
) -> None:
    """The first SIGINT or SIGTERM starts the drain; a second one exits at once.

    A worker leaves the second one to its parent (it gets each Ctrl-C twice: from the
    terminal and forwarded), which kills the workers when it gets one itself.
    """
    async for signum in signals:
        name = signal.Signals(signum).name
        if not serving.cancel_called:
            _server_log.info(
                "received %s: shutting down gracefully%s",
                name,
                "" if worker else " (send it again to exit at once)",
            )
            serving.cancel()
        elif not worker:
            force_exit(signum)


class _Reporting(Generic[S]):
    """A task status that reports ``transform(value)`` for the ``value`` it is given."""

    def __init__(self, status: trio.TaskStatus[S], transform: Callable[[Any], S]) -> None:
        self._status = status
        self._transform = transform

    def started(self, value: Any = None) -> None:
        self._status.started(self._transform(value))


async def _unix_listener(path: str, mode: int | None, backlog: int | None) -> trio.SocketListener:
    """A listening Unix socket at ``path``, replacing a stale socket file."""
    if stat.S_ISSOCK(_mode_of(path)):
        probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with probe:
            try:
                await probe.connect(path)
            except OSError:
                os.unlink(path)  # nobody answers: a socket left by a server that died
            else:
                message = f"cannot listen on unix:{path}: a server is answering there"
                raise _bind_error(message, errno.EADDRINUSE)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog if backlog is not None else 0xFFFF)
    except OSError as exc:
        sock.close()
        message = f"cannot listen on unix:{path}: {exc.strerror or exc}"
        raise _bind_error(message, exc.errno) from exc
    return trio.SocketListener(sock)


def _mode_of(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def _run_ungrouped(main: Callable[[], Awaitable[object]]) -> None:
    """``trio.run(main)``, raising a single failure as itself rather than in a group."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        failure = single_failure(group)
        if failure is None:
            raise
        raise failure from failure.__cause__


def _bind_error(message: str, code: int | None) -> BindError:
    error = BindError(message)
    error.errno = code
    return error


# The errors of bind(2) that _bind_failure explains.
_BIND_ERRNOS: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _bind_failure(host: str | None, port: int, exc: OSError) -> str:
    """One line that says why ``host:port`` cannot be listened on, and what to do."""
    where = f"cannot listen on {format_address(host, port) if host else f':{port}'}"
    if isinstance(exc, socket.gaierror):
        return f"{where}: unknown host {host!r} ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the address is in use (stop the other server or choose another port)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: no interface of this machine has that address "
            "(use 127.0.0.1, or ':PORT' for every interface)"
        )
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges; choose another)"
    return f"{where}: {exc.strerror or exc}"


# The format App.run gives logging when the application configured none.
_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _configure_logging() -> None:
    """Log INFO and above to stderr, unless the application configured logging.

    Logging counts as configured once the root logger or the ``rue_trio`` logger has a
    handler (``logging.basicConfig``, ``dictConfig``, a framework's setup).
    """
    if logging.getLogger().handlers or logging.getLogger("rue_trio").handlers:
        return
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)


# Middleware -----------------------------------------------------------------------


async def request_logger(c: Context, next: Next) -> None:
    """Log one line per request on the ``rue_trio.http`` logger, at INFO level.

    The line has the client, method, path (without the query), status and duration.
    A WebSocket request is logged when it is upgraded (status 101).
    """
    if not _http_log.isEnabledFor(logging.INFO):
        await next()
        return
    start = time.perf_counter()
    logged = False

    def log() -> None:
        nonlocal logged
        logged = True
        request = c.request
        address = c.remote_address
        _http_log.info(
            "%s %s %s %s %.2fms",
            format_address(*address) if address is not None else "-",
            request.method,
            request.target.partition("?")[0],
            c.status if c.status is not None else "-",
            (time.perf_counter() - start) * 1000.0,
        )

    c.on_upgrade(log)
    try:
        await next()
    finally:
        if not logged:
            log()


async def recovery(c: Context, next: Next) -> None:
    """Turn a route's exception into a logged traceback and a 500 response.

    When nothing was sent yet, the client gets ``500 Internal Server Error`` and the
    connection stays usable. A client that vanished is not logged. Cancellation is
    never caught.
    """
    try:
        await next()
    except Exception:
        if c._conn.client_gone:
            raise
        _http_log.exception("error in route %s %s", c.request.method, c.request.path)
        if c.responded:
            await trio.lowlevel.checkpoint()
        else:
            await c.string(500, "500 internal server error")


def default(
    *,
    limits: HTTPLimits | None = None,
    shutdown_timeout: float = 10.0,
    server_header: str | None = "rue_trio",
    trusted_proxies: Iterable[str] = (),
    tune_gc: bool = True,
) -> App:
    """An :class:`App` with :func:`request_logger` and :func:`recovery` (Gin's ``Default``).

    Args:
        limits: see :class:`App`.
        shutdown_timeout: see :class:`App`.
        server_header: see :class:`App`.
        trusted_proxies: see :class:`App`.
        tune_gc: see :class:`App`.

    Returns:
        The app.
    """
    app = App(
        limits=limits,
        shutdown_timeout=shutdown_timeout,
        server_header=server_header,
        trusted_proxies=trusted_proxies,
        tune_gc=tune_gc,
    )
    app.use(request_logger, recovery)
    return app
