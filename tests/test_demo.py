"""The chat demo's server (``python -m rue_trio``), over memory streams."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from rue_trio import ConnectionClosed, InvalidStatusError, WebSocketConn
from rue_trio._demo import MAX_CONTENT, MAX_NAME, STATIC_DIR, ChatDemo, make_app
from rue_trio.testing import open_test_app


async def next_of(conn: WebSocketConn, kind: str) -> dict[str, Any]:
    """The next message of type ``kind``, skipping the others."""
    while True:
        msg = await conn.receive_json()
        assert isinstance(msg, dict)
        if msg["type"] == kind:
            return msg


async def test_server_page_and_static_files_are_served() -> None:
    async with open_test_app(make_app()) as client:
        page = await client.request("GET", "/")
        assert page.status == 200
        assert page.header("content-type") == "text/html; charset=utf-8"
        assert '<script src="/static/app.js">' in page.text
        for name in ("app.js", "style.css"):
            response = await client.request("GET", f"/static/{name}")
            assert response.status == 200
            assert response.body == (STATIC_DIR / name).read_bytes()
        health = await client.request("GET", "/health")
        assert health.json() == {"status": "ok", "members": 0, "rooms": []}


async def test_server_room_members_see_joins_chat_and_leaves() -> None:
    demo = ChatDemo()
    async with open_test_app(demo.app) as client:
        async with client.websocket("/ws/lobby?name=ada") as ada:
            welcome = await next_of(ada, "members")
            assert (welcome["members"], welcome["you"]) == (["ada"], "ada")
            joined = await next_of(ada, "join")
            # The notice carries the change (who), never the whole list.
            assert joined == {
                "type": "join",
                "content": "ada joined the room",
                "from": "ada",
                "room": "lobby",
            }
            async with client.websocket("/ws/lobby?name=bob") as bob:
                assert (await next_of(ada, "join"))["from"] == "bob"
                assert (await next_of(bob, "members"))["members"] == ["ada", "bob"]
                assert demo.names("lobby") == ["ada", "bob"]
                # "from" is the server's name for the sender, whatever the client claims.
                await bob.send_json({"type": "chat", "content": " hi! ", "from": "mallory"})
                expected = {"type": "chat", "content": "hi!", "from": "bob"}
                assert await next_of(ada, "chat") == expected
                assert await next_of(bob, "chat") == expected
            left = await next_of(ada, "leave")
            assert left == {
                "type": "leave",
                "content": "bob left the room",
                "from": "bob",
                "room": "lobby",
            }
        await trio.testing.wait_all_tasks_blocked()
        assert demo.hub.count() == 0
        assert demo.names("lobby") == []


async def test_server_rooms_are_isolated() -> None:
    async with (
        open_test_app(make_app()) as client,
        client.websocket("/ws/lobby?name=ada") as ada,
        client.websocket("/ws/trio?name=bob") as bob,
    ):
        await next_of(ada, "join")
        assert (await next_of(bob, "members"))["members"] == ["bob"]
        await bob.send_json({"type": "chat", "content": "only trio"})
        await ada.send_json({"type": "chat", "content": "only lobby"})
        assert (await next_of(bob, "chat"))["content"] == "only trio"
        assert (await next_of(ada, "chat"))["content"] == "only lobby"


async def test_server_ping_gets_pong_with_the_same_content() -> None:
    async with open_test_app(make_app()) as client, client.websocket("/ws/lobby") as conn:
        await conn.send_json({"type": "ping", "content": "12.5"})
        assert await next_of(conn, "pong") == {"type": "pong", "content": "12.5", "from": ""}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", 'invalid JSON: send an object such as {"type": "chat"'),
        ("[" * 5000 + "]" * 5000, "invalid JSON"),
        ("[1, 2]", "a message is a JSON object"),
        ('{"type": "chat", "content": 5}', "content must be a string"),
        ('{"type": "shout"}', "unknown message type 'shout'"),
    ],
)
async def test_server_invalid_message_gets_an_error(message: str, error: str) -> None:
    async with open_test_app(make_app()) as client, client.websocket("/ws/lobby") as conn:
        await conn.send_text(message)
        assert error in (await next_of(conn, "error"))["content"]
        await conn.send_bytes(b"\x00")
        assert "binary" in (await next_of(conn, "error"))["content"]
        await conn.send_json({"type": "ping"})
        await next_of(conn, "pong")


async def test_server_names_and_contents_are_cleaned() -> None:
    long_name = "x" * (MAX_NAME + 10)
    async with (
        open_test_app(make_app()) as client,
        client.websocket(f"/ws/lobby?name={long_name}") as named,
        client.websocket("/ws/lobby?name=%20%20") as anonymous,
    ):
        members = (await next_of(anonymous, "members"))["members"]
        assert "x" * MAX_NAME in members
        assert any(name.startswith("guest-") for name in members)
        await named.send_json({"type": "chat", "content": "   "})
        await named.send_json({"type": "chat", "content": "y" * (MAX_CONTENT + 1)})
        chat = await next_of(anonymous, "chat")
        assert chat["from"] == "x" * MAX_NAME
        assert chat["content"] == "y" * MAX_CONTENT


async def test_server_bad_room_and_foreign_origin_are_refused() -> None:
    async with open_test_app(make_app()) as client:
        with pytest.raises(InvalidStatusError) as bad_room:
            async with client.websocket("/ws/no%20spaces"):
                pass
        assert bad_room.value.status_code == 400
        with pytest.raises(InvalidStatusError) as foreign:
            async with client.websocket("/ws/lobby", origin="http://evil.example"):
                pass
        assert foreign.value.status_code == 403
        async with client.websocket("/ws/lobby", origin="http://testserver") as conn:
            await next_of(conn, "join")


async def test_server_presence_catches_up_after_falling_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A presence stream the task fell behind on ends; the task resyncs every room."""
    demo = ChatDemo()
    async with (
        open_test_app(demo.app) as client,
        client.websocket("/ws/lobby?name=ada") as ada,
    ):
        await next_of(ada, "join")
        # Close the task's stream as the hub does when its reader is a buffer behind.
        subscribers = demo.hub._subscribers
        assert len(subscribers) == 1
        subscribers[0].close()
        update = await next_of(ada, "members")
        assert update == {
            "type": "members",
            "content": "",
            "from": "",
            "room": "lobby",
            "members": ["ada"],
        }
        async with client.websocket("/ws/lobby?name=bob"):
            assert (await next_of(ada, "join"))["from"] == "bob"


