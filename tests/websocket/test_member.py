"""The hub's view of a connection: _hub_encode_key, encode, _hub_offer, close_nowait."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosedError, ConnectionClosedOK
from rue_trio.protocol import (
    DeflateConfig,
    DeflateParams,
    Message,
    MessageType,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
    encode_message,
)
from rue_trio.websocket import ConnectionConfig, open_websocket_conn

from ._util import QUIET, conn_pair


def _server_protocol(params: DeflateParams | None) -> WebSocketProtocol:
    deflate = None
    if params is not None:
        deflate = PerMessageDeflate(params, is_server=True, config=DeflateConfig(min_size=0))
    return WebSocketProtocol(Role.SERVER, deflate=deflate)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (None, encode_message),
        (DeflateParams(server_no_context_takeover=True, server_max_window_bits=12), (12, 1, 8, 0)),
        (DeflateParams(), None),
    ],
)
async def test_server_encode_key_by_compression(
    params: DeflateParams | None, expected: object, autojump_clock: MockClock
) -> None:
    """RFC 7692 section 7.1.1.1: without context takeover, frames can be shared."""
    server_stream, _ = trio.testing.memory_stream_pair()
    async with open_websocket_conn(server_stream, _server_protocol(params), config=QUIET) as conn:
        assert conn._hub_encode_key == expected


async def test_client_encode_key_none_frames_are_masked(autojump_clock: MockClock) -> None:
    async with conn_pair() as (_server, client):
        assert client._hub_encode_key is None


async def test_server_encode_then_send_frame_nowait_delivers(autojump_clock: MockClock) -> None:
    async with conn_pair(deflate=True) as (server, client):
        for text in ("one", "two"):
            server._hub_offer(server._hub_encode(MessageType.TEXT, text))
        server._hub_offer(encode_message(MessageType.BINARY, b"plain frame"))
        server._hub_flush()  # offers do not wake the writer: the hub flushes its batch
        assert await client.receive() == Message(MessageType.TEXT, "one")
        assert await client.receive() == Message(MessageType.TEXT, "two")
        assert await client.receive() == Message(MessageType.BINARY, b"plain frame")


async def test_server_encode_queue_full_context_untouched(autojump_clock: MockClock) -> None:
    """A frame the hub would drop is never compressed: the peer can still inflate the next."""
    config = ConnectionConfig(ping_interval=None, outbound_queue_messages=1)
    server_stream, client_stream = trio.testing.lockstep_stream_pair()
    server_codec = PerMessageDeflate(DeflateParams(), is_server=True)
    client_codec = PerMessageDeflate(DeflateParams(), is_server=False)
    text = "compress me please " * 10
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER, deflate=server_codec), config=config
    ) as server:
        server._hub_offer(server._hub_encode(MessageType.TEXT, text + "1"))
        server._hub_flush()
        await trio.testing.wait_all_tasks_blocked()  # the writer holds it
        server._hub_offer(server._hub_encode(MessageType.TEXT, text + "2"))
        frame = server._hub_encode(MessageType.TEXT, text + "dropped")
        assert frame == b""
        with pytest.raises(trio.WouldBlock):
            server._hub_offer(frame)
        async with open_websocket_conn(
            client_stream, WebSocketProtocol(Role.CLIENT, deflate=client_codec), config=QUIET
        ) as client:
            assert (await client.receive()).data == text + "1"
            assert (await client.receive()).data == text + "2"
            server._hub_offer(server._hub_encode(MessageType.TEXT, text + "3"))
            server._hub_flush()
            assert (await client.receive()).data == text + "3"


async def test_server_send_frame_nowait_full_would_block(autojump_clock: MockClock) -> None:
    config = ConnectionConfig(ping_interval=None, outbound_queue_messages=2)
    async with conn_pair(server_config=config, lockstep=True) as (server, _client):
        frame = encode_message(MessageType.TEXT, "x")
        server._hub_offer(frame)
        server._hub_flush()
        await trio.testing.wait_all_tasks_blocked()
        server._hub_offer(frame)
        server._hub_offer(frame)
        with pytest.raises(trio.WouldBlock):
            server._hub_offer(frame)


async def test_server_close_nowait_closes_in_background(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await server.send_text("before")
        server.close_nowait(1008, "slow consumer")
        server.close_nowait(1001)  # idempotent
        with pytest.raises(trio.BrokenResourceError):
            server._hub_offer(encode_message(MessageType.TEXT, "after"))
        assert (await client.receive()).data == "before"
        with pytest.raises(ConnectionClosedError) as info:
            await client.receive()
        assert (info.value.code, info.value.reason) == (1008, "slow consumer")


async def test_client_send_nowait_queues_or_would_block(autojump_clock: MockClock) -> None:
    config = ConnectionConfig(ping_interval=None, outbound_queue_messages=1)
    async with conn_pair(client_config=config, lockstep=True) as (server, client):
        client.send_nowait(MessageType.TEXT, "first")
        await trio.testing.wait_all_tasks_blocked()
        client.send_nowait(MessageType.BINARY, b"second")
        with pytest.raises(trio.WouldBlock):
            client.send_nowait(MessageType.TEXT, "refused")
        assert (await server.receive()).data == "first"
        assert (await server.receive()).data == b"second"
        assert client.statistics().messages_sent == 2
        await client.close()
        with pytest.raises(ConnectionClosedOK):
            client.send_nowait(MessageType.TEXT, "closed")
