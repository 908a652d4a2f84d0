"""End-to-end WebSocket server benchmark (issues 3 and 4): several servers, one run, one driver.

Run it from the repository root with the project's virtualenv (nothing to install beyond the
``bench`` extra and psutil; the servers are started and stopped by the driver)::

    python bench/driver.py --quick                       # smoke run, all servers
    python bench/driver.py                               # full run: long
    python bench/driver.py --servers plain-trio,rue_trio --scenarios a,b,g --json out.json
    python bench/driver.py --scenarios h --members 10000 --sub-procs 2
    python bench/driver.py --servers aiohttp,rue_trio --baseline ../before   # before/after

``--baseline DIR`` adds the server ``rue_trio-baseline``: the same rue_trio echo and
broadcast code of bench/servers.py, importing rue_trio from DIR instead, a checkout of an
earlier commit (``git worktree add ../before <commit>``, then ``python setup.py build_ext
--inplace`` there for its C accelerator). Before and after a change then share one run.

Other flags: ``--repeat N`` (each scenario run N times per server, the servers taking
turns; each cell is the run with the median server CPU), ``--connections N`` (f),
``--subscribers N`` and ``--bursts N`` (g, gz, gzn), ``--members N`` (h), ``--sub-procs N``
(subscriber processes), ``--phase-timeout S``.

Servers (bench/servers.py, one process each, 127.0.0.1 only, port 0): ``plain-trio``
(length-prefixed frames over a Trio TCP stream, no handshake: the floor any Trio server
pays), ``trio-websocket``, ``websockets-trio`` (websockets' own Trio implementation,
``websockets.trio.server.serve``, present in the installed 17.4), ``websockets-asyncio``,
``aiohttp``, ``picows`` (Cython on asyncio; its API hands over frames, not messages) and
``rue_trio`` (skipped with a note while ``from rue_trio import App, WebSocketHandler,
Hub`` fails).

Scenarios (``--scenarios``, default all; counts are full mode / quick mode)::

    a   ping-pong of 64-byte binary messages on one connection, 20,000 / 2,000 round trips
    b   64-byte messages pipelined on one connection, 100 in flight, 50,000 / 10,000
    c   100 connections doing ping-pong at once, 200 / 20 round trips each
    d   1 MiB binary messages, 200 / 20 round trips on one connection
    e   open + close: TCP connect, HTTP upgrade, close frames exchanged, TCP closed by the
        server (RFC 6455 section 7.1.1); 4 clients in parallel, 2,000 / 200 in all
    f   idle memory: open 1,000 / 200 idle connections, server RSS delta per connection
    g   broadcast (issue 4): one publisher + 1,000 / 100 subscribers, bursts (3 / 1) of 200
        text messages of 128 bytes carrying their send time; deliveries/s, server CPU per
        delivery, p50/p99/max delivery latency; permessage-deflate off
    gz  the same with permessage-deflate negotiated by the subscribers (servers without it
        are skipped); the server may keep a compression context per connection
    gzn the same, the subscribers asking for ``server_no_context_takeover`` (RFC 7692
        section 7.1.1.1): a server may then compress a broadcast once for all members
    h   10,000 / 500 connected members (issue 4): the server's RSS (and per member) and the
        time for one broadcast to reach every member (median and worst of 5 / 3)

Methodology
-----------
* **The server's CPU time per operation is the headline number.** It is the server
  process's own CPU time (all its threads, user + system) just before and just after the
  measured phase, after a warm-up phase (a tenth of the count) that is not counted. It is
  read from ``/proc/PID/task/*/schedstat``, the scheduler's nanosecond count of the same
  quantity that ``psutil.Process(pid).cpu_times()`` reports at 10 ms resolution (psutil's
  figure is kept in the JSON as ``server_cpu_psutil``, and used where schedstat is missing).
  It does not depend on how fast the driver is, so it compares servers even when the driver,
  not the server, limits the rate.
* **Rates (ops/s) are wall-clock** and include the driver: on a 2-core machine the driver and
  the server share the cores, so a rate is a property of the pair. The "driver CPU" column
  (all driver processes' CPU time over the phase's wall time) shows when the driver was the
  bottleneck (near 100 % of one core per driver process).
* **Ratios are taken within one run.** Rows of a-f are divided by the ``plain-trio`` row of
  the same run (the floor); rows of g, gz, gzn and h by the best WebSocket peer (lowest CPU
  per delivery among trio-websocket, websockets-trio, websockets-asyncio, aiohttp and picows).
  Absolute numbers move with the machine's load (other processes, CPU frequency, noisy
  neighbours on a shared host, the page cache): on this machine they moved by up to 2x
  between runs minutes apart while other jobs ran. Ratios of rows measured seconds apart move
  far less; compare those across runs, and the load average printed with each table.
* The floor: plain-trio's echo reads a chunk, cuts every complete message out as its own
  bytes object, and sends the replies to one chunk with one ``send_all``; its broadcast
  frames a message once and offers it to a bounded channel per member, drained by one writer
  task per connection into one ``send_all``. asyncio servers can go below a Trio floor
  (no task switch per read).
* Each scenario starts a fresh server process (no state carried over: RSS baselines are
  clean, a crash is contained) and stops it afterwards; every loop is bounded in count and
  every phase in time (``--phase-timeout``, 120 s), the servers stop by themselves after
  ``--server-lifetime`` (600 s) and the subscriber processes when their stdin closes, so a
  run always ends by itself.
* The driver is no server library's client: it speaks the HTTP/1.1 upgrade (random key,
  ``Sec-WebSocket-Accept`` checked) and RFC 6455 frames itself with asyncio protocols.
  Client frames are masked with a random key; fixed payloads are masked once, ahead of time,
  to keep the driver's CPU low. Server frames are parsed minimally (lengths, opcodes,
  fragments; pings answered; close echoed) and each echo is compared, byte for byte,
  with the payload sent (a wrong or corrupted echo fails the scenario). With
  compression the subscribers offer ``permessage-deflate; client_max_window_bits`` (gzn adds
  ``server_no_context_takeover``) and inflate with ``zlib.decompressobj(-15)``, the context
  kept per connection unless the server answered ``server_no_context_takeover``, after
  appending ``00 00 ff ff`` (RFC 7692 section 7.2.2). The publisher sends uncompressed frames.
* Broadcast latency: each message carries ``time.monotonic_ns()`` taken by the publisher
  (the system-wide CLOCK_MONOTONIC, comparable across processes on Linux); a subscriber
  subtracts it from its clock when it reads the chunk holding the message. Every sample is
  kept (one per delivery, int64 nanoseconds, sent to the parent in base64) and the
  percentiles are nearest-rank over all of them, so p99 never exceeds max. Subscribers
  are spread over ``--sub-procs`` driver processes (2 by default) so that one asyncio
  process does not parse every delivery alone; with 1,000 subscribers on a 2-core
  machine they still compete with the server (see "driver CPU"): read deliveries/s and
  latencies as upper bounds of what the server alone would take, and compare CPU per
  delivery. deliveries/s is the deliveries divided by the time from each burst's write to
  its last delivery.
* Before measuring a broadcast the driver sends sync messages until every subscriber has
  received the last one, so every subscriber is registered in the server's broadcast set;
  then every delivery of every burst is counted (a missing one fails the scenario).
* Idle memory: f is the RSS delta of the server process between a warmed-up baseline (one
  connection served and closed) and the moment N connections are open and the RSS has stayed
  within 1 % for 0.3 s (allocator and GC settling; the driver cannot force a collection in
  another process). h does the same with the publisher connected as the baseline.
* Each server runs its library's idiomatic echo/broadcast code (see bench/servers.py) with
  keepalive pings off, message limits raised to 16 MiB and compression off unless the
  scenario says otherwise; everything else keeps each library's defaults. The open-file
  limit is raised to the hard limit in every benchmark process (driver, subscriber
  processes, servers), never in library code.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import platform
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS_PY = HERE / "servers.py"
SELF = Path(__file__).resolve()
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

ALL_SERVERS = [
    "plain-trio",
    "trio-websocket",
    "websockets-trio",
    "websockets-asyncio",
    "aiohttp",
    "picows",
    "rue_trio",
]
WS_PEERS = {"trio-websocket", "websockets-trio", "websockets-asyncio", "aiohttp", "picows"}
COMPRESSING = {"websockets-trio", "websockets-asyncio", "aiohttp", "rue_trio", "rue_trio-baseline"}
# --baseline DIR: rue_trio imported from another checkout (an earlier commit), same run.
BASELINE = "rue_trio-baseline"
ALL_SCENARIOS = ["a", "b", "c", "d", "e", "f", "g", "gz", "gzn", "h"]
# The permessage-deflate offers of the subscribers (RFC 7692 section 7.1): gz lets the server
# keep its compression context per connection; gzn asks it not to (server_no_context_takeover),
# which lets a server compress a broadcast once for every member.
OFFERS = {
    "gz": "permessage-deflate; client_max_window_bits",
    "gzn": "permessage-deflate; server_no_context_takeover; client_max_window_bits",
}

FULL = {
    "a_n": 20_000,
    "b_n": 50_000,
    "b_inflight": 100,
    "c_conns": 100,
    "c_n": 200,
    "d_n": 200,
    "d_size": 1 << 20,
    "e_n": 2_000,
    "e_conc": 4,
    "f_n": 1_000,
    "g_subs": 1_000,
    "g_bursts": 3,
    "g_burst": 200,
    "h_members": 10_000,
    "h_reps": 5,
}
QUICK = {
    "a_n": 2_000,
    "b_n": 10_000,
    "b_inflight": 100,
    "c_conns": 100,
    "c_n": 20,
    "d_n": 20,
    "d_size": 1 << 20,
    "e_n": 200,
    "e_conc": 4,
    "f_n": 200,
    "g_subs": 100,
    "g_bursts": 1,
    "g_burst": 200,
    "h_members": 500,
    "h_reps": 3,
}

BCAST_SIZE = 128


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------
# Frames


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0xFF)) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


def plain_frame(payload: bytes) -> bytes:
    """One length-prefixed frame of the plain-trio protocol."""
    return len(payload).to_bytes(4, "big") + payload


def bcast_payload(seq: int, filler: bytes = b"x" * 64) -> bytes:
    """A 128-byte JSON text message carrying its send time (``[5:25]``) and seq (``[32:40]``)."""
    head = b'{"t":%020d,"seq":%08d,"text":"' % (time.monotonic_ns(), seq)
    body = head + filler
    return body[: BCAST_SIZE - 2].ljust(BCAST_SIZE - 2, b"x") + b'"}'


Messages = list[tuple[int, bytes | bytearray]]


class Client(asyncio.Protocol):
    """What the scenarios need from a client connection, whatever the wire protocol."""

    transport: asyncio.Transport

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.close_received: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.on_data: Callable[[Client, Messages], None] = _ignore
        self.on_lost: Callable[[Client, BaseException | None], None] = _ignore
        self.buf = bytearray()
        self.index = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        err = exc or ConnectionError("connection closed")
        for fut in (self.opened, self.close_received):
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # marked as retrieved: a scenario may not be waiting on it
        if not self.lost.done():
            self.lost.set_result(None)
        self.on_lost(self, exc)

    def eof_received(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def encode(self, payload: bytes, opcode: int = 2) -> bytes:
        raise NotImplementedError

    def begin_close(self) -> None:
        raise NotImplementedError


def _ignore(*_: Any) -> None:
    return None


class PlainClient(Client):
    """The length-prefixed protocol of plain-trio."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.opened.set_result(None)

    def eof_received(self) -> bool:
        if not self.close_received.done():
            self.close_received.set_result(None)
        return False

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        msgs: Messages = []
        while n - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if end > n:
                break
            msgs.append((2, buf[pos + 4 : end]))
            pos = end
        if pos:
            del buf[:pos]
        if msgs:
            self.on_data(self, msgs)

    def encode(self, payload: bytes, opcode: int = 2) -> bytes:
        return plain_frame(payload)

    def begin_close(self) -> None:
        self.transport.write_eof()


