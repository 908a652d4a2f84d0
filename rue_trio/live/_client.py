"""A client of the live protocol that comes back by itself.

Theory of operation
-------------------
:func:`open_live` starts one task, the *link*, in a nursery of its own, and yields a
:class:`LiveClient`. The link connects, subscribes again to every room the client wants
(from the last position it handled in each, as ``since``), then reads: ``message`` ops go
to a bounded channel the application's ``async for`` reads (a slow reader slows the link,
then TCP pushes back on the server: nothing grows), answers to requests go to the request
that waits for them. When the connection ends, for any reason but the client's own exit,
the link waits ``backoff_min`` seconds, doubling up to ``backoff_max``, each delay drawn
between half and all of it (jitter, so that a thousand clients of a restarted server do
not come back at the same instant), and starts again.

Exactly once, in order: the link remembers, for each room, the epoch and offset of the
last message it passed on, and drops any message at or before it in the same epoch (a
replay overlapping what was already seen). When the server says it could not recover
(``recovered`` false: it restarted, or the gap is longer than its history), the client
starts again from the room's latest position and the ``async for`` gets a
:class:`LiveEvent` with ``op == "subscribed"`` and ``recovered`` false, so the application
can fetch :meth:`LiveClient.history` and resynchronise.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from rue_trio._groups import single_failure
from rue_trio.client import open_websocket
from rue_trio.exceptions import (
    ConnectionClosed,
    InvalidStatusError,
    InvalidURIError,
    RueTrioError,
)
from rue_trio.hub import StreamPosition
from rue_trio.protocol import MessageType
from rue_trio.websocket import WebSocketConn

__all__ = ["LiveClient", "LiveError", "LiveEvent", "LiveMessage", "open_live"]

_NOT_SEEN: Final = StreamPosition("", -1)


class LiveError(RueTrioError):
    """The server answered a request with an ``error`` op.

    Attributes:
        code: the error code (400, 403, 404, 409, 429: see the live protocol's page).
        reason: the server's reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A message published in a room.

    Attributes:
        room: the room.
        epoch: the room's epoch (``""`` in a room without history).
        offset: its offset in the epoch (0 in a room without history).
        data: the payload, parsed from JSON.
    """

    room: str
    epoch: str
    offset: int
    data: Any

    @property
    def position(self) -> StreamPosition:
        """Where this message stands in its room's stream."""
        return StreamPosition(self.epoch, self.offset)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """Anything else the server tells the client: ``subscribed``, ``join``, ``leave``.

    Attributes:
        op: the op.
        room: the room.
        fields: the whole message, parsed.
    """

    op: str
    room: str
    fields: Mapping[str, Any] = field(default_factory=dict)


class _Request:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer: dict[str, Any] | None = None


class LiveClient:
    """A connection to a live endpoint that survives disconnections; see :func:`open_live`.

    Iterate over it (``async for item in client``) to get each :class:`LiveMessage` of
    the rooms it is subscribed to, once and in order, and :class:`LiveEvent` notices.
    """

    def __init__(self, buffer: int) -> None:
        # Each room wanted, with the last position handled in it.
        self._rooms: dict[str, StreamPosition] = {}
        # The rooms each new connection subscribes to by itself: the server confirmed
        # them once (or they were given to open_live).
        self._resume: set[str] = set()
        self._events_send, self._events = trio.open_memory_channel[LiveMessage | LiveEvent](buffer)
        self._conn: WebSocketConn | None = None
        self._connected = trio.Event()
        self._pending: dict[int, _Request] = {}
        self._refs = itertools.count(1)
        self._connects = 0

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """Whether the client is connected right now."""
        return self._conn is not None

    @property
    def connects(self) -> int:
        """How many times the client has connected (1 before any reconnection)."""
        return self._connects

    def position(self, room: str) -> StreamPosition | None:
        """The position of the last message handled in ``room``, if subscribed."""
        position = self._rooms.get(room)
        return None if position is None or position is _NOT_SEEN else position

    async def subscribe(self, room: str, *, since: StreamPosition | None = None) -> None:
        """Subscribe to a room, now and after every reconnection.

        Returns once the server confirmed (waiting for a connection if needed). The
        messages the server replays from ``since`` come through the ``async for``.

        Args:
            room: the room.
            since: the last position already handled (from an earlier session).

        Raises:
            LiveError: the server refused.
        """
        self._rooms[room] = since if since is not None else _NOT_SEEN
        while True:
            try:
                await self._request(self._subscription(room))
            except LiveError:
                del self._rooms[room]
                raise
            except ConnectionClosed:
                # Lost before the answer: ask the next connection.
                await trio.lowlevel.checkpoint()
            else:
                break
        self._resume.add(room)

    async def unsubscribe(self, room: str) -> None:
        """Stop following a room.

        Args:
            room: the room.

        Raises:
            LiveError: the server refused (not subscribed).
        """
        self._rooms.pop(room, None)
        self._resume.discard(room)
        await self._request({"op": "unsubscribe", "room": room})

    async def publish(self, room: str, data: Any) -> None:
        """Publish ``data`` to a room and wait for the server's ``ok``.

        Args:
            room: the room.
            data: anything JSON can hold.

        Raises:
            LiveError: the server refused.
            rue_trio.exceptions.ConnectionClosed: the connection ended before the answer
                (the message may or may not have been published).
        """
        await self._request({"op": "publish", "room": room, "data": data})

    async def history(self, room: str, *, limit: int | None = None) -> list[LiveMessage]:
        """Fetch a room's last messages, oldest first.

        Args:
            room: the room.
            limit: at most this many (the server caps it).

        Returns:
            The messages.

        Raises:
            LiveError: the server refused.
        """
        request: dict[str, Any] = {"op": "history", "room": room}
        if limit is not None:
            request["limit"] = limit
        answer = await self._request(request)
        return [_message(item) for item in answer["messages"]]

    async def presence(self, room: str) -> dict[str, list[dict[str, Any]]]:
        """List a room's users, each with the metadata of each of their connections.

        Args:
            room: the room.

        Returns:
            The users.

        Raises:
            LiveError: the server refused.
        """
        answer = await self._request({"op": "presence", "room": room})
        users: dict[str, list[dict[str, Any]]] = answer["users"]
        return users

    def __aiter__(self) -> AsyncIterator[LiveMessage | LiveEvent]:
        return self._events.__aiter__()

    # ------------------------------------------------------------------ the link

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        while True:
            await self._connected.wait()
            conn = self._conn
            if conn is not None:
                break
        ref = request["ref"] = next(self._refs)
        pending = self._pending[ref] = _Request()
        try:
            await conn.send(MessageType.TEXT, json.dumps(request, separators=(",", ":")))
            await pending.done.wait()
        finally:
            del self._pending[ref]
        answer = pending.answer
        if answer is None:
            raise ConnectionClosed(None, None)
        if answer.get("op") == "error":
            raise LiveError(int(answer.get("code", 0)), str(answer.get("reason", "")))
        return answer

    async def _link(
        self,
        url: str,
        backoff_min: float,
        backoff_max: float,
        options: Mapping[str, Any],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        failures = 0
        first = True
        while True:
            try:
                async with open_websocket(url, **options) as conn:
                    failures = 0
                    self._connects += 1
                    await self._session(conn, task_status if first else None)
            except (InvalidStatusError, InvalidURIError):
                # RefusedError at the very first attempt: the caller's mistake (a wrong path,
                # no credentials), not a blip; say so instead of retrying forever.
                if first:
                    raise
            except (OSError, RueTrioError, trio.BrokenResourceError):
                pass  # the link broke: come back below
            first = first and self._connects == 0
            self._disconnected()
            delay = min(backoff_max, backoff_min * math.pow(2, failures))
            failures += 1
            await trio.sleep(random.uniform(delay / 2, delay))

    async def _session(
        self, conn: WebSocketConn, task_status: trio.TaskStatus[None] | None
    ) -> None:
        for room in list(self._resume):
            request = self._subscription(room)
            await conn.send(MessageType.TEXT, json.dumps(request, separators=(",", ":")))
        self._conn = conn
        self._connected.set()
        if task_status is not None:
            task_status.started()
        async for message in conn:
            await self._dispatch(message.data)

    def _subscription(self, room: str) -> dict[str, Any]:
        request: dict[str, Any] = {"op": "subscribe", "room": room}
        position = self._rooms[room]
        if position is not _NOT_SEEN:
            request["since"] = {"epoch": position.epoch, "offset": position.offset}
        return request

    def _disconnected(self) -> None:
        self._conn = None
        self._connected = trio.Event()
        for pending in self._pending.values():
            pending.done.set()  # answer None: the connection ended

    async def _dispatch(self, data: str | bytes) -> None:
        item = json.loads(data)
        op = item.get("op")
        ref = item.get("ref")
        if op == "message":
            message = _message(item)
            seen = self._rooms.get(message.room)
            if seen is None:
                await trio.lowlevel.checkpoint()
                return  # unsubscribed meanwhile
            if seen.epoch == message.epoch and message.offset <= seen.offset and message.epoch:
                await trio.lowlevel.checkpoint()
                return  # already handled: a replay overlapping what we saw
            if message.epoch:
                self._rooms[message.room] = message.position
            await self._events_send.send(message)
            return
        if op == "subscribed":
            room = item["room"]
            since = self._rooms.get(room)
            if since is not None and (since is _NOT_SEEN or not item.get("recovered")):
                self._rooms[room] = StreamPosition(item["epoch"], item["offset"])
        if isinstance(ref, int) and ref in self._pending:
            pending = self._pending[ref]
            pending.answer = item
            pending.done.set()
        if op in ("subscribed", "join", "leave"):
            await self._events_send.send(LiveEvent(op, item.get("room", ""), item))
        else:
            await trio.lowlevel.checkpoint()


def _message(item: Mapping[str, Any]) -> LiveMessage:
    return LiveMessage(item["room"], item["epoch"], item["offset"], item.get("data"))


@asynccontextmanager
async def open_live(
    url: str,
    *,
    rooms: Sequence[str] = (),
    backoff_min: float = 0.1,
    backoff_max: float = 10.0,
    buffer: int = 1024,
    **options: Any,
) -> AsyncIterator[LiveClient]:
    """Connect to a live endpoint and stay connected until the block ends.

    ::

        async with open_live("ws://127.0.0.1:8080/live?name=ada", rooms=["lobby"]) as live:
            async for item in live:
                if isinstance(item, LiveMessage):
                    print(item.room, item.offset, item.data)

    The first connection is made before the block starts; later ones happen by themselves.

    Args:
        url: the endpoint's ``ws://`` or ``wss://`` URL.
        rooms: rooms to subscribe to from the start.
        backoff_min: seconds before the first reconnection attempt.
        backoff_max: the longest wait between two attempts.
        buffer: how many messages may wait for the ``async for``; past that the client
            stops reading (TCP then pushes back on the server).
        **options: passed to :func:`rue_trio.client.open_websocket` (``headers``,
            ``ssl_context``, ``open_timeout``, ...).

    Yields:
        The client.

    Raises:
        rue_trio.exceptions.InvalidStatusError: the server refused the first handshake.
        rue_trio.exceptions.InvalidURIError: the URL is not a WebSocket URL.
        ValueError: a backoff is not positive, or ``buffer`` is below 1.
    """
    if not 0 < backoff_min <= backoff_max:
        raise ValueError("backoffs must be positive, backoff_min at most backoff_max")
    if buffer < 1:
        raise ValueError("buffer must be at least 1")
    client = LiveClient(buffer)
    for room in rooms:
        client._rooms[room] = _NOT_SEEN
        client._resume.add(room)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._link, url, backoff_min, backoff_max, options)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
                client._events_send.close()
    except BaseExceptionGroup as group:
        # One failure (a refused first handshake, the block's own error) comes out as itself.
        failure = single_failure(group)
        if failure is None:
            raise
        raise failure from failure.__cause__
