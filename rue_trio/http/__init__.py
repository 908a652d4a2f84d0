"""HTTP/1.1 for rue_trio: h11 glue and a pure router; no WebSocket knowledge.

* :class:`Router` maps a method and a path to a handler and its path parameters
  (Gin-style ``:param`` and ``*catchall`` segments).
* :class:`HTTPConnection` serves one connection over any :class:`trio.abc.Stream`:
  it reads requests under size and time limits (:class:`HTTPLimits`), writes responses,
  and hands the stream over after a ``101 Switching Protocols``.
* :class:`Request` is what a route sees.
"""

from rue_trio.http._connection import Dispatch, HTTPConnection, Lookup
from rue_trio.http._core import READ_SIZE
from rue_trio.http._limits import HTTPLimits
from rue_trio.http._request import Request, split_target
from rue_trio.http._router import ALL_METHODS, MethodNotAllowed, RouteMatch, Router
from rue_trio.http._writing import HeaderList

__all__ = [
    "ALL_METHODS",
    "READ_SIZE",
    "Dispatch",
    "HTTPConnection",
    "HTTPLimits",
    "HeaderList",
    "Lookup",
    "MethodNotAllowed",
    "Request",
    "RouteMatch",
    "Router",
    "split_target",
]
