"""Event-to-scored latency at a steady rate, through a real broker, Redis and stream worker.

A paced producer (the project's kafka-python ``Publisher``, in its own process) sends
synthetic transactions at ``--rate`` events/s for ``--duration`` seconds, stamping each
event's ``event_time`` with the wall clock just before ``send``. A real
``python -m stream worker`` scores them. Afterwards every event and scored event is read
back (both topics are created with ``message.timestamp.type=LogAppendTime``) and per event:

event -> scored topic
    the broker's stamp of the scored event minus ``event_time``: the producer's batching,
    Kafka, the worker's batching window, scoring, Redis, and the worker's producer, until a
    consumer of the scored topic could read it (millisecond stamps). Alerts leave in the
    same flush as the scored events of their step.
event -> decision
    ``scored_at`` minus ``event_time``: until the worker decided (its batch's time).
event -> on Kafka, on Kafka -> scored
    the same split at the broker's stamp of the event itself: the producer's share, and the
    worker's.

The worker starts first and is warmed up with a probe event; events of the first
``--warmup`` seconds are still left out of the percentiles (reported separately).

Usage: ``python -m benchmarks latency [--rate 5000] [--duration 40] [--within 0.01]``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from benchmarks import stack
from models.events import utc_from_timestamp
from models.names import Topics
from models.settings import Settings
from producers.publisher import Publisher, relax_gc
from producers.transactions import TransactionSimulator

PROBE_ID = "latency-probe"


class Stamps(msgspec.Struct):
    """The fields of an event or scored event this benchmark reads (msgspec skips the rest)."""

    event_id: str
    event_time: datetime
    scored_at: datetime | None = None


# --------------------------------------------------------------------------- producer


@dataclass(frozen=True)
class Produced:
    sent: int
    elapsed_s: float
    behind_s: float
    """How far the sender fell behind its schedule at worst."""
    first_sent_at: float
    cpu_s: float
    """CPU seconds the producer process used (generation included)."""


def produce_paced(
    settings: Settings, rate: float, duration_s: float, results: Any, seed: int = stack.SEED
) -> None:
    """Send ``rate`` events/s for ``duration_s`` s; put a :class:`Produced` on ``results``.
    Runs in its own process, so the sender has its own interpreter (and GIL)."""
    count = int(rate * duration_s)
    simulator = TransactionSimulator(seed, start=stack.START)
    events = [next(simulator).event for _ in range(count)]
    relax_gc()  # as `python -m producers` does once its simulator is built
    topic = Topics.for_namespace(settings.namespace).transactions
    replace = msgspec.structs.replace
    behind = 0.0
    with Publisher.from_settings(settings, client_id="bench-latency") as publisher:
        publish = publisher.publish
        started = time.perf_counter()
        first = time.time()
        i = 0
        while i < count:
            now = time.perf_counter()
            due = min(count, int((now - started) * rate) + 1)
            behind = max(behind, (now - started) - i / rate)
            while i < due:
                publish(topic, replace(events[i], event_time=utc_from_timestamp(time.time())))
                i += 1
            next_due = started + i / rate
            pause = next_due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        publisher.flush()
        elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put(Produced(count, elapsed, behind, first, usage.ru_utime + usage.ru_stime))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Scored:
    """One scored event's times, POSIX seconds."""

    event_time: float
    received: float
    """The broker's LogAppendTime of the event on the transactions topic."""
    decided: float
    """``scored_at``: when the worker decided."""
    appended: float
    """The broker's LogAppendTime of the scored event: when a consumer could read it."""


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 120.0
) -> dict[str, tuple[Stamps, float]]:
    """Event id -> (its stamps, the broker's stamp) for every message of ``topic``."""
    decode = msgspec.json.Decoder(Stamps).decode
    found: dict[str, tuple[Stamps, float]] = {}
    for value, appended in stack.read_all(
        settings, topic, client_id="bench-latency-reader", timeout_s=timeout_s
    ):
        stamps = decode(value)
        found[stamps.event_id] = (stamps, appended)
    return found


