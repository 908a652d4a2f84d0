"""WebSocketHandler: the upgrade, the four callbacks, errors kept local, the hub link."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from rue_trio import (
    App,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectionConfig,
    Context,
    Hub,
    InvalidStatusError,
    MessageType,
    TextMessage,
    WebSocketConn,
    WebSocketHandler,
)
from rue_trio.exceptions import ProtocolError
from rue_trio.protocol import State
from rue_trio.testing import open_test_app, open_test_client

from .websocket._util import task_names


def app_with(handler: WebSocketHandler, path: str = "/ws") -> App:
    app = App()

    @app.get(path)
    async def ws(c: Context) -> None:
        await handler.handle(c)

    return app


async def test_server_echo_with_sync_and_async_callbacks() -> None:
    """Callbacks may be plain functions or async ones; messages arrive in order."""
    seen: list[str] = []

    def on_connect(conn: WebSocketConn) -> None:
        seen.append("connect")

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await conn.send(msg_type, data)

    handler = WebSocketHandler(on_connect=on_connect, on_message=on_message)
    async with open_test_client(app_with(handler), "/ws") as conn:
        for i in range(50):
            await conn.send_text(f"m{i}")
        await conn.send_bytes(b"\x00\x01")
        received = [(await conn.receive()).data for _ in range(51)]
    assert received == [f"m{i}" for i in range(50)] + [b"\x00\x01"]
    assert seen == ["connect"]


async def test_server_sync_on_message_returning_awaitable_is_awaited() -> None:
    """A plain function may return an awaitable (a lambda around conn.send)."""
    handler = WebSocketHandler(on_message=lambda conn, t, d: conn.send(t, d))
    async with open_test_client(app_with(handler), "/ws") as conn:
        await conn.send_text("hi")
        assert (await conn.receive()).data == "hi"


async def test_server_on_close_runs_once_after_client_close() -> None:
    """on_close runs exactly once, after the connection has closed."""
    events: list[tuple[str, str]] = []
    closed = trio.Event()

    def on_close(conn: WebSocketConn) -> None:
        events.append(("close", conn.id))
        assert conn.closed
        closed.set()

    handler = WebSocketHandler(
        on_connect=lambda conn: events.append(("connect", conn.id)), on_close=on_close
    )
    async with open_test_app(app_with(handler)) as client:
        async with client.websocket("/ws") as conn:
            await conn.close(1000, "bye")
        await closed.wait()
    assert [kind for kind, _ in events] == ["connect", "close"]
    assert events[0][1] == events[1][1]


async def test_server_callback_error_reaches_on_error_and_closes_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callback's exception goes to on_error and closes that connection with 1011 only."""
    errors: list[BaseException] = []
    closes: list[str] = []

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        if data == "boom":
            raise RuntimeError("handler bug")
        await conn.send(msg_type, data)

    handler = WebSocketHandler(
        on_message=on_message,
        on_error=lambda conn, exc: errors.append(exc),
        on_close=lambda conn: closes.append(conn.id),
    )
    async with (
        open_test_app(app_with(handler)) as client,
        client.websocket("/ws") as healthy,
        client.websocket("/ws") as victim,
    ):
        await victim.send_text("boom")
        with pytest.raises(ConnectionClosedError) as info:
            await victim.receive()
        assert info.value.code == 1011
        await healthy.send_text("still here")
        assert (await healthy.receive()).data == "still here"
    assert [type(e) for e in errors] == [RuntimeError]
    assert len(closes) == 2


async def test_server_callback_error_without_on_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without on_error, a callback's exception is logged with its traceback."""

    def on_connect(conn: WebSocketConn) -> None:
        raise ValueError("refuse")

    closes: list[str] = []
    handler = WebSocketHandler(on_connect=on_connect, on_close=lambda c: closes.append(c.id))
    with caplog.at_level(logging.ERROR, logger="rue_trio"):
        async with open_test_client(app_with(handler), "/ws") as conn:
            with pytest.raises(ConnectionClosedError) as info:
                await conn.receive()
    assert info.value.code == 1011
    assert "callback failed" in caplog.text
    assert len(closes) == 1  # on_connect ran (and failed): on_close runs too


async def test_server_peer_protocol_violation_reaches_on_error() -> None:
    """A peer's protocol violation closes with 1002; on_error sees the cause."""
    errors: list[BaseException] = []
    done = trio.Event()

    def on_error(conn: WebSocketConn, exc: BaseException) -> None:
        errors.append(exc)
        done.set()

    handler = WebSocketHandler(on_error=on_error)
    async with open_test_client(app_with(handler), "/ws") as conn:
        # Send a raw unmasked frame behind the client core's back (RFC 6455 section 5.1).
        conn._out.send_nowait(b"\x81\x02hi")
        with pytest.raises(ConnectionClosedError) as info:
            await conn.receive()
        assert info.value.code == 1002
        await done.wait()
    (exc,) = errors
    assert isinstance(exc, ConnectionClosedError)
    assert isinstance(exc.__cause__, ProtocolError)


