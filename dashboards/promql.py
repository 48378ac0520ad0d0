"""PromQL fragments that the dashboards and alert rules share.

Written once so that a quantile or a rate means the same thing on every panel and in the
alert rules. ``$__rate_interval`` and ``$__range`` are Grafana's own macros: the rate window
that suits the scrape interval, and the dashboard's time range.
"""

from __future__ import annotations

from dashboards.metrics import bucket

RATE = "$__rate_interval"
RANGE = "$__range"


def selector(metric: str, matchers: str = "") -> str:
    """``metric{matchers}`` (no braces when there are no matchers)."""
    return f"{metric}{{{matchers}}}" if matchers else metric


def rate(metric: str, matchers: str = "", window: str = RATE, offset: str = "") -> str:
    """Per-second rate over ``window``, ending ``offset`` ago (now when empty)."""
    shift = f" offset {offset}" if offset else ""
    return f"rate({selector(metric, matchers)}[{window}]{shift})"


def increase(metric: str, matchers: str = "", window: str = RANGE) -> str:
    return f"increase({selector(metric, matchers)}[{window}])"


def summed(expr: str, by: str = "") -> str:
    """``sum by (labels) (expr)``, or a plain ``sum`` without labels."""
    return f"sum by ({by}) ({expr})" if by else f"sum({expr})"


def quantile(
    q: float,
    histogram: str,
    by: str = "",
    matchers: str = "",
    window: str = RATE,
    offset: str = "",
) -> str:
    """The ``q`` quantile of a histogram over ``window`` (ending ``offset`` ago), per ``by``
    labels (comma-separated)."""
    labels = f"le, {by}" if by else "le"
    rates = rate(bucket(histogram), matchers, window, offset)
    return f"histogram_quantile({q}, {summed(rates, labels)})"


def kind(value: str) -> str:
    """The matcher for one kind of event (``transaction`` or ``email``)."""
    return f'kind="{value}"'