class WSClient(Client):
    """A minimal RFC 6455 client: upgrade, masked frames out, server frames parsed."""

    def __init__(self, port: int, path: str, offer: str | None) -> None:
        super().__init__()
        self.port = port
        self.path = path
        self.offer = offer
        self.key = base64.b64encode(os.urandom(16))
        self.handshaking = True
        self.close_sent = False
        self.pmd = False
        self.reset_context = False
        self.inflater: Any = None
        self.frag_opcode = 0
        self.frag_rsv1 = False
        self.frag: list[bytes | bytearray] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        lines = [
            b"GET %s HTTP/1.1" % self.path.encode(),
            b"Host: %s:%d" % (HOST.encode(), self.port),
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: " + self.key,
            b"Sec-WebSocket-Version: 13",
        ]
        if self.offer:
            lines.append(b"Sec-WebSocket-Extensions: " + self.offer.encode())
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")

    def _handshake(self, head: bytes) -> None:
        status, *header_lines = head.split(b"\r\n")
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {status!r}")
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            headers[key] = (headers[key] + b", " if key in headers else b"") + value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest())
        if headers.get(b"sec-websocket-accept") != accept:
            raise ConnectionError("bad Sec-WebSocket-Accept")
        ext = headers.get(b"sec-websocket-extensions", b"")
        if b"permessage-deflate" in ext:
            if not self.offer:
                raise ConnectionError("server imposed an extension we did not offer")
            self.pmd = True
            self.reset_context = b"server_no_context_takeover" in ext
            self.inflater = zlib.decompressobj(-15)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.handshaking:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > 65536:
                    self.transport.abort()
                return
            head = bytes(buf[:i])
            del buf[: i + 4]
            try:
                self._handshake(head)
            except ConnectionError as exc:
                self.opened.set_exception(exc)
                self.transport.abort()
                return
            self.handshaking = False
            self.opened.set_result(None)
        n = len(buf)
        pos = 0
        msgs: Messages = []
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[start : start + 2], "big")
                start += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            end = start + length
            if end > n:
                break
            if b1 & 0x80:
                raise ConnectionError("masked server frame")  # RFC 6455 section 5.1
            opcode = b0 & 0x0F
            payload: bytes | bytearray = buf[start:end]
            pos = end
            if opcode >= 8:
                self._control(opcode, payload)
                continue
            if opcode:
                self.frag_opcode = opcode
                self.frag_rsv1 = bool(b0 & 0x40)
            if not b0 & 0x80:
                self.frag.append(payload)
                continue
            if self.frag:
                self.frag.append(payload)
                payload = b"".join(self.frag)
                self.frag = []
            if self.frag_rsv1:
                payload = self._inflate(payload)
            msgs.append((self.frag_opcode, payload))
        if pos:
            del buf[:pos]
        if msgs:
            self.on_data(self, msgs)

    def _inflate(self, payload: bytes | bytearray) -> bytes:
        # RFC 7692 section 7.2.2: append the empty stored block the sender removed.
        if self.reset_context:
            self.inflater = zlib.decompressobj(-15)
        return bytes(self.inflater.decompress(payload + b"\x00\x00\xff\xff"))

    def _control(self, opcode: int, payload: bytes | bytearray) -> None:
        if opcode == 9:
            self.transport.write(client_frame(0xA, bytes(payload)))
        elif opcode == 8:
            if not self.close_sent:
                self.close_sent = True
                self.transport.write(client_frame(8, bytes(payload[:2])))
            if not self.close_received.done():
                self.close_received.set_result(None)

    def encode(self, payload: bytes, opcode: int = 2) -> bytes:
        return client_frame(opcode, payload)

    def begin_close(self) -> None:
        self.close_sent = True
        self.transport.write(client_frame(8, (1000).to_bytes(2, "big")))


