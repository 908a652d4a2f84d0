"""Frame encoding and close payloads, RFC 6455 sections 5.2, 5.5.1 and 7.4."""

from __future__ import annotations

import pytest

from rue_trio.exceptions import InvalidPayloadError, ProtocolError
from rue_trio.protocol import (
    Message,
    MessageType,
    Opcode,
    Role,
    WebSocketProtocol,
    encode_close_payload,
    encode_frame,
    encode_message,
    is_valid_close_code,
    parse_close_payload,
)

from ._util import MASK, raw_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("mask", [None, MASK])
def test_encode_frame_matches_independent_encoder(size: int, mask: bytes | None) -> None:
    """5.2: the minimal length form, the mask bit and key, the masked payload."""
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert encode_frame(Opcode.BINARY, payload, mask=mask) == raw_frame(0x2, payload, mask=mask)


def test_encode_frame_flags() -> None:
    """5.2: FIN clear for a non-final fragment, RSV1 for a compressed first frame."""
    assert encode_frame(Opcode.TEXT, b"a", fin=False, rsv1=True) == b"\x41\x01a"


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encode_message_is_a_server_frame_the_client_parses(size: int) -> None:
    """encode_message builds one unmasked final frame per message, for broadcasting."""
    text = "é" * (size // 2) + "x" * (size % 2)
    binary = b"\x01" * size
    client = WebSocketProtocol(Role.CLIENT, max_message_size=None)
    client.receive_data(encode_message(MessageType.TEXT, text))
    client.receive_data(encode_message(MessageType.BINARY, binary))
    client.receive_data(encode_message(MessageType.TEXT, text.encode()))
    assert client.events_received() == [
        Message(MessageType.TEXT, text),
        Message(MessageType.BINARY, binary),
        Message(MessageType.TEXT, text),
    ]


def test_encode_message_rejects_control_types() -> None:
    """Only data messages are broadcast."""
    with pytest.raises(ValueError, match="not a data message type"):
        encode_message(Opcode.PING, b"")


def test_close_payload_roundtrip() -> None:
    """5.5.1: a code in network order, then a UTF-8 reason."""
    payload = encode_close_payload(1001, "gone ☂")
    assert payload[:2] == b"\x03\xe9"
    assert parse_close_payload(payload) == (1001, "gone ☂")
    assert encode_close_payload(1005) == b""
    assert parse_close_payload(b"") == (1005, "")


def test_close_payload_errors() -> None:
    """5.5.1 and 7.4: bad payloads on receipt, bad codes when sending."""
    with pytest.raises(ProtocolError):
        parse_close_payload(b"\x03")
    with pytest.raises(ProtocolError, match="invalid close code"):
        parse_close_payload(b"\x03\xed")
    with pytest.raises(InvalidPayloadError):
        parse_close_payload(b"\x03\xe8\xc3")
    with pytest.raises(ValueError, match="may not be sent"):
        encode_close_payload(1015)


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        (999, False),
        (1000, True),
        (1003, True),
        (1004, False),
        (1006, False),
        (1007, True),
        (1014, True),
        (1015, False),
        (2999, False),
        (3000, True),
        (4999, True),
        (5000, False),
    ],
)
def test_is_valid_close_code(code: int, valid: bool) -> None:
    """7.4.1 and 7.4.2: the codes an endpoint may send."""
    assert is_valid_close_code(code) is valid
