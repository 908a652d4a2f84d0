"""How much the reader asks the transport for: ``read_size``, or more of a big frame."""

from __future__ import annotations

import trio

from rue_trio.websocket import ConnectionConfig

from ._util import QUIET, WrappedStream, conn_pair


class RecordingStream(WrappedStream):
    """A stream that records the ``max_bytes`` of every ``receive_some``."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        super().__init__(inner)
        self.asked: list[int | None] = []

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.asked.append(max_bytes)
        return await super().receive_some(max_bytes)


async def _reads_for(message: bytes, config: ConnectionConfig, *, deflate: bool) -> list[int]:
    """Send ``message`` to a server connection; return the sizes its reader asked for."""
    recorded: list[RecordingStream] = []

    def record(stream: trio.abc.HalfCloseableStream) -> RecordingStream:
        recorded.append(RecordingStream(stream))
        return recorded[-1]

    async with conn_pair(server_config=config, deflate=deflate, server_stream_wrapper=record) as (
        server,
        client,
    ):
        await client.send_bytes(message)
        assert (await server.receive()).data == message
    return [n for n in recorded[0].asked if n is not None]


async def test_server_reads_more_of_a_big_frame_at_once() -> None:
    """The rest of a big frame is read up to the inbound byte budget, not read_size."""
    config = ConnectionConfig(ping_interval=None, read_size=4096, inbound_queue_bytes=65536)
    asked = await _reads_for(b"x" * 300_000, config, deflate=False)
    assert asked[0] == 4096  # a header first
    assert max(asked) == 65536
    assert all(n <= 65536 for n in asked)


async def test_server_reads_read_size_for_a_compressed_message() -> None:
    """A compressed payload is inflated only as far as there is room: no bigger reads."""
    config = ConnectionConfig(ping_interval=None, read_size=4096, inbound_queue_bytes=65536)
    asked = await _reads_for(bytes(range(256)) * 1200, config, deflate=True)
    assert set(asked) == {4096}


async def test_server_reads_read_size_for_small_messages() -> None:
    assert set(await _reads_for(b"small", QUIET, deflate=False)) == {QUIET.read_size}
