"""MkDocs hooks for the site: no private module paths in the rendered pages.

mkdocstrings gives a type it cannot link (``Role``, ``MessageType.TEXT`` seen through a
private module) a tooltip with the type's full path, which names the private module it
is defined in (``rue_trio.protocol._state.Role``). Every such name is re-exported by
its package, so the tooltip shows the public path instead
(``rue_trio.protocol.Role``); a private constant gets no tooltip at all.
"""

from __future__ import annotations

import re
from typing import Any

_TITLE = re.compile(r' title="([^"]*)"')
_PATH = re.compile(r"rue_trio(?:\.\w+)+")


def _public_path(match: re.Match[str]) -> str:
    *parents, name = match[0].split(".")
    return ".".join([*(part for part in parents if not part.startswith("_")), name])


def _public_title(match: re.Match[str]) -> str:
    title = " ".join(_PATH.sub(_public_path, match[1]).split())
    if any(path.rsplit(".", 1)[-1].startswith("_") for path in _PATH.findall(title)):
        return ""
    return f' title="{title}"'


def on_post_page(output: str, **kwargs: Any) -> str:
    """Rewrite the tooltips of a rendered page."""
    return _TITLE.sub(_public_title, output)
