"""The worker's Prometheus metrics, without Kafka or Redis: names, types and labels as the
dashboards query them, bulk histogram updates, rolling quality, consumer lag.

The worker-driven parts that need Redis (alerts, served records, labels) are in
``tests/integration/test_metrics_endpoint.py``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, NamedTuple

import numpy as np
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from sklearn.metrics import average_precision_score

from dashboards.metrics import HISTOGRAMS, INFOS, Pending, names
from models import evaluation
from models.events import Label
from models.names import Metrics, Topics
from models.online import OnlineModel
from models.settings import Settings
from stream import metrics, quality
from stream.lag import ConsumerLag
from stream.scoring import TRANSACTIONS, Thresholds, score_batch
from stream.worker import StreamWorker
from tests import factories

LABELS: dict[str, tuple[str, ...]] = {
    Metrics.EVENTS: ("kind",),
    Metrics.ALERTS: ("kind", "decision"),
    Metrics.ALERT_REASONS: ("kind", "feature"),
    Metrics.DEAD_LETTERS: ("topic",),
    Metrics.LABELS: ("kind", "outcome"),
    Metrics.LABEL_DELAY: ("kind",),
    Metrics.SCORING_LATENCY: ("kind",),
    Metrics.EVENT_TO_DECISION: ("kind",),
    Metrics.SCORE: ("kind", "score"),
    Metrics.PRECISION: ("kind", "score"),
    Metrics.RECALL: ("kind", "score"),
    Metrics.AVERAGE_PRECISION: ("kind", "score"),
    Metrics.CONSUMER_LAG: ("topic", "partition"),
    Metrics.STATE_ENTITIES: ("kind",),
    Metrics.STATE_BYTES: ("kind",),
    Metrics.STATE_FORGOTTEN: ("kind",),
    Metrics.OFFSET_GAPS: ("topic",),
    Metrics.MODEL_VERSION: ("kind", "model"),
    Metrics.CHECKPOINTS: ("kind",),
    Metrics.MODEL_SWAPS: ("kind", "outcome"),
    Metrics.BATCH_MODEL: ("kind",),
}
"""The labels each metric carries: what the dashboards group and filter by."""


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def exported() -> dict[str, Any]:
    """The worker's metric objects by their name in ``models.names.Metrics`` (prometheus_client
    keeps a counter's name without its ``_total``)."""
    by_name = {m._name: m for m in vars(metrics).values() if hasattr(m, "_labelnames")}
    return {n: by_name.get(n.removesuffix("_total")) for n in names(Metrics)}


# -- names, types, labels ------------------------------------------------------------------


def test_nothing_is_pending_any_more():
    assert names(Pending) == []


@pytest.mark.parametrize("name", names(Metrics))
def test_each_metric_is_exported_with_the_type_and_labels_the_dashboards_expect(name):
    metric = exported()[name]
    assert metric is not None, f"{name} is in models.names.Metrics but stream.metrics lacks it"
    expected_type = (
        "histogram"
        if name in HISTOGRAMS
        else "info"
        if name in INFOS
        else "counter"
        if name.endswith("_total")
        else "gauge"
    )
    assert metric._type == expected_type
    assert tuple(metric._labelnames) == LABELS[name]


def test_score_buckets_are_a_twentieth_apart_up_to_one():
    assert metrics.SCORE_BUCKETS[0] == 0.05 and metrics.SCORE_BUCKETS[-1] == 1.0
    assert np.allclose(np.diff(metrics.SCORE_BUCKETS), 0.05)
    assert max(metrics.LABEL_DELAY_BUCKETS) >= 7 * 86_400  # chargebacks take days


