"""Panels drawn as charts: time series (lines, stacked areas, bars), heatmaps of histogram
buckets, and bar gauges (top-k lists).

Each follows the panel's own JSON: its unit, min and max, stacking, draw style, threshold
lines and legend calculations (Grafana's table legend: mean, max, last), so that a picture
shows what the dashboard definition asks for rather than what a plotting default does.
"""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.axes import Axes

from dashboards import render_style as style
from dashboards.render_canvas import Box, Canvas, points
from dashboards.render_panels import fit, message
from dashboards.render_queries import Named, PanelData, TimeRange

Json = dict[str, Any]

TICK_PX = 12.0
LEGEND_ROW_PX = 17.0
AXIS_LEFT_PX = 72.0
"""Room for the y axis' labels (``123.4 ops/s``) left of the plot area."""
AXIS_BOTTOM_PX = 20.0


def _days(seconds: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """POSIX seconds as matplotlib dates (days since its default epoch, 1970-01-01)."""
    return seconds / 86_400.0


def _plot_area(canvas: Canvas, box: Box, time_range: TimeRange, unit: str) -> Axes:
    """Axes with Grafana's look: faint grid, UTC times below, values in ``unit`` left."""
    ax = canvas.axes(box.inset(AXIS_LEFT_PX, 4, 0, AXIS_BOTTOM_PX))
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=style.GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(colors=style.MUTED, labelsize=points(TICK_PX), length=0, pad=4)
    ax.set_xlim(*_days(np.array([time_range.start, time_range.end])))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7, tz=UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    # Steps of 1, 2 or 5 (no 2.5): every tick label is exact with the decimals shown.
    ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: style.format_value(v, unit)))
    return ax


