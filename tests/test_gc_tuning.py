"""The collector settings a server applies while it serves (rue_trio._gc, App(tune_gc))."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from rue_trio._gc import YOUNG_THRESHOLD, GcTuning
from rue_trio.app import App
from tests.test_server import running


@pytest.fixture(autouse=True)
def _collector() -> Iterator[None]:
    """Each test starts from Python's defaults and leaves the collector as it found it."""
    thresholds = gc.get_threshold()
    enabled = gc.isenabled()
    gc.unfreeze()
    gc.set_threshold(700, thresholds[1], thresholds[2])
    gc.enable()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if not enabled:
        gc.disable()


async def test_server_tune_gc_serving_raises_threshold_freezes_then_restores() -> None:
    async with running(App()) as (_, scope, done):
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
        scope.cancel()
        await done.wait()
    assert gc.get_threshold()[0] == 700
    assert gc.get_freeze_count() == 0


async def test_server_tune_gc_off_leaves_collector_alone() -> None:
    async with running(App(tune_gc=False)) as (_, scope, done):
        assert gc.get_threshold()[0] == 700
        assert gc.get_freeze_count() == 0
        scope.cancel()
        await done.wait()


async def test_server_tune_gc_two_servers_restore_when_last_stops() -> None:
    async with (
        running(App()) as (_, first, first_done),
        running(App()) as (_, second, second_done),
    ):
        first.cancel()
        await first_done.wait()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        second.cancel()
        await second_done.wait()
    assert gc.get_threshold()[0] == 700
    assert gc.get_freeze_count() == 0


async def test_server_tune_gc_disabled_collector_is_left_alone() -> None:
    gc.disable()
    async with running(App()) as (_, scope, done):
        assert gc.get_threshold()[0] == 700
        assert gc.get_freeze_count() == 0
        scope.cancel()
        await done.wait()
    assert not gc.isenabled()


async def test_server_tune_gc_application_threshold_is_kept() -> None:
    gc.set_threshold(500_000)
    async with running(App()) as (_, scope, done):
        assert gc.get_threshold()[0] == 500_000
        scope.cancel()
        await done.wait()
    assert gc.get_threshold()[0] == 500_000


async def test_server_tune_gc_serve_stream_leaves_collector_alone() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.aclose()
    await App().serve_stream(server)
    assert gc.get_threshold()[0] == 700
    assert gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_server_tune_gc_burst_freezes_live_objects_not_cyclic_garbage() -> None:
    tuning = GcTuning(first_freeze=4)
    tuning.enter()
    try:
        tuning.accepted(3)  # below the first freeze
        before = gc.get_freeze_count()
        held: list[list[int]] = [[] for _ in range(50)]  # tracked and alive: frozen
        garbage = _Node()
        gone = weakref.ref(garbage)
        del garbage
        tuning.accepted(4)
        assert gc.get_freeze_count() >= before + len(held)
        assert gone() is None  # the young collection before the freeze freed the cycle
        frozen = gc.get_freeze_count()
        tuning.accepted(4)  # the next freeze waits for a quarter more connections
        assert gc.get_freeze_count() == frozen
        tuning.accepted(5)
        assert gc.get_freeze_count() >= frozen
        del held
    finally:
        tuning.leave()
    assert gc.get_freeze_count() == 0


async def test_server_tune_gc_accept_burst_freezes(monkeypatch: pytest.MonkeyPatch) -> None:
    import rue_trio.server

    monkeypatch.setattr(rue_trio.server, "GcTuning", lambda: GcTuning(first_freeze=3))
    app = App()
    app.get("/", lambda c: c.string(200, "ok"))
    async with running(app) as (port, scope, done):
        at_start = gc.get_freeze_count()
        held: list[list[int]] = [[] for _ in range(100)]  # alive now: frozen by the burst's freeze
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert gc.get_freeze_count() >= at_start + len(held)
        for stream in streams:
            await stream.aclose()
        scope.cancel()
        await done.wait()
    assert gc.get_freeze_count() == 0
