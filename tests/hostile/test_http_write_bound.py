"""A client that never reads its response is dropped within ``write_timeout``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from rue_trio.app import App, Context, Next
from rue_trio.http import HTTPLimits

_SIZE = 32 * 1024 * 1024  # far more than the kernel's socket buffers hold


def _open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


@pytest.mark.parametrize("route", ["/static/big.bin", "/bytes"])
async def test_http_client_never_reading_response_is_dropped(route: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * _SIZE)
    app = App(limits=HTTPLimits(write_timeout=0.5))
    app.static("/static", tmp_path)
    payload = bytes(_SIZE)
    app.get("/bytes", lambda c: c.bytes(200, payload))
    app.get("/", lambda c: c.string(200, "ok"))
    ended = trio.Event()

    async def track(c: Context, next: Next) -> None:
        try:
            await next()
        finally:
            if c.request.path == route:
                ended.set()

    app.use(track)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ((_, port),) = await nursery.start(app.serve, "127.0.0.1", 0)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(f"GET {route} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            # The client reads nothing; the server gives up within its bound.
            await ended.wait()
            assert _open_fds_to(big) == 0
            # The socket was closed: draining it now ends with EOF (or a reset).
            received = 0
            try:
                while chunk := await stream.receive_some(1 << 20):
                    received += len(chunk)
            except trio.BrokenResourceError:
                pass
            assert received < _SIZE
            await stream.aclose()
            # The server still serves others.
            other = await trio.open_tcp_stream("127.0.0.1", port)
            async with other:
                await other.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := await other.receive_some(4096):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200")
            nursery.cancel_scope.cancel()


def test_http_limits_write_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="write_timeout"):
        HTTPLimits(write_timeout=0)


async def test_http_client_never_reading_its_101_is_dropped(autojump_clock: object) -> None:
    from rue_trio.handlers import WebSocketHandler

    app = App(limits=HTTPLimits(write_timeout=5))
    handler = WebSocketHandler()
    outcome: list[BaseException | None] = []

    async def ws(c: Context) -> None:
        try:
            await handler.handle(c)
        except BaseException as exc:
            outcome.append(exc)
            raise
        outcome.append(None)

    app.get("/ws", ws)
    client, server = trio.testing.lockstep_stream_pair()
    with trio.fail_after(6):  # the write bound, and no more
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.serve_stream, server)
            await client.send_all(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            # The client reads nothing: the 101 cannot be written; serve_stream returns.
    assert len(outcome) == 1
    assert trio.current_time() >= 5
