"""The sans-I/O WebSocket state machine (RFC 6455 sections 5 to 7, RFC 7692 section 6).

Theory of operation
-------------------
A :class:`WebSocketProtocol` is one side of one connection after the opening handshake.
It does no I/O: the caller feeds it the bytes that arrived
(:meth:`WebSocketProtocol.receive_data`, :meth:`WebSocketProtocol.receive_eof`), collects
what happened (:meth:`WebSocketProtocol.events_received`) and writes out what it produced
(:meth:`WebSocketProtocol.data_to_send`).

Receiving. ``receive_data`` appends to one buffer and parses everything it holds;
``buffer_data`` only appends, and ``next_event`` parses on demand, one event per call, so
that an I/O layer parses (and inflates) only while it has room for the result and reads
again only once the buffer is consumed. A frame's header is validated as soon as its header
bytes are there, before the payload is awaited: reserved bits and opcodes, the masking rule
for this role, the control frame rules, and the message size limit, which is counted
against what the message has assembled so far, so an oversized message is refused before
it is buffered (section 10.4); each continuation frame costs 64 bytes more, so empty or tiny
fragments reach the limit too. A control frame is parsed whole; a data frame's payload is
consumed as it arrives, into one growing buffer per message (not a part per frame). Text
is validated as it arrives, so invalid UTF-8 fails the connection at the read where it
becomes certain (section 8.1), and a text message may not take more than the limit as a
``str``. A compressed message (RSV1 on its first frame, RFC 7692 section 6) is
decompressed as it arrives under the remaining size budget.

Answering. The core answers for itself what the RFC makes automatic: every ping gets its
pong (section 5.5.2), a close frame gets its echo (section 5.5.1), and a violation fails the
connection (section 7.1.7): a close frame with the RFC's code is queued, then the "close the
transport" marker, ``b""``, and later input is ignored. The violation itself is kept in
:attr:`WebSocketProtocol.parser_exc` (without its traceback, which would make a reference
cycle) and becomes the ``__cause__`` of :attr:`WebSocketProtocol.close_exc`.
``receive_data`` fails at once; ``next_event`` stops parsing and leaves the failure to
:meth:`WebSocketProtocol.fail_on_violation`, so that the events before the violation can
be answered first. Neither raises for anything the peer sends.

Closing. ``OPEN`` lasts until a close frame is sent or received, then ``CLOSING``. When the
closing handshake completes the server asks to close TCP at once; the client waits for the
server to do so (section 7.1.1). ``receive_eof`` makes the state ``CLOSED``; without a
completed handshake that is an abnormal closure, 1006 (section 7.1.5).

Sending. ``send_*`` serialize frames into the outgoing list; a client masks with a fresh
key from the operating system's CSPRNG (section 10.3). :meth:`WebSocketProtocol.encode` returns one
message's bytes without queueing them, for an I/O layer that keeps its own bounded queue.
"""

from __future__ import annotations

import codecs
import enum
import os
import re
import struct
from collections.abc import Callable
from sys import getsizeof
from typing import TypeVar

from rue_trio.exceptions import (
    CloseFrame,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidPayloadError,
    MessageTooBigError,
    ProtocolError,
)

from ._deflate import PerMessageDeflate
from ._events import CloseReceived, Event, Message, Ping, Pong
from ._frames import (
    MessageType,
    Opcode,
    encode_close_payload,
    encode_frame,
    parse_close_payload,
)
from ._mask import apply_mask, unmask_at

__all__ = ["WebSocketProtocol", "Role", "State", "detach_traceback"]

_E = TypeVar("_E", bound=BaseException)


def detach_traceback(exc: _E) -> _E:
    """Drop the tracebacks of ``exc`` and of the exceptions chained to it; return ``exc``.

    An exception kept on an object, with a traceback whose frames refer back to that
    object, is a reference cycle: the object would wait for the cycle collector instead
    of being freed when its connection ends. The message and the chain stay.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


class Role(enum.Enum):
    """Which end of the connection a :class:`WebSocketProtocol` is."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """The connection's state after the opening handshake (RFC 6455 section 4.1 onwards)."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_TEXT = MessageType.TEXT
