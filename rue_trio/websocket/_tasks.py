"""A WebSocket connection's two tasks: the reader, and the start of both.

:class:`_ConnectionTasks` starts the writer (:mod:`._writer`) and the reader, or lets the
owner task read and deliver each message to its callback; it reads, dispatches, and tears
the connection down at the end of the stream. See :mod:`rue_trio.websocket._connection`
for the theory of operation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from sys import getsizeof
from typing import Any, TypeAlias

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, wait_readable

from rue_trio.exceptions import ConnectionClosed
from rue_trio.protocol import CloseReceived, Event, Message, MessageType, Pong, Role, State

from ._core import _NO_PINGS
from ._output import _TRANSPORT_ERRORS, _call_now, _write_now
from ._writer import _ConnectionWriter

#: What the owner task's read loop calls for each message: ``deliver(conn, type,
#: data)``, a plain function or one returning an awaitable (WebSocketHandler's
#: ``on_message``).
Deliver: TypeAlias = Callable[[Any, MessageType, "str | bytes"], "Awaitable[None] | None"]


class _ConnectionTasks(_ConnectionWriter):
    """The reader of a connection, and the start of its tasks."""

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
        if self._out._closed:
            # The owner task read to the end already, out of its loop (close() in
            # on_connect): the reader's scope is spent (a scope is entered once) and
            # the stream closed; only say how the connection ended.
            await checkpoint_if_cancelled()
            if callbacks:
                self._raise_unless_clean()
            return
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
                    # finish the closing here, then say how it ended. What the core
                    # queued goes out first: with the peer's close frame parsed in the
                    # callback's batch, its answer, which waited for close_timeout.
                    self._pump()
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
                if teardown and self._stream_closed_by_us:
                    # TCP is closed already (after the closing handshake, here or by the
                    # writer): nothing to wait for, so no shield to raise (11 calls of
                    # Trio's) and no checkpoint (bench/profile_server.py --scenario
                    # handshake: 923 -> 909 calls per connection).
                    try:
                        self._end_state()
                    finally:
                        self._ended()
                elif teardown:
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
            self._raise_unless_clean()
        # For the linter: the teardown's checkpoint, or none when TCP was closed already.
        await checkpoint_if_cancelled()

    def _raise_unless_clean(self) -> None:
        """For the owner's loop: raise how the connection ended, unless it closed cleanly.

        The exception is built only for an abnormal end (bench/profile_server.py
        --scenario handshake: 883 -> 875 calls per connection).
        """
        if self._protocol.closed_ok:
            return
        ended = self._closed_error()
        # Raised from a local cleared on the way out: the traceback holds this frame,
        # which must not hold the exception (a cycle only the collector frees).
        try:
            raise ended
        finally:
            del ended

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
                if self._stream_closed_by_us:
                    # The closing handshake ended here (_end_now) or in the writer.
                    return True
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
        elif type(event) is CloseReceived and self._end_now():
            return
        self._pump()

    def _end_now(self) -> bool:
        """The peer's close frame ended the closing handshake: end it here if the writer is idle.

        On a server the core's answer to the peer's close frame is our close frame (unless
        we sent ours first) and the end of TCP (RFC 6455 section 7.1.1: the server closes
        first). When nothing is queued or being written, this task, the reader, writes
        the frame through itself and closes the socket, as the writer would, and its
        read loop ends: the writer, woken by the teardown, returns at once. The reader
        does not wait for the writer's step and then for the socket's close to wake it
        (``bench/profile_server.py --scenario handshake``, with _end_tasks sparing such a
        writer: 6.80 -> 5.5 to 5.9 task steps, 1,030 -> 923 calls). Anything else (a
        client, TLS or a memory stream, frames queued or a write in flight, a partial
        write or an error) goes to the writer as before. Returns whether TCP is closed.
        """
        sock = self._sock
        protocol = self._protocol
        if sock is None or protocol.role is not Role.SERVER or self._out._frames or self._writing:
            return False
        # [our close frame,] then b"", the end of TCP (see WebSocketProtocol.data_to_send).
        frames = protocol.data_to_send()
        frame = frames[0]
        if frame:
            try:
                sent = _write_now(sock, frame)
            except _TRANSPORT_ERRORS:
                sent = 0  # the writer meets the error again and reports it
            self._bytes_sent += sent
            if sent < len(frame):
                frames[0] = frame[sent:]
                self._pump(frames)
                return False
        self._closing = True
        self._stream_closed_by_us = True
        # What the writer's _end_transport does, in this task.
        sock.close()
        return True

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
            self._end_state()
            if clean:
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
            self._ended()

    def _end_state(self) -> None:
        """The connection's state at its end: CLOSED, nothing to write, the writer released."""
        self._protocol.receive_eof()
        # Nothing can be written any more.
        self._protocol.data_to_send()
        self._closing = True
        # The reader is done once the outbound queue is closed (out._closed): closing it
        # here, and only here, is what marks the end of reading.
        out = self._out
        if out._writer.task is not None:
            # The writer waits for frames: woken by the close below, it returns
            # without a checkpoint, and there is nothing to cancel (see _end_tasks).
            self._writer_ends_alone = True
        out._close()
        for waiter in self._pings.values():
            waiter.event.set()
        self._pings = _NO_PINGS
        self._ka_due = math.inf

    def _ended(self) -> None:
        """The transport is closed: wake the application, the connection is over.

        Woken once the transport is closed, the application finds the connection over and
        does not have to wait a second time.
        """
        self._receiver.wake()
        self._set_closed()


def _discard(conn: object, type: MessageType, data: str | bytes) -> None:
    """Drop a message that comes after the owner's callbacks have stopped."""
