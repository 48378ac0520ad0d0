"""The transaction simulator: reproducible, at the configured fraud rate, every scenario present,
and fraud that looks like the stories it claims to tell."""

from __future__ import annotations

import collections
import math

import pytest

from models.events import Transaction, decode, encode
from producers.fraud import (
    ACCOUNT_TAKEOVER,
    CARD_TESTING,
    COMPROMISED_TERMINAL,
    GIFT_CARD_MIMICRY,
    HIGH_VALUE,
)
from producers.population import DRIFT_CATEGORY
from producers.transactions import LEGIT, TransactionSimulator

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
NOW = START + 30 * 86_400  # "now" for decoding: the simulated days are in the past


def small(seed: int, fraud_rate: float = 0.005) -> TransactionSimulator:
    """A small population: quick to build, same behaviour."""
    return TransactionSimulator(seed, fraud_rate, START, customers=3_000, merchants=600)


@pytest.fixture(scope="module")
def stream() -> list:
    """50k transactions over about a simulated day, with a drift after twelve hours (shared:
    it takes a second)."""
    sim = TransactionSimulator(11, start=START, drift_at=START + 12 * 3600, events_per_s=0.5)
    return sim.take(50_000)


def test_the_same_seed_gives_the_same_stream_ids_times_and_values():
    first = [
        (encode(i.event), i.is_positive, i.scenario, i.true_probability)
        for i in small(5).take(3_000)
    ]
    again = [
        (encode(i.event), i.is_positive, i.scenario, i.true_probability)
        for i in small(5).take(3_000)
    ]
    assert first == again
    assert first[0][0].startswith(b'{"schema_version":1,"event_id":"tx-5-0000000000"')


def test_different_seeds_give_different_streams():
    a = [i.event for i in small(1).take(200)]
    b = [i.event for i in small(2).take(200)]
    assert [e.event_id for e in a] != [e.event_id for e in b]
    assert [(e.card_id, e.amount) for e in a] != [(e.card_id, e.amount) for e in b]


def test_ids_are_unique_and_times_never_go_back(stream):
    ids = [i.event.event_id for i in stream]
    assert len(set(ids)) == len(ids)
    times = [i.event.timestamp for i in stream]
    assert times == sorted(times)
    assert times[0] >= START


def test_every_event_is_a_valid_transaction(stream):
    for item in stream[:5_000]:
        assert decode(encode(item.event), Transaction, now=NOW) == item.event


def test_the_fraud_rate_is_close_to_the_configured_one(stream):
    rate = sum(i.is_positive for i in stream) / len(stream)
    assert 0.0035 < rate < 0.0065  # 0.5% configured; campaigns come in bursts


def test_a_higher_fraud_rate_is_honoured():
    items = small(3, 0.05).take(20_000)
    rate = sum(i.is_positive for i in items) / len(items)
    assert 0.04 < rate < 0.06


def test_every_scenario_appears_and_drift_brings_a_new_one(stream):
    seen = collections.Counter(i.scenario for i in stream)
    for scenario in (
        LEGIT,
        CARD_TESTING,
        ACCOUNT_TAKEOVER,
        COMPROMISED_TERMINAL,
        HIGH_VALUE,
        GIFT_CARD_MIMICRY,
    ):
        assert seen[scenario] > 0, scenario
    assert all(i.is_positive == (i.scenario != LEGIT) for i in stream)
    mimicry = [i for i in stream if i.scenario == GIFT_CARD_MIMICRY]
    assert min(i.event.timestamp for i in mimicry) >= START + 12 * 3600
    assert all(i.event.merchant_category == DRIFT_CATEGORY[0] for i in mimicry)
    before = [i for i in stream if i.event.timestamp < START + 12 * 3600]
    assert not any(i.event.merchant_category == DRIFT_CATEGORY[0] for i in before)


def test_card_testing_is_bursts_of_tiny_amounts_minutes_apart_on_one_card(stream):
    bursts: dict[str, list[Transaction]] = collections.defaultdict(list)
    for item in stream:
        if item.scenario == CARD_TESTING:
            bursts[item.event.card_id].append(item.event)
    assert bursts
    for events in bursts.values():
        assert all(0.5 <= e.amount <= 3.0 for e in events)
        assert all(e.channel == "online" for e in events)
        assert len({e.device_id for e in events}) == 1  # the tester's one device
        if len(events) >= 4:
            span = events[-1].timestamp - events[0].timestamp
            assert span < 30 * 60, span  # a burst: minutes, not hours


def test_account_takeover_comes_from_a_new_device_abroad_then_buys_big(stream):
    takeovers = collections.defaultdict(list)
    for item in stream:
        if item.scenario == ACCOUNT_TAKEOVER:
            takeovers[item.event.card_id].append(item.event)
    for events in takeovers.values():
        assert len({e.country for e in events}) == 1
        assert all(e.channel == "online" and e.device_id for e in events)
        if len(events) >= 3:
            assert max(e.amount for e in events[1:]) > events[0].amount


def test_a_compromised_terminal_defrauds_many_cards(stream):
    by_terminal = collections.defaultdict(set)
    for item in stream:
        if item.scenario == COMPROMISED_TERMINAL:
            by_terminal[item.event.terminal_id].add(item.event.card_id)
            assert item.event.channel == "pos"
    assert max(len(cards) for cards in by_terminal.values()) >= 3


def test_legit_customers_also_travel_buy_big_and_change_devices(stream):
    legit = [i.event for i in stream if not i.is_positive]
    first_device: dict[str, set[str]] = collections.defaultdict(set)
    new_devices = 0
    for e in legit:
        if e.device_id:
            if first_device[e.card_id] and e.device_id not in first_device[e.card_id]:
                new_devices += 1
            first_device[e.card_id].add(e.device_id)
    assert new_devices > 50
    foreign_pos = {e.country for e in legit if e.channel == "pos"}
    assert len(foreign_pos) > 8  # trips abroad
    assert sum(e.amount > 500 for e in legit) > 20  # splurges
    assert sum(e.amount < 3 for e in legit) > 50  # tiny legit purchases too


def test_the_true_probability_is_a_probability_and_ranks_fraud_first(stream):
    ps = [i.true_probability for i in stream]
    assert all(0.0 <= p <= 1.0 and not math.isnan(p) for p in ps)
    fraud = [i.true_probability for i in stream if i.is_positive]
    legit = [i.true_probability for i in stream if not i.is_positive]
    assert sum(fraud) / len(fraud) > 0.3
    assert sum(legit) / len(legit) < 0.01
    # Calibrated on the whole: expected positives close to the real count.
    assert 0.6 < sum(ps) / len(fraud) < 1.4
    # Not trivially separable: some fraud looks legit, and some legit looks like fraud.
    assert any(p < 0.05 for p in fraud)
    assert any(p > 0.5 for p in legit)


def test_amounts_follow_the_daily_rhythm(stream):
    by_hour = collections.defaultdict(list)
    for item in stream:
        if not item.is_positive:
            by_hour[int(item.event.timestamp % 86_400 // 3600)].append(math.log(item.event.amount))
    night = [y for h in range(0, 6) for y in by_hour[h]]
    evening = [y for h in range(18, 22) for y in by_hour[h]]
    assert len(evening) > 3 * len(night)  # busier
    assert sum(evening) / len(evening) > sum(night) / len(night)  # bigger baskets


def test_a_bad_fraud_rate_is_refused():
    with pytest.raises(ValueError, match="fraud_rate"):
        TransactionSimulator(1, fraud_rate=1.5)
