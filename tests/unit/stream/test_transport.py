"""``stream.transport.Consumer.getmany``: no fetched record is lost when Faust does not hand
it over.

Faust's consumer state (flow, generation, active partitions, positions) is faked here: the
races that set it (a fetch returning while a rebalance stops the flow) cannot be forced in
a real worker. The real thing is the kill-a-worker fault test, which lost events, labels or
a whole changelog recovery before this change (``tests/integration/test_faults.py``)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream.inbox import Inbox
from stream.transport import Consumer
from tests.unit.stream.fake_messages import Msg

EVENTS = TP("ns.transactions.v1", 0)
EVENTS_1 = TP("ns.transactions.v1", 1)
LABELS = TP("ns.labels.v1", 0)
CHANGELOG = TP("ns-scorer-transaction-history-changelog", 0)


@dataclass
class Record:
    offset: int


class FakeConsumer(Consumer):
    """The consumer with Faust's state set by the test instead of by a running app."""

    should_stop = False  # type: ignore[assignment]

    def __init__(self, records: dict[TP, list[Record]], active: set[TP] | None) -> None:
        self.records, self.active = records, active
        self.flow_active = True
        self.app = SimpleNamespace(
            consumer_generation_id=1, monitor=SimpleNamespace(track_tp_end_offset=lambda *a: None)
        )
        self._buffered_partitions: set[TP] = set()
        self.scheduler = SimpleNamespace(iterate=self._round_robin)
        self.positions = {tp: batch[-1].offset + 1 for tp, batch in records.items() if batch}
        self.assigned = set(records)
        self.sought: dict[TP, int] = {}
        self.performed_seek = False
        self.on_record: Any = lambda tp, offset: None
        """Called as each record's turn comes: a test changes Faust's state from it."""
        self._pending_seeks: dict[TP, int] = {}

    @staticmethod
    def _round_robin(records: dict[TP, list[Record]]) -> Any:
        iterators = {tp: iter(batch) for tp, batch in records.items()}
        while iterators:
            for tp in list(iterators):
                record = next(iterators[tp], None)
                if record is None:
                    del iterators[tp]
                else:
                    yield tp, record

    async def _wait_next_records(self, timeout: float) -> Any:
        return self.records, self.active

    def _to_message(self, tp: TP, record: Any) -> Any:
        self.on_record(tp, record.offset)
        return record.offset

    def highwater(self, tp: TP) -> int:
        return 0

    def assignment(self) -> set[TP]:
        return self.assigned

    async def position(self, tp: TP) -> int | None:
        return self.positions[tp]

    async def seek(self, partition: TP, offset: int) -> None:
        self.sought[partition] = offset
        self.positions[partition] = offset

    async def perform_seek(self) -> None:
        self.performed_seek = True


def drain(consumer: FakeConsumer) -> list[tuple[TP, int]]:
    async def run() -> list[tuple[TP, int]]:
        return [(tp, offset) async for tp, offset in consumer.getmany(timeout=1.0)]

    return asyncio.run(run())


def batch(first: int, n: int) -> list[Record]:
    return [Record(offset) for offset in range(first, first + n)]


def test_records_of_active_partitions_are_handed_over_and_nothing_is_sought():
    consumer = FakeConsumer({EVENTS: batch(10, 3), LABELS: batch(0, 2)}, {EVENTS, LABELS})
    handed = drain(consumer)
    assert [x for x in handed if x[0] == EVENTS] == [(EVENTS, 10), (EVENTS, 11), (EVENTS, 12)]
    assert [x for x in handed if x[0] == LABELS] == [(LABELS, 0), (LABELS, 1)]
    assert consumer.sought == {}


def test_the_monitor_hears_each_partitions_end_offset_once_per_fetch():
    consumer = FakeConsumer({EVENTS: batch(10, 3), LABELS: batch(0, 2)}, {EVENTS, LABELS})
    heard: list[TP] = []
    consumer.app.monitor.track_tp_end_offset = lambda tp, offset: heard.append(tp)
    assert len(drain(consumer)) == 5
    assert sorted(heard) == sorted([EVENTS, LABELS])


def test_a_partition_not_active_is_sought_back_to_its_first_record():
    consumer = FakeConsumer({EVENTS: batch(10, 3), CHANGELOG: batch(0, 5)}, {EVENTS})
    handed = drain(consumer)
    assert handed == [(EVENTS, 10), (EVENTS, 11), (EVENTS, 12)]
    assert consumer.sought == {CHANGELOG: 0}


def test_when_the_flow_stopped_during_the_fetch_every_partition_is_read_again():
    """The recovery stall: a fetch waiting when the rebalance stopped the flow returns the
    changelog records recovery waits for. Faust seeks to the committed offsets, which for a
    partition nobody committed is no seek at all; here each partition goes back."""
    consumer = FakeConsumer({CHANGELOG: batch(0, 49), EVENTS: batch(157, 4)}, {CHANGELOG, EVENTS})
    consumer.flow_active = False
    assert drain(consumer) == []
    assert consumer.performed_seek
    assert consumer.sought == {CHANGELOG: 0, EVENTS: 157}


