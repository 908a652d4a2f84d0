"""Tests of the opening handshake (RFC 6455 section 4) and of WebSocket URIs (section 3)."""

from __future__ import annotations

import base64

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate as WsPerMessageDeflate,
)
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri as ws_parse_uri

from rue_trio.exceptions import (
    HandshakeError,
    InvalidStatusError,
    InvalidURIError,
    NegotiationError,
)
from rue_trio.protocol._client_handshake import (
    WebSocketURI,
    check_response,
    client_request,
    generate_key,
    parse_uri,
)
from rue_trio.protocol._deflate import DeflateConfig, DeflateParams
from rue_trio.protocol._handshake import (
    GUID,
    UpgradeRequest,
    accept_key,
    accept_response,
    select_subprotocol,
    server_handshake,
    validate_upgrade_request,
)

Headers = list[tuple[bytes, bytes]]

# RFC 6455 section 1.3.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=12)


def request_headers(**overrides: bytes | None) -> Headers:
    """The headers of the RFC 6455 section 1.2 example, with some replaced or removed."""
    headers: dict[str, bytes | None] = {
        "host": b"server.example.com",
        "upgrade": b"websocket",
        "connection": b"Upgrade",
        "sec_websocket_key": RFC_KEY.encode(),
        "origin": b"http://example.com",
        "sec_websocket_protocol": b"chat, superchat",
        "sec_websocket_version": b"13",
    }
    headers.update(overrides)
    return [(name.replace("_", "-").encode(), value) for name, value in headers.items() if value]


def h11_request(data: bytes) -> h11.Request:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    return event


