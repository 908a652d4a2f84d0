"""The C allocator settings a server applies when it starts serving (rue_trio._malloc)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rue_trio._malloc as malloc_tuning
import rue_trio.server
from rue_trio._malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, tune_malloc
from rue_trio.app import App
from tests.test_server import running

ROOT = Path(__file__).resolve().parent.parent

# A large message's life in the server, without the server: read in parts, joined,
# answered, freed; the minor page faults per round, after a warm-up.
_ROUNDS = textwrap.dedent(
    """
    import resource, sys
    from rue_trio._malloc import tune_malloc
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    def rounds(n):
        for _ in range(n):
            parts = [b"x" * 262144 for _ in range(4)]
            message = b"".join(parts)
            del parts
            reply = message.upper()
            del message, reply
    rounds(5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(100)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
    """
)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """A process where nothing was tuned yet, without the allocator's variables; the calls."""
    monkeypatch.setattr(malloc_tuning, "_done", False)
    for name in malloc_tuning._ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return []


def test_tune_malloc_sets_the_mmap_then_the_trim_threshold_once(
    fresh: list[tuple[int, int]],
) -> None:
    def mallopt(param: int, value: int) -> int:
        fresh.append((param, value))
        return 1

    assert tune_malloc(mallopt) is True
    assert fresh == [(-3, MMAP_THRESHOLD), (-1, TRIM_THRESHOLD)]
    assert tune_malloc(mallopt) is False
    assert len(fresh) == 2


@pytest.mark.parametrize(
    "name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"]
)
def test_tune_malloc_leaves_an_environment_choice_alone(
    fresh: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "1048576")

    def mallopt(param: int, value: int) -> int:
        fresh.append((param, value))
        return 1

    assert tune_malloc(mallopt) is False
    assert fresh == []


def test_tune_malloc_does_nothing_without_glibc(
    fresh: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert tune_malloc() is False
    assert malloc_tuning._done is False


async def test_server_tunes_malloc_when_it_starts_serving_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[None] = []

    def tune() -> bool:
        calls.append(None)
        return True

    monkeypatch.setattr(rue_trio.server, "tune_malloc", tune)
    async with running(App(tune_malloc=False)) as (_, scope, done):
        scope.cancel()
        await done.wait()
    assert calls == []
    async with running(App()) as (_, scope, done):
        scope.cancel()
        await done.wait()
    assert calls == [None]


def test_tuned_large_messages_stop_faulting_their_pages_back_in() -> None:
    """The measured effect, in processes of their own (the setting is per process)."""

    def faults(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _ROUNDS, mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return float(done.stdout)

    # 1 MiB read in four parts, joined and answered: about 480 faults per round
    # untuned on glibc (the heap's top given back and taken again every round), none
    # tuned. Untuned depends on the heap's layout, so only the tuned side is asserted.
    assert faults("tuned") < 8