def test_records_after_the_generation_changed_are_read_again():
    consumer = FakeConsumer({EVENTS: batch(10, 4)}, {EVENTS})

    def rebalance_after_11(tp: TP, offset: int) -> None:
        if offset == 11:
            consumer.app.consumer_generation_id = 2

    consumer.on_record = rebalance_after_11
    assert drain(consumer) == [(EVENTS, 10), (EVENTS, 11)]
    assert consumer.sought == {EVENTS: 12}


def test_a_partition_that_went_inactive_mid_batch_keeps_its_later_records_for_later():
    """Once one record of a partition is dropped, the later ones are dropped with it (and read
    again), even if the partition is active again by their turn: order is kept."""
    active = {EVENTS, LABELS}
    consumer = FakeConsumer({EVENTS: batch(0, 3), LABELS: batch(152, 4)}, active)

    def flicker(tp: TP, offset: int) -> None:
        if (tp, offset) == (EVENTS, 0):
            active.discard(LABELS)  # LABELS 152 comes next: dropped
        if (tp, offset) == (EVENTS, 1):
            active.add(LABELS)  # LABELS 153 would be active again: still dropped

    consumer.on_record = flicker
    handed = drain(consumer)
    assert [offset for tp, offset in handed if tp == LABELS] == []
    assert consumer.sought == {LABELS: 152}


def test_a_seek_only_ever_moves_back():
    """A partition another seek already took back (recovery, the label rewind) is left where
    it is, and one no longer assigned to this worker is not touched."""
    consumer = FakeConsumer({EVENTS: batch(10, 3), LABELS: batch(5, 2)}, set())
    consumer.active = {CHANGELOG}  # neither is active: both dropped
    consumer.positions[EVENTS] = 4  # sought back to 4 by someone else meanwhile
    consumer.assigned = {EVENTS}  # LABELS went to another worker
    assert drain(consumer) == []
    assert consumer.sought == {}


# --------------------------------------------------------------- the fetch loop and inboxes


class FakeFetchLoop(Consumer):
    """The consumer's fetch loop (``_drain_messages``) over scripted fetches, with the
    inboxes of ``stream.app`` and Faust's per-message callback recorded."""

    should_stop = False  # type: ignore[assignment]
    consumer_stopped_errors = ()

    def __init__(self, fetches: list[list[Msg]], inbox_capacity: int = 100) -> None:
        self.fetches = list(fetches)
        self.flow_active = True
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.gaps: list[tuple[TP, int, int]] = []
        self.called_back: list[Msg] = []
        self.sought: dict[TP, int] = {}
        self._pending_seeks: dict[TP, int] = {}
        self.app = SimpleNamespace(
            inboxes={EVENTS.topic: Inbox(EVENTS.topic, inbox_capacity)},
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        )
        self.on_fetch: Any = lambda n: None
        """Called before each fetch is handed over: a test changes Faust's state from it."""

    async def callback(self, message: Any) -> None:  # type: ignore[override]
        self.called_back.append(message)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return done

    async def getmany(self, timeout: float) -> Any:
        if not self.fetches:
            self._stopped.set()
            return
        self.on_fetch(len(self.fetches))
        for message in self.fetches.pop(0):
            yield message.tp, message

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))

    def assignment(self) -> set[TP]:
        return {EVENTS, CHANGELOG}

    async def position(self, tp: TP) -> int | None:
        return 10_000

    async def seek(self, partition: TP, offset: int) -> None:
        self.sought[partition] = offset
        self._read_offset[partition] = offset


def msgs(tp: TP, first: int, n: int) -> list[Msg]:
    return [Msg(tp.topic, tp.partition, offset) for offset in range(first, first + n)]


def run_loop(consumer: FakeFetchLoop) -> list[tuple[int, int]]:
    """Run the fetch loop over the scripted fetches; return what its inbox holds then."""

    async def run() -> list[tuple[int, int]]:
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        await asyncio.wait_for(consumer._drain_messages(fetcher), 5)
        inbox = consumer.app.inboxes[EVENTS.topic]
        taken = await inbox.take(len(inbox), 0) if len(inbox) else []
        return [(m.partition, m.offset) for m in taken]

    return asyncio.run(run())


def test_an_inbox_topic_goes_to_its_inbox_a_fetch_at_a_time_other_topics_one_by_one():
    fetch = [*msgs(EVENTS, 0, 3), *msgs(CHANGELOG, 40, 2), *msgs(EVENTS_1, 7, 2)]
    consumer = FakeFetchLoop([fetch])
    assert run_loop(consumer) == [(0, 0), (0, 1), (0, 2), (1, 7), (1, 8)]
    assert [m.offset for m in consumer.called_back] == [40, 41]
    assert consumer.sought == {}


