"""HTTPConnection over trio.testing memory streams: framing, limits, timeouts, upgrades."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from rue_trio.http import (
    HTTPConnection,
    HTTPLimits,
    Lookup,
    MethodNotAllowed,
    Request,
    RouteMatch,
    Router,
)
from rue_trio.http._writing import _date
from tests.http._client import Client, parse_replies, parse_reply, read_until_eof

Handler = Callable[[HTTPConnection, Request], Awaitable[None]]


async def _dispatch(conn: HTTPConnection, request: Request, lookup: Lookup[Handler]) -> None:
    if isinstance(lookup, RouteMatch):
        await lookup.handler(conn, request)
    elif isinstance(lookup, MethodNotAllowed):
        await conn.respond(405, [("allow", ", ".join(lookup.allowed))])
    else:
        await conn.respond(404, [], b"not found")


async def _hello(conn: HTTPConnection, request: Request) -> None:
    await conn.respond(
        200, [("content-type", "text/plain")], b"hello " + request.params["rest"].encode()
    )


async def _echo(conn: HTTPConnection, request: Request) -> None:
    await conn.respond(200, [], request.body)


def _router(**extra: Handler) -> Router[Handler]:
    router: Router[Handler] = Router()
    router.add("GET", "/hello/*rest", _hello)
    router.add("POST", "/echo", _echo)
    for path, handler in extra.items():
        router.add("GET", "/" + path, handler)
    return router


@asynccontextmanager
async def serving(
    router: Router[Handler] | None = None,
    *,
    limits: HTTPLimits | None = None,
    lockstep: bool = False,
) -> AsyncIterator[tuple[trio.abc.Stream, HTTPConnection, trio.Event]]:
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    conn = HTTPConnection(server_stream, limits=limits, remote_address=("10.0.0.1", 5000))
    done = trio.Event()

    async def run() -> None:
        try:
            await conn.serve(router or _router(), _dispatch)
        finally:
            await trio.aclose_forcefully(server_stream)
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield client_stream, conn, done
        await client_stream.aclose()


async def _finish(stream: trio.abc.Stream, done: trio.Event) -> None:
    """Close our side: the server stops lingering (RFC 9112 section 9.6) and ends."""
    await stream.aclose()
    await done.wait()


async def test_server_serve_keep_alive_two_requests_one_connection() -> None:
    async with serving() as (stream, _, done):
        client = Client(stream)
        first = await client.request("GET", "/hello/a")
        second = await client.request("GET", "/hello/b?x=1")
        assert (first.status, first.body) == (200, b"hello /a")
        assert (second.status, second.body) == (200, b"hello /b")
        assert first.headers["server"] == "rue_trio"
        assert first.headers["content-length"] == "8"
        assert "date" in first.headers
        assert not done.is_set()


async def test_server_serve_pipelined_requests_answered_in_order() -> None:
    """RFC 9112 section 9.3.2: pipelined requests are answered in order."""
    async with serving() as (stream, _, done):
        raw = b"".join(b"GET /hello/%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(3))
        await stream.send_all(
            raw + b"GET /hello/end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        replies = parse_replies(await read_until_eof(stream))
        assert [r.body for r in replies] == [b"hello /0", b"hello /1", b"hello /2", b"hello /end"]
        await done.wait()


async def test_server_serve_unknown_path_dispatches_404() -> None:
    async with serving() as (stream, _, _done):
        reply = await Client(stream).request("GET", "/nope")
        assert (reply.status, reply.body) == (404, b"not found")


async def test_server_serve_wrong_method_dispatches_405() -> None:
    async with serving() as (stream, _, _done):
        reply = await Client(stream).request("PUT", "/echo")
        assert reply.status == 405
        assert reply.headers["allow"] == "POST"


async def test_server_serve_post_body_reaches_route() -> None:
    async with serving() as (stream, _, _done):
        reply = await Client(stream).request("POST", "/echo", body=b"x" * 100_000)
        assert reply.body == b"x" * 100_000


async def test_server_serve_body_in_several_writes_reaches_route() -> None:
    async with serving(lockstep=True) as (stream, _, _done):
        await stream.send_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nab")
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(b"cd")
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(b"ef")
        reply = parse_reply(await stream.receive_some(65536))
        assert reply.body == b"abcdef"


async def test_server_serve_chunked_body_reaches_route() -> None:
    async with serving() as (stream, _, _done):
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        reply = parse_reply(await stream.receive_some(65536))
        assert reply.body == b"abcde"


async def test_server_serve_expect_100_continue_gets_go_ahead() -> None:
    """RFC 9110 section 10.1.1: the server says 100 before the client sends the body."""
    async with serving() as (stream, _, _done):
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"ok")
        reply = parse_reply(await stream.receive_some(65536))
        assert (reply.status, reply.body) == (200, b"ok")


async def test_server_serve_oversized_content_length_is_413() -> None:
    """RFC 9110 section 15.5.14: refused before reading the body."""
    limits = HTTPLimits(max_body_size=10)
    async with serving(limits=limits) as (stream, conn, done):
        await stream.send_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 413
        assert reply.headers["connection"] == "close"
        assert reply.body == b"413 Request Entity Too Large"
        await _finish(stream, done)
        assert conn.status == 413


async def test_server_serve_oversized_chunked_body_is_413() -> None:
    limits = HTTPLimits(max_body_size=4)
    async with serving(limits=limits) as (stream, _, done):
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n3\r\ndef\r\n"
        )
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 413
        await _finish(stream, done)


async def test_server_serve_oversized_header_is_431() -> None:
    """RFC 6585 section 5."""
    limits = HTTPLimits(max_header_size=1024)
    async with serving(limits=limits) as (stream, _, done):
        await stream.send_all(b"GET /hello/x HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2000)
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 431
        await _finish(stream, done)


async def test_server_serve_malformed_request_is_400() -> None:
    async with serving() as (stream, _, done):
        await stream.send_all(b"NOT A REQUEST\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 400
        assert reply.headers["connection"] == "close"
        await _finish(stream, done)


async def test_server_serve_missing_host_is_400() -> None:
    """RFC 9112 section 3.2: an HTTP/1.1 request without Host is rejected."""
    async with serving() as (stream, _, done):
        await stream.send_all(b"GET /hello/x HTTP/1.1\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 400
        await _finish(stream, done)


async def test_server_serve_slowloris_gets_408(autojump_clock: trio.testing.MockClock) -> None:
    """RFC 9110 section 15.5.9: a head that never completes gets 408 after the timeout."""
    limits = HTTPLimits(request_timeout=10.0)
    async with serving(limits=limits) as (stream, _, done):
        start = trio.current_time()
        await stream.send_all(b"GET /hello/x HTTP/1.1\r\n")
        for _ in range(3):
            await trio.sleep(3)
            await stream.send_all(b"x-a: b\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 408
        assert trio.current_time() - start == pytest.approx(10.0)
        await _finish(stream, done)


async def test_server_serve_silent_new_connection_closes_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as (stream, conn, done):
        assert await read_until_eof(stream) == b""
        await done.wait()
        assert conn.status is None


async def test_server_serve_idle_keep_alive_closes_after_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = HTTPLimits(keep_alive_timeout=5.0)
    async with serving(limits=limits) as (stream, _, done):
        client = Client(stream)
        await client.request("GET", "/hello/x")
        start = trio.current_time()
        assert await read_until_eof(stream) == b""
        await done.wait()
        assert trio.current_time() - start == pytest.approx(5.0)


async def test_server_serve_keep_alive_slow_second_request_gets_408(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = HTTPLimits(keep_alive_timeout=5.0, request_timeout=8.0)
    async with serving(limits=limits) as (stream, _, done):
        client = Client(stream)
        await client.request("GET", "/hello/x")
        await trio.sleep(4)
        await stream.send_all(b"GET /hello/y HTTP/1.1\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 408
        await _finish(stream, done)


async def test_server_serve_http10_request_closes_after_response() -> None:
    async with serving() as (stream, _, done):
        await stream.send_all(b"GET /hello/old HTTP/1.0\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert (reply.status, reply.body) == (200, b"hello /old")
        assert reply.headers["connection"] == "close"
        assert reply.http_version == b"1.1"
        await done.wait()


async def test_server_serve_http10_keep_alive_is_not_kept() -> None:
    """h11 speaks keep-alive with HTTP/1.1 peers only."""
    seen: list[str] = []

    async def version(conn: HTTPConnection, request: Request) -> None:
        seen.append(request.http_version)
        await conn.respond(204)

    async with serving(_router(v=version)) as (stream, _, done):
        await stream.send_all(b"GET /v HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 204
        assert "content-length" not in reply.headers
        await done.wait()
    assert seen == ["1.0"]


async def test_server_serve_connection_close_request_is_honoured() -> None:
    async with serving() as (stream, _, done):
        await stream.send_all(b"GET /hello/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        await done.wait()


async def test_server_serve_connection_close_response_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler's ``connection: close`` ends the connection after that response.

    A second request waits behind the first: it gets no answer, and the server closes
    its side (we read end-of-file while ours is still open). Under the mock clock a
    server that kept the connection would close it only at its idle timeout, after
    answering the second request: the assertion, not a hang, reports it.
    """

    async def closing(conn: HTTPConnection, request: Request) -> None:
        await conn.respond(200, [("connection", "close")], b"bye")

    async with serving(_router(bye=closing)) as (stream, _, done):
        await stream.send_all(
            b"GET /bye HTTP/1.1\r\nhost: x\r\n\r\nGET /hello/a HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        replies = parse_replies(await read_until_eof(stream))
        assert [(r.status, r.headers["connection"], r.body) for r in replies] == [
            (200, "close", b"bye")
        ]
        await done.wait()


async def test_server_serve_head_sends_headers_without_body() -> None:
    """RFC 9110 section 9.3.2: HEAD gets GET's headers and no content."""
    async with serving() as (stream, _, _done):
        client = Client(stream)
        reply = await client.request("HEAD", "/hello/abc")
        assert reply.status == 200
        assert reply.headers["content-length"] == "10"
        assert reply.body == b""
        again = await client.request("GET", "/hello/abc")
        assert again.body == b"hello /abc"


async def test_server_serve_no_response_sends_empty_200() -> None:
    async def silent(conn: HTTPConnection, request: Request) -> None:
        await trio.lowlevel.checkpoint()

    async with serving(_router(silent=silent)) as (stream, _, _done):
        reply = await Client(stream).request("GET", "/silent")
        assert (reply.status, reply.body) == (200, b"")


async def test_server_serve_dispatch_error_is_500_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(conn: HTTPConnection, request: Request) -> None:
        raise ZeroDivisionError("boom")

    async with serving(_router(broken=broken)) as (stream, _, done):
        await stream.send_all(b"GET /broken HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 500
        await done.wait()
    assert "unhandled error while serving GET /broken" in caplog.text
    assert "ZeroDivisionError" in caplog.text


async def test_server_serve_dispatch_error_after_response_just_closes() -> None:
    async def late(conn: HTTPConnection, request: Request) -> None:
        await conn.respond(200, [], b"ok")
        raise RuntimeError("after the fact")

    async with serving(_router(late=late)) as (stream, _, done):
        await stream.send_all(b"GET /late HTTP/1.1\r\nhost: x\r\n\r\n")
        reply = parse_reply(await read_until_eof(stream))
        assert (reply.status, reply.body) == (200, b"ok")
        await done.wait()


async def test_server_serve_second_response_raises() -> None:
    errors: list[Exception] = []

    async def twice(conn: HTTPConnection, request: Request) -> None:
        await conn.respond(200, [], b"one")
        try:
            await conn.respond(200, [], b"two")
        except RuntimeError as exc:
            errors.append(exc)

    async with serving(_router(twice=twice)) as (stream, _, _done):
        reply = await Client(stream).request("GET", "/twice")
        assert reply.body == b"one"
    assert "already sent" in str(errors[0])


async def test_server_respond_invalid_header_raises_value_error() -> None:
    errors: list[Exception] = []

    async def bad(conn: HTTPConnection, request: Request) -> None:
        try:
            await conn.respond(200, [("x-bad", "a\r\nb")])
        except ValueError as exc:
            errors.append(exc)
            await conn.respond(200, [], b"recovered")

    async with serving(_router(bad=bad)) as (stream, _, _done):
        reply = await Client(stream).request("GET", "/bad")
        assert reply.body == b"recovered"
    assert errors


async def test_server_respond_large_body_is_sent_whole() -> None:
    payload = bytes(range(256)) * 1000

    async def big(conn: HTTPConnection, request: Request) -> None:
        await conn.respond(200, [], payload)

    async with serving(_router(big=big)) as (stream, _, _done):
        reply = await Client(stream).request("GET", "/big")
        assert reply.body == payload


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await trio.lowlevel.checkpoint()
        yield part
    await trio.lowlevel.checkpoint()


async def test_server_respond_stream_chunked_and_sized() -> None:
    async def chunked(conn: HTTPConnection, request: Request) -> None:
        await conn.respond_stream(200, [], _chunks(b"ab", b"", b"cd"))

    async def sized(conn: HTTPConnection, request: Request) -> None:
        await conn.respond_stream(200, [], _chunks(b"ab", b"cd"), 4)

    async with serving(_router(chunked=chunked, sized=sized)) as (stream, _, _done):
        client = Client(stream)
        reply = await client.request("GET", "/chunked")
        assert reply.headers["transfer-encoding"] == "chunked"
        assert reply.body == b"abcd"
        reply = await client.request("GET", "/sized")
        assert reply.headers["content-length"] == "4"
        assert reply.body == b"abcd"
        reply = await client.request("HEAD", "/sized")
        assert reply.headers["content-length"] == "4"
        assert reply.body == b""


async def test_server_respond_stream_length_mismatch_raises_and_closes() -> None:
    errors: list[Exception] = []

    async def short(conn: HTTPConnection, request: Request) -> None:
        try:
            await conn.respond_stream(200, [], _chunks(b"abc"), 2)
        except ValueError as exc:
            errors.append(exc)
            await trio.lowlevel.checkpoint()

    async with serving(_router(short=short)) as (stream, _, done):
        await stream.send_all(b"GET /short HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await read_until_eof(stream)
        assert data.startswith(b"HTTP/1.1 200 ")
        await done.wait()
    assert errors


async def test_server_switch_protocols_returns_trailing_data() -> None:
    """Bytes sent right after the upgrade request belong to the new protocol."""
    handed: list[tuple[trio.abc.Stream, bytes]] = []

    async def upgrade(conn: HTTPConnection, request: Request) -> None:
        stream, trailing = await conn.switch_protocols(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"
        )
        handed.append((stream, trailing))
        # The new protocol owns the stream: echo what it receives next.
        await stream.send_all(b"got:" + trailing + await stream.receive_some(100))

    async with serving(_router(up=upgrade)) as (stream, conn, done):
        await stream.send_all(
            b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n"
            b"\x81\x85FRAME"
        )
        head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        await stream.send_all(b"more")
        assert await read_until_eof(stream) == b"got:\x81\x85FRAMEmore"
        await done.wait()
        assert conn.upgraded
        assert conn.status == 101
    assert handed[0][1] == b"\x81\x85FRAME"


async def test_server_switch_protocols_then_error_sends_no_http_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def upgrade(conn: HTTPConnection, request: Request) -> None:
        await conn.switch_protocols(b"HTTP/1.1 101 OK\r\n\r\n")
        raise RuntimeError("new protocol failed")

    async with serving(_router(up=upgrade)) as (stream, _, done):
        await stream.send_all(b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: y\r\n\r\n")
        # Only the 101: the stream belongs to the new protocol, no 500 follows.
        assert await read_until_eof(stream) == b"HTTP/1.1 101 OK\r\n\r\n"
        await done.wait()
    assert "new protocol failed" in caplog.text


async def test_server_switch_protocols_without_trailing_data_returns_empty() -> None:
    trailing: list[bytes] = []

    async def upgrade(conn: HTTPConnection, request: Request) -> None:
        trailing.append((await conn.switch_protocols(b"HTTP/1.1 101 OK\r\n\r\n"))[1])

    async with serving(_router(up=upgrade)) as (stream, _, done):
        await stream.send_all(b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: y\r\n\r\n")
        assert await read_until_eof(stream) == b"HTTP/1.1 101 OK\r\n\r\n"
        await done.wait()
    assert trailing == [b""]


async def test_server_switch_protocols_after_response_raises() -> None:
    errors: list[Exception] = []

    async def late(conn: HTTPConnection, request: Request) -> None:
        await conn.respond(400, [], b"no")
        try:
            await conn.switch_protocols(b"HTTP/1.1 101 OK\r\n\r\n")
        except RuntimeError as exc:
            errors.append(exc)

    async with serving(_router(late=late)) as (stream, conn, _done):
        reply = await Client(stream).request("GET", "/late", [("upgrade", "x")])
        assert reply.status == 400
        assert not conn.upgraded
    assert "already sent" in str(errors[0])


async def test_server_switch_protocols_after_body_raises() -> None:
    errors: list[Exception] = []

    async def with_body(conn: HTTPConnection, request: Request) -> None:
        try:
            await conn.switch_protocols(b"HTTP/1.1 101 OK\r\n\r\n")
        except RuntimeError as exc:
            errors.append(exc)
            await conn.respond(400)

    router = _router()
    router.add("POST", "/up", with_body)
    async with serving(router) as (stream, _, _done):
        reply = await Client(stream).request("POST", "/up", body=b"data")
        assert reply.status == 400
    assert "body" in str(errors[0])


async def test_server_shutdown_idle_connection_is_cancelled() -> None:
    async with serving() as (stream, conn, done):
        await Client(stream).request("GET", "/hello/x")
        await trio.testing.wait_all_tasks_blocked()
        conn.shutdown()
        await done.wait()
        assert conn.shutting_down
        assert await read_until_eof(stream) == b""


async def test_server_shutdown_before_serve_ends_at_once() -> None:
    _client_stream, server_stream = trio.testing.memory_stream_pair()
    conn = HTTPConnection(server_stream)
    conn.shutdown()
    with trio.fail_after(1):
        await conn.serve(_router(), _dispatch)
    assert conn.status is None


async def test_server_shutdown_active_request_finishes_with_close() -> None:
    release = trio.Event()
    seen: list[bool] = []

    async def slow(conn: HTTPConnection, request: Request) -> None:
        await release.wait()
        seen.append(conn.shutting_down)
        await conn.respond(503 if conn.shutting_down else 200)

    async with serving(_router(slow=slow)) as (stream, conn, done):
        await stream.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        conn.shutdown()
        release.set()
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 503
        assert reply.headers["connection"] == "close"
        await done.wait()
    assert seen == [True]


async def test_server_shutdown_during_upgrade_cancels_new_protocol() -> None:
    release = trio.Event()
    outcome: list[str] = []

    async def upgrade(conn: HTTPConnection, request: Request) -> None:
        await release.wait()
        await conn.switch_protocols(b"HTTP/1.1 101 OK\r\n\r\n")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    async with serving(_router(up=upgrade)) as (stream, conn, done):
        await stream.send_all(b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: z\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        conn.shutdown()
        release.set()
        await done.wait()
    assert outcome == ["cancelled"]


async def test_server_shutdown_upgraded_connection_is_cancelled() -> None:
    outcome: list[str] = []

    async def upgrade(conn: HTTPConnection, request: Request) -> None:
        await conn.switch_protocols(b"HTTP/1.1 101 OK\r\n\r\n")
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    async with serving(_router(up=upgrade)) as (stream, conn, done):
        await stream.send_all(b"GET /up HTTP/1.1\r\nhost: x\r\nupgrade: z\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        assert conn.upgraded
        conn.shutdown()
        await done.wait()
    assert outcome == ["cancelled"]


async def test_server_serve_client_vanishing_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    async def write_later(conn: HTTPConnection, request: Request) -> None:
        await trio.testing.wait_all_tasks_blocked()
        await conn.respond(200, [], b"x" * 10)

    async with serving(_router(w=write_later), lockstep=True) as (stream, conn, done):
        await stream.send_all(b"GET /w HTTP/1.1\r\nhost: x\r\n\r\n")
        await stream.aclose()
        await done.wait()
        assert conn.client_gone
    assert caplog.text == ""


async def test_server_serve_client_eof_mid_request_is_400_quietly() -> None:
    async with serving() as (stream, _, done):
        await stream.send_all(b"GET /hello/x HTTP/1.1\r\nhost")
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        await stream.send_eof()
        reply = parse_reply(await read_until_eof(stream))
        assert reply.status == 400
        await _finish(stream, done)


async def test_server_serve_lockstep_backpressure_still_answers() -> None:
    async with serving(lockstep=True) as (stream, _, _done):
        reply = await Client(stream).request("GET", "/hello/lock")
        assert reply.body == b"hello /lock"


async def test_server_serve_linger_stops_after_enough_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = HTTPLimits(max_body_size=1)
    async with serving(limits=limits) as (stream, _, done):
        await stream.send_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\n\r\n")
        head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 413 ")
        # The server keeps reading (and discarding) for a while so we get the answer.
        for _ in range(20):
            await stream.send_all(b"z" * 65536)
        await done.wait()


async def test_server_request_fields_are_filled() -> None:
    seen: list[Request] = []

    async def record(conn: HTTPConnection, request: Request) -> None:
        seen.append(request)
        await conn.respond(204)

    router = _router()
    router.add("GET", "/rooms/:room", record)
    async with serving(router) as (stream, _, _done):
        await Client(stream).request(
            "GET", "/rooms/caf%C3%A9?user=ann&user=bob&x=", [("x-a", "1"), ("X-A", "2")]
        )
    (request,) = seen
    assert request.method == "GET"
    assert request.target == "/rooms/caf%C3%A9?user=ann&user=bob&x="
    assert request.path == "/rooms/café"
    assert request.params == {"room": "café"}
    assert request.query_string == "user=ann&user=bob&x="
    assert request.http_version == "1.1"
    assert request.remote_address == ("10.0.0.1", 5000)
    assert request.header("X-A") == "1, 2"
    assert request.header("host") == "test"
    assert request.header("missing") is None
    assert request.query("user") == "ann"
    assert request.query("x") == ""
    assert request.query("nope") is None
    assert request.query_params() == {"user": ["ann", "bob"], "x": [""]}
    assert request.body == b""


def test_server_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        HTTPLimits(max_header_size=0)
    with pytest.raises(ValueError):
        HTTPLimits(request_timeout=0)


def test_server_date_header_is_cached_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9110 section 6.6.1: an IMF-fixdate, formatted once per second."""
    now = [1_700_000_000.25]
    monkeypatch.setattr(time, "time", lambda: now[0])
    first = _date.get()
    assert first == b"Tue, 14 Nov 2023 22:13:20 GMT"
    now[0] += 0.5
    assert _date.get() is first
    now[0] += 1
    assert _date.get() == b"Tue, 14 Nov 2023 22:13:21 GMT"


async def test_server_serve_head_error_has_no_body() -> None:
    async def broken(conn: HTTPConnection, request: Request) -> None:
        raise RuntimeError("head boom")

    async with serving(_router(broken=broken)) as (stream, _, done):
        await stream.send_all(b"HEAD /broken HTTP/1.1\r\nhost: x\r\n\r\n")
        data = await read_until_eof(stream)
        assert data.startswith(b"HTTP/1.1 500 ")
        assert data.endswith(b"\r\n\r\n")
        await done.wait()


async def test_server_respond_tracks_responded() -> None:
    states: list[bool] = []

    async def track(conn: HTTPConnection, request: Request) -> None:
        states.append(conn.responded)
        await conn.respond(200)
        states.append(conn.responded)

    async with serving(_router(t=track)) as (stream, _, _done):
        client = Client(stream)
        await client.request("GET", "/t")
        await client.request("GET", "/t")
    assert states == [False, True, False, True]


class _OneWay(trio.abc.Stream):
    """A stream without half-close (as TLS): the error path still lingers, then ends."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_server_serve_error_on_stream_without_half_close_lingers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    conn = HTTPConnection(_OneWay(server_stream))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve, _router(), _dispatch)
        await client_stream.send_all(b"BAD\r\n\r\n")
        reply = await client_stream.receive_some(65536)
        assert parse_reply(reply).status == 400
        start = trio.current_time()
    # Nothing more from the client: the server gave up lingering after 2 seconds.
    assert trio.current_time() - start == pytest.approx(2.0)


def test_server_request_helpers_without_query() -> None:
    request = Request("GET", "/a", "/a", "", "1.1", (), {})
    assert request.query("x") is None
    assert request.query_params() == {}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a%20b?x=1", ("/a b", "x=1")),
        ("/plain", ("/plain", "")),
        ("http://example.com/p%2Fq?y=2", ("/p/q", "y=2")),
        ("http://example.com", ("/", "")),
        ("*", ("*", "")),
    ],
)
def test_server_split_target_forms(target: str, expected: tuple[str, str]) -> None:
    """RFC 9112 section 3.2: origin, absolute and asterisk forms."""
    from rue_trio.http import split_target

    assert split_target(target) == expected


async def test_server_serve_absolute_form_target_is_routed() -> None:
    async with serving() as (stream, _, _done):
        reply = await Client(stream).request("GET", "http://test/hello/abs")
        assert reply.body == b"hello /abs"
