"""A WebSocket connection's two tasks: the reader, and the writer (which runs the keepalive).

See :mod:`rue_trio.websocket._connection` for the theory of operation.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Awaitable, Callable
from sys import getsizeof
from typing import Any, TypeAlias, TypeVar

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, wait_readable

from rue_trio.exceptions import ConnectionClosed, ConnectionClosedOK
from rue_trio.protocol import Event, Message, MessageType, Pong, State

from ._core import _NO_PINGS, _ConnectionCore
from ._queue import _Buffer, _rest

#: What the owner task's read loop calls for each message: ``deliver(conn, type,
#: data)``, a plain function or one returning an awaitable (WebSocketHandler's
#: ``on_message``).
Deliver: TypeAlias = Callable[[Any, MessageType, "str | bytes"], "Awaitable[None] | None"]

# The writer's batch stops once it holds this many bytes (it goes past by one frame at
# most): big enough to amortize the system call, small enough not to hold megabytes in
# one joined copy.
_MAX_WRITE = 1 << 20
# A batch of at least _GATHER_MIN bytes in at most _MAX_GATHER buffers is written with
# one gathering write (os.writev, socket.sendmsg) instead of being joined: a large frame,
# queued as its header and its payload, is never copied (a 1 MiB payload joined behind
# its header was a 1 MiB copy, 34 us, and one more megabyte-sized allocation per
# message). _MAX_GATHER stays well under IOV_MAX (1,024 on Linux); below _GATHER_MIN,
# joining costs less than what writev does per buffer.
_GATHER_MIN = 1 << 16
_MAX_GATHER = 256
# A write renews its bound (ConnectionConfig.write_timeout) at least once per this many
# bytes: the bound is on progress, not on a whole write of up to _MAX_WRITE.
_CHUNK = 1 << 16
_A = TypeVar("_A")
_R = TypeVar("_R")
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# What a closed socket's calls fail with (as trio's SocketStream sees them).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
# Whether a socket's descriptor can be read and written with os.read and os.write (not on
# Windows).
_WRITE_FD = os.name == "posix"


class _ConnectionTasks(_ConnectionCore):
    """The reader and the writer of a connection, and what they share."""

    __slots__ = ()

    def _start(self, nursery: trio.Nursery, *, owner_reads: bool = False) -> None:
        """Start the writer, and the reader unless the owner task is to read.

        With ``owner_reads`` the task calling this is the reader: it runs the read loop
        itself, calling back for each message (``_run_reader(deliver)``), and no reader
        task is spawned.
        """
        if owner_reads:
            # No buffer for receive() either (see WebSocketConn.receive): the messages go
            # to the callback.
            self._owner = trio.lowlevel.current_task()
            # Away from reading until the loop starts (on_connect runs first).
            self._dispatching = True
            # The owner's cancellation (the server going away) must reach the loop.
            self._reader_scope.shield = False
        else:
            # Constant task names: formatting one per task and connection costs time
            # and memory; ``repr(conn)`` tells the connections apart.
            nursery.start_soon(self._run_reader, name="rue_trio websocket reader")
        interval = self._config.ping_interval
        if interval is not None:
            # The writer's wait for frames ends at the first ping (see _keepalive_tick).
            self._ka_due = self._writer_scope.deadline = trio.current_time() + interval
        nursery.start_soon(self._run_writer, name="rue_trio websocket writer")

    async def _finish_reading(self) -> None:
        """In the owner task, out of its read loop: read on until the connection ends.

        Late messages are dropped. In a fresh scope (a scope is entered once), shielded
        and with the closing deadline and the abort of the last one.
        """
        last = self._reader_scope
        scope = self._reader_scope = trio.CancelScope(shield=True, deadline=last.deadline)
        if last.cancel_called:
            scope.cancel()
        await self._run_reader(_discard)

    async def _wait_closed(self) -> None:
        """Wait for the end; in the owner task when it reads, bring the end about.

        Called from a callback of the owner's read loop, it returns at once: only
        that loop can read the peer's close frame, and it will once the callback
        returns (``close()`` in ``on_message`` starts the closing handshake and
        returns). Outside its loop, the owner task reads until the end itself.
        """
        owner = self._owner
        if owner is not None and not self._closed and owner is trio.lowlevel.current_task():
            if self._reading:
                await checkpoint_if_cancelled()
            else:
                await self._finish_reading()
            return
        await super()._wait_closed()

    async def _run_reader(self, deliver: Deliver | None = None) -> None:
        """The reader: the reader task's body, or the owner task's read loop.

        With ``deliver``, the owner task (see :meth:`_start`) is the reader: it calls
        ``deliver(conn, type, data)`` (sync, or returning an awaitable) for each
        message, in order, between reads: while it runs nothing is read, so TCP pushes
        back on the peer. It returns once the connection is closed normally.

        Raises:
            ConnectionClosedError: (with ``deliver``) the connection closed abnormally.
            Exception: ``deliver``'s own, with the connection as it was (open, or
                closing): the caller reports it and closes (or lets the block close).
            trio.Cancelled: (with ``deliver``) the owner task was cancelled; the
                connection was closed with 1001 first, within ``close_timeout``.
        """
        clean = False
        # A callback's exception leaves the connection as it is, for the caller.
        teardown = True
        owner_cancelled: trio.Cancelled | None = None
        callbacks = deliver is not None and deliver is not _discard
        self._reading = callbacks
        with self._reader_scope as scope:
            try:
                try:
                    clean = await self._read_loop(deliver)
                except trio.Cancelled as exc:
                    if not callbacks or scope.cancel_called:
                        raise
                    # The owner task is cancelled (the server goes away): no more
                    # callbacks; close with 1001 and finish the closing handshake here,
                    # shielded, within close_timeout (then Cancelled goes on).
                    owner_cancelled = exc
                    scope.shield = True
                    self._start_close(1001, "going away")
                    clean = await self._read_loop(_discard)
                except ConnectionClosed:
                    if not callbacks or self._protocol.state is State.OPEN:
                        raise  # not this connection's: a callback used another one
                    # A callback found this connection closing: no more callbacks;
                    # finish the closing here, then say how it ended.
                    clean = await self._read_loop(_discard)
            except trio.Cancelled:
                # The scope was cancelled: the writer failed, or the closing handshake
                # timed out. A client that saw both close frames and waited
                # close_timeout for the server to close TCP is not in error (RFC 6455
                # section 7.1.1).
                protocol = self._protocol
                if protocol.close_rcvd is None or protocol.close_sent is None:
                    self._set_exc(TimeoutError("the closing handshake timed out"))
                raise
            except Exception as exc:
                if callbacks:
                    teardown = False
                    raise
                # A bug, not the peer's doing: background tasks never raise into the
                # user's nursery; the failure becomes the ConnectionClosedError's cause.
                self._set_exc(exc)
            except BaseException:
                # KeyboardInterrupt in a callback: the block's exit closes with 1001.
                teardown = not callbacks
                raise
            finally:
                self._reading = False
                if teardown:
                    scope.shield = True
                    await self._teardown(clean)
        # Raised from locals cleared on the way out: the traceback holds this frame,
        # which must not hold the exception (a cycle only the collector would free).
        if owner_cancelled is not None:
            try:
                raise owner_cancelled
            finally:
                del owner_cancelled
        if callbacks:
            ended = self._closed_error()
            if not isinstance(ended, ConnectionClosedOK):
                try:
                    raise ended
                finally:
                    del ended
        # Already a checkpoint on every way here (the teardown's); for the linter.
        await checkpoint_if_cancelled()

    async def _read_loop(self, deliver: Deliver | None) -> bool:
        """Read until the end of the stream; return whether it ended cleanly.

        Each message goes to the inbound buffer, or to ``deliver`` when the owner task
        reads (then the buffer stays empty: a batch is at most ``inbound_queue``
        messages and ``inbound_queue_bytes`` bytes, as parsed, while it is delivered).
        """
        protocol = self._protocol
        stream = self._stream
        size = self._config.read_size
        inbound = self._inbound
        limit = self._inbound_limit
        byte_limit = self._config.inbound_queue_bytes
        big_read = max(size, byte_limit)
        out = self._out
        receiver = self._receiver
        # A plain socket is read through its descriptor (os.read), as it is written.
        sock = self._sock
        data: bytes | bytearray = self._trailing_data
        self._trailing_data = b""
        event: Event | None = None
        result: Awaitable[None] | None = None
        await checkpoint_if_cancelled()
        if deliver is not None:
            self._dispatching = False
        while True:
            if data:
                self._bytes_received += len(data)
                # A reply to what was just read may be written through (see _put).
                out._through = False
                protocol.buffer_data(data)
                # Parse (and inflate) only as far as there is room: the memory a
                # peer can make us hold is bounded in bytes. The price, measured on
                # a pipelined echo of 64-byte texts over memory streams: 6.0 us of
                # CPU per echoed message against 4.9 when everything read was parsed
                # at once (one parse per batch of ``inbound_queue`` messages; 6.6
                # before the byte count was taken once per message and the write
                # bound set lazily); the cadence of yields is unchanged.
                while True:
                    count_room = limit - len(inbound)
                    byte_room = byte_limit - self._inbound_bytes
                    if count_room <= 0 or byte_room <= 0:
                        if not self._closing_first:
                            await self._wait_inbound_room()
                            continue
                        # We closed first and the application is not reading: parse
                        # on (for the peer's close), dropping its late messages.
                        count_room = byte_room = 1
                        drop = True
                    else:
                        drop = False
                    if out._bytes_full():
                        # Our pongs are not being read: stop reading pings.
                        await out._wait_bytes_room()
                    events = protocol.next_events(count_room, byte_room)
                    if not events:
                        break
                    if deliver is None:
                        for event in events:
                            if type(event) is not Message:
                                self._on_control(event)
                            elif not drop:
                                inbound.append(event)
                                self._inbound_bytes += getsizeof(event.data)
                                self._messages_received += 1
                    else:
                        # The owner task's callbacks, between reads: a slow one stops
                        # the reading (TCP pushes back), and the keepalive does not
                        # count it against the peer. A single message's reply is
                        # written through at once; a batch's replies go to the writer,
                        # woken by the first, which writes them all with one system
                        # call when this task next yields: at the next read, or earlier
                        # if a callback waits (so no reply waits for a slow callback).
                        if len(events) > 1:
                            out._queue_batch()
                        for event in events:
                            if type(event) is not Message:
                                self._on_control(event)
                                continue
                            self._messages_received += 1
                            self._dispatching = True
                            result = deliver(self, event.type, event.data)
                            if result is not None:
                                await result
                            self._dispatching = False
                    # Only for a message: the application's wait ends on one, or at the
                    # end (see _teardown). Woken by the peer's close frame, it would
                    # only sleep again: a task step per connection
                    # (bench/profile_server.py --scenario handshake: 12 -> 11 steps).
                    if inbound and receiver.task is not None:
                        receiver.wake()
                self._pump()
                if protocol.parser_exc is not None and self._connection_exc is None:
                    await self._fail_after_replies()
            if self._ka_held:
                # The keepalive waited for us to read again (a callback ran when its
                # pong was due): the peer gets ping_timeout from now.
                self._ka_held = False
                self._rearm_keepalive()
            # A big uncompressed frame's payload still missing: read more of it at once,
            # up to the inbound byte budget; it all goes to the message being assembled
            # (counted against max_message_size). 1 MiB echo: 17 -> 5 reader steps and
            # 1,295 -> 419 calls per round trip; ping-pong pays one call per read (python
            # bench/profile_server.py --scenario mib, --scenario pingpong).
            pending = protocol.payload_pending
            want = size if pending <= size else min(pending, big_read)
            # Not kept while waiting: an idle connection would hold its last read (up to
            # read_size bytes), its last event (a message of up to max_message_size) and
            # its last callback's finished coroutine (its frame's memory: 216 bytes for
            # a small on_message) for as long as it stays idle.
            data = b""
            event = None
            result = None
            # Only the transport's errors are the transport's: a callback's go to the caller.
            try:
                if sock is None:
                    data = await stream.receive_some(want)
                else:
                    # What SocketStream.receive_some does, parked on the descriptor alone:
                    # its chain of coroutines (the stream, the socket's wrapper and
                    # helper, an error-translating context manager) is gone while idle
                    # (bench/idle_memory.py: 16.15 -> 14.63 KiB per idle connection).
                    await checkpoint_if_cancelled()
                    chunk = _call_now(os.read, sock, want)
                    if chunk is not None:
                        await cancel_shielded_checkpoint()
                    while chunk is None:
                        await wait_readable(sock)
                        chunk = _call_now(os.read, sock, want)
                    data = chunk
            except trio.ClosedResourceError as exc:
                if self._stream_closed_by_us:
                    return True
                self._set_exc(exc)
                return False
            except _TRANSPORT_ERRORS as exc:
                self._set_exc(exc)
                return False
            if not data:
                return True

    def _on_control(self, event: object) -> None:
        """A control event of the core: a pong completes ping waiters; send what it queued."""
        if type(event) is Pong:
            self._on_pong(event.data)
        self._pump()

    async def _fail_after_replies(self) -> None:
        """Fail for the peer's violation once the messages before it were answered.

        The messages that came before the violation are delivered; the application gets
        until it has taken them all (and yielded once more, which is when its replies are
        queued), at most ``close_timeout``, before the close frame goes after them.
        """
        await checkpoint_if_cancelled()
        protocol = self._protocol
        parser_exc = protocol.parser_exc
        assert parser_exc is not None
        self._set_exc(parser_exc)
        if self._inbound and protocol.state is State.OPEN:
            with trio.move_on_after(self._config.close_timeout):
                while self._inbound and not self._closing_first:
                    await self._room_waiter.wait()
        protocol.fail_on_violation()
        self._pump()

    async def _wait_inbound_room(self) -> None:
        """Wait while the inbound buffer is full, accounting the time as ours."""
        self._paused_since = since = trio.current_time()
        try:
            await self._room_waiter.wait()
        finally:
            self._paused_total += trio.current_time() - since
            self._paused_since = None

    async def _teardown(self, clean: bool) -> None:
        """End the connection: state CLOSED, close the transport, wake everyone."""
        try:
            self._protocol.receive_eof()
            # Nothing can be written any more.
            self._protocol.data_to_send()
            self._closing = True
            self._reader_done = True
            self._out._close()
            for waiter in self._pings.values():
                waiter.event.set()
            self._pings = _NO_PINGS
            self._ka_due = math.inf
            if self._stream_closed_by_us:
                # The writer closed it after the closing handshake.
                await checkpoint_if_cancelled()
            elif clean:
                self._stream_closed_by_us = True
                # Bounded by the reader's scope (no scope of its own: they cost).
                scope = self._reader_scope
                scope.deadline = min(
                    scope.deadline, trio.current_time() + self._config.close_timeout
                )
                await self._stream.aclose()
            else:
                self._stream_closed_by_us = True
                await trio.aclose_forcefully(self._stream)
        finally:
            # Woken once the transport is closed, the application finds the connection
            # over and does not have to wait a second time.
            self._receiver.wake()
            self._set_closed()

    async def _run_writer(self) -> None:
        out = self._out
        stream = self._stream
        keepalive = self._config.ping_interval is not None
        # A plain socket is written through its own send calls, each one a step of
        # progress that renews the write bound; any other stream by chunks.
        sock = stream.socket if type(stream) is trio.SocketStream else None
        # The flag tells _end_tasks that there is nothing left to cancel.
        try:
            while True:
                scope = self._writer_scope
                with scope:
                    # A cancellation point only: the first wait for frames is the schedule point.
                    await checkpoint_if_cancelled()
                    try:
                        # The write loop runs in this frame, not in a coroutine of its own: an
                        # idle writer parks in one frame less (bench/idle_memory.py: 328 bytes
                        # per idle connection).
                        while True:
                            if not out:
                                if out._is_closed():
                                    return
                                if self._ka_due < scope.deadline:
                                    # Wake for the keepalive's next step (a no-op without it).
                                    scope.deadline = self._ka_due
                                await out._wait_frames()
                                continue
                            if keepalive and trio.current_time() >= self._ka_due:
                                # A busy writer is never idle when the keepalive is due.
                                self._keepalive_tick(trio.current_time())
                            batch, eof = out._take(_MAX_WRITE)
                            if batch:
                                self._writing = True
                                # The frames are in ``data`` now (joined, or the batch itself
                                # for a gathering write). Kept through a write to a slow
                                # peer, joined frames held a second copy of it: 198 KB where
                                # the queue's byte bound was 64 KiB, 134 KB without
                                # (test_write_through_hostile.py, memory).
                                if sock is not None:
                                    data, size = _for_write(batch)
                                    del batch
                                    sent = _write_now(sock, data) if _WRITE_FD else 0
                                    if sent < size:
                                        await _send_to_socket(sock, data, sent, self._arm_write)
                                else:
                                    joined = batch[0] if len(batch) == 1 else b"".join(batch)
                                    del batch
                                    size = await self._send_chunks(joined)
                                self._writing = False
                                self._bytes_sent += size
                            if eof:
                                # Ending the transport is bounded by the reader's close
                                # timeout. Set only if armed: setting a deadline costs
                                # about ten calls of Trio's bookkeeping
                                # (bench/profile_server.py --scenario handshake: 1,349 ->
                                # 1,339 calls per connection).
                                if scope.deadline != math.inf:
                                    scope.deadline = math.inf
                                await self._end_transport()
                                return
                    except _TRANSPORT_ERRORS as exc:
                        if not self._stream_closed_by_us:
                            self._abort(exc)
                    except Exception as exc:
                        # A bug; as in the reader, it must not reach the user's nursery.
                        self._abort(exc)
                if not self._writer_goes_on(scope):
                    return
        finally:
            self._writer_done = True

    def _writer_goes_on(self, scope: trio.CancelScope) -> bool:
        """After the writer's scope ended: whether the writer goes on in a fresh scope."""
        now = trio.current_time()
        if not scope.cancelled_caught or self._reader_done or now < scope.deadline:
            return False
        # The deadline: the write bound, or the keepalive's next step.
        if self._writing:
            # Cut short, the write leaves the transport unusable: abort.
            if now >= self._keepalive_fail_at():
                self._keepalive_failed()
            else:
                timeout = self._config.write_timeout
                self._abort(TimeoutError(f"a write made no progress for {timeout} s"))
            return False
        if now >= self._ka_due:
            try:
                self._keepalive_tick(now)
            except Exception as exc:
                self._abort(exc)
                return False
        # Otherwise the write bound left armed after the last write (see _arm_write) ran
        # out while the writer was idle. Go on in a fresh scope.
        self._writer_scope = trio.CancelScope(shield=True, deadline=self._ka_due)
        return True

    def _put(self, frame: bytes, payload: bytes = b"") -> None:
        """Send a data frame: write it through when the writer is idle, else queue it.

        The frame is ``frame``, or ``frame`` (its header) then ``payload`` for a large
        frame whose payload is not to be copied (:meth:`WebSocketProtocol.encode_parts`):
        both are written with one gathering write, or queued as two entries.

        "Write-through when the writer is idle", as asyncio's transports do: when the
        writer waits for frames with nothing queued (:meth:`FrameQueue._idle`) and the
        application has taken every message read so far, the sending task writes the
        frame to the socket itself, without yielding, and the writer is not woken. What
        the kernel does not take at once (a partial write, ``EAGAIN``) or cannot take (an
        error) is queued and the writer woken: it writes the rest under the write bound,
        and reports errors, exactly as before. Order holds: the writer is idle, so
        nothing is queued or being written ahead of the frame, and anything sent after a
        partial write queues behind its rest.

        Not while messages wait in the inbound buffer: the application is working through
        a pipelined batch, and its replies are queued for the writer, which sends them
        with one system call when the application yields. Not through TLS or memory
        streams. And once per wait of the writer or read of the reader only (see
        :meth:`FrameQueue._idle`): a task pushing 10,000 texts of 64 bytes without reading
        made 534 to 1,540 ``os.write`` calls when every idle moment wrote through, 4 with
        this rule (3 before write-through; 5 or 6 writer steps in all three cases).

        Measured with ``bench/profile_server.py --scenario S`` (task steps and calls per
        operation, before -> after): pingpong 3.00 and 224 -> 2.00 and 172 (the writer
        no longer runs); conns100 3.00 and 171 -> 2.00 and 135; pipelined 0.06 and 35 ->
        0.06 and 36 (0.07 and 37 without the inbound-buffer rule).
        """
        out = self._out
        sock = self._sock
        sent = 0
        if sock is not None and not self._inbound and out._idle():
            try:
                sent = _write_now(sock, [frame, payload] if payload else frame)
            except _TRANSPORT_ERRORS:
                # The writer meets the error again and reports it, as for any write.
                sent = 0
            if sent:
                self._bytes_sent += sent
                out._through = True
                if sent == len(frame) + len(payload):
                    return
        if not payload:
            # The rest of a partial write as a view: a copy would be as large.
            out._append(memoryview(frame)[sent:] if sent else frame)
            return
        for buffer in _rest([frame, payload], sent):
            out._append(buffer)

    def _flush(self) -> None:
        """Write what is queued now, unless a write is under way.

        When the writer waits for frames (it was not woken for what is queued), the
        queued frames are written through, joined, as by :meth:`_put`; the rest, or all
        of it on a stream that is not a plain socket or past the writer's size cap, goes
        to the writer. When the writer is not waiting, it is awake or writing, and writes
        what is queued when it comes back to the queue.
        """
        out = self._out
        frames = out._frames
        if not frames or out._writer.task is None:
            return
        sock = self._sock
        if sock is None or out._nbytes > _MAX_WRITE:
            out._wake_writer()
            return
        data, size = _for_write(frames)
        try:
            sent = _write_now(sock, data)
        except _TRANSPORT_ERRORS:
            sent = 0
        self._bytes_sent += sent
        out._written(data, sent, size)
        if sent < size:
            out._wake_writer()

    async def _send_chunks(self, data: _Buffer) -> int:
        """Write to a stream that is not a plain socket; return the size written.

        By chunks of ``_CHUNK`` bytes, each a ``send_all`` that renews the write bound.
        """
        stream = self._stream
        size = len(data)
        start = 0
        with memoryview(data) as view:
            while True:
                self._arm_write()
                await stream.send_all(view[start : start + _CHUNK])
                start += _CHUNK
                if start >= size:
                    return size

    def _arm_write(self) -> None:
        """Set the writer's deadline for a write (or a chunk of one) that starts now.

        It must not run out before ``write_timeout`` from now, unless the keepalive
        would fail the connection first (a stuck writer cannot deliver the pong's ping);
        it may run out a sixteenth later. The deadline is moved only when it is outside
        that range: a busy writer sets it about once per ``write_timeout / 16`` seconds
        instead of twice per write (setting a scope's deadline cost 0.5 us per message
        of a pipelined echo, where a whole message costs 5), and it stays armed after
        the write.
        """
        scope = self._writer_scope
        timeout = self._config.write_timeout
        fail = self._keepalive_fail_at()
        now = trio.current_time()
        deadline = scope.deadline
        if timeout is None:
            if deadline != fail:
                scope.deadline = fail
        elif deadline > fail or deadline < min(now + timeout, fail) or deadline == math.inf:
            scope.deadline = min(now + timeout + timeout / 16, fail)

    def _keepalive_fail_at(self) -> float:
        """When the keepalive gives up if no pong comes (pauses not credited yet)."""
        timeout = self._config.ping_timeout
        if timeout is None:
            return math.inf
        if self._ka_ping is not None:
            return self._ka_due
        return self._ka_due + timeout

    def _keepalive_tick(self, now: float) -> None:
        """The keepalive's step, due now: send a ping, or give up on its pong.

        The keepalive runs in the writer, whose deadline wakes it: no task, scope or
        sleep of its own (4.1 KiB and 25 objects per idle connection as a task). A pong
        that comes in time moves the next step on (see :meth:`_on_pong`).
        """
        config = self._config
        interval = config.ping_interval
        timeout = config.ping_timeout
        assert interval is not None
        if self._protocol.state is not State.OPEN:
            self._ka_due = math.inf
            return
        waiter = self._ka_ping
        if waiter is not None and timeout is not None and self._dispatching and not self._writing:
            # No pong yet, but the owner task, our only reader, is in a callback: the
            # pong may be waiting unread, and we are the slow side. The verdict waits
            # until the owner reads again, which gives the peer ping_timeout more (see
            # _read_loop; no clock is read per message for a finer account).
            self._ka_held = True
            self._ka_due = math.inf
            return
        if waiter is not None and timeout is not None:
            # No pong yet. While our reader waited for the application to take messages,
            # it read nothing: the pong may be in the transport's buffer. Give that time
            # back, unless our writer is stuck on this peer (then the application waits
            # for a peer that does not read, and the peer is the slow side).
            paused = self._paused_time() - self._ka_paused
            if paused <= self._ka_credited or self._writing:
                self._keepalive_failed()
                return
            self._ka_due += paused - self._ka_credited
            self._ka_credited = paused
            return
        # Without a ping timeout an unanswered ping is forgotten when the next one goes,
        # so that a silent peer does not grow the table of waiters.
        if waiter is not None and self._pings.get(self._ka_payload) is waiter:
            del self._pings[self._ka_payload]
        payload = self._ka_payload = self._fresh_ping_payload()
        self._ka_ping = self._send_ping(payload)
        if timeout is None:
            self._ka_due = now + interval
        else:
            self._ka_paused = self._paused_time()
            self._ka_credited = 0.0
            self._ka_due = now + timeout

    def _rearm_keepalive(self) -> None:
        """Give the keepalive's unanswered ping ``ping_timeout`` from now; wake the writer."""
        timeout = self._config.ping_timeout
        assert timeout is not None
        if self._ka_ping is not None:
            self._ka_due = trio.current_time() + timeout
            self._out._wake_writer()

    def _keepalive_failed(self) -> None:
        timeout = self._config.ping_timeout
        self._ka_due = math.inf
        exc = TimeoutError(f"no pong within {timeout} s of a keepalive ping")
        self._fail(1011, "keepalive ping timeout", exc)
        if self._writing:
            # The write was cut short: nothing more can be written.
            self._abort(exc)

    async def _end_transport(self) -> None:
        """The core asked to close TCP: after the closing handshake, or after failing."""
        stream = self._stream
        protocol = self._protocol
        if isinstance(stream, trio.abc.HalfCloseableStream) and (
            protocol.close_rcvd is None or protocol.close_sent is None
        ):
            # Failing: the peer may still be sending. A half-close sends our FIN and lets
            # the reader drain until the peer's end: closing with unread data would
            # send a reset, and the peer could lose our close frame.
            await stream.send_eof()
        else:
            # The closing handshake is complete (RFC 6455 section 7.1.1: the server closes
            # TCP first): the peer sends nothing more, so close at once instead of
            # waiting for its FIN; the reader then ends (its stream is closed by us).
            self._stream_closed_by_us = True
            if type(stream) is trio.SocketStream:
                # What its aclose does, without the checkpoint: the writer ends in the
                # step that wrote the close frame, one task step less per connection
                # (bench/profile_server.py --scenario handshake: 13 -> 12 steps).
                stream.socket.close()
                await checkpoint_if_cancelled()
            else:
                await stream.aclose()