# -- bulk histogram updates ----------------------------------------------------------------


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_gives_what_one_observe_per_value_gives():
    edges = [0.0, 0.05, 0.0500001, 0.1, 0.95, 1.0, 1.5, -0.2, 0.3]
    values = edges + [random.Random(7).random() for _ in range(2000)]
    one, many = CollectorRegistry(), CollectorRegistry()
    a = Histogram("s", "s", ["kind"], buckets=metrics.SCORE_BUCKETS, registry=one)
    b = Histogram("s", "s", ["kind"], buckets=metrics.SCORE_BUCKETS, registry=many)
    for v in values:
        a.labels("x").observe(v)
    metrics.observe_many(b.labels("x"), values)
    metrics.observe_many(b.labels("x"), [])
    got, want = _samples(many), _samples(one)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key] == pytest.approx(expected), key


def test_observe_many_falls_back_to_observe_without_the_histogram_internals():
    seen: list[float] = []

    class Plain:
        def observe(self, amount: float) -> None:
            seen.append(amount)

    metrics.observe_many(Plain(), [0.1, 0.2])
    assert seen == [0.1, 0.2]


# -- rolling quality -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_is_the_backtests_and_scikit_learns_ties_included(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    s = np.round(rng.random(300) + y * 0.3, 1)  # few distinct scores: many ties
    window = quality.RollingQuality(window=300)
    for positive, score in zip(y, s, strict=True):
        window.add(float(score), float(score), False, False, bool(positive))
    ap = window.figures()["online"].average_precision
    assert ap == pytest.approx(evaluation.average_precision(y, s))
    assert ap == pytest.approx(average_precision_score(y, s))
    negatives_only = quality.RollingQuality()
    negatives_only.add(0.3, 0.3, False, False, False)
    assert negatives_only.figures()["online"].average_precision is None
    assert quality.RollingQuality().figures()["online"].average_precision is None


def test_rolling_quality_keeps_the_last_window_and_judges_each_score_by_its_own_flags():
    window = quality.RollingQuality(window=4)
    window.add(0.9, 0.9, True, True, False)  # falls out of the window
    window.add(0.8, 0.2, True, False, True)
    window.add(0.1, 0.7, False, True, True)
    window.add(0.6, 0.6, True, True, False)
    window.add(0.05, 0.1, False, False, False)
    assert len(window) == 4
    figures = window.figures()
    assert figures["online"].precision == pytest.approx(1 / 2)
    assert figures["online"].recall == pytest.approx(1 / 2)
    assert figures["hybrid"].precision == pytest.approx(1 / 2)
    assert figures["hybrid"].recall == pytest.approx(1 / 2)
    y = [True, True, False, False]
    assert figures["online"].average_precision == pytest.approx(
        average_precision_score(y, [0.8, 0.1, 0.6, 0.05])
    )
    assert figures["hybrid"].average_precision == pytest.approx(
        average_precision_score(y, [0.2, 0.7, 0.6, 0.1])
    )
    window.clear()
    assert len(window) == 0 and window.figures()["hybrid"].precision is None


def test_undefined_figures_are_removed_from_metrics_not_exported_as_zero():
    window = quality.RollingQuality()
    window.add(0.9, 0.9, True, True, True)
    quality.publish("email", window)
    assert value(Metrics.PRECISION, kind="email", score="hybrid") == 1.0
    window.clear()
    window.add(0.1, 0.1, False, False, False)  # nothing flagged, no positive
    quality.publish("email", window)
    for name in (Metrics.PRECISION, Metrics.RECALL, Metrics.AVERAGE_PRECISION):
        assert REGISTRY.get_sample_value(name, {"kind": "email", "score": "hybrid"}) is None


# -- the worker, without Redis ---------------------------------------------------------------


THRESHOLDS = Thresholds(0.5, 0.9)


def new_worker(**settings: Any) -> StreamWorker:
    # Nothing here reaches Redis: the client connects lazily, on a first command.
    s = Settings(namespace="unitmetrics", redis_url="redis://127.0.0.1:1/0", **settings)
    return StreamWorker(
        s, _NoSink(), {"transaction": {}, "email": {}}, aioredis.from_url(s.redis_url)
    )


class _NoSink:
    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        raise AssertionError("nothing is sent here")


