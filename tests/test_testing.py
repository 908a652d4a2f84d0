"""rue_trio.testing: an app and its clients over memory streams, under the mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rue_trio import App, Context, Hub, InvalidStatusError, WebSocketHandler
from rue_trio.testing import open_test_app, open_test_client


def make_app() -> App:
    app = App()

    @app.get("/health")
    async def health(c: Context) -> None:
        await c.json(200, {"ok": True, "agent": c.header("user-agent")})

    @app.post("/echo")
    async def echo(c: Context) -> None:
        await c.string(201, c.body.decode().upper())

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await WebSocketHandler(on_message=lambda conn, t, d: conn.send(t, d)).handle(c)

    return app


async def test_request_plain_routes() -> None:
    """Plain HTTP through the test client: status, headers, body, JSON."""
    async with open_test_app(make_app()) as client:
        response = await client.request("GET", "/health", headers=[("user-agent", "tests")])
        assert response.status == 200
        assert response.header("Content-Type") == "application/json; charset=utf-8"
        assert response.header("x-missing") is None
        assert response.json() == {"ok": True, "agent": "tests"}
        posted = await client.request("POST", "/echo", body=b"shout")
        assert (posted.status, posted.text) == (201, "SHOUT")
        missing = await client.request("GET", "/nowhere")
        assert missing.status == 404


async def test_open_test_client_refused_upgrade_raises_status() -> None:
    """A route that does not upgrade answers with its status, as a real server would."""
    with pytest.raises(InvalidStatusError) as info:
        async with open_test_client(make_app(), "/health"):
            pass  # pragma: no cover
    assert info.value.status_code == 200


async def test_open_test_app_starts_background_services(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hub added with add_background runs for the test, and stops after it."""
    app = make_app()
    hub = Hub()
    app.add_background(hub.run)
    async with open_test_app(app):
        await hub.flush()  # would hang if the hub were not running
    with pytest.raises(trio.BrokenResourceError):
        await hub.flush()


async def test_open_test_app_reraises_a_test_failure_unwrapped() -> None:
    """The test's own exception leaves the block as itself, not in an ExceptionGroup."""
    with pytest.raises(KeyError):
        async with open_test_app(make_app()):
            raise KeyError("from the test")


async def test_mock_clock_makes_long_idle_instant(autojump_clock: trio.testing.MockClock) -> None:
    """An hour of idle connection under the mock clock, keepalive pings included."""
    async with open_test_client(make_app(), "/ws") as conn:
        await trio.sleep(3600)
        await conn.send_text("still here")
        assert (await conn.receive()).data == "still here"
