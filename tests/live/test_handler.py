"""The live protocol over the test client: ops, answers, errors, recovery, presence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import pytest
import trio

import rue_trio
from rue_trio import App, Context, HistoryConfig, WebSocketConn
from rue_trio.live import LiveHandler, RefusedError
from rue_trio.testing import TestApp, open_test_app


def _name(conn: WebSocketConn) -> None:
    assert conn.request is not None
    names = parse_qs(conn.request.query_string).get("name")
    if names:
        conn.user = names[0]
        conn.meta = {"name": names[0]}


def _app(live: LiveHandler) -> App:
    app = rue_trio.default()
    app.add_background(live.run)

    @app.get("/live")
    async def ws(c: Context) -> None:
        await live.handle(c)

    return app


@asynccontextmanager
async def _serve(**options: Any) -> AsyncIterator[tuple[LiveHandler, TestApp]]:
    options.setdefault("on_connect", _name)
    live = LiveHandler(**options)
    async with open_test_app(_app(live)) as client:
        yield live, client


async def _send(conn: WebSocketConn, **request: Any) -> None:
    await conn.send(rue_trio.TextMessage, json.dumps(request))


async def _get(conn: WebSocketConn) -> dict[str, Any]:
    with trio.fail_after(5):
        message = await conn.receive()
    value = json.loads(message.data)
    assert isinstance(value, dict)
    return value


async def _ask(conn: WebSocketConn, **request: Any) -> dict[str, Any]:
    await _send(conn, **request)
    return await _get(conn)


async def _until(conn: WebSocketConn, op: str) -> dict[str, Any]:
    """The next message with this op, skipping the others (notices, messages)."""
    while (got := await _get(conn))["op"] != op:
        pass
    return got


async def test_live_subscribe_publish_delivers_numbered_messages() -> None:
    async with _serve() as (_, client), client.websocket("/live?name=ada") as ada:
        subscribed = await _ask(ada, op="subscribe", room="r", ref=1)
        epoch = subscribed.pop("epoch")
        assert subscribed == {
            "op": "subscribed",
            "room": "r",
            "offset": 0,
            "recovered": False,
            "missed": 0,
            "ref": 1,
        }
        assert await _get(ada) == {
            "op": "join",
            "room": "r",
            "user": "ada",
            "meta": {"name": "ada"},
        }
        await _send(ada, op="publish", room="r", data={"text": "hi"}, ref="p1")
        got = [await _get(ada), await _get(ada)]
        assert {"op": "ok", "ref": "p1"} in got
        assert {
            "op": "message",
            "room": "r",
            "epoch": epoch,
            "offset": 1,
            "data": {"text": "hi"},
        } in got


async def test_live_subscribe_since_replays_missed_before_live() -> None:
    async with _serve() as (live, client):
        async with client.websocket("/live?name=ada") as ada:
            first = await _ask(ada, op="subscribe", room="r")
            await _get(ada)  # join
            for n in range(3):
                await live.publish("r", n)
            seen = [await _get(ada) for _ in range(3)]
        last = seen[0]
        assert last["offset"] == 1
        for n in range(3, 6):
            await live.publish("r", n)  # while ada is away
        async with client.websocket("/live?name=ada") as ada:
            since = {"epoch": first["epoch"], "offset": last["offset"]}
            answer = await _ask(ada, op="subscribe", room="r", since=since)
            assert (answer["op"], answer["recovered"], answer["missed"], answer["offset"]) == (
                "subscribed",
                True,
                5,
                6,
            )
            await live.publish("r", 6)
            data: list[tuple[int, Any]] = []
            while len(data) < 6:
                got = await _get(ada)
                if got["op"] == "message":
                    data.append((got["offset"], got["data"]))
            assert data == [(2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6)]


async def test_live_subscribe_since_another_epoch_is_not_recovered() -> None:
    async with _serve() as (live, client), client.websocket("/live") as conn:
        await live.publish("r", "x")
        answer = await _ask(conn, op="subscribe", room="r", since={"epoch": "gone", "offset": 3})
        assert (answer["recovered"], answer["missed"], answer["offset"]) == (False, 0, 1)


async def test_live_history_and_presence_answer_with_ref() -> None:
    async with (
        _serve(history=HistoryConfig(size=3)) as (live, client),
        client.websocket("/live?name=ada") as tab1,
        client.websocket("/live?name=ada") as tab2,
        client.websocket("/live?name=bob") as bob,
    ):
        for conn in (tab1, tab2, bob):
            await _ask(conn, op="subscribe", room="r")
        for n in range(5):
            await live.publish("r", n)
        await live.hub.flush()
        await _send(tab1, op="history", room="elsewhere")
        history = await _until(tab1, "history")
        assert history["messages"] == [] and history["op"] == "history"
        await _send(bob, op="history", room="r", limit=2, ref="h")
        answer = await _until(bob, "history")
        assert [m["data"] for m in answer["messages"]] == [3, 4] and answer["ref"] == "h"
        assert answer["messages"][0]["op"] == "message"
        await _send(bob, op="presence", room="r")
        answer = await _until(bob, "presence")
        assert answer["users"] == {
            "ada": [{"name": "ada"}, {"name": "ada"}],
            "bob": [{"name": "bob"}],
        }


async def test_live_user_leaves_with_their_last_tab() -> None:
    async with (
        _serve() as (_, client),
        client.websocket("/live?name=bob") as bob,
    ):
        await _ask(bob, op="subscribe", room="r")
        assert (await _get(bob))["op"] == "join"
        async with client.websocket("/live?name=ada") as tab1:
            await _ask(tab1, op="subscribe", room="r")
            async with client.websocket("/live?name=ada") as tab2:
                await _ask(tab2, op="subscribe", room="r")
                assert await _get(bob) == {
                    "op": "join",
                    "room": "r",
                    "user": "ada",
                    "meta": {"name": "ada"},
                }
            await _send(tab1, op="unsubscribe", room="r", ref=7)
            assert await _until(tab1, "ok") == {"op": "ok", "ref": 7}
        assert await _get(bob) == {
            "op": "leave",
            "room": "r",
            "user": "ada",
            "meta": {"name": "ada"},
        }


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"op": "dance"}, 404),
        ({"op": "subscribe"}, 400),
        ({"op": "subscribe", "room": "r", "since": {"epoch": 1, "offset": 0}}, 400),
        ({"op": "subscribe", "room": "r", "since": {"epoch": "e", "offset": -1}}, 400),
        ({"op": "publish", "room": "r"}, 400),
        ({"op": "history", "room": "r", "limit": "ten"}, 400),
        ({"op": "unsubscribe", "room": "r"}, 404),
        ({"op": "subscribe", "room": "x" * 129}, 400),
        ({"op": "subscribe", "room": "r", "ref": [1]}, 400),
        ([1, 2], 400),
    ],
)
async def test_live_malformed_request_gets_error_and_stays_open(request_: Any, code: int) -> None:
    async with _serve() as (_, client), client.websocket("/live") as conn:
        if isinstance(request_, dict):
            request_ = {**request_, "ref": request_.get("ref", "r1")}
        await conn.send(rue_trio.TextMessage, json.dumps(request_))
        answer = await _get(conn)
        assert answer["op"] == "error" and answer["code"] == code and answer["reason"]
        if isinstance(request_, dict) and request_["ref"] == "r1":
            assert answer["ref"] == "r1"
        assert (await _ask(conn, op="subscribe", room="ok"))["op"] == "subscribed"


async def test_live_binary_and_non_json_get_error() -> None:
    async with _serve() as (_, client), client.websocket("/live") as conn:
        await conn.send(rue_trio.BinaryMessage, b"{}")
        assert (await _get(conn))["code"] == 400
        await conn.send(rue_trio.TextMessage, "{not json")
        assert (await _get(conn))["code"] == 400


async def test_live_subscribe_twice_and_room_limit_are_refused() -> None:
    async with _serve(max_rooms=1) as (_, client), client.websocket("/live") as conn:
        await _ask(conn, op="subscribe", room="a")
        await _get(conn)  # join
        assert (await _ask(conn, op="subscribe", room="a"))["code"] == 409
        assert (await _ask(conn, op="subscribe", room="b"))["code"] == 429


async def test_live_hooks_refuse_and_transform() -> None:
    def on_subscribe(conn: WebSocketConn, room: str) -> None:
        if room.startswith("secret"):
            raise RefusedError("members only")

    async def on_publish(conn: WebSocketConn, room: str, data: Any) -> Any:
        await trio.lowlevel.checkpoint()
        if room == "readonly":
            raise RefusedError("read only", code=451)
        return {"from": conn.user, "text": data}

    async with (
        _serve(on_subscribe=on_subscribe, on_publish=on_publish) as (_, client),
        client.websocket("/live?name=ada") as conn,
    ):
        refused = await _ask(conn, op="subscribe", room="secret-1", ref="s")
        assert refused == {"op": "error", "code": 403, "reason": "members only", "ref": "s"}
        assert (await _ask(conn, op="history", room="secret-1"))["code"] == 403
        assert (await _ask(conn, op="presence", room="secret-1"))["code"] == 403
        assert (await _ask(conn, op="publish", room="readonly", data=1))["code"] == 451
        await _ask(conn, op="subscribe", room="r")
        await _get(conn)  # join
        message = await _ask(conn, op="publish", room="r", data="hi")
        assert message["data"] == {"from": "ada", "text": "hi"}


async def test_live_hook_exception_closes_only_that_connection_with_1011() -> None:
    def on_publish(conn: WebSocketConn, room: str, data: Any) -> Any:
        raise RuntimeError("bug")

    errors: list[BaseException] = []
    async with (
        _serve(on_publish=on_publish, on_error=lambda c, e: errors.append(e)) as (_, client),
        client.websocket("/live") as other,
        client.websocket("/live") as conn,
    ):
        await _send(conn, op="publish", room="r", data=1)
        with trio.fail_after(5), pytest.raises(rue_trio.ConnectionClosed):
            await conn.receive()
        assert conn.close_code == 1011
        assert isinstance(errors[0], RuntimeError)
        assert (await _ask(other, op="subscribe", room="r"))["op"] == "subscribed"


def test_live_handler_refuses_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_rooms"):
        LiveHandler(max_rooms=0)


async def test_live_authenticate_sets_the_user_presence_lists() -> None:
    from rue_trio import Identity, Refusal

    def authenticate(c: Context) -> Identity | Refusal:
        token = c.query("token")
        if token is None:
            return Refusal(401, "a token, please")
        return Identity(user=token.upper(), meta={"token": token})

    async with _serve(on_connect=None, authenticate=authenticate) as (_, client):
        async with client.websocket("/live?token=ada") as conn:
            await _ask(conn, op="subscribe", room="r")
            await _send(conn, op="presence", room="r")
            assert (await _until(conn, "presence"))["users"] == {"ADA": [{"token": "ada"}]}
        with pytest.raises(rue_trio.InvalidStatusError):
            async with client.websocket("/live"):
                pass
