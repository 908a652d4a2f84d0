"""The hub's state and membership: who is registered, in which rooms, and who hears of it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Literal

import trio
import trio.lowlevel

from rue_trio.protocol import encode_message

from ._backplane import Backplane, Envelope
from ._commands import _LOCAL, _UNSURE, _Broadcast, _Command, _Control
from ._delivery import _BROKEN, _SLOW, _SLOW_CODE, _SLOW_REASON, _Audience, _Entry, _offer
from ._directory import UserDirectory
from ._events import PresenceEvent, PresenceKind
from ._framing import Frame, RoomFraming
from ._history import HistoryPage, HistoryRule, StreamPosition, _Histories
from ._member import PLAIN, Member
from ._streams import HistoryStream
from ._users import UserEvent, _Users

logger = logging.getLogger("rue_trio.hub")


class _Membership:
    """The actor's state, and the changes of who is where: registration, rooms, presence.

    Only the actor (:class:`~rue_trio.hub._actor._Actor`) calls these methods, from its
    own task; the queries read the state they keep.
    """

    def __init__(
        self,
        *,
        policy: Literal["close", "drop"] = "close",
        inbox_size: int = 1024,
        on_presence: Callable[[PresenceEvent], None] | None = None,
        backplane: Backplane | None = None,
        remote_buffer: int = 4096,
        high_water: int = 64 * 1024,
        max_room_bytes: int = 1024,
        history: HistoryRule = None,
        framing: RoomFraming | None = None,
        on_user: Callable[[UserEvent], None] | None = None,
        history_stream: HistoryStream | None = None,
        user_directory: UserDirectory | None = None,
    ) -> None:
        if policy not in ("close", "drop"):
            raise ValueError(f"policy must be 'close' or 'drop', not {policy!r}")
        for name, value in (
            ("inbox_size", inbox_size),
            ("remote_buffer", remote_buffer),
            ("high_water", high_water),
            ("max_room_bytes", max_room_bytes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int of at least 1, not {value!r}")
        # A room name crosses the backplane with a 16-bit length (see _backplane).
        if max_room_bytes > 0xFFFF:
            raise ValueError(f"max_room_bytes must be at most 65535, not {max_room_bytes!r}")
        self._high_water = high_water
        self._max_room_bytes = max_room_bytes
        # Pacing (see _serve): a member is above high_water, and the payload bytes
        # broadcast since the actor last yielded.
        self._crowded = False
        self._unpaced = 0
        # The members owed a flush at the end of the current batch (see _serve and _offer).
        self._unflushed: list[_Entry] = []
        self._backplane = backplane
        self._remote_buffer = remote_buffer
        self._policy: Literal["close", "drop"] = policy
        self._on_presence = on_presence
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[_Command](inbox_size)
        self._everyone = _Audience()
        self._rooms: dict[str, _Audience] = {}
        self._subscribers: list[trio.MemorySendChannel[PresenceEvent]] = []
        self._started = False
        self._stopped = False
        self._broadcasts = 0
        self._deliveries = 0
        self._encodes = 0
        self._dropped = 0
        self._evicted = 0
        self._paced = 0
        self._hook_errors = 0
        self._backplane_errors = 0
        self._member_errors = 0
        self._histories = _Histories(history)
        self._stream = history_stream if history is not None else None
        self._origin = backplane.node_id if backplane is not None else uuid.uuid4().bytes
        self._directory = user_directory
        self._framing = framing
        self._on_user = on_user
        self._users = _Users()
        # Rooms whose broadcasts the actor numbers or wraps before delivering them.
        self._remembers = history is not None or framing is not None
        # User notices made during a command, delivered once it is done.
        self._notices: list[tuple[str, Frame]] = []

    def _settle(self, failed: list[tuple[str, int]]) -> None:
        evict = self._policy == "close"
        entries = self._everyone.entries
        for member_id, why in failed:
            if why == _SLOW and not evict:
                self._dropped += 1
                continue
            entry = entries[member_id]
            self._remove(entry)
            if why == _SLOW:
                self._evicted += 1
                logger.warning(
                    "member %s too slow: closed with %d",
                    member_id,
                    _SLOW_CODE,
                    extra={"conn_id": member_id},
                )
                self._close(entry.member, _SLOW_CODE, _SLOW_REASON)
            elif why == _BROKEN:
                self._member_errors += 1
                self._close(entry.member, 1011, "internal error")

    def _close(self, member: Member, code: int, reason: str) -> None:
        try:
            member.close_nowait(code, reason)
        except Exception:
            logger.exception("hub member %s failed to close", getattr(member, "id", member))

    def _tell_backplane(self, call: Callable[..., None], *args: object) -> None:
        # The backplane's synchronous calls only queue work; one that raises must not
        # stop the hub: local delivery goes on, the failure is logged and counted.
        try:
            call(*args)
        except Exception:
            self._backplane_errors += 1
            logger.exception("hub backplane call %s failed", getattr(call, "__name__", call))

    def _lookup(self, member: Member | None) -> _Entry | None:
        assert member is not None
        entry = self._everyone.entries.get(member.id)
        if entry is not None and entry.member == member:
            return entry
        return None

    def _register(self, command: _Control) -> _Entry | None:
        member = command.member
        assert member is not None
        member_id = member.id
        entry = self._everyone.entries.get(member_id)
        if entry is not None:
            if entry.member == member:
                return entry
            command.error = ValueError(f"another member is registered with id {member_id!r}")
            return None
        entry = _Entry(member, member_id)
        self._everyone.add(entry)
        self._emit(PresenceKind.REGISTER, member_id, None)
        return entry

    def _join(self, room: str | None, entry: _Entry, command: _Control) -> None:
        assert room is not None
        if room in entry.rooms:
            return
        remembers = self._remembers or command.since is not None
        if remembers and not self._catch_up(room, entry, command):
            return
        audience = self._rooms.get(room)
        if audience is None:
            audience = self._rooms[room] = _Audience()
            if self._backplane is not None:
                self._tell_backplane(self._backplane.subscribe_room, room)
            if self._stream is not None and self._histories.config(room) is not None:
                self._tell_backplane(self._stream.follow, room)
        audience.add(entry)
        entry.rooms[room] = None
        self._emit(PresenceKind.JOIN, entry.id, room)
        self._user_changed(self._users.join(room, entry.member, entry.id))
        if self._directory is not None:
            user, meta = self._users.member(room, entry.id)
            self._tell_backplane(self._directory.joined, room, entry.id, user, meta)

    def _leave(self, room: str | None, entry: _Entry) -> None:
        assert room is not None
        if room not in entry.rooms:
            return
        del entry.rooms[room]
        audience = self._rooms[room]
        audience.discard(entry)
        if not audience.entries:
            del self._rooms[room]
            if self._backplane is not None:
                self._tell_backplane(self._backplane.unsubscribe_room, room)
            if self._stream is not None and self._histories.config(room) is not None:
                self._tell_backplane(self._stream.unfollow, room)
        self._emit(PresenceKind.LEAVE, entry.id, room)
        if self._directory is not None:
            self._tell_backplane(self._directory.left, room, entry.id)
        self._user_changed(self._users.leave(room, entry.id))

    def _remove(self, entry: _Entry) -> None:
        for room in list(entry.rooms):
            self._leave(room, entry)
        self._everyone.discard(entry)
        self._emit(PresenceKind.UNREGISTER, entry.id, None)

    def _emit(self, kind: PresenceKind, member_id: str, room: str | None) -> None:
        backplane = self._backplane
        if backplane is not None:
            if kind is PresenceKind.REGISTER or kind is PresenceKind.JOIN:
                self._tell_backplane(backplane.presence_add, member_id, room)
            else:
                self._tell_backplane(backplane.presence_remove, member_id, room)
        subscribers = self._subscribers
        on_presence = self._on_presence
        if on_presence is None and not subscribers:
            return
        event = PresenceEvent(kind, member_id, room)
        if on_presence is not None:
            try:
                on_presence(event)
            except Exception:
                self._hook_errors += 1
                logger.exception("hub on_presence hook failed on %s", event)
        gone: list[trio.MemorySendChannel[PresenceEvent]] = []
        for subscriber in subscribers:
            try:
                subscriber.send_nowait(event)
            except trio.WouldBlock:
                # A reader a whole buffer behind: end its stream rather than wait for it.
                subscriber.close()
                gone.append(subscriber)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                gone.append(subscriber)
        if gone:
            self._subscribers = [s for s in subscribers if s not in gone]

    # ------------------------------------------------------------------ history, users

    def _remember(self, command: _Broadcast, room: str) -> Frame | None:
        type_ = command.type
        data = command.data
        histories = self._histories
        now = trio.current_time()
        position = command.position
        if position is not None and position is not _LOCAL:
            histories.put(room, position, type_, data, now)
        else:
            stream = self._stream
            if position is None and stream is not None and not command.remote:
                config = histories.config(room)
                if config is not None:
                    envelope = Envelope(type_, data, room, command.exclude, self._origin)
                    if stream.append(envelope, config):
                        return None
            position = histories.append(room, type_, data, now)
        framing = self._framing
        if framing is None:
            return type_, data
        return framing.message(room, position, type_, data)

    def _catch_up(self, room: str, entry: _Entry, command: _Control) -> bool:
        """Answer a join and replay what the member missed, before it hears live ones."""
        since = command.since
        now = trio.current_time()
        seed = command.seed
        if seed is _UNSURE:
            latest = self._histories.page(room, None, 0, now)
            page = HistoryPage(latest.epoch, latest.offset, (), recovered=False)
        else:
            if seed is not None:
                self._histories.merge(room, seed, now)
            page = self._histories.page(room, since, None if since else 0, now)
        command.page = page
        framing = self._framing
        frames: list[Frame] = []
        if framing is not None:
            answer = framing.joined(room, entry.id, since, page)
            if answer is not None:
                frames.append(answer)
        for message in page.messages:
            if framing is None:
                frames.append((message.type, message.data))
            else:
                position = StreamPosition(page.epoch, message.offset)
                frames.append(framing.message(room, position, message.type, message.data))
        # The same offer as a broadcast's, to a group of one: a refusal is settled the
        # same way (a member that raises is closed with 1011, the hub goes on).
        group = {entry.id: entry}
        plain = entry.key is PLAIN
        for type_, data in frames:
            failed: list[tuple[str, int]] = []
            frame = encode_message(type_, data) if plain else None
            _offer(
                group, frame, True, type_, data, None, self._high_water, failed, self._unflushed
            )
            if failed:
                self._settle(failed)
                if failed[0][1] != _SLOW or self._policy == "close":
                    return False
        return True

    def _user_changed(self, event: UserEvent | None) -> None:
        if event is None:
            return
        if self._on_user is not None:
            try:
                self._on_user(event)
            except Exception:
                self._hook_errors += 1
                logger.exception("hub on_user hook failed on %s", event)
        # With a directory the notices come from it: who arrives is a cluster question.
        if self._framing is not None and self._directory is None:
            notice = self._framing.user(event)
            if notice is not None:
                self._notices.append((event.room, notice))
