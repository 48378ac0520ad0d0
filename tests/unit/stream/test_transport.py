"""``stream.transport.Consumer.getmany``: no fetched record is lost when Faust does not hand
it over.

Faust's consumer state (flow, generation, active partitions, positions) is faked here: the
races that set it (a fetch returning while a rebalance stops the flow) cannot be forced in
a real worker. The real thing is the kill-a-worker fault test, which lost events, labels or
a whole changelog recovery before this change (``tests/integration/test_faults.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream.transport import Consumer

EVENTS = TP("ns.transactions.v1", 0)
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
