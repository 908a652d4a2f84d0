"""Backplane adapters: how hubs in different processes hear each other.

The hub depends only on the port, :class:`rue_trio.hub.Backplane`. The adapters here are
optional: :class:`RedisBackplane` (pub/sub), :class:`RedisStreams` (room history in
Redis Streams) and :class:`RedisUsers` (presence by user) need the ``redis`` extra
(coredis), imported only when the name is first used, so that ``import
rue_trio.backplane`` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .redis import RedisBackplane
    from .streams import RedisStreams
    from .users import RedisUsers

__all__ = ["RedisBackplane", "RedisStreams", "RedisUsers"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackplane":
        from .redis import RedisBackplane

        return RedisBackplane
    if name == "RedisStreams":
        from .streams import RedisStreams

        return RedisStreams
    if name == "RedisUsers":
        from .users import RedisUsers

        return RedisUsers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
