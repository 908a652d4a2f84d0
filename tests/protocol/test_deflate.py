"""Tests of permessage-deflate (RFC 7692): negotiation and the codec."""

from __future__ import annotations

import os
import random
import tracemalloc
import zlib
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import NegotiationError as WsNegotiationError
from websockets.exceptions import PayloadTooBig
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate as WsPerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension

from rue_trio.exceptions import MessageTooBigError, NegotiationError, ProtocolError
from rue_trio.protocol._deflate import (
    DeflateConfig,
    DeflateParams,
    client_accept,
    client_offer,
    server_negotiate,
)
from rue_trio.protocol._deflate_codec import PerMessageDeflate, compress_message

window_bits = st.integers(min_value=8, max_value=15)
optional_bits = st.none() | window_bits
configs = st.builds(
    DeflateConfig,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=optional_bits,
    client_max_window_bits=optional_bits,
    compress_level=st.integers(min_value=0, max_value=9),
    memory_level=st.integers(min_value=1, max_value=9),
)
params_strategy = st.builds(
    DeflateParams,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=window_bits,
    client_max_window_bits=window_bits,
)
# Compressible data: random runs of a small alphabet plus random bytes.
payloads = st.lists(
    st.binary(max_size=64) | st.sampled_from([b"hello ", b"world ", b"\x00" * 300, b"ab" * 50]),
    max_size=20,
).map(b"".join)


DEFAULT = DeflateConfig()


def pair(
    params: DeflateParams, config: DeflateConfig = DEFAULT
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    return (
        PerMessageDeflate(params, is_server=False, config=config),
        PerMessageDeflate(params, is_server=True, config=config),
    )


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"compress_level": -1},
        {"compress_level": 10},
        {"memory_level": 0},
        {"memory_level": 10},
        {"min_size": -1},
    ],
)
def test_config_create_invalid_raises(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeflateConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 7},
        {"client_max_window_bits": 16},
    ],
)
def test_params_create_invalid_raises(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeflateParams(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_fast_and_bounded() -> None:
    config = DeflateConfig()
    assert (config.compress_level, config.memory_level, config.min_size) == (1, 8, 32)
    assert config.server_max_window_bits is None
    assert config.client_max_window_bits is None


# --- server negotiation (RFC 7692 sections 5 and 7.1) -------------------------------


@pytest.mark.parametrize(
    ("offer", "config", "response", "params"),
    [
        ("permessage-deflate", DeflateConfig(), "permessage-deflate", DeflateParams()),
        (
            "permessage-deflate; server_no_context_takeover",
            DeflateConfig(),
            "permessage-deflate; server_no_context_takeover",
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            "permessage-deflate",
            DeflateConfig(server_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover",
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            DeflateConfig(),
            "permessage-deflate; client_no_context_takeover",
            DeflateParams(client_no_context_takeover=True),
        ),
        (
            "permessage-deflate",
            DeflateConfig(client_no_context_takeover=True),
            "permessage-deflate; client_no_context_takeover",
            DeflateParams(client_no_context_takeover=True),
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            DeflateConfig(),
            "permessage-deflate; server_max_window_bits=10",
            DeflateParams(server_max_window_bits=10),
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            DeflateConfig(server_max_window_bits=9),
            "permessage-deflate; server_max_window_bits=9",
            DeflateParams(server_max_window_bits=9),
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            DeflateConfig(server_max_window_bits=12),
            "permessage-deflate; server_max_window_bits=10",
            DeflateParams(server_max_window_bits=10),
        ),
        (
            "permessage-deflate",
            DeflateConfig(server_max_window_bits=11),
            "permessage-deflate; server_max_window_bits=11",
            DeflateParams(server_max_window_bits=11),
        ),
        (
            "permessage-deflate; server_max_window_bits=8",
            DeflateConfig(),
            "permessage-deflate; server_max_window_bits=8",
            DeflateParams(server_max_window_bits=8),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            DeflateConfig(),
            "permessage-deflate",
            DeflateParams(),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            DeflateConfig(client_max_window_bits=10),
            "permessage-deflate; client_max_window_bits=10",
            DeflateParams(client_max_window_bits=10),
        ),
        (
            "permessage-deflate; client_max_window_bits=12",
            DeflateConfig(),
            "permessage-deflate; client_max_window_bits=12",
            DeflateParams(client_max_window_bits=12),
        ),
        (
            "permessage-deflate; client_max_window_bits=12",
            DeflateConfig(client_max_window_bits=10),
            "permessage-deflate; client_max_window_bits=10",
            DeflateParams(client_max_window_bits=10),
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            DeflateConfig(client_max_window_bits=10),
            "permessage-deflate; client_max_window_bits=9",
            DeflateParams(client_max_window_bits=9),
        ),
        (
            # Section 7.1.2.2: without the parameter in the offer, none in the response,
            # and the client may use any window: we decompress with 15 bits.
            "permessage-deflate",
            DeflateConfig(client_max_window_bits=10),
            "permessage-deflate",
            DeflateParams(),
        ),
        (
            'permessage-deflate; server_max_window_bits="10"; client_max_window_bits="9"',
            DeflateConfig(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            DeflateParams(server_max_window_bits=10, client_max_window_bits=9),
        ),
        (
            "Permessage-Deflate; Server_No_Context_Takeover",
            DeflateConfig(),
            "permessage-deflate; server_no_context_takeover",
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            "permessage-deflate ;client_no_context_takeover;\tserver_no_context_takeover",
            DeflateConfig(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True),
        ),
    ],
)
def test_server_negotiate_offer_accepted(
    offer: str, config: DeflateConfig, response: str, params: DeflateParams
) -> None:
    """RFC 7692 sections 7.1.1.1 to 7.1.2.2: each parameter, offered and configured."""
    assert server_negotiate([offer], config) == (response, params)


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=abc",
    ],
)
def test_server_negotiate_invalid_offer_declined(offer: str) -> None:
    """RFC 7692 section 5.1: an invalid offer is declined, and the next one is taken."""
    assert server_negotiate([offer], DeflateConfig()) is None
    fallback = "permessage-deflate; client_no_context_takeover"
    assert server_negotiate([f"{offer}, {fallback}"], DeflateConfig()) == (
        fallback,
        DeflateParams(client_no_context_takeover=True),
    )
    assert server_negotiate([offer, fallback], DeflateConfig()) is not None


def test_server_negotiate_quoted_escape_unescaped() -> None:
    """RFC 6455 section 9.1: a quoted value is unescaped, then must be a token."""
    result = server_negotiate(
        ['permessage-deflate; server_max_window_bits="1\\1"'], DeflateConfig()
    )
    assert result is not None
    assert result[1].server_max_window_bits == 11


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate;",
        "permessage-deflate; =10",
        "permessage-deflate server_no_context_takeover",
        'permessage-deflate; server_max_window_bits="10',
        'permessage-deflate; x="a b"',
        "permessage-deflate, @",
        "(comment)",
    ],
)
def test_server_negotiate_malformed_header_declined(header: str) -> None:
    """A header that breaks the grammar of RFC 6455 section 9.1 is declined whole."""
    assert server_negotiate([header, "permessage-deflate"], DeflateConfig()) is None


