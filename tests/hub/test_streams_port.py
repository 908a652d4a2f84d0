"""The hub over a history stream, with a fake stream: numbering, fallbacks, merging."""

from __future__ import annotations

import trio

from rue_trio.exceptions import BackplaneError
from rue_trio.hub import (
    Envelope,
    HistoryConfig,
    HistoryMessage,
    HistoryPage,
    Hub,
    Sequenced,
    SequencedSink,
    StreamPosition,
)
from rue_trio.protocol import MessageType

from ._fakes import FakeMember

TEXT = MessageType.TEXT


class FakeStream:
    """Numbers what it is given in epoch "E", unless told to refuse or to be down."""

    def __init__(self) -> None:
        self.sink: SequencedSink | None = None
        self.offset = 0
        self.refuse = False
        self.down = False
        self.follows: dict[str, int] = {}
        self.stored: list[HistoryMessage] = []

    async def run(
        self, sink: SequencedSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.sink = sink
        task_status.started()
        await trio.sleep_forever()

    def append(self, envelope: Envelope, config: HistoryConfig) -> bool:
        if self.refuse:
            return False
        assert self.sink is not None
        if self.down:  # accepted, then the link broke: handed back unnumbered
            self.sink.send_nowait(Sequenced(envelope, None))
            return True
        self.offset += 1
        self.stored.append(HistoryMessage(self.offset, envelope.type, envelope.data, 0.0))
        self.sink.send_nowait(Sequenced(envelope, StreamPosition("E", self.offset)))
        return True

    def follow(self, room: str) -> None:
        self.follows[room] = self.follows.get(room, 0) + 1

    def unfollow(self, room: str) -> None:
        self.follows[room] -= 1

    async def synced(self) -> None:
        await trio.lowlevel.checkpoint()

    async def read(
        self, room: str, since: StreamPosition | None, limit: int | None, config: HistoryConfig
    ) -> HistoryPage:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise BackplaneError("down")
        after = [m for m in self.stored if since is None or m.offset > since.offset]
        return HistoryPage("E", self.offset, tuple(after))


async def _settle(hub: Hub) -> None:
    """Let broadcasts go through the stream's buffer and back into the inbox."""
    for _ in range(5):
        await hub.flush()


async def _hub(nursery: trio.Nursery) -> tuple[Hub, FakeStream]:
    stream = FakeStream()
    hub = Hub(history=HistoryConfig(), history_stream=stream)
    await nursery.start(hub.run)
    return hub, stream


async def test_hub_stream_numbers_and_delivers_when_it_comes_back(nursery: trio.Nursery) -> None:
    hub, stream = await _hub(nursery)
    member = FakeMember("m")
    await hub.join("r", member)
    assert stream.follows == {"r": 1}
    await hub.broadcast(TEXT, "a", room="r")
    await _settle(hub)
    assert member.payloads() == [b"a"]
    assert hub._histories.page("r", None, None, 0).position == StreamPosition("E", 1)
    await hub.leave("r", member)
    assert stream.follows == {"r": 0}


async def test_hub_stream_refusing_means_local_numbering_in_a_local_epoch(
    nursery: trio.Nursery,
) -> None:
    hub, stream = await _hub(nursery)
    member = FakeMember("m")
    await hub.join("r", member)
    await hub.broadcast(TEXT, "a", room="r")
    await _settle(hub)
    stream.refuse = True
    await hub.broadcast(TEXT, "b", room="r")
    await hub.flush()
    stream.refuse = False
    stream.down = True
    await hub.broadcast(TEXT, "c", room="r")
    await _settle(hub)
    assert member.payloads() == [b"a", b"b", b"c"]  # local delivery goes on
    local = hub._histories.page("r", None, None, 0)
    assert local.epoch != "E" and local.offset == 2
    # The stream is down: a join from a position cannot be sure, so it says so.
    page = await hub.join("r", FakeMember("n"), since=StreamPosition("E", 1))
    assert not page.recovered and page.messages == ()


async def test_hub_stream_join_merges_what_the_node_never_saw(nursery: trio.Nursery) -> None:
    hub, stream = await _hub(nursery)
    # Published elsewhere while this node followed nothing.
    for index in range(4):
        stream.offset += 1
        stream.stored.append(HistoryMessage(stream.offset, TEXT, f"m{index}", 0.0))
    member = FakeMember("m")
    page = await hub.join("r", member, since=StreamPosition("E", 1))
    assert page.recovered and member.payloads() == [b"m1", b"m2", b"m3"]
    await hub.broadcast(TEXT, "live", room="r")
    await _settle(hub)
    assert member.payloads()[-1] == b"live"
    assert [m.offset for m in (await hub.history("r")).messages] == [1, 2, 3, 4, 5]


async def test_hub_stream_gap_in_what_arrives_restarts_the_local_copy(
    nursery: trio.Nursery,
) -> None:
    hub, stream = await _hub(nursery)
    member = FakeMember("m")
    await hub.join("r", member)
    assert stream.sink is not None
    envelope = Envelope(TEXT, "x", "r", None, b"\0" * 16)
    stream.sink.send_nowait(Sequenced(envelope, StreamPosition("E", 1)))
    stream.sink.send_nowait(Sequenced(envelope, StreamPosition("E", 3)))  # 2 was lost
    await _settle(hub)
    local = hub._histories.page("r", None, None, 0)
    assert local.position == StreamPosition("E", 3)
    assert [m.offset for m in hub._histories.page("r", None, None, 0).messages] == [3]
    assert hub._histories.page("r", StreamPosition("E", 1), None, 0).recovered is False
