"""Hostile HTTP requests over real sockets: each gets its 4xx/5xx, never a 500 or a traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from rue_trio.app import App, Context
from rue_trio.handlers import WebSocketHandler
from rue_trio.http import HTTPLimits
from tests.http._client import Client, Reply, parse_replies, read_until_eof

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
_UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n"
)


def _app(limits: HTTPLimits | None = None) -> App:
    app = App(limits=limits)
    app.get("/", lambda c: c.string(200, "ok"))

    @app.post("/echo")
    async def echo(c: Context) -> None:
        await c.bytes(200, c.body)

    handler = WebSocketHandler(on_message=lambda conn, t, data: conn.send(t, data))
    app.get("/ws", handler.handle)
    return app


@asynccontextmanager
async def serving(limits: HTTPLimits | None = None) -> AsyncIterator[int]:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ((_, port),) = await nursery.start(_app(limits).serve, "127.0.0.1", 0)
            yield port
            nursery.cancel_scope.cancel()


async def _exchange(port: int, data: bytes, *, pieces: int = 1) -> list[Reply]:
    """Send ``data`` (in ``pieces`` writes), read until the server closes, parse the replies."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            await stream.send_all(data[start : start + step])
        with trio.fail_after(5):
            return parse_replies(await read_until_eof(stream))


async def _well_behaved(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        assert (await Client(stream).request("GET", "/")).body == b"ok"


async def test_http_te_and_content_length_is_400_and_smuggled_request_unanswered() -> None:
    smuggle = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n"
        b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with serving() as port:
        replies = await _exchange(port, smuggle)
        assert [r.status for r in replies] == [400]
        assert replies[0].headers["connection"] == "close"
        await _well_behaved(port)


def _head(total: int, count: int, start: str = "GET / HTTP/1.1\r\nHost: x\r\n") -> bytes:
    """A request head of about ``total`` bytes made of ``count`` extra fields."""
    room = total - len(start) - 2 - count * len("X-0000: \r\n")
    lines = "".join(
        f"X-{i:04}: {'v' * (room // count + (1 if i < room % count else 0))}\r\n"
        for i in range(count)
    )
    return (start + lines + "\r\n").encode()


@pytest.mark.parametrize("pieces", [1, 3, 40])
async def test_http_head_over_16_kib_is_431_however_it_arrives(pieces: int) -> None:
    async with serving() as port:
        for size in (16 * 1024 + 100, 60 * 1024):
            head = _head(size, 50)
            assert len(head) == size
            assert [r.status for r in await _exchange(port, head, pieces=pieces)] == [431]
        await _well_behaved(port)


async def test_http_head_under_16_kib_is_served() -> None:
    head = _head(16 * 1024 - 100, 50).replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    async with serving() as port:
        assert [r.status for r in await _exchange(port, head)] == [200]


@pytest.mark.parametrize(
    ("limit", "count", "status"),
    [(None, 100, 200), (None, 101, 431), (10, 11, 431), (10, 10, 200)],
)
async def test_http_header_count_over_limit_is_431(
    limit: int | None, count: int, status: int
) -> None:
    limits = HTTPLimits() if limit is None else HTTPLimits(max_header_count=limit)
    # Host and Connection count too.
    head = _head(4000, count - 2).replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    async with serving(limits) as port:
        assert [r.status for r in await _exchange(port, head)] == [status]


async def test_http_upgrade_with_body_is_400_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = (_UPGRADE + "Content-Length: 5\r\n\r\nhello").encode()
    request = request.replace(b"Connection: Upgrade", b"Connection: Upgrade, close")
    async with serving() as port:
        assert [r.status for r in await _exchange(port, request)] == [400]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize("version", [b"HTTP/9.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9"])
async def test_http_unsupported_version_is_505(version: bytes) -> None:
    async with serving() as port:
        replies = await _exchange(port, b"GET / " + version + b"\r\nHost: x\r\n\r\n")
        assert [r.status for r in replies] == [505]


@pytest.mark.parametrize("size", [b"1" + b"0" * 20, b"f" * 20, b"f" * 16, b"200000"])
async def test_http_absurd_chunk_size_is_rejected_at_once(size: bytes) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nab"
    )
    # With a long request timeout, an answer within the test's bound is "at once".
    async with serving(HTTPLimits(request_timeout=60)) as port:
        replies = await _exchange(port, request)
        assert [r.status for r in replies] in ([400], [413])
        await _well_behaved(port)


@pytest.mark.parametrize("target", [b"http://[::1", b"http://[zz]/a", b"https://a]/"])
async def test_http_malformed_absolute_target_is_400_without_traceback(
    target: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as port:
        replies = await _exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [r.status for r in replies] == [400]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_http_10_request_with_transfer_encoding_is_400_and_closes() -> None:
    # RFC 9112 section 6.1: in HTTP/1.0 the framing is faulty, whatever else is present.
    request = b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    async with serving() as port:
        assert [r.status for r in await _exchange(port, request)] == [400]


@pytest.mark.parametrize("target", [b"?a=1", b"abc", b"..%2f"])
async def test_http_target_in_no_request_form_is_400(target: bytes) -> None:
    # RFC 9112 section 3.2: origin form ("/..."), absolute form, or "*".
    async with serving() as port:
        replies = await _exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [r.status for r in replies] == [400]
