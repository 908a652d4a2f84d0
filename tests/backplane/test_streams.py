"""Room history in Redis Streams: offsets shared by every node, recovery on any node."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import coredis
import pytest
import trio

from rue_trio.backplane.streams import RedisStreams
from rue_trio.exceptions import BackplaneError
from rue_trio.hub import HistoryConfig, Hub, StreamPosition
from rue_trio.protocol import MessageType
from tests.backplane.test_redis import ROOT, wait_until
from tests.hub._fakes import FakeMember

TEXT = MessageType.TEXT


@asynccontextmanager
async def open_nodes(
    url: str, namespace: str, count: int = 2, config: HistoryConfig | None = None
) -> AsyncIterator[list[Hub]]:
    hubs = [
        Hub(
            history=config or HistoryConfig(size=100),
            history_stream=RedisStreams(url, namespace=namespace),
        )
        for _ in range(count)
    ]
    async with trio.open_nursery() as nursery:
        for hub in hubs:
            await nursery.start(hub.run)
        yield hubs
        nursery.cancel_scope.cancel()


async def test_streams_number_messages_once_for_every_node(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace) as (a, b):
            on_a, on_b = FakeMember("a1"), FakeMember("b1")
            await a.join("r", on_a)
            await b.join("r", on_b)
            for index in range(20):
                await (a if index % 2 else b).broadcast(TEXT, f"m{index}", room="r")
            await wait_until(lambda: len(on_a.frames) == len(on_b.frames) == 20)
            assert on_a.payloads() == on_b.payloads()
            page_a = await a.history("r")
            page_b = await b.history("r")
            assert [(m.offset, m.data) for m in page_a.messages] == [
                (m.offset, m.data) for m in page_b.messages
            ]
            assert page_a.position == page_b.position
            assert [m.offset for m in page_a.messages] == list(range(1, 21))
            assert page_a.epoch and page_a.offset == 20


async def test_streams_recover_on_another_node(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace) as (a, b):
            phone = FakeMember("phone")
            await a.join("r", phone)
            for index in range(3):
                await a.broadcast(TEXT, f"m{index}", room="r")
            await wait_until(lambda: len(phone.frames) == 3)
            seen = (await a.history("r")).position
            await a.unregister(phone)
            for index in range(3, 7):
                await a.broadcast(TEXT, f"m{index}", room="r")
            await wait_until(lambda: a._stream.numbered == 7)  # type: ignore[union-attr]
            # The phone comes back through node b, which never had anyone in the room.
            back = FakeMember("phone-again")
            page = await b.join("r", back, since=seen)
            assert page.recovered and [m.offset for m in page.messages] == [4, 5, 6, 7]
            await a.broadcast(TEXT, "live", room="r")
            await wait_until(lambda: len(back.frames) == 5)
            assert back.payloads() == [b"m3", b"m4", b"m5", b"m6", b"live"]
            stale = await b.join("r", FakeMember("x"), since=StreamPosition("other", 1))
            assert not stale.recovered


async def test_streams_trimmed_history_is_not_recovered(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace, config=HistoryConfig(size=3)) as (a, b):
            for index in range(6):
                await a.broadcast(TEXT, f"m{index}", room="r")
            await wait_until(lambda: a._stream.numbered == 6)  # type: ignore[union-attr]
            page = await b.history("r")
            assert [m.offset for m in page.messages] == [4, 5, 6]
            lost = await b.join("r", FakeMember("m"), since=StreamPosition(page.epoch, 2))
            assert not lost.recovered
            kept = await b.join("r", FakeMember("n"), since=StreamPosition(page.epoch, 3))
            assert kept.recovered and len(kept.messages) == 3


async def test_streams_lost_keys_start_a_new_epoch(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace, count=1) as (a,):
            await a.broadcast(TEXT, "before", room="r")
            await wait_until(lambda: a._stream.numbered == 1)  # type: ignore[union-attr]
            before = await a.history("r")
            admin = coredis.Redis.from_url(redis_url)
            async with admin:
                await admin.delete([f"{namespace}:h:r", f"{namespace}:hs:r"])
            await a.broadcast(TEXT, "after", room="r")
            await wait_until(lambda: a._stream.numbered == 2)  # type: ignore[union-attr]
            after = await a.history("r")
            assert after.epoch != before.epoch and after.offset == 1
            page = await a.join("r", FakeMember("m"), since=before.position)
            assert not page.recovered


async def test_streams_recover_what_another_process_published(
    redis_url: str, namespace: str
) -> None:
    with trio.fail_after(20):
        async with open_nodes(redis_url, namespace, count=1) as (hub,):
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "tests.backplane._streams_node",
                    redis_url,
                    namespace,
                    "r",
                    "5",
                ],
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
                assert line.strip() == b"done"
                page = await hub.history("r")
                assert [(m.offset, m.data) for m in page.messages] == [
                    (n + 1, f"n{n}") for n in range(5)
                ]
                member = FakeMember("m")
                joined = await hub.join("r", member, since=StreamPosition(page.epoch, 2))
                assert joined.recovered and member.payloads() == [b"n2", b"n3", b"n4"]
            finally:
                process.kill()
                await process.wait()


async def test_streams_unreachable_at_start_raises_backplane_error() -> None:
    hub = Hub(
        history=HistoryConfig(),
        history_stream=RedisStreams("redis://127.0.0.1:1", connect_timeout=0.5),
    )
    with trio.fail_after(10), pytest.raises(BackplaneError, match="cannot reach Redis"):
        await hub.run()


async def test_streams_unreachable_error_hides_the_password() -> None:
    stream = RedisStreams("redis://:hunter2@127.0.0.1:1", connect_timeout=0.5, connect_attempts=1)
    hub = Hub(history=HistoryConfig(), history_stream=stream)
    with trio.fail_after(10), pytest.raises(BackplaneError, match="cannot reach Redis") as info:
        await hub.run()
    assert "hunter2" not in str(info.value) and ":***@" in str(info.value)


async def test_streams_live_clients_on_two_nodes_share_offsets_and_recover_across(
    redis_url: str, namespace: str
) -> None:
    import rue_trio
    from rue_trio import Context
    from rue_trio.backplane import RedisBackplane
    from rue_trio.live import LiveHandler
    from rue_trio.testing import open_test_app

    def node() -> tuple[LiveHandler, rue_trio.App]:
        live = LiveHandler(
            backplane=RedisBackplane(redis_url, namespace=namespace),
            history_stream=RedisStreams(redis_url, namespace=namespace),
        )
        app = rue_trio.default()
        app.add_background(live.run)

        @app.get("/live")
        async def ws(c: Context) -> None:
            await live.handle(c)

        return live, app

    async def until(conn: rue_trio.WebSocketConn, op: str) -> dict[str, object]:
        while True:
            got = await conn.receive_json()
            if got["op"] == op:
                return got  # type: ignore[no-any-return]

    (_, app_a), (_, app_b) = node(), node()
    with trio.fail_after(15):
        async with open_test_app(app_a) as a, open_test_app(app_b) as b:
            async with a.websocket("/live") as on_a, b.websocket("/live") as on_b:
                for conn in (on_a, on_b):
                    await conn.send_json({"op": "subscribe", "room": "r"})
                    await until(conn, "subscribed")
                await on_a.send_json({"op": "publish", "room": "r", "data": 1})
                first_a, first_b = await until(on_a, "message"), await until(on_b, "message")
                assert first_a == first_b and first_a["offset"] == 1
            async with a.websocket("/live") as writer:
                await writer.send_json({"op": "subscribe", "room": "r"})
                await until(writer, "subscribed")
                for n in (2, 3):
                    await writer.send_json({"op": "publish", "room": "r", "data": n})
                # Its own message back: Redis has numbered both.
                while (await until(writer, "message"))["data"] != 3:
                    pass
            # Back on the other node, from the position node a gave.
            async with b.websocket("/live") as back:
                since = {"epoch": first_a["epoch"], "offset": 1}
                await back.send_json({"op": "subscribe", "room": "r", "since": since})
                answer = await until(back, "subscribed")
                assert (answer["recovered"], answer["missed"]) == (True, 2)
                replayed = [await until(back, "message") for _ in range(2)]
                assert [m["data"] for m in replayed] == [2, 3]


async def test_streams_read_answers_limits_and_positions(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        async with open_nodes(redis_url, namespace, count=1) as (hub,):
            stream = hub._stream
            assert isinstance(stream, RedisStreams)
            config = HistoryConfig(size=100)
            empty = await stream.read("nothing", StreamPosition("e", 0), None, config)
            assert not empty.recovered and empty.epoch == ""
            for index in range(5):
                await hub.broadcast(TEXT, f"m{index}", room="r")
            await wait_until(lambda: stream.numbered == 5)
            page = await stream.read("r", None, 2, config)
            assert [m.data for m in page.messages] == ["m3", "m4"]
            assert (await stream.read("r", None, 0, config)).messages == ()
            first = await stream.read("r", StreamPosition(page.epoch, 1), 2, config)
            assert [m.offset for m in first.messages] == [2, 3] and first.recovered
            level = await stream.read("r", page.position, None, config)
            assert level.recovered and level.messages == ()
            ahead = await stream.read("r", StreamPosition(page.epoch, 9), None, config)
            assert not ahead.recovered


async def test_streams_ttl_expires_the_whole_history(redis_url: str, namespace: str) -> None:
    with trio.fail_after(10):
        config = HistoryConfig(size=100, ttl=0.1)
        async with open_nodes(redis_url, namespace, count=1, config=config) as (hub,):
            stream = hub._stream
            assert isinstance(stream, RedisStreams)
            await hub.broadcast(TEXT, "old", room="r")
            await wait_until(lambda: stream.numbered == 1)
            before = await hub.history("r")
            await trio.sleep(0.5)  # Redis expires the keys 0.1 s after the last message
            await hub.broadcast(TEXT, "new", room="r")
            await wait_until(lambda: stream.numbered == 2)
            after = await hub.history("r")
            assert after.epoch != before.epoch
            assert [(m.offset, m.data) for m in after.messages] == [(1, "new")]


async def test_streams_link_lost_local_delivery_goes_on(redis_url: str, namespace: str) -> None:
    with trio.fail_after(15):
        async with open_nodes(redis_url, namespace, count=1) as (hub,):
            stream = hub._stream
            assert isinstance(stream, RedisStreams)
            member = FakeMember("m")
            await hub.join("r", member)
            await hub.broadcast(TEXT, "before", room="r")
            await wait_until(lambda: len(member.frames) == 1)
            admin = coredis.Redis.from_url(redis_url)
            async with admin:
                for client in await admin.client_list():
                    if str(client.get("name", "")).startswith(f"{namespace}:streams:"):
                        await admin.client_kill(identifier=client["id"])
            sent = 1
            while stream.connected:  # noqa: ASYNC110 (the kill reaches us when it does)
                await trio.sleep(0.001)
            # Down: numbered here, in a local epoch, and delivered to the local member.
            down = await hub.join("r", FakeMember("n"), since=StreamPosition("x", 0))
            assert not down.recovered
            await hub.broadcast(TEXT, "during", room="r")
            sent += 1
            await wait_until(lambda: len(member.frames) == sent)
            await wait_until(lambda: stream.connected)
            await stream.synced()
            await hub.broadcast(TEXT, "after", room="r")
            sent += 1
            await wait_until(lambda: len(member.frames) == sent)
            assert member.payloads() == [b"before", b"during", b"after"]
