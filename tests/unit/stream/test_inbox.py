"""``stream.inbox.Inbox``: the buffer between the consumer's fetch loop and the worker."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream.inbox import Inbox
from tests.unit.stream.fake_messages import Msg

TOPIC = "ns.transactions.v1"


def fetch(partition: int, first: int, n: int) -> list[Msg]:
    return [Msg(TOPIC, partition, offset) for offset in range(first, first + n)]


def offsets(messages: list[Msg]) -> list[tuple[int, int]]:
    return [(m.partition, m.offset) for m in messages]


def test_a_full_batch_is_taken_at_once_in_the_order_fetched_across_fetches():
    async def run() -> tuple[list[Msg], list[Msg], int]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=100)
        inbox.put(fetch(0, 10, 3))
        inbox.put(fetch(1, 0, 3))
        first = await inbox.take(4, within_s=60)  # 60 s: it must not wait
        rest = await inbox.take(10, within_s=0)
        return first, rest, len(inbox)

    first, rest, left = asyncio.run(run())
    assert offsets(first) == [(0, 10), (0, 11), (0, 12), (1, 0)]
    assert offsets(rest) == [(1, 1), (1, 2)]
    assert left == 0


def test_a_short_batch_waits_within_s_from_the_arrival_of_its_oldest_message():
    """What arrived while the worker handled the last batch has waited already: the take
    returns once the oldest message has waited ``within_s``, not ``within_s`` after the call."""

    async def run() -> tuple[float, float, list[Msg]]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=100)
        inbox.put(fetch(0, 0, 2), now=time.monotonic() - 0.5)  # waited 0.5 s already
        started = time.monotonic()
        old = await inbox.take(10, within_s=0.5)
        waited_old = time.monotonic() - started
        inbox.put(fetch(0, 2, 1))
        started = time.monotonic()
        new = await inbox.take(10, within_s=0.2)
        return waited_old, time.monotonic() - started, old + new

    waited_old, waited_new, taken = asyncio.run(run())
    assert waited_old < 0.1
    assert 0.15 <= waited_new < 1.0
    assert offsets(taken) == [(0, 0), (0, 1), (0, 2)]


def test_ready_says_whether_a_take_would_return_at_once():
    inbox: Inbox[Msg] = Inbox(TOPIC, capacity=100)
    assert not inbox.ready(3, within_s=0.0)  # empty: a take waits for messages
    inbox.put(fetch(0, 0, 2))
    assert not inbox.ready(3, within_s=60)  # short, and the oldest has not waited 60 s
    assert inbox.ready(2, within_s=60)  # a full batch
    inbox.put(fetch(1, 0, 1), now=time.monotonic())
    assert inbox.ready(5, within_s=0.0)
    late: Inbox[Msg] = Inbox(TOPIC, capacity=100)
    late.put(fetch(0, 0, 1), now=time.monotonic() - 1.0)  # the oldest waited a second
    assert late.ready(10, within_s=0.5) and not late.ready(10, within_s=5.0)


def test_a_take_waits_for_messages_and_returns_when_the_batch_fills():
    async def run() -> list[Msg]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=100)

        async def feed() -> None:
            await asyncio.sleep(0.05)
            inbox.put(fetch(2, 0, 2))
            await asyncio.sleep(0.05)
            inbox.put(fetch(2, 2, 2))

        feeder = asyncio.create_task(feed())
        taken = await asyncio.wait_for(inbox.take(4, within_s=30), timeout=5)
        await feeder
        return taken

    assert offsets(asyncio.run(run())) == [(2, 0), (2, 1), (2, 2), (2, 3)]


def test_room_is_bounded_by_capacity_and_freed_by_taking():
    async def run() -> tuple[bool, bool, bool]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=3)
        inbox.put(fetch(0, 0, 5))  # one fetch always goes in whole
        full = inbox.has_room()
        waiter = asyncio.create_task(inbox.wait_for_room())
        await asyncio.sleep(0.01)
        still_waiting = not waiter.done()
        await inbox.take(3, within_s=0)
        await asyncio.wait_for(waiter, timeout=5)
        return full, still_waiting, inbox.has_room()

    full, still_waiting, room = asyncio.run(run())
    assert (full, still_waiting, room) == (False, True, True)


def test_clear_drops_everything_and_says_where_each_partition_starts_again():
    async def run() -> tuple[dict[tuple[str, int], int], int, bool]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=2)
        inbox.put(fetch(0, 10, 3))
        inbox.put(fetch(3, 7, 2))
        await inbox.take(2, within_s=0)  # 10 and 11 of partition 0 were taken
        return inbox.clear(), len(inbox), inbox.has_room()

    dropped, left, room = asyncio.run(run())
    assert dropped == {(TOPIC, 0): 12, (TOPIC, 3): 7}
    assert (left, room) == (0, True)


def test_discard_drops_a_partitions_messages_from_an_offset_on_and_keeps_the_rest():
    inbox: Inbox[Msg] = Inbox(TOPIC, capacity=8)
    inbox.put([Msg(TOPIC, 0, 5), Msg(TOPIC, 1, 5), Msg(TOPIC, 0, 6)])
    inbox.put([Msg(TOPIC, 0, 7), Msg(TOPIC, 0, 8), Msg(TOPIC, 1, 6)])
    inbox.put([Msg(TOPIC, 0, 9)])
    assert len(inbox) == 7
    assert inbox.discard(0, from_offset=6) == 4
    assert len(inbox) == 3 and inbox.has_room()
    taken = asyncio.run(inbox.take(10, 0))
    assert [(m.partition, m.offset) for m in taken] == [(0, 5), (1, 5), (1, 6)]
    assert inbox.discard(0, from_offset=0) == 0


def test_messages_put_back_come_first():
    async def run() -> list[Msg]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=10)
        inbox.put(fetch(0, 0, 4))
        taken = await inbox.take(2, within_s=0)
        inbox.put_back(taken)
        return await inbox.take(10, within_s=0)

    assert offsets(asyncio.run(run())) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_a_take_waiting_when_the_inbox_is_cleared_waits_for_new_messages():
    async def run() -> list[Msg]:
        inbox: Inbox[Msg] = Inbox(TOPIC, capacity=10)
        inbox.put(fetch(0, 0, 1))
        taker = asyncio.create_task(inbox.take(5, within_s=0.2))
        await asyncio.sleep(0.05)
        inbox.clear()  # a rebalance, while the take waits to fill its batch
        await asyncio.sleep(0.3)
        assert not taker.done()
        inbox.put(fetch(0, 0, 1))  # read again
        return await asyncio.wait_for(taker, timeout=5)

    assert offsets(asyncio.run(run())) == [(0, 0)]


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        Inbox(TOPIC, capacity=0)
