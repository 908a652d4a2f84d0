"""The protocol state machine, RFC 6455 sections 5 to 7, one behaviour per test."""

from __future__ import annotations

import pytest

from rue_trio.exceptions import (
    CloseFrame,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidPayloadError,
    MessageTooBigError,
    ProtocolError,
)
from rue_trio.protocol import (
    CloseReceived,
    DeflateConfig,
    DeflateParams,
    Message,
    MessageType,
    PerMessageDeflate,
    Ping,
    Pong,
    Role,
    State,
    WebSocketProtocol,
)

from ._util import MASK, client_receives, raw_frame, server_receives, transfer


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def assert_failed(proto: WebSocketProtocol, code: int, exc_type: type[ProtocolError]) -> None:
    """The connection was failed with ``code``: a close frame, then the end of TCP."""
    assert isinstance(proto.parser_exc, exc_type)
    assert proto.parser_exc.close_code == code
    assert proto.close_sent == CloseFrame(code, str(proto.parser_exc)[:120])
    out = proto.data_to_send()
    assert out[-1] == b""
    assert out[-2][1] & 0x7F >= 2  # the close frame carries the code
    assert proto.state is State.CLOSING
    exc = proto.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert exc.__cause__ is proto.parser_exc


# ----------------------------------------------------------------- section 5.2: framing


@pytest.mark.parametrize("form", [7, 16, 64])
def test_server_receive_text_every_length_form(form: int) -> None:
    """5.2: the 7-bit, 16-bit and 64-bit payload length forms all parse."""
    _, events = server_receives(raw_frame(0x1, b"hi", length_form=form))
    assert events == [Message(MessageType.TEXT, "hi")]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 100_000])
