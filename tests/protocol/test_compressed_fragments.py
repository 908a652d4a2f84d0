"""The size limit of a compressed message split over frames, at the WebSocketProtocol level.

RFC 6455 section 10.4 and RFC 7692 section 8.1: ``max_message_size`` counts the inflated
size of the whole message, so every fragment is decompressed under what the earlier
fragments left of the budget. The fragments here are built with zlib directly (one raw
DEFLATE stream, flushed after each fragment), not by the code under test, and each one
inflates to less than the limit on its own: only the count across fragments refuses them.
"""

from __future__ import annotations

import random
import zlib

import pytest

from rue_trio.exceptions import MessageTooBigError
from rue_trio.protocol import (
    DeflateConfig,
    DeflateParams,
    Message,
    MessageType,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
)

from ._util import MASK, raw_frame

LIMIT = 1000
_TAIL = b"\x00\x00\xff\xff"


def compressed_fragments(parts: list[bytes]) -> list[bytes]:
    """One message's fragment payloads: each part deflated and sync-flushed, in one stream."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    payloads = [compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    # RFC 7692 section 7.2.1: the message's final 00 00 ff ff is left off.
    assert payloads[-1].endswith(_TAIL)
    payloads[-1] = payloads[-1][: -len(_TAIL)]
    return payloads


def receiver(role: Role) -> WebSocketProtocol:
    """A ``role`` protocol with permessage-deflate and a 1,000-byte limit."""
    deflate = PerMessageDeflate(
        DeflateParams(), is_server=role is Role.SERVER, config=DeflateConfig(min_size=0)
    )
    return WebSocketProtocol(role, deflate=deflate, max_message_size=LIMIT)


def wire(role: Role, payloads: list[bytes], opcode: int) -> bytes:
    """The frames a peer of ``role`` sends: RSV1 on the first, masked towards a server."""
    mask = MASK if role is Role.SERVER else None
    last = len(payloads) - 1
    return b"".join(
        raw_frame(
            opcode if i == 0 else 0x0,
            payload,
            fin=i == last,
            rsv=4 if i == 0 else 0,
            mask=mask,
        )
        for i, payload in enumerate(payloads)
    )


def incompressible(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_receive_compressed_fragments_over_limit_fails_1009(role: Role) -> None:
    """Three fragments of 600 inflated bytes each: 1,800 against a 1,000-byte limit."""
    parts = [incompressible(600, seed) for seed in range(3)]
    payloads = compressed_fragments(parts)
    assert all(len(payload) < LIMIT for payload in payloads)  # each frame fits on the wire
    proto = receiver(role)
    proto.receive_data(wire(role, payloads, 0x2))
    events = proto.events_received()
    assert not any(isinstance(event, Message) for event in events)
    assert isinstance(proto.parser_exc, MessageTooBigError)
    assert proto.parser_exc.close_code == 1009
    assert proto.close_sent is not None
    assert proto.close_sent.code == 1009


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_receive_compressed_text_fragments_over_limit_fails_1009(role: Role) -> None:
    """The same budget for text: 4 x 300 ASCII bytes, one byte compressed at a time."""
    parts = [bytes(random.Random(seed).choices(b"abcdefghij", k=300)) for seed in range(4)]
    proto = receiver(role)
    proto.receive_data(wire(role, compressed_fragments(parts), 0x1))
    assert not any(isinstance(event, Message) for event in proto.events_received())
    assert isinstance(proto.parser_exc, MessageTooBigError)
    assert proto.parser_exc.close_code == 1009


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_receive_compressed_fragments_exactly_at_limit_delivered(role: Role) -> None:
    """400 + 300 + 172 inflated bytes and 64 for each of 2 continuations: exactly the limit."""
    parts = [incompressible(size, seed) for seed, size in enumerate((400, 300, 300 - 2 * 64))]
    proto = receiver(role)
    proto.receive_data(wire(role, compressed_fragments(parts), 0x2))
    assert proto.events_received() == [Message(MessageType.BINARY, b"".join(parts))]
    assert proto.parser_exc is None
