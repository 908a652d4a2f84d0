"""A real server process out of file descriptors (its RLIMIT_NOFILE lowered from outside)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from rue_trio.client import open_websocket
from rue_trio.protocol import MessageType
from tests.http._client import Client

ROOT = Path(__file__).resolve().parent.parent.parent

_SCRIPT = textwrap.dedent(
    """
    from rue_trio.app import App
    from rue_trio.handlers import WebSocketHandler

    app = App()
    app.get("/", lambda c: c.string(200, "ok"))
    app.get("/ws", WebSocketHandler(on_message=lambda c, t, d: c.send(t, d)).handle)
    app.run("127.0.0.1:0")
    """
)


async def test_process_out_of_descriptors_backs_off_and_keeps_serving() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _SCRIPT], stderr=subprocess.PIPE, cwd=ROOT, env=env
    )
    assert process.stderr is not None
    stderr = bytearray()

    async def read_until(needle: bytes) -> None:
        assert process.stderr is not None
        while needle not in stderr:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, stderr.decode()
            stderr.extend(chunk)

    try:
        with trio.fail_after(20):
            await read_until(b"listening on http://127.0.0.1:")
            await read_until(b"\n")
            port = int(stderr.decode().split("listening on http://127.0.0.1:")[1].split()[0])
            async with open_websocket(f"ws://127.0.0.1:{port}/ws", compression=False) as ws:
                await ws.send(MessageType.TEXT, "before")
                assert (await ws.receive()).data == "before"
                # No descriptor left for the server: accept(2) fails with EMFILE.
                soft, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
                in_use = len(os.listdir(f"/proc/{process.pid}/fd"))
                resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (in_use, hard))
                waiting = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
                await read_until(b"accept failed")
                await trio.sleep(2)
                # The open WebSocket is served meanwhile.
                await ws.send(MessageType.TEXT, "during")
                assert (await ws.receive()).data == "during"
                # Descriptors back: the waiting clients are served.
                resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (soft, hard))
                for stream in waiting:
                    async with stream:
                        assert (await Client(stream).request("GET", "/")).body == b"ok"
                await read_until(b"accepting again")
            process.terminate()
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    text = stderr.decode()
    # One line when it started failing; the next would come 5 s later, not every 0.1 s.
    assert text.count("accept failed") + text.count("accept still failing") <= 2, text
    assert "Traceback" not in text
