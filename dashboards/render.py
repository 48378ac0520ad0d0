"""``python -m dashboards render``: a PNG of each dashboard, drawn from its JSON with data
from a real Prometheus.

Why not screenshots: no Grafana runs where this project is built and documented, and a
screenshot would show whatever a Grafana happened to hold. These pictures are drawn from the
very JSON that ``provision`` uploads (gridPos, panel types, units, thresholds, legends), with
each target's PromQL sent to Prometheus as Grafana would send it, so a picture in the README
shows what the definitions in :mod:`dashboards.catalog` display. It is not Grafana's own
rendering: fonts, spacing and details differ, and panels on other data sources (Redis) say
what they show instead of showing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dashboards import render_charts, render_panels
from dashboards import render_style as style
from dashboards.panels import GRID_WIDTH
from dashboards.render_canvas import Box, Canvas, points
from dashboards.render_prometheus import Prometheus
from dashboards.render_queries import (
    INSTANT_PANELS,
    RANGE_PANELS,
    PanelData,
    TimeRange,
    dashboard_variables,
    fetch,
    is_prometheus,
)

Json = dict[str, Any]

WIDTH_PX = 1280
"""The picture's width: a common screen width, which Grafana's 24 columns divide evenly."""
CELL_PX = 30
GAP_PX = 8
"""Grafana's grid: one unit of ``gridPos.h`` is 30 px, with 8 px between panels."""
HEADER_PX = 56
MARGIN_PX = 8


def _column_px() -> float:
    return (WIDTH_PX - 2 * MARGIN_PX + GAP_PX) / GRID_WIDTH


def panel_box(grid_pos: Json) -> Box:
    """Where Grafana would put a panel of this ``gridPos``, in pixels."""
    column = _column_px()
    return Box(
        left=MARGIN_PX + grid_pos["x"] * column,
        top=HEADER_PX + grid_pos["y"] * (CELL_PX + GAP_PX),
        width=grid_pos["w"] * column - GAP_PX,
        height=grid_pos["h"] * (CELL_PX + GAP_PX) - GAP_PX,
    )


def size_px(board: Json) -> tuple[int, int]:
    """Width and height of a dashboard's picture: the grid's lowest edge decides."""
    rows = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"]), default=0)
    return WIDTH_PX, HEADER_PX + rows * (CELL_PX + GAP_PX) - GAP_PX + MARGIN_PX


def render_dashboard(
    board: Json, prometheus: Prometheus, time_range: TimeRange, path: Path
) -> list[str]:
    """Draw ``board`` into ``path`` (PNG); returns the queries Prometheus refused, as
    ``panel: error`` (each also shown on its panel)."""
    canvas = Canvas(*size_px(board))
    _header(canvas, board, time_range)
    variables = dashboard_variables(board)
    failed: list[str] = []
    for panel in board["panels"]:
        box = panel_box(panel["gridPos"])
        if panel.get("type") == "row":
            render_panels.row(canvas, box, panel)
            continue
        content = render_panels.frame(canvas, box, str(panel.get("title", "")))
        kind = panel.get("type", "")
        if not is_prometheus(panel):
            render_panels.elsewhere(canvas, content, panel)
            continue
        if kind not in RANGE_PANELS | INSTANT_PANELS:
            render_panels.message(canvas, content, f"panel type {kind!r} is not drawn here")
            continue
        # Grafana asks for about one point per pixel of the panel's width.
        data = fetch(panel, prometheus, time_range, variables, max_points=int(box.width))
        failed += [f"{panel.get('title', '')}: {error}" for error in data.errors]
        errors_px = 18 if data.errors else 0
        DRAW[kind](canvas, content.inset(bottom=errors_px), panel, data, time_range)
        render_panels.errors(canvas, content, data.errors)
    canvas.save(str(path))
    return failed


def _header(canvas: Canvas, board: Json, time_range: TimeRange) -> None:
    """The dashboard's title, and which range of which data the picture shows."""
    canvas.text(
        MARGIN_PX,
        HEADER_PX / 2,
        str(board.get("title", board["uid"])),
        va="center",
        fontsize=points(22),
        fontweight="bold",
    )
    end = datetime.fromtimestamp(time_range.end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    span = _span(time_range.span_s)
    note = f"last {span} to {end} · drawn from the dashboard JSON by python -m dashboards render"
    canvas.text(
        canvas.width - MARGIN_PX,
        HEADER_PX / 2,
        note,
        ha="right",
        va="center",
        color=style.MUTED,
        fontsize=points(14),
    )


def _span(seconds: float) -> str:
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and math.isclose(seconds % size, 0):
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Draw = Callable[[Canvas, Box, Json, PanelData, TimeRange], None]

DRAW: dict[str, Draw] = {
    "timeseries": render_charts.timeseries,
    "heatmap": render_charts.heatmap,
    "stat": lambda canvas, box, panel, data, _: render_panels.stat(canvas, box, panel, data),
    "gauge": lambda canvas, box, panel, data, _: render_panels.stat(canvas, box, panel, data),
    "bargauge": lambda canvas, box, panel, data, _: render_charts.bargauge(
        canvas, box, panel, data
    ),
    "table": lambda canvas, box, panel, data, _: render_panels.table(canvas, box, panel, data),
}
"""How each panel type that queries Prometheus is drawn (gauges as stat numbers)."""


@dataclass(frozen=True)
class Rendered:
    """One picture written, and the queries that failed in it."""

    uid: str
    path: Path
    failed: list[str]


def render_all(
    boards: list[Json], prometheus: Prometheus, time_range: TimeRange, out: Path
) -> list[Rendered]:
    """``<out>/<uid>.png`` for each board, after checking that Prometheus answers (so a
    wrong URL leaves no half-written set behind)."""
    prometheus.check()
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for board in boards:
        path = out / f"{board['uid']}.png"
        done.append(
            Rendered(board["uid"], path, render_dashboard(board, prometheus, time_range, path))
        )
    return done
