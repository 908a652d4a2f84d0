"""The Trio WebSocket connection: a reader task and a writer task per connection.

This layer knows :mod:`rue_trio.protocol` and Trio, never HTTP: it takes a stream on
which the opening handshake is done and runs the connection over it. The server handler
and the client (:mod:`rue_trio.client`) both build on :func:`open_websocket_conn`.
"""

from ._config import ConnectionConfig, ConnectionStatistics
from ._connection import HandshakeRequest, WebSocketConn
from ._lifecycle import open_websocket_conn
from ._queue import FrameQueue, FrameQueueStatistics

__all__ = [
    "ConnectionConfig",
    "ConnectionStatistics",
    "FrameQueue",
    "FrameQueueStatistics",
    "HandshakeRequest",
    "WebSocketConn",
    "open_websocket_conn",
]
