"""The chat demo: rooms at ``/ws/:room``, the seed's JSON messages, and live presence.

Theory of operation
-------------------
One :class:`~rue_trio.hub.Hub` holds every connection and the room table. A browser
connects to ``/ws/<room>?name=<name>``; the handler registers the connection with the
hub, remembers its name, and joins it to the room. Messages are the seed's
``{"type", "content", "from"}`` objects:

- ``chat``: broadcast to the room, ``from`` set by the server to the sender's name (a
  client cannot speak for someone else);
- ``ping``: answered on the same connection with a ``pong`` carrying the same content
  (the page sends a timestamp and shows the round trip);
- anything else, or invalid JSON: answered with an ``error`` message of ours.

Names are unique within a room: a name already taken there gets a suffix (``ada-2``).
A new connection first gets a ``members`` message with the room's member list and
``you``, its own name as the room knows it.

Presence is not the handlers' business: a background task reads the hub's presence
stream (:meth:`~rue_trio.hub.Hub.open_presence`) and, for every join and leave, sends
the room a ``join`` or ``leave`` notice naming who came or went (``from``); each page
applies that change to its list, so a join storm costs each member one small notice per
arrival, not the whole list each time. Names live in a dict keyed by connection id,
written by the handler before it joins and dropped (and freed for others) by the
presence task when the hub reports the connection unregistered, so a ``leave`` notice
can still name who left. If the presence stream ends because the task fell a whole
buffer behind, it opens a new one and sends each room a ``members`` update.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import trio

import rue_trio
from rue_trio import (
    App,
    Context,
    Hub,
    LiveHandler,
    MessageType,
    PresenceEvent,
    PresenceKind,
    TextMessage,
    WebSocketConn,
    WebSocketHandler,
)

__all__ = ["MAX_CONTENT", "MAX_NAME", "MAX_ROOM", "STATIC_DIR", "ChatDemo", "make_app"]

log = logging.getLogger("rue_trio.demo")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
"""The page, its stylesheet and its script (shipped as package data)."""

MAX_NAME: Final = 32
"""The longest display name, in characters; longer ones are cut."""
MAX_ROOM: Final = 32
"""The longest room name, in characters."""
MAX_CONTENT: Final = 2000
"""The longest chat message, in characters; longer ones are cut."""

# The page only sends small JSON objects: a tight limit protects the server (RFC 6455
# section 10.4: an endpoint should limit the size of the messages it accepts).
_MAX_MESSAGE_SIZE: Final = 16 * 1024
_ROOM_PATTERN: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ROOM}}}")
_SPACES: Final = re.compile(r"\s+")


def _dump(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _parse(data: str | bytes) -> object:
    """The JSON value in ``data``, or a ValueError that says what the protocol expects."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        # RecursionError: thousands of nested brackets, which json cannot descend.
        raise ValueError(
            'invalid JSON: send an object such as {"type": "chat", "content": "hello"}'
        ) from None


def _clean_name(raw: str | None, conn_id: str) -> str:
    name = _SPACES.sub(" ", raw or "").strip()[:MAX_NAME]
    return name or f"guest-{conn_id[-4:]}"


