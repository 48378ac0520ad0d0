"""``python -m stream backtest --batch-compare``: batch and hybrid scores next to the online ones.

The backtest scores every event with the online model, prequentially. With
``--batch-compare`` it also records what it scored as the lake sink would have, and then
runs the nightly retrain's own code on that record (:func:`batch.retrain.run`): a batch model
trained on the earlier events, judged with the online and the hybrid score on the same test
window (the retrain's split: the last 20 % of the labelled events by time). The comparison
fills the ``batch`` and ``hybrid`` entries of the backtest's JSON and report, and the
``batch_score`` / ``hybrid_score`` columns of ``--scores-out`` for the test window's events
(empty for the events the batch model was trained or calibrated on: scoring those would not
be a test).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from models.names import EventKind
from models.settings import Settings

CUTOFF = datetime(9999, 1, 1, tzinfo=UTC)
"""The retrain's cut-off: after every label of any file."""


class BatchComparisonError(ValueError):
    """The comparison cannot be made (too few labels in a window); the message says why."""


class BatchComparison:
    """Records a backtest's events for the retrain, then runs it (see the module doc)."""

    def __init__(
        self, kind: EventKind, label_delay_s: float, report_dir: Path | None, budget_s: float
    ) -> None:
        from batch.synthetic import LakeRecorder  # polars' lake writer: only when comparing

        self.kind: EventKind = kind
        self.label_delay_s = label_delay_s
        self.budget_s = budget_s
        self._tmp = Path(tempfile.mkdtemp(prefix="backtest-compare-"))
        self._keeps_report = report_dir is not None
        self._runs_dir = report_dir / "batch" if report_dir is not None else self._tmp / "runs"
        self._recorder = LakeRecorder(self._tmp / "lake", kind)

    def feed(self, items: Iterable[tuple[Any, bool | None]]) -> Iterator[tuple[Any, bool | None]]:
        """``items`` unchanged, each event kept until :meth:`record` pairs it with its score."""
        return self._recorder.feed(items)

    def record(self, batch: Sequence[Any]) -> None:
        """Record a scored batch (``stream.backtest.Scored``, in the order fed). A replayed
        event (its id seen before) brings no second label: the backtest counts it once."""
        for scored in batch:
            arrives = None
            if scored.label is not None and not scored.replayed:
                arrives = scored.event_time + self.label_delay_s
            self._recorder.add(scored, arrives)

    def run(self, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
        """Retrain on the record; return the backtest's ``comparison`` entry."""
        from batch.dataset import DatasetError
        from batch.retrain import Options
        from batch.retrain import run as retrain

        self._recorder.close()
        settings = settings.replace(
            lake_dir=str(self._tmp / "lake"),
            runs_dir=str(self._runs_dir),
            retrain_budget_s=self.budget_s,
        )
        # A dry run without a production model: nothing is published and Redis is not used.
        # The cut-off lies after every label: the backtest has seen them all arrive.
        options = Options(kind=self.kind, cutoff=CUTOFF, dry_run=True, production=False)
        try:
            outcome = retrain(settings, options, log=log)
        except DatasetError as exc:
            raise BatchComparisonError(f"--batch-compare: {exc}") from None
        assert outcome.test_scores is not None  # run() always scores its test window
        self.scores = outcome.test_scores
        metrics = outcome.metrics
        scores = metrics["scores"]
        return {
            "window": metrics["split"]["test"],
            "events": metrics["comparison_events"],
            "positives": metrics["comparison_positives"],
            "online": scores["online_logged"],
            "batch": scores["new_batch"],
            "hybrid": scores["new_hybrid"],
            "batch_thresholds": metrics["thresholds"],
            "split": metrics["split"],
            "report": str(outcome.run_dir) if self._keeps_report else None,
        }

    def fill_scores(self, path: Path) -> None:
        """Write the test window's batch and hybrid scores into ``--scores-out`` (by event
        id; other rows keep them empty)."""
        parquet = path.suffix.lower() in (".parquet", ".pq")
        frame = pl.read_parquet(path) if parquet else pl.read_csv(path, infer_schema=False)
        order = frame.columns
        scores = self.scores
        if not parquet:
            scores = scores.with_columns(pl.col("batch_score", "hybrid_score").cast(pl.String))
        frame = frame.drop("batch_score", "hybrid_score").join(
            scores, on="event_id", how="left", maintain_order="left"
        )
        frame = frame.select(order)
        if parquet:
            frame.write_parquet(path)
        else:
            frame.write_csv(path)

    def close(self) -> None:
        """Remove the recorded lake (and the report, unless it went to ``--report``)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
