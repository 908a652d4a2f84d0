"""The fields of an :class:`~rue_trio.http.HTTPConnection`, which its reading and writing share.

:class:`_HTTPCore` holds the connection's slots and sets them up; ``_writing.py`` extends
it with the responses, ``_reading.py`` with reading a request, and ``_connection.py`` with
the request loop. The theory of operation is in ``_connection.py``.
"""

from __future__ import annotations

from typing import Final

import h11
import trio

from rue_trio.http._limits import HTTPLimits

__all__ = ["READ_SIZE"]

#: How many bytes one ``receive_some`` call asks for.
READ_SIZE: Final = 65536

_IDLE: Final = 0
_ACTIVE: Final = 1
_UPGRADED: Final = 2

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class _HTTPCore:
    """The state of one HTTP/1.1 connection (see :class:`~rue_trio.http.HTTPConnection`)."""

    __slots__ = (
        "_first_deadline",
        "_h11",
        "_has_body",
        "_head_only",
        "_limits",
        "_phase",
        "_scope",
        "_server_header",
        "_shutting_down",
        "_stream",
        "client_gone",
        "remote_address",
        "status",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        limits: HTTPLimits | None = None,
        remote_address: tuple[str, int] | None = None,
        server_header: bytes | None = b"rue_trio",
    ) -> None:
        self._stream = stream
        self._limits = limits if limits is not None else HTTPLimits()
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_header_size
        )
        self._server_header = server_header
        # The first request must arrive within request_timeout of the connection. The
        # deadline goes on the scope only when a read has to wait (see _read_request): a
        # request read at once then costs no deadline bookkeeping on entering the scope
        # and after the read (bench/profile_server.py --scenario handshake: 909 -> 895
        # calls per connection).
        self._first_deadline = trio.current_time() + self._limits.request_timeout
        self._scope = trio.CancelScope()
        self._phase = _IDLE
        self._shutting_down = False
        self._head_only = False
        self._has_body = False
        self.remote_address = remote_address
        self.status: int | None = None
        self.client_gone = False
