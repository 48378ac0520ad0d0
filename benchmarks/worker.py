"""Throughput of the stream worker next to its ceiling and its floor, on the same events.

One run, one set of synthetic transactions (the producers' simulator, seed 42):

ceiling
    The worker's CPU work without Kafka, Redis or Faust, in this process (with the worker's
    garbage collector settings, ``stream.heap``): decode the raw
    bytes (msgspec, validated) a step of ``FRAUD_BATCH_SIZE`` at a time, then, as the worker,
    :func:`stream.scoring.score_batch` on chunks of ``stream.worker.SCORING_CHUNK`` of the
    step (features from the card history, online-model score, decision, reasons for alerts,
    history update), each chunk's scored events encoded right after it. No learning: the
    run has no labels. ``score_batch`` alone, on decoded events, is shown too. It runs
    before any service starts.
floor
    :mod:`benchmarks.naive`: a per-event Faust agent (faust.Record decode, a one-event
    ``score_batch``, ``await send``), no table, no Redis.
Faust alone
    :mod:`benchmarks.plumbing`: the worker's Faust app and ``take_events`` batching with an
    agent that does nothing: the most any agent built this way can move here.
inboxes alone
    :mod:`benchmarks.plumbing_inbox`: the worker's own input path (``stream.inbox``,
    ``stream.app.consume``) with steps that do nothing: the most this worker can move here.
worker
    The real ``python -m stream worker`` in a subprocess, started once the events are on
    the topic: tables with changelogs, Redis, scored events (and alerts) out.
worker, learning (``--learning``, instead of the worker and the baselines)
    The worker as it runs once labels flow: scoring ``--count`` new events while it learns
    the labels of as many earlier ones (:func:`learning_run`).

The rates of the Faust processes come from the broker's LogAppendTime stamps on their
output topic: sustained = events / (last stamp - first stamp); total = last stamp - process
start (start-up, group join and table recovery included). CPU seconds are counted for every
process involved and for the rest of the machine, which other work may share.

``--pin`` runs the Faust processes on one core and everything else the benchmark starts on
the others; every run also prints the worker's CPU per thread from its first output to its
last (start-up left out), in µs an event.

Usage: ``python -m benchmarks worker [--count N] [--skip-floor] [--learning] [--pin]
[--profile DIR [--profile-gil]]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import stack
from models.events import Transaction, decode, encode
from models.features import CardHistory
from models.names import Topics
from models.online import OnlineModel
from models.settings import Settings
from producers.truth import Generated
from stream.heap import settle_heap
from stream.scoring import TRANSACTIONS, Thresholds, score_batch
from stream.worker import scoring_chunks

# --------------------------------------------------------------------------- ceiling


def ceiling(raw: list[bytes], settings: Settings) -> tuple[float, float]:
    """(events/s of decode + score_batch + encode, events/s of score_batch alone), with the
    worker's garbage collector settings (``stream.heap``, for the rest of this process)."""
    settle_heap()
    size = settings.batch_size
    model = OnlineModel("transaction", positive_weight=settings.positive_weight)
    thresholds = Thresholds.for_kind("transaction", settings)

    histories: dict[str, CardHistory] = {}
    started = time.perf_counter()
    for i in range(0, len(raw), size):
        events = [decode(value, Transaction) for value in raw[i : i + size]]
        for chunk in scoring_chunks(events):
            verdicts = score_batch(
                TRANSACTIONS, chunk, histories, {}, model, "v", thresholds, scored_at=time.time()
            )
            for verdict in verdicts:
                encode(verdict.scored)
    full = len(raw) / (time.perf_counter() - started)

    decoded = [decode(value, Transaction) for value in raw]
    histories = {}
    started = time.perf_counter()
    for i in range(0, len(decoded), size):
        for chunk in scoring_chunks(decoded[i : i + size]):
            score_batch(TRANSACTIONS, chunk, histories, {}, model, "v", thresholds, time.time())
    alone = len(decoded) / (time.perf_counter() - started)
    return full, alone


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessRun:
    """What one Faust process did with the pre-published events."""

    label: str
    span: stack.Span
    started_at: float
    finished: bool
    cpu_s: dict[str, float]
    steps: int | None
    """Scoring steps (batches) the worker took, from its /metrics."""
    learned: int | None
    """Labels the worker learned by the time its events were done, from its /metrics."""
    scoring_cpu_s: tuple[float, float] | None
    """CPU seconds of its main thread and of its other threads from its first output to
    its last (None for a run whose output is counted, not one message per event)."""

    @property
    def total_s(self) -> float:
        return self.span.last - self.started_at

    @property
    def startup_s(self) -> float:
        return self.span.first - self.started_at


