"""The built-in middleware: one log line per request, and a 500 for a route's exception."""

from __future__ import annotations

import logging
import time

import trio

from rue_trio._listen import format_address
from rue_trio.app._context import Context, Next

_http_log = logging.getLogger("rue_trio.http")


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
