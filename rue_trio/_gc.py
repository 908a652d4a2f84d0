"""The collector settings a server applies while it serves (``App(tune_gc=...)``).

Theory of operation
-------------------
Python's cyclic collector runs a young collection every 700 net new tracked objects and
a full one when the objects promoted to the old generation since the last full
collection pass a quarter of it. A server holding 10,000 WebSocket members keeps about
110 tracked objects per member alive (1.1 million), and one broadcast wakes every
member's writer in one scheduler batch: each writer stays suspended in Trio's
``send_all`` until the next batch, holding about 23 objects, so about 150,000 objects
are alive at once. They outlive the young collections, are promoted, and a full
collection over every member's objects follows: about one per broadcast, each up to
2 s (``bench/scale_bench.py --members 10000 --broadcasts 20``, measured in
``docs/topics/performance.md``). Nothing is garbage in those collections: every
per-connection object is freed by reference counting.

While a server serves, :class:`GcTuning` therefore:

* raises the youngest generation's threshold to :data:`YOUNG_THRESHOLD`, so that what a
  burst makes alive at once dies young instead of being promoted (an application that
  set a higher threshold, or disabled the collector, is left alone);
* moves the objects alive at start-up (modules, the app, its routes) to the permanent
  generation (:func:`gc.freeze`), and again each time the number of live connections
  has grown by a quarter over the last freeze from :data:`FIRST_FREEZE` connections on
  (after an accept burst): a full collection, when one runs, does not scan them. Before
  each freeze a young collection (cheap) frees the young cyclic garbage, so that it is
  not frozen with the rest. Frozen objects are still freed by reference counting;
* restores both when the last server of the process stops serving: the threshold if
  nobody changed it meanwhile, and :func:`gc.unfreeze` if nothing was frozen before.

The freezes are logarithmic in the peak number of connections (about 20 up to
100,000), so what they could keep of old cyclic garbage is bounded by as many
snapshots of it, and given back to the collector when serving stops.
"""

from __future__ import annotations

import gc
import threading
from typing import Final

__all__ = ["FIRST_FREEZE", "YOUNG_THRESHOLD", "GcTuning"]

#: The youngest generation's threshold while serving (Python's default is 700): above
#: what one broadcast to 10,000 members makes alive at once in rue_trio's server (about
#: 150,000 net new objects in 220 young collections of 700, performance.md), so that a
#: broadcast runs one or two young collections and promotes next to nothing.
YOUNG_THRESHOLD: Final = 100_000

#: Live connections at the first freeze after start-up; then each time they grow by a
#: quarter over the last freeze.
FIRST_FREEZE: Final = 1024


class _Process:
    """What the servers of this process share: there is one collector per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.servers = 0  # servers serving with the tuning on
        self.saved: tuple[int, int, int] | None = None  # thresholds before, if changed
        self.unfreeze = False  # nothing was frozen before our first freeze


_process = _Process()


def _freeze() -> None:
    gc.collect(1)  # young cyclic garbage is freed, not frozen
    gc.freeze()


class GcTuning:
    """The collector settings of one serving server: enter on start, leave on stop.

    Args:
        first_freeze: live connections at the first freeze after start-up.
    """

    __slots__ = ("_active", "_next_freeze")

    def __init__(self, first_freeze: int = FIRST_FREEZE) -> None:
        self._next_freeze = first_freeze
        self._active = False

    def enter(self) -> None:
        """Apply the settings (the first server of the process saves the previous ones)."""
        p = _process
        with p.lock:
            if not gc.isenabled():
                return  # the application manages the collector itself
            self._active = True
            p.servers += 1
            if p.servers > 1:
                return
            thresholds = gc.get_threshold()
            if 0 < thresholds[0] < YOUNG_THRESHOLD:
                p.saved = thresholds
                gc.set_threshold(YOUNG_THRESHOLD, thresholds[1], thresholds[2])
            p.unfreeze = gc.get_freeze_count() == 0
            _freeze()

    def accepted(self, live: int) -> None:
        """Freeze after an accept burst: ``live`` connections are open now."""
        if self._active and live >= self._next_freeze:
            self._next_freeze = live + live // 4
            _freeze()

    def leave(self) -> None:
        """Restore what :meth:`enter` changed once no server of the process is serving."""
        p = _process
        with p.lock:
            if not self._active:
                return
            self._active = False
            p.servers -= 1
            if p.servers:
                return
            if p.saved is not None and gc.get_threshold()[0] == YOUNG_THRESHOLD:
                gc.set_threshold(*p.saved)
            p.saved = None
            if p.unfreeze:
                gc.unfreeze()
            p.unfreeze = False
