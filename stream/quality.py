"""Rolling detection quality of the scores a worker served, judged by the labels it learns.

Prequential: each labelled event is judged by the scores it was *given* when it was scored
(kept with its served features in Redis, see ``StreamWorker._remember_served``), never by a
later model, so the figures are what production delivered. Over the last :data:`WINDOW`
labelled events of a kind, for the online score and the hybrid (final) score:

* precision and recall at the review threshold in use: the hybrid score flagged an event
  when it raised an alert, i.e. reached the review threshold in force when it was scored
  (the batch model's, or the settings' without one); the online score flagged it when it
  reached the settings' review threshold (the one that decides when the online score
  decides alone);
* average precision, threshold-free: ``models.evaluation.average_precision``, the backtest's
  and the retrain's figure.

Without a batch model the hybrid score is the online score, and so are its figures.

The figures are recomputed from the window once per learned batch of labels, not per label:
two sorts of 5,000 scores cost well under a millisecond, and no incremental structure has to
be kept right. A figure that is not defined (nothing flagged, no positive in the window) is
removed from ``/metrics`` rather than exported as 0 or NaN: "No data" is its honest state,
and a NaN would poison the alert rule's ``avg_over_time``.

Only the worker that learns labels has these figures (the labels topic has one partition);
a worker that stops reading it drops them (:meth:`RollingQuality.clear`, :func:`forget`), so
a stale figure does not sit beside the new learner's on the dashboards' ``max by``.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import evaluation
from models.names import EventKind
from stream import metrics

WINDOW = 5000
"""Labelled events per kind the figures are computed over."""

SCORES = ("online", "hybrid")


@dataclass(frozen=True)
class Figures:
    """Quality of one score over the window; None where not defined."""

    precision: float | None
    recall: float | None
    average_precision: float | None


class RollingQuality:
    """The last :data:`WINDOW` labelled events of one kind: their scores and outcomes."""

    def __init__(self, window: int = WINDOW) -> None:
        # (online score, hybrid score, online flagged, hybrid flagged, positive)
        self._rows: deque[tuple[float, float, bool, bool, bool]] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        online: float,
        hybrid: float,
        online_flagged: bool,
        hybrid_flagged: bool,
        positive: bool,
    ) -> None:
        self._rows.append((online, hybrid, online_flagged, hybrid_flagged, positive))

    def clear(self) -> None:
        self._rows.clear()

    def figures(self) -> dict[str, Figures]:
        """Precision, recall and average precision of each score over the window."""
        if not self._rows:
            empty = Figures(None, None, None)
            return dict.fromkeys(SCORES, empty)
        rows = np.array(self._rows, dtype=np.float64)
        positive = rows[:, 4] > 0
        return {
            name: _figures(positive, rows[:, column], rows[:, column + 2] > 0)
            for column, name in enumerate(SCORES)
        }


def _figures(positive: Any, scores: Any, flagged: Any) -> Figures:
    tp = int(np.count_nonzero(flagged & positive))
    n_flagged = int(np.count_nonzero(flagged))
    n_positive = int(np.count_nonzero(positive))
    return Figures(
        precision=tp / n_flagged if n_flagged else None,
        recall=tp / n_positive if n_positive else None,
        average_precision=evaluation.average_precision(positive, scores),
    )


_GAUGES = (
    ("precision", metrics.PRECISION),
    ("recall", metrics.RECALL),
    ("average_precision", metrics.AVERAGE_PRECISION),
)


def publish(kind: EventKind, quality: RollingQuality) -> None:
    """Set the quality gauges of ``kind`` from its window (remove the undefined ones)."""
    for score, figures in quality.figures().items():
        for field, gauge in _GAUGES:
            value = getattr(figures, field)
            if value is None:
                _remove(gauge, kind, score)
            else:
                gauge.labels(kind, score).set(value)


def forget(kind: EventKind) -> None:
    """Remove the quality gauges of ``kind`` (this worker no longer learns labels)."""
    for score in SCORES:
        for _, gauge in _GAUGES:
            _remove(gauge, kind, score)


def _remove(gauge: Any, *labels: str) -> None:
    # Older prometheus_client versions raise KeyError for a series that does not exist.
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
