"""The commands in the hub's inbox, and their checks in the caller's task."""

from __future__ import annotations

import enum
from typing import Final

import trio
import trio.lowlevel

from rue_trio.protocol import MessageType

from ._events import PresenceEvent
from ._history import HistoryPage, StreamPosition
from ._member import Member


class _Broadcast:
    __slots__ = ("data", "exclude", "framed", "position", "remote", "room", "type")

    def __init__(
        self,
        type: MessageType,
        data: str | bytes,
        room: str | None,
        exclude: str | None,
        remote: bool = False,
        framed: bool = False,
        position: StreamPosition | None = None,
    ) -> None:
        self.type = type
        self.data = data
        self.room = room
        self.exclude = exclude
        # Came from another node over the backplane: deliver here, never publish again.
        self.remote = remote
        # Made by the hub itself (a user notice): neither numbered nor framed again.
        self.framed = framed
        # Numbered by the history stream (or _LOCAL: it could not, number it here).
        self.position = position


class _Op(enum.Enum):
    REGISTER = enum.auto()
    UNREGISTER = enum.auto()
    JOIN = enum.auto()
    LEAVE = enum.auto()
    FLUSH = enum.auto()
    SUBSCRIBE = enum.auto()


# Commands that change nothing on a stopped hub, so they succeed quietly there.
_HARMLESS_WHEN_STOPPED: Final = frozenset({_Op.UNREGISTER, _Op.LEAVE})


class _Control:
    __slots__ = ("done", "error", "member", "op", "page", "room", "seed", "since", "subscriber")

    def __init__(
        self,
        op: _Op,
        member: Member | None = None,
        room: str | None = None,
        subscriber: trio.MemorySendChannel[PresenceEvent] | None = None,
        since: StreamPosition | None = None,
        seed: HistoryPage | None = None,
    ) -> None:
        self.op = op
        self.member = member
        self.room = room
        self.subscriber = subscriber
        self.since = since
        # What the history stream holds after ``since``, read just before this join.
        self.seed = seed
        self.page: HistoryPage = _NO_PAGE
        self.done: trio.Event | None = None
        self.error: Exception | None = None


_Command = _Broadcast | _Control

# What a join answers in a hub without history and framing: nothing to catch up on.
_NO_PAGE: Final = HistoryPage("", 0)
# The seed of a join whose history stream could not be read: recovery cannot be sure.
_UNSURE: Final = HistoryPage("", 0, (), recovered=False)
# The position of a broadcast the history stream could not number: this hub numbers it.
_LOCAL: Final = StreamPosition("", 0)


def _stopped_error() -> trio.BrokenResourceError:
    return trio.BrokenResourceError("the hub has stopped")


def _check_member(member: Member, action: str) -> Member:
    # In the caller's task: something that is not a connection must not reach the actor.
    try:
        ok = (
            isinstance(member.id, str)
            and callable(member._hub_offer)
            and callable(member._hub_flush)
            and callable(member._hub_encode)
            and callable(member.close_nowait)
        )
        member._hub_encode_key  # noqa: B018 (read once here so the actor's read cannot fail)
    except Exception:
        ok = False
    if not ok:
        raise TypeError(
            f"Hub.{action}() takes a connection (a rue_trio WebSocketConn), "
            f"not {type(member).__name__}"
        )
    return member


def _make_broadcast(
    type: MessageType | int,
    data: str | bytes | bytearray | memoryview,
    room: str | None,
    exclude: Member | str | None,
) -> _Broadcast:
    # Validate in the caller's task: a bad argument must not reach (and stop) the actor.
    message_type = MessageType(type)
    if not isinstance(data, str | bytes):
        # A mutable buffer could change before the hub encodes it: take a snapshot.
        data = bytes(data)
    if exclude is not None and not isinstance(exclude, str):
        exclude = _check_member(exclude, "broadcast(exclude=...)").id
    return _Broadcast(message_type, data, room, exclude)