def run_process(
    process: stack.FaustProcess,
    label: str,
    output: str,
    count: int,
    *,
    timeout_s: float,
    services: dict[str, int],
    counted: bool = False,
    since: dict[int, int] | None = None,
) -> ProcessRun:
    """Run ``process`` until ``output`` holds ``count`` events (or ``timeout_s``): one
    message per event, or with ``counted`` messages that hold event counts. ``since``: the
    rate counts the messages written after these end offsets only."""
    meter = stack.CpuMeter(services).start()
    finished = True
    at_first: tuple[float, float] | None = None
    scoring_cpu_s = None

    def note_first() -> None:
        nonlocal at_first
        at_first = stack.thread_cpu_seconds(process.pid)

    with process:
        meter.add(process.name, process.pid)
        if counted:
            span = stack.wait_for_counted(
                process.settings, output, count, timeout_s=timeout_s, alive=process.alive
            )
            finished = span.count >= count
        else:
            try:
                stack.wait_for_messages(
                    process.settings,
                    output,
                    count,
                    timeout_s=timeout_s,
                    alive=process.alive,
                    on_first=note_first,
                    held_before=0 if since is None else sum(since.values()),
                )
                if at_first is not None:
                    main, others = stack.thread_cpu_seconds(process.pid)
                    scoring_cpu_s = (main - at_first[0], others - at_first[1])
            except TimeoutError as exc:
                print(f"  {exc}: measuring what was done", flush=True)
                finished = False
        if not process.alive():
            raise RuntimeError(f"{process.name} died:\n{process.log_tail()}")
        cpu = meter.read()
        steps = process.scoring_steps()
        learned = process.labels_learned()
    if not counted:
        span = stack.topic_span(process.settings, output, since)
    return ProcessRun(label, span, process.started_at, finished, cpu, steps, learned, scoring_cpu_s)


def measured_process(
    module: str,
    name: str,
    settings: Settings,
    workdir: Path,
    args: argparse.Namespace,
    cores: set[int] | None,
) -> stack.FaustProcess:
    """A Faust process whose run is measured: py-spy attached as ``args`` ask
    (``--profile``, ``--profile-gil``), on ``cores`` (``--pin``) when given."""
    return stack.FaustProcess(
        module,
        name,
        settings,
        workdir,
        profile=args.profile,
        profile_gil=args.profile_gil,
        cores=cores,
    )


LABEL_DELAY_S = 3_600.0
"""``--learning``: each label arrives an hour (simulated) after its transaction."""


