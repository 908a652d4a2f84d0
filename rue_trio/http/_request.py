"""The request a route sees: an immutable record built once per HTTP request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

__all__ = ["Request", "split_target"]

# Consumed by the WebSocket opening handshake (RFC 6455 section 4.2.1): not kept after it.
_HANDSHAKE_FIELDS = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, as read from the connection and matched by the router.

    Attributes:
        method: the method, such as ``"GET"``.
        target: the raw request target, such as ``"/ws/lobby?user=ann"``.
        path: the percent-decoded path, such as ``"/ws/lobby"``.
        query_string: the raw query, without the ``?`` (empty when absent).
        http_version: ``"1.1"`` or ``"1.0"``.
        headers: the header fields as ``(name, value)`` byte pairs, names lowercased,
            in the order received.
        params: the path parameters the router captured, by name.
        remote_address: the peer's ``(host, port)``, or ``None`` when unknown (such
            as over an in-memory stream).
        body: the request body, read in full before the route runs (bounded by the
            server's ``max_body_size``); empty for a request without one.

    After a WebSocket upgrade the connection keeps a lighter copy (see :meth:`light`)
    for its whole life: read what you need of a large header (a big cookie) in the
    route, before the upgrade.
    """

    method: str
    target: str
    path: str
    query_string: str
    http_version: str
    headers: tuple[tuple[bytes, bytes], ...]
    params: Mapping[str, str]
    remote_address: tuple[str, int] | None = None
    body: bytes = b""

    def light(self, max_field_bytes: int) -> Request:
        """A copy to keep for a long-lived (upgraded) connection: bounded in bytes.

        The body is dropped, and so are the fields of the WebSocket handshake itself
        (``Upgrade``, ``Connection``, ``Sec-WebSocket-Key``, ``-Version``,
        ``-Extensions`` and ``-Protocol``: the connection has used them, and keeps
        what was agreed). The other fields are kept in
        order while their names and values add up to at most ``max_field_bytes``; a
        field that does not fit is left out. Method, target, path, query, version,
        parameters and address are kept.

        Args:
            max_field_bytes: the budget for the kept header fields.

        Returns:
            The light copy.
        """
        kept: list[tuple[bytes, bytes]] = []
        room = max_field_bytes
        for field in self.headers:
            name, value = field
            # The handshake's fields first: they are most of an upgrade's, and are not
            # measured (bench/profile_server.py --scenario handshake: 895 -> 887 calls).
            if name in _HANDSHAKE_FIELDS:
                continue
            size = len(name) + len(value)
            if size <= room:
                kept.append(field)
                room -= size
        return Request(
            self.method,
            self.target,
            self.path,
            self.query_string,
            self.http_version,
            tuple(kept),
            self.params,
            self.remote_address,
        )

    def header(self, name: str) -> str | None:
        """The value of a header field, or ``None`` when absent.

        Repeated fields are joined with ``", "`` (RFC 9110 section 5.3).

        Args:
            name: the field name, in any case.

        Returns:
            The value decoded as Latin-1 (the bytes as received), or ``None``.
        """
        key = name.lower().encode("latin-1")
        found: list[bytes] = [value for field, value in self.headers if field == key]
        if not found:
            return None
        if len(found) == 1:
            return found[0].decode("latin-1")
        return b", ".join(found).decode("latin-1")

    def query(self, name: str) -> str | None:
        """The first value of a query parameter, or ``None`` when absent.

        Args:
            name: the parameter name (after percent-decoding).

        Returns:
            The percent-decoded value (possibly empty), or ``None``.
        """
        if not self.query_string:
            return None
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            if key == name:
                return value
        return None

    def query_params(self) -> dict[str, list[str]]:
        """Every query parameter, with all its values in order.

        Returns:
            A new dictionary from name to the list of percent-decoded values.
        """
        return parse_qs(self.query_string, keep_blank_values=True)


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into its percent-decoded path and raw query string.

    The origin form (``/a/b?x=1``) is the common case and is split without parsing a
    URL; the absolute form (``http://host/a?x=1``, RFC 9112 section 3.2.2) is accepted
    too. The asterisk form (``*``) yields the path ``"*"``, which no route matches.

    Args:
        target: the request target as sent.

    Returns:
        ``(path, query_string)``.

    Raises:
        ValueError: a target in none of these forms (such as ``?a=1``), or an
            absolute form that is not a URL (such as ``http://[::1``).
    """
    if not target.startswith("/") and target != "*":
        parts = urlsplit(target)
        if not parts.scheme:
            raise ValueError(f"{target[:64]!r} is in none of the request-target forms")
        return unquote(parts.path) or "/", parts.query
    path, _, query = target.partition("?")
    if "%" in path:
        path = unquote(path)
    return path, query
