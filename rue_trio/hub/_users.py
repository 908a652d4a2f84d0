"""Presence by user: the members of a room grouped by who they are.

A member may carry a ``user`` (a string) and ``meta`` (a JSON-able mapping), set by the
application when the connection is accepted, typically from its authentication
(:attr:`rue_trio.WebSocketConn.user` and :attr:`~rue_trio.WebSocketConn.meta`). The hub
reads both when the member joins a room. Members with the same user are one user: the
user joins a room with their first member there and leaves it with their last (two
browser tabs are one person). A member without a user is a user of its own, named by its
id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = ["UserEvent"]

_NO_META: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UserEvent:
    """A user's first member joined a room, or their last member left it.

    Attributes:
        kind: ``"join"`` or ``"leave"``.
        room: the room.
        user: the user key (a member's ``user``, or its id when it has none).
        meta: the ``meta`` of the member that joined first or left last.
    """

    kind: Literal["join", "leave"]
    room: str
    user: str
    meta: Mapping[str, Any]


def identity(member: object, member_id: str) -> tuple[str, Mapping[str, Any]]:
    """Return a member's user key and metadata: its ``user`` and ``meta``, if it has them."""
    user = getattr(member, "user", None)
    meta = getattr(member, "meta", None)
    return (
        user if isinstance(user, str) else member_id,
        meta if isinstance(meta, Mapping) else _NO_META,
    )


class _Users:
    """For each room: which user each member is, and each user's members with their meta."""

    __slots__ = ("_rooms", "_who")

    def __init__(self) -> None:
        # room -> user -> member id -> meta, in the order of joining.
        self._rooms: dict[str, dict[str, dict[str, Mapping[str, Any]]]] = {}
        # (room, member id) -> user, as read when the member joined.
        self._who: dict[tuple[str, str], str] = {}

    def join(self, room: str, member: object, member_id: str) -> UserEvent | None:
        user, meta = identity(member, member_id)
        self._who[room, member_id] = user
        users = self._rooms.get(room)
        if users is None:
            users = self._rooms[room] = {}
        members = users.get(user)
        if members is None:
            users[user] = {member_id: meta}
            return UserEvent("join", room, user, meta)
        members[member_id] = meta
        return None

    def leave(self, room: str, member_id: str) -> UserEvent | None:
        user = self._who.pop((room, member_id), None)
        if user is None:
            return None
        users = self._rooms[room]
        members = users[user]
        meta = members.pop(member_id)
        if members:
            return None
        del users[user]
        if not users:
            del self._rooms[room]
        return UserEvent("leave", room, user, meta)

    def member(self, room: str, member_id: str) -> tuple[str, Mapping[str, Any]]:
        """The user and meta a member of ``room`` joined with."""
        user = self._who[room, member_id]
        return user, self._rooms[room][user][member_id]

    def presence(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        users = self._rooms.get(room, {})
        return {user: list(members.values()) for user, members in users.items()}
