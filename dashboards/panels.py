"""Builders for Grafana's classic dashboard JSON (the model of ``/api/dashboards/db`` and of
file provisioning), complete enough to satisfy ``@grafana/schema``'s types.

Each panel builder writes every option its panel plugin's schema requires instead of
leaving it to Grafana's defaults, so the schema check in the tests can be strict (no Grafana
renders them here). :func:`dashboard` lays panels out on Grafana's 24-column grid and
numbers panel ids and query ref ids, so the definitions only say what to show and how wide.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Sequence
from typing import Any

from dashboards.datasources import ALERTS_REF, PROMETHEUS_REF

Json = dict[str, Any]

SCHEMA_VERSION = 42
"""The dashboard JSON schema version that ``@grafana/schema`` 13.2.3 (Grafana 13.2)
describes; a test checks the two agree."""

TAG = "fraudstream"
GRID_WIDTH = 24

Line = tuple[int, Sequence[tuple[Json, int]]]
"""One line of the grid: its height and its panels with their widths (summing to 24)."""

Steps = Sequence[tuple[float | None, str]]
"""Threshold steps: from each value (``None``: the base) up, this colour."""


# -- queries ----------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, table: bool = False) -> Json:
    """A Prometheus query over the time range; ``legend`` is a template such as ``{{kind}}``.
    ``table``: one instant query at the range's end, as rows (what a top-k list ranks)."""
    return {
        "datasource": PROMETHEUS_REF,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not table,
        "instant": table,
        "format": "table" if table else "time_series",
    }


# -- panels -----------------------------------------------------------------------------


def _thresholds(steps: Steps) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


_GREEN = ((None, "green"),)


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    defaults: Json,
    options: Json,
    overrides: Sequence[Json] = (),
    datasource: Json = PROMETHEUS_REF,
    transformations: Sequence[Json] = (),
) -> Json:
    """What every panel carries: the parts that differ between panel types are passed in."""
    panel: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "targets": list(targets),
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options,
    }
    if transformations:
        panel["transformations"] = list(transformations)
    return panel


