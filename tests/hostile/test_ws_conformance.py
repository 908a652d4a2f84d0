"""Conformance under hostile timing: every ping answered, replies before a violation's
close, text validated as its bytes arrive."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from rue_trio.exceptions import ConnectionClosed
from rue_trio.protocol import CloseReceived, Message, Pong, Role, WebSocketProtocol
from rue_trio.websocket import ConnectionConfig, open_websocket_conn

from ._ws import client_frame

QUIET = ConnectionConfig(ping_interval=None)


async def _events_until_eof(stream: trio.abc.Stream) -> list[object]:
    peer = WebSocketProtocol(Role.CLIENT)
    events: list[object] = []
    while data := await stream.receive_some():
        peer.receive_data(data)
        events.extend(peer.events_received())
    return events


async def test_server_answers_every_ping_in_one_read(autojump_clock: MockClock) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    pings = b"".join(client_frame(9, b"%d" % i) for i in range(10))
    async with open_websocket_conn(server_stream, WebSocketProtocol(Role.SERVER), config=QUIET):
        await client_stream.send_all(pings + client_frame(8, b"\x03\xe8"))
        events = await _events_until_eof(client_stream)
    assert [e for e in events if isinstance(e, Pong)] == [Pong(b"%d" % i) for i in range(10)]


async def test_client_answers_every_ping_in_one_read(autojump_clock: MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = WebSocketProtocol(Role.SERVER)
    for i in range(10):
        server.send_ping(b"%d" % i)
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as conn:
        await server_stream.send_all(b"".join(server.data_to_send()))
        await trio.testing.wait_all_tasks_blocked()
        server.receive_data(await server_stream.receive_some())
        events = server.events_received()
        await conn.aclose()
    assert events == [Pong(b"%d" % i) for i in range(10)]


async def test_client_replies_before_closing_for_a_violation(autojump_clock: MockClock) -> None:
    """The client role too: a message then a continuation with nothing to continue."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        client_stream, WebSocketProtocol(Role.CLIENT), config=QUIET
    ) as conn:
        await server_stream.send_all(b"\x81\x02hi" + b"\x80\x00")
        message = await conn.receive()
        await conn.send_text("re: " + str(message.data))
        with pytest.raises(ConnectionClosed):
            await conn.receive()
        server = WebSocketProtocol(Role.SERVER)
        server.receive_data(await server_stream.receive_some())
        events = server.events_received()
    assert events[0] == Message(1, "re: hi")  # type: ignore[arg-type]
    assert isinstance(events[1], CloseReceived)
    assert events[1].code == 1002


async def test_server_replies_before_closing_for_a_violation(autojump_clock: MockClock) -> None:
    """A message then a reserved opcode in the same read: the reply goes out, then 1002."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as conn:
        await client_stream.send_all(client_frame(1, b"question") + client_frame(3, b""))
        message = await conn.receive()
        await conn.send_text("answer to " + str(message.data))
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            assert exc.code == 1002
        events = await _events_until_eof(client_stream)
    assert events[0] == Message(1, "answer to question")  # type: ignore[arg-type]
    assert isinstance(events[1], CloseReceived)
    assert events[1].code == 1002


async def test_server_invalid_utf8_in_slow_text_frame_fails_1007_early(
    autojump_clock: MockClock,
) -> None:
    """A single text frame arriving slowly fails at the invalid byte, not at its end."""
    server_stream, client_stream = trio.testing.memory_stream_pair()
    frame = client_frame(1, b"a" * 1000 + b"\xff" + b"a" * 99_000)
    async with open_websocket_conn(
        server_stream, WebSocketProtocol(Role.SERVER), config=QUIET
    ) as conn:
        await client_stream.send_all(frame[:2000])
        await trio.testing.wait_all_tasks_blocked()
        assert conn.state.name == "CLOSING"
        events = await _events_until_eof(client_stream)
    assert isinstance(events[0], CloseReceived)
    assert events[0].code == 1007
