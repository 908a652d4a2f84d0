"""Presence: who registered, joined, left; by callback and by bounded stream."""

from __future__ import annotations

import trio
import trio.testing

from rue_trio.hub import Hub, PresenceEvent, PresenceKind
from rue_trio.protocol import MessageType

from ._fakes import FakeMember

REGISTER, UNREGISTER = PresenceKind.REGISTER, PresenceKind.UNREGISTER
JOIN, LEAVE = PresenceKind.JOIN, PresenceKind.LEAVE


async def test_hub_presence_callback_sees_each_change_after_it(nursery: trio.Nursery) -> None:
    seen: list[tuple[PresenceEvent, int, list[str]]] = []

    def on_presence(event: PresenceEvent) -> None:
        seen.append((event, hub.count(), hub.members(event.room or None)))

    hub = Hub(on_presence=on_presence)
    await nursery.start(hub.run)
    a, b = FakeMember("a"), FakeMember("b")
    await hub.register(a)
    await hub.join("x", a)
    await hub.join("y", a)
    await hub.join("x", b)
    await hub.leave("y", a)
    await hub.unregister(b)
    await hub.join("y", a)
    await hub.unregister(a)
    assert seen == [
        (PresenceEvent(REGISTER, "a"), 1, ["a"]),
        (PresenceEvent(JOIN, "a", "x"), 1, ["a"]),
        (PresenceEvent(JOIN, "a", "y"), 1, ["a"]),
        (PresenceEvent(REGISTER, "b"), 2, ["a", "b"]),
        (PresenceEvent(JOIN, "b", "x"), 2, ["a", "b"]),
        (PresenceEvent(LEAVE, "a", "y"), 2, []),
        (PresenceEvent(LEAVE, "b", "x"), 2, ["a"]),
        (PresenceEvent(UNREGISTER, "b"), 1, ["a"]),
        (PresenceEvent(JOIN, "a", "y"), 1, ["a"]),
        (PresenceEvent(LEAVE, "a", "x"), 1, []),
        (PresenceEvent(LEAVE, "a", "y"), 1, []),
        (PresenceEvent(UNREGISTER, "a"), 0, []),
    ]


async def test_hub_presence_callback_may_announce_with_nowait(nursery: trio.Nursery) -> None:
    """A hook may queue a broadcast: it is delivered after the change that caused it."""

    def on_presence(event: PresenceEvent) -> None:
        if event.kind is JOIN:
            hub.broadcast_nowait(MessageType.TEXT, f"{event.member_id} joined", room=event.room)

    hub = Hub(on_presence=on_presence)
    await nursery.start(hub.run)
    alice, bob = FakeMember("alice"), FakeMember("bob")
    await hub.join("lobby", alice)
    await hub.join("lobby", bob)
    await hub.flush()
    assert alice.payloads() == [b"alice joined", b"bob joined"]
    assert bob.payloads() == [b"bob joined"]


async def test_hub_presence_stream_reports_changes_and_evictions(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    early = FakeMember("early")
    await hub.register(early)  # before the stream: not reported
    slow = FakeMember("slow", capacity=0)
    async with hub.open_presence() as events:
        await hub.join("room", slow)
        await hub.broadcast(MessageType.TEXT, "evicts slow")
        await hub.flush()
        received = [events.receive_nowait() for _ in range(4)]
    assert received == [
        PresenceEvent(REGISTER, "slow"),
        PresenceEvent(JOIN, "slow", "room"),
        PresenceEvent(LEAVE, "slow", "room"),
        PresenceEvent(UNREGISTER, "slow"),
    ]
    assert slow.evictions == [(1008, "slow consumer: outbound queue full")]
    # The stream was closed on the way out: the hub forgets it at its next event.
    await hub.unregister(early)
    assert hub.count() == 0


async def test_hub_presence_stream_ends_when_reader_falls_behind(nursery: trio.Nursery) -> None:
    """The hub waits for no one: a full stream is ended, other streams go on."""
    hub = Hub()
    await nursery.start(hub.run)
    async with hub.open_presence(max_buffer_size=2) as lagging, hub.open_presence() as keeping:
        for i in range(3):
            await hub.register(FakeMember(f"m{i}"))
        got = [event.member_id async for event in lagging]
        assert got == ["m0", "m1"]
        await hub.register(FakeMember("m3"))
        assert [keeping.receive_nowait().member_id for _ in range(4)] == [
            "m0",
            "m1",
            "m2",
            "m3",
        ]


async def test_hub_presence_stream_ends_at_shutdown(autojump_clock: trio.abc.Clock) -> None:
    """A reader outside the hub's nursery sees its stream end when the hub stops."""
    hub = Hub()
    got: list[PresenceEvent] = []

    async def read(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with hub.open_presence() as events:
            task_status.started()
            got.extend([event async for event in events])

    with trio.fail_after(10):
        # The reader is not cancelled: its loop must end by itself for `outer` to exit.
        async with trio.open_nursery() as outer, trio.open_nursery() as hub_nursery:
            await hub_nursery.start(hub.run)
            await outer.start(read)
            await hub.register(FakeMember("m"))
            hub_nursery.cancel_scope.cancel()
    assert got == [PresenceEvent(REGISTER, "m")]
