"""The hub's queries: synchronous reads of the actor's state, and the cluster-wide ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
import trio.lowlevel

from rue_trio.exceptions import BackplaneError

from ._actor import _Actor
from ._events import HubStatistics
from ._history import HistoryPage, StreamPosition


class _Queries(_Actor):
    """What the hub can tell: counts, rooms, members, history, users, statistics."""

    def count(self, room: str | None = None) -> int:
        """Return how many members are registered, or are in ``room``: ``hub.Count()``.

        Reflects the commands the hub has processed so far.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The number of members.
        """
        audience = self._everyone if room is None else self._rooms.get(room)
        return 0 if audience is None else len(audience.entries)

    async def cluster_count(self, room: str | None = None) -> int:
        """Count the members of every node of the cluster, or those in ``room``.

        Without a backplane this is :meth:`count`. With one, this node's members are
        counted as the hub holds them now and the other nodes' as they last reported to
        the broker: a node that stopped heartbeating drops out after the backplane's
        presence expiry.

        Cancellation: safe; nothing changes.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The number of members.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        if self._backplane is None:
            await trio.lowlevel.checkpoint()
            return self.count(room)
        return await self._backplane.cluster_count(room)

    async def cluster_members(self, room: str | None = None) -> list[str]:
        """List the member ids of every node of the cluster, or those in ``room``.

        Without a backplane this is :meth:`members` (sorted). See :meth:`cluster_count`.

        Cancellation: safe; nothing changes.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The member ids, sorted.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        if self._backplane is None:
            await trio.lowlevel.checkpoint()
            return sorted(self.members(room))
        return await self._backplane.cluster_members(room)

    async def history(
        self, room: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read a room's history: its latest position and the messages it keeps.

        Reflects the broadcasts the hub has processed so far (:meth:`flush` first to
        include your own).

        Cancellation: safe; nothing changes.

        Args:
            room: the room name.
            since: a position: only the messages after it (``recovered`` is ``False``,
                with no messages, if the hub no longer has them all).
            limit: at most this many messages: the latest ones without ``since``, the
                first ones after it with ``since``.

        Returns:
            The room's epoch and latest offset and the messages, oldest first (``""``,
            0 and none for a room without history).

        Raises:
            ValueError: if ``limit`` is negative.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit!r}")
        stream = self._stream
        config = None if stream is None else self._histories.config(room)
        if stream is not None and config is not None:
            try:
                return await stream.read(room, since, limit, config)
            except BackplaneError:
                pass  # the broker is away: answer with what this node saw
        await trio.lowlevel.checkpoint()
        return self._histories.page(room, since, limit, trio.current_time())

    def users(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        """Return the users in a room, each with the ``meta`` of each of their members.

        A user is a member's ``user`` (:attr:`rue_trio.WebSocketConn.user`), or its id
        when it has none; two connections of one user are listed once, with two metas.

        Args:
            room: the room name.

        Returns:
            The users in order of arrival, each with their members' metas in order of
            joining.
        """
        return self._users.presence(room)

    async def presence(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        """List the users in a room and the ``meta`` of each of their connections.

        Without a user directory this is :meth:`users`, this process's users. With one,
        the users of every live node (a user with tabs on two nodes is listed once, with
        every tab's meta); if the directory cannot be reached, this node's users.

        Cancellation: safe; nothing changes.

        Args:
            room: the room name.

        Returns:
            The users, each with their members' metas.
        """
        if self._directory is not None:
            try:
                return await self._directory.users(room)
            except BackplaneError:
                pass  # the broker is away: answer with what this node knows
        await trio.lowlevel.checkpoint()
        return self.users(room)

    def rooms(self) -> list[str]:
        """Return the names of the rooms that have members, in order of creation."""
        return list(self._rooms)

    def members(self, room: str | None = None) -> list[str]:
        """Return the ids of the members registered, or in ``room``.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The member ids, in order of registration (or of joining the room).
        """
        audience = self._everyone if room is None else self._rooms.get(room)
        return [] if audience is None else list(audience.entries)

    def statistics(self) -> HubStatistics:
        """Return a snapshot of the hub's state and counters."""
        inbox = self._inbox_send.statistics()
        return HubStatistics(
            members=len(self._everyone.entries),
            rooms=len(self._rooms),
            broadcasts=self._broadcasts,
            deliveries=self._deliveries,
            encodes=self._encodes,
            dropped=self._dropped,
            evicted=self._evicted,
            inbox_queued=inbox.current_buffer_used,
            publishers_waiting=inbox.tasks_waiting_send,
            backplane=None if self._backplane is None else self._backplane.statistics(),
            paced=self._paced,
            hook_errors=self._hook_errors,
            backplane_errors=self._backplane_errors,
            member_errors=self._member_errors,
        )
