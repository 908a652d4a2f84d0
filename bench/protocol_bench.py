"""Benchmark the sans-I/O protocol core against wsproto and websockets, in one run.

Usage (from the repository root, with the project installed)::

    python bench/protocol_bench.py            # the full matrix, about two minutes
    python bench/protocol_bench.py --quick    # a rough pass in a few seconds
    python bench/protocol_bench.py --filter parse

What is measured, for payloads of 64 B, 4 KiB and 1 MiB, each masked (client to server)
and unmasked (server to client), each with and without permessage-deflate:

* parse: a blob of N complete binary frames, built by the independent encoder in
  ``_util.py``, is fed in 64 KiB chunks to a fresh receiver, whose events are drained
  after each chunk. The time per frame includes the receiver's construction, amortized
  over the N frames.
* serialize: one binary message is sent and the output collected, per operation, on one
  long-lived sender (the server does not mask; the client masks with a fresh key).
* masking alone: ``apply_mask`` (ours in C and in pure Python, websockets' in C) and our
  ``unmask_at``, which unmasks a payload where it lies in a receive buffer.

Before timing, every case is run once and checked: parsers must yield exactly the
messages that were encoded, and serialized output must decode, with the independent
decoder, to the messages sent. Nothing is timed doing nothing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import _util
import websockets.speedups
from websockets.extensions.permessage_deflate import PerMessageDeflate as WsDeflate
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import Side, State
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage
from wsproto.extensions import Extension
from wsproto.extensions import PerMessageDeflate as WspDeflate

from rue_trio.protocol import (
    DeflateParams,
    Message,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
    _mask,
)

SIZES = {"64 B": 64, "4 KiB": 4096, "1 MiB": 1 << 20}
# Frames per parse blob, and distinct messages per serialize pool: large enough that one
# loop is not dominated by set-up, and that deflate's 32 KiB window cannot make every
# message a back-reference to an earlier one.
BLOB_FRAMES = {64: 2048, 4096: 128, 1 << 20: 4}
SEND_POOL = {64: 1024, 4096: 32, 1 << 20: 2}

# Every implementation compresses with zlib level 1, memory level 8, 15-bit windows and
# context takeover both ways: rue_trio's defaults.
ZLIB_LEVEL = 1
ZLIB_MEMLEVEL = 8

Drain = Callable[[Any], list[bytes]]


@dataclass
class Impl:
    """How to drive one implementation: make endpoints, feed and drain them, send."""

    name: str
    receiver: Callable[[bool, bool], Any]  # (is_server, deflate) -> receiver
    parse_loop: Callable[[list[bytes], bool, bool], Callable[[int], None]]
    feed_all: Callable[[list[bytes], bool, bool], list[bytes]]  # decoded messages
    sender: Callable[[bool, bool], Any]
    send_loop: Callable[[Any, list[bytes]], Callable[[int], None]]
    send_all: Callable[[Any, list[bytes]], bytes]


# ------------------------------------------------------------------------- rue_trio


def ours_receiver(is_server: bool, deflate: bool) -> WebSocketProtocol:
    codec = PerMessageDeflate(DeflateParams(), is_server=is_server) if deflate else None
    role = Role.SERVER if is_server else Role.CLIENT
    return WebSocketProtocol(role, max_message_size=None, deflate=codec)


def ours_parse_loop(chunks: list[bytes], is_server: bool, deflate: bool) -> Callable[[int], None]:
    def run(loops: int) -> None:
        for _ in range(loops):
            p = ours_receiver(is_server, deflate)
            receive = p.receive_data
            drain = p.events_received
            for chunk in chunks:
                receive(chunk)
                drain()

    return run


def ours_feed_all(chunks: list[bytes], is_server: bool, deflate: bool) -> list[bytes]:
    p = ours_receiver(is_server, deflate)
    out: list[bytes] = []
    for chunk in chunks:
        p.receive_data(chunk)
        for event in p.events_received():
            assert isinstance(event, Message), event
            assert isinstance(event.data, bytes)
            out.append(event.data)
    return out


def ours_send_loop(p: WebSocketProtocol, messages: list[bytes]) -> Callable[[int], None]:
    send = p.send_binary
    flush = p.data_to_send

    def run(loops: int) -> None:
        for _ in range(loops):
            for message in messages:
                send(message)
                flush()

    return run


def ours_send_all(p: WebSocketProtocol, messages: list[bytes]) -> bytes:
    for message in messages:
        p.send_binary(message)
    return b"".join(p.data_to_send())


OURS = Impl(
    "rue_trio",
    ours_receiver,
    ours_parse_loop,
    ours_feed_all,
    ours_receiver,
    ours_send_loop,
    ours_send_all,
)

# ----------------------------------------------------------------------- websockets


def ws_endpoint(is_server: bool, deflate: bool) -> WsProtocol:
    # The sans-I/O core shared by ServerProtocol and ClientProtocol, already OPEN.
    p = WsProtocol(Side.SERVER if is_server else Side.CLIENT, state=State.OPEN, max_size=None)
    if deflate:
        settings = {"level": ZLIB_LEVEL, "memLevel": ZLIB_MEMLEVEL}
        p.extensions = [WsDeflate(False, False, 15, 15, settings)]
    return p


def ws_parse_loop(chunks: list[bytes], is_server: bool, deflate: bool) -> Callable[[int], None]:
    def run(loops: int) -> None:
        for _ in range(loops):
            p = ws_endpoint(is_server, deflate)
            receive = p.receive_data
            drain = p.events_received
            for chunk in chunks:
                receive(chunk)
                drain()

    return run


def ws_feed_all(chunks: list[bytes], is_server: bool, deflate: bool) -> list[bytes]:
    p = ws_endpoint(is_server, deflate)
    out: list[bytes] = []
    for chunk in chunks:
        p.receive_data(chunk)
        for frame in p.events_received():
            # The websockets core yields frames; these messages are single final frames.
            assert isinstance(frame, WsFrame), frame
            assert frame.opcode is WsOpcode.BINARY and frame.fin, frame
            out.append(bytes(frame.data))
    return out


def ws_send_loop(p: WsProtocol, messages: list[bytes]) -> Callable[[int], None]:
    send = p.send_binary
    flush = p.data_to_send

    def run(loops: int) -> None:
        for _ in range(loops):
            for message in messages:
                send(message)
                flush()

    return run


def ws_send_all(p: WsProtocol, messages: list[bytes]) -> bytes:
    for message in messages:
        p.send_binary(message)
    return b"".join(p.data_to_send())


WEBSOCKETS = Impl(
    "websockets",
    ws_endpoint,
    ws_parse_loop,
    ws_feed_all,
    ws_endpoint,
    ws_send_loop,
    ws_send_all,
)

# -------------------------------------------------------------------------- wsproto


def wsp_endpoint(is_server: bool, deflate: bool) -> Connection:
    extensions: list[Extension] = []
    if deflate:
        ext = WspDeflate()
        if is_server:
            ext.accept("permessage-deflate")
        else:
            ext.finalize("permessage-deflate")
        # wsproto has no setting for the level; give it the compressor it would make
        # itself (15 bits, raw deflate) at the level the others use.
        ext._compressor = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -15, ZLIB_MEMLEVEL)
        extensions.append(ext)
    kind = ConnectionType.SERVER if is_server else ConnectionType.CLIENT
    return Connection(kind, extensions=extensions)


def wsp_parse_loop(chunks: list[bytes], is_server: bool, deflate: bool) -> Callable[[int], None]:
    def run(loops: int) -> None:
        for _ in range(loops):
            conn = wsp_endpoint(is_server, deflate)
            receive = conn.receive_data
            events = conn.events
            for chunk in chunks:
                receive(chunk)
                # wsproto parses lazily, inside the events() generator.
                for _event in events():
                    pass

    return run


def wsp_feed_all(chunks: list[bytes], is_server: bool, deflate: bool) -> list[bytes]:
    conn = wsp_endpoint(is_server, deflate)
    out: list[bytes] = []
    parts: list[bytes] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in conn.events():
            # wsproto hands over a large frame in pieces as they arrive.
            assert isinstance(event, BytesMessage), event
            parts.append(bytes(event.data))
            if event.message_finished:
                out.append(b"".join(parts))
                parts = []
    assert not parts
    return out


def wsp_send_loop(conn: Connection, messages: list[bytes]) -> Callable[[int], None]:
    send = conn.send

    def run(loops: int) -> None:
        for _ in range(loops):
            for message in messages:
                send(BytesMessage(data=message))

    return run


def wsp_send_all(conn: Connection, messages: list[bytes]) -> bytes:
    return b"".join(conn.send(BytesMessage(data=message)) for message in messages)


WSPROTO = Impl(
    "wsproto",
    wsp_endpoint,
    wsp_parse_loop,
    wsp_feed_all,
    wsp_endpoint,
    wsp_send_loop,
    wsp_send_all,
)

IMPLS = [OURS, WEBSOCKETS, WSPROTO]

# ----------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    op: str  # "parse" or "serialize"
    masked: bool  # client to server
    deflate: bool
    size_name: str

    @property
    def size(self) -> int:
        return SIZES[self.size_name]

    @property
    def label(self) -> str:
        direction = "c→s masked" if self.masked else "s→c unmasked"
        extra = " +deflate" if self.deflate else ""
        return f"{self.op} {direction}{extra}"


def cases() -> list[Case]:
    return [
        Case(op, masked, deflate, size_name)
        for op in ("parse", "serialize")
        for deflate in (False, True)
        for masked in (True, False)
        for size_name in SIZES
    ]


def prepare(case: Case, impl: Impl, corpus: bytes) -> tuple[Callable[[int], None], int]:
    """Check ``impl`` on ``case`` once, then return its timed loop and ops per loop."""
    if case.op == "parse":
        messages = _util.payloads(corpus, case.size, BLOB_FRAMES[case.size])
        blob = _util.build_blob(messages, masked=case.masked, deflate=case.deflate)
        chunks = _util.chunked(blob)
        # A masked frame comes from a client, so the receiver is the server.
        is_server = case.masked
        got = impl.feed_all(chunks, is_server, case.deflate)
        if got != messages:
            raise AssertionError(
                f"{impl.name} {case.label} {case.size_name}: parsed {len(got)} messages, "
                f"{sum(map(len, got))} bytes; expected {len(messages)}, "
                f"{sum(map(len, messages))}"
            )
        return impl.parse_loop(chunks, is_server, case.deflate), len(messages)
    messages = _util.payloads(corpus, case.size, SEND_POOL[case.size])
    # A masked frame is sent by a client.
    is_server = not case.masked
    wire = impl.send_all(impl.sender(is_server, case.deflate), messages)
    decoded = list(_util.decode_frames(wire, masked=case.masked, deflate=case.deflate))
    if [body for _, body in decoded] != messages or {op for op, _ in decoded} != {2}:
        raise AssertionError(f"{impl.name} {case.label} {case.size_name}: bad output")
    if case.deflate and len(wire) >= sum(map(len, messages)):
        raise AssertionError(f"{impl.name} {case.label} {case.size_name}: not compressed")
    return impl.send_loop(impl.sender(is_server, case.deflate), messages), len(messages)


MASK_KEY = b"\x5a\x17\xc3\x80"


def mask_loop(function: Callable[[bytes, bytes], bytes], data: bytes) -> Callable[[int], None]:
    assert function(function(data, MASK_KEY), MASK_KEY) == data

    def run(loops: int) -> None:
        for _ in range(loops):
            function(data, MASK_KEY)

    return run


def unmask_at_loop(
    function: Callable[[bytearray, int, int], bytes], data: bytes
) -> Callable[[int], None]:
    # The layout of a masked frame in a receive buffer: key, then payload (section 5.2).
    buf = bytearray(MASK_KEY + _util.xor_mask(data, MASK_KEY))
    end = len(buf)
    assert function(buf, 4, end) == data

    def run(loops: int) -> None:
        for _ in range(loops):
            function(buf, 4, end)

    return run


def mask_loops(data: bytes) -> list[tuple[str, Callable[[int], None]]]:
    loops = []
    if _mask.HAS_SPEEDUPS:
        loops.append(("rue_trio apply_mask (C)", mask_loop(_mask.apply_mask, data)))
        loops.append(("rue_trio unmask_at (C)", unmask_at_loop(_mask.unmask_at, data)))
    loops.append(("rue_trio apply_mask (Python)", mask_loop(_mask.PURE_PYTHON_apply_mask, data)))
    loops.append(("websockets apply_mask (C)", mask_loop(websockets.speedups.apply_mask, data)))
    return loops


# -------------------------------------------------------------------------- report


def cell(t: _util.Timing) -> str:
    return f"{_util.fmt_time(t.wall)} (cpu {_util.fmt_time(t.cpu)})"


def ratios(theirs: _util.Timing, ours: _util.Timing) -> str:
    return f"{theirs.wall / ours.wall:.2f}, {theirs.cpu / ours.cpu:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--min-time", type=float, default=0.3, help="seconds per timed repeat (default 0.3)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats, best kept (default 3)")
    parser.add_argument("--quick", action="store_true", help="--min-time 0.03 --repeats 1")
    parser.add_argument("--filter", default="", help="only cases whose label contains this")
    args = parser.parse_args(argv)
    min_time, repeats = (0.03, 1) if args.quick else (args.min_time, args.repeats)

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.machine()} {platform.system()}; rue_trio speedups: {_mask.HAS_SPEEDUPS}; "
        f"websockets {version('websockets')}; wsproto {version('wsproto')}"
    )
    print(
        f"best of {repeats} x >= {min_time} s per cell; time per operation (frame or message),"
        " wall clock (perf_counter) and process CPU time; 'x ours' = their time / ours"
    )
    print()

    corpus = _util.make_corpus(5 << 20)
    results: dict[tuple[Case, str], _util.Timing] = {}
    rows: list[list[str]] = []
    for case in cases():
        if args.filter not in f"{case.label} {case.size_name}":
            continue
        print(f"  {case.label} {case.size_name} ...", file=sys.stderr, flush=True)
        runs = {impl.name: prepare(case, impl, corpus) for impl in IMPLS}
        timings = _util.measure(runs, min_time=min_time, repeats=repeats)
        for name, timing in timings.items():
            results[case, name] = timing
        ours = timings["rue_trio"]
        row = [case.label, case.size_name, cell(ours), _util.fmt_rate(ours.rate)]
        for name in ("websockets", "wsproto"):
            row += [cell(timings[name]), ratios(timings[name], ours)]
        rows.append(row)

    if rows:
        header = [
            "benchmark",
            "size",
            "rue_trio per op",
            "rue_trio ops/s",
            "websockets per op",
            "x ours (wall, cpu)",
            "wsproto per op",
            "x ours (wall, cpu)",
        ]
        print(_util.markdown_table(header, rows))
        print()

    mask_rows: list[list[str]] = []
    mask_results: dict[tuple[str, int], _util.Timing] = {}
    for size_name, size in SIZES.items():
        if args.filter not in f"masking {size_name}":
            continue
        print(f"  masking {size_name} ...", file=sys.stderr, flush=True)
        data = _util.payloads(corpus, size, 1)[0]
        runs = {name: (run, 1) for name, run in mask_loops(data)}
        for name, t in _util.measure(runs, min_time=min_time, repeats=repeats).items():
            mask_results[name, size] = t
            mbps = size / t.wall / 1e6
            mask_rows.append([size_name, name, cell(t), f"{mbps:,.0f} MB/s"])
    if mask_rows:
        header = ["masking", "implementation", "per call", "rate"]
        print(_util.markdown_table(header, mask_rows))
        print()

    return report_targets(results, mask_results)


def report_targets(
    results: dict[tuple[Case, str], _util.Timing],
    mask_results: dict[tuple[str, int], _util.Timing],
) -> int:
    """Print PASS/FAIL for the performance targets that apply to what was run.

    The verdicts use process CPU time, which other processes on the machine do not
    inflate; on an idle machine it matches the wall clock, shown beside it.
    """
    timings = [*results.values(), *mask_results.values()]
    if timings:
        busy = statistics.median(t.wall / t.cpu for t in timings if t.cpu > 0)
        if busy > 1.15:
            print(
                f"note: the machine was busy (median wall/cpu = {busy:.2f}): "
                "wall-clock figures are inflated; compare the CPU figures"
            )
    small = Case("parse", True, False, "64 B")
    if (small, "rue_trio") in results:
        ours = results[small, "rue_trio"]
        for name, goal in (("websockets", 2.0), ("wsproto", 3.0)):
            theirs = results[small, name]
            ratio = theirs.cpu / ours.cpu
            verdict = "PASS" if ratio >= goal else "FAIL"
            print(
                f"{verdict}  parse 64 B masked client frames: {ratio:.2f}x {name} "
                f"(wall clock {theirs.wall / ours.wall:.2f}x; target >= {goal:.0f}x)"
            )
    big = 1 << 20
    theirs_key = ("websockets apply_mask (C)", big)
    ours_key = ("rue_trio apply_mask (C)", big)
    if theirs_key in mask_results and ours_key in mask_results:
        theirs_t, ours_t = mask_results[theirs_key], mask_results[ours_key]
        # Within 5 %: both loops are memory-bound, and timer noise is of that order.
        verdict = "PASS" if ours_t.cpu <= theirs_t.cpu * 1.05 else "FAIL"
        print(
            f"{verdict}  apply_mask 1 MiB: {_util.fmt_time(ours_t.cpu)} vs websockets' C "
            f"{_util.fmt_time(theirs_t.cpu)} CPU (wall clock {_util.fmt_time(ours_t.wall)} vs "
            f"{_util.fmt_time(theirs_t.wall)}; target: no slower, 5 % noise allowed)"
        )
    elif theirs_key in mask_results:
        print("FAIL  apply_mask 1 MiB: the C extension is not built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
