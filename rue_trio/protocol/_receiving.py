"""The receiving side of a :class:`~rue_trio.protocol.WebSocketProtocol`: parsing frames.

The frame parser (header validation, payload consumed as it arrives), the reassembly of
fragmented messages with incremental UTF-8 validation and inflation under the size budget,
and the automatic answers (pong, close echo). The theory of operation is in
``_connection.py``.
"""

from __future__ import annotations

import codecs
import re
import struct
from sys import getsizeof

from rue_trio.exceptions import (
    CloseFrame,
    InvalidPayloadError,
    MessageTooBigError,
    ProtocolError,
)

from ._events import CloseReceived, Event, Message, Ping, Pong
from ._frames import MessageType, Opcode, parse_close_payload
from ._mask import apply_mask, unmask_at
from ._sending import _ProtocolSending
from ._state import State, detach_traceback

_TEXT = MessageType.TEXT
_BINARY = MessageType.BINARY
_UNPACK_16 = struct.Struct("!H").unpack_from
_UNPACK_64 = struct.Struct("!Q").unpack_from
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
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
# A message that arrives in several chunks (reads of one large frame, or fragments) is
# assembled as a list of parts of at least this many bytes, joined once it is complete:
# each part costs at most 1 % more than its bytes (a bytes object's header and a list
# slot), and nothing grows. The single growing bytearray it replaces was reallocated as
# it grew and copied out at the end: on the 1 MiB echo the heap grew and was trimmed
# by about a megabyte every round trip (bench/profile_server.py --scenario mib --count
# 80: 285 to 311 minor page faults and 1,343 to 1,458 us of server CPU per round trip
# before, 0 and 519 to 817 us after, interleaved).
_PART_MIN = 4096


class _ProtocolReceiving(_ProtocolSending):
    """Parsing what the peer sent into events, and answering what the RFC makes automatic."""

    __slots__ = ()

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

    @property
    def payload_pending(self) -> int:
        """The bytes of the current uncompressed data frame's payload not received yet.

        0 between frames, and for a compressed message (whose payload is inflated only
        as far as the caller has room). Known once the frame's header is parsed. These
        bytes all go straight into the message being assembled (bounded by
        ``max_message_size``), whatever room the caller has, so an I/O layer may read up
        to that many at once: fewer, larger reads for a big message.
        """
        return 0 if self._frag_compressed else self._frame_left

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
            # Parts of at least _PART_MIN bytes, small chunks gathered into a bytearray
            # part: tiny fragments cost their bytes, and a large message is copied once,
            # by the join below, instead of growing one buffer (see _PART_MIN).
            tail = assembly[-1] if assembly else None
            if type(tail) is bytearray and len(tail) < _PART_MIN:
                tail += chunk
            elif len(chunk) >= _PART_MIN:
                assembly.append(chunk)
            else:
                assembly.append(bytearray(chunk))
            return None
        msg_type = self._frag_type
        assert msg_type is not None
        self._frag_type = None
        self._frag_size = 0
        self._frag_decoder = None
        data: str | bytes
        if assembly:
            assembly.append(chunk)
            whole = b"".join(assembly)
            # Released at once, not kept until the next message.
            assembly.clear()
            data = self._decode(whole) if decoder is not None else whole
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

    def _fail_on(self, exc: ProtocolError) -> None:
        self.parser_exc = detach_traceback(exc)
        self.fail(exc.close_code, str(exc)[:120])
