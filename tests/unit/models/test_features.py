"""Hand-computed feature values: windows and their edges, eviction, label outcomes, emails."""

from __future__ import annotations

import json
import math

import pytest

from models import features as F
from models.features import CardHistory, SenderHistory
from tests.factories import T0, email, transaction

HOUR = 3600.0
DAY = 86_400.0
WEEK = 7 * DAY
T = T0 + 30 * DAY


def _history(*entries: tuple[float, float, str, str]) -> CardHistory:
    """A card history built through ``card_history_after``, one (time, amount, country, device)
    per transaction, in arrival order."""
    history = CardHistory()
    for i, (at, amount, country, device) in enumerate(entries):
        txn = transaction(i, at=at, amount=amount, country=country, device_id=device)
        history = F.card_history_after(history, txn)
    return history


@pytest.fixture
def history() -> CardHistory:
    return _history(
        (T - WEEK, 1000.0, "GB", "d9"),  # exactly 7 d before: outside every window
        (T - DAY, 5.0, "US", ""),  # exactly 24 h before: in 7 d only
        (T - HOUR, 10.0, "FR", "d1"),  # exactly 1 h before: in 24 h and 7 d only
        (T - 600.0, 20.0, "DE", "d2"),
        (T + 60.0, 500.0, "IT", "d7"),  # arrived earlier, stamped later: not prior
        (T, 30.0, "FR", "d1"),  # same time as the event: prior
    )


def test_window_counts_and_sums_follow_the_half_open_rule(history: CardHistory) -> None:
    x = F.transaction_features(transaction(99, at=T, amount=100.0, device_id="d3"), history)
    assert (x["card_count_1h"], x["card_count_24h"], x["card_count_7d"]) == (2.0, 3.0, 4.0)
    assert x["card_amount_sum_log_1h"] == math.log1p(50.0)
    assert x["card_amount_sum_log_24h"] == math.log1p(60.0)
    assert x["card_amount_sum_log_7d"] == math.log1p(65.0)
    assert (x["card_countries_24h"], x["card_countries_7d"]) == (2.0, 3.0)  # FR DE / + US
    assert (x["card_devices_24h"], x["card_devices_7d"]) == (2.0, 2.0)  # '' is no device
    assert (x["is_new_country"], x["is_new_device"]) == (0.0, 1.0)
    assert x["secs_since_prev_log"] == 0.0  # the tie is the previous transaction


def test_amount_against_the_card_history(history: CardHistory) -> None:
    x = F.transaction_features(transaction(99, at=T, amount=100.0), history)
    prior = [5.0, 10.0, 20.0, 30.0]
    mean = sum(prior) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in prior) / 4)
    assert x["amount_log"] == math.log1p(100.0)
    assert x["amount_log_ratio_mean"] == pytest.approx(math.log1p(100.0) - math.log1p(mean))
    assert x["amount_zscore"] == pytest.approx((100.0 - mean) / std)
    assert x["amount_zscore"] == pytest.approx(8.72266, abs=1e-5)


def test_zscore_has_a_floor_on_std_and_a_cap() -> None:
    same = _history(*[(T - i * HOUR, 20.0, "FR", "") for i in range(1, 4)])
    x = F.transaction_features(transaction(1, at=T, amount=25.0), same)
    assert x["amount_zscore"] == 2.5  # std 0, floored at 0.1 * mean = 2
    x = F.transaction_features(transaction(1, at=T, amount=5000.0), same)
    assert x["amount_zscore"] == F.ZSCORE_CAP


def test_a_card_without_history() -> None:
    x = F.transaction_features(transaction(1, at=T, amount=10.0, device_id="d1"), CardHistory())
    assert x["card_count_7d"] == 0.0
    assert (x["is_new_country"], x["is_new_device"]) == (0.0, 0.0)
    assert x["secs_since_prev_log"] == math.log1p(F.SECS_SINCE_PREV_CAP_S)
    assert (x["amount_log_ratio_mean"], x["amount_zscore"]) == (0.0, 0.0)


