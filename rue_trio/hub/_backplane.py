"""The backplane port: how hubs in different processes hear each other.

A hub on its own delivers to the members of its own process. Given a :class:`Backplane`,
it also publishes every broadcast once to the other nodes, and delivers theirs to its
members. The hub depends only on this module; adapters (such as
:class:`rue_trio.backplane.RedisBackplane`) live in :mod:`rue_trio.backplane`.

Broadcasts cross the backplane as an :class:`Envelope`, packed by :func:`pack_envelope`
into a compact, versioned binary record (``struct``, not JSON)::

    offset  size  field
    0       1     version (1)
    1       1     message type (1 text, 2 binary: RFC 6455 section 5.2 opcodes)
    2       1     flags (bit 0: a room is present, bit 1: an exclude id is present)
    3       16    origin node id (bytes)
    19      2     room length, in bytes (UTF-8)
    21      2     exclude id length, in bytes (UTF-8)
    23      ...   room, exclude id, then the payload (UTF-8 for text) to the end
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from rue_trio.protocol import MessageType

__all__ = [
    "ENVELOPE_VERSION",
    "Backplane",
    "BackplaneSink",
    "BackplaneStatistics",
    "Envelope",
    "pack_envelope",
    "unpack_envelope",
]

ENVELOPE_VERSION: Final = 1
"""The version byte that starts every packed envelope."""

_HEADER: Final = struct.Struct("!BBB16sHH")
_HAS_ROOM: Final = 0x01
_HAS_EXCLUDE: Final = 0x02
_TYPES: Final = {
    int(MessageType.TEXT): MessageType.TEXT,
    int(MessageType.BINARY): MessageType.BINARY,
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One broadcast as it crosses the backplane.

    Attributes:
        type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
        data: the payload; UTF-8 bytes for text once it has crossed.
        room: the room, or ``None`` for everyone.
        exclude: the id of the member that must not receive it (the sender), or ``None``.
        origin: the 16-byte id of the node that published it.
    """

    type: MessageType
    data: str | bytes
    room: str | None
    exclude: str | None
    origin: bytes


def pack_envelope(envelope: Envelope) -> bytes:
    """Pack an envelope into its binary form (see the module docstring).

    Args:
        envelope: the envelope; ``origin`` must be 16 bytes.

    Returns:
        The packed bytes.

    Raises:
        ValueError: the origin is not 16 bytes, or the room or exclude id is longer than
            65,535 bytes in UTF-8.
    """
    if len(envelope.origin) != 16:
        raise ValueError("an envelope's origin must be a 16-byte node id")
    flags = 0
    room = b""
    exclude = b""
    if envelope.room is not None:
        flags |= _HAS_ROOM
        room = envelope.room.encode()
    if envelope.exclude is not None:
        flags |= _HAS_EXCLUDE
        exclude = envelope.exclude.encode()
    if len(room) > 0xFFFF or len(exclude) > 0xFFFF:
        raise ValueError("a room name or member id longer than 65535 bytes cannot cross")
    data = envelope.data
    payload = data.encode() if isinstance(data, str) else data
    header = _HEADER.pack(
        ENVELOPE_VERSION, int(envelope.type), flags, envelope.origin, len(room), len(exclude)
    )
    return b"".join((header, room, exclude, payload))


def unpack_envelope(packed: bytes) -> Envelope:
    """Unpack an envelope made by :func:`pack_envelope`.

    Args:
        packed: the bytes.

    Returns:
        The envelope; its ``data`` is ``bytes`` (UTF-8 for text).

    Raises:
        ValueError: the bytes are not an envelope of a version this code knows.
    """
    if len(packed) < _HEADER.size:
        raise ValueError("truncated envelope")
    version, type_code, flags, origin, room_size, exclude_size = _HEADER.unpack_from(packed)
    if version != ENVELOPE_VERSION:
        raise ValueError(f"unknown envelope version {version}")
    message_type = _TYPES.get(type_code)
    if message_type is None:
        raise ValueError(f"unknown message type {type_code} in envelope")
    start = _HEADER.size
    middle = start + room_size
    end = middle + exclude_size
    if end > len(packed):
        raise ValueError("truncated envelope")
    try:
        room = packed[start:middle].decode() if flags & _HAS_ROOM else None
        exclude = packed[middle:end].decode() if flags & _HAS_EXCLUDE else None
    except UnicodeDecodeError as exc:
        raise ValueError("an envelope's room or exclude id is not UTF-8") from exc
    return Envelope(message_type, packed[end:], room, exclude, origin)


