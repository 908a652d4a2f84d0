"""A callback that raises inside ``on_close`` or ``on_error``: logged, and kept local.

These callbacks run on the error and cleanup paths, where nothing is left to report to:
their own exception is logged with its traceback, the connection still closes with the
code it was closing with, ``on_close`` still runs once, and neither ``handle`` nor the
other connections see anything.
"""

from __future__ import annotations

import logging

import pytest
import trio

from rue_trio import (
    ConnectionClosedError,
    MessageType,
    WebSocketConn,
    WebSocketHandler,
)
from rue_trio.testing import open_test_app
from tests._apps import app_with


async def echo_or_fail(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    if data == "boom":
        raise RuntimeError("on_message bug")
    await conn.send(msg_type, data)


def callback_failures(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        # "websocket <id>: callback 'name' failed", with the id as conn_id too.
        if record.getMessage()
        == f"websocket {getattr(record, 'conn_id', '?')}: callback {name!r} failed"
    ]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_server_on_error_raising_is_logged_and_connection_still_closes_1011(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    closes: list[str] = []
    seen: list[BaseException] = []

    def sync_on_error(conn: WebSocketConn, exc: BaseException) -> None:
        seen.append(exc)
        raise KeyError("on_error bug")

    async def async_on_error(conn: WebSocketConn, exc: BaseException) -> None:
        await trio.lowlevel.checkpoint()
        sync_on_error(conn, exc)

    handler = WebSocketHandler(
        on_message=echo_or_fail,
        on_error=async_on_error if asynchronous else sync_on_error,
        on_close=lambda conn: closes.append(conn.id),
    )
    with caplog.at_level(logging.ERROR, logger="rue_trio"):
        async with (
            open_test_app(app_with(handler)) as client,
            client.websocket("/ws") as healthy,
        ):
            async with client.websocket("/ws") as victim:
                await victim.send_text("boom")
                with pytest.raises(ConnectionClosedError) as info:
                    await victim.receive()
                assert (info.value.code, info.value.reason) == (1011, "internal error")
            await healthy.send_text("still here")
            assert (await healthy.receive()).data == "still here"
            async with client.websocket("/ws") as newcomer:
                await newcomer.send_text("served")
                assert (await newcomer.receive()).data == "served"
    assert [type(exc) for exc in seen] == [RuntimeError]
    name = "async_on_error" if asynchronous else "sync_on_error"
    (record,) = callback_failures(caplog, name)
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)
    assert len(closes) == 3  # every connection's on_close ran once


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_server_on_close_raising_is_logged_and_stays_local(
    asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    errors: list[BaseException] = []

    def sync_on_close(conn: WebSocketConn) -> None:
        calls.append(conn.id)
        raise ValueError("on_close bug")

    async def async_on_close(conn: WebSocketConn) -> None:
        await trio.lowlevel.checkpoint()
        sync_on_close(conn)

    on_close = async_on_close if asynchronous else sync_on_close
    handler = WebSocketHandler(
        on_message=echo_or_fail,
        on_close=on_close,
        on_error=lambda conn, exc: errors.append(exc),
    )
    with caplog.at_level(logging.ERROR, logger="rue_trio"):
        async with (
            open_test_app(app_with(handler)) as client,
            client.websocket("/ws") as healthy,
        ):
            async with client.websocket("/ws") as first:
                await first.close(1000, "bye")
            async with client.websocket("/ws") as failing:
                await failing.send_text("boom")
                with pytest.raises(ConnectionClosedError) as info:
                    await failing.receive()
                assert info.value.code == 1011
            await healthy.send_text("still here")
            assert (await healthy.receive()).data == "still here"
            await healthy.close(1000, "done")
    # Once per connection, even when it raised for the previous ones.
    assert len(calls) == len(set(calls)) == 3
    assert [type(exc) for exc in errors] == [RuntimeError]
    records = callback_failures(caplog, on_close.__name__)
    assert len(records) == 3
    assert all(r.exc_info is not None and isinstance(r.exc_info[1], ValueError) for r in records)