def h11_response(data: bytes) -> h11.InformationalResponse | h11.Response:
    connection = h11.Connection(h11.CLIENT)
    # A 101 is only valid in answer to a request that proposes the upgrade.
    upgrade = [("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "websocket")]
    connection.send(h11.Request(method="GET", target="/", headers=upgrade))
    connection.receive_data(data)
    event = connection.next_event()
    assert isinstance(event, h11.InformationalResponse | h11.Response)
    return event


def headers_of(event: h11.Request | h11.InformationalResponse | h11.Response) -> Headers:
    return [(name, value) for name, value in event.headers]


# --- keys (RFC 6455 sections 1.3, 4.1, 4.2.2) --------------------------------------


def test_server_accept_key_rfc_example() -> None:
    """RFC 6455 section 1.3: the example key and its accept value."""
    assert accept_key(RFC_KEY) == RFC_ACCEPT
    assert accept_key(RFC_KEY.encode()) == RFC_ACCEPT
    assert GUID == b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_client_generate_key_16_random_bytes() -> None:
    """RFC 6455 section 4.1: the key is 16 random bytes, base64-encoded, new each time."""
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


# --- server: request validation (RFC 6455 section 4.2.1) ---------------------------

# What the RFC's example request (section 1.2) validates to.
RFC_REQUEST = UpgradeRequest(
    key=RFC_KEY,
    host="server.example.com",
    origin="http://example.com",
    subprotocols=("chat", "superchat"),
    extensions=(),
)


def test_server_validate_rfc_example_accepted() -> None:
    """RFC 6455 section 1.2: the example request is valid."""
    assert validate_upgrade_request(b"GET", b"1.1", request_headers()) == RFC_REQUEST


def test_server_validate_optional_headers_absent() -> None:
    request = validate_upgrade_request(
        b"GET", b"1.1", request_headers(origin=None, sec_websocket_protocol=None)
    )
    assert request.origin is None
    assert request.subprotocols == ()


def test_server_validate_token_lists_case_insensitive() -> None:
    """RFC 6455 section 4.2.1: Upgrade and Connection hold their token among others,
    in any case, possibly over several headers."""
    headers = request_headers(upgrade=b"h2c, WebSocket", connection=b"keep-alive")
    headers.append((b"connection", b"foo,\tUPGRADE "))
    assert validate_upgrade_request(b"GET", b"1.1", headers) == RFC_REQUEST


@pytest.mark.parametrize("version", [b"1.2", b"2", b"2.0"])
def test_server_validate_later_http_accepted(version: bytes) -> None:
    """RFC 6455 section 4.2.1: HTTP/1.1 or higher."""
    assert validate_upgrade_request(b"GET", version, request_headers()) == RFC_REQUEST


def test_server_validate_subprotocols_over_headers() -> None:
    """RFC 6455 section 11.3.4: several headers are one list; empty elements are skipped."""
    headers = request_headers(sec_websocket_protocol=b"a, , b")
    headers.append((b"sec-websocket-protocol", b"c.v2"))
    assert validate_upgrade_request(b"GET", b"1.1", headers).subprotocols == ("a", "b", "c.v2")


def test_server_validate_extensions_kept_raw() -> None:
    headers = request_headers()
    headers += [
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
        (b"sec-websocket-extensions", b"x-foo"),
    ]
    request = validate_upgrade_request(b"GET", b"1.1", headers)
    assert request.extensions == ("permessage-deflate; client_max_window_bits", "x-foo")


def test_server_validate_post_405_with_allow() -> None:
    """RFC 6455 section 4.2.1: the method of the request MUST be GET."""
    with pytest.raises(HandshakeError) as info:
        validate_upgrade_request(b"POST", b"1.1", request_headers())
    assert info.value.status_code == 405
    assert info.value.headers == [(b"allow", b"GET")]


@pytest.mark.parametrize("version", [b"1.0", b"0.9", b"x", b""])
def test_server_validate_old_http_400(version: bytes) -> None:
    with pytest.raises(HandshakeError, match=r"HTTP/1\.1") as info:
        validate_upgrade_request(b"GET", version, request_headers())
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    ("overrides", "extra", "match"),
    [
        ({"host": None}, [], "missing Host"),
        ({}, [(b"host", b"other")], "repeated Host"),
        ({"upgrade": None}, [], "Upgrade"),
        ({"upgrade": b"h2c"}, [], "Upgrade"),
        ({"upgrade": b"websocketx"}, [], "Upgrade"),
        ({"connection": None}, [], "Connection"),
        ({"connection": b"keep-alive"}, [], "Connection"),
        ({"connection": b"upgrades"}, [], "Connection"),
        ({"sec_websocket_key": None}, [], "missing Sec-WebSocket-Key"),
        ({}, [(b"sec-websocket-key", RFC_KEY.encode())], "repeated Sec-WebSocket-Key"),
        ({"sec_websocket_key": b"short=="}, [], "invalid Sec-WebSocket-Key"),
        # 24 characters of base64, but 17 or 18 bytes.
        ({"sec_websocket_key": b"AAAAAAAAAAAAAAAAAAAAAAA="}, [], "invalid Sec-WebSocket-Key"),
        ({"sec_websocket_key": b"AAAAAAAAAAAAAAAAAAAAAAAA"}, [], "invalid Sec-WebSocket-Key"),
        ({"sec_websocket_key": b"!AAAAAAAAAAAAAAAAAAAAA=="}, [], "invalid Sec-WebSocket-Key"),
        ({"sec_websocket_key": b"AAAAAAAAAAAAAAAAAAAA=AA="}, [], "invalid Sec-WebSocket-Key"),
        ({}, [(b"sec-websocket-version", b"13")], "repeated Sec-WebSocket-Version"),
        ({}, [(b"origin", b"http://evil.example")], "repeated Origin"),
        ({"sec_websocket_protocol": b"chat, a b"}, [], "invalid Sec-WebSocket-Protocol"),
        ({"sec_websocket_protocol": b"chat/1"}, [], "invalid Sec-WebSocket-Protocol"),
    ],
)
def test_server_validate_bad_request_400(
    overrides: dict[str, bytes | None], extra: Headers, match: str
) -> None:
    """RFC 6455 section 4.2.1: a request that breaks a requirement gets 400."""
    with pytest.raises(HandshakeError, match=match) as info:
        validate_upgrade_request(b"GET", b"1.1", request_headers(**overrides) + extra)
    assert info.value.status_code == 400


@pytest.mark.parametrize("version", [None, b"8", b"13, 8", b"14", b" 13x"])
def test_server_validate_version_426(version: bytes | None) -> None:
    """RFC 6455 section 4.4: an unsupported version gets 426 and the versions we speak."""
    with pytest.raises(HandshakeError) as info:
        validate_upgrade_request(b"GET", b"1.1", request_headers(sec_websocket_version=version))
    assert info.value.status_code == 426
    assert info.value.headers == [(b"sec-websocket-version", b"13")]


# --- server: subprotocol and response (RFC 6455 section 4.2.2) --------------------


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (["chat", "superchat"], ["superchat", "chat"], "superchat"),
        (["chat", "superchat"], ["chat", "superchat"], "chat"),
        (["chat"], ["superchat"], None),
        ([], ["chat"], None),
        (["chat"], [], None),
    ],
)
def test_server_select_subprotocol_server_preference(
    offered: list[str], supported: list[str], chosen: str | None
) -> None:
    assert select_subprotocol(offered, supported) == chosen


