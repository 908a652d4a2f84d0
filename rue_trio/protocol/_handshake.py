"""The opening handshake of RFC 6455 (section 4) as pure functions, sans-I/O: the server.

Server side: :func:`validate_upgrade_request` checks a parsed HTTP request (method,
version and headers as h11 hands them over: lowercase names, byte values) and
:func:`accept_response` writes the raw ``101 Switching Protocols`` response;
:func:`server_handshake` composes both with subprotocol and permessage-deflate
negotiation. What the client's side shares with it (:func:`accept_key`, the token and
header checks) is here too; the client's side itself (:func:`parse_uri`,
:func:`client_request`, :func:`check_response`) is in ``_client_handshake.py``.

The server half sits on the connection-open hot path: one pass over the headers, module
level constants, no h11 round trip to write the response.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rue_trio.exceptions import HandshakeError
from rue_trio.protocol._deflate import DeflateConfig, DeflateParams, server_negotiate

__all__ = [
    "GUID",
    "ServerHandshake",
    "UpgradeRequest",
    "accept_key",
    "accept_response",
    "select_subprotocol",
    "server_handshake",
    "validate_upgrade_request",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 7230 section 3.2.6.
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 7230 section 3.2: a field value holds no control character but HTAB; refusing
# them keeps a caller's header from splitting the message (CR LF injection).
_BAD_VALUE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

_HOST = 0
_UPGRADE = 1
_CONNECTION = 2
_KEY = 3
_VERSION = 4
_PROTOCOL = 5
_EXTENSIONS = 6
_ORIGIN = 7
_REQUEST_FIELDS = {
    b"host": _HOST,
    b"upgrade": _UPGRADE,
    b"connection": _CONNECTION,
    b"sec-websocket-key": _KEY,
    b"sec-websocket-version": _VERSION,
    b"sec-websocket-protocol": _PROTOCOL,
    b"sec-websocket-extensions": _EXTENSIONS,
    b"origin": _ORIGIN,
}
_SINGLE_FIELDS = {
    _HOST: "Host",
    _KEY: "Sec-WebSocket-Key",
    _VERSION: "Sec-WebSocket-Version",
    _ORIGIN: "Origin",
}
_VERSION_HEADERS = [(b"sec-websocket-version", b"13")]

_RESPONSE_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)


def accept_key(key: str | bytes) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2).

    Args:
        key: the client's key, base64 text.

    Returns:
        base64 of the SHA-1 of the key followed by :data:`GUID`.
    """
    if isinstance(key, str):
        key = key.encode("ascii")
    digest = hashlib.sha1(key + GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def _has_token(value: bytes, token: bytes) -> bool:
    """Whether a comma-separated header value holds ``token`` (ASCII case-insensitive)."""
    lowered = value.lower()
    if lowered == token:
        return True
    return any(part.strip(b" \t") == token for part in lowered.split(b","))


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A valid WebSocket upgrade request, as the server needs it.

    Attributes:
        key: the ``Sec-WebSocket-Key``.
        host: the ``Host`` header.
        origin: the ``Origin`` header, or ``None`` (non-browser clients omit it).
        subprotocols: the offered subprotocols, in the client's order of preference.
        extensions: the raw ``Sec-WebSocket-Extensions`` values.
    """

    key: str
    host: str
    origin: str | None
    subprotocols: tuple[str, ...]
    extensions: tuple[str, ...]


def validate_upgrade_request(
    method: bytes, http_version: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> UpgradeRequest:
    """Check an opening handshake request (RFC 6455 section 4.2.1).

    Args:
        method: the request method.
        http_version: the HTTP version, e.g. ``b"1.1"``.
        headers: the request headers, lowercase names, as h11 gives them.

    Returns:
        What the server needs of the request.

    Raises:
        HandshakeError: with ``status_code`` 405 (and an ``Allow: GET`` header) for a
            method other than GET; 400 for HTTP older than 1.1, a missing or repeated
            ``Host``, an ``Upgrade`` without ``websocket``, a ``Connection`` without
            ``upgrade``, a missing, repeated or invalid ``Sec-WebSocket-Key`` (base64 of
            16 bytes), a repeated ``Origin`` or ``Sec-WebSocket-Version``, or an invalid
            ``Sec-WebSocket-Protocol``; 426 (with ``Sec-WebSocket-Version: 13``) for a
            missing or other version (section 4.4).
    """
    if method != b"GET":
        raise HandshakeError(
            f"WebSocket handshake needs GET, not {method.decode('latin-1')}",
            status_code=405,
            headers=[(b"allow", b"GET")],
        )
    if http_version != b"1.1" and not _at_least_http_1_1(http_version):
        raise HandshakeError(
            f"WebSocket handshake needs HTTP/1.1 or later, not {http_version.decode('latin-1')}"
        )
    single: dict[int, bytes] = {}
    upgrade = connection = False
    protocols: list[bytes] = []
    extensions: list[str] = []
    for name, value in headers:
        field = _REQUEST_FIELDS.get(name)
        if field is None:
            continue
        if field == _UPGRADE:
            upgrade = upgrade or _has_token(value, b"websocket")
        elif field == _CONNECTION:
            connection = connection or _has_token(value, b"upgrade")
        elif field == _PROTOCOL:
            protocols.append(value)
        elif field == _EXTENSIONS:
            extensions.append(value.decode("latin-1"))
        elif field in single:
            # RFC 6455 sections 11.3.1 and 11.3.5, RFC 7230 section 5.4 (Host).
            raise HandshakeError(f"repeated {_SINGLE_FIELDS[field]} header")
        else:
            single[field] = value
    host = single.get(_HOST)
    if host is None:
        raise HandshakeError("missing Host header")
    if not upgrade:
        raise HandshakeError("the Upgrade header does not hold websocket")
    if not connection:
        raise HandshakeError("the Connection header does not hold upgrade")
    key = single.get(_KEY)
    if key is None:
        raise HandshakeError("missing Sec-WebSocket-Key header")
    if not _valid_key(key):
        raise HandshakeError(f"invalid Sec-WebSocket-Key: {key.decode('latin-1')!r}")
    if single.get(_VERSION) != b"13":
        # RFC 6455 section 4.4: answer with the versions we speak.
        raise HandshakeError(
            "unsupported Sec-WebSocket-Version; this server speaks 13",
            status_code=426,
            headers=_VERSION_HEADERS,
        )
    origin = single.get(_ORIGIN)
    return UpgradeRequest(
        key=key.decode("ascii"),
        host=host.decode("latin-1"),
        origin=None if origin is None else origin.decode("latin-1"),
        subprotocols=_parse_subprotocols(protocols) if protocols else (),
        extensions=tuple(extensions),
    )


def _at_least_http_1_1(http_version: bytes) -> bool:
    major, _, minor = http_version.partition(b".")
    try:
        return (int(major), int(minor or b"0")) >= (1, 1)
    except ValueError:
        return False


def _valid_key(key: bytes) -> bool:
    # RFC 6455 section 4.1: base64 of 16 bytes is 24 characters, "==" padding included.
    if len(key) != 24:
        return False
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except binascii.Error:
        return False


def _parse_subprotocols(values: list[bytes]) -> tuple[str, ...]:
    # RFC 6455 section 4.1: a comma-separated list of tokens, possibly over several
    # headers; empty list elements are skipped (RFC 7230 section 7).
    subprotocols = []
    for value in values:
        for part in value.split(b","):
            item = part.strip(b" \t")
            if not item:
                continue
            if _TOKEN_RE.fullmatch(item) is None:
                raise HandshakeError(
                    f"invalid Sec-WebSocket-Protocol: {value.decode('latin-1')!r}"
                )
            subprotocols.append(item.decode("ascii"))
    return tuple(subprotocols)


def select_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """Pick a subprotocol: the server's most preferred one that the client offered.

    Args:
        offered: the client's subprotocols.
        supported: the server's subprotocols, most preferred first.

    Returns:
        The chosen subprotocol, or ``None`` when there is none in common (the server
        then answers without ``Sec-WebSocket-Protocol``, RFC 6455 section 4.2.2).
    """
    for subprotocol in supported:
        if subprotocol in offered:
            return subprotocol
    return None


def _check_header(name: bytes, value: bytes) -> None:
    if _TOKEN_RE.fullmatch(name) is None:
        raise ValueError(f"invalid header name: {name!r}")
    if _BAD_VALUE_RE.search(value) is not None:
        raise ValueError(f"invalid value for header {name.decode('ascii')}: {value!r}")


def accept_response(
    request: UpgradeRequest,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """The raw ``101 Switching Protocols`` response to a valid request (RFC 6455 4.2.2).

    Args:
        request: the validated request.
        subprotocol: the chosen subprotocol, one the client offered, or ``None``.
        extensions: the ``Sec-WebSocket-Extensions`` value, or ``None``.
        extra_headers: more ``(name, value)`` headers to send.

    Returns:
        The response head, blank line included.

    Raises:
        ValueError: ``subprotocol`` was not offered, or a header name or value is
            invalid (control characters would split the response).
    """
    parts = [_RESPONSE_HEAD, accept_key(request.key).encode("ascii"), b"\r\n"]
    if subprotocol is not None:
        if subprotocol not in request.subprotocols:
            raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
        parts += (b"Sec-WebSocket-Protocol: ", subprotocol.encode("ascii"), b"\r\n")
    if extensions is not None:
        value = extensions.encode("latin-1")
        _check_header(b"Sec-WebSocket-Extensions", value)
        parts += (b"Sec-WebSocket-Extensions: ", value, b"\r\n")
    for name, value in extra_headers:
        _check_header(name, value)
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ServerHandshake:
    """The outcome of a successful server handshake.

    Attributes:
        response: the raw 101 response to write.
        subprotocol: the chosen subprotocol, or ``None``.
        deflate_params: the agreed permessage-deflate parameters, or ``None``.
        request: the validated request.
    """

    response: bytes
    subprotocol: str | None
    deflate_params: DeflateParams | None
    request: UpgradeRequest


def server_handshake(
    method: bytes,
    http_version: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    subprotocols: Sequence[str] = (),
    deflate: DeflateConfig | None = None,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> ServerHandshake:
    """Validate a request and build the response, negotiating what was offered.

    Args:
        method: the request method.
        http_version: the HTTP version.
        headers: the request headers, lowercase names.
        subprotocols: the server's subprotocols, most preferred first.
        deflate: the server's permessage-deflate configuration, or ``None`` to decline
            compression.
        extra_headers: more headers for the response.

    Returns:
        The response and what was agreed.

    Raises:
        HandshakeError: the request is not a valid upgrade (see
            :func:`validate_upgrade_request` for the status codes).
        ValueError: an invalid extra header.
    """
    request = validate_upgrade_request(method, http_version, headers)
    subprotocol = select_subprotocol(request.subprotocols, subprotocols)
    negotiated = None
    if deflate is not None and request.extensions:
        negotiated = server_negotiate(request.extensions, deflate)
    response = accept_response(
        request,
        subprotocol=subprotocol,
        extensions=None if negotiated is None else negotiated[0],
        extra_headers=extra_headers,
    )
    return ServerHandshake(
        response=response,
        subprotocol=subprotocol,
        deflate_params=None if negotiated is None else negotiated[1],
        request=request,
    )
