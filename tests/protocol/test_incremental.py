"""Parsing on demand, payloads consumed as they arrive, and the memory rules of the core."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from rue_trio.exceptions import InvalidPayloadError, MessageTooBigError, ProtocolError
from rue_trio.protocol import (
    CloseReceived,
    DeflateParams,
    Message,
    MessageType,
    PerMessageDeflate,
    Ping,
    Role,
    State,
    WebSocketProtocol,
)

from ._util import raw_frame, server_receives

TEXT = MessageType.TEXT
BINARY = MessageType.BINARY


def _feed_in_chunks(proto: WebSocketProtocol, data: bytes, size: int) -> list[object]:
    events: list[object] = []
    for i in range(0, len(data), size):
        proto.buffer_data(data[i : i + size])
        while (event := proto.next_event()) is not None:
            events.append(event)
    return events


def test_server_next_event_parses_one_event_per_call() -> None:
    server = WebSocketProtocol(Role.SERVER)
    server.buffer_data(raw_frame(1, b"a") + raw_frame(9, b"p") + raw_frame(2, b"b"))
    assert server.next_event() == Message(TEXT, "a")
    # Nothing past the first event was parsed: no pong yet.
    assert server.data_to_send() == []
    assert server.next_event() == Ping(b"p")
    assert server.data_to_send() == [b"\x8a\x01p"]
    assert server.next_event() == Message(BINARY, b"b")
    assert server.next_event() is None


def test_server_next_event_defers_the_failure_of_a_violation() -> None:
    """A message then a reserved opcode: the message comes out, the failure waits."""
    server = WebSocketProtocol(Role.SERVER)
    server.buffer_data(raw_frame(1, b"question") + raw_frame(3, b""))
    assert server.next_event() == Message(TEXT, "question")
    assert server.next_event() is None
    assert isinstance(server.parser_exc, ProtocolError)
    assert server.parser_exc.__traceback__ is None
    # The application can still answer before the close frame goes.
    server.send_text("answer")
    server.buffer_data(raw_frame(1, b"ignored"))
    assert server.next_event() is None
    server.fail_on_violation()
    out = server.data_to_send()
    assert out[0] == b"\x81\x06answer"
    assert out[1][:1] + out[1][2:4] == b"\x88\x03\xea"
    assert out[2] == b""
    assert server.state is State.CLOSING


def test_server_fail_on_violation_without_violation_does_nothing() -> None:
    server = WebSocketProtocol(Role.SERVER)
    server.fail_on_violation()
    assert server.data_to_send() == []
    assert server.state is State.OPEN


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_server_masked_frame_in_pieces_is_unmasked_across_reads(size: int) -> None:
    payload = bytes(range(256)) * 20
    server = WebSocketProtocol(Role.SERVER)
    events = _feed_in_chunks(server, raw_frame(2, payload) + raw_frame(1, b"end"), size)
    assert events == [Message(BINARY, payload), Message(TEXT, "end")]


def test_client_unmasked_frame_in_pieces() -> None:
    client = WebSocketProtocol(Role.CLIENT)
    payload = b"x" * 5000
    events = _feed_in_chunks(client, raw_frame(2, payload, mask=None), 999)
    assert events == [Message(BINARY, payload)]


def test_server_buffers_at_most_one_read_of_a_large_frame() -> None:
    server = WebSocketProtocol(Role.SERVER)
    frame = raw_frame(2, b"y" * 300_000)
    events = []
    for i in range(0, len(frame), 65536):
        server.buffer_data(frame[i : i + 65536])
        while (event := server.next_event()) is not None:
            events.append(event)
        assert len(server._buf) == 0
    assert events == [Message(BINARY, b"y" * 300_000)]


def test_server_slow_text_frame_invalid_utf8_fails_before_its_end() -> None:
    """8.1: a single text frame arriving slowly fails at the invalid byte."""
    server = WebSocketProtocol(Role.SERVER)
    frame = raw_frame(1, b"a" * 100 + b"\xff" + b"a" * 10_000)
    server.buffer_data(frame[:200])
    assert server.next_event() is None
    assert isinstance(server.parser_exc, InvalidPayloadError)


def test_server_slow_fragmented_text_message_is_decoded_whole() -> None:
    text = "é€😀" * 1000
    data = text.encode()
    frames = raw_frame(1, data[:1001], fin=False) + raw_frame(0, data[1001:])
    server = WebSocketProtocol(Role.SERVER)
    assert _feed_in_chunks(server, frames, 500) == [Message(TEXT, text)]


def test_server_slow_compressed_frame_is_inflated_as_it_arrives() -> None:
    params = DeflateParams()
    server = WebSocketProtocol(Role.SERVER, deflate=PerMessageDeflate(params, is_server=True))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"hello " * 10_000
    payload = (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    events = _feed_in_chunks(server, raw_frame(2, payload, rsv=4), 7)
    assert events == [Message(BINARY, data)]


def test_server_empty_continuations_reach_the_limit() -> None:
    """Each continuation costs 64 bytes: endless empty fragments fail with 1009."""
    server = WebSocketProtocol(Role.SERVER, max_message_size=64 * 100)
    server.receive_data(raw_frame(2, b"x", fin=False) + raw_frame(0, b"", fin=False) * 99)
    assert server.state is State.OPEN
    server.receive_data(raw_frame(0, b"", fin=False))
    assert isinstance(server.parser_exc, MessageTooBigError)


def test_server_continuation_header_in_pieces_is_charged_once() -> None:
    server = WebSocketProtocol(Role.SERVER, max_message_size=64 * 2 + 2)
    frames = raw_frame(2, b"x", fin=False) + raw_frame(0, b"", fin=False) + raw_frame(0, b"y")
    assert _feed_in_chunks(server, frames, 1) == [Message(BINARY, b"xy")]


def test_server_compressed_empty_continuations_reach_the_limit() -> None:
    params = DeflateParams()
    server = WebSocketProtocol(
        Role.SERVER, max_message_size=640, deflate=PerMessageDeflate(params, is_server=True)
    )
    server.receive_data(raw_frame(2, b"", fin=False, rsv=4) + raw_frame(0, b"", fin=False) * 11)
    assert isinstance(server.parser_exc, MessageTooBigError)


def test_server_control_frame_in_pieces_waits_for_its_end() -> None:
    server = WebSocketProtocol(Role.SERVER)
    events = _feed_in_chunks(server, raw_frame(9, b"ping payload"), 3)
    assert events == [Ping(b"ping payload")]


def test_server_close_frame_stops_lazy_parsing() -> None:
    server = WebSocketProtocol(Role.SERVER)
    server.buffer_data(raw_frame(8, b"\x03\xe8") + raw_frame(1, b"late"))
    assert server.next_event() == CloseReceived(1000, "")
    assert server.next_event() is None


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a" * 4000, True),  # ASCII: one byte per character
        ("é" * 2000, True),  # Latin-1: one byte per character, two in UTF-8
        ("😀" * 1000, True),  # four bytes per character both ways
        ("a" * 3000 + "😀", False),  # one emoji widens 3,001 characters to 4 bytes
        ("a" * 3000 + "€", False),  # one euro sign widens them to 2 bytes
        ("€" * 1300, True),  # 3 bytes in UTF-8, 2 in memory
    ],
)
def test_server_text_counted_as_python_holds_it(text: str, ok: bool) -> None:
    """A text message may not take over max_message_size as a str, however it is framed."""
    data = text.encode()
    for frames in (
        raw_frame(1, data),
        raw_frame(1, data[:10], fin=False) + raw_frame(0, data[10:]),
    ):
        server, events = server_receives(frames, max_message_size=4096)
        if ok:
            assert events == [Message(TEXT, text)]
        else:
            assert isinstance(server.parser_exc, MessageTooBigError)


def test_server_text_width_checked_on_each_large_fragment() -> None:
    data = ("a" * 3000 + "😀").encode()
    server, _ = server_receives(raw_frame(1, data, fin=False), max_message_size=4096)
    assert isinstance(server.parser_exc, MessageTooBigError)


def test_server_without_limit_decodes_wide_text() -> None:
    text = "a" * 3000 + "😀"
    _, events = server_receives(raw_frame(1, text.encode()), max_message_size=None)
    assert events == [Message(TEXT, text)]


def test_server_payload_pending_counts_what_a_large_frame_still_lacks() -> None:
    """What a reader may read at once: the rest of the current uncompressed payload."""
    server = WebSocketProtocol(Role.SERVER)
    assert server.payload_pending == 0
    frame = raw_frame(2, b"y" * 300_000)
    server.buffer_data(frame[:1000])
    assert server.next_event() is None
    header = len(frame) - 300_000
    assert server.payload_pending == 300_000 - (1000 - header)
    server.buffer_data(frame[1000:] + raw_frame(1, b"next")[:3])
    assert server.next_event() == Message(BINARY, b"y" * 300_000)
    assert server.next_event() is None
    assert server.payload_pending == 0  # between frames: a header is missing


def test_server_payload_pending_is_zero_for_a_compressed_message() -> None:
    """A compressed payload is inflated only as far as the caller has room: read as usual."""
    params = DeflateParams()
    server = WebSocketProtocol(Role.SERVER, deflate=PerMessageDeflate(params, is_server=True))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = compressor.compress(bytes(range(256)) * 400) + compressor.flush(zlib.Z_SYNC_FLUSH)
    server.buffer_data(raw_frame(2, payload[:-4], rsv=4)[:100])
    assert server.next_event() is None
    assert server.payload_pending == 0


def test_large_message_in_reads_is_held_at_its_size_then_joined_once() -> None:
    """A 1 MiB message read in 64 KiB chunks costs about its bytes while it is assembled.

    The parts are kept and joined once (1 % over the bytes at most), instead of a buffer
    grown as the chunks come (12.6 % over, then reallocated and copied out).
    """
    size = 1 << 20
    payload = bytes(range(256)) * (size // 256)
    frame = raw_frame(2, payload, mask=None)
    chunks = [frame[i : i + 65536] for i in range(0, len(frame), 65536)]
    client = WebSocketProtocol(Role.CLIENT, max_message_size=None)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held = 0
        for chunk in chunks[:-1]:
            client.buffer_data(chunk)
            assert client.next_event() is None
            held = max(held, tracemalloc.get_traced_memory()[0] - base)
        tracemalloc.reset_peak()
        client.buffer_data(chunks[-1])
        event = client.next_event()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert event == Message(BINARY, payload)
    assert held <= size * 1.01
    # The parts and the message, for the moment of the join.
    assert peak <= size * 2.01
    assert client._assembly == []
