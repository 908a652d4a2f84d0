"""A hub backplane over Redis pub/sub, through coredis: hubs in many processes as one.

Only ``rue_trio.backplane`` imports coredis (and, through it, anyio, which runs on Trio);
the link handling its Redis adapters share is in ``_link.py``, the subscriber that follows
rooms and reconnects in ``_subscriber.py``. Install it with the ``redis`` extra:
``pip install rue_trio[redis]``.

Theory of operation
===================

:meth:`RedisBackplane.run` (started by the hub) owns three tasks and one coredis client:

* the **subscriber** holds one pub/sub connection, named ``<namespace>:<node>:sub`` with
  ``CLIENT SETNAME``. It follows the "everyone" channel ``<ns>:bc`` always and a room's
  channel ``<ns>:bc:r:<room>`` only while this node has local members in the room. It
  drops this node's own envelopes (the origin node id is in the header), and offers the
  others to the hub's bounded buffer with ``send_nowait``: a full buffer drops the
  envelope and counts it (``dropped_inbound``), so a flood from Redis cannot grow memory
  (coredis's own queue is drained at once by this task, which never waits).
* the **publisher** takes the envelopes the hub queued (a bounded channel:
  ``publish`` never waits; a full queue drops and counts, ``dropped_outbound``) and
  sends everything queued as one pipeline on one connection, so one node's messages
  reach every other node in the order the hub published them.
* the **presence** task (``_presence.py``) writes this node's members to Redis: a set of
  member ids for everyone and one per room, under ``<ns>:p:<node>...``, each with a TTL,
  and the node in the sorted set ``<ns>:nodes`` scored by the time its heartbeat
  expires. Changes are batched; a heartbeat every ``heartbeat_interval`` refreshes the
  TTLs. A node that dies stops refreshing: its members drop out of the cluster's counts within
  ``presence_ttl`` seconds. A node that stops cleanly removes its keys.

Faults. The first connection is checked at start: if Redis cannot be reached after
``connect_attempts`` tries, :meth:`run` raises :class:`BackplaneError`. Afterwards a lost
connection is re-established with exponential backoff (``reconnect_min`` doubling up to
``reconnect_max``), the subscriptions are restored and presence is rewritten in full;
local delivery never waits for any of it. Envelopes published while the link is down are
counted as ``lost``: delivery across nodes is at most once. coredis and anyio errors are
translated here into :class:`BackplaneError` (with the original as ``__cause__``).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Final
from urllib.parse import urlsplit

import coredis
import coredis.exceptions
import trio

from rue_trio.hub import (
    BackplaneSink,
    BackplaneStatistics,
    Envelope,
    pack_envelope,
    unpack_envelope,
)

from ._link import check_url, first_contact, leaf, link_error, link_failures, text
from ._presence import ClusterPresence
from ._subscriber import RoomSubscriber

__all__ = ["RedisBackplane"]

logger = logging.getLogger("rue_trio.backplane")

_ORIGIN: Final = slice(3, 19)  # the origin node id in a packed envelope


class RedisBackplane(RoomSubscriber[BackplaneSink]):
    """A :class:`rue_trio.hub.Backplane` over Redis pub/sub.

    ::

        hub = Hub(backplane=RedisBackplane("redis://127.0.0.1:6379", namespace="chat"))

    Args:
        url: the Redis URL (``redis://host:port/db``, ``rediss://`` for TLS).
        namespace: the prefix of every channel and key: nodes with the same namespace
            on the same Redis form one cluster.
        connect_attempts: how many times to try the first connection before
            :meth:`run` raises :class:`BackplaneError`.
        reconnect_min: the first delay before reconnecting, in seconds.
        reconnect_max: the longest delay between reconnection attempts, in seconds.
        presence_ttl: seconds after its last heartbeat that a node's members still count.
        heartbeat_interval: seconds between heartbeats; defaults to a third of
            ``presence_ttl``.
        outbound_size: how many envelopes may wait for the publisher.
        connect_timeout: seconds to wait for a TCP connection to Redis.

    Raises:
        InvalidURIError: ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL
            with a host (or path), a numeric port and a numeric database.
        ValueError: a bound or a duration is not positive, or the heartbeat is not
            shorter than the TTL.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        namespace: str = "rue",
        connect_attempts: int = 1,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        presence_ttl: float = 15.0,
        heartbeat_interval: float | None = None,
        outbound_size: int = 8192,
        connect_timeout: float = 5.0,
    ) -> None:
        if heartbeat_interval is None:
            heartbeat_interval = presence_ttl / 3
        if min(connect_attempts, outbound_size) < 1:
            raise ValueError("connect_attempts and outbound_size must be at least 1")
        if min(reconnect_min, reconnect_max, presence_ttl, heartbeat_interval) <= 0:
            raise ValueError("durations must be positive")
        if heartbeat_interval >= presence_ttl:
            raise ValueError("heartbeat_interval must be shorter than presence_ttl")
        self._url = url
        # The URL as messages and logs show it: without its password.
        self._shown_url = check_url(url)
        self._namespace = namespace
        self._connect_attempts = connect_attempts
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._connect_timeout = connect_timeout
        self._node = uuid.uuid4().bytes
        self._node_hex = self._node.hex()
        self._everyone_channel = f"{namespace}:bc".encode()
        self._room_prefix = f"{namespace}:bc:r:".encode()
        self._out_send, self._out_receive = trio.open_memory_channel[Envelope](outbound_size)
        # Subscriptions: what the hub wants, what Redis confirmed, and who waits.
        self._wanted: set[str] = set()
        self._active: set[str] = set()
        self._changed = trio.Event()
        self._settled = trio.Event()
        self._connected = False
        # Presence: the local mirror, written to Redis by the presence task.
        self._presence = ClusterPresence(
            namespace,
            self._node_hex,
            presence_ttl,
            heartbeat_interval,
            reconnect_min,
            self._shown_url,
        )
        self._started = False
        self._command_client: coredis.Redis[bytes] | None = None
        self._published = 0
        self._received = 0
        self._delivered = 0
        self._dropped_inbound = 0
        self._dropped_outbound = 0
        self._lost = 0
        self._rejected = 0
        self._reconnects = 0
        # The link's state for the log: where (host and port, never credentials), since
        # when it is down, and how many publications were lost before it went down.
        parts = urlsplit(url)
        self._where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
        self._down_since: float | None = None
        self._lost_before_outage = 0

    # ------------------------------------------------------------------ the port

    @property
    def node_id(self) -> bytes:
        """This node's 16-byte id (random, new for every backplane)."""
        return self._node

    @property
    def client_name(self) -> str:
        """The ``CLIENT SETNAME`` prefix of this node's Redis connections."""
        return f"{self._namespace}:{self._node_hex}"

    def publish(self, envelope: Envelope) -> None:
        """Queue an envelope for the publisher; drop and count it if the queue is full.

        Args:
            envelope: the broadcast.
        """
        try:
            self._out_send.send_nowait(envelope)
        except trio.WouldBlock:
            self._dropped_outbound += 1
        except trio.ClosedResourceError:
            self._lost += 1

    def subscribe_room(self, room: str) -> None:
        """Follow the room's channel from now on (applied by the subscriber task).

        Args:
            room: the room.
        """
        self._wanted.add(room)
        self._changed.set()

    def unsubscribe_room(self, room: str) -> None:
        """Stop following the room's channel (applied by the subscriber task).

        Args:
            room: the room.
        """
        self._wanted.discard(room)
        self._changed.set()

    def presence_add(self, member_id: str, room: str | None) -> None:
        """Record a local member in everyone (``room`` ``None``) or in a room.

        Args:
            member_id: the member's id.
            room: the room, or ``None``.
        """
        self._presence.add(member_id, room)

    def presence_remove(self, member_id: str, room: str | None) -> None:
        """Forget a local member in everyone (``room`` ``None``) or in a room.

        Args:
            member_id: the member's id.
            room: the room, or ``None``.
        """
        self._presence.remove(member_id, room)

    async def synced(self) -> None:
        """Wait until Redis confirmed the subscriptions wanted so far, or the link is down.

        Cancellation: safe; nothing changes.
        """
        while self._connected and self._wanted != self._active:
            await self._settled.wait()
        await trio.lowlevel.checkpoint()

    async def cluster_count(self, room: str | None) -> int:
        """Count the members of every live node (or in ``room``); see the port.

        Cancellation: safe; nothing changes.

        Args:
            room: the room, or ``None`` for everyone.

        Returns:
            The number of members.

        Raises:
            BackplaneError: Redis cannot be reached.
        """
        own = len(self._presence.local(room))
        counts = await self._presence.query_others(self._command_client, room, "SCARD")
        return own + sum(int(count) for count in counts)

    async def cluster_members(self, room: str | None) -> list[str]:
        """List the member ids of every live node (or in ``room``), sorted; see the port.

        Cancellation: safe; nothing changes.

        Args:
            room: the room, or ``None`` for everyone.

        Returns:
            The member ids, sorted.

        Raises:
            BackplaneError: Redis cannot be reached.
        """
        found = set(self._presence.local(room))
        client = self._command_client
        for members in await self._presence.query_others(client, room, "SMEMBERS"):
            found.update(text(member) for member in members)
        return sorted(found)

    def statistics(self) -> BackplaneStatistics:
        """Return a snapshot of the backplane's counters."""
        return BackplaneStatistics(
            connected=self._connected,
            published=self._published,
            received=self._received,
            delivered=self._delivered,
            dropped_inbound=self._dropped_inbound,
            dropped_outbound=self._dropped_outbound,
            lost=self._lost,
            reconnects=self._reconnects,
            rejected=self._rejected,
            subscriptions=len(self._active),
        )

    # ------------------------------------------------------------------ running

    async def run(
        self, sink: BackplaneSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect to Redis, then carry envelopes and presence until cancelled.

        Cancellation: the way to stop. This node's presence keys are removed (shielded,
        bounded by ``connect_timeout``), then the connections close.

        Args:
            sink: where other nodes' broadcasts go (the hub's bounded buffer).
            task_status: ``started()`` once Redis answered and the "everyone" channel
                is subscribed.

        Raises:
            BackplaneError: Redis cannot be reached at start, after ``connect_attempts``
                tries.
            RuntimeError: this backplane has already run.
        """
        if self._started:
            raise RuntimeError("a RedisBackplane serves one hub and runs once")
        self._started = True
        client = self._client("cmd")
        with link_failures(self._shown_url):
            async with client:
                await first_contact(
                    client,
                    self._shown_url,
                    self._connect_attempts,
                    self._reconnect_min,
                    self._reconnect_max,
                )
                self._command_client = client
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self._subscriber, sink)
                        nursery.start_soon(self._publisher, client)
                        nursery.start_soon(self._presence.keep_written, client)
                        task_status.started()
                finally:
                    self._connected = False
                    self._command_client = None
                    self._out_send.close()
                    with trio.move_on_after(self._connect_timeout) as scope:
                        scope.shield = True
                        await self._presence.remove_all(client)

    def _client(self, role: str) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self._url,
            decode_responses=False,
            client_name=f"{self.client_name}:{role}",
            connect_timeout=self._connect_timeout,
        )

    def _room_channel(self, room: str) -> bytes:
        return self._room_prefix + room.encode()

    def _subscriber_client(self) -> coredis.Redis[bytes]:
        return self._client("sub")

    def _fixed_channels(self) -> tuple[bytes, ...]:
        return (self._everyone_channel,)

    def _wanted_rooms(self) -> set[str]:
        return set(self._wanted)

    def _link_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._lost_before_outage = self._lost
            logger.warning(
                "Redis link to %s lost (%s): reconnecting; broadcasts do not reach "
                "other nodes until it is back",
                self._where,
                str(leaf(exc)),  # a str: a record must not keep the traceback alive
            )
        self._presence.rewrite_all()
        super()._link_down(exc)

    def _link_up(self) -> None:
        self._reconnects += 1
        if self._down_since is None:
            return
        outage = time.monotonic() - self._down_since
        self._down_since = None
        logger.info(
            "Redis link to %s restored after %.1f s; %d publications lost meanwhile",
            self._where,
            outage,
            self._lost - self._lost_before_outage,
        )

    async def _read(self, pubsub: Any, sink: BackplaneSink) -> None:
        node = self._node
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True)
            if message is None or message["type"] != "message":
                continue
            data = message["data"]
            if not isinstance(data, bytes) or data[_ORIGIN] == node:
                continue
            self._received += 1
            try:
                envelope = unpack_envelope(data)
            except ValueError:
                self._dropped_inbound += 1
                continue
            try:
                sink.send_nowait(envelope)
            except trio.WouldBlock:
                self._dropped_inbound += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            else:
                self._delivered += 1

    async def _publisher(self, client: coredis.Redis[bytes]) -> None:
        receive = self._out_receive
        async for first in receive:
            batch = [first]
            while len(batch) < 512:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if not self._connected:
                self._lost += len(batch)
                continue
            packed = self._pack(batch)
            if not packed:
                continue
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for channel, data in packed:
                        pipe.publish(channel, data)
            except Exception as exc:
                # Never let the publisher die: what Redis refused is lost, and said so.
                self._lost += len(packed)
                if link_error(exc):
                    logger.warning(
                        "publishing to Redis at %s failed (%s): %d broadcasts lost",
                        self._where,
                        str(leaf(exc)),
                        len(packed),
                    )
                else:
                    logger.error(
                        "publishing to Redis at %s failed: %d broadcasts lost",
                        self._where,
                        len(packed),
                        exc_info=exc,
                    )
            else:
                self._published += len(packed)

    def _pack(self, batch: list[Envelope]) -> list[tuple[bytes, bytes]]:
        # The hub bounds room names, but an envelope that cannot be packed (a room or
        # member id over 65,535 bytes) must cost only itself: dropped, logged, counted.
        everyone = self._everyone_channel
        packed = []
        for envelope in batch:
            room = envelope.room
            try:
                data = pack_envelope(envelope)
            except ValueError as exc:
                self._rejected += 1
                logger.error("a broadcast cannot cross the backplane, dropped: %s", exc)
                continue
            packed.append((everyone if room is None else self._room_channel(room), data))
        return packed
