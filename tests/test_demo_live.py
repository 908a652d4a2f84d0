"""The demo's /live page and protocol: history, stamping, presence by name."""

from __future__ import annotations

import json
from typing import Any

import trio

import rue_trio
from rue_trio import WebSocketConn
from rue_trio._demo import make_app
from rue_trio._demo._live import LIVE_HISTORY
from rue_trio.testing import open_test_app


async def _ask(conn: WebSocketConn, **request: Any) -> dict[str, Any]:
    await conn.send_json(request)
    return await _until(conn, "ref", request.get("ref"))


async def _until(conn: WebSocketConn, key: str, value: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        while True:
            got = await conn.receive_json()
            assert isinstance(got, dict)
            if got.get(key) == value:
                return got


async def test_demo_live_page_and_client_script_are_served() -> None:
    async with open_test_app(make_app()) as client:
        page = await client.request("GET", "/live")
        assert page.status == 200 and "live-page.js" in page.text
        script = await client.request("GET", "/live.js")
        assert script.status == 200 and "class RueLive" in script.text
        assert (script.header("content-type") or "").startswith("text/javascript")
        page_script = await client.request("GET", "/static/live-page.js")
        assert page_script.status == 200


async def test_demo_live_keeps_history_stamps_names_and_counts_tabs() -> None:
    async with (
        open_test_app(make_app()) as client,
        client.websocket("/live?name=ada") as tab1,
        client.websocket("/live?name=ada") as tab2,
        client.websocket("/live?name=bob") as bob,
    ):
        for conn in (tab1, tab2, bob):
            assert (await _ask(conn, op="subscribe", room="lobby", ref=1))["op"] == "subscribed"
        for n in range(LIVE_HISTORY + 5):
            await _ask(bob, op="publish", room="lobby", data={"text": f"m{n}"}, ref=n + 10)
        history = await _ask(tab1, op="history", room="lobby", limit=100, ref="h")
        assert len(history["messages"]) == 100
        assert history["messages"][-1]["data"] == {"from": "bob", "text": f"m{LIVE_HISTORY + 4}"}
        assert history["offset"] == LIVE_HISTORY + 5
        presence = await _ask(bob, op="presence", room="lobby", ref="p")
        assert presence["users"] == {"ada": [{"name": "ada"}] * 2, "bob": [{"name": "bob"}]}


async def test_demo_live_refuses_bad_rooms_and_empty_messages() -> None:
    async with open_test_app(make_app()) as client, client.websocket("/live?name=ada") as conn:
        bad = await _ask(conn, op="subscribe", room="no spaces!", ref=1)
        assert bad["op"] == "error" and bad["code"] == 400
        empty = await _ask(conn, op="publish", room="lobby", data={"text": "  "}, ref=2)
        assert empty["op"] == "error" and empty["code"] == 400
        foreign = await client.request(
            "GET",
            "/live",
            headers=[
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("origin", "http://evil.example"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
            ],
        )
        assert foreign.status == 403


async def test_demo_live_and_ws_chat_live_side_by_side() -> None:
    async with (
        open_test_app(make_app()) as client,
        client.websocket("/ws/lobby?name=ada") as chat,
        client.websocket("/live?name=ada") as live,
    ):
        await chat.send(rue_trio.TextMessage, json.dumps({"type": "chat", "content": "hi"}))
        got = await _until(chat, "type", "chat")
        assert got == {"type": "chat", "content": "hi", "from": "ada"}
        assert (await _ask(live, op="subscribe", room="lobby", ref=1))["missed"] == 0
