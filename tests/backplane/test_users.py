"""Presence by user across processes (RedisUsers): every node's users, once per user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import pytest
import trio

from rue_trio.backplane.users import RedisUsers
from rue_trio.exceptions import BackplaneError
from rue_trio.hub import PLAIN, Hub
from tests.hub._fakes import FakeMember


class Tab(FakeMember):
    def __init__(self, id: str, user: str, key: Hashable | None = PLAIN, **meta: Any) -> None:
        super().__init__(id, key=key)
        self.user = user
        self.meta = MappingProxyType(meta)


@asynccontextmanager
async def open_nodes(
    url: str, namespace: str, count: int = 2
) -> AsyncIterator[tuple[list[Hub], trio.Nursery]]:
    async with trio.open_nursery() as nursery:
        hubs = []
        for _ in range(count):
            directory = RedisUsers(
                url, namespace=namespace, presence_ttl=1.0, heartbeat_interval=0.05
            )
            hub = Hub(user_directory=directory)
            await nursery.start(hub.run)
            hubs.append(hub)
        yield hubs, nursery
        nursery.cancel_scope.cancel()


async def test_users_presence_lists_every_nodes_users_once(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace) as ((a, b), _):
            await a.join("r", Tab("a1", "ada", tab=1))
            await b.join("r", Tab("b1", "ada", tab=2))
            await b.join("r", Tab("b2", "bob"))

            async def both_see_everyone() -> bool:
                want = {"ada": [{"tab": 1}, {"tab": 2}], "bob": [{}]}
                for hub in (a, b):
                    found = await hub.presence("r")
                    if {u: sorted(m, key=str) for u, m in found.items()} != want:
                        return False
                return True

            while not await both_see_everyone():  # noqa: ASYNC110 (polling Redis)
                await trio.sleep(0.01)
            assert a.users("r") == {"ada": [{"tab": 1}]}  # this node's own


async def test_users_stopped_node_drops_out(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace, count=1) as ((a,), nursery):
            other = Hub(user_directory=RedisUsers(redis_url, namespace=namespace))
            scope = trio.CancelScope()
            nursery.start_soon(_run_until, other, scope)
            await other.flush()
            member = Tab("o1", "eve")
            await other.join("r", member)
            while "eve" not in await a.presence("r"):  # noqa: ASYNC110
                await trio.sleep(0.01)
            await other.leave("r", member)
            while "eve" in await a.presence("r"):  # noqa: ASYNC110
                await trio.sleep(0.01)
            await other.join("r", member)
            while "eve" not in await a.presence("r"):  # noqa: ASYNC110
                await trio.sleep(0.01)
            scope.cancel()
            while "eve" in await a.presence("r"):  # noqa: ASYNC110 (a clean stop removes it)
                await trio.sleep(0.01)


async def _run_until(hub: Hub, scope: trio.CancelScope) -> None:
    with scope:
        await hub.run()


async def test_users_unreachable_redis() -> None:
    directory = RedisUsers("redis://127.0.0.1:1", connect_timeout=0.5)
    with pytest.raises(BackplaneError):
        await directory.users("r")
    hub = Hub(user_directory=directory)
    with trio.fail_after(10), pytest.raises(BackplaneError, match="cannot reach Redis"):
        await hub.run()
    with pytest.raises(ValueError, match="heartbeat"):
        RedisUsers(presence_ttl=1, heartbeat_interval=2)


async def test_users_unreachable_error_hides_the_password() -> None:
    hub = Hub(user_directory=RedisUsers("redis://:hunter2@127.0.0.1:1", connect_timeout=0.5))
    with trio.fail_after(10), pytest.raises(BackplaneError, match="cannot reach Redis") as info:
        await hub.run()
    assert "hunter2" not in str(info.value) and ":***@" in str(info.value)


async def test_users_notices_say_when_a_user_arrives_or_leaves_anywhere(
    redis_url: str, namespace: str
) -> None:
    from tests.hub.test_history import Tagging

    def directory() -> RedisUsers:
        return RedisUsers(
            redis_url, namespace=namespace, presence_ttl=1.0, heartbeat_interval=0.02
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = Hub(framing=Tagging(), user_directory=directory())
            b = Hub(framing=Tagging(), user_directory=directory())
            await nursery.start(a.run)
            await nursery.start(b.run)
            watcher = Tab("w", "watcher")
            await a.join("r", watcher)
            await trio.sleep(0.1)  # the first reading of the room on a: recorded, not told

            def notices() -> list[bytes]:
                return [p for p in watcher.payloads() if p.startswith(b"u|")]

            async def until(count: int) -> None:
                while len(notices()) < count:  # noqa: ASYNC110 (Redis is read on a heartbeat)
                    await trio.sleep(0.01)

            tab1, tab2, tab3 = Tab("t1", "ada"), Tab("t2", "ada"), Tab("t3", "ada")
            await b.join("r", tab1)  # ada's first connection, on the other node
            await until(1)
            await b.join("r", tab2)
            await a.join("r", tab3)  # more tabs: ada is there already
            await trio.sleep(0.2)
            await b.leave("r", tab1)
            await b.leave("r", tab2)
            await trio.sleep(0.2)
            assert notices() == [b"u|r|join|ada"]
            await a.leave("r", tab3)  # ada's last connection
            await until(2)
            assert notices() == [b"u|r|join|ada", b"u|r|leave|ada"]
            nursery.cancel_scope.cancel()
