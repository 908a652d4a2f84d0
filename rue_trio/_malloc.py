"""The C allocator settings a server applies when it starts serving (``App(tune_malloc=...)``).

Theory of operation
-------------------
glibc's ``malloc`` returns the free memory at the top of its heap to the kernel once it
exceeds a threshold (``M_TRIM_THRESHOLD``), and serves blocks above another
(``M_MMAP_THRESHOLD``) with a fresh ``mmap`` each. Both thresholds start at 128 KiB and
follow the largest block freed so far (up to 32 MiB): the trim threshold is twice the
mmap one. A server echoing 1 MiB messages allocates and frees about 2 MiB per round trip
(the reads, the message's parts, the joined message): depending on where the heap's
layout puts them, every round trip returns those pages to the kernel and faults them
back in on the next one, about 530 minor page faults and 1 ms of system CPU per round
trip where the same code with the pages kept costs 0 faults and about 0.3 ms
(``bench/profile_server.py --scenario mib``, which prints the faults per round trip,
measured in ``docs/topics/performance.md``). The same code falls in one regime or the
other from one process to the next.

When the first server of the process starts serving, :func:`tune_malloc` therefore fixes
the two thresholds: blocks up to :data:`MMAP_THRESHOLD` come from the heap, and up to
:data:`TRIM_THRESHOLD` of free memory stays in the process for the next message instead
of going back to the kernel. The cost is that bound: after a burst of large messages the
process may keep up to 32 MiB more than it uses. Blocks above 4 MiB are still mapped and
unmapped on their own.

It is done once per process and not undone (glibc has no call that gives back its
adjusting thresholds), only with glibc, and never when the environment already sets
them (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``): then
whoever started the process chose.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

#: Blocks up to this size come from the heap (and stay there when freed).
MMAP_THRESHOLD: Final = 4 * 1024 * 1024
#: Free memory at the top of the heap kept for reuse instead of returned to the kernel.
TRIM_THRESHOLD: Final = 32 * 1024 * 1024

# glibc's malloc.h.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_ENVIRONMENT: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")

_lock = threading.Lock()
_done = False


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """Return glibc's ``mallopt``, or ``None`` on any other C library."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # pragma: no cover - glibc always has it
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_malloc(mallopt: Callable[[int, int], int] | None = None) -> bool:
    """Fix glibc's trim and mmap thresholds for this process, once; return whether it did.

    Args:
        mallopt: the function to call instead of glibc's (for tests).

    Returns:
        ``True`` if this call set them; ``False`` if an earlier call did, the
        environment sets them, or the C library is not glibc.
    """
    global _done
    with _lock:
        if _done or any(name in os.environ for name in _ENVIRONMENT):
            return False
        if mallopt is None:
            mallopt = _glibc_mallopt()
            if mallopt is None:
                return False
        _done = True
        # The mmap threshold first: setting either turns off glibc's adjustment of both.
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        return True
