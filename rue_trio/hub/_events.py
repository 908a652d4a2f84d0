"""Small frozen records the hub hands out: presence events and statistics."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._backplane import BackplaneStatistics

__all__ = ["HubStatistics", "PresenceEvent", "PresenceKind"]


class PresenceKind(enum.Enum):
    """What happened to a member."""

    REGISTER = "register"
    """The member was registered with the hub: broadcasts to everyone reach it."""
    UNREGISTER = "unregister"
    """The member left the hub: unregistered, evicted, or found closed."""
    JOIN = "join"
    """The member joined a room."""
    LEAVE = "leave"
    """The member left a room (also sent for each of its rooms before UNREGISTER)."""


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A change in who is registered with the hub or who is in a room.

    Attributes:
        kind: what happened.
        member_id: the :attr:`Member.id` of the member concerned.
        room: the room for JOIN and LEAVE; ``None`` for REGISTER and UNREGISTER.
    """

    kind: PresenceKind
    member_id: str
    room: str | None = None


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of a hub's state and counters, from :meth:`Hub.statistics`.

    Attributes:
        members: registered members.
        rooms: rooms with at least one member.
        broadcasts: broadcast commands processed.
        deliveries: frames a member accepted.
        encodes: frames encoded (once per encode key per broadcast, plus once per
            member whose key is ``None``).
        dropped: frames refused by a full member under the ``"drop"`` policy.
        evicted: members evicted as slow consumers under the ``"close"`` policy.
        inbox_queued: commands waiting in the inbox.
        publishers_waiting: tasks waiting for room in the full inbox.
        backplane: the backplane's counters, or ``None`` without a backplane.
        paced: times the hub let the members' writers run before its next command
            because a member had more than ``high_water`` bytes queued.
        hook_errors: exceptions raised by the ``on_presence`` callback, caught and
            logged (the hub goes on).
        backplane_errors: exceptions raised by the backplane's synchronous calls,
            caught and logged (the hub goes on; local delivery is unaffected).
        member_errors: members whose port raised something it should not (neither
            :class:`trio.WouldBlock` nor a closed connection); each was logged,
            removed and closed with 1011.
    """

    members: int
    rooms: int
    broadcasts: int
    deliveries: int
    encodes: int
    dropped: int
    evicted: int
    inbox_queued: int
    publishers_waiting: int
    backplane: BackplaneStatistics | None = None
    paced: int = 0
    hook_errors: int = 0
    backplane_errors: int = 0
    member_errors: int = 0