def test_client_receive_binary_sizes_at_length_boundaries(size: int) -> None:
    """5.2: payloads on each side of the 126 and 65536 boundaries."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    _, events = client_receives(raw_frame(0x2, data, mask=None))
    assert events == [Message(MessageType.BINARY, data)]


def test_server_receive_64bit_length_with_msb_fails_1002() -> None:
    """5.2: the most significant bit of a 64-bit length MUST be 0."""
    frame = bytes((0x82, 0xFF)) + (1 << 63).to_bytes(8, "big") + MASK
    server, events = server_receives(frame)
    assert events == []
    assert_failed(server, 1002, ProtocolError)


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_server_receive_rsv_bits_without_extension_fails_1002(rsv: int) -> None:
    """5.2: a nonzero RSV bit with no extension negotiated fails the connection."""
    server, _ = server_receives(raw_frame(0x1, b"x", rsv=rsv))
    assert_failed(server, 1002, ProtocolError)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_server_receive_reserved_opcode_fails_1002(opcode: int) -> None:
    """5.2: reserved opcodes fail the connection."""
    server, _ = server_receives(raw_frame(opcode, b""))
    assert_failed(server, 1002, ProtocolError)


# ----------------------------------------------------------------- section 5.3: masking


def test_server_receive_unmasked_frame_fails_1002() -> None:
    """5.1: a server MUST close the connection on an unmasked client frame."""
    server, _ = server_receives(raw_frame(0x1, b"x", mask=None))
    assert_failed(server, 1002, ProtocolError)


def test_client_receive_masked_frame_fails_1002() -> None:
    """5.1: a client MUST close the connection on a masked server frame."""
    client, _ = client_receives(raw_frame(0x1, b"x"))
    assert_failed(client, 1002, ProtocolError)


def test_client_send_masks_with_fresh_keys() -> None:
    """5.3: every client frame is masked, each with a new key from the CSPRNG."""
    client = WebSocketProtocol(Role.CLIENT)
    for _ in range(1100):  # past one pool of keys
        client.send_binary(b"abcd")
    frames = client.data_to_send()
    assert all(f[1] & 0x80 for f in frames)
    keys = {f[2:6] for f in frames}
    assert len(keys) > 1000
    server = WebSocketProtocol(Role.SERVER)
    for f in frames:
        server.receive_data(f)
    assert server.events_received() == [Message(MessageType.BINARY, b"abcd")] * 1100


def test_server_send_never_masks() -> None:
    """5.1: a server MUST NOT mask."""
    server = WebSocketProtocol(Role.SERVER)
    server.send_text("hello")
    assert server.data_to_send() == [b"\x81\x05hello"]


def test_server_receive_rfc_example_masked_hello() -> None:
    """5.7: the single-frame masked text message example."""
    _, events = server_receives(bytes.fromhex("818537fa213d7f9f4d5158"))
    assert events == [Message(MessageType.TEXT, "Hello")]


# ------------------------------------------------------------ section 5.4: fragmentation


def test_client_receive_rfc_example_fragmented_hello() -> None:
    """5.7: the fragmented unmasked text message example."""
    _, events = client_receives(bytes.fromhex("010348656c80026c6f"))
    assert events == [Message(MessageType.TEXT, "Hello")]


def test_server_receive_fragments_with_interleaved_controls() -> None:
    """5.4: control frames MAY be injected in the middle of a fragmented message."""
    data = (
        raw_frame(0x2, b"ab", fin=False)
        + raw_frame(0x9, b"p1")
        + raw_frame(0x0, b"cd", fin=False)
        + raw_frame(0xA, b"p2")
        + raw_frame(0x0, b"ef")
    )
    server, events = server_receives(data)
    assert events == [Ping(b"p1"), Pong(b"p2"), Message(MessageType.BINARY, b"abcdef")]
    assert server.data_to_send() == [b"\x8a\x02p1"]


def test_server_receive_continuation_without_message_fails_1002() -> None:
    """5.4: a continuation frame with nothing to continue."""
    server, _ = server_receives(raw_frame(0x0, b"x"))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_new_message_inside_fragmented_fails_1002() -> None:
    """5.4: fragments of one message are not interleaved with another message."""
    server, _ = server_receives(raw_frame(0x1, b"a", fin=False) + raw_frame(0x1, b"b"))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_new_binary_inside_fragmented_fails_1002() -> None:
    """5.4: also when the interloper is a whole binary frame."""
    server, _ = server_receives(raw_frame(0x2, b"a", fin=False) + raw_frame(0x2, b"b"))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_rsv1_on_continuation_fails_1002() -> None:
    """RFC 7692 section 6.1: RSV1 is set only on the first frame of a message."""
    server = WebSocketProtocol(Role.SERVER)
    server.receive_data(raw_frame(0x2, b"a", fin=False))
    server.receive_data(raw_frame(0x0, b"b", rsv=4))
    assert_failed(server, 1002, ProtocolError)


def test_client_send_fragmented_message_roundtrip() -> None:
    """5.4: a message sent in fragments arrives whole."""
    client, server = WebSocketProtocol(Role.CLIENT), WebSocketProtocol(Role.SERVER)
    client.send_text("he", fin=False)
    client.send_ping(b"!")
    client.send_continuation(b"ll", fin=False)
    client.send_continuation(b"o", fin=True)
    assert transfer(client, server) == [Ping(b"!"), Message(MessageType.TEXT, "hello")]


def test_client_send_continuation_without_message_raises() -> None:
    """5.4: the sender cannot continue nothing."""
    with pytest.raises(ValueError, match="no fragmented message"):
        WebSocketProtocol(Role.CLIENT).send_continuation(b"x", fin=True)


def test_client_send_new_message_inside_fragmented_raises() -> None:
    """5.4: the sender cannot start a message before finishing the last one."""
    client = WebSocketProtocol(Role.CLIENT)
    client.send_binary(b"a", fin=False)
    with pytest.raises(ValueError, match="being sent"):
        client.send_binary(b"b")


# ------------------------------------------------------------ section 5.5: control frames


def test_server_receive_control_over_125_bytes_fails_1002() -> None:
    """5.5: control frames have a payload of 125 bytes or less."""
    server, _ = server_receives(raw_frame(0x9, b"x" * 126))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_fragmented_control_fails_1002() -> None:
    """5.5: control frames MUST NOT be fragmented."""
    server, _ = server_receives(raw_frame(0x9, b"x", fin=False))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_ping_answers_pong_with_same_data() -> None:
    """5.5.2: a pong answers a ping with identical application data."""
    server, events = server_receives(raw_frame(0x9, b"abc"))
    assert events == [Ping(b"abc")]
    assert server.data_to_send() == [b"\x8a\x03abc"]


def test_client_receive_ping_answers_masked_pong() -> None:
    """5.5.2 and 5.3: the client's pong is masked."""
    client, _ = client_receives(raw_frame(0x9, b"abc", mask=None))
    (pong,) = client.data_to_send()
    _, events = server_receives(pong)
    assert events == [Pong(b"abc")]


