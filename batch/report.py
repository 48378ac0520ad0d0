"""The report of one retrain: what was trained, how it compares, and what was decided.

Written for every run, promoted or not, to ``<runs_dir>/<kind>/<version>/``: ``report.md``
with PNG plots (PR and ROC curves of every scorer, the confusion matrix at the review
threshold, feature importances, score distributions by class), ``metrics.json`` with every
figure and ``card.json`` with the model card, so a run can be audited long after it ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from models import plots, weights

if TYPE_CHECKING:
    from batch.retrain import Outcome, ScoreColumns

LABELS = {
    "new_hybrid": "new hybrid",
    "new_batch": "new batch",
    "online_logged": "online (as served)",
    "production_hybrid": "production hybrid",
    "production_batch": "production batch",
}


def write_report(
    outcome: Outcome,
    model: weights.BatchModel,
    columns: ScoreColumns,
    importances: dict[str, float],
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = outcome.run_dir
    out.mkdir(parents=True, exist_ok=True)
    y = columns.labels
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    written += plots.save_pr_roc(
        out,
        y,
        {LABELS[name]: s for name, s in columns.scores.items()},
        f"{outcome.kind}s, test window",
    )

    at = outcome.metrics["scores"]["new_hybrid"]["at_threshold"]
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    matrix = np.array([[at["tn"], at["fp"]], [at["fn"], at["tp"]]])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:,}", ha="center", va="center", color="black")
    ax.set_xticks([0, 1], ["allowed", "alerted"])
    ax.set_yticks([0, 1], ["legit", "positive"])
    ax.set_title(f"new hybrid at review threshold {at['threshold']:.3f}")
    save(fig, "confusion.png")

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance")
    ax.set_title("what the new batch model leans on")
    ax.tick_params(axis="y", labelsize=7)
    save(fig, "importances.png")

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    hybrid = columns.scores["new_hybrid"]
    bins = np.linspace(0, 1, 41).tolist()
    ax.hist(hybrid[~y], bins=bins, alpha=0.6, label="legit", log=True)
    ax.hist(hybrid[y], bins=bins, alpha=0.6, label="positive", log=True)
    for t, style in ((at["threshold"], "--"), (model.card.block_threshold, ":")):
        ax.axvline(t, color="black", linestyle=style, linewidth=1)
    ax.set(xlabel="new hybrid score", ylabel="test events (log)")
    ax.legend()
    save(fig, "scores.png")

    (out / "metrics.json").write_text(
        json.dumps(outcome.metrics | {"importances": importances}, indent=2, default=str) + "\n"
    )
    (out / "card.json").write_bytes(msgspec.json.format(msgspec.json.encode(model.card)) + b"\n")
    report = out / "report.md"
    report.write_text(_markdown(outcome, model, importances), encoding="utf-8")
    return [report, out / "metrics.json", out / "card.json", *written]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(outcome: Outcome, model: weights.BatchModel, importances: dict[str, float]) -> str:
    m, card = outcome.metrics, model.card
    decision = "PROMOTED to production" if outcome.promoted else "NOT promoted"
    lines = [
        f"# Retrain {outcome.version} ({outcome.kind}s): {decision}",
        "",
        f"**Why:** {outcome.reason}.",
        "",
        f"- trained until (cut-off): {card.trained_until:%Y-%m-%dT%H:%M:%SZ}",
        f"- production before this run: {m['production_version'] or 'none (online score only)'}",
        f"- compared on {m['comparison_events']:,} test events "
        f"({m['comparison_positives']:,} positive) of {m['test_events']:,}",
        "",
        "## Data (split by event time)",
        "",
        "| window | events | positives | from | until |",
        "|---|---:|---:|---|---|",
    ]
    for name, part in m["split"].items():
        lines.append(
            f"| {name} | {part['events']:,} | {part['positives']:,} | {part['from']} | "
            f"{part['until']} |"
        )
    lines += [
        "",
        "## Test window, side by side",
        "",
        "| scorer | ROC AUC | avg precision | threshold | precision | recall | F1 | FPR | "
        "TP | FP | FN | TN | top-k card precision/day |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in m["scores"].items():
        at = s["at_threshold"]
        topk = s.get("precision_top_k_per_day")
        lines.append(
            f"| {LABELS[name]} | {_fmt(s['roc_auc'])} | {_fmt(s['average_precision'])} | "
            f"{_fmt(at['threshold'], 3)} | {_fmt(at['precision'])} | {_fmt(at['recall'])} | "
            f"{_fmt(at['f1'])} | {_fmt(at['false_positive_rate'])} | {at['tp']:,} | "
            f"{at['fp']:,} | {at['fn']:,} | {at['tn']:,} | "
            f"{_fmt(topk['value']) + ' (k=' + str(topk['k']) + ')' if topk else 'n/a'} |"
        )
    costs = m["costs"]
    blend = card.hybrid
    lines += [
        "",
        *[f"> {note}" for note in m["notes"]],
        "",
        "## How the new model decides",
        "",
        f"- thresholds on the hybrid score, from costs (missed {costs['missed']}, review "
        f"{costs['review']}, false block {costs['false_block']}) on the validation window: "
        f"review at {card.review_threshold:.4f}, block at {card.block_threshold:.4f} "
        f"(validation cost {m['valid_cost']:,.0f})",
        f"- hybrid = sigmoid({blend.online_weight:.3f} x logit(online) + "
        f"{blend.batch_weight:.3f} x logit(batch) + {blend.bias:.3f}), fitted on validation",
        f"- Platt calibration a={model.calibration.a:.4f}, b={model.calibration.b:.4f}",
        f"- batch-only profiles shipped with the model: {m['lookup_rows']['entity']:,} "
        f"entities, {m['lookup_rows']['scope']:,} scopes",
        f"- chosen hyperparameters: {m['params']}",
        "",
        "| candidate | validation AP | seconds |",
        "|---|---:|---:|",
    ]
    for trial in m["trials"]:
        params = {k: v for k, v in trial.items() if k not in ("valid_average_precision", "seconds")}
        lines.append(
            f"| {params} | {trial['valid_average_precision']:.4f} | {trial['seconds']:.1f} |"
        )
    lines += [
        "",
        "## Plots",
        "",
        "![PR curves](pr.png) ![ROC curves](roc.png)",
        "",
        "![confusion matrix](confusion.png) ![score distributions](scores.png)",
        "",
        "![feature importances](importances.png)",
        "",
        "## Top features",
        "",
        *[f"- {name}: {value:.4g}" for name, value in list(importances.items())[:10]],
        "",
        "## Stage timings (s)",
        "",
        ", ".join(f"{k} {v:.1f}" for k, v in outcome.stages.items()),
        "",
    ]
    return "\n".join(lines)
