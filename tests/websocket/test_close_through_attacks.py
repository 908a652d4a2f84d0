"""Attacks on the reader's end of the closing handshake (issue 10, review).

Whatever the reader does with the peer's close frame, data frames sent before it keep
their place ahead of our close frame, and a peer that resets at once ends the
connection quietly.
"""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from rue_trio.protocol import CloseReceived, Message, MessageType, Role, WebSocketProtocol
from rue_trio.websocket import WebSocketConn, open_websocket_conn

from ._util import QUIET, RawPeer


async def _until_closed(conn: WebSocketConn) -> None:
    with trio.fail_after(5):
        async for _ in conn:
            pass


_BIG = bytes(range(256)) * 2400  # 600 KiB: more than a socket pair's buffers hold


@pytest.mark.parametrize(
    "messages",
    [[_BIG], [str(i) * 100_000 for i in range(5)]],
    ids=["one-in-flight", "five-tasks"],
)
async def test_messages_in_flight_when_close_arrives_are_written_before_our_close(
    messages: list[str | bytes],
) -> None:
    """The writer is mid-write, frames queued behind (the peer reads nothing), when the
    peer's close frame arrives: every message goes out whole, then our close frame."""
    ours, theirs = trio.socket.socketpair()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    peer.protocol = WebSocketProtocol(Role.CLIENT, max_message_size=1 << 20)
    sent = trio.Event()

    async def serve() -> None:
        async with (
            open_websocket_conn(
                trio.SocketStream(ours), WebSocketProtocol(Role.SERVER), config=QUIET
            ) as conn,
            trio.open_nursery() as nursery,
        ):
            for data in messages:
                msg_type = MessageType.TEXT if isinstance(data, str) else MessageType.BINARY
                nursery.start_soon(conn.send, msg_type, data)
            await trio.testing.wait_all_tasks_blocked()
            sent.set()
            await _until_closed(conn)

    async with peer.stream, trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await sent.wait()
        peer.protocol.send_close(1000)
        await peer.flush()
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            events = await peer.read_until_eof()
    assert events[-1] == CloseReceived(1000, "")
    received = [e.data for e in events[:-1] if isinstance(e, Message)]
    assert len(received) == len(events) - 1
    # In any order: the tasks' sends race. Compared as a flag, not to print megabytes.
    same = sorted(map(repr, received)) == sorted(map(repr, messages))
    assert same


async def _tcp_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    listener = trio.socket.socket()
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = trio.socket.socket()
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    return server, client


@pytest.mark.parametrize(("reset", "wait_first"), [(False, False), (True, False), (True, True)])
async def test_peer_leaving_right_after_its_close_frame_ends_quietly(
    reset: bool, wait_first: bool
) -> None:
    """The close frame, then the peer's close, or an RST over TCP (SO_LINGER 0): the
    answer's write may fail."""
    ours, theirs = await _tcp_pair() if reset else trio.socket.socketpair()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    ended: list[WebSocketConn] = []

    async def serve() -> None:
        async with open_websocket_conn(
            trio.SocketStream(ours), WebSocketProtocol(Role.SERVER), config=QUIET
        ) as conn:
            ended.append(conn)
            await _until_closed(conn)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        peer.protocol.send_close(1000)
        if reset:
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await peer.flush()
        if wait_first:
            await trio.testing.wait_all_tasks_blocked()
        theirs.close()
    assert ended[0].close_code in (1000, 1006)
    assert ended[0].closed


async def test_ping_message_close_in_one_read_with_a_waiting_callback_closes_cleanly() -> None:
    """A ping, a message and the close frame in one read; the message's callback waits.

    Had the ping's pong moved the close answer, parsed in the same batch, to the writer,
    it would have closed TCP while the callback waited, and the close frame's event found
    nothing in the core to write (``_end_now`` takes its first frame). The parser ends a
    batch at a control frame, so the close answer is still the core's there.
    """
    ours, theirs = trio.socket.socketpair()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    codes: list[int | None] = []

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await trio.testing.wait_all_tasks_blocked()

    async def serve() -> None:
        async with open_websocket_conn(
            trio.SocketStream(ours),
            WebSocketProtocol(Role.SERVER),
            config=QUIET,
            _owner_reads=True,
        ) as conn:
            await conn._run_reader(on_message)
        codes.append(conn.close_code)

    async with peer.stream, trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        peer.protocol.send_ping(b"p")
        peer.protocol.send_text("a")
        peer.protocol.send_close(1000)
        await peer.flush()
        with trio.fail_after(5):
            events = await peer.read_until_eof()
    assert [type(e).__name__ for e in events] == ["Pong", "CloseReceived"]
    assert codes == [1000]