async def test_server_plain_get_on_websocket_route_gets_426() -> None:
    """A plain GET on a WebSocket route: 426 Upgrade Required, naming websocket."""
    async with open_test_app(app_with(WebSocketHandler())) as client:
        response = await client.request("GET", "/ws")
    assert response.status == 426
    assert response.header("upgrade") == "websocket"


async def test_server_malformed_upgrade_gets_400() -> None:
    """RFC 6455 section 4.2.1: a bad key is a bad request."""
    headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "short"),
        ("sec-websocket-version", "13"),
    ]
    async with open_test_app(app_with(WebSocketHandler())) as client:
        response = await client.request("GET", "/ws", headers=headers)
    assert response.status == 400


async def test_server_unsupported_version_gets_426_with_version() -> None:
    """RFC 6455 section 4.4: an unsupported version is answered with the one we speak."""
    headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "8"),
    ]
    async with open_test_app(app_with(WebSocketHandler())) as client:
        response = await client.request("GET", "/ws", headers=headers)
    assert response.status == 426
    assert response.header("sec-websocket-version") == "13"


async def test_server_disallowed_origin_gets_403() -> None:
    """Cross-site WebSocket hijacking protection: only listed origins connect."""
    handler = WebSocketHandler(allowed_origins=["https://good.example"])
    app = app_with(handler)
    async with open_test_app(app) as client:
        with pytest.raises(InvalidStatusError) as info:
            async with client.websocket("/ws", origin="https://evil.example"):
                pass  # pragma: no cover
        assert info.value.status_code == 403
        async with client.websocket("/ws", origin="https://good.example") as conn:
            assert not conn.closed
        async with client.websocket("/ws") as conn:  # no Origin: not a browser
            assert not conn.closed


async def test_server_selects_subprotocol_and_compression() -> None:
    """RFC 6455 section 4.2.2 and RFC 7692: subprotocol and permessage-deflate agreed."""
    handler = WebSocketHandler(
        subprotocols=["chat.v2", "chat.v1"],
        on_message=lambda conn, t, d: conn.send(t, d),
    )
    async with (
        open_test_app(app_with(handler)) as client,
        client.websocket("/ws", subprotocols=["chat.v1", "chat.v2"], compression=True) as conn,
    ):
        assert conn.subprotocol == "chat.v2"
        text = "compress me " * 100
        await conn.send_text(text)
        assert (await conn.receive()).data == text
        stats = conn.statistics()
        assert stats.bytes_received < len(text)  # it came back compressed


async def test_server_hub_registration_follows_the_connection() -> None:
    """A connection whose handler names a hub is registered on connect, removed at the end."""
    hub = Hub()
    joined = trio.Event()

    async def on_connect(conn: WebSocketConn) -> None:
        await hub.join("lobby", conn)
        joined.set()

    handler = WebSocketHandler(hub=hub, on_connect=on_connect)
    app = app_with(handler)
    app.add_background(hub.run)
    async with open_test_app(app) as client:
        async with client.websocket("/ws") as a, client.websocket("/ws") as b:
            await joined.wait()
            await hub.flush()
            assert hub.count() == 2
            assert hub.count("lobby") == 2
            await hub.broadcast(TextMessage, "to all", room="lobby")
            assert (await a.receive()).data == "to all"
            assert (await b.receive()).data == "to all"
            await b.close()
        await trio.testing.wait_all_tasks_blocked()
        assert hub.count() == 0
        assert hub.rooms() == []


async def test_server_cancelled_app_closes_connections_with_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling the task that serves a connection closes it with 1001 (going away)."""
    closes: list[str] = []
    handler = WebSocketHandler(on_close=lambda conn: closes.append(conn.id))
    async with open_test_app(app_with(handler)) as client, client.websocket("/ws") as conn:
        await trio.testing.wait_all_tasks_blocked()  # the server side is connected
        client.shutdown()
        with pytest.raises(ConnectionClosedOK) as info:
            await conn.receive()
    assert info.value.code == 1001
    assert len(closes) == 1


async def test_server_keepalive_keeps_idle_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Minutes of idle time: pings go both ways, the connection stays up."""
    handler = WebSocketHandler(on_message=lambda conn, t, d: conn.send(t, d))
    async with open_test_client(app_with(handler), "/ws") as conn:
        await trio.sleep(300)
        await conn.send_text("still alive")
        assert (await conn.receive()).data == "still alive"
        assert conn.statistics().pings_sent >= 10


async def test_server_compressed_broadcast_is_compressed_once() -> None:
    """RFC 7692 section 7.1.1.1: with server_no_context_takeover, one compression serves all."""
    hub = Hub()
    handler = WebSocketHandler(hub=hub)
    app = app_with(handler)
    app.add_background(hub.run)
    text = "tick " * 200
    async with (
        open_test_app(app) as client,
        client.websocket("/ws", compression=True) as a,
        client.websocket("/ws", compression=True) as b,
        client.websocket("/ws") as plain,
    ):
        await trio.testing.wait_all_tasks_blocked()
        await hub.broadcast(TextMessage, text)
        for conn in (a, b, plain):
            assert (await conn.receive()).data == text
        assert a.statistics().bytes_received < len(text) // 10
        assert plain.statistics().bytes_received > len(text)
        # One encoding for the two deflate members, one for the plain member.
        assert hub.statistics().encodes == 2