async def connect(kind: str, port: int, path: str = "/ws", offer: str | None = None) -> Client:
    """Open one client connection and wait for the upgrade (WebSocket) or the TCP connect."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], Client]
    if kind == "plain":
        factory = PlainClient
    else:

        def factory() -> Client:
            return WSClient(port, path, offer)

    _, client = await loop.create_connection(factory, HOST, port)
    await client.opened
    return client


async def connect_many(
    kind: str, port: int, count: int, path: str, offer: str | None, parallel: int = 100
) -> list[Client]:
    """Open ``count`` connections, at most ``parallel`` handshakes at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> Client:
        async with gate:
            client = await connect(kind, port, path, offer)
            client.index = i
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# ---------------------------------------------------------------------------------------
# Server processes


def child_env(root: Path = ROOT) -> dict[str, str]:
    """The environment of the servers: ``root``'s rue_trio (this checkout's) first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


class ServerProc:
    """One server of bench/servers.py in its own process."""

    def __init__(
        self, name: str, mode: str, compression: bool, lifetime: float, root: Path = ROOT
    ) -> None:
        """Start server ``name`` of bench/servers.py, importing rue_trio from ``root``."""
        cmd = [sys.executable, str(SERVERS_PY), "--server", name, "--mode", mode]
        cmd += ["--lifetime", str(lifetime)]
        if compression:
            cmd.append("--compression")
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
            env=child_env(root),
        )
        self.port = self._read_port(limit=30.0)
        self.ps = psutil.Process(self.proc.pid)
        self.schedstat = os.path.exists(f"/proc/{self.proc.pid}/task/{self.proc.pid}/schedstat")

    def _read_port(self, limit: float) -> int:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline().decode().strip()
                    if line.startswith("PORT "):
                        return int(line.split()[1])
                    if not line and self.proc.poll() is not None:
                        break
                elif self.proc.poll() is not None:
                    break
        self.stop()
        raise RuntimeError(f"server did not start: {self.stderr_tail()}")

    def cpu(self) -> float:
        """The server's CPU seconds so far (all its threads, user + system)."""
        if self.schedstat:
            # The scheduler's own run-time count, in nanoseconds: the same quantity as
            # cpu_times() user + system, without its 10 ms tick resolution.
            total = 0
            task_dir = f"/proc/{self.proc.pid}/task"
            for tid in os.listdir(task_dir):
                with (
                    contextlib.suppress(FileNotFoundError, ProcessLookupError),
                    open(f"{task_dir}/{tid}/schedstat") as f,
                ):
                    total += int(f.read().split()[0])
            return total / 1e9
        return self.cpu_ticks()

    def cpu_ticks(self) -> float:
        """psutil's user + system CPU seconds (clock-tick resolution)."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 6) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def settled_rss(server: ServerProc, limit: float = 5.0) -> int:
    """The server's RSS once it stayed within 1 % for 0.3 s (or after ``limit`` s)."""
    deadline = time.monotonic() + limit
    last = server.rss()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = server.rss()
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


