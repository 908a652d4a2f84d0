"""Reading and writing a socket at once (rue_trio.http._socket_io), and the request loop's
fallback to the stream when the kernel has nothing yet or takes only part of the 101."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from rue_trio.http import HTTPConnection, HTTPLimits, Lookup, Request, RouteMatch, Router
from rue_trio.http import _writing as http_writing
from rue_trio.http._socket_io import read_now, write_now
from tests.http._client import read_until_eof


def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def test_read_now_takes_what_the_kernel_has() -> None:
    left, right = _socket_pair()
    async with left, right:
        assert read_now(right, 100) is None  # nothing yet: the caller awaits the stream
        await left.send_all(b"abc")
        assert read_now(right, 100) == b"abc"
        await left.aclose()
        assert read_now(right, 100) == b""  # the peer's end
    with pytest.raises(trio.ClosedResourceError):
        read_now(right, 100)


async def test_write_now_writes_what_the_kernel_takes() -> None:
    left, right = _socket_pair()
    async with left, right:
        assert write_now(left, b"0123456789") == 10
        assert await right.receive_some(100) == b"0123456789"
        # Fill the kernel's buffers: then nothing more is taken.
        for _ in range(10_000):
            if write_now(left, b"x" * 65536) == 0:
                break
        else:
            pytest.fail("the socket's buffers never filled")
        assert write_now(left, b"y") == 0
        await right.aclose()
        with pytest.raises(trio.BrokenResourceError):
            write_now(left, b"z")
    with pytest.raises(trio.ClosedResourceError):
        write_now(left, b"z")


async def test_other_streams_go_through_the_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(b"abc")
    assert read_now(right, 100) is None
    assert write_now(right, b"abc") == 0


async def _dispatch(conn: HTTPConnection, request: Request, lookup: Lookup[str]) -> None:
    if not isinstance(lookup, RouteMatch):
        await conn.respond(404)
    elif lookup.handler == "hello":
        await conn.respond(200, [], b"hello " + request.path.encode())
    else:
        stream, _ = await conn.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        # Longer than write_timeout: the 101's write bound must not outlive the write.
        await trio.sleep(0.2)
        await stream.send_all(b"still here")


@asynccontextmanager
async def _serving() -> AsyncIterator[trio.SocketStream]:
    """An HTTPConnection over a real socket pair; yields the client's end."""
    router: Router[str] = Router()
    router.add("GET", "/hello", "hello")
    router.add("GET", "/up", "up")
    client, server = _socket_pair()
    conn = HTTPConnection(server, limits=HTTPLimits(write_timeout=0.05))

    async def run() -> None:
        async with server:
            await conn.serve(router, _dispatch)

    with trio.fail_after(5):
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(run)
            yield client


async def test_request_arriving_after_the_first_read_is_read_through_the_stream() -> None:
    async with _serving() as client:
        await trio.testing.wait_all_tasks_blocked()  # the server found nothing at once
        await client.send_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        reply = await read_until_eof(client)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"hello /hello")


async def test_request_head_in_two_reads() -> None:
    async with _serving() as client:
        await client.send_all(b"GET /hello HTTP/1.1\r\nho")
        await trio.testing.wait_all_tasks_blocked()
        await client.send_all(b"st: x\r\nconnection: close\r\n\r\n")
        reply = await read_until_eof(client)
    assert reply.endswith(b"hello /hello")


async def test_101_the_kernel_takes_in_part_is_finished_through_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def write_part(stream: trio.abc.Stream, data: bytes) -> int:
        return write_now(stream, data[:5])

    monkeypatch.setattr(http_writing, "write_now", write_part)
    async with _serving() as client:
        await client.send_all(b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: y\r\n\r\n")
        reply = await read_until_eof(client)
    assert reply == b"HTTP/1.1 101 Switching Protocols\r\n\r\nstill here"
