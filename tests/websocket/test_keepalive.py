"""Keepalive: pings on a timer, a silent peer failed with 1011, a slow consumer spared."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosedError
from rue_trio.protocol import CloseReceived, Ping, Role, State, WebSocketProtocol
from rue_trio.websocket import ConnectionConfig, open_websocket_conn

from ._util import RawPeer, conn_pair, task_names


async def test_server_keepalive_healthy_peer_stays_open(autojump_clock: MockClock) -> None:
    """The defaults: a ping every 20 s, answered at once by the peer's core."""
    async with conn_pair(server_config=ConnectionConfig(), client_config=ConnectionConfig()) as (
        server,
        client,
    ):
        await trio.sleep(65)
        assert server.statistics().pings_sent == 3
        assert client.statistics().pings_sent == 3
        assert server.statistics().last_ping_rtt == 0.0
        assert server.state is client.state is State.OPEN
        await client.send_text("still here")
        assert (await server.receive()).data == "still here"


async def test_server_keepalive_silent_peer_fails_1011(autojump_clock: MockClock) -> None:
    """A peer that answers nothing is failed with 1011 once ping_timeout has passed."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    config = ConnectionConfig(ping_interval=5, ping_timeout=3, close_timeout=2)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=config
    ) as server:
        event = await peer.next_event()
        assert isinstance(event, Ping)
        assert trio.current_time() == 5
        assert await peer.next_event() == CloseReceived(1011, "keepalive ping timeout")
        assert trio.current_time() == 5 + 3
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        # Nobody answered the close either: aborted after close_timeout.
        assert trio.current_time() == 5 + 3 + 2
        assert info.value.code == 1011
        assert isinstance(info.value.__cause__, TimeoutError)
        assert server.close_code == 1011


async def test_server_keepalive_no_ping_timeout_never_fails(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    config = ConnectionConfig(ping_interval=5, ping_timeout=None)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=config
    ) as server:
        await trio.sleep(101)
        assert server.state is State.OPEN
        assert server.statistics().pings_sent == 20
        # Unanswered pings are not kept forever.
        assert len(server._pings) == 1
    del client_stream


async def test_client_keepalive_disabled_sends_no_ping(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await trio.sleep(1000)
        assert client.statistics().pings_sent == 0
        assert server.statistics().pings_sent == 0


async def test_server_keepalive_slow_consumer_healthy_peer_not_killed(
    autojump_clock: MockClock,
) -> None:
    """Our inbound buffer is full, so our reader does not read the pongs that did come.

    We are the slow side, not the peer: the ping timeout must not fire.
    """
    server_config = ConnectionConfig(ping_interval=1, ping_timeout=1, inbound_queue=2)
    client_config = ConnectionConfig(ping_interval=None)
    async with conn_pair(server_config=server_config, client_config=client_config) as (
        server,
        client,
    ):
        for i in range(10):
            await client.send_text(str(i))
        await trio.sleep(100)
        assert server.state is State.OPEN
        assert server.statistics().inbound_messages == 2
        received = [(await server.receive()).data for _ in range(10)]
        assert received == [str(i) for i in range(10)]
        await trio.sleep(10)
        assert server.state is State.OPEN
        assert server.statistics().last_ping_rtt is not None
        await server.send_text("alive")
        assert (await client.receive()).data == "alive"


async def test_server_keepalive_slow_consumer_then_peer_dies_still_detected(
    autojump_clock: MockClock,
) -> None:
    """Time given back for our pauses is only what we paused: a dead peer is still found."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    config = ConnectionConfig(ping_interval=10, ping_timeout=5, inbound_queue=1, close_timeout=1)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=config
    ) as server:
        peer.protocol.send_text("one")
        peer.protocol.send_text("two")
        await peer.flush()
        await trio.sleep(12)
        # The reader has been paused since t=0; the ping went at t=10.
        assert server.state is State.OPEN
        assert (await server.receive()).data == "one"
        assert (await server.receive()).data == "two"
        # Resumed at t=12, 2 s after the ping: 5 s more (3 of the window + the 2 paused).
        with pytest.raises(ConnectionClosedError) as info:
            await server.receive()
        assert info.value.code == 1011
        assert trio.current_time() == 12 + 5 + 1


async def test_server_keepalive_runs_in_the_writer_no_task_of_its_own(
    autojump_clock: MockClock,
) -> None:
    """Two tasks per connection with keepalive on: the writer wakes for the pings."""
    async with conn_pair(server_config=ConnectionConfig(), client_config=ConnectionConfig()) as (
        server,
        client,
    ):
        await trio.sleep(25)
        root = trio.lowlevel.current_root_task()
        assert root is not None
        names = task_names(root)
        assert names.count("rue_trio websocket writer") == 2
        assert names.count("rue_trio websocket reader") == 2
        assert "rue_trio websocket keepalive" not in names
        assert server.statistics().pings_sent == client.statistics().pings_sent == 1
