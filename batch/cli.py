"""``python -m batch {sink,compact,retrain,rollback,schedule,synthesize}``: the nightly side.

- ``sink`` / ``compact``: the Parquet lake of scored events and labels.
- ``retrain``: train, evaluate and (if better) publish a batch model (``batch.retrain``).
- ``rollback``: put the previous batch model back into production.
- ``schedule``: retrain every night at ``FRAUD_RETRAIN_AT`` (the compose scheduler service).
- ``synthesize``: fill a lake with generated, scored history (try the retrain right away).

The entry point builds the settings once (environment, then flags) and hands them down.
Exit codes: 0 done, 1 a service unreachable, a bad ``FRAUD_`` variable or a retrain that
cannot run (no lake, too few labels), 2 bad arguments, 3 retrained but not promoted (the
gate kept production), 130 interrupted. No error prints a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from redis.exceptions import RedisError

from batch.dataset import RetrainError
from batch.lake import SinkError, compact, run_sink
from models import arguments
from models.batch_registry import RegistryError
from models.events import utc_from_timestamp
from models.names import EVENT_KINDS, EventKind
from models.settings import Settings, SettingsError
from models.topology import KafkaUnavailable

_stop_requested = False
_positive_int = arguments.whole(1)
_positive = arguments.number(0.0, inclusive=False)
_share = arguments.number(0.0, inclusive=False, high=1.0, below=True)
NOT_PROMOTED = 3


def build_parser() -> argparse.ArgumentParser:
    env_help = "environment (FRAUD_ prefix; flags win):\n" + Settings.describe()
    parser = argparse.ArgumentParser(
        prog="python -m batch",
        description="The nightly side: the Parquet lake of scored events and labels, the "
        "batch retrain, rollback and its schedule.",
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sink = arguments.subcommand(
        commands,
        "sink",
        epilog=env_help,
        help="consume the scored and labels topics into the lake",
        description="Write every scored event and label to Parquet under "
        "<lake>/{scored,labels}/date=YYYY-MM-DD/. Resumes where the lake ends: a restart "
        "writes no duplicates.",
    )
    sink.add_argument(
        "--once",
        action="store_true",
        help="stop when caught up (nothing new for ~2 s), after a final flush (cron, tests)",
    )
    sink.add_argument("--lake-dir", help="lake directory (default FRAUD_LAKE_DIR or 'lake')")
    sink.add_argument(
        "--bootstrap-servers", help="Kafka host:port[,...] (default FRAUD_KAFKA_BOOTSTRAP)"
    )
    sink.add_argument(
        "--flush-every",
        type=_positive_int,
        default=10_000,
        help="write once this many rows are pending (default %(default)s)",
    )
    sink.add_argument(
        "--flush-seconds",
        type=_positive,
        default=60.0,
        help="write pending rows at least this often, seconds (default %(default)s)",
    )
    sink.add_argument(
        "--connect-timeout",
        type=_positive,
        default=10.0,
        help="seconds to wait for Kafka before giving up (default %(default)s)",
    )

    comp = arguments.subcommand(
        commands,
        "compact",
        epilog=env_help,
        help="merge the small files of each date partition",
        description="Merge the files of each date and Kafka partition into one file; safe "
        "to run beside the sink, and to interrupt.",
    )
    comp.add_argument("--lake-dir", help="lake directory (default FRAUD_LAKE_DIR or 'lake')")
    _add_retrain(commands, env_help)
    _add_rollback(commands, env_help)
    _add_schedule(commands, env_help)
    _add_synthesize(commands, env_help)
    return parser


def _kinds(text: str) -> tuple[EventKind, ...]:
    if text == "both":
        return EVENT_KINDS
    if text in EVENT_KINDS:
        return (text,)
    raise argparse.ArgumentTypeError(f"must be transaction, email or both, got {text!r}")


def _add_retrain(commands: Any, env_help: str) -> None:
    p = arguments.subcommand(
        commands,
        "retrain",
        epilog=env_help,
        help="train, evaluate and (if better) publish a batch model",
        description="Read the lake (labels known at the cut-off only), split by time, fit "
        "(HistGradientBoosting for transactions, TF-IDF + logistic regression for emails), "
        "calibrate, blend with the online score, choose thresholds from costs, compare with "
        "production on the test window, and publish the signed model only if it beats "
        "production by FRAUD_PROMOTION_MARGIN. A report is written for every run under "
        "<runs-dir>/<kind>/<version>/. Exit 3 when the gate kept production.",
    )
    p.add_argument("--kind", type=_kinds, default=EVENT_KINDS, help="transaction, email or both")
    p.add_argument(
        "--cutoff",
        type=arguments.instant,
        help="training cut-off, ISO time (default: now); labels that arrived later are unseen",
    )
    p.add_argument("--since", type=arguments.instant, help="ignore events before this time")
    p.add_argument("--force", action="store_true", help="publish even if the gate says no")
    p.add_argument("--dry-run", action="store_true", help="train and report; publish nothing")
    p.add_argument("--lake-dir", help="lake directory (default FRAUD_LAKE_DIR)")
    p.add_argument("--runs-dir", help="reports directory (default FRAUD_RUNS_DIR)")
    p.add_argument("--budget-s", type=_positive, help="tuning time budget (FRAUD_RETRAIN_BUDGET_S)")
    p.add_argument("--margin", type=arguments.number(0.0), help="promotion margin in AP")
    p.add_argument(
        "--min-positives",
        type=_positive_int,
        default=5,
        help="fewest positives (and negatives) each time window must hold (default %(default)s)",
    )
    p.add_argument("--valid-share", type=_share, default=0.2, help="default %(default)s")
    p.add_argument("--test-share", type=_share, default=0.2, help="default %(default)s")
    p.add_argument(
        "--profile-period-s",
        type=_positive,
        default=86_400.0,
        help="how often the batch-only profiles are refreshed: the retrain cadence, seconds "
        "(default %(default)s; must divide 30 days)",
    )
    p.add_argument(
        "--max-train-rows",
        type=_positive_int,
        default=500_000,
        help="above this, negatives of the training window are sampled (default %(default)s)",
    )
    p.add_argument("--seed", type=arguments.whole(0), default=0, help="default %(default)s")
    p.add_argument("--no-announce", action="store_true", help="do not publish to Kafka")


def _add_rollback(commands: Any, env_help: str) -> None:
    p = arguments.subcommand(
        commands,
        "rollback",
        epilog=env_help,
        help="put the previous batch model back into production",
        description="Swap the current pointer back to the version that was current before "
        "(atomically), and announce it on the model-updates topic.",
    )
    p.add_argument("--kind", type=_kinds, required=True, help="transaction, email or both")
    p.add_argument("--no-announce", action="store_true", help="do not publish to Kafka")


def _add_schedule(commands: Any, env_help: str) -> None:
    p = arguments.subcommand(
        commands,
        "schedule",
        epilog=env_help,
        help="retrain every night at FRAUD_RETRAIN_AT (UTC)",
        description="Sleep until the next FRAUD_RETRAIN_AT (UTC), retrain both kinds, repeat. "
        "A failed run is logged and the next night runs again. Stops on SIGTERM.",
    )
    p.add_argument("--at", type=arguments.time_of_day, help="HH:MM UTC (default FRAUD_RETRAIN_AT)")
    p.add_argument("--now", action="store_true", help="also run once right away")


def _add_synthesize(commands: Any, env_help: str) -> None:
    p = arguments.subcommand(
        commands,
        "synthesize",
        epilog=env_help,
        help="fill a lake with generated, scored and labelled history",
        description="Generate events with the producers' simulators, score them with the "
        "worker's code (as the backtest does) and write them and their labels to the lake.",
    )
    p.add_argument("--kind", type=_kinds, default=EVENT_KINDS, help="transaction, email or both")
    p.add_argument("--count", type=_positive_int, required=True, help="events per kind")
    p.add_argument("--seed", type=arguments.whole(0), default=0)
    p.add_argument("--start", type=arguments.instant, help="first event time (ISO)")
    p.add_argument("--label-delay-s", type=arguments.number(0.0), default=3 * 86_400.0)
    p.add_argument("--positive-rate", type=arguments.number(0.0, high=1.0))
    p.add_argument("--lake-dir", help="lake directory (default FRAUD_LAKE_DIR)")


def _request_stop(signum: int, frame: FrameType | None) -> None:
    global _stop_requested
    _stop_requested = True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        overrides: dict[str, Any] = {}
        if getattr(args, "lake_dir", None):
            overrides["lake_dir"] = args.lake_dir
        if getattr(args, "bootstrap_servers", None):
            overrides["kafka_bootstrap"] = args.bootstrap_servers
        for flag, name in (
            ("runs_dir", "runs_dir"),
            ("budget_s", "retrain_budget_s"),
            ("margin", "promotion_margin"),
            ("at", "retrain_at"),
        ):
            if getattr(args, flag, None) is not None:
                overrides[name] = getattr(args, flag)
        settings = Settings.from_env(**overrides)
        if args.command == "retrain":
            return _retrain(settings, args)
        if args.command == "rollback":
            return _rollback(settings, args)
        if args.command == "schedule":
            signal.signal(signal.SIGTERM, _request_stop)
            return _schedule(settings, args)
        if args.command == "synthesize":
            return _synthesize(settings, args)
        if args.command == "compact":
            report = compact(settings.lake_dir, progress=sys.stderr)
            print(
                f"compact: merged {report.merged_files} files into {report.written_files}, "
                f"deleted {report.deleted_files}",
                file=sys.stderr,
            )
            return 0
        signal.signal(signal.SIGTERM, _request_stop)
        signal.signal(signal.SIGINT, _request_stop)
        run_sink(
            settings,
            settings.lake_dir,
            once=args.once,
            flush_every=args.flush_every,
            flush_seconds=args.flush_seconds,
            connect_timeout_s=args.connect_timeout,
            progress=sys.stderr,
            should_stop=lambda: _stop_requested,
        )
        return 130 if _stop_requested and not args.once else 0
    except (SettingsError, SinkError, RetrainError, KafkaUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(f"error: Redis at the FRAUD_REDIS_URL failed: {exc}", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _retrain(settings: Settings, args: argparse.Namespace) -> int:
    from batch.retrain import Options, run

    cutoff = utc_from_timestamp(args.cutoff if args.cutoff is not None else time.time())
    since = utc_from_timestamp(args.since) if args.since is not None else None
    announce = None if args.no_announce else _announcer(settings)
    kept = False
    for kind in args.kind:
        outcome = run(
            settings,
            Options(
                kind=kind,
                cutoff=cutoff,
                since=since,
                force=args.force,
                dry_run=args.dry_run,
                valid_share=args.valid_share,
                test_share=args.test_share,
                min_positives=args.min_positives,
                profile_period_s=args.profile_period_s,
                max_train_rows=args.max_train_rows,
                seed=args.seed,
            ),
            log=_say,
            announce=announce,
        )
        verdict = "published" if outcome.promoted else "kept production"
        print(f"{kind}: {outcome.version} {verdict}: {outcome.reason}")
        print(f"{kind}: report {outcome.run_dir / 'report.md'}")
        kept = kept or not outcome.promoted
    return NOT_PROMOTED if kept and not args.dry_run else 0


def _announcer(settings: Settings) -> Callable[[EventKind, str], None]:
    from batch.announce import announce_model

    return lambda kind, version: announce_model(settings, kind, version)


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    import redis

    from models.batch_registry import BatchModelRegistry
    from models.names import RedisKeys

    registry = BatchModelRegistry(
        redis.Redis.from_url(settings.redis_url), RedisKeys(settings.namespace)
    )
    announce = None if args.no_announce else _announcer(settings)
    for kind in args.kind:
        previous, now = registry.rollback(kind)
        print(f"{kind}: rolled back from {previous} to {now}")
        if announce is not None:
            announce(kind, now)
    return 0


def _schedule(settings: Settings, args: argparse.Namespace) -> int:
    from batch.schedule import run_nightly

    return run_nightly(settings, run_now=args.now, should_stop=lambda: _stop_requested, log=_say)


def _synthesize(settings: Settings, args: argparse.Namespace) -> int:
    from batch.synthetic import fill_lake

    for kind in args.kind:
        kwargs: dict[str, Any] = {"seed": args.seed, "label_delay_s": args.label_delay_s}
        if args.start is not None:
            kwargs["start"] = args.start
        scored, labels = fill_lake(
            settings.lake_dir,
            kind,
            args.count,
            positive_rate=args.positive_rate,
            namespace=settings.namespace,
            progress=_progress(kind, args.count),
            **kwargs,
        )
        print(
            f"{kind}: wrote {scored:,} scored events and {labels:,} labels to {settings.lake_dir}"
        )
    return 0


def _progress(kind: str, total: int) -> Callable[[int], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"synthesize {kind}s", unit="ev", file=sys.stderr)

    def update(done: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def run() -> NoReturn:
    sys.exit(main())