def test_server_accept_response_rfc_example_bytes() -> None:
    """RFC 6455 section 1.3: the example response, byte for byte."""
    request = validate_upgrade_request(b"GET", b"1.1", request_headers())
    assert accept_response(request, subprotocol="chat") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"\r\n"
    )


def test_server_accept_response_h11_parses() -> None:
    request = validate_upgrade_request(b"GET", b"1.1", request_headers())
    response = accept_response(
        request,
        extensions="permessage-deflate; server_max_window_bits=12",
        extra_headers=[(b"x-server", b"rue_trio\tv1"), (b"set-cookie", b"a=b")],
    )
    event = h11_response(response)
    assert event.status_code == 101
    assert headers_of(event) == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", RFC_ACCEPT.encode()),
        (b"sec-websocket-extensions", b"permessage-deflate; server_max_window_bits=12"),
        (b"x-server", b"rue_trio\tv1"),
        (b"set-cookie", b"a=b"),
    ]


def test_server_accept_response_unoffered_subprotocol_raises() -> None:
    """RFC 6455 section 4.2.2: the server picks one of the client's subprotocols."""
    request = validate_upgrade_request(b"GET", b"1.1", request_headers())
    with pytest.raises(ValueError, match="did not offer"):
        accept_response(request, subprotocol="other")


@pytest.mark.parametrize(
    ("extensions", "extra"),
    [
        ("permessage-deflate\r\nx-evil: 1", []),
        (None, [(b"x-ok", b"a\r\nx-evil: 1")]),
        (None, [(b"x-ok", b"a\x00")]),
        (None, [(b"bad name", b"a")]),
        (None, [(b"", b"a")]),
    ],
)
def test_server_accept_response_header_injection_raises(
    extensions: str | None, extra: Headers
) -> None:
    request = validate_upgrade_request(b"GET", b"1.1", request_headers())
    with pytest.raises(ValueError, match="invalid"):
        accept_response(request, extensions=extensions, extra_headers=extra)


