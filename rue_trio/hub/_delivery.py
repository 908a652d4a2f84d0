"""Delivery: members grouped by encode key, the offer loops, and what a refusal means."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Final

import trio
import trio.lowlevel

from rue_trio.exceptions import ConnectionClosed
from rue_trio.protocol import MessageType

from ._member import PLAIN, Member

logger = logging.getLogger("rue_trio.hub")

_SendNowait = Callable[[bytes], int]

_SLOW_CODE: Final = 1008
_SLOW_REASON: Final = "slow consumer: outbound queue full"

# Why a member failed an offer, as collected by the delivery loop and settled after it.
_GONE: Final = 0  # closed: forgotten
_SLOW: Final = 1  # queue full: the slow-consumer policy
_BROKEN: Final = 2  # its port raised something else: logged, removed, closed with 1011


class _Entry:
    """A registered member and what the delivery loop needs of it, looked up once."""

    __slots__ = ("encode", "flush", "id", "key", "member", "rooms", "send")

    def __init__(self, member: Member, member_id: str) -> None:
        self.member = member
        self.id = member_id
        self.key = member._hub_encode_key
        self.send: _SendNowait = member._hub_offer
        self.encode = member._hub_encode
        self.flush: Callable[[], None] = member._hub_flush
        # A dict rather than a set: leave events come out in the order of the joins.
        self.rooms: dict[str, None] = {}


class _Audience:
    """Everyone, or one room: its members, grouped by encode key for the broadcast loop."""

    __slots__ = ("entries", "keyed", "plain", "solo")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.plain: dict[str, _Entry] = {}
        self.keyed: dict[Hashable, dict[str, _Entry]] = {}
        self.solo: dict[str, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        member_id = entry.id
        self.entries[member_id] = entry
        key = entry.key
        if key is PLAIN:
            self.plain[member_id] = entry
        elif key is None:
            self.solo[member_id] = entry
        else:
            group = self.keyed.get(key)
            if group is None:
                group = self.keyed[key] = {}
            group[member_id] = entry

    def discard(self, entry: _Entry) -> None:
        member_id = entry.id
        del self.entries[member_id]
        key = entry.key
        if key is PLAIN:
            del self.plain[member_id]
        elif key is None:
            del self.solo[member_id]
        else:
            group = self.keyed[key]
            del group[member_id]
            if not group:
                del self.keyed[key]


def _offer(
    group: dict[str, _Entry],
    frame: bytes | None,
    share: bool,
    type_: MessageType,
    data: str | bytes,
    skip: str | None,
    high_water: int,
    failed: list[tuple[str, int]],
    unflushed: list[_Entry],
) -> tuple[int, int, int]:
    """Offer one message to a group of members, never waiting for any of them.

    ``frame`` is the group's frame when the hub made it (:data:`PLAIN` members);
    otherwise, with ``share``, the first member able to encode makes the frame of the
    whole group (equal keys), and without, each member encodes its own. A member's
    refusal is appended to ``failed`` with its :func:`_failure` code, for the caller to
    settle after the loop. A member whose queue this offer made non-empty is appended
    to ``unflushed``: offers do not wake the member's writer, and the actor flushes each
    such member once, when its batch of commands is done. A
    queue that was not empty needs no flush of ours: its writer was woken already, or the
    earlier offer of this batch that queued its frames flushes them.

    Returns:
        The members offered to, the frames encoded, and the most bytes a member had
        queued above ``high_water`` (0 if none did).
    """
    # The hot loop: per member one comparison, one call and one more comparison, no
    # allocation unless a member refuses. Written once for every group: a copy of it for
    # PLAIN members only, with the frame fixed and no encode test, measured the same
    # (bench/hub_bench.py, 10,000 members, 200 broadcasts of 128 bytes: 0.140 us per
    # delivery with the copy, 0.142 without), so there is no copy.
    offered = encodes = crowded = 0
    for member_id, entry in group.items():
        if member_id == skip:
            continue
        offered += 1
        try:
            if frame is None or not share:
                frame = entry.encode(type_, data)
                encodes += 1
            queued = entry.send(frame)
        except Exception as exc:
            failed.append((member_id, _failure(member_id, exc)))
        else:
            if queued == len(frame):
                unflushed.append(entry)
            if queued > high_water:
                crowded = queued
    return offered, encodes, crowded


def _failure(member_id: str, exc: Exception) -> int:
    # What a member's refusal means: a full queue, a closed connection, or a bug.
    if isinstance(exc, trio.WouldBlock):
        return _SLOW
    if isinstance(exc, ConnectionClosed | trio.ClosedResourceError | trio.BrokenResourceError):
        return _GONE
    logger.error(
        "hub member %s failed; it is removed and closed with 1011", member_id, exc_info=exc
    )
    return _BROKEN
