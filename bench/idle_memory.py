"""What an idle rue_trio connection holds: bytes by allocation site, objects by type, cycles.

Usage (from the repository root; about half a minute)::

    python bench/idle_memory.py                      # 1,000 idle connections
    python bench/idle_memory.py --count 2000 --top 30
    python bench/idle_memory.py --keepalive          # with rue_trio's default keepalive
    python bench/idle_memory.py --server plain-trio  # the floor: a Trio TCP stream
    python bench/idle_memory.py --json out.json

The server runs in this process on 127.0.0.1 (bench/servers.py's rue_trio echo server:
keepalive off as in bench/driver.py, unless ``--keepalive``); a child process running
bench/driver.py's client (bench/_loadgen.py) serves one warm-up connection, then opens
``--count`` connections and leaves them idle, then closes them. Two rounds:

1. **Objects and RSS, no tracing.** After a full collection, the change in the number of
   objects the collector tracks, by type, with their shallow sizes (``sys.getsizeof``: a
   coroutine's includes its frame), divided by the number of connections (deterministic),
   and the change in this process's RSS per connection (depends on the allocator's state:
   a second run in the same process reuses freed memory).
   Then the connections are closed with the collector **off**; once they are gone, one
   collection with ``gc.DEBUG_SAVEALL`` finds what only the cycle collector can free: the
   objects per closed connection left in reference cycles, by type. Zero means that a
   connection is freed by reference counting alone.
2. **Bytes by allocation site, traced.** The same again under ``tracemalloc`` (25 frames):
   the bytes still allocated per open connection, grouped three ways: by the allocating
   function (the innermost frame: ``trio._core._run:spawn_impl`` is a task and its
   coroutine, ``h11...`` the HTTP state, ...), by the innermost line of rue_trio on the stack
   (which rue_trio code caused it), and by category (h11, request objects, nursery and
   cancel scopes, tasks, protocol core, queues and waiters, socket and stream, ...).
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import resource
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))  # then _loadgen adds the checkout
import _loadgen

NFRAMES = 25

# Categories: the first rule whose text appears in a frame label ("module:function"), tried
# frame by frame from the innermost (the allocation) outward.
CATEGORIES = [
    ("h11 connection and parser state", ("h11.",)),
    ("request objects (Request, headers, Context)", ("rue_trio.http._request", "rue_trio.app.")),
    ("protocol core (sans-I/O)", ("rue_trio.protocol.",)),
    ("FrameQueue", ("rue_trio.websocket._queue",)),
    ("Waiters and ping waiters", ("rue_trio.websocket._waiter", "_PingWaiter")),
    ("tasks (Task, coroutine frames, contexts)", ("trio._core._run:spawn_impl", "start_soon")),
    ("nursery and cancel scopes", ("CancelScope", "open_nursery", "Nursery", "_cancel_status")),
    ("trio socket and stream", ("trio._socket", "trio._highlevel_socket", "trio._core._io")),
    ("WebSocketConn", ("rue_trio.websocket._connection", "rue_trio.websocket._core")),
    ("HTTP connection (rue_trio http/)", ("rue_trio.http.",)),
    ("server, handler", ("rue_trio.server", "rue_trio.handlers")),
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def type_counts() -> tuple[Counter[str], Counter[str]]:
    """Objects the collector tracks, and their shallow sizes (``sys.getsizeof``), by type."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__name__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


_FUNC_CACHE: dict[tuple[str, int], str] = {}


def module_of(path: str) -> str:
    """``.../site-packages/trio/_core/_run.py`` -> ``trio._core._run``."""
    parts = Path(path).with_suffix("").parts
    for anchor in ("site-packages",):
        if anchor in parts:
            return ".".join(parts[parts.index(anchor) + 1 :])
    if "rue_trio" in parts:
        return ".".join(parts[len(parts) - 1 - parts[::-1].index("rue_trio") :])
    if "bench" in parts:
        return "bench." + parts[-1]
    return parts[-1] if parts else path


