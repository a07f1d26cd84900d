"""CLs figures: the brazil band of CLs vs μ and the Bayesian-vs-frequentist cross-check."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _style as S

__all__ = ["plot_brazil", "plot_crosscheck"]


def _band(cls_exp: Any) -> np.ndarray:
    """(n, 5) from an (n, 5) array or hypotest's list of 5 arrays (pyhf order ``[+2σ, +1σ, 0, -1σ, -2σ]``)."""
    if isinstance(cls_exp, (list, tuple)) and len(cls_exp) == 5 and np.ndim(cls_exp[0]) == 1:
        return np.stack([np.asarray(c, float) for c in cls_exp], axis=1)
    a = np.asarray(cls_exp, float)
    if a.ndim != 2 or a.shape[1] != 5:
        raise ValueError(f"cls_exp must be (n, 5) or a list of 5 arrays, got shape {a.shape}")
    return a


def _draw_brazil(ax, mus, cls_obs, band, level: float, *, obs_color: str = "k", show_obs: bool = True) -> list:
    handles = []
    handles.append(ax.fill_between(mus, band[:, 0], band[:, 4], color=S.YELLOW, lw=0, label=r"expected $\pm 2\sigma$"))
    handles.append(ax.fill_between(mus, band[:, 1], band[:, 3], color=S.GREEN, lw=0, label=r"expected $\pm 1\sigma$"))
    handles.append(ax.plot(mus, band[:, 2], color="k", ls="--", lw=1.4, label=r"expected CL$_s$")[0])
    if show_obs and cls_obs is not None:
        handles.append(ax.plot(mus, cls_obs, color=obs_color, lw=1.8, marker="o" if len(mus) <= 25 else None, ms=3.5,
                               label=r"observed CL$_s$")[0])
    handles.append(ax.axhline(level, color=S.RED, lw=1.2, label=f"CL$_s$ = {level:g}"))
    return handles


def plot_brazil(poi_values: Any, cls_obs: Any = None, cls_exp: Any = None, *, level: float = 0.05,
                observed_limit: float | None = None, expected_limits: Any = None, poi_name: str = "mu",
                log: bool = False, title: str | None = None):
    """The brazil band: observed and expected CLs vs the POI, ±1σ (green) and ±2σ (yellow), the CLs = ``level`` line.

    Args:
        poi_values: the scanned POI values — or the whole return value of
            ``hf2ppl.upper_limit(..., return_results=True)`` (then everything else is taken from it).
        cls_obs: observed CLs per point; cls_exp: ``(n, 5)`` or the list of 5 arrays of
            ``hf2ppl.hypotest(m, poi_values, return_expected_set=True)``.
        observed_limit, expected_limits: mark the limits (vertical lines; expected: the 5 limits of ``upper_limit``).
        log: logarithmic CLs axis.

    Example:
        >>> obs, exp, res = hf2ppl.upper_limit(m, return_results=True)  # doctest: +SKIP
        >>> hf2ppl.plot.plot_brazil((obs, exp, res)).savefig("brazil.png")  # doctest: +SKIP
    """
    if cls_obs is None and isinstance(poi_values, tuple) and len(poi_values) == 3:
        observed_limit, expected_limits, (poi_values, cls_obs, cls_exp) = poi_values
    mus = np.asarray(poi_values, float)
    o = np.argsort(mus, kind="stable")
    mus = mus[o]
    band = _band(cls_exp)[o]
    obs = None if cls_obs is None else np.asarray(cls_obs, float)[o]
    fig = S.figure(6.4, 4.8)
    ax = fig.add_subplot()
    _draw_brazil(ax, mus, obs, band, level)
    marks = []
    if observed_limit is not None:
        marks.append(float(observed_limit))
        ax.axvline(float(observed_limit), color="k", lw=1.2, ls=":", label=f"observed limit: {float(observed_limit):.3g}", gid="obs_limit")
    if expected_limits is not None:
        e = np.asarray(expected_limits, float)
        marks += [float(v) for v in e]
        ax.axvline(e[2], color=S.GREY, lw=1.2, ls="-.", label=f"expected limit: {e[2]:.3g}", gid="exp_limit")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(max(1e-4, float(np.nanmin(band[band > 0])) * 0.5) if np.any(band > 0) else 1e-4, 1.5)
    else:
        ax.set_ylim(0, 1.05)
    right = mus[-1] if not marks else min(mus[-1], max(1.6 * max(marks), mus[0] + 1e-9))
    ax.set_xlim(mus[0], right)
    S.style(ax, rf"$\{poi_name}$" if poi_name in ("mu",) else poi_name, r"CL$_s$")
    if title:
        S.label(ax, title, y=0.97)
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    return fig


