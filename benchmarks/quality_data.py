"""``python -m benchmarks.quality_data``: write the datasets docs/quality.md backtests.

* ``phishing OUT.csv``: River's bundled Phishing dataset (1,250 web pages, 9 numeric
  features, ``is_phishing``), in River's order. ``--baseline`` also prints the prequential
  ROC AUC / AP of River's own ``StandardScaler | LogisticRegression`` on it, a yardstick for
  what the backtest's online model gets from the same columns.
* ``transactions|emails OUT.parquet --count N --seed S``: the producers' simulated stream
  as a file (every event field, ``label``, ``true_probability``), written in row groups so
  that millions of rows never sit in memory. ``python -m stream backtest OUT.parquet
  --reference true_probability`` then scores the same events as ``--generate``.

It lives with the benchmarks because it needs the producers, which ``stream`` must not
import.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHUNK = 100_000
DEFAULT_START = "2025-01-01T00:00:00Z"


def export_phishing(out: Path, *, baseline: bool) -> None:
    import polars as pl
    from river import datasets

    rows = [{**x, "is_phishing": bool(y)} for x, y in datasets.Phishing()]
    pl.DataFrame(rows).write_csv(out)
    print(f"phishing: {len(rows):,} rows in {out}", file=sys.stderr)
    if baseline:
        _river_baseline(rows)


def _river_baseline(rows: list[dict[str, Any]]) -> None:
    """Prequential scores of River's default pipeline: score each row, then learn it."""
    from river import linear_model, preprocessing

    from models import evaluation

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    scores, labels = [], []
    for row in rows:
        x = {k: float(v) for k, v in row.items() if k != "is_phishing"}
        scores.append(model.predict_proba_one(x).get(True, 0.0))
        labels.append(row["is_phishing"])
        model.learn_one(x, row["is_phishing"])
    print(
        f"River StandardScaler|LogisticRegression, prequential, no delay: ROC AUC "
        f"{evaluation.roc_auc(labels, scores):.4f}, AP "
        f"{evaluation.average_precision(labels, scores):.4f}"
    )


def export_generated(kind: str, out: Path, count: int, seed: int, start: str) -> None:
    import pyarrow.parquet as pq

    from models.tabular import events_frame
    from stream.backtest import generated_events

    begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    stream = generated_events(
        "transaction" if kind == "transactions" else "email", count, seed, begin.timestamp()
    )
    writer: Any = None
    schema: Any = None
    written = 0
    started = time.monotonic()
    try:
        while True:
            chunk = [item for _, item in zip(range(CHUNK), stream, strict=False)]
            if not chunk:
                break
            frame = events_frame(
                [e for e, _, _ in chunk],
                [y for _, y, _ in chunk],
                true_probability=[p for _, _, p in chunk],
            )
            table = frame.to_arrow()
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(str(out), schema)
            writer.write_table(table.cast(schema))
            written += len(chunk)
            print(f"{kind}: {written:,} / {count:,}", file=sys.stderr)
    finally:
        if writer is not None:
            writer.close()
    took = time.monotonic() - started
    print(f"{kind}: {written:,} rows in {out} ({took:,.0f} s)", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality_data",
        description="Write the datasets of docs/quality.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    phishing = commands.add_parser("phishing", help="River's Phishing dataset as CSV")
    phishing.add_argument("out", type=Path)
    phishing.add_argument(
        "--baseline", action="store_true", help="print River's own prequential AUC/AP on it"
    )
    for kind in ("transactions", "emails"):
        gen = commands.add_parser(kind, help=f"the producers' simulated {kind} as Parquet")
        gen.add_argument("out", type=Path)
        gen.add_argument("--count", type=int, required=True)
        gen.add_argument("--seed", type=int, default=0)
        gen.add_argument("--start", default=DEFAULT_START, help="ISO time of the first event")
    args = parser.parse_args(argv)
    if args.command == "phishing":
        export_phishing(args.out, baseline=args.baseline)
    else:
        export_generated(args.command, args.out, args.count, args.seed, args.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
