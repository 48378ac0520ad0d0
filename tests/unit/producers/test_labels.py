"""The delayed-label queue: in arrival order, after the delay, with the configured share lost."""

from __future__ import annotations

import random

import pytest

from producers.labels import LabelQueue

T0 = 1_767_225_600.0


def test_labels_arrive_after_the_delay_in_arrival_order():
    queue = LabelQueue(random.Random(1), mean_delay_s=60.0)
    for i in range(100):
        queue.add(f"tx-{i}", "transaction", i % 10 == 0, T0 + i)
    assert queue.due(T0 + 29.9) == []  # nothing before half the mean delay
    released = []
    for now in range(0, 400, 5):
        released += queue.due(T0 + now)
    assert len(released) == 100 and len(queue) == 0
    times = [label.timestamp for label in released]
    assert times == sorted(times)
    for label in released:
        n = int(label.event_id.removeprefix("tx-"))
        assert 30.0 <= label.timestamp - (T0 + n) <= 90.0  # mean 60, +-50%
    delays = [label.timestamp - (T0 + int(label.event_id[3:])) for label in released]
    assert 50 < sum(delays) / len(delays) < 70


def test_a_label_is_never_released_before_its_arrival_time():
    queue = LabelQueue(random.Random(2), mean_delay_s=10.0)
    queue.add("e1", "email", True, T0)
    arrival = queue.next_arrival
    assert arrival is not None and arrival > T0
    assert queue.due(arrival - 0.001) == []
    [label] = queue.due(arrival)
    assert label.event_id == "e1" and label.timestamp == pytest.approx(arrival)


def test_the_missing_share_never_arrives():
    queue = LabelQueue(random.Random(3), mean_delay_s=1.0, missing_rate=0.2)
    for i in range(10_000):
        queue.add(f"tx-{i}", "transaction", False, T0)
    assert 1_800 < queue.dropped < 2_200
    assert len(queue.drain()) == 10_000 - queue.dropped


def test_sources_name_who_reported_and_negatives_come_too():
    queue = LabelQueue(random.Random(4), mean_delay_s=0.0)
    queue.add("tx-1", "transaction", True, T0)
    queue.add("tx-2", "transaction", False, T0)
    queue.add("em-1", "email", True, T0)
    queue.add("em-2", "email", False, T0)
    labels = {label.event_id: label for label in queue.due(T0)}
    assert labels["tx-1"].source == "chargeback" and labels["tx-1"].is_positive
    assert labels["tx-2"].source == "generator" and not labels["tx-2"].is_positive
    assert labels["em-1"].source == "spam_report" and labels["em-1"].kind == "email"
    assert labels["em-2"].source == "generator"


def test_a_replay_delay_is_exact():
    queue = LabelQueue(random.Random(5), mean_delay_s=30.0, source="replay", jitter=0.0)
    queue.add("r-1", "transaction", True, T0)
    [label] = queue.drain()
    assert label.timestamp == T0 + 30.0 and label.source == "replay"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        LabelQueue(random.Random(), mean_delay_s=-1)
    with pytest.raises(ValueError):
        LabelQueue(random.Random(), missing_rate=1.5)