def test_server_handshake_negotiates_everything() -> None:
    headers = request_headers()
    headers.append((b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"))
    result = server_handshake(
        b"GET",
        b"1.1",
        headers,
        subprotocols=["superchat"],
        deflate=DeflateConfig(client_max_window_bits=10),
        extra_headers=[(b"x-a", b"1")],
    )
    assert result.subprotocol == "superchat"
    assert result.deflate_params == DeflateParams(client_max_window_bits=10)
    assert result.request.key == RFC_KEY
    event = h11_response(result.response)
    assert event.status_code == 101
    assert (b"sec-websocket-protocol", b"superchat") in headers_of(event)
    assert (
        b"sec-websocket-extensions",
        b"permessage-deflate; client_max_window_bits=10",
    ) in headers_of(event)
    assert (b"x-a", b"1") in headers_of(event)


def test_server_handshake_declines_what_it_cannot() -> None:
    """No compression configured, no common subprotocol, no acceptable offer: a plain
    101 without Sec-WebSocket-Protocol or Sec-WebSocket-Extensions."""
    headers = request_headers()
    headers.append((b"sec-websocket-extensions", b"permessage-deflate"))
    plain = server_handshake(b"GET", b"1.1", headers, subprotocols=["v2"])
    assert (plain.subprotocol, plain.deflate_params) == (None, None)
    assert b"Sec-WebSocket-Protocol" not in plain.response
    assert b"Sec-WebSocket-Extensions" not in plain.response
    headers[-1] = (b"sec-websocket-extensions", b"permessage-deflate; foo")
    declined = server_handshake(b"GET", b"1.1", headers, deflate=DeflateConfig())
    assert declined.deflate_params is None
    no_offer = server_handshake(b"GET", b"1.1", request_headers(), deflate=DeflateConfig())
    assert no_offer.deflate_params is None
    assert no_offer.response == plain.response


def test_server_handshake_bad_request_raises() -> None:
    with pytest.raises(HandshakeError) as info:
        server_handshake(b"GET", b"1.1", request_headers(sec_websocket_version=b"7"))
    assert info.value.status_code == 426


# --- client: request (RFC 6455 section 4.1) ----------------------------------------


def test_client_request_rfc_example_bytes() -> None:
    """RFC 6455 section 1.2: the example request (Origin and subprotocols included)."""
    assert client_request(
        "server.example.com",
        80,
        "/chat",
        secure=False,
        key=RFC_KEY,
        subprotocols=["chat", "superchat"],
        origin="http://example.com",
    ) == (
        b"GET /chat HTTP/1.1\r\n"
        b"Host: server.example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Origin: http://example.com\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    ("host", "port", "secure", "expected"),
    [
        ("example.com", 80, False, b"example.com"),
        ("example.com", 443, True, b"example.com"),
        ("example.com", 443, False, b"example.com:443"),
        ("example.com", 80, True, b"example.com:80"),
        ("example.com", 8080, False, b"example.com:8080"),
        ("127.0.0.1", 8000, False, b"127.0.0.1:8000"),
        ("::1", 80, False, b"[::1]"),
        ("::1", 8443, True, b"[::1]:8443"),
        ("[::1]", 9000, False, b"[::1]:9000"),
    ],
)
def test_client_request_host_header(host: str, port: int, secure: bool, expected: bytes) -> None:
    """RFC 6455 section 4.1: Host holds the port unless it is the default; RFC 3986
    section 3.2.2: an IPv6 literal is bracketed."""
    event = h11_request(client_request(host, port, "/", secure=secure, key=RFC_KEY))
    assert (b"host", expected) in headers_of(event)


def test_client_request_h11_parses_and_server_accepts() -> None:
    """Our request, read by h11, passes our server validation, deflate offer included."""
    data = client_request(
        "example.com",
        8080,
        "/ws/room?x=1",
        secure=False,
        key=RFC_KEY,
        subprotocols=["v1.chat"],
        deflate=DeflateConfig(server_no_context_takeover=True),
        extra_headers=[("Authorization", "Bearer abc"), ("X-Name", "é")],
    )
    event = h11_request(data)
    assert (event.method, event.target, event.http_version) == (b"GET", b"/ws/room?x=1", b"1.1")
    assert (b"x-name", "é".encode()) in headers_of(event)
    result = server_handshake(
        event.method,
        event.http_version,
        headers_of(event),
        subprotocols=["v1.chat"],
        deflate=DeflateConfig(),
    )
    assert result.subprotocol == "v1.chat"
    assert result.deflate_params == DeflateParams(server_no_context_takeover=True)
    assert result.request.host == "example.com:8080"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"host": "exa mple.com"},
        {"host": "example.com\r\nx: y"},
        {"host": "exämple.com"},
        {"resource": "chat"},
        {"resource": "/a b"},
        {"resource": "/a\r\n"},
        {"resource": "/é"},
        {"key": "abc\r\n"},
        {"subprotocols": ["a b"]},
        {"subprotocols": ["chat", ""]},
        {"origin": "http://x\r\nevil: 1"},
        {"extra_headers": [("X-A", "1\n2")]},
        {"extra_headers": [("X A", "1")]},
        {"extra_headers": [("Ä", "1")]},
    ],
)
def test_client_request_invalid_input_raises(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "host": "example.com",
        "port": 80,
        "resource": "/",
        "secure": False,
        "key": RFC_KEY,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError):
        client_request(**arguments)  # type: ignore[arg-type]


