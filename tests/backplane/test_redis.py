"""The Redis backplane against a real Redis (issue 5): hubs in one or many processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import coredis
import pytest
import trio

from rue_trio.backplane import RedisBackplane
from rue_trio.client import open_websocket
from rue_trio.exceptions import BackplaneError
from rue_trio.hub import BackplaneStatistics, Hub
from rue_trio.protocol import MessageType
from tests.hub._fakes import FakeMember

ROOT = Path(__file__).resolve().parents[2]


async def wait_until(predicate: Callable[[], bool]) -> None:
    # Redis is another process, with no event to wait on: poll it (every test bounds
    # this with fail_after).
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.005)


@asynccontextmanager
async def open_hubs(
    url: str, namespace: str, count: int = 2, **options: float
) -> AsyncIterator[list[Hub]]:
    hubs = [
        Hub(backplane=RedisBackplane(url, namespace=namespace, **options))  # type: ignore[arg-type]
        for _ in range(count)
    ]
    async with trio.open_nursery() as nursery:
        for hub in hubs:
            await nursery.start(hub.run)
        yield hubs
        nursery.cancel_scope.cancel()


def _published(hub: Hub, count: int) -> bool:
    return backplane_stats(hub).published >= count


def backplane_stats(hub: Hub) -> BackplaneStatistics:
    stats = hub.statistics().backplane
    assert stats is not None
    return stats


async def test_hubs_broadcast_in_rooms_with_exclude_across_nodes(
    redis_url: str, namespace: str
) -> None:
    with trio.fail_after(10):
        async with open_hubs(redis_url, namespace) as (a, b):
            a1, b1, b2, b3 = FakeMember("a1"), FakeMember("b1"), FakeMember("b2"), FakeMember("b3")
            await a.join("red", a1)
            await b.join("red", b1)
            await b.join("red", b2)
            await b.join("blue", b3)
            await a.broadcast(MessageType.TEXT, "to red", room="red")
            await b.broadcast(MessageType.TEXT, "from b1", room="red", exclude=b1)
            await a.broadcast(MessageType.BINARY, b"everyone")
            await wait_until(lambda: len(b3.frames) == 1 and len(a1.frames) == 3)
            await a.flush()
            await b.flush()
            # Local delivery at once, remote once; the sender excluded on every node.
            # One sender's messages keep their order; two senders' may interleave.
            assert a1.payloads()[0] == b"to red"
            assert sorted(a1.payloads()) == [b"everyone", b"from b1", b"to red"]
            assert sorted(b1.payloads()) == [b"everyone", b"to red"]
            assert sorted(b2.payloads()) == [b"everyone", b"from b1", b"to red"]
            assert b3.payloads() == [b"everyone"]
            # Each node ignored its own publications: nothing arrived twice.
            assert backplane_stats(a).received == 1
            assert backplane_stats(b).received == 2


async def test_node_follows_room_channel_only_while_it_has_members(
    redis_url: str, namespace: str
) -> None:
    with trio.fail_after(10):
        async with open_hubs(redis_url, namespace) as (a, b):
            member = FakeMember("b1")
            await b.join("room", member)
            assert backplane_stats(b).subscriptions == 1
            await b.leave("room", member)
            await wait_until(lambda: backplane_stats(b).subscriptions == 0)
            await a.broadcast(MessageType.TEXT, "nobody here", room="room")
            await a.broadcast(MessageType.TEXT, "sync")
            await wait_until(lambda: len(member.frames) == 1)
            assert member.payloads() == [b"sync"]
            assert backplane_stats(b).received == 1


async def test_ten_thousand_messages_cross_in_order_none_lost(
    redis_url: str, namespace: str
) -> None:
    total = 10_000
    with trio.fail_after(30):
        async with open_hubs(redis_url, namespace) as (a, b):
            receiver = FakeMember("b1", capacity=total)
            await b.join("room", receiver)
            for start in range(0, total, 1000):
                for index in range(start, start + 1000):
                    await a.broadcast(MessageType.BINARY, b"%d" % index, room="room")
                # publish() is bounded: pace the sender by what Redis took.
                await wait_until(partial(_published, a, start + 1000))
            await wait_until(lambda: len(receiver.frames) == total)
            assert [int(p) for p in receiver.payloads()] == list(range(total))
            stats = backplane_stats(b)
            assert stats.dropped_inbound == 0
            assert backplane_stats(a).lost == 0


async def test_subscriber_reconnects_after_client_kill(redis_url: str, namespace: str) -> None:
    with trio.fail_after(15):
        async with open_hubs(redis_url, namespace) as (a, b):
            receiver = FakeMember("b1")
            await b.join("room", receiver)
            backplane = b._backplane
            assert isinstance(backplane, RedisBackplane)
            sent = 0

            async def publish_forever() -> None:
                nonlocal sent
                while True:
                    await a.broadcast(MessageType.BINARY, b"%d" % sent, room="room")
                    sent += 1
                    await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_forever)
                await wait_until(lambda: len(receiver.frames) >= 20)
                admin = coredis.Redis.from_url(redis_url)
                async with admin:
                    clients = await admin.client_list()
                    ours = [
                        c["id"]
                        for c in clients
                        if str(c.get("name", "")) == f"{backplane.client_name}:sub"
                    ]
                    assert len(ours) == 1
                    await admin.client_kill(identifier=ours[0])
                await wait_until(lambda: backplane_stats(b).reconnects == 1)
                await backplane.synced()
                before = len(receiver.frames)
                await wait_until(lambda: len(receiver.frames) >= before + 20)
                nursery.cancel_scope.cancel()
            received = [int(p) for p in receiver.payloads()]
            # At most once and in order: a gap during the outage, no duplicate, no reordering.
            assert received == sorted(set(received))
            assert backplane_stats(b).subscriptions == 1


async def test_cluster_presence_counts_every_node(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_hubs(redis_url, namespace, presence_ttl=2.0) as (a, b):
            await a.register(FakeMember("a1"))
            await a.join("room", FakeMember("a2"))
            await b.join("room", FakeMember("b1"))
            # Own members count from memory, the other node's once its writer ran.
            while await a.cluster_count() != 3:  # noqa: ASYNC110 (polling Redis)
                await trio.sleep(0.01)
            assert await b.cluster_count("room") == 2
            assert await b.cluster_members("room") == ["a2", "b1"]
            assert await a.cluster_members() == ["a1", "a2", "b1"]


async def test_crashed_node_leaves_presence_within_expiry(redis_url: str, namespace: str) -> None:
    with trio.fail_after(15):
        async with open_hubs(redis_url, namespace, count=1) as (hub,):
            await hub.join("r", FakeMember("local"))
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tests.backplane._node", redis_url, namespace, "3"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(100)
                    assert chunk, line
                    line += chunk
                assert line.strip() == b"ready"
                assert await hub.cluster_count("r") == 4
                process.send_signal(signal.SIGKILL)
                await process.wait()
                killed_at = trio.current_time()
                while await hub.cluster_count("r") != 1:  # noqa: ASYNC110 (polling Redis)
                    await trio.sleep(0.05)
                # presence_ttl=1.0 in the node: gone within the expiry, plus slack for a
                # loaded machine (without expiry it would never go).
                assert trio.current_time() - killed_at < 5.0
                assert await hub.cluster_members("r") == ["local"]
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def test_backplane_unreachable_at_start_raises_backplane_error() -> None:
    hub = Hub(
        backplane=RedisBackplane(
            "redis://127.0.0.1:1", connect_attempts=2, reconnect_min=0.01, connect_timeout=1
        )
    )
    with trio.fail_after(5), pytest.raises(BackplaneError) as info:
        await hub.run()
    assert "2 attempts" in str(info.value)
    assert info.value.__cause__ is not None


async def test_workers_share_port_and_broadcast_across_processes(
    redis_url: str, namespace: str
) -> None:
    env = {**os.environ, "RUE_TRIO_REDIS_URL": redis_url, "RUE_TRIO_TEST_NAMESPACE": namespace}
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.backplane._cluster_app", "2"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert process.stderr is not None
            log = b""
            # The parent names the port; each worker says when it listens.
            while len(re.findall(rb"listening on", log)) < 2:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, log
                log += chunk
            found = re.search(rb"sharing port (\d+)", log)
            assert found is not None
            url = f"ws://127.0.0.1:{int(found.group(1))}/ws/lobby"
            async with trio.open_nursery() as nursery:
                conns = await _one_client_per_worker(url, nursery)
                (first, second) = conns
                # Wait until both workers' nodes follow the room (joined before hello).
                await first.send(MessageType.TEXT, "hello from first")
                assert (await second.receive()).data == "hello from first"
                await second.send(MessageType.TEXT, "hello from second")
                assert (await first.receive()).data == "hello from second"
                nursery.cancel_scope.cancel()
            # Ctrl-C in a terminal signals the whole process group: the parent forwards
            # it too, so each worker gets it twice.
            os.killpg(process.pid, signal.SIGINT)
            while chunk := await process.stderr.receive_some(4096):
                log += chunk
            assert await process.wait() == 0
            assert b"Traceback" not in log, log.decode()
        finally:
            if process.returncode is None:
                # The whole group: the parent and its workers.
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def _one_client_per_worker(url: str, nursery: trio.Nursery) -> list:  # type: ignore[type-arg]
    """Connect until two clients are served by two different workers."""
    by_worker: dict[str, object] = {}
    for _ in range(64):
        conn, hello = await nursery.start(_client, url)
        if hello not in by_worker:
            by_worker[hello] = conn
            if len(by_worker) == 2:
                return list(by_worker.values())
    raise AssertionError("the kernel never picked the second worker")


async def _client(url: str, *, task_status: trio.TaskStatus[tuple[object, str]]) -> None:
    async with open_websocket(url) as conn:
        hello = (await conn.receive()).data
        assert isinstance(hello, str) and hello.startswith("worker ")
        task_status.started((conn, hello))
        await trio.sleep_forever()


async def test_workers_exit_when_parent_is_killed(redis_url: str, namespace: str) -> None:
    env = {**os.environ, "RUE_TRIO_REDIS_URL": redis_url, "RUE_TRIO_TEST_NAMESPACE": namespace}
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.backplane._cluster_app", "2"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert process.stderr is not None
            log = b""
            while len(re.findall(rb"listening on", log)) < 2:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, log
                log += chunk
            process.send_signal(signal.SIGKILL)
            await process.wait()
            # The workers share the parent's stderr: it closes when the last one exits.
            while await process.stderr.receive_some(4096):
                pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
