"""The wire protocol's messages: parsing what clients send, writing what the server sends.

Every message is one JSON object in one text frame, with an ``op``. Payloads (``data``)
are kept as the JSON text the publisher sent, re-serialised once, so the hub stores and
delivers them without parsing them again: a ``message`` frame is assembled around that
text. The protocol itself is described in the reference, "The live protocol".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from rue_trio.hub import Frame, HistoryMessage, HistoryPage, StreamPosition, UserEvent
from rue_trio.protocol import MessageType

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "FORBIDDEN",
    "NOT_FOUND",
    "TOO_MANY",
    "LiveFraming",
    "ProtocolFault",
    "dump",
    "message_text",
]

BAD_REQUEST: Final = 400
"""Error code: the message is not valid JSON, not an object, or a field is wrong."""
FORBIDDEN: Final = 403
"""Error code: the application refused (the default code of :class:`RefusedError`)."""
NOT_FOUND: Final = 404
"""Error code: an unknown ``op``, or an ``unsubscribe`` from a room not subscribed."""
CONFLICT: Final = 409
"""Error code: ``subscribe`` to a room this connection is already subscribed to."""
TOO_MANY: Final = 429
"""Error code: this connection is subscribed to as many rooms as it may be."""

_TEXT: Final = MessageType.TEXT


def dump(obj: object) -> str:
    """Serialise to compact JSON; values JSON cannot hold are written as strings."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


class ProtocolFault(Exception):
    """A client's message the server answers with an ``error`` (the connection stays)."""

    def __init__(self, code: int, reason: str, ref: object = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.ref = ref


def message_text(room: str, epoch: str, offset: int, data: str | bytes) -> str:
    """Write a ``message`` op around a payload that is already JSON text."""
    raw = data if isinstance(data, str) else data.decode()
    return (
        f'{{"op":"message","room":{dump(room)},"epoch":{dump(epoch)},'
        f'"offset":{offset},"data":{raw}}}'
    )


def history_text(
    room: str, page: HistoryPage, messages: tuple[HistoryMessage, ...], ref: object
) -> str:
    """Write a ``history`` answer: the messages as ``message`` ops, oldest first."""
    listed = ",".join(message_text(room, page.epoch, m.offset, m.data) for m in messages)
    tail = "" if ref is None else f',"ref":{dump(ref)}'
    return (
        f'{{"op":"history","room":{dump(room)},"epoch":{dump(page.epoch)},'
        f'"offset":{page.offset},"messages":[{listed}]{tail}}}'
    )


def with_ref(answer: dict[str, Any], ref: object) -> dict[str, Any]:
    """Add ``ref`` to an answer when the request carried one."""
    if ref is not None:
        answer["ref"] = ref
    return answer


class LiveFraming:
    """The :class:`rue_trio.hub.RoomFraming` of the wire protocol.

    It keeps the ``ref`` of each subscription waiting for the hub's answer, keyed by
    member and room: the handler records it just before joining, the hub's task takes it
    back when it writes ``subscribed``.
    """

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], object] = {}

    def expect(self, member_id: str, room: str, ref: object) -> None:
        """Remember the ``ref`` to echo in the ``subscribed`` answer of this join."""
        if ref is not None:
            self._refs[member_id, room] = ref

    def forget(self, member_id: str, room: str) -> None:
        """Drop a ``ref`` whose join never reached the hub (cancelled, refused)."""
        self._refs.pop((member_id, room), None)

    def message(
        self, room: str, position: StreamPosition | None, type: MessageType, data: str | bytes
    ) -> Frame:
        """Wrap a publication in a ``message`` op."""
        if position is None:
            return _TEXT, message_text(room, "", 0, data)
        return _TEXT, message_text(room, position.epoch, position.offset, data)

    def joined(
        self, room: str, member_id: str, since: StreamPosition | None, page: HistoryPage
    ) -> Frame | None:
        """Write the ``subscribed`` answer, sent before the missed messages."""
        answer: dict[str, Any] = {
            "op": "subscribed",
            "room": room,
            "epoch": page.epoch,
            "offset": page.offset,
            "recovered": since is not None and page.recovered,
            "missed": len(page.messages),
        }
        return _TEXT, dump(with_ref(answer, self._refs.pop((member_id, room), None)))

    def user(self, event: UserEvent) -> Frame | None:
        """Write a ``join`` or ``leave`` notice."""
        meta: Mapping[str, Any] = event.meta
        notice = {"op": event.kind, "room": event.room, "user": event.user, "meta": dict(meta)}
        return _TEXT, dump(notice)