def test_server_negotiate_other_extensions_ignored() -> None:
    """RFC 6455 section 9.1: unknown extensions are declined; the PMCE offer is taken."""
    header = "x-webkit-deflate-frame, foo; bar=1, permessage-deflate; client_max_window_bits"
    assert server_negotiate([header], DeflateConfig()) == ("permessage-deflate", DeflateParams())
    assert server_negotiate(["x-webkit-deflate-frame", "foo"], DeflateConfig()) is None


def test_server_negotiate_empty_list_elements_skipped() -> None:
    """RFC 7230 section 7: empty list elements are ignored."""
    accepted = ("permessage-deflate", DeflateParams())
    assert server_negotiate([" , ,permessage-deflate , "], DeflateConfig()) == accepted
    assert server_negotiate(["", "permessage-deflate"], DeflateConfig()) == accepted
    assert server_negotiate([",", "", " "], DeflateConfig()) is None


def test_server_negotiate_first_acceptable_offer_wins() -> None:
    """RFC 7692 section 5: offers are in the client's order of preference."""
    header = (
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits, permessage-deflate"
    )
    assert server_negotiate([header], DeflateConfig()) == (
        "permessage-deflate; server_max_window_bits=10",
        DeflateParams(server_max_window_bits=10),
    )


def test_server_negotiate_no_header_declined() -> None:
    assert server_negotiate([], DeflateConfig()) is None


# --- client offer and response checks (RFC 7692 sections 5.1 and 7.1) --------------


@pytest.mark.parametrize(
    ("config", "offer"),
    [
        (DeflateConfig(), "permessage-deflate; client_max_window_bits"),
        (
            DeflateConfig(client_max_window_bits=10),
            "permessage-deflate; client_max_window_bits=10",
        ),
        (
            DeflateConfig(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=12,
            ),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=12; client_max_window_bits",
        ),
    ],
)
def test_client_offer_config_rendered(config: DeflateConfig, offer: str) -> None:
    """RFC 7692 section 7.1.2.2: client_max_window_bits is offered bare by default."""
    assert client_offer(config) == offer


