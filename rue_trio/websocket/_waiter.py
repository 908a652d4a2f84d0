"""A place for one task to sleep until another wakes it: the cheapest wakeup Trio offers.

The connection has several one-task waits on its hot path: the writer waiting for frames,
the application waiting for a message, the reader waiting for room in the inbound buffer.
Each has at most one sleeper by construction, so :class:`trio.lowlevel.ParkingLot`'s
bookkeeping for many is not needed; checking :attr:`Waiter.task` costs an attribute read.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import trio
from trio.lowlevel import Abort, RaiseCancelT, Task, current_task, reschedule

__all__ = ["Waiter"]


class Waiter:
    """Holds at most one sleeping task.

    Attributes:
        task: the sleeping task, or ``None``.
    """

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: Task | None = None

    def wait(self) -> Coroutine[Any, Any, object]:
        """Sleep until :meth:`wake`: ``await waiter.wait()``.

        Cancellation: the task just stops sleeping.

        A plain method returning Trio's own sleeping coroutine, not an ``async def``: an
        idle connection keeps two tasks asleep here, and a coroutine frame of our own
        would cost about 300 bytes each (and a frame per wait on the hot path). The
        caller must await the result at once.

        Raises:
            RuntimeError: another task is already sleeping here (a bug of the caller).
        """
        if self.task is not None:
            raise RuntimeError("another task is already waiting here")
        self.task = current_task()
        # A bound method, not a closure: cheaper to build, and an idle connection keeps
        # one per sleeping task. Returned unawaited on purpose (see above).
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105

    def _abort(self, _: RaiseCancelT) -> Abort:
        self.task = None
        return Abort.SUCCEEDED

    def wake(self) -> None:
        """Wake the sleeping task, if any."""
        task = self.task
        if task is not None:
            self.task = None
            reschedule(task)
