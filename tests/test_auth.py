"""Authentication at the handshake: the hook, the refusal, the identity, examples/auth.py."""

from __future__ import annotations

import signal

import pytest
import trio
import trio.testing

from rue_trio import (
    App,
    Context,
    Hub,
    Identity,
    InvalidStatusError,
    Refusal,
    WebSocketConn,
    WebSocketHandler,
    open_websocket,
)
from rue_trio.app import recovery
from rue_trio.testing import open_test_app, open_test_client
from tests._apps import app_with

from ._programs import ROOT, serving


async def test_server_authenticate_refusal_sends_status_body_headers_and_no_callback() -> None:
    called: list[str] = []

    async def authenticate(c: Context) -> Identity | Refusal:
        await trio.lowlevel.checkpoint()
        return Refusal(403, "not in this room\n", headers=[("x-why", "banned")])

    handler = WebSocketHandler(
        authenticate=authenticate, on_connect=lambda conn: called.append("connect")
    )
    async with open_test_app(app_with(handler)) as client:
        with pytest.raises(InvalidStatusError) as raised:
            async with client.websocket("/ws"):
                pass
    error = raised.value
    assert error.status_code == 403
    assert error.body == b"not in this room\n"
    assert (b"x-why", b"banned") in error.headers
    assert (b"content-type", b"text/plain; charset=utf-8") in error.headers
    assert called == []


async def test_server_authenticate_identity_reaches_callbacks_and_hub() -> None:
    """user, meta and app_state are set before on_connect and before the hub sees it."""
    hub = Hub()
    seen: list[tuple[str | None, dict[str, object], object]] = []

    def authenticate(c: Context) -> Identity:
        return Identity(user=c.header("x-user"), meta={"name": "Ada"}, app_state={"role": "admin"})

    def on_connect(conn: WebSocketConn) -> None:
        seen.append((conn.user, dict(conn.meta), conn.app_state["role"]))

    handler = WebSocketHandler(hub=hub, authenticate=authenticate, on_connect=on_connect)
    app = app_with(handler)
    app.add_background(hub.run)
    async with (
        open_test_app(app) as client,
        client.websocket("/ws", headers=[("x-user", "ada")]) as conn,
    ):
        await conn.send_text("x")
        await trio.testing.wait_all_tasks_blocked()
    assert seen == [("ada", {"name": "Ada"}, "admin")]


async def test_server_authenticate_headers_reach_the_101(autojump_clock: trio.abc.Clock) -> None:
    handler = WebSocketHandler(
        authenticate=lambda c: Identity(headers=[("set-cookie", "session=abc; HttpOnly")])
    )
    client_stream, server_stream = trio.testing.memory_stream_pair()
    head = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app_with(handler).serve_stream, server_stream)
        await client_stream.send_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
        while b"\r\n\r\n" not in head:
            head += await client_stream.receive_some()
        nursery.cancel_scope.cancel()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nset-cookie: session=abc; HttpOnly\r\n" in head


async def test_server_authenticate_returning_none_is_a_500_not_a_connection() -> None:
    handler = WebSocketHandler(authenticate=lambda c: None)  # type: ignore[arg-type,return-value]
    app = App()
    app.use(recovery)

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    async with open_test_app(app) as client:
        with pytest.raises(InvalidStatusError) as raised:
            async with client.websocket("/ws"):
                pass
    assert raised.value.status_code == 500


def test_auth_identity_meta_must_be_json() -> None:
    with pytest.raises(TypeError, match="JSON"):
        Identity(meta={"when": object()})
    identity = Identity(meta={"name": "Ada"})
    with pytest.raises(TypeError):
        identity.meta["name"] = "Bob"  # type: ignore[index]


def test_auth_refusal_status_must_be_an_error() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Refusal(200)


async def test_example_auth_default_token_greets_and_refuses_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """examples/auth.py with RUE_TRIO_TOKEN unset: the token is let-me-in."""
    from .test_examples import app_of, load

    monkeypatch.delenv("RUE_TRIO_TOKEN", raising=False)
    app = app_of(load("auth"))
    async with open_test_client(
        app, "/ws", headers=[("Authorization", "Bearer let-me-in")]
    ) as conn:
        assert (await conn.receive()).data == "hello guest"
    async with open_test_app(app) as client:
        for headers in ([], [("Authorization", "Bearer nope")], [("Authorization", "let-me-in")]):
            with pytest.raises(InvalidStatusError) as raised:
                async with client.websocket("/ws", headers=headers):
                    pass
            assert raised.value.status_code == 401


async def test_example_auth_over_a_real_socket_reads_port_and_token() -> None:
    """The example as a program: --port 0, RUE_TRIO_TOKEN from the environment, 401 else."""
    script = str(ROOT / "examples" / "auth.py")
    with trio.fail_after(30):
        async with serving(script, "--port", "0", env={"RUE_TRIO_TOKEN": "s3cret"}) as program:
            url = f"ws://127.0.0.1:{program.port}/ws"
            for token in ("let-me-in", ""):
                with pytest.raises(InvalidStatusError) as raised:
                    async with open_websocket(url, headers=[("Authorization", f"Bearer {token}")]):
                        pass
                assert raised.value.status_code == 401
                assert (b"www-authenticate", b'Bearer realm="rue_trio"') in raised.value.headers
            async with open_websocket(url, headers=[("Authorization", "Bearer s3cret")]) as conn:
                assert (await conn.receive()).data == "hello guest"
            program.process.send_signal(signal.SIGINT)
            assert await program.process.wait() == 0
