"""The sans-I/O WebSocket protocol: RFC 6455 and RFC 7692 permessage-deflate.

Nothing here does I/O or imports Trio: bytes go in, events come out; calls go in, bytes
come out. :class:`WebSocketProtocol` is one side of an open connection; the handshake functions
validate and build the HTTP upgrade of RFC 6455 section 4; :func:`encode_message` turns a
message into its frame once, for broadcasting.
"""

from ._client_handshake import (
    ClientHandshake,
    WebSocketURI,
    check_response,
    client_request,
    generate_key,
    parse_uri,
)
from ._connection import Role, State, WebSocketProtocol, detach_traceback
from ._deflate import (
    DeflateConfig,
    DeflateParams,
    client_accept,
    client_offer,
    server_negotiate,
)
from ._deflate_codec import PerMessageDeflate, compress_message
from ._events import CloseReceived, Event, Message, Ping, Pong
from ._frames import (
    MessageType,
    Opcode,
    encode_close_payload,
    encode_frame,
    encode_message,
    is_valid_close_code,
    parse_close_payload,
)
from ._handshake import (
    ServerHandshake,
    UpgradeRequest,
    accept_key,
    accept_response,
    select_subprotocol,
    server_handshake,
    validate_upgrade_request,
)
from ._mask import HAS_SPEEDUPS, apply_mask, unmask_at

Protocol = WebSocketProtocol
"""The former name of :class:`WebSocketProtocol`, kept so that code written against it runs.

The new name no longer reads like :class:`typing.Protocol` in modules that use both.
"""

__all__ = [
    "HAS_SPEEDUPS",
    "ClientHandshake",
    "CloseReceived",
    "DeflateConfig",
    "DeflateParams",
    "Event",
    "Message",
    "MessageType",
    "Opcode",
    "PerMessageDeflate",
    "Ping",
    "Pong",
    "Protocol",
    "WebSocketProtocol",
    "Role",
    "ServerHandshake",
    "State",
    "UpgradeRequest",
    "WebSocketURI",
    "accept_key",
    "accept_response",
    "apply_mask",
    "check_response",
    "client_accept",
    "client_offer",
    "client_request",
    "compress_message",
    "detach_traceback",
    "encode_close_payload",
    "encode_frame",
    "encode_message",
    "generate_key",
    "is_valid_close_code",
    "parse_close_payload",
    "parse_uri",
    "select_subprotocol",
    "server_handshake",
    "server_negotiate",
    "unmask_at",
    "validate_upgrade_request",
]
