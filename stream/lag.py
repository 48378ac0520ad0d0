"""Consumer lag of a worker's input partitions, read on a timer.

``fraud_consumer_lag{topic, partition}`` is the partition's end offset minus the offset this
worker's consumer group committed there: the messages not yet processed for good. It is
refreshed every :data:`INTERVAL_S` by a Faust timer, not when records arrive, so a stalled
worker shows a growing lag instead of a frozen one.

Where the numbers come from, in Faust's consumer (``faust.transport.consumer``):

* ``assignment()``: the partitions assigned to this worker (changelog partitions included:
  only the input topics given here are reported);
* ``highwaters(*tps)``: end offsets, asked of the broker (aiokafka ``end_offsets``, one
  ListOffsets request per timer tick, in the consumer's thread);
* ``_committed_offset``: what this worker committed per partition, in Kafka's sense (the next
  offset to read), seeded from the group's committed offsets when partitions are assigned.
  Where nothing was ever committed the consumer starts at the earliest offset, so the lag is
  end minus earliest (``earliest_offsets``).

A partition that moved to another worker is removed from this worker's ``/metrics``, or its
last lag would stay on the dashboards' ``max by (topic, partition)`` forever.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from stream import metrics

log = logging.getLogger(__name__)

INTERVAL_S = 5.0


class ConsumerLag:
    """Reports the lag of the assigned partitions of ``topics``; forgets lost partitions.

    ``on_assignment`` (optional) is called on each successful refresh with the set of these
    topics this worker is assigned partitions of (the worker uses it to learn whether it
    still reads the labels topic).
    """

    def __init__(
        self,
        topics: Collection[str],
        on_assignment: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self._topics = frozenset(topics)
        self._on_assignment = on_assignment
        self._reported: set[tuple[str, int]] = set()

    async def refresh(self, consumer: Any) -> dict[tuple[str, int], int] | None:
        """Set the gauge for each assigned input partition; return the lags by (topic,
        partition), or None (and change nothing) while the consumer cannot tell."""
        try:
            assigned, lags = await self._read(consumer)
        except Exception as exc:  # not started, rebalancing, broker away: try next tick
            log.debug("consumer lag not available: %r", exc)
            return None
        for topic, partition in self._reported - lags.keys():
            with contextlib.suppress(KeyError):  # older prometheus_client versions raise
                metrics.CONSUMER_LAG.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        self._reported = set(lags)
        if self._on_assignment is not None:
            self._on_assignment(assigned)
        return lags

    async def _read(self, consumer: Any) -> tuple[frozenset[str], dict[tuple[str, int], int]]:
        tps = sorted(tp for tp in consumer.assignment() if tp.topic in self._topics)
        assigned = frozenset(tp.topic for tp in tps)
        if not tps:
            return assigned, {}
        ends = _by_pair(await consumer.highwaters(*tps))
        committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
        starts = {(tp.topic, tp.partition): committed.get(tp) for tp in tps}
        never = [tp for tp in tps if starts[tp.topic, tp.partition] is None]
        if never:
            starts.update(_by_pair(await consumer.earliest_offsets(*never)))
        lags = {}
        for pair, start in starts.items():
            end = ends.get(pair)
            if end is not None and start is not None:
                lags[pair] = max(0, int(end) - int(start))
        return assigned, lags


def _by_pair(offsets: Mapping[Any, int]) -> dict[tuple[str, int], int]:
    """Offsets keyed by (topic, partition), whatever TopicPartition type the keys are."""
    return {(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
