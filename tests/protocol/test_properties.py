"""Hypothesis properties of the protocol core, over both roles, fragmentation and compression."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rue_trio.exceptions import ProtocolError
from rue_trio.protocol import (
    CloseReceived,
    DeflateConfig,
    DeflateParams,
    Event,
    Message,
    MessageType,
    PerMessageDeflate,
    Ping,
    Role,
    WebSocketProtocol,
)

texts = st.text(max_size=300)
binaries = st.binary(max_size=300)
messages = st.lists(
    st.one_of(
        texts.map(lambda t: Message(MessageType.TEXT, t)),
        binaries.map(lambda b: Message(MessageType.BINARY, b)),
    ),
    max_size=8,
)
deflate_params = st.one_of(
    st.none(),
    st.builds(
        DeflateParams,
        server_no_context_takeover=st.booleans(),
        client_no_context_takeover=st.booleans(),
        server_max_window_bits=st.integers(9, 15),
        client_max_window_bits=st.integers(9, 15),
    ),
)


def pair(
    client_sends: bool, params: DeflateParams | None
) -> tuple[WebSocketProtocol, WebSocketProtocol]:
    """A sender and a receiver with matching roles and codecs."""
    config = DeflateConfig(min_size=0)
    sender_role, receiver_role = (
        (Role.CLIENT, Role.SERVER) if client_sends else (Role.SERVER, Role.CLIENT)
    )
    if params is None:
        return WebSocketProtocol(sender_role), WebSocketProtocol(receiver_role)
    return (
        WebSocketProtocol(
            sender_role,
            deflate=PerMessageDeflate(params, is_server=not client_sends, config=config),
        ),
        WebSocketProtocol(
            receiver_role,
            deflate=PerMessageDeflate(params, is_server=client_sends, config=config),
        ),
    )


def send_fragmented(sender: WebSocketProtocol, msg: Message, cuts: list[int]) -> None:
    """Send ``msg`` split at the given offsets (of its encoded bytes)."""
    data = msg.data.encode() if isinstance(msg.data, str) else msg.data
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    first, *rest = pieces
    if msg.type is MessageType.TEXT:
        sender.send_text(first, fin=not rest)
    else:
        sender.send_binary(first, fin=not rest)
    for i, piece in enumerate(rest):
        sender.send_continuation(piece, fin=i == len(rest) - 1)


def wire(sender: WebSocketProtocol) -> bytes:
    chunks = sender.data_to_send()
    assert b"" not in chunks
    return b"".join(chunks)


@settings(max_examples=150, deadline=None)
@given(
    msgs=messages,
    client_sends=st.booleans(),
    params=deflate_params,
    cuts=st.lists(st.lists(st.integers(0, 400), max_size=3), min_size=8, max_size=8),
)
def test_encode_then_parse_is_identity(
    msgs: list[Message], client_sends: bool, params: DeflateParams | None, cuts: list[list[int]]
) -> None:
    """Any messages, fragmented anyhow, masked or not, compressed or not, arrive unchanged."""
    sender, receiver = pair(client_sends, params)
    for msg, msg_cuts in zip(msgs, cuts, strict=False):
        send_fragmented(sender, msg, msg_cuts)
    receiver.receive_data(wire(sender))
    assert receiver.parser_exc is None
    assert receiver.events_received() == msgs


@settings(max_examples=150, deadline=None)
@given(
    msgs=messages,
    client_sends=st.booleans(),
    params=deflate_params,
    splits=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_any_split_of_a_stream_yields_the_same_events(
    msgs: list[Message], client_sends: bool, params: DeflateParams | None, splits: list[int]
) -> None:
    """Feeding a valid byte stream in any chunks gives the same events as in one piece."""
    sender, whole = pair(client_sends, params)
    _, pieces = pair(client_sends, params)
    _, lazy = pair(client_sends, params)
    for msg in msgs:
        if msg.type is MessageType.TEXT:
            sender.send_text(msg.data)
        else:
            sender.send_binary(msg.data)  # type: ignore[arg-type]
        sender.send_ping(b"p")
    sender.send_close(1000, "done")
    stream = wire(sender)
    whole.receive_data(stream)
    points = sorted({s % (len(stream) + 1) for s in splits})
    lazy_events: list[Event] = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        pieces.receive_data(stream[a:b])
        # On demand, as the I/O layer parses: the same events.
        lazy.buffer_data(stream[a:b])
        while (event := lazy.next_event()) is not None:
            lazy_events.append(event)
    expected: list[Event] = []
    for msg in msgs:
        expected += [msg, Ping(b"p")]
    expected.append(CloseReceived(1000, "done"))
    assert whole.events_received() == expected
    assert pieces.events_received() == expected
    assert lazy_events == expected
    # The answers: a pong per ping (section 5.5.2), then the close echo, then (on the
    # server) the end of TCP.
    for receiver in (whole, pieces, lazy):
        out = receiver.data_to_send()
        if client_sends:
            assert out.pop() == b""
        assert out.pop()[0] == 0x88
        assert [frame[0] for frame in out] == [0x8A] * len(msgs)


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=64), max_size=10),
    role=st.sampled_from(Role),
    deflate=st.booleans(),
)
def test_arbitrary_bytes_yield_events_or_a_protocol_error(
    chunks: list[bytes], role: Role, deflate: bool
) -> None:
    """Garbage never raises: it gives events, or fails the connection with a ProtocolError."""
    codec = PerMessageDeflate(DeflateParams(), is_server=role is Role.SERVER) if deflate else None
    proto = WebSocketProtocol(role, max_message_size=200, deflate=codec)
    lazy = WebSocketProtocol(
        role,
        max_message_size=200,
        deflate=codec and PerMessageDeflate(DeflateParams(), is_server=role is Role.SERVER),
    )
    lazy_events = []
    for chunk in chunks:
        proto.receive_data(chunk)
        lazy.buffer_data(chunk)
        while (event := lazy.next_event()) is not None:
            lazy_events.append(event)
    events = proto.events_received()
    assert all(isinstance(e, Event) for e in events)
    # Parsed on demand, the same events, and the same violation, not yet failed.
    assert lazy_events == events
    assert type(lazy.parser_exc) is type(proto.parser_exc)
    if proto.parser_exc is not None:
        assert isinstance(proto.parser_exc, ProtocolError)
        assert proto.parser_exc.close_code in (1002, 1007, 1009)
        out = proto.data_to_send()
        assert out[-1] == b""
