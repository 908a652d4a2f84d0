"""Where a rue_trio server's time goes per operation: task steps, call counts, cProfile.

Usage (from the repository root; each run takes seconds to a minute)::

    python bench/profile_server.py --scenario pingpong          # 64 B round trips
    python bench/profile_server.py --scenario conns100          # 100 connections ping-pong
    python bench/profile_server.py --scenario mib               # 1 MiB echo
    python bench/profile_server.py --scenario handshake         # open + close
    python bench/profile_server.py --scenario abort             # open, then a TCP reset
    python bench/profile_server.py --scenario broadcast         # hub to 1,000, one at a time
    python bench/profile_server.py --scenario pingpong --server plain-trio   # the floor
    python bench/profile_server.py --scenario handshake --server plain-trio  # TCP open, close
    python bench/profile_server.py --scenario all --top 15 --json out.json

The server runs in this process on 127.0.0.1 (bench/servers.py's rue_trio echo server:
keepalive off, as in bench/driver.py; ``--keepalive`` keeps rue_trio's default); the load
comes from a child process running bench/driver.py's client (bench/_loadgen.py). After a
warm-up that is not measured, two phases of ``--count`` operations each:

1. **Steps.** A Trio instrument counts, per operation: task steps (each time a task runs
   until its next yield, by task name), reschedules (a task made runnable: a wakeup or a
   checkpoint), scheduler passes (waits for I/O, one per batch of runnable tasks) and tasks
   spawned. The server's own CPU time per operation (``time.process_time``, this process
   only) is measured over the same phase. Counts are deterministic; CPU time is not (it
   moves with the machine's load).
2. **Profile.** cProfile over the second phase: time by component (h11, routing and the
   upgrade, the protocol core, the connection's tasks, the Trio scheduler, socket system
   calls, ...) as a share of the profiled time, then the top functions by own time with
   their **calls per operation** (deterministic) and microseconds per operation (inflated by
   the profiler's own cost: read the shares, not the absolute figures). cProfile counts
   each resumption of a coroutine as a call: a coroutine that waits once is two calls.
   Time blocked in ``epoll.poll`` waiting for the client is left out of the total and
   shown apart.
3. **Cycles and census.** A third phase with the collector off, then one collection with
   ``gc.DEBUG_SAVEALL``: the objects per operation that only the cycle collector frees (by
   type; zero means reference counting frees everything an operation leaves). For a
   broadcast, also the objects alive when half of the members' writer tasks have run in
   the batch that delivers one message, per writer: what a young collection at that moment
   would find alive and promote.

The young (generation 0) collections per operation come from ``gc.get_stats()`` over
phase 1. ``--no-gc`` turns the collector off during the phases: its pauses are otherwise
charged to whatever function allocated when it ran.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import pstats
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))  # then _loadgen adds the checkout
import _loadgen

PROFILED = ["pingpong", "pipelined", "conns100", "mib", "handshake", "abort", "broadcast"]

# Components, first match wins, on the function's file path (or a built-in's name).
COMPONENTS = [
    ("h11 (HTTP parsing and writing)", ("/h11/",)),
    ("rue_trio http/ (request, router, 101)", ("rue_trio/http/",)),
    (
        "rue_trio app, server, handlers",
        ("rue_trio/app/", "rue_trio/server.py", "rue_trio/handlers.py"),
    ),
    ("rue_trio protocol/ (frames, handshake)", ("rue_trio/protocol/",)),
    ("rue_trio websocket/ (conn, queue, tasks)", ("rue_trio/websocket/",)),
    ("rue_trio other", ("rue_trio/",)),
    ("trio scheduler and cancel scopes", ("trio/_core/",)),
    ("trio streams and sockets", ("trio/",)),
    ("socket system calls", ("_socket.socket", "socket.py")),
    (
        "handshake crypto (sha1, base64, urandom)",
        ("_hashlib", "base64", "posix.urandom", "binascii"),
    ),
    ("bench server code", ("bench/",)),
    ("outcome, sniffio, attrs", ("outcome", "sniffio", "attr/")),
]
EPOLL = "<method 'poll' of 'select.epoll' objects>"


class StepCounter(trio.abc.Instrument):
    """Counts the scheduler's work while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.steps: Counter[str] = Counter()
        self.spawned: Counter[str] = Counter()
        self.scheduled = 0
        self.io_waits = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.active:
            self.steps[task.name] += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if self.active:
            self.spawned[task.name] += 1

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if self.active:
            self.scheduled += 1

    def before_io_wait(self, timeout: float) -> None:
        if self.active:
            self.io_waits += 1


