"""The hub's life: commands and acknowledgements, backpressure, statistics, shutdown."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rue_trio.hub import Hub, HubStatistics, PresenceKind
from rue_trio.protocol import MessageType

from ._fakes import FakeMember

TEXT = MessageType.TEXT


def test_hub_init_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="policy"):
        Hub(policy="block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inbox_size"):
        Hub(inbox_size=0)
    assert Hub().policy == "close"


async def test_hub_register_visible_when_it_returns(nursery: trio.Nursery) -> None:
    """An awaited register is processed when it returns: count() includes the member."""
    hub = Hub()
    await nursery.start(hub.run)
    member = FakeMember("m")
    await hub.register(member)
    assert hub.count() == 1
    assert hub.members() == ["m"]
    await hub.register(member)  # the same member again: no-op
    assert hub.count() == 1


async def test_hub_register_waits_for_the_hub_to_start(nursery: trio.Nursery) -> None:
    hub = Hub()
    member = FakeMember("m")
    registered = trio.Event()

    async def register() -> None:
        await hub.register(member)
        registered.set()

    nursery.start_soon(register)
    await trio.testing.wait_all_tasks_blocked()
    assert not registered.is_set()
    assert hub.statistics().inbox_queued == 1
    await nursery.start(hub.run)
    await registered.wait()
    assert hub.count() == 1


async def test_hub_nowait_commands_seen_after_flush(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    a, b = FakeMember("a"), FakeMember("b")
    hub.register_nowait(a)
    hub.join_nowait("room", b)
    hub.broadcast_nowait(TEXT, "hello", room="room")
    hub.leave_nowait("room", b)
    hub.unregister_nowait(a)
    await hub.flush()
    assert hub.members() == ["b"]
    assert hub.rooms() == []
    assert b.payloads() == [b"hello"]
    assert a.payloads() == []


async def test_hub_register_duplicate_id_refused(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    first, impostor = FakeMember("same"), FakeMember("same")
    await hub.register(first)
    with pytest.raises(ValueError, match="'same'"):
        await hub.register(impostor)
    with pytest.raises(ValueError, match="'same'"):
        await hub.join("room", impostor)
    hub.register_nowait(impostor)  # cannot report: ignored
    # The impostor cannot unregister or move the registered member.
    await hub.leave("room", impostor)
    await hub.unregister(impostor)
    await hub.broadcast(TEXT, "x")
    await hub.flush()
    assert hub.count() == 1
    assert hub.rooms() == []
    assert first.payloads() == [b"x"]
    assert impostor.payloads() == []


async def test_hub_unregister_unknown_member_is_noop(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    await hub.unregister(FakeMember("ghost"))
    await hub.leave("room", FakeMember("ghost"))
    assert hub.count() == 0


async def test_hub_full_inbox_makes_publishers_wait() -> None:
    """Backpressure on publishers: a full inbox blocks broadcast, broadcast_nowait raises."""
    hub = Hub(inbox_size=2)
    member = FakeMember("m")
    hub.register_nowait(member)
    hub.broadcast_nowait(TEXT, "1")
    with pytest.raises(trio.WouldBlock):
        hub.broadcast_nowait(TEXT, "2")
    with pytest.raises(trio.WouldBlock):
        hub.join_nowait("room", member)
    sent = trio.Event()

    async def publish() -> None:
        await hub.broadcast(TEXT, "2")
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        stats = hub.statistics()
        assert (stats.inbox_queued, stats.publishers_waiting) == (2, 1)
        await nursery.start(hub.run)
        await sent.wait()
        await hub.flush()
        assert member.payloads() == [b"1", b"2"]
        nursery.cancel_scope.cancel()


async def test_hub_statistics_snapshot(nursery: trio.Nursery) -> None:
    hub = Hub(policy="drop")
    await nursery.start(hub.run)
    members = [FakeMember("a"), FakeMember("b", capacity=1), FakeMember("c", key=None)]
    for member in members:
        await hub.join("room", member)
    await hub.join("other", members[0])
    await hub.broadcast(TEXT, "1")
    await hub.broadcast(TEXT, "2", room="room")
    await hub.flush()
    assert hub.statistics() == HubStatistics(
        members=3,
        rooms=2,
        broadcasts=2,
        deliveries=5,
        encodes=4,
        dropped=1,
        evicted=0,
        inbox_queued=0,
        publishers_waiting=0,
    )


async def test_hub_shutdown_evicts_what_it_owns() -> None:
    """Cancelling run() evicts every member with 1001; later commands fail or no-op."""
    hub = Hub()
    members = [FakeMember("a"), FakeMember("b", key=None)]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.join("room", members[0])
        await hub.register(members[1])
        nursery.cancel_scope.cancel()
    for member in members:
        assert member.evictions == [(1001, "going away")]
    assert (hub.count(), hub.rooms(), hub.members()) == (0, [], [])

    late = FakeMember("late")
    with pytest.raises(trio.BrokenResourceError):
        await hub.register(late)
    with pytest.raises(trio.BrokenResourceError):
        hub.register_nowait(late)
    with pytest.raises(trio.BrokenResourceError):
        await hub.join("room", late)
    with pytest.raises(trio.BrokenResourceError):
        await hub.broadcast(TEXT, "x")
    with pytest.raises(trio.BrokenResourceError):
        hub.broadcast_nowait(TEXT, "x")
    with pytest.raises(trio.BrokenResourceError):
        await hub.flush()
    # Undoing membership on a stopped hub is harmless: it holds no one.
    await hub.unregister(members[0])
    hub.unregister_nowait(members[0])
    await hub.leave("room", members[0])
    hub.leave_nowait("room", members[0])
    with pytest.raises(RuntimeError, match="runs once"):
        await hub.run()
    assert late.evictions == []


async def test_hub_shutdown_fails_pending_commands() -> None:
    """Commands still in the inbox at shutdown are discarded; waiting callers are told."""
    hub = Hub()
    queued, waiting, leaving = FakeMember("queued"), FakeMember("waiting"), FakeMember("l")
    hub.register_nowait(queued)
    hub.broadcast_nowait(TEXT, "never")
    outcomes: dict[str, object] = {}

    async def command(name: str, call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except trio.BrokenResourceError as exc:
            outcomes[name] = exc
        else:
            outcomes[name] = "ok"

    async def subscribe() -> None:
        async with hub.open_presence():
            raise AssertionError("the subscription cannot start on a stopped hub")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(command, "join", hub.join("room", waiting))
        nursery.start_soon(command, "leave", hub.leave("room", leaving))
        nursery.start_soon(command, "flush", hub.flush())
        nursery.start_soon(command, "presence", subscribe())
        await trio.testing.wait_all_tasks_blocked()
        assert hub.statistics().inbox_queued == 6
        with trio.CancelScope() as scope:
            scope.cancel()
            await hub.run()
    assert isinstance(outcomes["join"], trio.BrokenResourceError)
    assert isinstance(outcomes["flush"], trio.BrokenResourceError)
    assert isinstance(outcomes["presence"], trio.BrokenResourceError)
    assert outcomes["leave"] == "ok"
    # Members that asked to join a hub going away are told to go away too.
    assert queued.evictions == [(1001, "going away")]
    assert waiting.evictions == [(1001, "going away")]
    assert leaving.evictions == []
    assert queued.frames == waiting.frames == type(queued.frames)()


@pytest.mark.parametrize("failing", [PresenceKind.REGISTER, PresenceKind.UNREGISTER])
async def test_hub_failure_evicts_with_1011(failing: PresenceKind) -> None:
    """A hub that fails (here a bug, simulated in its presence step) closes with 1011.

    The caller whose command it failed on is not left waiting: a registration is
    reported as failed, an unregistration as done (a stopped hub holds no one).
    """

    class HookError(Exception):
        pass

    hub = Hub()
    emit = hub._emit

    def buggy_emit(kind: PresenceKind, member_id: str, room: str | None) -> None:
        if kind is failing and member_id == "second":
            raise HookError
        emit(kind, member_id, room)

    hub._emit = buggy_emit  # type: ignore[method-assign]
    first, second = FakeMember("first"), FakeMember("second")

    async def run_hub(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with pytest.raises(HookError):
            await hub.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(run_hub)
        await hub.register(first)
        if failing is PresenceKind.REGISTER:
            with pytest.raises(trio.BrokenResourceError):
                await hub.register(second)
        else:
            await hub.register(second)
            await hub.unregister(second)
    assert first.evictions == [(1011, "hub failed")]
    assert second.evictions == ([(1011, "hub failed")] if failing is PresenceKind.REGISTER else [])
    with pytest.raises(trio.BrokenResourceError):
        await hub.flush()


async def test_hub_running_only_between_start_and_end() -> None:
    hub = Hub()
    assert not hub.running
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        assert hub.running
        nursery.cancel_scope.cancel()
    assert not hub.running
