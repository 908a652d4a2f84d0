"""The permessage-deflate extension (RFC 7692), sans-I/O: its negotiation.

**Negotiation** (RFC 7692 sections 5 and 7.1): :func:`client_offer` builds the client's
``Sec-WebSocket-Extensions`` value, :func:`server_negotiate` picks the first acceptable
offer and answers it, :func:`client_accept` checks the server's answer. The outcome is a
:class:`DeflateParams`; what a side is willing to do is a :class:`DeflateConfig`.

**The codec** (RFC 7692 section 7.2), :class:`~rue_trio.protocol.PerMessageDeflate` and
:func:`~rue_trio.protocol.compress_message`, is in ``_deflate_codec.py``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rue_trio.exceptions import NegotiationError

__all__ = [
    "EXTENSION_NAME",
    "DeflateConfig",
    "DeflateParams",
    "client_accept",
    "client_offer",
    "server_negotiate",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 section 7.1.2.1: window bits are a decimal integer from 8 to 15 without
# leading zeroes; anything else ("08", "+9", "16") is an invalid value.
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}

# RFC 6455 section 9.1 (with RFC 7230 section 3.2.6 for token and quoted-string):
#   extension = extension-token *( ";" extension-param )
#   extension-param = token [ "=" (token | quoted-string) ]
# One element of the comma list per match; optional whitespace is allowed around the
# separators, and empty list elements are skipped (RFC 7230 section 7).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = rf"[ \t]*;[ \t]*{_TOKEN}(?:[ \t]*=[ \t]*(?:{_TOKEN}|{_QUOTED}))?"
_ELEMENT_RE = re.compile(rf"[ \t]*(?:({_TOKEN})((?:{_PARAM})*))?[ \t]*(?:,|\Z)")
_PARAM_RE = re.compile(
    rf"[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*(?:({_TOKEN})|\"((?:[^\"\\]|\\.)*)\"))?"
)
_TOKEN_RE = re.compile(_TOKEN)
_QUOTED_PAIR_RE = re.compile(r"\\(.)")

_Extension = tuple[str, list[tuple[str, str | None]]]


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """The permessage-deflate parameters agreed on for one connection.

    Attributes:
        server_no_context_takeover: the server resets its compressor after each message.
        client_no_context_takeover: the client resets its compressor after each message.
        server_max_window_bits: the largest LZ77 window (base-2 log, 8 to 15) the server
            compresses with; 15 when the parameter was not negotiated.
        client_max_window_bits: the same for the client.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15

    def __post_init__(self) -> None:
        _check_window_bits("server_max_window_bits", self.server_max_window_bits)
        _check_window_bits("client_max_window_bits", self.client_max_window_bits)


@dataclass(frozen=True, slots=True)
class DeflateConfig:
    """What one side is willing to use or to offer for permessage-deflate.

    The same record configures a server (what it accepts and asks of the client) and a
    client (what it offers). ``compression=True`` in the user-facing options means
    ``DeflateConfig()``.

    Attributes:
        server_no_context_takeover: a server resets its compressor after each message;
            a client asks the server to do so.
        client_no_context_takeover: a server asks the client to reset its compressor
            after each message; a client does so and tells the server.
        server_max_window_bits: a server compresses with at most this window; a client
            asks the server for at most this window. ``None``: no limit (15).
        client_max_window_bits: a server asks the client to compress with at most this
            window (when the client's offer allows it); a client offers to compress with
            at most this window. ``None``: a client offers the bare parameter, so that
            the server may pick (RFC 7692 section 7.1.2.2); a server sets no limit.
        compress_level: the zlib compression level, 0 to 9. The default, 1, is what
            nginx uses for gzip: on chat-size messages (100 bytes to 5 KiB) it costs a
            half to a quarter of the CPU time of level 6 for output about 20 % larger.
        memory_level: the zlib memory level, 1 to 9 (hash table and buffer size).
        min_size: messages shorter than this many bytes are sent uncompressed (RSV1
            clear). The default, 32, comes from measurement: below it, a message
            compressed without context takeover gains less than a byte, and with
            context takeover it gains less than a TCP header for the CPU time of a
            zlib call per message and per connection.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    compress_level: int = 1
    memory_level: int = 8
    min_size: int = 32

    def __post_init__(self) -> None:
        if self.server_max_window_bits is not None:
            _check_window_bits("server_max_window_bits", self.server_max_window_bits)
        if self.client_max_window_bits is not None:
            _check_window_bits("client_max_window_bits", self.client_max_window_bits)
        if not 0 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be between 0 and 9: {self.compress_level}")
        if not 1 <= self.memory_level <= 9:
            raise ValueError(f"memory_level must be between 1 and 9: {self.memory_level}")
        if self.min_size < 0:
            raise ValueError(f"min_size must not be negative: {self.min_size}")


def _check_window_bits(name: str, bits: int) -> None:
    if not 8 <= bits <= 15:
        raise ValueError(f"{name} must be between 8 and 15: {bits}")


def _parse_extensions(values: Sequence[str]) -> list[_Extension]:
    """Parse ``Sec-WebSocket-Extensions`` values into ``(name, [(param, value)])``.

    Names of extensions and parameters are lowercased; a quoted value is unescaped and
    must then be a token (RFC 6455 section 9.1).

    Raises:
        ValueError: a value does not follow the grammar.
    """
    extensions: list[_Extension] = []
    for value in values:
        pos = 0
        end = len(value)
        while pos < end:
            match = _ELEMENT_RE.match(value, pos)
            if match is None:
                raise ValueError(f"invalid extension list at offset {pos}: {value!r}")
            pos = match.end()
            name = match[1]
            if name is None:
                continue
            params: list[tuple[str, str | None]] = []
            for param in _PARAM_RE.finditer(match[2]):
                quoted = param[3]
                if quoted is None:
                    params.append((param[1].lower(), param[2]))
                    continue
                unquoted = _QUOTED_PAIR_RE.sub(r"\1", quoted)
                if _TOKEN_RE.fullmatch(unquoted) is None:
                    raise ValueError(f"quoted parameter value is not a token: {value!r}")
                params.append((param[1].lower(), unquoted))
            extensions.append((name.lower(), params))
    return extensions


@dataclass(slots=True)
class _Received:
    """The parameters of one permessage-deflate offer or response, as received."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    # RFC 7692 section 7.1.2.2: an offer may carry client_max_window_bits without value.
    client_max_window_bits_bare: bool = False