def test_seconds_since_previous_is_capped_and_logged() -> None:
    h = _history((T - 90.0, 10.0, "FR", ""), (T - 3 * DAY, 10.0, "FR", ""))
    x = F.transaction_features(transaction(1, at=T, amount=10.0), h)
    assert x["secs_since_prev_log"] == math.log1p(90.0)  # the latest time, not the last arrival


def test_feature_names_order_and_extras() -> None:
    txn = transaction(1, at=T, amount=10.0, channel="online", extra={"v2": 1.5, "v1": -3.0})
    x = F.transaction_features(txn, CardHistory())
    assert list(x) == [*F.TRANSACTION_DENSE_FEATURES, "extra_v1", "extra_v2"]
    assert (x["extra_v1"], x["extra_v2"], x["is_online"]) == (-3.0, 1.5, 1.0)
    assert all(isinstance(v, float) and math.isfinite(v) for v in x.values())


def test_hour_of_day_is_utc_and_cyclic() -> None:
    midnight = F.transaction_features(transaction(1, at=T0, amount=1.0), CardHistory())
    six = F.transaction_features(transaction(1, at=T0 + 6 * HOUR, amount=1.0), CardHistory())
    assert (midnight["hour_sin"], midnight["hour_cos"]) == (0.0, 1.0)
    assert six["hour_sin"] == 1.0
    assert six["hour_cos"] == pytest.approx(0.0, abs=1e-12)


def test_terminal_outcomes_count_only_labels_known_at_scoring_time() -> None:
    outcomes = [
        (T - 10.0, True),
        (T, True),  # arrived at the event time: known
        (T + 1.0, True),  # arrived after the event: ignored
        (T - 28 * DAY, True),  # exactly 28 d before: expired
        (T - 28 * DAY + 1.0, False),
    ]
    counts = F.count_outcomes(T, outcomes)
    assert counts == (2, 3)
    x = F.transaction_features(transaction(1, at=T, amount=1.0), CardHistory(), counts)
    assert x["terminal_fraud_count_28d"] == 2.0
    assert x["terminal_label_count_28d"] == 3.0
    assert x["terminal_fraud_rate_28d"] == (2.0 + 0.1) / (3.0 + 10.0)
    none = F.transaction_features(transaction(1, at=T, amount=1.0), CardHistory())
    assert none["terminal_fraud_rate_28d"] == F.OUTCOME_PRIOR_RATE


def test_history_eviction_by_age_relative_to_the_new_event() -> None:
    h = _history((T, 1.0, "FR", "a"), (T + DAY, 2.0, "DE", "b"))
    after = F.card_history_after(h, transaction(9, at=T + WEEK, amount=3.0, country="IT"))
    assert after.times == [T + DAY, T + WEEK]  # T is exactly 7 d old: evicted
    assert after.amounts == [2.0, 3.0]
    assert after.countries == ["DE", "IT"]
    assert after.devices == ["b", "dev-9"]
    assert h.times == [T, T + DAY]  # the input history is left alone


def test_history_cap_keeps_the_latest_arrivals() -> None:
    h = CardHistory()
    for i in range(300):
        h = F.card_history_after(h, transaction(i, at=T + i, amount=float(i)))
    assert len(h.times) == F.CARD_HISTORY_CAP
    assert h.amounts[0] == 300.0 - F.CARD_HISTORY_CAP
    assert h.amounts[-1] == 299.0


def test_card_history_round_trips_through_json() -> None:
    h = _history((T, 12.5, "FR", "d1"), (T + 1, 7.25, "DE", ""))
    stored = F.encode_history(h)
    assert json.loads(stored) == {
        "times": [T, T + 1],
        "amounts": [12.5, 7.25],
        "countries": ["FR", "DE"],
        "devices": ["d1", ""],
    }
    assert F.decode_history(stored, CardHistory) == h
    assert F.decode_history(b"{}", CardHistory) == CardHistory()
    assert F.decode_history(b'{"times": [], "later": 1}', CardHistory) == CardHistory()


