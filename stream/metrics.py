"""Prometheus metrics of a stream worker, served with Faust's own on ``/metrics``.

Names come from ``models.names.Metrics`` so dashboards and alert rules have one source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, Info

from models.names import EVENT_KINDS, Metrics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
"""0.05 apart on [0, 1] (the last is 1.0; +Inf is added): fine enough for drift quantiles."""
LABEL_DELAY_BUCKETS = (
    *(5.0, 10.0, 15.0, 30.0),  # seconds: demo producers, quick analysts
    *(60.0, 300.0, 900.0, 1800.0),  # minutes: analysts, spam reports
    *(3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0),  # hours
    *(86_400.0 * d for d in (1, 2, 3, 5, 7, 14, 30)),  # days: chargebacks
)

EVENTS = Counter(Metrics.EVENTS, "Events scored", ["kind"])
ALERTS = Counter(Metrics.ALERTS, "Alerts raised", ["kind", "decision"])
ALERT_REASONS = Counter(
    Metrics.ALERT_REASONS, "Reasons (features) named on the alerts raised", ["kind", "feature"]
)
DEAD_LETTERS = Counter(Metrics.DEAD_LETTERS, "Inputs sent to the dead-letter topic", ["topic"])
LABELS = Counter(Metrics.LABELS, "Labels received, by what became of them", ["kind", "outcome"])
LABEL_DELAY = Histogram(
    Metrics.LABEL_DELAY,
    "From a labelled event's own time to its label's time (when the label arrived)",
    ["kind"],
    buckets=LABEL_DELAY_BUCKETS,
)
SCORING_LATENCY = Histogram(
    Metrics.SCORING_LATENCY,
    "Worker time per event: decode, features, score, state (batch time / batch size)",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
EVENT_TO_DECISION = Histogram(
    Metrics.EVENT_TO_DECISION,
    "From the event's own time to its decision (includes the producer and Kafka)",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
SCORE = Histogram(
    Metrics.SCORE,
    "Scores given: online, batch (with a batch model) and hybrid (the final score)",
    ["kind", "score"],
    buckets=SCORE_BUCKETS,
)
PRECISION = Gauge(
    Metrics.PRECISION,
    "Precision at the review threshold over the last labelled events (learner only)",
    ["kind", "score"],
)
RECALL = Gauge(
    Metrics.RECALL,
    "Recall at the review threshold over the last labelled events (learner only)",
    ["kind", "score"],
)
AVERAGE_PRECISION = Gauge(
    Metrics.AVERAGE_PRECISION,
    "Average precision over the last labelled events (learner only)",
    ["kind", "score"],
)
CONSUMER_LAG = Gauge(
    Metrics.CONSUMER_LAG,
    "End offset minus committed offset of the worker's assigned input partitions",
    ["topic", "partition"],
)
STATE_ENTITIES = Gauge(
    Metrics.STATE_ENTITIES,
    "Cards (transaction) or senders (email) whose history this worker holds in memory",
    ["kind"],
)
STATE_BYTES = Gauge(
    Metrics.STATE_BYTES,
    "Bytes of the encoded histories this worker holds in memory (its tables' values)",
    ["kind"],
)
STATE_FORGOTTEN = Counter(
    Metrics.STATE_FORGOTTEN,
    "Histories dropped from memory because no event can use them any more (idle cards, senders)",
    ["kind"],
)
OFFSET_GAPS = Counter(
    Metrics.OFFSET_GAPS,
    "Jumps forward in an input partition's offsets, read again from the gap (stream.offsets)",
    ["topic"],
)
MODEL_VERSION = Gauge(Metrics.MODEL_VERSION, "Version of the model in use", ["kind", "model"])
CHECKPOINTS = Counter(Metrics.CHECKPOINTS, "Online-model checkpoints saved to Redis", ["kind"])
MODEL_SWAPS = Counter(
    Metrics.MODEL_SWAPS,
    "Batch-model changes: swapped in, or refused (bad payload)",
    ["kind", "outcome"],
)
BATCH_MODEL = Info(Metrics.BATCH_MODEL, "Batch model in use (version 'none' for none)", ["kind"])
# Every swap series exists from the start at 0: a series born at 1 hides its first swap
# from increase() and rate() (no earlier sample to compare with).
for _kind in EVENT_KINDS:
    for _outcome in ("swapped", "refused"):
        MODEL_SWAPS.labels(_kind, _outcome)


def observe_many(child: Any, values: Sequence[float]) -> None:
    """``child.observe(v)`` for every value, as one bucket count and one sum per call.

    prometheus_client has no bulk observe, and ``observe`` costs about 0.7 µs (a lock and a
    bucket scan): 1.4 ms for a 2,000-event batch per series, against 0.04 ms here (numpy
    counts per bucket, then one increment per bucket that got any). The result is what
    ``observe`` gives, value for value: a value goes to the first bucket whose upper bound
    is >= it. It reaches into the child's ``_upper_bounds``, ``_buckets`` and ``_sum``
    (prometheus_client's own histogram fields); without them it falls back to
    ``observe``, and a unit test compares both ways on the installed version.
    """
    if not values:
        return
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            child.observe(value)
        return
    array = np.asarray(values, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, array, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(float(array.sum()))
