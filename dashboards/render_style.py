"""How rendered panels look: Grafana's dark theme colours and its unit formats.

The pictures stand in for Grafana screenshots in the README, so values read the way Grafana
shows them (``12.3 ops/s``, ``4.5 ms``, ``0.85%``) and colours match its names (``green``,
``orange`` in threshold steps) and its classic series palette. Only the units the dashboards
use are known; any other is shown as a plain number followed by the unit's id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BACKGROUND = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3036"
GRID = "#2a2d33"
TEXT = "#d8d9e0"
MUTED = "#8e8e9a"
ERROR = "#f2495c"

PALETTE = (
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
    "#447ebc",
    "#c15c17",
)
"""Grafana's ``palette-classic``, in its order: series ``i`` takes colour ``i``."""

NAMED = {
    "green": "#73bf69",
    "dark-green": "#37872d",
    "yellow": "#fade2a",
    "orange": "#ff9830",
    "dark-orange": "#fa6400",
    "red": "#f2495c",
    "dark-red": "#c4162a",
    "blue": "#5794f2",
    "purple": "#b877d9",
    "text": TEXT,
}
"""Grafana's named colours (dark theme) that threshold steps and mappings use."""


def colour(name: str) -> str:
    """A Grafana colour name, or the colour as given (``#rrggbb``, ``rgba(...)`` kept out)."""
    return NAMED.get(name, name if name.startswith("#") else TEXT)


def threshold_colour(value: float, steps: Sequence[dict[str, Any]]) -> str:
    """The colour of the highest step at or below ``value`` (the base step has no value)."""
    chosen = "green"
    for step in steps:
        limit = step.get("value")
        if limit is None or (not math.isnan(value) and value >= float(limit)):
            chosen = str(step.get("color", chosen))
    return colour(chosen)


_SI = ((1e12, " T"), (1e9, " Bil"), (1e6, " Mil"), (1e3, " K"))
_TIME = ((86_400, " day"), (3600, " hour"), (60, " min"), (1, " s"), (1e-3, " ms"), (1e-6, " µs"))


def _number(value: float, decimals: int | None) -> str:
    if decimals is None:
        size = abs(value)
        # 0.075 / 1e-3 is 74.99999999999999: an axis tick that is whole shows no decimals.
        whole = math.isclose(value, round(value), rel_tol=1e-9, abs_tol=1e-12)
        decimals = 0 if size >= 100 or whole else 1 if size >= 10 else 2
        if 0 < size < 0.01:
            return f"{value:.2g}"
    return f"{value:.{decimals}f}"


def _scaled(value: float, scales: Sequence[tuple[float, str]], decimals: int | None) -> str:
    """``value`` in the largest of ``scales`` it reaches; below them all, in the last one if
    it is a fraction (``µs``), else as it is."""
    for factor, suffix in scales:
        if abs(value) >= factor:
            return _number(value / factor, decimals) + suffix
    factor, suffix = scales[-1]
    if factor < 1:
        return _number(value / factor, decimals) + suffix
    return _number(value, decimals)


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """``value`` as Grafana shows it in ``unit`` (``ops``, ``s``, ``percentunit``, ``short``,
    ``none``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "percentunit":
        return _number(value * 100, decimals) + "%"
    if unit == "percent":
        return _number(value, decimals) + "%"
    if unit == "s":
        if value == 0:
            return "0 s"
        return _scaled(value, _TIME, decimals)
    if unit == "ops":
        return _scaled(value, _SI, decimals).rstrip() + " ops/s"
    if unit == "short":
        return _scaled(value, _SI, decimals)
    if unit in ("none", ""):
        return _number(value, decimals)
    return f"{_number(value, decimals)} {unit}"
