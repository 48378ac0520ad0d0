"""What every benchmark needs around the code it measures: a real broker and Redis, topics,
the same synthetic events, and reading back when outputs reached the broker.

Output topics are created with ``message.timestamp.type=LogAppendTime``: every message then
carries the broker's clock at the moment it was written, i.e. when a consumer could first see
it. Rates and latencies read those stamps, so the reading side never disturbs the figure (it
can read after the run, or fall behind, without changing what it measures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from models.events import Label, Transaction, utc_from_timestamp
from models.names import Metrics, Topics
from models.settings import Settings
from models.topology import topic_partitions
from producers.publisher import Publisher
from producers.transactions import TransactionSimulator
from producers.truth import Generated

REPO = Path(__file__).resolve().parents[1]
SEED = 42
START = 1_735_689_600.0  # 2025-01-01T00:00:00Z: simulated time, far from "now"
OUTPUT_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


@dataclass
class Services:
    """Where the broker and Redis are, and the pids of those started here (for CPU use)."""

    bootstrap: str
    redis_url: str
    pids: dict[str, int]


@contextlib.contextmanager
def services(
    workdir: Path,
    bootstrap: str | None = None,
    redis_url: str | None = None,
    *,
    with_redis: bool = True,
) -> Iterator[Services]:
    """The broker and Redis given, else a local broker / Redis started here (logs under
    ``workdir``) and stopped on exit; ``with_redis=False``: no Redis (``redis_url`` "")."""
    from local import KafkaBroker, RedisServer  # dev tooling, importable from the repo root

    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            print("starting a local Kafka broker ...", flush=True)
            broker = stack.enter_context(
                KafkaBroker(data_dir=workdir / "kafka-data", log_dir=workdir / "kafka")
            )
            bootstrap = broker.bootstrap
            if broker.process is not None:
                pids["kafka"] = broker.process.pid
        if redis_url is None and not with_redis:
            redis_url = ""
        elif redis_url is None:
            server = stack.enter_context(
                RedisServer(data_dir=workdir / "redis-data", log_dir=workdir / "redis")
            )
            redis_url = server.url
            if server.process is not None:
                pids["redis"] = server.process.pid
        print(f"Kafka at {bootstrap}" + (f", Redis at {redis_url}" if redis_url else ""))
        yield Services(bootstrap, redis_url, pids)


def floor_topic(namespace: str) -> str:
    """Output of :mod:`benchmarks.naive`."""
    return f"{namespace}.naive-scored.v1"


def plumbing_topic(namespace: str) -> str:
    """Output of :mod:`benchmarks.plumbing` (one message per step, holding its size)."""
    return f"{namespace}.plumbing.v1"


def plumbing_app(settings: Settings, name: str, output: str) -> tuple[Any, Any, Any]:
    """The stream worker's app class and consuming configuration (this is its upper bound),
    named ``<namespace>-<name>``; with the transactions topic to read and the ``output``
    topic to count steps on, both raw bytes."""
    # Imported here: importing stream.app builds (never starts) the worker's app, which only
    # the Faust processes of the plumbing baselines need.
    from stream.app import App, consuming_config

    app = App(f"{settings.namespace}-{name}", **consuming_config(settings))
    source = app.topic(
        Topics.for_namespace(settings.namespace).transactions,
        key_serializer="raw",
        value_serializer="raw",
    )
    counts = app.topic(output, key_serializer="raw", value_serializer="raw")
    return app, source, counts


def inbox_plumbing_topic(namespace: str) -> str:
    """Output of :mod:`benchmarks.plumbing_inbox` (one message per step, holding its size)."""
    return f"{namespace}.plumbing-inbox.v1"


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers``, ``--redis-url`` and ``--workdir``: the options of each benchmark
    that runs against the broker and Redis of :func:`services`."""
    parser.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT", help="use this broker instead of starting one"
    )
    parser.add_argument("--redis-url", metavar="URL", help="use this Redis instead of starting one")
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR", help="keep logs and data here (default: temp)"
    )


