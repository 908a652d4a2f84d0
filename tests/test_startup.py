"""Start-up errors: one line and exit 1 from the CLI, one exception of ours from the API."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rue_trio import (
    App,
    BindError,
    InvalidAddressError,
    InvalidURIError,
    RueTrioError,
    StartupError,
)
from rue_trio.__main__ import main
from rue_trio.backplane.redis import RedisBackplane

# TEST-NET-1 (RFC 5737): no interface of this machine has it.
UNASSIGNED = "192.0.2.1"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "python -m rue_trio: error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0].removeprefix("python -m rue_trio: error: ")


def test_main_address_in_use_exits_1_with_one_line(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", str(busy_port)]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"cannot listen on 127.0.0.1:{busy_port}: the address is in use")


def test_main_workers_address_in_use_exits_1_with_one_line(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """With workers the parent reserves the port first: the same one line, no worker runs."""
    argv = ["--port", str(busy_port), "--workers", "2", "--redis", "redis://127.0.0.1:1"]
    assert main(argv) == 1
    assert one_error_line(capsys).endswith(
        "the address is in use (stop the other server or choose another port)"
    )


def test_main_unassignable_address_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--host", UNASSIGNED, "--port", "0"]) == 1
    assert "no interface of this machine has that address" in one_error_line(capsys)


def test_main_url_as_host_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "http://127.0.0.1", "--port", "0"]) == 1
    assert "is not a host name or IP address" in one_error_line(capsys)


def test_main_bad_redis_url_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0", "--redis", "htp://127.0.0.1:6379"]) == 1
    line = one_error_line(capsys)
    assert line.startswith("'htp://127.0.0.1:6379' is not a Redis URL: write redis://")


@pytest.mark.parametrize(
    ("address", "hint"),
    [
        (8094, "such as ':8094'"),
        ("http://127.0.0.1:8094", "has no scheme; write '127.0.0.1:8094'"),
        ("127.0.0.1", "is not a 'host:port' address"),
        ("::1:8080", "write an IPv6 host in brackets"),
    ],
)
def test_app_run_bad_address_raises_invalid_address_error(address: object, hint: str) -> None:
    with pytest.raises(InvalidAddressError, match=hint) as raised:
        App().run(address)  # type: ignore[arg-type]
    assert isinstance(raised.value, StartupError)
    assert isinstance(raised.value, ValueError)


def test_app_run_address_in_use_raises_bind_error_with_cause(busy_port: int) -> None:
    """Not an ExceptionGroup: the one failure, ours, with the OSError as its cause."""
    with pytest.raises(BindError) as raised:
        App().run(f"127.0.0.1:{busy_port}")
    error = raised.value
    assert isinstance(error.__cause__, OSError)
    assert error.errno == errno.EADDRINUSE
    assert str(error).startswith(f"cannot listen on 127.0.0.1:{busy_port}")


async def test_app_serve_unassignable_address_raises_bind_error() -> None:
    with pytest.raises(BindError, match="no interface") as raised:
        await App().serve(UNASSIGNED, 0)
    assert raised.value.errno == errno.EADDRNOTAVAIL


@pytest.mark.parametrize(
    ("host", "port"), [("http://localhost", 0), (8094, 0), ("127.0.0.1", "8094"), ("::1", 70000)]
)
async def test_app_serve_bad_host_or_port_raises_invalid_address_error(
    host: object, port: object
) -> None:
    with pytest.raises(InvalidAddressError):
        await App().serve(host, port)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["htp://x", "redis://:6379", "redis://h:port/0", "redis://h:6379/db", "unix://", "nonsense"],
)
def test_backplane_bad_redis_url_raises_invalid_uri_error(url: str) -> None:
    with pytest.raises(InvalidURIError):
        RedisBackplane(url)


def test_backplane_bad_redis_url_message_hides_the_password() -> None:
    with pytest.raises(InvalidURIError) as raised:
        RedisBackplane("redis://user:s3cret@h:port/0")
    assert "s3cret" not in str(raised.value)
    assert "user:***@h" in str(raised.value)


def test_app_run_unreachable_redis_raises_backplane_error() -> None:
    """app.run with a hub on an unreachable Redis: BackplaneError itself, not a group.

    In a child process: coredis leaves anyio streams for the garbage collector when it
    cannot connect, and their ResourceWarning would fail this run.
    """
    script = (
        "import rue_trio\n"
        "from rue_trio.backplane.redis import RedisBackplane\n"
        "app = rue_trio.App()\n"
        "hub = rue_trio.Hub(backplane=RedisBackplane('redis://127.0.0.1:1'))\n"
        "app.add_background(hub.run)\n"
        "try:\n"
        "    app.run('127.0.0.1:0', configure_logging=False)\n"
        "except rue_trio.BackplaneError as exc:\n"
        "    print(type(exc.__cause__).__name__, isinstance(exc, rue_trio.RueTrioError))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "True"
    assert "Error" in result.stdout.split()[0]


def test_startup_errors_are_rue_trio_errors() -> None:
    assert issubclass(BindError, RueTrioError)
    assert issubclass(BindError, OSError)
    assert issubclass(InvalidAddressError, RueTrioError)


def test_main_workers_unreachable_redis_exits_1_without_traceback() -> None:
    """Each worker says why in one line; the parent adds one line of its own, no traceback."""
    argv = ["--port", "0", "--workers", "2", "--redis", "redis://127.0.0.1:1"]
    done = subprocess.run(
        [sys.executable, "-m", "rue_trio", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "python -m rue_trio: error:" in line]
    assert any("cannot reach Redis" in line for line in lines), done.stderr
    assert lines[-1].endswith("exited on its own with status 1"), done.stderr