def read_scored(settings: Settings) -> list[Scored]:
    """Every scored event of the run (the probe left out), joined with its input message."""
    topics = Topics.for_namespace(settings.namespace)
    received = read_topic(settings, topics.transactions)
    scored = []
    for event_id, (stamps, appended) in read_topic(settings, topics.scored).items():
        if event_id == PROBE_ID or stamps.scored_at is None:
            continue
        scored.append(
            Scored(
                stamps.event_time.timestamp(),
                received[event_id][1],
                stamps.scored_at.timestamp(),
                appended,
            )
        )
    return scored


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(latencies_s: list[float]) -> str:
    ms = sorted(x * 1000.0 for x in latencies_s)
    cells = [f"p{q:g} {percentile(ms, q):6.1f}" for q in (50, 90, 99, 99.9)]
    return "  ".join(cells) + f"  max {ms[-1]:6.1f} ms" if ms else "(none)"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks latency",
        description="Event-to-scored latency (p50/p99) of a real stream worker at a steady "
        "rate, through a Kafka broker and Redis started for the run.",
    )
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s (5000)")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load (40)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="first seconds left out of the figures (5)"
    )
    parser.add_argument(
        "--within",
        type=float,
        help="FRAUD_BATCH_WITHIN_S for the worker (default: the settings' 0.01 s)",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the worker into DIR")
    parser.add_argument(
        "--timeline", action="store_true", help="also print the latency second by second"
    )
    stack.add_service_options(parser)
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 100_000:
        parser.error("--rate must be in (0, 100000]")
    if not 1 <= args.duration <= 240:
        parser.error("--duration must be between 1 and 240 seconds")
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be at least 0 and shorter than --duration")
    if args.within is not None and not 0 < args.within <= 5:
        parser.error("--within must be in (0, 5] seconds")
    return args


def probe(settings: Settings, worker: stack.FaustProcess) -> float:
    """Publish one event and wait until it is scored: the worker is then running (used by
    every benchmark that starts a worker). Returns the seconds it took."""
    from models.events import Transaction

    probe = Transaction(
        event_id=PROBE_ID,
        event_time=utc_from_timestamp(time.time()),
        card_id="probe-card",
        customer_id="probe",
        amount=1.0,
        merchant_id="probe",
        terminal_id="probe",
        merchant_category="probe",
        country="FR",
    )
    started = time.monotonic()
    stack.publish(settings, [probe])
    topic = Topics.for_namespace(settings.namespace).scored
    stack.wait_for_messages(settings, topic, 1, timeout_s=90, alive=worker.alive, progress_s=1e9)
    return time.monotonic() - started


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    count = int(args.rate * args.duration)
    print(
        f"{stack.cpu_count()} cores; {count:,} events at {args.rate:,.0f}/s for "
        f"{args.duration:g} s",
        flush=True,
    )
    extra_env = {} if args.within is None else {"FRAUD_BATCH_WITHIN_S": str(args.within)}
    with contextlib.ExitStack() as cleanup:
        workdir = stack.workdir(cleanup, args.workdir)
        svc = cleanup.enter_context(stack.services(workdir, args.bootstrap_servers, args.redis_url))
        settings = stack.bench_settings(svc.bootstrap, svc.redis_url)
        within = args.within if args.within is not None else settings.batch_within_s
        topics = Topics.for_namespace(settings.namespace)
        stack.create_topics(settings, [topics.scored, topics.transactions])
        worker = cleanup.enter_context(
            stack.FaustProcess(
                "stream", "worker", settings, workdir, extra_env=extra_env, profile=args.profile
            )
        )
        waited = probe(settings, worker)
        print(f"worker scored a probe event {waited:.1f} s after it started", flush=True)

        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        meter = stack.CpuMeter({**svc.pids, "worker": worker.pid}).start()
        steps_before = worker.scoring_steps() or 0
        producer = ctx.Process(
            target=produce_paced, args=(settings, args.rate, args.duration, results)
        )
        started = time.time()
        producer.start()
        try:
            produced: Produced = results.get(timeout=args.duration + 120)
        finally:
            producer.join(timeout=30)
        print(
            f"sent {produced.sent:,} events in {produced.elapsed_s:.1f} s "
            f"({produced.sent / produced.elapsed_s:,.0f}/s; at worst "
            f"{produced.behind_s * 1000:.0f} ms behind schedule)",
            flush=True,
        )
        stack.wait_for_messages(
            settings, topics.scored, produced.sent + 1, timeout_s=120, alive=worker.alive
        )
        cpu = meter.read(finished={"producer": produced.cpu_s})
        steps = (worker.scoring_steps() or 0) - steps_before
        wall = time.time() - started
        print("reading the scored topic ...", flush=True)
        scored = read_scored(settings)

    cutoff = produced.first_sent_at + args.warmup
    steady = [s for s in scored if s.event_time >= cutoff]
    warm = [s for s in scored if s.event_time < cutoff]
    print()
    print(
        f"worker: FRAUD_BATCH_WITHIN_S={within:g}, "
        f"{steps:,} scoring steps ({len(scored) / max(steps, 1):,.0f} events each)"
    )
    print(stack.describe_cpu(cpu, wall))
    print(f"{len(steady):,} events after the first {args.warmup:g} s (ms):")
    print(f"  event -> scored topic  {summary([s.appended - s.event_time for s in steady])}")
    print(f"  event -> decision      {summary([s.decided - s.event_time for s in steady])}")
    print(f"  event -> on Kafka      {summary([s.received - s.event_time for s in steady])}")
    print(f"  on Kafka -> scored     {summary([s.appended - s.received for s in steady])}")
    if warm:
        print(f"{len(warm):,} warm-up events (ms):")
        print(f"  event -> scored topic  {summary([s.appended - s.event_time for s in warm])}")
    if args.timeline:
        print("second  events   event -> scored topic p50 / p99   event -> on Kafka p50 / p99 (ms)")
        buckets: dict[int, list[Scored]] = {}
        for s in scored:
            buckets.setdefault(int(s.event_time - produced.first_sent_at), []).append(s)
        for second, items in sorted(buckets.items()):
            total = sorted((s.appended - s.event_time) * 1000.0 for s in items)
            sent = sorted((s.received - s.event_time) * 1000.0 for s in items)
            print(
                f"  {second:4d} {len(items):8,d}   {percentile(total, 50):9.1f} "
                f"{percentile(total, 99):7.1f}   {percentile(sent, 50):15.1f} "
                f"{percentile(sent, 99):7.1f}"
            )
    if len(scored) != produced.sent:
        print(f"note: {len(scored):,} scored events for {produced.sent:,} sent")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