@pytest.mark.parametrize(
    ("config", "response", "params"),
    [
        (DeflateConfig(), "permessage-deflate", DeflateParams()),
        (
            DeflateConfig(),
            "permessage-deflate; server_no_context_takeover",
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            DeflateConfig(server_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover",
            DeflateParams(server_no_context_takeover=True),
        ),
        (
            DeflateConfig(),
            "permessage-deflate; client_no_context_takeover",
            DeflateParams(client_no_context_takeover=True),
        ),
        (
            # Section 7.1.1.2: having offered it, we keep to it even when not echoed.
            DeflateConfig(client_no_context_takeover=True),
            "permessage-deflate",
            DeflateParams(client_no_context_takeover=True),
        ),
        (
            DeflateConfig(),
            "permessage-deflate; server_max_window_bits=9",
            DeflateParams(server_max_window_bits=9),
        ),
        (
            DeflateConfig(server_max_window_bits=12),
            "permessage-deflate; server_max_window_bits=12",
            DeflateParams(server_max_window_bits=12),
        ),
        (
            DeflateConfig(server_max_window_bits=12),
            "permessage-deflate; server_max_window_bits=8",
            DeflateParams(server_max_window_bits=8),
        ),
        (
            DeflateConfig(),
            "permessage-deflate; client_max_window_bits=8",
            DeflateParams(client_max_window_bits=8),
        ),
        (
            DeflateConfig(client_max_window_bits=11),
            "permessage-deflate",
            DeflateParams(client_max_window_bits=11),
        ),
        (
            DeflateConfig(client_max_window_bits=11),
            "permessage-deflate; client_max_window_bits=10",
            DeflateParams(client_max_window_bits=10),
        ),
        (
            DeflateConfig(client_max_window_bits=11),
            'permessage-deflate; client_max_window_bits="11"',
            DeflateParams(client_max_window_bits=11),
        ),
    ],
)
def test_client_accept_valid_response_params(
    config: DeflateConfig, response: str, params: DeflateParams
) -> None:
    """RFC 7692 sections 7.1.1.1 to 7.1.2.2, seen from the client."""
    assert client_accept([response], config) == params


@pytest.mark.parametrize("headers", [[], [""], [" , "]])
def test_client_accept_no_extension_none(headers: list[str]) -> None:
    assert client_accept(headers, DeflateConfig()) is None


@pytest.mark.parametrize(
    ("config", "headers", "match"),
    [
        (DeflateConfig(), ["x-webkit-deflate-frame"], "did not offer"),
        (DeflateConfig(), ["permessage-deflate, foo"], "did not offer"),
        (DeflateConfig(), ["permessage-deflate, permessage-deflate"], "twice"),
        (DeflateConfig(), ["permessage-deflate", "permessage-deflate"], "twice"),
        (DeflateConfig(), ["permessage-deflate; foo"], "unknown parameter"),
        (
            DeflateConfig(),
            ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            "duplicate",
        ),
        (DeflateConfig(), ["permessage-deflate; client_no_context_takeover=1"], "no value"),
        (DeflateConfig(), ["permessage-deflate; server_max_window_bits=16"], "invalid value"),
        (DeflateConfig(), ["permessage-deflate; server_max_window_bits"], "invalid value"),
        # Section 7.1.2.2: a response's client_max_window_bits must have a value.
        (DeflateConfig(), ["permessage-deflate; client_max_window_bits"], "invalid value"),
        (DeflateConfig(), ["permessage-deflate; client_max_window_bits=7"], "invalid value"),
        (DeflateConfig(), ["permessage-deflate;;"], "invalid Sec-WebSocket-Extensions"),
        (
            DeflateConfig(server_no_context_takeover=True),
            ["permessage-deflate"],
            "server_no_context_takeover",
        ),
        (
            DeflateConfig(server_max_window_bits=10),
            ["permessage-deflate"],
            "did not accept server_max_window_bits",
        ),
        (
            DeflateConfig(server_max_window_bits=10),
            ["permessage-deflate; server_max_window_bits=11"],
            "larger",
        ),
        (
            DeflateConfig(client_max_window_bits=10),
            ["permessage-deflate; client_max_window_bits=11"],
            "larger",
        ),
    ],
)
def test_client_accept_invalid_response_raises(
    config: DeflateConfig, headers: list[str], match: str
) -> None:
    """RFC 7692 section 5.1: the client fails the connection on an invalid response."""
    with pytest.raises(NegotiationError, match=match):
        client_accept(headers, config)


@given(client=configs, server=configs)
def test_client_server_negotiate_roundtrip_agrees(
    client: DeflateConfig, server: DeflateConfig
) -> None:
    """Whatever both sides configure, the server's answer is one the client accepts, and
    both end up with the same parameters, which honour both configurations."""
    result = server_negotiate([client_offer(client)], server)
    assert result is not None
    response, server_params = result
    assert client_accept([response], client) == server_params
    for side in (client, server):
        assert server_params.server_no_context_takeover >= side.server_no_context_takeover
        assert server_params.client_no_context_takeover >= side.client_no_context_takeover
        if side.server_max_window_bits is not None:
            assert server_params.server_max_window_bits <= side.server_max_window_bits
    if client.client_max_window_bits is not None:
        assert server_params.client_max_window_bits <= client.client_max_window_bits
    if server.client_max_window_bits is not None:
        assert server_params.client_max_window_bits <= server.client_max_window_bits


@pytest.mark.parametrize(
    "ws_client",
    [
        ClientPerMessageDeflateFactory(),
        ClientPerMessageDeflateFactory(client_max_window_bits=None),
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=10,
            client_max_window_bits=12,
        ),
    ],
)
@pytest.mark.parametrize(
    "config",
    [
        DeflateConfig(),
        DeflateConfig(server_max_window_bits=12, client_max_window_bits=12),
        DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True),
    ],
)
def test_server_negotiate_websockets_client_accepts(
    ws_client: ClientPerMessageDeflateFactory, config: DeflateConfig
) -> None:
    """Interop: websockets' client offer, our answer, websockets' check."""
    offer = build_extension([(ws_client.name, ws_client.get_request_params())])
    result = server_negotiate([offer], config)
    assert result is not None
    response, params = result
    [(name, response_params)] = parse_extension(response)
    assert name == "permessage-deflate"
    extension = ws_client.process_response_params(response_params, [])
    assert isinstance(extension, WsPerMessageDeflate)
    assert extension.remote_no_context_takeover == params.server_no_context_takeover
    assert extension.local_no_context_takeover == params.client_no_context_takeover
    assert extension.remote_max_window_bits == params.server_max_window_bits
    assert extension.local_max_window_bits == params.client_max_window_bits