# ---------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    """One (scenario, server) cell."""

    scenario: str
    server: str
    unit: str = "ops"
    ops: int = 0
    wall: float = 0.0
    server_cpu: float = 0.0
    driver_cpu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.ops / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.ops * 1e6 if self.ops else 0.0


class Meter:
    """Server CPU, driver CPU and wall time over a measured phase."""

    def __init__(self, server: ServerProc) -> None:
        self.server = server

    def start(self) -> None:
        self.ticks0 = self.server.cpu_ticks()
        self.cpu0 = self.server.cpu()
        self.drv0 = time.process_time()
        self.t0 = time.perf_counter()

    def stop(self, result: Result, ops: int) -> None:
        result.wall = time.perf_counter() - self.t0
        result.server_cpu = self.server.cpu() - self.cpu0
        result.extra["server_cpu_psutil"] = self.server.cpu_ticks() - self.ticks0
        result.driver_cpu = time.process_time() - self.drv0
        result.ops = ops


# ---------------------------------------------------------------------------------------
# Echo scenarios a-d


async def echo_phase(
    clients: Sequence[Client], frame: bytes, count: int, inflight: int, payload: bytes
) -> None:
    """Each client completes ``count`` echoes of ``frame``, ``inflight`` of them outstanding.

    ``frame`` is ``payload`` encoded; every echo must be ``payload`` again, byte for byte.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    pending = [len(clients)]
    size = len(payload)

    def fail(exc: BaseException) -> None:
        if not done.done():
            done.set_exception(exc)

    for client in clients:
        state = [count - min(inflight, count), count]  # sends left, replies left

        def on_data(c: Client, msgs: Messages, state: list[int] = state) -> None:
            k = len(msgs)
            for _, echoed in msgs:
                if echoed != payload:
                    fail(ValueError(f"echo of {len(echoed)} bytes differs from the {size} sent"))
                    return
            state[1] -= k
            if state[0] > 0:
                s = min(k, state[0])
                state[0] -= s
                c.write(frame * s if s > 1 else frame)
            if state[1] <= 0:
                c.on_data = _ignore
                pending[0] -= 1
                if not pending[0] and not done.done():
                    done.set_result(None)

        def on_lost(c: Client, exc: BaseException | None) -> None:
            fail(ConnectionError(f"connection lost mid-phase: {exc!r}"))

        client.on_data = on_data
        client.on_lost = on_lost
        client.write(frame * min(inflight, count))
    try:
        await done
    finally:
        for client in clients:
            client.on_lost = _ignore


async def scenario_echo(
    server: ServerProc, kind: str, cfg: dict[str, Any], name: str, limit: float
) -> Result:
    if name == "a":
        conns, count, inflight, size, unit = 1, cfg["a_n"], 1, 64, "round trips"
    elif name == "b":
        conns, count, inflight, size, unit = 1, cfg["b_n"], cfg["b_inflight"], 64, "messages"
    elif name == "c":
        conns, count, inflight, size, unit = cfg["c_conns"], cfg["c_n"], 1, 64, "round trips"
    else:
        conns, count, inflight, size, unit = 1, cfg["d_n"], 1, cfg["d_size"], "round trips"
    result = Result(name, "", unit)
    clients = await connect_many(kind, server.port, conns, "/ws", None)
    payload = os.urandom(size)
    frames = [c.encode(payload) for c in clients[:1]]
    frame = frames[0]
    # Warm-up (not measured): code paths, buffers, allocator.
    warm = max(5, count // 10)
    await asyncio.wait_for(echo_phase(clients, frame, warm, inflight, payload), limit)
    meter = Meter(server)
    meter.start()
    await asyncio.wait_for(echo_phase(clients, frame, count, inflight, payload), limit)
    meter.stop(result, count * conns)
    for client in clients:
        client.transport.close()
    return result


# ---------------------------------------------------------------------------------------
# e: open + close


async def open_close(kind: str, port: int, deadline: float) -> str:
    """One connection's whole life; returns "ok" or what the server skipped.

    "ok" means the server answered the close frame and then closed TCP first (RFC 6455
    section 7.1.1); otherwise "no close frame" (TCP closed without one) or "no TCP close"
    (the driver aborted after ``deadline`` seconds).
    """
    client = await connect(kind, port, "/ws", None)
    client.begin_close()
    try:
        await asyncio.wait_for(asyncio.shield(client.lost), deadline)
    except TimeoutError:
        client.transport.abort()
        return "no TCP close"
    got = client.close_received
    return "ok" if got.done() and not got.exception() else "no close frame"


async def scenario_open_close(
    server: ServerProc, kind: str, cfg: dict[str, Any], limit: float
) -> Result:
    result = Result("e", "", "connections")
    total, parallel = cfg["e_n"], cfg["e_conc"]
    outcomes: dict[str, int] = {}

    async def worker(n: int) -> None:
        for _ in range(n):
            outcome = await open_close(kind, server.port, 5.0)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def run(n: int) -> None:
        per, extra = divmod(n, parallel)
        await asyncio.gather(*(worker(per + (i < extra)) for i in range(parallel)))

    await asyncio.wait_for(run(max(parallel, total // 10)), limit)
    outcomes.clear()
    meter = Meter(server)
    meter.start()
    await asyncio.wait_for(run(total), limit)
    meter.stop(result, total)
    outcomes.pop("ok", None)
    result.extra.update(outcomes)
    return result


# ---------------------------------------------------------------------------------------
# f: idle memory


async def warm_baseline(server: ServerProc, kind: str) -> int:
    """Serve one connection (one echo, then close) and return the settled RSS."""
    client = await connect(kind, server.port, "/ws", None)
    await asyncio.wait_for(echo_phase([client], client.encode(b"x" * 64), 3, 1, b"x" * 64), 10)
    client.begin_close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
    client.transport.close()
    return await settled_rss(server)


async def scenario_idle(
    server: ServerProc, kind: str, cfg: dict[str, Any], limit: float
) -> Result:
    n = cfg["f_n"]
    result = Result("f", "", "connections")
    rss0 = await warm_baseline(server, kind)
    meter = Meter(server)
    meter.start()
    clients = await asyncio.wait_for(connect_many(kind, server.port, n, "/ws", None), limit)
    meter.stop(result, n)
    rss1 = await settled_rss(server)
    result.extra["rss_MiB"] = rss1 / 2**20
    result.extra["KiB_per_conn"] = (rss1 - rss0) / n / 1024
    for client in clients:
        client.transport.abort()
    return result


# ---------------------------------------------------------------------------------------
# g, gz, h: broadcast. Subscribers live in `--subscriber-worker` processes of this script.


def pack_samples(latencies_ns: array.array[int]) -> str:
    """The raw latency samples, for the JSON line to the parent: int64s, in base64."""
    return base64.b64encode(latencies_ns.tobytes()).decode()


def unpack_samples(packed: str) -> array.array[int]:
    samples = array.array("q")
    samples.frombytes(base64.b64decode(packed))
    return samples


def quantile_ms(sorted_ns: Sequence[int], q: float) -> float:
    """The ``q`` quantile of sorted samples, by nearest rank: always one of the samples.

    So p50 <= p99 <= max holds by construction (a histogram's bucket midpoints can put
    p99 above the largest sample).
    """
    if not sorted_ns:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


async def subscriber_worker(args: argparse.Namespace) -> None:
    """A driver process holding ``--count`` subscribers; commands on stdin, JSON on stdout."""
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    lat = array.array("q")
    state = {"total": 0, "target": 0, "last_ns": 0, "lost": 0}
    last_seq: list[int] = []
    waiter: list[asyncio.Future[None]] = []

    def on_data(c: Client, msgs: Messages) -> None:
        now = time.monotonic_ns()
        append = lat.append
        for _, p in msgs:
            append(now - int(p[5:25]))
        last_seq[c.index] = int(msgs[-1][1][32:40])
        state["total"] += len(msgs)
        state["last_ns"] = now
        if waiter and state["total"] >= state["target"] and not waiter[0].done():
            waiter[0].set_result(None)

    def on_lost(c: Client, exc: BaseException | None) -> None:
        state["lost"] += 1

    clients: list[Client] = []
    failed = 0
    gate = asyncio.Semaphore(100)

    async def one(i: int) -> None:
        nonlocal failed
        async with gate:
            try:
                client = await asyncio.wait_for(
                    connect(args.kind, args.port, "/bcast", args.offer), 30
                )
            except (OSError, TimeoutError):
                failed += 1
                return
            client.index = len(clients)
            last_seq.append(-1)
            clients.append(client)
            client.on_data = on_data
            client.on_lost = on_lost

    await asyncio.gather(*(one(i) for i in range(args.count)))
    pmd = sum(1 for c in clients if getattr(c, "pmd", False))
    nctx = sum(1 for c in clients if getattr(c, "reset_context", False))
    emit({"ready": len(clients), "failed": failed, "pmd": pmd, "no_context": nctx})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cpu0 = time.process_time()
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "have":
            seq = cmd["seq"]
            emit({"have": sum(1 for s in last_seq if s >= seq), "lost": state["lost"]})
        elif cmd["cmd"] == "reset":
            del lat[:]
            state["total"] = 0
            cpu0 = time.process_time()
            emit({"ok": True})
        elif cmd["cmd"] == "wait":
            state["target"] = cmd["total"]
            if state["total"] < state["target"]:
                waiter[:] = [loop.create_future()]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[0], cmd["timeout"])
            emit(
                {
                    "total": state["total"],
                    "last_ns": state["last_ns"],
                    "samples": pack_samples(lat),
                    "cpu": time.process_time() - cpu0,
                    "lost": state["lost"],
                }
            )
            del lat[:]
        elif cmd["cmd"] == "quit":
            break
    for client in clients:
        client.transport.abort()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Subscribers:
    """The subscriber processes of one broadcast scenario."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.counts: list[int] = []

    async def start(
        self, kind: str, port: int, total: int, nprocs: int, offer: str | None, limit: float
    ) -> dict[str, int]:
        nprocs = max(1, min(nprocs, total))
        per, extra = divmod(total, nprocs)
        self.counts = [per + (i < extra) for i in range(nprocs)]
        for count in self.counts:
            cmd = [sys.executable, str(SELF), "--subscriber-worker"]
            cmd += ["--kind", kind, "--port", str(port), "--count", str(count)]
            if offer:
                cmd += ["--offer", offer]
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=2**24
            )
            self.procs.append(proc)
        replies = await asyncio.wait_for(self._read_all(), limit)
        return {k: sum(r[k] for r in replies) for k in ("ready", "failed", "pmd", "no_context")}

    async def _read_all(self) -> list[dict[str, Any]]:
        replies = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError("a subscriber process died")
            replies.append(json.loads(line))
        return replies

    async def ask(self, cmd: dict[str, Any], limit: float = 60.0) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        return await asyncio.wait_for(self._read_all(), limit + 10)

    async def wait(self, per_sub: int, limit: float) -> list[dict[str, Any]]:
        for proc, count in zip(self.procs, self.counts, strict=True):
            assert proc.stdin is not None
            cmd = {"cmd": "wait", "total": per_sub * count, "timeout": limit}
            proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        return await asyncio.wait_for(self._read_all(), limit + 10)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.write(b'{"cmd": "quit"}\n')
                    proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Publisher:
    """The connection whose messages the server broadcasts; seq numbers grow monotonically."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seq = 0
        self.opcode = 1

    def send(self, count: int) -> int:
        """Send ``count`` fresh messages in one write; return the send time (monotonic ns)."""
        encode = self.client.encode
        frames = []
        for _ in range(count):
            frames.append(encode(bcast_payload(self.seq), self.opcode))
            self.seq += 1
        t = time.monotonic_ns()
        self.client.write(b"".join(frames))
        return t


async def sync(pub: Publisher, subs: Subscribers, members: int, limit: float) -> None:
    """Send messages until every subscriber got the last one: all are registered.

    A member that connected but was not yet registered when a sync message went out never
    gets it: when the count of members holding the latest message has not grown for twice
    as long as it took to get there, and at least 2 s (some servers deliver a broadcast to
    10,000 members in spurts, with pauses of half a second), another one is sent. Then the
    subscribers' counters are reset.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pub.send(1)
        want = pub.seq - 1
        sent = time.monotonic()
        last_have, changed = -1, sent
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            replies = await subs.ask({"cmd": "have", "seq": want})
            have = sum(r["have"] for r in replies)
            if have >= members:
                await subs.ask({"cmd": "reset"})
                return
            now = time.monotonic()
            if have != last_have:
                last_have, changed = have, now
            elif now - changed > max(2.0, 2 * (changed - sent)):
                break
    raise TimeoutError("subscribers never all received the sync message")


