"""Out of file descriptors: the accept loop backs off, logs rarely, and the others are served."""

from __future__ import annotations

import errno
import logging

import pytest
import trio
import trio.testing

from rue_trio.app import App
from rue_trio.client import open_websocket_stream
from rue_trio.handlers import WebSocketHandler
from rue_trio.protocol import MessageType
from rue_trio.server import Server


class _ExhaustedListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands out the given streams, then fails as accept(2) does without descriptors."""

    def __init__(self, streams: list[trio.abc.Stream]) -> None:
        self.streams = streams
        self.exhausted = True
        self.failures = 0
        self.accepted = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.streams:
            return self.streams.pop(0)
        if self.exhausted:
            self.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        self.accepted.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
async def test_process_accept_out_of_descriptors_backs_off_and_serves_others(
    code: int, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rue_trio")
    app = App()
    app.get("/ws", WebSocketHandler(on_message=lambda conn, t, d: conn.send(t, d)).handle)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    listener = _ExhaustedListener([server_stream])
    server = app._server()
    assert isinstance(server, Server)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [listener])
        async with open_websocket_stream(client_stream, "ws://x/ws", compression=False) as ws:
            await trio.sleep(60)  # a minute without descriptors (virtual time)
            # The connection opened before keeps being served.
            await ws.send(MessageType.TEXT, "still here")
            assert (await ws.receive()).data == "still here"
            records = [r for r in caplog.records if "accept" in r.getMessage()]
            # At most one line per five seconds, and no retry storm.
            assert 1 <= len(records) <= 60 / 5 + 1, [r.getMessage() for r in records]
            assert records[0].levelno == logging.ERROR
            assert "Too many open files" in records[0].getMessage()
            assert listener.failures <= 80
            # Descriptors come back: accepting resumes within the backoff's cap.
            listener.exhausted = False
            with trio.fail_after(2):
                await listener.accepted.wait()
        nursery.cancel_scope.cancel()