class ChatDemo:
    """The chat server: an :class:`~rue_trio.App`, its hub, and who is called what.

    Args:
        hub: the hub to use (one with a backplane, for several processes); a new
            in-process :class:`~rue_trio.Hub` by default. It must not be running yet:
            the app runs it.
        live: the handler of the ``/live`` page and protocol (``_live.make_live``); a new
            in-process one by default.

    Attributes:
        app: the app to serve; it runs the hub and the presence task itself.
        hub: the hub.
    """

    def __init__(self, hub: Hub | None = None, live: LiveHandler | None = None) -> None:
        self.hub = hub if hub is not None else Hub()
        self._names: dict[str, str] = {}
        # The room each named connection is in, and the names taken in each room.
        self._room_of: dict[str, str] = {}
        self._taken: dict[str, set[str]] = {}
        app = self.app = rue_trio.default()
        app.add_background(self.hub.run)
        app.add_background(self._announce)
        app.get("/", self._index)
        app.get("/favicon.ico", self._favicon)
        app.get("/health", self._health)
        app.static("/static", STATIC_DIR)
        app.get("/ws/:room", self._websocket)
        # Imported here: the /live module builds on this one's names and limits.
        from ._live import make_live, mount_live

        live = live if live is not None else make_live()
        mount_live(app, live)
        try:
            from rue_trio.metrics import metrics_endpoint
        except ImportError:  # without the metrics extra: no /metrics
            pass
        else:
            app.get("/metrics", metrics_endpoint(hubs={"chat": self.hub, "live": live.hub}))

    def names(self, room: str) -> list[str]:
        """Return the names of the members of ``room``, in the order they joined."""
        names = self._names
        return [names[member] for member in self.hub.members(room) if member in names]

    # HTTP -----------------------------------------------------------------------------

    async def _index(self, c: Context) -> None:
        await c.file(STATIC_DIR / "index.html")

    async def _favicon(self, c: Context) -> None:
        await c.file(STATIC_DIR / "favicon.svg", content_type="image/svg+xml")

    async def _health(self, c: Context) -> None:
        await c.json(200, {"status": "ok", "members": self.hub.count(), "rooms": self.hub.rooms()})

    async def _websocket(self, c: Context) -> None:
        room = c.param("room")
        if _ROOM_PATTERN.fullmatch(room) is None:
            await c.string(400, f"a room name is 1 to {MAX_ROOM} letters, digits, - or _\n")
            return
        origin = c.header("origin")
        if origin is not None and urlsplit(origin).netloc != c.header("host"):
            # Cross-site WebSocket hijacking: a browser page from elsewhere may not join.
            await c.string(403, "origin not allowed\n")
            return
        requested_name = c.query("name")
        hub = self.hub

        async def on_connect(conn: WebSocketConn) -> None:
            name = self._claim(room, conn.id, _clean_name(requested_name, conn.id))
            await hub.join(room, conn)
            welcome = {
                "type": "members",
                "content": "",
                "from": "",
                "room": room,
                "members": self.names(room),
                "you": name,
            }
            await conn.send(TextMessage, _dump(welcome))

        async def on_message(
            conn: WebSocketConn, msg_type: MessageType, data: str | bytes
        ) -> None:
            await self._on_message(conn, room, msg_type, data)

        handler = WebSocketHandler(
            hub=hub,
            on_connect=on_connect,
            on_message=on_message,
            max_message_size=_MAX_MESSAGE_SIZE,
        )
        await handler.handle(c)

    def _claim(self, room: str, conn_id: str, name: str) -> str:
        """Take ``name`` in ``room`` for ``conn_id``, with a suffix if someone has it."""
        taken = self._taken.setdefault(room, set())
        unique = name
        number = 1
        while unique in taken:
            number += 1
            suffix = f"-{number}"
            unique = name[: MAX_NAME - len(suffix)] + suffix
        taken.add(unique)
        self._names[conn_id] = unique
        self._room_of[conn_id] = room
        return unique

    def _release(self, conn_id: str) -> None:
        name = self._names.pop(conn_id, None)
        room = self._room_of.pop(conn_id, None)
        taken = self._taken.get(room or "")
        if name is not None and room is not None and taken is not None:
            taken.discard(name)
            if not taken:
                del self._taken[room]

    # Messages ---------------------------------------------------------------------------

    async def _on_message(
        self, conn: WebSocketConn, room: str, msg_type: MessageType, data: str | bytes
    ) -> None:
        try:
            if msg_type != TextMessage:
                raise ValueError("binary messages are not part of this protocol")
            msg = _parse(data)
            if not isinstance(msg, dict):
                raise ValueError("a message is a JSON object")
            kind = msg.get("type")
            content = msg.get("content", "")
            if not isinstance(content, str):
                raise ValueError("content must be a string")
        except ValueError as err:
            log.info("invalid message from %s: %s", conn.id, err)
            await conn.send(TextMessage, _dump({"type": "error", "content": str(err), "from": ""}))
            return
        if kind == "chat":
            content = content.strip()[:MAX_CONTENT]
            if not content:
                await trio.lowlevel.checkpoint()
                return
            name = self._names.get(conn.id, "")
            chat = {"type": "chat", "content": content, "from": name}
            await self.hub.broadcast(TextMessage, _dump(chat), room=room)
        elif kind == "ping":
            pong = {"type": "pong", "content": content[:MAX_CONTENT], "from": ""}
            await conn.send(TextMessage, _dump(pong))
        else:
            error = {"type": "error", "content": f"unknown message type {kind!r}", "from": ""}
            await conn.send(TextMessage, _dump(error))

    # Presence ---------------------------------------------------------------------------

    async def _announce(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Turn the hub's presence events into join and leave notices, until cancelled."""
        started = False
        while True:
            try:
                async with self.hub.open_presence() as events:
                    if started:
                        # The previous stream ended because we fell behind: catch up.
                        await self._resync()
                    else:
                        started = True
                        task_status.started()
                    async for event in events:
                        await self._on_presence(event)
            except trio.BrokenResourceError:
                # The hub has stopped: so does presence.
                await trio.lowlevel.checkpoint()
                return

    async def _on_presence(self, event: PresenceEvent) -> None:
        kind = event.kind
        room = event.room
        if kind is PresenceKind.UNREGISTER:
            self._release(event.member_id)
            await trio.lowlevel.checkpoint()
            return
        if room is None:
            await trio.lowlevel.checkpoint()
            return
        name = self._names.get(event.member_id, "")
        verb = "joined" if kind is PresenceKind.JOIN else "left"
        # The change only: each page applies it to the list it got on arrival.
        notice = {
            "type": kind.value,
            "content": f"{name} {verb} the room",
            "from": name,
            "room": room,
        }
        await self.hub.broadcast(TextMessage, _dump(notice), room=room)

    async def _resync(self) -> None:
        registered = set(self.hub.members())
        for member in [member for member in self._names if member not in registered]:
            self._release(member)
        for room in self.hub.rooms():
            update = {
                "type": "members",
                "content": "",
                "from": "",
                "room": room,
                "members": self.names(room),
            }
            await self.hub.broadcast(TextMessage, _dump(update), room=room)
        await trio.lowlevel.checkpoint()


def make_app(hub: Hub | None = None, live: LiveHandler | None = None) -> App:
    """Build the chat demo's app.

    Args:
        hub: see :class:`ChatDemo`.
        live: see :class:`ChatDemo`.

    Returns:
        The app: ``GET /`` (the page), ``/static/*``, ``/health``, ``/ws/:room``, and
        ``/live`` with ``/live.js``, and ``/metrics`` when ``prometheus_client`` is
        installed (the ``metrics`` extra).
    """
    return ChatDemo(hub, live).app
