"""Multi-process serving on one host: ``app.run(":8080", workers=N)``.

The parent process reserves the port (a socket bound with ``SO_REUSEPORT`` but never
listening, so the kernel routes no connection to it), then starts ``N`` workers by
running the same command line again (``sys.executable`` and ``sys.orig_argv``: this
works for ``python app.py`` and ``python -m package.app`` alike, and needs nothing to
be picklable). A worker knows it is one from the :data:`WORKER_ENV` environment
variable; its ``app.run`` then serves that port with ``SO_REUSEPORT`` instead of
starting workers, and the kernel spreads the connections over the workers. Each worker
runs its own background services, so each has its own hub; give the hub a backplane
(:class:`rue_trio.backplane.RedisBackplane`) to join them.

The parent forwards SIGINT or SIGTERM to every worker (each then shuts down gracefully,
as a single-process ``app.run`` does; a worker ignores a second signal, as it gets each
Ctrl-C twice, from the terminal and forwarded) and waits for them, up to ``grace``
seconds, then kills what is left. A second signal to the parent during that wait kills
the workers at once and exits with status 128 + the signal's number. If a worker exits on
its own, the parent stops the others and reports it. Each worker's standard input is a
pipe from the parent that the parent never writes to: when it reads end-of-file the parent
is gone (even killed with SIGKILL), and the worker shuts down as if signalled, so no
worker outlives its parent.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Final, NoReturn

import trio

from rue_trio.exceptions import WorkerExitedError

__all__ = [
    "WORKER_ENV",
    "exit_with_parent",
    "force_exit",
    "reserve_port",
    "supervise_workers",
    "worker_port",
]

_log = logging.getLogger("rue_trio.server")

WORKER_ENV: Final = "RUE_TRIO_WORKER"
"""Set to ``"<index>:<port>"`` in the environment of each worker process."""


def worker_port() -> int | None:
    """The port to share if this process is a worker, else ``None``."""
    value = os.environ.get(WORKER_ENV)
    if value is None:
        return None
    return int(value.rpartition(":")[2])


def reserve_port(host: str | None, port: int) -> socket.socket:
    """Bind (without listening) a ``SO_REUSEPORT`` socket: the workers' port.

    Args:
        host: the interface, or ``None`` for every IPv4 interface.
        port: the port; 0 picks a free one.

    Returns:
        The bound socket; close it when the workers are done.

    Raises:
        OSError: the port is taken by a socket without ``SO_REUSEPORT``, or the
            platform lacks ``SO_REUSEPORT``.
    """
    family = socket.AF_INET6 if host is not None and ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def supervise_workers(host: str | None, port: int, workers: int, *, grace: float) -> None:
    """Start ``workers`` copies of this program on one shared port; stop them on a signal.

    Args:
        host: the interface, or ``None`` for all of them.
        port: the port; 0 picks a free one (logged, and shared by every worker).
        workers: how many worker processes.
        grace: seconds the workers get to shut down after the signal before being killed.

    Raises:
        OSError: the port cannot be reserved.
        WorkerExitedError: a worker exited on its own (the others were stopped).
    """
    reservation = reserve_port(host, port)
    with reservation:
        port = int(reservation.getsockname()[1])
        command = [sys.executable, *sys.orig_argv[1:]]
        failed: list[tuple[int, int]] = []
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            processes: list[trio.Process] = []
            try:
                async with trio.open_nursery() as nursery:
                    for index in range(workers):
                        env = {**os.environ, WORKER_ENV: f"{index}:{port}"}
                        processes.append(
                            await trio.lowlevel.open_process(
                                command, env=env, stdin=subprocess.PIPE
                            )
                        )
                    _log.info("started %d workers sharing port %d", workers, port)
                    for index, process in enumerate(processes):
                        nursery.start_soon(_watch, index, process, failed, nursery.cancel_scope)
                    async for signum in signals:
                        _log.info(
                            "received %s: stopping the workers (send it again to exit at once)",
                            signal.Signals(signum).name,
                        )
                        break
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    async with trio.open_nursery() as stopping:
                        stopping.start_soon(_kill_on_signal, signals, processes)
                        await _stop(processes, grace)
                        stopping.cancel_scope.cancel()
    if failed:
        index, code = failed[0]
        raise WorkerExitedError(index, code)


async def _watch(
    index: int, process: trio.Process, failed: list[tuple[int, int]], scope: trio.CancelScope
) -> None:
    code = await process.wait()
    _log.error("worker %d exited with status %d: stopping the others", index, code)
    failed.append((index, code))
    scope.cancel()


async def _stop(processes: list[trio.Process], grace: float) -> None:
    await trio.lowlevel.checkpoint()
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
    with trio.move_on_after(grace):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _kill_on_signal(signals: AsyncIterator[int], processes: list[trio.Process]) -> None:
    """While the workers drain: a signal kills them, then this process exits."""
    async for signum in signals:
        for process in processes:
            if process.returncode is None:
                process.kill()
        force_exit(signum)


def force_exit(signum: int) -> NoReturn:
    """Exit now, with status 128 + ``signum``, as a second Ctrl-C or SIGTERM asks.

    Nothing more is awaited: a drain may be stuck on tasks that outside cancellation
    cannot reach (an ``on_close`` shielded for its cleanup), and the one who sent the
    signal twice wants the process gone. The kernel closes the sockets; the log is
    flushed first.

    Args:
        signum: the signal received.
    """
    _log.warning("received %s again: exiting now", signal.Signals(signum).name)
    logging.shutdown()
    os._exit(128 + signum)


async def exit_with_parent(scope: trio.CancelScope) -> None:
    """In a worker: cancel ``scope`` once the parent's end of standard input closes.

    Args:
        scope: the scope to cancel (the worker's serving nursery).
    """
    async with trio.lowlevel.FdStream(os.dup(0)) as stdin:
        while await stdin.receive_some(64):
            pass
    _log.info("the parent process is gone: shutting down")
    scope.cancel()
