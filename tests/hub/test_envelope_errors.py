"""Decoding a backplane envelope that another node (or anything else) published.

Whatever bytes arrive on a backplane channel, ``unpack_envelope`` returns an envelope or
raises ``ValueError`` naming what is wrong: the backplane counts those and drops them.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rue_trio.hub import Envelope, pack_envelope, unpack_envelope
from rue_trio.protocol import MessageType

NODE = bytes(range(16))
# version, type, flags, origin, room size, exclude size (the module docstring's layout).
HEADER = struct.Struct("!BBB16sHH")


def raw_envelope(
    *,
    type_code: int = 1,
    flags: int = 0,
    room: bytes = b"",
    exclude: bytes = b"",
    sizes: tuple[int, int] | None = None,
) -> bytes:
    room_size, exclude_size = sizes if sizes is not None else (len(room), len(exclude))
    return HEADER.pack(1, type_code, flags, NODE, room_size, exclude_size) + room + exclude


def test_envelope_unpack_room_past_the_end_truncated() -> None:
    with pytest.raises(ValueError, match="truncated envelope"):
        unpack_envelope(raw_envelope(flags=1, room=b"lobby", sizes=(6, 0)))


def test_envelope_unpack_exclude_past_the_end_truncated() -> None:
    with pytest.raises(ValueError, match="truncated envelope"):
        unpack_envelope(raw_envelope(flags=3, room=b"r", exclude=b"m1", sizes=(1, 300)))


@pytest.mark.parametrize(
    ("flags", "room", "exclude"),
    [(1, b"\xff\xfe", b""), (2, b"", b"m\xc3"), (3, b"ok", b"\xed\xa0\x80")],
    ids=["room", "exclude", "surrogate-exclude"],
)
def test_envelope_unpack_not_utf8_names_the_field(flags: int, room: bytes, exclude: bytes) -> None:
    with pytest.raises(ValueError, match="room or exclude id is not UTF-8") as info:
        unpack_envelope(raw_envelope(flags=flags, room=room, exclude=exclude))
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize("type_code", [0, 3, 8, 9, 10, 255])
def test_envelope_unpack_non_data_type_refused(type_code: int) -> None:
    """Only text (1) and binary (2) cross: never a continuation or a control opcode."""
    with pytest.raises(ValueError, match=f"unknown message type {type_code}"):
        unpack_envelope(raw_envelope(type_code=type_code))


def test_envelope_unpack_flags_off_ignore_the_sizes_bytes() -> None:
    """A size with its flag off still delimits the bytes; the field is then absent."""
    envelope = unpack_envelope(raw_envelope(flags=0, room=b"r", exclude=b"x") + b"data")
    assert envelope == Envelope(MessageType.TEXT, b"data", None, None, NODE)


def test_envelope_pack_refuses_bad_origin_and_long_names() -> None:
    with pytest.raises(ValueError, match="16-byte node id"):
        pack_envelope(Envelope(MessageType.TEXT, b"x", None, None, b"short"))
    with pytest.raises(ValueError, match="longer than 65535 bytes"):
        pack_envelope(Envelope(MessageType.TEXT, b"x", "é" * 40_000, None, NODE))


@given(st.binary(max_size=64))
def test_envelope_unpack_any_bytes_envelope_or_value_error(data: bytes) -> None:
    try:
        envelope = unpack_envelope(data)
    except ValueError:
        return
    assert envelope.type in (MessageType.TEXT, MessageType.BINARY)
    assert len(envelope.origin) == 16