def merge(replies: list[dict[str, Any]], into: array.array[int]) -> None:
    for reply in replies:
        into.extend(unpack_samples(reply["samples"]))


async def scenario_broadcast(
    server: ServerProc,
    kind: str,
    cfg: dict[str, Any],
    name: str,
    nprocs: int,
    limit: float,
) -> Result:
    offer = OFFERS.get(name)
    result = Result(name, "", "deliveries")
    subs = Subscribers()
    try:
        ready = await subs.start(kind, server.port, cfg["g_subs"], nprocs, offer, limit)
        if ready["failed"]:
            raise RuntimeError(f"{ready['failed']} subscribers could not connect")
        if name == "gzn" and ready["no_context"] != ready["ready"]:
            result.extra["server kept its context"] = ready["ready"] - ready["no_context"]
        if offer and ready["pmd"] != ready["ready"]:
            raise RuntimeError(f"permessage-deflate on {ready['pmd']}/{ready['ready']} only")
        pub = Publisher(await connect(kind, server.port, "/bcast", None))
        n_subs, burst = ready["ready"], cfg["g_burst"]
        await sync(pub, subs, n_subs, limit)
        samples = array.array("q")
        busy = 0.0
        subs_cpu = 0.0
        meter = Meter(server)
        meter.start()
        for i in range(cfg["g_bursts"]):
            t_send = pub.send(burst)
            replies = await subs.wait(burst * (i + 1), limit)
            got = sum(r["total"] for r in replies)
            if got < n_subs * burst * (i + 1):
                raise RuntimeError(f"only {got} of {n_subs * burst * (i + 1)} deliveries")
            busy += (max(r["last_ns"] for r in replies) - t_send) / 1e9
            merge(replies, samples)
            subs_cpu = sum(r["cpu"] for r in replies)
        deliveries = n_subs * burst * cfg["g_bursts"]
        meter.stop(result, deliveries)
        result.wall = busy
        # The subscribers' processes do nearly all of the driver's work here.
        result.driver_cpu += subs_cpu
        ordered = sorted(samples)
        if len(ordered) < deliveries:
            raise RuntimeError(f"{len(ordered)} latency samples for {deliveries} deliveries")
        result.extra.update(
            p50_ms=quantile_ms(ordered, 0.50),
            p99_ms=quantile_ms(ordered, 0.99),
            max_ms=ordered[-1] / 1e6,
            subs_cpu=subs_cpu,
            subscribers=n_subs,
        )
        pub.client.transport.abort()
    finally:
        await subs.stop()
    return result


