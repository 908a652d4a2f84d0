"""Policy options of a WebSocket connection, and its statistics record."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionConfig", "ConnectionStatistics"]


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """How a :class:`~rue_trio.websocket.WebSocketConn` behaves: timeouts and buffer bounds.

    The maximum message size is not here: the protocol core enforces it (see
    :class:`rue_trio.protocol.Protocol`).

    Attributes:
        ping_interval: seconds between keepalive pings; ``None`` disables keepalive.
        ping_timeout: seconds to wait for the pong of a keepalive ping before failing the
            connection with 1011; ``None`` sends pings without waiting for pongs. Time
            during which this side is the slow one (its inbound buffer is full, so it is
            not reading) does not count.
        close_timeout: seconds to wait for the closing handshake and the end of the TCP
            connection before aborting the transport.
        inbound_queue: messages buffered for the application; when full, the reader stops
            reading the transport (TCP backpressure). A cap on per-message overhead, and
            the most messages the reader parses in one batch.
        inbound_queue_bytes: bytes of decoded messages buffered for the application (as
            Python holds them); the reader parses and decompresses input only while fewer
            are buffered, so one message may take the buffer past it.
        write_timeout: seconds a write to the transport may go without progress (no
            byte taken by a socket, no 64 KiB chunk taken by any other stream) before the
            connection is aborted (code 1006): a peer that does not read what we send is
            dropped after between this and a sixteenth more, whatever the application
            does; a slow peer that reads is not. ``None``: no bound (the keepalive's
            ping timeout still applies).
        outbound_queue_messages: frames queued for the writer before ``send`` waits; a
            cap on per-frame overhead only, the byte bound is the one that matters.
        outbound_queue_bytes: bytes queued for the writer before ``send`` waits (and
            before the hub counts this connection as a slow consumer).
        read_size: the most bytes read from the transport at once; except the rest of a
            large uncompressed frame's payload, which is read up to
            ``inbound_queue_bytes`` at once (it goes straight into the message being
            assembled, bounded by the maximum message size).
    """

    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 10.0
    # 64 rather than 16: a pipelined echo of 64-byte messages went from 7.3 to 4.9 us of
    # server CPU per message, 0.06 task steps per message instead of 0.20
    # (python bench/profile_server.py --scenario pipelined). Memory is bounded by
    # inbound_queue_bytes, not by this count.
    inbound_queue: int = 64
    inbound_queue_bytes: int = 256 * 1024
    outbound_queue_messages: int = 4096
    outbound_queue_bytes: int = 1024 * 1024
    read_size: int = 65536
    write_timeout: float | None = 30.0

    def __post_init__(self) -> None:
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive or None")
        if self.ping_timeout is not None and self.ping_timeout <= 0:
            raise ValueError("ping_timeout must be positive or None")
        if self.write_timeout is not None and self.write_timeout <= 0:
            raise ValueError("write_timeout must be positive or None")
        if self.close_timeout < 0:
            raise ValueError("close_timeout must not be negative")
        for name in (
            "inbound_queue",
            "inbound_queue_bytes",
            "outbound_queue_messages",
            "outbound_queue_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.read_size < 1:
            raise ValueError("read_size must be at least 1")


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of a connection's counters.

    Attributes:
        messages_received: data messages received from the peer.
        messages_sent: data messages queued with ``send`` and friends (not broadcast
            frames offered directly to the outbound queue).
        bytes_received: bytes read from the transport.
        bytes_sent: bytes written to the transport.
        inbound_messages: messages received and not yet taken by the application.
        inbound_bytes: what those messages take in memory, in bytes.
        queued_frames: frames waiting for the writer.
        queued_bytes: bytes waiting for the writer.
        pings_sent: pings sent, keepalive and user pings alike.
        last_ping_rtt: the round-trip time of the last answered ping, in seconds, or
            ``None`` before the first pong.
    """

    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int
    inbound_messages: int
    inbound_bytes: int
    queued_frames: int
    queued_bytes: int
    pings_sent: int
    last_ping_rtt: float | None
