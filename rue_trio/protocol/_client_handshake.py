"""The client's side of the opening handshake of RFC 6455 (section 4.1), sans-I/O.

:func:`parse_uri` reads a ``ws://`` or ``wss://`` URI, :func:`client_request` writes the
raw ``GET`` request with a key from :func:`generate_key`, and :func:`check_response`
checks the server's answer. The server's side, and what both share, is in
``_handshake.py``.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from rue_trio.exceptions import (
    HandshakeError,
    InvalidStatusError,
    InvalidURIError,
    NegotiationError,
)
from rue_trio.protocol._deflate import (
    DeflateConfig,
    DeflateParams,
    client_accept,
    client_offer,
)
from rue_trio.protocol._handshake import _TOKEN_RE, _check_header, _has_token, accept_key

__all__ = [
    "ClientHandshake",
    "WebSocketURI",
    "check_response",
    "client_request",
    "generate_key",
    "parse_uri",
]

# RFC 3986 section 3.3: what may stay unescaped in a path (and, with "?", a query);
# "%" stays so that existing escapes are kept as they are.
_PATH_SAFE = "!$&'()*+,;=:@/%"
_QUERY_SAFE = _PATH_SAFE + "?"


def generate_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64 (RFC 6455 section 4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI (RFC 6455 section 3).

    Attributes:
        secure: ``True`` for ``wss``.
        host: the host name (IDNA-encoded when it was not ASCII) or IP address, without
            the brackets of an IPv6 literal.
        port: the port, 80 or 443 when the URI has none.
        resource: the path and query, percent-encoded, ``"/"`` when empty.
    """

    secure: bool
    host: str
    port: int
    resource: str


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI (RFC 6455 section 3).

    Args:
        uri: a ``ws://`` or ``wss://`` URI.

    Returns:
        Where to connect and what to ask for.

    Raises:
        InvalidURIError: another scheme, a fragment (section 3 forbids them), user
            information, a missing host, an invalid port, or a malformed URI.
    """
    if "#" in uri:
        raise InvalidURIError(f"a WebSocket URI has no fragment: {uri!r}")
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURIError(f"invalid URI {uri!r}: {exc}") from exc
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURIError(f"not a ws:// or wss:// URI: {uri!r}")
    secure = parts.scheme == "wss"
    if "@" in parts.netloc:
        raise InvalidURIError(f"a WebSocket URI has no user information: {uri!r}")
    host = parts.hostname
    if not host:
        raise InvalidURIError(f"missing host in {uri!r}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidURIError(f"invalid host name in {uri!r}") from exc
    resource = urllib.parse.quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        resource += "?" + urllib.parse.quote(parts.query, safe=_QUERY_SAFE)
    if port is None:
        port = 443 if secure else 80
    return WebSocketURI(secure=secure, host=host, port=port, resource=resource)


def _visible_ascii(text: str) -> bool:
    # What a request line or a Host value may hold: no space, no control character.
    return text.isascii() and text.isprintable() and " " not in text


def _encode_header(name: str, value: str) -> bytes:
    raw_name = name.encode("utf-8")
    raw_value = value.encode("utf-8")
    _check_header(raw_name, raw_value)
    return b"".join((raw_name, b": ", raw_value, b"\r\n"))


def client_request(
    host: str,
    port: int,
    resource: str,
    *,
    secure: bool,
    key: str,
    subprotocols: Sequence[str] = (),
    deflate: DeflateConfig | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
) -> bytes:
    """The raw opening handshake request of a client (RFC 6455 section 4.1).

    Args:
        host: the host name or IP address (an IPv6 literal gets brackets).
        port: the port; left out of ``Host`` when it is the scheme's default.
        resource: the path and query, e.g. from :func:`parse_uri`.
        secure: whether this is ``wss``.
        key: the ``Sec-WebSocket-Key``, from :func:`generate_key`.
        subprotocols: the subprotocols to offer, most preferred first.
        deflate: the permessage-deflate offer, or ``None`` to offer no compression.
        extra_headers: more ``(name, value)`` headers; values are sent as UTF-8.
        origin: the ``Origin`` header, or ``None`` to send none.

    Returns:
        The request head, blank line included.

    Raises:
        ValueError: an invalid host, resource, subprotocol or header (one that would
            split the request or break its grammar).
    """
    if not host or not _visible_ascii(host):
        raise ValueError(f"invalid host: {host!r}")
    if not resource.startswith("/") or not _visible_ascii(resource):
        raise ValueError(f"invalid resource: {resource!r}")
    if not _visible_ascii(key):
        raise ValueError(f"invalid key: {key!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port != (443 if secure else 80):
        host = f"{host}:{port}"
    parts = [
        b"GET ",
        resource.encode("ascii"),
        b" HTTP/1.1\r\nHost: ",
        host.encode("ascii"),
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
        key.encode("ascii"),
        b"\r\nSec-WebSocket-Version: 13\r\n",
    ]
    if origin is not None:
        parts.append(_encode_header("Origin", origin))
    if subprotocols:
        for subprotocol in subprotocols:
            if _TOKEN_RE.fullmatch(subprotocol.encode("utf-8")) is None:
                raise ValueError(f"invalid subprotocol: {subprotocol!r}")
        parts.append(_encode_header("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if deflate is not None:
        parts.append(_encode_header("Sec-WebSocket-Extensions", client_offer(deflate)))
    parts.extend(_encode_header(name, value) for name, value in extra_headers)
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ClientHandshake:
    """What a successful handshake agreed on, seen from the client.

    Attributes:
        subprotocol: the subprotocol the server chose, or ``None``.
        deflate_params: the agreed permessage-deflate parameters, or ``None``.
    """

    subprotocol: str | None
    deflate_params: DeflateParams | None


def check_response(
    status_code: int,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    key: str,
    subprotocols: Sequence[str],
    deflate: DeflateConfig | None,
) -> ClientHandshake:
    """Check the server's answer to :func:`client_request` (RFC 6455 section 4.1).

    Args:
        status_code: the response status.
        headers: the response headers, lowercase names, as h11 gives them.
        key: the ``Sec-WebSocket-Key`` we sent.
        subprotocols: the subprotocols we offered.
        deflate: the permessage-deflate configuration we offered, or ``None``.

    Returns:
        What the server agreed to.

    Raises:
        InvalidStatusError: the status is not 101. Its ``body`` is empty: a caller
            that has read the body checks the status itself first.
        HandshakeError: ``Upgrade`` is not ``websocket``, ``Connection`` lacks
            ``upgrade``, or ``Sec-WebSocket-Accept`` is missing, repeated or wrong.
        NegotiationError: a subprotocol we did not offer, ``Sec-WebSocket-Protocol``
            twice, an extension when we offered none, or an invalid permessage-deflate
            response (see :func:`~rue_trio.protocol._deflate.client_accept`).
    """
    if status_code != 101:
        raise InvalidStatusError(status_code, list(headers))
    upgrade = connection = False
    accept: bytes | None = None
    protocols: list[bytes] = []
    extensions: list[str] = []
    for name, value in headers:
        if name == b"upgrade":
            # RFC 6455 section 4.1, item 2 of the response checks: exactly "websocket".
            upgrade = value.lower() == b"websocket"
        elif name == b"connection":
            connection = connection or _has_token(value, b"upgrade")
        elif name == b"sec-websocket-accept":
            if accept is not None:
                raise HandshakeError("repeated Sec-WebSocket-Accept header")
            accept = value
        elif name == b"sec-websocket-protocol":
            protocols.append(value)
        elif name == b"sec-websocket-extensions":
            extensions.append(value.decode("latin-1"))
    if not upgrade:
        raise HandshakeError("the Upgrade header of the response is not websocket")
    if not connection:
        raise HandshakeError("the Connection header of the response does not hold upgrade")
    if accept is None:
        raise HandshakeError("missing Sec-WebSocket-Accept header")
    if accept != accept_key(key).encode("ascii"):
        raise HandshakeError(f"wrong Sec-WebSocket-Accept: {accept.decode('latin-1')!r}")
    deflate_params = None
    if extensions:
        if deflate is None:
            raise NegotiationError("the server accepted an extension we did not offer")
        deflate_params = client_accept(extensions, deflate)
    subprotocol = None
    if protocols:
        # RFC 6455 section 11.3.4: at most once in a response, one value we offered.
        if len(protocols) > 1:
            raise NegotiationError("repeated Sec-WebSocket-Protocol header")
        subprotocol = protocols[0].decode("latin-1")
        if subprotocol not in subprotocols:
            raise NegotiationError(
                f"the server chose a subprotocol we did not offer: {subprotocol!r}"
            )
    return ClientHandshake(subprotocol=subprotocol, deflate_params=deflate_params)
