"""The client against a real websockets server (in a subprocess) and against raw HTTP peers."""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import h11
import pytest
import trio
import trio.testing
import trustme

from rue_trio.client import open_websocket, open_websocket_stream
from rue_trio.exceptions import (
    ConnectError,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    InvalidStatusError,
    InvalidURIError,
    NegotiationError,
)
from rue_trio.protocol import (
    DeflateConfig,
    MessageType,
    PerMessageDeflate,
    Role,
    WebSocketProtocol,
    encode_message,
    server_handshake,
)
from rue_trio.websocket import ConnectionConfig, open_websocket_conn

# A websockets (asyncio) server: echo, plus a few paths that report or misbehave.
# It prints its port, then serves until it is killed.
SERVER_SCRIPT = r"""
import asyncio, json, ssl, sys
from websockets.asyncio.server import serve

async def handler(ws):
    path = ws.request.path
    if path.startswith("/info"):
        await ws.send(json.dumps({
            "path": path,
            "x_test": ws.request.headers.get("X-Test"),
            "subprotocol": ws.subprotocol,
            "extensions": ws.response.headers.get("Sec-WebSocket-Extensions"),
        }))
    elif path == "/close":
        await ws.close(4001, "custom")
        return
    elif path == "/big":
        await ws.send(b"x" * 5000)
    async for message in ws:
        await ws.send(message)

def select_subprotocol(ws, offered):
    # Unlike the default, accept clients that offer no subprotocol.
    for subprotocol in offered:
        if subprotocol in ("chat", "superchat"):
            return subprotocol
    return None

async def main():
    tls = None
    if len(sys.argv) > 1:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[1])
    async with serve(
        handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol, ssl=tls,
        max_size=1 << 22,
    ) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NO_KEEPALIVE = ConnectionConfig(ping_interval=None)


async def _start_server(*args: str) -> AsyncIterator[int]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", SERVER_SCRIPT, *args], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "the websockets server exited before printing its port"
                line += chunk
        yield int(line)
    finally:
        process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@pytest.fixture
async def ws_port() -> AsyncIterator[int]:
    """The port of a plain websockets echo server on 127.0.0.1."""
    async for port in _start_server():
        yield port


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def wss_port(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[int]:
    """The port of a websockets echo server with TLS, for a certificate of ``ca``."""
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    async for port in _start_server(str(pem)):
        yield port


# ------------------------------------------------------------ a real websockets server


async def test_client_echo_without_compression(ws_port: int) -> None:
    with trio.fail_after(10):
        async with open_websocket(
            f"ws://127.0.0.1:{ws_port}/echo", compression=False, config=NO_KEEPALIVE
        ) as conn:
            assert conn.role is Role.CLIENT
            assert conn.remote_address == ("127.0.0.1", ws_port)
            await conn.send_text("héllo")
            await conn.send_bytes(b"\x00\x01\x02")
            await conn.send(MessageType.TEXT, b"utf-8 bytes")
            assert (await conn.receive()).data == "héllo"
            assert (await conn.receive()).data == b"\x00\x01\x02"
            assert (await conn.receive()).data == "utf-8 bytes"
            assert await conn.ping() >= 0
        assert conn.close_code == 1000


async def test_client_echo_with_compression_large_message(ws_port: int) -> None:
    """RFC 7692: a compressible message crosses the wire much smaller than it is."""
    text = "the same words again and again " * 4000
    with trio.fail_after(10):
        async with open_websocket(f"ws://127.0.0.1:{ws_port}/echo") as conn:
            await conn.send_text(text)
            assert (await conn.receive()).data == text
            for i in range(50):
                await conn.send_json({"n": i, "text": "small message"})
            for i in range(50):
                assert await conn.receive_json() == {"n": i, "text": "small message"}
            stats = conn.statistics()
            assert stats.bytes_sent < len(text) // 20
            assert stats.bytes_received < len(text) // 20


async def test_client_compression_parameters_offered_and_agreed(ws_port: int) -> None:
    config = DeflateConfig(client_no_context_takeover=True, server_max_window_bits=10)
    with trio.fail_after(10):
        async with open_websocket(
            f"ws://127.0.0.1:{ws_port}/info", compression=config, config=NO_KEEPALIVE
        ) as conn:
            info = await conn.receive_json()
            assert "permessage-deflate" in info["extensions"]
            assert "client_no_context_takeover" in info["extensions"]
            assert "server_max_window_bits=10" in info["extensions"]
            for _ in range(3):
                await conn.send_text("x" * 1000)
                assert (await conn.receive()).data == "x" * 1000


async def test_client_subprotocol_headers_and_path(ws_port: int) -> None:
    with trio.fail_after(10):
        async with open_websocket(
            f"ws://127.0.0.1:{ws_port}/info?room=lobby",
            subprotocols=["superchat", "unknown"],
            headers=[("X-Test", "yes")],
            compression=None,
        ) as conn:
            assert conn.subprotocol == "superchat"
            info = await conn.receive_json()
    assert info == {
        "path": "/info?room=lobby",
        "x_test": "yes",
        "subprotocol": "superchat",
        "extensions": None,
    }


async def test_client_server_closes_with_code(ws_port: int) -> None:
    with trio.fail_after(10):
        async with open_websocket(f"ws://127.0.0.1:{ws_port}/close") as conn:
            with pytest.raises(ConnectionClosedError) as info:
                await conn.receive()
            assert (info.value.code, info.value.reason) == (4001, "custom")


async def test_client_message_over_limit_fails_1009(ws_port: int) -> None:
    with trio.fail_after(10):
        async with open_websocket(f"ws://127.0.0.1:{ws_port}/big", max_message_size=1000) as conn:
            with pytest.raises(ConnectionClosedError) as info:
                await conn.receive()
            assert info.value.code == 1009


async def test_client_async_for_ends_when_client_closes(ws_port: int) -> None:
    with trio.fail_after(10):
        async with open_websocket(f"ws://127.0.0.1:{ws_port}/echo") as conn:
            await conn.send_text("one")
            received = []
            async for message in conn:
                received.append(message.data)
                await conn.close()
            assert received == ["one"]
            with pytest.raises(ConnectionClosedOK):
                await conn.send_text("after")


async def test_client_wss_echo(wss_port: int, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with trio.fail_after(10):
        async with open_websocket(f"wss://localhost:{wss_port}/echo", ssl_context=context) as conn:
            assert conn.remote_address is not None
            assert conn.remote_address[1] == wss_port
            await conn.send_text("secret")
            assert (await conn.receive()).data == "secret"
        assert conn.close_code == 1000


async def test_client_wss_untrusted_certificate_connect_error(wss_port: int) -> None:
    with trio.fail_after(10), pytest.raises(ConnectError) as info:
        async with open_websocket(f"wss://localhost:{wss_port}/echo"):
            pytest.fail("connected despite an untrusted certificate")
    assert "certificate" in str(info.value).lower()
    assert isinstance(info.value.__cause__, trio.BrokenResourceError)


# ------------------------------------------------------------------- raw HTTP peers


def _accept(request: bytes) -> bytes:
    match = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", request)
    assert match is not None
    digest = hashlib.sha1(match.group(1) + GUID).digest()
    return base64.b64encode(digest)


def _switching(request: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + _accept(request) + b"\r\n" + extra + b"\r\n"
    )


Responder = Callable[[bytes], bytes | None]


async def _raw_server(nursery: trio.Nursery, respond: Responder) -> int:
    """Serve one connection: read the request head, write ``respond(request)``, linger."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]

    async def serve_one() -> None:
        async with listener:
            stream = await listener.accept()
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                request += chunk
            answer = respond(request)
            if answer is not None:
                await stream.send_all(answer)
            if answer is None:
                # Stay silent until the client leaves.
                while await stream.receive_some():
                    pass
            elif b"101 Switching" in answer:
                # Wait for the client's first frame (its close frame), then hang up.
                await stream.receive_some()

    nursery.start_soon(serve_one)
    port: int = listener.socket.getsockname()[1]
    return port