@pytest.mark.parametrize(
    "config",
    [
        DeflateConfig(),
        DeflateConfig(client_max_window_bits=10, server_max_window_bits=11),
        DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True),
    ],
)
@pytest.mark.parametrize(
    "ws_server",
    [
        ServerPerMessageDeflateFactory(),
        ServerPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=12),
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True
        ),
    ],
)
def test_client_accept_websockets_server_answer(
    config: DeflateConfig, ws_server: ServerPerMessageDeflateFactory
) -> None:
    """Interop: our offer, websockets' answer, our check."""
    [(_, offer_params)] = parse_extension(client_offer(config))
    response_params, extension = ws_server.process_request_params(offer_params, [])
    assert isinstance(extension, WsPerMessageDeflate)
    response = build_extension([(ws_server.name, response_params)])
    params = client_accept([response], config)
    assert params is not None
    assert params.server_no_context_takeover == extension.local_no_context_takeover
    assert params.client_no_context_takeover == extension.remote_no_context_takeover
    assert params.server_max_window_bits == extension.local_max_window_bits
    assert params.client_max_window_bits == extension.remote_max_window_bits


def test_server_negotiate_websockets_rejects_window_8_we_accept() -> None:
    """websockets refuses a server window of 8 (zlib limitation); we accept it, since
    compressing with 9 bits stays within 256-byte distances (see the codec tests)."""
    ws_server = ServerPerMessageDeflateFactory()
    with pytest.raises(WsNegotiationError):
        ws_server.process_request_params([("server_max_window_bits", "8")], [])
    assert server_negotiate(["permessage-deflate; server_max_window_bits=8"], DeflateConfig()) == (
        "permessage-deflate; server_max_window_bits=8",
        DeflateParams(server_max_window_bits=8),
    )


# --- the codec (RFC 7692 section 7.2) -----------------------------------------------


def test_client_decompress_rfc_hello_one_block() -> None:
    """RFC 7692 section 7.2.3.1: "Hello" compressed in one DEFLATE block."""
    _, server = pair(DeflateParams())
    payload = bytes.fromhex("f248cdc9c90700")
    assert server.compress(b"Hello") == payload
    client, _ = pair(DeflateParams())
    assert client.decompress(payload, fin=True, max_size=None) == b"Hello"


