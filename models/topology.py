"""How many partitions each topic has, and creating them: shared by producers and workers.

Event topics are keyed by entity and get ``settings.partitions`` partitions: partitions are
the unit of parallelism. The labels topic has ONE partition on purpose: exactly one worker
(the owner of that partition) learns, checkpoints the online models to Redis, and records the
label offset it learned up to, so a restarted learner neither loses nor double-counts a label.
The other workers reload the checkpoint when its version moves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from models import kafka_security
from models.names import Topics
from models.settings import Settings

SINGLE_PARTITION_TOPICS = ("labels", "model_updates")


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached; the message names the bootstrap servers."""


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Partition count of every topic in the settings' namespace."""
    topics = Topics.for_namespace(settings.namespace)
    counts = {}
    for field_name in topics.__dataclass_fields__:
        single = field_name in SINGLE_PARTITION_TOPICS
        counts[getattr(topics, field_name)] = 1 if single else settings.partitions
    return counts


def changelog_topic_config(settings: Settings) -> dict[str, str]:
    """Topic configuration of the history tables' changelogs (Faust creates those topics).

    Faust makes them compacted, but Kafka compacts closed segments only, and its default
    segment (1 GiB, rolled after 7 days) keeps every history update of a partition until
    then: a worker restarted or taking over partitions replays each of those updates (one
    per event scored), so its start-up grows with the traffic, up to 1 GiB of updates a
    partition, millions of records, where Faust recovers some 10,000-15,000 a second
    (docs/benchmarks.md, *Restart*). With segments of
    ``changelog_segment_bytes`` closed after at most ``changelog_segment_s``, a recovery
    reads about one record per card or sender plus at most one open segment per partition.
    Faust applies it when it creates a changelog; a worker gives it to one that exists when
    it starts (:func:`align_changelog_configs`).
    """
    return {
        "segment.bytes": str(settings.changelog_segment_bytes),
        "segment.ms": str(settings.changelog_segment_s * 1000),
    }


def align_changelog_configs(settings: Settings, topics: Iterable[str]) -> dict[str, str]:
    """Give the existing ``topics`` (history changelogs) :func:`changelog_topic_config` where
    they differ; return what changed, "segment.ms 604800000 -> 3600000" by topic.

    Faust creates a missing changelog with that configuration, but never changes one that
    exists: a changelog made before these settings, or with other values, would keep Kafka's
    1 GiB segments and a restart would replay every update they hold. The change is
    incremental (the other settings of the topic stay), and a topic not created yet is left
    to Faust. Raises ``KafkaError`` when the broker refuses (the caller logs it and goes on).
    """
    wanted = changelog_topic_config(settings)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id=f"{settings.namespace}-changelog-config",
        request_timeout_ms=10_000,
        **kafka_security.kafka_python_config(settings),
    )
    try:
        existing = set(admin.list_topics())
        names = [name for name in topics if name in existing]
        if not names:
            return {}
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
            config_filter="all",
        )["topic"]
        changes: dict[str, str] = {}
        for name in names:
            now = {key: entry["value"] for key, entry in described[name].items()}
            differ = {key: value for key, value in wanted.items() if now.get(key) != value}
            if not differ:
                continue
            answer = admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, configs=differ)], incremental=True
            )["topic"][name]
            if answer != "OK":
                raise KafkaError(f"{name}: the broker refused {differ}: {answer}")
            changes[name] = ", ".join(f"{key} {now.get(key)} -> {v}" for key, v in differ.items())
        return changes
    finally:
        admin.close()


def ensure_topics(
    settings: Settings, *, only: Iterable[str] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the namespace's topics (or just those named in ``only``) that do not exist yet;
    return the names created.

    Idempotent: a topic that exists is left as it is (its partition count is not changed).
    Credentials the broker refuses, or a certificate that does not verify, fail at once
    (retrying cannot help), with the reason.
    """
    refused = kafka_security.refused(settings)
    if refused is not None:
        raise KafkaUnavailable(refused)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap.split(","),
                client_id=f"{settings.namespace}-topology",
                request_timeout_ms=10_000,
                **kafka_security.kafka_python_config(settings),
            )
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    kafka_security.unreachable_message(
                        settings,
                        exc,
                        "; is the broker running? (make up starts one; FRAUD_KAFKA_BOOTSTRAP "
                        "points elsewhere)",
                    )
                ) from None
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = topic_partitions(settings)
        if only is not None:
            names = set(only)
            unknown = names - wanted.keys()
            if unknown:
                raise ValueError(f"not topics of namespace {settings.namespace!r}: {unknown}")
            wanted = {name: count for name, count in wanted.items() if name in names}
        missing = [
            NewTopic(name=name, num_partitions=count, replication_factor=1)
            for name, count in wanted.items()
            if name not in existing
        ]
        created = []
        for topic in missing:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