async def test_client_refused_404_invalid_status_with_body() -> None:
    body = b"<h1>not here</h1>"
    response = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(nursery, lambda _: response)
            with pytest.raises(InvalidStatusError) as info:
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    pytest.fail("connected despite a 404")
    assert info.value.status_code == 404
    assert info.value.body == body
    assert (b"content-type", b"text/html") in info.value.headers


async def test_client_refusal_body_kept_up_to_64_kib() -> None:
    response = b"HTTP/1.1 503 Service Unavailable\r\n\r\n" + b"z" * 100_000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(nursery, lambda _: response)
            with pytest.raises(InvalidStatusError) as info:
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    pass
    assert info.value.status_code == 503
    assert info.value.body == b"z" * 65536


async def test_client_garbage_response_handshake_error() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(nursery, lambda _: b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            with pytest.raises(HandshakeError) as info:
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    pass
    assert not isinstance(info.value, InvalidStatusError)
    assert "invalid HTTP response" in str(info.value)


async def test_client_wrong_accept_key_handshake_error() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(nursery, lambda _: response)
            with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    pass


async def test_client_subprotocol_not_offered_negotiation_error() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(
                nursery,
                lambda request: _switching(request, b"Sec-WebSocket-Protocol: evil\r\n"),
            )
            with pytest.raises(NegotiationError):
                async with open_websocket(f"ws://127.0.0.1:{port}/", subprotocols=["chat"]):
                    pass


async def test_client_server_hangs_up_during_handshake() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(nursery, lambda _: b"")
            with pytest.raises(HandshakeError, match="closed the connection"):
                async with open_websocket(f"ws://127.0.0.1:{port}/"):
                    pass


async def test_client_interim_response_then_101_and_trailing_frame() -> None:
    """Frames the server sent right behind its 101 are the first messages."""
    frame = encode_message(MessageType.TEXT, "welcome")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(
                nursery,
                lambda request: b"HTTP/1.1 100 Continue\r\n\r\n" + _switching(request) + frame,
            )
            async with open_websocket(f"ws://127.0.0.1:{port}/") as conn:
                assert (await conn.receive()).data == "welcome"
                assert conn.subprotocol is None


async def test_client_open_timeout_during_handshake() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _raw_server(nursery, lambda _: None)
            with pytest.raises(HandshakeError, match="timed out") as info:
                async with open_websocket(f"ws://127.0.0.1:{port}/", open_timeout=0.2):
                    pass
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_client_connection_refused_connect_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with trio.fail_after(10), pytest.raises(ConnectError) as info:
        async with open_websocket(f"ws://127.0.0.1:{port}/"):
            pass
    assert isinstance(info.value.__cause__, OSError)
    assert str(port) in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://example.com/", "ws://example.com/#frag", "ws://user@example.com/", "ws:///"]
)
async def test_client_bad_url_invalid_uri_error(url: str) -> None:
    with pytest.raises(InvalidURIError):
        async with open_websocket(url):
            pass