def test_records_read_already_are_skipped_and_a_gap_is_noted_for_commits():
    """Faust's read-offset check, kept for the inbox's records: a record before the last one
    read is not handed over again (the last one itself is, as in Faust: the worker takes it
    as a replay); a jump forward is recorded so commits can pass it."""
    consumer = FakeFetchLoop([msgs(EVENTS, 5, 3), [*msgs(EVENTS, 6, 2), *msgs(EVENTS, 12, 1)]])
    assert run_loop(consumer) == [(0, 5), (0, 6), (0, 7), (0, 7), (0, 12)]
    assert consumer.gaps == [(EVENTS, 8, 12)]


def test_a_fetch_waits_for_room_in_the_inbox_and_is_read_again_if_the_flow_stops_meanwhile():
    """The worker is behind (the inbox is full) when a rebalance stops the flow: the waiting
    fetch is not put in the inbox but sought back to, to be read again."""
    consumer = FakeFetchLoop([msgs(EVENTS, 0, 4), msgs(EVENTS, 4, 3)], inbox_capacity=2)

    def stop_the_flow_later(fetches_left: int) -> None:
        if fetches_left == 1:

            def stop() -> None:
                consumer.flow_active = False
                consumer.suspend_flow.set()

            asyncio.get_running_loop().call_later(0.05, stop)

    consumer.on_fetch = stop_the_flow_later
    assert run_loop(consumer) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert consumer.sought == {EVENTS: 4}


def test_a_requested_seek_is_made_between_fetches_and_what_was_fetched_before_it_is_dropped():
    """The worker rewinds a partition (``stream.offsets``) while records beyond the gap wait
    in the inbox and a fetch of more is in hand. Those would move Faust's read offset past
    the records read again, which were then skipped as read already: a learner rewound its
    labels some 600 times in 25 s that way. They are dropped; earlier ones stay."""
    consumer = FakeFetchLoop([msgs(EVENTS, 45, 5), msgs(EVENTS, 10, 5)])
    inbox = consumer.app.inboxes[EVENTS.topic]
    inbox.put(msgs(EVENTS, 5, 3))  # before the gap: taken by no one yet, kept
    inbox.put([*msgs(EVENTS, 40, 5), *msgs(EVENTS_1, 40, 2)])  # beyond it; another partition
    consumer._read_offset[EVENTS] = 44

    def rewind_during_the_first_fetch(fetches_left: int) -> None:
        if fetches_left == 2:
            consumer.request_seek(EVENTS, 10)

    consumer.on_fetch = rewind_during_the_first_fetch
    held = run_loop(consumer)
    assert held == [(0, 5), (0, 6), (0, 7), (1, 40), (1, 41), *((0, n) for n in range(10, 15))]
    assert consumer.sought == {EVENTS: 10}
    assert consumer.gaps == [], "records fetched before the seek noted a gap"


# -------------------------------------------------------------------------------- seeking


class FakeConsumerThread:
    """Faust's consumer thread, as far as a seek goes: an event loop on a thread of its own
    (where aiokafka's fetcher runs), and ``call_thread`` to run a call there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.seeks: list[tuple[TP, int, threading.Thread]] = []

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        async def call() -> Any:  # what mode's thread does with each call
            result = fun(*args)
            return await result if inspect.isawaitable(result) else result

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), self.loop))

    def seek(self, partition: TP, offset: int) -> None:
        self.seeks.append((partition, offset, threading.current_thread()))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_a_seek_runs_on_the_consumer_thread_not_the_event_loops():
    """aiokafka's fetcher is not thread-safe: Faust's seek from the event loop's thread,
    while the consumer thread was handing out fetched records, crashed the fetcher
    (``KeyError`` in ``Fetcher.fetched_records``) and stopped the worker under ``make up``."""
    consumer = FakeConsumer({}, None)
    thread = FakeConsumerThread()
    consumer._thread = thread  # type: ignore[assignment]
    try:
        asyncio.run(Consumer._seek(consumer, EVENTS, 42))
    finally:
        thread.stop()
    assert [(tp, offset) for tp, offset, _ in thread.seeks] == [(EVENTS, 42)]
    assert thread.seeks[0][2] is thread.thread


def test_a_seek_further_back_makes_a_requested_seek_needless_and_a_rebalance_forgets_them():
    """Made after a seek that reads further back, a requested seek would skip what lies
    between (records dropped and not handed over); after a rebalance each partition starts
    from its committed offset anyway."""
    consumer = FakeConsumer({}, None)
    thread = FakeConsumerThread()
    consumer._thread = thread  # type: ignore[assignment]
    try:
        consumer.request_seek(EVENTS, 50)
        consumer.request_seek(EVENTS_1, 10)
        asyncio.run(Consumer._seek(consumer, EVENTS, 20))
        asyncio.run(Consumer._seek(consumer, EVENTS_1, 30))
    finally:
        thread.stop()
    assert consumer._pending_seeks == {EVENTS_1: 10}
    consumer.forget_requested_seeks()
    assert consumer._pending_seeks == {}
