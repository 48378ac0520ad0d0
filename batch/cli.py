"""``python -m batch {sink,compact}``: the Parquet lake of scored events and labels.

The entry point builds the settings once (environment, then flags) and hands them down.
Exit codes: 0 done, 1 Kafka unreachable or a bad ``FRAUD_`` variable, 2 bad arguments,
130 interrupted. No error prints a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

from batch.lake import SinkError, compact, run_sink
from models import arguments
from models.settings import Settings, SettingsError

_stop_requested = False
_positive_int = arguments.whole(1)
_positive = arguments.number(0.0, inclusive=False)


def build_parser() -> argparse.ArgumentParser:
    env_help = "environment (FRAUD_ prefix; flags win):\n" + Settings.describe()
    parser = argparse.ArgumentParser(
        prog="python -m batch",
        description="The Parquet lake of scored events and labels (nightly retrain input).",
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sink = commands.add_parser(
        "sink",
        help="consume the scored and labels topics into the lake",
        description="Write every scored event and label to Parquet under "
        "<lake>/{scored,labels}/date=YYYY-MM-DD/. Resumes where the lake ends: a restart "
        "writes no duplicates.",
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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

    comp = commands.add_parser(
        "compact",
        help="merge the small files of each date partition",
        description="Merge the files of each date and Kafka partition into one file; safe "
        "to run beside the sink, and to interrupt.",
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("--lake-dir", help="lake directory (default FRAUD_LAKE_DIR or 'lake')")
    return parser


def _request_stop(signum: int, frame: FrameType | None) -> None:
    global _stop_requested
    _stop_requested = True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        overrides: dict[str, Any] = {}
        if args.lake_dir:
            overrides["lake_dir"] = args.lake_dir
        if getattr(args, "bootstrap_servers", None):
            overrides["kafka_bootstrap"] = args.bootstrap_servers
        settings = Settings.from_env(**overrides)
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
    except (SettingsError, SinkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write the lake: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    sys.exit(main())
