"""The live protocol: rooms with history, recovery and presence, as JSON over a WebSocket.

:class:`LiveHandler` serves it on a route of an app. The protocol is described in
``docs/reference/live.md``.
"""

from ._handler import LiveHandler, OnPublish, OnSubscribe, Refused

__all__ = ["LiveHandler", "OnPublish", "OnSubscribe", "Refused"]
