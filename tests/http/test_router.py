"""The pure router: static, :param and *catch-all segments, precedence, 404/405, conflicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rue_trio.http import ALL_METHODS, MethodNotAllowed, RouteMatch, Router


def _router(*routes: tuple[str, str]) -> Router[str]:
    router: Router[str] = Router()
    for method, pattern in routes:
        router.add(method, pattern, f"{method} {pattern}")
    return router


def _match(router: Router[str], method: str, path: str) -> RouteMatch[str]:
    found = router.lookup(method, path)
    assert isinstance(found, RouteMatch), found
    return found


def test_router_lookup_static_path() -> None:
    router = _router(("GET", "/"), ("GET", "/users"), ("GET", "/users/list"))
    assert _match(router, "GET", "/").handler == "GET /"
    assert _match(router, "GET", "/users").handler == "GET /users"
    found = _match(router, "GET", "/users/list")
    assert found.handler == "GET /users/list"
    assert found.params == {}
    assert found.pattern == "/users/list"


def test_router_lookup_trailing_slash_is_a_different_path() -> None:
    router = _router(("GET", "/users"))
    assert router.lookup("GET", "/users/") is None


def test_router_lookup_param_captures_one_segment() -> None:
    router = _router(("GET", "/ws/:room"), ("GET", "/users/:id/posts/:post"))
    assert _match(router, "GET", "/ws/lobby").params == {"room": "lobby"}
    found = _match(router, "GET", "/users/7/posts/99")
    assert found.params == {"id": "7", "post": "99"}
    assert found.pattern == "/users/:id/posts/:post"
    # A parameter matches one non-empty segment, as in httprouter.
    assert router.lookup("GET", "/ws/") is None
    assert router.lookup("GET", "/ws") is None
    assert router.lookup("GET", "/ws/a/b") is None


def test_router_lookup_catch_all_captures_rest_with_slash() -> None:
    router = _router(("GET", "/static/*filepath"))
    assert _match(router, "GET", "/static/").params == {"filepath": "/"}
    assert _match(router, "GET", "/static/a").params == {"filepath": "/a"}
    assert _match(router, "GET", "/static/css/a.css").params == {"filepath": "/css/a.css"}
    assert _match(router, "GET", "/static/a//b/").params == {"filepath": "/a//b/"}
    # The catch-all needs its slash: "/static" itself is not matched.
    assert router.lookup("GET", "/static") is None


def test_router_lookup_root_catch_all_matches_everything() -> None:
    router = _router(("GET", "/*path"), ("GET", "/api/:v"))
    assert _match(router, "GET", "/").params == {"path": "/"}
    assert _match(router, "GET", "/x/y").params == {"path": "/x/y"}
    assert _match(router, "GET", "/api/1").params == {"v": "1"}
    assert _match(router, "GET", "/api/1/2").params == {"path": "/api/1/2"}


def test_router_lookup_prefers_static_then_param_then_catch_all() -> None:
    router = _router(
        ("GET", "/users/new"),
        ("GET", "/users/:id"),
        ("GET", "/users/*rest"),
    )
    assert _match(router, "GET", "/users/new").handler == "GET /users/new"
    assert _match(router, "GET", "/users/42").handler == "GET /users/:id"
    assert _match(router, "GET", "/users/42/x").handler == "GET /users/*rest"
    assert _match(router, "GET", "/users/").handler == "GET /users/*rest"


def test_router_lookup_backtracks_when_static_branch_dead_ends() -> None:
    router = _router(("GET", "/a/b/c"), ("GET", "/a/:x/d"), ("GET", "/a/*rest"))
    found = _match(router, "GET", "/a/b/d")
    assert found.handler == "GET /a/:x/d"
    assert found.params == {"x": "b"}
    found = _match(router, "GET", "/a/b/e")
    assert found.params == {"rest": "/b/e"}


def test_router_lookup_param_backtracks_without_leaking_values() -> None:
    router = _router(("GET", "/:a/x"), ("GET", "/*rest"))
    found = _match(router, "GET", "/one/y")
    assert found.params == {"rest": "/one/y"}


def test_router_lookup_unknown_path_is_none() -> None:
    router = _router(("GET", "/a"))
    assert router.lookup("GET", "/b") is None
    assert router.lookup("GET", "*") is None
    assert router.lookup("GET", "") is None


def test_router_lookup_other_method_is_405_with_allowed() -> None:
    router = _router(("GET", "/x"), ("POST", "/x"), ("DELETE", "/:any"))
    found = router.lookup("PUT", "/x")
    assert found == MethodNotAllowed(("DELETE", "GET", "HEAD", "POST"))


def test_router_lookup_405_lists_no_requested_method() -> None:
    router = _router(("POST", "/x"), ("HEAD", "/x"))
    assert router.lookup("GET", "/x") == MethodNotAllowed(("HEAD", "POST"))


def test_router_lookup_head_falls_back_to_get() -> None:
    router = _router(("GET", "/x/:id"), ("HEAD", "/y"), ("GET", "/y"))
    found = _match(router, "HEAD", "/x/3")
    assert found.handler == "GET /x/:id"
    assert found.params == {"id": "3"}
    assert _match(router, "HEAD", "/y").handler == "HEAD /y"


def test_router_lookup_per_method_precedence() -> None:
    """Each method has its own tree, as in httprouter."""
    router = _router(("POST", "/users/new"), ("GET", "/users/:id"))
    assert _match(router, "GET", "/users/new").params == {"id": "new"}
    assert _match(router, "POST", "/users/new").handler == "POST /users/new"


def test_router_add_duplicate_route_raises() -> None:
    router = _router(("GET", "/a/:id"))
    with pytest.raises(ValueError, match="conflicts"):
        router.add("GET", "/a/:id", "again")
    router.add("POST", "/a/:id", "other method is fine")


def test_router_add_conflicting_param_names_raises() -> None:
    router = _router(("GET", "/users/:id"))
    with pytest.raises(ValueError, match=":name"):
        router.add("GET", "/users/:name/posts", "x")


def test_router_add_duplicate_catch_all_raises() -> None:
    router = _router(("GET", "/files/*path"))
    with pytest.raises(ValueError, match="conflicts"):
        router.add("GET", "/files/*path", "x")


def test_router_add_conflicting_catch_all_names_raises() -> None:
    router = _router(("GET", "/files/*path"))
    with pytest.raises(ValueError, match=r"\*rest"):
        router.add("GET", "/files/*rest", "x")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("nope", "must start with '/'"),
        ("/a/:", "needs a name"),
        ("/a/*", "needs a name"),
        ("/a/*rest/b", "must be last"),
        ("/:id/:id", "appears twice"),
        ("/:id/*id", "appears twice"),
    ],
)
def test_router_add_malformed_pattern_raises(pattern: str, message: str) -> None:
    router: Router[str] = Router()
    with pytest.raises(ValueError, match=message):
        router.add("GET", pattern, "x")


def test_router_add_empty_method_raises() -> None:
    router: Router[str] = Router()
    with pytest.raises(ValueError, match="method"):
        router.add("", "/", "x")


def test_router_all_methods_matches_gin_any() -> None:
    assert set(ALL_METHODS) == {
        "GET",
        "POST",
        "PUT",
        "PATCH",
        "HEAD",
        "OPTIONS",
        "DELETE",
        "CONNECT",
        "TRACE",
    }


_static_segment = st.text(
    alphabet=st.characters(exclude_characters="/", exclude_categories=["Cs"]),
    max_size=8,
).filter(lambda s: not s.startswith((":", "*")))
_param_value = st.text(
    alphabet=st.characters(exclude_characters="/", exclude_categories=["Cs"]),
    min_size=1,
    max_size=8,
)


@given(st.lists(_static_segment, max_size=6))
def test_router_lookup_static_path_matches_itself(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    router: Router[str] = Router()
    router.add("GET", path, path)
    found = router.lookup("GET", path)
    assert isinstance(found, RouteMatch)
    assert found.handler == path
    assert found.params == {}


@given(st.lists(_param_value, min_size=1, max_size=5), st.data())
def test_router_lookup_params_capture_any_segment(values: list[str], data: st.DataObject) -> None:
    names = [f"p{i}" for i in range(len(values))]
    static = [data.draw(_static_segment.filter(bool)) for _ in values]
    pattern = "".join(f"/{s}/:{n}" for s, n in zip(static, names, strict=True))
    path = "".join(f"/{s}/{v}" for s, v in zip(static, values, strict=True))
    router: Router[str] = Router()
    router.add("GET", pattern, "h")
    found = router.lookup("GET", path)
    assert isinstance(found, RouteMatch)
    assert found.params == dict(zip(names, values, strict=True))


@given(st.lists(_static_segment, max_size=6))
def test_router_lookup_catch_all_captures_any_rest(segments: list[str]) -> None:
    router: Router[str] = Router()
    router.add("GET", "/files/*path", "h")
    rest = "/" + "/".join(segments)
    found = router.lookup("GET", "/files" + rest)
    assert isinstance(found, RouteMatch)
    assert found.params == {"path": rest}
