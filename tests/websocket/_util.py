"""Helpers for the connection tests: stream wrappers and a hand-driven raw peer."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from rue_trio.protocol import (
    DeflateConfig,
    DeflateParams,
    Event,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
)
from rue_trio.websocket import ConnectionConfig, WebSocketConn, open_websocket_conn

# Keepalive off unless a test is about it: mock time would otherwise send pings.
QUIET = ConnectionConfig(ping_interval=None)


class WriterSteps(trio.abc.Instrument):
    """Counts the steps of the tasks named as the connection's writer."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == "rue_trio websocket writer":
            self.steps += 1


class WrappedStream(trio.abc.HalfCloseableStream):
    """A stream that forwards to another one, counting writes and able to fail on demand.

    Attributes:
        send_calls: how many ``send_all`` calls reached it.
        sent: every chunk written, in order.
        write_delay: seconds each ``send_all`` takes (mock time), to model a slow link.
    """

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.send_calls = 0
        self.sent: list[bytes] = []
        self.write_delay = 0.0
        self._receive_scope: trio.CancelScope | None = None
        self._broken = False
        self._fail_sends = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.send_calls += 1
        if self._fail_sends:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("broken pipe") from BrokenPipeError(32, "EPIPE")
        if self.write_delay:
            await trio.sleep(self.write_delay)
        self.sent.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("connection reset") from ConnectionResetError(
                104, "ECONNRESET"
            )
        with trio.CancelScope() as self._receive_scope:
            return await self.inner.receive_some(max_bytes)
        raise trio.BrokenResourceError("connection reset") from ConnectionResetError(
            104, "ECONNRESET"
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def break_receive(self) -> None:
        """Make the pending and every later ``receive_some`` fail like a reset."""
        self._broken = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    def break_send(self) -> None:
        """Make every later ``send_all`` fail like a broken pipe."""
        self._fail_sends = True


def deflate_pair() -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Server and client codecs for the default permessage-deflate parameters."""
    params = DeflateParams()
    config = DeflateConfig(min_size=0)
    return (
        PerMessageDeflate(params, is_server=True, config=config),
        PerMessageDeflate(params, is_server=False, config=config),
    )


@asynccontextmanager
async def conn_pair(
    *,
    server_config: ConnectionConfig = QUIET,
    client_config: ConnectionConfig = QUIET,
    lockstep: bool = False,
    deflate: bool = False,
    max_message_size: int | None = 1 << 20,
) -> AsyncIterator[tuple[WebSocketConn, WebSocketConn]]:
    """A server connection and a client connection joined by memory streams."""
    server_stream, client_stream = (
        trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    )
    server_codec, client_codec = deflate_pair() if deflate else (None, None)
    server_protocol = WebSocketProtocol(
        Role.SERVER, max_message_size=max_message_size, deflate=server_codec
    )
    client_protocol = WebSocketProtocol(
        Role.CLIENT, max_message_size=max_message_size, deflate=client_codec
    )
    async with (
        open_websocket_conn(server_stream, server_protocol, config=server_config) as server,
        open_websocket_conn(client_stream, client_protocol, config=client_config) as client,
    ):
        yield server, client


class RawPeer:
    """The far end of a connection, driven by hand with a bare sans-I/O protocol.

    It answers nothing by itself: pongs and close echoes the core queues are written only
    when a test calls :meth:`flush`.
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream, role: Role) -> None:
        self.stream = stream
        self.protocol = WebSocketProtocol(role)
        self.events: deque[Event] = deque()
        self.eof = False

    async def flush(self) -> None:
        """Write what the protocol queued (``b""`` markers are ignored)."""
        data = b"".join(self.protocol.data_to_send())
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> Event | None:
        """The next event from the connection under test, or ``None`` at end of stream."""
        while not self.events:
            if self.eof:
                return None
            data = await self.stream.receive_some()
            if not data:
                self.eof = True
                self.protocol.receive_eof()
                continue
            self.protocol.receive_data(data)
            self.events.extend(self.protocol.events_received())
        return self.events.popleft()

    async def read_until_eof(self) -> list[Event]:
        """Every event up to the end of the stream."""
        events = []
        while (event := await self.next_event()) is not None:
            events.append(event)
        return events
