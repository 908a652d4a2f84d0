"""Broadcast across processes (issue 5): one room over 2 workers + Redis vs one process.

Run from the repository root, with Redis at RUE_TRIO_REDIS_URL (default 127.0.0.1:6379)::

    python bench/cluster_bench.py                      # 100 subscribers, 2,000 messages
    python bench/cluster_bench.py --subscribers 200 --messages 5000

For each setup the script starts the server (this file, re-run with ``serve``), connects
the subscribers (spread evenly over the workers: each connection is greeted with its
worker's pid) and one publisher, sends the messages in bursts of 100 carrying their send
time, and reports deliveries per second and delivery latency (p50, p99, max). Setups:

* ``1 process``: ``app.run(workers=1)``, a hub without a backplane;
* ``1 process + redis``: the same with the Redis backplane (publishing to nobody else);
* ``2 processes + redis``: ``app.run(workers=2)``, the room spread over both.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import trio

import rue_trio
from rue_trio import Context, Hub, MessageType, WebSocketConn, WebSocketHandler
from rue_trio.client import open_websocket

REDIS_URL = os.environ.get("RUE_TRIO_REDIS_URL", "redis://127.0.0.1:6379")


def build_app(namespace: str | None) -> rue_trio.App:
    app = rue_trio.App()
    if namespace is None:
        hub = Hub()
    else:
        from rue_trio.backplane import RedisBackplane

        hub = Hub(backplane=RedisBackplane(REDIS_URL, namespace=namespace))
    app.add_background(hub.run)

    @app.get("/ws/:room")
    async def ws(c: Context) -> None:
        room = c.param("room")

        async def on_connect(conn: WebSocketConn) -> None:
            await hub.join(room, conn)
            await conn.send(MessageType.TEXT, f"worker {os.getpid()}")

        async def on_message(conn: WebSocketConn, t: MessageType, data: str | bytes) -> None:
            await hub.broadcast(t, data, room=room, exclude=conn)

        await WebSocketHandler(
            hub=hub, on_connect=on_connect, on_message=on_message, compression=False
        ).handle(c)

    return app


async def subscriber(url: str, expected: int, latencies: list[float], *, task_status) -> None:  # type: ignore[no-untyped-def]
    async with open_websocket(url, compression=False) as conn:
        hello = (await conn.receive()).data
        task_status.started(hello)
        for _ in range(expected):
            data = (await conn.receive()).data
            latencies.append(time.perf_counter() - float(data[:20]))


async def measure(url: str, workers: int, subscribers: int, messages: int) -> dict[str, float]:
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        per_worker: dict[str, int] = {}
        while sum(per_worker.values()) < subscribers:
            hello = await nursery.start(subscriber, url, messages, latencies)
            per_worker[hello] = per_worker.get(hello, 0) + 1
        assert len(per_worker) == workers, per_worker
        async with open_websocket(url, compression=False) as publisher:
            await publisher.receive()
            start = time.perf_counter()
            for burst in range(0, messages, 100):
                for _ in range(burst, min(burst + 100, messages)):
                    await publisher.send(
                        MessageType.TEXT, f"{time.perf_counter():20.6f}" + "x" * 100
                    )
                await trio.sleep(0.005)
            with trio.fail_after(60):
                while len(latencies) < subscribers * messages:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "deliveries/s": len(latencies) / elapsed,
        "p50 ms": latencies[len(latencies) // 2] * 1e3,
        "p99 ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "max ms": latencies[-1] * 1e3,
        "spread": statistics.pstdev(per_worker.values()),
    }


def run_setup(label: str, workers: int, redis: bool, args: argparse.Namespace) -> None:
    env = dict(os.environ)
    command = [sys.executable, __file__, "serve", str(workers)]
    if redis:
        command.append(f"bench-{uuid.uuid4().hex[:8]}")
    server = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    try:
        assert server.stderr is not None
        log = b""
        while len(re.findall(rb"listening on http://127.0.0.1:(\d+)", log)) < workers:
            line = server.stderr.readline()
            assert line, log
            log += line
        port = int(re.findall(rb"listening on http://127.0.0.1:(\d+)", log)[0])
        result = trio.run(
            measure, f"ws://127.0.0.1:{port}/ws/room", workers, args.subscribers, args.messages
        )
        print(
            f"{label:24} {result['deliveries/s']:>12,.0f} {result['p50 ms']:>8.2f} "
            f"{result['p99 ms']:>8.2f} {result['max ms']:>8.2f}"
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        namespace = sys.argv[3] if len(sys.argv) > 3 else None
        build_app(namespace).run("127.0.0.1:0", workers=int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    print(f"{args.subscribers} subscribers in one room, {args.messages} messages of 120 B")
    print(f"{'setup':24} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    run_setup("1 process", 1, False, args)
    run_setup("1 process + redis", 1, True, args)
    run_setup("2 processes + redis", 2, True, args)


if __name__ == "__main__":
    main()