def test_server_receive_unsolicited_pong_is_reported_only() -> None:
    """5.5.3: an unsolicited pong needs no response."""
    server, events = server_receives(raw_frame(0xA, b"hb"))
    assert events == [Pong(b"hb")]
    assert server.data_to_send() == []


@pytest.mark.parametrize("method", ["send_ping", "send_pong"])
def test_server_send_control_over_125_bytes_raises(method: str) -> None:
    """5.5: the sender keeps control payloads within 125 bytes."""
    with pytest.raises(ValueError, match="125"):
        getattr(WebSocketProtocol(Role.SERVER), method)(b"x" * 126)


def test_server_send_ping_and_pong() -> None:
    """5.5.2 and 5.5.3: pings and unsolicited pongs go out as control frames."""
    server = WebSocketProtocol(Role.SERVER)
    server.send_ping(b"1")
    server.send_pong(b"2")
    assert server.data_to_send() == [b"\x89\x011", b"\x8a\x012"]


# --------------------------------------------------------- section 8.1: UTF-8 validation


def test_server_receive_invalid_utf8_text_fails_1007() -> None:
    """8.1: a text message that is not valid UTF-8 fails the connection with 1007."""
    server, events = server_receives(
        raw_frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")
    )
    assert events == []
    assert_failed(server, 1007, InvalidPayloadError)


def test_server_receive_invalid_utf8_fails_at_first_bad_fragment() -> None:
    """8.1: fail fast, at the frame where the invalid sequence becomes certain."""
    server = WebSocketProtocol(Role.SERVER)
    server.receive_data(raw_frame(0x1, "κόσμε".encode(), fin=False))
    assert server.parser_exc is None
    server.receive_data(raw_frame(0x0, b"\xf4\x90\x80\x80", fin=False))
    assert_failed(server, 1007, InvalidPayloadError)


def test_server_receive_utf8_split_across_fragments() -> None:
    """8.1: a code point may be split between frames."""
    encoded = "€uro".encode()
    data = raw_frame(0x1, encoded[:1], fin=False) + raw_frame(0x0, encoded[1:2], fin=False)
    data += raw_frame(0x0, encoded[2:])
    _, events = server_receives(data)
    assert events == [Message(MessageType.TEXT, "€uro")]


def test_server_receive_truncated_utf8_at_message_end_fails_1007() -> None:
    """8.1: an incomplete sequence at the end of the message is invalid."""
    data = raw_frame(0x1, b"ok\xe2\x82", fin=False) + raw_frame(0x0, b"")
    server, _ = server_receives(data)
    assert_failed(server, 1007, InvalidPayloadError)


# ---------------------------------------------------------- section 10.4: size limits


def test_server_receive_message_over_limit_fails_1009_before_payload() -> None:
    """10.4: an oversized frame is refused from its header, before its payload arrives."""
    server = WebSocketProtocol(Role.SERVER, max_message_size=1000)
    header = raw_frame(0x2, b"x" * 1001)[:8]
    server.receive_data(header)
    assert_failed(server, 1009, MessageTooBigError)


def test_server_receive_fragmented_message_over_limit_fails_1009() -> None:
    """10.4: the limit counts the whole message, across its fragments."""
    server = WebSocketProtocol(Role.SERVER, max_message_size=10)
    server.receive_data(raw_frame(0x2, b"x" * 6, fin=False))
    assert server.parser_exc is None
    server.receive_data(raw_frame(0x0, b"x" * 5)[:2])
    assert_failed(server, 1009, MessageTooBigError)


def test_server_receive_message_at_limit_passes() -> None:
    """10.4: a message of exactly the limit is accepted (64 bytes counted per continuation)."""
    data = raw_frame(0x2, b"x" * 6, fin=False) + raw_frame(0x0, b"x" * 4)
    _, events = server_receives(data, max_message_size=10 + 64)
    assert events == [Message(MessageType.BINARY, b"x" * 10)]


