"""Signals in a real process: one drains and exits 0, a second one exits within a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from rue_trio.client import open_websocket
from rue_trio.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent.parent

_SCRIPT = textwrap.dedent(
    """
    import sys
    import trio
    from rue_trio.app import App
    from rue_trio.handlers import WebSocketHandler

    async def slow_close(conn):
        print("on_close started", file=sys.stderr, flush=True)
        await trio.sleep(float(sys.argv[2]))

    app = App(shutdown_timeout=30)
    app.get("/ws", WebSocketHandler(on_close=slow_close).handle)
    app.run("127.0.0.1:0", workers=int(sys.argv[1]))
    """
)


class _Process:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = bytearray()

    async def wait_for(self, needle: bytes, count: int = 1) -> None:
        assert self.process.stderr is not None
        while self.stderr.count(needle) < count:
            chunk = await self.process.stderr.receive_some(4096)
            assert chunk, self.stderr.decode()
            self.stderr += chunk

    async def port(self, workers: int) -> int:
        marker = b"listening on http://127.0.0.1:"
        await self.wait_for(marker, workers)
        while b"\n" not in self.stderr.rpartition(marker)[2]:
            await self.wait_for(b"\n", self.stderr.count(b"\n") + 1)
        return int(self.stderr.split(marker)[1].split()[0])


async def _hold_websocket(port: int, *, task_status: trio.TaskStatus[None]) -> None:
    try:
        async with open_websocket(f"ws://127.0.0.1:{port}/ws", compression=False) as ws:
            task_status.started()
            while True:
                await ws.receive()
    except (ConnectionClosed, OSError):
        await trio.lowlevel.checkpoint()


async def _run(
    workers: int, close_seconds: float, signals: list[signal.Signals]
) -> tuple[int, float, str]:
    """Start the script, open a WebSocket, send the signals; the exit code, seconds, stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RUE_TRIO_WORKER", None)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _SCRIPT, str(workers), str(close_seconds)],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    run = _Process(process)
    try:
        with trio.fail_after(20):
            port = await run.port(workers)
            async with trio.open_nursery() as nursery:
                await nursery.start(_hold_websocket, port)
                process.send_signal(signals[0])
                await run.wait_for(b"on_close started")
                start = trio.current_time()
                for signum in signals[1:]:
                    process.send_signal(signum)
                code = await process.wait()
                elapsed = trio.current_time() - start
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some(4096):
            run.stderr += chunk
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    return code, elapsed, run.stderr.decode()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
async def test_process_second_signal_during_slow_drain_exits_within_a_second(
    workers: int, second: signal.Signals
) -> None:
    code, elapsed, text = await _run(workers, 30, [signal.SIGINT, second])
    assert elapsed < 1.0, text
    assert code == 128 + second, text
    assert "again: exiting now" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("workers", [1, 2])
async def test_process_one_signal_drains_and_exits_0(workers: int) -> None:
    code, _, text = await _run(workers, 0.2, [signal.SIGTERM])
    assert code == 0, text
    assert "shutting down gracefully" in text
    assert "Traceback" not in text
