"""The :class:`App` (routes, middleware, background services, serving) and :func:`default`."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar, overload

import trio

from rue_trio._listen import (
    BIND_ERRNOS,
    bind_error,
    bind_failure,
    check_host,
    open_listeners,
    open_unix_listener,
    parse_address,
)
from rue_trio._proxies import parse_proxies
from rue_trio._workers import supervise_workers, worker_port
from rue_trio.app._context import Chain, Context, Middleware, RouteFunction, endpoint
from rue_trio.app._middleware import recovery, request_logger
from rue_trio.app._run import (
    Reporting,
    configure_default_logging,
    run_ungrouped,
    run_until_signal,
)
from rue_trio.app._static import static_route
from rue_trio.exceptions import InvalidAddressError
from rue_trio.http import ALL_METHODS, HTTPConnection, HTTPLimits, Lookup, Request, Router
from rue_trio.server import BackgroundService, Server

R = TypeVar("R", bound=RouteFunction)


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
        tune_malloc: when the first server of the process starts serving, and with
            glibc only, keep up to 32 MiB of freed memory in the process instead of
            returning it to the kernel at once, and serve blocks up to 4 MiB from the
            heap: a 1 MiB echo otherwise page-faults its buffers back in on every round
            trip (about 530 faults and three quarters of its CPU, measured in the
            performance topic). Done once per process and not undone; skipped
            when the environment sets ``MALLOC_TRIM_THRESHOLD_``,
            ``MALLOC_MMAP_THRESHOLD_`` or ``GLIBC_TUNABLES``. ``False`` leaves the
            allocator as it is.

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
        tune_malloc: bool = True,
    ) -> None:
        self.tune_gc = tune_gc
        self.tune_malloc = tune_malloc
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
        self.get(prefix.rstrip("/") + "/*filepath", static_route(root))

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
            return Chain(self._middleware, c)()
        return endpoint(c)

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
            tune_malloc=self.tune_malloc,
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
            raise bind_error(bind_failure(host, port, exc), exc.errno) from exc
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
        listener = await open_unix_listener(name, mode, backlog)
        try:
            await server.serve_listeners(
                [listener], task_status=Reporting(task_status, lambda _: name)
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
            WorkerExitedError: a worker exited on its own (the others were stopped).

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
            configure_default_logging()
        shared_port = worker_port()
        if shared_port is None and workers > 1:
            try:
                run_ungrouped(
                    partial(
                        supervise_workers, host, port, workers, grace=self.shutdown_timeout + 5
                    )
                )
            except OSError as exc:
                # The parent reserves the port before starting the workers.
                if not isinstance(exc, socket.gaierror) and exc.errno not in BIND_ERRNOS:
                    raise
                raise bind_error(bind_failure(host, port, exc), exc.errno) from exc
            return
        run_ungrouped(
            partial(
                run_until_signal,
                self,
                host,
                port if shared_port is None else shared_port,
                ssl_context=ssl_context,
                max_connections=max_connections,
                worker=shared_port is not None,
                unix_path=unix_path,
            )
        )


def default(
    *,
    limits: HTTPLimits | None = None,
    shutdown_timeout: float = 10.0,
    server_header: str | None = "rue_trio",
    trusted_proxies: Iterable[str] = (),
    tune_gc: bool = True,
    tune_malloc: bool = True,
) -> App:
    """An :class:`App` with :func:`request_logger` and :func:`recovery` (Gin's ``Default``).

    Args:
        limits: see :class:`App`.
        shutdown_timeout: see :class:`App`.
        server_header: see :class:`App`.
        trusted_proxies: see :class:`App`.
        tune_gc: see :class:`App`.
        tune_malloc: see :class:`App`.

    Returns:
        The app.
    """
    app = App(
        limits=limits,
        shutdown_timeout=shutdown_timeout,
        server_header=server_header,
        trusted_proxies=trusted_proxies,
        tune_gc=tune_gc,
        tune_malloc=tune_malloc,
    )
    app.use(request_logger, recovery)
    return app