async def test_server_send_to_another_closed_connection_fails_only_the_callback() -> None:
    """A callback that sends on another, closed connection is a callback error (1011)."""
    errors: list[BaseException] = []
    first: list[WebSocketConn] = []

    async def on_connect(conn: WebSocketConn) -> None:
        first.append(conn)

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await first[0].send(msg_type, data)  # the first connection, closed by now

    handler = WebSocketHandler(
        on_connect=on_connect, on_message=on_message, on_error=lambda c, e: errors.append(e)
    )
    async with open_test_app(app_with(handler)) as client:
        async with client.websocket("/ws") as gone:
            await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        async with client.websocket("/ws") as conn:
            await conn.send_text("relay")
            with pytest.raises(ConnectionClosedError) as info:
                await conn.receive()
    assert gone.closed
    assert info.value.code == 1011
    assert [type(e) for e in errors] == [ConnectionClosedOK]


async def test_server_peer_pipelined_messages_then_close_no_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Messages then a close in one burst: the echo fails fast, no close_timeout stall."""
    closed_at: list[float] = []
    done = trio.Event()

    def on_close(conn: WebSocketConn) -> None:
        closed_at.append(trio.current_time())
        done.set()

    handler = WebSocketHandler(
        on_message=lambda conn, t, d: conn.send(t, d),
        on_close=on_close,
        config=ConnectionConfig(inbound_queue=4),
    )
    async with open_test_app(app_with(handler)) as client, client.websocket("/ws") as conn:
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        for i in range(40):
            conn._hub_offer(conn._hub_encode(MessageType.TEXT, f"m{i}"))
        await conn.close()
        await done.wait()
    assert closed_at[0] - start < 1.0


async def test_server_handler_connection_has_no_reader_task() -> None:
    """The task that runs the callbacks is the reader: one writer task per connection."""
    handler = WebSocketHandler(on_message=lambda conn, t, d: conn.send(t, d))
    async with open_test_client(app_with(handler), "/ws") as conn:
        await conn.send_text("hi")
        assert (await conn.receive()).data == "hi"
        root = trio.lowlevel.current_root_task()
        assert root is not None
        names = task_names(root)
        assert names.count("rue_trio websocket writer") == 2  # the server's and the client's
        assert names.count("rue_trio websocket reader") == 1  # the client's only


async def test_server_close_in_on_message_returns_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """close() in on_message starts the handshake and returns; the loop completes it."""
    returned: list[State] = []
    closes: list[int | None] = []

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await conn.send(msg_type, data)
        await conn.close(4000, "done")
        returned.append(conn.state)

    handler = WebSocketHandler(
        on_message=on_message, on_close=lambda conn: closes.append(conn.close_code)
    )
    async with open_test_client(app_with(handler), "/ws") as conn:
        await conn.send_text("last")
        assert (await conn.receive()).data == "last"  # queued before the close frame
        with pytest.raises(ConnectionClosedError) as info:
            await conn.receive()
        assert info.value.code == 4000
    assert returned == [State.CLOSING]
    assert closes == [4000]
    assert trio.current_time() < 1


async def test_server_ping_in_on_message_fails_at_once_naming_the_fix() -> None:
    """ping() in a callback would wait for a pong only its own task reads: an error."""
    errors: list[BaseException] = []

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        await conn.ping()

    handler = WebSocketHandler(on_message=on_message, on_error=lambda c, e: errors.append(e))
    async with open_test_client(app_with(handler), "/ws") as conn:
        await conn.send_text("ping please")
        with pytest.raises(ConnectionClosedError) as info:
            await conn.receive()
        assert info.value.code == 1011
    (exc,) = errors
    assert isinstance(exc, trio.BusyResourceError)
    assert "another task" in str(exc)


async def test_server_shutdown_during_on_message_closes_1001_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The callback runs in the reading task: a shutdown cancels it, 1001, on_close once."""
    hub = Hub()
    entered = trio.Event()
    cancelled: list[bool] = []
    closes: list[int | None] = []

    async def on_message(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
        entered.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    handler = WebSocketHandler(
        hub=hub, on_message=on_message, on_close=lambda conn: closes.append(conn.close_code)
    )
    app = app_with(handler)
    app.add_background(hub.run)
    async with open_test_app(app) as client, client.websocket("/ws") as conn:
        await conn.send_text("work")
        await entered.wait()
        assert hub.count() == 1
        client.shutdown()
        with pytest.raises(ConnectionClosedOK) as info:
            await conn.receive()
        assert info.value.code == 1001
        await trio.testing.wait_all_tasks_blocked()
    assert cancelled == [True]
    assert closes == [1001]
    assert hub.count() == 0


async def test_server_hub_not_running_closes_1011_without_a_reader_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The close the handler starts before any callback is finished by its own task."""
    handler = WebSocketHandler(hub=Hub())
    async with open_test_client(app_with(handler), "/ws") as conn:
        with pytest.raises(ConnectionClosedError) as info:
            await conn.receive()
        assert info.value.code == 1011
    assert trio.current_time() < 1
