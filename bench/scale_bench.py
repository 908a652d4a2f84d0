"""10,000 members: how long one broadcast takes to reach all, and what the collector does.

Usage (from the repository root; about a minute per server and collector mode)::

    python bench/scale_bench.py                                  # rue_trio and aiohttp
    python bench/scale_bench.py --members 10000 --broadcasts 20 --gc default,freeze,off
    python bench/scale_bench.py --servers rue_trio --gc default --members 2000 --broadcasts 5
    python bench/scale_bench.py --json out.json

For each server (bench/servers.py's broadcast servers: rue_trio's Hub, aiohttp's set of
responses) and each collector mode, a fresh server process on 127.0.0.1 takes ``--members``
idle WebSocket clients, held by ``--sub-procs`` client processes (bench/driver.py's
subscribers: asyncio, raw sockets), and one publisher. Once every member is registered (the
driver's sync), the publisher sends ``--broadcasts`` messages of 128 bytes, one at a time:
each one is timed from its write to its arrival at the last member, then the next one
follows after ``--pause`` seconds.

Collector modes, in the **server** process:

* ``default``: as each library ships: Python's collector as it is for aiohttp; for
  rue_trio, what ``App.serve`` sets by default (``App(tune_gc=True)``: a young threshold
  of 100,000 and ``gc.freeze()`` at start-up and after accept bursts);
* ``untuned``: ``App(tune_gc=False)``: the collector as Python ships it (rue_trio only;
  aiohttp's ``default`` is the same);
* ``freeze``: ``gc.freeze()`` once every member is connected (the objects alive then are
  never scanned again; objects made afterwards still are);
* ``off``: ``gc.disable()`` from the start (nothing is collected: what a pause costs);
* ``tuned``: ``gc.freeze()`` once every member is connected, and the youngest generation's
  threshold raised from 700 to 100,000 allocations (``gc.set_threshold(100_000)``), so that
  what one broadcast makes live at once dies young instead of being promoted.

The server process counts its collections with ``gc.callbacks`` (by generation, with the
time each one took), so each broadcast is reported beside the full (generation 2)
collections that ran while it was delivered. The clients run with their own collector off,
so that their pauses do not count against a server.

Reported per server and mode: median, 90th percentile and maximum time to reach every
member, max/median, full collections during the broadcasts (and their longest pause),
the server's CPU time per broadcast, its RSS. Times are wall-clock on a machine shared with
the clients (and whatever else runs): compare rows of one run, and read the gc counts,
which do not depend on the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SELF = Path(__file__).resolve()
sys.path.insert(0, str(HERE))

SERVERS = ["rue_trio", "aiohttp"]
MODES = ["default", "untuned", "freeze", "off", "tuned"]
# "tuned": gc.freeze() once connected, and a first-generation threshold large enough that
# the objects a broadcast makes live at once die young instead of reaching the old generation.
TUNED_THRESHOLD = 100_000


# ---------------------------------------------------------------------------------------
# The server process: bench/servers.py's broadcast server, its collector watched.


class GcWatch:
    """Counts this process's collections and times them (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.ms = [0.0, 0.0, 0.0]
        self.max_ms = [0.0, 0.0, 0.0]
        self._t0 = 0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
            return
        gen = info["generation"]
        ms = (time.perf_counter_ns() - self._t0) / 1e6
        self.count[gen] += 1
        self.ms[gen] += ms
        self.max_ms[gen] = max(self.max_ms[gen], ms)

    def snapshot(self) -> dict[str, Any]:
        return {"count": list(self.count), "ms": list(self.ms), "max_ms": list(self.max_ms)}


def control(watch: GcWatch) -> None:
    """Answer the orchestrator's commands on stdin (a thread beside the event loop)."""
    for line in sys.stdin:
        cmd = line.strip()
        if cmd in ("freeze", "tuned"):
            gc.freeze()
            if cmd == "tuned":
                gc.set_threshold(TUNED_THRESHOLD, *gc.get_threshold()[1:])
            reply: dict[str, Any] = {"frozen": gc.get_freeze_count()}
        elif cmd == "reset-max":
            watch.max_ms = [0.0, 0.0, 0.0]
            reply = watch.snapshot()
        elif cmd == "stats":
            reply = watch.snapshot()
        elif cmd == "objects":  # slow with many objects: only between measurements
            reply = {"tracked": len(gc.get_objects())}
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    os._exit(0)  # stdin closed: the orchestrator is gone


