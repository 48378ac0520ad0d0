"""The worker's metrics as ``/metrics`` serves them, moved by real batches against a real Redis.

No Kafka: StreamWorker is driven through its Sink port, as in ``test_learning.py``. Counters and
histograms are process-wide, so the checks compare values before and after each step.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import average_precision_score

from models.events import encode
from models.names import Metrics, RedisKeys, Topics
from models.settings import Settings
from stream.worker import RawMessage, StreamWorker
from tests import factories

pytestmark = pytest.mark.integration

LABEL_DELAY_S = 3600.0
KIND = {"kind": "transaction"}


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


def messages(topic: str, events: list[Any], first_offset: int = 0) -> list[RawMessage]:
    return [
        RawMessage(topic, 0, first_offset + i, e.event_id.encode(), encode(e))
        for i, e in enumerate(events)
    ]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def reason_counts() -> Counter[str]:
    return Counter(
        {
            s.labels["feature"]: s.value
            for family in REGISTRY.collect()
            if family.name == Metrics.ALERT_REASONS.removesuffix("_total")
            for s in family.samples
            if s.name == Metrics.ALERT_REASONS and s.labels["kind"] == "transaction"
        }
    )


def is_fraud(txn: Any) -> bool:
    return bool(txn.amount > 40)


def test_alerts_scores_labels_and_quality_move_the_metrics_the_dashboards_query(
    namespace, redis_url
):
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    first = [factories.transaction(n) for n in range(300)]
    second = [factories.transaction(n) for n in range(300, 600)]

    def labels_for(txns: list[Any]) -> list[Any]:
        return [
            factories.label(t.event_id, "transaction", is_fraud(t), at=t.timestamp + LABEL_DELAY_S)
            for t in txns
        ]

    async def scenario() -> None:
        r = aioredis.from_url(redis_url)
        worker = StreamWorker(
            settings, ListSink(), {"transaction": {}, "email": {}}, aioredis.from_url(redis_url)
        )
        scores = f"{Metrics.SCORE}_count"
        delays = f"{Metrics.LABEL_DELAY}_count", f"{Metrics.LABEL_DELAY}_sum"

        # Scores: one observation per event and score (no batch model: no batch score).
        online_before = value(scores, score="online", **KIND)
        served_first = await worker.handle_events(
            "transaction", messages(topics.transactions, first)
        )
        assert value(scores, score="online", **KIND) - online_before == 300

        # Label delays: label time minus the event time kept with the served features.
        before = value(delays[0], **KIND), value(delays[1], **KIND)
        await worker.handle_labels(messages(topics.labels, labels_for(first)))
        assert value(delays[0], **KIND) - before[0] == 300
        assert value(delays[1], **KIND) - before[1] == pytest.approx(300 * LABEL_DELAY_S)

        # Alert reasons: one per reason of each alert raised, and only once per event.
        reasons_before = reason_counts()
        served_second = await worker.handle_events(
            "transaction", messages(topics.transactions, second, 300)
        )
        alerts = [v.alert for v in served_second if v.alert is not None]
        assert alerts, "the model learned nothing: no alerts to count"
        expected = Counter(reason.feature for a in alerts for reason in a.reasons)
        assert reason_counts() - reasons_before == expected
        replayed = await worker.handle_events(
            "transaction", messages(topics.transactions, second, 300)
        )
        assert all(v.replayed for v in replayed)
        assert reason_counts() - reasons_before == expected

        # What is kept for the label: the event time and the scores given.
        record = orjson.loads(await r.get(keys.served(second[0].event_id)))
        scored = served_second[0].scored
        assert record["t"] == second[0].timestamp
        assert (record["o"], record["h"]) == (scored.online_score, scored.score)
        assert record["a"] == int(scored.decision != "allow")

        # Rolling quality over both phases' labels, at the review threshold in use.
        await worker.handle_labels(messages(topics.labels, labels_for(second), 300))
        verdicts = [v.scored for v in served_first + served_second]
        y = [is_fraud(t) for t in first + second]
        review = settings.txn_review_threshold
        online = [s.online_score for s in verdicts]
        judged = {
            # online: flagged at the settings' review threshold; hybrid: alerted when served
            "online": (online, [score >= review for score in online]),
            "hybrid": ([s.score for s in verdicts], [s.decision != "allow" for s in verdicts]),
        }
        for score, (given, flagged) in judged.items():
            tp = sum(f and p for f, p in zip(flagged, y, strict=True))
            labels = {"score": score, **KIND}
            assert value(Metrics.PRECISION, **labels) == pytest.approx(tp / sum(flagged))
            assert value(Metrics.RECALL, **labels) == pytest.approx(tp / sum(y))
            assert value(Metrics.AVERAGE_PRECISION, **labels) == pytest.approx(
                average_precision_score(y, given)
            )

        # A record served before these fields existed is still learned from.
        old = factories.transaction(9999)
        await r.set(
            keys.served(old.event_id),
            orjson.dumps({"k": "transaction", "s": old.terminal_id, "f": record["f"]}),
        )
        before = value(delays[0], **KIND)
        counts = await worker.handle_labels(
            messages(topics.labels, [factories.label(old.event_id, "transaction", True)], 600)
        )
        assert counts["learned"] == 1 and value(delays[0], **KIND) == before

    asyncio.run(scenario())

    # As /metrics serves them: names and types the dashboards select.
    families = {f.name: f for f in text_string_to_metric_families(generate_latest().decode())}
    for name, kind in (
        (Metrics.ALERT_REASONS, "counter"),
        (Metrics.LABEL_DELAY, "histogram"),
        (Metrics.SCORE, "histogram"),
        (Metrics.PRECISION, "gauge"),
        (Metrics.RECALL, "gauge"),
        (Metrics.AVERAGE_PRECISION, "gauge"),
    ):
        family = families[name.removesuffix("_total")]
        assert family.type == kind
        assert any(s.name in (name, f"{name}_bucket") for s in family.samples)
