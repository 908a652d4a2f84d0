"""A server measured in this process, a load driven from another: the profiling tools' harness.

``profile_server.py`` and ``idle_memory.py`` run a Trio server *inside* their own process
(cProfile, a Trio instrument and tracemalloc only see the process they run in) and drive it
from a child process running this module::

    python bench/_loadgen.py --scenario pingpong --port 8001 --count 5000 --phases 2

The child is bench/driver.py's client (asyncio, raw sockets, its own framing: no server
library's code), so the load is the one the end-to-end benchmark applies. The two processes
talk over the child's stdin and stdout, one word a line::

    child: READY          warm-up done (not measured)
    parent: GO            start a measured phase
    child: DONE <ops>     the phase is over; <ops> operations were done
    ... GO / DONE once per --phases ...
    child: HELD           (idle only) the connections are open and stay so
    parent: CLOSE         (idle only) close them
    child: CLOSED

The child stops when its stdin closes, and every phase is bounded by ``--timeout``; the
parent kills it when it is done with it. Everything binds or connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SELF = Path(__file__).resolve()
# This checkout's modules first: bench/servers.py and bench/driver.py, and rue_trio itself
# (``python bench/x.py`` puts bench/ on the path, not the checkout, so an installed
# rue_trio, an editable install of another checkout included, would win otherwise).
sys.path[:0] = [str(HERE), str(ROOT)]
SCENARIOS = [
    "pingpong",
    "pipelined",
    "conns100",
    "mib",
    "handshake",
    "abort",
    "broadcast",
    "idle",
]
# broadcast: this many subscribers, and one publisher sending one message at a time.
SUBSCRIBERS = 1_000
# The default counts of one measured phase: small enough for a shared 2-core machine.
COUNTS = {
    "pingpong": 5_000,
    "pipelined": 20_000,
    "conns100": 50,
    "mib": 40,
    "handshake": 500,
    "abort": 500,
    "broadcast": 20,
    "idle": 1_000,
}
UNITS = {
    "pingpong": "round trip",
    "pipelined": "message",
    "conns100": "round trip",
    "mib": "round trip",
    "handshake": "connection",
    "abort": "connection",
    "broadcast": "delivery",
    "idle": "connection",
}


# ---------------------------------------------------------------------------------------
# The child: load on 127.0.0.1 with bench/driver.py's client.


async def _phase(scenario: str, kind: str, port: int, count: int, clients: list[Any]) -> int:
    """One phase of ``scenario``; return the number of operations done."""
    import driver

    if scenario in ("handshake", "abort"):
        parallel = 4
        per, extra = divmod(count, parallel)

        async def worker(n: int) -> None:
            for _ in range(n):
                if scenario == "abort":
                    # Upgrade, then reset the TCP connection: no closing handshake.
                    client = await driver.connect(kind, port)
                    client.transport.abort()
                    await client.lost
                    continue
                outcome = await driver.open_close(kind, port, 5.0)
                if outcome != "ok":
                    raise RuntimeError(f"open + close: {outcome}")

        await asyncio.gather(*(worker(per + (i < extra)) for i in range(parallel)))
        return count
    if scenario == "broadcast":
        return await _broadcast(clients[0], clients[1:], count)
    size = 1 << 20 if scenario == "mib" else 64
    inflight = 100 if scenario == "pipelined" else 1
    payload = os.urandom(size)
    frame = clients[0].encode(payload)
    await driver.echo_phase(clients, frame, count, inflight, payload)
    return count * len(clients)


async def _broadcast(publisher: Any, subscribers: list[Any], count: int) -> int:
    """``count`` messages, one at a time: each sent once every member got the previous one."""
    loop = asyncio.get_running_loop()
    got = [0]
    done: list[asyncio.Future[None]] = []

    def on_data(c: Any, msgs: Any) -> None:
        got[0] += len(msgs)
        if got[0] >= len(subscribers) and done and not done[0].done():
            done[0].set_result(None)

    for sub in subscribers:
        sub.on_data = on_data
    frame = publisher.encode(b"x" * 128, 1)
    for _ in range(count):
        got[0] = 0
        done[:] = [loop.create_future()]
        publisher.write(frame)
        await done[0]
    return count * len(subscribers)


async def _child(args: argparse.Namespace) -> None:
    import driver

    driver.raise_nofile_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(word: str) -> None:
        sys.stdout.write(word + "\n")
        sys.stdout.flush()

    async def hear(expected: str) -> None:
        line = (await reader.readline()).decode().strip()
        if line != expected:
            raise SystemExit(f"loadgen: expected {expected!r}, got {line!r}")

    bound = partial(asyncio.wait_for, timeout=args.timeout)
    scenario, kind, port = args.scenario, args.kind, args.port
    clients: list[Any] = []
    if scenario in ("pingpong", "pipelined", "mib"):
        clients = [await bound(driver.connect(kind, port))]
    elif scenario == "conns100":
        clients = await bound(driver.connect_many(kind, port, 100, "/ws", None))
    elif scenario == "broadcast":
        clients = await bound(driver.connect_many(kind, port, SUBSCRIBERS + 1, "/bcast", None))
        await asyncio.sleep(0.5)  # every subscriber registered with the hub
    # Warm-up, not measured: code paths, buffers, the allocator, the server's caches.
    if scenario == "idle":
        warm = await bound(driver.connect(kind, port))
        await bound(driver.echo_phase([warm], warm.encode(b"x" * 64), 3, 1, b"x" * 64))
        warm.begin_close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(warm.lost), 2)
        warm.transport.close()
    else:
        await bound(_phase(scenario, kind, port, max(5, args.count // 10), clients))
    say("READY")
    for _ in range(args.phases):
        await bound(hear("GO"))
        if scenario == "idle":
            held = await bound(driver.connect_many(kind, port, args.count, "/ws", None))
            if kind == "plain":
                # A TCP connect completes before the server accepts: one echo each makes
                # sure that every connection reached its handler's read.
                frame = held[0].encode(b"x" * 64)
                await bound(driver.echo_phase(held, frame, 1, 1, b"x" * 64))
            say(f"DONE {len(held)}")
            say("HELD")
            await bound(hear("CLOSE"))
            for client in held:
                client.begin_close()
            await bound(asyncio.gather(*(asyncio.shield(c.lost) for c in held)))
            say("CLOSED")
        else:
            say(f"DONE {await bound(_phase(scenario, kind, port, args.count, clients))}")
    for client in clients:
        client.transport.close()
    await reader.read()  # until the parent closes our stdin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--count", type=int, required=True, help="operations per phase")
    parser.add_argument("--kind", choices=["ws", "plain"], default="ws", help="wire protocol")
    parser.add_argument("--phases", type=int, default=1, help="measured phases (GO/DONE)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each step, s")
    args = parser.parse_args()
    asyncio.run(_child(args))


# ---------------------------------------------------------------------------------------
# The parent: a Trio server in this process, the child at the other end of two pipes.


def raise_nofile_limit() -> None:
    """Raise this process's open-file limit to the hard limit (benchmark processes only)."""
    import servers

    servers.raise_nofile_limit()


