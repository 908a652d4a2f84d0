"""Authentication at the handshake: who may open a WebSocket, and as whom.

``WebSocketHandler(authenticate=hook)`` calls ``hook(c)`` with the request's
:class:`~rue_trio.app.Context` once the upgrade request is valid (and its ``Origin``
allowed), before the ``101 Switching Protocols`` is written. The hook, a plain or an
``async`` function, returns either:

* an :class:`Identity`: the connection opens, with :attr:`Identity.user`,
  :attr:`Identity.meta` and :attr:`Identity.app_state` set on the
  :class:`~rue_trio.websocket.WebSocketConn` before ``on_connect`` runs and before it
  joins the hub (so presence sees the user), and :attr:`Identity.headers` added to the
  ``101`` (a ``Set-Cookie``, say);
* a :class:`Refusal`: the client gets that HTTP status (401, 403...), body and headers,
  and no connection opens: no callback runs.

An exception from the hook is the application's bug: it propagates to the route (where
:func:`~rue_trio.app.recovery` turns it into a 500), and no connection opens.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from .http import HeaderList

if TYPE_CHECKING:
    from .app import Context

__all__ = ["Authenticate", "Identity", "Refusal"]


@dataclass(frozen=True, slots=True)
class Identity:
    """The hook's yes: who the client is, and what to add to the ``101``.

    Args:
        user: who is on the other end, as the application knows them (a user id);
            becomes ``conn.user``, which the hub's presence counts once however many
            connections carry it. ``None`` for an anonymous connection.
        meta: what presence may publish about this connection, such as
            ``{"name": "Ada"}``; JSON-serialisable values only. Becomes ``conn.meta``
            (a read-only mapping).
        app_state: the application's own data for this connection (a session, roles);
            copied into ``conn.app_state``. Never published.
        headers: extra headers for the ``101`` response, as ``(name, value)`` pairs,
            such as ``[("set-cookie", "session=...; HttpOnly; Secure")]``.

    Raises:
        TypeError: ``meta`` is not JSON-serialisable.
    """

    user: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    app_state: Mapping[str, Any] = field(default_factory=dict)
    headers: HeaderList = ()

    def __post_init__(self) -> None:
        try:
            json.dumps(dict(self.meta))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Identity.meta must be JSON-serialisable: {exc}") from exc
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@dataclass(frozen=True, slots=True)
class Refusal:
    """The hook's no: the HTTP response the client gets instead of a WebSocket.

    Args:
        status: a 4xx or 5xx status: 401 when credentials are missing or wrong, 403
            when they are valid but not allowed here.
        body: the response body (text is sent as UTF-8 ``text/plain``).
        headers: extra response headers, such as
            ``[("www-authenticate", 'Bearer realm="chat"')]``.

    Raises:
        ValueError: ``status`` is not from 400 to 599.
    """

    status: int = 401
    body: str | bytes = ""
    headers: HeaderList = ()

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"a Refusal's status is 4xx or 5xx, not {self.status!r}")


#: ``authenticate(c)``: plain or ``async``, returns an :class:`Identity` or a
#: :class:`Refusal`.
Authenticate: TypeAlias = Callable[["Context"], Awaitable[Identity | Refusal] | Identity | Refusal]


async def authenticate_request(hook: Authenticate, c: Context) -> Identity | Refusal:
    """Call ``hook(c)``, awaiting it if it is async, and check what it returned.

    Raises:
        TypeError: the hook returned something other than an Identity or a Refusal.
    """
    result = hook(c)
    if inspect.isawaitable(result):
        result = await result
    else:
        await trio.lowlevel.checkpoint()
    if not isinstance(result, Identity | Refusal):
        raise TypeError(
            f"authenticate must return an Identity or a Refusal, not {type(result).__name__}"
        )
    return result
