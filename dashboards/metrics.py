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

    None today: the rolling quality gauges, score and label-delay histograms, alert reasons
    and consumer lag moved to ``Metrics`` with the worker code that exports them
    (``stream.metrics``, ``stream.quality``, ``stream.lag``).
    """


HISTOGRAMS = frozenset(
    {Metrics.SCORING_LATENCY, Metrics.EVENT_TO_DECISION, Metrics.LABEL_DELAY, Metrics.SCORE}
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
