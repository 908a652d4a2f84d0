"""The server over real sockets (127.0.0.1, port 0): TLS, limits, shutdown, run()."""

from __future__ import annotations

import errno
import logging
import os
import signal
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from rue_trio.app import App, Context, default
from rue_trio.app._run import run_until_signal
from rue_trio.handlers import WebSocketHandler
from rue_trio.http import HTTPConnection, HTTPLimits, Lookup, Request, Router
from rue_trio.server import Server, format_address, parse_address
from tests.http._client import Client, parse_reply, read_until_eof

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def running(
    app: App, **options: object
) -> AsyncIterator[tuple[int, trio.CancelScope, trio.Event]]:
    """Serve ``app`` on 127.0.0.1, port 0; yields the port, the scope to cancel, and done."""
    scope = trio.CancelScope()
    done = trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
        try:
            with scope:
                await app.serve("127.0.0.1", 0, task_status=task_status, **options)  # type: ignore[arg-type]
        finally:
            done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(run)
            assert len(addresses) == 1
            host, port = addresses[0]
            assert host == "127.0.0.1"
            assert port > 0
            yield port, scope, done
            scope.cancel()


def _hello_app(app: App | None = None) -> App:
    app = app or App()
    app.get("/hello", lambda c: c.string(200, "hello"))
    return app


# Basics ---------------------------------------------------------------------------


async def test_server_serve_reports_port_and_answers_raw_socket() -> None:
    async with running(_hello_app()) as (port, _, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            reply = parse_reply(await read_until_eof(stream))
    assert (reply.status, reply.body) == (200, b"hello")


async def test_server_serve_reports_remote_address() -> None:
    app = App()
    app.get("/me", lambda c: c.json(200, c.remote_address))
    async with running(app) as (port, _, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            reply = await Client(stream).request("GET", "/me")
            local_port = stream.socket.getsockname()[1]
    assert reply.body == b'["127.0.0.1",%d]' % local_port


async def test_server_serve_address_in_use_raises() -> None:
    with trio.fail_after(5):
        async with running(_hello_app()) as (port, _, _):
            with pytest.raises(OSError):
                await _hello_app().serve("127.0.0.1", port)


async def test_server_serve_client_vanishing_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = default()
    app.get("/hello", lambda c: c.string(200, "hello"))
    async with running(app) as (port, _, _):
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /hel")
            await trio.aclose_forcefully(stream)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            assert (await Client(stream).request("GET", "/hello")).status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def test_server_tls_serves_https(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    async with running(_hello_app(), ssl_context=server_context) as (port, _, _):
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client_context)
        client = Client(stream)
        first = await client.request("GET", "/hello")
        second = await client.request("GET", "/hello")
        await trio.aclose_forcefully(stream)
    assert (first.body, second.body) == (b"hello", b"hello")


async def test_server_tls_bad_handshake_is_logged_and_dropped(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rue_trio")
    server_context, client_context = tls
    async with running(_hello_app(), ssl_context=server_context) as (port, _, _):
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        async with plain:
            await plain.send_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
            assert await read_until_eof(plain) == b""
        # The server goes on.
        stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client_context)
        assert (await Client(stream).request("GET", "/hello")).status == 200
        await trio.aclose_forcefully(stream)
    failures = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(failures) == 1
    assert "failed" in failures[0].getMessage()
    assert failures[0].exc_info is None


async def test_server_tls_silent_client_times_out(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rue_trio")
    app = _hello_app(App(limits=HTTPLimits(request_timeout=0.05)))
    async with running(app, ssl_context=tls[0]) as (port, _, _):
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        async with plain:
            assert await read_until_eof(plain) == b""
    assert any("timed out" in r.getMessage() for r in caplog.records)


# max_connections ------------------------------------------------------------------


async def test_server_max_connections_holds_extra_until_one_closes() -> None:
    app = App()
    served: list[str] = []

    @app.get("/who/:name")
    async def who(c: Context) -> None:
        served.append(c.param("name"))
        await c.string(200, c.param("name"))

    async with running(app, max_connections=1) as (port, _, _):
        first = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await Client(first).request("GET", "/who/a")).body == b"a"
        second = await trio.open_tcp_stream("127.0.0.1", port)
        second_client = Client(second)
        await second_client.send("GET", "/who/b")
        # The server accepted the second connection but holds it: nothing reads it.
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert served == ["a"]
        # The first connection still works while the second waits.
        assert (await Client(first).request("GET", "/who/c")).status == 200
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert served == ["a", "c"]
        await first.aclose()
        assert (await second_client.read()).body == b"b"
        await second.aclose()
    assert served == ["a", "c", "b"]


async def test_server_max_connections_held_connection_is_closed_at_shutdown() -> None:
    async with running(_hello_app(), max_connections=1) as (port, scope, done):
        first = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await Client(first).request("GET", "/hello")).status == 200
        second = await trio.open_tcp_stream("127.0.0.1", port)
        await second.send_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        scope.cancel()
        await done.wait()
        # Never served: closed without an answer (a reset, as its request is unread).
        with pytest.raises(trio.BrokenResourceError):
            await read_until_eof(second)
        assert await read_until_eof(first) == b""
        await first.aclose()
        await second.aclose()


async def test_server_max_connections_must_be_positive() -> None:
    with trio.fail_after(5), pytest.raises(ValueError, match="max_connections"):
        await _hello_app().serve("127.0.0.1", 0, max_connections=0)


# Graceful shutdown ----------------------------------------------------------------


async def test_server_shutdown_closes_listeners_cancels_connections_and_returns() -> None:
    app = App()
    release = trio.Event()
    events: list[str] = []

    @app.get("/ws")
    async def ws(c: Context) -> None:
        stream, _ = await c.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            # As a WebSocket does: a closing handshake, shielded and bounded.
            with trio.CancelScope(shield=True):
                await stream.send_all(b"close 1001")
            events.append("ws closed")
            raise

    @app.get("/slow")
    async def slow(c: Context) -> None:
        await release.wait()
        events.append(f"slow sees shutting_down={c.shutting_down}")
        await c.string(503 if c.shutting_down else 200, "bye")

    app.get("/hello", lambda c: c.string(200, "hello"))

    async with running(app) as (port, scope, done):
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await Client(idle).request("GET", "/hello")).status == 200
        upgraded = await trio.open_tcp_stream("127.0.0.1", port)
        await upgraded.send_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n")
        assert (await upgraded.receive_some(1000)).startswith(b"HTTP/1.1 101 ")
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await busy.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)

        scope.cancel()
        # The idle keep-alive connection is closed at once...
        assert await read_until_eof(idle) == b""
        # ... so are new connections: the listener is closed.
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        # ... the upgraded one is cancelled and closes itself.
        assert await read_until_eof(upgraded) == b"close 1001"
        # ... and the request in progress may finish, seeing the drain.
        assert not done.is_set()
        release.set()
        reply = parse_reply(await read_until_eof(busy))
        assert reply.status == 503
        assert reply.headers["connection"] == "close"
        await done.wait()
        for stream in (idle, upgraded, busy):
            await stream.aclose()
    assert events == ["ws closed", "slow sees shutting_down=True"]


