"""Batch feature building: Polars (:mod:`batch.features`) against pandas
(:mod:`benchmarks.features_pandas`), on the same transactions, in the same run.

The data: ``--events`` transactions from the producers' simulator (seed ``--seed``, its
20,000 customers), spread over ``--days`` of simulated time, and a label for each of them
from the producers' label queue (mean delay 3 days, ``--label-missing-rate`` never
arrive), turned into terminal outcomes (:func:`batch.features.label_outcomes`). Both are
written to Parquet once.

Then, each in its own process (so that one's memory does not count for the other):

check
    both versions on the whole data; every feature of every row must agree (counts and
    flags exactly, the rest within ``--tolerance``), or the benchmark stops with the
    differences and exit code 1 before timing anything.
polars / pandas
    read the Parquet files into a frame (not timed), then build the features ``--repeat``
    times: :func:`batch.features.transaction_features_frame` ``.collect()`` (with
    ``--polars-engine``: Polars' default, ``auto``, is its streaming engine in 2.x) and
    :func:`benchmarks.features_pandas.transaction_features_pandas`. Reported: each run's
    wall time, the process's peak resident memory (``getrusage`` max RSS: native memory
    included, which tracemalloc does not see) and its resident memory once the input was
    loaded, the CPU seconds it used and those the rest of the machine used meanwhile
    (other work sharing the cores).

Usage: ``python -m benchmarks features [--events 1000000] [--days 30] [--repeat 3]
[--polars-engine auto|in-memory|streaming]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal, get_args

from benchmarks import stack

TRANSACTIONS = "transactions.parquet"
OUTCOMES = "outcomes.parquet"
LABEL_DELAY_S = 3 * 86_400.0
ENGINES = ("polars", "pandas")
PolarsEngine = Literal["auto", "in-memory", "streaming"]


# --- data -----------------------------------------------------------------------------


def generate(
    directory: Path, events: int, days: float, seed: int, label_missing_rate: float
) -> dict[str, Any]:
    """Write the transactions and their terminal outcomes to ``directory``; return counts."""
    import polars as pl

    from batch.features import label_outcomes
    from producers.labels import LabelQueue
    from producers.transactions import TransactionSimulator

    simulator = TransactionSimulator(seed, start=stack.START, events_per_s=events / (days * 86_400))
    queue = LabelQueue(
        random.Random(f"{seed}:labels"),
        mean_delay_s=LABEL_DELAY_S,
        missing_rate=label_missing_rate,
    )
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "event_id",
            "event_time",
            "card_id",
            "amount",
            "country",
            "device_id",
            "channel",
            "terminal_id",
        )
    }
    for _ in range(events):
        item = next(simulator)
        txn = item.event
        for name, values in columns.items():
            values.append(getattr(txn, name))
        queue.add(txn.event_id, "transaction", item.is_positive, txn.timestamp)
    labels = queue.due(float("inf"))  # in arrival order
    transactions = pl.DataFrame(columns, schema_overrides={"event_time": pl.Datetime("us", "UTC")})
    label_frame = pl.DataFrame(
        {
            "event_id": [label.event_id for label in labels],
            "label_time": [label.event_time for label in labels],
            "is_positive": [label.is_positive for label in labels],
        },
        schema_overrides={"label_time": pl.Datetime("us", "UTC")},
    )
    outcomes = label_outcomes(transactions, label_frame).collect()
    transactions.write_parquet(directory / TRANSACTIONS)
    outcomes.write_parquet(directory / OUTCOMES)
    return {
        "events": transactions.height,
        "cards": transactions["card_id"].n_unique(),
        "terminals": transactions["terminal_id"].n_unique(),
        "labels": outcomes.height,
        "positives": int(outcomes["is_positive"].sum()),
    }


# --- the child processes --------------------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _polars_run(directory: Path, engine: PolarsEngine) -> Any:
    import polars as pl

    from batch.features import transaction_features_frame

    transactions = pl.read_parquet(directory / TRANSACTIONS)
    outcomes = pl.read_parquet(directory / OUTCOMES)
    return lambda: transaction_features_frame(transactions, outcomes).collect(engine=engine)


def _pandas_run(directory: Path) -> Any:
    import pandas as pd

    from benchmarks.features_pandas import transaction_features_pandas

    transactions = pd.read_parquet(directory / TRANSACTIONS)
    outcomes = pd.read_parquet(directory / OUTCOMES)
    return lambda: transaction_features_pandas(transactions, outcomes)


def child(mode: str, directory: Path, repeat: int, tolerance: float, engine: PolarsEngine) -> int:
    """One measured process: ``polars`` or ``pandas`` (timed ``repeat`` times) or ``check``.
    Prints one JSON line for the parent."""
    if mode == "check":
        from benchmarks.features_pandas import differences, largest_difference

        expected = _polars_run(directory, engine)()
        got = _pandas_run(directory)()
        problems = differences(expected, got, tolerance=tolerance)
        worst, size = largest_difference(expected, got)
        print(json.dumps({"problems": problems, "worst": worst, "worst_size": size}))
        return 1 if problems else 0
    run = _polars_run(directory, engine) if mode == "polars" else _pandas_run(directory)
    loaded_mb = stack.rss_mb()
    times, cpus, others = [], [], []
    for _ in range(repeat):
        busy, cpu = stack.machine_busy_seconds(), _cpu_s()
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
        cpus.append(_cpu_s() - cpu)
        others.append(max(0.0, stack.machine_busy_seconds() - busy - cpus[-1]))
        del result
    extra: dict[str, Any] = {}
    if mode == "polars":
        import polars as pl

        extra["threads"] = pl.thread_pool_size()
        extra["engine"] = engine
    print(
        json.dumps(
            {
                "times": times,
                "others_cpu_s": others,
                "cpu_s": cpus,
                "loaded_mb": loaded_mb,
                "peak_mb": _peak_mb(),
                **extra,
            }
        )
    )
    return 0


def _spawn(
    mode: str, directory: Path, repeat: int, tolerance: float, engine: str
) -> tuple[int, dict[str, Any]]:
    command = [
        sys.executable, "-m", "benchmarks.features", "--child", mode, "--data", str(directory),
        "--repeat", str(repeat), "--tolerance", repr(tolerance), "--polars-engine", engine,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=stack.REPO, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    try:
        return done.returncode, json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"the {mode} process failed (exit {done.returncode})") from None


# --- main -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks features",
        description="Batch transaction features: Polars (batch/features.py) against pandas "
        "(benchmarks/features_pandas.py) on the same synthetic transactions: outputs checked "
        "equal, then wall time and peak memory of each, in its own process.",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="transactions (1,000,000)")
    parser.add_argument("--days", type=float, default=30.0, help="simulated days they span (30)")
    parser.add_argument("--seed", type=int, default=stack.SEED, help="simulator seed (42)")
    parser.add_argument(
        "--label-missing-rate", type=float, default=0.0, help="labels that never arrive (0)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (3)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-9, help="relative/absolute, non-count features"
    )
    parser.add_argument(
        "--polars-engine",
        choices=get_args(PolarsEngine),
        default="auto",
        help="the engine Polars collects with (auto: Polars' default, the streaming one in 2.x)",
    )
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR", help="keep the data here (default: temp)"
    )
    parser.add_argument("--child", choices=("check", *ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.days <= 0 or args.repeat < 1:
        parser.error("--events, --days and --repeat must be positive")
    if not 0 <= args.label_missing_rate <= 1:
        parser.error("--label-missing-rate must be in [0, 1]")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.child, args.data, args.repeat, args.tolerance, args.polars_engine)
    with contextlib.ExitStack() as cleanup:
        directory = stack.workdir(cleanup, args.workdir)
        started = time.perf_counter()
        counts = generate(directory, args.events, args.days, args.seed, args.label_missing_rate)
        print(
            f"{counts['events']:,} transactions of {counts['cards']:,} cards at "
            f"{counts['terminals']:,} terminals over {args.days:g} simulated days, "
            f"{counts['labels']:,} labels ({counts['positives']:,} positive); generated in "
            f"{time.perf_counter() - started:.0f} s. {stack.cpu_count()} cores.",
            flush=True,
        )
        code, check = _spawn("check", directory, 1, args.tolerance, args.polars_engine)
        if code != 0 or check["problems"]:
            print("pandas and Polars features DIFFER; nothing timed:", file=sys.stderr)
            for problem in check["problems"]:
                print(f"  {problem}", file=sys.stderr)
            return 1
        print(
            f"check: pandas == Polars on every feature of all {counts['events']:,} rows "
            f"(counts and flags exact; largest relative difference {check['worst_size']:.1e}, "
            f"{check['worst'] or '-'}; tolerance {args.tolerance:g})",
            flush=True,
        )
        results: dict[str, dict[str, Any]] = {}
        for engine in ENGINES:
            code, results[engine] = _spawn(
                engine, directory, args.repeat, args.tolerance, args.polars_engine
            )
            if code != 0:
                raise RuntimeError(f"the {engine} process failed (exit {code})")
            r = results[engine]
            runs = " ".join(f"{t:.2f}" for t in r["times"])
            cpu = " ".join(f"{c:.1f}" for c in r["cpu_s"])
            others = " ".join(f"{c:.1f}" for c in r["others_cpu_s"])
            threads = f" ({r['threads']} threads, engine {r['engine']})" if "threads" in r else ""
            print(
                f"{engine}: runs {runs} s (best {min(r['times']):.2f} s); peak RSS "
                f"{r['peak_mb']:,.0f} MB, {r['loaded_mb']:,.0f} MB once the input was loaded\n"
                f"  CPU s per run{threads}: {cpu}; other processes' CPU s meanwhile: {others}",
                flush=True,
            )
    polars_best = min(results["polars"]["times"])
    pandas_best = min(results["pandas"]["times"])
    polars_cpu = min(results["polars"]["cpu_s"])
    pandas_cpu = min(results["pandas"]["cpu_s"])
    print(
        f"speed-up, pandas / Polars: {pandas_best / polars_best:.2f}x in wall time (best runs), "
        f"{pandas_cpu / polars_cpu:.2f}x in CPU time (target: Polars at least 5x faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
