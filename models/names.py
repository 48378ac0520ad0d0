"""The names that cross process boundaries: Kafka topics, Redis keys, consumer groups, metrics.

They live here and nowhere else. Topic names carry a schema version (``.v1``): a breaking
change to an event gets a new topic, never a silent reinterpretation of the old one. Every
name is derived from the settings' namespace so that test runs and tenants never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventKind = Literal["transaction", "email"]
EVENT_KINDS: tuple[EventKind, ...] = ("transaction", "email")


@dataclass(frozen=True)
class Topics:
    """Kafka topics of one namespace."""

    transactions: str
    emails: str
    labels: str
    alerts: str
    scored: str
    dead_letters: str
    model_updates: str

    @classmethod
    def for_namespace(cls, namespace: str) -> Topics:
        return cls(
            transactions=f"{namespace}.transactions.v1",
            emails=f"{namespace}.emails.v1",
            labels=f"{namespace}.labels.v1",
            alerts=f"{namespace}.alerts.v1",
            scored=f"{namespace}.scored.v1",
            dead_letters=f"{namespace}.dead-letters.v1",
            model_updates=f"{namespace}.model-updates.v1",
        )

    def events(self, kind: EventKind) -> str:
        """The input topic of one kind of event."""
        return self.transactions if kind == "transaction" else self.emails

    def all(self) -> list[str]:
        return [
            self.transactions,
            self.emails,
            self.labels,
            self.alerts,
            self.scored,
            self.dead_letters,
            self.model_updates,
        ]


@dataclass(frozen=True)
class RedisKeys:
    """Redis keys of one namespace. Values are JSON or plain strings, never pickles."""

    namespace: str

    @property
    def online_checkpoint(self) -> str:
        """Hash: ``version``, ``label_offset``, ``saved_at`` and ``state:<kind>`` (JSON) of
        every online model, written together in one transaction."""
        return f"{self.namespace}:model:online"

    def served(self, event_id: str) -> str:
        """JSON of the features served for one event, kept until its label arrives (TTL)."""
        return f"{self.namespace}:served:{event_id}"

    def labelled(self, event_id: str) -> str:
        """Marker that a label for this event was learned once already (labels count once)."""
        return f"{self.namespace}:labelled:{event_id}"

    def waiting_label(self, event_id: str) -> str:
        """Raw bytes of a label that arrived before its event was scored (a backlog being
        caught up); the worker that scores the event sends the label again."""
        return f"{self.namespace}:waiting-label:{event_id}"

    def alerted(self, event_id: str) -> str:
        """Marker that this event raised its alert already (one event, one alert)."""
        return f"{self.namespace}:alerted:{event_id}"

    @property
    def alerts_stream(self) -> str:
        """Capped Redis stream of recent alerts, read by the alerts page."""
        return f"{self.namespace}:alerts"

    def review(self, alert_id: str) -> str:
        """JSON of the analyst's verdict on one alert; set once (SET NX), kept with a TTL."""
        return f"{self.namespace}:review:{alert_id}"

    @property
    def reviews_stream(self) -> str:
        """Capped Redis stream of verdicts as they are given: every alerts page follows it,
        so all open pages show a verdict within a second, whichever page took it."""
        return f"{self.namespace}:reviews"

    def label_outcomes(self, scope: str, entity_id: str) -> str:
        """Sorted set of label outcomes seen for one entity (``scope`` is ``terminal`` or
        ``sender``), scored by label arrival time: the source of "risk from recent labels"."""
        return f"{self.namespace}:outcomes:{scope}:{entity_id}"

    def label_positives(self, scope: str, entity_id: str) -> str:
        """The positive members of :meth:`label_outcomes` only, so that counting the
        positives in a time window is one ``ZCOUNT`` (see ``stream.outcomes``)."""
        return f"{self.namespace}:positives:{scope}:{entity_id}"

    def batch_model(self, kind: EventKind, version: str) -> str:
        """Signed batch-model payload of one version."""
        return f"{self.namespace}:model:batch:{kind}:{version}"

    def batch_model_current(self, kind: EventKind) -> str:
        """Pointer (a version string) to the batch model in production."""
        return f"{self.namespace}:model:batch:{kind}:current"

    def batch_model_history(self, kind: EventKind) -> str:
        """List of the versions that were current before, newest first: what ``rollback``
        returns to."""
        return f"{self.namespace}:model:batch:{kind}:history"


def consumer_group(namespace: str) -> str:
    """The Faust application id, which is also the Kafka consumer group of the workers."""
    return f"{namespace}-scorer"


def history_table(kind: EventKind) -> str:
    """The name of the workers' Faust table of ``kind``'s entity histories (cards, senders)."""
    return f"{kind}-history"


def history_changelog(namespace: str, kind: EventKind) -> str:
    """The changelog topic Faust names for :func:`history_table` of ``kind`` in the app
    :func:`consumer_group` of ``namespace`` (``<app id>-<table>-changelog``)."""
    return f"{consumer_group(namespace)}-{history_table(kind)}-changelog"


class Metrics:
    """Prometheus metric names exported by the stream workers."""

    EVENTS = "fraud_events_total"  # labels: kind
    ALERTS = "fraud_alerts_total"  # labels: kind, decision
    DEAD_LETTERS = "fraud_dead_letters_total"  # labels: topic (reasons are free text: logs)
    LABELS = "fraud_labels_total"  # labels: kind, outcome (learned/waiting/duplicate)
    SCORING_LATENCY = "fraud_scoring_latency_seconds"  # labels: kind
    EVENT_TO_DECISION = "fraud_event_to_decision_seconds"  # labels: kind
    MODEL_VERSION = "fraud_model_version"  # labels: kind, model
    CHECKPOINTS = "fraud_checkpoints_total"  # labels: kind
    MODEL_SWAPS = "fraud_model_swaps_total"  # labels: kind, outcome (swapped/refused)
    BATCH_MODEL = "fraud_batch_model"  # Info (exported as fraud_batch_model_info): kind, version
    ALERT_REASONS = "fraud_alert_reasons_total"  # labels: kind, feature (one per reason)
    LABEL_DELAY = "fraud_label_delay_seconds"  # labels: kind (label time - event time)
    SCORE = "fraud_score"  # histogram, labels: kind, score (online/batch/hybrid)
    PRECISION = "fraud_rolling_precision"  # labels: kind, score (online/hybrid)
    RECALL = "fraud_rolling_recall"  # labels: kind, score (online/hybrid)
    AVERAGE_PRECISION = "fraud_rolling_average_precision"  # labels: kind, score (online/hybrid)
    CONSUMER_LAG = "fraud_consumer_lag"  # labels: topic, partition
    STATE_ENTITIES = "fraud_state_entities"  # labels: kind (cards, senders in this worker)
    STATE_BYTES = "fraud_state_bytes"  # labels: kind (their encoded histories)
    STATE_FORGOTTEN = "fraud_state_forgotten_total"  # labels: kind (histories dropped, idle)
    OFFSET_GAPS = "fraud_offset_gaps_total"  # labels: topic (input gaps read again)