def _grid(series: list[Named]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """All series on one time axis: the union of their timestamps, NaN where one has none."""
    times = np.array(sorted({t for n in series for t in n.series.times}), dtype=float)
    index = {t: i for i, t in enumerate(times)}
    values = np.full((len(series), len(times)), np.nan)
    for row, named in enumerate(series):
        for t, v in zip(named.series.times, named.series.values, strict=True):
            values[row, index[t]] = v
    return times, values


def timeseries(
    canvas: Canvas, box: Box, panel: Json, data: PanelData, time_range: TimeRange
) -> None:
    """Lines (or bars), stacked when the panel stacks, with a table legend below."""
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    unit = str(defaults.get("unit", "none"))
    series = data.series
    if not any(not math.isnan(v) for n in series for v in n.series.values):
        message(canvas, box, "No data")
        return
    rows = min(len(series), max(int((box.height * 0.4) / LEGEND_ROW_PX) - 1, 1))
    legend_px = (rows + 1) * LEGEND_ROW_PX + 4
    ax = _plot_area(canvas, box.inset(bottom=legend_px), time_range, unit)
    times, values = _grid(series)
    x = _days(times)
    stacked = custom.get("stacking", {}).get("mode", "none") != "none"
    bars = custom.get("drawStyle") == "bars"
    alpha = float(custom.get("fillOpacity", 0)) / 100
    base = np.zeros(len(times))
    for i, row in enumerate(values):
        colour = style.PALETTE[i % len(style.PALETTE)]
        low = base if stacked else np.zeros(len(times))
        high = low + np.nan_to_num(row) if stacked else row
        shown = np.where(np.isnan(row), np.nan, high)
        if bars:
            width = data.step_s / 86_400 * 0.8
            ax.bar(
                x,
                np.nan_to_num(row),
                bottom=low,
                width=width,
                color=colour,
                alpha=max(alpha, 0.5),
                linewidth=0,
            )
        else:
            ax.plot(x, shown, color=colour, linewidth=1.4)
            if alpha:
                ax.fill_between(x, low, shown, color=colour, alpha=alpha, linewidth=0)
        if stacked:
            base = high
    if defaults.get("min") is not None:
        ax.set_ylim(bottom=float(defaults["min"]))
    if defaults.get("max") is not None:
        ax.set_ylim(top=float(defaults["max"]))
    elif not np.nanmax(np.abs(values)) > 0:
        ax.set_ylim(top=1)  # all zero: a unit axis, as Grafana draws it, not ±0.05
    if custom.get("thresholdsStyle", {}).get("mode", "off") != "off":
        for step in defaults.get("thresholds", {}).get("steps", []):
            if step.get("value") is not None:
                ax.axhline(
                    float(step["value"]),
                    color=style.colour(str(step["color"])),
                    linestyle="--",
                    linewidth=1,
                )
    _legend(canvas, box.inset(top=box.height - legend_px), series[:rows], len(series), unit)


def _legend(canvas: Canvas, box: Box, shown: list[Named], total: int, unit: str) -> None:
    """Grafana's table legend: name, then mean, max and last of each series."""
    ax = canvas.layer(box)
    value_w = min(110.0, box.width / 6)
    name_w = box.width - 3 * value_w - 20
    for c, head in enumerate(("Mean", "Max", "Last *")):
        ax.text(
            name_w + 20 + (c + 1) * value_w,
            LEGEND_ROW_PX / 2 + 2,
            head,
            ha="right",
            va="center",
            color=style.MUTED,
            fontsize=points(TICK_PX),
        )
    for r, named in enumerate(shown, start=1):
        y = (r + 0.5) * LEGEND_ROW_PX + 2
        colour = style.PALETTE[(r - 1) % len(style.PALETTE)]
        ax.line([2, 16], [y, y], color=colour, linewidth=3, solid_capstyle="round")
        ax.text(
            22,
            y,
            fit(named.name, name_w - 22, TICK_PX + 1),
            va="center",
            color=style.TEXT,
            fontsize=points(TICK_PX + 1),
        )
        numbers = [v for v in named.series.values if not math.isnan(v)]
        calcs = (
            (sum(numbers) / len(numbers), max(numbers), named.series.last)
            if numbers
            else (math.nan,) * 3
        )
        for c, value in enumerate(calcs):
            ax.text(
                name_w + 20 + (c + 1) * value_w,
                y,
                style.format_value(value, unit),
                ha="right",
                va="center",
                color=style.TEXT,
                fontsize=points(TICK_PX + 1),
            )
    if total > len(shown):
        ax.text(
            22,
            LEGEND_ROW_PX / 2 + 2,
            f"first {len(shown)} of {total} series",
            va="center",
            color=style.MUTED,
            fontsize=points(TICK_PX),
        )


HEATMAP_COLOURS = mcolors.LinearSegmentedColormap.from_list(
    "dark-oranges", ["#4a2a10", style.NAMED["dark-orange"], "#ffc27a"]
)
"""Grafana's Oranges as its dark theme shows it: few events dark, many bright (matplotlib's
Oranges runs from white, which glares on a dark panel)."""


def _bound(name: str) -> float:
    try:
        return float(name)
    except ValueError:
        return math.nan


def heatmap(canvas: Canvas, box: Box, panel: Json, data: PanelData, time_range: TimeRange) -> None:
    """Histogram buckets (one series per ``le``, cumulative as Prometheus keeps them) as
    rows of cells over time, each cell the bucket's own rate; empty cells left out
    (``filterValues``), colour on Grafana's exponential Oranges scale."""
    buckets = sorted(
        (n for n in data.series if not math.isnan(_bound(n.name))), key=lambda n: _bound(n.name)
    )
    if not buckets:
        message(canvas, box, "No data")
        return
    times, cumulative = _grid(buckets)
    counts = np.diff(np.nan_to_num(cumulative), axis=0, prepend=0.0)
    floor = panel.get("options", {}).get("filterValues", {}).get("le", 1e-9)
    cells = np.ma.masked_less_equal(counts, floor)
    if cells.count() == 0:
        message(canvas, box, "No data")
        return
    unit = panel.get("options", {}).get("yAxis", {}).get("unit", "none")
    ax = _plot_area(canvas, box.inset(bottom=26), time_range, unit)
    half = data.step_s / 2
    edges = _days(np.append(times - half, times[-1] + half))
    mesh = ax.pcolormesh(
        edges,
        np.arange(len(buckets) + 1),
        cells,
        cmap=HEATMAP_COLOURS,
        norm=mcolors.PowerNorm(gamma=0.5, vmin=0, vmax=float(cells.max())),
        shading="flat",
    )
    labels = [n.name for n in buckets]
    every = max(math.ceil(len(labels) / max(int(box.height / 28), 2)), 1)
    ax.yaxis.set_major_locator(ticker.FixedLocator([i + 1 for i in range(0, len(labels), every)]))
    ax.yaxis.set_major_formatter(
        ticker.FuncFormatter(lambda v, _: labels[int(v) - 1] if 0 < v <= len(labels) else "")
    )
    scale = canvas.axes(Box(box.left + AXIS_LEFT_PX, box.bottom - 8, box.width / 3, 6))
    canvas.figure.colorbar(mesh, cax=scale, orientation="horizontal")
    scale.tick_params(colors=style.MUTED, labelsize=points(TICK_PX - 2), length=0, pad=1)
    scale.xaxis.set_major_locator(ticker.MaxNLocator(nbins=3))
    canvas.text(
        box.left + AXIS_LEFT_PX + box.width / 3 + 8,
        box.bottom - 5,
        "per-second rate in each bucket (upper bound on the left)",
        va="center",
        color=style.MUTED,
        fontsize=points(TICK_PX - 1),
    )


def bargauge(canvas: Canvas, box: Box, panel: Json, data: PanelData) -> None:
    """Horizontal bars, largest first, named by the series' labels, coloured from blue to
    red by size (``continuous-BlYlRd``)."""
    reduce = panel.get("options", {}).get("reduceOptions", {})
    rows = sorted(data.series, key=lambda n: -_last_or_low(n))[: int(reduce.get("limit", 10))]
    if not rows:
        message(canvas, box, "No data")
        return
    unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "none"))
    top = max(max(_last_or_low(n) for n in rows), 1e-12)
    cmap = mcolors.LinearSegmentedColormap.from_list(
        "BlYlRd", [style.NAMED["blue"], style.NAMED["yellow"], style.NAMED["red"]]
    )
    ax = canvas.layer(box)
    row_px = box.height / len(rows)
    bar_px = min(row_px * 0.7, 22.0)
    name_w, value_w = box.width * 0.45, 80.0
    font = min(13.0, row_px * 0.6)
    for i, named in enumerate(rows):
        value = named.series.last
        name = ", ".join(v for k, v in sorted(named.series.labels.items()) if k != "__name__")
        y = (i + 0.5) * row_px
        ax.text(
            0,
            y,
            fit(name or named.name, name_w - 8, font),
            va="center",
            color=style.TEXT,
            fontsize=points(font),
        )
        width = box.width - name_w - value_w
        ax.rect(name_w, y - bar_px / 2, width, bar_px, facecolor=style.GRID)
        share = 0.0 if math.isnan(value) else max(value, 0) / top
        colour = cmap(share)
        ax.rect(name_w, y - bar_px / 2, width * share, bar_px, facecolor=colour)
        ax.text(
            box.width,
            y,
            style.format_value(value, unit),
            ha="right",
            va="center",
            color=colour,
            fontsize=points(font),
            fontweight="bold",
        )


def _last_or_low(named: Named) -> float:
    value = named.series.last
    return -math.inf if math.isnan(value) else value
