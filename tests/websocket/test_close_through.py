"""The end of the closing handshake written by the reader when the writer is idle (issue 10).

On a server over a plain socket, the reader answers the peer's close frame and closes TCP
itself when nothing is queued or being written (``_ConnectionTasks._end_now``); otherwise
the writer does it, after what is queued, as before.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

from rue_trio.protocol import CloseReceived, MessageType, Role, WebSocketProtocol
from rue_trio.websocket import WebSocketConn, _output, open_websocket_conn

from ._util import QUIET, RawPeer


class _Steps(trio.abc.Instrument):
    """Task steps by task."""

    def __init__(self) -> None:
        self.steps: Counter[trio.lowlevel.Task] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1


async def _serve(stream: trio.SocketStream, owner: list[trio.lowlevel.Task]) -> None:
    owner.append(trio.lowlevel.current_task())

    async def echo(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await conn.send(msg_type, data)

    async with open_websocket_conn(
        stream, WebSocketProtocol(Role.SERVER), config=QUIET, _owner_reads=True
    ) as conn:
        await conn._run_reader(echo)
    assert conn.close_code == 1000


async def test_server_reader_answers_close_and_closes_tcp_without_the_writer() -> None:
    """From the peer's close frame on: the owner task takes two steps, the writer one.

    The owner reads the frame, answers it, closes TCP and waits in the nursery's exit for
    the writer, which returns at once. Before: the owner read again after the close frame
    and waited for the writer to write the answer and close the socket, which woke it,
    then the nursery's exit was a step of its own: three steps.
    """
    ours, theirs = trio.socket.socketpair()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    steps = _Steps()
    owner: list[trio.lowlevel.Task] = []
    async with peer.stream, trio.open_nursery() as nursery:
        nursery.start_soon(_serve, trio.SocketStream(ours), owner)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.add_instrument(steps)
        peer.protocol.send_close(1000)
        await peer.flush()
        with trio.fail_after(10):
            events = await peer.read_until_eof()
    trio.lowlevel.remove_instrument(steps)  # the server's task has ended
    assert events == [CloseReceived(1000, "")]
    writers = [t for t in steps.steps if t.name == "rue_trio websocket writer"]
    assert len(writers) == 1
    assert steps.steps[writers[0]] == 1
    assert steps.steps[owner[0]] == 2


async def test_server_answers_close_at_once_when_a_callback_of_its_batch_sends() -> None:
    """A message and the close frame in one read: the echo's send finds the close parsed.

    The callback's send raises ``ConnectionClosed``; the close frame is answered at once
    (before: the answer stayed in the core until close_timeout, 10 s).
    """
    ours, theirs = trio.socket.socketpair()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    async with peer.stream, trio.open_nursery() as nursery:
        nursery.start_soon(_serve, trio.SocketStream(ours), [])
        peer.protocol.send_text("a")
        peer.protocol.send_close(1000)
        await peer.flush()
        with trio.fail_after(5):
            events = await peer.read_until_eof()
    assert events == [CloseReceived(1000, "")]


async def test_server_close_answer_partly_written_goes_on_through_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A close frame the kernel takes in part: the writer writes the rest, then closes TCP."""
    real = _output._write_now

    def one_byte(sock: trio.socket.SocketType, data: bytes) -> int:
        return real(sock, memoryview(data)[:1])

    monkeypatch.setattr("rue_trio.websocket._tasks._write_now", one_byte)
    ours, theirs = trio.socket.socketpair()
    peer = RawPeer(trio.SocketStream(theirs), Role.CLIENT)
    async with peer.stream, trio.open_nursery() as nursery:
        nursery.start_soon(_serve, trio.SocketStream(ours), [])
        await trio.testing.wait_all_tasks_blocked()
        peer.protocol.send_close(1000)
        await peer.flush()
        with trio.fail_after(10):
            events = await peer.read_until_eof()
    assert events == [CloseReceived(1000, "")]
