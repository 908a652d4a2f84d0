"""The Trio WebSocket connection: one nursery, a reader task and a writer task.

Theory of operation
-------------------
:func:`open_websocket_conn` wraps any :class:`trio.abc.Stream` on which the opening
handshake is done, and a sans-I/O :class:`~rue_trio.protocol.WebSocketProtocol`, in a
:class:`WebSocketConn`. Inside the context manager a nursery runs two tasks:

* **reader**: ``stream.receive_some`` (on a plain socket, ``wait_readable`` then
  ``os.read`` on its descriptor; the rest of a large uncompressed frame up to
  ``inbound_queue_bytes`` at once) → ``protocol.buffer_data`` → ``protocol.next_events``,
  as far as there is room: fewer than ``inbound_queue`` messages
  and ``inbound_queue_bytes`` bytes waiting for the application, and an outbound queue
  below its byte bound (the pongs we owe count there). Otherwise the reader waits, so it
  stops parsing, inflating and reading the transport, and TCP pushes back on the peer; it
  reads again only once the last read is parsed. Pongs complete ping waiters. A protocol
  violation fails the connection once the messages before it were taken by the
  application (and its replies queued), within ``close_timeout``. Whatever the
  core wants to send on its own (pongs, the close echo, the "close the transport" marker)
  is moved to the outbound queue after every call into the core (:meth:`_pump`). The
  reader is the connection's lifeline: when it ends (end of stream, transport error,
  close timeout), the connection is closed, and it tears everything down.
* **writer**: waits for the :class:`~rue_trio.websocket.FrameQueue` to be non-empty,
  takes everything queued (up to 1 MiB, or one bigger frame) and writes it at once: on a
  socket, straight to the kernel without yielding when it takes it all, else through
  Trio's ``send`` calls; on any other stream, ``send_all`` per 64 KiB. The ``b""`` marker
  makes it end the transport: after a complete closing handshake it closes the stream
  at once (the peer sends nothing after its close frame);
  when failing, a half-close when the stream allows it (the reader drains until the
  peer's end, so that no reset destroys our close frame), else ``aclose``. A write that
  makes no progress for ``write_timeout`` aborts the connection: the peer does not read.
  The writer also runs the **keepalive**, woken by its scope's deadline (no task of its
  own): a ping every ``ping_interval``; no pong within ``ping_timeout`` fails
  the connection with 1011. Time during which our reader waits on a full inbound buffer
  does not count: the pong may be waiting, unread, behind messages the application has
  not taken yet. Then we are the slow side, not the peer; unless our writer is stuck
  on that peer, which is then the one not reading.

When the owner reads. ``open_websocket_conn(..., _owner_reads=True)`` (for
:class:`~rue_trio.WebSocketHandler`) spawns only the writer: the task that owns the
connection runs the reader's loop itself (``_run_reader(deliver)``) and calls back for each
message it parses (the replies to a batch go to the writer, in one write). Nothing is
buffered for :meth:`receive`, which, like :meth:`ping` from that task, fails at once: they
would wait for what only that task reads. :meth:`close` from that task starts the closing
handshake and returns, and the loop completes it; out of its loop (after a callback's
exception, or on leaving the block) the task reads on until the end. The reader's scope is
not shielded: the owner's cancellation reaches the loop, which then closes with 1001,
shielded, and lets ``Cancelled`` go on. The keepalive holds its verdict while a callback
runs and gives the peer ``ping_timeout`` once the loop reads again.

Sending encodes in the caller's task (``protocol.encode`` masks and compresses) after
waiting for room in the outbound queue, with no checkpoint between encoding and queueing:
a cancelled ``send`` queued the whole message or nothing, and never advanced the
compression context (docs/topics/design.md, "Cancellation-safe"). When the writer is idle
on a plain socket, the sending task writes its frame itself and queues only what the
kernel does not take (``_output.py``, docs/topics/design.md, "The outbound queue").

Checkpoints and batching. ``send`` and ``receive`` are always cancellation points, but
they yield to other tasks only when they have to wait (no room, no message). A loop of
``receive`` then ``send`` therefore handles every buffered message before the writer runs,
and the writer sends all the replies with one system call; it still yields at least once
every ``inbound_queue`` messages (when the buffer runs dry) or ``outbound_queue_messages``
sends (when the queue fills). Yielding on every call, as a Trio memory channel does, made
pipelined messages cost four times more CPU in our measurements: one system call each.

Closing. Once a close frame went either way, the reader's scope gets a deadline of
``close_timeout``: the peer's close frame and the end of TCP must come by then, or the
transport is aborted. A client waits for the server to close TCP (RFC 6455 section
7.1.1); a server closes it as soon as the handshake completes (the core's ``b""``).

Cancellation. The tasks run inside shielded cancel scopes that only the connection
cancels (one each and no other per idle connection: a scope costs about 1 KiB); the
writer's deadline is the write bound or the keepalive's next step, and when it runs out
while the writer is idle, the writer goes on in a fresh scope. When
the task that owns the connection is cancelled (server shutdown), the context manager
still performs the closing handshake with 1001, within ``close_timeout``, and then lets
``Cancelled`` propagate. The tasks never raise into the
nursery: a failure is stored and becomes the ``__cause__`` of the
:class:`~rue_trio.exceptions.ConnectionClosedError` the application sees.

Where the code is. :class:`WebSocketConn` (here: the application's API) extends
``_ConnectionHubPort`` (``_hub_port.py``: the hub's port), which extends
``_ConnectionTasks`` (``_tasks.py``: the start of the tasks, the reader, the teardown),
which extends ``_ConnectionWriter`` (``_writer.py``: the writer and the keepalive), which
extends ``_ConnectionOutput`` (``_output.py``: the write-through from sending tasks),
which extends ``_ConnectionCore`` (``_core.py``: the fields and what every side shares).
No class calls a method of one that extends it.
"""

