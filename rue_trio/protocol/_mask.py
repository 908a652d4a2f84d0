"""Masking of frame payloads (RFC 6455 section 5.3), with an optional C accelerator.

A client masks every frame it sends and a server unmasks every frame it receives, by
XOR-ing the payload with a 4-byte key repeated over its length. The operation is its own
inverse, so one function does both: :func:`apply_mask` masks or unmasks a payload, and
:func:`unmask_at` unmasks a payload where it lies in a receive buffer, behind its key.

Both are the C versions from :mod:`rue_trio.protocol._speedups` when that extension was
built and imports, unless the environment variable ``RUE_TRIO_NO_SPEEDUPS`` is set to a
non-empty value; otherwise they are :func:`PURE_PYTHON_apply_mask` and
:func:`PURE_PYTHON_unmask_at`, which give the same results everywhere. :data:`HAS_SPEEDUPS`
tells which were chosen.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

__all__ = [
    "HAS_SPEEDUPS",
    "PURE_PYTHON_apply_mask",
    "PURE_PYTHON_unmask_at",
    "apply_mask",
    "unmask_at",
]

# Payloads up to this many bytes are masked through one big integer XOR, longer ones with
# four strided bytearray.translate() passes. Measured on CPython 3.11 (x86-64): the integer
# path costs ~0.5 us at 64 B and ~3.2 us at 1 KiB; the translate path has ~1 us of fixed
# cost but runs at ~900 MB/s (1.1 ms for 1 MiB, against 3.5 ms for the integer path).
# They cross between 384 and 512 bytes.
_INT_XOR_MAX = 448

# _XOR_TABLES[k] maps every byte b to b ^ k, as a bytes.translate() table. Built with
# big-integer arithmetic (k * 0x0101...01 repeats k in every byte): ~0.2 ms at import,
# against ~3 ms for a generator over the 65,536 entries.
_IDENTITY = int.from_bytes(bytes(range(256)), "big")
_REPEAT_BYTE = int.from_bytes(b"\x01" * 256, "big")
_XOR_TABLES = tuple((_IDENTITY ^ (k * _REPEAT_BYTE)).to_bytes(256, "big") for k in range(256))

_from_bytes = int.from_bytes


def _py_apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated over its length (RFC 6455 section 5.3).

    The pure Python implementation, always available.

    Args:
        data: the payload; any C-contiguous buffer.
        mask: the 4-byte masking key.

    Returns:
        A new bytes object of the same length as ``data``.

    Raises:
        ValueError: ``mask`` is not 4 bytes long.
        BufferError: ``data`` is a memoryview that is not C-contiguous.
    """
    if type(data) is not bytes:
        view = memoryview(data)
        if not view.c_contiguous:
            raise BufferError("data must be a C-contiguous buffer")
        # Bytes, not items: a view of an array('I') is four times longer than its len().
        data = view.cast("B")
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes long, not {len(mask)}")
    size = len(data)
    if size <= _INT_XOR_MAX:
        key = (mask * ((size >> 2) + 1))[:size]
        return (_from_bytes(data, "little") ^ _from_bytes(key, "little")).to_bytes(size, "little")
    # Byte i is XOR-ed with mask[i % 4]: translate each of the four interleaved strides
    # with the table of its key byte, in place in one copy of the payload.
    out = bytearray(data)
    tables = _XOR_TABLES
    out[0::4] = out[0::4].translate(tables[mask[0]])
    out[1::4] = out[1::4].translate(tables[mask[1]])
    out[2::4] = out[2::4].translate(tables[mask[2]])
    out[3::4] = out[3::4].translate(tables[mask[3]])
    return bytes(out)


PURE_PYTHON_apply_mask = _py_apply_mask
"""The pure Python :func:`apply_mask`, importable whether or not the C extension is built."""


def _py_unmask_at(buffer: bytes | bytearray | memoryview, start: int, end: int) -> bytes:
    """Unmask ``buffer[start:end]`` with the 4-byte key at ``buffer[start - 4:start]``.

    In a masked frame the key immediately precedes the payload (RFC 6455 section 5.2), so
    a parser can unmask a payload where it lies in its receive buffer. The pure Python
    implementation, always available.

    Args:
        buffer: any C-contiguous buffer holding the frame.
        start: the offset of the payload; the key is the 4 bytes before it.
        end: the offset just past the payload.

    Returns:
        A new bytes object of ``end - start`` bytes.

    Raises:
        ValueError: unless ``4 <= start <= end <= len(buffer)`` (in bytes).
        BufferError: ``buffer`` is a memoryview that is not C-contiguous.
    """
    view = memoryview(buffer)
    if not view.c_contiguous:
        raise BufferError("buffer must be C-contiguous")
    view = view.cast("B")
    if not 4 <= start <= end <= len(view):
        raise ValueError(
            f"need 4 <= start <= end <= len(buffer), got start={start}, end={end}, len={len(view)}"
        )
    return _py_apply_mask(view[start:end], view[start - 4 : start].tobytes())


PURE_PYTHON_unmask_at = _py_unmask_at
"""The pure Python :func:`unmask_at`, importable whether or not the C extension is built."""

_ApplyMask = Callable[[bytes | bytearray | memoryview, bytes], bytes]
_UnmaskAt = Callable[[bytes | bytearray | memoryview, int, int], bytes]


def _select() -> tuple[_ApplyMask, _UnmaskAt, bool]:
    """Choose the C implementations if they may be used and import, else the pure ones."""
    if os.environ.get("RUE_TRIO_NO_SPEEDUPS"):
        return _py_apply_mask, _py_unmask_at, False
    try:
        speedups = importlib.import_module("rue_trio.protocol._speedups")
    except ImportError:
        return _py_apply_mask, _py_unmask_at, False
    c_apply_mask: _ApplyMask = speedups.apply_mask
    c_unmask_at: _UnmaskAt = speedups.unmask_at
    return c_apply_mask, c_unmask_at, True


_SELECTED = _select()

apply_mask: _ApplyMask = _SELECTED[0]
"""XOR ``data`` with the 4-byte ``mask`` repeated over its length (RFC 6455 section 5.3).

The C implementation when available, else :func:`PURE_PYTHON_apply_mask`; both take any
C-contiguous buffer as ``data`` and return a new bytes object of the same length.
"""

unmask_at: _UnmaskAt = _SELECTED[1]
"""Unmask ``buffer[start:end]`` with the 4-byte key at ``buffer[start - 4:start]``.

The C implementation when available, else :func:`PURE_PYTHON_unmask_at`. For a parser:
``unmask_at(buf, start, frame_end)`` equals
``apply_mask(memoryview(buf)[start:frame_end], bytes(buf[start - 4 : start]))`` without
the two slices.
"""

HAS_SPEEDUPS: bool = _SELECTED[2]
"""Whether :func:`apply_mask` and :func:`unmask_at` are the C implementations."""