def plot_crosscheck(result: Any, *, show_cdf: bool = True, title: str | None = None):
    """The cross-check figure of :func:`hf2ppl.crosscheck`: CLs vs μ (observed, expected, ±1σ/±2σ bands, the
    ``1 - CL`` line) and, on a twin axis, the marginal posterior density (scaled to its maximum) and CDF of μ;
    the CLs and the credible upper limits marked.

    Example:
        >>> r = hf2ppl.crosscheck(m)  # doctest: +SKIP
        >>> hf2ppl.plot.plot_crosscheck(r).savefig("crosscheck.png")  # doctest: +SKIP
    """
    r = result
    alpha = 1.0 - r.cl
    mus = np.asarray(r.scan_mu, float)
    fig = S.figure(7.2, 5.0)
    ax = fig.add_subplot()
    handles = _draw_brazil(ax, mus, np.asarray(r.scan_cls_obs), _band(r.scan_cls_exp), alpha)
    handles[-1].set_label(f"CL$_s$ = {alpha:.3g}")
    ax.set_ylim(0, 1.42)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlim(mus[0], mus[-1])
    poi = r"$\mu$" if r.poi_name == "mu" else r.poi_name
    S.style(ax, poi, r"CL$_s$", right=False)

    tw = ax.twinx()
    g = np.asarray(r.grid_mu)
    sel = (g >= mus[0]) & (g <= mus[-1])
    d = np.asarray(r.grid_density)
    dmax = float(d.max()) if d.size else 1.0
    handles.append(tw.fill_between(g[sel], 0, d[sel] / dmax, color=S.BLUE, alpha=0.18, lw=0, label="posterior density (scaled)"))
    tw.plot(g[sel], d[sel] / dmax, color=S.BLUE, lw=1.0)
    if show_cdf:
        handles.append(tw.plot(g[sel], np.asarray(r.grid_cdf)[sel], color=S.BLUE, lw=1.4, ls="-.", label="posterior CDF")[0])
        tw.axhline(r.cl, xmax=0.97, color=S.BLUE, lw=0.8, ls=":")
    tw.set_ylim(0, 1.42)
    tw.set_yticks(np.linspace(0, 1, 6))
    tw.tick_params(which="both", direction="in", colors=S.BLUE)
    tw.minorticks_on()
    tw.set_ylabel(rf"posterior of {poi}", loc="top", color=S.BLUE, fontsize=11)

    lab = r.label
    handles.append(ax.axvline(r.cls_observed, ymax=1.05 / 1.42, color="k", lw=1.6, ls=(0, (5, 2)), label=f"CL$_s$ {lab} limit: {r.cls_observed:.3g}", gid="cls_limit"))
    handles.append(ax.axvline(r.bayes_limit, ymax=1.05 / 1.42, color=S.BLUE, lw=1.6, ls=(0, (1, 1.5)), label=f"credible {lab} limit: {r.bayes_limit:.3g}", gid="credible_limit"))
    ax.set_zorder(tw.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(handles=handles, loc="upper right", ncol=2, frameon=False, fontsize=8)
    ax.set_title(title or f"{lab} CL upper limits on {poi}: CL$_s$ ({r.test_stat}, asymptotics) and credible "
                 f"(prior {r.prior})", loc="left", fontsize=9)
    return fig