def test_server_receive_message_over_limit_by_frame_cost_fails() -> None:
    data = raw_frame(0x2, b"x" * 6, fin=False) + raw_frame(0x0, b"x" * 4)
    server, _ = server_receives(data, max_message_size=10 + 63)
    assert_failed(server, 1009, MessageTooBigError)


def test_server_receive_without_limit_accepts_large() -> None:
    """``max_message_size=None`` disables the limit."""
    _, events = server_receives(raw_frame(0x2, b"x" * (2 << 20)), max_message_size=None)
    assert events == [Message(MessageType.BINARY, b"x" * (2 << 20))]


def test_server_receive_large_frame_in_small_chunks() -> None:
    """A frame split over many reads is assembled once it is whole."""
    frame = raw_frame(0x2, bytes(range(256)) * 400)
    server = WebSocketProtocol(Role.SERVER)
    for i in range(0, len(frame), 1000):
        assert server.events_received() == []
        server.receive_data(frame[i : i + 1000])
    assert server.events_received() == [Message(MessageType.BINARY, bytes(range(256)) * 400)]


# ---------------------------------------------------------- sections 5.5.1 and 7: closing


def test_server_receive_close_echoes_and_closes_tcp() -> None:
    """5.5.1 and 7.1.1: the server echoes the close, then closes the TCP connection."""
    server, events = server_receives(raw_frame(0x8, close_payload(1000, b"bye")))
    assert events == [CloseReceived(1000, "bye")]
    assert server.data_to_send() == [b"\x88\x02\x03\xe8", b""]
    assert server.state is State.CLOSING
    assert server.close_expected()
    assert server.close_code == 1000
    assert server.close_reason == "bye"
    server.receive_eof()
    assert server.state is State.CLOSED  # type: ignore[comparison-overlap]
    exc = server.close_exc
    assert isinstance(exc, ConnectionClosedOK)
    assert exc.rcvd_then_sent is True
    assert exc.code == 1000
    assert exc.reason == "bye"


def test_client_close_handshake_client_initiated() -> None:
    """7.1.2: the client starts, the server echoes and closes TCP, the client sees EOF."""
    client, server = WebSocketProtocol(Role.CLIENT), WebSocketProtocol(Role.SERVER)
    client.send_close(1001, "going")
    assert client.state is State.CLOSING
    assert transfer(client, server) == [CloseReceived(1001, "going")]
    assert transfer(server, client) == [CloseReceived(1001, "")]
    assert client.data_to_send() == []  # the client waits for the server to close TCP
    assert client.close_expected()
    client.receive_eof()
    assert client.state is State.CLOSED  # type: ignore[comparison-overlap]
    exc = client.close_exc
    assert isinstance(exc, ConnectionClosedOK)
    assert exc.rcvd_then_sent is False
    assert "sent close 1001 (going); then received 1001" in str(exc)


def test_server_close_handshake_server_initiated() -> None:
    """7.1.2: after the client's echo the server closes TCP."""
    client, server = WebSocketProtocol(Role.CLIENT), WebSocketProtocol(Role.SERVER)
    server.send_close(4000, "custom")
    assert transfer(server, client) == [CloseReceived(4000, "custom")]
    (echo,) = client.data_to_send()
    assert echo[0] == 0x88
    assert client.close_sent == CloseFrame(4000, "")
    server.receive_data(raw_frame(0x8, close_payload(4000)))
    assert server.data_to_send() == [b""]
    assert isinstance(server.close_exc, ConnectionClosedError)  # 4000 is not a normal closure
    assert not server.closed_ok


def test_server_receive_empty_close_echoes_empty() -> None:
    """7.1.5: a close frame with no payload means code 1005; the echo is empty too."""
    server, events = server_receives(raw_frame(0x8))
    assert events == [CloseReceived(1005, "")]
    assert server.data_to_send() == [b"\x88\x00", b""]
    assert isinstance(server.close_exc, ConnectionClosedOK)
    assert server.closed_ok


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_server_receive_close_invalid_code_fails_1002(code: int) -> None:
    """7.4: codes that may not be sent on the wire fail the connection."""
    server, _ = server_receives(raw_frame(0x8, close_payload(code)))
    assert_failed(server, 1002, ProtocolError)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_server_receive_close_valid_codes(code: int) -> None:
    """7.4: every registered or private-use code is accepted."""
    _, events = server_receives(raw_frame(0x8, close_payload(code)))
    assert events == [CloseReceived(code, "")]