async def test_server_shutdown_timeout_cancels_stuck_requests() -> None:
    app = App(shutdown_timeout=0)
    outcome: list[str] = []

    @app.get("/stuck")
    async def stuck(c: Context) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    async with running(app) as (port, scope, done):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        scope.cancel()
        await done.wait()
        assert await read_until_eof(stream) == b""
        await stream.aclose()
    assert outcome == ["cancelled"]


async def test_server_background_starts_first_and_stops_after_drain() -> None:
    app = App()
    events: list[str] = []

    async def service(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        events.append("service started")
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            events.append("service cancelled")
            raise

    @app.get("/ws")
    async def ws(c: Context) -> None:
        events.append("connection served")
        await c.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        try:
            await trio.sleep_forever()
        finally:
            events.append("connection ended")

    app.add_background(service)
    async with running(app) as (port, scope, done):
        events.append("listening")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: x\r\n\r\n")
        await stream.receive_some(1000)
        scope.cancel()
        await done.wait()
        await stream.aclose()
    assert events == [
        "service started",
        "listening",
        "connection served",
        "connection ended",
        "service cancelled",
    ]


async def test_server_background_failure_stops_serve() -> None:
    app = _hello_app()

    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("cannot start")

    app.add_background(broken)
    with trio.fail_after(5), pytest.raises(RuntimeError, match="cannot start"):
        await app.serve("127.0.0.1", 0)


# The accept loop, without sockets --------------------------------------------------


class _FakeListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, outcomes: list[OSError | trio.abc.Stream]) -> None:
        self.outcomes = outcomes
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self.outcomes:
            await trio.sleep_forever()
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, OSError):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def _dispatch(conn: HTTPConnection, request: Request, lookup: Lookup[None]) -> None:
    await conn.respond(200, [], b"fake")


async def test_server_accept_capacity_error_is_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    listener = _FakeListener([OSError(errno.EMFILE, "Too many open files"), server_stream])
    server: Server[None] = Server(Router(), _dispatch)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve_listeners, [listener])
        assert addresses == []
        reply = await Client(client_stream).request("GET", "/")
        assert reply.body == b"fake"
        nursery.cancel_scope.cancel()
    assert listener.closed
    assert "accept failed" in caplog.text


async def test_server_accept_other_error_propagates() -> None:
    listener = _FakeListener([OSError(errno.EBADF, "Bad file descriptor")])
    server: Server[None] = Server(Router(), _dispatch)
    # One failure comes out as itself, not inside exception groups.
    with pytest.raises(OSError, match="Bad file descriptor"):
        await server.serve_listeners([listener])
    assert listener.closed


async def test_server_serve_stream_closes_stream_on_exit() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server: Server[None] = Server(Router(), _dispatch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_stream)
        await client_stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert parse_reply(await read_until_eof(client_stream)).body == b"fake"
    with pytest.raises(trio.ClosedResourceError):
        await server_stream.send_all(b"x")


