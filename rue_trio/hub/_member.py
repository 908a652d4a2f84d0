"""The member port: what the hub needs to know about a connection, and nothing more.

The hub knows a connection only as an id and a way to offer it frames (docs/topics/design.md,
"Which way imports point"). A WebSocket connection is adapted to :class:`Member` by the
composition root that owns both (the handler); tests use small fakes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final, Protocol

from rue_trio.protocol import MessageType, encode_message

__all__ = ["PLAIN", "Member"]

PLAIN: Final[Hashable] = encode_message
"""The :attr:`Member._hub_encode_key` of a member whose frames are plain server frames.

A plain frame is unmasked and uncompressed: exactly what
:func:`rue_trio.protocol.encode_message` returns, which is why that function itself is
the key. A layer that may not import the hub (``rue_trio.websocket``) can therefore
return ``rue_trio.protocol.encode_message`` as its key and mean the same thing. For
members with this key the hub calls ``encode_message`` once per broadcast itself and
never calls :meth:`Member._hub_encode`.
"""


class Member(Protocol):
    """A connection as the hub sees it: an id and a bounded outbound queue of frames.

    The hub's private port, kept public in :mod:`rue_trio.hub` for typing, tests and
    benchmarks only: applications do not implement it, they pass
    :class:`~rue_trio.websocket.WebSocketConn` objects. The hub checks in the caller's
    task that what it is given has this shape and raises :class:`TypeError` otherwise.

    Every method is synchronous and must not block: the hub calls them from its own task
    while delivering to many members, and one member must never hold up the others
    (the design topic, "The hub never waits on one client").
    """

    @property
    def id(self) -> str:
        """A string that identifies this member among all members of one hub."""
        ...

    @property
    def _hub_encode_key(self) -> Hashable | None:
        """Which members can share the bytes of one broadcast frame.

        Members with equal keys that are not ``None`` produce identical bytes for a
        message, so the hub encodes once per key: :data:`PLAIN` for plain connections,
        one key per set of permessage-deflate parameters for connections that compress
        without context takeover on our side (RFC 7692 section 7.1.1.1). ``None`` means
        this member keeps state between messages (a compression context, client-side
        masking) and the hub calls :meth:`_hub_encode` for it alone. The hub reads the key
        once, when the member registers.
        """
        ...

    def _hub_encode(self, type: MessageType, data: str | bytes) -> bytes:
        """Return the frame bytes of one whole message for this member.

        Args:
            type: the message type.
            data: the payload: ``str`` for text, ``bytes`` (UTF-8 for text) otherwise.

        Returns:
            The frame, ready to be queued with :meth:`_hub_offer`.

        Raises:
            rue_trio.exceptions.ConnectionClosed: if the connection is closing; the hub
                then forgets the member.
        """
        ...

    def _hub_offer(self, frame: bytes) -> int:
        """Queue a frame for sending, or refuse it at once; :meth:`_hub_flush` sends it.

        Args:
            frame: the complete frame bytes; the hub may hand the same object to many
                members, so it must not be mutated.

        Returns:
            The bytes now queued for this member, this frame included.

        Raises:
            trio.WouldBlock: the member's bounded outbound queue (messages or bytes) is
                full: the hub applies its slow-consumer policy.
            trio.ClosedResourceError: the connection is closed; the hub forgets it.
            trio.BrokenResourceError: the connection is gone; the hub forgets it.
        """
        ...

    def _hub_flush(self) -> None:
        """Send what was offered: the hub has offered everything of its current batch.

        A frame offered to an empty queue may wait for this call (a connection does not
        wake its writer for each offer, so that a batch costs one write). The hub calls
        it once per batch of commands for each member whose queue one of its offers made
        non-empty (the offer returned the frame's own length). Must not raise for a
        closed or broken connection.
        """
        ...

    def close_nowait(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code`` and ``reason``.

        Non-blocking and idempotent: the connection closes in its own tasks. The hub
        uses 1008 (policy violation, RFC 6455 section 7.4.1) for a slow consumer and
        1001 (going away) when it shuts down.

        Args:
            code: the close code to send.
            reason: the close reason to send.
        """
        ...
