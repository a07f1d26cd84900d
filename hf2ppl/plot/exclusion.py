"""Exclusion contours of a patchset scan in the plane of two metadata labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParameterError


def _z(cls: np.ndarray) -> np.ndarray:
    """CLs as a one-sided significance, Z = Φ⁻¹(1 - CLs): smooth over the grid, where CLs spans decades."""
    from scipy.stats import norm

    return norm.isf(np.clip(np.asarray(cls, float), 1e-300, 1.0))


def plot_exclusion(result: Any, x: str | None = None, y: str | None = None, *, level: float | None = None, ax: Any = None,
                   show_points: bool = True, title: str | None = None):
    r"""The observed and expected exclusion contours (CLs = ``level``, 0.05 by default) of a scan, with the
    expected ±1σ band, in the plane of two metadata labels ``x`` and ``y`` (default: the first two labels).

    The points of a signal grid are irregular; as analysers draw them, CLs is interpolated linearly on the
    Delaunay triangulation of the points, in the variable :math:`Z = \Phi^{-1}(1 - \mathrm{CLs})` (which
    varies smoothly where CLs spans decades). The band is the region where the expected CLs at -1σ and
    +1σ lie on both sides of ``level``. Points that failed are left out (and drawn as crosses); points
    whose fits are flagged are circled.

    Args:
        result: a :class:`~hf2ppl.scans.ScanResult` (or a path to a scan file).
        ax: a matplotlib Axes to draw on (default: a new figure).

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> fig = hf2ppl.plot_exclusion(hf2ppl.scan(bkg, patchset), x="m_stau", y="m_neutralino")  # doctest: +SKIP
        >>> fig.savefig("exclusion.png")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..scans import ScanResult

    if not isinstance(result, ScanResult):
        result = ScanResult.read(result)
    labels = list(result.labels)
    if x is None or y is None:
        if len(labels) < 2:
            raise ParameterError(f"plot_exclusion needs two metadata labels; the patchset has {labels}")
        x = labels[0] if x is None else x
        y = labels[1] if y is None else y
    for lab in (x, y):
        if lab not in labels:
            raise ParameterError(f"plot_exclusion: unknown metadata label {lab!r}; the patchset's labels are {labels}")
    lvl = float(result.options.get("level") or 0.05) if level is None else float(level)
    if not 0.0 < lvl < 1.0:
        raise ParameterError(f"level must be in (0, 1), got {level!r}")
    good = [r for r in result.rows if not r.get("error") and r.get("cls_obs") is not None and r.get("cls_exp") is not None]
    bad = [r for r in result.rows if r not in good]
    if len(good) < 3:
        raise ParameterError(f"plot_exclusion needs at least 3 evaluated points, the scan has {len(good)}")
    px = np.array([float(r["values"][x]) for r in good])
    py = np.array([float(r["values"][y]) for r in good])
    obs = _z([r["cls_obs"] for r in good])
    exp = _z(np.array([r["cls_exp"] for r in good], float))  # (n, 5) pyhf's order: index 0 = -2σ side
    zc = float(_z(lvl))

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.2), layout="constrained")
    else:
        fig = ax.figure
    # scale the axes to a unit square for the triangulation (masses of different ranges)
    sx = np.ptp(px) or 1.0
    sy = np.ptp(py) or 1.0
    try:
        tri = mtri.Triangulation(px / sx, py / sy)
    except (RuntimeError, ValueError) as exc:
        raise ParameterError(f"plot_exclusion: the points do not span the ({x}, {y}) plane (all on one line?), so no contour "
                             f"can be interpolated: {exc}") from None
    tri_plot = mtri.Triangulation(px, py, tri.triangles)
    # ±1σ band: where the expected CLs at -1σ (index 1) and +1σ (index 3) straddle the level
    band = np.minimum(exp[:, 1] - zc, zc - exp[:, 3])
    if np.any(band > 0):
        ax.tricontourf(tri_plot, band, levels=[0.0, max(float(band.max()), 1e-9) + 1.0], colors=["#ffdf00"], alpha=0.9, zorder=1)
    handles = [Patch(facecolor="#ffdf00", label="Expected ±1σ")]
    drawn = []
    for z, style, label in ((exp[:, 2], dict(colors="k", linestyles="--", linewidths=1.8), "Expected limit"),
                            (obs, dict(colors="#d62728", linestyles="-", linewidths=2.2), "Observed limit")):
        if z.min() < zc < z.max():
            ax.tricontour(tri_plot, z, levels=[zc], zorder=3, **style)
            drawn.append(label)
        handles.append(Line2D([], [], color=style["colors"], linestyle=style["linestyles"], linewidth=style["linewidths"],
                              label=label + ("" if label in drawn else " (no crossing)")))
    if show_points:
        ax.scatter(px, py, s=9, c="0.45", zorder=4, linewidths=0)
        flagged = [r for r in good if r.get("warnings")]
        if flagged:
            ax.scatter([float(r["values"][x]) for r in flagged], [float(r["values"][y]) for r in flagged], s=40,
                       facecolors="none", edgecolors="#1f77b4", zorder=5)
            handles.append(Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="#1f77b4", linestyle="",
                                  label=f"fit flagged ({len(flagged)})"))
        if bad:
            ax.scatter([float(r["values"][x]) for r in bad], [float(r["values"][y]) for r in bad], marker="x", s=30,
                       c="#7f7f7f", zorder=5)
            handles.append(Line2D([], [], marker="x", color="#7f7f7f", linestyle="", label=f"failed ({len(bad)})"))
        handles.append(Line2D([], [], marker="o", color="0.45", markersize=3, linestyle="", label="signal points"))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    cl = 100.0 * (1.0 - lvl)
    ax.legend(handles=handles, loc="upper right", frameon=True, framealpha=0.9, edgecolor="none", fontsize=9,
              title=f"CLs exclusion at {cl:g}% CL" + (f" ({result.options.get('test_stat')})" if result.options.get("test_stat") else ""),
              title_fontsize=9)
    if title:
        ax.set_title(title)
    ax.set_xlim(px.min(), px.max())
    ax.set_ylim(py.min(), py.max() + 0.25 * (np.ptp(py) or 1.0))  # room for the legend
    return fig
