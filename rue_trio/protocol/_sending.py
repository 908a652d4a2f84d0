"""The sending side of a :class:`~rue_trio.protocol.WebSocketProtocol`: encoding and closing.

``send_*`` and :meth:`~rue_trio.protocol.WebSocketProtocol.encode` serialize frames (a
client masks them), ``send_close`` and ``fail`` start or force the closing handshake. The
theory of operation is in ``_connection.py``.
"""

from __future__ import annotations

import os

from rue_trio.exceptions import CloseFrame

from ._frames import (
    MessageType,
    Opcode,
    encode_close_payload,
    encode_frame,
    encode_frame_parts,
)
from ._state import _MASK_POOL_SIZE, State, _ProtocolState


class _ProtocolSending(_ProtocolState):
    """Serializing frames, and the closing handshake from our side."""

    __slots__ = ()

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

    def encode_parts(
        self, type: MessageType | int, data: str | bytes | bytearray | memoryview
    ) -> tuple[bytes, bytes]:
        """As :meth:`encode`, but the frame as its header and its payload.

        ``header + payload`` is what :meth:`encode` returns. For an I/O layer that writes
        a large frame with one gathering write instead of copying its payload behind the
        header: on a server without compression, a ``bytes`` message is the payload
        itself, not copied.

        Raises:
            ConnectionClosed, ValueError: as :meth:`encode`.
        """
        if type != 1 and type != 2:
            raise ValueError(f"not a data message type: {type!r}")
        payload, rsv1 = self._prepare(type, data, True)
        mask = self._next_mask() if self._is_client else None
        return encode_frame_parts(type, payload, rsv1, mask)

    def _encode_data(
        self, opcode: int, data: str | bytes | bytearray | memoryview, fin: bool
    ) -> bytes:
        payload, rsv1 = self._prepare(opcode, data, fin)
        return self._encode(opcode, payload, fin=fin, rsv1=rsv1)

    def _prepare(
        self, opcode: int, data: str | bytes | bytearray | memoryview, fin: bool
    ) -> tuple[bytes | bytearray | memoryview, bool]:
        """Check that a data frame may be sent; return its payload and RSV1 bit."""
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
            return self.deflate.compress(data, fin=fin), opcode != 0
        return data, False

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