def _discard(conn: object, type: MessageType, data: str | bytes) -> None:
    """Drop a message that comes after the owner's callbacks have stopped."""


def _socket_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """The stream error for a socket call's ``exc``, as trio's ``SocketStream`` raises it."""
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def _for_write(batch: list[_Buffer]) -> tuple[_Buffer | list[_Buffer], int]:
    """What to write for a batch of buffers, and its size: one buffer, or the batch itself.

    The only buffer; the batch itself for a gathering write when it is large and short
    enough (see _GATHER_MIN) and the platform has one (not Windows); else the batch
    joined.
    """
    if len(batch) == 1:
        data = batch[0]
        return data, len(data)
    if len(batch) <= _MAX_GATHER and _WRITE_FD:
        size = sum(map(len, batch))
        if size >= _GATHER_MIN:
            return batch, size
    joined = b"".join(batch)
    return joined, len(joined)


def _call_now(call: Callable[[int, _A], _R], sock: trio.socket.SocketType, arg: _A) -> _R | None:
    """``call(descriptor, arg)`` (``os.read`` or ``os.write``); ``None`` if it would block.

    Raises:
        trio.ClosedResourceError: the socket was closed (by us).
        trio.BrokenResourceError: the connection broke.
    """
    try:
        return call(sock.fileno(), arg)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _socket_error(exc) from exc


