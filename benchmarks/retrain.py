"""Time and peak memory of one transaction retrain on a large lake.

Building a lake of N scored events through the worker's code path takes about a minute per
million here, so the lake is made in two steps: ``--base`` events are generated and scored
for real (``batch.synthetic``), then copied ``N / base`` times, each copy shifted later in
time by the base's span and given its own event ids (same cards and terminals, so their
histories and profiles grow as they would). A model trained on the base lake is published
first (untimed), so the measured run is a second night: it also scores the model in
production on the whole test window (``--no-production`` measures a first night). The
retrain then runs as users run it, in its own process (``python -m batch retrain --dry-run``),
and this script reports its wall time and peak resident memory (``getrusage`` of the
children; the retrain also logs its peak after every stage).

    python -m benchmarks retrain --events 10000000 --base 500000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from batch.lake import part_name, read_lake
from batch.synthetic import fill_lake


def replicate(base: Path, out: Path, copies: int) -> int:
    """Write ``copies`` time-shifted copies of the lake at ``base`` into ``out``; each copy
    is its own Kafka partition number in the file names, so no offset ranges overlap."""
    scored = read_lake(base, "scored").collect()
    labels = read_lake(base, "labels").collect()
    first, last = scored["event_time"].min(), scored["event_time"].max()
    assert isinstance(first, datetime) and isinstance(last, datetime)
    span = last - first + timedelta(seconds=1)
    total = 0
    for i in range(copies):
        shift = span * i
        for table, frame, time_col in (
            ("scored", scored, "event_time"),
            ("labels", labels, "label_time"),
        ):
            moved = frame.with_columns(
                (pl.col("event_id") + f"-r{i}").alias("event_id"),
                pl.lit(i, dtype=pl.Int32).alias("partition"),
                *(
                    (pl.col(c) + shift).alias(c)
                    for c in (("event_time", "scored_at") if table == "scored" else ("label_time",))
                ),
            ).with_columns(pl.col(time_col).dt.date().alias("day"))
            for (day,), part in moved.group_by("day", maintain_order=True):
                part = part.sort("offset").drop("day", "date")
                directory = out / table / f"date={day}"
                directory.mkdir(parents=True, exist_ok=True)
                first, last = int(part["offset"].min()), int(part["offset"].max())  # type: ignore[arg-type]
                part.write_parquet(directory / part_name(i, first, last))
            if table == "scored":
                total += frame.height
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="transactions in the lake")
    parser.add_argument("--base", type=int, default=500_000, help="generated and scored for real")
    parser.add_argument("--budget-s", type=float, default=60.0, help="tuning budget")
    parser.add_argument("--workdir", help="keep the lakes here (default: a temporary directory)")
    parser.add_argument("--redis-url", help="a running Redis (default: start one)")
    parser.add_argument(
        "--no-production",
        action="store_true",
        help="no model in production (a first night): skips scoring production on the test window",
    )
    args = parser.parse_args(argv)
    if args.events < args.base or args.base < 1000:
        parser.error("--events must be at least --base, and --base at least 1000")

    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        work = Path(args.workdir or tmp)
        base, lake = work / "base-lake", work / f"lake-{args.events}"
        if not base.exists():
            started = time.monotonic()
            print(f"generating and scoring {args.base:,} transactions ...", flush=True)
            fill_lake(base, "transaction", args.base, seed=7, label_delay_s=3 * 86_400.0)
            print(f"  {time.monotonic() - started:.0f} s", flush=True)
        if not lake.exists():
            copies = -(-args.events // args.base)
            started = time.monotonic()
            n = replicate(base, lake, copies)
            print(f"lake of {n:,} events ({copies} copies) in {time.monotonic() - started:.0f} s")
        from benchmarks import stack

        with stack.services(work, bootstrap="unused:0", redis_url=args.redis_url) as svc:
            env = dict(os.environ)
            env.update(
                FRAUD_REDIS_URL=svc.redis_url,
                FRAUD_NAMESPACE=f"bench-retrain-{os.getpid()}",
                FRAUD_LAKE_DIR=str(lake),
                FRAUD_RUNS_DIR=str(work / "runs"),
                FRAUD_RETRAIN_BUDGET_S=str(args.budget_s),
                FRAUD_MODEL_SIGNING_KEY="bench-retrain-key",
            )
            if not args.no_production:
                # A nightly run has a model in production to judge against (scored on the
                # whole test window): publish one first, from the base lake, untimed.
                print("publishing a production model trained on the base lake ...", flush=True)
                first = [
                    sys.executable, "-m", "batch", "retrain", "--kind", "transaction",
                    "--force", "--no-announce", "--cutoff", "2100-01-01",
                    "--lake-dir", str(base),
                ]  # fmt: skip
                subprocess.run(first, env=env, check=True, stdout=subprocess.DEVNULL)
            command = [
                sys.executable,
                "-m",
                "batch",
                "retrain",
                "--kind",
                "transaction",
                "--dry-run",
                "--no-announce",
                "--cutoff",
                "2100-01-01",
            ]
            print("$ " + " ".join(command[1:]), flush=True)
            started = time.monotonic()
            code = subprocess.call(command, env=env)
            wall = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"retrain of {args.events:,} events: exit {code}, {wall:.0f} s, peak RSS {peak_mb:,.0f} MB"
    )
    return code