# --- client: response checks (RFC 6455 section 4.1) --------------------------------


def response_headers(
    overrides: dict[str, bytes | None] | None = None, *, key: str = RFC_KEY
) -> Headers:
    headers: dict[str, bytes | None] = {
        "upgrade": b"websocket",
        "connection": b"Upgrade",
        "sec_websocket_accept": accept_key(key).encode(),
    }
    headers.update(overrides or {})
    return [(name.replace("_", "-").encode(), value) for name, value in headers.items() if value]


def test_client_check_response_plain_accepted() -> None:
    result = check_response(101, response_headers(), key=RFC_KEY, subprotocols=[], deflate=None)
    assert (result.subprotocol, result.deflate_params) == (None, None)


def test_client_check_response_negotiated_accepted() -> None:
    headers = response_headers(
        {
            "upgrade": b"WebSocket",
            "connection": b"keep-alive, upgrade",
            "sec_websocket_protocol": b"superchat",
            "sec_websocket_extensions": b"permessage-deflate; server_max_window_bits=10",
        }
    )
    result = check_response(
        101, headers, key=RFC_KEY, subprotocols=["chat", "superchat"], deflate=DeflateConfig()
    )
    assert result.subprotocol == "superchat"
    assert result.deflate_params == DeflateParams(server_max_window_bits=10)


def test_client_check_response_not_101_invalid_status() -> None:
    """RFC 6455 section 4.1: any status but 101 means the handshake failed."""
    with pytest.raises(InvalidStatusError) as info:
        check_response(
            403, [(b"content-length", b"0")], key=RFC_KEY, subprotocols=[], deflate=None
        )
    assert info.value.status_code == 403
    assert info.value.headers == [(b"content-length", b"0")]
    assert info.value.body == b""


@pytest.mark.parametrize(
    ("overrides", "extra", "match"),
    [
        ({"upgrade": None}, [], "Upgrade"),
        ({"upgrade": b"websocket, h2c"}, [], "Upgrade"),
        ({"connection": None}, [], "Connection"),
        ({"connection": b"close"}, [], "Connection"),
        ({"sec_websocket_accept": None}, [], "missing Sec-WebSocket-Accept"),
        ({"sec_websocket_accept": b"AAAA"}, [], "wrong Sec-WebSocket-Accept"),
        ({}, [(b"sec-websocket-accept", RFC_ACCEPT.encode())], "repeated Sec-WebSocket-Accept"),
    ],
)
def test_client_check_response_invalid_handshake_error(
    overrides: dict[str, bytes | None], extra: Headers, match: str
) -> None:
    """RFC 6455 section 4.1: the client fails the connection on these responses."""
    with pytest.raises(HandshakeError, match=match) as info:
        check_response(
            101,
            response_headers(overrides) + extra,
            key=RFC_KEY,
            subprotocols=["chat"],
            deflate=DeflateConfig(),
        )
    assert not isinstance(info.value, NegotiationError)


def test_client_check_response_accept_for_other_key() -> None:
    with pytest.raises(HandshakeError, match="wrong"):
        check_response(
            101,
            response_headers(key=generate_key()),
            key=RFC_KEY,
            subprotocols=[],
            deflate=None,
        )