def function_at(path: str, line: int) -> str:
    """The name of the function (``Class.method`` if indented in a class) around a line."""
    key = (path, line)
    if key not in _FUNC_CACHE:
        name = "?"
        cls = ""
        indent = None
        for i in range(line, 0, -1):
            text = linecache.getline(path, i)
            stripped = text.lstrip()
            depth = len(text) - len(stripped)
            if indent is None and stripped.startswith(("def ", "async def ")) and depth < 99:
                name = stripped.split("def ", 1)[1].split("(", 1)[0]
                indent = depth
                if depth == 0:
                    break
            elif indent is not None and stripped.startswith("class ") and depth < indent:
                cls = stripped[6:].split("(", 1)[0].split(":", 1)[0] + "."
                break
            elif indent is not None and depth == 0 and stripped:
                break
        _FUNC_CACHE[key] = cls + name
    return _FUNC_CACHE[key]


def label(frame: tracemalloc.Frame) -> str:
    return f"{module_of(frame.filename)}:{function_at(frame.filename, frame.lineno)}"


def category(frames: list[tracemalloc.Frame]) -> str:
    labels = [label(f) for f in reversed(frames)]  # innermost first
    for lab in labels:
        for name, needles in CATEGORIES:
            if any(n in lab for n in needles):
                return name
    return "other"


def rue_site(frames: list[tracemalloc.Frame]) -> str:
    for frame in reversed(frames):
        if "/rue_trio/" in frame.filename:
            code = linecache.getline(frame.filename, frame.lineno).strip()
            return f"{label(frame)}:{frame.lineno}  {code[:60]}"
    return "(no rue_trio frame)"


def group_traces(diff: list[tracemalloc.StatisticDiff], n: int) -> dict[str, Any]:
    by_func: Counter[str] = Counter()
    by_site: Counter[str] = Counter()
    by_cat: Counter[str] = Counter()
    blocks_cat: Counter[str] = Counter()
    cross: dict[str, Counter[str]] = {}
    for stat in diff:
        if stat.size_diff <= 0:
            continue
        frames = list(stat.traceback)
        if any("tracemalloc" in f.filename for f in frames):
            continue
        by_func[label(frames[-1])] += stat.size_diff
        site = rue_site(frames)
        by_site[site] += stat.size_diff
        cross.setdefault(site, Counter())[label(frames[-1])] += stat.size_diff
        cat = category(frames)
        by_cat[cat] += stat.size_diff
        blocks_cat[cat] += stat.count_diff
    return {
        "total_bytes_per_conn": sum(by_cat.values()) / n,
        "by_category": [
            {"category": k, "bytes": v / n, "blocks": blocks_cat[k] / n}
            for k, v in by_cat.most_common()
        ],
        "by_function": [{"function": k, "bytes": v / n} for k, v in by_func.most_common()],
        "by_rue_site": [
            {
                "site": k,
                "bytes": v / n,
                "allocated_in": {f: b / n for f, b in cross[k].most_common()},
            }
            for k, v in by_site.most_common()
        ],
    }


