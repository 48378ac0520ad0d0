"""``python -m benchmarks restart``: what a restarted worker reads from the history changelog,
and how long it takes to score again, with Kafka's default changelog segments and with the
project's (``models.topology.changelog_topic_config``).

Kafka compacts a changelog to one record per key in closed segments only. With its default
segments (1 GiB, rolled after 7 days) a changelog keeps every history update the workers
wrote for a long time, and a restarted worker (or one taking over partitions) replays them
all before it scores again.

For each configuration, in a namespace of its own on the same broker: COUNT synthetic
transactions are published and scored by a first worker, which then stops; the benchmark
waits until the history changelog stops shrinking (the broker's log cleaner at work),
publishes PROBES more transactions, and starts a second worker. Its restart time runs from
its start to its first probe scored (the broker's stamp); the first worker's start, on an
empty changelog, is the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import stack
from benchmarks.worker import run_process
from models.events import Transaction
from models.names import Topics, history_changelog
from models.settings import Settings

KAFKA_DEFAULT_SEGMENTS = {"changelog_segment_bytes": 1 << 30, "changelog_segment_s": 7 * 86_400}
"""Kafka's own ``segment.bytes`` and ``segment.ms``: what the changelogs had before."""

SETTLE_POLL_S = 2.0
SETTLE_QUIET_S = 10.0
"""How long the changelog must hold the same number of records before the restart: the
broker's cleaner is throttled (``local.kafka``), so compacting one segment can take longer
than a poll, and two equal reads in a row did not mean it was done."""


@dataclass(frozen=True)
class Restart:
    """One configuration's run."""

    label: str
    written: int
    """History updates the first worker wrote to the changelog (its end offsets)."""
    held: int
    """Records the changelog held when the second worker started: what it recovers."""
    first_start_s: float
    """First worker: from its start to its first event scored (empty changelog)."""
    restart_s: float
    """Second worker: from its start to its first probe scored."""
    restart_cpu_s: float


def held_records(settings: Settings, topic: str) -> int:
    return sum(1 for _ in stack.read_all(settings, topic, client_id="bench-changelog"))


def settle(settings: Settings, topic: str, timeout_s: float) -> int:
    """Records ``topic`` holds once that number has not changed for :data:`SETTLE_QUIET_S`
    (the log cleaner is done with what it can compact), or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    held = held_records(settings, topic)
    since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < SETTLE_QUIET_S:
        time.sleep(SETTLE_POLL_S)
        again = held_records(settings, topic)
        if again != held:
            print(f"  changelog compacting: {held:,} -> {again:,} records", flush=True)
            held, since = again, time.monotonic()
    return held


def one_configuration(
    label: str,
    overrides: dict[str, int],
    args: argparse.Namespace,
    svc: stack.Services,
    workdir: Path,
    events: list[Transaction],
) -> Restart:
    settings = stack.bench_settings(svc.bootstrap, svc.redis_url, **overrides)
    topics = Topics.for_namespace(settings.namespace)
    changelog = history_changelog(settings.namespace, "transaction")
    stack.create_topics(settings, [topics.scored])
    scored, probes = events[: args.count], events[args.count :]
    print(f"\n--- {label} (namespace {settings.namespace})", flush=True)
    stack.publish(settings, scored)
    tag = "default" if overrides else "project"
    first = run_process(
        stack.FaustProcess("stream", f"first-{tag}", settings, workdir),
        "first worker",
        topics.scored,
        args.count,
        timeout_s=args.timeout,
        services=svc.pids,
    )
    written = sum(stack.end_offsets(settings, changelog).values())
    held = settle(settings, changelog, args.settle_timeout)
    print(f"  changelog: {written:,} records written, {held:,} held", flush=True)
    since = stack.end_offsets(settings, topics.scored)
    stack.publish(settings, probes)
    second = stack.FaustProcess("stream", f"restarted-{tag}", settings, workdir)
    restarted = run_process(
        second,
        "restarted worker",
        topics.scored,
        args.count + len(probes),
        timeout_s=args.timeout,
        services=svc.pids,
        since=since,
    )
    return Restart(
        label,
        written,
        held,
        first.startup_s,
        restarted.startup_s,
        restarted.cpu_s.get(second.name, float("nan")),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks restart",
        description="Changelog records a restarted worker recovers, and its time to score "
        "again, with Kafka's default changelog segments and with the project's.",
    )
    parser.add_argument(
        "--count", type=int, default=200_000, help="events scored before the restart (200000)"
    )
    parser.add_argument(
        "--probes", type=int, default=1_000, help="events published for the restart (1000)"
    )
    parser.add_argument(
        "--timeout", type=float, default=150.0, help="seconds given to each worker (150)"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        help="longest wait for the log cleaner before the restart, seconds (60)",
    )
    stack.add_service_options(parser)
    args = parser.parse_args(argv)
    if args.count < 1 or args.probes < 1:
        parser.error("--count and --probes must be at least 1")
    if args.timeout <= 0 or args.settle_timeout <= 0:
        parser.error("timeouts must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    print(f"{stack.cpu_count()} cores; {args.count:,} synthetic transactions", flush=True)
    events = stack.synthetic_transactions(args.count + args.probes)
    cards = len({event.card_id for event in events[: args.count]})
    with contextlib.ExitStack() as cleanup:
        workdir = stack.workdir(cleanup, args.workdir)
        svc = cleanup.enter_context(stack.services(workdir, args.bootstrap_servers, args.redis_url))
        runs = [
            one_configuration(
                "Kafka's default segments (1 GiB, 7 days)",
                KAFKA_DEFAULT_SEGMENTS,
                args,
                svc,
                workdir,
                events,
            ),
            one_configuration(
                f"the project's ({Settings().changelog_segment_bytes >> 20} MiB, "
                f"{Settings().changelog_segment_s:,} s)",
                {},
                args,
                svc,
                workdir,
                events,
            ),
        ]
    print(f"\n{args.count:,} events scored before the restart, {cards:,} cards")
    print(
        f"{'changelog segments':<44}{'written':>10}{'held':>10}"
        f"{'first start s':>15}{'restart s':>11}{'restart CPU s':>15}"
    )
    for run in runs:
        print(
            f"{run.label:<44}{run.written:>10,}{run.held:>10,}"
            f"{run.first_start_s:>15.1f}{run.restart_s:>11.1f}{run.restart_cpu_s:>15.1f}"
        )
    return 0
