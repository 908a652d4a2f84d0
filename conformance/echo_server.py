"""The server under test: a rue_trio echo endpoint for Autobahn's ``fuzzingclient``.

Usage::

    python conformance/echo_server.py PORT_FILE

Serves ``ws://127.0.0.1:<port>/ws`` through the public API (an :class:`rue_trio.App`
route and a :class:`rue_trio.WebSocketHandler` with permessage-deflate), writes the
port it bound to ``PORT_FILE`` once it listens, and stops gracefully on SIGTERM or
SIGINT. Every message is echoed back with its type.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import trio

from rue_trio import App, Context, MessageType, WebSocketConn, WebSocketHandler

# Autobahn's largest messages (cases 9.1.6 and 9.2.6) are 16 MiB; 1 MiB is the default.
MAX_MESSAGE_SIZE = 32 * 1024 * 1024


async def echo(conn: WebSocketConn, msg_type: MessageType, data: str | bytes) -> None:
    """Send every message back as it came.

    Args:
        conn: the connection.
        msg_type: text or binary.
        data: the message.
    """
    await conn.send(msg_type, data)


def build_app() -> App:
    """The app under test: one echo route, compression on, messages up to 32 MiB.

    Returns:
        The app.
    """
    app = App(shutdown_timeout=2.0)
    handler = WebSocketHandler(
        on_message=echo, compression=True, max_message_size=MAX_MESSAGE_SIZE
    )

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    return app


async def serve(port_file: Path) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT.

    Args:
        port_file: where to write the bound port once the server listens.
    """
    app = build_app()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(app.serve, "127.0.0.1", 0)
            await trio.Path(port_file).write_text(f"{addresses[0][1]}\n")
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port_file", type=Path, help="where to write the bound port")
    trio.run(serve, parser.parse_args().port_file)


if __name__ == "__main__":
    main()
