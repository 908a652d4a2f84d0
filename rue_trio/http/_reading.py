"""Reading a request on an :class:`~rue_trio.http.HTTPConnection`, under its limits.

``_read_request`` reads one request, head and body, from h11 under the connection's read
deadline, and refuses (``_Reject``, answered by the request loop) what breaks a limit or
frames a message ambiguously. The theory of operation is in ``_connection.py``.
"""

from __future__ import annotations

import math
from typing import Final, cast

import h11
import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio.http._core import _ACTIVE, READ_SIZE
from rue_trio.http._socket_io import read_now
from rue_trio.http._writing import _HTTPWriting

#: A chunk size this large is no body size but an attack (it does not fit 63 bits).
_ABSURD_CHUNK: Final = 1 << 63


class _Reject(Exception):
    """A request refused while it was being read; answered with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _check_chunk(h: h11.Connection, room: int) -> None:
    """Refuse the chunk h11 is reading if its announced size exceeds ``room`` bytes.

    h11 does not expose a chunk's size; its reader keeps what is left of it. Should a
    later h11 not have it, the body limit still holds as the bytes arrive.
    """
    pending = getattr(getattr(h, "_reader", None), "_bytes_in_chunk", 0)
    if type(pending) is int and pending > room:
        raise _Reject(400 if pending >= _ABSURD_CHUNK else 413)


class _HTTPReading(_HTTPWriting):
    """Reading one request, and the checks h11 leaves to the server."""

    __slots__ = ()

    async def _read_request(
        self, first: bool
    ) -> tuple[h11.Request, tuple[tuple[bytes, bytes], ...], bytes] | None:
        """Read one request, head and body; ``None`` when the connection should end.

        The read runs under a deadline set on the connection's scope (cheaper than a
        scope per request): when it passes, :meth:`serve` answers 408 if the request
        had started. Transport errors propagate (the client left).
        """
        h = self._h11
        limits = self._limits
        stream = self._stream
        scope = self._scope
        # A pipelined request may already be buffered; otherwise the client gets the
        # idle keep-alive time to start the next one.
        buffered = 0 if first else len(h.trailing_data[0])
        if buffered:
            self._phase = _ACTIVE
            scope.deadline = trio.current_time() + limits.request_timeout
            # Let other tasks run even when a client pipelines many requests.
            await trio.lowlevel.checkpoint()
        else:
            if not first:
                scope.deadline = trio.current_time() + limits.keep_alive_timeout
            # What the kernel has at once, without the stream's schedule point (see
            # _socket_io); the stream's own read if it would block.
            ready = read_now(stream, READ_SIZE)
            if ready is None:
                if first:
                    scope.deadline = self._first_deadline
                data = await stream.receive_some(READ_SIZE)
            else:
                await checkpoint_if_cancelled()
                data = ready
            if not data:
                return None
            self._phase = _ACTIVE
            if not first:
                scope.deadline = trio.current_time() + limits.request_timeout
            # h11 only appends the chunk to its buffer: a bytearray is fine.
            h.receive_data(cast(bytes, data))
            buffered = len(data)
        event_request: h11.Request | None = None
        headers: tuple[tuple[bytes, bytes], ...] = ()
        length_checked = False
        body: list[bytes] = []
        body_size = 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                if scope.deadline == math.inf:
                    # The first request, whose first read did not wait: it waits now.
                    scope.deadline = self._first_deadline
                if event_request is not None:
                    if not length_checked:
                        # Only now, as a request without a body (the WebSocket
                        # handshake) never gets here.
                        self._check_length(event_request)
                        length_checked = True
                    # A chunk announces its size before its bytes: refuse at once
                    # one that cannot fit rather than wait for it.
                    _check_chunk(h, limits.max_body_size - body_size)
                    if h.they_are_waiting_for_100_continue:
                        # RFC 9110 section 10.1.1: the client waits for a go-ahead.
                        await self._send(
                            h.send(h11.InformationalResponse(status_code=100, headers=[]))
                        )
                data = await stream.receive_some(READ_SIZE)
                if event_request is None:
                    buffered += len(data)
                h.receive_data(cast(bytes, data))
            elif isinstance(event, h11.Data):
                body_size += len(event.data)
                if body_size > limits.max_body_size:
                    raise _Reject(413)
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.Request):
                # h11 bounds a head only while it is incomplete: one that came whole
                # in a read is measured here (cheaply: only if it could be too big).
                if (
                    buffered > limits.max_header_size
                    and buffered - len(h.trailing_data[0]) > limits.max_header_size
                ):
                    raise _Reject(431)
                # Iterated once: h11's Headers is a Sequence (two calls per field).
                headers = tuple(event.headers)
                framed = self._check_head(event, headers)
                event_request = event
                if not framed:
                    # No body (no Content-Length or Transfer-Encoding, RFC 9112 section
                    # 6.3): h11's end of the message is taken later, and only if the
                    # connection serves another request (see serve); an upgrade never
                    # needs it (bench/profile_server.py --scenario handshake: 877 -> 851 calls).
                    break
            else:
                # ConnectionClosed or PAUSED: h11 yields neither once bytes of a
                # new request arrived; should it ever, end the connection.
                return None
        if scope.deadline != math.inf:
            scope.deadline = math.inf
        assert event_request is not None
        return event_request, headers, body[0] if len(body) == 1 else b"".join(body)

    def _check_head(self, event: h11.Request, headers: tuple[tuple[bytes, bytes], ...]) -> bool:
        """Refuse a head h11 accepts but this server does not (see the module docstring).

        Returns whether the head frames a body (``Content-Length`` or
        ``Transfer-Encoding``).
        """
        if len(headers) > self._limits.max_header_count:
            raise _Reject(431)
        version = event.http_version
        if version != b"1.1" and version != b"1.0":
            raise _Reject(505)
        framing = 0
        for name, _ in headers:
            if name == b"content-length":
                framing |= 1
            elif name == b"transfer-encoding":
                framing |= 2
        if framing == 3 or (framing & 2 and version == b"1.0"):
            # RFC 9112 section 6.1: both, or Transfer-Encoding in HTTP/1.0, is faulty
            # framing, on which a proxy and this server could disagree.
            raise _Reject(400)
        return framing != 0

    def _check_length(self, event: h11.Request) -> None:
        for name, value in event.headers:
            if name == b"content-length" and int(value) > self._limits.max_body_size:
                raise _Reject(413)
