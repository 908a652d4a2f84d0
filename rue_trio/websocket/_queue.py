"""The outbound frame queue: what the writer task writes, bounded by frames and bytes.

Why not a Trio memory channel? Three reasons, all about the hot path and the invariants
"Bounded everything", "The hub never waits on one client" and "Cancellation-safe"
(docs/topics/design.md):

* **A byte bound.** A memory channel counts items; 64 queued 1 MiB frames are not 64 queued
  pings. :class:`FrameQueue` is bounded by frames *and* by bytes.
* **Room before encoding.** :meth:`WebSocketConn.send` must wait for room *before* it
  encodes (and, with permessage-deflate, compresses) a message: a send cancelled while
  waiting must queue nothing and must not have advanced the compression context
  ("Cancellation-safe"). A channel only offers "wait, then put this already-built item".
* **Batching.** The writer takes everything queued at once and writes it with one
  ``send_all`` (capped in size), and control frames (pongs, the close frame) and the
  "close the transport" marker bypass the bounds: they are small and produced at the
  reader's own pace.

The queue holds ``bytes`` objects and never copies them: a broadcast frame encoded once is
the same object in every recipient's queue ("Encode once"). The connection also queues,
without copying, the rest of a frame a write took part of (a view of it), and a large
frame as its header and its payload, two entries written with one gathering write.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._waiter import Waiter

__all__ = ["FrameQueue", "FrameQueueStatistics"]

# What the queue holds: frames, or parts of frames (see the module's docstring).
_Buffer = bytes | memoryview


def _rest(buffers: list[_Buffer], sent: int) -> list[_Buffer]:
    """What is left of ``buffers`` once their first ``sent`` bytes were written (no copy)."""
    for i, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            rest = buffers[i:]
            if sent:
                rest[0] = memoryview(buffer)[sent:]
            return rest
        sent -= size
    return []


@dataclass(frozen=True, slots=True)
class FrameQueueStatistics:
    """A snapshot of a :class:`FrameQueue`.

    Attributes:
        queued_frames: frames waiting to be written (a large frame the connection
            sends counts twice: its header and its payload are queued apart).
        queued_bytes: bytes waiting to be written.
        max_frames: the frame bound.
        max_bytes: the byte bound.
        tasks_waiting_room: tasks blocked in :meth:`FrameQueue.send` (or in a connection's
            ``send``) until there is room.
        accepting: whether data frames are still accepted (``False`` once the connection
            started closing).
    """

    queued_frames: int
    queued_bytes: int
    max_frames: int
    max_bytes: int
    tasks_waiting_room: int
    accepting: bool


class FrameQueue:
    """A bounded FIFO of encoded WebSocket frames, read by one writer task.

    This is the "send channel of outgoing frames" of a connection: the
    :class:`~rue_trio.hub.Hub` holds it and offers pre-encoded broadcast frames with
    :meth:`send_nowait`, so it never waits on one slow client.

    The queue has room while it holds fewer than ``max_frames`` frames *and* fewer than
    ``max_bytes`` bytes; one frame may therefore take it past ``max_bytes`` (a frame larger
    than the bound must still be sendable). Frames offered here are written as they are:
    they must be complete frames valid on this connection (unmasked server frames, as
    :func:`rue_trio.protocol.encode_message` builds them, on a server connection).

    Once the connection starts its closing handshake the queue stops accepting data
    frames (RFC 6455 section 5.5.1: no data frames after a close frame) and raises
    :class:`trio.BrokenResourceError`, like a channel whose receiver is gone.
    """

    __slots__ = (
        "_accepting",
        "_closed",
        "_frames",
        "_max_bytes",
        "_max_frames",
        "_nbytes",
        "_room_lot",
        "_through",
        "_writer",
    )

    def __init__(self, max_frames: int = 64, max_bytes: int = 4 * 1024 * 1024) -> None:
        """Create an empty queue.

        Args:
            max_frames: at most this many frames are queued (control frames excepted).
            max_bytes: no frame is accepted while this many bytes are queued.

        Raises:
            ValueError: if a bound is smaller than 1.
        """
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("max_frames and max_bytes must be at least 1")
        # A list, not a deque: the writer usually takes it whole (see _take), and an
        # empty list costs 56 bytes where a deque allocates a 64-slot block at once;
        # an idle connection holds one queue.
        self._frames: list[_Buffer] = []
        self._nbytes = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        # Senders waiting for room (created when one first waits), and the writer
        # waiting for frames.
        self._room_lot: ParkingLot | None = None
        self._writer = Waiter()
        self._accepting = True
        self._closed = False
        # Whether a frame was written through since the writer last waited or the
        # reader last read (see _idle).
        self._through = False

    def __len__(self) -> int:
        return len(self._frames)

    def send_nowait(self, frame: bytes) -> int:
        """Queue a complete encoded frame if there is room, without waiting.

        Args:
            frame: the frame's bytes (not copied).

        Returns:
            The bytes queued now, this frame included: what a broadcaster needs to see a
            queue filling before it is full.

        Raises:
            trio.WouldBlock: the queue is full: the connection is not keeping up.
            trio.BrokenResourceError: the connection is closing or closed.
            ValueError: ``frame`` is empty.
        """
        queued = self._offer_quietly(frame)
        if self._writer.task is not None:
            self._writer.wake()
        return queued

    async def send(self, frame: bytes) -> None:
        """Queue a complete encoded frame, waiting for room if the queue is full.

        Cancellation: if cancelled while waiting, the frame was not queued; once
        queued, the call completes.

        Args:
            frame: the frame's bytes (not copied).

        Raises:
            trio.BrokenResourceError: the connection is closing or closed.
            ValueError: ``frame`` is empty.
        """
        await checkpoint_if_cancelled()
        if self._has_room(len(frame)):
            self.send_nowait(frame)
            await cancel_shielded_checkpoint()
            return
        await self._wait_room(len(frame))
        self.send_nowait(frame)

    def statistics(self) -> FrameQueueStatistics:
        """Return a snapshot of the queue's state."""
        return FrameQueueStatistics(
            queued_frames=len(self._frames),
            queued_bytes=self._nbytes,
            max_frames=self._max_frames,
            max_bytes=self._max_bytes,
            tasks_waiting_room=0 if self._room_lot is None else len(self._room_lot),
            accepting=self._accepting,
        )

    # The connection's side (same package): not part of the public surface.

    def _is_accepting(self) -> bool:
        """Whether data frames are accepted (until the connection starts closing)."""
        return self._accepting

    def _is_closed(self) -> bool:
        """Whether the transport is gone (see :meth:`_close`)."""
        return self._closed

    def _bytes_full(self) -> bool:
        """Whether ``max_bytes`` or more are queued: control frames too should wait."""
        return self._nbytes >= self._max_bytes

    def _wait_frames(self) -> Coroutine[Any, Any, object]:
        """Sleep until a frame is queued or the queue closes: ``await queue._wait_frames()``.

        For the one writer task; a plain method, as :meth:`Waiter.wait`. A waiting writer
        writes nothing: frames may be written through again (see :meth:`_idle`).
        """
        self._through = False
        return self._writer.wait()

    def _wake_writer(self) -> None:
        """Wake the writer if it waits for frames (to look at its deadline again)."""
        self._writer.wake()

    def _offer_quietly(self, frame: bytes) -> int:
        """:meth:`send_nowait` without waking the writer: the caller flushes later.

        The hub offers a batch of broadcasts this way, then flushes each member once (the
        connection's ``_hub_flush``): one write per member and batch, and no writer woken
        when the kernel takes it all.

        Raises:
            trio.WouldBlock, trio.BrokenResourceError, ValueError: as :meth:`send_nowait`.
        """
        if not self._accepting:
            raise trio.BrokenResourceError("the WebSocket connection is closing")
        if not self._has_room():
            raise trio.WouldBlock
        if not frame:
            raise ValueError("a frame cannot be empty")
        self._frames.append(frame)
        self._nbytes += len(frame)
        return self._nbytes

    def _idle(self) -> bool:
        """Whether the sending task may write a frame itself instead of queueing it.

        The writer waits for frames (so nothing is being written), nothing is queued (so
        the frame goes next), and nothing was written through
        since the writer last waited or the reader last read. The last rule keeps a task
        that sends a burst without reading (a push loop, a history replay) from making
        one system call per message: its first message goes at once, the rest are
        queued for the writer, which writes them together when the task yields.
        """
        return self._writer.task is not None and not self._frames and not self._through

    def _queue_batch(self) -> None:
        """Send the coming frames through the writer: a reader's batch of replies.

        No frame is written through until the writer has waited or the reader read
        again (as after a write-through, see :meth:`_idle`); the writer is woken as usual
        by the first, and writes them all with one system call when the sending task
        yields: nothing waits for the batch's end.
        """
        self._through = True

    def _written(self, data: _Buffer | list[_Buffer], sent: int, size: int) -> None:
        """Everything queued, ``size`` bytes as ``data``, was written up to ``sent`` bytes.

        ``data`` is one buffer (the queue joined) or the queued buffers themselves. The
        rest (if any) stays queued, in front, as views; the caller wakes the writer for
        it. Senders waiting for room are released as by :meth:`_take`.
        """
        self._frames = _rest(data if isinstance(data, list) else [data], sent)
        self._nbytes = size - sent
        lot = self._room_lot
        if lot:
            lot.unpark_all()

    def _has_room(self, size: int = 1) -> bool:
        """The room rule, in one place: whether a data frame of ``size`` bytes is accepted.

        Fewer than ``max_frames`` frames, and the frame fits under ``max_bytes`` or the
        queue is empty (a frame bigger than the bound must still be sendable). The hub
        asks with the default ``size`` of 1: room while the queue is under its bound,
        one shared frame may go past it. An application's ``send`` asks with the size of
        its message, so that what one connection queues stays within ``max_bytes`` (or one
        frame, when that frame alone is bigger): the per-connection budget of the
        security limits counts on it.
        """
        nbytes = self._nbytes
        return (
            self._accepting
            and len(self._frames) < self._max_frames
            and (nbytes + size <= self._max_bytes or not nbytes)
        )

    async def _wait_bytes_room(self) -> None:
        """Park while the queue holds ``max_bytes`` or more, until it drains or closes.

        The reader waits here before parsing more input, so that the pongs it queues
        (they bypass the bounds) stay within the byte bound plus one read's worth.
        Cancellation: nothing changes.
        """
        await checkpoint_if_cancelled()
        # The hub's offers do not wake the writer (it flushes after its batch): the
        # writer may not have been woken for what fills the queue.
        self._writer.wake()
        lot = self._room_lot
        if lot is None:
            lot = self._room_lot = ParkingLot()
        while self._nbytes >= self._max_bytes and not self._closed:
            await lot.park()

    async def _wait_room(self, size: int = 1) -> None:
        """Park until a data frame of ``size`` bytes would be accepted, or accepting stops.

        Called when there is no room; the caller checks ``_accepting`` afterwards.
        Cancellation: nothing changes.
        """
        # The hub's offers do not wake the writer (it flushes after its batch): the
        # writer may not have been woken for what fills the queue, and only it makes room.
        self._writer.wake()
        lot = self._room_lot
        if lot is None:
            lot = self._room_lot = ParkingLot()
        while True:
            await lot.park()
            if not self._accepting or self._has_room(size):
                return

    def _append(self, frame: _Buffer) -> None:
        """Queue a frame and wake the writer if it waits for frames."""
        self._frames.append(frame)
        self._nbytes += len(frame)
        if self._writer.task is not None:
            self._writer.wake()

    def _append_control(self, frame: bytes) -> None:
        """Queue a control frame, or ``b""`` for "close the transport", past the bounds.

        Control frames are counted in the queued bytes: the connection's reader stops
        parsing while the queue is full (see :meth:`_wait_bytes_room`), so a peer that
        sends pings and never reads our pongs cannot grow the queue without bound.
        """
        if self._closed:
            return
        if not frame:
            # Nothing may follow the end of the transport.
            self._stop_accepting()
        self._frames.append(frame)
        self._nbytes += len(frame)
        self._writer.wake()

    def _stop_accepting(self) -> None:
        """Refuse data frames from now on; what is queued is still written."""
        if self._accepting:
            self._accepting = False
            if self._room_lot is not None:
                self._room_lot.unpark_all()

    def _close(self) -> None:
        """Drop everything and release the writer: the transport is gone."""
        self._stop_accepting()
        self._closed = True
        self._frames.clear()
        self._nbytes = 0
        self._writer.wake()
        if self._room_lot is not None:
            self._room_lot.unpark_all()

    def _take(self, limit: int) -> tuple[list[_Buffer], bool]:
        """Remove queued frames until they hold ``limit`` bytes or more, or none is left.

        The batch goes past ``limit`` by one entry at most: a large frame is not cut
        from its header, queued apart before it.

        Returns:
            The frames, and whether the "close the transport" marker was reached.
        """
        frames = self._frames
        count = len(frames)
        size = 0
        taken = 0
        eof = False
        while taken < count:
            frame = frames[taken]
            if not frame:
                eof = True
                break
            if size >= limit:
                break
            size += len(frame)
            taken += 1
        if taken == count:
            # The usual case: everything goes, the list itself is the batch.
            batch = frames
            self._frames = []
        else:
            batch = frames[:taken]
            del frames[: taken + eof]
        self._nbytes -= size
        lot = self._room_lot
        if lot:
            lot.unpark_all()
        return batch, eof
