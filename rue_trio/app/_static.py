"""Static files: which file under a folder a request path names, and the route serving it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from rue_trio.app._responses import not_found, send_file

if TYPE_CHECKING:
    from rue_trio.app._context import Context, RouteFunction


async def _resolve_static(root: Path, relative: str) -> tuple[trio.Path, int] | None:
    """The file under ``root`` that ``relative`` names, and its size; ``None`` if none.

    ``..`` segments, backslashes and NUL bytes are refused outright; then the path is
    resolved (following symbolic links) and must still be inside ``root``.
    """
    # A checkpoint first, as the refusals just below return without awaiting.
    await trio.lowlevel.checkpoint()
    parts = relative.split("/")
    for part in parts:
        if part == ".." or "\\" in part or "\x00" in part:
            return None
    candidate = trio.Path(root, *(part for part in parts if part and part != "."))
    for _ in range(2):
        try:
            resolved = await candidate.resolve(strict=True)
            info = await resolved.stat()
        except (OSError, RuntimeError):
            # RuntimeError: a symbolic link loop.
            return None
        if not Path(resolved).is_relative_to(root):
            return None
        if stat.S_ISREG(info.st_mode):
            return resolved, info.st_size
        if not stat.S_ISDIR(info.st_mode):
            return None
        candidate = resolved / "index.html"
    return None


def static_route(root: Path) -> RouteFunction:
    """The route serving the files under ``root`` (resolved) by its ``*filepath``."""

    async def serve_static(c: Context) -> None:
        found = await _resolve_static(root, c.param("filepath"))
        if found is None:
            await not_found(c)
        else:
            await send_file(c, found[0], found[1], None, ())

    return serve_static
