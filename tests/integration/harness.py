"""Running real stream workers and reading real topics, for the integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer

from models.events import Email, ScoredEvent, Transaction, decode, encode, entity_key
from models.kafka_security import aiokafka_config
from models.settings import Settings
from models.topology import ensure_topics, topic_partitions

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


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


class TopicTail:
    """Every record of one topic from its start, read as it comes, in no consumer group.

    It reads with aiokafka, the workers' own client, on an event loop of its own thread, so
    that synchronous tests can poll it. A failure message should say how much the topic
    holds against what was read (:meth:`describe`), computed when the wait fails."""

    def __init__(self, settings: Settings, topic: str) -> None:
        """``topic`` is one of the namespace's: it is created, as a worker would create it,
        if it does not exist yet, so a reader can be set up before the workers start."""
        self.topic = topic
        self.values: list[bytes] = []
        ensure_topics(settings, only=[topic])
        self._partitions = [
            TopicPartition(topic, p) for p in range(topic_partitions(settings)[topic])
        ]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tail-{topic}", daemon=True
        )
        self._thread.start()
        try:
            self._consumer = self._call(self._open(settings), 60.0)
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _open(self, settings: Settings) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **aiokafka_config(settings),
        )
        await consumer.start()
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        return consumer

    def poll(self, timeout_s: float = 0.1) -> list[bytes]:
        """What arrived since the last call (waiting up to ``timeout_s`` for something);
        also appended to :attr:`values`."""
        batches = self._call(self._consumer.getmany(timeout_ms=int(timeout_s * 1000)), 30.0)
        new = [record.value for records in batches.values() for record in records]
        self.values.extend(new)
        return new

    def ends(self) -> dict[int, int]:
        """Each partition's end offset as the broker reports it now."""
        ends = self._call(self._consumer.end_offsets(self._partitions), 30.0)
        return {tp.partition: offset for tp, offset in ends.items()}

    def positions(self) -> dict[int, int]:
        """The offset this reader will read next, per partition."""
        return {
            tp.partition: self._call(self._consumer.position(tp), 30.0) for tp in self._partitions
        }

    def drain(self, timeout_s: float = 20.0) -> None:
        """Read up to the end offsets as they are now."""
        ends = self.ends()
        deadline = time.monotonic() + timeout_s
        while any(self.positions()[p] < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {self.describe()}"
            self.poll()

    def describe(self) -> str:
        """For failure messages: what the topic holds against what was read."""
        return f"{self.topic}: {len(self.values)} read, end offsets {self.ends()}"

    def close(self) -> None:
        try:
            self._call(self._consumer.stop(), 30.0)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        self._loop.close()


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
    tail = TopicTail(settings, topic)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            tail.poll(0.5)
            if until(tail.values):
                return tail.values
            if worker is not None and not worker.alive():
                raise AssertionError(f"worker died:\n{worker.log_tail()}")
        context = worker.log_tail() if worker is not None else ""
        raise AssertionError(f"timed out after {timeout_s}s reading {tail.describe()}\n{context}")
    finally:
        tail.close()