async def test_client_bad_header_value_error() -> None:
    with pytest.raises(ValueError, match="header"):
        async with open_websocket("ws://127.0.0.1:9/", headers=[("X-Bad", "a\r\nb")]):
            pass


# --------------------------------------------------------- over a given stream (memory)


async def _serve_echo(stream: trio.abc.Stream, subprotocols: Sequence[str] = ()) -> None:
    """A server assembled by hand: h11 reads the request, the core answers, then echo."""
    http = h11.Connection(h11.SERVER)
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(bytes(await stream.receive_some()))
            continue
        assert isinstance(event, h11.Request)
        break
    handshake = server_handshake(
        event.method,
        event.http_version,
        list(event.headers),
        subprotocols=subprotocols,
        deflate=DeflateConfig(),
    )
    await stream.send_all(handshake.response)
    codec = None
    if handshake.deflate_params is not None:
        codec = PerMessageDeflate(handshake.deflate_params, is_server=True)
    async with open_websocket_conn(
        stream,
        WebSocketProtocol(Role.SERVER, deflate=codec),
        trailing_data=http.trailing_data[0],
        subprotocol=handshake.subprotocol,
        config=NO_KEEPALIVE,
    ) as conn:
        async for message in conn:
            await conn.send(message.type, message.data)


@pytest.mark.parametrize("compression", [True, False])
async def test_client_stream_handshake_and_echo_in_memory(
    compression: bool, autojump_clock: trio.testing.MockClock
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_echo, server_stream, ["chat"])
        async with open_websocket_stream(
            client_stream,
            "ws://testserver/room?x=1",
            subprotocols=["chat"],
            compression=compression,
            config=NO_KEEPALIVE,
        ) as conn:
            assert conn.subprotocol == "chat"
            text = "in memory " * 100
            await conn.send_text(text)
            assert (await conn.receive()).data == text
            compressed = conn.statistics().bytes_sent < len(text) // 4
            assert compressed is compression


async def test_client_stream_no_answer_times_out_and_closes_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with pytest.raises(HandshakeError, match="timed out") as info:
        async with open_websocket_stream(client_stream, "ws://testserver/", open_timeout=5):
            pass
    assert trio.current_time() == 5
    assert isinstance(info.value.__cause__, TimeoutError)
    request = await server_stream.receive_some()
    assert request.startswith(b"GET / HTTP/1.1\r\n")
    # The client closed its end.
    assert await server_stream.receive_some() == b""


async def test_client_stream_bad_url_closes_stream(autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with pytest.raises(InvalidURIError):
        async with open_websocket_stream(client_stream, "https://testserver/"):
            pass
    assert await server_stream.receive_some() == b""
