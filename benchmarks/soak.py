"""Soak: twice the nominal rate for ten minutes; does the worker's memory stay flat and its lag
bounded?

The nominal rate is 1,000 events/s for one worker, each event labelled later. Scoring alone
runs at about 7,600 transactions/s here, but learning every label costs more
(docs/benchmarks.md, *Soak*: one worker held 2,000 events/s and 2,000 labels/s for ten
minutes, using 78 % of a core). The soak holds twice the nominal rate, ``--rate`` (default
2,000/s), as the users' own producers send it: ``python -m producers transactions`` and
``python -m producers emails`` in their own processes (80 % / 20 % of the rate), each
publishing delayed labels as well, so the worker also learns, checkpoints and keeps label
outcomes the whole time. One real ``python -m stream worker`` scores everything.

Every ``--every`` seconds it samples:

- the worker's resident memory (``VmRSS``), the bytes of the histories it holds
  (``fraud_state_bytes`` on its ``/metrics``: the state that grows with the cards and
  senders seen until each history is full), and Redis' ``used_memory``;
- the consumer lag of the worker's group: end offset minus committed offset, summed over
  the events, emails and labels partitions (committed offsets lag the real position by up to
  Faust's commit interval, so this is an upper bound);
- events scored so far (the scored topic's end offsets).

It prints one line per sample and a verdict: memory growth from the first to the last fifth of
the run (after the warm-up), the largest and the final lag, and whether every sent event was
scored once the producers stopped.

With ``--simulated-days D`` the producers run on a simulated clock that covers the D days
ending about now within the run (``--simulate-start``, ``--simulated-rate``), each label
still arriving about 30 s of wall time after its event. The histories then reach the size
they keep for good (a card's: 7 days or 256 transactions; a sender's: 24 hours) within the
ten minutes, which the wall clock would take a week to show: what still grows after that is
what the worker never forgets.

Usage: ``python -m benchmarks soak [--rate 2000] [--duration 600] [--every 10]
[--simulated-days D]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from kafka import KafkaConsumer, TopicPartition

from benchmarks import stack
from benchmarks.latency import probe
from models.names import Metrics, Topics, consumer_group
from models.settings import Settings

NOMINAL_RATE = 1000.0
EMAIL_SHARE = 0.2


@dataclass(frozen=True)
class Sample:
    at_s: float
    worker_rss_mb: float
    state_mb: float
    entities: int
    redis_mb: float
    lag: int
    scored: int


class LagReader:
    """End offsets and the worker group's committed offsets of the input topics."""

    def __init__(self, settings: Settings) -> None:
        topics = Topics.for_namespace(settings.namespace)
        self.group = consumer_group(settings.namespace)
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        # Never subscribes, so it never joins the workers' group: it only reads its offsets.
        self.group_reader = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
        )
        self.inputs = [
            TopicPartition(topic, p)
            for topic in (topics.transactions, topics.emails, topics.labels)
            for p in sorted(self.consumer.partitions_for_topic(topic) or ())
        ]
        self.scored = [
            TopicPartition(topics.scored, p)
            for p in sorted(self.consumer.partitions_for_topic(topics.scored) or ())
        ]

    def lag(self) -> int:
        ends = self.consumer.end_offsets(self.inputs)
        return sum(max(0, end - (self.group_reader.committed(tp) or 0)) for tp, end in ends.items())

    def scored_count(self) -> int:
        return sum(self.consumer.end_offsets(self.scored).values())

    def close(self) -> None:
        self.group_reader.close(autocommit=False)
        self.consumer.close()


SIMULATED_SWEEP_S = 15
"""The worker's ``forget_sweep_interval_s`` under ``--simulated-days``, wall seconds."""
LABEL_DELAY_S = 30.0
"""Wall seconds from an event to its label."""


