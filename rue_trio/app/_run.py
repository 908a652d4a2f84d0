"""Running an app as a program: signals, a failure raised as itself, logging setup."""

from __future__ import annotations

import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import trio

from rue_trio._groups import single_failure
from rue_trio._listen import format_address
from rue_trio._workers import exit_with_parent, force_exit

if TYPE_CHECKING:
    from rue_trio.app._app import App

_server_log = logging.getLogger("rue_trio.server")

S = TypeVar("S")


async def run_until_signal(
    app: App,
    host: str | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    max_connections: int | None,
    worker: bool = False,
    unix_path: str | None = None,
) -> None:
    """Serve ``app`` until the first SIGINT or SIGTERM, then drain (``App.run``'s body)."""
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
                        await app.serve_unix(
                            unix_path,
                            max_connections=max_connections,
                            task_status=Reporting(task_status, lambda path: [f"unix:{path}"]),
                        )
                    else:
                        await app.serve(
                            host,
                            port,
                            ssl_context=ssl_context,
                            max_connections=max_connections,
                            reuse_port=worker,
                            task_status=Reporting(
                                task_status,
                                lambda bound: [
                                    f"{scheme}://{format_address(*address)}" for address in bound
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


class Reporting(Generic[S]):
    """A task status that reports ``transform(value)`` for the ``value`` it is given."""

    def __init__(self, status: trio.TaskStatus[S], transform: Callable[[Any], S]) -> None:
        self._status = status
        self._transform = transform

    def started(self, value: Any = None) -> None:
        self._status.started(self._transform(value))


def run_ungrouped(main: Callable[[], Awaitable[object]]) -> None:
    """``trio.run(main)``, raising a single failure as itself rather than in a group."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        failure = single_failure(group)
        if failure is None:
            raise
        raise failure from failure.__cause__


# The format App.run gives logging when the application configured none.
_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_default_logging() -> None:
    """Log INFO and above to stderr, unless the application configured logging.

    Logging counts as configured once the root logger or the ``rue_trio`` logger has a
    handler (``logging.basicConfig``, ``dictConfig``, a framework's setup).
    """
    if logging.getLogger().handlers or logging.getLogger("rue_trio").handlers:
        return
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
