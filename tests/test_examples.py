"""Every example in examples/ runs: the Python twins of the seed's Go examples."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

from rue_trio import App, ConnectionClosedOK, MessageType
from rue_trio.testing import open_test_app, open_test_client

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    """Import a fresh copy of an example (a Hub runs once, so each test gets its own)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def app_of(module: ModuleType) -> App:
    app = module.app
    assert isinstance(app, App)
    return app


async def test_example_basic_usage_echoes_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Seed "Basic Usage": echo, with the four callbacks logging."""
    caplog.set_level("INFO", logger="basic_usage")
    async with open_test_client(app_of(load("basic_usage")), "/ws") as conn:
        await conn.send_text("Hello")
        assert (await conn.receive()).data == "Hello"
        await conn.send_bytes(b"\x01\x02")
        assert (await conn.receive()).data == b"\x01\x02"
        conn_id_log = caplog.text
    assert "Client connected:" in conn_id_log
    assert "Received: Hello" in caplog.text


async def test_example_message_types_answers_text_and_binary() -> None:
    """Seed "Message Types": a text Hello and a binary answer for every message."""
    async with open_test_client(app_of(load("message_types")), "/ws") as conn:
        await conn.send_bytes(b"12345")
        text, binary = await conn.receive(), await conn.receive()
        assert (text.type, text.data) == (MessageType.TEXT, "Hello")
        assert (binary.type, binary.data) == (MessageType.BINARY, (5).to_bytes(4, "big"))
        await conn.send_text("hi")
        assert (await conn.receive()).data == "Hello"
        assert (await conn.receive()).data == (2).to_bytes(4, "big")


async def test_example_json_messages_chat_ping_and_invalid() -> None:
    """Seed "JSON Messages": chat is broadcast to all, ping gets pong, bad JSON is ignored."""
    module = load("json_messages")
    async with (
        open_test_app(app_of(module)) as client,
        client.websocket("/ws") as alice,
        client.websocket("/ws") as bob,
    ):
        await trio.testing.wait_all_tasks_blocked()
        await alice.send_text("not json")
        await alice.send_json({"type": "ping"})
        assert await alice.receive_json() == {"type": "pong", "content": "", "from": ""}
        await alice.send_json({"type": "chat", "content": "Hello!", "from": "user1"})
        expected = {"type": "chat", "content": "Hello!", "from": "user1"}
        assert await alice.receive_json() == expected
        assert await bob.receive_json() == expected


async def test_example_hub_broadcast_reaches_everyone() -> None:
    """Seed "Hub for Broadcasting": every message goes to every connected client."""
    module = load("hub_broadcast")
    async with (
        open_test_app(app_of(module)) as client,
        client.websocket("/ws") as a,
        client.websocket("/ws") as b,
        client.websocket("/ws") as c,
    ):
        await trio.testing.wait_all_tasks_blocked()
        await b.send_bytes(b"\x00from b")
        for conn in (a, b, c):
            assert (await conn.receive()).data == b"\x00from b"


async def test_example_rooms_keep_rooms_apart() -> None:
    """Seed "Room-based Broadcasting": a message reaches its own room only."""
    module = load("rooms")
    async with open_test_app(app_of(module)) as client:
        async with (
            client.websocket("/ws/go") as go1,
            client.websocket("/ws/go") as go2,
            client.websocket("/ws/rust") as rust,
        ):
            await trio.testing.wait_all_tasks_blocked()
            await go1.send_text("gophers")
            assert (await go1.receive()).data == "gophers"
            assert (await go2.receive()).data == "gophers"
            await rust.send_text("crabs")
            assert (await rust.receive()).data == "crabs"
            await rust.close()
            with pytest.raises(ConnectionClosedOK):
                await rust.receive()
            await trio.testing.wait_all_tasks_blocked()
            assert module.chat.rooms() == ["go"]
        await trio.testing.wait_all_tasks_blocked()
        assert module.chat.rooms() == []


def test_examples_are_all_tested() -> None:
    """No example escapes its test."""
    tested = {"basic_usage", "message_types", "json_messages", "hub_broadcast", "rooms", "auth"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested
