"""The outbound frame queue: bounds by frames and bytes, waiting for room, closing."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rue_trio.websocket import FrameQueue
from rue_trio.websocket._connection import _frame_estimate
from rue_trio.websocket._queue import _rest


def test_queue_send_nowait_full_by_frames_would_block() -> None:
    queue = FrameQueue(max_frames=2, max_bytes=1000)
    queue.send_nowait(b"a")
    queue.send_nowait(b"b")
    with pytest.raises(trio.WouldBlock):
        queue.send_nowait(b"c")
    assert len(queue) == 2


def test_queue_send_nowait_full_by_bytes_would_block() -> None:
    queue = FrameQueue(max_frames=100, max_bytes=10)
    queue.send_nowait(b"x" * 6)
    # Below the byte bound, one more frame is accepted even if it goes past it...
    queue.send_nowait(b"y" * 6)
    # ...and then nothing until the writer drains.
    with pytest.raises(trio.WouldBlock):
        queue.send_nowait(b"z")
    stats = queue.statistics()
    assert (stats.queued_frames, stats.queued_bytes) == (2, 12)


def test_queue_send_nowait_frame_larger_than_bound_accepted_when_empty() -> None:
    queue = FrameQueue(max_frames=4, max_bytes=10)
    queue.send_nowait(b"x" * 100)
    assert queue.statistics().queued_bytes == 100


def test_queue_send_nowait_empty_frame_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        FrameQueue().send_nowait(b"")


@pytest.mark.parametrize(("frames", "nbytes"), [(0, 10), (10, 0)])
def test_queue_create_bad_bounds_rejected(frames: int, nbytes: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FrameQueue(max_frames=frames, max_bytes=nbytes)


def test_queue_statistics_defaults() -> None:
    stats = FrameQueue().statistics()
    assert stats.max_frames == 64
    assert stats.max_bytes == 4 * 1024 * 1024
    assert stats.queued_frames == stats.queued_bytes == stats.tasks_waiting_room == 0
    assert stats.accepting


async def test_queue_send_full_waits_for_room() -> None:
    queue = FrameQueue(max_frames=1, max_bytes=100)
    queue.send_nowait(b"first")
    done = False

    async def sender() -> None:
        nonlocal done
        await queue.send(b"second")
        done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done
        assert queue.statistics().tasks_waiting_room == 1
        assert queue._take(1 << 20) == ([b"first"], False)
    assert done
    assert queue._take(1 << 20) == ([b"second"], False)


async def test_queue_send_cancelled_while_waiting_queues_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FrameQueue(max_frames=1, max_bytes=100)
    queue.send_nowait(b"first")
    with trio.move_on_after(1) as scope:
        await queue.send(b"second")
    assert scope.cancelled_caught
    assert queue._take(1 << 20) == ([b"first"], False)
    assert len(queue) == 0


async def test_queue_send_room_available_returns_at_once() -> None:
    queue = FrameQueue()
    await queue.send(b"frame")
    assert len(queue) == 1


async def test_queue_send_stopped_while_waiting_raises_broken() -> None:
    queue = FrameQueue(max_frames=1, max_bytes=100)
    queue.send_nowait(b"first")

    async def stop_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        queue._stop_accepting()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_soon)
        with pytest.raises(trio.BrokenResourceError):
            await queue.send(b"second")


def test_queue_stop_accepting_refuses_data_keeps_control() -> None:
    queue = FrameQueue()
    queue.send_nowait(b"data")
    queue._stop_accepting()
    with pytest.raises(trio.BrokenResourceError):
        queue.send_nowait(b"more")
    queue._append_control(b"close")
    queue._append_control(b"")
    assert not queue.statistics().accepting
    assert queue._take(1 << 20) == ([b"data", b"close"], True)


def test_queue_take_caps_batch_size_past_it_by_one_frame() -> None:
    queue = FrameQueue(max_frames=10, max_bytes=1000)
    for frame in (b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 40):
        queue.send_nowait(frame)
    assert queue._take(100) == ([b"a" * 40, b"b" * 40, b"c" * 40], False)
    assert queue._take(100) == ([b"d" * 40], False)
    # A large frame's header is not cut from its payload.
    queue.send_nowait(b"h" * 10)
    queue.send_nowait(b"p" * 500)
    queue.send_nowait(b"e" * 40)
    assert queue._take(100) == ([b"h" * 10, b"p" * 500], False)
    assert queue._take(100) == ([b"e" * 40], False)


def test_queue_take_stops_at_transport_marker_keeps_what_follows() -> None:
    """The batch ends at the "close the transport" marker, which is consumed."""
    queue = FrameQueue()
    queue.send_nowait(b"data")
    queue._append_control(b"")
    queue._frames.append(b"late")
    assert queue._take(1 << 20) == ([b"data"], True)
    assert len(queue) == 1
    assert queue.statistics().queued_bytes == 0


def test_queue_take_everything_leaves_queue_empty_and_usable() -> None:
    queue = FrameQueue(max_frames=3, max_bytes=1000)
    for frame in (b"a", b"bb", b"ccc"):
        queue.send_nowait(frame)
    assert queue._take(1 << 20) == ([b"a", b"bb", b"ccc"], False)
    assert (len(queue), queue.statistics().queued_bytes) == (0, 0)
    queue.send_nowait(b"d")
    assert queue._take(1 << 20) == ([b"d"], False)


def test_queue_close_drops_everything() -> None:
    queue = FrameQueue()
    queue.send_nowait(b"data")
    queue._close()
    queue._append_control(b"pong")
    assert len(queue) == 0
    assert queue.statistics().queued_bytes == 0
    with pytest.raises(trio.BrokenResourceError):
        queue.send_nowait(b"more")


async def test_queue_send_waits_until_the_frame_fits_under_the_byte_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What send() queues stays within max_bytes, or is one frame alone in the queue."""
    queue = FrameQueue(max_frames=100, max_bytes=10)
    queue.send_nowait(b"x" * 6)
    done = False

    async def sender() -> None:
        nonlocal done
        await queue.send(b"y" * 6)  # 6 + 6 > 10: waits, where the hub's offer would not
        done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done
        assert queue._take(1 << 20) == ([b"x" * 6], False)
    assert done
    await queue.send(b"z" * 4)  # 6 + 4 fits
    assert queue._take(1 << 20)[0] == [b"y" * 6, b"z" * 4]
    await queue.send(b"big" * 10)  # larger than the bound: goes into an empty queue
    assert queue._take(1 << 20)[0] == [b"big" * 10]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"b" * 700, 700),
        (bytearray(5), 5),
        (memoryview(b"abcd").cast("B", (2, 2)), 4),
        ("a" * 700, 700),
        ("\u00e9" * 200, 800),  # 400 bytes of UTF-8, counted at 4 a character
    ],
)
def test_send_room_is_asked_for_the_message_size(
    data: str | bytes | bytearray | memoryview, expected: int
) -> None:
    """send() asks the queue for room by the message's size, before encoding it."""
    assert _frame_estimate(data) == expected
    queue = FrameQueue(max_frames=100, max_bytes=1000)
    queue.send_nowait(b"q" * 500)
    assert queue._has_room(_frame_estimate(data)) is (expected <= 500)


@pytest.mark.parametrize(
    ("sent", "rest"),
    [(0, [b"abc", b"defg"]), (2, [b"c", b"defg"]), (3, [b"defg"]), (5, [b"fg"]), (7, [])],
)
def test_rest_of_buffers_after_a_partial_write(sent: int, rest: list[bytes]) -> None:
    """What a gathering write leaves: views of the buffers it took part of, no copies."""
    buffers: list[bytes | memoryview] = [b"abc", b"defg"]
    left = _rest(buffers, sent)
    assert [bytes(buffer) for buffer in left] == rest
    assert all(type(buffer) is memoryview for buffer in left[:1] if sent in (2, 5))
