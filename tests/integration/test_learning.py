"""Learning from labels, driven through StreamWorker directly against a real Redis.

No Kafka here: the worker reaches Kafka only through its Sink port, so these tests hand it raw
messages and collect what it sends. Learners racing each other (a rebalance), duplicate labels,
and labels that overtake their events are played out step by step.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from models.events import encode
from models.names import EVENT_KINDS, RedisKeys, Topics
from models.online import OnlineModel
from models.registry import CheckpointConflict, OnlineCheckpoints
from models.settings import Settings
from stream.worker import RawMessage, StreamWorker
from tests import factories

pytestmark = pytest.mark.integration


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


def messages(topic: str, events: list, first_offset: int = 0) -> list[RawMessage]:
    return [
        RawMessage(topic, 0, first_offset + i, e.event_id.encode(), encode(e))
        for i, e in enumerate(events)
    ]


def new_worker(settings: Settings) -> tuple[StreamWorker, ListSink]:
    sink = ListSink()
    tables = {"transaction": {}, "email": {}}
    return StreamWorker(settings, sink, tables, aioredis.from_url(settings.redis_url)), sink


def test_a_learner_that_lost_a_race_learns_its_batch_again_on_the_newer_checkpoint(
    namespace, redis_url
):
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    txns = [factories.transaction(n) for n in range(40)]

    async def scenario() -> None:
        a, _ = new_worker(settings)
        b, _ = new_worker(settings)
        await a.handle_events("transaction", messages(topics.transactions, txns))
        await b.start()  # both start from "no checkpoint"
        first = [factories.label(t.event_id, "transaction", t.amount > 40) for t in txns[:20]]
        second = [factories.label(t.event_id, "transaction", t.amount > 40) for t in txns[20:]]
        counts_a = await a.handle_labels(messages(topics.labels, first, 0))
        # b still believes version 0: its save conflicts, it loads a's checkpoint and
        # learns its own batch on top of it.
        counts_b = await b.handle_labels(messages(topics.labels, second, 20))
        assert counts_a["learned"] == 20 and counts_b["learned"] == 20
        saved = await OnlineCheckpoints(aioredis.from_url(redis_url), keys, marker_ttl_s=60).load()
        assert saved is not None and saved.version == 2
        assert saved.models["transaction"].learned == 40, "the first learner's batch was lost"
        assert saved.label_offset == 39
        # Labels replayed after a rebalance count once.
        again = await b.handle_labels(messages(topics.labels, first + second, 0))
        assert again["replayed"] == 40 and again["learned"] == 0

    asyncio.run(scenario())


def test_a_label_that_overtakes_its_event_is_sent_again_once_the_event_is_scored(
    namespace, redis_url
):
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    txn = factories.transaction(1)
    label = factories.label(txn.event_id, "transaction", True)

    async def scenario() -> None:
        worker, sink = new_worker(settings)
        early = await worker.handle_labels(messages(topics.labels, [label], 0))
        assert early["waiting"] == 1 and early["learned"] == 0
        await worker.handle_events("transaction", messages(topics.transactions, [txn]))
        resent = [value for topic, _, value in sink.sent if topic == topics.labels]
        assert resent == [encode(label)]
        learned = await worker.handle_labels(messages(topics.labels, [label], 1))
        assert learned["learned"] == 1
        r = aioredis.from_url(redis_url)
        assert not await r.exists(keys.waiting_label(txn.event_id))
        assert await r.exists(keys.labelled(txn.event_id))
        # The same label once more (a producer retry) is a duplicate, not a second lesson.
        dup = await worker.handle_labels(messages(topics.labels, [label], 2))
        assert dup["duplicate"] == 1 and worker.models["transaction"].learned == 1

    asyncio.run(scenario())


def test_a_busy_terminal_keeps_only_its_latest_outcomes(namespace, redis_url):
    from models.features import OUTCOME_CAP

    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    n = OUTCOME_CAP + 100
    txns = [factories.transaction(i, terminal_id="term-busy") for i in range(n)]
    labels = [
        factories.label(t.event_id, "transaction", t.amount > 40, at=factories.T0 + 10_000 + i)
        for i, t in enumerate(txns)
    ]

    async def scenario() -> None:
        worker, _ = new_worker(settings)
        await worker.handle_events("transaction", messages(topics.transactions, txns))
        await worker.handle_labels(messages(topics.labels, labels))
        r = aioredis.from_url(redis_url)
        key = keys.label_outcomes("terminal", "term-busy")
        assert await r.zcard(key) == OUTCOME_CAP
        oldest = await r.zrange(key, 0, 0, withscores=True)
        assert oldest[0][1] == factories.T0 + 10_000 + (n - OUTCOME_CAP)

    asyncio.run(scenario())


def test_histories_no_event_can_use_are_dropped_and_the_rest_kept(namespace, redis_url):
    """The sweep asks models.features which histories are forgettable a day (the lateness
    allowed) before the oldest event scored since the previous sweep. While old events come
    (here a batch stamped 3 to 40 days ago) nothing they could use goes; once the events
    are current, a card silent 10 days and a sender silent 40 go, while a card silent 7.5
    days (8 would be needed), one silent 3 days and a sender silent 10 stay. Dropped
    histories change no feature (tests/unit/models/test_forgetting.py)."""
    from stream import metrics

    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics = Topics.for_namespace(namespace)
    day, now = 86_400.0, time.time()
    old_txns = [
        factories.transaction(1, at=now - 10 * day, card_id="card-idle"),
        factories.transaction(2, at=now - 7.5 * day, card_id="card-late"),
        factories.transaction(3, at=now - 3 * day, card_id="card-recent"),
    ]
    old_emails = [
        factories.email(1, at=now - 40 * day, sender="idle@x.org"),
        factories.email(2, at=now - 10 * day, sender="recent@x.org"),
    ]

    def dropped_so_far(kind: str) -> float:
        return metrics.STATE_FORGOTTEN.labels(kind)._value.get()

    async def scenario() -> None:
        worker, _ = new_worker(settings)
        assert await worker.forget_idle("transaction") == 0  # nothing scored: no clock yet
        await worker.handle_events("transaction", messages(topics.transactions, old_txns))
        await worker.handle_events("email", messages(topics.emails, old_emails))
        assert await worker.forget_idle("transaction") == 0  # old events hold the horizon
        assert await worker.forget_idle("email") == 0

        current_txn = factories.transaction(4, at=now, card_id="card-now")
        current_email = factories.email(3, at=now, sender="now@x.org")
        await worker.handle_events("transaction", messages(topics.transactions, [current_txn], 3))
        await worker.handle_events("email", messages(topics.emails, [current_email], 2))
        cards_before, senders_before = dropped_so_far("transaction"), dropped_so_far("email")
        assert await worker.forget_idle("transaction", chunk=1) == 1
        assert await worker.forget_idle("email") == 1
        assert set(worker._histories["transaction"]) == {b"card-late", b"card-recent", b"card-now"}
        assert set(worker._histories["email"]) == {b"recent@x.org", b"now@x.org"}
        assert dropped_so_far("transaction") == cards_before + 1
        assert dropped_so_far("email") == senders_before + 1
        assert await worker.forget_idle("transaction") == 0  # no event since: nothing to do

    asyncio.run(scenario())


def test_a_model_trained_on_an_older_feature_set_starts_afresh_and_the_rest_loads(
    namespace, redis_url, caplog
):
    """An upgrade that changes a feature's definition (email-v1 to email-v2: a sender silent
    30 days is new again) must not stop the workers: the email model saved under the old
    feature set starts afresh, with a warning; the transaction model and the label offset
    load as saved."""
    import orjson

    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    txns = [factories.transaction(n) for n in range(30)]
    labels = [factories.label(t.event_id, "transaction", t.amount > 40) for t in txns]

    async def scenario() -> None:
        learner, _ = new_worker(settings)
        await learner.handle_events("transaction", messages(topics.transactions, txns))
        await learner.handle_labels(messages(topics.labels, labels))
        r = aioredis.from_url(redis_url)
        state = orjson.loads(await r.hget(keys.online_checkpoint, "state:email"))
        state["feature_set_version"] = "email-v1"  # as the previous release saved it
        await r.hset(keys.online_checkpoint, "state:email", orjson.dumps(state))

        upgraded, _ = new_worker(settings)
        with caplog.at_level("WARNING", logger="stream.worker"):
            await upgraded.start()
        assert upgraded.models["transaction"].learned == 30
        assert upgraded.models["email"].learned == 0
        assert upgraded.label_offset == 29
        assert "email-v1" in caplog.text and "starts afresh" in caplog.text

    asyncio.run(scenario())


def test_a_checkpoint_saved_over_a_newer_one_writes_nothing(namespace, redis_url):
    """The save is a compare and set (``models.registry.SAVE_SCRIPT``): over the version it
    started from it writes the models and every learned-label marker with its TTL; over any
    other version it raises and writes neither."""
    keys = RedisKeys(namespace)

    async def scenario() -> None:
        r = aioredis.from_url(redis_url)
        checkpoints = OnlineCheckpoints(r, keys, marker_ttl_s=60)
        models = {kind: OnlineModel(kind) for kind in EVENT_KINDS}
        saved = await checkpoints.save(
            models, base_version=0, label_offset=7, learned_ids=["e1", "e2"]
        )
        assert saved == 1
        assert await r.get(keys.labelled("e1")) == b"1"
        assert 0 < await r.ttl(keys.labelled("e2")) <= 60
        before = await r.hgetall(keys.online_checkpoint)

        with pytest.raises(CheckpointConflict, match="at version 1"):
            await checkpoints.save(models, base_version=0, label_offset=9, learned_ids=["e3"])
        assert await r.hgetall(keys.online_checkpoint) == before
        assert await r.exists(keys.labelled("e3")) == 0

        loaded = await checkpoints.load()
        assert loaded is not None and (loaded.version, loaded.label_offset) == (1, 7)

    asyncio.run(scenario())
