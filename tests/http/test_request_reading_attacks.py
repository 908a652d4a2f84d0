"""Attacks on reading a request over a real socket (issue 10's cuts, review).

The first request's deadline goes on the scope only when a read waits, and a request
without a body is returned at h11's Request event: a head trickling in must still meet the
request timeout, and the end of a body-less request must not let bytes through as a body.
"""

from __future__ import annotations

import select

import pytest
import trio
import trio.testing

from rue_trio.http import HTTPConnection, HTTPLimits, Lookup, Request, RouteMatch, Router
from tests.http._client import parse_reply, read_until_eof


async def _dispatch(conn: HTTPConnection, request: Request, lookup: Lookup[object]) -> None:
    if isinstance(lookup, RouteMatch):
        await conn.respond(200, [], request.method.encode() + b" " + request.body)
    else:
        await conn.respond(404, [], b"")


def _router() -> Router[object]:
    router: Router[object] = Router()
    for method in ("GET", "POST", "HEAD", "OPTIONS"):
        router.add(method, "/a", object())
    return router


async def _serve(sock: trio.socket.SocketType, limits: HTTPLimits) -> None:
    stream = trio.SocketStream(sock)
    try:
        await HTTPConnection(stream, limits=limits).serve(_router(), _dispatch)
    finally:
        await trio.aclose_forcefully(stream)


_HEAD = b"GET /a HTTP/1.1\r\n" + b"x-a: b\r\n" * 100
_BODY = b"POST /a HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 200\r\n\r\n"


@pytest.mark.parametrize(("head", "first"), [(_HEAD, 1), (_BODY + b"x" * 200, len(_BODY))])
async def test_first_request_trickling_in_before_each_wait_gets_408(
    mock_clock: trio.testing.MockClock, head: bytes, first: int
) -> None:
    """Bytes are there when the server first reads: its first read does not wait, yet the
    request (its head, or its body after a 100 Continue) is still bounded by
    request_timeout."""
    ours, theirs = trio.socket.socketpair()
    async with trio.SocketStream(theirs) as peer, trio.open_nursery() as nursery:
        # The first bytes are in the kernel before the server's first read.
        await peer.send_all(head[:first])
        nursery.start_soon(_serve, ours, HTTPLimits(request_timeout=10.0))
        start = trio.current_time()
        if first > 1:
            await trio.testing.wait_all_tasks_blocked()
            assert (await peer.receive_some(100)).startswith(b"HTTP/1.1 100 ")
        for i in range(first, len(head)):
            await trio.testing.wait_all_tasks_blocked()
            if select.select([peer.socket.fileno()], [], [], 0)[0]:
                break  # the server answered
            mock_clock.jump(1)
            await peer.send_all(head[i : i + 1])
        answered_after = trio.current_time() - start
        mock_clock.autojump_threshold = 0  # through the server's linger
        reply = parse_reply(await read_until_eof(peer))
    assert reply.status == 408
    assert answered_after <= 10


async def test_pipelined_after_bodyless_get_answered_in_order() -> None:
    ours, theirs = trio.socket.socketpair()
    async with trio.SocketStream(theirs) as peer, trio.open_nursery() as nursery:
        nursery.start_soon(_serve, ours, HTTPLimits())
        await peer.send_all(
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
            b"HEAD /a HTTP/1.1\r\nhost: x\r\n\r\n"
            b"OPTIONS /a HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
            b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
            b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        with trio.fail_after(5):
            data = await read_until_eof(peer)
    assert data.count(b"HTTP/1.1 ") == 6
    assert data.count(b"HTTP/1.1 200") == 6
    for body in (b"GET ", b"OPTIONS ", b"POST abc"):
        assert b"\r\n\r\n" + body in data


async def test_body_sent_anyway_after_bodyless_get_is_a_next_request() -> None:
    """Bytes after a GET without Content-Length are the next request, not its body:
    here not a valid one, so a 400 after the GET's 200, and nothing else answered."""
    ours, theirs = trio.socket.socketpair()
    async with trio.SocketStream(theirs) as peer, trio.open_nursery() as nursery:
        nursery.start_soon(_serve, ours, HTTPLimits())
        await peer.send_all(
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nsmuggled\r\n\r\nGET /a HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        with trio.fail_after(5):
            data = await read_until_eof(peer)
    assert data.startswith(b"HTTP/1.1 200")
    assert data.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 400" in data
