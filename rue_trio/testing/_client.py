"""The test client: an app served over memory streams inside the test's own nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import h11
import trio
import trio.testing

from ..app import App
from ..client import open_websocket_stream
from ..protocol import DeflateConfig
from ..websocket import ConnectionConfig, WebSocketConn

__all__ = ["TestApp", "TestResponse", "open_test_app", "open_test_client"]

_DEFAULT_CONFIG = ConnectionConfig()
# The address the app sees for a test client (TEST-NET-1, RFC 5737: never a real peer).
_TEST_ADDRESS = ("192.0.2.1", 40000)


@dataclass(frozen=True, slots=True)
class TestResponse:
    """A plain HTTP response received by :meth:`TestApp.request`.

    Attributes:
        status: the status code.
        headers: the headers, names lowercased, as strings.
        body: the whole body.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (any case), or ``None``."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode()

    def json(self) -> Any:
        """The body parsed as JSON."""
        import json

        return json.loads(self.body)


class TestApp:
    """A running app that tests talk to over memory streams; see :func:`open_test_app`."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, nursery: trio.Nursery, scope: trio.CancelScope) -> None:
        self.app = app
        self._nursery = nursery
        self._scope = scope

    def shutdown(self) -> None:
        """Cancel everything the app serves, as a server shutdown does.

        WebSocket connections close with 1001 (going away); background services stop.
        """
        self._scope.cancel()

    def _connect(self) -> trio.abc.Stream:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.app.serve_stream, server_stream, _TEST_ADDRESS)
        return client_stream

    @asynccontextmanager
    async def websocket(
        self,
        path: str = "/",
        *,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        origin: str | None = None,
        compression: bool | DeflateConfig | None = False,
        max_message_size: int | None = 1 << 20,
        config: ConnectionConfig = _DEFAULT_CONFIG,
    ) -> AsyncIterator[WebSocketConn]:
        """Open a WebSocket connection to ``path``, as :func:`rue_trio.client.open_websocket` does.

        Yields:
            The client side of the connection.

        Raises:
            InvalidStatusError: the app refused the upgrade.

        Cancellation: as :func:`rue_trio.client.open_websocket`.
        """
        stream = self._connect()
        async with open_websocket_stream(
            stream,
            f"ws://testserver{path}",
            subprotocols=subprotocols,
            headers=headers,
            origin=origin,
            compression=compression,
            max_message_size=max_message_size,
            config=config,
        ) as conn:
            yield conn

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> TestResponse:
        """Send one plain HTTP request and read the whole response.

        Cancellation: the request is abandoned and its stream closed.
        """
        stream = self._connect()
        http = h11.Connection(h11.CLIENT)
        all_headers = [("host", "testserver"), ("connection", "close"), *headers]
        if body:
            all_headers.append(("content-length", str(len(body))))
        async with stream:
            data = http.send(h11.Request(method=method, target=path, headers=all_headers))
            assert data is not None
            if body:
                data += http.send(h11.Data(data=body)) or b""
            data += http.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
            response: h11.Response | None = None
            parts: list[bytes] = []
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    http.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        assert response is not None
        return TestResponse(
            status=response.status_code,
            headers=tuple((k.decode(), v.decode()) for k, v in response.headers),
            body=b"".join(parts),
        )


async def _host(
    app: App,
    *,
    task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the app's background services and served streams in a scope of their own.

    Cancelling that scope is a server shutdown; the test's own code, which runs in the
    outer nursery's body, is not cancelled with it.
    """
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            for service in app.background_services:
                await nursery.start(service)
            task_status.started((nursery, scope))
            await trio.sleep_forever()


@asynccontextmanager
async def open_test_app(app: App) -> AsyncIterator[TestApp]:
    """Run ``app`` without sockets for the duration of the block.

    The app's background services (such as a Hub added with
    :meth:`~rue_trio.App.add_background`) start first, as :meth:`~rue_trio.App.serve`
    starts them. Leaving the block shuts the app down: WebSocket connections still open
    on the server side close with 1001.

    Yields:
        A :class:`TestApp` to open WebSocket connections and send requests with.
    """
    try:
        async with trio.open_nursery() as outer:
            nursery, scope = await outer.start(_host, app)
            yield TestApp(app, nursery, scope)
            scope.cancel()
    except BaseExceptionGroup as group:
        # The test's own failure, not a group of one (docs/topics/design.md, "Errors are local").
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@asynccontextmanager
async def open_test_client(
    app: App,
    path: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    compression: bool | DeflateConfig | None = False,
    config: ConnectionConfig = _DEFAULT_CONFIG,
) -> AsyncIterator[WebSocketConn]:
    """Run ``app`` and open one WebSocket connection to ``path``, without sockets.

    The shortcut for ``open_test_app(app)`` then ``client.websocket(path)``.

    Yields:
        The client side of the connection.
    """
    async with (
        open_test_app(app) as client,
        client.websocket(
            path,
            subprotocols=subprotocols,
            headers=headers,
            origin=origin,
            compression=compression,
            config=config,
        ) as conn,
    ):
        yield conn
