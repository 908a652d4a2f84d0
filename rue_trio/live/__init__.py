"""The live protocol: rooms with history, recovery and presence, as JSON over a WebSocket.

:class:`LiveHandler` serves it on a route of an app; :func:`open_live` is a client that
reconnects and resumes by itself. The protocol is described in
the documentation's reference, "The live protocol".
"""

from ._client import LiveClient, LiveError, LiveEvent, LiveMessage, open_live
from ._handler import LiveHandler, OnPublish, OnSubscribe, RefusedError

__all__ = [
    "LiveClient",
    "LiveError",
    "LiveEvent",
    "LiveHandler",
    "LiveMessage",
    "OnPublish",
    "OnSubscribe",
    "RefusedError",
    "open_live",
]