def timeseries(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str,
    stack: bool = False,
    bars: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
    thresholds: Steps = _GREEN,
    show_thresholds: bool = False,
) -> Json:
    """Lines (or bars) over time, one series per label set, shared tooltip."""
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "thresholds": _thresholds(thresholds),
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "lineInterpolation": "linear",
            "fillOpacity": 60 if bars else (25 if stack else 8),
            "gradientMode": "none",
            "showPoints": "never",
            "spanNulls": False,
            "axisPlacement": "auto",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if show_thresholds else "off"},
        },
    }
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return _panel(
        "timeseries",
        title,
        description,
        targets,
        defaults=defaults,
        options={
            "legend": {
                "calcs": ["mean", "max", "lastNotNull"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )


def stat(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str,
    thresholds: Steps = _GREEN,
    calc: str = "lastNotNull",
    decimals: int | None = None,
    graph: bool = True,
    text_mode: str = "value_and_name",
) -> Json:
    """One big number per series (the last value, or ``calc`` over the range);
    ``text_mode="name"`` asks for only the series' name (facts carried in labels)."""
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(thresholds),
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return _panel(
        "stat",
        title,
        description,
        targets,
        defaults=defaults,
        options={
            "reduceOptions": {"calcs": [calc], "fields": "", "values": False},
            "orientation": "auto",
            "textMode": text_mode,
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
        },
    )


def bargauge(
    title: str, description: str, targets: Sequence[Json], *, unit: str, limit: int = 10
) -> Json:
    """Horizontal bars, largest first: a top-k list. ``targets`` are table queries
    (:func:`prom` with ``table=True``), meant as one bar per row, named by the row's labels."""
    return _panel(
        "bargauge",
        title,
        description,
        targets,
        defaults={
            "unit": unit,
            "min": 0,
            "color": {"mode": "continuous-BlYlRd"},
            "thresholds": _thresholds(_GREEN),
        },
        options={
            "reduceOptions": {"calcs": [], "fields": "/^Value$/", "values": True, "limit": limit},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "valueMode": "color",
            "namePlacement": "auto",
            "showUnfilled": True,
            "sizing": "auto",
            "minVizWidth": 8,
            "minVizHeight": 16,
            "maxVizHeight": 300,
            "legend": {
                "calcs": [],
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": False,
            },
        },
        transformations=[
            {"id": "sortBy", "options": {"sort": [{"field": "Value", "desc": True}]}},
        ],
    )


def heatmap(title: str, description: str, targets: Sequence[Json], *, y_unit: str) -> Json:
    """A histogram's buckets over time: ``targets`` select ``_bucket`` rates by ``le``."""
    as_buckets = [{**target, "format": "heatmap", "legendFormat": "{{le}}"} for target in targets]
    return _panel(
        "heatmap",
        title,
        description,
        as_buckets,
        defaults={"custom": {"scaleDistribution": {"type": "linear"}}},
        options={
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "fill": "dark-orange",
                "scale": "exponential",
                "exponent": 0.5,
                "reverse": False,
                "steps": 64,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": y_unit},
        },
    )


ALERT_COLUMNS = (
    "scored_at",
    "kind",
    "decision",
    "score",
    "online_score",
    "batch_score",
    "entity_id",
    "summary",
    "reasons",
    "model_version",
    "alert_id",
)
"""Fields of ``models.events.Alert`` the live table shows, in order (``alert_id`` derives
from ``event_id``, which is left out with ``schema_version``)."""


def alerts_table(title: str, description: str, *, stream_key: str, kind: str | None) -> Json:
    """The newest alerts from the Redis stream the worker appends to (``XREVRANGE``).

    Each stream entry holds one field, ``alert``: the alert's JSON. The ``extractFields``
    transformation is meant to turn that JSON into columns, and ``kind`` to keep one kind
    (checked against the schema, not in a running Grafana). Needs the ``redis-datasource``
    plugin in Grafana.
    """
    extract = {
        "id": "extractFields",
        "options": {"source": "alert", "format": "json", "replace": True, "keepTime": False},
    }
    only_kind = {
        "id": "filterByValue",
        "options": {
            "type": "include",
            "match": "all",
            "filters": [
                {"fieldName": "kind", "config": {"id": "equal", "options": {"value": kind}}}
            ],
        },
    }
    organize = {
        "id": "organize",
        "options": {
            "indexByName": {name: i for i, name in enumerate(ALERT_COLUMNS)},
            "excludeByName": {"schema_version": True, "event_id": True},
            "renameByName": {"scored_at": "scored at (UTC)", "online_score": "online"},
        },
    }
    decision_colours = {
        "matcher": {"id": "byName", "options": "decision"},
        "properties": [
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {
                "id": "mappings",
                "value": [
                    {
                        "type": "value",
                        "options": {
                            "block": {"color": "red", "index": 0},
                            "review": {"color": "orange", "index": 1},
                        },
                    }
                ],
            },
        ],
    }
    return _panel(
        "table",
        title,
        description,
        [
            {
                "datasource": ALERTS_REF,
                "type": "command",
                "command": "xrevrange",
                "keyName": stream_key,
                "start": "-",
                "end": "+",
                "count": 200,
            }
        ],
        datasource=ALERTS_REF,
        defaults={
            "custom": {
                "align": "auto",
                "cellOptions": {"type": "auto"},
                "inspect": True,
                "filterable": True,
            },
            "thresholds": _thresholds(_GREEN),
        },
        overrides=[decision_colours],
        options={
            "showHeader": True,
            "frameIndex": 0,
            "cellHeight": "sm",
            "sortBy": [{"displayName": "scored at (UTC)", "desc": True}],
        },
        transformations=[extract, *([] if kind is None else [only_kind]), organize],
    )


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# -- dashboards -------------------------------------------------------------------------


def dashboard(
    uid: str,
    title: str,
    description: str,
    lines: Sequence[Line | Json],
    *,
    refresh: str = "30s",
    time_from: str = "now-3h",
) -> Json:
    """A dashboard of ``lines`` (grid lines, or a row panel between them), top to bottom."""
    panels: list[Json] = []
    y = 0
    for line in lines:
        # A row panel is a line of its own, one unit high and as wide as the grid.
        height, members = (1, [(line, GRID_WIDTH)]) if isinstance(line, dict) else line
        if sum(width for _, width in members) != GRID_WIDTH:
            raise ValueError(f"{title}: a line's widths must sum to {GRID_WIDTH}")
        x = 0
        for panel, width in members:
            panels.append(_placed(panel, len(panels) + 1, x=x, y=y, w=width, h=height))
            x += width
        y += height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m"]},
        "templating": {"list": []},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "Fraudstream",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "tooltip": "",
            }
        ],
        "panels": panels,
    }


def _placed(panel: Json, panel_id: int, *, x: int, y: int, w: int, h: int) -> Json:
    placed = copy.deepcopy(panel)
    placed["id"] = panel_id
    placed["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
    for letter, target in zip(string.ascii_uppercase, placed.get("targets", []), strict=False):
        target["refId"] = letter
    return placed
