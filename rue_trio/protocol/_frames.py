"""Frame-level pieces of RFC 6455 section 5: opcodes, the frame encoder, close payloads.

The parser lives in :mod:`rue_trio.protocol._receiving`, inlined into the state machine's
receive loop because that loop is the hottest code in the library. What is here is what the
sending side and a broadcasting hub need: turning a message into frame bytes once.
"""

from __future__ import annotations

import enum
import struct

from rue_trio.exceptions import InvalidPayloadError, ProtocolError

from ._mask import apply_mask

__all__ = [
    "MessageType",
    "Opcode",
    "encode_close_payload",
    "encode_frame",
    "encode_message",
    "is_valid_close_code",
    "parse_close_payload",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2); every other value is reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class MessageType(enum.IntEnum):
    """The type of a data message; the values are the opcodes of its first frame.

    Re-exported as ``rue_trio.TextMessage`` and ``rue_trio.BinaryMessage``, the Python
    names of Rue's ``rue.TextMessage`` and ``rue.BinaryMessage``.
    """

    TEXT = 0x1
    BINARY = 0x2


_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Serialize one frame (RFC 6455 section 5.2).

    Args:
        opcode: the frame's opcode, see :class:`Opcode`.
        payload: the (already compressed, if it is) payload.
        fin: whether this is the final frame of its message.
        rsv1: set the RSV1 bit (permessage-deflate's "compressed" flag, RFC 7692 section 6).
        mask: the 4-byte masking key for a client frame, or ``None`` for a server frame
            (section 5.3: a client masks every frame, a server never does).

    Returns:
        The frame, header and payload, as one bytes object.
    """
    header = _header(opcode, len(payload), fin, rsv1, mask is not None)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


def encode_frame_parts(
    opcode: int, payload: bytes | bytearray | memoryview, rsv1: bool, mask: bytes | None
) -> tuple[bytes, bytes]:
    """Serialize one final frame as its header and its payload: :func:`encode_frame` in two.

    For an I/O layer that writes a large frame with one gathering write (``os.writev``,
    ``socket.sendmsg``) instead of copying its payload behind the header: an unmasked
    ``bytes`` payload is returned as it is, not copied. The arguments are those of
    :func:`encode_frame`.

    Returns:
        ``(header, payload)``, whose concatenation is what :func:`encode_frame` returns;
        the header includes the masking key of a client frame.
    """
    header = _header(opcode, len(payload), True, rsv1, mask is not None)
    if mask is not None:
        return header + mask, apply_mask(payload, mask)
    # Not a view of the caller's buffer: it may change it once the frame is queued.
    return header, payload if type(payload) is bytes else bytes(payload)


def _header(opcode: int, length: int, fin: bool, rsv1: bool, masked: bool) -> bytes:
    """A frame header without its masking key (section 5.2)."""
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    mask_bit = 0x80 if masked else 0
    # Section 5.2: the minimal number of bytes MUST be used to encode the length.
    if length < 126:
        return bytes((b0, mask_bit | length))
    if length < 0x10000:
        return _HEADER_16.pack(b0, mask_bit | 126, length)
    return _HEADER_64.pack(b0, mask_bit | 127, length)


def encode_message(type: MessageType | int, data: str | bytes | bytearray | memoryview) -> bytes:
    """Encode a whole message as one unmasked, uncompressed server frame.

    This is the broadcast fast path (the design topic, "Encode once"): encode once,
    then hand the same bytes object to every recipient, whatever its compression settings
    (an uncompressed message is always valid on a permessage-deflate connection, RFC 7692
    section 6: RSV1 is set per message).

    Args:
        type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
        data: the payload; a ``str`` is encoded to UTF-8, bytes are taken as they are
            (for a text message they must already be valid UTF-8).

    Returns:
        The complete frame.

    Raises:
        ValueError: if ``type`` is not a data message type.
    """
    if type != 1 and type != 2:
        raise ValueError(f"not a data message type: {type!r}")
    if isinstance(data, str):
        data = data.encode()
    length = len(data)
    if length < 126:
        return bytes((0x80 | type, length)) + data
    if length < 0x10000:
        return _HEADER_16.pack(0x80 | type, 126, length) + data
    return _HEADER_64.pack(0x80 | type, 127, length) + data


# Section 7.4.1 and the IANA registry (section 11.7): codes a peer may put on the wire.
# 1004 is reserved, 1005 and 1006 (and 1015) are for reporting only, never sent.
_VALID_WIRE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (RFC 6455 sections 7.4.1 and 7.4.2)."""
    return code in _VALID_WIRE_CODES or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Parse and validate a close frame's payload (RFC 6455 section 5.5.1).

    Args:
        payload: the unmasked payload, at most 125 bytes.

    Returns:
        ``(code, reason)``; ``(1005, "")`` for an empty payload (section 7.1.5).

    Raises:
        ProtocolError: a one-byte payload or a code that may not be sent (1002).
        InvalidPayloadError: a reason that is not valid UTF-8 (1007).
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame payload of 1 byte: a status code takes 2")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayloadError("close reason is not valid UTF-8") from exc
    return code, reason


def encode_close_payload(code: int, reason: str = "") -> bytes:
    """Build a close frame's payload, validating it as the peer will.

    Args:
        code: a sendable close code, or 1005 for an empty payload (no code, no reason).
        reason: a reason; with the code it must fit in 125 bytes (section 5.5).

    Returns:
        The payload bytes.

    Raises:
        ValueError: for a code that may not be sent, a reason with code 1005, or a payload
            over 125 bytes.
    """
    if code == 1005:
        if reason:
            raise ValueError("a close frame without a code cannot carry a reason")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    payload = code.to_bytes(2, "big") + reason.encode()
    if len(payload) > 125:
        raise ValueError("close reason too long: code and reason must fit in 125 bytes")
    return payload
