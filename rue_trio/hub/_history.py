"""Room history: the last messages of a room, numbered, so a member can catch up.

Theory of operation
===================

A room with history keeps its last messages in a :class:`_RoomLog`, owned by the hub's
actor like the rest of the hub's state. Every broadcast to such a room gets the next
``offset`` (1, 2, 3, ...) within the room's ``epoch``, a random string made when the log
is made. The log is bounded three ways (:class:`HistoryConfig`): by count, by bytes of
payload, and by age. Trimming the oldest messages keeps the offsets going; only a new log
(a new hub, or a room whose log the hub dropped to stay within ``max_rooms``) starts a new
epoch, because only then could offsets repeat with other messages behind them.

A position ``(epoch, offset)`` says "I have seen everything up to ``offset``". Catching up
from it (:meth:`_RoomLog.after`) gives exactly the later messages, or says it cannot: the
epoch differs (the log that numbered the position is gone) or the message after the
position was trimmed away (a gap would follow). The actor replays the answer to a joining
member and adds it to the room in the same step, so no live message falls between the two
and none comes twice.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from rue_trio.protocol import MessageType

__all__ = [
    "HistoryConfig",
    "HistoryMessage",
    "HistoryPage",
    "HistoryRule",
    "StreamPosition",
]


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """How much of a room's past the hub keeps.

    Attributes:
        size: the most messages kept per room.
        max_bytes: the most payload bytes kept per room (UTF-8 for text); the oldest
            messages go first. A single message larger than this is numbered and
            delivered but not kept.
        ttl: seconds a message is kept, or ``None`` to keep it until pushed out by
            ``size`` or ``max_bytes``.
        max_rooms: how many rooms' logs one hub keeps; past that, the log of the room
            that was published to least recently is dropped (its next message starts a
            new epoch).

    Raises:
        ValueError: a bound is below 1, or ``ttl`` is not positive.
    """

    size: int = 100
    max_bytes: int = 1 << 20
    ttl: float | None = None
    max_rooms: int = 10_000

    def __post_init__(self) -> None:
        if min(self.size, self.max_bytes, self.max_rooms) < 1:
            raise ValueError("size, max_bytes and max_rooms of a history must be at least 1")
        if self.ttl is not None and not self.ttl > 0:
            raise ValueError(f"a history's ttl must be positive, not {self.ttl!r}")


HistoryRule: TypeAlias = HistoryConfig | Callable[[str], HistoryConfig | None] | None
"""Which rooms keep history: one config for every room, a function of the room name
(``None`` for a room without history), or ``None`` for no history at all."""


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A place in a room's stream: everything up to ``offset`` in ``epoch`` was seen.

    Attributes:
        epoch: the room log's epoch; it changes whenever history could have been lost.
        offset: the offset of the last message seen; 0 before the first.
    """

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One message of a room's history.

    Attributes:
        offset: its number in the room's epoch (1, 2, 3, ...).
        type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
        data: the payload, as broadcast.
        time: when the hub numbered it (:func:`trio.current_time`).
    """

    offset: int
    type: MessageType
    data: str | bytes
    time: float


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What :meth:`Hub.history` and a join from a position answer.

    Attributes:
        epoch: the room's epoch (``""`` for a room without history).
        offset: the room's latest offset (0 before the first message).
        messages: the messages, oldest first.
        recovered: for a request with ``since``: whether ``messages`` are exactly the
            messages after that position (``False``: the epoch changed, or the position
            fell out of the history, and ``messages`` is empty). ``True`` without
            ``since``.
    """

    epoch: str
    offset: int
    messages: tuple[HistoryMessage, ...] = ()
    recovered: bool = True

    @property
    def position(self) -> StreamPosition:
        """The room's latest position: where a member that saw everything stands."""
        return StreamPosition(self.epoch, self.offset)


def _size(data: str | bytes) -> int:
    return len(data.encode()) if isinstance(data, str) else len(data)


