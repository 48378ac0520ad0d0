"""A matplotlib figure addressed in pixels from the top left, like Grafana's grid.

Grafana places panels in pixels (a 24-column grid, rows 30 px high with 8 px gaps);
matplotlib places axes in fractions of the figure from the bottom left. Drawing code works
in Grafana's terms through :class:`Canvas`, which converts, so the layout arithmetic is
written once. Text, panel backgrounds and bars go on two figure-wide layers (below and above
the charts) rather than on axes of their own: a matplotlib axes costs tens of milliseconds
to make and draw, and a dashboard has dozens of panels. Only a chart's plot area is an axes.
The figure is created without pyplot (no global state, no display needed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.transforms import Affine2D, Transform
from PIL import Image

from dashboards import render_style as style

DPI = 100
PX_PER_PT = DPI / 72


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: left and top edges from the figure's top left corner."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def inset(self, left: float = 0, top: float = 0, right: float = 0, bottom: float = 0) -> Box:
        """The box shrunk by the given margins (never below zero size)."""
        return Box(
            self.left + left,
            self.top + top,
            max(self.width - left - right, 1.0),
            max(self.height - top - bottom, 1.0),
        )


class Layer:
    """Drawing in pixels from the top left corner of one box, on a figure-wide layer."""

    def __init__(self, axes: Axes, box: Box) -> None:
        self._axes = axes
        self._to_figure: Transform = Affine2D().translate(box.left, box.top) + axes.transData

    def text(self, x: float, y: float, text: str, **kwargs: Any) -> None:
        kwargs.setdefault("color", style.TEXT)
        self._axes.text(x, y, text, transform=self._to_figure, **kwargs)

    def line(self, xs: list[float], ys: list[float], **kwargs: Any) -> None:
        self._axes.plot(xs, ys, transform=self._to_figure, **kwargs)

    def rect(self, x: float, y: float, width: float, height: float, **kwargs: Any) -> None:
        """A filled rectangle; ``rounded`` pixels of corner radius."""
        radius = kwargs.pop("rounded", 0)
        kwargs.setdefault("edgecolor", "none")
        shape = f"round,pad=0,rounding_size={radius}" if radius else "square,pad=0"
        patch = FancyBboxPatch((x, y), width, height, boxstyle=shape, **kwargs)
        patch.set_transform(self._to_figure)
        self._axes.add_patch(patch)


class Canvas:
    """One figure of ``width`` x ``height`` pixels on Grafana's dark background."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        self.figure.patch.set_facecolor(style.BACKGROUND)
        self._below = self._overlay(zorder=-1)
        self._above = self._overlay(zorder=10)

    def _overlay(self, zorder: float) -> Axes:
        """A transparent axes over the whole figure whose data coordinates are pixels."""
        ax = self.figure.add_axes((0, 0, 1, 1), zorder=zorder)
        ax.set_axis_off()
        ax.set_xlim(0, self.width)
        ax.set_ylim(self.height, 0)
        ax.set_autoscale_on(False)
        return ax

    def layer(self, box: Box, *, below: bool = False) -> Layer:
        """Where to draw inside ``box``: above the charts, or ``below`` them (backgrounds)."""
        return Layer(self._below if below else self._above, box)

    def axes(self, box: Box) -> Axes:
        """A chart's plot area filling ``box`` (transparent; the caller styles it)."""
        ax = self.figure.add_axes(
            (
                box.left / self.width,
                1 - box.bottom / self.height,
                box.width / self.width,
                box.height / self.height,
            )
        )
        ax.set_facecolor("none")
        return ax

    def text(self, x: float, y: float, text: str, **kwargs: Any) -> None:
        """Text at pixel ``(x, y)`` from the figure's top left; matplotlib's text keywords."""
        self.layer(Box(0, 0, self.width, self.height)).text(x, y, text, **kwargs)

    def save(self, path: str) -> None:
        """Write a PNG of exactly the computed size (no ``bbox_inches="tight"``), in 256
        colours: a dashboard is flat colours and anti-aliased edges, so a palette keeps it
        sharp at a third of the bytes, small enough for a README."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=DPI, facecolor=style.BACKGROUND)
        with Image.open(buffer) as image:
            palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
            palette.save(path, format="PNG", optimize=True)


def points(px: float) -> float:
    """A font size in points that is ``px`` pixels tall on this canvas."""
    return px / PX_PER_PT