async def test_server_connection_failure_is_logged_and_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenRouter(Router[None]):
        def lookup(self, method: str, path: str) -> None:
            raise RuntimeError(f"router bug on {path}")

    server: Server[None] = Server(BrokenRouter(), _dispatch)
    for _ in range(2):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_stream, ("192.0.2.1", 9))
            await client_stream.send_all(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            assert await read_until_eof(client_stream) == b""
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "connection from ('192.0.2.1', 9) failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None


async def test_server_remote_address_of_odd_sockets() -> None:
    from rue_trio.server import _remote_address

    await trio.lowlevel.checkpoint()
    left, right = trio.socket.socketpair()
    with left, right:
        # A Unix socket's peer name is not (host, port).
        assert _remote_address(trio.SocketStream(left)) is None
    unconnected = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with unconnected:
        assert _remote_address(trio.SocketStream(unconnected)) is None
    memory, _ = trio.testing.memory_stream_pair()
    assert _remote_address(memory) is None


def test_server_rejects_negative_shutdown_timeout() -> None:
    with pytest.raises(ValueError):
        Server(Router(), _dispatch, shutdown_timeout=-1)


# Addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8080", (None, 8080)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_server_parse_address_accepts_go_forms(
    address: str, expected: tuple[str | None, int]
) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["8080", "host:", "host:http", ":70000", "::1:80", "[]:80"])
def test_server_parse_address_rejects_nonsense(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)


def test_server_format_address_brackets_ipv6() -> None:
    assert format_address("::1", 80) == "[::1]:80"
    assert format_address("10.0.0.1", 80) == "10.0.0.1:80"


# run() ----------------------------------------------------------------------------

_RUN_SCRIPT = textwrap.dedent(
    """
    from rue_trio.app import default

    app = default()
    app.get("/", lambda c: c.string(200, "up"))
    app.run("127.0.0.1:0")
    print("run returned", flush=True)
    """
)


async def _read_line_with(stream: trio.abc.ReceiveStream, needle: bytes, seen: bytearray) -> None:
    await trio.lowlevel.checkpoint()
    while needle not in seen:
        chunk = await stream.receive_some(4096)
        assert chunk, seen.decode()
        seen += chunk


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_server_run_signal_exits_cleanly(signum: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _RUN_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = bytearray()
    stdout = bytearray()
    try:
        with trio.fail_after(20):
            await _read_line_with(process.stderr, b"listening on http://127.0.0.1:", stderr)
            await _read_line_with(process.stderr, b"\n", stderr)
            line = stderr.decode().split("listening on http://127.0.0.1:")[1]
            port = int(line.split()[0])
            for _ in range(50):
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    break
                except OSError:
                    await trio.sleep(0.05)
            async with stream:
                assert (await Client(stream).request("GET", "/")).body == b"up"
            process.send_signal(signum)
            await _read_line_with(process.stdout, b"run returned", stdout)
            while chunk := await process.stderr.receive_some(4096):
                stderr += chunk
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    text = stderr.decode()
    assert code == 0, text
    assert "Traceback" not in text
    assert f"received {signum.name}: shutting down gracefully" in text
    assert "GET / 200" in text


async def test_server_run_until_signal_stops_gracefully_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The body of run(), in this process: a SIGINT drains the server and returns."""
    caplog.set_level(logging.INFO, logger="rue_trio")
    app = _hello_app()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(run_until_signal, app, "127.0.0.1", 0, ssl_context=None, max_connections=1)
            )
            await trio.testing.wait_all_tasks_blocked()
            (line,) = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
            port = int(line.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                assert (await Client(stream).request("GET", "/hello")).status == 200
            signal.raise_signal(signal.SIGINT)
    assert "received SIGINT: shutting down gracefully" in caplog.text


def test_server_configure_logging_only_when_unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    from rue_trio.app._run import configure_default_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.setattr(logging.getLogger("rue_trio"), "handlers", [])
    configure_default_logging()
    assert len(root.handlers) == 1
    assert root.level == logging.INFO
    configure_default_logging()
    assert len(root.handlers) == 1


def test_server_run_rejects_bad_address() -> None:
    with pytest.raises(ValueError):
        App().run("nonsense")


async def test_server_shutdown_answers_new_upgrades_503() -> None:
    """A WebSocket upgrade that reaches its handler while the server drains gets 503."""
    app = App()
    release = trio.Event()

    @app.get("/late")
    async def late(c: Context) -> None:
        await release.wait()
        await WebSocketHandler().handle(c)

    with trio.fail_after(10):
        async with running(app) as (port, scope, done):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(
                b"GET /late HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
                b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"sec-websocket-version: 13\r\n\r\n"
            )
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            scope.cancel()
            # Let the drain start (listeners closed, connections told) before the
            # handler looks.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            release.set()
            reply = parse_reply(await read_until_eof(stream))
            assert reply.status == 503
            assert reply.headers["retry-after"] == "1"
            await stream.aclose()
            await done.wait()
