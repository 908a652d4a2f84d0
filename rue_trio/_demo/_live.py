"""The demo's ``/live`` page: the live protocol with history and presence by user name.

``GET /live`` in a browser is the page (``static/live.html``); the same path upgraded to a
WebSocket is the live protocol (:class:`~rue_trio.LiveHandler`). The user is the ``name``
query parameter, so one name in two tabs is one user, listed once with two tabs; names
need not be unique here. Each room keeps its last :data:`LIVE_HISTORY` messages; a
publication is stamped with its sender's name by the server.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from rue_trio import App, Context, HistoryConfig, LiveHandler, RefusedError, WebSocketConn
from rue_trio.hub import Backplane, HistoryStream, UserDirectory

from ._chat import _ROOM_PATTERN, MAX_CONTENT, MAX_ROOM, STATIC_DIR, _clean_name

__all__ = ["LIVE_HISTORY", "make_live", "mount_live"]

LIVE_HISTORY: Final = 200
"""How many messages each ``/live`` room keeps for those who join or come back."""

_MAX_MESSAGE_SIZE: Final = 16 * 1024


def make_live(
    backplane: Backplane | None = None,
    history_stream: HistoryStream | None = None,
    user_directory: UserDirectory | None = None,
) -> LiveHandler:
    """Build the demo's live handler.

    Args:
        backplane: joins the live rooms of several processes.
        history_stream: shares the rooms' history between them.
        user_directory: shares who is in each room between them.

    Returns:
        The handler; :func:`mount_live` serves it.
    """
    return LiveHandler(
        history=HistoryConfig(size=LIVE_HISTORY, max_bytes=1 << 20),
        backplane=backplane,
        history_stream=history_stream,
        user_directory=user_directory,
        on_connect=_identify,
        on_subscribe=_check_room,
        on_publish=_stamp,
        max_rooms=8,
        max_message_size=_MAX_MESSAGE_SIZE,
    )


def mount_live(app: App, live: LiveHandler) -> None:
    """Serve ``/live`` (the page and the protocol) and ``/live.js`` (the client) on ``app``.

    Args:
        app: the demo's app; it runs the live hub too.
        live: the handler, from :func:`make_live`.
    """
    app.add_background(live.run)
    app.get("/live.js", live.script)

    async def route(c: Context) -> None:
        if c.header("upgrade") is None:
            await c.file(STATIC_DIR / "live.html")
            return
        origin = c.header("origin")
        if origin is not None and urlsplit(origin).netloc != c.header("host"):
            await c.string(403, "origin not allowed\n")
            return
        await live.handle(c)

    app.get("/live", route)


def _identify(conn: WebSocketConn) -> None:
    assert conn.request is not None
    names = parse_qs(conn.request.query_string).get("name")
    name = _clean_name(names[0] if names else None, conn.id)
    conn.user = name
    conn.meta = {"name": name}


def _check_room(conn: WebSocketConn, room: str) -> None:
    if _ROOM_PATTERN.fullmatch(room) is None:
        raise RefusedError(f"a room name is 1 to {MAX_ROOM} letters, digits, - or _", 400)


def _stamp(conn: WebSocketConn, room: str, data: Any) -> dict[str, str]:
    _check_room(conn, room)
    text = data.get("text") if isinstance(data, dict) else data
    if not isinstance(text, str) or not text.strip():
        raise RefusedError("a message is {'text': a non-empty string}", 400)
    return {"from": conn.user or "", "text": text.strip()[:MAX_CONTENT]}
