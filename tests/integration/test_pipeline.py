"""The streaming pipeline end to end against a real Kafka broker and a real Redis.

Each test gets its own namespace (topics, consumer group, Redis keys) and runs real
``python -m stream worker`` processes.
"""

from __future__ import annotations

import time
from collections import Counter

import msgspec
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from models.events import Alert, DeadLetter, ScoredEvent, Transaction, decode
from models.names import RedisKeys, Topics, history_changelog
from models.online import OnlineModel
from models.settings import Settings
from models.topology import align_changelog_configs
from tests import factories
from tests.integration.harness import (
    FAST_REJOIN,
    WorkerProcess,
    collect,
    publish,
    publish_raw,
    scored_all,
)

pytestmark = pytest.mark.integration


def scored_ids(values: list[bytes]) -> set[str]:
    return {decode(v, ScoredEvent).event_id for v in values}


def alert_event_ids(r: redis.Redis, keys: RedisKeys) -> list[str]:
    return [
        msgspec.json.decode(fields[b"alert"], type=Alert).event_id
        for _, fields in r.xrange(keys.alerts_stream)
    ]


def test_every_event_is_scored_bad_bytes_are_dead_lettered_and_labels_teach(settings, tmp_path):
    topics, keys = Topics.for_namespace(settings.namespace), RedisKeys(settings.namespace)
    txns = [factories.transaction(n) for n in range(1500)]
    emails = [factories.email(n) for n in range(300)]
    publish(settings, topics.transactions, txns[:700])
    bad = [
        (b"card-0001", b"this is not json"),
        (b"card-0002", b'{"event_id": "x", "event_time": "2026-01-01T00:00:00Z"}'),
        (b"card-0003", msgspec.json.encode({**msgspec.to_builtins(txns[0]), "amount": -3})),
        (b"card-0004", msgspec.json.encode({**msgspec.to_builtins(txns[1]), "schema_version": 7})),
    ]
    publish_raw(settings, topics.transactions, bad)
    publish(settings, topics.transactions, txns[700:])
    publish(settings, topics.emails, emails)

    worker = WorkerProcess(settings, tmp_path).start()
    try:
        wanted = {e.event_id for e in txns + emails}
        scored = collect(settings, topics.scored, lambda v: wanted <= scored_ids(v), worker=worker)
        assert scored_ids(scored) == wanted
        assert len(scored) == len(wanted), "an event was scored twice"

        letters = [
            decode(v, DeadLetter)
            for v in collect(settings, topics.dead_letters, lambda v: len(v) >= 4, worker=worker)
        ]
        assert sorted(letter.raw for letter in letters) == sorted(value for _, value in bad)
        reasons = " | ".join(letter.reason for letter in letters)
        assert "undecodable Transaction" in reasons
        assert "missing required field" in reasons
        assert "$.amount" in reasons
        assert "$.schema_version" in reasons
        assert all(letter.topic == topics.transactions for letter in letters)

        # Labels arrive later: they teach the models, and the checkpoint in Redis moves.
        r = redis.Redis.from_url(settings.redis_url)
        fresh_state = OnlineModel("transaction").to_state()
        labels = [factories.label(t.event_id, "transaction", t.amount > 60) for t in txns[:400]]
        labels.append(factories.label("txn-never-seen", "transaction", True))
        labels += [factories.label(e.event_id, "email", e.event_id.endswith("7")) for e in emails]
        publish(settings, topics.labels, labels)

        def learned(kind: str) -> int:
            state = r.hget(keys.online_checkpoint, f"state:{kind}")
            if state is None:
                return 0
            return OnlineModel.from_state(msgspec.json.decode(state)).learned

        def learned_all() -> bool:
            # The learner checkpoints per batch, and a batch may end mid-way through the
            # email labels, so wait for both counts rather than the transactions alone.
            return learned("transaction") == 400 and learned("email") == 300

        deadline = time.monotonic() + 60
        while not learned_all():
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, "labels were not learned\n" + worker.log_tail()
            time.sleep(0.5)
        saved = msgspec.json.decode(r.hget(keys.online_checkpoint, "state:transaction"))
        assert saved != fresh_state
        assert int(r.hget(keys.online_checkpoint, "version")) >= 1
        assert r.exists(keys.labelled(txns[0].event_id))
        assert not r.exists(keys.labelled("txn-never-seen"))
        assert r.exists(keys.waiting_label("txn-never-seen")), "an early label waits for its event"

        # One event id never produces two alerts.
        alerted = alert_event_ids(r, keys)
        assert len(alerted) == len(set(alerted))
        assert worker.alive(), "a malformed event must never stop the worker"
    finally:
        worker.stop()