@pytest.mark.parametrize(
    "data",
    [
        {"times": [1.0], "amounts": [], "countries": [], "devices": []},
        {"times": ["x"], "amounts": [1.0], "countries": ["FR"], "devices": [""]},
        [1, 2],
    ],
)
def test_malformed_card_history_is_a_value_error(data: object) -> None:
    with pytest.raises(ValueError, match="CardHistory"):
        F.decode_history(json.dumps(data).encode(), CardHistory)
    with pytest.raises(ValueError, match="CardHistory"):
        F.decode_history(b'{"times": [1.0', CardHistory)


# --- emails -----------------------------------------------------------------------------


def test_sender_history_features() -> None:
    h = SenderHistory()
    for i, (at, to) in enumerate(
        [(T - DAY, "a@x.org"), (T - 2 * HOUR, "B@x.org"), (T - 60.0, "b@x.org"), (T, "c@x.org")]
    ):
        h = F.sender_history_after(h, email(i, at=at, sender="s@x.org", recipient=to))
    assert h.first_seen == T - DAY
    assert h.times == [T - 2 * HOUR, T - 60.0, T]  # T - 24 h evicted by the last message
    outcomes = F.count_outcomes(T, [(T - 5.0, True), (T + 5.0, True)])
    x = F.email_features(email(9, at=T, sender="s@x.org"), h, outcomes)
    assert (x["sender_count_1h"], x["sender_count_24h"]) == (2.0, 3.0)
    assert x["sender_recipients_24h"] == 2.0  # b@x.org (case folded) and c@x.org
    assert x["sender_age_log"] == math.log1p(DAY)
    assert x["sender_is_new"] == 0.0
    assert (x["sender_spam_count_28d"], x["sender_label_count_28d"]) == (1.0, 1.0)
    assert x["sender_spam_rate_28d"] == 1.1 / 11.0


def test_new_sender() -> None:
    x = F.email_features(email(1, at=T), SenderHistory())
    assert (x["sender_is_new"], x["sender_age_log"], x["sender_count_24h"]) == (1.0, 0.0, 0.0)


def test_email_text_and_link_features() -> None:
    mail = email(
        1,
        at=T,
        sender="PayPal <service@paypa1.com>",
        subject="FREE PRIZE!!!",
        body="Claim your $500 reward now at http://10.0.0.1/claim or www.paypal.com/x",
        links=["https://paypal-login.example.com/a", "http://10.0.0.1/claim"],
        has_attachment=True,
    )
    x = F.email_features(mail, SenderHistory())
    assert x["link_count"] == 3.0  # the repeated IP link counts once
    assert x["link_lookalike_count"] == 2.0  # brand in another's domain, and the IP
    assert x["link_ip_count"] == 1.0
    assert x["sender_domain_lookalike"] == 1.0
    assert x["money_cue_count"] == 5.0  # free prize claim reward + "$500"
    assert x["has_attachment"] == 1.0
    content = f"{mail.subject}\n{mail.body}"
    assert x["exclaim_density"] == 3 / len(content)
    assert list(x)[: len(F.EMAIL_DENSE_FEATURES)] == list(F.EMAIL_DENSE_FEATURES)
    tokens = [k for k in x if k.startswith("tok_")]
    assert tokens == sorted(tokens, key=lambda k: int(k[4:]))
    assert all(math.isfinite(v) for v in x.values())


def test_plain_email_has_no_lookalikes() -> None:
    x = F.email_features(email(1, at=T, links=["https://www.example.org/notes"]), SenderHistory())
    assert x["link_lookalike_count"] == 0.0
    assert x["sender_domain_lookalike"] == 0.0
    assert x["money_cue_count"] == 0.0


def test_sender_history_round_trips_through_json() -> None:
    h = F.sender_history_after(SenderHistory(), email(1, at=T, recipient="Me@x.org"))
    assert F.decode_history(F.encode_history(h), SenderHistory) == h
    with pytest.raises(ValueError, match="SenderHistory"):
        F.decode_history(b'{"times": [1.0], "recipients": []}', SenderHistory)
