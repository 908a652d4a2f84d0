"""Broadcasting: encode once per key group, rooms, exclusion, slow and closing members."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

import pytest
import trio
import trio.lowlevel

from rue_trio.hub import PLAIN, Hub
from rue_trio.protocol import MessageType, encode_message

from ._fakes import FakeMember

TEXT = MessageType.TEXT
BINARY = MessageType.BINARY
# The three kinds of encode key: the fast path, a shared key, a member of its own.
KEYS: list[Hashable | None] = [PLAIN, ("deflate", 15), None]
KEY_IDS = ["plain", "shared", "own"]


async def start_hub(nursery: trio.Nursery, **options: Any) -> Hub:
    hub = Hub(**options)
    await nursery.start(hub.run)
    return hub


async def test_hub_broadcast_thousand_members_in_order_and_same_bytes(
    nursery: trio.Nursery,
) -> None:
    """A burst reaches 1,000 plain members in order; each message is one bytes object."""
    hub = await start_hub(nursery)
    members = [FakeMember(f"m{i}") for i in range(1000)]
    for member in members:
        await hub.register(member)
    assert hub.count() == 1000
    for i in range(50):
        await hub.broadcast(TEXT, f"message {i}")
    await hub.flush()

    first = members[0]
    assert first.payloads() == [f"message {i}".encode() for i in range(50)]
    assert list(first.frames)[7] == encode_message(TEXT, "message 7")
    for member in members:
        assert len(member.frames) == 50
        assert all(a is b for a, b in zip(member.frames, first.frames, strict=True))
        # The fast path: the hub encoded plain frames itself.
        assert member.encode_calls == 0
    stats = hub.statistics()
    assert (stats.broadcasts, stats.encodes, stats.deliveries) == (50, 50, 50_000)


async def test_hub_broadcast_shared_key_encodes_once_per_group(nursery: trio.Nursery) -> None:
    """Members with an equal non-plain key share one frame, made by one of them."""
    hub = await start_hub(nursery)
    deflate_a = [FakeMember(f"a{i}", key=("deflate", 15)) for i in range(5)]
    deflate_b = [FakeMember(f"b{i}", key=("deflate", 9)) for i in range(5)]
    plain = [FakeMember(f"p{i}") for i in range(3)]
    for member in deflate_a + deflate_b + plain:
        await hub.register(member)
    for i in range(4):
        await hub.broadcast(BINARY, bytes([i]) * 10)
    await hub.flush()

    for group in (deflate_a, deflate_b, plain):
        for member in group:
            assert all(a is b for a, b in zip(member.frames, group[0].frames, strict=True))
    assert sum(m.encode_calls for m in deflate_a) == 4
    assert sum(m.encode_calls for m in deflate_b) == 4
    assert deflate_a[0].frames[0] is not deflate_b[0].frames[0]
    assert deflate_a[0].frames[0] is not plain[0].frames[0]
    assert hub.statistics().encodes == 12


async def test_hub_broadcast_key_none_encodes_per_member(nursery: trio.Nursery) -> None:
    """A member that keeps a compression context gets its own encode call per message."""
    hub = await start_hub(nursery)
    solos = [FakeMember(f"s{i}", key=None) for i in range(3)]
    for member in solos:
        await hub.register(member)
    await hub.broadcast(TEXT, "one")
    await hub.broadcast(TEXT, "two")
    await hub.flush()
    for member in solos:
        assert member.encode_calls == 2
        assert member.payloads() == [b"one", b"two"]
    assert solos[0].frames[0] is not solos[1].frames[0]
    assert hub.statistics().encodes == 6


async def test_hub_broadcast_room_reaches_only_its_members(nursery: trio.Nursery) -> None:
    hub = await start_hub(nursery)
    a, b, c = FakeMember("a"), FakeMember("b"), FakeMember("c")
    await hub.join("red", a)
    await hub.join("red", b)
    await hub.join("blue", c)
    await hub.broadcast(TEXT, "to red", room="red")
    await hub.broadcast(TEXT, "to blue", room="blue")
    await hub.broadcast(TEXT, "to nobody", room="green")
    await hub.broadcast(TEXT, "to all")
    await hub.flush()
    assert a.payloads() == [b"to red", b"to all"]
    assert b.payloads() == [b"to red", b"to all"]
    assert c.payloads() == [b"to blue", b"to all"]
    assert hub.statistics().broadcasts == 4


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("by_id", [False, True])
async def test_hub_broadcast_exclude_skips_one_member(
    nursery: trio.Nursery, key: Hashable | None, by_id: bool
) -> None:
    """``exclude`` takes a member or its id, in every kind of key group."""
    hub = await start_hub(nursery)
    members = [FakeMember(f"m{i}", key=key) for i in range(4)]
    for member in members:
        await hub.join("room", member)
    sender = members[1]
    await hub.broadcast(TEXT, "hi", room="room", exclude=sender.id if by_id else sender)
    await hub.broadcast(TEXT, "all", exclude="nobody")
    await hub.flush()
    assert sender.payloads() == [b"all"]
    for member in members[:1] + members[2:]:
        assert member.payloads() == [b"hi", b"all"]
    assert hub.statistics().deliveries == 3 + 4


async def test_hub_leave_stops_room_messages_and_drops_empty_room(nursery: trio.Nursery) -> None:
    hub = await start_hub(nursery)
    a, b = FakeMember("a"), FakeMember("b")
    await hub.join("room", a)
    await hub.join("room", b)
    await hub.join("room", b)  # twice: no-op
    assert hub.members("room") == ["a", "b"]
    await hub.leave("room", a)
    await hub.leave("room", a)  # not in the room: no-op
    await hub.broadcast(TEXT, "after", room="room")
    await hub.flush()
    assert a.payloads() == []
    assert b.payloads() == [b"after"]
    assert hub.count() == 2
    await hub.leave("room", b)
    assert hub.rooms() == []
    assert hub.count("room") == 0
    assert hub.members("room") == []
    assert hub.members() == ["a", "b"]


async def test_hub_unregister_removes_from_all_rooms(nursery: trio.Nursery) -> None:
    hub = await start_hub(nursery)
    a, b = FakeMember("a"), FakeMember("b", key=None)
    for room in ("x", "y", "z"):
        await hub.join(room, a)
        await hub.join(room, b)
    assert hub.rooms() == ["x", "y", "z"]
    await hub.unregister(a)
    assert hub.count() == 1
    assert [hub.members(room) for room in ("x", "y", "z")] == [["b"]] * 3
    await hub.unregister(b)
    assert hub.rooms() == []
    assert hub.count() == 0
    for target in ("x", None):
        await hub.broadcast(TEXT, "gone", room=target)
    await hub.flush()
    assert not a.frames
    assert not b.frames


async def test_hub_slow_member_evicted_under_close_policy(nursery: trio.Nursery) -> None:
    """The hub never waits on one client (design.md).

    A full queue evicts that member with 1008; the others get everything.
    """
    hub = await start_hub(nursery, policy="close")
    slow = FakeMember("slow", capacity=3)
    slow_keyed = FakeMember("slow-keyed", key=("deflate", 15), capacity=2)
    slow_solo = FakeMember("slow-solo", key=None, capacity=1)
    others = [FakeMember(f"m{i}") for i in range(10)] + [FakeMember("k", key=("deflate", 15))]
    for member in [slow, slow_keyed, slow_solo, *others]:
        await hub.join("room", member)
    for i in range(10):
        await hub.broadcast(TEXT, str(i), room="room")
    await hub.flush()

    reason = "slow consumer: outbound queue full"
    assert slow.evictions == [(1008, reason)]
    assert slow_keyed.evictions == [(1008, reason)]
    assert slow_solo.evictions == [(1008, reason)]
    assert len(slow.frames) == 3
    assert len(slow_keyed.frames) == 2
    assert len(slow_solo.frames) == 1
    for member in others:
        assert member.payloads() == [str(i).encode() for i in range(10)]
        assert member.evictions == []
    assert hub.members("room") == [m.id for m in others]
    assert hub.count() == len(others)
    stats = hub.statistics()
    assert (stats.evicted, stats.dropped) == (3, 0)
    assert stats.deliveries == 10 * len(others) + 3 + 2 + 1


async def test_hub_slow_member_drops_frames_under_drop_policy(nursery: trio.Nursery) -> None:
    hub = await start_hub(nursery, policy="drop")
    assert hub.policy == "drop"
    slow = FakeMember("slow", capacity=2)
    fast = FakeMember("fast")
    await hub.register(slow)
    await hub.register(fast)
    for i in range(5):
        await hub.broadcast(TEXT, str(i))
    await hub.flush()
    assert slow.payloads() == [b"0", b"1"]
    assert fast.payloads() == [b"0", b"1", b"2", b"3", b"4"]
    assert slow.evictions == []
    assert hub.count() == 2
    # It keeps receiving once its queue drains.
    slow.frames.clear()
    await hub.broadcast(TEXT, "later")
    await hub.flush()
    assert slow.payloads() == [b"later"]
    stats = hub.statistics()
    assert (stats.dropped, stats.evicted, stats.deliveries) == (3, 0, 2 + 5 + 2)


async def test_hub_broadcast_exclude_with_failing_plain_members(nursery: trio.Nursery) -> None:
    """The exclusion loop settles slow and closed members like the plain loop."""
    hub = await start_hub(nursery)
    sender, slow, gone, ok = (FakeMember(n) for n in ("sender", "slow", "gone", "ok"))
    slow.capacity = 0
    gone.send_error = trio.BrokenResourceError
    for member in (sender, slow, gone, ok):
        await hub.register(member)
    await hub.broadcast(TEXT, "x", exclude=sender)
    await hub.flush()
    assert hub.members() == ["sender", "ok"]
    assert slow.evictions == [(1008, "slow consumer: outbound queue full")]
    assert gone.evictions == []
    assert ok.payloads() == [b"x"]
    assert sender.payloads() == []


async def test_hub_applies_a_long_queue_in_batches(nursery: trio.Nursery) -> None:
    """More queued commands than one batch: all applied, in order."""
    hub = Hub()
    member = FakeMember("m")
    hub.register_nowait(member)
    for i in range(200):
        hub.broadcast_nowait(TEXT, str(i))
    await nursery.start(hub.run)
    await hub.flush()
    assert member.payloads() == [str(i).encode() for i in range(200)]


@pytest.mark.parametrize("error", [trio.ClosedResourceError, trio.BrokenResourceError])
@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
async def test_hub_broadcast_closed_member_unregistered_silently(
    nursery: trio.Nursery, error: type[Exception], key: Hashable | None
) -> None:
    hub = await start_hub(nursery)
    gone = FakeMember("gone", key=key)
    stays = FakeMember("stays")
    await hub.join("room", gone)
    await hub.join("room", stays)
    gone.send_error = error
    await hub.broadcast(TEXT, "x", room="room")
    await hub.flush()
    assert hub.members() == ["stays"]
    assert hub.rooms() == ["room"]
    assert gone.evictions == []
    assert stays.payloads() == [b"x"]
    assert hub.statistics().evicted == 0


@pytest.mark.parametrize("key", KEYS[1:], ids=KEY_IDS[1:])
async def test_hub_broadcast_member_closing_at_encode_unregistered(
    nursery: trio.Nursery, key: Hashable | None
) -> None:
    """ConnectionClosed from encode forgets the member; its group still gets a frame."""
    hub = await start_hub(nursery)
    closing = FakeMember("closing", key=key)
    peer = FakeMember("peer", key=key)
    await hub.register(closing)
    await hub.register(peer)
    closing.closing = True
    await hub.broadcast(TEXT, "x")
    await hub.flush()
    assert hub.members() == ["peer"]
    assert peer.payloads() == [b"x"]
    assert peer.encode_calls == 1
    assert closing.evictions == []
    assert hub.statistics().deliveries == 1


async def test_hub_broadcast_copies_mutable_buffers(nursery: trio.Nursery) -> None:
    """A bytearray is snapshot when queued, so later changes do not leak into the frame."""
    hub = Hub()
    member = FakeMember("m")
    hub.register_nowait(member)
    buffer = bytearray(b"before")
    hub.broadcast_nowait(BINARY, buffer)
    hub.broadcast_nowait(BINARY, memoryview(b"view"))
    buffer[:] = b"after!"
    await nursery.start(hub.run)
    await hub.flush()
    assert member.payloads() == [b"before", b"view"]
    assert member.frames[0][0] == 0x82


async def test_hub_broadcast_bad_type_raises_in_caller(nursery: trio.Nursery) -> None:
    hub = await start_hub(nursery)
    with pytest.raises(ValueError):
        await hub.broadcast(9, b"ping")
    with pytest.raises(ValueError):
        hub.broadcast_nowait(0, b"continuation")
    member = FakeMember("m")
    await hub.register(member)
    await hub.broadcast(1, "still running")
    await hub.flush()
    assert member.payloads() == [b"still running"]


async def test_hub_broadcasts_race_with_membership_changes(nursery: trio.Nursery) -> None:
    """Several publishers and a task churning memberships: order per publisher holds.

    Stable members get every message of every publisher in publishing order; churned
    members get a subset, still in order per publisher.
    """
    hub = await start_hub(nursery, inbox_size=8)
    stable = [FakeMember(f"stable{i}") for i in range(20)]
    churned = [FakeMember(f"churn{i}", key=("deflate", 15)) for i in range(10)]
    for member in stable:
        await hub.join("room", member)
    publishers, per_publisher = 4, 200

    async def nowait(call: Callable[[], None]) -> None:
        # A _nowait command on a full inbox: retry at the next checkpoint.
        while True:
            try:
                call()
                break
            except trio.WouldBlock:
                await trio.lowlevel.checkpoint()

    async def publish(p: int) -> None:
        for i in range(per_publisher):
            room = "room" if i % 2 else None
            if i % 3:
                await hub.broadcast(TEXT, f"{p}:{i}", room=room)
            else:
                await nowait(partial(hub.broadcast_nowait, TEXT, f"{p}:{i}", room=room))
            if i % 7 == 0:
                await trio.lowlevel.checkpoint()

    async def churn() -> None:
        for round_ in range(60):
            member = churned[round_ % len(churned)]
            await hub.join("room", member)
            await trio.lowlevel.checkpoint()
            if round_ % 2:
                await hub.leave("room", member)
            else:
                await hub.unregister(member)
            if round_ % 5 == 0:
                await nowait(partial(hub.join_nowait, "room", member))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as inner:
        for p in range(publishers):
            inner.start_soon(publish, p)
        inner.start_soon(churn)
    await hub.flush()

    def per_sender(member: FakeMember) -> dict[int, list[int]]:
        seen: dict[int, list[int]] = {}
        for payload in member.payloads():
            p, i = map(int, payload.split(b":"))
            seen.setdefault(p, []).append(i)
        return seen

    for member in stable:
        assert per_sender(member) == {p: list(range(per_publisher)) for p in range(publishers)}
    received = 0
    for member in churned:
        for indices in per_sender(member).values():
            assert indices == sorted(set(indices))
            received += len(indices)
    assert received > 0
    stats = hub.statistics()
    assert stats.broadcasts == publishers * per_publisher
    assert stats.deliveries == 20 * publishers * per_publisher + received


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
async def test_hub_broadcast_burst_yields_to_writers_above_high_water(
    nursery: trio.Nursery, key: Hashable | None
) -> None:
    """Above ``high_water`` bytes queued the hub lets writers run before going on."""
    hub = await start_hub(nursery, high_water=4096)
    member = FakeMember("m", key=key)
    await hub.register(member)
    peak = 0

    async def writer() -> None:
        # Empties the member's queue each time it is scheduled, as a socket writer would.
        nonlocal peak
        while True:
            peak = max(peak, sum(map(len, member.frames)))
            member.frames.clear()
            await trio.lowlevel.checkpoint()

    nursery.start_soon(writer)
    for _ in range(500):
        hub.broadcast_nowait(BINARY, b"x" * 100)
    await hub.flush()
    # A batch of 65 commands would queue 6.6 KB; paced, the queue stops about a quarter
    # of high_water past it (the writer may run just before or just after the hub).
    assert peak <= 4096 + 1024 + 2 * 102
    assert hub.statistics().paced > 0


async def test_hub_broadcast_below_high_water_keeps_batches(nursery: trio.Nursery) -> None:
    """Below the mark nothing yields: the writers get whole batches to coalesce."""
    hub = await start_hub(nursery)
    member = FakeMember("m")
    await hub.register(member)
    for _ in range(500):
        hub.broadcast_nowait(BINARY, b"x" * 100)
    await hub.flush()
    assert len(member.frames) == 500
    assert hub.statistics().paced == 0


async def test_hub_flushes_each_member_once_per_batch(nursery: trio.Nursery) -> None:
    """Offers do not wake a member's writer: the actor flushes each member once a batch.

    A burst queued without yielding is one batch (up to 65 commands): one flush per
    member, however many broadcasts reached it; a member the batch did not reach is not
    flushed.
    """
    hub = await start_hub(nursery)
    members = [FakeMember(f"m{i}") for i in range(3)]
    for member in members:
        await hub.register(member)
    outsider = FakeMember("outsider")
    await hub.join("room", members[0])
    await hub.join("room", members[1])
    await hub.register(outsider)
    await hub.flush()
    for i in range(40):
        hub.broadcast_nowait(TEXT, f"m{i}", room="room")
    await hub.flush()
    assert [member.flushes for member in members] == [1, 1, 0]
    assert outsider.flushes == 0
    assert members[1].payloads() == [f"m{i}".encode() for i in range(40)]
    # The offer that made a queue non-empty asks for the flush; the fake never empties
    # its queue, so a later batch adds no flush.
    hub.broadcast_nowait(TEXT, "again", room="room")
    await hub.flush()
    assert [member.flushes for member in members] == [1, 1, 0]


class _FlushFails(FakeMember):
    """A member whose flush raises what it must not (a bug in its port)."""

    def _hub_flush(self) -> None:
        super()._hub_flush()
        raise RuntimeError("flush bug")


async def test_hub_member_flush_raising_does_not_stop_the_hub(nursery: trio.Nursery) -> None:
    """A flush runs in the hub's task after its batch: one that raises is that member's
    failure (closed with 1011, removed, counted), never the hub's; the others are flushed."""
    hub = await start_hub(nursery)
    broken = _FlushFails("broken")
    before = FakeMember("before")
    after = FakeMember("after")
    await hub.register(before)
    await hub.register(broken)
    await hub.register(after)
    await hub.flush()
    await hub.broadcast(TEXT, "one")
    await hub.flush()
    assert hub.running
    assert before.flushes == broken.flushes == after.flushes == 1
    assert broken.evictions == [(1011, "internal error")]
    assert sorted(hub.members()) == ["after", "before"]
    assert hub.statistics().member_errors == 1
    before.frames.clear()
    after.frames.clear()
    await hub.broadcast(TEXT, "two")
    await hub.flush()
    assert before.payloads() == after.payloads() == [b"two"]
