"""Presence by user: members grouped by their user key, events on first and last."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

import trio

from rue_trio.hub import PLAIN, HistoryConfig, Hub, UserEvent
from rue_trio.protocol import MessageType

from ._fakes import FakeMember
from .test_history import Tagging


class Person(FakeMember):
    """A fake member with the identity a WebSocketConn carries."""

    def __init__(
        self,
        id: str,
        user: str | None,
        *,
        key: Hashable | None = PLAIN,
        capacity: int = 100_000,
        **meta: Any,
    ) -> None:
        super().__init__(id, key=key, capacity=capacity)
        self.user = user
        self.meta: Mapping[str, Any] = MappingProxyType(meta)


async def test_hub_users_two_tabs_are_one_user(nursery: trio.Nursery) -> None:
    events: list[UserEvent] = []
    hub = Hub(on_user=events.append)
    await nursery.start(hub.run)
    tab1, tab2 = Person("t1", "ada", tab=1), Person("t2", "ada", tab=2)
    await hub.join("r", tab1)
    await hub.join("r", tab2)
    await hub.join("r", Person("b", "bob"))
    assert hub.users("r") == {"ada": [{"tab": 1}, {"tab": 2}], "bob": [{}]}
    assert await hub.presence("r") == hub.users("r")
    await hub.unregister(tab1)
    assert hub.users("r")["ada"] == [{"tab": 2}]
    await hub.leave("r", tab2)
    assert [(e.kind, e.user, dict(e.meta)) for e in events] == [
        ("join", "ada", {"tab": 1}),
        ("join", "bob", {}),
        ("leave", "ada", {"tab": 2}),
    ]
    assert list(hub.users("r")) == ["bob"]
    assert hub.users("nowhere") == {}


async def test_hub_users_member_without_user_is_named_by_its_id(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    await hub.join("r", FakeMember("anon"))
    await hub.join("r", Person("p", None))
    assert hub.users("r") == {"anon": [{}], "p": [{}]}


async def test_hub_users_leave_uses_the_user_read_at_join(nursery: trio.Nursery) -> None:
    events: list[UserEvent] = []
    hub = Hub(on_user=events.append)
    await nursery.start(hub.run)
    member = Person("m", "ada")
    await hub.join("r", member)
    member.user = "renamed"
    await hub.unregister(member)
    assert [(e.kind, e.user) for e in events] == [("join", "ada"), ("leave", "ada")]
    assert hub.users("r") == {}


async def test_hub_users_notices_reach_the_room_and_evictions_announce_leave(
    nursery: trio.Nursery,
) -> None:
    hub = Hub(history=HistoryConfig(), framing=Tagging())
    await nursery.start(hub.run)
    watcher = Person("w", "watcher")
    slow = Person("s", "slow", capacity=3)
    await hub.join("r", watcher)
    await hub.join("r", slow)  # its queue: its answer, its own join notice
    await hub.broadcast(MessageType.TEXT, "1", room="r")  # fills it
    await hub.broadcast(MessageType.TEXT, "2", room="r")  # refused: evicted
    await hub.flush()
    assert slow.evictions
    assert watcher.payloads()[-4:] == [
        b"u|r|join|slow",
        b"m|r|1|1",
        b"m|r|2|2",
        b"u|r|leave|slow",
    ]
    assert list(hub.users("r")) == ["watcher"]
