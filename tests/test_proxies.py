"""Behind proxies: Forwarded / X-Forwarded-For from trusted peers only; Unix sockets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from rue_trio import App, BindError, Context, WebSocketConn, WebSocketHandler, open_websocket
from rue_trio._proxies import client_address, parse_proxies

PEER = ("10.0.0.5", 40000)


def headers(**fields: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in fields.items()]


def test_proxy_headers_ignored_from_an_untrusted_peer() -> None:
    """Anyone can send X-Forwarded-For: only a configured proxy is believed."""
    proxies = parse_proxies(["192.168.0.0/16"])
    assert client_address(PEER, headers(x_forwarded_for="1.2.3.4"), proxies) == PEER
    assert client_address(PEER, headers(forwarded="for=1.2.3.4"), proxies) == PEER


def test_proxy_client_is_the_rightmost_untrusted_hop() -> None:
    """A client's own spoofed entry (left) loses to what the proxies appended (right)."""
    proxies = parse_proxies(["10.0.0.0/8"])
    chain = headers(x_forwarded_for="6.6.6.6, 1.2.3.4, 10.0.0.9")
    assert client_address(PEER, chain, proxies) == ("1.2.3.4", 0)
    everyone_trusted = headers(x_forwarded_for="10.1.1.1, 10.0.0.9")
    assert client_address(PEER, everyone_trusted, proxies) == ("10.1.1.1", 0)


def test_proxy_forwarded_preferred_with_ports_and_ipv6() -> None:
    proxies = parse_proxies(["10.0.0.5"])
    both = headers(
        forwarded='for=198.51.100.1;proto=https, for="[2001:db8::1]:4711"',
        x_forwarded_for="9.9.9.9",
    )
    assert client_address(PEER, both, proxies) == ("2001:db8::1", 4711)
    assert client_address(PEER, headers(forwarded="for=1.2.3.4:80"), proxies) == ("1.2.3.4", 80)


def test_proxy_unknown_or_garbage_hop_keeps_the_peer() -> None:
    proxies = parse_proxies(["10.0.0.0/8"])
    for value in ("unknown", "_hidden", "not-an-ip", ""):
        assert client_address(PEER, headers(forwarded=f"for={value}"), proxies) == PEER
    assert client_address(PEER, [], proxies) == PEER


def test_proxy_ipv4_mapped_peer_is_trusted() -> None:
    proxies = parse_proxies(["127.0.0.1"])
    peer = ("::ffff:127.0.0.1", 1)
    assert client_address(peer, headers(x_forwarded_for="1.2.3.4"), proxies) == ("1.2.3.4", 0)


def test_proxy_unix_peer_trusted_only_when_configured() -> None:
    forwarded = headers(x_forwarded_for="1.2.3.4")
    assert client_address(None, forwarded, parse_proxies([])) is None
    assert client_address(None, forwarded, parse_proxies(["unix"])) == ("1.2.3.4", 0)


@pytest.mark.parametrize("bad", [["10.0.0.0/33"], ["nginx"], "127.0.0.1"])
def test_proxy_bad_trusted_proxies_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="trusted"):
        App(trusted_proxies=bad)  # type: ignore[arg-type]


def proxied_app(trusted: list[str], seen: list[tuple[str, int] | None]) -> App:
    app = App(trusted_proxies=trusted)

    def on_connect(conn: WebSocketConn) -> None:
        seen.append(conn.remote_address)

    handler = WebSocketHandler(on_connect=on_connect)

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    @app.get("/who")
    async def who(c: Context) -> None:
        await c.string(200, repr(c.remote_address))

    return app


async def test_proxy_websocket_remote_address_is_the_client_over_a_real_socket() -> None:
    seen: list[tuple[str, int] | None] = []
    app = proxied_app(["127.0.0.1"], seen)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ((_, port),) = await nursery.start(app.serve, "127.0.0.1", 0)
            forwarded = [("X-Forwarded-For", "203.0.113.9")]
            async with open_websocket(f"ws://127.0.0.1:{port}/ws", headers=forwarded):
                pass
            nursery.cancel_scope.cancel()
    assert seen == [("203.0.113.9", 0)]


async def test_proxy_remote_address_survives_the_light_request_after_upgrade() -> None:
    """The proxy header sits past the 4 KiB of fields an upgraded request keeps."""
    seen: list[tuple[str, int] | None] = []
    app = proxied_app(["127.0.0.1"], seen)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            ((_, port),) = await nursery.start(app.serve, "127.0.0.1", 0)
            # After Host (about 19 bytes), 4000 + 60 bytes of fields leave less than the
            # 27 that X-Forwarded-For needs in the 4,096 an upgraded request keeps.
            fields = [
                ("X-Filler-a", "f" * 3990),
                ("X-Filler-b", "f" * 50),
                ("X-Forwarded-For", "203.0.113.10"),
            ]
            async with open_websocket(f"ws://127.0.0.1:{port}/ws", headers=fields):
                pass
            nursery.cancel_scope.cancel()
    assert seen == [("203.0.113.10", 0)]


async def get_over_unix(path: str, request: bytes) -> bytes:
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    return data


async def test_server_serve_unix_serves_and_removes_its_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    app = proxied_app(["unix"], [])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(app.serve_unix, path) == path
            reply = await get_over_unix(
                path,
                b"GET /who HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 198.51.100.7\r\n"
                b"connection: close\r\n\r\n",
            )
            nursery.cancel_scope.cancel()
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"('198.51.100.7', 0)")
    assert not await trio.Path(path).exists()


async def test_server_serve_unix_replaces_stale_socket_refuses_live_one(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays: what a killed server leaves behind
    app = proxied_app([], [])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve_unix, path)
            with pytest.raises(BindError, match="a server is answering there"):
                await App().serve_unix(path)
            nursery.cancel_scope.cancel()


def test_app_run_unix_refuses_workers() -> None:
    with pytest.raises(ValueError, match="Unix socket"):
        App().run("unix:/tmp/x.sock", workers=2)
