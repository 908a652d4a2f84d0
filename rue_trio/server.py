"""Listeners, one task per connection, TLS, connection limits and graceful shutdown.

Theory of operation
-------------------
:meth:`Server.serve_listeners` runs three groups of tasks:

* background services (such as a Hub), in a nursery started first and cancelled last;
* one connection task per accepted stream, in the *connection nursery*;
* one accept loop per listener.

The background and connection nurseries are shielded from the caller's cancellation:
when the caller cancels (or Ctrl-C reaches :meth:`rue_trio.app.App.run`), only the
accept loops stop at once. Then, shielded, the server drains:

1. the listeners close: no new connection;
2. every connection is told to shut down (:meth:`HTTPConnection.shutdown`): idle
   keep-alive connections and upgraded ones (WebSockets, which close themselves with
   1001 when their task is cancelled) are cancelled now; a request in progress may
   finish (it sees ``c.shutting_down``, so a WebSocket handshake gets 503, and its
   response says ``Connection: close``);
3. after ``shutdown_timeout`` seconds, whatever is left is cancelled;
4. the server waits for every connection task to end (a cancelled WebSocket still
   finishes its closing handshake, bounded by its own ``close_timeout``);
5. the background services are cancelled, and :meth:`~Server.serve_listeners` returns
   (re-raising the cancellation).

``max_connections`` is a :class:`trio.Semaphore` held by each connection task: when it
is full an accept loop keeps the stream it just accepted waiting, and accepts nothing
more until a connection ends (further clients wait in the kernel's backlog).

When accept(2) fails for want of resources (out of file descriptors: ``EMFILE``,
``ENFILE``; or of kernel memory), the accept loop waits and retries, doubling the wait
up to one second and logging one line per five seconds; the connections already open
are served meanwhile, and the first success resets the wait.

Transport errors are handled here: a client that vanishes, or fails its TLS handshake,
ends its own connection quietly (a failed handshake is logged in one line); it is
never an error of the server.

Listeners are created by :func:`open_listeners`, kept apart from serving so that
``SO_REUSEPORT`` workers can later open their own and share the same serving code.
"""

from __future__ import annotations

import errno
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeAlias, TypeVar

import trio

from rue_trio._gc import GcTuning
from rue_trio._groups import single_failure
from rue_trio._listen import check_host, format_address, open_listeners, parse_address
from rue_trio._malloc import tune_malloc
from rue_trio.http import Dispatch, HTTPConnection, HTTPLimits, Router

__all__ = [
    "BackgroundService",
    "Server",
    "check_host",
    "format_address",
    "open_listeners",
    "parse_address",
]

_log = logging.getLogger("rue_trio.server")

H = TypeVar("H")

#: An async function started with ``nursery.start(fn)``: it takes a ``task_status``
#: keyword argument, calls ``task_status.started()`` when ready, and runs until
#: cancelled (such as ``Hub.run``).
BackgroundService: TypeAlias = Callable[..., Awaitable[object]]

# Errors from accept(2) that mean the system is overloaded: back off and retry. The
# wait doubles from the first to the cap, and the log says so at most once per interval.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_BACKOFF_FIRST: Final = 0.05
_ACCEPT_BACKOFF_MAX: Final = 1.0
_ACCEPT_LOG_INTERVAL: Final = 5.0


def _remote_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    if isinstance(stream, trio.SocketStream):
        try:
            peer = stream.socket.getpeername()
        except OSError:
            return None
        if isinstance(peer, tuple):
            return str(peer[0]), int(peer[1])
    return None


class _AcceptBackoff:
    """How long an accept loop waits after a capacity error, and when it says so.

    Out of file descriptors (or kernel memory), accept(2) fails at once: retrying in
    a tight loop would burn the CPU the existing connections need, and logging each
    failure would flood the log. The wait doubles up to a cap; one line is logged per
    interval; the first success resets both.
    """

    __slots__ = ("_delay", "_failures", "_logged_at")

    def __init__(self) -> None:
        self._delay = 0.0
        self._failures = 0
        self._logged_at = -math.inf

    def failed(self, exc: OSError) -> float:
        """Count one failure; return the seconds to wait before the next accept."""
        self._failures += 1
        now = trio.current_time()
        if now - self._logged_at >= _ACCEPT_LOG_INTERVAL:
            if self._logged_at == -math.inf:
                _log.error(
                    "accept failed (%s): backing off, up to %gs between tries; existing "
                    "connections are still served (raise the limit with 'ulimit -n', "
                    "or set max_connections)",
                    exc,
                    _ACCEPT_BACKOFF_MAX,
                )
            else:
                _log.error("accept still failing (%s): %d failures so far", exc, self._failures)
            self._logged_at = now
        self._delay = min(max(self._delay * 2, _ACCEPT_BACKOFF_FIRST), _ACCEPT_BACKOFF_MAX)
        return self._delay

    def succeeded(self) -> None:
        """An accept worked: forget the failures."""
        if self._failures:
            _log.info("accepting again after %d failed tries", self._failures)
            self._delay = 0.0
            self._failures = 0
            self._logged_at = -math.inf


