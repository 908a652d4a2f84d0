"""The user-directory port: who is in a room across every process of a cluster.

A hub knows the users of its own members (:meth:`Hub.users`). Given a
:class:`UserDirectory`, it also reports each member's arrival in and departure from a
room, with its user key and metadata; :meth:`Hub.presence` asks the directory, which
answers for the whole cluster; and the directory, not the hub, decides when a user joins
or leaves a room for the whole cluster, handing those :class:`UserEvent` to the hub, which
announces them to its members of the room (through its framing). Adapters (such as
:class:`rue_trio.backplane.users.RedisUsers`) live in :mod:`rue_trio.backplane`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import trio

from ._users import UserEvent

__all__ = ["UserDirectory", "UserEventSink"]


class UserEventSink(Protocol):
    """Where a directory hands the hub cluster-wide user events (a memory channel)."""

    def send_nowait(self, value: UserEvent, /) -> None:
        """Offer an event; raises :class:`trio.WouldBlock` when the hub's buffer is full."""
        ...


class UserDirectory(Protocol):
    """Cluster-wide presence by user; synchronous methods are called by the hub's task."""

    async def run(
        self, sink: UserEventSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep this node's part of the directory up to date until cancelled.

        A user's arrival in a room where this node has members (their first connection
        anywhere) and their departure (their last) go to ``sink``.
        """
        ...

    def joined(self, room: str, member_id: str, user: str, meta: Mapping[str, Any]) -> None:
        """Record that a local member joined a room (must not block)."""
        ...

    def left(self, room: str, member_id: str) -> None:
        """Record that a local member left a room (must not block)."""
        ...

    async def users(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        """List a room's users on every live node, each with their members' metas.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        ...