class BackplaneSink(Protocol):
    """Where a backplane hands the hub the broadcasts of other nodes.

    A bounded :class:`trio.MemorySendChannel` is one: the hub passes its own.
    """

    def send_nowait(self, value: Envelope, /) -> None:
        """Offer an envelope without waiting.

        Raises:
            trio.WouldBlock: the hub's bounded buffer of remote broadcasts is full; the
                backplane drops the envelope and counts it.
            trio.BrokenResourceError: the hub has stopped.
        """
        ...


@dataclass(frozen=True, slots=True)
class BackplaneStatistics:
    """A snapshot of a backplane's counters, from :meth:`Backplane.statistics`.

    Attributes:
        connected: whether the link to the broker is up.
        published: envelopes sent to the broker.
        received: envelopes of other nodes received from the broker.
        delivered: received envelopes handed to the hub.
        dropped_inbound: received envelopes dropped because the hub's buffer was full.
        dropped_outbound: envelopes dropped because the outbound queue was full.
        lost: envelopes published while the link was down, or refused by the broker
            (never sent).
        reconnects: times the link was re-established after a loss.
        subscriptions: room channels subscribed (the "everyone" channel not included).
        rejected: envelopes that could not be packed (a room name or member id over
            65,535 bytes in UTF-8), dropped and logged.

    Publications that reached no other node are ``lost + dropped_outbound +
    rejected``.
    """

    connected: bool
    published: int
    received: int
    delivered: int
    dropped_inbound: int
    dropped_outbound: int
    lost: int
    reconnects: int
    subscriptions: int
    rejected: int = 0


class Backplane(Protocol):
    """What a hub needs from a backplane: publish, follow rooms, and share presence.

    Every synchronous method is called by the hub's own task and must not block: it
    queues work for the backplane's tasks, which :meth:`run` owns. A backplane serves one
    hub and runs once.
    """

    @property
    def node_id(self) -> bytes:
        """This node's 16-byte id, the ``origin`` of the envelopes it publishes."""
        ...

    async def run(
        self, sink: BackplaneSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, then carry envelopes both ways until cancelled.

        Envelopes of other nodes go to ``sink`` (never this node's own). ``started()``
        is called once the link is up and the "everyone" channel is subscribed.

        Args:
            sink: where the broadcasts of other nodes go.
            task_status: for :meth:`trio.Nursery.start`.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached at start.
        """
        ...

    def publish(self, envelope: Envelope) -> None:
        """Queue an envelope for the other nodes; drop and count it if the queue is full."""
        ...

    def subscribe_room(self, room: str) -> None:
        """Start following a room's channel: the node has its first local member there."""
        ...

    def unsubscribe_room(self, room: str) -> None:
        """Stop following a room's channel: the node's last local member left it."""
        ...

    def presence_add(self, member_id: str, room: str | None) -> None:
        """Record that a local member registered (``room`` ``None``) or joined a room."""
        ...

    def presence_remove(self, member_id: str, room: str | None) -> None:
        """Record that a local member unregistered (``room`` ``None``) or left a room."""
        ...

    async def synced(self) -> None:
        """Wait until the room subscriptions requested so far are active at the broker.

        Returns at once while the link is down (what is published then is lost anyway).
        """
        ...

    async def cluster_count(self, room: str | None) -> int:
        """Count the members of every live node, or those in ``room``.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        ...

    async def cluster_members(self, room: str | None) -> list[str]:
        """List the member ids of every live node, or those in ``room``, sorted.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        ...

    def statistics(self) -> BackplaneStatistics:
        """Return a snapshot of the backplane's counters."""
        ...
