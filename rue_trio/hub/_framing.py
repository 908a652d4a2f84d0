"""The framing port: how a hub wraps what it delivers to rooms, for a wire protocol.

Without framing a hub delivers each broadcast's payload as it is. A wire protocol built
on the hub (such as :mod:`rue_trio.live`) needs more in each frame: the room, the offset
the hub gave the message, and notices only the hub's actor can place in the right order
(the answer to a join, before the messages it replays; a user's arrival or departure).
The actor calls a :class:`RoomFraming` for those, once per broadcast, not per member.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

from rue_trio.protocol import MessageType

from ._history import HistoryPage, StreamPosition
from ._users import UserEvent

__all__ = ["Frame", "RoomFraming"]

Frame: TypeAlias = tuple[MessageType, str | bytes]
"""A message to deliver: its type and its payload."""


class RoomFraming(Protocol):
    """What a hub asks of a wire protocol; every method is called by the hub's task.

    Methods must be fast, must not block and must not raise: they run inside the actor,
    between two deliveries.
    """

    def message(
        self, room: str, position: StreamPosition | None, type: MessageType, data: str | bytes
    ) -> Frame:
        """Wrap a broadcast to ``room``; ``position`` is ``None`` in a room without history."""
        ...

    def joined(
        self, room: str, member_id: str, since: StreamPosition | None, page: HistoryPage
    ) -> Frame | None:
        """Answer a member's join, sent to it before the ``page.messages`` it missed.

        ``member_id`` says which member joined (to echo a request's reference, say).
        """
        ...

    def user(self, event: UserEvent) -> Frame | None:
        """Announce a user's arrival in or departure from a room to the room's members."""
        ...
