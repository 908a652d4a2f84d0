"""Cluster presence over Redis: this node's members, kept in keys that expire with it.

Each node mirrors its members in memory (everyone, and each room) and writes them to one
Redis set per room under its own node id, refreshing their expiry on every heartbeat; a
sorted set of nodes, scored by expiry time, says which nodes still count. Changes are
written as they come (``SADD``/``SREM`` of what changed); after a lost link, everything is
written again. Other nodes' members are read on demand (:meth:`ClusterPresence.query_others`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import coredis
import trio

from rue_trio.exceptions import BackplaneError

from ._link import leaf, link_error, text


class ClusterPresence:
    """This node's members as the cluster sees them, and the task that writes them.

    Args:
        namespace: the Redis key prefix.
        node_hex: this node's id, in hex.
        ttl: seconds after its last heartbeat that a node's members still count.
        heartbeat: seconds between two complete refreshes.
        retry_delay: seconds to wait after a failed write before trying again.
        shown_url: the Redis URL as messages show it (password hidden).
    """

    def __init__(
        self,
        namespace: str,
        node_hex: str,
        ttl: float,
        heartbeat: float,
        retry_delay: float,
        shown_url: str,
    ) -> None:
        self._namespace = namespace
        self._node_hex = node_hex
        self._ttl = ttl
        self._heartbeat = heartbeat
        self._retry_delay = retry_delay
        self._shown_url = shown_url
        self._nodes_key = f"{namespace}:nodes"
        # The local mirror, and the changes not yet written.
        self._members: dict[str | None, set[str]] = {None: set()}
        self._pending: dict[str | None, dict[str, bool]] = {}
        self._rewrite = True
        self._dirty = trio.Event()

    def add(self, member_id: str, room: str | None) -> None:
        """Record a local member in everyone (``room`` ``None``) or in a room."""
        members = self._members.get(room)
        if members is None:
            members = self._members[room] = set()
        members.add(member_id)
        self._pending.setdefault(room, {})[member_id] = True
        self._dirty.set()

    def remove(self, member_id: str, room: str | None) -> None:
        """Forget a local member in everyone (``room`` ``None``) or in a room."""
        members = self._members.get(room)
        if members is not None:
            members.discard(member_id)
            if not members and room is not None:
                del self._members[room]
        self._pending.setdefault(room, {})[member_id] = False
        self._dirty.set()

    def local(self, room: str | None) -> set[str] | tuple[()]:
        """This node's members in everyone (``room`` ``None``) or in a room."""
        return self._members.get(room, ())

    def rewrite_all(self) -> None:
        """Write everything at the next write (the link was lost: Redis may have expired it)."""
        self._rewrite = True

    def _key(self, node_hex: str, room: str | None) -> str:
        base = f"{self._namespace}:p:{node_hex}"
        return base if room is None else f"{base}:r:{room}"

    async def keep_written(self, client: coredis.Redis[bytes]) -> None:
        """Write the changes as they come, and everything on each heartbeat; forever."""
        while True:
            with trio.move_on_after(self._heartbeat):
                await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                await self._write(client)
            except Exception as exc:
                if not link_error(exc):
                    raise
                self._rewrite = True
                await trio.sleep(self._retry_delay)

    async def _write(self, client: coredis.Redis[bytes]) -> None:
        ttl_ms = math.ceil(self._ttl * 1000)
        rewrite, self._rewrite = self._rewrite, False
        pending, self._pending = self._pending, {}
        try:
            async with client.pipeline(transaction=False) as pipe:
                if rewrite:
                    for room, members in self._members.items():
                        key = self._key(self._node_hex, room)
                        pipe.delete([key])
                        if members:
                            pipe.sadd(key, list(members))
                else:
                    for room, changes in pending.items():
                        key = self._key(self._node_hex, room)
                        added = [m for m, present in changes.items() if present]
                        removed = [m for m, present in changes.items() if not present]
                        if added:
                            pipe.sadd(key, added)
                        if removed:
                            pipe.srem(key, removed)
                for room in self._members:
                    pipe.pexpire(self._key(self._node_hex, room), ttl_ms)
                now = time.time()
                pipe.zadd(self._nodes_key, {self._node_hex: now + self._ttl})
                pipe.zremrangebyscore(self._nodes_key, -math.inf, now)
        except BaseException:
            # Not written: write everything next time.
            self._rewrite = True
            raise

    async def remove_all(self, client: coredis.Redis[bytes]) -> None:
        """Remove this node and its keys (a node that stops cleanly counts no more)."""
        await trio.lowlevel.checkpoint()
        keys = [self._key(self._node_hex, room) for room in self._members]
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zrem(self._nodes_key, [self._node_hex])
                pipe.delete(keys)
        except Exception as exc:
            if not link_error(exc):
                raise

    async def query_others(
        self, client: coredis.Redis[bytes] | None, room: str | None, command: str
    ) -> list[Any]:
        """``SCARD`` or ``SMEMBERS`` of ``room``'s key on every other live node.

        Raises:
            BackplaneError: ``client`` is ``None`` (not running), or Redis failed.
        """
        if client is None:
            await trio.lowlevel.checkpoint()
            raise BackplaneError("the backplane is not running")
        try:
            nodes = await client.zrange(
                self._nodes_key, repr(time.time()), "+inf", sortby=coredis.PureToken.BYSCORE
            )
            others = [name for n in nodes if (name := text(n)) != self._node_hex]
            if not others:
                return []
            async with client.pipeline(transaction=False) as pipe:
                results = [
                    pipe.scard(self._key(n, room))
                    if command == "SCARD"
                    else pipe.smembers(self._key(n, room))
                    for n in others
                ]
            return [await result for result in results]
        except Exception as exc:
            if not link_error(exc):
                raise
            raise BackplaneError(f"Redis at {self._shown_url} failed: {leaf(exc)}") from leaf(exc)
