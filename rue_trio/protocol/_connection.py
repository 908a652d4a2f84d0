"""The sans-I/O WebSocket state machine (RFC 6455 sections 5 to 7, RFC 7692 section 6).

Theory of operation
-------------------
A :class:`Protocol` is one side of one connection after the opening handshake. It does no
I/O: the caller feeds it the bytes that arrived (:meth:`Protocol.receive_data`,
:meth:`Protocol.receive_eof`), collects what happened (:meth:`Protocol.events_received`) and
writes out what it produced (:meth:`Protocol.data_to_send`).

Receiving. ``receive_data`` appends to one buffer and parses as many whole frames as it
holds. A frame's header is validated as soon as its header bytes are there, before the
payload is awaited: reserved bits and opcodes, the masking rule for this role, the control
frame rules, and the message size limit, which is counted against what the message has
assembled so far, so an oversized message is refused before it is buffered (section 10.4).
Data frames are reassembled into one :class:`Message` per message; control frames may come
between fragments (section 5.4). Text is decoded as it arrives, frame by frame, so invalid
UTF-8 fails the connection at the frame where it becomes certain (section 8.1). A compressed
message (RSV1 on its first frame, RFC 7692 section 6) is decompressed frame by frame under
the remaining size budget.

Answering. The core answers for itself what the RFC makes automatic: a ping gets its pong
(section 5.5.2), a close frame gets its echo (section 5.5.1), and a violation fails the
connection (section 7.1.7): a close frame with the RFC's code is queued, then the "close the
transport" marker, ``b""``, and later input is ignored. The violation itself is kept in
:attr:`Protocol.parser_exc` and becomes the ``__cause__`` of :attr:`Protocol.close_exc`.
``receive_data`` never raises for anything the peer sends.

Closing. ``OPEN`` lasts until a close frame is sent or received, then ``CLOSING``. When the
closing handshake completes the server asks to close TCP at once; the client waits for the
server to do so (section 7.1.1). ``receive_eof`` makes the state ``CLOSED``; without a
completed handshake that is an abnormal closure, 1006 (section 7.1.5).

Sending. ``send_*`` serialize frames into the outgoing list; a client masks with a fresh
key from the operating system's CSPRNG (section 10.3). :meth:`Protocol.encode` returns one
message's bytes without queueing them, for an I/O layer that keeps its own bounded queue.
"""

from __future__ import annotations

import codecs
import enum
import os
import struct
from collections.abc import Callable

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
from ._mask import unmask_at

__all__ = ["Protocol", "Role", "State"]


class Role(enum.Enum):
    """Which end of the connection a :class:`Protocol` is."""

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


