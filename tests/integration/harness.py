"""Running real stream workers and reading real topics, for the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from models.events import Email, ScoredEvent, Transaction, decode, encode, entity_key
from models.kafka_security import kafka_python_config
from models.settings import Settings

REPO = Path(__file__).resolve().parents[2]


FAST_REJOIN = {
    # Faust reads these from the environment. 6 s is the broker's group.min.session.timeout;
    # with Faust's default (60 s) a worker restarted after a kill waits that long to rejoin.
    "BROKER_SESSION_TIMEOUT": "6",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """A real ``python -m stream worker`` subprocess with its own web port and data dir."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        name: str = "worker",
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.datadir = workdir / f"{name}-data"
        self.log_path = workdir / f"{name}.log"
        self.web_port = free_port()
        self.env = dict(env or {})
        """Extra environment (e.g. Faust's ``BROKER_SESSION_TIMEOUT``) on top of the settings."""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        env.update(self.settings.replace(web_port=self.web_port).to_env(), PYTHONUNBUFFERED="1")
        env.update(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "--datadir",
                str(self.datadir),
                "worker",
                "-l",
                "info",
                "--web-port",
                str(self.web_port),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit: the crash a test wants."""
        if self.proc is not None and self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class AlertsPageProcess:
    """A real ``python -m stream alerts-page`` subprocess on a free port, started and ready."""

    def __init__(self, settings: Settings, workdir: Path, name: str = "alerts-page") -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> AlertsPageProcess:
        env = dict(os.environ)
        env.update(self.settings.to_env(), PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "alerts-page", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alerts page exited:\n{self.log_tail()}")
            if "alerts page on http" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        raise AssertionError(f"alerts page did not start in {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def publish(settings: Settings, topic: str, events: Iterable[Any]) -> int:
    """Publish events keyed by entity (labels by event id), as the producers do."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    n = 0
    for event in events:
        key = entity_key(event) if isinstance(event, Transaction | Email) else event.event_id
        producer.send(topic, key=key.encode(), value=encode(event))
        n += 1
    producer.flush()
    producer.close()
    return n


def publish_raw(
    settings: Settings, topic: str, items: Iterable[tuple[bytes | None, bytes]]
) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for key, value in items:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def topic_reader(settings: Settings, topic: str, **config: Any) -> KafkaConsumer:
    """A consumer of every partition of ``topic`` from its start, in no group, with the
    settings' Kafka security.

    The partitions are assigned explicitly once the metadata has them (a group-less
    subscription was seen, in one CI run, never to get its partitions), and each is sought
    to its first offset as its leader reports it, not by ``seek_to_beginning``: a reader set
    up that way right after the topics were created read nothing in another CI run, with
    every event scored. Asking the leaders, again until they answer, leaves no offset for the
    consumer to reset on its own."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=500,  # a topic just created may be missing from the first answer
        **kafka_python_config(settings),
        **config,
    )
    deadline = time.monotonic() + 30.0
    while not (partitions := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            consumer.close()
            raise AssertionError(f"no partitions for {topic} after 30 s")
        consumer.topics()  # a metadata request
        time.sleep(0.2)
    parts = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(parts)
    while True:
        try:
            starts = consumer.beginning_offsets(parts, timeout_ms=5000)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                consumer.close()
                raise AssertionError(f"no first offsets for {topic} after 30 s: {exc}") from exc
            time.sleep(0.2)
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    return consumer


def scored_all(wanted: set[str]) -> Callable[[list[bytes]], bool]:
    """For :func:`collect` on the scored topic: true once every id in ``wanted`` is there."""
    return lambda values: wanted <= {decode(v, ScoredEvent).event_id for v in values}


def collect(
    settings: Settings,
    topic: str,
    until: Callable[[list[bytes]], bool],
    *,
    timeout_s: float = 90.0,
    worker: WorkerProcess | None = None,
) -> list[bytes]:
    """Read ``topic`` from the start until ``until(values)`` holds; fail with context if not."""
    consumer = topic_reader(settings, topic, consumer_timeout_ms=500)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for record in consumer:
                values.append(record.value)
            if until(values):
                return values
            if worker is not None and not worker.alive():
                raise AssertionError(f"worker died:\n{worker.log_tail()}")
        context = worker.log_tail() if worker is not None else ""
        raise AssertionError(
            f"timed out after {timeout_s}s reading {topic}: {len(values)} messages\n{context}"
        )
    finally:
        consumer.close()
