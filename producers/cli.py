"""``python -m producers {transactions,emails,replay}``: feed the detection stream.

The entry point builds the settings once (environment, then ``--bootstrap-servers``) and
hands them down. Exit codes: 0 done, 1 Kafka unreachable or refusing (or a bad ``FRAUD_``
variable), 2 bad arguments or a file that cannot be replayed, 130 interrupted. No error
prints a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import NoReturn

from models import arguments
from models.events import MAX_FUTURE_SKEW_S, Email, Transaction
from models.names import EventKind, Topics
from models.settings import Settings, SettingsError
from producers.clock import Clock, SimulatedClock, WallClock, start_before
from producers.emails import EmailSimulator
from producers.feed import Feed
from producers.labels import LabelQueue
from producers.pacing import Pace, Progress
from producers.publisher import (
    ConsolePublisher,
    KafkaUnavailable,
    Publisher,
    PublishError,
    Sink,
    relax_gc,
)
from producers.replay import ReplayError, load, parse_mapping
from producers.transactions import TransactionSimulator
from producers.truth import Generated, TruthWriter

DEFAULT_RATE = 100.0
DRY_RUN_COUNT = 5
SIMULATED_END_MARGIN_S = 900.0


class UsageError(Exception):
    """Arguments that parse but cannot work together; reported like an argparse error."""


# -- argument types ------------------------------------------------------------------------

_non_negative = arguments.number(0.0)
_positive = arguments.number(0.0, inclusive=False)
_share = arguments.number(0.0, high=1.0, below=True)
_count = arguments.whole(1)
_seed = arguments.whole(0)
_instant = arguments.instant


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    env_help = "environment (FRAUD_ prefix; flags win):\n" + Settings.describe()
    parser = argparse.ArgumentParser(
        prog="python -m producers",
        description="Produce synthetic card transactions or emails (with delayed labels) to "
        "Kafka, or replay a labelled dataset.",
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    txn = _command(
        commands,
        "transactions",
        help="synthetic card transactions with fraud scenarios",
        description="Synthetic card transactions: card testing, account takeover, "
        "compromised terminals and high-value fraud, plus a drift scenario.",
        epilog=env_help,
    )
    _common(txn, default_rate=DEFAULT_RATE)
    _generator(txn)
    txn.add_argument(
        "--fraud-rate",
        type=_share,
        default=0.005,
        help="share of fraudulent transactions (default %(default)s)",
    )
    txn.add_argument(
        "--customers",
        type=_count,
        default=20_000,
        help="size of the customer population (default %(default)s)",
    )

    mail = _command(
        commands,
        "emails",
        help="synthetic emails with spam campaigns",
        description="Synthetic ham (work, newsletters, personal, notifications) and spam "
        "(phishing, advance fee, pharmacy, crypto/lottery), plus a drift campaign.",
        epilog=env_help,
    )
    _common(mail, default_rate=DEFAULT_RATE)
    _generator(mail)
    mail.add_argument(
        "--spam-rate", type=_share, default=0.3, help="share of spam (default %(default)s)"
    )

    replay = _command(
        commands,
        "replay",
        help="stream a labelled CSV/Parquet file",
        description="Stream a labelled CSV or Parquet file into the transactions or emails "
        "topic in event-time order, with its labels after --label-delay (event time). Card "
        "numbers in the card or customer column are sent as keyed tokens "
        "(FRAUD_CARD_TOKEN_KEY, required for such a file), never in clear.",
        epilog="example: replay fraudTrain.csv --kind transaction --map card_id=cc_num "
        "--map amount=amt --map event_time=trans_date_trans_time --map label=is_fraud "
        "--map merchant_id=merchant --map merchant_category=category\n\n" + env_help,
    )
    replay.add_argument("file", help="CSV, TSV or Parquet file")
    replay.add_argument(
        "--kind", choices=("transaction", "email"), required=True, help="which topic the rows go to"
    )
    replay.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read event FIELD from COLUMN (repeatable); unmapped fields use "
        "the column of the same name, or a default",
    )
    replay.add_argument(
        "--extra",
        default="",
        metavar="COL,COL|all",
        help="numeric columns to carry into Transaction.extra ('all': every "
        "numeric column not mapped)",
    )
    replay.add_argument(
        "--time-format",
        metavar="STRFTIME",
        help="format of a text time column when it is not ISO-like",
    )
    replay.add_argument(
        "--start",
        type=_instant,
        metavar="ISO",
        help="anchor for relative or synthesized times (default: the data ends now)",
    )
    _common(replay, default_rate=0.0)
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    epilog: str,
) -> argparse.ArgumentParser:
    """A subcommand whose description and epilog keep their line breaks, and that carries
    itself as ``command_parser`` so that :func:`main` reports a usage error against it."""
    command = arguments.subcommand(
        commands, name, help=help, description=description, epilog=epilog
    )
    command.set_defaults(command_parser=command)
    return command


def _common(p: argparse.ArgumentParser, *, default_rate: float) -> None:
    p.add_argument(
        "--rate",
        type=_non_negative,
        default=default_rate,
        help="events per second, 0 = as fast as possible (default %(default)s)",
    )
    p.add_argument("--count", type=_count, help="stop after this many events")
    p.add_argument(
        "--duration",
        type=_positive,
        metavar="SECONDS",
        help="stop after this many wall-clock seconds",
    )
    p.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka bootstrap servers (default: FRAUD_KAFKA_BOOTSTRAP)",
    )
    p.add_argument(
        "--connect-timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="give up on an unreachable Kafka after this long (default %(default)s)",
    )
    p.add_argument(
        "--label-delay",
        type=_non_negative,
        default=30.0,
        metavar="SECONDS",
        help="mean delay before a label arrives, on the event clock (default %(default)s)",
    )
    p.add_argument(
        "--label-missing-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of labels that never arrive (default %(default)s)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help=f"print events as JSON instead of sending them (default count {DRY_RUN_COUNT})",
    )
    p.add_argument(
        "--progress-every", type=_positive, default=5.0, metavar="SECONDS", help=argparse.SUPPRESS
    )


def _generator(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        type=_seed,
        help="random seed: the same seed gives the same stream, ids included "
        "(default: a fresh one, printed)",
    )
    p.add_argument(
        "--simulate-start",
        type=_instant,
        metavar="ISO",
        help="simulate time from this instant instead of following the wall clock; "
        "--rate 0 alone also simulates, placing the history to end about now",
    )
    p.add_argument(
        "--simulated-rate",
        type=_positive,
        default=2.0,
        metavar="EVENTS_PER_S",
        help="mean arrivals per simulated second (default %(default)s)",
    )
    p.add_argument(
        "--drift-at",
        type=_non_negative,
        metavar="SECONDS",
        help="start the drift scenario this many (event-clock) seconds after start",
    )
    p.add_argument(
        "--truth-out",
        metavar="FILE",
        help="write the generator's truth (event_id, kind, is_positive, scenario, "
        "true_probability) to a .csv or .parquet file; never sent to Kafka",
    )


# -- running -------------------------------------------------------------------------------


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``docker stop``) stops a run like Ctrl-C: flushed, not cut off mid-batch."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        overrides = {"kafka_bootstrap": args.bootstrap_servers} if args.bootstrap_servers else {}
        settings = Settings.from_env(**overrides)
        if args.command == "replay":
            return _replay(args, settings)
        return _generate(args, settings)
    except (UsageError, ReplayError) as exc:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(exc))
    except (SettingsError, KafkaUnavailable, PublishError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _sink(args: argparse.Namespace, settings: Settings) -> Sink:
    if args.dry_run:
        return ConsolePublisher()
    return Publisher.from_settings(settings, timeout_s=args.connect_timeout)


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    kind: EventKind = "transaction" if args.command == "transactions" else "email"
    seed = args.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big")
        print(f"seed {seed} (pass --seed {seed} to reproduce this stream)", file=sys.stderr)
    count = args.count
    if args.dry_run and count is None and args.duration is None:
        count = DRY_RUN_COUNT
    simulated = args.rate == 0 or args.simulate_start is not None
    now = time.time()
    clock: Clock
    if simulated:
        start = args.simulate_start
        if start is None:  # end the history a little before now (a week of it if endless):
            # the end varies by minutes, and events from the future would puzzle a dashboard
            end = now - SIMULATED_END_MARGIN_S
            start = start_before(end, count, args.simulated_rate) if count else now - 7 * 86_400.0
        clock = SimulatedClock(start, args.simulated_rate, random.Random(f"{seed}:clock"))
    else:
        start = now
        clock = WallClock()
    drift_at = None if args.drift_at is None else start + args.drift_at
    sim: TransactionSimulator | EmailSimulator
    if kind == "transaction":
        sim = TransactionSimulator(
            seed, args.fraud_rate, start, drift_at, clock=clock, customers=args.customers
        )
    else:
        sim = EmailSimulator(seed, args.spam_rate, start, drift_at, clock=clock)
    labels = LabelQueue(
        random.Random(f"{seed}:labels"),
        mean_delay_s=args.label_delay,
        missing_rate=args.label_missing_rate,
    )
    truth = None
    if args.truth_out:
        try:
            truth = TruthWriter(args.truth_out)
        except OSError as exc:
            raise UsageError(f"cannot write --truth-out {args.truth_out}: {exc.strerror}") from None
    relax_gc()
    try:
        items = _recorded(sim, truth)
        return _stream(args, settings, kind, items, labels, simulated=simulated, count=count)
    finally:
        if truth is not None:
            truth.close()
            print(f"truth: {truth.rows:,} rows in {truth.path}", file=sys.stderr)


def _recorded(
    sim: TransactionSimulator | EmailSimulator, truth: TruthWriter | None
) -> Iterator[tuple[Transaction | Email, bool | None]]:
    item: Generated[Transaction] | Generated[Email]
    for item in sim:
        if truth is not None:
            truth.write(item)
        yield item.event, item.is_positive


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    kind: EventKind = args.kind
    mapping = parse_mapping(args.map, kind)
    extra = [c.strip() for c in args.extra.split(",") if c.strip()]
    if extra and kind == "email":
        raise UsageError("--extra only applies to --kind transaction")
    data = load(
        args.file,
        kind,
        mapping,
        extra=extra,
        time_format=args.time_format,
        start=args.start,
        card_key=settings.card_token_key or None,
        card_key_required=True,  # tokens must be the same in every run: never a random key
    )
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"replay: {data.rows:,} rows from {args.file}"
        + (f", {len(data.extra)} extra features" if data.extra else ""),
        file=sys.stderr,
    )
    labels = LabelQueue(
        random.Random(0),
        mean_delay_s=args.label_delay,
        missing_rate=args.label_missing_rate,
        source="replay",
        jitter=0.0,
    )
    count = args.count
    if args.dry_run and count is None and args.duration is None:
        count = DRY_RUN_COUNT
    relax_gc()
    return _stream(
        args, settings, kind, data.events(), labels, simulated=True, count=count, future_guard=False
    )


def _stream(
    args: argparse.Namespace,
    settings: Settings,
    kind: EventKind,
    items: Iterator[tuple[Transaction | Email, bool | None]],
    labels: LabelQueue,
    *,
    simulated: bool,
    count: int | None,
    future_guard: bool = True,
) -> int:
    """Run the shared producing loop (:class:`~producers.feed.Feed`) into Kafka or stdout."""
    topics = Topics.for_namespace(settings.namespace)
    sink = _sink(args, settings)
    feed = Feed(
        sink=sink,
        events_topic=topics.events(kind),
        labels_topic=topics.labels,
        kind=kind,
        labels=labels,
        pace=Pace(args.rate, count, args.duration),
        progress=None if args.dry_run else Progress(f"{kind}s", every_s=args.progress_every),
        latest_time=time.time() + MAX_FUTURE_SKEW_S - 60.0 if simulated and future_guard else None,
    )
    interrupted = False
    try:
        sink.ensure_topics([feed.events_topic, feed.labels_topic])
        try:
            feed.run(items)
        except KeyboardInterrupt:
            interrupted = True
            print("stopping (interrupted); labels still waiting are not sent", file=sys.stderr)
        if not interrupted:
            feed.finish_labels(wait=not (simulated or args.dry_run))
        with contextlib.suppress(KeyboardInterrupt):
            sink.close()
    except BaseException:
        sink.abort()
        raise
    feed.summary()
    if labels.dropped and not args.dry_run:
        print(f"labels: {labels.dropped:,} never sent (--label-missing-rate)", file=sys.stderr)
    if feed.stopped:
        print(f"error: {feed.stopped}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def run() -> NoReturn:
    sys.exit(main())
