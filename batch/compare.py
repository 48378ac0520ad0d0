"""The backtest's batch and hybrid comparison: the nightly retrain's own code, on the backtest.

``python -m stream backtest --batch-compare`` records what it scored as the lake sink would
have (:class:`batch.synthetic.LakeRecorder`: served features, online scores, and each label
at its arrival time), then runs :func:`batch.retrain.run` on that lake as a dry run without a
production model, so no Redis is needed. Everything else is the nightly retrain: the split
by event time (train, validation, test), the labels known at the cut-off, the batch-only
profiles, the fit within the time budget, the calibration, the blend and the thresholds on
the validation window, and the evaluation on the test window. What comes back is the
retrain's metrics (online as served, batch and hybrid, on the same test window) and the
test window's batch and hybrid scores by event id, so the backtest can write them next to
the online scores it gave the same events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from batch.retrain import Options, run
from models.names import EventKind
from models.settings import Settings

CUTOFF = datetime(9999, 1, 1, tzinfo=UTC)
"""After every label of any file: the backtest has seen them all arrive."""


@dataclass(frozen=True)
class Comparison:
    """The retrain's figures on the backtest's events, and its test-window scores."""

    metrics: dict[str, Any]
    """:func:`batch.retrain.run`'s metrics: ``scores`` has ``online_logged``, ``new_batch``
    and ``new_hybrid`` on one window; ``split`` the three windows."""
    scores: pl.DataFrame
    """event_id, batch_score, hybrid_score: the test window."""
    report_dir: Path
    """The retrain's report (plots, importances, the model card)."""


def compare(
    lake_dir: Path,
    kind: EventKind,
    settings: Settings,
    *,
    runs_dir: Path,
    budget_s: float,
    log: Callable[[str], None],
) -> Comparison:
    """Retrain ``kind`` on the lake at ``lake_dir`` without publishing; its report goes
    under ``runs_dir``. Raises ``batch.dataset.DatasetError`` when a window has too few
    labels of either class."""
    settings = settings.replace(
        lake_dir=str(lake_dir), runs_dir=str(runs_dir), retrain_budget_s=budget_s
    )
    outcome = run(
        settings, Options(kind=kind, cutoff=CUTOFF, dry_run=True, production=False), log=log
    )
    assert outcome.test_scores is not None  # run() always scores its test window
    return Comparison(outcome.metrics, outcome.test_scores, outcome.run_dir)
