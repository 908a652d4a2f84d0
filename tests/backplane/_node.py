"""A hub node in its own process, for the presence expiry test (killed with SIGKILL).

Usage: ``python -m tests.backplane._node URL NAMESPACE COUNT``; prints ``ready`` once its
COUNT members are registered (and in room ``r``) and their presence is written.
"""

from __future__ import annotations

import sys

import trio

from rue_trio.backplane import RedisBackplane
from rue_trio.hub import Hub
from tests.hub._fakes import FakeMember


async def main(url: str, namespace: str, count: int) -> None:
    backplane = RedisBackplane(url, namespace=namespace, presence_ttl=1.0, heartbeat_interval=0.2)
    hub = Hub(backplane=backplane)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for index in range(count):
            await hub.join("r", FakeMember(f"remote-{index}"))
        # One heartbeat period: the presence writer has run by then.
        await trio.sleep(0.5)
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
