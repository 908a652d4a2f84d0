"""Authentication at the handshake: a bearer token, checked before the 101.

``/ws`` accepts only ``Authorization: Bearer <token>``, with the token from the
environment variable ``RUE_TRIO_TOKEN`` (``let-me-in`` when unset); anything else gets
``401``. An accepted client's identity is on the connection (``conn.user``) for every
callback, and its first message is ``hello <identity>``. Run it, then try it::

    python examples/auth.py --port 8080
    python -c "import trio, rue_trio
    async def main():
        async with rue_trio.open_websocket('ws://127.0.0.1:8080/ws',
                headers=[('Authorization', 'Bearer let-me-in')]) as conn:
            print((await conn.receive()).data)
    trio.run(main)"
"""

from __future__ import annotations

import argparse
import hmac
import os

import rue_trio
from rue_trio import Context, Identity, Refusal, WebSocketConn, WebSocketHandler

TOKEN = os.environ.get("RUE_TRIO_TOKEN", "let-me-in")
# Who each token belongs to. A real application asks its user store instead.
USERS = {TOKEN: "guest"}


def authenticate(c: Context) -> Identity | Refusal:
    scheme, _, token = (c.header("authorization") or "").partition(" ")
    for known, user in USERS.items():
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), known.encode()):
            return Identity(user=user, meta={"name": user})
    return Refusal(
        401,
        "send Authorization: Bearer <token>\n",
        headers=[("www-authenticate", 'Bearer realm="rue_trio"')],
    )


async def on_connect(conn: WebSocketConn) -> None:
    await conn.send_text(f"hello {conn.user}")


app = rue_trio.default()
handler = WebSocketHandler(authenticate=authenticate, on_connect=on_connect)


@app.get("/ws")
async def ws(c: Context) -> None:
    await handler.handle(c)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port, 0 for any free one (8080)")
    args = parser.parse_args()
    app.run(f"{args.host}:{args.port}")