class Protocol:
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
        self._buf = bytearray()
        self._need = 2
        self._reading = True
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # Where the pong not yet collected by data_to_send() sits in _out, if any.
        self._pong_at: int | None = None
        # The message being reassembled: its type, parts, size, compression, decoder.
        self._frag_type: MessageType | None = None
        self._text_parts: list[str] = []
        self._binary_parts: list[bytes] = []
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
        """Feed bytes received from the peer.

        Parses every complete frame, queues the resulting events and any automatic
        answers. A protocol violation fails the connection instead of raising.

        Args:
            data: the bytes, in any chunking; an empty chunk is ignored.
        """
        if not self._reading:
            return
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return
        try:
            consumed = self._parse(buf)
        except ProtocolError as exc:
            self._fail_on(exc)
            return
        if consumed:
            del buf[:consumed]

    def _parse(self, buf: bytearray) -> int:
        """Parse whole frames from ``buf``; return how many bytes were consumed."""
        pos = 0
        end = len(buf)
        max_size = self.max_message_size
        expect_mask = self._expect_mask
        rsv_mask = self._rsv_mask
        while self._reading:
            if end - pos < 2:
                self._need = 2
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hlen = 2
            if length == 126:
                if end - pos < 4:
                    self._need = 4
                    break
                (length,) = _UNPACK_16(buf, pos + 2)
                hlen = 4
            elif length == 127:
                if end - pos < 10:
                    self._need = 10
                    break
                (length,) = _UNPACK_64(buf, pos + 2)
                hlen = 10
                # Section 5.2: the most significant bit MUST be 0.
                if length >> 63:
                    raise ProtocolError("64-bit payload length with the most significant bit set")
            if b0 & rsv_mask:
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
                # Section 10.4: refuse an oversized message before buffering it. Once
                # compressed, only the frame's wire size is known here; the codec checks
                # the inflated size as it runs.
                if opcode == 0 and not self._frag_compressed:
                    length_so_far = length + self._frag_size
                else:
                    length_so_far = length
                if length_so_far > max_size:
                    raise MessageTooBigError(f"message over the {max_size}-byte limit")
            if expect_mask:
                hlen += 4
            frame_end = pos + hlen + length
            if frame_end > end:
                self._need = frame_end - pos
                break
            start = pos + hlen
            if expect_mask:
                # The key sits right before the payload (section 5.2).
                payload = unmask_at(buf, start, frame_end)
            elif length < 1024:
                payload = bytes(buf[start:frame_end])
            else:
                # Through a view: one copy instead of two (slice, then bytes).
                payload = bytes(memoryview(buf)[start:frame_end])
            pos = frame_end
            if b0 == 0x81 and self._frag_type is None:
                # The common case: a whole, uncompressed text message.
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidPayloadError("text message is not valid UTF-8") from exc
                self._events.append(Message(_TEXT, text))
            elif b0 == 0x82 and self._frag_type is None:
                self._events.append(Message(_BINARY, payload))
            else:
                self._frame(b0, opcode, payload)
        else:
            self._need = 2
        return pos

    def _frame(self, b0: int, opcode: int, payload: bytes) -> None:
        """Handle any frame but a whole uncompressed data message."""
        fin = b0 & 0x80
        if opcode == 0:
            if self._frag_type is None:
                raise ProtocolError("continuation frame with no message to continue")
            if b0 & 0x40:
                raise ProtocolError("RSV1 set on a continuation frame")
            self._data_frame(payload, fin)
        elif opcode == 1 or opcode == 2:
            if self._frag_type is not None:
                raise ProtocolError("new data frame inside a fragmented message")
            self._frag_type = _TEXT if opcode == 1 else _BINARY
            self._frag_compressed = bool(b0 & 0x40)
            self._frag_size = 0
            if opcode == 1:
                self._frag_decoder = _Utf8Decoder()
            self._data_frame(payload, fin)
        elif opcode == 8:
            self._close_frame(payload)
        elif opcode == 9:
            self._events.append(Ping(payload))
            if self.close_sent is None:
                pong = self._encode(Opcode.PONG, payload)
                # Section 5.5.3: of several pings not yet answered, answering the most
                # recent is enough. One pong at most waits in the output, so a peer that
                # floods pings and never reads cannot make us queue a pong per ping.
                if self._pong_at is None:
                    self._pong_at = len(self._out)
                    self._out.append(pong)
                else:
                    self._out[self._pong_at] = pong
        else:  # opcode 10; the header check refused every other value
            self._events.append(Pong(payload))

    def _data_frame(self, payload: bytes, fin: int) -> None:
        """Add one frame's payload to the message being assembled."""
        if self._frag_compressed:
            assert self.deflate is not None  # RSV1 passed the header check
            budget = None
            if self.max_message_size is not None:
                budget = self.max_message_size - self._frag_size
            payload = self.deflate.decompress(payload, fin=bool(fin), max_size=budget)
        self._frag_size += len(payload)
        decoder = self._frag_decoder
        if decoder is not None:
            # Section 8.1: fail as soon as the invalid sequence is certain.
            try:
                self._text_parts.append(decoder.decode(payload, bool(fin)))
            except UnicodeDecodeError as exc:
                raise InvalidPayloadError("text message is not valid UTF-8") from exc
        else:
            self._binary_parts.append(payload)
        if not fin:
            return
        data: str | bytes
        if decoder is not None:
            data = "".join(self._text_parts)
            self._text_parts.clear()
            self._frag_decoder = None
        else:
            data = b"".join(self._binary_parts)
            self._binary_parts.clear()
        msg_type = self._frag_type
        assert msg_type is not None
        self._frag_type = None
        self._frag_size = 0
        self._events.append(Message(msg_type, data))

    def _close_frame(self, payload: bytes) -> None:
        """Section 5.5.1: record the peer's close, echo it, and stop reading."""
        code, reason = parse_close_payload(payload)
        self.close_rcvd = CloseFrame(code, reason)
        self._events.append(CloseReceived(code, reason))
        # Section 1.4: after a close frame, nothing more is read.
        self._reading = False
        self._buf.clear()
        self.state = State.CLOSING
        if self.close_sent is None:
            self.close_rcvd_then_sent = True
            self._send_close_frame(code, "")
        if not self._is_client:
            # Section 7.1.1: the server closes the TCP connection first.
            self._out.append(b"")

    def receive_eof(self) -> None:
        """Tell the core the peer closed its side of the TCP connection.

        The state becomes ``CLOSED``. Without a completed closing handshake this is an
        abnormal closure (code 1006, section 7.1.5), which :attr:`close_exc` reports.
        """
        self._reading = False
        self._buf.clear()
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
        self._pong_at = None
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
        self._reading = False
        self._buf.clear()
        self._out.append(b"")

    def _fail_on(self, exc: ProtocolError) -> None:
        self.parser_exc = exc
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
