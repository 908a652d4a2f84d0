"""The resubscribing pub/sub subscriber, shared by the Redis adapters that follow rooms.

:class:`~rue_trio.backplane.RedisBackplane` (broadcasts) and
:class:`~rue_trio.backplane.RedisStreams` (numbered room history) both hold one pub/sub
connection that follows a channel per room the hub wants, reconnect it with backoff when
the link breaks, and subscribe again to every room on the new connection. That loop lives
here, in :class:`RoomSubscriber`; what differs (the rooms wanted, a room's channel, how a
message is read, what happens when the link goes down or comes back) is left to the
adapter's methods.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import coredis
import trio

from ._link import link_error

__all__ = ["RoomSubscriber"]

S = TypeVar("S")


class RoomSubscriber(Generic[S]):
    """The subscriber task of an adapter that follows rooms on one pub/sub connection.

    The adapter's ``__init__`` sets the fields annotated here; the adapter's ``run``
    starts :meth:`_subscriber` with ``nursery.start``: it reports started once the first
    connection is made, and from then on never gives up on the link.
    """

    # The backoff between reconnection attempts, doubling from the first to the second.
    _reconnect_min: float
    _reconnect_max: float
    # The rooms Redis confirmed on the current connection, and whether there is one.
    _active: set[str]
    _connected: bool
    # Set when the rooms wanted changed; set (and replaced) when they are all confirmed.
    _changed: trio.Event
    _settled: trio.Event

    def _subscriber_client(self) -> coredis.Redis[bytes]:
        """A new client for the pub/sub connection."""
        raise NotImplementedError

    def _fixed_channels(self) -> tuple[bytes, ...]:
        """The channels followed on every connection, whatever the rooms."""
        return ()

    def _wanted_rooms(self) -> set[str]:
        """A copy of the rooms the hub wants followed now."""
        raise NotImplementedError

    def _room_channel(self, room: str) -> bytes:
        """The channel of ``room``."""
        raise NotImplementedError

    async def _read(self, pubsub: Any, sink: S) -> None:
        """Offer what arrives on ``pubsub`` to ``sink``; return once the sink is gone."""
        raise NotImplementedError

    def _link_up(self) -> None:
        """The link is back after an outage (not called for the first connection)."""

    def _link_down(self, exc: BaseException) -> None:
        """The link broke with ``exc``: no connection, no room followed, nothing to wait for."""
        self._connected = False
        self._active = set()
        # Wake the waiters of synced(): the link is down, there is nothing to wait for.
        self._settled.set()
        self._settled = trio.Event()

    async def _subscriber(
        self, sink: S, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        delay = self._reconnect_min
        first = True
        while True:
            client = self._subscriber_client()
            try:
                async with client, trio.open_nursery() as nursery:
                    pubsub = client.pubsub(
                        ignore_subscribe_messages=True, retry_policy=None, max_idle_seconds=5
                    )
                    async with pubsub:
                        channels = self._fixed_channels()
                        if channels:
                            await pubsub.subscribe(*channels)
                        self._active = set()
                        self._connected = True
                        if first:
                            first = False
                            task_status.started()
                        else:
                            self._link_up()
                        delay = self._reconnect_min
                        self._changed.set()
                        nursery.start_soon(self._follow_rooms, pubsub)
                        await self._read(pubsub, sink)
                        nursery.cancel_scope.cancel()
                return
            except Exception as exc:
                if not link_error(exc):
                    raise
                self._link_down(exc)
            await trio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max)

    async def _follow_rooms(self, pubsub: Any) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            wanted = self._wanted_rooms()
            while wanted != self._active:
                add = wanted - self._active
                remove = self._active - wanted
                if add:
                    await pubsub.subscribe(*(self._room_channel(room) for room in add))
                if remove:
                    await pubsub.unsubscribe(*(self._room_channel(room) for room in remove))
                self._active = wanted
                wanted = self._wanted_rooms()
            self._settled.set()
            self._settled = trio.Event()