def test_each_scored_batch_fills_the_score_histograms_once_per_event():
    worker = new_worker()
    txns = [factories.transaction(n) for n in range(300)]
    batch = factories.batch_model("metrics-v1")

    def score(model: Any) -> list[Any]:
        online = OnlineModel("transaction")
        return score_batch(TRANSACTIONS, txns, {}, {}, online, "v", THRESHOLDS, 0.0, batch=model)

    def counts() -> dict[str, float]:
        return {
            s: value(f"{Metrics.SCORE}_count", kind="transaction", score=s)
            for s in ("online", "batch", "hybrid")
        }

    before = counts()
    worker._observe("transaction", score(None), elapsed=0.01)
    after_online = counts()
    assert after_online["online"] - before["online"] == 300
    assert after_online["hybrid"] - before["hybrid"] == 300
    assert after_online["batch"] == before["batch"]  # no batch model, no batch score
    verdicts = score(batch)
    total = f"{Metrics.SCORE}_sum"
    sum_before = value(total, kind="transaction", score="batch")
    worker._observe("transaction", verdicts, elapsed=0.01)
    after = counts()
    assert {s: after[s] - after_online[s] for s in after} == {
        "online": 300,
        "batch": 300,
        "hybrid": 300,
    }
    assert value(total, kind="transaction", score="batch") - sum_before == pytest.approx(
        sum(v.scored.batch_score for v in verdicts)
    )
    top = value(f"{Metrics.SCORE}_bucket", kind="transaction", score="hybrid", le="1.0")
    assert top == after["hybrid"]  # scores are in [0, 1]


def _label(event_id: str, positive: bool, at: float) -> Label:
    return factories.label(event_id, "transaction", positive, at=at)


def test_learned_labels_give_their_delay_and_the_rolling_quality_of_the_scores_served():
    worker = new_worker(txn_review_threshold=0.5, txn_block_threshold=0.9)
    t = factories.T0
    learned = [
        # event at t, label one hour later: online 0.8 (flagged at 0.5), hybrid alerted
        (_label("e1", True, t + 3600), {"k": "transaction", "t": t, "o": 0.8, "h": 0.7, "a": 1}),
        (_label("e2", False, t + 60), {"k": "transaction", "t": t, "o": 0.6, "h": 0.2, "a": 0}),
        (_label("e3", True, t + 86_400), {"k": "transaction", "t": t, "o": 0.1, "h": 0.1, "a": 0}),
        # served before records held the time and the scores: counted nowhere here
        (_label("e4", True, t + 5), {"k": "transaction", "s": "term-1", "f": {}}),
    ]
    count = f"{Metrics.LABEL_DELAY}_count"
    total = f"{Metrics.LABEL_DELAY}_sum"
    before = (value(count, kind="transaction"), value(total, kind="transaction"))
    worker._observe_labels(learned)
    assert value(count, kind="transaction") - before[0] == 3
    assert value(total, kind="transaction") - before[1] == pytest.approx(3600 + 60 + 86_400)
    online = {"kind": "transaction", "score": "online"}
    hybrid = {"kind": "transaction", "score": "hybrid"}
    assert value(Metrics.PRECISION, **online) == pytest.approx(1 / 2)
    assert value(Metrics.RECALL, **online) == pytest.approx(1 / 2)
    assert value(Metrics.PRECISION, **hybrid) == 1.0
    assert value(Metrics.RECALL, **hybrid) == pytest.approx(1 / 2)
    assert value(Metrics.AVERAGE_PRECISION, **hybrid) == pytest.approx(
        average_precision_score([True, False, True], [0.7, 0.2, 0.1])
    )
    # A worker that no longer reads the labels topic drops its figures (a new learner has
    # its own); one that still does keeps them.
    worker.on_assignment({Topics.for_namespace("unitmetrics").labels})
    assert value(Metrics.PRECISION, **hybrid) == 1.0
    worker.on_assignment({Topics.for_namespace("unitmetrics").transactions})
    assert REGISTRY.get_sample_value(Metrics.PRECISION, hybrid) is None
    assert len(worker.quality["transaction"]) == 0