def test_client_decompress_rfc_hello_fragmented() -> None:
    """RFC 7692 section 7.2.3.1: the same payload split over two frames."""
    client, _ = pair(DeflateParams())
    first = client.decompress(bytes.fromhex("f248cd"), fin=False, max_size=None)
    second = client.decompress(bytes.fromhex("c9c90700"), fin=True, max_size=None)
    assert first + second == b"Hello"


def test_server_compress_rfc_shared_window() -> None:
    """RFC 7692 section 7.2.3.2: the second "Hello" refers to the first one."""
    client, server = pair(DeflateParams())
    assert server.compress(b"Hello") == bytes.fromhex("f248cdc9c90700")
    assert server.compress(b"Hello") == bytes.fromhex("f200110000")
    assert client.decompress(bytes.fromhex("f248cdc9c90700"), fin=True, max_size=None) == b"Hello"
    assert client.decompress(bytes.fromhex("f200110000"), fin=True, max_size=None) == b"Hello"


def test_server_compress_no_context_takeover_repeats() -> None:
    """RFC 7692 section 7.2.3.2: without context takeover, both messages look alike."""
    client, server = pair(DeflateParams(server_no_context_takeover=True))
    first = server.compress(b"Hello")
    assert server.compress(b"Hello") == first == bytes.fromhex("f248cdc9c90700")
    assert client.decompress(first, fin=True, max_size=None) == b"Hello"
    assert client.decompress(first, fin=True, max_size=None) == b"Hello"


def test_client_decompress_rfc_no_compression_block() -> None:
    """RFC 7692 section 7.2.3.3: a DEFLATE block with no compression."""
    client, _ = pair(DeflateParams())
    payload = bytes.fromhex("000500faff48656c6c6f00")
    assert client.decompress(payload, fin=True, max_size=None) == b"Hello"


def test_client_decompress_rfc_bfinal_block() -> None:
    """RFC 7692 section 7.2.3.4: a block with BFINAL set, then an empty stored block;
    the next message (a new DEFLATE stream) decodes as well."""
    client, _ = pair(DeflateParams())
    payload = bytes.fromhex("f348cdc9c90700" + "00")
    assert client.decompress(payload, fin=True, max_size=None) == b"Hello"
    assert client.decompress(payload, fin=True, max_size=None) == b"Hello"
    assert client.decompress(bytes.fromhex("f248cdc9c90700"), fin=True, max_size=None) == b"Hello"


