"""``python -m rue_trio``: the chat demo, with rooms, presence and a browser page.

Run it and open the address it prints (http://127.0.0.1:8080 by default)::

    python -m rue_trio [--host HOST] [--port PORT] [--redis URL] [--workers N]

By default everything runs in this one process with the in-process Hub: there is nothing
else to start. ``--redis URL`` gives the hub a
:class:`~rue_trio.backplane.redis.RedisBackplane`, and ``--workers N`` (which needs
``--redis``) serves the port from N processes with ``app.run(address, workers=N)``.
``--port 0`` picks a free port; in one process the first line on standard output is
``rue_trio chat demo: http://HOST:PORT/``. Ctrl-C (or SIGTERM) shuts down gracefully:
the listeners close, every WebSocket gets 1001 (going away), the hub stops.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from rue_trio import App, Hub
from rue_trio._demo import make_app
from rue_trio._demo._live import make_live
from rue_trio._groups import single_failure
from rue_trio._listen import format_address
from rue_trio.exceptions import RueTrioError

__all__ = ["main"]

_log = logging.getLogger("rue_trio.demo")

# The Redis keys and channels of the demo's hubs all start with this.
_NAMESPACE = "rue_trio_demo"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rue_trio",
        description="The rue_trio chat demo: rooms at /ws/:room, live member lists.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port, 0 for any free one (8080)")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="connect the hubs of several processes through Redis (redis://host:6379/0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes (needs --redis so that rooms span them)",
    )
    return parser


async def _serve(app: App, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(app.serve, host, port)
            bound_host, bound_port = addresses[0]
            # The first line on stdout is the address: scripts and tests read it there.
            print(f"rue_trio chat demo: http://{format_address(bound_host, bound_port)}/")
            sys.stdout.flush()
            async for signum in signals:
                _log.info("received %s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chat demo until Ctrl-C or SIGTERM.

    Args:
        argv: the command-line arguments, without the program name (``sys.argv[1:]``
            by default).

    Returns:
        The exit status: 0 after a clean shutdown, 1 when the server cannot start (the
        address is in use or not this machine's, a bad host, a bad or unreachable
        Redis; one line on stderr says why), 2 for a bad option, 130 when interrupted
        before it began to serve.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {args.port}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if args.workers > 1 and args.redis is None:
        parser.error("--workers needs --redis: without it each process has rooms of its own")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # coredis logs each retry at INFO; the backplane says what matters in its own words.
    logging.getLogger("coredis").setLevel(logging.WARNING)
    try:
        _run(parser, args)
    except RueTrioError as error:
        # A start-up failure (the address, Redis): one line that says what to fix.
        print(f"python -m rue_trio: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C before serving began (or, in a worker, the parent stopping it while it
        # still imports): nothing to drain, nothing to say.
        return 130
    return 0


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    hub = live = None
    if args.redis is not None:
        try:
            from rue_trio.backplane.redis import RedisBackplane
            from rue_trio.backplane.streams import RedisStreams
            from rue_trio.backplane.users import RedisUsers
        except ImportError:
            parser.error("--redis needs the redis extra: pip install -e '.[redis]' in a checkout")
        hub = Hub(backplane=RedisBackplane(args.redis, namespace=_NAMESPACE))
        # The /live rooms: their own channels, their history in Redis Streams, and who is
        # in them across the workers.
        live_namespace = f"{_NAMESPACE}:live"
        live = make_live(
            RedisBackplane(args.redis, namespace=live_namespace),
            RedisStreams(args.redis, namespace=live_namespace),
            # A heartbeat a second: another worker's arrivals are told within one.
            RedisUsers(args.redis, namespace=live_namespace, heartbeat_interval=1.0),
        )
    app = make_app(hub, live)
    if args.workers > 1:
        # Each worker runs this same command line again and serves the shared port.
        app.run(format_address(args.host, args.port), workers=args.workers)
        return
    try:
        trio.run(partial(_serve, app, args.host, args.port))
    except BaseExceptionGroup as group:
        failure = single_failure(group)
        if failure is None:
            raise
        raise failure from failure.__cause__


if __name__ == "__main__":
    sys.exit(main())
