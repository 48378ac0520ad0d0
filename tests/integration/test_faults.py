"""Faults against the real Kafka broker and the real Redis, while events stream (issue 6).

Each test injects one fault into a running pipeline of real ``python -m stream worker``
processes (or a real ``python -m batch retrain``) and then checks what the design promises:

* **No event is lost.** Every event produced (acknowledged by the broker) is on the scored
  topic, and every malformed message mixed into the stream is on the dead-letter topic, by
  event id / raw bytes.
* **Replays are idempotent.** An event scored twice (offsets not yet committed at a crash) is
  scored from the features it was served the first time, and the card histories are
  neither lost nor double-counted: ``txn-n`` of the test stream must see exactly ``n // 50``
  earlier transactions of its card (``factories.transaction``: card ``n % 50``, one second
  apart).
* **One alert per event.** ``alert_id`` is derived from the event id; the Redis stream the
  alerts page reads holds each alert once; the alerts topic holds every alert of the stream
  at least once, a repeat being the same bytes (a replay sends the claimed alert again, so
  that a crash between the claim and the broker's acknowledgement loses nothing); every
  event flagged when first scored has its alert.
* **Learning resumes and labels count once.** The checkpoint version in Redis never goes
  backwards, a restarted worker loads the version that was saved, and at the end the model
  has learned exactly as many labels as distinct events were labelled.

The broker's session timeout bounds how long a killed worker keeps its partitions; the
workers here ask for the broker's minimum (6 s) through Faust's own environment settings so
a restart does not wait a minute for the dead member to expire.

The last three tests set up the crash windows those faults hit only by chance, one step at
a time, with ``StreamWorker`` driven directly.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from batch.announce import announce_model
from batch.synthetic import fill_lake
from local import KafkaBroker, RedisServer
from models import weights
from models.batch_registry import BatchModelRegistry
from models.events import Alert, DeadLetter, Label, ModelUpdate, ScoredEvent, decode, encode
from models.names import EVENT_KINDS, RedisKeys, Topics, consumer_group
from models.online import OnlineModel
from models.registry import OnlineCheckpoints
from models.settings import Settings
from models.topology import ensure_topics
from stream import worker as worker_module
from stream.worker import RawMessage, StreamWorker
from tests import factories
from tests.integration.harness import FAST_REJOIN, REPO, TopicTail, WorkerProcess
from tests.integration.harness import publish as publish_events

pytestmark = pytest.mark.integration

SIGNING_KEY = "fault-test-signing-key"
CARDS = 50  # factories.transaction: card n % 50, event time T0 + n seconds


# ---------------------------------------------------------------------------------- helpers


def faults_settings(namespace: str, kafka_bootstrap: str, redis_url: str) -> Settings:
    """A namespace of its own with its topics created; checkpoints at least every 0.3 s."""
    settings = Settings(
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        partitions=4,
        checkpoint_interval_s=0.3,
        model_signing_key=SIGNING_KEY,
    )
    ensure_topics(settings)
    return settings


def bad_message(n: int) -> bytes:
    """A malformed transaction that names itself, so its dead letter can be traced back."""
    return b'{"event_id": "bad-%06d", "amount": "not a number"}' % n


class Feed:
    """Publishes ``txn-000000`` .. in order from a thread at about ``rate`` per second, as the
    producers do (keyed by card), with a malformed message after every ``bad_every``-th event
    and, ``label_lag`` events behind, the label of each event (fraud when its amount is above
    60). It stops after ``count`` events, or earlier when told (:meth:`finish`). ``ids`` /
    ``bad`` / ``labelled`` are what the broker acknowledged once :meth:`join` returned."""

    def __init__(
        self,
        settings: Settings,
        *,
        count: int,
        rate: float,
        bad_every: int = 0,
        label_lag: int = 0,
    ) -> None:
        self.settings = settings
        self.topics = Topics.for_namespace(settings.namespace)
        self.count, self.rate = count, rate
        self.bad_every, self.label_lag = bad_every, label_lag
        self.sent = 0
        self.ids: list[str] = []
        self.bad: list[bytes] = []
        self.labelled: list[str] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    def finish(self, more: int) -> Feed:
        """Stop after ``more`` further events (sooner if ``count`` comes first)."""
        self.count = min(self.count, self.sent + more)
        return self

    def join(self, timeout_s: float = 120.0) -> Feed:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the feed did not finish"
        if self._error is not None:
            raise AssertionError(f"the feed failed: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, linger_ms=5)
        futures: list[Any] = []
        try:
            tick = 0.05
            per_tick = max(1, round(self.rate * tick))
            next_at = time.monotonic()
            while self.sent < self.count:
                end = min(self.count, self.sent + per_tick)
                for n in range(self.sent, end):
                    self._send_one(producer, futures, n)
                self.sent = end
                next_at += tick
                time.sleep(max(0.0, next_at - time.monotonic()))
            producer.flush(timeout=120)
            for future in futures:
                future.get(timeout=120)  # raises if the broker never acknowledged it
        except BaseException as exc:
            self._error = exc
        finally:
            producer.close(timeout=10)

    def _send_one(self, producer: KafkaProducer, futures: list[Any], n: int) -> None:
        txn = factories.transaction(n)
        futures.append(
            producer.send(self.topics.transactions, key=txn.card_id.encode(), value=encode(txn))
        )
        self.ids.append(txn.event_id)
        if self.bad_every and n % self.bad_every == self.bad_every - 1:
            raw = bad_message(n)
            futures.append(producer.send(self.topics.transactions, key=b"card-bad", value=raw))
            self.bad.append(raw)
        if self.label_lag and n >= self.label_lag:
            old = factories.transaction(n - self.label_lag)
            label = factories.label(old.event_id, "transaction", old.amount > 60)
            futures.append(
                producer.send(self.topics.labels, key=old.event_id.encode(), value=encode(label))
            )
            self.labelled.append(old.event_id)


class Outputs:
    """What the workers wrote, read as it comes: scored events, dead letters, alerts."""

    def __init__(self, settings: Settings) -> None:
        topics = Topics.for_namespace(settings.namespace)
        self.keys = RedisKeys(settings.namespace)
        self._scored = TopicTail(settings, topics.scored)
        self._letters = TopicTail(settings, topics.dead_letters)
        self._alerts = TopicTail(settings, topics.alerts)
        self._decoded = 0
        self.scored: dict[str, list[ScoredEvent]] = {}

    def poll(self) -> None:
        for tail in (self._scored, self._letters, self._alerts):
            tail.poll()
        for value in self._scored.values[self._decoded :]:
            event = decode(value, ScoredEvent)
            self.scored.setdefault(event.event_id, []).append(event)
        self._decoded = len(self._scored.values)

    @property
    def letters(self) -> list[DeadLetter]:
        return [decode(v, DeadLetter) for v in self._letters.values]

    @property
    def alerts(self) -> list[Alert]:
        return [decode(v, Alert) for v in self._alerts.values]

    @property
    def alert_values(self) -> list[bytes]:
        return list(self._alerts.values)

    def describe(self) -> str:
        """What the topics hold against what was read, for failure messages."""
        return "; ".join(tail.describe() for tail in (self._scored, self._letters, self._alerts))

    def close(self) -> None:
        for tail in (self._scored, self._letters, self._alerts):
            tail.close()


class LazyText:
    """Text computed only when a failure message is formatted. Pass the object itself: inside
    an f-string it would be formatted at once, describing the start of the wait."""

    def __init__(self, make: Callable[[], str]) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()


def wait_until(
    condition: Callable[[], bool],
    what: str | LazyText,
    *,
    timeout_s: float = 60.0,
    outputs: Outputs | None = None,
    workers: Sequence[WorkerProcess] = (),
    every: Callable[[], None] | None = None,
) -> float:
    """Poll until ``condition()``; fail with the workers' logs if they die or time runs out.
    Returns the seconds waited."""
    started = time.monotonic()
    while True:
        if outputs is not None:
            outputs.poll()
        if every is not None:
            every()
        if condition():
            return time.monotonic() - started
        for worker in workers:
            assert worker.alive(), f"{worker.log_path.name} died:\n{worker.log_tail()}"
        if time.monotonic() - started > timeout_s:
            logs = "\n".join(f"--- {w.log_path.name}\n{w.log_tail(25)}" for w in workers)
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")
        if outputs is None:
            time.sleep(0.1)


class Checkpoints:
    """Reads the online checkpoint in Redis and records every version seen."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client, self.keys = client, keys
        self.seen: list[int] = []

    def version(self) -> int:
        try:
            raw = self.client.hget(self.keys.online_checkpoint, "version")
        except redis.ConnectionError:  # Redis itself is being restarted by the test
            return self.seen[-1] if self.seen else 0
        version = int(raw) if raw is not None else 0
        self.seen.append(version)
        return version

    def learned(self, kind: str = "transaction") -> int:
        state = self.client.hget(self.keys.online_checkpoint, f"state:{kind}")
        return 0 if state is None else OnlineModel.from_state(msgspec.json.decode(state)).learned

    def assert_monotonic(self) -> None:
        assert self.seen == sorted(self.seen), f"the checkpoint went backwards: {self.seen}"


