"""Room history in the hub: offsets, bounds, and joining from a position."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rue_trio.hub import (
    HistoryConfig,
    HistoryPage,
    Hub,
    StreamPosition,
    UserEvent,
)
from rue_trio.protocol import MessageType

from ._fakes import FakeMember

TEXT = MessageType.TEXT


async def _say(hub: Hub, room: str, *texts: str) -> None:
    for text in texts:
        await hub.broadcast(TEXT, text, room=room)
    await hub.flush()


class Tagging:
    """A framing that makes every frame readable: kind|room|epoch|offset|payload."""

    def message(
        self, room: str, position: StreamPosition | None, type: MessageType, data: str | bytes
    ) -> tuple[MessageType, str | bytes]:
        assert isinstance(data, str)
        offset = 0 if position is None else position.offset
        return TEXT, f"m|{room}|{offset}|{data}"

    def joined(
        self, room: str, member_id: str, since: StreamPosition | None, page: HistoryPage
    ) -> tuple[MessageType, str | bytes] | None:
        recovered = since is not None and page.recovered
        return TEXT, f"j|{room}|{page.offset}|{recovered}|{len(page.messages)}"

    def user(self, event: UserEvent) -> tuple[MessageType, str | bytes] | None:
        return TEXT, f"u|{event.room}|{event.kind}|{event.user}"


async def test_hub_history_numbers_broadcasts_from_one(nursery: trio.Nursery) -> None:
    hub = Hub(history=HistoryConfig(size=10))
    await nursery.start(hub.run)
    await _say(hub, "r", "a", "b", "c")
    page = await hub.history("r")
    assert [(m.offset, m.data) for m in page.messages] == [(1, "a"), (2, "b"), (3, "c")]
    assert page.offset == 3 and page.recovered and page.epoch
    assert [m.data for m in (await hub.history("r", limit=2)).messages] == ["b", "c"]
    assert (await hub.history("r", limit=0)).messages == ()
    after = await hub.history("r", since=StreamPosition(page.epoch, 1), limit=1)
    assert [m.data for m in after.messages] == ["b"] and after.recovered
    with pytest.raises(ValueError, match="limit"):
        await hub.history("r", limit=-1)


async def test_hub_history_keeps_offsets_across_trimming_by_count_and_bytes(
    nursery: trio.Nursery,
) -> None:
    hub = Hub(history=HistoryConfig(size=3, max_bytes=10))
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2", "3", "4")
    page = await hub.history("r")
    assert [m.offset for m in page.messages] == [2, 3, 4]
    await _say(hub, "r", "x" * 8)  # 8 bytes: "3", "4" and it make 10, "2" goes too
    page = await hub.history("r")
    assert [m.offset for m in page.messages] == [3, 4, 5]
    await _say(hub, "r", "y" * 11)  # larger than the whole history: numbered, not kept
    page = await hub.history("r")
    assert page.offset == 6 and [m.offset for m in page.messages] == [3, 4, 5]


async def test_hub_history_forgets_after_ttl(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = Hub(history=HistoryConfig(ttl=10))
    await nursery.start(hub.run)
    await _say(hub, "r", "old")
    await trio.sleep(6)
    await _say(hub, "r", "new")
    await trio.sleep(6)
    page = await hub.history("r")
    assert [m.data for m in page.messages] == ["new"]
    lost = await hub.history("r", since=StreamPosition(page.epoch, 0))
    assert not lost.recovered and lost.messages == ()


async def test_hub_history_per_room_rule_and_room_limit(nursery: trio.Nursery) -> None:
    def rule(room: str) -> HistoryConfig | None:
        return HistoryConfig(max_rooms=2) if room.startswith("h") else None

    hub = Hub(history=rule)
    await nursery.start(hub.run)
    await _say(hub, "plain", "p")
    assert await hub.history("plain") == HistoryPage("", 0)
    await _say(hub, "h1", "a")
    first = (await hub.history("h1")).epoch
    await _say(hub, "h2", "b")
    await _say(hub, "h3", "c")  # three logs: h1's, published least recently, goes
    page = await hub.history("h1")
    assert page.epoch != first and page.offset == 0
    assert (await hub.history("h3")).offset == 1


async def test_hub_join_since_replays_exactly_the_missed_then_live(nursery: trio.Nursery) -> None:
    hub = Hub(history=HistoryConfig())
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2", "3")
    epoch = (await hub.history("r")).epoch
    member = FakeMember("m")
    # Broadcasts queued on both sides of the join, all in the inbox at once.
    hub.broadcast_nowait(TEXT, "4", room="r")
    hub.join_nowait("r", member, since=StreamPosition(epoch, 2))
    hub.broadcast_nowait(TEXT, "5", room="r")
    await hub.flush()
    assert member.payloads() == [b"3", b"4", b"5"]


async def test_hub_join_since_answers_offset_recovered_and_missed(nursery: trio.Nursery) -> None:
    hub = Hub(history=HistoryConfig())
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2")
    epoch = (await hub.history("r")).epoch
    page = await hub.join("r", FakeMember("m"), since=StreamPosition(epoch, 1))
    assert (page.epoch, page.offset, page.recovered) == (epoch, 2, True)
    assert [m.data for m in page.messages] == ["2"]
    fresh = await hub.join("r", FakeMember("n"))
    assert fresh.offset == 2 and fresh.messages == ()


@pytest.mark.parametrize(
    "since",
    [StreamPosition("another-epoch", 1), StreamPosition("EPOCH", 9)],
    ids=["epoch-changed", "offset-in-the-future"],
)
async def test_hub_join_since_refuses_a_position_it_cannot_trust(
    nursery: trio.Nursery, since: StreamPosition
) -> None:
    hub = Hub(history=HistoryConfig())
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2")
    epoch = (await hub.history("r")).epoch
    if since.epoch == "EPOCH":
        since = StreamPosition(epoch, since.offset)
    member = FakeMember("m")
    page = await hub.join("r", member, since=since)
    assert not page.recovered and page.messages == () and page.offset == 2
    await _say(hub, "r", "3")
    assert member.payloads() == [b"3"]  # in the room all the same, from now on


async def test_hub_join_since_refuses_a_position_trimmed_away(nursery: trio.Nursery) -> None:
    hub = Hub(history=HistoryConfig(size=2))
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2", "3", "4")
    epoch = (await hub.history("r")).epoch
    assert not (await hub.join("r", FakeMember("a"), since=StreamPosition(epoch, 1))).recovered
    page = await hub.join("r", FakeMember("b"), since=StreamPosition(epoch, 2))
    assert page.recovered and [m.data for m in page.messages] == ["3", "4"]


async def test_hub_join_since_without_history_is_not_recovered(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    page = await hub.join("r", FakeMember("m"), since=StreamPosition("e", 1))
    assert not page.recovered
    assert (await hub.join("r", FakeMember("n"))).recovered


async def test_hub_join_replay_too_big_for_the_queue_evicts_the_member(
    nursery: trio.Nursery,
) -> None:
    hub = Hub(history=HistoryConfig())
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2", "3")
    epoch = (await hub.history("r")).epoch
    member = FakeMember("m", capacity=2)
    await hub.join("r", member, since=StreamPosition(epoch, 0))
    assert member.evictions == [(1008, "slow consumer: outbound queue full")]
    assert hub.count() == 0 and hub.count("r") == 0


async def test_hub_join_replay_to_a_broken_member_closes_it_and_the_hub_goes_on(
    nursery: trio.Nursery,
) -> None:
    """A member whose port raises during the replay is closed with 1011, as in a broadcast."""
    hub = Hub(history=HistoryConfig())
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2")
    epoch = (await hub.history("r")).epoch
    broken = FakeMember("broken")
    broken.send_error = RuntimeError
    await hub.join("r", broken, since=StreamPosition(epoch, 0))
    assert broken.evictions == [(1011, "internal error")]
    assert hub.running and hub.count() == 0 and hub.statistics().member_errors == 1
    member = FakeMember("m")
    await hub.join("r", member, since=StreamPosition(epoch, 1))
    assert member.payloads() == [b"2"]


async def test_hub_framing_wraps_answer_replay_and_live_in_order(nursery: trio.Nursery) -> None:
    hub = Hub(history=HistoryConfig(), framing=Tagging())
    await nursery.start(hub.run)
    await _say(hub, "r", "1", "2")
    epoch = (await hub.history("r")).epoch
    member = FakeMember("m")
    await hub.join("r", member, since=StreamPosition(epoch, 1))
    await _say(hub, "r", "3")
    assert member.payloads() == [b"j|r|2|True|1", b"m|r|2|2", b"u|r|join|m", b"m|r|3|3"]


async def test_hub_framing_wraps_rooms_without_history_with_no_position(
    nursery: trio.Nursery,
) -> None:
    hub = Hub(framing=Tagging())
    await nursery.start(hub.run)
    member = FakeMember("m")
    await hub.join("r", member)
    await _say(hub, "r", "hi")
    await hub.broadcast(TEXT, "all")
    await hub.flush()
    assert member.payloads() == [b"j|r|0|False|0", b"u|r|join|m", b"m|r|0|hi", b"all"]
