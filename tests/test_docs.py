"""Every Python block in README.md and docs/ runs (or, for a marked fragment, compiles).

The blocks of one page share a namespace and run in order, as a reader would type them.
A block preceded by an HTML comment starting with ``<!-- fragment`` (one that needs a
server, a certificate or Redis) is only compiled. A block that includes a file with
pymdownx.snippets (``--8<-- "examples/x.py"``) is that file, run by test_examples.py:
here the file must exist. After a page has run, each ``async def test_*`` it defined is
run under Trio, with the mock clock when it asks for ``autojump_clock``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')


@dataclass
class Block:
    language: str
    code: str
    line: int
    fragment: bool


def blocks_of(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    previous = ""
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        fragment = previous.startswith("<!-- fragment")
        blocks.append(Block(opening.group(1), "\n".join(body) + "\n", start + 1, fragment))
        previous = ""
        index += 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [block for block in blocks_of(page) if block.language == "python"]


# Only the pages with a Python block are cases: a page without code proves nothing.
RUNNABLE = [page for page in PAGES if python_blocks(page)]


def test_docs_pages_have_python_blocks() -> None:
    """The collection below is not vacuous: README, the tutorial and the how-tos run."""
    assert sum(len(python_blocks(page)) for page in RUNNABLE) >= 15
    names = {str(page.relative_to(ROOT)) for page in RUNNABLE}
    assert {"README.md", "docs/tutorial.md", "docs/howto/testing.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda page: str(page.relative_to(ROOT)))
def test_docs_python_blocks_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in python_blocks(page):
        where = f"{page.relative_to(ROOT)}:{block.line}"
        included = [SNIPPET.match(line.strip()) for line in block.code.splitlines()]
        if any(included):
            for match in included:
                assert match is not None, f"{where}: a snippet block holds only includes"
                assert (ROOT / match.group(1)).is_file(), f"{where}: no {match.group(1)}"
            continue
        compiled = compile(block.code, where, "exec")
        if not block.fragment:
            exec(compiled, namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            parameters = inspect.signature(value).parameters
            if "autojump_clock" in parameters:
                clock = trio.testing.MockClock(autojump_threshold=0)
                trio.run(value, clock, clock=clock)
            else:
                trio.run(value)
