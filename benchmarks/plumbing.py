"""Faust's own cost: an agent that takes events in batches, as the worker does, and does nothing.

``python -m benchmarks.plumbing worker --web-port N --datadir DIR`` (run by
``benchmarks.worker``). The stream worker's app class, consumer settings and
``take_events(FRAUD_BATCH_SIZE, FRAUD_BATCH_WITHIN_S)`` batching over raw bytes; each step
only sends one message holding the number of events it took (to
``<namespace>.plumbing.v1``), so what is left is Faust moving messages from Kafka to the
agent and acknowledging them: the most any agent built this way can do on this machine.
"""

from __future__ import annotations

from typing import Any, cast

import faust

from benchmarks import stack
from models.names import Topics
from models.settings import Settings
from stream.app import CONSUMER_FETCH_BYTES, App  # importing it builds (never starts) its app


def create_app(settings: Settings) -> faust.App:
    topics = Topics.for_namespace(settings.namespace)
    brokers = ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(","))
    app = App(
        f"{settings.namespace}-plumbing",
        broker=brokers,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_host="127.0.0.1",
        # The stream worker's consumer (stream.app.App and its fetch size): its upper bound.
        consumer_max_fetch_size=CONSUMER_FETCH_BYTES,
    )
    source = app.topic(topics.transactions, key_serializer="raw", value_serializer="raw")
    counts = app.topic(
        stack.plumbing_topic(settings.namespace), key_serializer="raw", value_serializer="raw"
    )

    @app.agent(source, name="plumbing")
    async def drain(stream: faust.StreamT[Any]) -> None:
        batches = cast(faust.Stream[Any], stream).take_events(
            settings.batch_size, settings.batch_within_s
        )
        async for events in batches:
            await counts.send(value=str(len(events)).encode())

    return app


app = create_app(Settings.from_env())

if __name__ == "__main__":
    app.main()
