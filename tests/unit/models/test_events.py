"""Event schemas: valid events round-trip; bad bytes are refused with an actionable reason."""

from __future__ import annotations

import json

import msgspec
import pytest

from models.events import (
    MAX_EVENT_BYTES,
    Alert,
    DeadLetter,
    Email,
    InvalidEvent,
    Label,
    ScoredEvent,
    Transaction,
    decode,
    encode,
    entity_key,
    utc_from_timestamp,
)
from tests import factories


def as_json(event: msgspec.Struct, **changes: object) -> bytes:
    data = msgspec.to_builtins(event)
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "event",
    [
        factories.transaction(1),
        factories.transaction(2, extra={"v1": -1.5}, channel="online"),
        factories.email(3, links=["https://example.org/a"], has_attachment=True),
        factories.label("txn-000001", "transaction", True),
    ],
)
def test_valid_events_round_trip(event):
    assert decode(encode(event), type(event)) == event


def test_outputs_round_trip_too():
    scored = ScoredEvent(
        event_id="e",
        event_time=utc_from_timestamp(factories.T0),
        kind="transaction",
        entity_id="card-1",
        scored_at=utc_from_timestamp(factories.T0 + 0.01),
        features={"amount_log": 3.2},
        online_score=0.7,
        score=0.7,
        decision="review",
        online_version="online-transaction-4",
    )
    assert decode(encode(scored), ScoredEvent) == scored
    letter = DeadLetter(
        topic="t",
        partition=0,
        offset=5,
        raw=b"\xff\x00",
        reason="bad",
        failed_at=utc_from_timestamp(factories.T0),
    )
    assert decode(encode(letter), DeadLetter).raw == b"\xff\x00"


BAD_TRANSACTIONS = [
    (b"", "undecodable Transaction"),
    (b"\xff\xfe not utf-8", "undecodable Transaction"),
    (b"[1, 2, 3]", "Expected `object`"),
    (as_json(factories.transaction(1), amount=-0.01), "$.amount"),
    (as_json(factories.transaction(1), amount="12.5"), "Expected `float`"),
    (as_json(factories.transaction(1), amount=1e12), "$.amount"),
    (as_json(factories.transaction(1), schema_version=2), "$.schema_version"),
    (as_json(factories.transaction(1), event_time="2026-01-01T00:00:00"), "no UTC offset"),
    (as_json(factories.transaction(1), event_time="2999-01-01T00:00:00Z"), "in the future"),
    (as_json(factories.transaction(1), event_time="yesterday"), "$.event_time"),
    (as_json(factories.transaction(1), card_id=""), "$.card_id"),
    (as_json(factories.transaction(1), card_id="x" * 500), "$.card_id"),
    (as_json(factories.transaction(1), channel="fax"), "$.channel"),
    (as_json(factories.transaction(1), extra={"v": "high"}), "$.extra"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_TRANSACTIONS)
def test_bad_transactions_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as refused:
        decode(raw, Transaction)
    assert reason in refused.value.reason


def test_non_finite_numbers_are_refused():
    # JSON has no NaN or Infinity, but Python's json module (and others) write them anyway.
    for raw in (
        as_json(factories.transaction(1), amount=float("nan")),
        as_json(factories.transaction(1), amount=float("inf")),
        as_json(factories.transaction(1), extra={"v": float("-inf")}),
    ):
        assert b"NaN" in raw or b"Infinity" in raw
        with pytest.raises(InvalidEvent):
            decode(raw, Transaction)


def test_missing_fields_are_named():
    data = msgspec.to_builtins(factories.transaction(1))
    del data["terminal_id"]
    with pytest.raises(InvalidEvent, match="missing required field `terminal_id`"):
        decode(json.dumps(data).encode(), Transaction)


def test_oversized_events_are_refused_before_parsing():
    huge = as_json(factories.email(1), body="a" * (MAX_EVENT_BYTES + 1))
    with pytest.raises(InvalidEvent, match="exceeds"):
        decode(huge, Email)


def test_email_limits_are_enforced():
    with pytest.raises(InvalidEvent, match=r"\$.subject"):
        decode(as_json(factories.email(1), subject="s" * 1001), Email)
    with pytest.raises(InvalidEvent, match=r"\$.links"):
        decode(as_json(factories.email(1), links=["https://x.org"] * 201), Email)


def test_labels_name_a_kind_and_a_known_source():
    with pytest.raises(InvalidEvent, match=r"\$.kind"):
        decode(as_json(factories.label("e", "transaction", True), kind="invoice"), Label)
    with pytest.raises(InvalidEvent, match=r"\$.source"):
        decode(as_json(factories.label("e", "transaction", True), source="rumour"), Label)


def test_unknown_fields_are_ignored_so_producers_can_add_fields_with_defaults():
    raw = as_json(factories.transaction(1), new_field_from_v1_1="x")
    assert decode(raw, Transaction) == factories.transaction(1)


def test_events_are_keyed_by_the_entity_whose_state_they_update():
    assert entity_key(factories.transaction(1, card_id="card-9")) == "card-9"
    assert entity_key(factories.email(1, sender="a@b.org")) == "a@b.org"


def test_alerts_require_a_decision_that_is_not_allow():
    alert = Alert(
        alert_id="alert-e",
        event_id="e",
        event_time=utc_from_timestamp(0),
        kind="email",
        entity_id="a@b.org",
        scored_at=utc_from_timestamp(1),
        score=0.9,
        online_score=0.9,
        decision="block",
        reasons=[],
        model_version="v",
    )
    with pytest.raises(InvalidEvent, match=r"\$.decision"):
        decode(as_json(alert, decision="allow"), Alert)


def test_bad_utf8_inside_a_string_is_refused_not_raised():
    """msgspec raises UnicodeDecodeError (not a DecodeError) for this: found by the fuzz test,
    where it crashed the scoring agent."""
    raw = encode(factories.transaction(1)).replace(b'"grocery"', b'"groc\xff\xfe\xc3ry"')
    with pytest.raises(InvalidEvent, match="a string is not valid UTF-8"):
        decode(raw, Transaction)
