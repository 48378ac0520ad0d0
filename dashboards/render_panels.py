"""Panels drawn as text: the frame and title every panel has, stat numbers, tables, rows,
and the box that stands in for a panel whose data is not in Prometheus.

Grafana's stat panel is a number you read across the room, so it is drawn as large as its
cell allows and coloured by its thresholds. A panel that reads another data source (the live
alerts table reads Redis) is not faked: its box says what Grafana shows there and from where.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dashboards import render_style as style
from dashboards.render_canvas import Box, Canvas, points
from dashboards.render_queries import Named, PanelData

Json = dict[str, Any]

TITLE_PX = 30
"""Height of a panel's title bar."""
PAD_PX = 10


def frame(canvas: Canvas, box: Box, title: str) -> Box:
    """The panel's background and title; returns the box left for its content."""
    canvas.layer(box, below=True).rect(
        0.5,
        0.5,
        box.width - 1,
        box.height - 1,
        rounded=3,
        facecolor=style.PANEL,
        edgecolor=style.BORDER,
        linewidth=1,
    )
    canvas.layer(box).text(
        PAD_PX,
        8,
        fit(title, box.width - 2 * PAD_PX, 15),
        va="top",
        fontsize=points(15),
        fontweight="bold",
        color=style.TEXT,
    )
    return box.inset(PAD_PX, TITLE_PX, PAD_PX, 8)


def fit(text: str, width_px: float, font_px: float) -> str:
    """``text`` cut with an ellipsis to about ``width_px`` (an average glyph is ~0.55 em)."""
    room = max(int(width_px / (font_px * 0.55)), 4)
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def message(canvas: Canvas, box: Box, text: str, colour: str = style.MUTED) -> None:
    """One line centred in ``box`` ("No data")."""
    ax = canvas.layer(box)
    ax.text(
        box.width / 2,
        box.height / 2,
        text,
        ha="center",
        va="center",
        color=colour,
        fontsize=points(15),
    )


def errors(canvas: Canvas, box: Box, found: Sequence[str]) -> None:
    """Failed queries, in red along the bottom of the content (Grafana's corner triangle
    would say as much on hover)."""
    if not found:
        return
    text = "query failed: " + "; ".join(found)
    ax = canvas.layer(box)
    ax.text(
        0, box.height, fit(text, box.width, 12), va="bottom", color=style.ERROR, fontsize=points(12)
    )


def row(canvas: Canvas, box: Box, panel: Json) -> None:
    """A row header: its title, underlined across the grid."""
    ax = canvas.layer(box)
    ax.text(
        2,
        box.height / 2,
        panel.get("title", ""),
        va="center",
        fontsize=points(17),
        fontweight="bold",
        color=style.TEXT,
    )
    ax.line([0, box.width], [box.height - 1, box.height - 1], color=style.BORDER, linewidth=1)


def _unit(panel: Json) -> tuple[str, int | None]:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    return str(defaults.get("unit", "none")), defaults.get("decimals")