def loaded_versions(worker: WorkerProcess) -> list[int]:
    """The checkpoint versions the worker loaded (its log line at start and on refresh)."""
    text = worker.log_path.read_text(errors="replace")
    return [int(v) for v in re.findall(r"online models at checkpoint version (\d+)", text)]


def ready(worker: WorkerProcess) -> bool:
    """Faust says the worker is ready (joined the group, tables recovered)."""
    return "[^Worker]: Ready" in worker.log_path.read_text(errors="replace")


def wait_all_scored(
    outputs: Outputs,
    feed: Feed,
    workers: Sequence[WorkerProcess],
    *,
    timeout_s: float = 90.0,
    every: Callable[[], None] | None = None,
) -> float:
    wanted, bad = set(feed.ids), set(feed.bad)

    def done() -> bool:
        return wanted <= outputs.scored.keys() and bad <= {x.raw for x in outputs.letters}

    def missing() -> str:
        lost = sorted(wanted - outputs.scored.keys())
        letters = bad - {x.raw for x in outputs.letters}
        return (
            f"(missing {len(lost)} events {lost[:8]} and {len(letters)} dead letters; "
            f"{outputs.describe()})"
        )

    return wait_until(
        done,
        LazyText(lambda: f"{len(wanted)} scored events and {len(bad)} dead letters {missing()}"),
        timeout_s=timeout_s,
        outputs=outputs,
        workers=workers,
        every=every,
    )


def wait_scoring_resumes(outputs: Outputs, down_at: int, worker: WorkerProcess, after: str) -> None:
    """Wait for 200 events scored beyond ``down_at`` (the count when the fault began)."""
    wait_until(
        lambda: len(outputs.scored) >= down_at + 200,
        f"scoring after {after}",
        outputs=outputs,
        workers=[worker],
    )


