"""Opening and closing a WebSocket connection: :func:`open_websocket_conn`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType

import trio

from rue_trio.protocol import WebSocketProtocol

from ._config import ConnectionConfig
from ._connection import WebSocketConn
from ._core import _DEFAULT_CONFIG, HandshakeRequest

__all__ = ["open_websocket_conn"]


def open_websocket_conn(
    stream: trio.abc.Stream,
    protocol: WebSocketProtocol,
    *,
    trailing_data: bytes = b"",
    request: HandshakeRequest | None = None,
    subprotocol: str | None = None,
    remote_address: tuple[str, int] | None = None,
    config: ConnectionConfig = _DEFAULT_CONFIG,
) -> AbstractAsyncContextManager[WebSocketConn]:
    """Run a WebSocket connection over ``stream`` for the duration of the block.

    ``async with open_websocket_conn(stream, protocol) as conn: ...``. The opening
    handshake must be done: ``stream`` carries frames from now on and ``protocol`` was
    built with what the handshake agreed (role, permessage-deflate).

    On leaving the block the connection is closed, within ``config.close_timeout``:
    with 1000 on a normal exit; with 1011 when the block raises, and the exception is
    re-raised; with 1001 ("going away") when the owner task is cancelled (or
    interrupted), and ``Cancelled`` propagates. The stream is closed in every case.

    Args:
        stream: the transport, e.g. a :class:`trio.SocketStream` or
            :class:`trio.SSLStream`.
        protocol: the sans-I/O core for this connection.
        trailing_data: bytes already read past the handshake (the first frames).
        request: the HTTP request that opened the connection (server side).
        subprotocol: the subprotocol agreed in the handshake.
        remote_address: the peer's ``(host, port)``; by default taken from the socket.
        config: timeouts and buffer bounds.

    Returns:
        An async context manager; entering it yields the open connection.

    Raises:
        Whatever the block raised: no exception group for a single failure.
    """
    conn = WebSocketConn(
        stream,
        protocol,
        trailing_data=trailing_data,
        request=request,
        subprotocol=subprotocol,
        remote_address=remote_address,
        config=config,
    )
    return _ConnectionBlock(conn)


class _ConnectionBlock:
    """The block of :func:`open_websocket_conn`: the connection's nursery and its tasks.

    A class, not an ``@asynccontextmanager``: the block lasts as long as the connection,
    and a suspended generator, its context manager, their saved arguments and Trio's
    record of the async generator cost 633 bytes per idle connection where this object
    costs 48 (bench/idle_memory.py: 14.63 -> 14.05 KiB).
    """

    __slots__ = ("_conn", "_manager")

    def __init__(self, conn: WebSocketConn) -> None:
        self._conn = conn
        self._manager: AbstractAsyncContextManager[trio.Nursery, bool | None] | None = None

    async def __aenter__(self) -> WebSocketConn:
        manager = self._manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        try:
            self._conn._start(nursery)
        except BaseException as exc:
            # Not expected (tasks started in a fresh nursery); the nursery is left all the
            # same, or Trio's stack of scopes would be corrupt.
            self._manager = None
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self._conn

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        body_exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> bool:
        conn = self._conn
        manager = self._manager
        assert manager is not None
        self._manager = None
        try:
            # The body's exception is kept out of the nursery, so that it leaves unwrapped.
            try:
                if not conn._closed:
                    await _shutdown(conn, *_exit_code(body_exc))
                conn._end_tasks()
            except BaseException as exc:
                if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                await manager.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            # Only reachable if a task let through what it must not catch (a
            # KeyboardInterrupt delivered to it).
            task_excs = group
        else:
            # The block's exception, if any, goes on.
            return False
        # A Cancelled in the block came from the nursery reacting to the task: it must not
        # leave the nursery. Any other exception of the block goes with the tasks' (a
        # KeyboardInterrupt is never dropped). Unwrap a single one; several stay grouped.
        if body_exc is not None and not isinstance(body_exc, trio.Cancelled):
            raise BaseExceptionGroup(
                "a WebSocket connection failed", [body_exc, *task_excs.exceptions]
            )
        raise task_excs.exceptions[0] if len(task_excs.exceptions) == 1 else task_excs


def _exit_code(exc: BaseException | None) -> tuple[int, str]:
    """The close code for leaving the block with ``exc`` (RFC 6455 section 7.4.1)."""
    if exc is None:
        return 1000, ""
    if isinstance(exc, Exception):
        return 1011, ""
    # Cancelled, KeyboardInterrupt, SystemExit: the endpoint is going away.
    return 1001, "going away"


async def _shutdown(conn: WebSocketConn, code: int, reason: str) -> None:
    """Close ``conn`` within its close timeout.

    Shielded: it runs when the owner task is cancelled too (then with 1001).
    """
    deadline = trio.current_time() + conn._config.close_timeout
    with trio.CancelScope(shield=True, deadline=deadline):
        conn._start_close(code, reason)
        await conn._wait_closed()
