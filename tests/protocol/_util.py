"""Helpers shared by the protocol tests: an independent frame encoder and a connected pair."""

from __future__ import annotations

import struct

from rue_trio.protocol import Event, Role, WebSocketProtocol

MASK = b"\x37\xfa\x21\x3d"


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length_form: int | None = None,
) -> bytes:
    """Build a frame by hand, independently of the code under test.

    ``rsv`` is the three RSV bits as an int (4 = RSV1); ``length_form`` forces the 7, 16 or
    64-bit length encoding.
    """
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    mbit = 0x80 if mask is not None else 0
    if form == 7:
        header = bytes((b0, mbit | n))
    elif form == 16:
        header = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is None:
        return header + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def server_receives(data: bytes, **kwargs: object) -> tuple[WebSocketProtocol, list[Event]]:
    """Feed client bytes to a fresh server protocol; return it and its events."""
    server = WebSocketProtocol(Role.SERVER, **kwargs)  # type: ignore[arg-type]
    server.receive_data(data)
    return server, server.events_received()


def client_receives(data: bytes, **kwargs: object) -> tuple[WebSocketProtocol, list[Event]]:
    """Feed server bytes to a fresh client protocol; return it and its events."""
    client = WebSocketProtocol(Role.CLIENT, **kwargs)  # type: ignore[arg-type]
    client.receive_data(data)
    return client, client.events_received()


def transfer(src: WebSocketProtocol, dst: WebSocketProtocol) -> list[Event]:
    """Move everything ``src`` wants to send into ``dst``; return ``dst``'s events."""
    for chunk in src.data_to_send():
        if chunk:
            dst.receive_data(chunk)
        else:
            dst.receive_eof()
    return dst.events_received()
