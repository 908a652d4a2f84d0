"""Room history in Redis Streams, shared by the hubs of many processes (coredis).

Give a hub ``history_stream=RedisStreams(url, namespace=...)`` together with
``history=HistoryConfig(...)``: every broadcast to a room with history is numbered by
Redis, stored in a stream, and published to every node following the room, the sender's
included; a member can then recover on any node (see :class:`rue_trio.hub.HistoryStream`).
Rooms without history are not touched: they stay on the pub/sub backplane, if any.

Theory of operation
===================

Keys, for a room ``R`` in namespace ``ns``: the hash ``ns:h:R`` holds the room's
``epoch`` and its latest offset ``top``; the stream ``ns:hs:R`` holds the messages, each
under the ID ``<offset>-1`` with the packed envelope (:func:`rue_trio.hub.pack_envelope`)
as its field ``d``; the channel ``ns:hc:R`` carries the epoch, the offset and the
envelope, separated by newlines.

Numbering is one Lua script per message (atomic in Redis): it creates the epoch if the
hash is missing (a new room, or one whose keys expired or were lost: then the old stream
is deleted, so no offset can ever mean two messages), increments ``top``, adds the message
with ``XADD ... MAXLEN size`` (messages larger than ``max_bytes`` are numbered but not
kept), refreshes the keys' expiry when the room's config has a ``ttl`` (the whole history
expires ``ttl`` seconds after the room's last message), and publishes it. Redis runs
scripts one at a time, so the channel carries each room's messages in offset order.

Tasks (owned by :meth:`RedisStreams.run`): the *sequencer* takes the hub's messages from
a bounded queue and runs the script for each, in order, up to 512 in one pipeline (if the
link breaks during a pipeline, the whole batch is handed back to be numbered locally: a
message Redis did number then may reach this node's members twice); the *subscriber* (its
loop shared with the pub/sub backplane, ``_subscriber.py``) follows the channels of the
rooms the hub follows and offers what arrives to the hub's bounded buffer
(a full buffer drops the message for this node: its copy of the history then restarts at
the next one, and joins read Redis again). A lost link is re-established with backoff;
meanwhile :meth:`append` answers ``False`` so the hub numbers locally, in a local epoch,
and :meth:`read` raises :class:`~rue_trio.exceptions.BackplaneError` so that recovery
answers "not recovered". Bounds: ``size`` messages per room, each at most ``max_bytes``.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from typing import Any, Final

import coredis
import trio

from rue_trio.exceptions import BackplaneError
from rue_trio.hub import (
    Envelope,
    HistoryConfig,
    HistoryMessage,
    HistoryPage,
    Sequenced,
    SequencedSink,
    StreamPosition,
    pack_envelope,
    unpack_envelope,
)
from rue_trio.protocol import MessageType

from ._link import check_url, first_contact, leaf, link_error, link_failures
from ._subscriber import RoomSubscriber

__all__ = ["RedisStreams"]

# The most messages numbered in one pipeline (one round trip to Redis).
_BATCH: Final = 512

_APPEND: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
if string.len(ARGV[4]) <= tonumber(ARGV[6]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-1', 'd', ARGV[4])
end
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], epoch .. '\\n' .. offset .. '\\n' .. ARGV[4])
return offset
"""


