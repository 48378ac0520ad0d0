"""Each event partition's offsets follow on from each other, or the worker reads them again.

The losses below were Faust's streams'. The worker's input no longer goes through them
(``stream.inbox``), and what its inbox drops at a rebalance is read again on purpose; the
guard stays as the check that nothing between Kafka and the scorer skips an offset, whatever
the cause.

Faust can hand a stream a message beyond others of the same partition that it dropped on the
way, around a rebalance: its consumer cancels the delivery of a message when the flow stops
(``wait_first(callback(message), suspend_flow.wait())``) and still marks it read, clears the
streams' queues, and skips what reached a stream while the flow was stopped. It relies on
seeking back to the committed offsets afterwards, which reads nothing again for a partition
no worker committed yet, or for messages dropped after that seek. Seen in the kill-a-worker
fault test (a second worker taking over the partitions of a killed one), with
``stream.transport``'s fix already in: 2 of 20 runs never scored 9 or 12 events, a run of
consecutive offsets of each partition taken over (107 to 111 of partition 1, 108 to 112 of
partition 3), while the worker had been handed the offsets on either side.

Events are written by producers that are not transactional, so a partition's offsets are
consecutive: a jump forward means messages were lost between Kafka and the worker. A jump
back is a replay (a seek to the committed offset after a rebalance) and is fine. The guard
admits a batch up to the first jump forward in each partition, holds back the rest of that
partition's messages, and says where to read it again from; the stream consumer seeks there
and the held messages come again, after the missing ones. A gap met twice in the same place
is taken as real and passed: the messages expired from Kafka before they were read, or the
offsets hold a transactional producer's commit markers (the producers here are not
transactional; a topic fed by one costs a read again per transaction).

A run lost at the end of a partition's traffic has no later message to show it:
:meth:`stalled` finds it by the consumer's position, past the next offset expected while
nothing came for a while (CI lost partition 3's last 32 events of the kill-a-worker test that
way, after the guard above was in). What the guard knows is what it was handed since the
last rebalance (:meth:`forget`): a message lost before the first one handed to it after a
rebalance is not seen. The labels partition goes through the same guard, anchored to the
online checkpoint's label offset (``StreamWorker._up_to_gap``): a label learned beyond a
skipped one would move that offset past it for good.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class Offset(Protocol):
    """What the guard and the inboxes read of a message (``stream.worker.RawMessage`` and
    Faust's ``Message`` have it)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


M = TypeVar("M", bound=Offset)


@dataclass
class Admitted(Generic[M]):
    """A batch after the guard: what to handle now, and where to read again from."""

    messages: list[M]
    rewinds: dict[Partition, int] = field(default_factory=dict)
    """Per partition with a gap, the first missing offset."""
    held: int = 0
    """Messages held back beyond a gap (they come again after the rewind)."""


class OffsetGuard:
    """The next offset expected of each partition handed to this worker since the last
    rebalance; see the module docstring."""

    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}
        self._last_gap: dict[Partition, tuple[int, int]] = {}
        self._moved_at: dict[Partition, float] = {}

    def forget(self) -> None:
        """A rebalance: every partition starts again from wherever the consumer does."""
        self._next.clear()
        self._moved_at.clear()

    def expect(self, tp: Partition, offset: int) -> None:
        """The next message of ``tp`` must be ``offset``, whatever came before: an anchor
        kept elsewhere (the labels' checkpoint offset)."""
        self._next[tp] = offset

    def stalled(
        self, positions: Mapping[Partition, int], now: float, after_s: float
    ) -> dict[Partition, int]:
        """Partitions the consumer has read past the next offset expected (``positions``:
        the offset each will fetch next) while nothing was handed over for ``after_s``:
        records lost on the way with no later message to show the gap (a partition's last
        messages). Returns where to read each again from, and restarts its clock."""
        out: dict[Partition, int] = {}
        for tp, expected in self._next.items():
            position = positions.get(tp)
            if position is None or position <= expected:
                continue
            if now - self._moved_at.setdefault(tp, now) >= after_s:
                out[tp] = expected
                self._moved_at[tp] = now
        return out

    def admit(self, messages: Sequence[M], now: float = 0.0) -> Admitted[M]:
        """The messages up to each partition's first gap (in the order given); the rest of
        a partition with a gap is held back. ``now`` (monotonic) times :meth:`stalled`."""
        admitted: Admitted[M] = Admitted([])
        for message in messages:
            tp = (message.topic, message.partition)
            if tp in admitted.rewinds:
                admitted.held += 1
                continue
            expected = self._next.get(tp)
            if expected is not None and message.offset > expected:
                gap = (expected, message.offset)
                if self._last_gap.get(tp) != gap:
                    self._last_gap[tp] = gap
                    admitted.rewinds[tp] = expected
                    admitted.held += 1
                    continue
                log.warning(
                    "%s[%d] offsets %d to %d are not in Kafka (expired, or transaction "
                    "markers); going on",
                    *tp,
                    expected,
                    message.offset - 1,
                )
            admitted.messages.append(message)
            self._next[tp] = message.offset + 1
            self._moved_at[tp] = now
        return admitted