class _RoomLog:
    """One room's numbered messages, bounded by count, bytes and age."""

    __slots__ = ("bytes", "config", "epoch", "external", "messages", "offset")

    def __init__(self, config: HistoryConfig) -> None:
        self.config = config
        self.epoch = secrets.token_hex(6)
        self.offset = 0
        self.messages: deque[tuple[HistoryMessage, int]] = deque()
        self.bytes = 0
        # Numbered by a shared stream (the broker's epoch), not by this hub.
        self.external = False

    def restart(self, epoch: str, offset: int, external: bool) -> None:
        """Forget the messages: numbering goes on from ``offset`` in ``epoch``."""
        self.epoch = epoch
        self.offset = offset
        self.messages.clear()
        self.bytes = 0
        self.external = external

    def append(self, type: MessageType, data: str | bytes, now: float) -> int:
        if self.external:
            # Numbering here what the shared stream could not: a local epoch, so that no
            # position from it is ever mistaken for one of the stream's.
            self.restart(secrets.token_hex(6), 0, external=False)
        self.offset += 1
        self._keep(HistoryMessage(self.offset, type, data, now), now)
        return self.offset

    def put(
        self, position: StreamPosition, type: MessageType, data: str | bytes, now: float
    ) -> None:
        """Keep a message the shared stream numbered, restarting at any discontinuity."""
        if position.epoch != self.epoch or position.offset != self.offset + 1 or not self.external:
            self.restart(position.epoch, position.offset - 1, external=True)
        self.offset = position.offset
        self._keep(HistoryMessage(position.offset, type, data, now), now)

    def merge(self, page: HistoryPage, now: float) -> None:
        """Add what the stream's ``page`` holds to this log, if the union has no gap."""
        if not page.recovered or not page.messages:
            return
        if page.epoch != self.epoch or not self.external:
            self.restart(page.epoch, page.messages[0].offset - 1, external=True)
        known = {message.offset: message for message, _ in self.messages}
        for message in page.messages:
            known.setdefault(
                message.offset, HistoryMessage(message.offset, message.type, message.data, now)
            )
        offsets = sorted(known)
        if offsets[-1] - offsets[0] + 1 != len(offsets):
            return  # a hole between the two: keep what we had
        self.messages.clear()
        self.bytes = 0
        for offset in offsets:
            self._keep(known[offset], now)
        self.offset = max(self.offset, offsets[-1], page.offset)

    def _keep(self, message: HistoryMessage, now: float) -> None:
        size = _size(message.data)
        config = self.config
        messages = self.messages
        if size <= config.max_bytes:
            messages.append((message, size))
            self.bytes += size
        while len(messages) > config.size or self.bytes > config.max_bytes:
            self.bytes -= messages.popleft()[1]
        self.expire(now)

    def expire(self, now: float) -> None:
        ttl = self.config.ttl
        if ttl is None:
            return
        messages = self.messages
        limit = now - ttl
        while messages and messages[0][0].time <= limit:
            self.bytes -= messages.popleft()[1]

    def page(self, since: StreamPosition | None, limit: int | None, now: float) -> HistoryPage:
        self.expire(now)
        if since is None:
            kept = [message for message, _ in self.messages]
            if limit is not None:
                kept = kept[-limit:] if limit else []
            return HistoryPage(self.epoch, self.offset, tuple(kept))
        missed = self.after(since, now)
        if missed is None:
            return HistoryPage(self.epoch, self.offset, (), recovered=False)
        if limit is not None:
            missed = missed[:limit]
        return HistoryPage(self.epoch, self.offset, tuple(missed))

    def after(self, since: StreamPosition, now: float) -> list[HistoryMessage] | None:
        """The messages after ``since``, or ``None`` if they are not all here."""
        self.expire(now)
        if since.epoch != self.epoch or not 0 <= since.offset <= self.offset:
            return None
        if since.offset == self.offset:
            return []
        messages = self.messages
        if not messages or messages[0][0].offset > since.offset + 1:
            return None
        skip = since.offset + 1 - messages[0][0].offset
        return [message for index, (message, _) in enumerate(messages) if index >= skip]


class _Histories:
    """Every room log of one hub, with the rule that says which rooms have one."""

    __slots__ = ("_logs", "_rule")

    def __init__(self, rule: HistoryRule) -> None:
        self._rule = rule
        # Least recently published first: the log dropped when there are too many.
        self._logs: OrderedDict[str, _RoomLog] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rule is not None

    def config(self, room: str) -> HistoryConfig | None:
        rule = self._rule
        if rule is None or isinstance(rule, HistoryConfig):
            return rule
        return rule(room)

    def log(self, room: str, *, create: bool) -> _RoomLog | None:
        logs = self._logs
        log = logs.get(room)
        if log is not None or not create:
            return log
        config = self.config(room)
        if config is None:
            return None
        log = logs[room] = _RoomLog(config)
        while len(logs) > config.max_rooms:
            logs.popitem(last=False)
        return log

    def append(
        self, room: str, type: MessageType, data: str | bytes, now: float
    ) -> StreamPosition | None:
        log = self.log(room, create=True)
        if log is None:
            return None
        self._logs.move_to_end(room)
        return StreamPosition(log.epoch, log.append(type, data, now))

    def put(
        self, room: str, position: StreamPosition, type: MessageType, data: str | bytes, now: float
    ) -> None:
        log = self.log(room, create=True)
        if log is not None:
            self._logs.move_to_end(room)
            log.put(position, type, data, now)

    def merge(self, room: str, page: HistoryPage, now: float) -> None:
        log = self.log(room, create=True)
        if log is not None:
            log.merge(page, now)

    def page(
        self, room: str, since: StreamPosition | None, limit: int | None, now: float
    ) -> HistoryPage:
        # A room with history but no message yet still has an epoch: make its log now,
        # so that a position taken from this answer stays valid for the first message.
        log = self.log(room, create=True)
        if log is None:
            return HistoryPage("", 0, (), recovered=since is None)
        return log.page(since, limit, now)
