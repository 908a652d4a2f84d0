"""The link to Redis, shared by the Redis adapters: its errors, its URL, its first contact.

:class:`~rue_trio.backplane.RedisBackplane`, :class:`~rue_trio.backplane.RedisStreams` and
:class:`~rue_trio.backplane.RedisUsers` each keep their own coredis clients; what they
share is how a broken link is recognised, how a URL is checked and shown (password
hidden), and how the first contact is retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final
from urllib.parse import urlsplit

import anyio
import coredis
import coredis.exceptions
import trio

from rue_trio.exceptions import BackplaneError, InvalidURIError

# Errors that mean "the link to Redis is broken (or was never made)".
LINK_ERRORS: Final = (
    coredis.exceptions.RedisError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    TimeoutError,
)


def link_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of an exception group) is a broken Redis link."""
    if isinstance(exc, BaseExceptionGroup):
        return all(link_error(inner) for inner in exc.exceptions)
    return isinstance(exc, LINK_ERRORS)


def check_url(url: str) -> str:
    """Check that ``url`` names a Redis server; return it with its password hidden."""
    if not isinstance(url, str):
        raise InvalidURIError("the Redis URL must be a string such as 'redis://host:6379/0'")
    parts = urlsplit(url)
    shown = url
    if parts.password is not None:
        shown = url.replace(f":{parts.password}@", ":***@", 1)
    fix = "write redis://host:6379/0, rediss://host:6380/0 or unix:///path/redis.sock"
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise InvalidURIError(f"{shown!r} is not a Redis URL: {fix}")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise InvalidURIError(f"{shown!r}: the port is not a number: {fix}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise InvalidURIError(f"{shown!r} has no socket path: {fix}")
    elif not parts.hostname:
        raise InvalidURIError(f"{shown!r} has no host: {fix}")
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise InvalidURIError(f"{shown!r}: the database must be a number, as /0: {fix}")
    return shown


def leaf(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (``exc`` itself when it is none)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def text(value: object) -> str:
    """A Redis reply (bytes, as the clients do not decode) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def first_contact(
    client: coredis.Redis[bytes],
    shown_url: str,
    attempts: int,
    delay_min: float,
    delay_max: float,
) -> None:
    """Ping Redis until it answers, ``attempts`` times at most, doubling the wait.

    Raises:
        BackplaneError: Redis did not answer any attempt (the link's error is the cause).
    """
    await trio.lowlevel.checkpoint()
    delay = delay_min
    for attempt in range(1, attempts + 1):
        try:
            await client.ping()
            return
        except Exception as exc:
            if not link_error(exc):
                raise
            if attempt == attempts:
                raise BackplaneError(
                    f"cannot reach Redis at {shown_url} "
                    f"({attempt} attempt{'s' if attempt > 1 else ''}): {leaf(exc)}"
                ) from leaf(exc)
        await trio.sleep(delay)
        delay = min(delay * 2, delay_max)


@contextmanager
def link_failures(shown_url: str) -> Iterator[None]:
    """Raise a broken link as :class:`BackplaneError`, and a cancellation as itself.

    Wraps an adapter's ``run``: coredis and anyio errors become one
    ``BackplaneError`` naming ``shown_url`` (the link's error is the cause).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        cancelled, rest = group.split(trio.Cancelled)
        if cancelled is not None and (rest is None or link_error(rest)):
            # Cancelled while coredis tore its connections down: its own cleanup then
            # fails on the closed connection; the cancellation is what counts.
            raise cancelled from None
        if link_error(group):
            cause = leaf(group)
            raise BackplaneError(f"Redis at {shown_url} failed: {cause}") from cause
        raise
    except Exception as exc:
        if link_error(exc):
            raise BackplaneError(f"Redis at {shown_url} failed: {exc}") from exc
        raise