def assert_nothing_lost(
    outputs: Outputs,
    feed: Feed,
    workers: Sequence[WorkerProcess],
    checkpoints: Checkpoints,
    r: redis.Redis,
) -> None:
    """What every fault test ends with: every event scored or dead-lettered, each label
    learned once, no alert repeated, and checkpoints that never went back."""
    wait_all_scored(outputs, feed, workers, every=checkpoints.version)
    assert_labels_counted_once(checkpoints, feed, workers)
    assert_accounted(outputs, feed, r)
    checkpoints.assert_monotonic()


def assert_accounted(outputs: Outputs, feed: Feed, r: redis.Redis) -> Counter[str]:
    """Every event produced was scored or dead-lettered, replays were idempotent and the
    card histories exact; alerts are unique and agree with the Redis stream. Returns how
    many times each event was scored (a replay scores an event again)."""
    scored = outputs.scored
    assert scored.keys() == set(feed.ids), "an event was lost, or one nobody sent was scored"
    letters = outputs.letters
    assert {x.raw for x in letters} == set(feed.bad), "a malformed message was not dead-lettered"
    assert all(b"bad-" in x.raw for x in letters), "a good event was dead-lettered"

    for event_id, events in scored.items():
        n = int(event_id.removeprefix("txn-"))
        for event in events:
            assert event.features == events[0].features, f"{event_id} replayed with new features"
        count = events[0].features["card_count_24h"]
        assert count == n // CARDS, f"{event_id} saw {count} earlier transactions of its card"

    # One alert per alerting event: in the Redis stream once, on the topic at least once
    # (a replay sends the alert its claim holds again: the same bytes, never a new alert).
    stream_ids = [
        msgspec.json.decode(fields[b"alert"], type=Alert).alert_id
        for _, fields in r.xrange(outputs.keys.alerts_stream)
    ]
    assert len(stream_ids) == len(set(stream_ids)), Counter(stream_ids).most_common(3)
    wait_until(
        lambda: {a.alert_id for a in outputs.alerts} >= set(stream_ids),
        "the alerts of the Redis stream on the alerts topic",
        timeout_s=15,
        outputs=outputs,
    )
    copies: dict[str, set[bytes]] = {}
    for raw, alert in zip(outputs.alert_values, outputs.alerts, strict=True):
        copies.setdefault(alert.alert_id, set()).add(raw)
    changed = [alert_id for alert_id, versions in copies.items() if len(versions) > 1]
    assert not changed, f"an event raised two different alerts: {changed[:3]}"
    assert copies.keys() == set(stream_ids)
    assert all(a.alert_id == f"alert-{a.event_id}" for a in outputs.alerts)
    alerted = {a.event_id for a in outputs.alerts}
    flagged = {eid for eid, events in scored.items() if events[0].decision != "allow"}
    assert flagged <= alerted, f"flagged events without an alert: {sorted(flagged - alerted)[:5]}"
    assert alerted <= scored.keys()
    return Counter({eid: len(events) for eid, events in scored.items()})


def assert_labels_counted_once(
    checkpoints: Checkpoints, feed: Feed, workers: Sequence[WorkerProcess]
) -> None:
    """The model learned each labelled event once: no label lost, none learned twice."""
    labelled = sorted(set(feed.labelled))
    keys, client = checkpoints.keys, checkpoints.client

    def unlearned() -> str:
        missing = [eid for eid in labelled if not client.exists(keys.labelled(eid))]
        waiting = [eid for eid in missing if client.exists(keys.waiting_label(eid))]
        served = [eid for eid in missing if client.exists(keys.served(eid))]
        tail = TopicTail(feed.settings, feed.topics.labels)
        tail.drain()
        tail.close()
        copies = Counter(decode(v, Label).event_id for v in tail.values)
        return (
            f"{len(missing)} without a learned-marker {missing[:5]}, {len(waiting)} waiting, "
            f"{len(served)} served, copies on the labels topic {[copies[m] for m in missing[:5]]}"
        )

    try:
        wait_until(
            lambda: checkpoints.learned() >= len(labelled),
            f"{len(labelled)} labels learned",
            timeout_s=30,
            workers=workers,
        )
    except AssertionError as exc:
        raise AssertionError(f"{unlearned()}; learned {checkpoints.learned()}\n{exc}") from None
    time.sleep(0.5)  # a label learned twice would show up by the next checkpoint
    assert checkpoints.learned() == len(labelled), unlearned()
    marked = client.exists(*(keys.labelled(eid) for eid in labelled))
    assert marked == len(labelled), unlearned()


# ----------------------------------------------------------------------------------- tests


