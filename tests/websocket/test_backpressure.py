"""Backpressure end to end over lockstep streams, which buffer nothing."""

from __future__ import annotations

import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.protocol import Role, WebSocketProtocol
from rue_trio.websocket import ConnectionConfig, open_websocket_conn

from ._util import conn_pair


async def test_server_inbound_full_client_send_waits_for_room(autojump_clock: MockClock) -> None:
    """A server that does not read stops reading TCP; the client's sends then wait."""
    server_config = ConnectionConfig(ping_interval=None, inbound_queue=2)
    # No write timeout: the server not reading for a minute is the point here.
    client_config = ConnectionConfig(
        ping_interval=None, outbound_queue_messages=3, write_timeout=None
    )
    async with conn_pair(
        lockstep=True, server_config=server_config, client_config=client_config
    ) as (server, client):
        sent = 0

        async def produce() -> None:
            nonlocal sent
            for i in range(20):
                await client.send_text(str(i))
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.testing.wait_all_tasks_blocked()
            # Two messages buffered, more held by the blocked reader (one read's worth)
            # and by the client's blocked write, three in its queue, and the producer
            # waiting for room: nothing moves until the server reads.
            assert server.statistics().inbound_messages == 2
            assert client._out.statistics().tasks_waiting_room == 1
            assert client.statistics().queued_frames == 3
            stalled_at = sent
            assert stalled_at < 20
            await trio.sleep(60)
            assert sent == stalled_at
            received = [(await server.receive()).data for _ in range(20)]
        assert received == [str(i) for i in range(20)]
        assert sent == 20


async def test_client_reads_slowly_server_send_rate_follows(autojump_clock: MockClock) -> None:
    """The server's sends complete only as fast as the client takes messages."""
    client_config = ConnectionConfig(ping_interval=None, inbound_queue=1)
    server_config = ConnectionConfig(ping_interval=None, outbound_queue_messages=1)
    async with conn_pair(
        lockstep=True, server_config=server_config, client_config=client_config
    ) as (server, client):
        done_at: list[float] = []

        async def produce() -> None:
            for i in range(10):
                await server.send_bytes(bytes([i]) * 1000)
                done_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            for i in range(10):
                await trio.sleep(1)
                assert (await client.receive()).data == bytes([i]) * 1000
        # The first sends filled the pipeline at once; the rest waited for the reader.
        assert done_at[-1] >= 5


async def test_server_ping_flood_from_a_peer_that_never_reads_stays_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Bounded everything (design.md): a peer reading nothing cannot grow our queue by pings.

    Every ping gets its pong (RFC 6455 section 5.5.2); while the outbound queue holds
    ``outbound_queue_bytes`` or more, the reader stops parsing, so the peer's writes stall.
    """
    server_stream, peer = trio.testing.lockstep_stream_pair()
    config = ConnectionConfig(ping_interval=None, outbound_queue_bytes=600, write_timeout=None)
    mask = b"\x01\x02\x03\x04"
    ping = b"\x89\x84" + mask + bytes(b ^ m for b, m in zip(b"ping", mask, strict=True))
    sent = 0

    async def flood() -> None:
        nonlocal sent
        for _ in range(3000):
            await peer.send_all(ping)
            sent += 1

    async with (
        open_websocket_conn(server_stream, WebSocketProtocol(Role.SERVER), config=config) as conn,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()
        stats = conn.statistics()
        # 6-byte pongs up to the bound, plus those of the last read parsed.
        assert 600 <= stats.queued_bytes <= 600 + 6
        assert sent < 3000
        nursery.cancel_scope.cancel()
        conn.close_nowait(1000, "")
        await peer.aclose()