def _write_now(sock: trio.socket.SocketType, data: _Buffer | list[_Buffer]) -> int:
    """Write what the kernel takes of ``data`` at once, without yielding; return how much.

    ``data`` is a buffer, or a list of buffers written with one gathering write.

    When it takes everything (the usual case), the writer goes back to its queue, whose
    wait is its schedule point. Trio's ``send`` yields once more after a complete write:
    a task step per write (ping-pong: 4.00 steps and 245 calls per round trip with it,
    3.00 and 215 without, ``bench/profile_server.py --scenario pingpong``), and a woken
    broadcast writer kept its await chain alive until the next pass (23 objects each).

    Raises:
        trio.ClosedResourceError: the socket was closed (by us).
        trio.BrokenResourceError: the connection broke.
    """
    if isinstance(data, list):
        return _call_now(os.writev, sock, data) or 0
    return _call_now(os.write, sock, data) or 0


async def _send_to_socket(
    sock: trio.socket.SocketType,
    data: _Buffer | list[_Buffer],
    sent: int,
    arm: Callable[[], None],
) -> None:
    """Write ``data[sent:]`` to a socket, renewing the write bound on every bit of progress.

    ``SocketStream.send_all`` makes the same calls, but its progress is not visible. A
    list of buffers is written with gathering writes (``sendmsg``).

    Raises:
        trio.ClosedResourceError: the socket was closed (by us).
        trio.BrokenResourceError: the connection broke.
    """
    if isinstance(data, list):
        buffers = _rest(data, sent)
        while True:
            arm()
            try:
                sent = await sock.sendmsg(buffers)
            except OSError as exc:
                raise _socket_error(exc) from exc
            buffers = _rest(buffers, sent)
            if not buffers:
                return
    total = len(data)
    with memoryview(data) as view:
        while True:
            arm()
            try:
                sent += await sock.send(view[sent:])
            except OSError as exc:
                raise _socket_error(exc) from exc
            if sent >= total:
                return
