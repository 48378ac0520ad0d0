"""Sends events to Kafka: keyed by the entity they update, encoded once, in big batches.

A thin wrapper over kafka-python's ``KafkaProducer``, tuned for throughput rather than
per-message latency: ``linger_ms`` 10 and 1 MiB batches, ``acks=1`` (the leader's write is
enough for synthetic data; idempotence needs ``acks=all`` and is off), and lz4 compression
when the optional ``lz4`` package is installed (kafka-python needs it for lz4; gzip, the
only codec it has without extra packages, costs more CPU than it saves here).

The key is the entity whose state the event updates (:func:`models.events.entity_key`:
the card, or the sender), so each entity's events stay in order on one partition; labels are
keyed by the event they label. Partitions are picked here with the default partitioner's
murmur2 (:mod:`producers.partitioning`) and passed to ``send``, which skips kafka-python's
slow pure-Python hash: a third of its per-message cost.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections.abc import Iterable
from typing import IO, Any, Protocol

import kafka.errors
from kafka import KafkaProducer
from kafka.codec import has_lz4

from models import kafka_security, topology
from models.events import Email, Label, Transaction, encode, entity_key
from models.settings import Settings
from models.topology import KafkaUnavailable
from producers.closing import Closing
from producers.partitioning import KeyRouter

ERRBACK_EVERY_MASK = 31
"""Watch one send in 32 for failure: the broker refuses whole batches (hundreds of messages),
so sampling catches them, while a callback on every send adds about 5% to its cost."""


def relax_gc() -> None:
    """Make the cyclic garbage collector run rarely; call once from an entry point.

    A producer keeps a large live heap (the simulated population, messages in flight) and
    allocates a future per message, so with the default thresholds the collector keeps
    rescanning that heap: it halves kafka-python's send rate. Freezing what exists and
    collecting every 100k allocations instead of 700 gets it back; the producer makes few
    reference cycles, so memory stays flat.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class PublishError(RuntimeError):
    """The broker refused something (a topic, a message); the message says what."""


class Sink(Protocol):
    """Where a producer run sends its events: Kafka, or the console for ``--dry-run``."""

    def ensure_topics(self, topics: Iterable[str]) -> None: ...

    def publish(self, topic: str, event: Transaction | Email) -> None: ...

    def publish_label(self, topic: str, label: Label) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Publisher(Closing):
    """Publishes events to Kafka. Use as a context manager: closing flushes."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 4,
        client_id: str = "fraudstream-producer",
        linger_ms: int = 10,
        timeout_s: float = 10.0,
        settings: Settings | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.settings = settings
        self._client_id = client_id
        self._timeout_ms = int(timeout_s * 1000)
        self._routers: dict[str, KeyRouter] = {}
        self._error: BaseException | None = None
        self.sent = 0
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers,
                client_id=client_id,
                acks=1,
                enable_idempotence=False,
                linger_ms=linger_ms,
                batch_size=1 << 20,
                compression_type="lz4" if has_lz4() else None,
                bootstrap_timeout_ms=self._timeout_ms,
                max_block_ms=self._timeout_ms * 3,
                **(kafka_security.kafka_python_config(settings) if settings else {}),
            )
        except kafka.errors.KafkaError as exc:
            raise KafkaUnavailable(
                kafka_security.unreachable_message(
                    settings or Settings(kafka_bootstrap=bootstrap_servers),
                    exc,
                    "; is the broker running? set --bootstrap-servers or FRAUD_KAFKA_BOOTSTRAP",
                )
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Publisher:
        """A publisher for ``settings``' broker, with its security settings (SASL, TLS)."""
        return cls(
            settings.kafka_bootstrap, partitions=settings.partitions, settings=settings, **kwargs
        )

    def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics that do not exist yet, with the partition counts that
        ``models.topology`` defines (the labels topic has one partition)."""
        settings = self.settings or Settings(
            kafka_bootstrap=self.bootstrap_servers, partitions=self.partitions
        )
        try:
            topology.ensure_topics(settings, only=topics, timeout_s=self._timeout_ms / 1000)
        except kafka.errors.KafkaError as exc:
            raise PublishError(f"cannot create topics {', '.join(topics)}: {exc}") from None

    def _router(self, topic: str) -> KeyRouter:
        router = self._routers.get(topic)
        if router is None:
            partitions = self._producer.partitions_for(topic)
            if not partitions:
                raise PublishError(f"topic {topic!r} has no partitions (does it exist?)")
            router = self._routers[topic] = KeyRouter(sorted(partitions))
        return router

    def send(self, topic: str, key: str, value: bytes, *, key_repeats: bool = True) -> None:
        """Queue one message; raise :class:`PublishError` if an earlier send failed.
        ``key_repeats=False`` for keys seen once (label event ids): they are not remembered."""
        router = self._routers.get(topic) or self._router(topic)
        raw, partition = router.route(key) if key_repeats else router.route_once(key)
        if self._error is not None:
            self._raise_failure()
        try:
            future = self._producer.send(topic, key=raw, value=value, partition=partition)
        except kafka.errors.KafkaError as exc:
            raise PublishError(f"cannot send to {topic!r}: {exc}") from None
        self.sent += 1
        if not self.sent & ERRBACK_EVERY_MASK:
            future.add_errback(self._failed)

    def _failed(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    def _raise_failure(self) -> None:
        raise PublishError(
            f"Kafka at {self.bootstrap_servers} refused a message: {self._error}"
        ) from None

    def publish(self, topic: str, event: Transaction | Email) -> None:
        self.send(topic, entity_key(event), encode(event))

    def publish_label(self, topic: str, label: Label) -> None:
        self.send(topic, label.event_id, encode(label), key_repeats=False)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except kafka.errors.KafkaError as exc:
            raise PublishError(f"could not deliver to {self.bootstrap_servers}: {exc}") from None
        if self._error is not None:
            self._raise_failure()

    def close(self) -> None:
        """Flush what is queued, then close the connection."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def abort(self) -> None:
        """Close without waiting on a broker that may be the problem (a run that failed)."""
        with contextlib.suppress(Exception):
            self._producer.close(timeout=1)


class ConsolePublisher:
    """``--dry-run``: print each event as one JSON line instead of sending it."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out or sys.stdout
        self.sent = 0

    def ensure_topics(self, topics: Iterable[str]) -> None:
        return None

    def _print(self, topic: str, key: str, value: bytes) -> None:
        record = {"topic": topic, "key": key, "value": json.loads(value)}
        print(json.dumps(record, ensure_ascii=False), file=self._out)
        self.sent += 1

    def publish(self, topic: str, event: Transaction | Email) -> None:
        self._print(topic, entity_key(event), encode(event))

    def publish_label(self, topic: str, label: Label) -> None:
        self._print(topic, label.event_id, encode(label))

    def close(self) -> None:
        self._out.flush()

    def abort(self) -> None:
        return None
