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
registers or joins, together with its bound ``_hub_offer`` and ``_hub_encode`` methods,
so the one delivery loop (``_delivery._offer``, for every group and for a join's replay)
looks nothing up on the member and allocates nothing per member. Members with the :data:`PLAIN`
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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.lowlevel

from rue_trio.exceptions import BackplaneError
from rue_trio.protocol import MessageType

from ._commands import (
    _HARMLESS_WHEN_STOPPED,
    _UNSURE,
    _check_member,
    _Command,
    _Control,
    _make_broadcast,
    _Op,
    _stopped_error,
)
from ._events import PresenceEvent
from ._history import HistoryPage, StreamPosition
from ._member import Member
from ._queries import _Queries

__all__ = ["Hub"]


class Hub(_Queries):
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