async def scenario_members(
    server: ServerProc, kind: str, cfg: dict[str, Any], nprocs: int, limit: float
) -> Result:
    result = Result("h", "", "deliveries")
    subs = Subscribers()
    try:
        pub = Publisher(await connect(kind, server.port, "/bcast", None))
        pub.send(1)
        rss0 = await settled_rss(server)
        cpu0 = server.cpu()
        ready = await subs.start(kind, server.port, cfg["h_members"], nprocs, None, limit)
        if ready["failed"]:
            raise RuntimeError(f"{ready['failed']} members could not connect")
        await sync(pub, subs, ready["ready"], limit)
        handshake_cpu = server.cpu() - cpu0
        rss1 = await settled_rss(server)
        n = ready["ready"]
        times = []
        meter = Meter(server)
        meter.start()
        for i in range(cfg["h_reps"]):
            t_send = pub.send(1)
            replies = await subs.wait(i + 1, limit)
            if sum(r["total"] for r in replies) < n * (i + 1):
                raise RuntimeError("a broadcast did not reach every member")
            times.append((max(r["last_ns"] for r in replies) - t_send) / 1e6)
            await asyncio.sleep(0.1)
        meter.stop(result, n * cfg["h_reps"])
        result.wall = sum(times) / 1e3
        result.driver_cpu = sum(r["cpu"] for r in replies)
        result.extra.update(
            members=n,
            rss_MiB=rss1 / 2**20,
            KiB_per_member=(rss1 - rss0) / n / 1024,
            bcast_ms_median=statistics.median(times),
            bcast_ms_max=max(times),
            connect_cpu_us=handshake_cpu / n * 1e6,
        )
        pub.client.transport.abort()
    finally:
        await subs.stop()
    return result