class YoungCensus(trio.abc.Instrument):
    """Which objects are alive midway through a batch of one task kind (collector off).

    Once, when ``at`` tasks whose name starts with ``prefix`` have run in one scheduler
    batch, counts the young generation's objects by type: with the collector off since the
    phase began, that is every object made since and still alive: what a young collection
    at that moment would promote.
    """

    def __init__(self, prefix: str, at: int) -> None:
        self.prefix = prefix
        self.at = at
        self.in_batch = 0
        self.taken = 0
        self.census: Counter[str] = Counter()

    def after_io_wait(self, timeout: float) -> None:
        self.in_batch = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.taken or not task.name.startswith(self.prefix):
            return
        self.in_batch += 1
        if self.in_batch == self.at:
            self.taken = self.at
            self.census.update(type(o).__qualname__ for o in gc.get_objects(generation=0))


def short_task(name: str) -> str:
    """A task name without the module path of its function (``rue_trio...Server._run`` ->
    ``Server._run``)."""
    if " " in name:
        return name
    parts = name.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else name


def component(path: str, func: str) -> str:
    where = path if path != "~" else func
    for label, needles in COMPONENTS:
        if any(n in where for n in needles):
            return label
    return "other (stdlib, builtins)"


def where(path: str, line: int, func: str) -> str:
    if path == "~":
        return func
    for root in ("site-packages/", "rue_trio/", "bench/"):
        i = path.rfind(root)
        if i >= 0:
            path = path[i + len(root) if root == "site-packages/" else i :]
            break
    else:
        path = "/".join(Path(path).parts[-2:])
    return f"{path}:{line}({func})"


def analyse(
    profile: cProfile.Profile, ops: int, top: int, callers_of: list[str]
) -> dict[str, Any]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    epoll = 0.0
    for (path, line, func), (_cc, ncalls, tottime, _ct, _callers) in stats.items():
        if func == EPOLL:
            epoll += tottime
            continue
        rows.append((tottime, ncalls, path, line, func))
    total = sum(r[0] for r in rows) or 1e-12
    by_comp: Counter[str] = Counter()
    calls_comp: Counter[str] = Counter()
    for tottime, ncalls, path, _line, func in rows:
        label = component(path, func)
        by_comp[label] += tottime
        calls_comp[label] += ncalls
    rows.sort(reverse=True)
    callers = {}
    for (path, line, func), (_cc, _n, _tt, _ct, by_caller) in stats.items():
        name = where(path, line, func)
        if any(pattern in name for pattern in callers_of):
            callers[name] = {
                where(*caller): counts[1] / ops
                for caller, counts in sorted(by_caller.items(), key=lambda kv: -kv[1][1])
            }
    return {
        "callers": callers,
        "profiled_us_per_op": total / ops * 1e6,
        "epoll_wait_us_per_op": epoll / ops * 1e6,
        "calls_per_op": sum(r[1] for r in rows) / ops,
        "components": [
            {
                "component": label,
                "share": t / total,
                "us_per_op": t / ops * 1e6,
                "calls_per_op": calls_comp[label] / ops,
            }
            for label, t in by_comp.most_common()
        ],
        "functions": [
            {
                "function": where(path, line, func),
                "share": t / total,
                "calls_per_op": n / ops,
                "us_per_op": t / ops * 1e6,
            }
            for t, n, path, line, func in rows[:top]
        ],
    }


