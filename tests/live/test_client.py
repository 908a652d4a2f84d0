"""The reconnecting client against a live server on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import rue_trio
from rue_trio import Context, InvalidStatusError, WebSocketConn
from rue_trio.live import LiveEvent, LiveHandler, LiveMessage, RefusedError, open_live


@asynccontextmanager
async def _server(live: LiveHandler, port: int = 0) -> AsyncIterator[str]:
    app = rue_trio.default()
    app.add_background(live.run)

    @app.get("/live")
    async def ws(c: Context) -> None:
        await live.handle(c)

    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(app.serve, "127.0.0.1", port)
        host, bound = addresses[0]
        yield f"ws://{host}:{bound}/live"
        nursery.cancel_scope.cancel()


async def _next(items: AsyncIterator[LiveMessage | LiveEvent], kind: type[Any]) -> Any:
    async for item in items:
        if isinstance(item, kind):
            return item
    raise AssertionError("the client's stream ended")


async def test_client_reconnects_and_recovers_every_message_once_in_order() -> None:
    server_conns: list[WebSocketConn] = []
    subscribes = 0

    async def on_subscribe(conn: WebSocketConn, room: str) -> None:
        nonlocal subscribes
        subscribes += 1
        if subscribes == 2:  # the client is back: what was said while it was away
            for n in (3, 4, 5):
                await live.publish(room, n)

    live = LiveHandler(on_connect=server_conns.append, on_subscribe=on_subscribe)
    with trio.fail_after(10):
        async with (
            _server(live) as url,
            open_live(url, rooms=["r"], backoff_min=0.01, backoff_max=0.05) as client,
        ):
            items = aiter(client)
            first = await _next(items, LiveEvent)
            assert first.op == "subscribed" and first.fields["recovered"] is False
            for n in (1, 2):
                await live.publish("r", n)
            seen = [(await _next(items, LiveMessage)).data for _ in range(2)]
            server_conns[0].close_nowait(1012, "service restart")
            back = await _next(items, LiveEvent)
            while back.op != "subscribed":
                back = await _next(items, LiveEvent)
            assert (back.fields["recovered"], back.fields["missed"]) == (True, 3)
            await live.publish("r", 6)
            messages = [await _next(items, LiveMessage) for _ in range(4)]
            seen += [m.data for m in messages]
            assert seen == [1, 2, 3, 4, 5, 6]
            assert [m.offset for m in messages] == [3, 4, 5, 6]
            assert client.position("r") == messages[-1].position
            assert client.connects == 2


async def _serving(
    live: LiveHandler,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[trio.CancelScope, str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope() as scope:
        async with _server(live, port) as url:
            task_status.started((scope, url))
            await trio.sleep_forever()


async def test_client_survives_a_server_restart_and_says_it_could_not_recover() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            live = LiveHandler()
            first, url = await nursery.start(_serving, live, 0)
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with open_live(url, rooms=["r"], backoff_min=0.01, backoff_max=0.05) as client:
                items = aiter(client)
                await _next(items, LiveEvent)
                await live.publish("r", "before")
                assert (await _next(items, LiveMessage)).data == "before"
                # The server goes away and comes back on the same port with a new hub.
                first.cancel()
                reborn = LiveHandler()
                second, _ = await nursery.start(_serving, reborn, port)
                event = await _next(items, LiveEvent)
                assert event.op == "subscribed" and event.fields["recovered"] is False
                await reborn.publish("r", "after")
                assert (await _next(items, LiveMessage)).data == "after"
                assert client.connects == 2
            second.cancel()


async def test_client_requests_publish_history_presence() -> None:
    def name(conn: WebSocketConn) -> None:
        conn.user = "ada"

    def on_publish(conn: WebSocketConn, room: str, data: Any) -> Any:
        if room == "closed":
            raise RefusedError("closed room")
        return data

    live = LiveHandler(on_connect=name, on_publish=on_publish)
    with trio.fail_after(10):
        async with _server(live) as url, open_live(url) as client:
            await client.subscribe("r")
            await client.publish("r", {"text": "hi"})
            item = await _next(aiter(client), LiveMessage)
            assert item.data == {"text": "hi"} and item.offset == 1
            assert [m.data for m in await client.history("r", limit=5)] == [{"text": "hi"}]
            assert await client.presence("r") == {"ada": [{}]}
            with pytest.raises(rue_trio.live.LiveError, match="closed room") as refused:
                await client.publish("closed", 1)
            assert refused.value.code == 403
            await client.unsubscribe("r")
            assert client.position("r") is None


async def test_client_first_connection_refused_raises() -> None:
    with trio.fail_after(10):
        async with _server(LiveHandler()) as url:
            with pytest.raises(InvalidStatusError):
                async with open_live(url.replace("/live", "/nowhere")):
                    pass


async def test_client_drops_a_replayed_message_it_already_handled() -> None:
    live = LiveHandler()
    with trio.fail_after(10):
        async with _server(live) as url, open_live(url, rooms=["r"]) as client:
            items = aiter(client)
            subscribed = await _next(items, LiveEvent)
            epoch = subscribed.fields["epoch"]
            await live.publish("r", "one")
            assert (await _next(items, LiveMessage)).offset == 1
            # A replay overlapping what was seen, then a new message.
            stale = f'{{"op":"message","room":"r","epoch":"{epoch}","offset":1,"data":"one"}}'
            await client._dispatch(stale)
            await live.publish("r", "two")
            assert (await _next(items, LiveMessage)).data == "two"


async def test_client_refuses_bad_backoff() -> None:
    with pytest.raises(ValueError, match="backoff"):
        async with open_live("ws://127.0.0.1:9/", backoff_min=0):
            pass