from __future__ import annotations

import json
from sys import getsizeof
from typing import Any

import trio
from trio.lowlevel import checkpoint_if_cancelled

from rue_trio.exceptions import ConnectionClosedOK
from rue_trio.protocol import (
    Message,
    MessageType,
    Role,
    State,
)

from ._config import ConnectionStatistics
from ._core import HandshakeRequest, _new_id
from ._hub_port import _ConnectionHubPort

__all__ = ["HandshakeRequest", "WebSocketConn"]

# A message of at least this many bytes is queued as its frame's header and its payload,
# written with one gathering write: the payload is not copied behind the header (see
# _output._GATHER_MIN for the figures).
_SPLIT_MIN = 1 << 16


def _frame_estimate(data: str | bytes | bytearray | memoryview) -> int:
    """The bytes a message's frame takes, known before it is encoded (room comes first).

    Exact for bytes and ASCII text (plus a header of at most 14 bytes, which the bound
    tolerates); for other text an upper bound, 4 bytes a character, so that a waiting
    sender never queues more than the bound. ``str.isascii`` reads a flag: O(1).
    """
    if isinstance(data, str) and not data.isascii():
        return 4 * len(data)
    return len(data) if not isinstance(data, memoryview) else data.nbytes


class WebSocketConn(_ConnectionHubPort):
    """One open WebSocket connection, server or client side.

    Get one from :func:`open_websocket_conn` (or from the server handler, or from
    :func:`rue_trio.client.open_websocket`); do not create it directly.

    Messages arrive in order through :meth:`receive` or ``async for message in conn``;
    ``send`` and its variants queue messages for the writer task. All methods must be
    called from the Trio run that opened the connection.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        role = self._protocol.role.value
        return f"<WebSocketConn id={self.id} {role} {self._protocol.state.name}>"

    @property
    def id(self) -> str:
        """A unique, printable identifier: 16 hex digits, random (unique across nodes)."""
        # Drawn when first asked for: most idle connections never are (their log lines
        # are off by default), and the string costs 67 bytes (bench/idle_memory.py).
        ident = self._id
        if ident is None:
            ident = self._id = _new_id()
        return ident

    @property
    def role(self) -> Role:
        """:attr:`Role.SERVER` or :attr:`Role.CLIENT`."""
        return self._protocol.role

    @property
    def request(self) -> HandshakeRequest | None:
        """The HTTP request that opened the connection (server side), else ``None``."""
        return self._request

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the opening handshake, or ``None``."""
        return self._subprotocol

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``, or ``None`` when the transport has no address."""
        return self._remote_address

    @property
    def state(self) -> State:
        """The protocol state: ``OPEN``, ``CLOSING`` (a close frame went) or ``CLOSED``."""
        return self._protocol.state

    @property
    def closed(self) -> bool:
        """Whether the connection is over: closing handshake done or aborted, transport closed."""
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed (1006 without a handshake), else ``None``.

        It is the peer's code if it sent a close frame, else ours.
        """
        if not self._out._closed:
            return None
        # What ConnectionClosed.code says, without building the exception (and its
        # message) for each read: the handler reads these twice per connection, for the
        # tally and the log line (bench/profile_server.py --scenario handshake: 4 -> 1
        # ConnectionClosed built per connection).
        protocol = self._protocol
        frame = protocol.close_rcvd or protocol.close_sent
        return 1006 if frame is None else frame.code

    @property
    def close_reason(self) -> str | None:
        """The close reason that goes with :attr:`close_code`, else ``None``."""
        if not self._out._closed:
            return None
        protocol = self._protocol
        frame = protocol.close_rcvd or protocol.close_sent
        return "" if frame is None else frame.reason

    @property
    def app_state(self) -> dict[str, Any]:
        """A dictionary for the application's own per-connection data.

        Nothing in rue_trio reads it: store what a callback needs later (a session, a
        rate limiter, the rooms this connection joined). Created on first use, so an idle
        connection that never uses it does not pay for it.
        """
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake without waiting for it; idempotent.

        Messages already queued are written first; the connection's own tasks finish the
        handshake (bounded by ``close_timeout``).

        Args:
            code: the close code (RFC 6455 section 7.4.1).
            reason: a short UTF-8 reason.

        Raises:
            ValueError: a code that may not be sent, or a reason too long.
        """
        self._start_close(code, reason)

    def statistics(self) -> ConnectionStatistics:
        """Return a snapshot of the connection's counters."""
        out = self._out
        return ConnectionStatistics(
            messages_received=self._messages_received,
            messages_sent=self._messages_sent,
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
            inbound_messages=len(self._inbound),
            inbound_bytes=sum(getsizeof(message.data) for message in self._inbound)
            if self._inbound
            else 0,
            # The queue's own counts, without its snapshot: read once per connection at
            # its end, for the tally (bench/profile_server.py --scenario handshake: 887 -> 883).
            queued_frames=len(out._frames),
            queued_bytes=out._nbytes,
            pings_sent=self._pings_sent,
            last_ping_rtt=self._last_rtt,
        )

    async def send(
        self, message_type: MessageType, data: str | bytes | bytearray | memoryview
    ) -> None:
        """Send one message: Rue's ``conn.Send(type, data)``.

        Waits for room in the outbound queue, then encodes the message (masking it on a
        client, compressing it when permessage-deflate was agreed) and queues it. It
        returns once the message is queued, before it is written.

        It is always a cancellation point, but a schedule point only when it waits for
        room (see the module's theory of operation: that is what batches writes).

        Cancellation: if cancelled while waiting for room, nothing was queued and the
        compression context is untouched; once queued, the call completes. Either the
        whole message is sent or none of it.

        Args:
            message_type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
            data: for a text message a ``str``, or ``bytes`` that the caller guarantees
                to be UTF-8 (not checked: the fast path for pre-encoded JSON; invalid
                UTF-8 makes the peer fail the connection with 1007); for a binary
                message ``bytes`` (or a ``bytearray`` or ``memoryview``; a ``str`` is sent
                as its UTF-8 encoding).

        Raises:
            ConnectionClosed: the connection is closing or closed
                (:class:`~rue_trio.exceptions.ConnectionClosedOK` after a normal
                closure); it is raised once the connection is fully closed, so it
                tells how it ended. In a :class:`~rue_trio.WebSocketHandler` callback
                after ``close()`` it is raised at once (the end comes after the
                callback): ``ConnectionClosedOK`` when that close was a normal one.
            ValueError: ``message_type`` is not a data message type.
        """
        await checkpoint_if_cancelled()
        out = self._out
        size = _frame_estimate(data)
        if not out._has_room(size):
            if out._is_accepting():
                await out._wait_room(size)
            if not out._is_accepting():
                await self._raise_closed_to_sender()
        # No checkpoint from here on: the message is encoded and queued at once.
        if size < _SPLIT_MIN:
            self._put(self._protocol.encode(message_type, data))
        else:
            self._put(*self._protocol.encode_parts(message_type, data))
        self._messages_sent += 1

    def send_nowait(
        self, message_type: MessageType, data: str | bytes | bytearray | memoryview
    ) -> None:
        """Send one message if the outbound queue has room, without waiting.

        The room is checked before the message is encoded: a refused message did not
        advance the compression context.

        Args:
            message_type: as for :meth:`send`.
            data: as for :meth:`send`.

        Raises:
            trio.WouldBlock: the outbound queue is full; nothing was queued.
            ConnectionClosed: the connection is closing or closed (as it stands now).
            ValueError: ``message_type`` is not a data message type.
        """
        out = self._out
        if not out._is_accepting():
            raise self._closed_error()
        size = _frame_estimate(data)
        if not out._has_room(size):
            raise trio.WouldBlock
        if size < _SPLIT_MIN:
            self._put(self._protocol.encode(message_type, data))
        else:
            self._put(*self._protocol.encode_parts(message_type, data))
        self._messages_sent += 1

    async def send_text(self, text: str) -> None:
        """Send a text message.

        Cancellation: as :meth:`send`: the whole message is queued or none of it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        await self.send(MessageType.TEXT, text)

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message.

        Cancellation: as :meth:`send`: the whole message is queued or none of it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        await self.send(MessageType.BINARY, data)

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as compact JSON in a text message.

        Cancellation: as :meth:`send`: the whole message is queued or none of it.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``value`` is not JSON-serializable.
        """
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        await self.send(MessageType.TEXT, text)

    async def ping(self, data: bytes | None = None) -> float:
        """Send a ping and wait for its pong (RFC 6455 section 5.5.2).

        Bound the wait with :func:`trio.fail_after`. Not from a
        :class:`~rue_trio.WebSocketHandler` callback: the task that runs the callbacks is
        the one that reads the connection, so it cannot wait for a pong; it raises
        :class:`trio.BusyResourceError` at once. Ping from another task, or rely on the
        keepalive.

        Cancellation: the ping stays queued (or sent); only the wait is abandoned.

        Args:
            data: the ping's payload, at most 125 bytes; by default 4 random bytes. A pong
                for a later ping answers this one too (section 5.5.3 lets a peer answer
                only the most recent ping).

        Returns:
            The round-trip time, in seconds.

        Raises:
            ConnectionClosed: the connection closed before the pong came.
            ValueError: ``data`` is over 125 bytes, or a ping with the same payload is
                still waiting for its pong.
            trio.BusyResourceError: called from a ``WebSocketHandler`` callback.
        """
        await checkpoint_if_cancelled()
        if self._owner is not None and self._owner is trio.lowlevel.current_task():
            raise trio.BusyResourceError(
                "ping() in a WebSocketHandler callback would wait for a pong that only this "
                "task can read: call it from another task (one you start in a nursery), or "
                "let the keepalive ping (ConnectionConfig.ping_interval)"
            )
        if self._protocol.state is not State.OPEN:
            await self._raise_closed_to_sender()
        if data is None:
            data = self._fresh_ping_payload()
        elif data in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        waiter = self._send_ping(data)
        try:
            await waiter.event.wait()
        finally:
            if self._pings.get(data) is waiter:
                del self._pings[data]
        if waiter.rtt is None:
            await self._raise_closed()
        return waiter.rtt

    async def receive(self) -> Message:
        """Return the next message from the peer.

        Messages received before the connection closed are all delivered first; then
        :class:`~rue_trio.exceptions.ConnectionClosed` is raised. It is always a
        cancellation point, but a schedule point only when it waits for a message.

        Cancellation: safe; no message is lost, the next call returns it.

        Returns:
            The :class:`~rue_trio.protocol.Message`: ``.type`` and ``.data`` (``str`` for
            text, ``bytes`` for binary).

        Raises:
            ConnectionClosedOK: the connection closed normally (1000 or 1001 both ways).
            ConnectionClosedError: it closed any other way; ``__cause__`` says why
                (a transport error, a protocol violation, a timeout).
            trio.BusyResourceError: another task is already receiving; or this is a
                :class:`~rue_trio.WebSocketHandler`'s connection, whose messages go to
                ``on_message`` (to call ``receive()``, open the connection with
                :func:`open_websocket_conn` or the client instead).
        """
        # A handler's connection buffers nothing for receive() (its owner task reads).
        if self._owner is not None or self._receiver.task is not None:
            raise self._busy_receiving()
        await checkpoint_if_cancelled()
        # The wait is inline (here and in __anext__), not a coroutine of its own: an idle
        # connection's task parks in one frame less (bench/idle_memory.py).
        while not self._inbound:
            if self._out._closed:
                await self._raise_closed()
            await self._receiver.wait()
        return self._take_message()

    async def receive_json(self) -> Any:
        """Receive a message and parse it as JSON (text or binary alike).

        Cancellation: as :meth:`receive`: no message is lost.

        Raises:
            ConnectionClosed: as :meth:`receive`.
            ValueError: the message is not valid JSON (the message is consumed).
        """
        message = await self.receive()
        return json.loads(message.data)

    def _busy_receiving(self) -> trio.BusyResourceError:
        """What a second task receiving gets: one task waits for messages at a time.

        Or a task receiving on a handler's connection: its owner task reads.
        """
        if self._owner is not None:
            return trio.BusyResourceError(
                "this is a WebSocketHandler's connection: its messages go to on_message, "
                "called by the task that reads them; to call receive() or iterate, open "
                "the connection with open_websocket_conn() (or the client) instead"
            )
        return trio.BusyResourceError("another task is already receiving on this connection")

    def __aiter__(self) -> WebSocketConn:
        return self

    async def __anext__(self) -> Message:
        """The next message; the iteration ends quietly after a normal closure.

        Cancellation: as :meth:`receive`: no message is lost.

        Raises:
            ConnectionClosedError: the connection closed abnormally.
        """
        # receive() but for the end of the iteration, not awaited through it: one
        # coroutine less per message on the hot path of ``async for message in conn``.
        if self._owner is not None or self._receiver.task is not None:
            raise self._busy_receiving()
        await checkpoint_if_cancelled()
        while not self._inbound:
            if self._out._closed:
                try:
                    await self._raise_closed()
                except ConnectionClosedOK:
                    raise StopAsyncIteration from None
            await self._receiver.wait()
        return self._take_message()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection: Rue's ``conn.Close()``.

        Messages already queued are written before the close frame. Then waits for the
        peer's close frame and the end of the transport, at most ``close_timeout``, after
        which the transport is aborted. Closing a closed or closing connection only waits
        for the end.

        Called from a :class:`~rue_trio.WebSocketHandler` callback, it starts the closing
        handshake and returns at once (the connection is closing, not closed): that task
        is the one that reads the peer's close frame, which it does once the callback
        returns. Messages the peer sent before it saw our close frame still reach
        ``on_message``. The handshake is bounded by ``close_timeout`` from the call: a
        callback still running then is cancelled.

        Cancellation: the close frame stays queued and the connection goes on closing in
        the background (bounded by ``close_timeout``); only the wait is abandoned.

        Args:
            code: the close code (RFC 6455 section 7.4.1), 1000 by default.
            reason: a short UTF-8 reason (the code and reason fit in 123 bytes).

        Raises:
            ValueError: a code that may not be sent, or a reason too long.
        """
        await checkpoint_if_cancelled()
        self._start_close(code, reason)
        await self._wait_closed()

    async def aclose(self) -> None:
        """Close the connection with 1000: :meth:`close` under the Trio resource name.

        Cancellation: as :meth:`close`.
        """
        await self.close()
