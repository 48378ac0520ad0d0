"""The Overview dashboard: is the stream keeping up, how fast, and what is it deciding.

What an operator opens first: throughput by kind, scoring latency from the worker's own
histogram and end to end, alerts by decision, consumer lag and dead letters.
"""

from __future__ import annotations

from dashboards.panels import Json, dashboard, prom, stat, timeseries
from dashboards.promql import increase, quantile, rate, summed
from models.names import Metrics

UID = "fraudstream-overview"

LAG = f"sum by (topic) (max by (topic, partition) ({Metrics.CONSUMER_LAG}))"
"""Messages behind, per topic. ``max`` first: two workers briefly reporting the same
partition during a rebalance must not count it twice."""


def _latency(title: str, description: str, histogram: str) -> Json:
    return timeseries(
        title,
        description,
        [
            prom(quantile(q, histogram, "kind"), f"p{round(q * 100)} {{{{kind}}}}")
            for q in (0.5, 0.99)
        ],
        unit="s",
    )


def build() -> Json:
    events = rate(Metrics.EVENTS)
    alerts = rate(Metrics.ALERTS)
    headline = [
        stat(
            "Events/s",
            "Events scored per second, all kinds.",
            [prom(summed(events), "events/s")],
            unit="ops",
        ),
        stat(
            "Alerts/s",
            "Alerts raised per second (review and block).",
            [prom(summed(alerts), "alerts/s")],
            unit="ops",
        ),
        stat(
            "Alert share",
            "Alerts per event scored.",
            [prom(f"{summed(alerts)} / {summed(events)}", "share")],
            unit="percentunit",
            decimals=2,
        ),
        stat(
            "Scoring p99",
            "The slowest kind's 99th percentile worker time per event.",
            [prom(f"max({quantile(0.99, Metrics.SCORING_LATENCY, 'kind')})", "p99")],
            unit="s",
            thresholds=((None, "green"), (0.01, "orange"), (0.1, "red")),
        ),
        stat(
            "Consumer lag",
            "Messages the workers still have to read, all topics.",
            [prom(f"sum({LAG})", "lag")],
            unit="short",
            thresholds=((None, "green"), (1_000, "orange"), (10_000, "red")),
        ),
        stat(
            "Dead letters",
            "Inputs sent to the dead-letter topic in the time range.",
            [prom(f"sum({increase(Metrics.DEAD_LETTERS)})", "dead letters")],
            unit="short",
            graph=False,
            thresholds=((None, "green"), (1, "red")),
        ),
    ]
    throughput = timeseries(
        "Events/s by kind",
        "Events scored per second.",
        [prom(summed(events, "kind"), "{{kind}}")],
        unit="ops",
        stack=True,
    )
    by_decision = timeseries(
        "Alerts/s by decision",
        "Alerts raised per second, by kind and decision (review or block).",
        [prom(summed(alerts, "kind, decision"), "{{kind}} {{decision}}")],
        unit="ops",
        stack=True,
    )
    scoring = _latency(
        "Scoring latency (worker)",
        "Worker time per event (decode, features, score, state): p50 and p99 from the "
        "scoring-latency histogram.",
        Metrics.SCORING_LATENCY,
    )
    end_to_end = _latency(
        "Event to decision (end to end)",
        "From the event's own time to its decision: includes the producer and Kafka, so it "
        "grows with consumer lag.",
        Metrics.EVENT_TO_DECISION,
    )
    lag = timeseries(
        "Consumer lag by topic",
        "Messages between each topic's end offsets and the workers' committed offsets.",
        [prom(LAG, "{{topic}}")],
        unit="short",
        stack=True,
    )
    dead_letters = timeseries(
        "Dead letters/s by topic",
        "Inputs that could not be decoded or validated, by the topic they came from; and "
        "gaps in an input partition's offsets, which the worker had read again (a consumer "
        "that dropped messages around a rebalance: stream.offsets).",
        [
            prom(summed(rate(Metrics.DEAD_LETTERS), "topic"), "{{topic}}"),
            prom(summed(rate(Metrics.OFFSET_GAPS), "topic"), "{{topic}} gap read again"),
        ],
        unit="ops",
        bars=True,
        stack=True,
    )
    labels = timeseries(
        "Labels/s by outcome",
        "Labels received: learned, unknown event (features expired or never served), or duplicate.",
        [prom(summed(rate(Metrics.LABELS), "kind, outcome"), "{{kind}} {{outcome}}")],
        unit="ops",
        stack=True,
    )
    checkpoints = timeseries(
        "Online-model checkpoints/min",
        "Checkpoints of the online models saved to Redis.",
        [prom(f"60 * {summed(rate(Metrics.CHECKPOINTS), 'kind')}", "{{kind}}")],
        unit="short",
    )
    state_entities = timeseries(
        "Histories held",
        "Cards and senders whose history the workers hold in memory (Faust tables), and how "
        "many the workers drop per 10 minutes because no event can use them any more (cards "
        "idle 8 days, senders 31). Grows with the population active, then stays.",
        [
            prom(summed(Metrics.STATE_ENTITIES, "kind"), "{{kind}}"),
            prom(
                f"600 * {summed(rate(Metrics.STATE_FORGOTTEN), 'kind')}",
                "{{kind}} dropped / 10 min",
            ),
        ],
        unit="short",
    )
    state_bytes = timeseries(
        "History bytes held",
        "Bytes of those histories: grows until each is full (7 days or 256 transactions, "
        "24 hours or 256 messages), then stays. Worker memory follows it.",
        [prom(summed(Metrics.STATE_BYTES, "kind"), "{{kind}}")],
        unit="bytes",
        stack=True,
    )
    return dashboard(
        UID,
        "Fraudstream: overview",
        "Throughput, latency, alerts, consumer lag and dead letters of the stream workers.",
        [
            (4, [(panel, 4) for panel in headline]),
            (8, [(throughput, 12), (by_decision, 12)]),
            (8, [(scoring, 12), (end_to_end, 12)]),
            (8, [(lag, 12), (dead_letters, 12)]),
            (8, [(labels, 12), (checkpoints, 12)]),
            (8, [(state_entities, 12), (state_bytes, 12)]),
        ],
        refresh="10s",
        time_from="now-1h",
    )