async def run_scenario(args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    count = args.count or _loadgen.COUNTS[scenario]
    serve = _loadgen.build_server(args.server, args.keepalive, scenario == "broadcast")
    kind = "plain" if args.server == "plain-trio" else "ws"
    census = None
    if scenario == "broadcast":
        writer = "PlainHub.writer" if args.server == "plain-trio" else "rue_trio websocket writer"
        census = YoungCensus(writer, _loadgen.SUBSCRIBERS // 2)
    result: dict[str, Any] = {"scenario": scenario, "server": args.server, "count": count}
    try:
        async with trio.open_nursery() as nursery:
            port = _loadgen.port_of(await nursery.start(serve))
            with trio.fail_after(args.timeout):
                async with _loadgen.open_child(scenario, port, count, 3, kind) as child:
                    await child.expect("READY")
                    if args.no_gc:
                        gc.disable()
                    # Phase 1: the instrument and the CPU clock.
                    counter.active = True
                    young0 = gc.get_stats()[0]["collections"]
                    cpu0 = time.process_time()
                    usage0 = resource.getrusage(resource.RUSAGE_SELF)
                    await child.say("GO")
                    ops = int((await child.expect("DONE")).split()[1])
                    cpu = time.process_time() - cpu0
                    usage1 = resource.getrusage(resource.RUSAGE_SELF)
                    young = gc.get_stats()[0]["collections"] - young0
                    counter.active = False
                    trio.lowlevel.remove_instrument(counter)  # not in the profile
                    # Phase 2: cProfile.
                    clock = time.thread_time if args.timer == "cpu" else time.perf_counter
                    profile = cProfile.Profile(clock)
                    profile.enable()
                    await child.say("GO")
                    ops2 = int((await child.expect("DONE")).split()[1])
                    profile.disable()
                    gc.enable()
                    # Phase 3: the collector off, what only it could free; for a broadcast,
                    # the young objects alive midway through a fan-out batch.
                    gc.collect()
                    gc.disable()
                    if census is not None:
                        trio.lowlevel.add_instrument(census)
                    await child.say("GO")
                    ops3 = int((await child.expect("DONE")).split()[1])
                    if census is not None:
                        trio.lowlevel.remove_instrument(census)
                    await trio.sleep(0.5)  # the server's side of the last closes ends
                    gc.set_debug(gc.DEBUG_SAVEALL)
                    cycles = gc.collect()
                    garbage = Counter(type(o).__qualname__ for o in gc.garbage)
                    gc.garbage.clear()
                    gc.set_debug(0)
                    gc.enable()
            nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(KeyError):  # already removed after phase 1
            trio.lowlevel.remove_instrument(counter)
    result.update(
        ops=ops,
        unit=_loadgen.UNITS[scenario],
        cpu_us_per_op=cpu / ops * 1e6,
        sys_us_per_op=(usage1.ru_stime - usage0.ru_stime) / ops * 1e6,
        page_faults_per_op=(usage1.ru_minflt - usage0.ru_minflt) / ops,
        task_steps_per_op=sum(counter.steps.values()) / ops,
        reschedules_per_op=counter.scheduled / ops,
        io_waits_per_op=counter.io_waits / ops,
        tasks_spawned_per_op=sum(counter.spawned.values()) / ops,
        young_collections_per_op=young / ops,
        steps_by_task={short_task(k): v / ops for k, v in counter.steps.most_common()},
        spawned_by_task={short_task(k): v / ops for k, v in counter.spawned.most_common()},
        profile=analyse(profile, ops2, args.top, args.callers),
        cycle_objects_per_op=cycles / ops3,
        cycle_objects_by_type={k: v / ops3 for k, v in garbage.most_common(15)},
        census_at=census.taken if census else 0,
        census_per_task={k: v / census.taken for k, v in census.census.most_common(25)}
        if census and census.taken
        else {},
    )
    return result


def report(r: dict[str, Any]) -> str:
    p = r["profile"]
    out = [
        f"== {r['scenario']} on {r['server']}: {r['ops']} x {r['unit']} per phase",
        f"server CPU per {r['unit']}: {r['cpu_us_per_op']:.1f} us, of which system "
        f"{r['sys_us_per_op']:.1f} us (noisy: moves with load); "
        f"minor page faults {r['page_faults_per_op']:.1f}",
        f"task steps {r['task_steps_per_op']:.2f}, reschedules {r['reschedules_per_op']:.2f}, "
        f"scheduler passes {r['io_waits_per_op']:.2f}, "
        f"tasks spawned {r['tasks_spawned_per_op']:.2f} per {r['unit']}",
        "task steps per op by task: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["steps_by_task"].items() if v >= 0.005),
    ]
    out.append(
        f"young (generation 0) collections per op: {r['young_collections_per_op']:.4f} "
        f"(x {gc.get_threshold()[0]} = net new tracked objects per op, roughly)"
    )
    if r["spawned_by_task"]:
        out.append(
            "tasks spawned per op: "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["spawned_by_task"].items())
        )
    out += [
        f"cProfile: {p['calls_per_op']:.0f} function calls per op, "
        f"{p['profiled_us_per_op']:.1f} us per op under the profiler "
        f"(+ {p['epoll_wait_us_per_op']:.1f} us blocked in epoll, left out)",
        "",
        f"{'component':44} {'share':>6} {'calls/op':>9}",
    ]
    for c in p["components"]:
        out.append(f"{c['component']:44} {c['share']:6.1%} {c['calls_per_op']:9.1f}")
    out += ["", f"{'function (own time)':64} {'share':>6} {'calls/op':>9}"]
    for f in p["functions"]:
        out.append(f"{f['function'][:64]:64} {f['share']:6.1%} {f['calls_per_op']:9.2f}")
    out.append(
        f"objects only the cycle collector frees, per op: {r['cycle_objects_per_op']:.2f}"
        + "".join(f", {k} {v:.2f}" for k, v in r["cycle_objects_by_type"].items() if v >= 0.01)
    )
    if r["census_per_task"]:
        out += [
            "",
            f"objects alive after {r['census_at']} writers ran in one batch, per writer "
            "(what a young collection then would promote):",
        ]
        out += [f"  {v:7.2f}  {k}" for k, v in r["census_per_task"].items() if v >= 0.05]
    for name, by_caller in p["callers"].items():
        out += ["", f"calls per op of {name}, by caller:"]
        out += [f"  {n:8.2f}  {caller}" for caller, n in by_caller.items()]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*PROFILED, "all"], default="pingpong")
    parser.add_argument("--server", choices=["rue_trio", "plain-trio"], default="rue_trio")
    parser.add_argument("--count", type=int, help="operations per phase (default per scenario)")
    parser.add_argument("--keepalive", action="store_true", help="rue_trio's default keepalive")
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="collector off during the phases (its pauses are otherwise charged to whatever "
        "function allocated when it ran)",
    )
    parser.add_argument("--top", type=int, default=20, help="functions listed")
    parser.add_argument(
        "--callers",
        action="append",
        default=[],
        metavar="TEXT",
        help="also list the callers of functions whose name contains TEXT (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of a scenario, s")
    parser.add_argument(
        "--timer",
        choices=["cpu", "wall"],
        default="cpu",
        help="cProfile's clock: this thread's CPU time (default; other processes on the "
        "machine do not inflate it) or wall time",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    scenarios = PROFILED if args.scenario == "all" else [args.scenario]
    if args.server == "plain-trio":  # plain-trio has no upgrade to abort after
        scenarios = [x for x in scenarios if x != "abort"]
    results = []
    for scenario in scenarios:
        result = trio.run(run_scenario, args, scenario)
        print(report(result), end="\n\n", flush=True)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
