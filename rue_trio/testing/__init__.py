"""Test an app without sockets: its clients talk to it over ``trio.testing`` memory streams.

Everything here runs inside the test's own Trio run, so it works under
``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture): a 20 s
keepalive interval, a close timeout or a slow client's timeout pass in an instant. No port
is opened, nothing touches the network.

Example (with pytest-trio)::

    from rue_trio.testing import open_test_app

    async def test_echo() -> None:
        async with open_test_app(app) as client:
            async with client.websocket("/ws") as conn:
                await conn.send_text("hi")
                assert (await conn.receive()).data == "hi"
            response = await client.request("GET", "/health")
            assert response.status == 200

:func:`open_test_client` is the shortcut for one WebSocket connection.
"""

from ._client import TestApp, TestResponse, open_test_app, open_test_client

__all__ = ["TestApp", "TestResponse", "open_test_app", "open_test_client"]
