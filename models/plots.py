"""PR and ROC curve plots, shared by the backtest's report and the retrain's report.

matplotlib is imported when a plot is drawn (Agg backend: no display needed), so nothing
that merely imports this module pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models import evaluation


def save_pr_roc(directory: Path, labels: Any, scores: Mapping[str, Any], title: str) -> list[Path]:
    """Write ``pr.png`` and ``roc.png`` into ``directory``: one curve per named score column
    (rows where a column is NaN are left out of its curve), with its average precision or
    ROC AUC in the legend; the base rate and the diagonal as references. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(labels, dtype=bool)
    written = []
    for name, xlabel, ylabel in (
        ("pr", "recall", "precision"),
        ("roc", "false positive rate", "true positive rate"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
        for label, column in scores.items():
            s = np.asarray(column, dtype=np.float64)
            known = ~np.isnan(s)
            yk, sk = y[known], s[known]
            if not (yk.any() and (~yk).any()):
                continue
            c = evaluation.curve(yk, sk)
            if name == "pr":
                recall, precision = _thin(*evaluation.pr_points(c))
                ap = evaluation.average_precision(yk, sk) or 0.0
                ax.step(recall, precision, where="post", label=f"{label} (AP {ap:.3f})")
            else:
                fpr, tpr = _thin(*evaluation.roc_points(c))
                auc = evaluation.roc_auc(yk, sk) or 0.0
                ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
        if name == "roc":
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
        else:
            rate = float(y.mean()) if len(y) else 0.0
            ax.axhline(
                rate, linestyle=":", color="grey", linewidth=1, label=f"base rate {rate:.4f}"
            )
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
        ax.set_title(f"{name.upper()}: {title}")
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


MAX_POINTS = 4_000
"""Points drawn per curve: a 500-pixel-wide plot shows no more, and a test window of millions
of distinct scores would otherwise take matplotlib seconds per curve."""


def _thin(x: Any, y: Any) -> tuple[Any, Any]:
    """At most about :data:`MAX_POINTS` of a curve's points, evenly spaced along it, the
    first and last kept (the figures in the legend come from every point, not these)."""
    n = len(x)
    if n <= MAX_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(np.intp))
    return np.asarray(x)[keep], np.asarray(y)[keep]
