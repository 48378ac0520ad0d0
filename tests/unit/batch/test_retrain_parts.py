"""The retrain's pieces without services: split, profiles, thresholds, sampling, schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from batch import train
from batch.dataset import DatasetError, time_split
from batch.profiles import PROFILES, point_in_time, snapshot
from batch.retrain import sample_negatives
from batch.schedule import next_run
from batch.train import TREE_GRID, TREES_PER_STEP, Costs, choose_thresholds, tune

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def frame(times: list[datetime], positives: list[bool]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(times))],
            "event_time": times,
            "is_positive": positives,
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("us"))


def test_time_split_keeps_ties_together_and_orders_windows():
    times = [T0 + timedelta(minutes=i // 2) for i in range(100)]  # pairs at the same instant
    split = time_split(frame(times, [i % 5 == 0 for i in range(100)]), min_positives=2)
    assert split.train["event_time"].max() < split.valid["event_time"].min()
    assert split.valid["event_time"].max() < split.test["event_time"].min()
    assert split.train.height + split.valid.height + split.test.height == 100


def test_time_split_refuses_too_few_labels():
    times = [T0 + timedelta(minutes=i) for i in range(100)]
    with pytest.raises(DatasetError, match="too few labels: the validation window has 0 pos"):
        time_split(frame(times, [i < 50 and i % 3 == 0 for i in range(100)]), min_positives=1)


def test_thresholds_minimise_the_cost_a_brute_force_finds():
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.1
    p = np.clip(np.where(y, rng.beta(4, 2, 400), rng.beta(1, 8, 400)), 0, 1)
    costs = Costs(missed=40.0, review=3.0, false_block=25.0)
    review, block, cost = choose_thresholds(y, p, costs)

    def total(r: float, b: float) -> float:
        reviewed = (p >= r) & (p < b)
        blocked = p >= b
        return float(
            (y & (p < r)).sum() * costs.missed
            + reviewed.sum() * costs.review
            + (blocked & ~y).sum() * costs.false_block
        )

    assert review <= block
    assert cost == pytest.approx(total(review, block))
    grid = np.unique(np.quantile(p, np.linspace(0, 1, 201)))
    best = min(total(r, b) for r in grid for b in [*grid, 2.0] if b >= r)
    assert cost <= best + 1e-9


def test_sampling_keeps_every_positive():
    times = [T0 + timedelta(seconds=i) for i in range(10_000)]
    f = frame(times, [i % 100 == 0 for i in range(10_000)])
    sampled = sample_negatives(f, 1_000, seed=0)
    assert sampled.height == 1_000
    assert sampled["is_positive"].sum() == 100
    assert sampled["event_time"].is_sorted()
    assert sample_negatives(f, 20_000, seed=0).height == 10_000


def lake_rows(n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    scored = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "entity_id": [f"c{i % 2}" for i in range(n)],
            "scope_id": [f"t{i % 3}" for i in range(n)],
            "event_time": [T0 + i * DAY for i in range(n)],
            "amount_log": [float(i) for i in range(n)],
        }
    ).with_columns(pl.col("event_time").dt.cast_time_unit("us"))
    labels = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "scope_id": [f"t{i % 3}" for i in range(n)],  # the scope of its event
            "is_positive": [i % 4 == 0 for i in range(n)],
            "label_time": [T0 + i * DAY + timedelta(hours=30) for i in range(n)],
        }
    ).with_columns(pl.col("label_time").dt.cast_time_unit("us"))
    return scored, labels


def test_profiles_count_only_the_past_and_labels_that_had_arrived():
    scored, labels = lake_rows(10)
    spec = PROFILES["transaction"]
    out = point_in_time(scored, scored.lazy(), labels.lazy(), spec).row(9, named=True)
    # e9: card c1 had e1, e3, e5, e7 before (amount_log 1, 3, 5, 7); terminal t0 had e0, e3,
    # e6, whose labels arrived 30 h later, all before day 9: one positive (e0) of three.
    assert out["profile_card_count_30d"] == 4
    assert out["profile_card_amount_log_mean_30d"] == pytest.approx(4.0)
    assert out["profile_card_amount_log_std_30d"] == pytest.approx(5**0.5)
    assert out["profile_terminal_count_30d"] == 3
    assert out["profile_terminal_positive_labels_30d"] == 1
    assert out["profile_terminal_labels_30d"] == 3
    first = point_in_time(scored, scored.lazy(), labels.lazy(), spec).row(0, named=True)
    assert first["profile_card_count_30d"] == 0, "the first event has no past"
    assert first["profile_terminal_positive_rate_30d"] == pytest.approx(spec.scope_default()[3])


def test_published_snapshot_equals_the_training_value_at_that_instant():
    scored, labels = lake_rows(10)
    spec = PROFILES["transaction"]
    trained = point_in_time(scored, scored.lazy(), labels.lazy(), spec).row(9, named=True)
    snap = snapshot(scored.lazy(), labels.lazy(), spec, T0 + 9 * DAY)
    # Training holds model inputs as float32 (batch.dataset.FEATURE_DTYPE): the served
    # value, rounded so, is the training value exactly.
    assert [float(np.float32(v)) for v in snap.entity_rows["c1"]] == [
        trained[n] for n in spec.entity_features()
    ]
    assert [float(np.float32(v)) for v in snap.scope_rows["t0"]] == [
        trained[n] for n in spec.scope_features()
    ]


def test_next_run_is_the_next_time_of_day_in_utc():
    assert next_run(datetime(2026, 3, 1, 1, 0, tzinfo=UTC), "02:00") == datetime(
        2026, 3, 1, 2, 0, tzinfo=UTC
    )
    assert next_run(datetime(2026, 3, 1, 2, 0, tzinfo=UTC), "02:00") == datetime(
        2026, 3, 2, 2, 0, tzinfo=UTC
    )


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = X[:, 0] + 0.5 * rng.normal(size=n) > 1.5
    return X, y


def test_the_time_budget_bounds_the_first_candidate_too():
    X, y = _separable(3_000, 0)
    Xv, yv = _separable(1_000, 1)
    notes: list[str] = []
    tuned = tune("transaction", X, y, Xv, yv, budget_s=0.0, log=notes.append)
    assert len(tuned.trials) == 1
    assert tuned.trials[0]["trees"] == TREES_PER_STEP, "one step of trees, then it stops"
    assert "time budget spent" in notes[0]
    assert tuned.trials[0]["valid_average_precision"] > 0.5  # positives are 7 % of rows


def test_with_time_left_every_candidate_runs_and_the_best_is_kept(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(train, "MAX_TREES", 2 * TREES_PER_STEP)  # quick, still two steps
    X, y = _separable(1_000, 0)
    Xv, yv = _separable(500, 1)
    tuned = tune("transaction", X, y, Xv, yv, budget_s=600.0)
    assert len(tuned.trials) == len(TREE_GRID)
    best = max(t["valid_average_precision"] for t in tuned.trials)
    assert (
        tuned.trials[[t["valid_average_precision"] for t in tuned.trials].index(best)][
            "learning_rate"
        ]
        == tuned.params["learning_rate"]
    )
    assert all(t["trees"] <= 2 * TREES_PER_STEP for t in tuned.trials)
    assert any(t["trees"] > TREES_PER_STEP for t in tuned.trials), "grown past one step"
