"""Who the client is behind reverse proxies: ``Forwarded`` and ``X-Forwarded-For``.

A proxy appends the address it received a request from to these headers; anyone can
write anything in them before that. So they are believed only from configured proxy
addresses, and read from the right (the nearest hop) to the left: each hop whose
address is itself a trusted proxy is skipped, and the first other address is the
client. Without a trusted peer the headers are ignored.

``Forwarded`` (RFC 7239) is read when present, else ``X-Forwarded-For``. A port is
known only when ``Forwarded`` gives one (``for="[2001:db8::1]:4711"``); otherwise it is 0.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

__all__ = ["UNIX", "ProxyNetworks", "client_address", "parse_proxies"]

#: In ``trusted_proxies``: a peer on a Unix socket (the local nginx) is a proxy.
UNIX: Final = "unix"

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyNetworks:
    """The trusted proxies: networks, and whether a Unix-socket peer is one."""

    __slots__ = ("networks", "unix")

    def __init__(self, networks: Sequence[Network], unix: bool) -> None:
        self.networks = tuple(networks)
        self.unix = unix

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (an IP address) belongs to a trusted proxy."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def parse_proxies(proxies: Iterable[str]) -> ProxyNetworks:
    """Parse ``trusted_proxies``: IP addresses, networks (``10.0.0.0/8``), ``"unix"``.

    Raises:
        ValueError: an entry is none of these.
    """
    if isinstance(proxies, str):
        raise ValueError(f"trusted_proxies is a list of addresses, such as [{proxies!r}]")
    networks: list[Network] = []
    unix = False
    for entry in proxies:
        if entry == UNIX:
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxy {entry!r} is not an IP address, a network such as "
                f"'10.0.0.0/8', or {UNIX!r}"
            ) from None
    return ProxyNetworks(networks, unix)


def client_address(
    peer: tuple[str, int] | None,
    headers: Sequence[tuple[bytes, bytes]],
    proxies: ProxyNetworks,
) -> tuple[str, int] | None:
    """The client's ``(host, port)``, through the proxy headers when the peer is trusted.

    Args:
        peer: the address the connection came from; ``None`` for a Unix socket.
        headers: the request headers, lowercase names.
        proxies: the trusted proxies.
    """
    if peer is None:
        if not proxies.unix:
            return None
    elif not proxies.trusts(peer[0]):
        return peer
    hops = _forwarded(headers)
    if hops is None:
        hops = _x_forwarded_for(headers)
    if not hops:
        return peer
    for hop in reversed(hops):
        if hop is None:
            # An obfuscated or unknown hop: nothing to the left of it can be checked.
            return peer
        if not proxies.trusts(hop[0]):
            return hop
    return hops[0]


def _values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str] | None:
    found = [value.decode("latin-1") for field, value in headers if field == name]
    if not found:
        return None
    return [item.strip() for value in found for item in value.split(",") if item.strip()]


def _x_forwarded_for(
    headers: Sequence[tuple[bytes, bytes]],
) -> list[tuple[str, int] | None] | None:
    items = _values(headers, b"x-forwarded-for")
    if items is None:
        return None
    return [_host_port(item) for item in items]


def _forwarded(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, int] | None] | None:
    elements = _values(headers, b"forwarded")
    if elements is None:
        return None
    hops: list[tuple[str, int] | None] = []
    for element in elements:
        node = None
        for pair in element.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key.strip().lower() == "for":
                node = value.strip().strip('"')
        hops.append(None if node is None else _host_port(node))
    return hops


def _host_port(node: str) -> tuple[str, int] | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]``, ``[::1]:80``, bare ``::1``; else ``None``."""
    host, port = node, "0"
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # "unknown", an obfuscated "_node", garbage
    return str(address), int(port) if port.isdigit() and int(port) <= 65535 else 0
