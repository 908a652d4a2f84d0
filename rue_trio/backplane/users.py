"""Presence by user across processes, in Redis: each node writes its own, all read all.

Give a hub ``user_directory=RedisUsers(url, namespace=...)``: :meth:`rue_trio.Hub.presence`
then lists the users of a room on every live node of the namespace, each with the
``meta`` of each of their connections (two tabs on two nodes are one user, twice),
and the user notices (``join``, ``leave``) say when a user arrives in or leaves the room
anywhere in the cluster.

Theory of operation
===================

Each node keeps a mirror of its own members (room -> member id -> user and meta) and
writes it to Redis: one hash per room, ``<ns>:u:<node>:<room>``, member id -> JSON
``[user, meta]``, and its own entry in the sorted set ``<ns>:u:nodes`` scored by the time
its heartbeat expires. Changes are written in batches, a room rewritten whole when it
changed; every ``heartbeat_interval`` the keys' TTL is refreshed. A node that dies stops
refreshing: its users drop out of every answer within ``presence_ttl`` seconds; a node
that stops cleanly removes its keys. Reading a room asks every live node's hash in one
pipeline and merges it with the local mirror (always current). Redis unreachable: reads
raise :class:`~rue_trio.exceptions.BackplaneError` (the hub then answers with its own
users), writes are retried whole after the link comes back.

Notices: after each write (a local change, or the heartbeat), the node reads the
cluster's users of every room where it has members and compares them with what it read
the time before: a user who appeared has joined, one who disappeared has left (their
last connection closed, or their node died and its keys expired). The first reading of a
room on a node only records it. Each node tells its own members, so every member hears
each arrival once; remote changes are heard within ``heartbeat_interval``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import coredis
import trio

from rue_trio.exceptions import BackplaneError
from rue_trio.hub import UserEvent, UserEventSink

from ._link import check_url, first_contact, leaf, link_error, link_failures, text

__all__ = ["RedisUsers"]


class RedisUsers:
    """A :class:`rue_trio.hub.UserDirectory` in Redis.

    Args:
        url: the Redis URL.
        namespace: the prefix of every key; hubs with the same namespace on the same Redis
            share their presence.
        presence_ttl: seconds after its last heartbeat that a node's users still count.
        heartbeat_interval: seconds between heartbeats; a third of ``presence_ttl`` by
            default.
        connect_timeout: seconds to wait for a TCP connection to Redis.

    Raises:
        ValueError: a duration is not positive, or the heartbeat is not shorter than the
            TTL.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        namespace: str = "rue",
        presence_ttl: float = 15.0,
        heartbeat_interval: float | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if heartbeat_interval is None:
            heartbeat_interval = presence_ttl / 3
        if min(presence_ttl, heartbeat_interval, connect_timeout) <= 0:
            raise ValueError("durations must be positive")
        if heartbeat_interval >= presence_ttl:
            raise ValueError("heartbeat_interval must be shorter than presence_ttl")
        self._url = url
        self._shown_url = check_url(url)
        self._namespace = namespace
        self._ttl = presence_ttl
        self._heartbeat = heartbeat_interval
        self._connect_timeout = connect_timeout
        self._node = uuid.uuid4().hex
        self._nodes_key = f"{namespace}:u:nodes"
        # room -> member id -> (user, meta): this node's members.
        self._members: dict[str, dict[str, tuple[str, Mapping[str, Any]]]] = {}
        # Rooms to rewrite at the next write (all of them after a failure).
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._client: coredis.Redis[bytes] | None = None
        self._started = False
        # room -> user -> meta, as the cluster was at the last reading.
        self._known: dict[str, dict[str, Mapping[str, Any]]] = {}

    # ------------------------------------------------------------------ the port

    def joined(self, room: str, member_id: str, user: str, meta: Mapping[str, Any]) -> None:
        """Record a local member in a room.

        Args:
            room: the room.
            member_id: the member's id.
            user: its user key.
            meta: its metadata (JSON-able).
        """
        self._members.setdefault(room, {})[member_id] = (user, meta)
        self._dirty.add(room)
        self._wake.set()

    def left(self, room: str, member_id: str) -> None:
        """Forget a local member in a room.

        Args:
            room: the room.
            member_id: the member's id.
        """
        members = self._members.get(room)
        if members is not None:
            members.pop(member_id, None)
            if not members:
                del self._members[room]
        self._dirty.add(room)
        self._wake.set()

    async def users(self, room: str) -> dict[str, list[Mapping[str, Any]]]:
        """List a room's users on every live node, each with their members' metas.

        Cancellation: safe; nothing changes.

        Args:
            room: the room.

        Returns:
            The users: this node's first, in order of joining, then the others'.

        Raises:
            BackplaneError: Redis cannot be reached.
        """
        client = self._client
        if client is None:
            await trio.lowlevel.checkpoint()
            raise BackplaneError("the user directory is not connected to Redis")
        try:
            return (await self._cluster(client, [room]))[room]
        except Exception as exc:
            if not link_error(exc):
                raise
            raise BackplaneError(f"Redis at {self._shown_url} failed: {leaf(exc)}") from leaf(exc)

    async def _cluster(
        self, client: coredis.Redis[bytes], rooms: list[str]
    ) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
        """The users of each room on every live node, this node's first."""
        found: dict[str, dict[str, list[Mapping[str, Any]]]] = {room: {} for room in rooms}
        for room in rooms:
            for user, meta in self._members.get(room, {}).values():
                found[room].setdefault(user, []).append(meta)
        nodes = await client.zrange(
            self._nodes_key, repr(time.time()), "+inf", sortby=coredis.PureToken.BYSCORE
        )
        others = [name for n in nodes if (name := text(n)) != self._node]
        async with client.pipeline(transaction=False) as pipe:
            requests = [
                (room, pipe.hgetall(self._key(node, room))) for room in rooms for node in others
            ]
        for room, request in requests:
            for raw in (await request).values():
                user, meta = json.loads(raw)
                found[room].setdefault(str(user), []).append(
                    meta if isinstance(meta, dict) else {}
                )
        return found

    # ------------------------------------------------------------------ running

    async def run(
        self, sink: UserEventSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect to Redis; write this node's users and read the cluster's until cancelled.

        Cancellation: the way to stop; this node's keys are removed (shielded, bounded by
        ``connect_timeout``).

        Args:
            sink: where the cluster's user events for this node's rooms go.
            task_status: ``started()`` once Redis answered.

        Raises:
            BackplaneError: Redis cannot be reached at start.
            RuntimeError: this directory has already run.
        """
        if self._started:
            raise RuntimeError("a RedisUsers serves one hub and runs once")
        self._started = True
        client = self._redis()
        try:
            with link_failures(self._shown_url):
                async with client:
                    await first_contact(client, self._shown_url, 1, 0, 0)
                    self._client = client
                    task_status.started()
                    await self._keep_written(client, sink)
        finally:
            self._client = None
            # On a connection of its own: cancellation has closed the other one's.
            with trio.move_on_after(self._connect_timeout) as scope:
                scope.shield = True
                await self._remove()

    def _redis(self) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self._url,
            decode_responses=False,
            client_name=f"{self._namespace}:users:{self._node}",
            connect_timeout=self._connect_timeout,
        )

    def _key(self, node: str, room: str) -> str:
        return f"{self._namespace}:u:{node}:{room}"

    async def _keep_written(self, client: coredis.Redis[bytes], sink: UserEventSink) -> None:
        while True:
            with trio.move_on_after(self._heartbeat):
                await self._wake.wait()
            self._wake = trio.Event()
            dirty, self._dirty = self._dirty, set()
            try:
                await self._write(client, dirty)
                await self._compare(client, sink)
            except Exception as exc:
                if not link_error(exc):
                    raise
                self._dirty |= dirty | set(self._members)  # write it all next time
                await trio.sleep(min(1.0, self._heartbeat))

    async def _compare(self, client: coredis.Redis[bytes], sink: UserEventSink) -> None:
        rooms = list(self._members)
        for room in [room for room in self._known if room not in self._members]:
            del self._known[room]  # no one here to tell any more
        if not rooms:
            await trio.lowlevel.checkpoint()
            return
        cluster = await self._cluster(client, rooms)
        for room in rooms:
            now = {user: metas[0] for user, metas in cluster[room].items()}
            before = self._known.get(room)
            self._known[room] = now
            if before is None:
                continue  # the first reading here: nothing to compare with
            events = [UserEvent("join", room, u, m) for u, m in now.items() if u not in before]
            events += [UserEvent("leave", room, u, m) for u, m in before.items() if u not in now]
            for event in events:
                try:
                    sink.send_nowait(event)
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the hub is behind or gone: presence stays right, notices wait

    async def _write(self, client: coredis.Redis[bytes], dirty: set[str]) -> None:
        ttl_ms = math.ceil(self._ttl * 1000)
        async with client.pipeline(transaction=False) as pipe:
            for room in dirty:
                key = self._key(self._node, room)
                pipe.delete([key])
                members = self._members.get(room)
                if members:
                    pipe.hset(
                        key,
                        {
                            member: json.dumps([u, dict(m)], default=str)
                            for member, (u, m) in members.items()
                        },
                    )
            for room in self._members:
                pipe.pexpire(self._key(self._node, room), ttl_ms)
            now = time.time()
            pipe.zadd(self._nodes_key, {self._node: now + self._ttl})
            pipe.zremrangebyscore(self._nodes_key, -math.inf, now)

    async def _remove(self) -> None:
        await trio.lowlevel.checkpoint()
        keys = [self._key(self._node, room) for room in self._members]
        try:
            async with self._redis() as client, client.pipeline(transaction=False) as pipe:
                pipe.zrem(self._nodes_key, [self._node])
                if keys:
                    pipe.delete(keys)
        except Exception as exc:
            if not link_error(exc):
                raise