class _ConnectionSet:
    """The live connections of one serve call, for the drain."""

    __slots__ = ("_empty", "active", "draining")

    def __init__(self) -> None:
        self.active: set[HTTPConnection] = set()
        self.draining = False
        self._empty = trio.Event()

    def add(self, conn: HTTPConnection) -> None:
        # Never called while draining: the accept loops have ended by then.
        self.active.add(conn)

    def discard(self, conn: HTTPConnection) -> None:
        self.active.discard(conn)
        if not self.active and self.draining:
            self._empty.set()

    def drain(self) -> None:
        self.draining = True
        for conn in list(self.active):
            conn.shutdown()
        if not self.active:
            self._empty.set()

    async def wait_empty(self) -> None:
        await self._empty.wait()


class _ShieldedNursery:
    """A nursery that outside cancellation does not reach: it ends on :meth:`close`."""

    __slots__ = ("_done", "_scope", "started")

    def __init__(self) -> None:
        self._scope = trio.CancelScope(shield=True)
        self._done = trio.Event()
        self.started = False

    async def run(
        self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self.started = True
                    task_status.started(nursery)
                    await trio.sleep_forever()
        finally:
            self._done.set()

    async def close(self) -> None:
        """Cancel the nursery's tasks and wait until they have all ended."""
        self._scope.cancel()
        if self.started:
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()


class Server(Generic[H]):
    """Serves a router and a dispatch function over listeners or single streams.

    Args:
        router: the routes.
        dispatch: the app's request handler (see :class:`HTTPConnection`).
        limits: HTTP size and time limits.
        server_header: the ``Server`` header value, or ``None``.
        ssl_context: serve TLS with this context (a server-side :class:`ssl.SSLContext`).
        max_connections: the most connections served at once, or ``None``.
        shutdown_timeout: seconds requests in progress get to finish at shutdown.
        background: services started before accepting and cancelled after the drain.
        tune_gc: while :meth:`serve_listeners` serves, raise the collector's young
            threshold and freeze long-lived objects after accept bursts (see
            :mod:`rue_trio._gc`); restored when it returns.
        tune_malloc: when :meth:`serve_listeners` starts, keep freed memory in the
            process for the next large message instead of returning it to the kernel
            (glibc only, once per process, see :mod:`rue_trio._malloc`).
    """

    def __init__(
        self,
        router: Router[H],
        dispatch: Dispatch[H],
        *,
        limits: HTTPLimits | None = None,
        server_header: bytes | None = b"rue_trio",
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        shutdown_timeout: float = 10.0,
        background: Sequence[BackgroundService] = (),
        tune_gc: bool = False,
        tune_malloc: bool = False,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must not be negative")
        self._router = router
        self._dispatch = dispatch
        self._limits = limits if limits is not None else HTTPLimits()
        self._server_header = server_header
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._shutdown_timeout = shutdown_timeout
        self._background = tuple(background)
        self._tune_gc = tune_gc
        self._tune_malloc = tune_malloc

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled, then shut down gracefully and close the listeners.

        Args:
            listeners: the listeners to accept from; this call owns and closes them.
            task_status: receives the bound ``(host, port)`` of each socket listener.

        Cancellation: the way to stop the server. The drain described in the module
        docstring runs shielded, then the cancellation propagates.
        """
        addresses = [
            (str(name[0]), int(name[1]))
            for listener in listeners
            if isinstance(listener, trio.SocketListener)
            and isinstance(name := listener.socket.getsockname(), tuple)
        ]
        conns = _ConnectionSet()
        limiter = trio.Semaphore(self._max_connections) if self._max_connections else None
        background = _ShieldedNursery()
        connections = _ShieldedNursery()
        gc_tuning = GcTuning() if self._tune_gc else None
        try:
            async with trio.open_nursery() as outer:
                try:
                    services = await outer.start(background.run)
                    for service in self._background:
                        await services.start(service)
                    handlers = await outer.start(connections.run)
                    if gc_tuning is not None:
                        gc_tuning.enter()
                    if self._tune_malloc:
                        tune_malloc()
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(
                                self._accept_loop, listener, handlers, conns, limiter, gc_tuning
                            )
                        task_status.started(addresses)
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shut_down(listeners, conns, connections)
                        await background.close()
                    if gc_tuning is not None:
                        gc_tuning.leave()
        except BaseExceptionGroup as group:
            # One failure (a background service that cannot start, an accept error)
            # comes out as itself, not wrapped in the groups of our nurseries.
            failure = single_failure(group)
            if failure is None:
                raise
            raise failure from failure.__cause__

    async def _shut_down(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        conns: _ConnectionSet,
        connections: _ShieldedNursery,
    ) -> None:
        """Steps 1 to 4 of the drain (see the module docstring); runs shielded."""
        for listener in listeners:
            await listener.aclose()
        conns.drain()
        if connections.started:
            with trio.move_on_after(self._shutdown_timeout):
                await conns.wait_empty()
        await connections.close()

    async def serve_stream(
        self, stream: trio.abc.Stream, remote_address: tuple[str, int] | None = None
    ) -> None:
        """Serve one connected stream until the connection ends, then close it.

        Args:
            stream: the stream (such as one end of a :func:`trio.testing.memory_stream_pair`).
            remote_address: the peer's ``(host, port)``, if known.

        Cancellation: the connection stops and the stream is closed.
        """
        conn = HTTPConnection(
            stream,
            limits=self._limits,
            remote_address=remote_address,
            server_header=self._server_header,
        )
        await self._run_connection(stream, conn)

    async def _accept_loop(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        connections: trio.Nursery,
        conns: _ConnectionSet,
        limiter: trio.Semaphore | None,
        gc_tuning: GcTuning | None,
    ) -> None:
        backoff = _AcceptBackoff()
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                await trio.sleep(backoff.failed(exc))
                continue
            backoff.succeeded()
            if limiter is not None:
                try:
                    await limiter.acquire()
                except BaseException:
                    # Cancelled while the server is full: drop the waiting client.
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(stream)
                    raise
            remote = _remote_address(stream)
            if self._ssl_context is not None:
                stream = trio.SSLStream(
                    stream, self._ssl_context, server_side=True, https_compatible=True
                )
            conn = HTTPConnection(
                stream,
                limits=self._limits,
                remote_address=remote,
                server_header=self._server_header,
            )
            conns.add(conn)
            if gc_tuning is not None:
                gc_tuning.accepted(len(conns.active))
            connections.start_soon(self._run_connection, stream, conn, conns, limiter)

    async def _run_connection(
        self,
        stream: trio.abc.Stream,
        conn: HTTPConnection,
        conns: _ConnectionSet | None = None,
        limiter: trio.Semaphore | None = None,
    ) -> None:
        # One frame for the connection task, tracking included: a WebSocket keeps it for
        # its whole life (bench/idle_memory.py: 16.36 -> 16.17 KiB per idle WebSocket).
        try:
            if isinstance(stream, trio.SSLStream):
                handshaken = await self._handshake(stream, conn)
                if not handshaken:
                    return
            await conn.serve(self._router, self._dispatch)
        except Exception:
            # Not expected (the HTTP layer handles its errors and a vanishing
            # client): log it, and never let one connection take the server down.
            _log.exception("connection from %s failed", conn.remote_address)
            await trio.lowlevel.checkpoint()
        finally:
            try:
                # Do not wait on the client (a TLS close_notify could block): our
                # responses carry their length, except a close-delimited HTTP/1.0 stream.
                if type(stream) is trio.SocketStream:
                    # What its aclose does, without the checkpoint: in
                    # aclose_forcefully's cancelled scope that is two scopes and two task
                    # steps per connection, mostly on a socket the WebSocket already
                    # closed (profile_server.py --scenario handshake: 16 -> 14 steps).
                    stream.socket.close()
                else:
                    await trio.aclose_forcefully(stream)
            finally:
                if conns is not None:
                    conns.discard(conn)
                if limiter is not None:
                    limiter.release()

    async def _handshake(
        self, stream: trio.SSLStream[trio.abc.Stream], conn: HTTPConnection
    ) -> bool:
        """Run the TLS handshake under the request timeout; ``False`` drops the connection."""
        with trio.move_on_after(self._limits.request_timeout):
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                _log.info(
                    "TLS handshake with %s failed: %s", conn.remote_address, exc.__cause__ or exc
                )
                await trio.lowlevel.checkpoint()
                return False
            return True
        _log.info("TLS handshake with %s timed out", conn.remote_address)
        return False
