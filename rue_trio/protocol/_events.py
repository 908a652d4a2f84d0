"""The events the protocol core reports: small frozen nouns, one per thing that happened."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._frames import MessageType

__all__ = ["CloseReceived", "Event", "Message", "Ping", "Pong"]


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message, reassembled from its frames and decompressed.

    Attributes:
        type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
        data: a ``str`` for a text message (already validated UTF-8), ``bytes`` for a
            binary one.
    """

    type: MessageType
    data: str | bytes

    def json(self) -> Any:
        """Parse the message as JSON.

        Returns:
            The decoded value.

        Raises:
            ValueError: if the data is not valid JSON (``json.JSONDecodeError``).
        """
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer sent a ping; the core has already queued the pong (RFC 6455 section 5.5.2).

    Attributes:
        data: the application data of the ping.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer sent a pong, solicited or not (RFC 6455 section 5.5.3).

    Attributes:
        data: the application data of the pong.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent a close frame (RFC 6455 section 5.5.1).

    If we had not sent one yet, the core has already queued the echo.

    Attributes:
        code: the status code, 1005 when the frame carried none.
        reason: the reason, possibly empty.
    """

    code: int
    reason: str


Event = Message | Ping | Pong | CloseReceived
"""Any event returned by :meth:`WebSocketProtocol.events_received`."""
