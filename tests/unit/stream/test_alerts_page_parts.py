"""The alerts page's pure parts: filters, reviewer tokens, and the verdict's label.
(Its server, feed and review desk run against real Redis and Kafka in
tests/integration/test_alerts_page.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models.events import Alert, Review
from models.settings import Settings, SettingsError
from stream.alerts_page.filters import MAX_LIMIT, AlertFilter, FilterError
from stream.alerts_page.reviews import Reviewers, ReviewRefused


def alert(
    kind: str = "transaction", decision: str = "review", at: str = "2026-01-01T12:00:00Z"
) -> Alert:
    moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return Alert(
        alert_id="alert-e1",
        event_id="e1",
        event_time=moment,
        kind=kind,  # type: ignore[arg-type]
        entity_id="card-1",
        scored_at=moment,
        score=0.7,
        online_score=0.7,
        decision=decision,
        reasons=[],
        model_version="online-1",  # type: ignore[arg-type]
    )


def review() -> Review:
    return Review(
        alert_id="alert-e1",
        event_id="e1",
        kind="transaction",
        verdict="confirmed",
        reviewer="alice",
        reviewed_at=datetime(2026, 1, 2, tzinfo=UTC),
    )


def test_an_empty_query_matches_every_alert():
    f = AlertFilter.from_query({})
    assert f.matches(alert(), None)
    assert f.matches(alert("email", "block"), review())


def test_kinds_and_decisions_are_comma_separated_subsets():
    f = AlertFilter.from_query({"kind": "email", "decision": "block,review"})
    assert not f.matches(alert("transaction"), None)
    assert f.matches(alert("email", "block"), None)


def test_time_window_is_on_when_the_alert_was_raised_and_half_open():
    f = AlertFilter.from_query({"since": "2026-01-01T12:00:00Z", "until": "2026-01-01T13:00"})
    assert f.matches(alert(at="2026-01-01T12:00:00Z"), None)
    assert not f.matches(alert(at="2026-01-01T13:00:00Z"), None)
    assert not f.matches(alert(at="2026-01-01T11:59:59Z"), None)


def test_status_separates_open_from_reviewed():
    assert AlertFilter.from_query({"status": "open"}).matches(alert(), None)
    assert not AlertFilter.from_query({"status": "open"}).matches(alert(), review())
    assert AlertFilter.from_query({"status": "reviewed"}).matches(alert(), review())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"kind": "card"}, "kind must be one or more of transaction, email (got card)"),
        ({"since": "soon"}, "since: not an ISO time: 'soon'"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "since must be before until"),
        ({"limit": str(MAX_LIMIT + 1)}, f"limit must be a whole number from 1 to {MAX_LIMIT}"),
        ({"limit": "-3"}, "limit must be a whole number"),
        ({"sort": "score"}, "unknown parameter(s): sort"),
    ],
)
def test_bad_queries_say_what_is_wrong(query, message):
    with pytest.raises(FilterError) as refused:
        AlertFilter.from_query(query)
    assert message in str(refused.value)


ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"


def test_a_token_names_its_reviewer_and_nothing_else_does():
    reviewers = Reviewers(Settings(review_tokens=f"alice:{ALICE}, bob:{BOB}").reviewers())
    assert reviewers.who(f"Bearer {BOB}") == "bob"
    assert reviewers.who(f"bearer {ALICE}") == "alice"
    for header in [None, "", f"Basic {ALICE}", "Bearer ", f"Bearer {ALICE}x", "Bearer alice"]:
        with pytest.raises(ReviewRefused) as refused:
            reviewers.who(header)
        assert refused.value.status == 401


def test_without_tokens_the_page_is_read_only():
    reviewers = Reviewers({})
    assert not reviewers.enabled
    with pytest.raises(ReviewRefused) as refused:
        reviewers.who(f"Bearer {ALICE}")
    assert refused.value.status == 403 and "read-only" in refused.value.message


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("alice", "entry 1 must be reviewer:token"),
        ("alice:short", "entry 1 (alice): the token must have at least 16 characters"),
        (
            "a:" + "x" * 16 + ",a:" + "y" * 16,
            "entry 2 (a): reviewer names and tokens must be unique",
        ),
        (
            "a:" + "x" * 16 + ",b:" + "x" * 16,
            "entry 2 (b): reviewer names and tokens must be unique",
        ),
    ],
)
def test_bad_review_tokens_are_refused_without_echoing_the_token(tokens, message):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"FRAUD_REVIEW_TOKENS": tokens})
    assert message in str(refused.value)
    assert "x" * 16 not in str(refused.value) and "short" not in str(refused.value)


def test_a_verdict_becomes_an_analyst_label_with_who_and_when():
    label = review().as_label()
    assert (label.event_id, label.kind, label.is_positive) == ("e1", "transaction", True)
    assert (label.source, label.reviewer) == ("analyst", "alice")
    assert label.event_time == review().reviewed_at