def test_server_receive_close_one_byte_payload_fails_1002() -> None:
    """5.5.1: a status code takes two bytes."""
    server, _ = server_receives(raw_frame(0x8, b"\x03"))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_close_invalid_utf8_reason_fails_1007() -> None:
    """5.5.1: the close reason is UTF-8."""
    server, _ = server_receives(raw_frame(0x8, close_payload(1000, b"\xff")))
    assert_failed(server, 1007, InvalidPayloadError)


def test_server_receive_data_after_close_is_ignored() -> None:
    """1.4 / 5.5.1: nothing after a close frame is processed."""
    data = raw_frame(0x8, close_payload(1000)) + raw_frame(0x1, b"late") + b"garbage"
    server, events = server_receives(data)
    assert events == [CloseReceived(1000, "")]
    server.receive_data(raw_frame(0x1, b"later"))
    assert server.events_received() == []
    assert server.parser_exc is None


def test_server_receive_ping_after_sending_close_is_not_answered() -> None:
    """5.5.1: after sending a close frame, no more frames are sent."""
    server = WebSocketProtocol(Role.SERVER)
    server.send_close()
    server.data_to_send()
    server.receive_data(raw_frame(0x9, b"p"))
    assert server.events_received() == [Ping(b"p")]
    assert server.data_to_send() == []


def test_server_send_after_close_raises_connection_closed() -> None:
    """5.5.1: the application MUST NOT send data frames after a close frame."""
    server = WebSocketProtocol(Role.SERVER)
    server.send_close(1000)
    with pytest.raises(ConnectionClosedError):  # no answer yet: not a clean close
        server.send_text("late")
    with pytest.raises(ConnectionClosedError):
        server.send_ping()
    with pytest.raises(ConnectionClosedError):
        server.send_close()


def test_server_send_after_close_received_raises() -> None:
    """5.5.1: also when the peer started closing."""
    server, _ = server_receives(raw_frame(0x8, close_payload(1000)))
    with pytest.raises(ConnectionClosedOK):
        server.send_binary(b"late")


def test_server_receive_eof_without_close_is_abnormal() -> None:
    """7.1.5: no close frame before the end of TCP means 1006."""
    server = WebSocketProtocol(Role.SERVER)
    server.receive_eof()
    assert server.state is State.CLOSED
    exc = server.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1006
    assert "1006" in str(exc)
    assert server.close_code is None
    assert server.close_reason is None
    server.receive_data(raw_frame(0x1, b"x"))
    assert server.events_received() == []


def test_server_fail_sends_close_and_eof_once() -> None:
    """7.1.7: failing sends a close frame with the code, then closes TCP."""
    server = WebSocketProtocol(Role.SERVER)
    server.fail(1011, "internal")
    assert server.data_to_send() == [b"\x88\x0a\x03\xf3internal", b""]
    server.fail(1011)
    assert server.data_to_send() == [b""]
    exc = server.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert exc.code == 1011
    assert str(exc) == "sent close 1011 (internal); no close frame received"


def test_server_fail_after_eof_sends_no_close() -> None:
    """7.1.7: with TCP gone there is no close frame to send."""
    server = WebSocketProtocol(Role.SERVER)
    server.receive_eof()
    server.fail(1011)
    assert server.data_to_send() == [b""]
    assert server.close_sent is None


def test_server_send_close_validates_code_and_reason() -> None:
    """7.4: only sendable codes; code and reason fit in 125 bytes."""
    server = WebSocketProtocol(Role.SERVER)
    with pytest.raises(ValueError, match="may not be sent"):
        server.send_close(1006)
    with pytest.raises(ValueError, match="too long"):
        server.send_close(1000, "x" * 124)
    with pytest.raises(ValueError, match="cannot carry a reason"):
        server.send_close(1005, "why")
    server.send_close(1005)
    assert server.data_to_send() == [b"\x88\x00"]


