"""A Griffe extension for the API reference: Sphinx roles become cross-references.

rue_trio's docstrings name other objects the Sphinx way (``:meth:`count```,
``:class:`~rue_trio.hub.Hub```). mkdocstrings renders Markdown, where such roles would
show as they are typed. This extension, loaded by mkdocstrings (see ``mkdocs.yml``),
rewrites each role into a link to the object it names, resolved from where the
docstring sits (a method's sibling, the module's import, a full path), the way Sphinx
resolves it. A name that the reference does not render (``trio.Nursery``) stays
plain code: the links are marked optional, so they never break the build. It also turns
reStructuredText's ``Example::`` into ``Example:`` (the indented block after it is
already a Markdown code block), and shows a parameter whose default is a private
constant with that constant's value.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|attr|data|exc|mod|obj|const|type):"
    r"`(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^>]+)>$")
_LITERAL_BLOCK = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)
_CALLABLE_ROLES = frozenset({"meth", "func"})


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring of the package."""

    def on_package(
        self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any
    ) -> None:
        """Rewrite the docstrings once the whole package is loaded (names resolve)."""
        for obj in _objects(pkg):
            if isinstance(obj, griffe.Function):
                _show_private_defaults(obj)
            docstring = obj.docstring
            if docstring is None:
                continue
            text = _ROLE.sub(partial(_link, obj, loader), docstring.value)
            docstring.value = _LITERAL_BLOCK.sub(":", text)


def _show_private_defaults(function: griffe.Function) -> None:
    """Show ``config=ConnectionConfig()``, not the private constant that holds it."""
    for parameter in function.parameters:
        default = str(parameter.default) if parameter.default is not None else ""
        if not default.startswith("_"):
            continue
        constant = function.module.members.get(default)
        if isinstance(constant, griffe.Attribute) and constant.value is not None:
            parameter.default = constant.value


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


def _link(obj: griffe.Object, loader: griffe.GriffeLoader, match: re.Match[str]) -> str:
    body = match["body"].strip()
    titled = _TITLED.match(body)
    title = titled["title"] if titled else None
    target = titled["target"] if titled else body
    short = target.startswith("~")
    target = target.lstrip("~.!")
    if title is None:
        title = target.rsplit(".", 1)[-1] if short else target
        if match["role"] in _CALLABLE_ROLES:
            title += "()"
    code = f"<code>{html.escape(title)}</code>"
    path = _resolve(obj, loader, target)
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _resolve(obj: griffe.Object, loader: griffe.GriffeLoader, target: str) -> str | None:
    """The full path of ``target`` as seen from ``obj``, if the package holds it."""
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(target)
        except (griffe.NameResolutionError, ValueError):
            path = None
        if path is not None and _exists(loader, path):
            return path
        candidate = f"{scope.path}.{target}"
        if _exists(loader, candidate):
            return candidate
        scope = scope.parent
    return target if _exists(loader, target) else None


def _exists(loader: griffe.GriffeLoader, path: str) -> bool:
    try:
        loader.modules_collection[path]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True