def serve(args: argparse.Namespace) -> None:
    import servers

    servers.raise_nofile_limit()
    if args.gc == "off":
        gc.disable()
    watch = GcWatch()
    threading.Thread(target=control, args=(watch,), daemon=True).start()
    ns = argparse.Namespace(
        mode="bcast",
        compression=False,
        port=0,
        lifetime=args.lifetime,
        no_tune_gc=args.gc != "default",
    )
    if args.serve in servers.TRIO_SERVERS:
        import trio

        async def bounded() -> None:
            with trio.move_on_after(args.lifetime):
                await servers.TRIO_SERVERS[args.serve](ns)

        trio.run(bounded)
    else:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(servers.ASYNCIO_SERVERS[args.serve](ns))


# ---------------------------------------------------------------------------------------
# A client process: bench/driver.py's subscriber worker, with its collector off.


def subscriber() -> None:
    """Run as bench/driver.py's subscriber process (same flags), the collector off."""
    import driver

    gc.disable()
    driver.main()


# ---------------------------------------------------------------------------------------
# The orchestrator.


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0

    @classmethod
    async def start(cls, name: str, mode: str, lifetime: float) -> ServerProcess:
        cmd = [sys.executable, str(SELF), "--serve", name, "--gc", mode]
        cmd += ["--lifetime", str(lifetime)]
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        self = cls(proc)
        line = await self._line(30)
        if not line.startswith("PORT "):
            raise RuntimeError(f"server said {line!r}")
        self.port = int(line.split()[1])
        return self

    async def _line(self, limit: float) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), limit)
        if not line:
            raise RuntimeError("the server process ended")
        return line.decode().strip()

    async def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        return dict(json.loads(await self._line(60)))

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def run_one(name: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import driver

    # The driver's subscriber processes are this script re-executed (collector off there).
    driver.SELF = SELF
    limit = args.phase_timeout
    server = await ServerProcess.start(name, mode, args.lifetime)
    subs = driver.Subscribers()
    try:
        pub = driver.Publisher(await driver.connect("ws", server.port, "/bcast", None))
        t0 = time.monotonic()
        ready = await subs.start("ws", server.port, args.members, args.sub_procs, None, limit)
        if ready["failed"]:
            raise RuntimeError(f"{ready['failed']} members could not connect")
        await driver.sync(pub, subs, ready["ready"], limit)
        connect_s = time.monotonic() - t0
        gc_connect = await server.ask("stats")
        if mode in ("freeze", "tuned"):
            await server.ask(mode)
        n = ready["ready"]
        times: list[float] = []
        full: list[int] = []
        collections: list[list[int]] = []
        before = await server.ask("reset-max")
        cpu0 = server.cpu()
        for i in range(args.broadcasts):
            g0 = await server.ask("stats")
            t_send = pub.send(1)
            replies = await subs.wait(i + 1, limit)
            if sum(r["total"] for r in replies) < n * (i + 1):
                raise RuntimeError("a broadcast did not reach every member")
            times.append((max(r["last_ns"] for r in replies) - t_send) / 1e6)
            g1 = await server.ask("stats")
            full.append(g1["count"][2] - g0["count"][2])
            collections.append([b - a for a, b in zip(g0["count"], g1["count"], strict=True)])
            await asyncio.sleep(args.pause)
        cpu = server.cpu() - cpu0
        after = await server.ask("stats")
        rss = server.rss()
        tracked = (await server.ask("objects"))["tracked"]
        pub.client.transport.abort()
    finally:
        await subs.stop()
        await server.stop()
    median = statistics.median(times)
    return {
        "server": name,
        "gc": mode,
        "members": n,
        "connect_s": connect_s,
        "rss_MiB": rss / 2**20,
        "times_ms": times,
        "median_ms": median,
        "p90_ms": p90(times),
        "max_ms": max(times),
        "max_over_median": max(times) / median,
        "full_gc_during_broadcasts": after["count"][2] - before["count"][2],
        "full_gc_per_broadcast": full,
        "collections_per_broadcast_by_generation": collections,
        "young_collections_per_broadcast": statistics.mean(c[0] for c in collections),
        "full_gc_ms_during_broadcasts": after["ms"][2] - before["ms"][2],
        "full_gc_max_ms": after["max_ms"][2],
        "full_gc_while_connecting": gc_connect["count"][2],
        "gc_counts_total": after["count"],
        "tracked_objects": tracked,
        "server_cpu_ms_per_broadcast": cpu / args.broadcasts * 1e3,
    }


def p90(times: list[float]) -> float:
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=10, method="inclusive")[-1]


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| server | gc | members | median ms | p90 ms | max ms | max/median "
        "| full gc in run (max pause ms) | full gc while connecting | server CPU ms/bcast "
        "| gen-0 collections/bcast | RSS MiB | gc-tracked objects |"
    )
    out = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['server']} | {r['gc']} | error: {r['error']} |||||||")
            continue
        out.append(
            f"| {r['server']} | {r['gc']} | {r['members']:,} | {r['median_ms']:.0f} "
            f"| {r['p90_ms']:.0f} | {r['max_ms']:.0f} | {r['max_over_median']:.2f} "
            f"| {r['full_gc_during_broadcasts']} ({r['full_gc_max_ms']:.0f}) "
            f"| {r['full_gc_while_connecting']} | {r['server_cpu_ms_per_broadcast']:.0f} "
            f"| {r['young_collections_per_broadcast']:.0f} "
            f"| {r['rss_MiB']:.0f} | {r['tracked_objects']:,} |"
        )
    return "\n".join(out)


