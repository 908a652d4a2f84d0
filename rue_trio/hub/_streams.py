"""The history-stream port: room history shared by the hubs of many processes.

With a :class:`HistoryStream`, a broadcast to a room with history is not numbered by the
hub that receives it: the hub hands it to the stream (``append``), the broker numbers it
for the whole cluster, stores it, and every node, the sender's included, gets it back
numbered (a :class:`Sequenced`) and delivers it. So offsets are the same on every node,
and a member can recover on any node from a position another node gave it. Each node
keeps a copy of the recent messages it saw in its own room logs, so joining from a
position is still one step of the actor; before that step the hub reads what it may lack
from the broker (``read``), following the room first so nothing falls in between.

If the stream cannot take a message (the link is down, its queue is full), the hub
numbers it itself in a local epoch: local members still get it, and positions from that
epoch are "not recovered" elsewhere. Adapters (such as
:class:`rue_trio.backplane.streams.RedisStreams`) live in :mod:`rue_trio.backplane`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

from ._backplane import Envelope
from ._history import HistoryConfig, HistoryPage, StreamPosition

__all__ = ["HistoryStream", "Sequenced", "SequencedSink"]


@dataclass(frozen=True, slots=True)
class Sequenced:
    """A room broadcast as the stream gives it back.

    Attributes:
        envelope: the broadcast (its ``room`` is set).
        position: its epoch and offset, or ``None`` when the stream could not number it
            (the hub then numbers it locally and delivers it to this node only).
    """

    envelope: Envelope
    position: StreamPosition | None


class SequencedSink(Protocol):
    """Where a stream hands numbered broadcasts to the hub (a bounded memory channel)."""

    def send_nowait(self, value: Sequenced, /) -> None:
        """Offer a broadcast; raises :class:`trio.WouldBlock` when the hub's buffer is full."""
        ...


class HistoryStream(Protocol):
    """What a hub needs from a shared history; synchronous methods must not block."""

    async def run(
        self, sink: SequencedSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, then number, store and carry room broadcasts until cancelled."""
        ...

    def append(self, envelope: Envelope, config: HistoryConfig) -> bool:
        """Queue a room broadcast for numbering; ``False`` if it cannot (the hub then does)."""
        ...

    def follow(self, room: str) -> None:
        """Receive the room's numbered broadcasts (counted: one ``unfollow`` per call)."""
        ...

    def unfollow(self, room: str) -> None:
        """Undo one :meth:`follow`."""
        ...

    async def synced(self) -> None:
        """Wait until the rooms followed so far are followed at the broker (or it is down)."""
        ...

    async def read(
        self, room: str, since: StreamPosition | None, limit: int | None, config: HistoryConfig
    ) -> HistoryPage:
        """Read a room's history from the broker, as :meth:`Hub.history` answers.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        ...
