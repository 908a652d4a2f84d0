"""Suite-wide hooks: no silent skip under CI, and a per-test time bound for Trio tests.

With ``CI`` set (``.ci/run`` sets it), a test that skips fails instead, whatever the
reason: what CI runs must be there (the C accelerator, Redis, Chromium). Locally a
missing optional piece skips, and ``-ra`` lists why.

pytest-timeout (``timeout`` in pyproject.toml, ``@pytest.mark.timeout(seconds)`` on a
test) bounds every test in wall-clock seconds. Its ``signal`` method raises from a SIGALRM
handler, which, inside a running ``trio.run``, abandons the run: no ``finally`` block
runs, so sockets and child processes of the hung test leak into the next one. For a Trio
test this module takes over the timer: at the deadline it cancels the test's body through
its Trio token (cleanup runs, the test fails with its name and where each task was
waiting); if the body does not return within :data:`GRACE` seconds (a shielded wait, a
hang in a fixture, a blocked thread), it falls back to raising from the signal handler.
Tests under Trio's mock clock are not affected: they take milliseconds of real time.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pytest
import trio

GRACE = 5.0
"""Seconds a cancelled Trio test gets to unwind before the hard fallback."""


@dataclass
class _TrioBody:
    """The running body of one Trio test: how to cancel it from a signal handler."""

    token: trio.lowlevel.TrioToken
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    fired: bool = False
    waiting: list[str] = field(default_factory=list)


_LIBRARIES = ("trio.", "pytest_trio.", "outcome.")
_bodies: dict[pytest.Item, _TrioBody] = {}
_timeouts: dict[pytest.Item, float] = {}


def _iter_tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _iter_tasks(child)


def _cancel(body: _TrioBody) -> None:
    """In Trio: note where every task waits, then cancel the test's body."""
    root = trio.lowlevel.current_root_task()
    assert root is not None  # called in Trio, by run_sync_soon
    for task in _iter_tasks(root):
        ours = [
            (frame, line)
            for frame, line in task.iter_await_frames()
            if not frame.f_globals.get("__name__", "").startswith(_LIBRARIES)
        ]
        if ours:
            frame, line = ours[-1]
            body.waiting.append(
                f"{task.name}: {frame.f_code.co_filename}:{line} in {frame.f_code.co_name}"
            )
    body.scope.cancel()


def _is_trio_test(item: pytest.Item) -> bool:
    return isinstance(item, pytest.Function) and item.get_closest_marker("trio") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Arm SIGALRM for a Trio test; other tests keep pytest-timeout's own timer."""
    if not _is_trio_test(item) or settings.method != "signal" or not settings.timeout:
        return None
    timeout = _timeouts[item] = float(settings.timeout)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        body = _bodies.get(item)
        if body is not None and not body.fired:
            body.fired = True
            body.token.run_sync_soon(_cancel, body)
            signal.setitimer(signal.ITIMER_REAL, GRACE)
            return
        pytest.fail(
            f"Timeout (>{timeout:g}s): the test did not unwind after its Trio body was "
            f"cancelled, or hung outside it (a fixture, a shielded wait, a thread)",
            pytrace=False,
        )

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    """Disarm the timer :func:`pytest_timeout_set_timer` armed."""
    if not _is_trio_test(item):
        return None
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    _timeouts.pop(item, None)
    return True


def _bounded(item: pytest.Function, test: Callable[..., Awaitable[None]]) -> Any:
    """``test`` inside a cancel scope that the timer can reach."""

    @functools.wraps(test)
    async def bounded(**kwargs: Any) -> None:
        body = _TrioBody(trio.lowlevel.current_trio_token())
        _bodies[item] = body
        try:
            with body.scope:
                await test(**kwargs)
        finally:
            del _bodies[item]
        if body.fired:
            waiting = "\n  ".join(body.waiting) or "(no task was waiting)"
            pytest.fail(
                f"Timeout (>{_timeouts[item]:g}s): the test was cancelled; "
                f"its tasks were waiting at:\n  {waiting}",
                pytrace=False,
            )

    return bounded


def _fail_skip_under_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI is set, so nothing may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, turn a test's skip into a failure that gives the skip's reason."""
    outcome: Any = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Under CI, a module that skips itself (``pytest.importorskip``) fails too."""
    outcome: Any = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Wrap a Trio test's body before pytest-trio turns it into a ``trio.run`` call."""
    if (
        isinstance(item, pytest.Function)
        and _is_trio_test(item)
        and not hasattr(item.obj, "hypothesis")
    ):
        item.obj = _bounded(item, item.obj)
    yield