# -- consumer lag ----------------------------------------------------------------------------


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    """The parts of Faust's consumer that ``stream.lag`` reads."""

    def __init__(self, assigned: set[TP], ends: dict[TP, int], committed: dict[TP, int | None]):
        self.assigned, self.ends, self._committed_offset = assigned, ends, committed
        self.earliest = dict.fromkeys(ends, 0)

    def assignment(self) -> set[TP]:
        return self.assigned

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}


def test_consumer_lag_is_end_minus_committed_of_the_assigned_input_partitions():
    seen: list[frozenset[str]] = []
    lag = ConsumerLag(["lagtest.in", "lagtest.labels"], on_assignment=seen.append)
    p0, p1, labels = TP("lagtest.in", 0), TP("lagtest.in", 1), TP("lagtest.labels", 0)
    changelog = TP("lagtest-history-changelog", 0)
    consumer = FakeConsumer(
        {p0, p1, labels, changelog},
        ends={p0: 120, p1: 40, labels: 7, changelog: 999},
        committed={p0: 100, labels: 7},  # p1: nothing committed yet
    )
    consumer.earliest[p1] = 10
    assert asyncio.run(lag.refresh(consumer)) == {
        ("lagtest.in", 0): 20,
        ("lagtest.in", 1): 30,
        ("lagtest.labels", 0): 0,
    }
    assert value(Metrics.CONSUMER_LAG, topic="lagtest.in", partition="0") == 20
    assert value(Metrics.CONSUMER_LAG, topic="lagtest.in", partition="1") == 30
    assert seen == [frozenset({"lagtest.in", "lagtest.labels"})]
    assert (
        REGISTRY.get_sample_value(
            Metrics.CONSUMER_LAG, {"topic": changelog.topic, "partition": "0"}
        )
        is None
    )

    # A rebalance moves p1 and the labels partition away: their series go.
    consumer.assigned = {p0}
    consumer.ends[p0] = 150
    asyncio.run(lag.refresh(consumer))
    assert value(Metrics.CONSUMER_LAG, topic="lagtest.in", partition="0") == 50
    assert (
        REGISTRY.get_sample_value(Metrics.CONSUMER_LAG, {"topic": "lagtest.in", "partition": "1"})
        is None
    )
    assert seen[-1] == frozenset({"lagtest.in"})


def test_consumer_lag_changes_nothing_while_the_consumer_cannot_tell():
    class NotStarted:
        def assignment(self) -> set[TP]:
            raise RuntimeError("Consumer thread not yet started")

    seen: list[frozenset[str]] = []
    lag = ConsumerLag(["lagtest2.in"], on_assignment=seen.append)
    assert asyncio.run(lag.refresh(NotStarted())) is None
    assert seen == []


def test_state_gauges_report_the_histories_held_when_scraped():
    from types import SimpleNamespace

    from stream.app import ChangelogTable

    sent: list[tuple[str, bytes, bytes]] = []
    faust_table = SimpleNamespace(
        data={}, changelog_topic=SimpleNamespace(get_topic_name=lambda: "ns.history-changelog")
    )
    sink = SimpleNamespace(send=lambda topic, key, value: sent.append((topic, key, value)))
    table = ChangelogTable(faust_table, sink)  # type: ignore[arg-type]
    table.export_size("email")
    table[b"s1"] = b"x" * 10
    table[b"s2"] = b"y" * 5
    table[b"s1"] = b"z" * 20  # replaced, not added
    faust_table.data[b"s3"] = b"w" * 7  # recovered from the changelog by Faust itself
    assert value(Metrics.STATE_ENTITIES, kind="email") == 3
    assert value(Metrics.STATE_BYTES, kind="email") == 32
    assert [key for _, key, _ in sent] == [b"s1", b"s2", b"s1"]
