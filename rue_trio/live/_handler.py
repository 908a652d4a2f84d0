"""The live handler: rooms with history and presence over one WebSocket, in JSON.

Theory of operation
-------------------
:class:`LiveHandler` is a composition root: it owns a :class:`~rue_trio.hub.Hub` made with
the wire protocol's framing (:class:`~rue_trio.live._wire.LiveFraming`) and a
:class:`~rue_trio.WebSocketHandler` whose ``on_message`` reads one JSON op at a time. A
``subscribe`` is a hub join (from a position when the client gives ``since``): the hub's
task writes the ``subscribed`` answer, replays what the client missed and only then adds
it to the room, so the client sees every message once, in order. A ``publish`` is a hub
broadcast of the payload re-serialised once; the hub numbers it, stores it, and wraps it
in a ``message`` op. Presence comes from the hub's users (``join`` and ``leave`` notices on
a user's first and last connection).

A client's mistake or a refusal by the application is answered with an ``error`` op
carrying the request's ``ref``; the connection stays open. An exception from an
application hook other than :class:`RefusedError` is a bug: as with any callback, that
connection closes with 1011 and ``on_error`` hears of it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import trio

from rue_trio.auth import Authenticate
from rue_trio.exceptions import RueTrioError
from rue_trio.handlers import OnClose, OnConnect, OnError, WebSocketHandler
from rue_trio.hub import (
    Backplane,
    HistoryConfig,
    HistoryRule,
    HistoryStream,
    Hub,
    StreamPosition,
    UserDirectory,
)
from rue_trio.protocol import DeflateConfig, MessageType
from rue_trio.websocket import ConnectionConfig, WebSocketConn

from ._wire import (
    BAD_REQUEST,
    CONFLICT,
    FORBIDDEN,
    NOT_FOUND,
    TOO_MANY,
    LiveFraming,
    ProtocolFault,
    dump,
    history_text,
    with_ref,
)

if TYPE_CHECKING:
    from rue_trio.app import Context

__all__ = ["CLIENT_SCRIPT", "LiveHandler", "OnPublish", "OnSubscribe", "RefusedError"]

CLIENT_SCRIPT: Final = Path(__file__).resolve().parent / "live.js"
"""The browser client (one file, no build step): serve it with :meth:`LiveHandler.script`."""

OnSubscribe: TypeAlias = Callable[[WebSocketConn, str], Awaitable[None] | None]
"""``on_subscribe(conn, room)``: raise :class:`RefusedError` to refuse; sync or async."""
OnPublish: TypeAlias = Callable[[WebSocketConn, str, Any], Awaitable[Any] | Any]
"""``on_publish(conn, room, data)``: return the data to publish (the same, or
transformed), or raise :class:`RefusedError`; sync or async."""

_DEFAULT_HISTORY: Final = HistoryConfig(size=100)
_DEFAULT_CONFIG: Final = ConnectionConfig()


class RefusedError(RueTrioError):
    """Raised by a hook to refuse a subscription or a publication, with a reason.

    The client gets ``{"op": "error", "code": code, "reason": reason}``; its connection
    stays open.

    Args:
        reason: why, for the client.
        code: the error code (403 by default).
    """

    def __init__(self, reason: str, code: int = FORBIDDEN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class LiveHandler:
    """Serve the live protocol (see its reference page) on a route.

    ::

        live = LiveHandler(history=HistoryConfig(size=100))
        app.add_background(live.run)

        @app.get("/live")
        async def ws(c: Context) -> None:
            await live.handle(c)

    Args:
        history: which rooms keep history (see :class:`~rue_trio.hub.HistoryConfig`):
            the last 100 messages of every room by default; ``None`` for none.
        backplane: joins the hub to other processes (see :class:`~rue_trio.Hub`).
        history_stream: shares room history with other processes (such as
            :class:`rue_trio.backplane.RedisStreams`), so a client recovers on any node.
        user_directory: shares presence with other processes (such as
            :class:`rue_trio.backplane.RedisUsers`): ``presence`` then lists the users
            of every node.
        authenticate: who may connect, and as whom (see :mod:`rue_trio.auth`): the
            :class:`~rue_trio.Identity` it returns sets ``conn.user`` and ``conn.meta``,
            by which presence lists users.
        on_connect: called once a connection is open, before any op; without
            ``authenticate``, set ``conn.user`` and ``conn.meta`` here.
        on_subscribe: decides who may subscribe to which room; also asked before
            answering ``history`` and ``presence``. Everyone may, without it.
        on_publish: decides who may publish in which room, and may transform the data
            (stamp the sender's name, say). Everyone may publish as is, without it.
        on_close: called once a connection is closed.
        on_error: as for :class:`~rue_trio.WebSocketHandler`.
        max_rooms: how many rooms one connection may be subscribed to at once.
        max_room_length: the longest room name, in characters.
        history_limit: the most messages one ``history`` op returns.
        max_message_size: the largest message a client may send, in bytes.
        compression: as for :class:`~rue_trio.WebSocketHandler`.
        allowed_origins: as for :class:`~rue_trio.WebSocketHandler`.
        config: as for :class:`~rue_trio.WebSocketHandler`.
        hub_options: more keyword arguments for the :class:`~rue_trio.Hub`
            (``policy``, ``inbox_size``, ``on_presence``, ``on_user``).

    Attributes:
        hub: the hub; run it with :meth:`run` (or ``hub.run``) before serving.
    """

    def __init__(
        self,
        *,
        history: HistoryRule = _DEFAULT_HISTORY,
        backplane: Backplane | None = None,
        history_stream: HistoryStream | None = None,
        user_directory: UserDirectory | None = None,
        authenticate: Authenticate | None = None,
        on_connect: OnConnect | None = None,
        on_subscribe: OnSubscribe | None = None,
        on_publish: OnPublish | None = None,
        on_close: OnClose | None = None,
        on_error: OnError | None = None,
        max_rooms: int = 64,
        max_room_length: int = 128,
        history_limit: int = 100,
        max_message_size: int = 64 * 1024,
        compression: bool | DeflateConfig = True,
        allowed_origins: Iterable[str] | None = None,
        config: ConnectionConfig = _DEFAULT_CONFIG,
        **hub_options: Any,
    ) -> None:
        if min(max_rooms, max_room_length, history_limit) < 1:
            raise ValueError("max_rooms, max_room_length and history_limit must be at least 1")
        self._framing = LiveFraming()
        self.hub = Hub(
            history=history,
            backplane=backplane,
            history_stream=history_stream,
            user_directory=user_directory,
            framing=self._framing,
            **hub_options,
        )
        self._on_connect = on_connect
        self._on_subscribe = on_subscribe
        self._on_publish = on_publish
        self._on_close = on_close
        self._max_rooms = max_rooms
        self._max_room_length = max_room_length
        self._history_limit = history_limit
        # Each open connection's rooms, by connection id.
        self._subscriptions: dict[str, set[str]] = {}
        self._handler = WebSocketHandler(
            authenticate=authenticate,
            on_connect=self._connect,
            on_message=self._message,
            on_close=self._close,
            on_error=on_error,
            hub=self.hub,
            compression=compression,
            max_message_size=max_message_size,
            allowed_origins=allowed_origins,
            config=config,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub until cancelled (``app.add_background(live.run)``).

        Args:
            task_status: for :meth:`trio.Nursery.start`.
        """
        await self.hub.run(task_status=task_status)

    async def handle(self, c: Context) -> None:
        """Upgrade the request of ``c`` and serve the protocol until the connection ends.

        Args:
            c: the request's context.
        """
        await self._handler.handle(c)

    async def script(self, c: Context) -> None:
        """Answer with the browser client, ``live.js`` (``app.get("/live.js", live.script)``).

        The page then loads it with ``<script src="/live.js"></script>`` and uses
        ``new RueLive("wss://host/live", {onMessage, onEvent, onStatus})``.

        Args:
            c: the request's context.
        """
        await c.file(CLIENT_SCRIPT, content_type="text/javascript; charset=utf-8")

    async def publish(self, room: str, data: Any) -> None:
        """Publish ``data`` (anything JSON can hold) to a room, from the server itself.

        Args:
            room: the room.
            data: the payload; subscribers get it as the ``data`` of a ``message``.
        """
        await self.hub.broadcast(MessageType.TEXT, dump(data), room=room)

    # ------------------------------------------------------------------ callbacks

    async def _connect(self, conn: WebSocketConn) -> None:
        self._subscriptions[conn.id] = set()
        if self._on_connect is not None:
            await _maybe_await(self._on_connect(conn))
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _close(self, conn: WebSocketConn) -> None:
        self._subscriptions.pop(conn.id, None)
        if self._on_close is not None:
            await _maybe_await(self._on_close(conn))
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _message(self, conn: WebSocketConn, type: MessageType, data: str | bytes) -> None:
        ref: object = None
        try:
            request = _parse(type, data)
            ref = request.get("ref")
            if ref is not None and (
                isinstance(ref, bool) or not isinstance(ref, str | int | float)
            ):
                ref = None
                raise ProtocolFault(BAD_REQUEST, "ref must be a string or a number")
            op = request.get("op")
            if op == "subscribe":
                await self._subscribe(conn, request, ref)
            elif op == "unsubscribe":
                await self._unsubscribe(conn, request, ref)
            elif op == "publish":
                await self._publish(conn, request, ref)
            elif op == "history":
                await self._history(conn, request, ref)
            elif op == "presence":
                await self._presence(conn, request, ref)
            else:
                raise ProtocolFault(NOT_FOUND, f"unknown op {op!r}")
        except ProtocolFault as fault:
            await _answer(conn, {"op": "error", "code": fault.code, "reason": fault.reason}, ref)
        except RefusedError as refusal:
            answer = {"op": "error", "code": refusal.code, "reason": refusal.reason}
            await _answer(conn, answer, ref)

    async def _subscribe(self, conn: WebSocketConn, request: dict[str, Any], ref: object) -> None:
        room = self._room(request)
        since = _position(request.get("since"))
        rooms = self._subscriptions[conn.id]
        if room in rooms:
            raise ProtocolFault(CONFLICT, f"already subscribed to {room!r}")
        if len(rooms) >= self._max_rooms:
            raise ProtocolFault(TOO_MANY, f"subscribed to {self._max_rooms} rooms already")
        await self._allow(conn, room)
        rooms.add(room)
        self._framing.expect(conn.id, room, ref)
        try:
            await self.hub.join(room, conn, since=since)
        finally:
            self._framing.forget(conn.id, room)

    async def _unsubscribe(
        self, conn: WebSocketConn, request: dict[str, Any], ref: object
    ) -> None:
        room = self._room(request)
        rooms = self._subscriptions[conn.id]
        if room not in rooms:
            raise ProtocolFault(NOT_FOUND, f"not subscribed to {room!r}")
        rooms.discard(room)
        await self.hub.leave(room, conn)
        await _acknowledge(conn, ref)

    async def _publish(self, conn: WebSocketConn, request: dict[str, Any], ref: object) -> None:
        room = self._room(request)
        if "data" not in request:
            raise ProtocolFault(BAD_REQUEST, "publish needs data")
        data = request["data"]
        if self._on_publish is not None:
            data = await _maybe_await(self._on_publish(conn, room, data))
        await self.hub.broadcast(MessageType.TEXT, dump(data), room=room)
        await _acknowledge(conn, ref)

    async def _history(self, conn: WebSocketConn, request: dict[str, Any], ref: object) -> None:
        room = self._room(request)
        limit = request.get("limit", self._history_limit)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ProtocolFault(BAD_REQUEST, "limit must be a whole number, 0 or more")
        since = _position(request.get("since"))
        await self._allow(conn, room)
        limit = min(limit, self._history_limit)
        page = await self.hub.history(room, since=since, limit=limit)
        await conn.send(MessageType.TEXT, history_text(room, page, page.messages, ref))

    async def _presence(self, conn: WebSocketConn, request: dict[str, Any], ref: object) -> None:
        room = self._room(request)
        await self._allow(conn, room)
        users = await self.hub.presence(room)
        listed = {user: [dict(meta) for meta in metas] for user, metas in users.items()}
        await _answer(conn, {"op": "presence", "room": room, "users": listed}, ref)

    # ------------------------------------------------------------------ helpers

    def _room(self, request: dict[str, Any]) -> str:
        room = request.get("room")
        if not isinstance(room, str) or not room:
            raise ProtocolFault(BAD_REQUEST, "room must be a non-empty string")
        if len(room) > self._max_room_length:
            raise ProtocolFault(
                BAD_REQUEST, f"a room name has at most {self._max_room_length} characters"
            )
        return room

    async def _allow(self, conn: WebSocketConn, room: str) -> None:
        if self._on_subscribe is not None:
            await _maybe_await(self._on_subscribe(conn, room))
        else:
            await trio.lowlevel.checkpoint_if_cancelled()


def _parse(type: MessageType, data: str | bytes) -> dict[str, Any]:
    if type is not MessageType.TEXT:
        raise ProtocolFault(
            BAD_REQUEST, "send JSON text messages; binary is not part of this protocol"
        )
    try:
        request = json.loads(data)
    except ValueError:
        raise ProtocolFault(BAD_REQUEST, "a message is one JSON object") from None
    if not isinstance(request, dict):
        raise ProtocolFault(BAD_REQUEST, "a message is one JSON object")
    return request


def _position(since: object) -> StreamPosition | None:
    if since is None:
        return None
    if isinstance(since, dict):
        epoch = since.get("epoch")
        offset = since.get("offset")
        if isinstance(offset, bool) or not isinstance(offset, int):
            offset = -1
        if isinstance(epoch, str) and offset >= 0:
            return StreamPosition(epoch, offset)
    raise ProtocolFault(BAD_REQUEST, 'since must be {"epoch": string, "offset": whole number}')


async def _maybe_await(result: Awaitable[Any] | Any) -> Any:
    if inspect.isawaitable(result):
        return await result
    await trio.lowlevel.checkpoint_if_cancelled()
    return result


async def _answer(conn: WebSocketConn, answer: dict[str, Any], ref: object) -> None:
    await conn.send(MessageType.TEXT, dump(with_ref(answer, ref)))


async def _acknowledge(conn: WebSocketConn, ref: object) -> None:
    if ref is None:
        await trio.lowlevel.checkpoint_if_cancelled()
        return
    await _answer(conn, {"op": "ok"}, ref)
