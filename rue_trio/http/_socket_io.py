"""Reading and writing a plain TCP socket at once, without Trio's schedule point.

Trio's ``SocketStream.receive_some`` and ``send_all`` yield to the scheduler once more
after an operation the kernel completed at once. Opening a WebSocket reads its request
once and writes its ``101`` once: with those two yields the connection's task took two
task steps more (about 15 calls of Trio's each) for no wait at all
(``bench/profile_server.py --scenario handshake``: 11 -> 9 task steps, 1,266 -> 1,148
calls per connection). Here the request loop tries the kernel first and awaits the
stream only when it would block; any other stream (TLS, in-memory) goes through the
stream. Each response still goes through the stream, so a client sending request after
request still lets other tasks run at every one.
"""

from __future__ import annotations

import os

import trio

from rue_trio._sockio import FD_IO, socket_error

__all__ = ["read_now", "write_now"]


def read_now(stream: trio.abc.Stream, max_bytes: int) -> bytes | None:
    """What the kernel has already received on ``stream`` (``b""`` at its end), or ``None``.

    ``None`` when nothing is there yet, or ``stream`` is not a plain socket: then await
    its ``receive_some``. Not a checkpoint: the caller makes one.

    Raises:
        trio.ClosedResourceError: the socket was closed.
        trio.BrokenResourceError: the connection broke.
    """
    if not FD_IO or type(stream) is not trio.SocketStream:
        return None
    try:
        return os.read(stream.socket.fileno(), max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise socket_error(exc) from exc


def write_now(stream: trio.abc.Stream, data: bytes) -> int:
    """Write what the kernel takes of ``data`` at once; return how many bytes it took.

    0 when ``stream`` is not a plain socket: then send it all through the stream. Not a
    checkpoint: the caller makes one.

    Raises:
        trio.ClosedResourceError: the socket was closed.
        trio.BrokenResourceError: the connection broke.
    """
    if not FD_IO or type(stream) is not trio.SocketStream:
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise socket_error(exc) from exc
