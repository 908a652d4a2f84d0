"""App and Context over in-memory streams: routes, middleware, responses, files, errors."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from rue_trio.app import App, Context, Next, default, recovery, request_logger
from rue_trio.http import HTTPLimits
from tests.http._client import Client, parse_reply, read_until_eof


@asynccontextmanager
async def connect(app: App) -> AsyncIterator[trio.abc.Stream]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.serve_stream, server_stream, ("192.0.2.7", 4321))
        yield client_stream
        await client_stream.aclose()


async def fetch(
    app: App,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    async with connect(app) as stream:
        reply = await Client(stream).request(method, target, headers, body)
    return reply.status, reply.headers, reply.body


# Routes ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_app_route_each_method_direct_and_decorator(method: str) -> None:
    app = App()
    register = getattr(app, method.lower())

    async def direct(c: Context) -> None:
        await c.string(200, "direct")

    assert register("/direct", direct) is direct

    async def decorated(c: Context) -> None:
        await c.string(201, "decorated")

    # The decorator form registers the function and returns it unchanged.
    assert register("/decorated")(decorated) is decorated
    status, _, body = await fetch(app, method, "/direct")
    assert status == 200
    assert body == (b"" if method == "HEAD" else b"direct")
    status, _, _ = await fetch(app, method, "/decorated")
    assert status == 201


async def test_app_route_any_and_handle() -> None:
    app = App()

    @app.any("/any")
    async def anything(c: Context) -> None:
        await c.string(200, c.request.method)

    @app.handle("PROPFIND", "/dav")
    async def dav(c: Context) -> None:
        await c.string(207, "multi")

    for method in ("GET", "POST", "TRACE", "DELETE"):
        assert (await fetch(app, method, "/any"))[2] == method.encode()
    assert (await fetch(app, "PROPFIND", "/dav"))[0] == 207


async def test_app_route_sync_function_returning_awaitable() -> None:
    app = App()
    app.get("/sync", lambda c: c.string(200, "from sync"))
    assert (await fetch(app, "GET", "/sync"))[2] == b"from sync"


async def test_app_route_sync_function_returning_none_gets_empty_200() -> None:
    app = App()
    calls: list[str] = []

    @app.get("/noop")
    def noop(c: Context) -> None:
        calls.append(c.param("x") if c.request.params else "none")

    status, headers, body = await fetch(app, "GET", "/noop")
    assert (status, body, headers["content-length"]) == (200, b"", "0")
    assert calls == ["none"]


def test_app_route_conflict_raises() -> None:
    app = App()
    app.get("/a/:id", lambda c: None)
    with pytest.raises(ValueError, match="conflicts"):
        app.get("/a/:name", lambda c: None)


async def test_app_unknown_path_is_404() -> None:
    status, headers, body = await fetch(App(), "GET", "/missing")
    assert (status, body) == (404, b"404 page not found")
    assert headers["content-type"] == "text/plain; charset=utf-8"


async def test_app_wrong_method_is_405_with_allow() -> None:
    """RFC 9110 section 15.5.6: a 405 lists the allowed methods."""
    app = App()
    app.get("/x", lambda c: c.string(200, "x"))
    app.post("/x", lambda c: c.string(200, "x"))
    status, headers, body = await fetch(app, "DELETE", "/x")
    assert (status, body) == (405, b"405 method not allowed")
    assert headers["allow"] == "GET, HEAD, POST"


# Context --------------------------------------------------------------------------


async def test_app_context_accessors() -> None:
    app = App()
    seen: dict[str, object] = {}

    @app.post("/rooms/:room")
    async def room(c: Context) -> None:
        seen.update(
            room=c.param("room"),
            user=c.query("user"),
            missing_query=c.query("nope", "dflt"),
            agent=c.header("User-Agent"),
            missing_header=c.header("x-nope", "dflt"),
            remote=c.remote_address,
            body=c.body,
            full_path=c.full_path,
            responded_before=c.responded,
            shutting_down=c.shutting_down,
            app=c.app,
        )
        await c.string(200, "ok")
        seen["responded_after"] = c.responded
        seen["status"] = c.status

    await fetch(app, "POST", "/rooms/lobby?user=ann", [("user-agent", "tester")], b"hi")
    assert seen == {
        "room": "lobby",
        "user": "ann",
        "missing_query": "dflt",
        "agent": "tester",
        "missing_header": "dflt",
        "remote": ("192.0.2.7", 4321),
        "body": b"hi",
        "full_path": "/rooms/:room",
        "responded_before": False,
        "shutting_down": False,
        "app": app,
        "responded_after": True,
        "status": 200,
    }


async def test_app_context_param_missing_raises_key_error() -> None:
    app = App()
    errors: list[KeyError] = []

    @app.get("/ws/:room")
    async def ws(c: Context) -> None:
        try:
            c.param("rom")
        except KeyError as exc:
            errors.append(exc)
        await c.string(200, "")

    await fetch(app, "GET", "/ws/a")
    assert "no path parameter 'rom' in route '/ws/:room'" in str(errors[0])


async def test_app_context_response_helpers_set_content_types() -> None:
    app = App()
    app.get("/string", lambda c: c.string(202, "héllo", headers=[("x-extra", "1")]))
    app.get("/json", lambda c: c.json(200, {"a": [1, 2], "é": None}))
    app.get("/html", lambda c: c.html(200, "<p>hi</p>"))
    app.get("/bytes", lambda c: c.bytes(200, b"\x00\x01", "image/png"))
    app.get("/raw", lambda c: c.respond(418, b"teapot", headers=[(b"x-tea", b"yes")]))

    status, headers, body = await fetch(app, "GET", "/string")
    assert (status, body) == (202, "héllo".encode())
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["x-extra"] == "1"
    _, headers, body = await fetch(app, "GET", "/json")
    assert body == '{"a":[1,2],"é":null}'.encode()
    assert headers["content-type"] == "application/json; charset=utf-8"
    _, headers, _ = await fetch(app, "GET", "/html")
    assert headers["content-type"] == "text/html; charset=utf-8"
    _, headers, body = await fetch(app, "GET", "/bytes")
    assert (headers["content-type"], body) == ("image/png", b"\x00\x01")
    status, headers, body = await fetch(app, "GET", "/raw")
    assert (status, headers["x-tea"], body) == (418, "yes", b"teapot")


async def test_app_context_switch_protocols_hands_stream_and_trailing_data() -> None:
    app = App()
    calls: list[str] = []

    @app.get("/ws")
    async def ws(c: Context) -> None:
        c.on_upgrade(lambda: calls.append("upgraded"))
        c.on_upgrade(lambda: calls.append("again"))
        stream, trailing = await c.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        calls.append(f"status={c.status}")
        await stream.send_all(b"echo:" + trailing)

    async with connect(app) as stream:
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
            b"first-frame"
        )
        data = await read_until_eof(stream)
    assert data == b"HTTP/1.1 101 Switching Protocols\r\n\r\necho:first-frame"
    assert calls == ["upgraded", "again", "status=101"]


# Middleware -----------------------------------------------------------------------


async def test_app_middleware_runs_in_order_around_route() -> None:
    app = App()
    order: list[str] = []

    def make(name: str) -> object:
        async def middleware(c: Context, next: Next) -> None:
            order.append(f"{name} before")
            c.values[name] = True
            await next()
            order.append(f"{name} after")

        return middleware

    @app.get("/x")
    async def route(c: Context) -> None:
        order.append(f"route sees {sorted(c.values)}")
        await c.string(200, "x")

    # Middleware added after the route still apply (unlike Gin).
    app.use(make("outer"), make("inner"))  # type: ignore[arg-type]
    await fetch(app, "GET", "/x")
    assert order == [
        "outer before",
        "inner before",
        "route sees ['inner', 'outer']",
        "inner after",
        "outer after",
    ]


async def test_app_middleware_runs_for_404_and_can_short_circuit() -> None:
    app = App()
    seen: list[int | None] = []

    async def deny(c: Context, next: Next) -> None:
        if c.header("authorization") is None:
            await c.string(401, "no")
            return
        await next()
        seen.append(c.status)

    app.use(deny)
    assert (await fetch(app, "GET", "/nothing"))[0] == 401
    assert (await fetch(app, "GET", "/nothing", [("authorization", "x")]))[0] == 404
    assert seen == [404]


async def test_app_middleware_next_twice_runs_endpoint_once() -> None:
    app = App()
    calls: list[str] = []

    async def twice(c: Context, next: Next) -> None:
        await next()
        await next()

    app.use(twice)
    app.get("/x", lambda c: calls.append("route"))
    assert (await fetch(app, "GET", "/x"))[0] == 200
    assert calls == ["route"]


# Errors, logging ------------------------------------------------------------------


async def test_app_default_route_error_is_500_and_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = default()

    @app.get("/boom")
    async def boom(c: Context) -> None:
        raise ValueError("kaput")

    app.get("/ok", lambda c: c.string(200, "fine"))
    async with connect(app) as stream:
        client = Client(stream)
        first = await client.request("GET", "/boom")
        second = await client.request("GET", "/ok")
    assert (first.status, first.body) == (500, b"500 internal server error")
    assert (second.status, second.body) == (200, b"fine")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "error in route GET /boom" in errors[0].getMessage()


async def test_app_default_error_after_response_keeps_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = default()

    @app.get("/late")
    async def late(c: Context) -> None:
        await c.string(200, "sent")
        raise ValueError("after")

    assert (await fetch(app, "GET", "/late"))[2] == b"sent"
    assert "ValueError: after" in caplog.text


async def test_app_plain_route_error_is_500_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.get("/boom")
    async def boom(c: Context) -> None:
        raise ValueError("kaput")

    async with connect(app) as stream:
        await stream.send_all(b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
    assert reply.status == 500
    assert "ValueError: kaput" in caplog.text


async def test_app_recovery_ignores_vanished_client(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    app.use(recovery)
    done = trio.Event()

    @app.get("/slow")
    async def slow(c: Context) -> None:
        try:
            await trio.testing.wait_all_tasks_blocked()
            await c.string(200, "x" * 100)
        finally:
            done.set()

    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.serve_stream, server_stream)
        await client_stream.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await client_stream.aclose()
        await done.wait()
    assert caplog.records == []


async def test_app_request_logger_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rue_trio")
    app = default()
    app.get("/hello", lambda c: c.string(200, "hi"))
    await fetch(app, "GET", "/hello?secret=1")
    (record,) = [r for r in caplog.records if r.name == "rue_trio.http"]
    message = record.getMessage()
    assert message.startswith("192.0.2.7:4321 GET /hello 200 ")
    assert message.endswith("ms")
    assert "secret" not in message


async def test_app_request_logger_logs_websocket_at_upgrade(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rue_trio")
    app = App()
    app.use(request_logger)
    at_upgrade: list[int] = []

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await c.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        at_upgrade.append(len(caplog.records))

    async with connect(app) as stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n")
        await read_until_eof(stream)
    assert at_upgrade == [1]
    assert len(caplog.records) == 1
    assert " GET /ws 101 " in caplog.records[0].getMessage()


async def test_app_request_logger_without_status_and_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rue_trio")
    app = App()
    app.use(request_logger)

    @app.get("/cancel")
    async def cancel(c: Context) -> None:
        raise trio.TooSlowError

    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app.serve_stream, server_stream)
        await client_stream.send_all(b"GET /cancel HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = parse_reply(await read_until_eof(client_stream))
    assert reply.status == 500
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info == [info[0]]
    assert info[0].startswith("- GET /cancel - ")


async def test_app_request_logger_disabled_costs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rue_trio")
    app = default()
    app.get("/x", lambda c: c.string(200, "x"))
    assert (await fetch(app, "GET", "/x"))[0] == 200
    assert caplog.records == []


# Files ----------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "docs").mkdir()
    (public / "empty").mkdir()
    (public / "odd" / "index.html").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "css" / "a.css").write_text("body{}")
    (public / "docs" / "index.html").write_text("<h1>docs</h1>")
    (public / "data.bin").write_bytes(bytes(range(256)) * 1024)
    (public / "noext").write_bytes(b"?")
    (tmp_path / "secret.txt").write_text("top secret")
    (public / "escape").symlink_to(tmp_path / "secret.txt")
    os.mkfifo(public / "fifo")
    return public


@pytest.fixture
def static_app(site: Path) -> App:
    app = App()
    app.static("/static", site)
    return app


async def test_app_static_serves_files_with_types(static_app: App) -> None:
    status, headers, body = await fetch(static_app, "GET", "/static/css/a.css")
    assert (status, body) == (200, b"body{}")
    assert headers["content-type"] == "text/css; charset=utf-8"
    status, headers, body = await fetch(static_app, "GET", "/static/data.bin")
    assert body == bytes(range(256)) * 1024
    assert headers["content-type"] == "application/octet-stream"
    _, headers, _ = await fetch(static_app, "GET", "/static/noext")
    assert headers["content-type"] == "application/octet-stream"


async def test_app_static_head_sends_length_only(static_app: App) -> None:
    status, headers, body = await fetch(static_app, "HEAD", "/static/data.bin")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(256 * 1024)


async def test_app_static_directory_serves_index(static_app: App) -> None:
    assert (await fetch(static_app, "GET", "/static/"))[2] == b"<h1>home</h1>"
    assert (await fetch(static_app, "GET", "/static/docs"))[2] == b"<h1>docs</h1>"
    assert (await fetch(static_app, "GET", "/static/docs/"))[2] == b"<h1>docs</h1>"
    assert (await fetch(static_app, "GET", "/static/./docs/."))[2] == b"<h1>docs</h1>"


@pytest.mark.parametrize(
    "target",
    [
        "/static/missing.txt",
        "/static/empty",
        "/static/odd",
        "/static/fifo",
        "/static/css/a.css/x",
        "/static/../secret.txt",
        "/static/css/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/css/..%5c..%5csecret.txt",
        "/static/%00",
        "/static/escape",
    ],
)
async def test_app_static_refuses_missing_and_traversal(static_app: App, target: str) -> None:
    status, _, body = await fetch(static_app, "GET", target)
    assert status == 404
    assert b"secret" not in body


def test_app_static_rejects_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        App().static("/s", tmp_path / "nope")


async def test_app_static_at_root(site: Path) -> None:
    app = App()
    app.static("/", site)
    assert (await fetch(app, "GET", "/css/a.css"))[2] == b"body{}"


async def test_app_file_sends_or_404(site: Path) -> None:
    app = App()
    app.get("/page", lambda c: c.file(site / "index.html"))
    app.get("/typed", lambda c: c.file(str(site / "noext"), content_type="text/x-custom"))
    app.get("/dir", lambda c: c.file(site / "docs"))
    app.get("/gone", lambda c: c.file(site / "gone.txt"))
    status, headers, body = await fetch(app, "GET", "/page")
    assert (status, body) == (200, b"<h1>home</h1>")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert (await fetch(app, "GET", "/typed"))[1]["content-type"] == "text/x-custom"
    assert (await fetch(app, "GET", "/dir"))[0] == 404
    assert (await fetch(app, "GET", "/gone"))[0] == 404


async def test_app_file_unreadable_is_404(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: trio.Path, *args: object, **kwargs: object) -> None:
        await trio.lowlevel.checkpoint()
        raise PermissionError(13, "Permission denied")

    # Running as root ignores file modes: make opening fail the way a mode would.
    monkeypatch.setattr(trio.Path, "open", refuse)
    app = App()
    app.get("/locked", lambda c: c.file(site / "index.html"))
    assert (await fetch(app, "GET", "/locked"))[0] == 404


def test_app_background_services_are_listed_in_order() -> None:
    app = App()

    async def first(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def second(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    app.add_background(first)
    app.add_background(second)
    assert app.background_services == (first, second)


# Options --------------------------------------------------------------------------


async def test_app_options_apply_to_connections() -> None:
    app = default(limits=HTTPLimits(max_body_size=3), server_header=None)
    app.post("/x", lambda c: c.string(200, "x"))
    async with connect(app) as stream:
        await stream.send_all(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\n")
        reply = parse_reply(await stream.receive_some(65536))
    assert reply.status == 413
    status, headers, _ = await fetch(app, "POST", "/x", body=b"abc")
    assert status == 200
    assert "server" not in headers