class RedisStreams(RoomSubscriber[SequencedSink]):
    """A :class:`rue_trio.hub.HistoryStream` over Redis Streams.

    ::

        hub = Hub(
            history=HistoryConfig(size=100),
            history_stream=RedisStreams("redis://127.0.0.1:6379", namespace="chat"),
        )

    Args:
        url: the Redis URL.
        namespace: the prefix of every key and channel; hubs with the same namespace on
            the same Redis share their rooms' histories.
        connect_attempts: tries of the first connection before :meth:`run` raises.
        reconnect_min: the first delay before reconnecting, in seconds.
        reconnect_max: the longest delay between reconnection attempts.
        outbound_size: how many messages may wait to be numbered; past that the hub
            numbers them locally.
        connect_timeout: seconds to wait for a TCP connection to Redis.

    Raises:
        ValueError: a bound or a duration is not positive.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        namespace: str = "rue",
        connect_attempts: int = 1,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        outbound_size: int = 8192,
        connect_timeout: float = 5.0,
    ) -> None:
        if min(connect_attempts, outbound_size) < 1:
            raise ValueError("connect_attempts and outbound_size must be at least 1")
        if min(reconnect_min, reconnect_max, connect_timeout) <= 0:
            raise ValueError("durations must be positive")
        self._url = url
        self._shown_url = check_url(url)
        self._namespace = namespace
        self._connect_attempts = connect_attempts
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._connect_timeout = connect_timeout
        self._out_send, self._out_receive = trio.open_memory_channel[
            tuple[Envelope, HistoryConfig]
        ](outbound_size)
        self._follows: Counter[str] = Counter()
        self._active: set[str] = set()
        self._changed = trio.Event()
        self._settled = trio.Event()
        self._connected = False
        self._started = False
        self._client: coredis.Redis[bytes] | None = None
        self._sink: SequencedSink | None = None
        self._numbered = 0
        self._received = 0
        self._dropped = 0

    @property
    def connected(self) -> bool:
        """Whether the link to Redis is up."""
        return self._connected

    @property
    def numbered(self) -> int:
        """How many messages this node had Redis number."""
        return self._numbered

    @property
    def dropped(self) -> int:
        """How many numbered messages this node dropped because the hub's buffer was full."""
        return self._dropped

    # ------------------------------------------------------------------ the port

    def append(self, envelope: Envelope, config: HistoryConfig) -> bool:
        """Queue a room broadcast for numbering; ``False`` when the link is down or full.

        Args:
            envelope: the broadcast; its room is set.
            config: the room's history config.

        Returns:
            Whether the message was queued.
        """
        if not self._connected:
            return False
        try:
            self._out_send.send_nowait((envelope, config))
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True

    def follow(self, room: str) -> None:
        """Follow a room's numbered messages (counted).

        Args:
            room: the room.
        """
        self._follows[room] += 1
        self._changed.set()

    def unfollow(self, room: str) -> None:
        """Undo one :meth:`follow`.

        Args:
            room: the room.
        """
        self._follows[room] -= 1
        if self._follows[room] <= 0:
            del self._follows[room]
        self._changed.set()

    async def synced(self) -> None:
        """Wait until Redis confirmed the rooms followed so far, or the link is down.

        Cancellation: safe; nothing changes.
        """
        while self._connected and set(self._follows) != self._active:
            await self._settled.wait()
        await trio.lowlevel.checkpoint()

    async def read(
        self, room: str, since: StreamPosition | None, limit: int | None, config: HistoryConfig
    ) -> HistoryPage:
        """Read a room's history from Redis (see :meth:`rue_trio.Hub.history`).

        Cancellation: safe; nothing changes.

        Args:
            room: the room.
            since: only the messages after this position.
            limit: at most this many.
            config: the room's history config.

        Returns:
            The room's epoch, latest offset and messages.

        Raises:
            BackplaneError: Redis cannot be reached.
        """
        client = self._client
        if client is None or not self._connected:
            await trio.lowlevel.checkpoint()
            raise BackplaneError("the history stream is not connected to Redis")
        stream = self._stream_key(room)
        try:
            async with client.pipeline(transaction=True) as pipe:
                meta = pipe.hmget(self._meta_key(room), [b"epoch", b"top"])
                if limit == 0:
                    entries = None
                elif since is not None:
                    entries = pipe.xrange(stream, f"{since.offset + 1}-0", "+", count=limit)
                else:
                    entries = pipe.xrevrange(stream, "+", "-", count=limit)
            raw_epoch, raw_top = await meta
            found = () if entries is None else await entries
        except Exception as exc:
            if not link_error(exc):
                raise
            raise BackplaneError(f"Redis at {self._shown_url} failed: {leaf(exc)}") from leaf(exc)
        if raw_epoch is None:
            return HistoryPage("", 0, (), recovered=since is None)
        epoch = raw_epoch.decode()
        top = int(raw_top or 0)
        messages = [_message(entry.identifier, entry.field_values) for entry in found]
        if since is None:
            return HistoryPage(epoch, top, tuple(reversed(messages)))
        if since.epoch != epoch or not 0 <= since.offset <= top:
            return HistoryPage(epoch, top, (), recovered=False)
        missing = not messages or messages[0].offset != since.offset + 1
        if limit != 0 and since.offset < top and missing:
            return HistoryPage(epoch, top, (), recovered=False)
        return HistoryPage(epoch, top, tuple(messages))

    # ------------------------------------------------------------------ running

    async def run(
        self, sink: SequencedSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect to Redis, then number and carry room broadcasts until cancelled.

        Args:
            sink: the hub's bounded buffer of numbered broadcasts.
            task_status: ``started()`` once Redis answered.

        Raises:
            BackplaneError: Redis cannot be reached at start.
            RuntimeError: this stream has already run.
        """
        if self._started:
            raise RuntimeError("a RedisStreams serves one hub and runs once")
        self._started = True
        self._sink = sink
        client = self._redis("cmd")
        with link_failures(self._shown_url):
            async with client:
                await first_contact(
                    client,
                    self._shown_url,
                    self._connect_attempts,
                    self._reconnect_min,
                    self._reconnect_max,
                )
                self._client = client
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self._subscriber, sink)
                        nursery.start_soon(self._sequencer, client, sink)
                        task_status.started()
                finally:
                    self._connected = False
                    self._client = None
                    self._out_send.close()

    def _redis(self, role: str) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self._url,
            decode_responses=False,
            client_name=f"{self._namespace}:streams:{role}",
            connect_timeout=self._connect_timeout,
        )

    def _meta_key(self, room: str) -> str:
        return f"{self._namespace}:h:{room}"

    def _stream_key(self, room: str) -> str:
        return f"{self._namespace}:hs:{room}"

    def _room_channel(self, room: str) -> bytes:
        return f"{self._namespace}:hc:{room}".encode()

    async def _sequencer(self, client: coredis.Redis[bytes], sink: SequencedSink) -> None:
        script = client.register_script(_APPEND)
        receive = self._out_receive
        async for first in receive:
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            try:
                # One pipeline per batch: the scripts run in order, one round trip.
                async with client.pipeline(transaction=False) as pipe:
                    for envelope, config in batch:
                        self._number(script, pipe, envelope, config)
            except Exception as exc:
                if not link_error(exc):
                    raise
                # Not numbered: the hub numbers them locally, for this node's members.
                for envelope, _ in batch:
                    _offer(sink, Sequenced(envelope, None))
            else:
                self._numbered += len(batch)

    def _number(self, script: Any, pipe: Any, envelope: Envelope, config: HistoryConfig) -> None:
        room = envelope.room
        assert room is not None
        ttl = "0" if config.ttl is None else str(math.ceil(config.ttl * 1000))
        script(
            keys=[self._meta_key(room), self._stream_key(room)],
            args=[
                secrets.token_hex(6),
                config.size,
                ttl,
                pack_envelope(envelope),
                self._room_channel(room),
                config.max_bytes,
            ],
            client=pipe,
        )

    def _subscriber_client(self) -> coredis.Redis[bytes]:
        return self._redis("sub")

    def _wanted_rooms(self) -> set[str]:
        return set(self._follows)

    async def _read(self, pubsub: Any, sink: SequencedSink) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True)
            if message is None or message["type"] != "message":
                continue
            data = message["data"]
            if not isinstance(data, bytes):
                continue
            try:
                raw_epoch, raw_offset, packed = data.split(b"\n", 2)
                envelope = _text(unpack_envelope(packed))
                position = StreamPosition(raw_epoch.decode(), int(raw_offset))
            except ValueError:
                self._dropped += 1
                continue
            self._received += 1
            if not _offer(sink, Sequenced(envelope, position)):
                self._dropped += 1


def _offer(sink: SequencedSink, item: Sequenced) -> bool:
    try:
        sink.send_nowait(item)
    except trio.WouldBlock:
        return False
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def _text(envelope: Envelope) -> Envelope:
    """Text payloads as ``str`` again, as the hub's own history keeps them."""
    data = envelope.data
    if envelope.type is MessageType.TEXT and isinstance(data, bytes):
        return Envelope(
            envelope.type, data.decode(), envelope.room, envelope.exclude, envelope.origin
        )
    return envelope


def _message(identifier: Any, fields: Any) -> HistoryMessage:
    offset = int(bytes(identifier).split(b"-", 1)[0])
    envelope = _text(unpack_envelope(fields[b"d"]))
    return HistoryMessage(offset, envelope.type, envelope.data, trio.current_time())
