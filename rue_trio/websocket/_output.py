"""The write path a connection's senders share: write through when the writer is idle.

:class:`_ConnectionOutput` sends a data frame (``_put``) and writes what the hub queued
(``_flush``), from the sending task, without waking the writer when the socket takes it
all; the functions below write to a socket's descriptor without blocking, for the writer
(:mod:`._writer`) and these paths alike. See :mod:`rue_trio.websocket._connection` for the
theory of operation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import trio

from rue_trio._sockio import FD_IO, socket_error

from ._core import _ConnectionCore
from ._queue import _Buffer, _rest

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
_A = TypeVar("_A")
_R = TypeVar("_R")
_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _ConnectionOutput(_ConnectionCore):
    """The write-through of data frames, shared by every sending task."""

    __slots__ = ()

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


def _for_write(batch: list[_Buffer]) -> tuple[_Buffer | list[_Buffer], int]:
    """What to write for a batch of buffers, and its size: one buffer, or the batch itself.

    The only buffer; the batch itself for a gathering write when it is large and short
    enough (see _GATHER_MIN) and the platform has one (not Windows); else the batch
    joined.
    """
    if len(batch) == 1:
        data = batch[0]
        return data, len(data)
    if len(batch) <= _MAX_GATHER and FD_IO:
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
        raise socket_error(exc) from exc


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
                raise socket_error(exc) from exc
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
                raise socket_error(exc) from exc
            if sent >= total:
                return
