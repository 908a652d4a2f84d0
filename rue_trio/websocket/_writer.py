"""A WebSocket connection's writer task, which also runs the keepalive.

:class:`_ConnectionWriter` writes what the outbound queue holds under the write bound,
steps the keepalive at its writer's deadline, and ends the transport when the core asks.
See :mod:`rue_trio.websocket._connection` for the theory of operation.
"""

from __future__ import annotations

import math

import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio._sockio import FD_IO
from rue_trio.protocol import State

from ._output import (
    _MAX_WRITE,
    _TRANSPORT_ERRORS,
    _ConnectionOutput,
    _for_write,
    _send_to_socket,
    _write_now,
)
from ._queue import _Buffer

# A write renews its bound (ConnectionConfig.write_timeout) at least once per this many
# bytes: the bound is on progress, not on a whole write of up to _MAX_WRITE.
_CHUNK = 1 << 16


class _ConnectionWriter(_ConnectionOutput):
    """The writer task, its write bound and the keepalive it runs."""

    __slots__ = ()

    async def _run_writer(self) -> None:
        out = self._out
        stream = self._stream
        keepalive = self._config.ping_interval is not None
        # A plain socket is written through its own send calls, each one a step of
        # progress that renews the write bound; any other stream by chunks.
        sock = stream.socket if type(stream) is trio.SocketStream else None
        # The flag tells _end_tasks whether to cancel: from here on, until it returns.
        self._writer_ends_alone = False
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
                                    sent = _write_now(sock, data) if FD_IO else 0
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
            self._writer_ends_alone = True

    def _writer_goes_on(self, scope: trio.CancelScope) -> bool:
        """After the writer's scope ended: whether the writer goes on in a fresh scope."""
        now = trio.current_time()
        if not scope.cancelled_caught or self._out._closed or now < scope.deadline:
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