@pytest.mark.parametrize(
    ("subprotocols", "deflate", "extra", "match"),
    [
        ([], None, [(b"sec-websocket-protocol", b"chat")], "did not offer"),
        (["chat"], None, [(b"sec-websocket-protocol", b"superchat")], "did not offer"),
        (["chat", "v2"], None, [(b"sec-websocket-protocol", b"chat, v2")], "did not offer"),
        (
            ["chat"],
            None,
            [(b"sec-websocket-protocol", b"chat"), (b"sec-websocket-protocol", b"chat")],
            "repeated",
        ),
        ([], None, [(b"sec-websocket-extensions", b"permessage-deflate")], "did not offer"),
        (
            [],
            DeflateConfig(),
            [(b"sec-websocket-extensions", b"permessage-deflate; foo")],
            "unknown parameter",
        ),
        ([], DeflateConfig(), [(b"sec-websocket-extensions", b"x-foo")], "did not offer"),
    ],
)
def test_client_check_response_bad_negotiation_raises(
    subprotocols: list[str], deflate: DeflateConfig | None, extra: Headers, match: str
) -> None:
    """RFC 6455 section 4.1: a subprotocol or an extension we did not offer fails."""
    with pytest.raises(NegotiationError, match=match):
        check_response(
            101,
            response_headers() + extra,
            key=RFC_KEY,
            subprotocols=subprotocols,
            deflate=deflate,
        )


@given(
    offered=st.lists(tokens, max_size=4, unique=True),
    supported=st.lists(tokens, max_size=4, unique=True),
    client_deflate=st.none() | st.just(DeflateConfig()),
    server_deflate=st.none() | st.just(DeflateConfig(server_max_window_bits=12)),
)
def test_client_server_handshake_roundtrip(
    offered: list[str],
    supported: list[str],
    client_deflate: DeflateConfig | None,
    server_deflate: DeflateConfig | None,
) -> None:
    """Client request -> h11 -> server handshake -> h11 -> client check: both sides
    agree on the subprotocol and the compression parameters."""
    key = generate_key()
    request = h11_request(
        client_request(
            "localhost",
            8000,
            "/",
            secure=False,
            key=key,
            subprotocols=offered,
            deflate=client_deflate,
        )
    )
    server = server_handshake(
        request.method,
        request.http_version,
        headers_of(request),
        subprotocols=supported,
        deflate=server_deflate,
    )
    response = h11_response(server.response)
    assert response.status_code == 101
    client = check_response(
        response.status_code,
        headers_of(response),
        key=key,
        subprotocols=offered,
        deflate=client_deflate,
    )
    assert client.subprotocol == server.subprotocol == select_subprotocol(offered, supported)
    assert client.deflate_params == server.deflate_params
    assert (server.deflate_params is None) == (client_deflate is None or server_deflate is None)


# --- interop with the websockets library's sans-I/O handshake ----------------------


def test_server_handshake_websockets_client_accepts() -> None:
    """websockets' client request passes our server, and our response its checks."""
    client = ClientProtocol(
        ws_parse_uri("ws://localhost:8765/chat?room=1"),
        origin=None,
        extensions=[ClientPerMessageDeflateFactory()],
        subprotocols=[Subprotocol("chat"), Subprotocol("superchat")],
    )
    client.send_request(client.connect())
    request = h11_request(b"".join(client.data_to_send()))
    server = server_handshake(
        request.method,
        request.http_version,
        headers_of(request),
        subprotocols=["superchat"],
        deflate=DeflateConfig(server_max_window_bits=11, client_max_window_bits=11),
    )
    client.receive_data(server.response)
    [response] = client.events_received()
    assert isinstance(response, WsResponse)
    assert response.status_code == 101
    assert client.handshake_exc is None
    assert client.state is OPEN
    assert client.subprotocol == "superchat"
    [extension] = client.extensions
    assert isinstance(extension, WsPerMessageDeflate)
    assert extension.remote_max_window_bits == 11
    assert extension.local_max_window_bits == 11
    assert server.deflate_params == DeflateParams(
        server_max_window_bits=11, client_max_window_bits=11
    )


