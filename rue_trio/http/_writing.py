"""Writing responses on an :class:`~rue_trio.http.HTTPConnection`, and handing it over.

:meth:`~rue_trio.http.HTTPConnection.respond`,
:meth:`~rue_trio.http.HTTPConnection.respond_stream` and
:meth:`~rue_trio.http.HTTPConnection.switch_protocols` answer the current request; every
write is bounded by ``write_timeout``; an error is answered and the connection closed
gracefully (``_fail``, ``_linger``). The theory of operation is in ``_connection.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, TypeAlias, cast

import h11
import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio.http._core import _TRANSPORT_ERRORS, _UPGRADED, READ_SIZE, _HTTPCore
from rue_trio.http._socket_io import write_now

__all__ = ["HeaderList"]

#: After an error response: how long and how much to read and discard before closing.
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 1 << 20

#: Response header fields as the app passes them.
HeaderList: TypeAlias = Sequence[tuple[bytes | str, bytes | str]]

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

_CLOSE: Final = (b"connection", b"close")


class _DateCache:
    """The ``Date`` header value (RFC 9110 section 6.6.1), formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True).encode("ascii")
            self._second = now
        return self._value


_date = _DateCache()


class _HTTPWriting(_HTTPCore):
    """Responses, the switch of protocols, and the graceful close after an error."""

    __slots__ = ()

    def _head(self, status: int, headers: HeaderList, length: int | None) -> bytes:
        fields: list[tuple[bytes | str, bytes | str]] = [(b"date", _date.get())]
        if self._server_header is not None:
            fields.append((b"server", self._server_header))
        if length is not None and status != 204 and status != 304:
            fields.append((b"content-length", b"%d" % length))
        if self._shutting_down:
            fields.append(_CLOSE)
        fields.extend(headers)
        try:
            # h11 takes str or bytes in each field; its annotation is narrower.
            response = h11.Response(
                status_code=status,
                headers=cast("list[tuple[bytes, bytes]]", fields),
                reason=_REASONS.get(status, b""),
            )
            return self._h11.send(response)
        except h11.LocalProtocolError as exc:
            raise ValueError(f"cannot send this response: {exc}") from exc

    def _check_unanswered(self) -> None:
        if self.status is not None:
            raise RuntimeError("a response was already sent for this request")

    async def _send(self, data: bytes) -> None:
        """Write under ``write_timeout``: a client that stops reading counts as gone."""
        with trio.move_on_after(self._limits.write_timeout) as scope:
            try:
                await self._stream.send_all(data)
            except _TRANSPORT_ERRORS:
                self.client_gone = True
                raise
        if scope.cancelled_caught:
            self.client_gone = True
            raise trio.BrokenResourceError(
                f"the client read nothing for {self._limits.write_timeout:g}s (write_timeout)"
            )

    async def respond(self, status: int, headers: HeaderList = (), body: bytes = b"") -> None:
        """Send a complete response to the current request.

        ``Date``, ``Server`` and ``Content-Length`` are added here: do not pass them.
        The body is not sent for a ``HEAD`` request, nor with 204 or 304, but the
        headers are those of the ``GET`` response (RFC 9110 section 9.3.2).

        Args:
            status: the status code, 200 to 999.
            headers: extra header fields, as byte or ASCII string pairs.
            body: the whole body.

        Raises:
            RuntimeError: a response was already sent.
            ValueError: the status or a header is invalid.
            trio.BrokenResourceError: the client is gone, or read nothing for
                ``write_timeout`` seconds (:attr:`client_gone` is set).

        Cancellation: a cancelled write may leave a partial response on the stream;
        the connection then closes.
        """
        self._check_unanswered()
        head = self._head(status, headers, len(body))
        self.status = status
        h = self._h11
        if body and not self._head_only and status != 204 and status != 304:
            data = h.send(h11.Data(data=body))
            h.send(h11.EndOfMessage())
            if len(data) <= READ_SIZE:
                await self._send(head + data)
            else:
                await self._send(head)
                await self._send(data)
        else:
            h.send(h11.EndOfMessage())
            await self._send(head)

    async def respond_stream(
        self,
        status: int,
        headers: HeaderList,
        chunks: AsyncIterable[bytes],
        content_length: int | None = None,
    ) -> None:
        """Send a response whose body comes in chunks.

        With ``content_length`` the chunks must add up to exactly that many bytes;
        without it, the body is sent chunked (HTTP/1.1) or delimited by closing the
        connection (HTTP/1.0). For a ``HEAD`` request with ``content_length``, the
        chunks are not consumed.

        Args:
            status: the status code.
            headers: extra header fields (not ``Content-Length``).
            chunks: the body, in order.
            content_length: the body's total size, if known.

        Raises:
            RuntimeError: a response was already sent.
            ValueError: the status or a header is invalid, or the chunks do not add up
                to ``content_length``.
            trio.BrokenResourceError: the client is gone, or read nothing for
                ``write_timeout`` seconds.

        Cancellation: the response is left incomplete and the connection closes.
        """
        self._check_unanswered()
        h = self._h11
        await self._send(self._head(status, headers, content_length))
        self.status = status
        if not (self._head_only and content_length is not None):
            try:
                async for chunk in chunks:
                    if chunk:
                        await self._send(h.send(h11.Data(data=chunk)))
                tail = h.send(h11.EndOfMessage())
            except h11.LocalProtocolError as exc:
                raise ValueError(f"the body does not match the response: {exc}") from exc
        else:
            tail = h.send(h11.EndOfMessage())
        if tail:
            await self._send(tail)

    async def switch_protocols(self, response: bytes) -> tuple[trio.abc.Stream, bytes]:
        """Write a complete ``101 Switching Protocols`` response and hand the stream over.

        After this call the HTTP layer never reads or writes the stream again; it is
        closed by the connection's owner when the dispatch function returns.

        Args:
            response: the raw response bytes, status line to the blank line.

        Returns:
            ``(stream, trailing_data)``: the stream, and the bytes the client sent after
            the request (such as its first WebSocket frame), which belong to the new
            protocol (RFC 9110 section 7.8).

        Raises:
            RuntimeError: a response was already sent, or the request had a body.
            trio.BrokenResourceError: the client is gone.

        Cancellation: if cancelled during the write, the stream may hold part of the
        response; the connection then closes. A client that reads nothing for
        ``write_timeout`` seconds is dropped this way too: the call is cancelled.
        """
        self._check_unanswered()
        if self._has_body:
            raise RuntimeError("cannot switch protocols after a request with a body")
        # The status is set first, so that the scope's 408 (for a request that timed
        # out) is not attempted on a client that stopped reading.
        self.status = 101
        stream = self._stream
        await checkpoint_if_cancelled()
        try:
            # Written at once when the kernel takes it all (the usual case), without
            # the stream's schedule point (see _socket_io).
            sent = write_now(stream, response)
            if sent < len(response):
                # The write bound is the deadline of the connection's scope, already
                # entered, rather than a scope of its own as _send has: one cancel
                # scope less per handshake (profile_server.py --scenario handshake: 5
                # -> 4 scopes, 1,467 -> 1,435 calls).
                scope = self._scope
                scope.deadline = trio.current_time() + self._limits.write_timeout
                await stream.send_all(response[sent:])
                scope.deadline = math.inf
        except _TRANSPORT_ERRORS:
            self.client_gone = True
            raise
        self._phase = _UPGRADED
        if self._shutting_down:
            # The drain started while this handshake ran: the new protocol closes
            # itself (a WebSocket with 1001) when it sees the cancellation.
            self._scope.cancel()
        trailing_data = self._h11.trailing_data[0]
        # The stream is not HTTP any more: let h11's state go (about 1 KiB that an idle
        # WebSocket would keep for its whole life). Nothing reads it after a 101: the
        # response methods refuse first, and _fail only looks at it without a status.
        del self._h11
        return self._stream, trailing_data

    async def _fail(self, status: int, *, linger: bool = True) -> None:
        """Answer an error unless a response (or a 101) went out, then close gracefully."""
        if self.status is None and (
            self._h11.our_state is h11.IDLE or self._h11.our_state is h11.SEND_RESPONSE
        ):
            h = self._h11
            reason = _REASONS.get(status, b"")
            body = b"%d %s" % (status, reason)
            fields = [
                (b"date", _date.get()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                _CLOSE,
            ]
            data = h.send(h11.Response(status_code=status, headers=fields, reason=reason))
            if not self._head_only:
                data += h.send(h11.Data(data=body))
            h.send(h11.EndOfMessage())
            self.status = status
            await self._send(data)
        else:
            await trio.lowlevel.checkpoint()
        if linger:
            await self._linger()

    async def _linger(self) -> None:
        """Half-close, then read and discard for a while (RFC 9112 section 9.6)."""
        stream = self._stream
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        else:
            await trio.lowlevel.checkpoint()
        with trio.move_on_after(_LINGER_SECONDS):
            drained = 0
            while drained < _LINGER_BYTES:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                drained += len(data)
