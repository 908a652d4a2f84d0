"""Logging: loggers by layer, the connection id on its records, logs that show by default."""

from __future__ import annotations

import logging
import signal

import pytest
import trio
import trio.testing

from rue_trio import (
    App,
    Context,
    Hub,
    TextMessage,
    WebSocketConn,
    WebSocketHandler,
    open_websocket,
)
from rue_trio.app._run import configure_default_logging
from rue_trio.testing import open_test_client

from ._programs import ROOT, serving
from .hub._fakes import FakeMember


async def test_server_websocket_open_and_close_logged_with_conn_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """rue_trio.websocket logs the open and the close, each record carrying conn_id."""
    caplog.set_level(logging.INFO, logger="rue_trio.websocket")
    ids: list[str] = []

    def on_connect(conn: WebSocketConn) -> None:
        ids.append(conn.id)

    app = App()
    handler = WebSocketHandler(on_connect=on_connect)

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    async with open_test_client(app, "/ws") as conn:
        await conn.send_text("hi")
    await trio.testing.wait_all_tasks_blocked()
    records = [r for r in caplog.records if r.name == "rue_trio.websocket"]
    assert [r.getMessage().split(":")[0] for r in records] == [
        f"websocket {ids[0]} open",
        f"websocket {ids[0]} closed",
    ]
    assert all(getattr(r, "conn_id", None) == ids[0] for r in records)
    assert "1000" in records[1].getMessage()


async def test_hub_slow_member_eviction_logged_with_conn_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An eviction is one WARNING on rue_trio.hub carrying the member's id as conn_id."""
    caplog.set_level(logging.WARNING, logger="rue_trio.hub")
    hub = Hub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        slow = FakeMember("slow", capacity=1)
        await hub.join("room", slow)
        for i in range(3):
            await hub.broadcast(TextMessage, str(i), room="room")
        await hub.flush()
        nursery.cancel_scope.cancel()
    (record,) = [r for r in caplog.records if r.name == "rue_trio.hub"]
    assert record.levelno == logging.WARNING
    assert getattr(record, "conn_id", None) == "slow"
    assert "1008" in record.getMessage()


def test_app_run_keeps_the_applications_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging configured by the application (a root handler) is left as it is."""
    root = logging.getLogger()
    handler = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [handler])
    level = root.level
    configure_default_logging()
    assert root.handlers == [handler]
    assert root.level == level


async def test_app_run_shows_the_readme_lines_without_logging_setup() -> None:
    """README's Basic usage, run as written: its "Client connected" lines reach stderr."""
    script = "import runpy, sys; runpy.run_path(sys.argv[1])['app'].run('127.0.0.1:0')"
    with trio.fail_after(30):
        async with serving("-c", script, str(ROOT / "examples" / "basic_usage.py")) as program:
            async with open_websocket(f"ws://127.0.0.1:{program.port}/ws") as conn:
                await conn.send_text("Hello")
                assert (await conn.receive()).data == "Hello"
            program.process.send_signal(signal.SIGINT)
            await program.read_to_end()
            assert await program.process.wait() == 0
    text = program.stderr.decode()
    assert "INFO basic_usage: Client connected: " in text
    assert "INFO basic_usage: Received: Hello" in text
    assert "INFO basic_usage: Client disconnected: " in text
    assert "INFO rue_trio.http: 127.0.0.1:" in text
