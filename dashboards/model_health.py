"""The Model health dashboard: which models score, whether they are still good, whether the
traffic they see has moved.

Versions and hot swaps show what is in production; the rolling prequential quality of the
online and hybrid scores shows whether it works; the score distribution against itself a
day earlier shows drift before the (late) labels can.
"""

from __future__ import annotations

from dashboards.kinds import quality_panels
from dashboards.metrics import bucket, count, info, total
from dashboards.panels import Json, dashboard, heatmap, prom, row, stat, timeseries
from dashboards.promql import increase, quantile, rate, summed
from models.names import EVENT_KINDS, Metrics

UID = "fraudstream-model-health"

DRIFT_WINDOW = "1h"
"""Scores are compared over an hour now and the same hour a day earlier, so that daily
seasonality cancels out; an hour is expected to hold enough events for steady quantiles
(not measured on real traffic)."""

HYBRID = 'score="hybrid"'
VERSIONS = f"max by (kind, model) ({Metrics.MODEL_VERSION})"


def _mean_score(offset: str = "") -> str:
    """Mean hybrid score per kind over the drift window, ending ``offset`` ago."""
    scores, events = (
        summed(rate(name, HYBRID, DRIFT_WINDOW, offset), "kind")
        for name in (total(Metrics.SCORE), count(Metrics.SCORE))
    )
    return f"{scores} / {events}"


def build() -> Json:
    by_version = prom(VERSIONS, "{{kind}} {{model}}")
    versions = stat(
        "Model versions",
        "Version number of each model in use (online: its checkpoint number).",
        [by_version],
        unit="none",
        graph=False,
    )
    batch_models = stat(
        "Batch models in use",
        "The batch model each kind scores with ('none' before the first promotion); two "
        "versions of one kind at once mean the workers disagree.",
        [prom(f"max by (kind, version) ({info(Metrics.BATCH_MODEL)})", "{{kind}}: {{version}}")],
        unit="none",
        graph=False,
        text_mode="name",
    )
    swaps_in_range = stat(
        "Hot swaps",
        "Batch-model swaps in the time range, by outcome (refused: a payload that failed "
        "verification and was not loaded).",
        [prom(summed(increase(Metrics.MODEL_SWAPS), "outcome"), "{{outcome}}")],
        unit="short",
        graph=False,
    )
    checkpoints = stat(
        "Checkpoints/min",
        "Online-model checkpoints saved to Redis.",
        [prom(f"60 * {summed(rate(Metrics.CHECKPOINTS))}", "checkpoints")],
        unit="short",
    )
    swaps = timeseries(
        "Hot swaps over time",
        "Batch-model swaps per kind and outcome, per 5 minutes.",
        [
            prom(
                summed(increase(Metrics.MODEL_SWAPS, window="5m"), "kind, outcome"),
                "{{kind}} {{outcome}}",
            )
        ],
        unit="short",
        bars=True,
        stack=True,
    )
    version_history = timeseries(
        "Model version over time",
        "Each step is a new version: an online checkpoint or a batch-model swap.",
        [by_version],
        unit="none",
        min_value=None,
    )
    quality = quality_panels(
        "kind, score",
        "{{kind}} {{score}}",
        note=" The online model alone against the hybrid (blended) score.",
    )
    distributions = [
        heatmap(
            f"Hybrid score distribution ({kind}s)",
            "Scores given per second, by bucket of 0.05: a band moving up or down is drift.",
            [prom(summed(rate(bucket(Metrics.SCORE), f'kind="{kind}", {HYBRID}'), "le"))],
            y_unit="none",
        )
        for kind in EVENT_KINDS
    ]
    quantiles = timeseries(
        "Hybrid score quantiles, now and a day earlier",
        f"Median and 90th percentile over the last {DRIFT_WINDOW}, and the same a day earlier.",
        [
            prom(
                quantile(q, Metrics.SCORE, "kind", HYBRID, DRIFT_WINDOW, offset),
                f"p{round(q * 100)} {{{{kind}}}}{label}",
            )
            for offset, label in (("", ""), ("1d", " a day earlier"))
            for q in (0.5, 0.9)
        ],
        unit="none",
        max_value=1,
    )
    mean_shift = timeseries(
        "Mean hybrid score shift",
        f"Mean score over the last {DRIFT_WINDOW} minus the same a day earlier: near zero "
        "while the traffic looks like yesterday's.",
        [prom(f"({_mean_score()}) - ({_mean_score('1d')})", "{{kind}}")],
        unit="none",
        min_value=None,
    )
    return dashboard(
        UID,
        "Fraudstream: model health",
        "Model versions, hot swaps, rolling quality of the online and hybrid scores, drift.",
        [
            (5, [(versions, 8), (batch_models, 8), (swaps_in_range, 4), (checkpoints, 4)]),
            (8, [(swaps, 12), (version_history, 12)]),
            row("Quality: prequential, over the rolling window of labelled events"),
            (8, [(panel, 8) for panel in quality]),
            row("Drift: scores now against a day earlier"),
            (9, [(panel, 12) for panel in distributions]),
            (8, [(quantiles, 12), (mean_shift, 12)]),
        ],
        time_from="now-24h",
    )
