"""The Hub: one task that owns its members' outbound queues and a room table.

Theory of operation
===================

The hub is an actor. :meth:`Hub.run` is its only task (Rue's ``go hub.Run()``); it owns
every piece of hub state: the registered members, the room table, the presence
subscriptions and the counters. Everything else talks to it by message, through one
bounded inbox (a Trio memory channel of ``inbox_size`` commands), and nothing is ever
locked: the state is only written by the actor, between two of its checkpoints.

Commands. ``register``, ``unregister``, ``join``, ``leave`` and ``flush`` put a command in
the inbox and then wait until the actor has processed it, so that when they return the
change is visible to every query (:meth:`Hub.count`, :meth:`Hub.members`, ...) and its
presence events have been emitted: a handler can register and then read the count that
includes itself, as Rue's ``hub.Count()`` does. ``broadcast`` returns as soon as its
command is queued: a publisher waits for room in the inbox (backpressure on publishers),
never for delivery. Each command has a ``_nowait`` twin that raises
:class:`trio.WouldBlock` when the inbox is full and does not wait for the actor, for use
from synchronous callbacks. The inbox is one FIFO, so every member sees the messages of
one publisher in the order they were published, and sees membership changes and messages
in the order they were issued.

Broadcast. The actor keeps one "audience" for everyone and one per room, each grouping
its members by :attr:`Member._hub_encode_key`; a member is placed in its groups once, when it
registers or joins, together with its bound ``_hub_offer`` method, so the delivery loop
does no attribute lookups and no allocation per member. Members with the :data:`PLAIN`
key get one frame made by :func:`rue_trio.protocol.encode_message`; each other shared key
gets one frame made by its first member's :meth:`Member._hub_encode`; members with key
``None`` get a frame each (docs/topics/design.md, "Encode once": every member of a
group receives the very same ``bytes`` object).

Slow consumers. The actor offers each frame with ``_hub_offer`` and never waits for a
member (docs/topics/design.md, "The hub never waits on one client").
:class:`trio.WouldBlock` means the member's bounded outbound queue is full: under the
``"close"`` policy the member is removed from the hub and all its rooms at once and
asked to close with 1008 (RFC 6455 section 7.4.1, policy violation); under ``"drop"``
that one frame is dropped for that member and counted. A member that is closing
(``ClosedResourceError``, ``BrokenResourceError``, or
:class:`~rue_trio.exceptions.ConnectionClosed` from ``encode``) is forgotten. Failures
are collected during the loop and settled after it, so the others get the frame first.

Presence. Every registration, unregistration, join and leave produces a
:class:`PresenceEvent`, handed to the optional ``on_presence`` callback (synchronous,
called by the actor right after the change) and to every stream opened with
:meth:`Hub.open_presence` (a bounded memory channel; a reader that falls a whole buffer
behind has its stream ended, since the hub waits for no one).

Backplane. Given a :class:`~rue_trio.hub.Backplane`, the actor publishes each local
broadcast once (non-blocking, in inbox order, so one sender's messages keep their order
on every node) after handing it to its own members, tells the backplane when a room gets
its first local member or loses its last (so the node follows only the rooms it needs)
and mirrors every presence change to it. Broadcasts from other nodes arrive through a
bounded buffer and a forwarding task that puts them in the same inbox, marked remote so
they are never published again. Without a backplane none of this runs.

Shutdown. When :meth:`Hub.run` is cancelled the hub closes what it owns: every member
(and every member still waiting in the inbox to register or join) is evicted with 1001
(going away; 1011 if the hub itself failed), presence streams end, pending commands are
discarded, and later commands raise :class:`trio.BrokenResourceError` (``unregister`` and
``leave`` then do nothing: a stopped hub holds no one). A hub runs once.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import trio
import trio.lowlevel

from rue_trio._groups import single_failure
from rue_trio.exceptions import BackplaneError, ConnectionClosed
from rue_trio.protocol import MessageType, encode_message

from ._backplane import Backplane, Envelope
from ._directory import UserDirectory
from ._events import HubStatistics, PresenceEvent, PresenceKind
from ._framing import Frame, RoomFraming
from ._history import HistoryPage, HistoryRule, StreamPosition, _Histories
from ._member import PLAIN, Member
from ._streams import HistoryStream, Sequenced
from ._users import UserEvent, _Users

__all__ = ["Hub"]

_SendNowait = Callable[[bytes], int]

logger = logging.getLogger("rue_trio.hub")


_SLOW_CODE: Final = 1008
_SLOW_REASON: Final = "slow consumer: outbound queue full"

# Why a member failed an offer, as collected by the delivery loop and settled after it.
_GONE: Final = 0  # closed: forgotten
_SLOW: Final = 1  # queue full: the slow-consumer policy
_BROKEN: Final = 2  # its port raised something else: logged, removed, closed with 1011

# How many queued commands the actor applies between two checkpoints: enough to avoid a
# trip through the scheduler per message under load, few enough to stay fair to others.
_BATCH: Final = range(64)


class _Entry:
    """A registered member and what the delivery loop needs of it, looked up once."""

    __slots__ = ("encode", "id", "key", "member", "rooms", "send")

    def __init__(self, member: Member, member_id: str) -> None:
        self.member = member
        self.id = member_id
        self.key = member._hub_encode_key
        self.send: _SendNowait = member._hub_offer
        self.encode = member._hub_encode
        # A dict rather than a set: leave events come out in the order of the joins.
        self.rooms: dict[str, None] = {}


class _Audience:
    """Everyone, or one room: its members, grouped by encode key for the broadcast loop."""

    __slots__ = ("entries", "keyed", "plain", "solo")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.plain: dict[str, _SendNowait] = {}
        self.keyed: dict[Hashable, dict[str, _Entry]] = {}
        self.solo: dict[str, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        member_id = entry.id
        self.entries[member_id] = entry
        key = entry.key
        if key is PLAIN:
            self.plain[member_id] = entry.send
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


def _offer(
    sends: dict[str, _SendNowait],
    frame: bytes,
    skip: str | None,
    high_water: int,
    failed: list[tuple[str, int]],
) -> int:
    # The hot loop: one call and one comparison per member, no allocation unless a
    # member refuses. Returns the most bytes a member had queued above high_water (0 if
    # none did).
    crowded = 0
    for member_id, send in sends.items():
        if member_id == skip:
            continue
        try:
            queued = send(frame)
        except Exception as exc:
            failed.append((member_id, _failure(member_id, exc)))
        else:
            if queued > high_water:
                crowded = queued
    return crowded


def _encode_and_offer(
    group: dict[str, _Entry],
    share: bool,
    type_: MessageType,
    data: str | bytes,
    skip: str | None,
    high_water: int,
    failed: list[tuple[str, int]],
) -> tuple[int, int, int]:
    # Members that encode for themselves. With ``share`` the first one able to encode
    # makes the frame of the whole group (equal keys); without, each encodes its own.
    # Returns the members offered to, the frames encoded, and what _offer returns.
    offered = encodes = crowded = 0
    frame: bytes | None = None
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


def _stopped_error() -> trio.BrokenResourceError:
    return trio.BrokenResourceError("the hub has stopped")


class Hub:
    """A broadcasting hub with rooms: Rue's ``rue.NewWebSocketHub()``.

    Start it in a nursery, then register members (connections adapted to
    :class:`Member`) and broadcast to all of them or to a room::

        hub = Hub()
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            await hub.register(member)
            await hub.join("lobby", member)
            await hub.broadcast(MessageType.TEXT, "hello", room="lobby")

    Queries (:meth:`count`, :meth:`rooms`, :meth:`members`, :meth:`statistics`) are
    synchronous and read the actor's state directly (one thread, no locks needed): they
    reflect the commands processed so far, which include every awaited ``register``,
    ``unregister``, ``join`` and ``leave`` and everything before an awaited
    :meth:`flush`.

    Args:
        policy: what to do with a member whose outbound queue is full: ``"close"``
            evicts it with close code 1008; ``"drop"`` drops that frame for it.
        inbox_size: how many commands may wait for the actor before publishers wait.
        backplane: joins this hub to the hubs of other processes (a
            :class:`~rue_trio.hub.Backplane`, such as
            :class:`~rue_trio.backplane.redis.RedisBackplane`); ``None`` (the default)
            keeps it to this process.
        remote_buffer: how many broadcasts from other nodes may wait for the actor;
            past that the backplane drops them and counts them.
        on_presence: called by the hub's task with each :class:`PresenceEvent`, right
            after the change. It must not block; an exception it raises is logged and
            counted (``hook_errors``) and the hub goes on. It may call the ``_nowait``
            commands and the queries.
        history: which rooms keep their last messages, numbered, so that members can
            catch up (:meth:`join` with ``since``, :meth:`history`): a
            :class:`HistoryConfig` for every room, a function from the room name to a
            config or ``None``, or ``None`` (the default) for no history.
        framing: how room broadcasts, join answers and user notices are wrapped for a
            wire protocol (:class:`RoomFraming`); ``None`` delivers payloads as they are
            and sends no notices.
        on_user: called by the hub's task with each :class:`UserEvent` (a user's first
            member joined a room, or their last left it); as ``on_presence``.
        history_stream: shares room history with the hubs of other processes (see
            :class:`HistoryStream`, e.g. ``RedisStreams``): offsets then come from
            the broker, the same on every node. Rooms without history are unaffected.
        user_directory: shares who is in which room with the hubs of other processes
            (see :class:`UserDirectory`, e.g. ``RedisUsers``), so that
            :meth:`presence` answers for the whole cluster and the framing's user
            notices say when a user arrives in or leaves the cluster's room (the
            ``on_user`` callback still hears this hub's own members).
        high_water: bytes queued for one member above which the hub lets the members'
            writers run before its next command (after at most a quarter of this much
            more payload), so a burst is paced by the sockets and members that read
            promptly are never evicted because their writer had not been scheduled.
            Below it the hub applies up to 65 commands between two schedule points.
        max_room_bytes: the longest room name accepted, in UTF-8 bytes (at most
            65,535, what crosses a backplane); longer names raise ``ValueError`` in
            the caller's task.

    Raises:
        ValueError: for an unknown policy, an inbox size, remote buffer, high water
            mark or room name bound below 1, or a room name bound above 65,535.
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

    @property
    def running(self) -> bool:
        """Whether :meth:`run` has started and not yet ended.

        Commands issued while it is ``False`` either wait for the hub to start (never
        started yet) or raise :class:`trio.BrokenResourceError` (stopped); a
        :class:`~rue_trio.handlers.WebSocketHandler` refuses to wait and closes the
        connection with 1011 instead.
        """
        return self._started and not self._stopped

    @property
    def policy(self) -> Literal["close", "drop"]:
        """The slow-consumer policy: ``"close"`` or ``"drop"``."""
        return self._policy

    # ------------------------------------------------------------------ the actor

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub until cancelled: Rue's ``go hub.Run()``.

        Use ``await nursery.start(hub.run)``: it returns once the hub processes commands.
        Commands issued before the hub starts wait in the inbox.

        When cancelled, the hub evicts every member it holds with close code 1001 (1011
        if the hub itself failed), ends the presence streams and stops; it cannot be
        started again. Nothing a member, a client, ``on_presence`` or the backplane's
        synchronous calls do stops it: their exceptions are caught, logged on the
        ``rue_trio.hub`` logger and counted in :meth:`statistics`.

        Args:
            task_status: for :meth:`trio.Nursery.start`.

        With a backplane, the backplane runs in a nursery of this task, and ``started()``
        comes once it is connected. A backplane that fails later is logged and counted
        (``backplane_errors``); the hub goes on serving its own members.

        Raises:
            RuntimeError: if this hub has already been started.
            rue_trio.exceptions.BackplaneError: the backplane cannot connect at start.
        """
        if self._started:
            raise RuntimeError("this hub has already been started: a Hub runs once")
        self._started = True
        backplane = self._backplane
        try:
            if backplane is None and self._stream is None and self._directory is None:
                task_status.started()
                await self._serve()
            else:
                await self._run_joined(backplane, task_status)
        except BaseException as exc:
            self._shutdown(exc)
            raise
        finally:
            self._stopped = True

    async def _serve(self) -> None:
        receive = self._inbox_receive.receive
        receive_nowait = self._inbox_receive.receive_nowait
        apply = self._apply
        quantum = self._high_water // 4
        while True:
            # receive() is a schedule point even when a command is waiting.
            command = await receive()
            self._crowded = False
            self._unpaced = 0
            apply(command)
            for _ in _BATCH:
                if self._crowded and self._unpaced >= quantum:
                    # A member has more than high_water bytes queued and the hub has
                    # broadcast a quarter of that since it last yielded: let the writers
                    # (and the peers reading them) run before the next command. A burst
                    # is then paced by the sockets, instead of filling queues until
                    # members that read promptly are evicted only because their writer
                    # was not scheduled yet. Not after every broadcast: below the mark
                    # the batch goes on and each writer sends many frames with one
                    # system call. Over 127.0.0.1, 200 members, 1,000 broadcasts of 1 KB
                    # (tests/hostile/test_hub_burst.py) took 1.1 s of CPU paced this
                    # way and 5.9 s when the hub yielded after every broadcast.
                    self._paced += 1
                    break
                try:
                    command = receive_nowait()
                except trio.WouldBlock:
                    break
                apply(command)

    async def _run_joined(
        self, backplane: Backplane | None, task_status: trio.TaskStatus[None]
    ) -> None:
        remote_send, remote_receive = trio.open_memory_channel[Envelope](self._remote_buffer)
        try:
            async with trio.open_nursery() as nursery:
                if backplane is not None:
                    await nursery.start(self._run_backplane, backplane.run, remote_send)
                    nursery.start_soon(self._forward, remote_receive)
                if self._stream is not None:
                    numbered_send, numbered = trio.open_memory_channel[Sequenced](
                        self._remote_buffer
                    )
                    await nursery.start(self._run_backplane, self._stream.run, numbered_send)
                    nursery.start_soon(self._forward_numbered, numbered)
                if self._directory is not None:
                    users_send, users = trio.open_memory_channel[UserEvent](self._remote_buffer)
                    await nursery.start(self._run_backplane, self._directory.run, users_send)
                    nursery.start_soon(self._forward_users, users)
                task_status.started()
                await self._serve()
        except BaseExceptionGroup as group:
            # One failure (the backplane cannot connect) comes out as itself, cause kept.
            failure = single_failure(group)
            if failure is None:
                raise
            raise failure from failure.__cause__

    async def _run_backplane(
        self,
        run: Callable[..., Awaitable[None]],
        sink: object,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # A backplane (or history stream, or user directory) that cannot start fails
        # run() (the caller must know); one that fails later leaves this hub serving its
        # own members, logged and counted.
        running = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run, sink)
                running = True
                task_status.started()
        except Exception as exc:
            if not running:
                raise
            self._backplane_errors += 1
            logger.error(
                "the hub's backplane failed; this hub goes on without other nodes",
                exc_info=exc,
            )
            await trio.lowlevel.checkpoint()

    async def _forward(self, remote: trio.MemoryReceiveChannel[Envelope]) -> None:
        # Other nodes' broadcasts join the local commands in the one FIFO inbox: waiting
        # for room here pushes back into the bounded remote buffer, where the backplane
        # drops (and counts) rather than let a flood grow memory.
        # Like broadcast(), it yields only when the inbox is full: a burst read from Redis
        # moves into the inbox at the reader's pace instead of one message per schedule.
        send = self._inbox_send.send
        send_nowait = self._inbox_send.send_nowait
        try:
            async for envelope in remote:
                command = _Broadcast(
                    envelope.type, envelope.data, envelope.room, envelope.exclude, True
                )
                try:
                    send_nowait(command)
                except trio.WouldBlock:
                    await send(command)
        except trio.BrokenResourceError:
            await trio.lowlevel.checkpoint()

    async def _forward_numbered(self, numbered: trio.MemoryReceiveChannel[Sequenced]) -> None:
        # As _forward, for the room broadcasts the history stream numbered (ours too).
        send = self._inbox_send.send
        try:
            async for item in numbered:
                envelope = item.envelope
                position = _LOCAL if item.position is None else item.position
                await send(
                    _Broadcast(
                        envelope.type,
                        envelope.data,
                        envelope.room,
                        envelope.exclude,
                        remote=True,
                        position=position,
                    )
                )
        except trio.BrokenResourceError:
            await trio.lowlevel.checkpoint()

    async def _forward_users(self, users: trio.MemoryReceiveChannel[UserEvent]) -> None:
        # The directory's cluster-wide user events become notices to this node's members.
        send = self._inbox_send.send
        framing = self._framing
        try:
            async for event in users:
                notice = None if framing is None else framing.user(event)
                if notice is None:
                    await trio.lowlevel.checkpoint()
                    continue
                type_, data = notice
                await send(_Broadcast(type_, data, event.room, None, remote=True, framed=True))
        except trio.BrokenResourceError:
            await trio.lowlevel.checkpoint()

    def _apply(self, command: _Command) -> None:
        if isinstance(command, _Broadcast):
            self._broadcast(command)
            return
        op = command.op
        try:
            if op is _Op.REGISTER:
                self._register(command)
            elif op is _Op.JOIN:
                entry = self._register(command)
                if entry is not None:
                    self._join(command.room, entry, command)
            elif op is _Op.UNREGISTER:
                entry = self._lookup(command.member)
                if entry is not None:
                    self._remove(entry)
            elif op is _Op.LEAVE:
                entry = self._lookup(command.member)
                if entry is not None:
                    self._leave(command.room, entry)
            elif op is _Op.SUBSCRIBE:
                assert command.subscriber is not None
                self._subscribers.append(command.subscriber)
            if self._notices:
                self._announce()
        except BaseException:
            # The hub is failing (a bug, or cancellation): the caller must not wait on.
            if op not in _HARMLESS_WHEN_STOPPED:
                command.error = _stopped_error()
            raise
        finally:
            if command.done is not None:
                command.done.set()

    def _broadcast(self, command: _Broadcast) -> None:
        self._broadcasts += 1
        room = command.room
        type_ = command.type
        data = command.data
        if room is not None and self._remembers and not command.framed:
            framed = self._remember(command, room)
            if framed is None:
                return  # the history stream numbers it; delivered when it comes back
            type_, data = framed
        backplane = self._backplane
        if backplane is not None and not command.remote:
            self._tell_backplane(
                backplane.publish,
                Envelope(command.type, command.data, room, command.exclude, backplane.node_id),
            )
        audience = self._everyone if room is None else self._rooms.get(room)
        if audience is None:
            return
        skip = command.exclude
        failed: list[tuple[str, int]] = []
        offered = 0
        encodes = 0
        high_water = self._high_water
        crowded = 0
        plain = audience.plain
        if plain:
            frame = encode_message(type_, data)
            encodes = 1
            crowded = _offer(plain, frame, skip, high_water, failed)
            offered = len(plain) - (skip is not None and skip in plain)
        # Shared non-plain keys: the first member able to encode makes the group's frame;
        # members that keep a compression context (or mask) get one frame each.
        groups = [(group, True) for group in audience.keyed.values()]
        if audience.solo:
            groups.append((audience.solo, False))
        for group, share in groups:
            counts = _encode_and_offer(group, share, type_, data, skip, high_water, failed)
            offered += counts[0]
            encodes += counts[1]
            crowded = max(crowded, counts[2])
        if crowded:
            self._crowded = True
        self._unpaced += len(data)
        self._encodes += encodes
        self._deliveries += offered - len(failed)
        if failed:
            self._settle(failed)
            if self._notices and not command.framed:
                self._announce()

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
        for type_, data in frames:
            try:
                frame = (
                    encode_message(type_, data)
                    if entry.key is PLAIN
                    else entry.encode(type_, data)
                )
                entry.send(frame)
            except trio.WouldBlock:
                self._settle([(entry.id, True)])
                if self._policy == "close":
                    return False
            except (ConnectionClosed, trio.ClosedResourceError, trio.BrokenResourceError):
                self._settle([(entry.id, False)])
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

    def _announce(self) -> None:
        # Delivering a notice may evict slow members, whose leaving makes more notices.
        notices = self._notices
        while notices:
            room, (type_, data) = notices.pop(0)
            self._broadcast(_Broadcast(type_, data, room, None, True, True))

    def _shutdown(self, exc: BaseException) -> None:
        # Cancellation (or KeyboardInterrupt) is the normal way to stop: 1001, going
        # away; an exception means the hub failed: 1011 (RFC 6455 section 7.4.1).
        failed = isinstance(exc, Exception)
        code, reason = (1011, "hub failed") if failed else (1001, "going away")
        stranded: list[Member] = []
        while True:
            try:
                command = self._inbox_receive.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(command, _Broadcast):
                continue
            if command.op is _Op.REGISTER or command.op is _Op.JOIN:
                assert command.member is not None
                stranded.append(command.member)
            elif command.op is _Op.SUBSCRIBE:
                assert command.subscriber is not None
                command.subscriber.close()
            if command.op not in _HARMLESS_WHEN_STOPPED:
                command.error = _stopped_error()
            if command.done is not None:
                command.done.set()
        # From now on the inbox refuses commands: senders get BrokenResourceError.
        self._inbox_receive.close()
        members = [entry.member for entry in self._everyone.entries.values()]
        self._everyone = _Audience()
        self._rooms = {}
        self._users = _Users()
        self._notices = []
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber.close()
        for member in members + stranded:
            self._close(member, code, reason)

    # ------------------------------------------------------------------ commands

    def _check_room(self, room: str) -> str:
        # In the caller's task: a client's room name must never reach (and stop) the
        # actor, nor the backplane's 16-bit length field.
        if not isinstance(room, str):
            raise TypeError(f"a room name must be a str, not {type(room).__name__}")
        limit = self._max_room_bytes
        if len(room) * 4 > limit:
            try:
                size = len(room.encode())
            except UnicodeEncodeError:
                raise ValueError("a room name must be valid Unicode text") from None
            if size > limit:
                raise ValueError(
                    f"a room name is at most {limit} bytes in UTF-8 (Hub max_room_bytes), "
                    f"not {size}"
                )
        return room

    async def _call(self, command: _Control) -> None:
        done = command.done = trio.Event()
        try:
            await self._inbox_send.send(command)
        except trio.BrokenResourceError:
            if command.op in _HARMLESS_WHEN_STOPPED:
                # A failed send() has not yielded to the scheduler yet (trio's colour rule).
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            raise _stopped_error() from None
        await done.wait()
        if command.error is not None:
            raise command.error

    def _post(self, command: _Command) -> None:
        try:
            self._inbox_send.send_nowait(command)
        except trio.BrokenResourceError:
            if isinstance(command, _Control) and command.op in _HARMLESS_WHEN_STOPPED:
                return
            raise _stopped_error() from None

    async def register(self, member: Member) -> None:
        """Register a member: broadcasts to everyone reach it from now on.

        Returns once the hub has processed it (so :meth:`count` includes it). Registering
        a member that is already registered does nothing.

        Cancellation: if cancelled while waiting for room in the inbox, nothing
        happened; if cancelled while waiting for the hub, the member still gets
        registered.

        Args:
            member: the member; its ``id`` must be unique in this hub.

        Raises:
            ValueError: if another member is registered with the same id.
            trio.BrokenResourceError: if the hub has stopped.
        """
        await self._call(_Control(_Op.REGISTER, _check_member(member, "register")))

    def register_nowait(self, member: Member) -> None:
        """Queue the registration of a member without waiting.

        Unlike :meth:`register` it cannot report a duplicate id: such a registration is
        ignored.

        Args:
            member: the member.

        Raises:
            trio.WouldBlock: if the inbox is full.
            trio.BrokenResourceError: if the hub has stopped.
        """
        self._post(_Control(_Op.REGISTER, _check_member(member, "register_nowait")))

    async def unregister(self, member: Member) -> None:
        """Unregister a member and remove it from all its rooms.

        Does nothing if the member is not registered (or the hub has stopped). The
        member is not closed. Returns once the hub has processed it.

        Cancellation: as for :meth:`register`. Cleanup code that must unregister while
        being cancelled should shield the call (``with trio.CancelScope(shield=True)``);
        a member that closes without unregistering is forgotten at the next frame the
        hub offers it anyway.

        Args:
            member: the member, as registered (compared with ``==``).
        """
        await self._call(_Control(_Op.UNREGISTER, _check_member(member, "unregister")))

    def unregister_nowait(self, member: Member) -> None:
        """Queue the unregistration of a member without waiting.

        Args:
            member: the member, as registered.

        Raises:
            trio.WouldBlock: if the inbox is full.
        """
        self._post(_Control(_Op.UNREGISTER, _check_member(member, "unregister_nowait")))

    async def join(
        self, room: str, member: Member, *, since: StreamPosition | None = None
    ) -> HistoryPage:
        """Add a member to a room, registering it first if needed.

        Returns once the hub has processed it. Joining a room twice does nothing. With a
        backplane, it also waits until this node follows the room's channel, so that
        broadcasts published anywhere after it returns reach the member (unless the link
        to the broker is down: see the clustering topic of the documentation).

        In a room with history, joining from a position ``since`` first hands the member
        the messages it missed (after the framing's answer, if the hub has a
        :class:`RoomFraming`), then adds it to the room, all in one step of the hub's
        task: it gets every message after ``since`` exactly once, in order, with no gap
        between the missed ones and the live ones. If the hub cannot promise that (the
        epoch changed, or the position fell out of the history), nothing is replayed and
        the answer's ``recovered`` is ``False``: the application resynchronises (for
        instance from :meth:`history`).

        Cancellation: as for :meth:`register`.

        Args:
            room: the room name.
            member: the member.
            since: the last position the member saw, to catch up from.

        Returns:
            The room's latest position (``epoch`` and ``offset``), the messages replayed
            and whether they are all the member missed (``""`` and 0 in a room without
            history; nothing replayed without ``since``).

        Raises:
            ValueError: if another member is registered with the same id.
            trio.BrokenResourceError: if the hub has stopped.
        """
        member = _check_member(member, "join")
        room = self._check_room(room)
        stream = self._stream
        config = None if stream is None else self._histories.config(room)
        if stream is None or config is None or since is None:
            command = _Control(_Op.JOIN, member, room, since=since)
            await self._call(command)
        else:
            # Follow the room first, then read: what is published after the read reaches
            # this node, so the two together leave no gap for the actor to replay.
            stream.follow(room)
            try:
                await stream.synced()
                try:
                    seed = await stream.read(room, since, None, config)
                except BackplaneError:
                    seed = _UNSURE
                command = _Control(_Op.JOIN, member, room, since=since, seed=seed)
                await self._call(command)
            finally:
                stream.unfollow(room)
        if self._backplane is not None:
            await self._backplane.synced()
        return command.page

    def join_nowait(
        self, room: str, member: Member, *, since: StreamPosition | None = None
    ) -> None:
        """Queue adding a member to a room without waiting; see :meth:`join`.

        Args:
            room: the room name.
            member: the member.
            since: the last position the member saw, to catch up from.

        Raises:
            trio.WouldBlock: if the inbox is full.
            trio.BrokenResourceError: if the hub has stopped.
        """
        member = _check_member(member, "join_nowait")
        self._post(_Control(_Op.JOIN, member, self._check_room(room), since=since))

    async def leave(self, room: str, member: Member) -> None:
        """Remove a member from a room; it stays registered.

        Does nothing if the member is not in the room (or the hub has stopped). Returns
        once the hub has processed it; an emptied room disappears.

        Cancellation: as for :meth:`register`.

        Args:
            room: the room name.
            member: the member, as registered.
        """
        command = _Control(_Op.LEAVE, _check_member(member, "leave"), self._check_room(room))
        await self._call(command)

    def leave_nowait(self, room: str, member: Member) -> None:
        """Queue removing a member from a room without waiting.

        Args:
            room: the room name.
            member: the member, as registered.

        Raises:
            trio.WouldBlock: if the inbox is full.
        """
        member = _check_member(member, "leave_nowait")
        self._post(_Control(_Op.LEAVE, member, self._check_room(room)))

    async def flush(self) -> None:
        """Wait until the hub has processed every command queued before this call.

        Useful after ``_nowait`` commands and broadcasts, before reading a query.

        Cancellation: safe; the barrier is simply abandoned.

        Raises:
            trio.BrokenResourceError: if the hub has stopped.
        """
        await self._call(_Control(_Op.FLUSH))

    async def broadcast(
        self,
        type: MessageType | int,
        data: str | bytes | bytearray | memoryview,
        *,
        room: str | None = None,
        exclude: Member | str | None = None,
    ) -> None:
        """Send a message to every registered member, or to the members of a room.

        Returns as soon as the message is queued in the inbox (waiting for room if it
        is full); the hub delivers it later, in order after every earlier command. A
        broadcast to a room without members reaches no one.

        Cancellation: either the message was queued, or nothing happened.

        Args:
            type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
            data: the payload; ``str`` for text, bytes (UTF-8 for text) otherwise.
                Bytes-like objects other than ``bytes`` are copied.
            room: the room, or ``None`` for every registered member.
            exclude: a member, or a member id, that does not receive it (the sender).

        Raises:
            ValueError: if ``type`` is not a message type.
            trio.BrokenResourceError: if the hub has stopped.
        """
        command = _make_broadcast(type, data, room and self._check_room(room), exclude)
        # A cancellation point always, a schedule point only when the inbox is full: a
        # publisher relaying a burst queues it whole, so the hub delivers it in batches
        # and each member's writer sends many frames with one system call.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                self._inbox_send.send_nowait(command)
            except trio.WouldBlock:
                await self._inbox_send.send(command)
        except trio.BrokenResourceError:
            raise _stopped_error() from None

    def broadcast_nowait(
        self,
        type: MessageType | int,
        data: str | bytes | bytearray | memoryview,
        *,
        room: str | None = None,
        exclude: Member | str | None = None,
    ) -> None:
        """Queue a broadcast without waiting; see :meth:`broadcast`.

        Args:
            type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
            data: the payload.
            room: the room, or ``None`` for every registered member.
            exclude: a member, or a member id, that does not receive it.

        Raises:
            ValueError: if ``type`` is not a message type.
            trio.WouldBlock: if the inbox is full.
            trio.BrokenResourceError: if the hub has stopped.
        """
        self._post(_make_broadcast(type, data, room and self._check_room(room), exclude))

    @asynccontextmanager
    async def open_presence(
        self, max_buffer_size: int = 256
    ) -> AsyncIterator[trio.MemoryReceiveChannel[PresenceEvent]]:
        """Open a stream of the presence events that happen from now on.

        ::

            async with hub.open_presence() as events:
                async for event in events:
                    ...

        The stream starts after every command queued before it and is bounded: if
        the reader falls ``max_buffer_size`` events behind, the hub ends the stream
        (the ``async for`` finishes) rather than wait; open a new one and read
        :meth:`members` to catch up. The stream also ends when the hub stops.

        Args:
            max_buffer_size: how many events may wait for the reader.

        Yields:
            The receive side of the stream.

        Raises:
            trio.BrokenResourceError: if the hub has stopped.
        """
        send, receive = trio.open_memory_channel[PresenceEvent](max_buffer_size)
        # Closing our end on the way out makes the hub drop the stream at its next event.
        with receive:
            await self._call(_Control(_Op.SUBSCRIBE, subscriber=send))
            yield receive

    # ------------------------------------------------------------------ queries

    def count(self, room: str | None = None) -> int:
        """Return how many members are registered, or are in ``room``: ``hub.Count()``.

        Reflects the commands the hub has processed so far.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The number of members.
        """
        audience = self._everyone if room is None else self._rooms.get(room)
        return 0 if audience is None else len(audience.entries)

    async def cluster_count(self, room: str | None = None) -> int:
        """Count the members of every node of the cluster, or those in ``room``.

        Without a backplane this is :meth:`count`. With one, this node's members are
        counted as the hub holds them now and the other nodes' as they last reported to
        the broker: a node that stopped heartbeating drops out after the backplane's
        presence expiry.

        Cancellation: safe; nothing changes.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The number of members.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        if self._backplane is None:
            await trio.lowlevel.checkpoint()
            return self.count(room)
        return await self._backplane.cluster_count(room)

    async def cluster_members(self, room: str | None = None) -> list[str]:
        """List the member ids of every node of the cluster, or those in ``room``.

        Without a backplane this is :meth:`members` (sorted). See :meth:`cluster_count`.

        Cancellation: safe; nothing changes.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The member ids, sorted.

        Raises:
            rue_trio.exceptions.BackplaneError: the broker cannot be reached.
        """
        if self._backplane is None:
            await trio.lowlevel.checkpoint()
            return sorted(self.members(room))
        return await self._backplane.cluster_members(room)

    async def history(
        self, room: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read a room's history: its latest position and the messages it keeps.

        Reflects the broadcasts the hub has processed so far (:meth:`flush` first to
        include your own).

        Cancellation: safe; nothing changes.

        Args:
            room: the room name.
            since: a position: only the messages after it (``recovered`` is ``False``,
                with no messages, if the hub no longer has them all).
            limit: at most this many messages: the latest ones without ``since``, the
                first ones after it with ``since``.

        Returns:
            The room's epoch and latest offset and the messages, oldest first (``""``,
            0 and none for a room without history).

        Raises:
            ValueError: if ``limit`` is negative.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit!r}")
        stream = self._stream
        config = None if stream is None else self._histories.config(room)
        if stream is not None and config is not None:
            try:
                return await stream.read(room, since, limit, config)
            except BackplaneError:
                pass  # the broker is away: answer with what this node saw
        await trio.lowlevel.checkpoint()
        return self._histories.page(room, since, limit, trio.current_time())

    def users(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        """Return the users in a room, each with the ``meta`` of each of their members.

        A user is a member's ``user`` (:attr:`rue_trio.WebSocketConn.user`), or its id
        when it has none; two connections of one user are listed once, with two metas.

        Args:
            room: the room name.

        Returns:
            The users in order of arrival, each with their members' metas in order of
            joining.
        """
        return self._users.presence(room)

    async def presence(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        """List the users in a room and the ``meta`` of each of their connections.

        Without a user directory this is :meth:`users`, this process's users. With one,
        the users of every live node (a user with tabs on two nodes is listed once, with
        every tab's meta); if the directory cannot be reached, this node's users.

        Cancellation: safe; nothing changes.

        Args:
            room: the room name.

        Returns:
            The users, each with their members' metas.
        """
        if self._directory is not None:
            try:
                return await self._directory.users(room)
            except BackplaneError:
                pass  # the broker is away: answer with what this node knows
        await trio.lowlevel.checkpoint()
        return self.users(room)

    def rooms(self) -> list[str]:
        """Return the names of the rooms that have members, in order of creation."""
        return list(self._rooms)

    def members(self, room: str | None = None) -> list[str]:
        """Return the ids of the members registered, or in ``room``.

        Args:
            room: a room name, or ``None`` for every registered member.

        Returns:
            The member ids, in order of registration (or of joining the room).
        """
        audience = self._everyone if room is None else self._rooms.get(room)
        return [] if audience is None else list(audience.entries)

    def statistics(self) -> HubStatistics:
        """Return a snapshot of the hub's state and counters."""
        inbox = self._inbox_send.statistics()
        return HubStatistics(
            members=len(self._everyone.entries),
            rooms=len(self._rooms),
            broadcasts=self._broadcasts,
            deliveries=self._deliveries,
            encodes=self._encodes,
            dropped=self._dropped,
            evicted=self._evicted,
            inbox_queued=inbox.current_buffer_used,
            publishers_waiting=inbox.tasks_waiting_send,
            backplane=None if self._backplane is None else self._backplane.statistics(),
            paced=self._paced,
            hook_errors=self._hook_errors,
            backplane_errors=self._backplane_errors,
            member_errors=self._member_errors,
        )


def _check_member(member: Member, action: str) -> Member:
    # In the caller's task: something that is not a connection must not reach the actor.
    try:
        ok = (
            isinstance(member.id, str)
            and callable(member._hub_offer)
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
