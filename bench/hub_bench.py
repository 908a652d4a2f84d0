"""The hub's own cost per delivery: in-process, no sockets, fake members.

Broadcasts ``--messages`` messages of ``--size`` bytes to ``--members`` fake members
and reports microseconds per delivery (one frame offered to one member), best of
``--repeat`` runs, for:

- ``deque``: members whose ``send_nowait`` appends to a bounded deque: the hub's share;
- ``channel``: members backed by a Trio memory channel (``MemorySendChannel.send_nowait``),
  a heavier queue, to show what the member's own queue adds;
- ``loop``: a bare Python loop calling the deque members' ``send_nowait`` with no hub
  at all: the floor any hub pays.

Run: ``python bench/hub_bench.py`` (options: ``--members 1000 10000 --messages 200
--size 128 --repeat 5``).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import deque
from collections.abc import Hashable

import trio

from rue_trio.hub import PLAIN, Hub
from rue_trio.protocol import MessageType, encode_message


class DequeMember:
    __slots__ = ("_hub_encode_key", "frames", "id", "limit")

    def __init__(self, id: str, limit: int) -> None:
        self.id = id
        self._hub_encode_key: Hashable | None = PLAIN
        self.frames: deque[bytes] = deque()
        self.limit = limit

    def _hub_encode(self, type: MessageType, data: str | bytes) -> bytes:
        return encode_message(type, data)

    def _hub_offer(self, frame: bytes) -> int:
        frames = self.frames
        if len(frames) >= self.limit:
            raise trio.WouldBlock
        frames.append(frame)
        return len(frames) * len(frame)

    def _hub_flush(self) -> None:
        pass

    def close_nowait(self, code: int, reason: str) -> None:
        # 1001 when the hub shuts down at the end of a run; never a slow consumer here.
        assert code == 1001, (code, reason)


class ChannelMember:
    __slots__ = ("_hub_encode_key", "id", "queued", "receive", "send")

    def __init__(self, id: str, limit: int) -> None:
        self.id = id
        self._hub_encode_key: Hashable | None = PLAIN
        self.send, self.receive = trio.open_memory_channel[bytes](limit)
        self.queued = 0

    def _hub_offer(self, frame: bytes) -> int:
        self.send.send_nowait(frame)
        self.queued += len(frame)
        return self.queued

    def _hub_encode(self, type: MessageType, data: str | bytes) -> bytes:
        return encode_message(type, data)

    def _hub_flush(self) -> None:
        pass

    def close_nowait(self, code: int, reason: str) -> None:
        # 1001 when the hub shuts down at the end of a run; never a slow consumer here.
        assert code == 1001, (code, reason)


async def hub_run(kind: str, members: int, messages: int, payload: bytes) -> float:
    """Seconds of CPU the hub needs to deliver ``messages`` to ``members``."""
    member_class = DequeMember if kind == "deque" else ChannelMember
    fakes = [member_class(f"m{i}", messages + 1) for i in range(members)]
    hub = Hub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for fake in fakes:
            await hub.register(fake)
        gc.collect()
        start = time.process_time()
        for _ in range(messages):
            await hub.broadcast(MessageType.BINARY, payload)
        await hub.flush()
        elapsed = time.process_time() - start
        stats = hub.statistics()
        assert stats.deliveries == members * messages, stats
        assert stats.encodes == messages, stats
        nursery.cancel_scope.cancel()
    return elapsed


def loop_run(members: int, messages: int, payload: bytes) -> float:
    """The floor: a bare loop offering the frame to each member, no hub."""
    fakes = [DequeMember(f"m{i}", messages + 1) for i in range(members)]
    sends = [fake._hub_offer for fake in fakes]
    gc.collect()
    start = time.process_time()
    for _ in range(messages):
        frame = encode_message(MessageType.BINARY, payload)
        for send in sends:
            send(frame)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    payload = bytes(range(256)) * (args.size // 256) + bytes(range(args.size % 256))

    print(f"{args.messages} broadcasts of {args.size} bytes; best of {args.repeat}; CPU time")
    print(f"{'members':>8} {'kind':>8} {'us/delivery':>12} {'ms/total':>9}")
    for members in args.members:
        deliveries = members * args.messages
        for kind in ("deque", "channel", "loop"):
            best = min(
                loop_run(members, args.messages, payload)
                if kind == "loop"
                else trio.run(hub_run, kind, members, args.messages, payload)
                for _ in range(args.repeat)
            )
            print(f"{members:>8} {kind:>8} {best / deliveries * 1e6:>12.3f} {best * 1e3:>9.1f}")


if __name__ == "__main__":
    main()
