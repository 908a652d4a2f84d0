"""A hub with Redis Streams history in its own process: publishes, then waits.

Usage: ``python -m tests.backplane._streams_node URL NAMESPACE ROOM COUNT``; publishes
COUNT text messages ``"n0"``, ``"n1"``, ... to ROOM, prints ``done`` once Redis has
numbered them all, then waits to be killed.
"""

from __future__ import annotations

import sys

import trio

from rue_trio.backplane.streams import RedisStreams
from rue_trio.hub import HistoryConfig, Hub
from rue_trio.protocol import MessageType
from tests.hub._fakes import FakeMember


async def main(url: str, namespace: str, room: str, count: int) -> None:
    stream = RedisStreams(url, namespace=namespace)
    hub = Hub(history=HistoryConfig(size=100), history_stream=stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        member = FakeMember("remote")
        await hub.join(room, member)
        for index in range(count):
            await hub.broadcast(MessageType.TEXT, f"n{index}", room=room)
        while len(member.frames) < count:  # noqa: ASYNC110 (its own messages come back)
            await trio.sleep(0.01)
        print("done", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
