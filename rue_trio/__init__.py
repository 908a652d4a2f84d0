"""rue_trio: the WebSocket layer of the Rue web framework, for Trio.

The public names are re-exported here; everything else is private.
"""

from .exceptions import (
    CloseFrame,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    InvalidPayloadError,
    InvalidStatusError,
    InvalidURIError,
    MessageTooBigError,
    NegotiationError,
    ProtocolError,
    RueTrioError,
)
from .protocol import DeflateConfig, Message, MessageType

TextMessage = MessageType.TEXT
"""A text message: Rue's ``rue.TextMessage``."""
BinaryMessage = MessageType.BINARY
"""A binary message: Rue's ``rue.BinaryMessage``."""

__version__ = "0.1.0.dev0"

__all__ = [
    "BinaryMessage",
    "CloseFrame",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeflateConfig",
    "HandshakeError",
    "InvalidPayloadError",
    "InvalidStatusError",
    "InvalidURIError",
    "Message",
    "MessageTooBigError",
    "MessageType",
    "NegotiationError",
    "ProtocolError",
    "RueTrioError",
    "TextMessage",
    "__version__",
]
