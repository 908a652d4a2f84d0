"""Helpers for the benchmarks: payloads, an independent frame codec, timing, tables.

Nothing here uses the code under test. Frames are built and checked with ``struct``,
an integer XOR for masking and ``zlib`` for permessage-deflate (RFC 7692 section 7.2),
so every implementation parses the same bytes and every implementation's output is
checked by the same decoder.
"""

from __future__ import annotations

import gc
import json
import math
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

CHUNK_SIZE = 64 * 1024

# -------------------------------------------------------------------- payloads

_WORD_TEXT = (
    "hello world room chat message user online typing seen delivered please thanks "
    "meeting tomorrow project release build test deploy merge review coffee lunch "
    "websocket trio python frame server client broadcast hub latency ok sure great "
    "why when where how what who maybe later now today yes no lol brb afk gg"
)
_WORDS = tuple(_WORD_TEXT.split())


def make_corpus(size: int, seed: int = 6455) -> bytes:
    """Return ``size`` bytes of chat-like JSON lines: compressible, but not repetitive."""
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    seq = 0
    while total < size:
        seq += 1
        line = json.dumps(
            {
                "type": "chat",
                "room": f"room-{rng.randrange(64)}",
                "from": f"user{rng.randrange(100_000)}",
                "seq": seq,
                "ts": 1_700_000_000 + rng.randrange(10**7),
                "content": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 24))),
            },
            separators=(",", ":"),
        )
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def payloads(corpus: bytes, size: int, count: int) -> list[bytes]:
    """Return ``count`` distinct payloads of ``size`` bytes cut from ``corpus``.

    Distinct payloads matter with permessage-deflate and context takeover: the same
    message sent twice would compress to one back-reference the second time.
    """
    span = len(corpus) - size
    step = max(1, span // max(1, count)) if count > 1 else 1
    out = []
    for i in range(count):
        start = (i * step + i * 7) % (span + 1)
        out.append(corpus[start : start + size])
    return out


# ------------------------------------------------------ an independent frame codec


def xor_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 section 5.3 masking with one big-integer XOR (independent of rue_trio)."""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class Deflater:
    """RFC 7692 section 7.2.1 compression with context takeover (zlib level 1, 15 bits)."""

    def __init__(self) -> None:
        self._c = zlib.compressobj(1, zlib.DEFLATED, -15, 8)

    def __call__(self, data: bytes) -> bytes:
        out = self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]


def encode_frame(
    payload: bytes, *, opcode: int = 2, mask: bytes | None = None, rsv1: bool = False
) -> bytes:
    """Encode one final frame (RFC 6455 section 5.2)."""
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", b0, mbit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is None:
        return header + payload
    return header + mask + xor_mask(payload, mask)


def build_blob(messages: list[bytes], *, masked: bool, deflate: bool, seed: int = 1) -> bytes:
    """Encode ``messages`` as consecutive binary frames, as one side would send them."""
    rng = random.Random(seed)
    deflater = Deflater() if deflate else None
    frames = []
    for message in messages:
        body = deflater(message) if deflater is not None else message
        mask = rng.randbytes(4) if masked else None
        frames.append(encode_frame(body, mask=mask, rsv1=deflater is not None))
    return b"".join(frames)


def chunked(blob: bytes, size: int = CHUNK_SIZE) -> list[bytes]:
    """Split ``blob`` into chunks as a socket might deliver them."""
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def decode_frames(data: bytes, *, masked: bool, deflate: bool) -> Iterator[tuple[int, bytes]]:
    """Decode whole, final frames; yield ``(opcode, payload)``, inflated when RSV1 is set."""
    inflater = zlib.decompressobj(-15) if deflate else None
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x80, "the benchmarks only send final frames"
        assert bool(b1 & 0x80) == masked, "wrong masking for this direction"
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        mask = None
        if masked:
            mask = data[pos : pos + 4]
            pos += 4
        body = data[pos : pos + n]
        pos += n
        if mask is not None:
            body = xor_mask(body, mask)
        if b0 & 0x40:
            assert inflater is not None, "RSV1 without permessage-deflate"
            body = inflater.decompress(body + b"\x00\x00\xff\xff")
        yield b0 & 0x0F, body


# ------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class Timing:
    """The best of several runs, per operation."""

    wall: float
    cpu: float
    ops: int

    @property
    def rate(self) -> float:
        return 1.0 / self.wall


def _calibrate(run: Callable[[int], None], min_time: float) -> int:
    """Return how many loops of ``run`` take about ``min_time`` seconds."""
    loops = 1
    while True:
        start = time.perf_counter()
        run(loops)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 10:
            return max(1, math.ceil(loops * min_time / elapsed))
        loops *= 4 if elapsed < min_time / 100 else 2


def measure(
    runs: dict[str, tuple[Callable[[int], None], int]], *, min_time: float, repeats: int
) -> dict[str, Timing]:
    """Time each ``run(loops)`` (given with its operations per loop); keep the best repeat.

    Loops are calibrated so that one repeat lasts about ``min_time``. The repeats of the
    implementations are interleaved (A B C, A B C, ...), so that a change in the machine's
    load while a cell runs does not favour one of them. Like :mod:`timeit`, the garbage
    collector is off while timing. Both the wall clock (``perf_counter``) and the process
    CPU time (``process_time``) are kept, each the best of ``repeats``.
    """
    loops = {name: _calibrate(run, min_time) for name, (run, _) in runs.items()}
    best_wall = dict.fromkeys(runs, math.inf)
    best_cpu = dict.fromkeys(runs, math.inf)
    enabled = gc.isenabled()
    try:
        for _ in range(repeats):
            for name, (run, _) in runs.items():
                gc.collect()
                gc.disable()
                cpu0 = time.process_time()
                wall0 = time.perf_counter()
                run(loops[name])
                wall1 = time.perf_counter()
                cpu1 = time.process_time()
                if enabled:
                    gc.enable()
                best_wall[name] = min(best_wall[name], wall1 - wall0)
                best_cpu[name] = min(best_cpu[name], cpu1 - cpu0)
    finally:
        if enabled:
            gc.enable()
    results = {}
    for name, (_, ops_per_loop) in runs.items():
        ops = loops[name] * ops_per_loop
        results[name] = Timing(best_wall[name] / ops, best_cpu[name] / ops, ops)
    return results


def fmt_time(seconds: float) -> str:
    """Format a per-operation time with a readable unit."""
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def fmt_rate(per_second: float) -> str:
    """Format operations per second."""
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k/s"
    return f"{per_second:.0f} /s"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Render a Markdown table with aligned columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
