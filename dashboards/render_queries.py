"""What a panel asks Prometheus, as Grafana would ask it, and the series it gets back.

Grafana rewrites a query before sending it: its macros (``$__rate_interval``, ``$__range``,
``$__interval``) and the dashboard's variables become concrete values, and the series are
named by the target's ``legendFormat``. The renderer has no Grafana to do that, so this
module does it after Grafana's documented rules, with the renderer's fixed time range in
place of the dashboard's picker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dashboards.render_prometheus import Prometheus, QueryError, Series

Json = dict[str, Any]

RANGE_PANELS = frozenset({"timeseries", "heatmap"})
"""Panels that draw over time: ``/api/v1/query_range``."""
INSTANT_PANELS = frozenset({"stat", "gauge", "bargauge", "table"})
"""Panels that show values at the range's end: ``/api/v1/query`` (the stat panels here all
reduce with ``lastNotNull``, which is that value)."""


@dataclass(frozen=True)
class TimeRange:
    """The range every panel shows: ``span_s`` seconds up to ``end`` (POSIX seconds)."""

    end: float
    span_s: float
    scrape_s: float
    """Prometheus's scrape interval, the data source's ``timeInterval``: the shortest
    ``$__interval``, and what ``$__rate_interval`` is derived from."""

    @property
    def start(self) -> float:
        return self.end - self.span_s

    def interval_s(self, max_points: int) -> float:
        """Grafana's ``$__interval``: the range over the panel's width in points, never
        below the scrape interval; also the step of range queries."""
        return max(self.scrape_s, math.ceil(self.span_s / max(max_points, 1)))

    def macros(self, interval_s: float) -> dict[str, str]:
        """Grafana's global macros for a panel queried every ``interval_s`` seconds.
        ``$__rate_interval`` is ``max($__interval + scrape interval, 4 * scrape interval)``,
        as Grafana documents it: a rate always spans at least four scrapes."""
        rate_s = max(interval_s + self.scrape_s, 4 * self.scrape_s)
        return {
            "__interval": duration(interval_s),
            "__interval_ms": str(round(interval_s * 1000)),
            "__rate_interval": duration(rate_s),
            "__rate_interval_ms": str(round(rate_s * 1000)),
            "__range": duration(self.span_s),
            "__range_s": str(round(self.span_s)),
            "__range_ms": str(round(self.span_s * 1000)),
        }


def duration(seconds: float) -> str:
    """A PromQL duration: whole seconds when it is, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def dashboard_variables(board: Json) -> dict[str, str]:
    """A concrete value per dashboard variable: its saved current value, else its first
    option (custom, interval, constant and text box variables list them in ``query``), else
    ``.*``, which a ``=~"$var"`` matcher reads as "all". ``$__all`` is ``.*`` too. The
    dashboards in :mod:`dashboards.catalog` define none today; this keeps a picture possible
    when one is added."""
    values: dict[str, str] = {}
    for variable in board.get("templating", {}).get("list", []):
        name = variable.get("name")
        if not name:
            continue
        current = variable.get("current", {}).get("value")
        if isinstance(current, list):
            current = "|".join(str(v) for v in current) if current else None
        if current == "$__all":
            current = ".*"
        if current in (None, "") and variable.get("type") in {
            "custom",
            "interval",
            "constant",
            "textbox",
        }:
            current = str(variable.get("query", "")).split(",")[0].strip() or None
        values[name] = ".*" if current in (None, "") else str(current)
    return values


_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def interpolate(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` replaced;
    an unknown name is left as written, so Prometheus's error names it on the panel."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


_LEGEND = re.compile(r"\{\{\s*([^}\s]+)\s*\}\}")


def legend(template: str, labels: Mapping[str, str], expr: str) -> str:
    """A series' display name: ``{{label}}`` filled in; ``__auto`` (or nothing) is the
    labels as Prometheus writes them, or the expression for an unlabelled series."""
    if template in ("", "__auto"):
        shown = {k: v for k, v in labels.items() if k != "__name__"}
        name = labels.get("__name__", "")
        if not shown:
            return name or expr
        return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template)


@dataclass(frozen=True)
class Named:
    """A series with the name the panel shows for it."""

    name: str
    series: Series


@dataclass
class PanelData:
    """What a panel's targets returned, in target order, and the errors of any that failed."""

    series: list[Named] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    step_s: float = 0.0


def is_prometheus(panel: Json) -> bool:
    """Whether the panel's queries go to Prometheus (a target's data source wins over the
    panel's, as in Grafana)."""
    panel_type = panel.get("datasource", {}).get("type")
    targets = panel.get("targets", [])
    return bool(targets) and all(
        target.get("datasource", {}).get("type", panel_type) == "prometheus" for target in targets
    )


def fetch(
    panel: Json,
    prometheus: Prometheus,
    time_range: TimeRange,
    variables: Mapping[str, str],
    max_points: int,
) -> PanelData:
    """Run every target of a Prometheus panel; a refused query is recorded, not raised
    (:class:`~dashboards.render_prometheus.PrometheusError` still is: nothing to draw)."""
    interval = time_range.interval_s(max_points)
    values = {**variables, **time_range.macros(interval)}
    # Grafana aligns a range query to its step, so that refreshes show the same points.
    end = math.floor(time_range.end / interval) * interval
    data = PanelData(step_s=interval)
    for target in panel.get("targets", []):
        if target.get("hide"):
            continue
        expr = interpolate(str(target.get("expr", "")), values)
        try:
            if panel.get("type") in RANGE_PANELS:
                found = prometheus.query_range(expr, end - time_range.span_s, end, interval)
            else:
                found = prometheus.query(expr, time_range.end)
        except QueryError as exc:
            data.errors.append(f"{target.get('refId', '?')}: {exc}")
            continue
        template = str(target.get("legendFormat", ""))
        data.series += [Named(legend(template, s.labels, expr), s) for s in found]
    return data
