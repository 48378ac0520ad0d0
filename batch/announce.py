"""Telling the live workers that a batch model changed: a message on the model-updates topic.

Redis holds the truth (the signed payload and the "current" pointer); the message is the
nudge that makes every worker load it now instead of at its next periodic check. Workers
read the topic without a consumer group, so every one of them sees every message.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError

from models import kafka_security
from models.events import ModelUpdate, encode
from models.names import EventKind, RedisKeys, Topics
from models.settings import Settings
from models.topology import KafkaUnavailable, ensure_topics


def announce_model(
    settings: Settings, kind: EventKind, version: str, timeout_s: float = 15.0
) -> None:
    """Publish a :class:`ModelUpdate` for ``kind`` now at ``version``; raise
    :class:`KafkaUnavailable` if the broker cannot take it."""
    topic = Topics.for_namespace(settings.namespace).model_updates
    ensure_topics(settings, only=[topic], timeout_s=timeout_s)
    now = datetime.now(UTC)
    update = ModelUpdate(
        event_id=f"model-{kind}-{version}-{now.timestamp():.6f}",
        event_time=now,
        kind=kind,
        version=version,
        redis_key=RedisKeys(settings.namespace).batch_model(kind, version),
    )
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            request_timeout_ms=int(timeout_s * 1000),
            **kafka_security.kafka_python_config(settings),
        )
        try:
            producer.send(topic, key=kind.encode(), value=encode(update)).get(timeout=timeout_s)
        finally:
            producer.close(timeout=timeout_s)
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"the model is published in Redis but the announcement to {topic} failed ({exc}); "
            "workers still pick it up at their next periodic check"
        ) from None
