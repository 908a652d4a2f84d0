"""Faults around the Redis backplane stay local, logged and counted (issue 9).

The link going down and up: node A reaches Redis through a TCP proxy on 127.0.0.1 that
the test can cut; node B connects directly. What A publishes while cut off reaches no
one and must be counted. And a client's oversized room name must not stop the server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import urlsplit

import pytest
import trio

from rue_trio.backplane import RedisBackplane
from rue_trio.hub import Envelope, Hub
from rue_trio.protocol import MessageType
from tests.hostile._hub_app import huge_room_closes_only_the_attacker, serve_chat
from tests.hub._fakes import FakeMember

from .test_redis import backplane_stats, open_hubs, wait_until


class _Proxy:
    """Forwards TCP to Redis until cut; while cut, accepts and closes at once."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut = False
        self._links: set[trio.CancelScope] = set()

    def sever(self) -> None:
        self.cut = True
        for scope in self._links:
            scope.cancel()

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        async for chunk in source:
            await sink.send_all(chunk)

    async def _serve(self, client: trio.SocketStream) -> None:
        async with client:
            if self.cut:
                return
            with trio.CancelScope() as scope:
                self._links.add(scope)
                try:
                    upstream = await trio.open_tcp_stream(*self.target)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, upstream)
                        nursery.start_soon(self._pipe, upstream, client)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                finally:
                    self._links.discard(scope)


@asynccontextmanager
async def _proxy(redis_url: str) -> AsyncIterator[tuple[_Proxy, str]]:
    parts = urlsplit(redis_url)
    proxy = _Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy._serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield proxy, f"redis://127.0.0.1:{port}{parts.path}"
        nursery.cancel_scope.cancel()


async def test_backplane_outage_logged_and_publications_counted_lost(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    backplane = partial(
        RedisBackplane,
        namespace=namespace,
        reconnect_min=0.02,
        reconnect_max=0.1,
        connect_timeout=1.0,
    )
    with (
        trio.fail_after(15),
        caplog.at_level(logging.INFO, logger="rue_trio.backplane"),
    ):
        async with _proxy(redis_url) as (proxy, proxied_url):
            a = Hub(backplane=backplane(proxied_url))
            b = Hub(backplane=backplane(redis_url))
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                receiver = FakeMember("b1")
                await b.register(receiver)
                await a.broadcast(MessageType.TEXT, "before")
                await wait_until(lambda: len(receiver.frames) == 1)

                proxy.sever()
                await wait_until(lambda: not backplane_stats(a).connected)
                for i in range(10):
                    await a.broadcast(MessageType.TEXT, f"during {i}")
                await a.flush()
                await wait_until(lambda: backplane_stats(a).lost >= 10)
                assert backplane_stats(a).published == 1

                await trio.sleep(0.2)  # an outage long enough to measure
                proxy.cut = False
                await wait_until(lambda: backplane_stats(a).reconnects == 1)
                await wait_until(lambda: backplane_stats(a).connected)
                await a.broadcast(MessageType.TEXT, "after")
                await wait_until(lambda: len(receiver.frames) == 2)
                nursery.cancel_scope.cancel()
    assert receiver.payloads() == [b"before", b"after"]
    stats = backplane_stats(a)
    assert stats.lost == 10 and stats.dropped_outbound == 0
    records = [r for r in caplog.records if r.name == "rue_trio.backplane"]
    down = [r for r in records if r.levelno == logging.WARNING]
    up = [r for r in records if r.levelno == logging.INFO]
    assert len(down) == 1 and "lost" in down[0].getMessage()
    assert len(up) == 1 and "restored after" in up[0].getMessage()
    assert "10 publications lost" in up[0].getMessage()


async def test_backplane_envelope_that_cannot_pack_costs_only_itself(
    redis_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10), caplog.at_level(logging.ERROR, logger="rue_trio.backplane"):
        async with open_hubs(redis_url, namespace) as (a, b):
            receiver = FakeMember("b1")
            await b.register(receiver)
            backplane = a._backplane
            assert isinstance(backplane, RedisBackplane)
            # Past the hub's own check, as a remote or buggy caller could.
            huge = Envelope(MessageType.TEXT, b"x", "r" * 70_000, None, backplane.node_id)
            backplane.publish(huge)
            await a.broadcast(MessageType.TEXT, "next")
            await wait_until(lambda: len(receiver.frames) == 1)
            assert a.running
    assert receiver.payloads() == [b"next"]
    assert backplane_stats(a).rejected == 1
    assert "cannot cross the backplane" in caplog.text


async def test_backplane_client_room_of_70000_bytes_closes_only_its_connection(
    redis_url: str, namespace: str
) -> None:
    hub = Hub(backplane=RedisBackplane(redis_url, namespace=namespace))
    with trio.fail_after(10):
        async with serve_chat(hub) as url:
            await huge_room_closes_only_the_attacker(url)
            assert hub.running
