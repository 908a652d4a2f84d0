"""A backplane channel carrying bytes that are not an envelope: counted, dropped, survived."""

from __future__ import annotations

import coredis
import trio

from rue_trio.protocol import MessageType
from tests.backplane.test_redis import backplane_stats, open_hubs, wait_until
from tests.hub._fakes import FakeMember

NOT_OURS = bytes(range(100, 116))  # an origin no hub has


async def test_hub_backplane_undecodable_messages_dropped_then_delivers(
    redis_url: str, namespace: str
) -> None:
    garbage = [
        b"\x01\x01\x01" + NOT_OURS + b"\xff\xff\x00\x00",  # a room longer than the message
        b"\x07\x01\x00" + NOT_OURS + b"\x00\x00\x00\x00",  # an unknown version
        b"\x01\x01\x01" + NOT_OURS + b"\x00\x02\x00\x00\xff\xfe",  # a room not in UTF-8
    ]
    with trio.fail_after(10):
        async with open_hubs(redis_url, namespace) as (a, b):
            member = FakeMember("b1")
            await b.join("room", member)
            admin = coredis.Redis.from_url(redis_url)
            async with admin:
                for data in garbage:
                    assert await admin.publish(f"{namespace}:bc", data) == 2
            await a.broadcast(MessageType.TEXT, "after the garbage")
            await wait_until(lambda: len(member.frames) == 1)
            assert member.payloads() == [b"after the garbage"]
            stats = backplane_stats(b)
            assert (stats.received, stats.dropped_inbound, stats.delivered) == (4, 3, 1)
