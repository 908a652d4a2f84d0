"""The Hub: broadcast to many connections, by room, without waiting on any of them.

The hub is a task that owns its members' outbound queues and a room table; everything
else talks to it by message (see the theory of operation in :mod:`rue_trio.hub._hub`).
It knows a connection only through the :class:`Member` port: an id, an encode key and a
non-blocking way to offer it frames. That port is private plumbing (applications pass
their ``WebSocketConn``); it is exported here for typing, tests and benchmarks.
"""

from ._backplane import (
    Backplane,
    BackplaneSink,
    BackplaneStatistics,
    Envelope,
    pack_envelope,
    unpack_envelope,
)
from ._directory import UserDirectory, UserEventSink
from ._events import HubStatistics, PresenceEvent, PresenceKind
from ._framing import Frame, RoomFraming
from ._history import HistoryConfig, HistoryMessage, HistoryPage, HistoryRule, StreamPosition
from ._hub import Hub
from ._member import PLAIN, Member
from ._streams import HistoryStream, Sequenced, SequencedSink
from ._users import UserEvent

__all__ = [
    "PLAIN",
    "Backplane",
    "BackplaneSink",
    "BackplaneStatistics",
    "Envelope",
    "Frame",
    "HistoryConfig",
    "HistoryMessage",
    "HistoryPage",
    "HistoryRule",
    "HistoryStream",
    "Hub",
    "HubStatistics",
    "Member",
    "PresenceEvent",
    "PresenceKind",
    "RoomFraming",
    "Sequenced",
    "SequencedSink",
    "StreamPosition",
    "UserDirectory",
    "UserEvent",
    "UserEventSink",
    "pack_envelope",
    "unpack_envelope",
]