def workdir(cleanup: contextlib.ExitStack, path: Path | None) -> Path:
    """``path`` (created if needed) for logs and data, or a temporary folder that ``cleanup``
    removes: ``--workdir`` keeps a run's logs, the default leaves nothing behind."""
    if path is None:
        return Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def bench_settings(bootstrap: str, redis_url: str, **overrides: object) -> Settings:
    """Settings of a fresh namespace: topics, keys and consumer group nobody else uses.

    Other ``FRAUD_*`` variables of the environment (``FRAUD_BATCH_SIZE``...) are kept: they
    reach the benchmarked worker through :meth:`Settings.to_env`."""
    namespace = "bench" + uuid.uuid4().hex[:8]
    return Settings.from_env(
        None, namespace=namespace, kafka_bootstrap=bootstrap, redis_url=redis_url, **overrides
    )


def create_topics(settings: Settings, output_topics: Sequence[str] = ()) -> None:
    """Create the namespace's topics; ``output_topics`` (any names) get LogAppendTime stamps."""
    wanted = topic_partitions(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-admin")
    try:
        for name in [*wanted, *output_topics]:
            config = OUTPUT_TOPIC_CONFIG if name in output_topics else {}
            count = wanted.get(name, settings.partitions)
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            name, num_partitions=count, replication_factor=1, topic_configs=config
                        )
                    ]
                )
    finally:
        admin.close()


def synthetic_transactions(count: int, seed: int = SEED) -> list[Transaction]:
    """The producers' simulator (habits and fraud campaigns), in simulated time."""
    return [generated.event for generated in generated_transactions(count, seed)]


def generated_transactions(count: int, seed: int = SEED) -> list[Generated[Transaction]]:
    """:func:`synthetic_transactions` with what the simulator knows of each (fraud or not)."""
    simulator = TransactionSimulator(seed, start=START)
    return [next(simulator) for _ in range(count)]


def labels_of(generated: Sequence[Generated[Transaction]], delay_s: float) -> list[Label]:
    """Each transaction's true label, arriving ``delay_s`` after it (simulated time)."""
    return [
        Label(
            event_id=g.event.event_id,
            event_time=utc_from_timestamp(g.event.timestamp + delay_s),
            kind="transaction",
            is_positive=g.is_positive,
        )
        for g in generated
    ]


def publish(
    settings: Settings, events: Sequence[Transaction], labels: Sequence[Label] = ()
) -> float:
    """Publish to the transactions topic (and the labels to the labels topic) as the
    producers do; return the seconds it took."""
    topics = Topics.for_namespace(settings.namespace)
    started = time.perf_counter()
    with Publisher.from_settings(settings, client_id="bench-publisher") as publisher:
        for label in labels:
            publisher.publish_label(topics.labels, label)
        for event in events:
            publisher.publish(topics.transactions, event)
    return time.perf_counter() - started


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> the offset the next message of ``topic`` will get."""
    consumer = _consumer(settings)
    try:
        ends = consumer.end_offsets(_partitions(consumer, topic))
        return {tp.partition: end for tp, end in ends.items()}
    finally:
        consumer.close()


def _consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        client_id="bench-reader",
    )


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    found = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(found)]


def read_all(
    settings: Settings, topic: str, *, client_id: str, timeout_s: float = 120.0
) -> Iterator[tuple[bytes, float]]:
    """Every message of ``topic`` as it is now, from the start: (value, the broker's stamp in
    POSIX seconds). Raises ``TimeoutError`` when it cannot reach the end in ``timeout_s``."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        client_id=client_id,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        tps = _partitions(consumer, topic)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=1000, max_records=50_000).values():
                for record in records:
                    yield record.value, record.timestamp / 1000.0
    finally:
        consumer.close()


def message_count(consumer: KafkaConsumer, topic: str) -> int:
    tps = _partitions(consumer, topic)
    if not tps:
        return 0
    ends = consumer.end_offsets(tps)
    begins = consumer.beginning_offsets(tps)
    return sum(ends[tp] - begins[tp] for tp in tps)


