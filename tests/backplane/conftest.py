"""Fixtures for the Redis backplane tests: a reachable Redis and a fresh namespace."""

from __future__ import annotations

import gc
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("RUE_TRIO_REDIS_URL", "redis://127.0.0.1:6379")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis to test against: missing Redis skips locally and fails under CI."""
    if not _reachable(REDIS_URL):
        message = f"Redis is not reachable at {REDIS_URL} (set RUE_TRIO_REDIS_URL)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses: its channels and keys are its own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def collect_coredis_leftovers() -> Iterator[None]:
    """Collect coredis's unclosed anyio streams around each test, without their warnings.

    coredis 6 leaves the anyio memory streams of a dropped or never-opened connection to
    the garbage collector, whose ResourceWarning would otherwise fail whichever later
    test happens to be running when it collects them. Any other unraisable still counts.
    Before the test too: what an earlier test left referenced a little longer (a log
    record, a report) is collected here rather than in the middle of this test.
    """
    _collect_quietly()
    yield
    _collect_quietly()


def _collect_quietly() -> None:
    original = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, ResourceWarning) and "MemoryObject" in str(
            unraisable.exc_value
        ):
            return
        original(unraisable)

    sys.unraisablehook = hook
    try:
        gc.collect()
    finally:
        sys.unraisablehook = original
