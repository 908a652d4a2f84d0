"""The application: routes, middleware, the request context, and how to run it.

Theory of operation
-------------------
An :class:`App` holds a :class:`~rue_trio.http.Router` of route functions and a list of
middleware. For each request the HTTP layer calls the app's dispatch, which builds a
:class:`Context` (``c``) and runs the middleware chain around the *endpoint*: the route
function, or the app's own 404 or 405 (with ``Allow``). A middleware is::

    async def mw(c: Context, next: Next) -> None:
        ...               # before
        await next()      # the rest of the chain
        ...               # after

Middleware run in the order they were added with :meth:`App.use`, around every
request, whatever the order of ``use`` and the route registrations. A route function
takes ``c`` and is either ``async def`` or a plain function; a plain function may return
an awaitable (``return c.string(200, "hi")``, ``return handler.handle(c)``), which is
awaited.

:func:`default` is an :class:`App` with :func:`request_logger` and :func:`recovery`, as
Gin's ``Default()``.

To run an app: :meth:`App.run` blocks (like Go's ``r.Run(":8080")``) and stops
gracefully on Ctrl-C or SIGTERM; :meth:`App.serve` runs inside your nursery;
:meth:`App.serve_stream` serves one already-connected stream (the test client in
:mod:`rue_trio.testing` uses it over memory streams).
"""

from rue_trio.app._app import App, default
from rue_trio.app._context import Context, Middleware, Next, RouteFunction
from rue_trio.app._middleware import recovery, request_logger
from rue_trio.server import BackgroundService

__all__ = [
    "App",
    "BackgroundService",
    "Context",
    "Middleware",
    "Next",
    "RouteFunction",
    "default",
    "recovery",
    "request_logger",
]
