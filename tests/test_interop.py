"""Interoperability over real sockets: our server with the websockets client, and TLS."""

from __future__ import annotations

import ssl
import sys
from functools import partial

import pytest
import trio
import trustme

from rue_trio import App, Context, MessageType, WebSocketConn, WebSocketHandler, open_websocket

# A websockets (sync) client in a subprocess: independent of our code, it sends a text,
# a binary and a large compressible message, checks each echo and the negotiated
# extensions, then closes with 1000 and prints what it saw.
CLIENT_SCRIPT = """
import sys
from websockets.sync.client import connect
url, compression = sys.argv[1], sys.argv[2]
with connect(url, compression=None if compression == "off" else "deflate",
             subprotocols=["chat"], open_timeout=10, close_timeout=10) as ws:
    exts = [type(e).__name__ for e in ws.protocol.extensions]
    ws.send("héllo"); assert ws.recv(timeout=10) == "héllo"
    ws.send(b"\\x00\\xff"); assert ws.recv(timeout=10) == b"\\x00\\xff"
    big = "abc" * 100_000
    ws.send(big); assert ws.recv(timeout=10) == big
    print("ok", ws.subprotocol, ",".join(exts) or "none", flush=True)
"""


async def echo(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    await conn.send(msg_type, data)


def echo_app() -> App:
    app = App()
    handler = WebSocketHandler(on_message=echo, subprotocols=["chat"])

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    return app


@pytest.mark.parametrize("compression", ["off", "deflate"])
async def test_server_talks_to_websockets_client(compression: str) -> None:
    """RFC 6455 and RFC 7692 with an independent client implementation."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(partial(echo_app().serve, "127.0.0.1", 0))
            host, port = addresses[0]
            result = await trio.run_process(
                [sys.executable, "-c", CLIENT_SCRIPT, f"ws://{host}:{port}/ws", compression],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()
    expected_ext = "none" if compression == "off" else "PerMessageDeflate"
    assert result.stdout.decode().split() == ["ok", "chat", expected_ext]


async def test_server_and_client_over_tls() -> None:
    """wss:// end to end: our server with a trustme certificate, our client verifying it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                partial(echo_app().serve, "127.0.0.1", 0, ssl_context=server_context)
            )
            _, port = addresses[0]
            async with open_websocket(
                f"wss://127.0.0.1:{port}/ws", ssl_context=client_context, subprotocols=["chat"]
            ) as conn:
                assert conn.subprotocol == "chat"
                await conn.send_text("secret")
                assert (await conn.receive()).data == "secret"
                await conn.send_bytes(b"x" * 200_000)
                assert (await conn.receive()).data == b"x" * 200_000
            nursery.cancel_scope.cancel()