def test_close_exc_describes_received_only() -> None:
    """The description of a close received with no answer sent (only after EOF)."""
    exc = ConnectionClosedError(CloseFrame(1001, "away"), None)
    assert str(exc) == "received close 1001 (away); no close frame sent"
    assert exc.code == 1001


# ------------------------------------------------------------------------ sending API


def test_server_encode_returns_bytes_without_queueing() -> None:
    """encode() builds one message's frame for an I/O layer with its own queue."""
    server = WebSocketProtocol(Role.SERVER)
    assert server.encode(MessageType.TEXT, "hé") == b"\x81\x03h\xc3\xa9"
    assert server.encode(MessageType.BINARY, b"\x00") == b"\x82\x01\x00"
    assert server.data_to_send() == []
    with pytest.raises(ValueError, match="not a data message type"):
        server.encode(9, b"")


def test_server_send_text_accepts_utf8_bytes() -> None:
    """send_text takes already-encoded UTF-8 as is."""
    server = WebSocketProtocol(Role.SERVER)
    server.send_text("é".encode())
    assert server.data_to_send() == [b"\x81\x02\xc3\xa9"]


def test_client_events_received_drains() -> None:
    """events_received returns each event once."""
    client, events = client_receives(raw_frame(0x1, b"a", mask=None))
    assert events == [Message(MessageType.TEXT, "a")]
    assert client.events_received() == []


def test_message_json_parses_data() -> None:
    """Message.json() decodes a JSON message."""
    assert Message(MessageType.TEXT, '{"type": "chat"}').json() == {"type": "chat"}


@pytest.mark.parametrize("size", [5, 300, 70_000])
def test_server_receive_frame_byte_by_byte(size: int) -> None:
    """5.2: a header split anywhere, in every length form, still parses."""
    frame = raw_frame(0x2, b"z" * size)
    server = WebSocketProtocol(Role.SERVER)
    for i in range(min(len(frame), 20)):
        server.receive_data(frame[i : i + 1])
    server.receive_data(frame[20:])
    assert server.events_received() == [Message(MessageType.BINARY, b"z" * size)]


# ------------------------------------------------------- RFC 7692 section 6: compression


def deflate_pair(
    max_message_size: int | None = 1 << 20,
) -> tuple[WebSocketProtocol, WebSocketProtocol]:
    """A client and a server that negotiated permessage-deflate with default parameters."""
    cfg = DeflateConfig(min_size=0)
    return (
        WebSocketProtocol(
            Role.CLIENT,
            deflate=PerMessageDeflate(DeflateParams(), is_server=False, config=cfg),
            max_message_size=max_message_size,
        ),
        WebSocketProtocol(
            Role.SERVER,
            deflate=PerMessageDeflate(DeflateParams(), is_server=True, config=cfg),
            max_message_size=max_message_size,
        ),
    )


def test_server_receive_rsv1_on_control_frame_fails_1002() -> None:
    """RFC 7692 section 6: control frames are never compressed."""
    _, server = deflate_pair()
    server.receive_data(raw_frame(0x9, b"", rsv=4))
    assert_failed(server, 1002, ProtocolError)


def test_server_receive_compressed_rsv1_on_continuation_fails_1002() -> None:
    """RFC 7692 section 6.1: RSV1 on a continuation frame, with the extension on."""
    _, server = deflate_pair()
    server.receive_data(raw_frame(0x2, b"", fin=False, rsv=4))
    server.receive_data(raw_frame(0x0, b"", rsv=4))
    assert_failed(server, 1002, ProtocolError)


def test_client_send_compressed_sets_rsv1_on_first_frame_only() -> None:
    """RFC 7692 section 6.1: RSV1 on the first frame of a compressed message only."""
    client, server = deflate_pair()
    client.send_text("hello " * 10, fin=False)
    client.send_continuation(b"world", fin=True)
    first, second = client.data_to_send()
    assert first[0] == 0x41  # text, RSV1, not final
    assert second[0] == 0x80  # continuation, final, no RSV1
    server.receive_data(first + second)
    assert server.events_received() == [Message(MessageType.TEXT, "hello " * 10 + "world")]