def producer(
    kind: str,
    rate: float,
    duration_s: float,
    settings: Settings,
    log: Path,
    simulated_days: float | None = None,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    count = int(rate * duration_s)
    command = [
        sys.executable, "-m", "producers", kind, "--rate", f"{rate:g}",
        "--count", str(count), "--seed", str(stack.SEED),
    ]  # fmt: skip
    if simulated_days is None:
        command += ["--label-delay", f"{LABEL_DELAY_S:g}"]
    else:
        span_s = simulated_days * 86_400
        # Ends an hour before now: arrivals are random, and the worker refuses events
        # stamped more than a day ahead.
        start = datetime.now(UTC) - timedelta(seconds=span_s + 3600)
        speedup = span_s / duration_s  # event seconds per wall second
        command += [
            "--simulate-start", start.isoformat(),
            "--simulated-rate", f"{count / span_s:.6g}",
            "--label-delay", f"{LABEL_DELAY_S * speedup:.0f}",
        ]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=stack.REPO, env=env, stdout=out, stderr=out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks soak",
        description="Twice the nominal rate (1,000 events/s) for ten minutes through a real "
        "broker, Redis and worker: worker memory, Redis memory and consumer lag over time.",
    )
    parser.add_argument("--rate", type=float, default=2 * NOMINAL_RATE, help="events/s (2000)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--every", type=float, default=10.0, help="sampling period, s (10)")
    parser.add_argument("--warmup", type=float, default=60.0, help="left out of the verdict (60)")
    parser.add_argument(
        "--drain", type=float, default=300.0, help="wait this long for the backlog (300)"
    )
    parser.add_argument(
        "--simulated-days",
        type=float,
        metavar="D",
        help="event times cover D days ending about now (default: the wall clock)",
    )
    parser.add_argument("--workdir", type=Path, metavar="DIR", help="keep logs here")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.every <= 0:
        parser.error("--rate, --duration and --every must be positive")
    if args.simulated_days is not None and not 0 < args.simulated_days <= 365:
        parser.error("--simulated-days must be in (0, 365]")
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    samples: list[Sample] = []
    with contextlib.ExitStack() as cleanup:
        workdir = stack.workdir(cleanup, args.workdir)
        svc = cleanup.enter_context(stack.services(workdir, None, None))
        settings = stack.bench_settings(svc.bootstrap, svc.redis_url)
        if args.simulated_days is not None:
            # Ten wall minutes hold days of events: at the default (every 10 wall minutes)
            # the worker would sweep idle histories once a run.
            settings = settings.replace(forget_sweep_interval_s=SIMULATED_SWEEP_S)
        topics = Topics.for_namespace(settings.namespace)
        stack.create_topics(settings, [topics.scored, topics.transactions])
        worker = cleanup.enter_context(stack.FaustProcess("stream", "worker", settings, workdir))
        waited = probe(settings, worker)  # one event, scored: the worker is up and joined
        print(f"worker scored a probe event {waited:.1f} s after it started", flush=True)
        reader = LagReader(settings)
        cleanup.callback(reader.close)
        store = redis.Redis.from_url(svc.redis_url)
        meter = stack.CpuMeter({**svc.pids, "worker": worker.pid}).start()
        txn_rate, email_rate = args.rate * (1 - EMAIL_SHARE), args.rate * EMAIL_SHARE
        days = args.simulated_days
        senders = [
            producer("transactions", txn_rate, args.duration, settings, workdir / "txn.log", days),
            producer("emails", email_rate, args.duration, settings, workdir / "emails.log", days),
        ]
        for sender in senders:
            cleanup.callback(sender.kill)
        started = time.monotonic()
        print(
            f"{args.rate:,.0f} events/s ({txn_rate:,.0f} transactions + {email_rate:,.0f} "
            f"emails, labels {LABEL_DELAY_S:g} s later) for {args.duration:g} s; "
            f"{stack.cpu_count()} cores",
            flush=True,
        )
        if days is not None:
            print(f"event times: the {days:g} days ending an hour ago", flush=True)
        print("   t s  worker RSS MB  state MB  entities  Redis MB      lag    scored", flush=True)
        while any(s.poll() is None for s in senders) and worker.alive():
            time.sleep(args.every)
            sample = Sample(
                at_s=time.monotonic() - started,
                worker_rss_mb=stack.rss_mb(worker.pid),
                state_mb=(worker.metric_sum(Metrics.STATE_BYTES) or 0.0) / 2**20,
                entities=int(worker.metric_sum(Metrics.STATE_ENTITIES) or 0),
                redis_mb=int(store.info("memory")["used_memory"]) / 2**20,
                lag=reader.lag(),
                scored=reader.scored_count(),
            )
            samples.append(sample)
            print(
                f"{sample.at_s:6.0f} {sample.worker_rss_mb:13.0f} {sample.state_mb:9.1f} "
                f"{sample.entities:9,d} {sample.redis_mb:9.1f} "
                f"{sample.lag:8,d} {sample.scored:9,d}",
                flush=True,
            )
        if not worker.alive():
            print(f"the worker died:\n{worker.log_tail()}", file=sys.stderr)
            return 1
        codes = [s.wait(timeout=60) for s in senders]
        wall = time.monotonic() - started
        sent = int(txn_rate * args.duration) + int(email_rate * args.duration)
        try:
            stack.wait_for_messages(
                settings, topics.scored, sent + 1, timeout_s=args.drain, alive=worker.alive
            )  # + the probe
        except TimeoutError:
            print(f"the backlog was not scored within {args.drain:g} s", flush=True)
        drained = time.monotonic() - started - wall
        cpu = meter.read()
        scored = reader.scored_count() - 1  # the probe
    steady = [s for s in samples if s.at_s >= args.warmup]
    fifth = max(1, len(steady) // 5)
    first, last = steady[:fifth], steady[-fifth:]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    rss_first, rss_last = (
        mean([s.worker_rss_mb for s in first]),
        mean([s.worker_rss_mb for s in last]),
    )
    state_first, state_last = mean([s.state_mb for s in first]), mean([s.state_mb for s in last])
    rest_first, rest_last = rss_first - state_first, rss_last - state_last
    redis_first, redis_last = mean([s.redis_mb for s in first]), mean([s.redis_mb for s in last])
    held_first, held_last = mean([s.entities for s in first]), mean([s.entities for s in last])
    print()
    print(f"producers exited {codes}; {sent:,} events sent in {wall:.0f} s")
    print(stack.describe_cpu(cpu, wall + drained))
    print(
        f"worker RSS: {rss_first:,.0f} MB (first fifth after the warm-up) -> {rss_last:,.0f} MB "
        f"(last fifth), {100 * (rss_last / rss_first - 1):+.1f} %; max "
        f"{max(s.worker_rss_mb for s in steady):,.0f} MB"
    )
    print(
        f"  of which histories held: {state_first:,.1f} MB -> {state_last:,.1f} MB; the rest "
        f"(RSS - histories): {rest_first:,.0f} MB -> {rest_last:,.0f} MB, "
        f"{100 * (rest_last / rest_first - 1):+.1f} %"
    )
    print(f"  cards and senders held: {held_first:,.0f} -> {held_last:,.0f}")
    print(
        f"Redis used_memory: {redis_first:,.1f} MB -> {redis_last:,.1f} MB "
        "(served features and histories have TTLs; growth until the first TTL is expected)"
    )
    print(
        f"consumer lag (upper bound): max {max(s.lag for s in steady):,d} messages, last "
        f"{steady[-1].lag:,d}; {scored:,} scored for {sent:,} sent, {drained:.1f} s after the "
        "producers stopped"
    )
    return 0 if scored >= sent else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
