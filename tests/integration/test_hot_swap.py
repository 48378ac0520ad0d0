"""A running worker switches batch models mid-stream, against the real broker and Redis.

The batch job's side (sign, publish to Redis with a pointer swap, announce on Kafka) is the
production code; the worker is a real ``python -m stream worker`` process.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis

from batch.announce import announce_model
from models import weights
from models.batch_registry import BatchModelRegistry
from models.events import ScoredEvent, decode
from models.names import RedisKeys, Topics
from models.settings import Settings
from tests import factories
from tests.integration.harness import WorkerProcess, collect, publish

pytestmark = pytest.mark.integration

KEY = "test-signing-key"


def scored_by_id(values: list[bytes]) -> dict[str, list[ScoredEvent]]:
    out: dict[str, list[ScoredEvent]] = {}
    for value in values:
        event = decode(value, ScoredEvent)
        out.setdefault(event.event_id, []).append(event)
    return out


def publish_model(settings: Settings, version: str, blob: bytes) -> None:
    registry = BatchModelRegistry(
        redis.Redis.from_url(settings.redis_url), RedisKeys(settings.namespace)
    )
    registry.publish("transaction", version, blob)
    announce_model(settings, "transaction", version)


def test_worker_swaps_batch_model_mid_stream_without_loss_and_refuses_tampering(
    settings: Settings, tmp_path
):
    settings = settings.replace(model_signing_key=KEY)
    topics = Topics.for_namespace(settings.namespace)
    worker = WorkerProcess(settings, tmp_path).start()
    n = 0

    def send(count: int) -> list[str]:
        nonlocal n
        txns = [factories.transaction(i) for i in range(n, n + count)]
        n += count
        publish(settings, topics.transactions, txns)
        return [t.event_id for t in txns]

    def wait_for(ids: list[str]) -> dict[str, list[ScoredEvent]]:
        wanted = set(ids)
        values = collect(
            settings, topics.scored, lambda v: wanted <= set(scored_by_id(v)), worker=worker
        )
        return scored_by_id(values)

    try:
        before = send(300)
        scored = wait_for(before)
        assert all(scored[i][0].batch_version is None for i in before), "no batch model yet"

        model = factories.batch_model("txn-v-one")
        publish_model(settings, "txn-v-one", weights.sign(model, KEY.encode()))
        # Keep the stream flowing while the worker swaps; find when the new model took over.
        during: list[str] = []
        deadline = time.monotonic() + 60
        while True:
            ids = send(50)
            during += ids
            seen = wait_for(ids)
            if all(seen[i][0].batch_version == "txn-v-one" for i in ids):
                break
            assert time.monotonic() < deadline, "the worker never swapped\n" + worker.log_tail()
        after = send(300)

        # A tampered payload (one flipped byte in the signed payload) is refused; the worker
        # keeps scoring with the model it has.
        good = bytearray(weights.sign(factories.batch_model("txn-v-two", seed=1), KEY.encode()))
        good[len(good) // 2] ^= 0x01
        publish_model(settings, "txn-v-two", bytes(good))
        time.sleep(2)
        late = send(200)

        everything = before + during + after + late
        scored = wait_for(everything)
        counts = Counter(e.event_id for events in scored.values() for e in events)
        assert set(counts) == set(everything), "an event was lost"
        assert max(counts.values()) == 1, "an event was scored twice"
        for i in after + late:
            event = scored[i][0]
            assert event.batch_version == "txn-v-one"
            assert event.batch_score is not None
            expected = weights.blend(model.card, event.online_score, event.batch_score)
            assert event.score == pytest.approx(expected)
        assert "refused transaction batch model txn-v-two" in worker.log_path.read_text()
        assert worker.alive()
    finally:
        worker.stop()
