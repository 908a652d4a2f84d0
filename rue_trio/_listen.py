"""Where to listen: addresses, TCP and Unix listeners, and why a bind failed.

:func:`parse_address` reads a Go-style ``"host:port"``; :func:`open_listeners` opens the
TCP listeners for a host and port (with ``SO_REUSEPORT`` for workers);
:func:`open_unix_listener` opens a Unix socket, replacing a stale socket file;
:func:`bind_failure` says in one line why an address cannot be listened on, and what to
do about it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Final

import trio

from rue_trio.exceptions import BindError, InvalidAddressError

__all__ = [
    "BIND_ERRNOS",
    "bind_error",
    "bind_failure",
    "check_host",
    "format_address",
    "open_listeners",
    "open_unix_listener",
    "parse_address",
]


def parse_address(address: str) -> tuple[str | None, int]:
    """Parse a Go-style listen address.

    ``":8080"`` means every interface, port 8080; ``"127.0.0.1:8080"``,
    ``"localhost:8080"`` and ``"[::1]:8080"`` name a host.

    Args:
        address: the address.

    Returns:
        ``(host, port)``, with ``host`` ``None`` for every interface.

    Raises:
        InvalidAddressError: the address is not a string, or not ``host:port`` with a
            port from 0 to 65535.
    """
    if not isinstance(address, str):
        hint = f" such as ':{address}'" if isinstance(address, int) else " such as ':8080'"
        raise InvalidAddressError(
            f"the address must be a 'host:port' string{hint}, not {address!r}"
        )
    if "://" in address:
        rest = address.partition("://")[2]
        raise InvalidAddressError(
            f"{address!r}: a listen address has no scheme; write {rest.rstrip('/')!r}"
        )
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise InvalidAddressError(f"{address!r} is not a 'host:port' address such as ':8080'")
    port = int(port_text)
    if port > 65535:
        raise InvalidAddressError(f"{address!r}: the port must be from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise InvalidAddressError(f"{address!r}: empty IPv6 address")
    elif ":" in host:
        raise InvalidAddressError(f"{address!r}: write an IPv6 host in brackets, as '[::1]:8080'")
    check_host(host)
    return host or None, port


def check_host(host: str | None) -> None:
    """Refuse a host that cannot name an interface (a URL, a path, a wrong type).

    Raises:
        InvalidAddressError: ``host`` is not a string (or ``None``), or holds ``/``.
    """
    if host is None:
        return
    if not isinstance(host, str):
        raise InvalidAddressError(f"the host must be a string such as '127.0.0.1', not {host!r}")
    if "/" in host:
        raise InvalidAddressError(
            f"{host!r} is not a host name or IP address (write it without scheme or path)"
        )


def format_address(host: str, port: int) -> str:
    """Format a host and port for humans, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_listeners(
    host: str | None, port: int, *, backlog: int | None = None, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Open the TCP listeners for a host and port.

    Args:
        host: the interface to bind, or ``None`` for all of them (IPv4 and IPv6).
        port: the port; 0 picks a free one (per listener).
        backlog: the listen queue length, or ``None`` for Trio's default.
        reuse_port: set ``SO_REUSEPORT``, so that several processes (workers) listen on
            the same port and the kernel spreads the connections among them.

    Returns:
        The listeners, one per address the host resolves to.

    Raises:
        OSError: the address cannot be bound, or ``SO_REUSEPORT`` is not available on
            this platform.
    """
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    reuse = getattr(trio.socket, "SO_REUSEPORT", None)
    if reuse is None:
        await trio.lowlevel.checkpoint()
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this platform")
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, address in addresses:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, reuse, 1)
                if family == trio.socket.AF_INET6:
                    # As trio.open_tcp_listeners: the IPv4 socket serves IPv4.
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog if backlog is not None else 0xFFFF)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


async def open_unix_listener(
    path: str, mode: int | None, backlog: int | None
) -> trio.SocketListener:
    """A listening Unix socket at ``path``, replacing a stale socket file."""
    if stat.S_ISSOCK(_mode_of(path)):
        probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with probe:
            try:
                await probe.connect(path)
            except OSError:
                os.unlink(path)  # nobody answers: a socket left by a server that died
            else:
                message = f"cannot listen on unix:{path}: a server is answering there"
                raise bind_error(message, errno.EADDRINUSE)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog if backlog is not None else 0xFFFF)
    except OSError as exc:
        sock.close()
        message = f"cannot listen on unix:{path}: {exc.strerror or exc}"
        raise bind_error(message, exc.errno) from exc
    return trio.SocketListener(sock)


def _mode_of(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def bind_error(message: str, code: int | None) -> BindError:
    error = BindError(message)
    error.errno = code
    return error


# The errors of bind(2) that bind_failure explains.
BIND_ERRNOS: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def bind_failure(host: str | None, port: int, exc: OSError) -> str:
    """One line that says why ``host:port`` cannot be listened on, and what to do."""
    where = f"cannot listen on {format_address(host, port) if host else f':{port}'}"
    if isinstance(exc, socket.gaierror):
        return f"{where}: unknown host {host!r} ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}: the address is in use (stop the other server or choose another port)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: no interface of this machine has that address "
            "(use 127.0.0.1, or ':PORT' for every interface)"
        )
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges; choose another)"
    return f"{where}: {exc.strerror or exc}"