def wait_for_messages(
    settings: Settings,
    topic: str,
    count: int,
    *,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    progress_s: float = 5.0,
    on_first: Callable[[], None] | None = None,
    held_before: int = 0,
) -> int:
    """Poll the end offsets of ``topic`` (cheap: no message is read) until it holds ``count``
    messages; return how many it holds. Raises ``TimeoutError`` or ``RuntimeError`` (dead).
    ``on_first`` is called once, as soon as the topic holds more than ``held_before``
    messages (polled every 20 ms until then, every 250 ms after)."""
    consumer = _consumer(settings)
    try:
        deadline = time.monotonic() + timeout_s
        next_report = time.monotonic() + progress_s
        while True:
            n = message_count(consumer, topic)
            if n > held_before and on_first is not None:
                on_first()
                on_first = None
            if n >= count:
                return n
            if not alive():
                raise RuntimeError(f"the process under test died with {n:,}/{count:,} done")
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"{n:,}/{count:,} messages on {topic} after {timeout_s:.0f} s")
            if now >= next_report:
                print(f"  ... {n:,}/{count:,} scored", flush=True)
                next_report = now + progress_s
            time.sleep(0.02 if on_first is not None else 0.25)
    finally:
        consumer.close()


@dataclass(frozen=True)
class Span:
    """Events a process output, and the broker stamps of its first and last output."""

    count: int
    first: float
    last: float
    counted: int | None = None
    """Events done between the two stamps, when not ``count`` (see :func:`wait_for_counted`)."""

    @property
    def rate(self) -> float:
        done = self.count if self.counted is None else self.counted
        return done / (self.last - self.first) if self.last > self.first else float("nan")


def topic_span(settings: Settings, topic: str, since: Mapping[int, int] | None = None) -> Span:
    """Count and first/last timestamps of ``topic``, reading two messages per partition;
    with ``since`` (partition -> offset, :func:`end_offsets` of an earlier moment), of the
    messages written after it only."""
    consumer = _consumer(settings)
    try:
        tps = _partitions(consumer, topic)
        ends, begins = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        if since is not None:
            begins = {tp: max(offset, since.get(tp.partition, 0)) for tp, offset in begins.items()}
        stamps: list[int] = []
        for tp in tps:
            for offset in sorted({begins[tp], ends[tp] - 1}):
                if offset < begins[tp]:
                    continue
                consumer.assign([tp])
                consumer.seek(tp, offset)
                records = consumer.poll(timeout_ms=10_000, max_records=1).get(tp, [])
                if not records:
                    raise RuntimeError(f"could not read {tp.topic}[{tp.partition}]@{offset}")
                stamps.append(records[0].timestamp)
        count = sum(ends[tp] - begins[tp] for tp in tps)
        if not stamps:
            return Span(0, float("nan"), float("nan"))
        return Span(count, min(stamps) / 1000.0, max(stamps) / 1000.0)
    finally:
        consumer.close()


