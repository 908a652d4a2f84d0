"""The hub's private port on a connection (``rue_trio.hub``'s Member protocol).

:class:`_ConnectionHubPort` gives the hub a key that says which connections can share a
broadcast frame, an encoding of one message for this connection alone, and non-blocking
calls to queue frames and to write them once per batch. See
:mod:`rue_trio.websocket._connection` for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Hashable

import trio

from rue_trio.protocol import MessageType, Role, encode_message

from ._tasks import _ConnectionTasks


class _ConnectionHubPort(_ConnectionTasks):
    """The hub's private view of a connection, beside its public ``id``.

    Private on purpose: encoding a frame without queueing it advances a compression
    context, so applications must never call these; they use ``send()``.
    """

    __slots__ = ()

    @property
    def _hub_encode_key(self) -> Hashable | None:
        """Which connections can share the bytes of one broadcast frame.

        :func:`~rue_trio.protocol.encode_message` for a server connection without
        compression (its frames are plain); the compressor's
        :attr:`~rue_trio.protocol.PerMessageDeflate.shared_key` when it compresses each
        message from a fresh state (RFC 7692 section 7.1.1.1); ``None`` when each frame is
        this connection's own: a client masks every frame, a compressor with context
        takeover depends on the messages before.
        """
        protocol = self._protocol
        if protocol.role is not Role.SERVER:
            return None
        deflate = protocol.deflate
        if deflate is None:
            return encode_message
        # min_size too: it decides which messages are compressed at all.
        return (*deflate.shared_key, deflate.min_size) if deflate.shareable else None

    def _hub_encode(self, type: MessageType, data: str | bytes) -> bytes:
        """Return this connection's frame for one message, without queueing it.

        Queue the result at once with :meth:`_hub_offer`. When this connection
        keeps a compression context and its outbound queue has no room, nothing is
        encoded (a frame that would be dropped must not advance the context) and ``b""``
        is returned, which :meth:`_hub_offer` refuses with
        :class:`trio.WouldBlock`.

        Args:
            type: :attr:`MessageType.TEXT` or :attr:`MessageType.BINARY`.
            data: as for :meth:`send`.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        protocol = self._protocol
        deflate = protocol.deflate
        out = self._out
        if (
            deflate is not None
            and not deflate.shareable
            and out._is_accepting()
            and not out._has_room()
        ):
            return b""
        return protocol.encode(type, data)

    def _hub_offer(self, frame: bytes) -> int:
        """Queue a complete frame valid on this connection, without waiting or waking.

        The writer is not woken: the hub calls :meth:`_hub_flush` once it has offered
        its batch.

        Args:
            frame: from :meth:`_hub_encode`, or a shared frame for this connection's
                :attr:`_hub_encode_key`; not copied.

        Returns:
            The bytes now queued on this connection, this frame included.

        Raises:
            trio.WouldBlock: the outbound queue is full (or :meth:`_hub_encode` found it full).
            trio.BrokenResourceError: the connection is closing or closed.
        """
        if not frame:
            raise trio.WouldBlock
        return self._out._offer_quietly(frame)

    def _hub_flush(self) -> None:
        """Write what the hub offered, once it has offered a batch: one write per batch.

        :meth:`_hub_offer` queues without waking the writer; the hub calls this once per
        member and batch of commands, after it has offered everything. When the writer
        was idle, the frames are written through by the hub's task (no writer woken); the
        rest goes to the writer. See :meth:`_flush`.
        """
        self._flush()
