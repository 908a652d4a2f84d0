"""Apps the tests build again and again."""

from __future__ import annotations

from rue_trio.app import App, Context
from rue_trio.handlers import WebSocketHandler


def app_with(handler: WebSocketHandler) -> App:
    """An app serving ``handler`` at ``/ws``, nothing else."""
    app = App()

    @app.get("/ws")
    async def ws(c: Context) -> None:
        await handler.handle(c)

    return app
