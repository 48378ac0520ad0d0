"""The Fraud and Spam dashboards: one definition, built once per kind of event.

What an analyst watches for one kind: alerts and decisions, the reasons behind alerts, how
late the ground truth arrives, how good the scores are, and the alerts themselves, live.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboards.panels import (
    Json,
    alerts_table,
    bargauge,
    dashboard,
    prom,
    stat,
    timeseries,
)
from dashboards.promql import increase, kind, quantile, rate, selector, summed
from models.names import EventKind, Metrics


@dataclass(frozen=True)
class KindBoard:
    kind: EventKind
    """The kind of event, also what one event is called on the panels."""
    uid: str
    title: str


FRAUD = KindBoard("transaction", "fraudstream-fraud", "Fraudstream: fraud")
SPAM = KindBoard("email", "fraudstream-spam", "Fraudstream: spam")

QUALITY = (
    (
        Metrics.AVERAGE_PRECISION,
        "Average precision",
        "Area under the precision-recall curve over the rolling window of labelled events: "
        "the threshold-free measure for rare positives.",
    ),
    (
        Metrics.PRECISION,
        "Precision at the review threshold",
        "Share of the window's alerts that the labels confirmed.",
    ),
    (
        Metrics.RECALL,
        "Recall at the review threshold",
        "Share of the window's confirmed positives that raised an alert.",
    ),
)
"""The rolling quality gauges: metric, title, meaning (shared with Model health)."""


def quality_panels(by: str, legend: str, matchers: str = "", note: str = "") -> list[Json]:
    """One panel per :data:`QUALITY` gauge, a series per ``by`` labels; ``note`` follows
    the gauge's meaning in the description."""
    return [
        timeseries(
            title,
            meaning + note,
            [prom(f"max by ({by}) ({selector(metric, matchers)})", legend)],
            unit="percentunit",
            max_value=1,
        )
        for metric, title, meaning in QUALITY
    ]


TOP_REASONS = 10


def build(board: KindBoard, alerts_stream: str) -> Json:
    only = kind(board.kind)
    noun = board.kind
    events = summed(rate(Metrics.EVENTS, only))
    alerts = rate(Metrics.ALERTS, only)

    def decided(decision: str, title: str, legend: str) -> Json:
        """The ``decision`` alerts raised in the time range."""
        count = summed(increase(Metrics.ALERTS, f'{only}, decision="{decision}"'))
        return stat(
            title,
            f"{decision.capitalize()} decisions in the time range.",
            [prom(count, legend)],
            unit="short",
            graph=False,
        )

    reasons_in_range = summed(increase(Metrics.ALERT_REASONS, only), "feature")
    reasons_per_s = summed(rate(Metrics.ALERT_REASONS, only), "feature")

    throughput = stat(
        f"{noun.capitalize()}s/s",
        f"{noun.capitalize()}s scored per second.",
        [prom(events, "events/s")],
        unit="ops",
    )
    alert_rate = stat(
        "Alerts/s",
        "Review and block decisions per second.",
        [prom(summed(alerts), "alerts/s")],
        unit="ops",
    )
    share = stat(
        "Alert share",
        f"Alerts per {noun} scored.",
        [prom(f"{summed(alerts)} / {events}", "share")],
        unit="percentunit",
        decimals=2,
    )
    blocked = decided("block", "Blocked", "blocked")
    reviewed = decided("review", "Sent to review", "review")
    latency = stat(
        "Scoring p99",
        "99th percentile worker time per event.",
        [prom(quantile(0.99, Metrics.SCORING_LATENCY, matchers=only), "p99")],
        unit="s",
    )
    by_decision = timeseries(
        "Alerts/s by decision",
        "Alerts raised per second.",
        [prom(summed(alerts, "decision"), "{{decision}}")],
        unit="ops",
        bars=True,
        stack=True,
    )
    decisions = timeseries(
        "Decisions",
        f"Share of {noun}s allowed, sent to review and blocked (allowed: scored without an alert).",
        [
            prom(f"({events} - {summed(alerts)}) / {events}", "allow"),
            prom(
                f"{summed(alerts, 'decision')} / ignoring(decision) group_left {events}",
                "{{decision}}",
            ),
        ],
        unit="percentunit",
        stack=True,
        max_value=1,
    )
    top_reasons = bargauge(
        "Top alert reasons",
        "Features named most often as reasons on the time range's alerts (each alert names "
        "its top few).",
        [prom(f"topk({TOP_REASONS}, {reasons_in_range})", table=True)],
        unit="short",
        limit=TOP_REASONS,
    )
    reasons_over_time = timeseries(
        "Alert reasons over time",
        "Reasons per second, for the five most frequent over the time range.",
        [prom(f"{reasons_per_s} and on (feature) topk(5, {reasons_in_range})", "{{feature}}")],
        unit="ops",
        stack=True,
    )
    label_delay = timeseries(
        "Label arrival delay",
        "From the event's time to its label reaching the worker: the online model learns this "
        "late, and the quality figures lag by as much.",
        [
            prom(quantile(q, Metrics.LABEL_DELAY, matchers=only), f"p{round(q * 100)}")
            for q in (0.5, 0.9, 0.99)
        ],
        unit="s",
    )
    labels = timeseries(
        "Labels/s by outcome",
        "Labels received: learned, unknown event, or duplicate.",
        [prom(summed(rate(Metrics.LABELS, only), "outcome"), "{{outcome}}")],
        unit="ops",
        stack=True,
    )
    quality = quality_panels("score", "{{score}}", matchers=only)
    live = alerts_table(
        f"Live alerts ({noun}s)",
        "The newest alerts from the workers' recent-alerts stream in Redis.",
        stream_key=alerts_stream,
        kind=board.kind,
    )
    return dashboard(
        board.uid,
        board.title,
        f"Alerts, decisions, reasons, label delays and score quality for {noun}s.",
        [
            (4, [(p, 4) for p in (throughput, alert_rate, share, blocked, reviewed, latency)]),
            (8, [(by_decision, 12), (decisions, 12)]),
            (9, [(top_reasons, 8), (reasons_over_time, 16)]),
            (8, [(label_delay, 12), (labels, 12)]),
            (8, [(panel, 8) for panel in quality]),
            (12, [(live, 24)]),
        ],
    )