def build_server(name: str, keepalive: bool, broadcast: bool = False) -> Callable[..., Any]:
    """Return ``serve(task_status)``: the bench's server ``name`` on 127.0.0.1, port 0.

    ``rue_trio`` is bench/servers.py's echo server (keepalive off and 16 MiB limits, like
    every server of the end-to-end benchmark) unless ``keepalive`` keeps rue_trio's default
    keepalive; with ``broadcast``, its Hub server (every message to every other member).
    ``plain-trio`` is the length-prefixed floor, for comparison.
    """
    import servers
    import trio

    if name == "plain-trio":
        handle = servers.PlainHub().handle if broadcast else servers.plain_echo

        async def serve_plain(task_status: Any) -> None:
            await trio.serve_tcp(handle, 0, host=servers.HOST, task_status=task_status)

        return serve_plain
    import rue_trio

    if not Path(rue_trio.__file__).resolve().is_relative_to(ROOT):
        raise SystemExit(f"rue_trio comes from {rue_trio.__file__}, not from this checkout")
    options = servers.rue_options()
    if keepalive:
        from rue_trio.websocket import ConnectionConfig

        options["config"] = ConnectionConfig()

    app = rue_trio.App()
    if broadcast:
        hub = rue_trio.Hub()
        app.add_background(hub.run)

        async def on_publish(conn: Any, msg_type: Any, data: Any) -> None:
            await hub.broadcast(msg_type, data, exclude=conn)

        handler = rue_trio.WebSocketHandler(hub=hub, on_message=on_publish, **options)
    else:

        async def on_echo(conn: Any, msg_type: Any, data: Any) -> None:
            await conn.send(msg_type, data)

        handler = rue_trio.WebSocketHandler(on_message=on_echo, **options)

    async def route(c: Any) -> None:
        await handler.handle(c)

    app.get("/ws", route)
    app.get("/bcast", route)
    return partial(app.serve, servers.HOST, 0)


def port_of(started: Any) -> int:
    """The port a server reported through ``task_status`` (rue_trio or trio.serve_tcp)."""
    import servers

    if isinstance(started, list) and started and hasattr(started[0], "socket"):
        return int(started[0].socket.getsockname()[1])
    return servers._port_of(started, 0)


class Child:
    """The load process, seen from the Trio side: lines in, lines out."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self._buf = bytearray()

    async def line(self) -> str:
        while b"\n" not in self._buf:
            data = await self.process.stdout.receive_some(4096)
            if not data:
                raise RuntimeError("the load process ended early (see its stderr above)")
            self._buf += data
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf[:] = rest
        return line.decode().strip()

    async def expect(self, word: str) -> str:
        line = await self.line()
        if not line.startswith(word):
            raise RuntimeError(f"load process said {line!r}, expected {word}")
        return line

    async def say(self, word: str) -> None:
        await self.process.stdin.send_all(word.encode() + b"\n")


@contextlib.asynccontextmanager
async def open_child(
    scenario: str, port: int, count: int, phases: int, kind: str = "ws"
) -> AsyncIterator[Child]:
    """Start the load process against ``port``; kill it on the way out."""
    import trio

    cmd = [sys.executable, str(SELF), "--scenario", scenario]
    cmd += ["--port", str(port), "--count", str(count), "--phases", str(phases)]
    cmd += ["--kind", kind]
    process = await trio.lowlevel.open_process(cmd, stdin=-1, stdout=-1)
    try:
        yield Child(process)
    finally:
        with trio.CancelScope(shield=True):
            await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


if __name__ == "__main__":
    main()