def test_worker_killed_three_times_mid_stream_loses_nothing(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    """kill -9 the only worker three times while events and labels flow, restarting it each
    time; the restarted worker resumes from the checkpoint the killed one saved."""
    settings = faults_settings(namespace, kafka_bootstrap, redis_url)
    r = redis.Redis.from_url(redis_url)
    checkpoints = Checkpoints(r, RedisKeys(namespace))
    outputs = Outputs(settings)
    worker = WorkerProcess(settings, tmp_path, "w0", env=FAST_REJOIN).start()
    feed = Feed(settings, count=20_000, rate=120, bad_every=97, label_lag=120).start()
    try:
        for kill in range(1, 4):
            # Kill while the worker is busy with the stream: it scored new events lately.
            progress = len(outputs.scored) + 150
            wait_until(
                lambda p=progress: len(outputs.scored) >= p,
                f"kill {kill}: the stream under way",
                outputs=outputs,
                workers=[worker],
                every=checkpoints.version,
            )
            worker.kill()
            saved = checkpoints.version()  # nobody else writes it now
            worker = WorkerProcess(settings, tmp_path, f"w{kill}", env=FAST_REJOIN).start()
            wait_until(lambda w=worker: bool(loaded_versions(w)), "the restart", workers=[worker])
            assert loaded_versions(worker)[0] == saved, "the restart did not resume the checkpoint"
        feed.finish(more=200).join()
        assert_nothing_lost(outputs, feed, [worker], checkpoints, r)
        assert checkpoints.seen[-1] >= 3, "learning did not go on across the kills"
    finally:
        feed.finish(0)
        worker.kill()
        outputs.close()


def test_redis_restarted_mid_stream_loses_nothing(namespace, kafka_bootstrap, tmp_path):
    """Redis (append-only file on) stops for a few seconds while events and labels flow, and
    comes back on the same port with the same data directory; the worker waits for it."""
    server = RedisServer(persistent=True, data_dir=tmp_path / "redis", log_dir=tmp_path)
    server.start()
    settings = faults_settings(namespace, kafka_bootstrap, server.url)
    r = redis.Redis.from_url(server.url)
    checkpoints = Checkpoints(r, RedisKeys(namespace))
    outputs = Outputs(settings)
    worker = WorkerProcess(settings, tmp_path, env=FAST_REJOIN).start()
    feed = Feed(settings, count=20_000, rate=150, bad_every=97, label_lag=120).start()
    try:
        wait_until(
            lambda: len(outputs.scored) >= 300 and checkpoints.version() >= 1,
            "the stream under way",
            outputs=outputs,
            workers=[worker],
        )
        before = checkpoints.version()
        server.stop()
        down_at = len(outputs.scored)
        time.sleep(3.0)  # down for longer than the Redis client's own retries last
        server.start()
        assert checkpoints.version() >= before, "the restart lost the checkpoint"
        wait_scoring_resumes(outputs, down_at, worker, "Redis came back")
        feed.finish(more=200).join()
        assert_nothing_lost(outputs, feed, [worker], checkpoints, r)
        assert worker.alive(), worker.log_tail()
        assert "Redis unreachable while" in worker.log_path.read_text(), "no outage was seen"
    finally:
        feed.finish(0)
        worker.kill()
        outputs.close()
        server.stop()


def test_kafka_broker_restarted_mid_stream_loses_nothing(namespace, redis_url, tmp_path):
    """The broker (its own, not the session's) stops cleanly while events and labels flow and
    starts again on the same ports with the same data directory; the worker reconnects."""
    broker = KafkaBroker(data_dir=tmp_path / "kafka-data", log_dir=tmp_path)
    broker.start()
    settings = faults_settings(namespace, broker.bootstrap, redis_url)
    r = redis.Redis.from_url(redis_url)
    checkpoints = Checkpoints(r, RedisKeys(namespace))
    outputs = Outputs(settings)
    worker = WorkerProcess(settings, tmp_path, env=FAST_REJOIN).start()
    feed = Feed(settings, count=20_000, rate=150, bad_every=97, label_lag=120).start()
    try:
        wait_until(
            lambda: len(outputs.scored) >= 300 and checkpoints.version() >= 1,
            "the stream under way",
            outputs=outputs,
            workers=[worker],
        )
        broker.stop()
        broker.start()
        down_at = len(outputs.scored)
        wait_scoring_resumes(outputs, down_at, worker, "the broker came back")
        feed.finish(more=200).join()
        assert_nothing_lost(outputs, feed, [worker], checkpoints, r)
        assert worker.alive(), worker.log_tail()
    finally:
        feed.finish(0)
        worker.kill()
        outputs.close()
        broker.stop()


def registry_state(r: redis.Redis, namespace: str) -> dict[str, Any]:
    """Every batch-model key of the namespace with its value (blobs, pointers, histories)."""
    state: dict[str, Any] = {}
    for key in r.scan_iter(match=f"{namespace}:model:batch:*"):
        state[key.decode()] = r.lrange(key, 0, -1) if r.type(key) == b"list" else r.get(key)
    return state


def test_retrain_killed_mid_fit_leaves_production_untouched(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    lake = tmp_path / "lake"
    fill_lake(lake, "transaction", 8000, seed=3, positive_rate=0.02, label_delay_s=1800)
    settings = faults_settings(namespace, kafka_bootstrap, redis_url).replace(
        lake_dir=str(lake), runs_dir=str(tmp_path / "runs"), retrain_budget_s=60.0
    )
    r = redis.Redis.from_url(redis_url)
    registry = BatchModelRegistry(r, RedisKeys(namespace))
    for version in ("txn-prod-0", "txn-prod-1"):
        model = factories.batch_model(version)
        registry.publish("transaction", version, weights.sign(model, SIGNING_KEY.encode()))
    before = registry_state(r, namespace)
    assert registry.versions("transaction") == ["txn-prod-1", "txn-prod-0"]

    env = {**os.environ, **settings.to_env()}
    # --force: had it finished, it would have replaced production whatever the gate said.
    argv = ["retrain", "--kind", "transaction", "--force", "--profile-period-s", "3600"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "features done" in line:  # the next stage, the fit, has started
                proc.send_signal(signal.SIGKILL)
                break
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    output = "".join(seen) + rest
    assert proc.returncode == -signal.SIGKILL, output
    assert "examples done" in output and "fit done" not in output, output

    assert registry_state(r, namespace) == before, "a killed retrain changed the registry"
    assert registry.current("transaction") == "txn-prod-1"
    version, blob = registry.current_blob("transaction")
    assert weights.verify(blob, SIGNING_KEY, kind="transaction").version == version
    updates = TopicTail(settings, Topics.for_namespace(namespace).model_updates)
    updates.drain()
    updates.close()
    announced = [decode(value, ModelUpdate) for value in updates.values]
    assert announced == [], "a killed retrain announced a model"
    assert not any((tmp_path / "runs").rglob("report.md")), "a killed run left a report"


def scrape(worker: WorkerProcess, metric: str) -> dict[str, float]:
    """One metric's samples from the worker's /metrics page, by label set."""
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        text = page.read().decode()
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{metric}\{{(.*?)\}} (\S+)$", text, re.MULTILINE)
    }


def test_truncated_and_resigned_model_payloads_are_refused_and_scoring_goes_on(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    """test_hot_swap covers a flipped byte; here the blob is cut short in Redis (a partial
    write: not even an envelope) and an envelope whose payload was cut short is published
    the regular way (the signature no longer matches). Both are refused with the reason in
    the log while the stream flows; the model in use stays, and no event is lost."""
    settings = faults_settings(namespace, kafka_bootstrap, redis_url)
    r = redis.Redis.from_url(redis_url)
    keys = RedisKeys(namespace)
    registry = BatchModelRegistry(r, keys)
    outputs = Outputs(settings)
    worker = WorkerProcess(settings, tmp_path).start()
    wait_until(lambda: ready(worker), "the worker", workers=[worker])
    feed = Feed(settings, count=5000, rate=150, bad_every=97).start()

    def refusals() -> list[str]:
        return re.findall(
            r"refused transaction batch model (\S+): ([^;]*);", worker.log_path.read_text()
        )

    try:
        wait_until(lambda: len(outputs.scored) >= 50, "scoring", outputs=outputs, workers=[worker])
        good = weights.sign(factories.batch_model("txn-good"), SIGNING_KEY.encode())
        registry.publish("transaction", "txn-good", good)
        announce_model(settings, "transaction", "txn-good")
        wait_until(
            lambda: any(e[0].batch_version == "txn-good" for e in outputs.scored.values()),
            "the swap to txn-good",
            outputs=outputs,
            workers=[worker],
        )
        swapped_at = feed.sent

        # Cut short in Redis itself: not even a readable envelope.
        truncated = weights.sign(
            factories.batch_model("txn-cut-blob", seed=1), SIGNING_KEY.encode()
        )
        r.set(keys.batch_model("transaction", "txn-cut-blob"), truncated[: len(truncated) // 2])
        r.set(keys.batch_model_current("transaction"), "txn-cut-blob")
        announce_model(settings, "transaction", "txn-cut-blob")
        wait_until(lambda: len(refusals()) == 1, "the first refusal", workers=[worker])

        # A readable envelope whose signed payload lost its end.
        blob = weights.sign(factories.batch_model("txn-cut-payload", seed=2), SIGNING_KEY.encode())
        envelope = msgspec.json.decode(blob)
        payload = envelope["payload"]  # base64: cut at a multiple of 4 characters
        envelope["payload"] = payload[: len(payload) // 8 * 4]
        registry.publish("transaction", "txn-cut-payload", msgspec.json.encode(envelope))
        announce_model(settings, "transaction", "txn-cut-payload")
        wait_until(lambda: len(refusals()) == 2, "the second refusal", workers=[worker])
        refused_at = feed.sent

        feed.finish(more=150).join()
        wait_all_scored(outputs, feed, [worker])
        assert_accounted(outputs, feed, r)
        (blob_version, blob_reason), (payload_version, payload_reason) = refusals()
        assert blob_version == "txn-cut-blob" and "bad envelope" in blob_reason
        assert payload_version == "txn-cut-payload" and "signature mismatch" in payload_reason
        assert (
            scrape(worker, "fraud_model_swaps_total")['kind="transaction",outcome="refused"'] == 2
        )
        for n in range(swapped_at, feed.count):
            versions = {e.batch_version for e in outputs.scored[f"txn-{n:06d}"]}
            assert versions == {"txn-good"}, f"txn-{n:06d} scored by {versions}"
        assert refused_at < feed.count, "the stream ended before the refusals"
    finally:
        feed.finish(0)
        worker.kill()
        outputs.close()


def test_one_of_two_workers_killed_mid_stream_the_other_takes_over_with_the_state(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    settings = faults_settings(namespace, kafka_bootstrap, redis_url)
    r = redis.Redis.from_url(redis_url)
    checkpoints = Checkpoints(r, RedisKeys(namespace))
    outputs = Outputs(settings)
    survivor = WorkerProcess(settings, tmp_path, "a", env=FAST_REJOIN).start()
    victim = WorkerProcess(settings, tmp_path, "b", env=FAST_REJOIN).start()
    wait_until(
        lambda: ready(survivor) and ready(victim), "both workers", workers=[survivor, victim]
    )
    feed = Feed(settings, count=5000, rate=150, bad_every=97, label_lag=120).start()

    def scored_by(worker: WorkerProcess) -> float:
        try:
            return sum(scrape(worker, "fraud_events_total").values())
        except OSError:  # its web server is not up yet
            return 0.0

    try:
        wait_until(
            lambda: scored_by(survivor) > 0 and scored_by(victim) > 0,
            "both workers scoring",
            outputs=outputs,
            workers=[survivor, victim],
            every=checkpoints.version,
        )
        victim.kill()
        killed_at = feed.sent
        before = scored_by(survivor)
        feed.finish(more=700).join()
        assert_nothing_lost(outputs, feed, [survivor], checkpoints, r)
        # The survivor scored everything sent after the kill, the victim's partitions too.
        assert scored_by(survivor) - before >= feed.count - killed_at
    finally:
        feed.finish(0)
        survivor.kill()
        victim.kill()
        outputs.close()


def commit_offset(settings: Settings, topic: str, offset: int) -> None:
    """Commit ``offset`` of ``topic``'s partition 0 for the workers' consumer group."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=consumer_group(settings.namespace),
        enable_auto_commit=False,
    )
    try:
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(offset, "", -1)})
    finally:
        consumer.close()


def test_a_checkpoint_restored_from_an_older_backup_has_its_labels_read_again_promptly(
    namespace, kafka_bootstrap, redis_url, tmp_path
):
    """Redis restored from a backup holds a checkpoint far behind the labels' committed
    offset, and labels keep flowing: the learner reads the labels again from the checkpoint
    at once. It used to rewind for good: each rewind's seek left records fetched before it in
    flight, which moved Faust's read offset past the records read again, then skipped as read
    already (``stream.transport.Consumer.request_seek``): it timed out after 60 s, or took
    57, learning nothing meanwhile."""
    # Steps of labels wait up to half a second to fill, as by default.
    settings = faults_settings(namespace, kafka_bootstrap, redis_url).replace(
        checkpoint_interval_s=0.5
    )
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    # Labels of events nobody scored: each one read is parked in Redis (waiting for its event).
    labels = [factories.label(f"txn-gone-{n}", "transaction", n % 2 == 0) for n in range(60_000)]
    publish_events(settings, topics.labels, labels)

    async def restore_old_checkpoint() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            checkpoints = OnlineCheckpoints(client, keys, marker_ttl_s=3600)
            models = {kind: OnlineModel(kind) for kind in EVENT_KINDS}
            await checkpoints.save(models, base_version=0, label_offset=99, learned_ids=[])
        finally:
            await client.aclose()

    asyncio.run(restore_old_checkpoint())
    commit_offset(settings, topics.labels, 50_000)  # where the group had got to
    stop = threading.Event()

    def more_labels() -> None:
        n = 0
        while not stop.is_set():
            more = [factories.label(f"txn-later-{n + i}", "transaction", False) for i in range(250)]
            publish_events(settings, topics.labels, more)
            n += len(more)
            stop.wait(0.5)

    feeder = threading.Thread(target=more_labels, daemon=True)
    feeder.start()
    r = redis.Redis.from_url(redis_url)
    worker = WorkerProcess(settings, tmp_path, "learner", env=FAST_REJOIN).start()
    try:
        wait_until(
            lambda: int(r.hget(keys.online_checkpoint, "label_offset") or 0) >= 59_999,
            "the labels read again from the checkpoint on",
            workers=[worker],
            timeout_s=30,  # 5 s here; before, it timed out after 60 s or took 57
        )
        parked = sum(
            r.exists(*(keys.waiting_label(f"txn-gone-{n}") for n in range(start, start + 1000)))
            for start in range(100, 60_000, 1000)
        )
        assert parked == 59_900, "labels after the checkpoint were skipped"
    finally:
        stop.set()
        feeder.join(10)
        worker.kill()


# ------------------------------------------- the crash windows, replayed one step at a time
# The fault tests above hit these windows only by chance; here each is set up exactly, with
# StreamWorker driven directly (no Kafka: its outputs go to a list) against the real Redis.


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def values(self, topic: str) -> list[bytes]:
        return [value for sent_to, _, value in self.sent if sent_to == topic]


def raw_messages(topic: str, events: Sequence[Any], first_offset: int = 0) -> list[RawMessage]:
    return [
        RawMessage(topic, 0, first_offset + i, e.event_id.encode(), encode(e))
        for i, e in enumerate(events)
    ]


def stream_worker(settings: Settings) -> tuple[StreamWorker, ListSink]:
    """A worker with empty in-memory tables: what a restarted worker holds of a history whose
    changelog write never reached Kafka."""
    sink = ListSink()
    tables: dict[Any, Any] = {"transaction": {}, "email": {}}
    return StreamWorker(settings, sink, tables, aioredis.from_url(settings.redis_url)), sink


def recorded_rewinds(worker: StreamWorker) -> list[tuple[str, int, int]]:
    """Where the worker asks for its partitions to be read again, recorded instead of sought."""
    rewinds: list[tuple[str, int, int]] = []

    async def rewind(topic: str, partition: int, offset: int) -> None:
        rewinds.append((topic, partition, offset))

    worker.rewind = rewind
    return rewinds


@pytest.mark.parametrize("chunk", [worker_module.SCORING_CHUNK, 1])
def test_an_event_replayed_after_its_history_write_was_lost_enters_the_history_once(
    namespace, redis_url, monkeypatch, chunk
):
    """A crash after the served features were saved and before the card's changelog write
    reached Kafka: the replay finds the features, and the history must still get the event.
    The same event twice in one batch (a redelivery) counts once as well, in one scoring
    chunk of the step or in two (``chunk`` 1)."""
    monkeypatch.setattr(worker_module, "SCORING_CHUNK", chunk)
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topic = Topics.for_namespace(namespace).transactions
    first, later = factories.transaction(0), factories.transaction(CARDS)  # both card-0000

    async def scenario() -> None:
        crashed, _ = stream_worker(settings)
        await crashed.handle_events("transaction", raw_messages(topic, [first]))
        restarted, _ = stream_worker(settings)  # its table lacks the first transaction
        verdicts = await restarted.handle_events(
            "transaction", raw_messages(topic, [first, first, later])
        )
        assert [v.replayed for v in verdicts] == [True, True, False]
        assert verdicts[2].scored.features["card_count_24h"] == 1
        again = await restarted.handle_events("transaction", raw_messages(topic, [first]))
        assert again[0].replayed and not again[0].advanced  # the history has it already

        fresh, _ = stream_worker(settings.replace(namespace=namespace + "b"))
        twice = await fresh.handle_events("transaction", raw_messages(topic, [first, first, later]))
        assert twice[0].scored.features == twice[1].scored.features and twice[1].replayed
        assert twice[2].scored.features["card_count_24h"] == 1

    asyncio.run(scenario())


def test_an_event_looked_up_while_its_first_sending_is_saved_is_a_replay(namespace, redis_url):
    """``stream.app.consume`` runs a step's look-ups while the step before is scored and
    saved. An event in both (sent twice) is looked up before its first sending's served
    features are in Redis; it must still be the replay it would have been, scored from
    those features, and enter its card's history once."""
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topic = Topics.for_namespace(namespace).transactions
    first, later = factories.transaction(0), factories.transaction(CARDS)  # both card-0000

    async def scenario() -> None:
        worker, _ = stream_worker(settings)
        step_1 = await worker.prepare_step("transaction", raw_messages(topic, [first]))
        step_2 = await worker.prepare_step("transaction", raw_messages(topic, [first, later], 1))
        assert step_2.served_before == {}  # looked up before step 1 saved anything
        (scored,) = await worker.complete_step(step_1)
        again, after = await worker.complete_step(step_2)
        assert again.replayed and not again.advanced  # the history has it already
        assert again.scored.features == scored.scored.features
        assert after.scored.features["card_count_24h"] == 1  # the first sending only

    asyncio.run(scenario())


def test_a_step_whose_save_reply_was_lost_is_looked_up_again_and_replayed(namespace, redis_url):
    """Redis saved a step's served features, but the reply never came (the connection
    dropped): ``complete_step`` tries again from fresh look-ups, so the events are replays of
    what was saved, and their card's history counts each once."""
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topic = Topics.for_namespace(namespace).transactions
    first, later = factories.transaction(0), factories.transaction(CARDS)  # both card-0000

    async def scenario() -> None:
        worker, _ = stream_worker(settings)
        save = worker._remember_served
        failures = []

        async def saved_then_dropped(*args: Any) -> None:
            await save(*args)
            if not failures:
                failures.append(1)
                raise redis.exceptions.ConnectionError("connection dropped after the write")

        worker._remember_served = saved_then_dropped  # type: ignore[method-assign]
        step = await worker.prepare_step("transaction", raw_messages(topic, [first]))
        (verdict,) = await worker.complete_step(step)
        assert failures == [1] and verdict.replayed and verdict.advanced
        (after,) = await worker.handle_events("transaction", raw_messages(topic, [later], 1))
        assert after.scored.features["card_count_24h"] == 1

    asyncio.run(scenario())


def test_an_alert_lost_with_its_worker_is_sent_again_by_the_replay(namespace, redis_url):
    """A crash after the alert was claimed and before it reached Kafka: the worker that
    replays the event sends the alert the claim holds, byte for byte; the Redis stream
    keeps one entry."""
    # A fresh model scores 0.01: a review threshold below that makes every event alert.
    settings = Settings(namespace=namespace, redis_url=redis_url, txn_review_threshold=0.005)
    topics, keys = Topics.for_namespace(namespace), RedisKeys(namespace)
    txn = factories.transaction(7)

    async def scenario() -> None:
        crashed, lost = stream_worker(settings)
        await crashed.handle_events("transaction", raw_messages(topics.transactions, [txn]))
        (alert,) = lost.values(topics.alerts)  # claimed, never delivered
        replaying, sink = stream_worker(settings)
        await replaying.handle_events("transaction", raw_messages(topics.transactions, [txn]))
        assert sink.values(topics.alerts) == [alert]
        r = aioredis.from_url(redis_url)
        entries = await r.xrange(keys.alerts_stream)
        assert [fields[b"alert"] for _, fields in entries] == [alert]

    asyncio.run(scenario())


def labelled_transactions(
    namespace: str, redis_url: str, n: int
) -> tuple[Settings, Topics, list[Any], list[Label]]:
    """Settings of a namespace, its topics, ``n`` transactions and a label for each."""
    txns = [factories.transaction(i) for i in range(n)]
    labels = [factories.label(t.event_id, "transaction", t.amount > 40) for t in txns]
    settings = Settings(namespace=namespace, redis_url=redis_url)
    return settings, Topics.for_namespace(namespace), txns, labels


async def learner_with_events_scored(
    settings: Settings, txns: Sequence[Any]
) -> tuple[StreamWorker, list[tuple[str, int, int]]]:
    """A worker that scored ``txns`` (offsets 0..), with its rewinds recorded: where a label
    test starts."""
    worker, _ = stream_worker(settings)
    rewinds = recorded_rewinds(worker)
    await worker.handle_events(
        "transaction", raw_messages(Topics.for_namespace(settings.namespace).transactions, txns)
    )
    return worker, rewinds


def test_a_label_skipped_by_the_consumer_is_read_again_not_lost(namespace, redis_url):
    """Faust can hand the learner a label beyond one it skipped around a rebalance. Learned,
    it would move the checkpoint's offset past the skipped label for good; the learner
    stops at the gap and has the labels read again from there."""
    settings, topics, txns, labels = labelled_transactions(namespace, redis_url, 10)

    async def scenario() -> None:
        worker, rewinds = await learner_with_events_scored(settings, txns)
        counts = await worker.handle_labels(raw_messages(topics.labels, labels[:5]))
        assert counts["learned"] == 5 and rewinds == []
        skipped = await worker.handle_labels(raw_messages(topics.labels, labels[6:], 6))
        assert skipped["learned"] == 0 and skipped["ahead"] == 4
        assert rewinds == [(topics.labels, 0, 5)]
        assert worker.label_offset == 4
        again = await worker.handle_labels(raw_messages(topics.labels, labels[5:], 5))
        assert again["learned"] == 5 and worker.label_offset == 9
        assert worker.models["transaction"].learned == 10
        # Labels that expired from Kafka: the same gap twice, and learning goes on.
        late = [factories.label(t.event_id, "transaction", True) for t in txns[:2]]
        first_try = await worker.handle_labels(raw_messages(topics.labels, late, 20))
        assert first_try["ahead"] == 2 and rewinds[-1] == (topics.labels, 0, 10)
        second_try = await worker.handle_labels(raw_messages(topics.labels, late, 20))
        assert second_try["ahead"] == 0 and worker.label_offset == 21

    asyncio.run(scenario())


def test_a_label_skipped_before_the_first_checkpoint_is_read_again(namespace, redis_url):
    """The learner's first batch has no checkpoint offset to follow on from: its own first
    offset is the anchor, and a label skipped inside it is read again, not lost."""
    settings, topics, txns, labels = labelled_transactions(namespace, redis_url, 8)

    async def scenario() -> None:
        worker, rewinds = await learner_with_events_scored(settings, txns)
        first = raw_messages(topics.labels, labels[:3]) + raw_messages(topics.labels, labels[4:], 4)
        counts = await worker.handle_labels(first)  # label 3 skipped by the consumer
        assert counts["learned"] == 3 and counts["ahead"] == 4
        assert rewinds == [(topics.labels, 0, 3)]
        again = await worker.handle_labels(raw_messages(topics.labels, labels[3:], 3))
        assert again["learned"] == 5 and worker.models["transaction"].learned == 8

    asyncio.run(scenario())


def test_events_handed_over_beyond_a_gap_wait_for_the_gap_to_be_read_again(namespace, redis_url):
    """Faust can hand the scorer events beyond others of the same partition that it dropped
    around a rebalance (``stream.offsets``). The scorer stops that partition at the gap, has
    it read again from there, and scores every event once the missing ones come."""
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics = Topics.for_namespace(namespace)
    txns = [factories.transaction(n) for n in range(12)]

    async def scenario() -> None:
        worker, sink = stream_worker(settings)
        rewinds = recorded_rewinds(worker)
        first = await worker.handle_events_retrying(
            "transaction", raw_messages(topics.transactions, txns[:5])
        )
        assert len(first) == 5 and rewinds == []
        beyond = raw_messages(topics.transactions, txns[8:], 8)  # 5, 6 and 7 dropped on the way
        assert await worker.handle_events_retrying("transaction", beyond) == []
        assert rewinds == [(topics.transactions, 0, 5)]
        again = await worker.handle_events_retrying(
            "transaction", raw_messages(topics.transactions, txns[5:], 5)
        )
        assert [v.scored.event_id for v in again] == [t.event_id for t in txns[5:]]
        scored = {decode(v, ScoredEvent).event_id for v in sink.values(topics.scored)}
        assert scored == {t.event_id for t in txns}

    asyncio.run(scenario())


def test_events_lost_at_the_end_of_a_partition_are_read_again(namespace, redis_url, monkeypatch):
    """The last events of a partition lost on the way: no later event shows a gap, but the
    consumer's position is past them. After ``STALLED_AFTER_S`` with nothing handed over,
    the partition is read again from the first one missing (CI lost 32 events this way)."""
    monkeypatch.setattr("stream.worker.STALLED_AFTER_S", 0.2)
    settings = Settings(namespace=namespace, redis_url=redis_url)
    topics = Topics.for_namespace(namespace)
    txns = [factories.transaction(n) for n in range(8)]
    end = {(topics.transactions, 0): 8}  # the consumer fetched up to offset 7

    async def scenario() -> None:
        worker, sink = stream_worker(settings)
        rewinds = recorded_rewinds(worker)
        handed = raw_messages(topics.transactions, txns[:5])  # 5, 6 and 7 lost on the way
        assert len(await worker.handle_events_retrying("transaction", handed)) == 5
        assert await worker.read_again_stalled(end) == 0  # they may still be on their way
        await asyncio.sleep(0.3)
        assert await worker.read_again_stalled(end) == 1
        assert rewinds == [(topics.transactions, 0, 5)]
        again = raw_messages(topics.transactions, txns[5:], 5)
        assert len(await worker.handle_events_retrying("transaction", again)) == 3
        scored = {decode(v, ScoredEvent).event_id for v in sink.values(topics.scored)}
        assert scored == {t.event_id for t in txns}

    asyncio.run(scenario())
