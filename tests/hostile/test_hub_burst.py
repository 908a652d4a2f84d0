"""A burst of broadcasts evicts only the member that does not read (issue 9, item 6).

Over real sockets on 127.0.0.1: prompt readers are raw TCP sockets that speak just
enough RFC 6455 to read unmasked server frames, so 200 of them cost little.
"""

from __future__ import annotations

import base64
import os
import re
import socket

import trio

from rue_trio.handlers import WebSocketHandler
from rue_trio.hub import Hub
from rue_trio.protocol import MessageType
from rue_trio.websocket import ConnectionConfig

from ._hub_app import serve_hub

_PAYLOAD = 1024
_FRAME = 4 + _PAYLOAD  # unmasked binary frame, 16-bit extended length
_CLOSE_1008 = re.compile(rb"\x88[\x02-\x7d]\x03\xf0")


def _frame_payloads(buffer: bytearray) -> list[bytes]:
    out = []
    while len(buffer) >= _FRAME:
        assert buffer[0] == 0x82 and buffer[1] == 126, bytes(buffer[:4])
        assert int.from_bytes(buffer[2:4], "big") == _PAYLOAD
        out.append(bytes(buffer[4:_FRAME]))
        del buffer[:_FRAME]
    return out


async def _connect(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream


async def _read_frames(stream: trio.SocketStream, count: int, got: list[bytes]) -> None:
    buffer = bytearray()
    while len(got) < count:
        chunk = await stream.receive_some(1 << 16)
        assert chunk, f"closed after {len(got)} frames"
        buffer += chunk
        got.extend(_frame_payloads(buffer))


async def _burst(
    readers: int,
    broadcasts: int,
    config: ConnectionConfig,
    *,
    stuck: bool,
    rcvbuf: int | None = None,
) -> tuple[Hub, list[list[bytes]], bytes]:
    hub = Hub()
    handler = WebSocketHandler(hub=hub, compression=False, config=config)
    async with serve_hub(hub, handler) as port:
        streams = [await _connect(port, rcvbuf=rcvbuf) for _ in range(readers)]
        idle = await _connect(port, rcvbuf=4096) if stuck else None
        # The server registers each connection in its own task: poll (fail_after bounds it).
        while hub.count() < readers + stuck:  # noqa: ASYNC110
            await trio.sleep(0.01)
        got: list[list[bytes]] = [[] for _ in streams]
        async with trio.open_nursery() as nursery:
            for stream, frames in zip(streams, got, strict=True):
                nursery.start_soon(_read_frames, stream, broadcasts, frames)
            for i in range(broadcasts):
                await hub.broadcast(MessageType.BINARY, i.to_bytes(4, "big") * (_PAYLOAD // 4))
        closing = b""
        if idle is not None:
            # The stuck member was evicted: what it finally reads ends with a close frame
            # (opcode 8) whose status is 1008 (RFC 6455 section 5.5.1).
            tail = b""
            while not (found := _CLOSE_1008.search(tail)):
                chunk = await idle.receive_some(1 << 16)
                assert chunk, "closed without a 1008 close frame"
                tail = tail[-8:] + chunk
            closing = found.group()
            await idle.aclose()
        for stream in streams:
            await stream.aclose()
    return hub, got, closing


def _assert_in_order(got: list[list[bytes]], broadcasts: int) -> None:
    expected = [i.to_bytes(4, "big") * (_PAYLOAD // 4) for i in range(broadcasts)]
    for frames in got:
        assert frames == expected


# A burst about four times the outbound budget (1,000 x 1 KB against 256 KiB), read by
# clients with a small receive buffer (16 KiB asked, which Linux doubles), so the kernel
# absorbs little and the queues must drain while the burst runs. Before the hub paced
# itself on bytes queued, every one of the 200 prompt readers was evicted here.
# No keepalive: these clients do not answer pings.
_CONFIG = ConnectionConfig(outbound_queue_bytes=256 * 1024, ping_interval=None)
_RCVBUF = 16 * 1024


async def test_hub_burst_to_prompt_readers_evicts_none() -> None:
    with trio.fail_after(30):
        hub, got, _ = await _burst(200, 1000, _CONFIG, stuck=False, rcvbuf=_RCVBUF)
    assert hub.statistics().evicted == 0
    _assert_in_order(got, 1000)


async def test_hub_burst_evicts_only_the_member_that_never_reads() -> None:
    with trio.fail_after(30):
        hub, got, closing = await _burst(50, 1000, _CONFIG, stuck=True, rcvbuf=_RCVBUF)
    assert hub.statistics().evicted == 1
    _assert_in_order(got, 1000)
    assert closing
