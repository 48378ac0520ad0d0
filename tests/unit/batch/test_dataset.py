"""Loading the retrain's history from a lake: what is known at the cut-off, once, in order,
with the served features as columns; and the time split as slices."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from batch import design
from batch.dataset import DatasetError, load_history, time_split
from batch.lake import write_rows
from models import weights
from models.features import FEATURE_SET_VERSIONS, TRANSACTION_DENSE_FEATURES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = T0 + timedelta(days=2)


def scored(
    event_id: str, minutes: float, offset: int, *, scored_after_s: float = 1.0, **features: float
) -> dict[str, Any]:
    at = T0 + timedelta(minutes=minutes)
    return {
        "event_id": event_id,
        "kind": "transaction",
        "entity_id": "card_1",
        "scope_id": None,
        "event_time": at,
        "scored_at": at + timedelta(seconds=scored_after_s),
        "online_score": 0.25,
        "batch_score": None,
        "score": 0.25,
        "decision": "allow",
        "online_version": "v1",
        "batch_version": None,
        "features": json.dumps({"amount_log": 1.0, **features}),
        "topic": "scored",
        "partition": 0,
        "offset": offset,
    }


def label(event_id: str, positive: bool, hours: float, offset: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "transaction",
        "is_positive": positive,
        "label_time": T0 + timedelta(hours=hours),
        "source": "chargeback",
        "reviewer": None,
        "topic": "labels",
        "partition": 0,
        "offset": offset,
    }


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_rows(
        tmp_path,
        "scored",
        0,
        [
            scored("b", 10, 0, card_count_1h=2.0),
            scored("a", 5, 1, card_count_1h=1.0, extra_score=0.5),
            scored("b", 10, 2, scored_after_s=60, card_count_1h=99.0),  # a replay
            scored("c", 20, 3),
            scored("late", 60 * 49, 4),  # after the cut-off
        ],
    )
    write_rows(
        tmp_path,
        "labels",
        0,
        [
            label("a", True, 1, 0),
            label("a", False, 3, 1),  # an analyst overturned the chargeback
            label("b", True, 2, 2),
            label("c", True, 60, 3),  # arrives after the cut-off: unknown
        ],
    )
    return tmp_path


def test_history_is_what_was_known_at_the_cutoff_once_in_time_order(lake: Path) -> None:
    history = load_history(lake, "transaction", CUTOFF)
    frame = history.frame
    assert frame["event_id"].to_list() == ["a", "b", "c"]
    assert frame["is_positive"].to_list() == [False, True, None]
    assert frame["card_count_1h"].to_list() == [1.0, 2.0, None], "the first serving is kept"
    assert frame["card_count_1h"].dtype == pl.Float32
    assert frame["scope_id"].to_list() == ["", "", ""]
    assert history.served == [*TRANSACTION_DENSE_FEATURES, "extra_score"]
    assert frame["extra_score"].to_list() == [0.5, None, None]
    assert "features" not in frame.columns, "the JSON text is not kept for transactions"
    assert history.labelled()["event_id"].to_list() == ["a", "b"]
    assert history.labels().collect().select("event_id", "scope_id").rows() == [
        ("a", ""),
        ("b", ""),
    ]


def test_nothing_labelled_is_a_clear_error(lake: Path) -> None:
    history = load_history(lake, "transaction", T0 + timedelta(minutes=30))
    with pytest.raises(DatasetError, match="none of the 3 scored transactions has a label"):
        history.labelled()
    with pytest.raises(DatasetError, match="no scored emails before the cut-off"):
        load_history(lake, "email", CUTOFF)


def test_time_split_windows_are_slices_in_time_order() -> None:
    n = 300
    frame = pl.DataFrame(
        {
            "event_time": [T0 + timedelta(minutes=i // 3) for i in range(n)],
            "is_positive": [i % 4 == 0 for i in range(n)],
        }
    )
    split = time_split(frame)
    assert split.train.height + split.valid.height + split.test.height == n
    assert split.train["event_time"].max() < split.valid["event_time"].min()  # type: ignore[operator]
    assert split.valid["event_time"].max() < split.test["event_time"].min()  # type: ignore[operator]
    assert pl.concat([split.train, split.valid, split.test]).equals(frame)


def test_production_is_scored_from_columns_as_the_worker_scores_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Production is judged on the test window column-wise (no dict per event): the same
    numbers as the worker's per-row path, with the model's own lookups (not the frame's
    profile column of the same name)."""
    rng = np.random.default_rng(0)
    card = weights.ModelCard(
        kind="transaction",
        version="txn-1",
        feature_set_version=FEATURE_SET_VERSIONS["transaction"],
        feature_names=["a", "rate"],
        created_at=T0,
        trained_until=T0,
        library_versions={},
        metrics={},
        review_threshold=0.5,
        block_threshold=0.9,
        hybrid=weights.Blend(online_weight=0.0, batch_weight=1.0, bias=0.0),
    )
    lookup = weights.Lookup(key="scope_id", features=["rate"], rows={"t1": [0.3]}, default=[0.1])
    body = weights.Linear(weights={"a": 2.0, "rate": 4.0}, intercept=-1.0)
    model = weights.BatchModel(card, body, lookups=[lookup])
    n = 200
    a = np.where(rng.random(n) < 0.1, np.nan, rng.random(n)).astype(np.float32)
    scopes = rng.choice(["t1", "t2", ""], n).tolist()
    frame = pl.DataFrame(
        {"a": a, "entity_id": ["c"] * n, "scope_id": scopes, "rate": np.full(n, 7.0)}
    ).with_columns(pl.col("a").fill_nan(None))
    rows = [{} if math.isnan(v) else {"a": float(v)} for v in a]
    keys = [{"entity_id": "c", "scope_id": s} for s in scopes]
    expected = model.score_rows(rows, keys)
    np.testing.assert_allclose(design.score_with(model, frame), expected, rtol=1e-15)
    monkeypatch.setattr(design, "SCORE_BLOCK_ROWS", 7)  # blocks, the last one short
    np.testing.assert_allclose(design.score_with(model, frame), expected, rtol=1e-15)