async def one_round(args: argparse.Namespace, traced: bool) -> dict[str, Any]:
    serve = _loadgen.build_server(args.server, args.keepalive)
    kind = "plain" if args.server == "plain-trio" else "ws"
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        port = _loadgen.port_of(await nursery.start(serve))
        with trio.fail_after(args.timeout):
            async with _loadgen.open_child("idle", port, args.count, 1, kind) as child:
                await child.expect("READY")
                await trio.sleep(0.3)  # the warm-up connection's tasks end
                gc.collect()
                if traced:
                    tracemalloc.start(NFRAMES)
                    before = tracemalloc.take_snapshot()
                else:
                    (counts0, sizes0), rss0 = type_counts(), rss_bytes()
                await child.say("GO")
                n = int((await child.expect("DONE")).split()[1])
                await child.expect("HELD")
                await trio.sleep(args.settle)  # every connection's tasks reach their wait
                gc.collect()
                if traced:
                    after = tracemalloc.take_snapshot()
                    tracemalloc.stop()
                    diff = after.compare_to(before, "traceback")
                    out.update(group_traces(diff, n))
                else:
                    rss1 = rss_bytes()
                    counts, sizes = type_counts()
                    counts.subtract(counts0)
                    sizes.subtract(sizes0)
                    out["rss_bytes_per_conn"] = (rss1 - rss0) / n
                    out["objects_per_conn"] = sum(v for v in counts.values() if v > 0) / n
                    out["objects_by_type"] = {
                        k: [counts[k] / n, v / n]
                        for k, v in sizes.most_common()
                        if counts[k] / n >= 0.05
                    }
                    gc.disable()  # cycles left by closed connections stay for us to count
                await child.say("CLOSE")
                await child.expect("CLOSED")
                await trio.sleep(args.settle)  # the server's side of each close finishes
                if not traced:
                    gc.set_debug(gc.DEBUG_SAVEALL)
                    found = gc.collect()
                    garbage = Counter(type(o).__name__ for o in gc.garbage)
                    gc.garbage.clear()
                    gc.set_debug(0)
                    gc.enable()
                    out["cycle_objects_per_closed_conn"] = found / n
                    out["cycle_objects_by_type"] = {
                        k: v / n for k, v in garbage.most_common(args.top) if v / n >= 0.05
                    }
        out["count"] = n
        nursery.cancel_scope.cancel()
    return out


def report(args: argparse.Namespace, plain: dict[str, Any], traced: dict[str, Any]) -> str:
    n = plain["count"]
    out = [
        f"== {n} idle connections on {args.server}"
        + (" (rue_trio's default keepalive)" if args.keepalive else ""),
        f"RSS per connection: {plain['rss_bytes_per_conn'] / 1024:.1f} KiB (allocator-dependent)",
        f"tracemalloc bytes per connection: {traced['total_bytes_per_conn'] / 1024:.2f} KiB",
        f"gc-tracked objects per connection: {plain['objects_per_conn']:.1f}",
        f"objects in reference cycles per closed connection: "
        f"{plain['cycle_objects_per_closed_conn']:.1f}",
        "",
        f"{'category (first match, innermost frame outward)':52} {'bytes':>7} {'blocks':>7}",
    ]
    out += [
        f"{c['category']:52} {c['bytes']:7.0f} {c['blocks']:7.1f}" for c in traced["by_category"]
    ]
    out += ["", f"{'allocating function (innermost frame)':70} {'bytes':>7}"]
    out += [
        f"{f['function'][:70]:70} {f['bytes']:7.0f}" for f in traced["by_function"][: args.top]
    ]
    out += ["", f"{'innermost rue_trio line on the stack':96} {'bytes':>7}"]
    for f in traced["by_rue_site"][: args.top]:
        out.append(f"{f['site'][:96]:96} {f['bytes']:7.0f}")
        if args.detail:
            out += [
                f"      {b:7.0f}  in {func}" for func, b in f["allocated_in"].items() if b >= 8
            ]
    out += ["", "gc-tracked objects per connection, by type (count, shallow bytes):"]
    out += [
        f"  {c:6.2f} {b:7.0f}  {k}"
        for k, (c, b) in list(plain["objects_by_type"].items())[: args.top]
    ]
    out += ["", "objects freed only by the cycle collector, per closed connection:"]
    out += [f"  {v:6.2f}  {k}" for k, v in plain["cycle_objects_by_type"].items()]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="idle connections")
    parser.add_argument("--server", choices=["rue_trio", "plain-trio"], default="rue_trio")
    parser.add_argument("--keepalive", action="store_true", help="rue_trio's default keepalive")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument(
        "--detail", action="store_true", help="each rue_trio line's allocating functions"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="wait before measuring, s")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of a round, s")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    _loadgen.raise_nofile_limit()
    plain = trio.run(one_round, args, False)
    traced = trio.run(one_round, args, True)
    print(report(args, plain, traced), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"untraced": plain, "traced": traced}, indent=1))


if __name__ == "__main__":
    main()
