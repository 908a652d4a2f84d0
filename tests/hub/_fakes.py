"""A fake hub member: a bounded deque of frames instead of a WebSocket connection."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import trio

from rue_trio.exceptions import ConnectionClosed
from rue_trio.hub import PLAIN
from rue_trio.protocol import MessageType, encode_message


class FakeMember:
    """Implements rue_trio.hub.Member with a bounded queue and switches for failures."""

    def __init__(self, id: str, *, key: Hashable | None = PLAIN, capacity: int = 100_000) -> None:
        self.id = id
        self._hub_encode_key = key
        self.capacity = capacity
        self.frames: deque[bytes] = deque()
        self.encode_calls = 0
        self.evictions: list[tuple[int, str]] = []
        self.closing = False
        self.send_error: type[Exception] | None = None
        self.flushes = 0

    def _hub_encode(self, type: MessageType, data: str | bytes) -> bytes:
        if self.closing:
            raise ConnectionClosed(None, None)
        self.encode_calls += 1
        return encode_message(type, data)

    def _hub_offer(self, frame: bytes) -> int:
        if self.send_error is not None:
            raise self.send_error
        if len(self.frames) >= self.capacity:
            raise trio.WouldBlock
        self.frames.append(frame)
        return sum(map(len, self.frames))

    def _hub_flush(self) -> None:
        self.flushes += 1

    def close_nowait(self, code: int, reason: str) -> None:
        self.evictions.append((code, reason))

    def payloads(self) -> list[bytes]:
        """The payloads of the frames received (short unmasked frames only)."""
        out = []
        for frame in self.frames:
            assert frame[1] < 126, "payloads() reads short frames only"
            out.append(frame[2:])
        return out