_BINARY = MessageType.BINARY
_UNPACK_16 = struct.Struct("!H").unpack_from
_UNPACK_64 = struct.Struct("!Q").unpack_from
# A close with one of these codes both ways is a normal closure (1005: no code given).
_OK_CODES = frozenset({1000, 1001, 1005})
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_MASK_POOL_SIZE = 4096
# Room without a bound, for receive_data().
_UNLIMITED = 1 << 62
# What each continuation frame costs against max_message_size, over its payload: about
# what a frame costs to handle, so that empty or one-byte fragments reach the limit.
_FRAME_COST = 64
# Lead bytes of UTF-8 sequences for characters that widen a str: beyond U+FFFF (4 bytes
# per character) and from U+0100 (2 bytes per character).
_ASTRAL = re.compile(rb"[\xf0-\xf4]")
_WIDE = re.compile(rb"[\xc4-\xef]")
_CONTINUATION_BYTES = [bytes((b,)) for b in range(0x80, 0xC0)]


class WebSocketProtocol:
    """One side of a WebSocket connection, as a sans-I/O state machine.

    Args:
        role: :attr:`Role.SERVER` or :attr:`Role.CLIENT`; it decides the masking rules.
        max_message_size: the largest message accepted, in bytes after decompression,
            counted while the message is assembled; ``None`` for no limit (not advised on
            a server: section 10.4).
        deflate: the permessage-deflate codec when the handshake negotiated it.

    Attributes:
        state: the :class:`State`.
        close_rcvd: the close frame the peer sent, once it has.
        close_sent: the close frame we sent, once we have.
        parser_exc: the violation that failed the connection, if the peer broke the protocol.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = 1 << 20,
        deflate: PerMessageDeflate | None = None,
    ) -> None:
        self.role = role
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.state = State.OPEN
        self.close_rcvd: CloseFrame | None = None
        self.close_sent: CloseFrame | None = None
        self.close_rcvd_then_sent: bool | None = None
        self.parser_exc: ProtocolError | None = None
        self._is_client = role is Role.CLIENT
        # Section 5.1: frames from a client are masked, frames from a server are not.
        self._expect_mask = 0 if self._is_client else 0x80
        # Section 5.2 / RFC 7692 section 6: RSV1 is legal only with the extension.
        self._rsv_mask = 0x30 if deflate is not None else 0x70
        # Undecoded input, parsed from _pos on; _need: the bytes a header needs there.
        self._buf = bytearray()
        self._pos = 0
        self._need = 2
        self._reading = True
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # The data frame whose payload is being consumed as it arrives: the bytes left,
        # then its FIN bit and its masking key, rotated to the next byte's place. One
        # attribute for the two: past 30 attributes, an instance's dict stops sharing
        # its keys with the class and costs 1.3 KiB more per connection.
        self._frame_left = 0
        self._frame_fin_key: tuple[bool, bytes] = (False, b"")
        # The message being reassembled: its type, bytes, size (frame overheads
        # included), compression and UTF-8 validator.
        self._frag_type: MessageType | None = None
        self._assembly = bytearray()
        self._frag_size = 0
        self._frag_compressed = False
        self._frag_decoder: codecs.IncrementalDecoder | None = None
        # The message being sent in fragments, if any: its compression and opcode.
        self._send_fragmented = False
        self._send_compressed = False
        self._mask_pool = b""
        self._mask_pos = _MASK_POOL_SIZE

    # ----------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer and parse them all.

        Parses every complete frame, queues the resulting events for
        :meth:`events_received` and any automatic answers. A protocol violation fails the
        connection at once instead of raising. An I/O layer that bounds its memory uses
        :meth:`buffer_data` and :meth:`next_event` instead.

        Args:
            data: the bytes, in any chunking; an empty chunk is ignored.
        """
        self.buffer_data(data)
        try:
            self._parse(self._events, _UNLIMITED, _UNLIMITED, False)
        except ProtocolError as exc:
            self._fail_on(exc)

    def buffer_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer without parsing them.

        Parse them with :meth:`next_events` (or :meth:`next_event`) while the caller has
        room for what they decode to. Append the next read only once parsing returned
        nothing: the buffer then holds at most one read, plus an incomplete header or
        control frame (a data frame's payload is consumed as it arrives).

        Args:
            data: the bytes, in any chunking; ignored once reading stopped.
        """
        if self._reading:
            self._buf += data

    def next_events(self, max_messages: int, max_bytes: int) -> list[Event]:
        """Parse the buffered bytes into events, as far as the caller has room.

        Parsing stops after ``max_messages`` data messages, or once the messages parsed
        take ``max_bytes`` or more as Python holds them (``sys.getsizeof`` of their
        data; the message that crosses the bound is returned), or after any control
        event (so that the caller sees a ping's pong or a close before parsing on), or
        when the buffer runs out.

        Automatic answers (a pong, a close echo) are queued as the frames that call for
        them are parsed. A protocol violation does not fail the connection here: parsing
        stops, :attr:`parser_exc` is set and the events before it are returned, so that
        the caller can deliver them and let the application answer them; then it calls
        :meth:`fail_on_violation`.

        Args:
            max_messages: parse at most this many data messages (at least 1).
            max_bytes: stop once the messages parsed take this many bytes (at least 1).

        Returns:
            The events, oldest first; empty when more bytes are needed or reading stopped.
        """
        events: list[Event] = []
        try:
            self._parse(events, max_messages, max_bytes, True)
        except ProtocolError as exc:
            self.parser_exc = detach_traceback(exc)
            self._stop_reading()
        return events

    def next_event(self) -> Event | None:
        """Parse the buffered bytes until the next event, and return it.

        As :meth:`next_events` with room for one message.

        Returns:
            The next event, or ``None`` when more bytes are needed or reading stopped.
        """
        events = self.next_events(1, 1)
        return events[0] if events else None

    def fail_on_violation(self) -> None:
        """Fail the connection for the violation :meth:`next_event` found, if any."""
        exc = self.parser_exc
        if exc is not None:
            self.fail(exc.close_code, str(exc)[:120])

    def _parse(
        self, events: list[Event], messages: int, nbytes: int, stop_at_control: bool
    ) -> None:
        """Parse from ``_pos`` into ``events``, within the room given (see next_events)."""
        if not self._reading:
            return
        buf = self._buf
        max_size = self.max_message_size
        expect_mask = self._expect_mask
        # The hot loop keeps its position and need in locals, stored back on the way out.
        pos = self._pos
        need = self._need
        end = len(buf)
        while True:
            left = self._frame_left
            if left:
                # Inside a data frame's payload: consume what arrived (section 5.4).
                if pos == end:
                    break
                n = min(left, end - pos)
                self._frame_left = left = left - n
                fin, key = self._frame_fin_key
                if key:
                    chunk = apply_mask(memoryview(buf)[pos : pos + n], key)
                    phase = n & 3
                    self._frame_fin_key = (fin, key[phase:] + key[:phase])
                else:
                    chunk = bytes(buf[pos : pos + n])
                pos += n
                message = self._data(chunk, not left and fin)
                if message is not None:
                    events.append(message)
                    messages -= 1
                    nbytes -= getsizeof(message.data)
                    if messages <= 0 or nbytes <= 0:
                        self._pos = pos
                        return
                continue
            if end - pos < need:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hlen = 2
            if length == 126:
                if end - pos < 4:
                    need = 4
                    break
                (length,) = _UNPACK_16(buf, pos + 2)
                hlen = 4
            elif length == 127:
                if end - pos < 10:
                    need = 10
                    break
                (length,) = _UNPACK_64(buf, pos + 2)
                hlen = 10
                # Section 5.2: the most significant bit MUST be 0.
                if length >> 63:
                    raise ProtocolError("64-bit payload length with the most significant bit set")
            if b0 & self._rsv_mask:
                raise ProtocolError("reserved bits set without an extension that defines them")
            if (b1 & 0x80) != expect_mask:
                # Sections 5.1 and 5.3.
                if expect_mask:
                    raise ProtocolError("unmasked frame from a client")
                raise ProtocolError("masked frame from a server")
            opcode = b0 & 0x0F
            if opcode >= 8:
                # Section 5.5: control frames are short, whole and never compressed.
                if length > 125:
                    raise ProtocolError("control frame payload over 125 bytes")
                if not b0 & 0x80:
                    raise ProtocolError("fragmented control frame")
                if b0 & 0x40:
                    raise ProtocolError("RSV1 set on a control frame")
                if opcode > 10:
                    raise ProtocolError(f"reserved opcode {opcode:#x}")
            elif opcode > 2:
                # Section 5.2: opcodes 0x3-0x7 are reserved; refuse before the payload.
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            elif max_size is not None:
                # Section 10.4: refuse an oversized message before buffering it. Every
                # continuation frame costs a fixed overhead, so that endless empty or tiny
                # fragments reach the limit too. Once compressed, only the frame's wire
                # size is known here; the codec checks the inflated size as it runs.
                if opcode == 0:
                    size = self._frag_size + _FRAME_COST
                    if not self._frag_compressed:
                        size += length
                else:
                    size = length
                if size > max_size:
                    raise MessageTooBigError(f"message over the {max_size}-byte limit")
            if expect_mask:
                hlen += 4
            start = pos + hlen
            frame_end = start + length
            if frame_end > end:
                if opcode >= 8 or end < start:
                    # A control frame is parsed whole; so is every frame's header.
                    need = frame_end - pos if end >= start else hlen
                    break
                # A data frame's payload is consumed as it arrives: at most one read
                # is ever buffered, and text is validated before the frame is complete.
                self._begin(b0, opcode)
                self._frame_left = length
                key = bytes(buf[pos + hlen - 4 : start]) if expect_mask else b""
                self._frame_fin_key = (b0 & 0x80 != 0, key)
                pos = start
                need = 2
                continue
            need = 2
            if expect_mask:
                # The key sits right before the payload (section 5.2).
                payload = unmask_at(buf, start, frame_end)
            elif length < 1024:
                payload = bytes(buf[start:frame_end])
            else:
                # Through a view: one copy instead of two (slice, then bytes).
                payload = bytes(memoryview(buf)[start:frame_end])
            pos = frame_end
            data: str | bytes
            if b0 == 0x81 and self._frag_type is None:
                # The common case: a whole, uncompressed text message.
                if max_size is not None and len(payload) << 2 > max_size:
                    self._check_width(payload)
                try:
                    data = payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidPayloadError("text message is not valid UTF-8") from exc
                events.append(Message(_TEXT, data))
            elif b0 == 0x82 and self._frag_type is None:
                data = payload
                events.append(Message(_BINARY, payload))
            else:
                event = self._frame(b0, opcode, payload)
                if event is None:
                    continue
                events.append(event)
                if type(event) is not Message:
                    if not self._reading:
                        # A close frame: the buffers are gone.
                        return
                    if stop_at_control:
                        self._pos = pos
                        self._need = need
                        return
                    continue
                data = event.data
            messages -= 1
            nbytes -= getsizeof(data)
            if messages <= 0 or nbytes <= 0:
                self._pos = pos
                self._need = need
                return
        if pos:
            del buf[:pos]
        self._pos = 0
        self._need = need

    def _frame(self, b0: int, opcode: int, payload: bytes) -> Event | None:
        """Handle any whole frame but an unfragmented uncompressed data message."""
        if opcode <= 2:
            self._begin(b0, opcode)
            return self._data(payload, b0 & 0x80 != 0)
        if opcode == 8:
            return self._close_frame(payload)
        if opcode == 9:
            if self.close_sent is None:
                # Every ping gets its pong (section 5.5.2); the I/O layer bounds the
                # backlog by bytes, stopping to read while its output is full.
                self._out.append(self._encode(Opcode.PONG, payload))
            return Ping(payload)
        # Opcode 10; the header check refused every other value.
        return Pong(payload)

    def _begin(self, b0: int, opcode: int) -> None:
        """Check a data frame's place in its message; start a message on its first frame."""
        if opcode == 0:
            if self._frag_type is None:
                raise ProtocolError("continuation frame with no message to continue")
            if b0 & 0x40:
                raise ProtocolError("RSV1 set on a continuation frame")
            self._frag_size += _FRAME_COST
            return
        if self._frag_type is not None:
            raise ProtocolError("new data frame inside a fragmented message")
        self._frag_type = _TEXT if opcode == 1 else _BINARY
        self._frag_compressed = bool(b0 & 0x40)
        self._frag_size = 0
        self._frag_decoder = _Utf8Decoder() if opcode == 1 else None

    def _data(self, chunk: bytes, last: bool) -> Message | None:
        """Add payload bytes to the message being assembled; return it when ``last``."""
        if self._frag_compressed:
            assert self.deflate is not None  # RSV1 passed the header check
            budget = None
            if self.max_message_size is not None:
                budget = self.max_message_size - self._frag_size
            chunk = self.deflate.decompress(chunk, fin=last, max_size=budget)
        self._frag_size += len(chunk)
        decoder = self._frag_decoder
        assembly = self._assembly
        if not last:
            if decoder is not None:
                # Section 8.1: fail as soon as the invalid sequence is certain.
                self._check_width(chunk)
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise InvalidPayloadError("text message is not valid UTF-8") from exc
            # One growing buffer, not a part per frame: tiny fragments cost their bytes.
            assembly += chunk
            return None
        msg_type = self._frag_type
        assert msg_type is not None
        self._frag_type = None
        self._frag_size = 0
        self._frag_decoder = None
        data: str | bytes
        if assembly:
            assembly += chunk
            data = self._decode(assembly) if decoder is not None else bytes(assembly)
            # Released, not kept at its peak size between messages.
            self._assembly = bytearray()
        else:
            data = self._decode(chunk) if decoder is not None else chunk
        return Message(msg_type, data)

    def _decode(self, data: bytes | bytearray) -> str:
        """Decode a whole text message, refusing one too big in memory or not UTF-8."""
        self._check_width(data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPayloadError("text message is not valid UTF-8") from exc

    def _check_width(self, data: bytes | bytearray) -> None:
        """Refuse text that would take over ``max_message_size`` bytes as a ``str``.

        CPython stores a string with 1, 2 or 4 bytes per character, the widest character
        deciding: a megabyte of ASCII with one emoji takes 4 MB. Cheap unless the text is
        over a quarter of the limit.
        """
        limit = self.max_message_size
        if limit is None or len(data) << 2 <= limit:
            return
        width = 4 if _ASTRAL.search(data) else 2 if _WIDE.search(data) else 1
        size = len(data) * width
        if size > limit:
            # UTF-8 continuation bytes are not characters of their own.
            size -= sum(map(data.count, _CONTINUATION_BYTES)) * width
            if size > limit:
                raise MessageTooBigError(
                    f"text message over the {limit}-byte limit once decoded ({size} bytes)"
                )

    def _close_frame(self, payload: bytes) -> CloseReceived:
        """Section 5.5.1: record the peer's close, echo it, and stop reading."""
        code, reason = parse_close_payload(payload)
        self.close_rcvd = CloseFrame(code, reason)
        # Section 1.4: after a close frame, nothing more is read.
        self._stop_reading()
        self.state = State.CLOSING
        if self.close_sent is None:
            self.close_rcvd_then_sent = True
            self._send_close_frame(code, "")
        if not self._is_client:
            # Section 7.1.1: the server closes the TCP connection first.
            self._out.append(b"")
        return CloseReceived(code, reason)

    def _stop_reading(self) -> None:
        """Ignore input from now on, and free what was buffered or being assembled."""
        self._reading = False
        self._buf = bytearray()
        self._pos = 0
        self._frame_left = 0
        self._assembly = bytearray()

    def receive_eof(self) -> None:
        """Tell the core the peer closed its side of the TCP connection.

        The state becomes ``CLOSED``. Without a completed closing handshake this is an
        abnormal closure (code 1006, section 7.1.5), which :attr:`close_exc` reports.
        """
        self._stop_reading()
        self.state = State.CLOSED

    def events_received(self) -> list[Event]:
        """Return the events parsed since the last call, oldest first."""
        events = self._events
        self._events = []
        return events

    # ------------------------------------------------------------------- sending

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write since the last call, in order.

        Returns:
            A list of frames. An empty bytes object in it means: after writing what comes
            before it, close the TCP connection.
        """
        out = self._out
        self._out = []
        return out

    def close_expected(self) -> bool:
        """Whether the TCP connection is expected to close soon (a close frame went either way).

        An I/O layer uses this to bound, with a timeout, how long it waits for the end.
        """
        return self.state is not State.OPEN

    def send_text(self, data: str | bytes, *, fin: bool = True) -> None:
        """Queue a text frame (a whole message unless ``fin`` is false).

        Args:
            data: a ``str``, or bytes that are already valid UTF-8 (not checked again).
            fin: whether this frame ends the message; if not, continue it with
                :meth:`send_continuation`.

        Raises:
            ConnectionClosed: if a close frame was sent or received.
            ValueError: if a fragmented message is still being sent.
        """
        self._out.append(self._encode_data(Opcode.TEXT, data, fin))

    def send_binary(self, data: bytes | bytearray | memoryview, *, fin: bool = True) -> None:
        """Queue a binary frame (a whole message unless ``fin`` is false).

        Raises:
            ConnectionClosed: if a close frame was sent or received.
            ValueError: if a fragmented message is still being sent.
        """
        self._out.append(self._encode_data(Opcode.BINARY, data, fin))

    def send_continuation(self, data: bytes | bytearray | memoryview, *, fin: bool) -> None:
        """Queue the next frame of a fragmented message (section 5.4).

        Raises:
            ConnectionClosed: if a close frame was sent or received.
            ValueError: if no fragmented message is being sent.
        """
        self._out.append(self._encode_data(Opcode.CONTINUATION, data, fin))

    def encode(self, type: MessageType | int, data: str | bytes | bytearray | memoryview) -> bytes:
        """Return the frame bytes of one whole message on this connection, without queueing.

        Masks on the client side and compresses with this connection's context when
        permessage-deflate is on, so the bytes must then be written, in order with
        everything else this connection sends.

        Raises:
            ConnectionClosed: if a close frame was sent or received.
            ValueError: if ``type`` is not a data message type, or a fragmented message
                is being sent.
        """
        if type != 1 and type != 2:
            raise ValueError(f"not a data message type: {type!r}")
        return self._encode_data(type, data, True)

    def _encode_data(
        self, opcode: int, data: str | bytes | bytearray | memoryview, fin: bool
    ) -> bytes:
        if self.close_sent is not None or self.close_rcvd is not None:
            raise self.close_exc
        if isinstance(data, str):
            data = data.encode()
        if opcode:
            if self._send_fragmented:
                raise ValueError("a fragmented message is being sent: continue it first")
            deflate = self.deflate
            self._send_compressed = deflate is not None and (
                not fin or len(data) >= deflate.min_size
            )
        elif not self._send_fragmented:
            raise ValueError("no fragmented message to continue")
        self._send_fragmented = not fin
        if self._send_compressed:
            assert self.deflate is not None
            data = self.deflate.compress(data, fin=fin)
            return self._encode(opcode, data, fin=fin, rsv1=opcode != 0)
        return self._encode(opcode, data, fin=fin)

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping (section 5.5.2).

        Raises:
            ConnectionClosed: if we already sent a close frame.
            ValueError: if ``data`` is over 125 bytes.
        """
        self._send_control(Opcode.PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Queue an unsolicited pong, a one-way heartbeat (section 5.5.3).

        Raises:
            ConnectionClosed: if we already sent a close frame.
            ValueError: if ``data`` is over 125 bytes.
        """
        self._send_control(Opcode.PONG, data)

    def _send_control(self, opcode: Opcode, data: bytes) -> None:
        if self.close_sent is not None:
            raise self.close_exc
        if len(data) > 125:
            raise ValueError("control frame payload over 125 bytes")
        self._out.append(self._encode(opcode, data))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (section 7.1.2).

        Args:
            code: the status code; 1005 sends a close frame with no payload.
            reason: a UTF-8 reason; code and reason must fit in 125 bytes.

        Raises:
            ConnectionClosed: if a close frame was already sent or received.
            ValueError: for a code that may not be sent or a reason too long.
        """
        if self.state is not State.OPEN:
            raise self.close_exc
        self.close_rcvd_then_sent = False
        self._send_close_frame(code, reason)
        self.state = State.CLOSING

    def _send_close_frame(self, code: int, reason: str) -> None:
        payload = encode_close_payload(code, reason)
        self._out.append(self._encode(Opcode.CLOSE, payload))
        self.close_sent = CloseFrame(code, reason)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (section 7.1.7): send a close frame if none went, close TCP.

        Input is ignored from then on.

        Args:
            code: the close code to send, e.g. 1002, 1007, 1009 or 1011.
            reason: a short reason for the peer.
        """
        if self.close_sent is None and self.state is not State.CLOSED:
            # Had a close frame come, the core would already have echoed it.
            self.close_rcvd_then_sent = False
            self._send_close_frame(code, reason)
        if self.state is State.OPEN:
            self.state = State.CLOSING
        self._stop_reading()
        self._out.append(b"")

    def _fail_on(self, exc: ProtocolError) -> None:
        self.parser_exc = detach_traceback(exc)
        self.fail(exc.close_code, str(exc)[:120])

    # ------------------------------------------------------------------ framing

    def _encode(
        self,
        opcode: int,
        payload: bytes | bytearray | memoryview,
        *,
        fin: bool = True,
        rsv1: bool = False,
    ) -> bytes:
        mask = self._next_mask() if self._is_client else None
        return encode_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=mask)

    def _next_mask(self) -> bytes:
        # Section 10.3: masking keys come from a strong entropy source; drawing them from
        # the OS in blocks saves a system call per frame without weakening them.
        pos = self._mask_pos
        if pos >= _MASK_POOL_SIZE:
            self._mask_pool = os.urandom(_MASK_POOL_SIZE)
            pos = 0
        self._mask_pos = pos + 4
        return self._mask_pool[pos : pos + 4]

    # --------------------------------------------------------------- reporting

    @property
    def close_code(self) -> int | None:
        """The peer's close code (1005 if its frame had none), or ``None`` before one came."""
        return None if self.close_rcvd is None else self.close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        """The peer's close reason, or ``None`` before its close frame came."""
        return None if self.close_rcvd is None else self.close_rcvd.reason

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception that describes how the connection ended, or is ending.

        :class:`ConnectionClosedOK` when close frames with 1000, 1001 or no code went both
        ways; :class:`ConnectionClosedError` otherwise, with :attr:`parser_exc` as its
        ``__cause__`` when the peer broke the protocol.
        """
        rcvd, sent = self.close_rcvd, self.close_sent
        cls: Callable[..., ConnectionClosed] = ConnectionClosedError
        if (
            rcvd is not None
            and sent is not None
            and rcvd.code in _OK_CODES
            and sent.code in _OK_CODES
        ):
            cls = ConnectionClosedOK
        exc = cls(rcvd, sent, self.close_rcvd_then_sent)
        exc.__cause__ = self.parser_exc
        return exc
