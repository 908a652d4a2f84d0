"""A connection pair over memory streams: messages, ordering, coalescing, pings, stats."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosedOK
from rue_trio.protocol import (
    Message,
    MessageType,
    Ping,
    Pong,
    Role,
    State,
    WebSocketProtocol,
    encode_message,
)
from rue_trio.websocket import ConnectionConfig, open_websocket_conn

from ._util import QUIET, RawPeer, WrappedStream, WriterSteps, conn_pair


@dataclass(frozen=True)
class FakeRequest:
    """Shaped like the HTTP layer's Request, as far as the connection cares."""

    path: str = "/ws/lobby"
    query_string: str = "a=1"
    headers: tuple[tuple[bytes, bytes], ...] = ((b"host", b"example"),)
    params: Mapping[str, str] = field(default_factory=lambda: {"room": "lobby"})


async def test_client_send_text_server_echoes(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await client.send(MessageType.TEXT, "héllo")
        message = await server.receive()
        assert message == Message(MessageType.TEXT, "héllo")
        await server.send(message.type, message.data)
        assert await client.receive() == Message(MessageType.TEXT, "héllo")


async def test_server_send_binary_client_receives_bytes(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await server.send_bytes(b"\x00\xff")
        await server.send_bytes(bytearray(b"ba"))
        await server.send_bytes(memoryview(b"mv"))
        assert await client.receive() == Message(MessageType.BINARY, b"\x00\xff")
        assert (await client.receive()).data == b"ba"
        assert (await client.receive()).data == b"mv"


async def test_client_send_text_as_utf8_bytes_arrives_as_str(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await client.send(MessageType.TEXT, "ünï".encode())
        assert await server.receive() == Message(MessageType.TEXT, "ünï")


async def test_server_send_json_compact_client_receive_json(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await server.send_json({"type": "chat", "text": "ça va", "n": [1, 2]})
        await server.send_text("[1, 2]")
        raw = await client.receive()
        assert raw.data == '{"type":"chat","text":"ça va","n":[1,2]}'
        assert await client.receive_json() == [1, 2]


async def test_client_send_bad_type_raises_value_error(autojump_clock: MockClock) -> None:
    async with conn_pair() as (_server, client):
        with pytest.raises(ValueError, match="not a data message type"):
            await client.send(9, b"x")  # type: ignore[arg-type]


async def test_client_send_many_server_receives_in_order(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):

        async def produce() -> None:
            for i in range(500):
                await client.send_text(str(i))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            received = [int((await server.receive()).data) for _ in range(500)]
        assert received == list(range(500))


@pytest.mark.parametrize("deflate", [False, True])
async def test_server_send_large_messages_client_receives_whole(
    deflate: bool, autojump_clock: MockClock
) -> None:
    """RFC 6455 section 5.2: 16-bit and 64-bit payload lengths, and compressed frames."""
    payloads = [bytes(range(256)) * 512, b"z" * 70_000, b"x" * ((1 << 20) - 1)]
    async with conn_pair(deflate=deflate) as (server, client):

        async def produce() -> None:
            for payload in payloads:
                await server.send_bytes(payload)
            await server.send_text("é" * 100_000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            for payload in payloads:
                assert (await client.receive()).data == payload
            assert (await client.receive()).data == "é" * 100_000


async def test_server_many_sends_coalesced_into_few_writes(autojump_clock: MockClock) -> None:
    """The writer takes everything queued and writes it at once."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    wrapped = WrappedStream(server_stream)
    wrapped.write_delay = 0.01
    async with (
        open_websocket_conn(wrapped, WebSocketProtocol(Role.SERVER), config=QUIET) as server,
        open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET) as client,
    ):
        for i in range(200):
            await server.send_text(f"message {i}")
        for i in range(200):
            assert (await client.receive()).data == f"message {i}"
        assert wrapped.send_calls < 20
        assert server.statistics().bytes_sent == sum(map(len, wrapped.sent))


async def test_server_outbound_send_nowait_burst_is_one_write(autojump_clock: MockClock) -> None:
    """Frames offered by a Hub are written as they are, in one system call."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    wrapped = WrappedStream(server_stream)
    frame = encode_message(MessageType.TEXT, "broadcast")
    async with (
        open_websocket_conn(wrapped, WebSocketProtocol(Role.SERVER), config=QUIET) as server,
        open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET) as client,
    ):
        for _ in range(30):
            server._out.send_nowait(frame)
        for _ in range(30):
            assert await client.receive() == Message(MessageType.TEXT, "broadcast")
        assert wrapped.send_calls == 1
        assert wrapped.sent == [frame * 30]


async def test_server_outbound_full_send_nowait_would_block(autojump_clock: MockClock) -> None:
    config = ConnectionConfig(ping_interval=None, outbound_queue_messages=3)
    async with conn_pair(server_config=config) as (server, _client):
        frame = encode_message(MessageType.BINARY, b"x")
        for _ in range(3):
            server._out.send_nowait(frame)
        with pytest.raises(trio.WouldBlock):
            server._out.send_nowait(frame)


async def test_server_outbound_after_close_broken(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, _client):
        await server.close()
        with pytest.raises(trio.BrokenResourceError):
            server._out.send_nowait(encode_message(MessageType.TEXT, "late"))


async def test_client_ping_server_pongs_returns_rtt(autojump_clock: MockClock) -> None:
    """RFC 6455 section 5.5.2: the server's core answers the ping by itself."""
    async with conn_pair() as (server, client):
        rtt = await client.ping(b"hello")
        assert rtt == 0.0
        assert await client.ping() == 0.0
        stats = client.statistics()
        assert stats.pings_sent == 2
        assert stats.last_ping_rtt == 0.0
        assert server.statistics().pings_sent == 0


async def test_client_ping_duplicate_payload_value_error(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.ping, b"same")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ValueError, match="already waiting"):
                await client.ping(b"same")
            nursery.cancel_scope.cancel()
        del server_stream


async def test_client_ping_too_long_value_error(autojump_clock: MockClock) -> None:
    async with conn_pair() as (_server, client):
        with pytest.raises(ValueError, match="125"):
            await client.ping(b"x" * 126)


async def test_client_ping_later_pong_answers_earlier_pings(autojump_clock: MockClock) -> None:
    """RFC 6455 section 5.5.3: a pong for the last ping acknowledges the earlier ones."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(server_stream, Role.SERVER)
    rtts: list[float] = []

    async def ping(data: bytes) -> None:
        rtts.append(await client.ping(data))

    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping, b"one")
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1)
            nursery.start_soon(ping, b"two")
            await trio.testing.wait_all_tasks_blocked()
            assert await peer.next_event() == Ping(b"one")
            assert await peer.next_event() == Ping(b"two")
            await trio.sleep(2)
            peer.protocol.data_to_send()  # drop the automatic pongs
            peer.protocol.send_pong(b"two")
            await peer.flush()
        assert sorted(rtts) == [2.0, 3.0]
        assert client.statistics().last_ping_rtt == 2.0


async def test_server_unsolicited_pong_ignored(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        peer.protocol.send_pong(b"heartbeat")
        peer.protocol.send_text("after")
        await peer.flush()
        assert (await server.receive()).data == "after"
        assert server.statistics().last_ping_rtt is None


async def test_server_ping_from_peer_answered_without_application(
    autojump_clock: MockClock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = RawPeer(client_stream, Role.CLIENT)
    async with open_websocket_conn(server_stream, WebSocketProtocol(Role.SERVER), config=QUIET):
        peer.protocol.send_ping(b"are you there")
        await peer.flush()
        assert await peer.next_event() == Pong(b"are you there")


async def test_server_receive_concurrent_busy_resource_error(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await server.receive()
            await client.send_text("for the first receiver")
        await client.send_text("next")
        assert (await server.receive()).data == "next"


async def test_server_receive_cancelled_loses_nothing(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        with trio.move_on_after(5) as scope:
            await server.receive()
        assert scope.cancelled_caught
        await client.send_text("kept")
        assert (await server.receive()).data == "kept"


async def test_server_async_for_ends_quietly_on_normal_close(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        for i in range(3):
            await client.send_text(str(i))
        await client.close()
        received = [message.data async for message in server]
    assert received == ["0", "1", "2"]


async def test_server_trailing_data_processed_first(autojump_clock: MockClock) -> None:
    """Frames that arrived with the handshake are the first messages."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    peer = WebSocketProtocol(Role.CLIENT)
    peer.send_text("early")
    trailing = b"".join(peer.data_to_send())
    peer_raw = RawPeer(client_stream, Role.CLIENT)
    peer_raw.protocol = peer
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), trailing_data=trailing, config=QUIET
    ) as server:
        peer.send_text("late")
        await peer_raw.flush()
        assert (await server.receive()).data == "early"
        assert (await server.receive()).data == "late"
        assert server.statistics().bytes_received == len(trailing) + 10


async def test_server_attributes_given_and_defaults(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    request = FakeRequest()
    async with (
        open_websocket_conn(
            server_stream,
            WebSocketProtocol(Role.SERVER),
            request=request,
            subprotocol="chat",
            remote_address=("10.0.0.1", 5000),
            config=QUIET,
        ) as server,
        open_websocket_conn(client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET) as client,
    ):
        assert server.request is request
        assert server.subprotocol == "chat"
        assert server.remote_address == ("10.0.0.1", 5000)
        assert server.role is Role.SERVER
        assert client.role is Role.CLIENT
        assert client.request is None
        assert client.subprotocol is None
        assert client.remote_address is None  # a memory stream has no address
        assert re.fullmatch(r"[0-9a-f]{16}", server.id)
        assert server.id != client.id
        assert server.id in repr(server)
        assert server.state is State.OPEN
        assert not server.closed
        assert server.close_code is None
        assert server.close_reason is None


async def test_server_ids_unique_across_pool_refills(autojump_clock: MockClock) -> None:
    """Ids come from a pool of random bits: distinct, 16 hex digits, past a refill."""
    ids = set()
    for _ in range(300):
        server_stream, _client_stream = trio.testing.memory_stream_pair()
        async with open_websocket_conn(
            server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
        ) as conn:
            assert re.fullmatch(r"[0-9a-f]{16}", conn.id)
            ids.add(conn.id)
    assert len(ids) == 300


async def test_server_statistics_count_messages_and_bytes(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await client.send_text("abc")
        await client.send_bytes(b"defg")
        await trio.testing.wait_all_tasks_blocked()
        stats = server.statistics()
        assert stats.messages_received == 2
        assert stats.inbound_messages == 2
        # As Python holds them: the data objects, headers included.
        assert stats.inbound_bytes == sys.getsizeof("abc") + sys.getsizeof(b"defg")
        # Client frames: 2-byte header, 4-byte mask, payload.
        assert stats.bytes_received == (6 + 3) + (6 + 4)
        assert client.statistics().messages_sent == 2
        assert client.statistics().bytes_sent == 19
        await server.receive()
        assert server.statistics().inbound_messages == 1


async def test_server_statistics_queued_frames_while_writer_blocked(
    autojump_clock: MockClock,
) -> None:
    """Lockstep streams: nothing moves until the peer reads."""
    server_stream, client_stream = trio.testing.lockstep_stream_pair()
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as server:
        await server.send_text("queued")
        await trio.testing.wait_all_tasks_blocked()
        # The writer is now blocked writing the first message: the rest waits in the queue.
        await server.send_text("queued")
        await server.send_text("queued")
        stats = server.statistics()
        assert stats.messages_sent == 3
        assert stats.queued_frames == 2
        assert stats.queued_bytes == 2 * 8
        assert stats.bytes_sent == 0
        async with open_websocket_conn(
            client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
        ) as client:
            for _ in range(3):
                assert (await client.receive()).data == "queued"
        assert server.statistics().queued_frames == 0


async def test_server_receive_after_normal_close_raises_ok(autojump_clock: MockClock) -> None:
    async with conn_pair() as (server, client):
        await client.close()
        with pytest.raises(ConnectionClosedOK):
            await server.receive()
        with pytest.raises(ConnectionClosedOK):
            await server.receive_json()


async def test_server_async_for_takes_from_full_buffer_reader_resumes(
    autojump_clock: MockClock,
) -> None:
    config = ConnectionConfig(ping_interval=None, inbound_queue=1)
    async with conn_pair(server_config=config) as (server, client):
        for i in range(5):
            await client.send_text(str(i))
        await client.close()
        assert [message.data async for message in server] == ["0", "1", "2", "3", "4"]


async def test_server_async_for_while_receiving_busy_resource_error(
    autojump_clock: MockClock,
) -> None:
    async with conn_pair() as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(server.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.__anext__()
        await client.send_text("for the receiver")


async def test_server_identity_defaults_and_app_state_is_per_connection(
    autojump_clock: MockClock,
) -> None:
    async with conn_pair() as (server, client):
        assert server.user is None
        assert dict(server.meta) == {}
        with pytest.raises(TypeError):
            server.meta["name"] = "ada"  # type: ignore[index]
        server.user = "ada"
        server.meta = {"name": "Ada"}
        server.app_state["rooms"] = {"lobby"}
        assert server.app_state is server.app_state
        assert client.app_state == {}
        assert (server.user, server.meta["name"]) == ("ada", "Ada")


async def test_server_complete_socket_write_takes_one_writer_step() -> None:
    """The kernel takes a small frame at once: the writer does not yield after it.

    Two sends a round: the first is written through by the sending task (the writer is
    idle), the second goes to the writer (one write-through until the writer or the reader
    runs again), which writes it in one step.
    """
    left, right = trio.socket.socketpair()
    peer = trio.SocketStream(right)
    counter = WriterSteps()
    config = ConnectionConfig(ping_interval=None, close_timeout=1)
    with trio.fail_after(10):
        async with open_websocket_conn(
            trio.SocketStream(left), WebSocketProtocol(Role.SERVER), config=config
        ) as conn:
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.add_instrument(counter)
            try:
                for _ in range(10):
                    await conn.send_text("x")
                    await conn.send_text("y")
                    received = b""
                    while len(received) < 6:
                        received += await peer.receive_some(100)
                    assert received == b"\x81\x01x\x81\x01y"
            finally:
                trio.lowlevel.remove_instrument(counter)
            client = WebSocketProtocol(Role.CLIENT)
            client.send_close(1000)
            await peer.send_all(b"".join(client.data_to_send()))
        await peer.aclose()
    assert counter.steps == 10