# ---------------------------------------------------------------------------------------
# Harness


def rue_trio_available(root: Path = ROOT) -> str | None:
    """None if rue_trio's server API imports from ``root``, else the reason it does not."""
    probe = (
        "import rue_trio, sys; from rue_trio import App, WebSocketHandler, Hub; "
        f"sys.exit(not rue_trio.__file__.startswith({str(root.resolve())!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=root,
        env=child_env(root),
        capture_output=True,
        timeout=60,
    )
    if done.returncode:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"rue_trio is not imported from {root}"
    return None


def run_one(name: str, server_name: str, cfg: dict[str, Any], args: argparse.Namespace) -> Result:
    kind = "plain" if server_name == "plain-trio" else "ws"
    mode = "bcast" if name in ("g", "gz", "gzn", "h") else "echo"
    compression = name in OFFERS
    if compression and server_name not in COMPRESSING:
        return Result(name, server_name, error="skipped: no permessage-deflate")
    t = args.phase_timeout
    try:
        if server_name == BASELINE:
            server = ServerProc(
                "rue_trio", mode, compression, args.server_lifetime, root=args.baseline
            )
        else:
            server = ServerProc(server_name, mode, compression, lifetime=args.server_lifetime)
    except RuntimeError as exc:
        return Result(name, server_name, error=str(exc))
    try:
        if name in ("a", "b", "c", "d"):
            coro = scenario_echo(server, kind, cfg, name, t)
        elif name == "e":
            coro = scenario_open_close(server, kind, cfg, t)
        elif name == "f":
            coro = scenario_idle(server, kind, cfg, t)
        elif name in ("g", "gz", "gzn"):
            coro = scenario_broadcast(server, kind, cfg, name, args.sub_procs, t)
        else:
            coro = scenario_members(server, kind, cfg, args.sub_procs, t)
        result = asyncio.run(coro)
    except Exception as exc:
        detail = "" if server.alive() else f" (server died: {server.stderr_tail()})"
        result = Result(name, server_name, error=f"{type(exc).__name__}: {exc}{detail}")
    finally:
        server.stop()
    result.server = server_name
    return result


NOTE_KEYS = ("no close frame", "no TCP close", "server kept its context")

TITLES = {
    "a": "a. ping-pong, 64 B, 1 connection",
    "b": "b. pipelined, 64 B, 100 in flight, 1 connection",
    "c": "c. ping-pong, 64 B, 100 connections",
    "d": "d. round trips of 1 MiB messages",
    "e": "e. open + close handshakes",
    "f": "f. idle connections: server memory",
    "g": "g. broadcast, compression off",
    "gz": "gz. broadcast, permessage-deflate (context takeover allowed)",
    "gzn": "gzn. broadcast, permessage-deflate, client asks server_no_context_takeover",
    "h": "h. members held and one broadcast to all",
}


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:.2f}x" if base else "-"