def test_server_receive_compressed_over_limit_fails_1009() -> None:
    """10.4 and RFC 7692 section 8.1: the limit applies to the inflated size."""
    client, server = deflate_pair(max_message_size=1000)
    client.send_binary(b"\x00" * 1001)
    (frame,) = client.data_to_send()
    assert len(frame) < 100
    server.receive_data(frame)
    assert_failed(server, 1009, MessageTooBigError)


def test_server_receive_compressed_wire_size_over_limit_fails_1009() -> None:
    """10.4: even compressed, a frame larger than the limit is refused from its header."""
    _, server = deflate_pair(max_message_size=100)
    server.receive_data(raw_frame(0x2, b"x" * 101, rsv=4)[:8])
    assert_failed(server, 1009, MessageTooBigError)


def test_server_receive_compressed_fragments_without_limit() -> None:
    """RFC 7692 section 6.1: a compressed message in fragments, with no size limit."""
    client, server = deflate_pair(max_message_size=None)
    client.send_binary(b"ab" * 1000, fin=False)
    client.send_continuation(b"cd" * 1000, fin=False)
    client.send_continuation(b"", fin=True)
    assert transfer(client, server) == [Message(MessageType.BINARY, b"ab" * 1000 + b"cd" * 1000)]


def test_server_receive_ping_flood_answers_every_ping() -> None:
    """5.5.2: every ping gets its pong, in order (the I/O layer bounds the backlog)."""
    server, events = server_receives(b"".join(raw_frame(0x9, b"%d" % i) for i in range(1000)))
    assert len(events) == 1000
    assert server.data_to_send() == [
        b"\x8a" + bytes((len(b"%d" % i),)) + b"%d" % i for i in range(1000)
    ]


def test_server_receive_ping_then_close_keeps_pong_before_echo() -> None:
    """5.5.2 and 5.5.1: the pongs keep their place before the close echo."""
    data = raw_frame(0x9, b"a") + raw_frame(0x9, b"b") + raw_frame(0x8, close_payload(1000))
    server, _ = server_receives(data)
    assert server.data_to_send() == [b"\x8a\x01a", b"\x8a\x01b", b"\x88\x02\x03\xe8", b""]


@pytest.mark.parametrize("opcode", [3, 7])
def test_server_receive_reserved_data_opcode_fails_from_header(opcode: int) -> None:
    """5.2: a reserved opcode is refused from the header, before its payload is buffered."""
    server = WebSocketProtocol(Role.SERVER, max_message_size=None)
    server.receive_data(raw_frame(opcode, b"x" * 100_000)[:14])
    assert_failed(server, 1002, ProtocolError)


def test_encode_parts_is_encode_in_two() -> None:
    """encode_parts: header + payload is the frame; a server's bytes payload is not copied."""
    payload = bytes(range(256)) * 300
    server = WebSocketProtocol(Role.SERVER)
    header, body = server.encode_parts(MessageType.BINARY, payload)
    assert body is payload
    assert header + body == server.encode(MessageType.BINARY, payload)
    # A bytearray is copied: the caller may change it once the frame is queued.
    buffer = bytearray(payload)
    header, body = server.encode_parts(MessageType.BINARY, buffer)
    buffer[0] = 255
    assert type(body) is bytes
    assert header + body == raw_frame(0x2, payload, mask=None)
    text_header, text_body = server.encode_parts(MessageType.TEXT, "hé")
    assert text_header + text_body == b"\x81\x03h\xc3\xa9"
    with pytest.raises(ValueError, match="not a data message type"):
        server.encode_parts(9, b"")
    assert server.data_to_send() == []


def test_client_encode_parts_masks_and_the_server_parses_it() -> None:
    client = WebSocketProtocol(Role.CLIENT)
    header, body = client.encode_parts(MessageType.BINARY, b"x" * 70_000)
    assert len(header) == 2 + 8 + 4  # the 64-bit length form and the masking key
    _, events = server_receives(header + body)
    assert events == [Message(MessageType.BINARY, b"x" * 70_000)]


def test_compressed_encode_parts_sets_rsv1() -> None:
    client, server = deflate_pair()
    header, body = server.encode_parts(MessageType.TEXT, "a" * 1000)
    assert header[0] == 0xC1  # FIN, RSV1, text
    assert len(body) < 100
    client.receive_data(header + body)
    assert client.events_received() == [Message(MessageType.TEXT, "a" * 1000)]
