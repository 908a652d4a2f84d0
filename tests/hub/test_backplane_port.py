"""The hub's side of the backplane port, with an in-memory fake (no Redis)."""

from __future__ import annotations

import pytest
import trio

from rue_trio.hub import (
    BackplaneSink,
    BackplaneStatistics,
    Envelope,
    Hub,
    pack_envelope,
    unpack_envelope,
)
from rue_trio.protocol import MessageType

from ._fakes import FakeMember

NODE = b"N" * 16
OTHER = b"O" * 16


class FakeBackplane:
    """Records what the hub asks of it; ``sink`` lets a test play another node."""

    def __init__(self) -> None:
        self.node_id = NODE
        self.published: list[Envelope] = []
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.sink: BackplaneSink | None = None

    async def run(
        self, sink: BackplaneSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.sink = sink
        task_status.started()
        await trio.sleep_forever()

    def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)

    def subscribe_room(self, room: str) -> None:
        self.calls.append(("subscribe", room, None))

    def unsubscribe_room(self, room: str) -> None:
        self.calls.append(("unsubscribe", room, None))

    def presence_add(self, member_id: str, room: str | None) -> None:
        self.calls.append(("add", room, member_id))

    def presence_remove(self, member_id: str, room: str | None) -> None:
        self.calls.append(("remove", room, member_id))

    async def synced(self) -> None:
        await trio.lowlevel.checkpoint()

    async def cluster_count(self, room: str | None) -> int:
        await trio.lowlevel.checkpoint()
        return 42

    async def cluster_members(self, room: str | None) -> list[str]:
        await trio.lowlevel.checkpoint()
        return ["x"]

    def statistics(self) -> BackplaneStatistics:
        return BackplaneStatistics(True, len(self.published), 0, 0, 0, 0, 0, 0, 0)


def test_envelope_pack_then_unpack_is_identity() -> None:
    envelope = Envelope(MessageType.TEXT, "héllo".encode(), "rööm", "member-1", NODE)
    packed = pack_envelope(envelope)
    assert packed[0] == 1 and packed[3:19] == NODE
    assert unpack_envelope(packed) == envelope
    bare = Envelope(MessageType.BINARY, b"\x00\x01", None, None, OTHER)
    assert unpack_envelope(pack_envelope(bare)) == bare
    assert len(pack_envelope(bare)) == 23 + 2


def test_envelope_unpack_rejects_bad_input() -> None:
    packed = pack_envelope(Envelope(MessageType.TEXT, b"x", "r", None, NODE))
    with pytest.raises(ValueError, match="version"):
        unpack_envelope(b"\x02" + packed[1:])
    with pytest.raises(ValueError, match="truncated"):
        unpack_envelope(packed[:20])
    with pytest.raises(ValueError, match="message type"):
        unpack_envelope(packed[:1] + b"\x09" + packed[2:])


async def test_hub_publishes_local_broadcasts_and_delivers_remote_ones() -> None:
    backplane = FakeBackplane()
    hub = Hub(backplane=backplane)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        member, other = FakeMember("m1"), FakeMember("m2")
        await hub.join("room", member)
        await hub.join("room", other)
        await hub.broadcast(MessageType.TEXT, "local", room="room", exclude=member)
        await hub.flush()
        assert [e.data for e in backplane.published] == ["local"]
        assert backplane.published[0].exclude == "m1"
        assert backplane.published[0].origin == NODE
        assert backplane.sink is not None
        backplane.sink.send_nowait(Envelope(MessageType.TEXT, b"remote", "room", "m2", OTHER))
        await trio.testing.wait_all_tasks_blocked()
        await hub.flush()
        assert member.payloads() == [b"remote"]
        assert other.payloads() == [b"local"]
        # A remote broadcast is never published again.
        assert len(backplane.published) == 1
        assert await hub.cluster_count() == 42
        assert hub.statistics().backplane is not None
        nursery.cancel_scope.cancel()


async def test_hub_follows_room_only_while_it_has_local_members() -> None:
    backplane = FakeBackplane()
    hub = Hub(backplane=backplane)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        a, b = FakeMember("a"), FakeMember("b")
        await hub.join("room", a)
        await hub.join("room", b)
        await hub.leave("room", a)
        await hub.unregister(b)
        assert backplane.calls == [
            ("add", None, "a"),
            ("subscribe", "room", None),
            ("add", "room", "a"),
            ("add", None, "b"),
            ("add", "room", "b"),
            ("remove", "room", "a"),
            ("unsubscribe", "room", None),
            ("remove", "room", "b"),
            ("remove", None, "b"),
        ]
        nursery.cancel_scope.cancel()


async def test_hub_without_backplane_cluster_queries_are_local() -> None:
    hub = Hub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await hub.join("room", FakeMember("b"))
        await hub.register(FakeMember("a"))
        assert await hub.cluster_count() == 2
        assert await hub.cluster_members() == ["a", "b"]
        assert hub.statistics().backplane is None
        nursery.cancel_scope.cancel()
