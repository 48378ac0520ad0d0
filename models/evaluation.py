"""Detection metrics for scored events: ROC AUC, average precision, the confusion at an
operating threshold, and card precision among the top k per day.

NumPy implementations rather than scikit-learn calls, for three reasons: they take the
backtest's columns as they are (millions of rows, no copies into DataFrames), they say "not
defined" (None) where scikit-learn raises or warns (a run with one class only), and the
deployable packages do not need scikit-learn's import time. They agree with scikit-learn's
``roc_auc_score`` and ``average_precision_score`` (ties included; the unit tests check it):

* ROC AUC is the trapezoid area under the ROC curve taken at each distinct score, so tied
  scores count half, as in the Mann-Whitney statistic.
* Average precision is ``sum_n (R_n - R_{n-1}) * P_n`` over the distinct scores in decreasing
  order, without interpolation.

At the operating threshold an event is flagged when ``score >= threshold``, the rule the
worker's :class:`~stream.scoring.Thresholds` applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.features import DAY_S

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Curve:
    """Cumulative counts at each distinct score, highest score first."""

    thresholds: FloatArray
    tps: FloatArray
    fps: FloatArray

    @property
    def positives(self) -> float:
        return float(self.tps[-1]) if len(self.tps) else 0.0

    @property
    def negatives(self) -> float:
        return float(self.fps[-1]) if len(self.fps) else 0.0


def _as_arrays(labels: Any, scores: Any) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-d and of one length: {y.shape}, {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def curve(labels: Any, scores: Any) -> Curve:
    """True and false positives flagged at each distinct score (``score >= threshold``)."""
    y, s = _as_arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.array([], int)
    tps = np.cumsum(y, dtype=np.float64)[last_of_each]
    fps = (last_of_each + 1).astype(np.float64) - tps
    return Curve(thresholds=s[last_of_each], tps=tps, fps=fps)


def roc_points(c: Curve) -> tuple[FloatArray, FloatArray]:
    """(false positive rates, true positive rates), starting at (0, 0)."""
    fpr = np.r_[0.0, c.fps / c.negatives] if c.negatives else np.r_[0.0, c.fps * 0.0]
    tpr = np.r_[0.0, c.tps / c.positives] if c.positives else np.r_[0.0, c.tps * 0.0]
    return fpr, tpr


def pr_points(c: Curve) -> tuple[FloatArray, FloatArray]:
    """(recalls, precisions) at each distinct score, highest score first."""
    precision = c.tps / (c.tps + c.fps)
    recall = c.tps / c.positives if c.positives else c.tps * 0.0
    return recall, precision


def roc_auc(labels: Any, scores: Any) -> float | None:
    """Area under the ROC curve; None when the labels hold one class only."""
    c = curve(labels, scores)
    if not c.positives or not c.negatives:
        return None
    fpr, tpr = roc_points(c)
    return float(np.trapezoid(tpr, fpr))


def average_precision(labels: Any, scores: Any) -> float | None:
    """Average precision (area under the step PR curve); None without any positive."""
    c = curve(labels, scores)
    if not c.positives:
        return None
    recall, precision = pr_points(c)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class AtThreshold:
    """The confusion matrix and its rates when ``score >= threshold`` flags an event.

    A rate whose denominator is zero is None (nothing flagged: precision is not defined).
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    false_positive_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def at_threshold(labels: Any, scores: Any, threshold: float) -> AtThreshold:
    """Precision, recall, F1 and false-positive rate at ``threshold``."""
    y, s = _as_arrays(labels, scores)
    flagged = s >= threshold
    tp = int(np.count_nonzero(flagged & y))
    fp = int(np.count_nonzero(flagged & ~y))
    fn = int(np.count_nonzero(~flagged & y))
    tn = int(len(y) - tp - fp - fn)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return AtThreshold(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        false_positive_rate=_ratio(fp, fp + tn),
    )


def precision_top_k_per_day(
    times: Any, entities: Any, labels: Any, scores: Any, k: int
) -> dict[str, Any] | None:
    """Card (or sender) precision among the top ``k`` per day, averaged over days.

    What an investigation team with ``k`` cases a day sees: each UTC day, every entity gets
    its highest score of the day and is positive when any of its labelled events that day
    is; the ``k`` highest-scoring entities (ties broken by entity) are checked, and the share
    of positives among them is that day's precision. A day with fewer than ``k`` entities
    divides by the entities it has (the handbook definition divides by ``k`` regardless,
    which penalises small days). Entities caught on an earlier day are not removed. Returns
    None when nothing is labelled.
    """
    import polars as pl  # here, not at the top: the stream worker imports this module

    if k < 1:
        raise ValueError("k must be at least 1")
    frame = pl.DataFrame(
        {
            "day": (np.asarray(times, dtype=np.float64) // DAY_S).astype(np.int64),
            "entity": np.asarray(entities),
            "label": np.asarray(labels, dtype=bool),
            "score": np.asarray(scores, dtype=np.float64),
        }
    )
    if frame.height == 0:
        return None
    per_day = (
        frame.group_by("day", "entity")
        .agg(pl.col("score").max(), pl.col("label").any())
        .sort(["day", "score", "entity"], descending=[False, True, False])
        .group_by("day", maintain_order=True)
        .head(k)
        .group_by("day")
        .agg(pl.col("label").mean().alias("precision"), pl.len().alias("checked"))
        .sort("day")
    )
    return {
        "k": k,
        "value": float(per_day["precision"].mean()),  # type: ignore[arg-type]
        "days": per_day.height,
        "min": float(per_day["precision"].min()),  # type: ignore[arg-type]
        "max": float(per_day["precision"].max()),  # type: ignore[arg-type]
    }


def summarize(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """ROC AUC, average precision and the threshold metrics of one score column."""
    y, s = _as_arrays(labels, scores)
    return {
        "roc_auc": roc_auc(y, s),
        "average_precision": average_precision(y, s),
        "positive_rate": float(y.mean()) if len(y) else None,
        "at_threshold": at_threshold(y, s, threshold).to_dict(),
    }
