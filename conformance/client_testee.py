"""The client under test: rue_trio's ``open_websocket`` against Autobahn's ``fuzzingserver``.

Usage::

    python conformance/client_testee.py ws://127.0.0.1:9001 [--agent rue_trio]

Asks the fuzzing server how many cases it has (``/getCaseCount``), runs each one
(``/runCase?case=N&agent=A``: connect with permessage-deflate, echo every message until
the server closes), then asks it to write its reports (``/updateReports?agent=A``). Each
case is bounded by ``--case-timeout``; one that fails or times out is logged and the
run goes on, so the report tells what happened.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from rue_trio import RueTrioError, WebSocketConn, open_websocket

# Autobahn's largest messages (cases 9.1.6 and 9.2.6) are 16 MiB; 1 MiB is the default.
MAX_MESSAGE_SIZE = 32 * 1024 * 1024


async def echo_until_closed(conn: WebSocketConn) -> None:
    """Send every message back as it came, until the peer closes.

    Args:
        conn: the connection.
    """
    async for message in conn:
        await conn.send(message.type, message.data)


async def case_count(base: str) -> int:
    """Ask the fuzzing server how many cases it runs.

    Args:
        base: the server's ``ws://host:port`` URL.

    Returns:
        The number of cases.
    """
    async with open_websocket(f"{base}/getCaseCount") as conn:
        message = await conn.receive()
        return int(message.data)


async def run_case(base: str, agent: str, case: int) -> str:
    """Run one case: connect, echo until the server closes.

    Args:
        base: the server's ``ws://host:port`` URL.
        agent: the name the reports give the client.
        case: the case number, from 1.

    Returns:
        How the case ended, for the log.
    """
    url = f"{base}/runCase?case={case}&agent={agent}"
    try:
        async with open_websocket(
            url, compression=True, max_message_size=MAX_MESSAGE_SIZE
        ) as conn:
            await echo_until_closed(conn)
        return f"closed {conn.close_code}"
    except RueTrioError as exc:
        await trio.lowlevel.checkpoint()  # a failed connect may not have reached one
        return f"{type(exc).__name__}: {exc}"


async def run(base: str, agent: str, case_seconds: float) -> None:
    """Run every case the fuzzing server has, then have it write its reports.

    Args:
        base: the server's ``ws://host:port`` URL.
        agent: the name the reports give the client.
        case_seconds: how long each case may take.
    """
    count = await case_count(base)
    print(f"{count} cases", flush=True)
    for case in range(1, count + 1):
        started = time.monotonic()
        outcome = f"timed out after {case_seconds} s"
        with trio.move_on_after(case_seconds):
            outcome = await run_case(base, agent, case)
        print(f"case {case}/{count}: {outcome} ({time.monotonic() - started:.2f} s)", flush=True)
    async with open_websocket(f"{base}/updateReports?agent={agent}") as conn:
        await conn.close()


def main() -> None:
    """Parse the command line and run the cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the fuzzing server, e.g. ws://127.0.0.1:9001")
    parser.add_argument("--agent", default="rue_trio", help="the client's name in reports")
    parser.add_argument(
        "--case-timeout", type=float, default=180.0, help="seconds each case may take"
    )
    args = parser.parse_args()
    try:
        trio.run(run, args.url.rstrip("/"), args.agent, args.case_timeout)
    except RueTrioError as exc:
        sys.exit(f"client_testee: cannot talk to the fuzzing server: {exc}")


if __name__ == "__main__":
    main()
