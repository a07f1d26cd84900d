"""Shared figure style (close to the ATLAS/cabinetry look): inward ticks on all four sides, minor ticks,
axis labels at the ends of the axes, a sans-serif font. Figures are drawn on matplotlib's Agg canvas
(no pyplot state, no change of the global backend); they display in notebooks and save with ``savefig``.
"""

from __future__ import annotations

from typing import Any

# colours: ATLAS-like brazil band, cabinetry-like fit colours
GREEN = "#00cc00"
YELLOW = "#ffcc00"
BLUE = "#1f4e9e"
RED = "#c0392b"
GREY = "#7f7f7f"
SAMPLE_COLORS = ["#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#fdd0a2", "#c7e9c0", "#e377c2", "#bcbd22", "#17becf", "#8c564b",
                 "#d62728", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"]


def figure(w: float = 6.4, h: float = 4.8, **kw: Any):
    """A matplotlib Figure on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=kw.pop("dpi", 110), **kw)
    FigureCanvasAgg(fig)
    return fig


def style(ax, xlabel: str | None = None, ylabel: str | None = None, *, minor: bool = True, right: bool = True) -> None:
    """Inward ticks on all sides, minor ticks, labels at the axis ends (ATLAS convention)."""
    ax.tick_params(which="both", direction="in", top=True, right=right)
    ax.tick_params(which="major", length=6)
    ax.tick_params(which="minor", length=3)
    if minor:
        ax.minorticks_on()
    if xlabel is not None:
        ax.set_xlabel(xlabel, loc="right", fontsize=11)
    if ylabel is not None:
        ax.set_ylabel(ylabel, loc="top", fontsize=11)


def label(ax, text: str, x: float = 0.04, y: float = 0.94, **kw: Any) -> None:
    """A top-left label inside the axes (the analysis/workspace line)."""
    ax.text(x, y, text, transform=ax.transAxes, va="top", ha="left", fontsize=kw.pop("fontsize", 10), **kw)


def save(fig, path) -> str:
    fig.savefig(path, bbox_inches="tight")
    return str(path)
