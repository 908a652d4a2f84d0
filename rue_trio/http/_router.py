"""A pure request router: method + path to a handler and its path parameters.

Theory of operation
-------------------
Routes follow Gin (and httprouter, which Gin builds on): a pattern is a path made of
segments separated by ``/``; a segment is either

* static: matched literally (``/users``);
* a parameter, ``:name``: matches exactly one non-empty segment (``/users/:id`` matches
  ``/users/42`` but neither ``/users/`` nor ``/users``);
* a catch-all, ``*name``, allowed only as the last segment: matches the rest of the path
  *including its leading slash*, so the value is never empty: ``/static/*filepath``
  matches ``/static/`` (``filepath == "/"``) and ``/static/css/a.css``
  (``filepath == "/css/a.css"``), but not ``/static``.

Each method has its own trie of segments, as in httprouter. At every segment the lookup
prefers a static child, then the parameter child, then the catch-all, and backtracks when
a preferred branch dead-ends further down, so ``/users/new`` and ``/users/:id`` can live
side by side and ``/users/new`` always wins for that exact path.

A lookup returns a :class:`RouteMatch`, a :class:`MethodNotAllowed` carrying the methods
that would match the path (for a 405 with ``Allow``), or ``None`` (404). ``HEAD`` falls
back to the ``GET`` route when no ``HEAD`` route matches.

Registration refuses, with :class:`ValueError`, what would make a lookup ambiguous or
surprising: the same method and pattern twice, two parameter (or two catch-all) names at
the same position, a catch-all that is not last, an empty or repeated parameter name, a
pattern that does not start with ``/``.

Paths are routed after percent-decoding (like Gin's default), so an encoded ``%2F``
becomes a separator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["ALL_METHODS", "MethodNotAllowed", "RouteMatch", "Router"]

H = TypeVar("H")

#: The methods that ``any`` registers, as Gin's ``Any`` does.
ALL_METHODS: tuple[str, ...] = (
    "GET",
    "POST",
    "PUT",
    "PATCH",
    "HEAD",
    "OPTIONS",
    "DELETE",
    "CONNECT",
    "TRACE",
)


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[H]):
    """A successful lookup.

    Attributes:
        handler: the handler registered for the route.
        params: the path parameters, by name (catch-all values start with ``/``).
        pattern: the pattern the route was registered with, such as ``/ws/:room``.
    """

    handler: H
    params: Mapping[str, str]
    pattern: str


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """The path exists, but not for this method.

    Attributes:
        allowed: the methods that do match the path, sorted (``HEAD`` included when
            ``GET`` is there), ready for an ``Allow`` header.
    """

    allowed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Route(Generic[H]):
    handler: H
    names: tuple[str, ...]
    pattern: str


class _Node(Generic[H]):
    """One segment position in a method's trie."""

    __slots__ = ("catch_all", "catch_all_name", "param", "param_name", "route", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node[H]] = {}
        self.param: _Node[H] | None = None
        self.param_name = ""
        self.catch_all: _Node[H] | None = None
        self.catch_all_name = ""
        self.route: _Route[H] | None = None


_EMPTY: Mapping[str, str] = {}


