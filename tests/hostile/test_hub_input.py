"""Nothing a client sends or an app hook does stops the hub (issue 9, items 4 and 5).

Bad arguments fail in the caller's task with a clear error; exceptions from presence
hooks, members and the backplane are caught, logged and counted; the hub goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
import trio

from rue_trio.app import App, Context
from rue_trio.client import open_websocket
from rue_trio.exceptions import ConnectionClosed
from rue_trio.handlers import WebSocketHandler
from rue_trio.hub import BackplaneSink, Hub, PresenceEvent
from rue_trio.protocol import MessageType
from rue_trio.websocket import WebSocketConn
from tests.hub._fakes import FakeMember
from tests.hub.test_backplane_port import FakeBackplane

from ._hub_app import huge_room_closes_only_the_attacker, serve_chat

TEXT = MessageType.TEXT


async def _still_serves(hub: Hub) -> None:
    """The hub is alive: a new member registers and receives a broadcast."""
    witness = FakeMember(f"witness-{hub.count()}")
    await hub.register(witness)
    await hub.broadcast(TEXT, "alive")
    await hub.flush()
    assert witness.payloads()[-1] == b"alive"


@pytest.mark.parametrize("bad", ["not-a-connection", None, 42, object()])
async def test_hub_commands_reject_what_is_not_a_member_in_the_caller(
    nursery: trio.Nursery, bad: object
) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: hub.join("room", bad),  # type: ignore[arg-type]
        lambda: hub.leave("room", bad),  # type: ignore[arg-type]
        lambda: hub.register(bad),  # type: ignore[arg-type]
        lambda: hub.unregister(bad),  # type: ignore[arg-type]
    ]
    if bad is not None and not isinstance(bad, str):  # a str or None is a valid exclude
        calls.append(lambda: hub.broadcast(TEXT, "x", exclude=bad))  # type: ignore[arg-type]
    for call in calls:
        with pytest.raises(TypeError, match="takes a connection"):
            await call()
    for nowait in (hub.join_nowait, hub.leave_nowait):
        with pytest.raises(TypeError, match="takes a connection"):
            nowait("room", bad)  # type: ignore[arg-type]
    for nowait_member in (hub.register_nowait, hub.unregister_nowait):
        with pytest.raises(TypeError, match="takes a connection"):
            nowait_member(bad)  # type: ignore[arg-type]
    await _still_serves(hub)


async def test_hub_room_names_bounded_in_bytes_in_the_caller(nursery: trio.Nursery) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    member = FakeMember("m")
    await hub.join("r" * 1024, member)
    await hub.join("é" * 512, member)  # 1,024 bytes in UTF-8
    too_long = ["r" * 1025, "é" * 513, "r" * 70_000]
    for room in too_long:
        with pytest.raises(ValueError, match="at most 1024 bytes"):
            await hub.join(room, member)
        with pytest.raises(ValueError, match="at most 1024 bytes"):
            await hub.broadcast(TEXT, "x", room=room)
        with pytest.raises(ValueError, match="at most 1024 bytes"):
            hub.leave_nowait(room, member)
    with pytest.raises(ValueError, match="Unicode"):
        await hub.join("\ud800" * 300, member)
    with pytest.raises(TypeError, match="must be a str"):
        await hub.join(b"room", member)  # type: ignore[arg-type]
    assert sorted(hub.rooms()) == sorted(["r" * 1024, "é" * 512])
    await _still_serves(hub)


def test_hub_max_room_bytes_is_a_setting() -> None:
    assert Hub(max_room_bytes=65_535)
    for bad in (0, 65_536):
        with pytest.raises(ValueError, match="max_room_bytes"):
            Hub(max_room_bytes=bad)


async def test_hub_presence_hook_that_raises_is_logged_and_counted(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: PresenceEvent) -> None:
        raise RuntimeError(f"hook bug on {event.kind.value}")

    hub = Hub(on_presence=hook)
    await nursery.start(hub.run)
    member = FakeMember("m")
    with caplog.at_level(logging.ERROR, logger="rue_trio.hub"):
        await hub.join("room", member)
        await hub.leave("room", member)
    assert hub.statistics().hook_errors == 3  # register, join, leave
    assert "on_presence hook failed" in caplog.text
    assert hub.members("room") == [] and hub.members() == ["m"]
    await _still_serves(hub)


async def test_hub_member_whose_port_raises_is_removed_and_closed_1011(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub()
    await nursery.start(hub.run)
    broken, ok = FakeMember("broken"), FakeMember("ok")
    broken.send_error = RuntimeError
    await hub.register(broken)
    await hub.register(ok)
    with caplog.at_level(logging.ERROR, logger="rue_trio.hub"):
        await hub.broadcast(TEXT, "hello")
        await hub.flush()
    assert ok.payloads() == [b"hello"]
    assert broken.evictions == [(1011, "internal error")]
    assert hub.members() == ["ok"]
    assert hub.statistics().member_errors == 1
    assert "hub member broken failed" in caplog.text
    await _still_serves(hub)


class _FailingBackplane(FakeBackplane):
    def publish(self, envelope: object) -> None:
        raise ValueError("cannot pack")

    def subscribe_room(self, room: str) -> None:
        raise RuntimeError("broken link")


async def test_hub_backplane_call_that_raises_is_logged_and_counted(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(backplane=_FailingBackplane())
    await nursery.start(hub.run)
    member = FakeMember("m")
    with caplog.at_level(logging.ERROR, logger="rue_trio.hub"):
        await hub.join("room", member)
        await hub.broadcast(TEXT, "local still", room="room")
        await hub.flush()
    assert member.payloads() == [b"local still"]
    assert hub.statistics().backplane_errors == 2
    assert "backplane call publish failed" in caplog.text
    await _still_serves(hub)


async def test_hub_client_room_name_of_70000_bytes_closes_only_its_connection() -> None:
    hub = Hub()
    with trio.fail_after(10):
        async with serve_chat(hub) as url:
            await huge_room_closes_only_the_attacker(url)
    assert hub.statistics().members == 0


async def test_hub_never_started_fails_each_connection_fast_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub()  # the app forgets app.add_background(hub.run)
    connected: list[WebSocketConn] = []
    handler = WebSocketHandler(hub=hub, on_connect=connected.append)
    app = App()

    async def ws(c: Context) -> None:
        await handler.handle(c)

    app.get("/ws", ws)
    with trio.fail_after(5), caplog.at_level(logging.ERROR):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(app.serve, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{addresses[0][1]}/ws"
            async with open_websocket(url) as client:
                with pytest.raises(ConnectionClosed) as closed:
                    await client.receive()
            nursery.cancel_scope.cancel()
    assert closed.value.code == 1011
    assert connected == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "app.add_background(hub.run)" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one clear line, not a traceback


class _CrashingBackplane(FakeBackplane):
    async def run(
        self, sink: BackplaneSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep(0.01)
        raise RuntimeError("backplane bug")


async def test_hub_backplane_that_crashes_after_start_leaves_the_hub_alone(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(backplane=_CrashingBackplane())
    with caplog.at_level(logging.ERROR, logger="rue_trio.hub"):
        await nursery.start(hub.run)
        await trio.sleep(0.05)
    assert hub.running
    assert hub.statistics().backplane_errors == 1
    assert "goes on without other nodes" in caplog.text
    await _still_serves(hub)


async def test_hub_member_whose_close_raises_is_still_evicted(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    class BadClose(FakeMember):
        def close_nowait(self, code: int, reason: str) -> None:
            raise RuntimeError("close bug")

    hub = Hub()
    await nursery.start(hub.run)
    slow = BadClose("slow", capacity=0)
    await hub.register(slow)
    with caplog.at_level(logging.ERROR, logger="rue_trio.hub"):
        await hub.broadcast(TEXT, "x")
        await hub.flush()
    assert hub.members() == [] and hub.statistics().evicted == 1
    assert "failed to close" in caplog.text
    await _still_serves(hub)
