"""Backplane adapters: how hubs in different processes hear each other.

The hub depends only on the port, :class:`rue_trio.hub.Backplane`. The adapters here are
optional: :class:`RedisBackplane` needs the ``redis`` extra (coredis), imported only when
the name is first used, so that ``import rue_trio.backplane`` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .redis import RedisBackplane

__all__ = ["RedisBackplane"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackplane":
        from .redis import RedisBackplane

        return RedisBackplane
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