class Router(Generic[H]):
    """Routes (method, path) pairs to handlers; see the module docstring for the rules.

    The router does no I/O; it is built once at start-up and then only read.
    """

    __slots__ = ("_trees",)

    def __init__(self) -> None:
        self._trees: dict[str, _Node[H]] = {}

    def add(self, method: str, pattern: str, handler: H) -> None:
        """Register ``handler`` for ``method`` and ``pattern``.

        Args:
            method: an HTTP method, such as ``"GET"`` (compared case-sensitively, as
                RFC 9110 section 9.1 says methods are).
            pattern: a path pattern, such as ``"/ws/:room"`` or ``"/static/*filepath"``.
            handler: what :meth:`lookup` returns for a matching request.

        Raises:
            ValueError: the pattern is malformed or conflicts with a registered route.
        """
        if not method:
            raise ValueError("the method must not be empty")
        segments = _split_pattern(pattern)
        node = self._trees.get(method)
        if node is None:
            node = self._trees[method] = _Node()
        names: list[str] = []
        last = len(segments) - 1
        for index, segment in enumerate(segments):
            kind = segment[:1]
            if kind == ":" or kind == "*":
                name = segment[1:]
                if not name:
                    raise ValueError(f"{pattern!r}: a parameter needs a name")
                if name in names:
                    raise ValueError(f"{pattern!r}: the parameter {name!r} appears twice")
                names.append(name)
            if kind == ":":
                if node.param is None:
                    node.param = _Node()
                    node.param_name = name
                elif node.param_name != name:
                    raise ValueError(
                        f"{pattern!r}: ':{name}' conflicts with ':{node.param_name}' "
                        f"already registered at the same position for {method}"
                    )
                node = node.param
            elif kind == "*":
                if index != last:
                    raise ValueError(f"{pattern!r}: a catch-all '*{name}' must be last")
                if node.catch_all is None:
                    node.catch_all = _Node()
                    node.catch_all_name = name
                elif node.catch_all_name != name:
                    raise ValueError(
                        f"{pattern!r}: '*{name}' conflicts with '*{node.catch_all_name}' "
                        f"already registered at the same position for {method}"
                    )
                node = node.catch_all
            else:
                child = node.static.get(segment)
                if child is None:
                    child = node.static[segment] = _Node()
                node = child
        if node.route is not None:
            raise ValueError(
                f"{method} {pattern!r} conflicts with {method} {node.route.pattern!r}"
            )
        node.route = _Route(handler, tuple(names), pattern)

    def lookup(self, method: str, path: str) -> RouteMatch[H] | MethodNotAllowed | None:
        """Find the route for a request.

        Args:
            method: the request method.
            path: the percent-decoded request path (starting with ``/``).

        Returns:
            The match; or :class:`MethodNotAllowed` when the path matches only under
            other methods; or ``None`` when it matches nothing (404).
        """
        if not path.startswith("/"):
            return None
        segments = path[1:].split("/")
        values: list[str] = []
        tree = self._trees.get(method)
        route = _match(tree, segments, 0, values) if tree is not None else None
        if route is None and method == "HEAD":
            tree = self._trees.get("GET")
            route = _match(tree, segments, 0, values) if tree is not None else None
        if route is not None:
            params = dict(zip(route.names, values, strict=True)) if values else _EMPTY
            return RouteMatch(route.handler, params, route.pattern)
        allowed = self._allowed(segments, method)
        return MethodNotAllowed(allowed) if allowed else None

    def _allowed(self, segments: list[str], exclude: str) -> tuple[str, ...]:
        allowed: set[str] = set()
        for method, tree in self._trees.items():
            if method != exclude and _match(tree, segments, 0, []) is not None:
                allowed.add(method)
        if "GET" in allowed:
            allowed.add("HEAD")
        allowed.discard(exclude)
        return tuple(sorted(allowed))


def _split_pattern(pattern: str) -> list[str]:
    if not pattern.startswith("/"):
        raise ValueError(f"{pattern!r}: a route pattern must start with '/'")
    return pattern[1:].split("/")


def _match(node: _Node[H], segments: list[str], index: int, values: list[str]) -> _Route[H] | None:
    """Depth-first match: static, then parameter, then catch-all, with backtracking."""
    if index == len(segments):
        return node.route
    segment = segments[index]
    child = node.static.get(segment)
    if child is not None:
        route = _match(child, segments, index + 1, values)
        if route is not None:
            return route
    if node.param is not None and segment:
        values.append(segment)
        route = _match(node.param, segments, index + 1, values)
        if route is not None:
            return route
        values.pop()
    if node.catch_all is not None and node.catch_all.route is not None:
        values.append("/" + "/".join(segments[index:]))
        return node.catch_all.route
    return None
