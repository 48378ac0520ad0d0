"""Hostile input against a real worker: thousands of malformed events, zero crashes, every
one dead-lettered with its reason, and the good events around them scored exactly once.

The malformed messages are generated from a fixed seed (so a failure replays) in every
family the worker must survive: bytes that are not JSON or not UTF-8, wrong types, missing
fields, huge strings, NaN / infinite / negative amounts, far-future or offset-less times,
unknown schema versions, oversized messages, and JSON that is not an object at all.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from models.events import MAX_EVENT_BYTES, DeadLetter, ScoredEvent, decode
from models.names import Topics
from models.settings import Settings
from tests import factories
from tests.integration.harness import WorkerProcess, collect, publish_raw, scored_all

pytestmark = pytest.mark.integration

SEED = 20261121
PER_FAMILY = 150

Mutation = Callable[[random.Random, dict[str, Any]], bytes]


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value)


def _with(field: str, value: Any) -> Mutation:
    return lambda rng, event: _json({**event, field: value})


def _wrong_type(rng: random.Random, event: dict[str, Any]) -> bytes:
    field = rng.choice(sorted(event))
    current = event[field]
    replacement = rng.choice([[1, 2], {"a": 1}, True, None, 12.5, "text"])
    while type(replacement) is type(current) or (
        isinstance(current, float) and isinstance(replacement, bool | int)
    ):
        replacement = rng.choice([[1, 2], {"a": 1}, None, "text"])
    return _json({**event, field: replacement})


def _missing(rng: random.Random, event: dict[str, Any]) -> bytes:
    required = ["event_id", "event_time", "card_id", "customer_id", "amount", "merchant_id",
                "terminal_id", "merchant_category", "country"]  # fmt: skip
    drop = set(rng.sample(required, rng.randint(1, 4)))
    return _json({k: v for k, v in event.items() if k not in drop})


def _huge_string(rng: random.Random, event: dict[str, Any]) -> bytes:
    field = rng.choice(["card_id", "merchant_category", "event_id", "country", "currency"])
    return _json({**event, field: "x" * rng.randint(300, 100_000)})


def _bad_number(rng: random.Random, event: dict[str, Any]) -> bytes:
    text = _json({**event, "amount": 1.0}).decode()
    bad = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-0.01", "-5", "1e12"])
    return text.replace('"amount":1.0', f'"amount":{bad}').encode()


def _bad_extra(rng: random.Random, event: dict[str, Any]) -> bytes:
    text = _json({**event, "extra": {"f": 1.0}}).decode()
    bad = rng.choice(["1e999", "-1e999", "NaN", '"1"', "null"])
    return text.replace('"f":1.0', '"f":' + bad).encode()


def _bad_time(rng: random.Random, event: dict[str, Any]) -> bytes:
    value = rng.choice(
        ["2999-01-01T00:00:00Z", "2026-01-01T00:00:00", "yesterday", "", "2026-13-45T00:00:00Z",
         1767225600, "9999-12-31T23:59:59+00:00"]
    )  # fmt: skip
    return _json({**event, "event_time": value})


def _bad_bytes(rng: random.Random, event: dict[str, Any]) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
    if kind == 1:  # valid JSON shape, invalid UTF-8 inside a string
        return _json(event).replace(b'"event_id":"', b'"event_id":"\xff\xfe\xc3', 1)
    if kind == 2:
        return _json(event)[: rng.randint(1, 60)]  # truncated
    if kind == 3:
        return rng.choice([b"", b"null", b"[]", b"42", b'"a string"', b"{}", b"[" * 5000])
    if kind == 4:
        return b"\x00" * rng.randint(1, 100)
    return _json([event, event])


def _oversized(rng: random.Random, event: dict[str, Any]) -> bytes:
    padding = "p" * rng.randint(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 400_000)
    return _json({**event, "merchant_category": padding})


FAMILIES: dict[str, Mutation] = {
    "wrong type": _wrong_type,
    "missing field": _missing,
    "huge string": _huge_string,
    "bad amount": _bad_number,
    "bad extra": _bad_extra,
    "bad time": _bad_time,
    "bad bytes": _bad_bytes,
    "unknown version": lambda rng, e: _json({**e, "schema_version": rng.choice([0, 2, 99, "1"])}),
    "unknown channel": _with("channel", "telepathy"),
    "oversized": _oversized,
}


def malformed(rng: random.Random) -> list[tuple[str, bytes]]:
    """(family, bytes) pairs, ``PER_FAMILY`` of each but the costly oversized ones."""
    out = []
    for family, mutate in FAMILIES.items():
        count = 10 if family == "oversized" else PER_FAMILY
        for n in range(count):
            event = msgspec.to_builtins(factories.transaction(900_000 + len(out) + n))
            out.append((family, mutate(rng, event)))
    return out


def test_thousands_of_malformed_events_are_all_dead_lettered_and_nothing_crashes(
    settings: Settings, tmp_path
) -> None:
    rng = random.Random(SEED)
    topics = Topics.for_namespace(settings.namespace)
    bad = malformed(rng)
    good = [factories.transaction(n) for n in range(400)]
    # Interleaved: good and bad share partitions and scoring steps.
    items: list[tuple[bytes, bytes]] = [(b"card-bad", raw) for _, raw in bad]
    items += [(t.card_id.encode(), msgspec.json.encode(t)) for t in good]
    rng.shuffle(items)

    # The labels and emails topics are decoded by other code paths: hostile input there too.
    label = msgspec.to_builtins(factories.label("txn-000001", "transaction", True))
    email = msgspec.to_builtins(factories.email(1))
    bad_labels = [_bad_bytes(rng, label) for _ in range(60)] + [
        _wrong_type(rng, label) for _ in range(60)
    ]
    bad_emails = [_bad_bytes(rng, email) for _ in range(60)] + [
        _json({**email, "links": ["x"] * 500}) for _ in range(5)
    ]

    worker = WorkerProcess(settings, tmp_path).start()
    try:
        publish_raw(settings, topics.transactions, items)
        publish_raw(settings, topics.labels, [(b"l", raw) for raw in bad_labels])
        publish_raw(settings, topics.emails, [(b"e", raw) for raw in bad_emails])
        everything = len(bad) + len(bad_labels) + len(bad_emails)
        letters = [
            decode(v, DeadLetter, max_bytes=None)
            for v in collect(
                settings, topics.dead_letters, lambda v: len(v) >= everything, worker=worker,
                timeout_s=180,
            )
        ]  # fmt: skip
        wanted = {t.event_id for t in good}
        scored = collect(
            settings, topics.scored,
            scored_all(wanted), worker=worker,
        )  # fmt: skip
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()

    assert len(letters) == everything, "a malformed event was dead-lettered twice or not at all"
    by_topic = {
        topics.transactions: [raw for _, raw in bad],
        topics.labels: bad_labels,
        topics.emails: bad_emails,
    }
    for topic, sent in by_topic.items():
        kept = [letter.raw for letter in letters if letter.topic == topic]
        assert Counter(kept) == Counter(sent), topic
    assert all(letter.reason for letter in letters)
    ids = [decode(v, ScoredEvent).event_id for v in scored]
    assert sorted(ids) == sorted(wanted), "a good event was lost or scored twice"
    reasons = Counter(letter.reason.split(":")[0] for letter in letters)
    assert {r for r in reasons if "bytes exceeds" in r}, reasons
