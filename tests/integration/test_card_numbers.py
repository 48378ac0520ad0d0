"""A card number in clear against a real worker: the transaction is dead-lettered with the
reason, the number masked in the dead letter (raw bytes, key, reason), and it appears nowhere
else: not on any topic the worker writes (scored events, alerts, table changelogs), not in
Redis, not in the worker's log or data directory."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
import redis
from kafka import KafkaConsumer

from models.events import DeadLetter, ScoredEvent, decode, encode
from models.names import Topics
from models.settings import Settings
from tests import factories
from tests.integration.harness import WorkerProcess, collect, publish_raw, scored_all

pytestmark = pytest.mark.integration

VISA = "4111111111111111"
MASTERCARD = "5500000000000004"
# What must not be found once spaces and dashes are taken out (the second ones also catch
# "\u0034111...", the first digit escaped).
NEEDLES = [n.encode() for n in (VISA, MASTERCARD, VISA[1:], MASTERCARD[1:])]


def as_json(n: int, **changes: object) -> bytes:
    data = msgspec.to_builtins(factories.transaction(n))
    data.update(changes)
    return json.dumps(data).encode()


# (event id, raw event, what the reason must say); keyed by the number, as a careless
# producer keys a transaction by its card_id.
BAD = [
    ("txn-card-1", as_json(1, event_id="txn-card-1", card_id=VISA), "card_id is a card number"),
    (
        "txn-card-2",
        as_json(2, event_id="txn-card-2", card_id="4111 1111 1111 1111"),
        "card_id is a card number in clear (**** **** **** 1111)",
    ),
    (
        "txn-card-3",
        as_json(3, event_id="txn-card-3", customer_id="5500-0000-0000-0004"),
        "customer_id is a card number in clear (****-****-****-0004)",
    ),
    (
        "txn-card-4",
        as_json(4, event_id="txn-card-4").replace(
            b'"card-0004"', b'"\\u0034111111111111111"'
        ),  # the first digit escaped: still the number once decoded
        "card_id is a card number in clear (************1111)",
    ),
    (
        "txn-card-5",
        as_json(5, event_id="txn-card-5", card_id=VISA, amount=-1.0),
        "$.amount",  # refused for its amount first: masked all the same
    ),
]


def has_card_number(blob: bytes) -> bool:
    plain = blob.replace(b" ", b"").replace(b"-", b"")
    return any(needle in plain for needle in NEEDLES)


def read_all(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        return [(record.key, record.value) for record in consumer]
    finally:
        consumer.close()


def redis_contents(settings: Settings) -> list[bytes]:
    """Every key of the namespace, and every value in it, whatever its type."""
    client = redis.Redis.from_url(settings.redis_url)
    out: list[bytes] = []
    try:
        for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000):
            out.append(key)
            kind = client.type(key)
            if kind == b"string":
                out.append(client.get(key) or b"")
            elif kind == b"hash":
                out += [k + b"=" + v for k, v in client.hgetall(key).items()]
            elif kind == b"zset":
                out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                for _, fields in client.xrange(key):
                    out += [k + b"=" + v for k, v in fields.items()]
            elif kind == b"list":
                out += client.lrange(key, 0, -1)
            elif kind == b"set":
                out += list(client.smembers(key))
            else:
                raise AssertionError(f"unexpected Redis type {kind!r} of {key!r}")
    finally:
        client.close()
    return out


def test_a_card_number_in_clear_is_dead_lettered_masked_and_stored_nowhere_else(
    settings: Settings, tmp_path: Path
) -> None:
    # Every scored transaction raises an alert, so that the alert paths are searched too.
    settings = settings.replace(txn_review_threshold=1e-9, txn_block_threshold=1e-9)
    topics = Topics.for_namespace(settings.namespace)
    good = [factories.transaction(n) for n in range(10, 210)]
    items: list[tuple[bytes | None, bytes]] = [(t.card_id.encode(), encode(t)) for t in good]
    items[50:50] = [(VISA.encode(), raw) for _, raw, _ in BAD]

    worker = WorkerProcess(settings, tmp_path).start()
    try:
        publish_raw(settings, topics.transactions, items)
        collect(settings, topics.dead_letters, lambda v: len(v) >= len(BAD), worker=worker)
        wanted = {t.event_id for t in good}
        collect(
            settings, topics.scored,
            scored_all(wanted), worker=worker,
        )  # fmt: skip
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()

    # The dead letters: one per refused event, with the reason, the number masked.
    records = read_all(settings, topics.dead_letters)
    letters = {}
    for key, value in records:
        letter = decode(value, DeadLetter, max_bytes=None)
        assert key == letter.key == b"************1111"  # the Kafka key, masked too
        event_id = json.loads(letter.raw)["event_id"]
        letters[event_id] = letter
    assert len(records) == len(BAD) and set(letters) == {event_id for event_id, _, _ in BAD}
    for event_id, raw, reason in BAD:
        letter = letters[event_id]
        assert reason in letter.reason, letter.reason
        assert has_card_number(raw) and not has_card_number(encode(letter))
        kept = json.loads(letter.raw)
        sent = json.loads(raw)
        assert {k: v for k, v in kept.items() if k not in ("card_id", "customer_id")} == {
            k: v for k, v in sent.items() if k not in ("card_id", "customer_id")
        }  # everything else is kept as sent
        assert "*" in kept["card_id"] + kept["customer_id"]

    # Nowhere else: every topic of the namespace but the one the producer wrote to.
    listing = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        names = {t for t in listing.topics() if t.startswith(settings.namespace)}
    finally:
        listing.close()
    assert {topics.scored, topics.alerts, topics.dead_letters} <= names
    assert any(name.endswith("-changelog") for name in names), names
    for name in sorted(names - {topics.transactions}):
        for key, value in read_all(settings, name):
            assert not has_card_number((key or b"") + b"|" + value), name
    scored = {decode(v, ScoredEvent).event_id for _, v in read_all(settings, topics.scored)}
    assert scored == wanted  # the refused events were never scored
    assert read_all(settings, topics.alerts), "no alert raised: the alert path went untested"
    # The input topic keeps what the producer sent (the test can see a number where it is).
    assert any(has_card_number(v) for _, v in read_all(settings, topics.transactions))

    contents = redis_contents(settings)
    assert any(b":served:" in c for c in contents), "nothing in Redis: nothing was checked"
    assert any(c.startswith(f"{settings.namespace}:alerts".encode()) for c in contents)
    assert not [c for c in contents if has_card_number(c)]

    log = worker.log_path.read_bytes()
    assert b"card_id is a card number in clear" in log and not has_card_number(log)
    for path in worker.datadir.rglob("*"):
        if path.is_file():
            assert not has_card_number(path.read_bytes()), path
