"""What the HTTP and WebSocket layers share about writing a socket's descriptor directly.

Both layers read and write a plain socket with ``os.read``/``os.write`` when the kernel
can take the call at once, skipping Trio's extra schedule point (see
:mod:`rue_trio.http._socket_io` and :mod:`rue_trio.websocket._output`). Neither may import
the other (the import contracts in ``pyproject.toml``), so the translation of a failed
call into the error Trio's ``SocketStream`` would raise lives here, once.
"""

from __future__ import annotations

import errno
import os

import trio

# Whether a socket's descriptor can be read and written with os.read/os.write (not on
# Windows).
FD_IO = os.name == "posix"
# What a closed socket's calls fail with (as Trio's SocketStream sees them).
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


def socket_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """The error Trio's ``SocketStream`` raises for a socket call's ``exc``."""
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")