def test_killed_worker_resumes_from_redis_and_changelogs_without_loss(settings, tmp_path):
    topics, keys = Topics.for_namespace(settings.namespace), RedisKeys(settings.namespace)
    r = redis.Redis.from_url(settings.redis_url)
    first = [factories.transaction(n) for n in range(1000)]
    second = [factories.transaction(n) for n in range(1000, 2000)]
    publish(settings, topics.transactions, first)

    worker = WorkerProcess(settings, tmp_path, "first", env=FAST_REJOIN).start()
    try:
        ids = {t.event_id for t in first}
        collect(settings, topics.scored, lambda v: ids <= scored_ids(v), worker=worker)
        publish(
            settings,
            topics.labels,
            [factories.label(t.event_id, "transaction", t.amount > 60) for t in first],
        )
        deadline = time.monotonic() + 60
        while int(r.hget(keys.online_checkpoint, "version") or 0) < 1:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.3)
        version_before_crash = int(r.hget(keys.online_checkpoint, "version"))
    finally:
        worker.kill()

    publish(settings, topics.transactions, second)
    restarted = WorkerProcess(settings, tmp_path, "second", env=FAST_REJOIN).start()
    try:
        wanted = {t.event_id for t in first + second}
        values = collect(
            settings,
            topics.scored,
            lambda v: wanted <= scored_ids(v),
            worker=restarted,
            timeout_s=120,
        )
        events = [decode(v, ScoredEvent) for v in values]
        assert {e.event_id for e in events} == wanted, "an event was lost"

        latest = {e.event_id: e for e in events}
        # The restarted worker continued from the checkpoint, not from a fresh model.
        versions = {latest[t.event_id].online_version for t in second}
        assert all(int(v.rsplit("-", 1)[1]) >= version_before_crash for v in versions)
        # ...and from the card histories in the changelog: card-0000 had 20 transactions in
        # the first 1000 seconds; its first transaction of the second half sees them all.
        # The changelog Faust made has the settings' segments (so Kafka compacts it).
        changelog = history_changelog(settings.namespace, "transaction")
        assert topic_config(settings, changelog)["segment.bytes"] == "16777216"
        first_of_second = latest[second[0].event_id]
        assert first_of_second.entity_id == "card-0000"
        assert first_of_second.features["card_count_24h"] == 20

        alerted = alert_event_ids(r, keys)
        assert len(alerted) == len(set(alerted)), Counter(alerted).most_common(3)
    finally:
        restarted.stop()


def event_ids(events: list[Transaction]) -> set[str]:
    return {event.event_id for event in events}