def median_run(runs: list[Result]) -> Result:
    """The run with the median server CPU per operation (the first error if any failed)."""
    failed = [r for r in runs if r.error]
    if failed:
        return failed[0]
    return sorted(runs, key=lambda r: r.cpu_us)[(len(runs) - 1) // 2]


def table(name: str, rows: list[Result]) -> str:
    ok = [r for r in rows if not r.error]
    if name in ("a", "b", "c", "d", "e", "f"):
        floor = next((r for r in ok if r.server == "plain-trio"), None)
        base_cpu = floor.cpu_us if floor else None
        base_rate = floor.rate if floor else None
        base_mem = floor.extra.get("KiB_per_conn") if floor else None
    else:
        peers = [r for r in ok if r.server in WS_PEERS]
        best = min(peers, key=lambda r: r.cpu_us) if peers else None
        base_cpu = best.cpu_us if best else None
        base_rate = best.rate if best else None
        base_mem = best.extra.get("KiB_per_member") if best else None
    unit = next((r.unit for r in ok), "ops")
    versus = "floor" if name in ("a", "b", "c", "d", "e", "f") else "best peer"
    head = [
        "server",
        f"{unit}/s",
        "server CPU µs/op",
        f"CPU vs {versus}",
        f"rate vs {versus}",
        "driver CPU",
    ]
    if name == "f":
        head += ["KiB/conn", f"mem vs {versus}", "server RSS MiB"]
    elif name in ("g", "gz", "gzn"):
        head += ["p50 ms", "p99 ms", "max ms"]
    elif name == "h":
        head += ["members", "RSS MiB", "KiB/member", "bcast-to-all ms (median/max)"]
    lines = [f"### {TITLES[name]}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for r in rows:
        if r.error:
            lines.append(f"| {r.server} | {r.error} |" + " |" * (len(head) - 2))
            continue
        drv = r.driver_cpu / r.wall * 100 if r.wall else 0
        cells = [
            r.server,
            fmt(r.rate, 0),
            fmt(r.cpu_us, 2 if r.cpu_us < 10 else 1),
            ratio(r.cpu_us, base_cpu),
            ratio(r.rate, base_rate),
            f"{drv:.0f} %",
        ]
        x = r.extra
        if name == "f":
            cells += [fmt(x["KiB_per_conn"]), ratio(x["KiB_per_conn"], base_mem)]
            cells += [fmt(x["rss_MiB"])]
        elif name in ("g", "gz", "gzn"):
            cells += [fmt(x["p50_ms"], 2), fmt(x["p99_ms"], 2), fmt(x["max_ms"], 2)]
        elif name == "h":
            cells += [str(x["members"]), fmt(x["rss_MiB"]), fmt(x["KiB_per_member"])]
            cells += [f"{fmt(x['bcast_ms_median'])} / {fmt(x['bcast_ms_max'])}"]
        notes = {k: v for k, v in x.items() if k in NOTE_KEYS}
        if notes:
            cells[0] += f" ({notes})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    import aiohttp
    import trio
    import trio_websocket
    import websockets.version

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "trio": trio.__version__,
        "trio-websocket": trio_websocket.__version__,
        "websockets": websockets.version.version,
        "aiohttp": aiohttp.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=",".join(ALL_SERVERS))
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="small counts, smoke run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sub-procs", type=int, default=2, help="subscriber processes (g, h)")
    parser.add_argument("--connections", type=int, help="f: idle connections")
    parser.add_argument("--subscribers", type=int, help="g, gz: subscribers")
    parser.add_argument("--members", type=int, help="h: members")
    parser.add_argument("--bursts", type=int, help="g, gz: bursts of messages")
    parser.add_argument("--phase-timeout", type=float, default=120.0)
    parser.add_argument("--server-lifetime", type=float, default=600.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and server, in turns; the table shows the median run",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier rue_trio commit: adds the server rue_trio-baseline",
    )
    # Internal: this script re-executed as a subscriber process.
    parser.add_argument("--subscriber-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="ws", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--offer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber_worker:
        asyncio.run(subscriber_worker(args))
        return

    limit = raise_nofile_limit()
    cfg = dict(QUICK if args.quick else FULL)
    for flag, key in (
        ("connections", "f_n"),
        ("subscribers", "g_subs"),
        ("members", "h_members"),
        ("bursts", "g_bursts"),
    ):
        if getattr(args, flag) is not None:
            cfg[key] = getattr(args, flag)
    servers = [s for s in args.servers.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in servers:
        if s not in ALL_SERVERS:
            parser.error(f"unknown server {s!r}")
    for s in scenarios:
        if s not in ALL_SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    need = max(cfg["h_members"] if "h" in scenarios else 0, cfg["f_n"], cfg["g_subs"]) + 100
    if need > limit:
        print(f"warning: open-file limit {limit} < {need} needed", file=sys.stderr)

    notes: list[str] = []
    if "rue_trio" in servers:
        reason = rue_trio_available()
        if reason:
            servers.remove("rue_trio")
            notes.append(f"rue_trio skipped: {reason}")
    if args.baseline is not None:
        reason = rue_trio_available(args.baseline)
        if reason:
            parser.error(f"--baseline {args.baseline}: {reason}")
        revision = subprocess.run(
            ["git", "-C", str(args.baseline), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        notes.append(f"{BASELINE}: rue_trio at {revision or args.baseline}")
        index = servers.index("rue_trio") if "rue_trio" in servers else len(servers)
        servers.insert(index, BASELINE)
    info = machine_info()
    started = time.monotonic()
    results: list[Result] = []
    for name in scenarios:
        runs: dict[str, list[Result]] = {server_name: [] for server_name in servers}
        # With --repeat the servers take turns, so that a change in the machine's load
        # falls on all of them alike.
        for _ in range(args.repeat):
            for server_name in servers:
                r = run_one(name, server_name, cfg, args)
                runs[server_name].append(r)
                status = r.error or f"{r.rate:,.0f} {r.unit}/s, {r.cpu_us:.2f} µs/op server CPU"
                print(
                    f"[{time.monotonic() - started:6.1f}s] {name} {server_name}: {status}",
                    file=sys.stderr,
                    flush=True,
                )
        results += [median_run(runs[server_name]) for server_name in servers]
    info["loadavg_end"] = os.getloadavg()
    info["elapsed_s"] = time.monotonic() - started

    mode = "quick" if args.quick else "full"
    median = f", median of {args.repeat} runs" if args.repeat > 1 else ""
    print(f"## WebSocket server benchmark ({mode} mode{median}, {info['elapsed_s']:.0f} s)\n")
    print(
        f"Python {info['python']}, {info['cpus']} CPUs, load {info['loadavg'][0]:.2f} → "
        f"{info['loadavg_end'][0]:.2f}; trio {info['trio']}, trio-websocket "
        f"{info['trio-websocket']}, websockets {info['websockets']}, aiohttp {info['aiohttp']}."
    )
    print("Server CPU µs/op is the headline; ratios compare rows of this run only.\n")
    for note in notes:
        print(f"- {note}")
    if notes:
        print()
    for name in scenarios:
        print(table(name, [r for r in results if r.scenario == name]))
        print()
    if args.json:
        payload = {
            "mode": mode,
            "repeat": args.repeat,
            "config": cfg,
            "machine": info,
            "notes": notes,
            "results": [
                {**asdict(r), "rate": r.rate, "server_cpu_us_per_op": r.cpu_us} for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
