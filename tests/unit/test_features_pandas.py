"""The pandas baseline of ``python -m benchmarks features`` computes what batch/features.py
computes: on simulator data, and on the edge cases the simulator rarely reaches (ties, exact
window edges, the card history cap, the outcome cap). The benchmark checks the same on its
own data before timing; this keeps the comparison honest between runs.

(batch/features.py itself is held to the stream's per-event code by
tests/unit/batch/test_feature_parity.py.)
"""

from __future__ import annotations

import random

import polars as pl
import pytest

from batch.features import label_outcomes, transaction_features_frame
from benchmarks.features_pandas import differences, transaction_features_pandas
from models.events import Transaction
from models.features import (
    CARD_HISTORY_CAP,
    DAY_S,
    HOUR_S,
    OUTCOME_CAP,
    OUTCOME_WINDOW_S,
    WEEK_S,
)
from producers.labels import LabelQueue
from producers.transactions import TransactionSimulator
from tests.factories import T0, transaction
from tests.factories import outcomes_frame as outcomes
from tests.factories import transactions_frame as frame

T = T0 + 30 * DAY_S


def assert_same(transactions: pl.DataFrame, terminal_outcomes: pl.DataFrame | None) -> None:
    expected = transaction_features_frame(transactions, terminal_outcomes).collect()
    got = transaction_features_pandas(
        transactions.to_pandas(),
        None if terminal_outcomes is None else terminal_outcomes.to_pandas(),
    )
    assert differences(expected, got) == []


def test_equal_on_simulator_data() -> None:
    """5,000 transactions over two simulated days with labels after ~6 h: card windows and
    terminal outcomes all reached."""
    simulator = TransactionSimulator(7, start=T0, events_per_s=5_000 / (2 * DAY_S))
    queue = LabelQueue(random.Random(7), mean_delay_s=6 * HOUR_S)
    txns = []
    for item in simulator.take(5_000):
        txns.append(item.event)
        queue.add(item.event.event_id, "transaction", item.is_positive, item.event.timestamp)
    labels = queue.due(float("inf"))
    transactions = frame(txns)
    label_frame = pl.DataFrame(
        {
            "event_id": [label.event_id for label in labels],
            "label_time": [label.event_time for label in labels],
            "is_positive": [label.is_positive for label in labels],
        }
    )
    terminal_outcomes = label_outcomes(transactions, label_frame).collect()
    features = transaction_features_frame(transactions, terminal_outcomes).collect()
    assert (features["card_count_1h"] > 0).any() and (features["card_devices_7d"] > 1).any()
    assert (features["terminal_label_count_28d"] > 0).any()
    assert_same(transactions, terminal_outcomes)
    assert_same(transactions, None)


def test_equal_on_ties_window_edges_and_caps() -> None:
    edges = [0.0, 0.0, 1e-6, HOUR_S, HOUR_S, DAY_S, WEEK_S, WEEK_S + 1, 1.0, 3 * DAY_S]
    txns: list[Transaction] = []
    at = T
    for n, gap in enumerate(edges * 3):
        at += gap
        txns.append(
            transaction(
                n,
                at=at,
                card_id=f"c{n % 2}",
                country=("FR", "DE", "US")[n % 3],
                device_id=("", "d1", "d2", "")[n % 4],
                channel=("pos", "online")[n % 2],
                terminal_id="term-0",
            )
        )
    burst = len(txns)
    for k in range(CARD_HISTORY_CAP + 40):  # past the card history cap, 3 per second
        txns.append(
            transaction(
                burst + k,
                at=at + 10 + k // 3,
                card_id="c9",
                amount=1.0 + k % 10,
                country=f"C{k % 100:02d}",
                device_id=f"d{k % 7}",
            )
        )
    for late in (100.0, 100.5, 101.0):  # 28 days after some labels: the expiry edge
        txns.append(
            transaction(
                len(txns), at=T + OUTCOME_WINDOW_S + late, card_id="c8", terminal_id="term-0"
            )
        )
    labels = [("term-0", T + j, j < 100) for j in range(OUTCOME_CAP + 50)]  # the outcome cap
    labels += [("term-0", txns[5].timestamp, True), ("term-1", txns[3].timestamp, False)]
    labels += [("term-0", txns[3].timestamp, j % 2 == 0) for j in range(3)]  # tied arrivals
    assert_same(frame(txns), outcomes(labels))


def test_minimal_columns_and_no_rows() -> None:
    txns = [transaction(n, at=T + n * 600.0, card_id=f"c{n % 3}") for n in range(50)]
    minimal = frame(txns).drop("device_id", "channel", "terminal_id")
    assert_same(minimal, None)
    assert_same(frame(txns).clear(), outcomes([]))


def test_back_dated_events_are_refused() -> None:
    txns = [transaction(n, at=T + d * DAY_S, card_id="c1") for n, d in enumerate([0, 8, 6])]
    with pytest.raises(ValueError, match="back-dated"):
        transaction_features_pandas(frame(txns).to_pandas())
