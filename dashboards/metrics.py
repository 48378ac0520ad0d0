"""The metric names that the dashboards and alert rules query, and how each is exposed.

Every name the worker exports is defined once, in :class:`models.names.Metrics`; the
dashboards import it from there. The dashboards also need a few series that no worker exports
yet: their names live in :class:`Pending`, and only there, until they move to
``models.names.Metrics`` with the worker code that exports them. Panels that use them stay
empty ("No data") until then, which is the honest state of those facts today.
"""

from __future__ import annotations

from models.names import Metrics


class Pending:
    """PENDING: names the dashboards need that ``models.names.Metrics`` does not define and no
    worker exports yet. Move each to ``Metrics`` (same name) when the worker exports it.

    Quality gauges are prequential: each scored event is judged by its label when the label
    arrives, over the most recent labelled events of a kind (a rolling window), at the
    operating (review) threshold for precision and recall.
    """

    ALERT_REASONS = "fraud_alert_reasons_total"
    """Counter, labels ``kind``, ``feature``: the reason codes (features) on raised alerts,
    one increment per reason of each alert (the source of the "top reasons" panels)."""

    LABEL_DELAY = "fraud_label_delay_seconds"
    """Histogram, label ``kind``: from an event's own time to its label's arrival at the
    worker (chargebacks and spam reports come late; the online model learns that late)."""

    PRECISION = "fraud_rolling_precision"
    """Gauge, labels ``kind``, ``score`` (``online`` or ``hybrid``): precision at the review
    threshold over the rolling window of labelled events."""

    RECALL = "fraud_rolling_recall"
    """Gauge, labels ``kind``, ``score``: recall at the review threshold, same window."""

    AVERAGE_PRECISION = "fraud_rolling_average_precision"
    """Gauge, labels ``kind``, ``score``: average precision (area under the PR curve, the
    threshold-free measure that suits rare positives), same window."""

    SCORE = "fraud_score"
    """Histogram, labels ``kind``, ``score`` (``online``, ``batch``, ``hybrid``): the scores
    given, buckets 0.05 apart on [0, 1]; comparing it with itself a day earlier shows drift."""

    CONSUMER_LAG = "fraud_consumer_lag"
    """Gauge, labels ``topic``, ``partition``: messages between the partition's end offset and
    the worker's committed offset, refreshed on a timer (not only when records arrive, so a
    stalled worker shows a growing lag instead of a frozen one)."""


HISTOGRAMS = frozenset(
    {Metrics.SCORING_LATENCY, Metrics.EVENT_TO_DECISION, Pending.LABEL_DELAY, Pending.SCORE}
)
"""Names exposed as ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``, not as is."""

INFOS = frozenset({Metrics.BATCH_MODEL})
"""Names of ``Info`` metrics, exposed as ``<name>_info`` (value 1, the facts in labels)."""


def names(holder: type) -> list[str]:
    """The metric names defined as upper-case string attributes of ``holder``."""
    return [
        value
        for key, value in vars(holder).items()
        if key.isupper() and isinstance(value, str) and not key.startswith("_")
    ]


def exposed_names() -> frozenset[str]:
    """Every series name a query may select: the names of ``Metrics`` and ``Pending`` as
    Prometheus exposes them (histograms by their three suffixed series only, infos with
    their ``_info`` suffix)."""
    exposed: set[str] = set()
    for name in [*names(Metrics), *names(Pending)]:
        if name in HISTOGRAMS:
            exposed.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        elif name in INFOS:
            exposed.add(info(name))
        else:
            exposed.add(name)
    return frozenset(exposed)


def bucket(histogram: str) -> str:
    """The ``_bucket`` series of a histogram (what ``histogram_quantile`` reads)."""
    _require_histogram(histogram)
    return f"{histogram}_bucket"


def total(histogram: str) -> str:
    """The ``_sum`` series of a histogram."""
    _require_histogram(histogram)
    return f"{histogram}_sum"


def count(histogram: str) -> str:
    """The ``_count`` series of a histogram."""
    _require_histogram(histogram)
    return f"{histogram}_count"


def info(name: str) -> str:
    """The series of an ``Info`` metric."""
    if name not in INFOS:
        raise ValueError(f"{name} is not an info metric")
    return f"{name}_info"


def _require_histogram(name: str) -> None:
    if name not in HISTOGRAMS:
        raise ValueError(f"{name} is not a histogram")
