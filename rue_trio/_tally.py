"""Process-wide WebSocket accounting, read by :mod:`rue_trio.metrics` when scraped.

The handler records each handshake's status, each connection's open and close; the
counters of a connection are read from its own :meth:`statistics` only when it closes
(added to the totals of closed connections) or when metrics are scraped (summed over
the open ones), so nothing is counted per message here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rue_trio.websocket import WebSocketConn

__all__ = ["TALLY", "Tally", "Traffic"]


@dataclass(slots=True)
class Traffic:
    """Messages and bytes, both ways."""

    messages_received: int = 0
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0

    def add(self, conn: WebSocketConn) -> None:
        stats = conn.statistics()
        self.messages_received += stats.messages_received
        self.messages_sent += stats.messages_sent
        self.bytes_received += stats.bytes_received
        self.bytes_sent += stats.bytes_sent


class Tally:
    """Handshakes by status, open connections, closes by code, and traffic."""

    __slots__ = ("_closed_traffic", "closes", "handshakes", "open")

    def __init__(self) -> None:
        self.open: set[WebSocketConn] = set()
        self.handshakes: Counter[int] = Counter()
        self.closes: Counter[int] = Counter()
        self._closed_traffic = Traffic()

    def opened(self, conn: WebSocketConn) -> None:
        self.open.add(conn)

    def closed(self, conn: WebSocketConn) -> None:
        if conn in self.open:
            self.open.discard(conn)
            self._closed_traffic.add(conn)
            self.closes[conn.close_code or 1006] += 1

    def traffic(self) -> Traffic:
        """The traffic of every connection so far, open and closed."""
        closed = self._closed_traffic
        total = Traffic(
            closed.messages_received,
            closed.messages_sent,
            closed.bytes_received,
            closed.bytes_sent,
        )
        for conn in self.open:
            total.add(conn)
        return total


#: The one tally of this process.
TALLY = Tally()
