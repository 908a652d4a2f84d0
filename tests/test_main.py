"""``python -m rue_trio``: the command line starts the chat demo and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio

from rue_trio import open_websocket
from rue_trio.__main__ import main


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, f"the demo exited before printing its address: {data!r}"
        data += chunk
    return data.decode()


async def test_main_serves_chat_then_exits_cleanly_on_sigint() -> None:
    """A real process on a free port: a WebSocket joins, then Ctrl-C exits with 0."""
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "rue_trio", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert process.stdout is not None
            line = await read_line(process.stdout)
            prefix = "rue_trio chat demo: http://127.0.0.1:"
            assert line.startswith(prefix), line
            port = int(line[len(prefix) :].strip().rstrip("/"))
            async with open_websocket(f"ws://127.0.0.1:{port}/ws/lobby?name=ada") as conn:
                welcome = await conn.receive_json()
                while welcome["type"] != "members":
                    welcome = await conn.receive_json()
                assert (welcome["members"], welcome["you"]) == (["ada"], "ada")
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2"], "--workers needs --redis"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
    ],
)
def test_main_refuses_unavailable_or_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_main_unreachable_redis_exits_with_1() -> None:
    """--redis wires a RedisBackplane into the demo's hub; no Redis there is an error.

    In a child process: coredis leaves anyio streams for the garbage collector when it
    cannot connect, and their ResourceWarning would fail this run.
    """
    result = subprocess.run(
        [sys.executable, "-m", "rue_trio", "--port", "0", "--redis", "redis://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("python -m rue_trio: error: cannot reach Redis at redis://127.0.0.1:1")
