"""The Faust application: topics, tables and three thin agents around :class:`StreamWorker`.

Start a worker with::

    faust -A stream.app worker -l info            # or: python -m stream worker

Settings come from ``FRAUD_*`` environment variables (see ``models.settings``), read once
here, at the entry point. Several workers share the partitions of one consumer group; give
each its own ``--web-port`` (and ``--datadir`` if they share a directory).

Per-entity histories live in Faust tables backed by changelog topics, so a restarted or a
second worker recovers them. The tables use the key partitioner (``use_partitioner=True``,
raw keys): a card's history goes to the changelog partition with the number of the input
partition its events arrive on, because producers key events by the same raw bytes with the
same murmur2 partitioner, and it can be written once per batch rather than per event. Keys
and values are bytes (``key_type=bytes`` makes Faust use the raw codec); the worker encodes
histories as JSON itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
import redis.asyncio as aioredis
from faust.sensors.prometheus import setup_prometheus_sensors

from models.names import EVENT_KINDS, EventKind, Topics, consumer_group
from models.settings import Settings
from models.topology import topic_partitions
from stream.worker import RawMessage, StreamWorker

log = logging.getLogger(__name__)


class FaustSink:
    """Sends the worker's outputs with Faust's producer, without waiting per message."""

    def __init__(self, app: faust.App, partitions: dict[str, int]) -> None:
        self._topics = {
            name: app.topic(name, key_serializer="raw", value_serializer="raw", partitions=count)
            for name, count in partitions.items()
        }

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._topics[topic].send_soon(key=key, value=value)


def _raw(events: Any) -> list[RawMessage]:
    return [
        RawMessage(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.value)
        for e in events
    ]


def _batches(stream: faust.StreamT[Any], size: int, within_s: float) -> AsyncIterator[Any]:
    """Batches of Faust events (with their Kafka metadata), acknowledged after each step.

    ``take_events`` lives on the concrete Stream class, not on the ``StreamT`` interface."""
    return cast(faust.Stream[Any], stream).take_events(size, within_s)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app of one namespace; nothing connects until the worker starts."""
    topics = Topics.for_namespace(settings.namespace)
    partitions = topic_partitions(settings)
    brokers = ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(","))
    app = faust.App(
        consumer_group(settings.namespace),
        broker=brokers,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        producer_linger_ms=5,
    )
    sources = {
        kind: app.topic(
            topics.events(kind),
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions[topics.events(kind)],
        )
        for kind in EVENT_KINDS
    }
    labels_topic = app.topic(
        topics.labels, key_serializer="raw", value_serializer="raw", partitions=1
    )
    tables = {
        kind: app.Table(
            f"{kind}-history",
            default=None,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,
        )
        for kind in EVENT_KINDS
    }
    redis = aioredis.from_url(settings.redis_url)
    worker = StreamWorker(settings, FaustSink(app, partitions), dict(tables), redis)

    def events_agent(kind: EventKind) -> Any:
        async def score(stream: faust.StreamT[Any]) -> None:
            batches = _batches(stream, settings.batch_size, settings.batch_within_s)
            async for events in batches:
                await worker.handle_events(kind, _raw(events))

        score.__name__ = f"score_{kind}s"
        return app.agent(sources[kind], name=f"score-{kind}s", sink=None)(score)

    for kind in EVENT_KINDS:
        events_agent(kind)

    @app.agent(labels_topic, name="learn-labels")
    async def learn(stream: faust.StreamT[Any]) -> None:
        batches = _batches(stream, settings.checkpoint_every_labels, settings.checkpoint_interval_s)
        async for events in batches:
            counts = await worker.handle_labels(_raw(events))
            log.info("labels: %s", counts)

    setup_prometheus_sensors(app, name_prefix="faust")
    app.fraud_worker = worker  # type: ignore[attr-defined]
    return app


app = create_app(Settings.from_env())