def _read_params(params: list[tuple[str, str | None]], *, response: bool) -> _Received | str:
    """Read the parameters of an offer (or, with ``response``, of a response).

    Returns:
        The parameters, or why they are invalid (RFC 7692 section 5.1: an unknown or
        duplicated parameter, or an invalid value).
    """
    received = _Received()
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            return f"duplicate parameter {name}"
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            # RFC 7692 sections 7.1.1.1 and 7.1.1.2: these parameters have no value.
            if value is not None:
                return f"{name} takes no value: {value!r}"
            setattr(received, name, True)
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            if value is None and name == "client_max_window_bits" and not response:
                received.client_max_window_bits_bare = True
                continue
            bits = _WINDOW_BITS.get(value) if value is not None else None
            if bits is None:
                return f"invalid value for {name}: {value!r}"
            setattr(received, name, bits)
        else:
            return f"unknown parameter {name}"
    return received


def _build(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: int | None,
    client_max_window_bits: int | None,
    *,
    bare_client_max_window_bits: bool = False,
) -> str:
    parts = [EXTENSION_NAME]
    if server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if server_max_window_bits is not None:
        parts.append(f"server_max_window_bits={server_max_window_bits}")
    if client_max_window_bits is not None:
        parts.append(f"client_max_window_bits={client_max_window_bits}")
    elif bare_client_max_window_bits:
        parts.append("client_max_window_bits")
    return "; ".join(parts)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def server_negotiate(
    header_values: Sequence[str], config: DeflateConfig
) -> tuple[str, DeflateParams] | None:
    """Server side: accept the first acceptable permessage-deflate offer.

    RFC 7692 section 5.1: an offer with an unknown or duplicated parameter, or a
    parameter with an invalid value, is declined, and the next offer is considered.
    Other extensions are ignored (declined). A header that does not follow the grammar
    of RFC 6455 section 9.1 is declined as a whole.

    How the response is chosen (RFC 7692 section 7.1):

    * ``*_no_context_takeover``: included when the client offered it or ``config``
      asks for it (7.1.1.1 and 7.1.1.2 allow a server to add both).
    * ``server_max_window_bits``: the smaller of the offered value and
      ``config.server_max_window_bits``, when either is set (7.1.2.1).
    * ``client_max_window_bits``: only when the client offered the parameter (7.1.2.2);
      the smaller of the offered value and ``config.client_max_window_bits``. A bare
      offer is answered with ``config.client_max_window_bits``, or not at all when that
      is ``None``. When the client did not offer the parameter, it may use any window,
      and we accept it anyway with a 15-bit window to decompress with.

    Args:
        header_values: the ``Sec-WebSocket-Extensions`` header values of the request,
            each possibly a comma-separated list of offers.
        config: what the server is willing to do.

    Returns:
        ``(response header value, agreed parameters)``, or ``None`` when no offer is
        acceptable.
    """
    return _negotiate(tuple(header_values), config)