def stat(canvas: Canvas, box: Box, panel: Json, data: PanelData) -> None:
    """One cell per series, side by side: its name above (``value_and_name``), its value
    large and coloured by the thresholds; ``textMode: name`` shows the name alone."""
    if not data.series:
        message(canvas, box, "No data")
        return
    unit, decimals = _unit(panel)
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    mode = panel.get("options", {}).get("textMode", "auto")
    if mode == "auto":
        mode = "value_and_name" if len(data.series) > 1 else "value"
    cells = data.series
    texts = [
        n.name if mode == "name" else style.format_value(n.series.last, unit, decimals)
        for n in cells
    ]
    longest = max(len(text) for text in texts)
    with_name = mode == "value_and_name"

    def font_px(columns: int) -> float:
        """The big text's size with the cells in ``columns`` columns."""
        cell_w = box.width / columns
        cell_h = box.height / math.ceil(len(cells) / columns)
        name_px = min(14.0, cell_h * 0.22) if with_name else 0.0
        return min((cell_h - name_px) * 0.6, cell_w * 0.92 / (0.6 * max(longest, 1)), 64.0)

    # Grafana's "auto" orientation: side by side, or stacked when that reads larger.
    columns = max(range(1, len(cells) + 1), key=font_px)
    size = font_px(columns)
    cell_w, cell_h = box.width / columns, box.height / math.ceil(len(cells) / columns)
    ax = canvas.layer(box)
    for i, (named, big) in enumerate(zip(cells, texts, strict=True)):
        left, top = (i % columns) * cell_w, (i // columns) * cell_h
        colour = style.threshold_colour(named.series.last, steps)
        name_px = 0.0
        if with_name:
            name_px = min(14.0, cell_h * 0.22)
            ax.text(
                left + cell_w / 2,
                top + 2,
                fit(named.name, cell_w, name_px),
                ha="center",
                va="top",
                color=style.TEXT,
                fontsize=points(name_px),
            )
        ax.text(
            left + cell_w / 2,
            top + name_px + (cell_h - name_px) / 2,
            big,
            ha="center",
            va="center",
            color=colour,
            fontsize=points(size),
            fontweight="bold",
        )


def table(canvas: Canvas, box: Box, panel: Json, data: PanelData) -> None:
    """Rows of labels and the value, as many as fit (instant query, one row per series)."""
    if not data.series:
        message(canvas, box, "No data")
        return
    keys = sorted({k for n in data.series for k in n.series.labels} - {"__name__"})
    row_px = 20.0
    fits = max(int(box.height / row_px) - 1, 1)
    shown: list[Named] = data.series[:fits]
    columns = [*keys, "Value"]
    col_w = box.width / len(columns)
    ax = canvas.layer(box)
    for c, name in enumerate(columns):
        ax.text(
            c * col_w + 4,
            row_px / 2,
            fit(name, col_w - 8, 13),
            va="center",
            color=style.MUTED,
            fontsize=points(13),
            fontweight="bold",
        )
    ax.line([0, box.width], [row_px, row_px], color=style.BORDER, linewidth=1)
    for r, named in enumerate(shown, start=1):
        cells = [named.series.labels.get(k, "") for k in keys]
        cells.append(style.format_value(named.series.last, *_unit(panel)))
        for c, text in enumerate(cells):
            ax.text(
                c * col_w + 4,
                (r + 0.5) * row_px,
                fit(text, col_w - 8, 13),
                va="center",
                color=style.TEXT,
                fontsize=points(13),
            )


def elsewhere(canvas: Canvas, box: Box, panel: Json) -> None:
    """What a panel on another data source shows in Grafana, and the columns it would have,
    instead of its data (the renderer only speaks Prometheus)."""
    targets = panel.get("targets", [])
    source = (panel.get("datasource") or {}).get("type", "another data source")
    lines = [
        f"Shown live in Grafana, not in this picture: the {source} data source",
        *[f"query: {describe(target)}" for target in targets],
    ]
    lines += transformed(panel)
    if panel.get("description"):
        lines.append(str(panel["description"]))
    columns = table_columns(panel)
    ax = canvas.layer(box)
    y = 6.0
    if columns:
        width = box.width / len(columns)
        ax.rect(0, 0, box.width, 26, facecolor=style.BORDER)
        for i, name in enumerate(columns):
            ax.text(
                i * width + 6,
                13,
                fit(name, width - 10, 12),  # bold 11 px is about as wide as plain 12 px
                va="center",
                color=style.TEXT,
                fontsize=points(11),
                fontweight="bold",
            )
        y = 40.0
    line_px = 24.0
    first = y + (box.height - y - line_px * len(lines)) / 2
    for i, line in enumerate(lines):
        ax.text(
            box.width / 2,
            first + (i + 0.5) * line_px,
            fit(line, box.width, 15),
            ha="center",
            va="center",
            color=style.TEXT if i == 0 else style.MUTED,
            fontsize=points(15),
        )


def describe(target: Json) -> str:
    """A target of a non-Prometheus data source, in a line: a Redis command as redis-cli
    would take it, else its fields."""
    if "command" in target:
        command = str(target["command"]).lower()
        parts = [command.upper(), str(target.get("keyName", ""))]
        start, end = str(target.get("start", "-")), str(target.get("end", "+"))
        if command == "xrevrange":
            parts += [end, start]
        elif command == "xrange":
            parts += [start, end]
        if target.get("count"):
            parts += ["COUNT", str(target["count"])]
        return " ".join(p for p in parts if p)
    skip = {"datasource", "refId", "hide"}
    return ", ".join(f"{k}={v}" for k, v in target.items() if k not in skip)


def transformed(panel: Json) -> list[str]:
    """What the panel's field extraction and value filters do, in words."""
    found = []
    for transformation in panel.get("transformations", []):
        options = transformation.get("options", {})
        if transformation.get("id") == "extractFields":
            found.append(
                f"each entry's {options.get('source')} {str(options.get('format', '')).upper()} "
                "split into the columns above"
            )
        if transformation.get("id") == "filterByValue":
            for rule in options.get("filters", []):
                config = rule.get("config", {})
                value = config.get("options", {}).get("value")
                found.append(f"only rows where {rule.get('fieldName')} is {value}")
    return found


def table_columns(panel: Json) -> list[str]:
    """The columns an ``organize`` transformation orders (renamed, excluded ones left out)."""
    for transformation in panel.get("transformations", []):
        if transformation.get("id") != "organize":
            continue
        options = transformation.get("options", {})
        order = options.get("indexByName", {})
        hidden = options.get("excludeByName", {})
        names = options.get("renameByName", {})
        return [
            names.get(name, name)
            for name in sorted(order, key=order.__getitem__)
            if not hidden.get(name)
        ]
    return []
