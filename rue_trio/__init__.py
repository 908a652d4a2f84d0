"""rue_trio: the WebSocket layer of the Rue web framework, for Trio.

The public names are re-exported here; everything else is private.
"""

from .app import App, Context, default
from .auth import Authenticate, Identity, Refusal
from .client import open_websocket, open_websocket_stream
from .exceptions import (
    BackplaneError,
    BindError,
    CloseFrame,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    InvalidAddressError,
    InvalidPayloadError,
    InvalidStatusError,
    InvalidURIError,
    MessageTooBigError,
    NegotiationError,
    ProtocolError,
    RueTrioError,
    StartupError,
    WorkerExitedError,
)
from .handlers import WebSocketHandler
from .http import Request
from .hub import (
    HistoryConfig,
    HistoryMessage,
    HistoryPage,
    Hub,
    HubStatistics,
    PresenceEvent,
    PresenceKind,
    StreamPosition,
    UserEvent,
)
from .live import LiveHandler, RefusedError
from .protocol import DeflateConfig, Message, MessageType
from .websocket import ConnectionConfig, ConnectionStatistics, WebSocketConn

TextMessage = MessageType.TEXT
"""A text message: Rue's ``rue.TextMessage``."""
BinaryMessage = MessageType.BINARY
"""A binary message: Rue's ``rue.BinaryMessage``."""

__version__ = "0.1.0.dev0"

__all__ = [
    "App",
    "Authenticate",
    "BackplaneError",
    "BinaryMessage",
    "BindError",
    "CloseFrame",
    "ConnectError",
    "ConnectionConfig",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionStatistics",
    "Context",
    "DeflateConfig",
    "HandshakeError",
    "HistoryConfig",
    "HistoryMessage",
    "HistoryPage",
    "Hub",
    "HubStatistics",
    "Identity",
    "InvalidAddressError",
    "InvalidPayloadError",
    "InvalidStatusError",
    "InvalidURIError",
    "LiveHandler",
    "Message",
    "MessageTooBigError",
    "MessageType",
    "NegotiationError",
    "PresenceEvent",
    "PresenceKind",
    "ProtocolError",
    "Refusal",
    "RefusedError",
    "Request",
    "RueTrioError",
    "StartupError",
    "WorkerExitedError",
    "StreamPosition",
    "TextMessage",
    "UserEvent",
    "WebSocketConn",
    "WebSocketHandler",
    "__version__",
    "default",
    "open_websocket",
    "open_websocket_stream",
]