# The opening handshake is a hot path and browsers send a handful of distinct offers:
# the answers (immutable) are cached. The bound keeps an attacker who varies the header
# from growing it; at h11's default header limit it holds at most about 1 MiB.
@functools.lru_cache(maxsize=64)
def _negotiate(
    header_values: tuple[str, ...], config: DeflateConfig
) -> tuple[str, DeflateParams] | None:
    try:
        extensions = _parse_extensions(header_values)
    except ValueError:
        return None
    for name, params in extensions:
        if name != EXTENSION_NAME:
            continue
        offer = _read_params(params, response=False)
        if isinstance(offer, str):
            continue
        server_no_context_takeover = (
            offer.server_no_context_takeover or config.server_no_context_takeover
        )
        client_no_context_takeover = (
            offer.client_no_context_takeover or config.client_no_context_takeover
        )
        server_max_window_bits = _min(offer.server_max_window_bits, config.server_max_window_bits)
        client_max_window_bits = None
        if offer.client_max_window_bits is not None or offer.client_max_window_bits_bare:
            client_max_window_bits = _min(
                offer.client_max_window_bits, config.client_max_window_bits
            )
        response = _build(
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        )
        return response, DeflateParams(
            server_no_context_takeover=server_no_context_takeover,
            client_no_context_takeover=client_no_context_takeover,
            server_max_window_bits=server_max_window_bits or 15,
            client_max_window_bits=client_max_window_bits or 15,
        )
    return None


def client_offer(config: DeflateConfig) -> str:
    """Client side: the ``Sec-WebSocket-Extensions`` value offering permessage-deflate.

    ``client_max_window_bits`` is always offered: with ``config``'s value, or bare
    (RFC 7692 section 7.1.2.2) so that the server may pick a window for us.

    Args:
        config: what the client is willing to do.

    Returns:
        One offer, e.g. ``"permessage-deflate; client_max_window_bits"``.
    """
    return _build(
        config.server_no_context_takeover,
        config.client_no_context_takeover,
        config.server_max_window_bits,
        config.client_max_window_bits,
        bare_client_max_window_bits=True,
    )


def client_accept(header_values: Sequence[str], config: DeflateConfig) -> DeflateParams | None:
    """Client side: check the server's answer to :func:`client_offer` (``config``).

    RFC 7692 section 5.1: the client fails the connection when the response is invalid
    or describes a configuration it does not support.

    Args:
        header_values: the ``Sec-WebSocket-Extensions`` header values of the response.
        config: what the client offered.

    Returns:
        The agreed parameters, or ``None`` when the server accepted no extension.

    Raises:
        NegotiationError: the header is malformed; it accepts an extension other than
            permessage-deflate, or permessage-deflate twice; a parameter is unknown,
            duplicated or has an invalid value; ``server_no_context_takeover`` we asked
            for is missing; a window is larger than we allowed, or
            ``server_max_window_bits`` we asked for is missing.
    """
    try:
        extensions = _parse_extensions(header_values)
    except ValueError as exc:
        raise NegotiationError(f"invalid Sec-WebSocket-Extensions header: {exc}") from exc
    accepted: list[tuple[str, str | None]] | None = None
    for name, params in extensions:
        if name != EXTENSION_NAME:
            raise NegotiationError(f"the server accepted an extension we did not offer: {name}")
        if accepted is not None:
            # RFC 7692 section 5: a server accepts at most one PMCE offer.
            raise NegotiationError(f"the server accepted {EXTENSION_NAME} twice")
        accepted = params
    if accepted is None:
        return None
    response = _read_params(accepted, response=True)
    if isinstance(response, str):
        raise NegotiationError(f"invalid {EXTENSION_NAME} response: {response}")
    # RFC 7692 section 7.1.1.1: asked for, the parameter must be in the response.
    if config.server_no_context_takeover and not response.server_no_context_takeover:
        raise NegotiationError("the server did not accept server_no_context_takeover")
    # RFC 7692 section 7.1.2.1: a server accepts the parameter with the same or a
    # smaller value; it may also add it when we did not ask.
    server_max_window_bits = response.server_max_window_bits
    if config.server_max_window_bits is not None:
        if server_max_window_bits is None:
            raise NegotiationError("the server did not accept server_max_window_bits")
        if server_max_window_bits > config.server_max_window_bits:
            raise NegotiationError(
                f"server_max_window_bits={server_max_window_bits} is larger than the "
                f"{config.server_max_window_bits} we asked for"
            )
    # RFC 7692 section 7.1.2.2: with a value in our offer, the server may lower it or
    # omit it (we then keep our own limit); a bare offer lets it pick any value.
    client_max_window_bits = response.client_max_window_bits
    if config.client_max_window_bits is not None:
        if client_max_window_bits is None:
            client_max_window_bits = config.client_max_window_bits
        elif client_max_window_bits > config.client_max_window_bits:
            raise NegotiationError(
                f"client_max_window_bits={client_max_window_bits} is larger than the "
                f"{config.client_max_window_bits} we offered"
            )
    return DeflateParams(
        server_no_context_takeover=response.server_no_context_takeover,
        # RFC 7692 section 7.1.1.2: offering it binds us even if the server omits it.
        client_no_context_takeover=(
            response.client_no_context_takeover or config.client_no_context_takeover
        ),
        server_max_window_bits=server_max_window_bits or 15,
        client_max_window_bits=client_max_window_bits or 15,
    )