def test_client_decompress_bfinal_then_more_blocks_same_frame() -> None:
    """RFC 7692 section 7.2.3.4: data after a BFINAL block starts a new stream."""
    client, _ = pair(DeflateParams())
    first = zlib.compressobj(6, zlib.DEFLATED, -15)
    second = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = first.compress(b"Hello, ") + first.flush(zlib.Z_FINISH)
    data += (second.compress(b"world") + second.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert client.decompress(data, fin=True, max_size=12) == b"Hello, world"


def test_client_decompress_rfc_two_blocks() -> None:
    """RFC 7692 section 7.2.3.5: two DEFLATE blocks in one message."""
    client, _ = pair(DeflateParams())
    payload = bytes.fromhex("f24805000000ffffcac9c90700")
    assert client.decompress(payload, fin=True, max_size=None) == b"Hello"


def test_server_compress_empty_final_fragment() -> None:
    """RFC 7692 section 7.2.3.6: a final fragment that adds nothing is 0x00."""
    client, server = pair(DeflateParams())
    first = server.compress(b"Hello", fin=False)
    assert first.endswith(b"\x00\x00\xff\xff")
    last = server.compress(b"", fin=True)
    assert last == b"\x00"
    assert client.decompress(first, fin=False, max_size=None) == b"Hello"
    assert client.decompress(last, fin=True, max_size=None) == b""


def test_server_compress_empty_message() -> None:
    """RFC 7692 section 7.2.3.6: an empty message compresses to a single 0x00."""
    client, server = pair(DeflateParams())
    assert server.compress(b"") == b"\x00"
    assert client.decompress(b"\x00", fin=True, max_size=0) == b""


@settings(max_examples=60, deadline=None)
@given(
    params=params_strategy,
    level=st.integers(min_value=0, max_value=9),
    messages=st.lists(payloads, min_size=1, max_size=6),
    data=st.data(),
)
def test_client_server_compress_roundtrip_any_split(
    params: DeflateParams, level: int, messages: list[bytes], data: st.DataObject
) -> None:
    """Any parameters, any messages, any split into frames: both ways, the decompressed
    messages equal the originals (RFC 7692 sections 7.2.1 and 7.2.2)."""
    config = DeflateConfig(compress_level=level)
    client, server = pair(params, config)
    for message in messages:
        for sender, receiver in ((client, server), (server, client)):
            cuts = sorted(data.draw(st.lists(st.integers(0, len(message)), max_size=3)))
            bounds = [0, *cuts, len(message)]
            frames = [
                sender.compress(message[a:b], fin=i == len(bounds) - 2)
                for i, (a, b) in enumerate(pairwise(bounds))
            ]
            output = b"".join(
                receiver.decompress(frame, fin=i == len(frames) - 1, max_size=len(message))
                for i, frame in enumerate(frames)
            )
            assert output == message


@settings(max_examples=30)
@given(data=payloads, split=st.integers(min_value=1, max_value=7))
def test_client_decompress_any_frame_split_same_output(data: bytes, split: int) -> None:
    """The compressed payload of a message can be cut into frames anywhere."""
    _, server = pair(DeflateParams())
    payload = server.compress(data)
    size = -(-len(payload) // split) or 1
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    client, _ = pair(DeflateParams())
    output = b"".join(
        client.decompress(piece, fin=i == len(pieces) - 1, max_size=None)
        for i, piece in enumerate(pieces)
    )
    assert output == data


def test_server_compress_context_takeover_smaller() -> None:
    """RFC 7692 section 7.2.3.2: with context takeover, a repeated message shrinks."""
    message = b'{"type": "chat", "room": "general", "content": "hello there"}'
    _, takeover = pair(DeflateParams())
    _, fresh = pair(DeflateParams(server_no_context_takeover=True))
    takeover.compress(message)
    fresh.compress(message)
    assert len(takeover.compress(message)) < len(fresh.compress(message)) // 3


@pytest.mark.parametrize("is_server", [True, False])
def test_compress_window_8_fits_256_byte_decoder(is_server: bool) -> None:
    """RFC 7692 section 7.1.2.1: a window of 8 bits is honoured. zlib compresses with 9
    bits, whose match distances never exceed 250; a zlib decoder with a 256-byte window,
    fed one byte at a time so that every distance goes through its window, accepts it.
    The same check fails for 10 bits, which shows the check can fail."""
    params = DeflateParams(server_max_window_bits=8, client_max_window_bits=8)
    codec = PerMessageDeflate(params, is_server=is_server, config=DeflateConfig(compress_level=9))
    rng = random.Random(7)
    block = rng.randbytes(40)
    messages = [
        b"".join(
            block[: rng.randint(3, 40)] + rng.randbytes(rng.randint(0, 300)) for _ in range(50)
        )
        for _ in range(4)
    ]
    decoder = zlib.decompressobj(-8)
    for message in messages:
        payload = codec.compress(message) + b"\x00\x00\xff\xff"
        output = b"".join(decoder.decompress(payload[i : i + 1]) for i in range(len(payload)))
        assert output == message
    wide = zlib.compressobj(9, zlib.DEFLATED, -10)
    payload = wide.compress(b"".join(messages)) + wide.flush(zlib.Z_SYNC_FLUSH)
    decoder = zlib.decompressobj(-8)
    with pytest.raises(zlib.error, match="too far back"):
        for i in range(len(payload)):
            decoder.decompress(payload[i : i + 1])


def test_client_decompress_window_8_roundtrip() -> None:
    """Both directions with 8-bit windows (our decompressor uses the 8-bit window)."""
    client, server = pair(DeflateParams(server_max_window_bits=8, client_max_window_bits=8))
    for message in (b"abc" * 300, os.urandom(600), b"abc" * 300):
        assert server.decompress(client.compress(message), fin=True, max_size=None) == message
        assert client.decompress(server.compress(message), fin=True, max_size=None) == message


# --- limits and errors ------------------------------------------------------------


def _zip_bomb(size: int) -> bytes:
    """``size`` zero bytes, compressed chunk by chunk without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size >> 20)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH)[:-4])
    return b"".join(parts)


def test_server_decompress_zip_bomb_bounded() -> None:
    """A 1 GiB zip bomb against a 1 MiB budget: MessageTooBigError, close code 1009, and
    the peak of memory allocated while decompressing stays near the budget."""
    bomb = _zip_bomb(1 << 30)
    assert len(bomb) < 2 << 20
    _, server = pair(DeflateParams())
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooBigError) as info:
            server.decompress(bomb, fin=True, max_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.close_code == 1009
    assert peak < 4 << 20


def test_server_decompress_zip_bomb_over_frames_bounded() -> None:
    """The budget spans frames: the protocol passes what is left of it."""
    bomb = _zip_bomb(64 << 20)
    _, server = pair(DeflateParams())
    budget = 1 << 20
    size = 1 << 12
    with pytest.raises(MessageTooBigError):
        for i in range(0, len(bomb), size):
            budget -= len(server.decompress(bomb[i : i + size], fin=False, max_size=budget))
    assert budget >= 0


@pytest.mark.parametrize("size", [0, 1, 100, 65536])
def test_server_decompress_exact_budget_accepted(size: int) -> None:
    """A message of exactly ``max_size`` bytes passes; one byte more does not."""
    data = os.urandom(size // 2) + bytes(size - size // 2)
    client, server = pair(DeflateParams(client_no_context_takeover=True))
    payload = client.compress(data)
    assert server.decompress(payload, fin=True, max_size=size) == data
    if size:
        with pytest.raises(MessageTooBigError):
            server.decompress(payload, fin=True, max_size=size - 1)


def test_server_decompress_budget_across_tail() -> None:
    """The bytes released by the appended 00 00 ff ff count against the budget."""
    client, server = pair(DeflateParams(client_no_context_takeover=True))
    payload = client.compress(b"x" * 1000)
    for cut in range(len(payload)):
        _, server = pair(DeflateParams(client_no_context_takeover=True))
        head = server.decompress(payload[:cut], fin=False, max_size=1000)
        rest = server.decompress(payload[cut:], fin=True, max_size=1000 - len(head))
        assert head + rest == b"x" * 1000


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("ff"),  # BTYPE 11 is reserved (RFC 1951 section 3.2.3)
        bytes.fromhex("0005000000"),  # stored block whose NLEN is not ~LEN
        bytes.fromhex("f248cdc9c90700") + b"\xff" * 8,
    ],
)
def test_client_decompress_corrupt_data_protocol_error(payload: bytes) -> None:
    """Invalid DEFLATE data fails the connection with 1002."""
    client, _ = pair(DeflateParams())
    with pytest.raises(ProtocolError) as info:
        client.decompress(payload, fin=True, max_size=None)
    assert type(info.value) is ProtocolError
    assert info.value.close_code == 1002


@given(data=st.binary(max_size=200))
def test_client_decompress_arbitrary_bytes_output_or_protocol_error(data: bytes) -> None:
    """Arbitrary payloads give bytes within the budget or a documented error."""
    client, _ = pair(DeflateParams())
    try:
        output = client.decompress(data, fin=True, max_size=1000)
    except ProtocolError:
        return
    assert len(output) <= 1000


def test_client_decompress_memoryview_accepted() -> None:
    client, server = pair(DeflateParams())
    payload = bytearray(server.compress(bytearray(b"Hello" * 20)))
    assert client.decompress(memoryview(payload), fin=True, max_size=None) == b"Hello" * 20


# --- context reset and sharing ------------------------------------------------------


@pytest.mark.parametrize("is_server", [True, False])
def test_decompress_peer_no_context_takeover_resets(is_server: bool) -> None:
    """RFC 7692 section 7.1.1: with the peer's no_context_takeover, each message is
    decoded from a fresh state; without it, the window is kept."""
    params = DeflateParams(
        server_no_context_takeover=not is_server, client_no_context_takeover=is_server
    )
    codec = PerMessageDeflate(params, is_server=is_server)
    # A message that refers back to an earlier "Hello" only decodes with context.
    assert codec.decompress(bytes.fromhex("f248cdc9c90700"), fin=True, max_size=None) == b"Hello"
    with pytest.raises(ProtocolError):
        codec.decompress(bytes.fromhex("f200110000"), fin=True, max_size=None)
    keeper = PerMessageDeflate(DeflateParams(), is_server=is_server)
    keeper.decompress(bytes.fromhex("f248cdc9c90700"), fin=True, max_size=None)
    assert keeper.decompress(bytes.fromhex("f200110000"), fin=True, max_size=None) == b"Hello"


@pytest.mark.parametrize(
    ("params", "is_server", "shareable", "key"),
    [
        (DeflateParams(), True, False, (15, 1, 8)),
        (DeflateParams(server_no_context_takeover=True), True, True, (15, 1, 8)),
        (DeflateParams(server_no_context_takeover=True), False, False, (15, 1, 8)),
        (DeflateParams(client_no_context_takeover=True), False, True, (15, 1, 8)),
        (
            DeflateParams(server_max_window_bits=10, client_max_window_bits=9),
            True,
            False,
            (10, 1, 8),
        ),
        (
            DeflateParams(server_max_window_bits=10, client_max_window_bits=9),
            False,
            False,
            (9, 1, 8),
        ),
    ],
)
def test_codec_shareable_follows_local_no_context_takeover(
    params: DeflateParams, is_server: bool, shareable: bool, key: tuple[int, int, int]
) -> None:
    codec = PerMessageDeflate(params, is_server=is_server)
    assert codec.shareable is shareable
    assert codec.shared_key == key


def test_codec_min_size_from_config() -> None:
    assert PerMessageDeflate(DeflateParams(), is_server=True).min_size == 32
    codec = PerMessageDeflate(DeflateParams(), is_server=True, config=DeflateConfig(min_size=0))
    assert codec.min_size == 0


@settings(max_examples=40, deadline=None)
@given(
    bits=window_bits,
    level=st.integers(min_value=0, max_value=9),
    memory_level=st.integers(min_value=1, max_value=9),
    messages=st.lists(payloads, min_size=1, max_size=4),
)
def test_compress_message_equals_shareable_codec_output(
    bits: int, level: int, memory_level: int, messages: list[bytes]
) -> None:
    """Compress once: compress_message gives what every shareable connection with the
    same key would send, and every such peer decodes it."""
    params = DeflateParams(server_no_context_takeover=True, server_max_window_bits=bits)
    config = DeflateConfig(compress_level=level, memory_level=memory_level)
    client, server = pair(params, config)
    assert server.shareable
    for message in messages:
        shared = compress_message(
            message, window_bits=bits, level=level, memory_level=memory_level
        )
        assert server.shared_key == (bits, level, memory_level)
        assert server.compress(message) == shared
        assert client.decompress(shared, fin=True, max_size=None) == message


# --- interop with the websockets library's codec ----------------------------------


def _ws_codec(params: DeflateParams, *, is_server: bool) -> WsPerMessageDeflate:
    if is_server:
        return WsPerMessageDeflate(
            params.client_no_context_takeover,
            params.server_no_context_takeover,
            params.client_max_window_bits,
            params.server_max_window_bits,
        )
    return WsPerMessageDeflate(
        params.server_no_context_takeover,
        params.client_no_context_takeover,
        params.server_max_window_bits,
        params.client_max_window_bits,
    )


ws_params = st.builds(
    DeflateParams,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    # websockets cannot compress with 8 bits.
    server_max_window_bits=st.integers(min_value=9, max_value=15),
    client_max_window_bits=st.integers(min_value=9, max_value=15),
)


@settings(max_examples=40, deadline=None)
@given(params=ws_params, messages=st.lists(payloads, min_size=1, max_size=5))
def test_client_server_websockets_codec_interop(
    params: DeflateParams, messages: list[bytes]
) -> None:
    """Our client against a websockets server and the other way round: each decodes
    what the other encodes, message after message (context takeover included)."""
    ours_client = PerMessageDeflate(params, is_server=False)
    theirs_server = _ws_codec(params, is_server=True)
    ours_server = PerMessageDeflate(params, is_server=True)
    theirs_client = _ws_codec(params, is_server=False)
    for message in messages:
        frame = theirs_server.decode(
            Frame(Opcode.BINARY, ours_client.compress(message), rsv1=True)
        )
        assert frame.data == message
        encoded = theirs_client.encode(Frame(Opcode.BINARY, message))
        assert encoded.rsv1
        assert ours_server.decompress(encoded.data, fin=True, max_size=None) == message
        frame = theirs_client.decode(
            Frame(Opcode.BINARY, ours_server.compress(message), rsv1=True)
        )
        assert frame.data == message


def test_server_compress_same_bytes_as_websockets() -> None:
    """With the same zlib settings, our payload is websockets' payload, byte for byte."""
    params = DeflateParams(server_max_window_bits=12, client_max_window_bits=12)
    ours = PerMessageDeflate(params, is_server=True, config=DeflateConfig(compress_level=6))
    theirs = WsPerMessageDeflate(False, False, 12, 12, {"level": 6, "memLevel": 8})
    for message in (b"Hello", b"Hello", b'{"a": 1}' * 40, os.urandom(100)):
        assert ours.compress(message) == bytes(theirs.encode(Frame(Opcode.TEXT, message)).data)


def test_server_decompress_websockets_zip_bomb_same_verdict() -> None:
    """Both libraries refuse the same oversized payload."""
    bomb = _zip_bomb(8 << 20)
    theirs = WsPerMessageDeflate(False, False, 15, 15)
    with pytest.raises(PayloadTooBig):
        theirs.decode(Frame(Opcode.BINARY, bomb, rsv1=True), max_size=1 << 20)
    _, ours = pair(DeflateParams())
    with pytest.raises(MessageTooBigError):
        ours.decompress(bomb, fin=True, max_size=1 << 20)
