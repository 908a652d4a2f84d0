"""Rooms with memory (issue 11): what history costs, how fast recovery is, Redis Streams.

Run from the repository root::

    python bench/history_bench.py delivery   # CPU per delivery, without and with history
    python bench/history_bench.py recover    # time to recover 100 missed messages
    python bench/history_bench.py redis      # publish rate: pub/sub against Streams

* ``delivery``: ``--messages`` broadcasts of ``--size`` bytes to one room of ``--members``
  fake members (as in hub_bench.py), CPU microseconds per delivery, best of ``--repeat``:
  a hub without history, with ``HistoryConfig(size=100)``, and with history plus the live
  protocol's framing (each message wrapped in its JSON ``message`` op).
* ``recover``: a room with 1,000 messages; a member joins from the position 100 messages
  back. ``hub.join``: the hub's join, replay included (fake member); ``live protocol``:
  a client of ``LiveHandler`` over memory streams sends ``subscribe`` with ``since`` until
  it has read the ``subscribed`` answer and the 100 messages. Median and best of
  ``--repeat``, wall clock.
* ``redis``: ``--messages`` broadcasts to a room with a member, until Redis took them all:
  through ``RedisBackplane`` (PUBLISH, pipelined) and through ``RedisStreams`` (one Lua
  script per message, pipelined: HINCRBY, XADD MAXLEN, PUBLISH). Messages per second,
  best of ``--repeat``. Redis at RUE_TRIO_REDIS_URL (default 127.0.0.1:6379); the
  keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import uuid
from typing import Any

import _checkout  # noqa: F401 (first: this checkout's rue_trio)
import trio
from hub_bench import DequeMember

import rue_trio
from rue_trio import Context, HistoryConfig, LiveHandler, StreamPosition
from rue_trio.hub import Hub
from rue_trio.live._wire import LiveFraming
from rue_trio.protocol import MessageType
from rue_trio.testing import open_test_app

REDIS_URL = os.environ.get("RUE_TRIO_REDIS_URL", "redis://127.0.0.1:6379")


# ------------------------------------------------------------------ delivery


class Tab(DequeMember):
    """A fake member that is one tab of one user: a single join notice for all of them."""

    __slots__ = ("user",)

    def __init__(self, id: str, limit: int) -> None:
        super().__init__(id, limit)
        self.user = "everyone"


async def delivery_run(variant: str, members: int, messages: int, payload: str) -> float:
    options: dict[str, Any] = {}
    if variant != "no history":
        options["history"] = HistoryConfig(size=100)
    if variant == "history + framing":
        options["framing"] = LiveFraming()
    hub = Hub(**options)
    fakes = [Tab(f"m{i}", messages + 4) for i in range(members)]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for fake in fakes:
            await hub.join("room", fake)
        for fake in fakes:
            fake.frames.clear()
        gc.collect()
        start = time.process_time()
        for _ in range(messages):
            await hub.broadcast(MessageType.TEXT, payload, room="room")
        await hub.flush()
        elapsed = time.process_time() - start
        assert all(len(fake.frames) == messages for fake in fakes)
        nursery.cancel_scope.cancel()
    return elapsed


def delivery(args: argparse.Namespace) -> None:
    payload = '"' + "x" * (args.size - 2) + '"'  # a JSON string: the live framing wraps it
    print(f"{args.messages} broadcasts of {args.size} bytes to one room; best of {args.repeat}")
    print(f"{'members':>8} {'variant':>18} {'us/delivery':>12} {'us/broadcast':>13}")
    for members in args.members:
        for variant in ("no history", "history", "history + framing"):
            best = min(
                trio.run(delivery_run, variant, members, args.messages, payload)
                for _ in range(args.repeat)
            )
            per_delivery = best / (members * args.messages) * 1e6
            per_broadcast = best / args.messages * 1e6
            print(f"{members:>8} {variant:>18} {per_delivery:>12.3f} {per_broadcast:>13.1f}")


# ------------------------------------------------------------------ recovery


async def recover_hub(missed: int) -> float:
    hub = Hub(history=HistoryConfig(size=1000))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for index in range(1000):
            await hub.broadcast(MessageType.TEXT, f'{{"n":{index}}}', room="room")
        await hub.flush()
        latest = await hub.history("room", limit=0)
        since = StreamPosition(latest.epoch, latest.offset - missed)
        member = DequeMember("back", missed + 4)
        start = time.perf_counter()
        page = await hub.join("room", member, since=since)
        elapsed = time.perf_counter() - start
        assert page.recovered and len(member.frames) == missed
        nursery.cancel_scope.cancel()
    return elapsed


async def recover_live(missed: int) -> float:
    live = LiveHandler(history=HistoryConfig(size=1000))
    app = rue_trio.default()
    app.add_background(live.run)

    @app.get("/live")
    async def ws(c: Context) -> None:
        await live.handle(c)

    async with open_test_app(app) as client:
        for index in range(1000):
            await live.publish("room", {"n": index})
        await live.hub.flush()
        latest = await live.hub.history("room", limit=0)
        since = {"epoch": latest.epoch, "offset": latest.offset - missed}
        async with client.websocket("/live") as conn:
            start = time.perf_counter()
            await conn.send_json({"op": "subscribe", "room": "room", "since": since})
            answer = await conn.receive_json()
            assert answer["missed"] == missed, answer
            for _ in range(missed):
                await conn.receive_json()
            elapsed = time.perf_counter() - start
    return elapsed


def recover(args: argparse.Namespace) -> None:
    print(f"recover {args.missed} missed messages of 1,000; {args.repeat} runs, wall clock")
    print(f"{'path':>14} {'median ms':>10} {'best ms':>8}")
    for name, run in (("hub.join", recover_hub), ("live protocol", recover_live)):
        times = [trio.run(run, args.missed) for _ in range(args.repeat)]
        print(f"{name:>14} {statistics.median(times) * 1e3:>10.2f} {min(times) * 1e3:>8.2f}")


# ------------------------------------------------------------------ redis


async def redis_run(kind: str, messages: int, namespace: str) -> float:
    from rue_trio.backplane import RedisBackplane, RedisStreams

    if kind == "pub/sub":
        backplane = RedisBackplane(REDIS_URL, namespace=namespace)
        hub = Hub(backplane=backplane)
    else:
        stream = RedisStreams(REDIS_URL, namespace=namespace, outbound_size=messages + 1)
        hub = Hub(history=HistoryConfig(size=1000), history_stream=stream)
    member = DequeMember("m", messages + 4)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.join("room", member)
        start = time.perf_counter()
        for index in range(messages):
            await hub.broadcast(MessageType.TEXT, f'{{"n":{index}}}', room="room")
        while True:
            if kind == "pub/sub":
                stats = hub.statistics().backplane
                assert stats is not None
                done = stats.published >= messages
            else:
                done = stream.numbered >= messages
            if done:
                break
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed


async def delete_keys(namespace: str) -> None:
    import coredis

    client = coredis.Redis.from_url(REDIS_URL)
    async with client:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(keys)


def redis(args: argparse.Namespace) -> None:
    print(f"{args.messages} broadcasts to one room until Redis took them; best of {args.repeat}")
    print(f"{'backend':>8} {'msg/s':>10} {'us/msg':>8}")
    for kind in ("pub/sub", "streams"):
        times = []
        for _ in range(args.repeat):
            namespace = f"bench-{uuid.uuid4().hex[:12]}"
            try:
                times.append(trio.run(redis_run, kind, args.messages, namespace))
            finally:
                trio.run(delete_keys, namespace)
        best = min(times)
        print(f"{kind:>8} {args.messages / best:>10.0f} {best / args.messages * 1e6:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("delivery", "recover", "redis"))
    parser.add_argument("--members", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--missed", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    {"delivery": delivery, "recover": recover, "redis": redis}[args.what](args)


if __name__ == "__main__":
    main()
