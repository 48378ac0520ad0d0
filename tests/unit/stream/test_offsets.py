"""``stream.offsets.OffsetGuard``: a message beyond a gap waits for the gap to be read again."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from intervaltree import IntervalTree

from stream.offsets import OffsetGuard


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int


def run(topic: str, partition: int, offsets: range | list[int]) -> list[Msg]:
    return [Msg(topic, partition, o) for o in offsets]


def offsets(messages: list[Msg]) -> list[int]:
    return [m.offset for m in messages]


def test_consecutive_offsets_and_replays_pass():
    guard = OffsetGuard()
    assert offsets(guard.admit(run("t", 0, range(0, 5))).messages) == [0, 1, 2, 3, 4]
    assert offsets(guard.admit(run("t", 0, range(5, 8))).messages) == [5, 6, 7]
    replay = guard.admit(run("t", 0, range(3, 10)))  # a seek back to the committed offset
    assert offsets(replay.messages) == [3, 4, 5, 6, 7, 8, 9] and replay.rewinds == {}


def test_a_jump_forward_holds_the_partition_back_and_names_the_first_missing_offset():
    guard = OffsetGuard()
    guard.admit(run("t", 1, range(0, 107)) + run("t", 3, range(0, 108)))
    batch = run("t", 1, [112, 113]) + run("t", 3, [108, 109]) + run("t", 1, [114])
    admitted = guard.admit(batch)
    assert admitted.messages == run("t", 3, [108, 109])
    assert admitted.rewinds == {("t", 1): 107} and admitted.held == 3
    again = guard.admit(run("t", 1, range(107, 115)))  # read again from the gap
    assert offsets(again.messages) == list(range(107, 115)) and again.rewinds == {}


def test_the_same_gap_twice_is_real_and_passes():
    """Messages that expired from Kafka before they were read: the rewind finds the same
    gap; the second time it is passed (and logged)."""
    guard = OffsetGuard()
    guard.admit(run("t", 0, range(0, 3)))
    assert guard.admit(run("t", 0, [10, 11])).rewinds == {("t", 0): 3}
    second = guard.admit(run("t", 0, [10, 11]))
    assert offsets(second.messages) == [10, 11] and second.rewinds == {}


def test_after_a_rebalance_each_partition_starts_where_the_consumer_does():
    """Another worker may have read this partition in between: its first message after the
    rebalance is no gap."""
    guard = OffsetGuard()
    guard.admit(run("t", 0, range(0, 3)))
    guard.forget()
    admitted = guard.admit(run("t", 0, [40, 41]))
    assert offsets(admitted.messages) == [40, 41] and admitted.rewinds == {}


@given(
    size=st.integers(1, 60),
    cut=st.tuples(st.integers(0, 59), st.integers(1, 20)),
    batch=st.integers(1, 15),
)
def test_every_offset_is_admitted_once_a_lost_run_is_read_again(size, cut, batch):
    """The consumer loses a run of messages on the way; the guard's rewind brings them back
    (as a seek would), and every offset is handed over, in order, the lost ones included.
    A later message of the partition is what shows a gap: the run lost ends before the last
    message (a run lost at the very end waits for the partition's next message)."""
    start, length = cut
    lost = set(range(start, min(size - 1, start + length))) if start > 0 else set()
    stream = [o for o in range(size) if o not in lost]
    guard = OffsetGuard()
    handed: list[int] = []
    position = 0
    rewound = False
    while position < len(stream):
        chunk = stream[position : position + batch]
        admitted = guard.admit(run("t", 0, chunk))
        handed.extend(offsets(admitted.messages))
        if admitted.rewinds:
            assert not rewound, "one rewind brings the lost run back"
            rewound = True
            from_offset = admitted.rewinds[("t", 0)]
            stream = list(range(from_offset, size))  # what a seek back reads
            position = 0
        else:
            position += len(chunk)
    assert handed == list(range(size))


def test_a_run_lost_at_the_end_is_found_by_the_consumer_position():
    """Nothing comes after the last messages of a partition, so no gap shows: the consumer's
    position past the next offset expected, with nothing handed over for a while, does."""
    guard = OffsetGuard()
    guard.admit(run("t", 3, range(0, 186)), now=100.0)
    positions = {("t", 3): 218}  # the consumer fetched up to 217
    assert guard.stalled(positions, now=105.0, after_s=10.0) == {}  # may still be on its way
    assert guard.stalled(positions, now=110.0, after_s=10.0) == {("t", 3): 186}
    assert guard.stalled(positions, now=115.0, after_s=10.0) == {}  # its clock restarted
    guard.admit(run("t", 3, range(186, 218)), now=116.0)  # read again
    assert guard.stalled(positions, now=200.0, after_s=10.0) == {}


def test_a_partition_moving_along_or_caught_up_is_not_stalled():
    guard = OffsetGuard()
    guard.admit(run("t", 0, range(0, 10)), now=0.0)
    assert guard.stalled({("t", 0): 10}, now=60.0, after_s=10.0) == {}  # all handed over
    guard.admit(run("t", 0, range(10, 20)), now=59.0)
    assert guard.stalled({("t", 0): 30}, now=60.0, after_s=10.0) == {}  # handed over lately
    guard.forget()
    assert guard.stalled({("t", 0): 30}, now=600.0, after_s=10.0) == {}  # nothing known


class _FaustCommitBook:
    """The bookkeeping Faust's consumer commits from (``_acked`` and the rest), driven
    through Faust's own ``Consumer.ack`` and ``Consumer._new_offset``, the functions the
    worker's consumer runs (``stream.transport.Consumer`` overrides neither)."""

    def __init__(self, tp: TP) -> None:
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._gap: defaultdict[TP, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._unacked_messages: set[object] = set()
        self._waiting_for_ack = None
        self._n_acked = 0
        self.tp = tp

    def ack(self, message: object) -> None:
        FaustConsumer.ack(self, message)  # type: ignore[arg-type]

    def commit_offset(self) -> int | None:
        """The offset a commit now would store (None: nothing new to commit)."""
        offset: int | None = FaustConsumer._new_offset(self, self.tp)  # type: ignore[arg-type]
        if offset is not None:  # what Faust's commit records once the broker took it
            self._committed_offset[self.tp] = offset
        return offset


def test_messages_held_back_past_a_gap_are_acknowledged_yet_the_commit_stops_at_the_gap():
    """The consume loop acknowledges every message of a step, those the guard held back
    included (they come again after the rewind). Faust commits up to the first offset never
    acknowledged, so the commit stays at the gap: a worker that dies before the held messages
    come again leaves them, and the lost ones, to the next reader. (A gap that Faust itself
    noted while reading, from offsets missing in Kafka, would be passed over; the guard's
    gaps are of messages that were read, so Faust noted none.)"""
    from stream.transport import Consumer  # the worker's consumer commits as Faust's does

    assert Consumer.ack is FaustConsumer.ack
    assert Consumer._new_offset is FaustConsumer._new_offset
    tp = TP("events", 0)

    @dataclass(eq=False)  # hashable, as Faust's messages
    class FaustMsg:
        topic: str
        partition: int
        offset: int
        tp: TP
        acked: bool = False

    def msgs(offsets: list[int]) -> list[FaustMsg]:
        return [FaustMsg("events", 0, o, tp) for o in offsets]

    guard = OffsetGuard()
    book = _FaustCommitBook(tp)
    first = msgs([0, 1, 2])
    assert offsets(guard.admit(first).messages) == [0, 1, 2]  # type: ignore[arg-type]
    for m in first:
        book.ack(m)
    assert book.commit_offset() == 3

    step = msgs([3, 6, 7])  # 4 and 5 were read from Kafka but lost on the way
    admitted = guard.admit(step)
    assert offsets(admitted.messages) == [3]  # type: ignore[arg-type]
    assert admitted.rewinds == {("events", 0): 4} and admitted.held == 2
    for m in step:  # the whole step, held messages included
        book.ack(m)
    assert book.commit_offset() == 4  # not 8: 4 and 5 were never acknowledged

    again = msgs([4, 5, 6, 7])  # read again from the rewind
    assert offsets(guard.admit(again).messages) == [4, 5, 6, 7]  # type: ignore[arg-type]
    for m in again:
        book.ack(m)
    assert book.commit_offset() == 8
