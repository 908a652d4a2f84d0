"""The state a :class:`~rue_trio.protocol.WebSocketProtocol` keeps, and how its connection ended.

:class:`_ProtocolState` holds every field of the state machine (both directions share one
set of slots), the step both directions take to stop reading, and the report of the
closing handshake (:attr:`~rue_trio.protocol.WebSocketProtocol.close_exc`). The theory of
operation is in ``_connection.py``.
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Callable
from typing import TypeVar

from rue_trio.exceptions import (
    CloseFrame,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ProtocolError,
)

from ._deflate_codec import PerMessageDeflate
from ._events import Event
from ._frames import MessageType

__all__ = ["Role", "State", "detach_traceback"]

_E = TypeVar("_E", bound=BaseException)


def detach_traceback(exc: _E) -> _E:
    """Drop the tracebacks of ``exc`` and of the exceptions chained to it; return ``exc``.

    An exception kept on an object, with a traceback whose frames refer back to that
    object, is a reference cycle: the object would wait for the cycle collector instead
    of being freed when its connection ends. The message and the chain stay.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


class Role(enum.Enum):
    """Which end of the connection a :class:`WebSocketProtocol` is."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """The connection's state after the opening handshake (RFC 6455 section 4.1 onwards)."""

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# A close with one of these codes both ways is a normal closure (1005: no code given).
_OK_CODES = frozenset({1000, 1001, 1005})
# Bytes of masking keys drawn from the OS at once (see _ProtocolSending._next_mask).
_MASK_POOL_SIZE = 4096


class _ProtocolState:
    """The fields of a :class:`~rue_trio.protocol.WebSocketProtocol` and its closing report."""

    # Slots, not an instance dict: 64 bytes less per connection (bench/idle_memory.py).
    __slots__ = (
        "_assembly",
        "_buf",
        "_events",
        "_expect_mask",
        "_frag_compressed",
        "_frag_decoder",
        "_frag_size",
        "_frag_type",
        "_frame_fin_key",
        "_frame_left",
        "_is_client",
        "_mask_pool",
        "_mask_pos",
        "_need",
        "_out",
        "_pos",
        "_reading",
        "_rsv_mask",
        "_send_compressed",
        "_send_fragmented",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "deflate",
        "max_message_size",
        "parser_exc",
        "role",
        "state",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = 1 << 20,
        deflate: PerMessageDeflate | None = None,
    ) -> None:
        self.role = role
        self.max_message_size = max_message_size
        self.deflate = deflate
        self.state = State.OPEN
        self.close_rcvd: CloseFrame | None = None
        self.close_sent: CloseFrame | None = None
        self.close_rcvd_then_sent: bool | None = None
        self.parser_exc: ProtocolError | None = None
        self._is_client = role is Role.CLIENT
        # Section 5.1: frames from a client are masked, frames from a server are not.
        self._expect_mask = 0 if self._is_client else 0x80
        # Section 5.2 / RFC 7692 section 6: RSV1 is legal only with the extension.
        self._rsv_mask = 0x30 if deflate is not None else 0x70
        # Undecoded input, parsed from _pos on; _need: the bytes a header needs there.
        self._buf = bytearray()
        self._pos = 0
        self._need = 2
        self._reading = True
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # The data frame whose payload is being consumed as it arrives: the bytes left,
        # then its FIN bit and its masking key, rotated to the next byte's place (one
        # attribute for the two: one read on the hot path).
        self._frame_left = 0
        self._frame_fin_key: tuple[bool, bytes] = (False, b"")
        # The message being reassembled: its type, parts (see _receiving._PART_MIN),
        # size (frame overheads included), compression and UTF-8 validator.
        self._frag_type: MessageType | None = None
        self._assembly: list[bytes | bytearray] = []
        self._frag_size = 0
        self._frag_compressed = False
        self._frag_decoder: codecs.IncrementalDecoder | None = None
        # The message being sent in fragments, if any: its compression and opcode.
        self._send_fragmented = False
        self._send_compressed = False
        self._mask_pool = b""
        self._mask_pos = _MASK_POOL_SIZE

    def _stop_reading(self) -> None:
        """Ignore input from now on, and free what was buffered or being assembled."""
        self._reading = False
        self._buf = bytearray()
        self._pos = 0
        self._frame_left = 0
        self._assembly = []

    # --------------------------------------------------------------- reporting

    @property
    def close_code(self) -> int | None:
        """The peer's close code (1005 if its frame had none), or ``None`` before one came."""
        return None if self.close_rcvd is None else self.close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        """The peer's close reason, or ``None`` before its close frame came."""
        return None if self.close_rcvd is None else self.close_rcvd.reason

    @property
    def closed_ok(self) -> bool:
        """Whether the closing is normal: close frames with 1000, 1001 or no code went both ways.

        What :attr:`close_exc` tells by its class (:class:`ConnectionClosedOK`), without
        building it.
        """
        rcvd, sent = self.close_rcvd, self.close_sent
        return (
            rcvd is not None
            and sent is not None
            and rcvd.code in _OK_CODES
            and sent.code in _OK_CODES
        )

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception that describes how the connection ended, or is ending.

        :class:`ConnectionClosedOK` when close frames with 1000, 1001 or no code went both
        ways; :class:`ConnectionClosedError` otherwise, with :attr:`parser_exc` as its
        ``__cause__`` when the peer broke the protocol.
        """
        cls: Callable[..., ConnectionClosed] = (
            ConnectionClosedOK if self.closed_ok else ConnectionClosedError
        )
        exc = cls(self.close_rcvd, self.close_sent, self.close_rcvd_then_sent)
        exc.__cause__ = self.parser_exc
        return exc
