"""Prometheus metrics of a stream worker, served with Faust's own on ``/metrics``.

Names come from ``models.names.Metrics`` so dashboards and alert rules have one source.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from models.names import Metrics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EVENTS = Counter(Metrics.EVENTS, "Events scored", ["kind"])
ALERTS = Counter(Metrics.ALERTS, "Alerts raised", ["kind", "decision"])
DEAD_LETTERS = Counter(Metrics.DEAD_LETTERS, "Inputs sent to the dead-letter topic", ["topic"])
LABELS = Counter(Metrics.LABELS, "Labels received, by what became of them", ["kind", "outcome"])
SCORING_LATENCY = Histogram(
    Metrics.SCORING_LATENCY,
    "Worker time per event: decode, features, score, state (batch time / batch size)",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
EVENT_TO_DECISION = Histogram(
    Metrics.EVENT_TO_DECISION,
    "From the event's own time to its decision (includes the producer and Kafka)",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
MODEL_VERSION = Gauge(Metrics.MODEL_VERSION, "Version of the model in use", ["kind", "model"])
CHECKPOINTS = Counter(Metrics.CHECKPOINTS, "Online-model checkpoints saved to Redis", ["kind"])
MODEL_SWAPS = Counter(
    Metrics.MODEL_SWAPS,
    "Batch-model changes: swapped in, or refused (bad payload)",
    ["kind", "outcome"],
)
BATCH_MODEL = Info(Metrics.BATCH_MODEL, "Batch model in use (version 'none' for none)", ["kind"])
