"""The documentation site builds, and what it shows is clean.

Built once with ``mkdocs build --strict`` (which already fails on a cross-reference
that does not resolve), then read: no raw Sphinx roles left in any page, every local
link and anchor resolves, and the API reference names no private module and no file of
the repository.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj):")
HREF = re.compile(r'href="([^"]*)"')
ID = re.compile(r'id="([^"]*)"')
PRIVATE_MODULE = re.compile(r"rue_trio(?:\.[a-z]\w*)*\._[a-z]\w*")
REPOSITORY_PATH = re.compile(r"\b(?:rue_trio|docs|tests|bench|tools)/[\w/]*\.(?:py|md)\b")

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out


def pages(site: Path) -> list[Path]:
    found = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(found) > 10
    return found


def test_site_has_no_raw_sphinx_roles(site: Path) -> None:
    raw = {
        str(page.relative_to(site)): ROLE.findall(page.read_text())
        for page in pages(site)
        if ROLE.search(page.read_text())
    }
    assert raw == {}


def test_site_local_links_and_anchors_resolve(site: Path) -> None:
    ids: dict[Path, set[str]] = {}

    def anchors(page: Path) -> set[str]:
        if page not in ids:
            ids[page] = set(ID.findall(page.read_text()))
        return ids[page]

    broken: list[str] = []
    for page in pages(site):
        for href in HREF.findall(page.read_text()):
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists() or (
                parts.fragment and unquote(parts.fragment) not in anchors(target)
            ):
                broken.append(f"{page.relative_to(site)}: {href}")
    assert broken == []


def test_site_reference_names_no_private_module_or_file(site: Path) -> None:
    found: list[str] = []
    for page in (site / "reference").rglob("*.html"):
        text = page.read_text()
        found += PRIVATE_MODULE.findall(text) + REPOSITORY_PATH.findall(text)
    assert found == []
