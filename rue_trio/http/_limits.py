"""The limits that protect an HTTP connection from oversized or slow requests.

How each limit is answered is described in ``_connection.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HTTPLimits"]


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """The limits that protect a server from oversized or slow requests.

    Attributes:
        max_header_size: the largest request head (request line and header fields),
            in bytes (else 431).
        max_header_count: the most header fields in a request head (else 431).
        max_body_size: the largest request body, in bytes (else 413).
        request_timeout: seconds a new connection has to deliver its first request
            (head and body), and a later request has from its first byte (else 408).
        keep_alive_timeout: seconds an idle keep-alive connection is kept open.
        write_timeout: seconds one write of a response (at most 64 KiB, or a whole
            small response) may take; a client that does not read for that long is
            dropped, which frees its task, its socket and any file being sent.
        upgraded_field_bytes: after a WebSocket upgrade, how many bytes of header
            fields the connection keeps in its request record for its whole life
            (see :meth:`Request.light`).
    """

    max_header_size: int = 16 * 1024
    max_header_count: int = 100
    max_body_size: int = 1024 * 1024
    request_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    write_timeout: float = 30.0
    upgraded_field_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.max_header_size <= 0 or self.max_header_count <= 0:
            raise ValueError("max_header_size and max_header_count must be positive")
        if self.max_body_size < 0 or self.upgraded_field_bytes < 0:
            raise ValueError("max_body_size and upgraded_field_bytes must not be negative")
        if self.request_timeout <= 0 or self.keep_alive_timeout <= 0 or self.write_timeout <= 0:
            raise ValueError(
                "request_timeout, keep_alive_timeout and write_timeout must be positive"
            )
