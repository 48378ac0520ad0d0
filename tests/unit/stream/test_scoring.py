"""The scoring step shared by the live worker and the backtest, without Kafka or Redis."""

from __future__ import annotations

import pytest

from models.features import CardHistory
from models.online import OnlineModel
from models.settings import Settings
from stream.scoring import EMAILS, TRANSACTIONS, Thresholds, score_batch
from tests import factories

ALWAYS_REVIEW = Thresholds(review=0.001, block=0.999)
NEVER_ALERT = Thresholds(review=0.999, block=1.0)


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, "allow"),
        (0.4999, "allow"),
        (0.5, "review"),
        (0.8499, "review"),
        (0.85, "block"),
        (1.0, "block"),
    ],
)
def test_thresholds_map_scores_to_decisions_at_their_edges(score, decision):
    assert Thresholds(review=0.5, block=0.85).decide(score) == decision


def test_thresholds_come_from_the_settings_of_each_kind():
    settings = Settings(
        txn_review_threshold=0.3,
        txn_block_threshold=0.6,
        email_review_threshold=0.4,
        email_block_threshold=0.9,
    )
    assert Thresholds.for_kind("transaction", settings) == Thresholds(0.3, 0.6)
    assert Thresholds.for_kind("email", settings) == Thresholds(0.4, 0.9)


def test_histories_advance_in_order_within_a_batch():
    same_card = [
        factories.transaction(n, card_id="card-x", at=factories.T0 + n * 60) for n in range(3)
    ]
    histories: dict[str, CardHistory] = {}
    verdicts = score_batch(
        TRANSACTIONS,
        same_card,
        histories,
        {},
        OnlineModel("transaction"),
        "online-transaction-0",
        NEVER_ALERT,
        scored_at=factories.T0 + 500,
    )
    assert [v.scored.features["card_count_1h"] for v in verdicts] == [0.0, 1.0, 2.0]
    assert len(histories["card-x"].times) == 3
    assert all(v.alert is None and v.scored.decision == "allow" for v in verdicts)


def test_a_replayed_event_is_scored_from_its_served_features_and_not_counted_twice():
    txn = factories.transaction(1, card_id="card-x")
    histories: dict[str, CardHistory] = {}
    model = OnlineModel("transaction")
    first = score_batch(TRANSACTIONS, [txn], histories, {}, model, "v", NEVER_ALERT, 0.0)[0]
    history_after_first = histories["card-x"]
    again = score_batch(
        TRANSACTIONS,
        [txn],
        histories,
        {},
        model,
        "v",
        NEVER_ALERT,
        0.0,
        served={txn.event_id: first.scored.features},
    )[0]
    assert again.replayed and not first.replayed
    assert again.scored.features == first.scored.features
    assert again.scored.online_score == first.scored.online_score
    assert histories["card-x"] is history_after_first


def trained_on_big_online_fraud() -> OnlineModel:
    """A model that learned "large online payments are fraud" from served features."""
    model = OnlineModel("transaction")
    histories: dict[str, CardHistory] = {}
    for n in range(400):
        fraud = n % 10 == 0
        txn = factories.transaction(
            n, amount=3_000.0 if fraud else 20.0, channel="online" if fraud else "pos"
        )
        verdict = score_batch(TRANSACTIONS, [txn], histories, {}, model, "v", NEVER_ALERT, 0.0)
        model.learn_one(verdict[0].scored.features, fraud)
    return model


def test_alerts_carry_score_decision_reasons_and_an_id_derived_from_the_event():
    txn = factories.transaction(7, amount=4_999.0, channel="online", country="BR")
    verdict = score_batch(
        TRANSACTIONS,
        [txn],
        {},
        {},
        trained_on_big_online_fraud(),
        "online-transaction-3",
        ALWAYS_REVIEW,
        scored_at=factories.T0,
    )[0]
    alert = verdict.alert
    assert alert is not None
    assert alert.alert_id == f"alert-{txn.event_id}"
    assert alert.decision == verdict.scored.decision == "review"
    assert alert.score == verdict.scored.score
    assert alert.model_version == "online-transaction-3"
    assert 1 <= len(alert.reasons) <= 3
    assert {"amount_log", "is_online"} & {r.feature for r in alert.reasons}
    assert [r.contribution for r in alert.reasons] == sorted(
        (r.contribution for r in alert.reasons), reverse=True
    )
    assert "4999.00 EUR" in alert.summary and txn.card_id in alert.summary


def test_email_alerts_never_carry_the_body():
    secret = "my account number is 12345678 and my password is hunter2"
    mail = factories.email(3, subject="Re: " + "x" * 300, body=secret)
    alert = score_batch(
        EMAILS, [mail], {}, {}, OnlineModel("email"), "v", ALWAYS_REVIEW, scored_at=factories.T0
    )[0].alert
    assert alert is not None
    assert "hunter2" not in alert.summary
    assert len(alert.summary) <= 120


def test_terminal_outcomes_reach_the_features():
    txn = factories.transaction(1, terminal_id="term-bad", at=factories.T0 + 1000)
    outcomes = {txn.event_id: (2, 3)}  # (positives, labels) counted at the event's time
    verdict = score_batch(
        TRANSACTIONS, [txn], {}, outcomes, OnlineModel("transaction"), "v", NEVER_ALERT, 0.0
    )[0]
    assert verdict.scored.features["terminal_fraud_count_28d"] == 2.0
    assert verdict.scored.features["terminal_label_count_28d"] == 3.0