def wait_for_counted(
    settings: Settings,
    topic: str,
    count: int,
    *,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> Span:
    """For a topic whose messages each hold a number of events (:mod:`benchmarks.plumbing`):
    read it until they add up to ``count``; the span's count is that sum. A timeout or a
    dead process ends the wait early, with what was counted."""
    consumer = _consumer(settings)
    steps: list[tuple[float, int]] = []
    total = 0
    try:
        deadline = time.monotonic() + timeout_s
        while not _partitions(consumer, topic) and time.monotonic() < deadline:
            time.sleep(0.25)
        tps = _partitions(consumer, topic)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while total < count and time.monotonic() < deadline and alive():
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    steps.append((record.timestamp / 1000.0, int(record.value)))
                    total += int(record.value)
    finally:
        consumer.close()
    if len(steps) < 2:
        return Span(total, float("nan"), float("nan"))
    steps.sort()
    # Each stamp closes a step: the first step's events were taken before the first stamp.
    return Span(total, steps[0][0], steps[-1][0], counted=total - steps[0][1])


_CORES = len(os.sched_getaffinity(0))


def cpu_count() -> int:
    """The cores this benchmark may use, counted when it started (``--pin`` moves it)."""
    return _CORES


def free_port() -> int:
    from local import free_ports

    return free_ports(1)[0]


_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process now (``VmRSS``), in MiB; NaN when it has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of a process's main thread and of all its other threads
    (those alive now: a thread that ended took its count with it); zeros once it is gone."""
    main = others = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        if task.name == str(pid):
            main += seconds
        else:
            others += seconds
    return main, others


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


class FaustProcess:
    """``python -m <module> --datadir DIR worker -l info --web-port N`` (a stream worker, or
    the naive floor) with the namespace's ``FRAUD_*`` settings, logging to ``<name>.log``.

    ``cores``: the only cores it may run on (set right after it starts, before its imports
    are done and any thread other than its main one exists).

    ``extra_env`` adds or overrides variables (``FRAUD_BATCH_WITHIN_S``...); ``profile``
    attaches ``py-spy record`` (raw collapsed stacks) to it: of every thread, idle included,
    or with ``profile_gil`` of the thread holding the interpreter lock only (where the CPU
    goes, without the time threads wait for the lock or for I/O).
    """

    def __init__(
        self,
        module: str,
        name: str,
        settings: Settings,
        workdir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        profile: Path | None = None,
        profile_gil: bool = False,
        cores: set[int] | None = None,
    ) -> None:
        self.module = module
        self.cores = cores
        self.name = name
        self.settings = settings
        self.workdir = workdir
        self.web_port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.extra_env = extra_env or {}
        self.profile = profile
        self.profile_gil = profile_gil
        self.proc: subprocess.Popen[bytes] | None = None
        self._spy: subprocess.Popen[bytes] | None = None
        self.started_at = float("nan")

    def start(self) -> FaustProcess:
        env = dict(os.environ)
        env.update(self.settings.replace(web_port=self.web_port).to_env(), PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        cmd = [
            sys.executable, "-m", self.module, "--datadir", str(self.workdir / f"{self.name}-data"),
            "worker", "-l", "info", "--web-port", str(self.web_port),
        ]  # fmt: skip
        print(f"{self.name}: python -m {self.module} worker (log {self.log_path})", flush=True)
        self.started_at = time.time()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if self.cores is not None:  # every thread it starts inherits the affinity
            os.sched_setaffinity(self.proc.pid, self.cores)
        if self.profile is not None:
            self.profile.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
            self._spy = subprocess.Popen(
                [spy, "record", "--pid", str(self.proc.pid), "--rate", "100", "--format", "raw",
                 "--gil" if self.profile_gil else "--idle",
                 "--output", str(self.profile / f"{self.name}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metric_sum(self, series: str, where: str = "") -> float | None:
        """The sum of every sample of ``series`` (all label sets, or those whose labels
        include ``where``) on the worker's ``/metrics``, None when it cannot be read."""
        try:
            url = f"http://127.0.0.1:{self.web_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((f"{series} ", f"{series}{{")) and where in line
        )

    def labels_learned(self) -> int | None:
        """Labels the worker learned (``fraud_labels_total{outcome="learned"}``), if known."""
        learned = self.metric_sum(Metrics.LABELS, where='outcome="learned"')
        return None if learned is None else int(learned)

    def scoring_steps(self) -> int | None:
        """Batches the worker scored (``fraud_scoring_latency_seconds_count``), if known."""
        steps = self.metric_sum(f"{Metrics.SCORING_LATENCY}_count")
        return None if steps is None else int(steps)

    def stop(self) -> None:
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)
            try:
                self._spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._spy.kill()
            self._spy = None
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> FaustProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CpuMeter:
    """CPU seconds used between :meth:`start` and :meth:`read` by named processes, by this
    process, and by everything else on the machine (other users of the two cores)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._before: dict[str, float] = {}
        self._busy = 0.0

    def start(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._before["this script"] = cpu_seconds(os.getpid())
        self._busy = machine_busy_seconds()
        return self

    def add(self, name: str, pid: int) -> None:
        """Count a process started after :meth:`start` from its birth."""
        self.pids[name] = pid
        self._before[name] = 0.0

    def read(self, finished: dict[str, float] | None = None) -> dict[str, float]:
        """CPU seconds so far; ``finished``: those of processes that ended meanwhile (their
        own count: /proc no longer has them)."""
        used = {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}
        used.update(finished or {})
        used["this script"] = cpu_seconds(os.getpid()) - self._before["this script"]
        busy = machine_busy_seconds() - self._busy
        used["anything else"] = max(0.0, busy - sum(used.values()))
        return used


def describe_cpu(used: dict[str, float], wall_s: float) -> str:
    parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())
    return f"CPU seconds over {wall_s:.1f} s on {cpu_count()} cores: {parts}"