def test_client_request_websockets_server_accepts() -> None:
    """Our request passes websockets' server, and its response passes our checks."""
    server = ServerProtocol(
        extensions=[ServerPerMessageDeflateFactory(server_max_window_bits=12)],
        subprotocols=[Subprotocol("superchat"), Subprotocol("chat")],
    )
    key = generate_key()
    uri = parse_uri("ws://localhost:8765/chat?room=1")
    server.receive_data(
        client_request(
            uri.host,
            uri.port,
            uri.resource,
            secure=uri.secure,
            key=key,
            subprotocols=["chat", "superchat"],
            deflate=DeflateConfig(client_no_context_takeover=True),
            origin="http://localhost",
        )
    )
    [request] = server.events_received()
    assert isinstance(request, WsRequest)
    assert request.path == "/chat?room=1"
    server.send_response(server.accept(request))
    response = h11_response(b"".join(server.data_to_send()))
    assert response.status_code == 101
    result = check_response(
        response.status_code,
        headers_of(response),
        key=key,
        subprotocols=["chat", "superchat"],
        deflate=DeflateConfig(client_no_context_takeover=True),
    )
    # websockets, too, follows the server's order of preference.
    assert result.subprotocol == "superchat"
    assert result.deflate_params == DeflateParams(
        client_no_context_takeover=True, server_max_window_bits=12
    )


# --- URIs (RFC 6455 section 3) -----------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("ws://example.com", WebSocketURI(False, "example.com", 80, "/")),
        ("wss://example.com", WebSocketURI(True, "example.com", 443, "/")),
        ("WS://Example.COM:8080/", WebSocketURI(False, "example.com", 8080, "/")),
        ("wss://example.com:443/a/b?c=d&e", WebSocketURI(True, "example.com", 443, "/a/b?c=d&e")),
        ("ws://example.com/?", WebSocketURI(False, "example.com", 80, "/")),
        ("ws://example.com?x=1", WebSocketURI(False, "example.com", 80, "/?x=1")),
        ("ws://[::1]:9000/ws", WebSocketURI(False, "::1", 9000, "/ws")),
        ("ws://127.0.0.1/ws/room", WebSocketURI(False, "127.0.0.1", 80, "/ws/room")),
        ("ws://h/a b?q=é", WebSocketURI(False, "h", 80, "/a%20b?q=%C3%A9")),
        ("ws://h/a%20b/%zz?x=%41", WebSocketURI(False, "h", 80, "/a%20b/%zz?x=%41")),
        ("ws://h/é", WebSocketURI(False, "h", 80, "/%C3%A9")),
        ("ws://bücher.example/", WebSocketURI(False, "xn--bcher-kva.example", 80, "/")),
    ],
)
def test_client_parse_uri_valid(uri: str, expected: WebSocketURI) -> None:
    """RFC 6455 section 3: ws and wss URIs, default ports 80 and 443."""
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("http://example.com/", "not a ws"),
        ("https://example.com/", "not a ws"),
        ("example.com", "not a ws"),
        ("ws://example.com/#frag", "fragment"),
        ("ws://example.com/#", "fragment"),
        ("ws://user:pass@example.com/", "user information"),
        ("ws://@example.com/", "user information"),
        ("ws:///path", "missing host"),
        ("ws://:80/", "missing host"),
        ("ws://example.com:http/", "invalid URI"),
        ("ws://example.com:70000/", "invalid URI"),
        ("ws://[::1/", "invalid URI"),
        ("ws://" + "a" * 64 + "é.com/", "invalid host"),
    ],
)
def test_client_parse_uri_invalid_raises(uri: str, match: str) -> None:
    """RFC 6455 section 3: no fragments, only ws and wss."""
    with pytest.raises(InvalidURIError, match=match):
        parse_uri(uri)


@given(
    path=st.text(max_size=30).filter(lambda text: "#" not in text),
    query=st.text(max_size=20).filter(lambda text: "#" not in text),
)
def test_client_parse_uri_any_path_gives_valid_request(path: str, query: str) -> None:
    """Whatever the path and query, the resource is a valid request target for h11."""
    try:
        uri = parse_uri(f"ws://example.com/{path}?{query}")
    except InvalidURIError:
        return
    assert uri.resource.startswith("/")
    event = h11_request(
        client_request(uri.host, uri.port, uri.resource, secure=False, key=RFC_KEY)
    )
    assert event.target == uri.resource.encode()