async def orchestrate(args: argparse.Namespace) -> list[dict[str, Any]]:
    import driver

    driver.raise_nofile_limit()
    rows = []
    for mode in args.gc.split(","):
        for name in args.servers.split(","):
            if name == "aiohttp" and mode == "untuned":
                continue  # the same as its default
            if name == "aiohttp" and mode != "default" and not args.aiohttp_all_modes:
                continue
            started = time.monotonic()
            try:
                row = await asyncio.wait_for(run_one(name, mode, args), args.run_timeout)
            except Exception as exc:  # one failed cell does not lose the others
                row = {"server": name, "gc": mode, "error": repr(exc)[:200]}
            print(
                f"[{time.monotonic() - started:5.1f}s] {name} gc={mode}: "
                + (
                    row.get("error")
                    or f"median {row['median_ms']:.0f} ms, max {row['max_ms']:.0f} ms, "
                    f"full gc {row['full_gc_per_broadcast']}"
                ),
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--gc", default=",".join(MODES), help="collector modes, comma-separated")
    parser.add_argument(
        "--aiohttp-all-modes", action="store_true", help="aiohttp in every mode, not only default"
    )
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--broadcasts", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.2, help="between broadcasts, s")
    parser.add_argument("--sub-procs", type=int, default=2, help="client processes")
    parser.add_argument("--phase-timeout", type=float, default=120.0)
    parser.add_argument("--run-timeout", type=float, default=600.0, help="bound of one row, s")
    parser.add_argument("--lifetime", type=float, default=900.0, help="servers stop after, s")
    parser.add_argument("--json", help="also write the results to this file")
    # Internal: this script re-executed as a server (or, above, as a client process).
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    if "--subscriber-worker" in sys.argv:
        subscriber()
        return
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    for mode in args.gc.split(","):
        if mode not in MODES:
            parser.error(f"unknown collector mode {mode!r}")
    rows = asyncio.run(orchestrate(args))
    print(f"\n{args.members:,} members, {args.broadcasts} broadcasts of 128 B, one at a time\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
