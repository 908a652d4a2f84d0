"""The plain answers a context sends: content-type fields, the 404, a file in chunks."""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING, Final, Protocol

import trio

from rue_trio.http import READ_SIZE, HeaderList

if TYPE_CHECKING:
    from rue_trio.app._context import Context

TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
JSON: Final = (b"content-type", b"application/json; charset=utf-8")
HTML: Final = (b"content-type", b"text/html; charset=utf-8")


async def not_found(c: Context) -> None:
    await c.respond(404, b"404 page not found", headers=(TEXT,))


class _Readable(Protocol):
    async def read(self, size: int, /) -> bytes: ...


class _FileChunks:
    """An async iterator over an open file, in ``READ_SIZE`` chunks."""

    __slots__ = ("_file",)

    def __init__(self, file: _Readable) -> None:
        self._file = file

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._file.read(READ_SIZE)
        if not chunk:
            raise StopAsyncIteration
        return chunk


async def send_file(
    c: Context,
    path: trio.Path,
    size: int,
    content_type: str | None,
    headers: HeaderList,
) -> None:
    if content_type is None:
        guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if guessed.startswith("text/"):
            guessed += "; charset=utf-8"
        content_type = guessed
    fields = ((b"content-type", content_type), *headers)
    try:
        file = await path.open("rb")
    except OSError:
        await not_found(c)
        return
    async with file:
        await c._conn.respond_stream(200, fields, _FileChunks(file), size)
