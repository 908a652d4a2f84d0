"""The actor: the hub's one task, applying the commands of its inbox in order."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import trio
import trio.lowlevel

from rue_trio._groups import single_failure
from rue_trio.protocol import encode_message

from ._backplane import Backplane, Envelope
from ._commands import (
    _HARMLESS_WHEN_STOPPED,
    _LOCAL,
    _Broadcast,
    _Command,
    _Op,
    _stopped_error,
)
from ._delivery import _Audience, _Entry, _failure, _offer
from ._member import Member
from ._membership import _Membership
from ._streams import Sequenced
from ._users import UserEvent, _Users

logger = logging.getLogger("rue_trio.hub")

# How many queued commands the actor applies between two checkpoints: enough to avoid a
# trip through the scheduler per message under load, few enough to stay fair to others.
_BATCH: Final = range(64)


class _Actor(_Membership):
    """The hub's task: the inbox loop, the ports' forwarders, broadcasts and shutdown."""

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
            try:
                self._apply_batch(command, receive_nowait, apply, quantum)
            finally:
                # Each member offered frames in this batch writes them now, once: from
                # this task when its writer is idle (one os.write each, no writer
                # woken), else through its writer. A burst of broadcasts still costs
                # one write per member and batch. Per delivery to 1,000 members
                # (bench/profile_server.py --scenario broadcast): 1.00 task step and 46
                # calls when each offer woke the member's writer, 0.00 and 18 this way.
                self._flush_members()

    def _flush_members(self) -> None:
        """Flush, once, each member that an offer of this batch left with frames to write.

        A flush runs in this task: one that raises what it must not (a bug in the member's
        port) is that member's failure, settled as a refused offer (closed with 1011,
        removed, counted), never the hub's, and the members after it are still flushed.
        Settling may announce notices, whose offers are flushed in turn.
        """
        while self._unflushed:
            entries, self._unflushed = self._unflushed, []
            registered = self._everyone.entries
            failed: dict[str, int] = {}
            for entry in entries:
                try:
                    entry.flush()
                except Exception as exc:
                    why = _failure(entry.id, exc)
                    if registered.get(entry.id) is entry:
                        failed[entry.id] = why
            if failed:
                self._settle(list(failed.items()))
                if self._notices:
                    self._announce()

    def _apply_batch(
        self,
        command: _Command,
        receive_nowait: Callable[[], _Command],
        apply: Callable[[_Command], None],
        quantum: int,
    ) -> None:
        """Apply ``command`` and those queued behind it, up to a batch, without yielding."""
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
        offered = encodes = crowded = 0
        high_water = self._high_water
        # PLAIN members share the frame the hub makes; each other shared key gets the frame
        # its first member able to encode makes; members that keep a compression context
        # (or mask) get one frame each.
        groups: list[tuple[dict[str, _Entry], bytes | None, bool]] = []
        if audience.plain:
            groups.append((audience.plain, encode_message(type_, data), True))
            encodes = 1
        groups.extend((group, None, True) for group in audience.keyed.values())
        if audience.solo:
            groups.append((audience.solo, None, False))
        for group, frame, share in groups:
            counts = _offer(
                group, frame, share, type_, data, skip, high_water, failed, self._unflushed
            )
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
