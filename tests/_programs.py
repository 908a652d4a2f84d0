"""Run a rue_trio program in a child process and learn the port it listens on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = b"listening on http://127.0.0.1:"


class Program:
    """A child process serving on 127.0.0.1, and what it wrote on stderr so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = b""
        self.port = 0

    async def read_until(self, marker: bytes) -> None:
        assert self.process.stderr is not None
        while marker not in self.stderr or not self.stderr.endswith(b"\n"):
            chunk = await self.process.stderr.receive_some()
            assert chunk, f"the program exited: {self.stderr.decode()}"
            self.stderr += chunk

    async def read_to_end(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some():
            self.stderr += chunk


@asynccontextmanager
async def serving(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Program]:
    """Start ``python *args`` (this checkout's rue_trio first on the path), wait until it
    logs ``listening on http://127.0.0.1:PORT``, and kill it on the way out if it still
    runs."""
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        [sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=ROOT,
    )
    try:
        program = Program(process)
        await program.read_until(_LISTENING)
        program.port = int(program.stderr.split(_LISTENING)[1].split()[0])
        yield program
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
