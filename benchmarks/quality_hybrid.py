"""Online, batch and hybrid average precision on a generated stream with drift, next to the
best reachable (the generator's true probabilities), over the same test window.

    python -m benchmarks.quality_hybrid --kind transaction --count 150000

The lake is generated and scored through the worker's code path (``batch.synthetic``) with
the drift scenario starting at ``--drift-share`` of the way through; the retrain runs as
``python -m batch retrain --dry-run`` does (in process), with every label arrived by the
cut-off; the test window is its last 20 % by event time, after the drift.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from batch.dataset import load_history
from batch.retrain import Options, run
from batch.synthetic import fill_lake
from models import evaluation
from models.names import EventKind
from models.settings import Settings

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
EVENTS_PER_S = 2.0  # the simulators' default pace in simulated time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality_hybrid", description=__doc__
    )
    parser.add_argument("--kind", choices=["transaction", "email"], default="transaction")
    parser.add_argument("--count", type=int, default=150_000)
    parser.add_argument("--positive-rate", type=float, default=None)
    parser.add_argument("--drift-share", type=float, default=0.5)
    parser.add_argument("--label-delay-s", type=float, default=3600.0)
    parser.add_argument("--budget-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    kind: EventKind = args.kind
    drift_at = START + args.drift_share * args.count / EVENTS_PER_S
    truth: dict[str, float] = {}
    from benchmarks import stack

    with (
        tempfile.TemporaryDirectory(prefix="quality-") as tmp,
        stack.services(Path(tmp), bootstrap="unused:0") as svc,
    ):
        lake = Path(tmp) / "lake"
        fill_lake(
            lake,
            kind,
            args.count,
            seed=args.seed,
            start=START,
            label_delay_s=args.label_delay_s,
            positive_rate=args.positive_rate,
            drift_at=drift_at,
            truth=truth,
        )
        settings = Settings(
            redis_url=svc.redis_url,
            namespace="quality",
            lake_dir=str(lake),
            runs_dir=str(Path(tmp) / "runs"),
            retrain_budget_s=args.budget_s,
        )
        cutoff = datetime(2100, 1, 1, tzinfo=UTC)
        outcome = run(
            settings,
            Options(kind=kind, cutoff=cutoff, dry_run=True, profile_period_s=3600.0),
            log=print,
        )
        test_from = outcome.metrics["split"]["test"]["from"]
        examples = load_history(lake, kind, cutoff).labelled()
        test = examples.filter(
            pl.col("event_time")
            >= pl.lit(datetime.fromisoformat(test_from)).dt.cast_time_unit("us")
        )
        y = test["is_positive"].to_numpy()
        best = np.array([truth[e] for e in test["event_id"]])
        scores = outcome.metrics["scores"]
    print(
        f"\n{kind}s: {args.count:,} generated, drift from "
        f"{datetime.fromtimestamp(drift_at, UTC):%Y-%m-%dT%H:%M}Z, labels after "
        f"{args.label_delay_s:.0f} s; test window {test.height:,} events "
        f"({int(y.sum())} positive) from {test_from}"
    )
    print("| score | average precision | ROC AUC |")
    print("|---|---:|---:|")
    for name, label in (
        ("online_logged", "online (as served, prequential)"),
        ("new_batch", "batch"),
        ("new_hybrid", "hybrid"),
    ):
        s = scores[name]
        print(f"| {label} | {s['average_precision']:.4f} | {s['roc_auc']:.4f} |")
    print(
        f"| best reachable (true probabilities) | {evaluation.average_precision(y, best):.4f} | "
        f"{evaluation.roc_auc(y, best):.4f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