async def test_server_shutdown_closes_sockets_with_1001() -> None:
    async with open_test_app(make_app()) as client, client.websocket("/ws/lobby") as conn:
        await next_of(conn, "join")
        client.shutdown()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await conn.receive()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001


async def test_server_names_are_unique_within_a_room_only() -> None:
    demo = ChatDemo()
    async with (
        open_test_app(demo.app) as client,
        client.websocket("/ws/lobby?name=ada") as first,
        client.websocket("/ws/lobby?name=ada") as second,
        client.websocket(f"/ws/lobby?name={'a' * MAX_NAME}") as long1,
        client.websocket(f"/ws/lobby?name={'a' * MAX_NAME}") as long2,
        client.websocket("/ws/trio?name=ada") as elsewhere,
    ):
        assert (await next_of(first, "members"))["you"] == "ada"
        assert (await next_of(second, "members"))["you"] == "ada-2"
        assert (await next_of(long1, "members"))["you"] == "a" * MAX_NAME
        assert (await next_of(long2, "members"))["you"] == "a" * (MAX_NAME - 2) + "-2"
        assert (await next_of(elsewhere, "members"))["you"] == "ada"
        await second.send_json({"type": "chat", "content": "hi"})
        assert (await next_of(first, "chat"))["from"] == "ada-2"
        await first.aclose()
        assert (await next_of(second, "leave"))["from"] == "ada"
        await trio.testing.wait_all_tasks_blocked()
        # The name is free again once its holder has gone.
        async with client.websocket("/ws/lobby?name=ada") as again:
            assert (await next_of(again, "members"))["you"] == "ada"


async def test_server_favicon_is_served() -> None:
    async with open_test_app(make_app()) as client:
        icon = await client.request("GET", "/favicon.ico")
        page = await client.request("GET", "/")
    assert icon.status == 200
    assert icon.header("content-type") == "image/svg+xml"
    assert icon.body.startswith(b"<svg")
    assert '<link rel="icon" href="/static/favicon.svg"' in page.text