def learning_run(
    args: argparse.Namespace,
    settings: Settings,
    workdir: Path,
    services: dict[str, int],
    generated: list[Generated[Transaction]],
    cores: set[int] | None,
) -> ProcessRun:
    """The worker scoring new events while it learns the labels of earlier ones, as it runs
    once labels flow: a first worker scores the ``args.count`` events already published and
    stops; then their labels (the simulator's truth, :data:`LABEL_DELAY_S` later) and as many
    further events are published, with no worker running; then the measured worker resumes
    from the first one's offsets, tables and checkpoint, and takes both topics at once. Its
    rate counts the second lot only."""
    topics = Topics.for_namespace(settings.namespace)
    first = stack.FaustProcess("stream", "worker-first", settings, workdir, cores=cores)
    run_process(
        first, "first lot", topics.scored, args.count, timeout_s=args.timeout, services=services
    )
    since = stack.end_offsets(settings, topics.scored)
    labels = stack.labels_of(generated[: args.count], LABEL_DELAY_S)
    took = stack.publish(settings, [g.event for g in generated[args.count :]], labels)
    print(
        f"first lot scored; published its {len(labels):,} labels and {args.count:,} further "
        f"events in {took:.1f} s",
        flush=True,
    )
    worker = measured_process("stream", "worker", settings, workdir, args, cores)
    return run_process(
        worker,
        "worker, learning: python -m stream worker",
        topics.scored,
        2 * args.count,
        timeout_s=args.timeout,
        services=services,
        since=since,
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks worker",
        description="Worker throughput next to its ceiling (scoring in memory) and its "
        "floor (a per-event Faust agent), through a real Kafka broker and Redis started "
        "for the run.",
    )
    parser.add_argument("--count", type=int, default=200_000, help="events (default 200000)")
    parser.add_argument(
        "--skip-floor",
        action="store_true",
        help="measure the worker only (not the per-event floor nor Faust alone)",
    )
    parser.add_argument(
        "--timeout", type=float, default=150.0, help="seconds given to the worker (150)"
    )
    parser.add_argument(
        "--floor-timeout",
        type=float,
        default=60.0,
        help="seconds given to the floor and to Faust alone (60 each); a rate is measured "
        "on what they did by then",
    )
    parser.add_argument(
        "--learning",
        action="store_true",
        help="measure the worker scoring COUNT new events while it learns the labels of COUNT "
        "earlier ones (a first worker scores those before; see learning_run)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy both Faust processes into DIR"
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample the thread holding the interpreter lock only (CPU use), "
        "not every thread with its idle time",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give the Faust processes one core of their own: every other process this "
        "benchmark starts (the broker, Redis, itself) runs on the other cores (a broker or "
        "Redis given with the options below is not moved)",
    )
    stack.add_service_options(parser)
    args = parser.parse_args(argv)
    if args.pin and stack.cpu_count() < 2:
        parser.error("--pin needs at least 2 cores")
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.timeout <= 0 or args.floor_timeout <= 0:
        parser.error("timeouts must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    print(f"{stack.cpu_count()} cores; {args.count:,} synthetic transactions", flush=True)
    cores = None
    if args.pin:  # before any service starts: they inherit this process's cores
        everything = os.sched_getaffinity(0)
        cores = {min(everything)}
        os.sched_setaffinity(0, everything - cores)
        print(f"pinned: the Faust processes on core {min(cores)}, the rest on the others")
    started = time.perf_counter()
    generated = stack.generated_transactions(args.count * (2 if args.learning else 1))
    events = [g.event for g in generated[: args.count]]
    raw = [encode(event) for event in events]
    print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)

    # Before any service starts: a broker's JVM warming up would share the cores with it.
    print("ceiling: decode + score_batch + encode in memory ...", flush=True)
    full, alone = ceiling(raw, Settings.from_env())
    del raw

    with contextlib.ExitStack() as cleanup:
        workdir = stack.workdir(cleanup, args.workdir)
        svc = cleanup.enter_context(stack.services(workdir, args.bootstrap_servers, args.redis_url))
        settings = stack.bench_settings(svc.bootstrap, svc.redis_url)
        topics = Topics.for_namespace(settings.namespace)
        floor_topic = stack.floor_topic(settings.namespace)
        stack.create_topics(settings, [topics.scored, floor_topic])
        took = stack.publish(settings, events)
        print(f"published {len(events):,} events in {took:.1f} s", flush=True)
        del events

        runs = []
        if args.learning:
            runs.append(learning_run(args, settings, workdir, svc.pids, generated, cores))
        else:
            worker = measured_process("stream", "worker", settings, workdir, args, cores)
            runs.append(
                run_process(
                    worker,
                    "worker: python -m stream worker",
                    topics.scored,
                    args.count,
                    timeout_s=args.timeout,
                    services=svc.pids,
                )
            )
        del generated
        # The baselines run after the worker; each is listed above the runs before it.
        baselines = (
            (
                "benchmarks.plumbing_inbox",
                "plumbing-inbox",
                "inboxes alone: the worker's input path, no work",
                stack.inbox_plumbing_topic(settings.namespace),
                True,
            ),
            (
                "benchmarks.plumbing",
                "plumbing",
                "Faust alone: take_events, no work (plumbing)",
                stack.plumbing_topic(settings.namespace),
                True,
            ),
            (
                "benchmarks.naive",
                "floor",
                "floor: per-event Faust agent (faust.Record)",
                floor_topic,
                False,
            ),
        )
        skip = args.skip_floor or args.learning
        for module, name, label, output, counted in () if skip else baselines:
            baseline = measured_process(module, name, settings, workdir, args, cores)
            runs.insert(
                0,
                run_process(
                    baseline,
                    label,
                    output,
                    args.count,
                    timeout_s=args.floor_timeout,
                    services=svc.pids,
                    counted=counted,
                ),
            )

    print()
    print(f"{'':<52} {'events/s':>10} {'events':>9} {'total s':>8}")
    print(f"{'ceiling: score_batch alone (in memory)':<52} {alone:>10,.0f}")
    print(f"{'ceiling: decode + score_batch + encode (in memory)':<52} {full:>10,.0f}")
    for run in runs:
        note = "" if run.finished else "  (stopped at its timeout)"
        print(
            f"{run.label:<52} {run.span.rate:>10,.0f} {run.span.count:>9,} {run.total_s:>8.1f}"
            f"  (start-up {run.startup_s:.1f} s){note}"
        )
    for run in runs:
        print(f"{run.label.split(':')[0]}: {stack.describe_cpu(run.cpu_s, run.total_s)}")
        if run.scoring_cpu_s is not None:
            main, others = run.scoring_cpu_s
            per_event = 1e6 / (run.span.counted or run.span.count)
            span_s = run.span.last - run.span.first
            print(
                f"{'':<7}CPU from its first output to its last ({span_s:.1f} s): main thread "
                f"{main:.1f} s ({main * per_event:.0f} µs an event), other threads {others:.1f} "
                f"s ({others * per_event:.0f} µs)"
            )
        if run.steps:
            print(f"{'':<7}{run.steps:,} scoring steps, {run.span.count / run.steps:,.0f} each")
        if run.learned:  # none for a run without labels
            print(f"{'':<7}{run.learned:,} labels learned by the time the events were scored")
    if runs[-1].span.count > args.count:
        print(f"note: the worker wrote {runs[-1].span.count - args.count:,} events twice")
    if args.learning:
        print(
            "note: the learning worker was the second of two; the first scored the first "
            f"{args.count:,} events before their labels and these were published"
        )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