def changelog_records(settings: Settings, topic: str) -> tuple[int, int]:
    """(records the topic holds now, records ever written to it: the sum of its end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        held = 0
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            held += sum(len(records) for records in consumer.poll(500).values())
        return held, sum(ends.values())
    finally:
        consumer.close()


def create_topic(settings: Settings, topic: str, config: dict[str, str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=4, replication_factor=1, topic_configs=config)]
        )
    finally:
        admin.close()


def test_existing_changelogs_get_the_segment_settings_and_keep_the_rest(settings):
    made_before = history_changelog(settings.namespace, "transaction")
    create_topic(settings, made_before, {"cleanup.policy": "compact", "retention.ms": "86400000"})
    not_yet_made = history_changelog(settings.namespace, "email")

    changed = align_changelog_configs(settings, [made_before, not_yet_made])

    assert changed == {
        made_before: "segment.bytes 1073741824 -> 16777216, segment.ms 604800000 -> 3600000"
    }
    config = topic_config(settings, made_before)
    assert (config["segment.bytes"], config["segment.ms"]) == ("16777216", "3600000")
    assert (config["cleanup.policy"], config["retention.ms"]) == ("compact", "86400000")
    assert align_changelog_configs(settings, [made_before]) == {}, "not idempotent"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        assert not_yet_made not in admin.list_topics(), "it made a changelog Faust had not"
    finally:
        admin.close()


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {name: entry["value"] for name, entry in described["topic"][topic].items()}
    finally:
        admin.close()


def test_a_restarted_worker_recovers_whole_histories_from_a_compacted_changelog(settings, tmp_path):
    """Kafka compacts the card histories' changelog to one record per card once a segment
    closes (segments close after a second here, and the local broker's log cleaner looks
    every second), and a worker started on the compacted changelog has every card's whole
    history. The changelog exists before the first worker starts, with Kafka's default
    segments: the worker gives it the settings' segments."""
    settings = settings.replace(changelog_segment_s=1)
    topics = Topics.for_namespace(settings.namespace)
    changelog = history_changelog(settings.namespace, "transaction")
    cards = 50  # factories.transaction: card n % 50, event time T0 + n seconds
    # As a worker before the segment settings made it: compacted, Kafka's own segments.
    create_topic(settings, changelog, {"cleanup.policy": "compact"})
    worker = WorkerProcess(settings, tmp_path, "first", env=FAST_REJOIN).start()
    try:
        # Ten steps or more, each writing the history of every card it touched.
        for start in range(0, 1000, 100):
            wave = [factories.transaction(n) for n in range(start, start + 100)]
            publish(settings, topics.transactions, wave)
            collect(settings, topics.scored, scored_all(event_ids(wave)), worker=worker)
        config = topic_config(settings, changelog)
        assert config["cleanup.policy"] == "compact"
        assert config["segment.ms"] == "1000"
        assert config["segment.bytes"] == str(settings.changelog_segment_bytes)
        _, superseded = changelog_records(settings, changelog)
        assert superseded >= 10 * cards, "too few history updates to show a compaction"

        time.sleep(1.5)  # the segments holding them are older than segment.ms now...
        closing = [factories.transaction(n) for n in range(1000, 1200)]
        publish(settings, topics.transactions, closing)  # ...and the next write closes them
        collect(settings, topics.scored, scored_all(event_ids(closing)), worker=worker)
        deadline = time.monotonic() + 60
        while True:
            held, written = changelog_records(settings, changelog)
            # One record per card for the closed segments, the open ones as written.
            if held <= cards + (written - superseded):
                break
            assert time.monotonic() < deadline, f"not compacted: {held} of {written} records"
            time.sleep(1)
    finally:
        worker.kill()

    second = [factories.transaction(n) for n in range(1200, 1400)]
    publish(settings, topics.transactions, second)
    restarted = WorkerProcess(settings, tmp_path, "second", env=FAST_REJOIN).start()
    try:
        values = collect(settings, topics.scored, scored_all(event_ids(second)), worker=restarted)
        latest = {e.event_id: e for e in (decode(v, ScoredEvent) for v in values)}
        # Every earlier transaction of the card is within 24 h: n // 50 of them.
        counts = {t.event_id: latest[t.event_id].features["card_count_24h"] for t in second}
        assert counts == {t.event_id: int(t.event_id[4:]) // cards for t in second}
    finally:
        restarted.stop()
