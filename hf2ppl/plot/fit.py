"""Figures of a maximum-likelihood fit (cabinetry's set): pulls, ranking of impacts, correlation matrix,
pre-/post-fit data vs stacked expectation per channel, and the profile-likelihood scan.

Each takes what hf2ppl already returns: :func:`hf2ppl.pulls` → :func:`plot_pulls`,
:func:`hf2ppl.impacts` → :func:`plot_ranking`, :func:`hf2ppl.fit` → :func:`plot_correlation` and
:func:`plot_postfit` (with the model), :func:`hf2ppl.profile` → :func:`plot_profile`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.ticker import AutoMinorLocator, MultipleLocator, NullLocator

from . import _style as S

__all__ = ["plot_pulls", "plot_ranking", "plot_correlation", "plot_postfit", "plot_prefit", "plot_profile"]


# ------------------------------------------------------------------------------------------------ pulls
def plot_pulls(pulls: Any, *, exclude: Any = None, max_pars: int | None = None, title: str | None = None):
    """Pulls :math:`(\\hat\\theta - \\theta_0)/\\sigma_0` with the post-fit constraint :math:`\\hat\\sigma/\\sigma_0` as error
    bars, on ±1σ (green) and ±2σ (yellow) bands, one row per constrained parameter (cabinetry's pull plot).

    Args:
        pulls: :class:`hf2ppl.infer.frequentist.PullsResult` (from :func:`hf2ppl.pulls`).
        exclude: names (or a callable ``name -> bool``) to leave out, e.g. ``lambda n: n.startswith("staterror")``.
        max_pars: keep at most this many rows (largest ``|pull|`` first, then in the fit's order).

    Example:
        >>> hf2ppl.plot.plot_pulls(hf2ppl.pulls(m)).savefig("pulls.png")  # doctest: +SKIP
    """
    names = list(pulls.names)
    idx = list(range(len(names)))
    if exclude is not None:
        drop = exclude if callable(exclude) else (lambda n, s=set(exclude): n in s)
        idx = [i for i in idx if not drop(names[i])]
    p, c = np.asarray(pulls.pulls, float), np.asarray(pulls.constraints, float)
    if max_pars is not None and len(idx) > max_pars:
        idx = sorted(sorted(idx, key=lambda i: -abs(p[i]))[:max_pars])
    n = len(idx)
    fig = S.figure(6.0, max(2.2, 0.28 * n + 1.2))
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    lim = max(3.0, float(np.max(np.abs(p[idx]) + c[idx])) + 0.3) if n else 3.0
    ax.fill_betweenx([-0.5, n - 0.5], -2, 2, color=S.YELLOW, lw=0)
    ax.fill_betweenx([-0.5, n - 0.5], -1, 1, color=S.GREEN, lw=0)
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.errorbar(p[idx], y, xerr=c[idx], fmt="o", color="k", ms=4, lw=1.2, capsize=0)
    ax.set_yticks(y)
    ax.set_yticklabels([names[i] for i in idx], fontsize=8)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_xlim(-lim, lim)
    S.style(ax, r"$(\hat{\theta} - \theta_0)\,/\,\Delta\theta$", None, minor=False)
    ax.xaxis.set_minor_locator(AutoMinorLocator())
    ax.tick_params(axis="y", which="both", left=False, right=False)
    if title:
        ax.set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ ranking
def plot_ranking(impacts: Any, pulls: Any = None, *, top: int = 20, title: str | None = None):
    """Ranking of the nuisance parameters by their impact on the POI (cabinetry's ranking plot): post-fit impacts
    :math:`\\Delta\\hat\\mu` for :math:`\\theta = \\hat\\theta \\pm \\hat\\sigma` as filled bars, pre-fit (:math:`\\pm\\sigma_0`) as open
    bars (bottom axis), and the pulls with their constraints as points (top axis).

    Args:
        impacts: :class:`hf2ppl.infer.frequentist.ImpactsResult` (from :func:`hf2ppl.impacts`; already ranked).
        pulls: optional :class:`~hf2ppl.infer.frequentist.PullsResult` of the same fit for the points
            (else the points are omitted).
        top: show the ``top`` leading parameters.

    Example:
        >>> fr = hf2ppl.fit(m)  # doctest: +SKIP
        >>> hf2ppl.plot.plot_ranking(hf2ppl.impacts(m, fit_result=fr), hf2ppl.pulls(m, fit_result=fr))  # doctest: +SKIP
    """
    n = min(top, len(impacts.names))
    names = list(impacts.names[:n])
    pre_u, pre_d = np.asarray(impacts.prefit_up[:n]), np.asarray(impacts.prefit_down[:n])
    post_u, post_d = np.asarray(impacts.postfit_up[:n]), np.asarray(impacts.postfit_down[:n])
    fig = S.figure(7.0, max(2.6, 0.36 * n + 1.6))
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    h = 0.7
    ax.barh(y, pre_u, h, fill=False, edgecolor=S.BLUE, lw=1, label=r"pre-fit impact: $\theta = \hat{\theta} + \Delta\theta$")
    ax.barh(y, pre_d, h, fill=False, edgecolor="#2ca25f", lw=1, label=r"pre-fit impact: $\theta = \hat{\theta} - \Delta\theta$")
    ax.barh(y, post_u, h, color=S.BLUE, alpha=0.75, label=r"post-fit impact: $\theta = \hat{\theta} + \Delta\hat{\theta}$")
    ax.barh(y, post_d, h, color="#2ca25f", alpha=0.75, label=r"post-fit impact: $\theta = \hat{\theta} - \Delta\hat{\theta}$")
    ax.axvline(0, color="k", lw=0.8)
    m = max(1e-12, float(np.max(np.abs(np.concatenate([pre_u, pre_d, post_u, post_d])))) if n else 1.0)
    ax.set_xlim(-1.25 * m, 1.25 * m)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_ylim(-0.6, n + 1.8)  # room for the legend
    S.style(ax, r"$\Delta\hat{\mu}$", None, minor=False)
    ax.tick_params(axis="y", which="both", left=False, right=False)
    ax.tick_params(axis="x", top=False)
    if pulls is not None and n:
        pmap = {nm: (pv, cv) for nm, pv, cv in zip(pulls.names, pulls.pulls, pulls.constraints)}
        pts = [(yy, *pmap[nm]) for yy, nm in zip(y, names) if nm in pmap]
        top_ax = ax.twiny()
        if pts:
            yy, pv, cv = map(np.asarray, zip(*pts))
            top_ax.errorbar(pv, yy, xerr=cv, fmt="o", color="k", ms=3.5, lw=1, label="pull")
        top_ax.set_xlim(-2, 2)
        top_ax.set_xlabel(r"$(\hat{\theta} - \theta_0)\,/\,\Delta\theta$", loc="right", fontsize=10)
        top_ax.tick_params(direction="in")
        for v in (-1, 1):
            top_ax.axvline(v, color=S.GREY, lw=0.6, ls=":")
    ax.legend(loc="upper left", ncol=2, frameon=False, fontsize=7.5)
    if title:
        ax.set_title(title, loc="left", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ correlation
def plot_correlation(fit_result: Any, *, threshold: float | None = None, max_pars: int = 40, title: str | None = None):
    """Correlation matrix of the free parameters of a fit (:func:`hf2ppl.fit`), annotated.

    For large models it is pruned (cabinetry's ``pruning_threshold``): only parameters with an off-diagonal
    :math:`|\\rho| \\ge` ``threshold`` (default 0 up to 20 parameters, else 0.2) are kept, at most ``max_pars``
    (those with the largest correlations).

    Example:
        >>> hf2ppl.plot.plot_correlation(hf2ppl.fit(m)).savefig("corr.png")  # doctest: +SKIP
    """
    names = list(fit_result.par_names)
    corr = np.asarray(fit_result.correlation, float)
    free = np.flatnonzero(~np.asarray(fit_result.fixed, bool))
    if threshold is None:
        threshold = 0.0 if free.size <= 20 else 0.2
    sub = corr[np.ix_(free, free)]
    off = np.abs(sub - np.diag(np.diag(sub)))
    strength = off.max(axis=1) if free.size > 1 else np.zeros(free.size)
    keep = np.flatnonzero(strength >= threshold)
    if keep.size > max_pars:
        keep = np.sort(keep[np.argsort(-strength[keep], kind="stable")[:max_pars]])
    idx = free[keep]
    c = corr[np.ix_(idx, idx)]
    n = idx.size
    size = min(13.0, max(4.0, 0.42 * n + 2.5))
    fig = S.figure(size + 1.0, size)
    ax = fig.add_subplot()
    im = ax.imshow(c, vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("correlation", loc="top")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    labels = [names[i] for i in idx]
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{c[i, j]:.2f}", ha="center", va="center", fontsize=6.5 if n > 12 else 8,
                        color="white" if abs(c[i, j]) > 0.6 else "k")
    ax.tick_params(direction="in", which="both", top=False, right=False)
    pruned = f"; pruned to |ρ| ≥ {threshold:g}: {n} of {free.size}" if n < free.size else ""
    ax.set_title(title or f"post-fit correlations{pruned}", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ pre/post-fit
def _numpyro(model: Any):
    if getattr(model, "target", None) == "numpyro" and hasattr(model, "expected_rates"):
        return model
    import hf2ppl

    return hf2ppl.compile(model.spec if hasattr(model, "spec") else model, constraints="aux")


def _prefit_cov(m) -> np.ndarray:
    """Diagonal pre-fit covariance: constraint widths (normal: σ; shapesys: 1/sqrt(τ)); free and fixed parameters 0."""
    P = m.ir.npars
    var = np.zeros(P)
    for p in m.ir.parameters:
        sl = np.arange(p.start, p.start + p.size)
        free = ~np.asarray(p.fixed, bool)
        if p.constraint == "normal" and p.sigmas is not None:
            var[sl[free]] = np.asarray(p.sigmas, float)[free] ** 2
        elif p.constraint == "poisson" and p.factors is not None:
            var[sl[free]] = 1.0 / np.asarray(p.factors, float)[free]
    return np.diag(var)


def _yields(m, x: np.ndarray, cov: np.ndarray):
    """Per-sample rates (S, B) and the total's uncertainty per bin, sqrt(diag(J C Jᵀ)) with J = ∂λ/∂θ (JAX)."""
    import jax
    import jax.numpy as jnp

    th = jnp.asarray(x, dtype=m.dtype)
    rates = np.asarray(m.expected_rates(th), float)
    J = np.asarray(jax.jit(jax.jacfwd(lambda t: jnp.sum(m.expected_rates(t), axis=0)))(th), float)
    err = np.sqrt(np.clip(np.einsum("bi,ij,bj->b", J, cov, J), 0.0, None))
    return rates, err


def plot_postfit(model: Any, fit_result: Any = None, *, prefit: bool = False, channels: Any = None, log: bool | None = None,
                 title: str | None = None):
    """Data vs the stacked expectation per channel, with the uncertainty band and a data/expectation ratio panel.

    Post-fit (``fit_result`` from :func:`hf2ppl.fit`; fitted when None): yields at :math:`\\hat\\theta`, band from
    the fit covariance propagated linearly, :math:`\\sigma_b^2 = J C J^T` (correlations included). Pre-fit
    (``prefit=True``): yields at the suggested init, band from the constraint widths (uncorrelated; free
    parameters such as the POI contribute none), as cabinetry.

    Args:
        model: the compiled model (or a workspace). channels: names to draw (default all).
        log: logarithmic y axis (default: when a channel's yields span more than two decades).

    Returns:
        One figure, a column per channel (at most 4 per row).

    Example:
        >>> hf2ppl.plot.plot_postfit(m, hf2ppl.fit(m)).savefig("postfit.png")  # doctest: +SKIP
    """
    m = _numpyro(model)
    if prefit:
        x = np.asarray(m.suggested_init(), float)
        cov = _prefit_cov(m)
    else:
        if fit_result is None:
            import hf2ppl

            fit_result = hf2ppl.fit(m)
        x = np.asarray(fit_result.x, float)
        cov = np.asarray(fit_result.covariance, float)
    rates, err = _yields(m, x, cov)
    data = np.asarray(m.ir.observed, float)
    chans = [c for c in m.ir.channels if channels is None or c.name in set(channels)]
    ncol = min(4, len(chans))
    nrow = int(np.ceil(len(chans) / ncol))
    fig = S.figure(4.3 * ncol + 0.6, 4.6 * nrow)
    gs = fig.add_gridspec(nrow, ncol, hspace=0.28, wspace=0.32)
    samples = list(m.ir.samples)
    colors = {s: S.SAMPLE_COLORS[i % len(S.SAMPLE_COLORS)] for i, s in enumerate(samples)}
    stage = "pre-fit" if prefit else "post-fit"
    for k, ch in enumerate(chans):
        r, cidx = divmod(k, ncol)
        cell = gs[r, cidx].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
        ax = fig.add_subplot(cell[0])
        axr = fig.add_subplot(cell[1], sharex=ax)
        sl = ch.slice
        nb = ch.nbins
        edges = np.arange(nb + 1, dtype=float)
        yr = rates[:, sl]
        order = [i for i, s in enumerate(samples) if s in ch.samples and np.any(yr[i] != 0)]
        order.sort(key=lambda i: yr[i].sum())  # smallest at the bottom, as cabinetry
        bottom = np.zeros(nb)
        for i in order:
            ax.stairs(bottom + yr[i], edges, baseline=bottom, fill=True, color=colors[samples[i]], label=samples[i], lw=0)
            bottom = bottom + yr[i]
        tot = bottom
        e = err[sl]
        ax.stairs(tot, edges, color="k", lw=0.8)
        ax.stairs(tot + e, edges, baseline=tot - e, fill=True, facecolor="none", edgecolor=S.GREY, hatch="////", lw=0,
                  label="uncertainty")
        d = data[sl]
        centres = edges[:-1] + 0.5
        ax.errorbar(centres, d, yerr=np.sqrt(np.maximum(d, 0)), fmt="o", color="k", ms=4, lw=1.2, label="data")
        lg = log if log is not None else (np.max(tot) > 100 * max(np.min(tot[tot > 0]) if np.any(tot > 0) else 1.0, 1e-9))
        top = max(float(np.max(tot + e)), float(np.max(d + np.sqrt(np.maximum(d, 0)))))
        if lg:
            ax.set_yscale("log")
            lo = max(1e-2, 0.5 * float(np.min(tot[tot > 0]))) if np.any(tot > 0) else 1e-2
            ax.set_ylim(lo, top * 10 ** (1.0 + 0.3 * np.log10(max(top / lo, 10))))
        else:
            ax.set_ylim(0, top * (1.25 + 0.09 * (len(order) + 2)))
        S.style(ax, None, "events" if cidx == 0 else None)
        ax.tick_params(labelbottom=False)
        S.label(ax, f"{ch.name}\n{stage}", fontsize=9)
        hs, ls = ax.get_legend_handles_labels()
        ns = len(order)  # samples listed top of the stack first, then uncertainty and data
        ax.legend(hs[:ns][::-1] + hs[ns:], ls[:ns][::-1] + ls[ns:], loc="upper right", frameon=False, fontsize=7.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(tot > 0, e / tot, 0.0)
            ratio = np.where(tot > 0, d / tot, np.nan)
            rerr = np.where(tot > 0, np.sqrt(np.maximum(d, 0)) / tot, np.nan)
        axr.stairs(1 + rel, edges, baseline=1 - rel, fill=True, facecolor="none", edgecolor=S.GREY, hatch="////", lw=0)
        axr.axhline(1.0, color="k", lw=0.8, ls="--")
        axr.errorbar(centres, ratio, yerr=rerr, fmt="o", color="k", ms=3.5, lw=1)
        dev = np.nanmax(np.abs(np.concatenate([ratio - 1, rel, [0.2]]))) if nb else 0.5
        span = next((v for v in (0.25, 0.5, 1.0) if np.isfinite(dev) and dev <= 0.9 * v), 1.0)
        axr.set_ylim(1 - span, 1 + span)
        axr.yaxis.set_major_locator(MultipleLocator({0.25: 0.1, 0.5: 0.25, 1.0: 0.5}[span]))
        S.style(axr, "bin", "data / model" if cidx == 0 else None)
        axr.set_xlim(0, nb)
        if nb <= 20:
            axr.set_xticks(centres)
            axr.set_xticklabels([str(i) for i in range(nb)], fontsize=8)
            axr.xaxis.set_minor_locator(NullLocator())
    if title:
        fig.suptitle(title, x=0.02, ha="left", fontsize=10)
    return fig


def plot_prefit(model: Any, **kwargs: Any):
    """:func:`plot_postfit` with ``prefit=True``: yields at the suggested init, band from the constraint widths."""
    return plot_postfit(model, prefit=True, **kwargs)


# ------------------------------------------------------------------------------------------------ profile
def plot_profile(profile: Any, *, poi_name: str = "mu", title: str | None = None):
    """Profile-likelihood scan :math:`-2\\Delta\\ln L(\\mu)` (:func:`hf2ppl.profile`) with the 1σ and 2σ lines
    (:math:`-2\\Delta\\ln L = 1, 4`) and the best fit marked.

    Example:
        >>> hf2ppl.plot.plot_profile(hf2ppl.profile(m, np.linspace(0, 3, 31))).savefig("scan.png")  # doctest: +SKIP
    """
    mus = np.asarray(profile.poi_values, float)
    v = np.asarray(profile.delta_twice_nll, float)
    fig = S.figure(6.0, 4.5)
    ax = fig.add_subplot()
    ax.plot(mus, v, color=S.BLUE, lw=1.8, marker="o" if mus.size <= 30 else None, ms=3.5, label="profile likelihood")
    top = max(5.0, float(np.nanmax(v)) * 1.1)
    for level, lab in ((1.0, r"$1\sigma$"), (4.0, r"$2\sigma$")):
        if level < top:
            ax.axhline(level, color=S.GREY, lw=1, ls="--")
            ax.text(mus[-1], level, lab + " ", ha="right", va="bottom", fontsize=9, color=S.GREY)
    g = profile.global_fit
    names = list(profile.par_names)
    pi = names.index(poi_name) if poi_name in names else None
    if pi is not None:
        ax.axvline(float(g.x[pi]), color="k", lw=0.8, ls=":", label=rf"best fit {float(g.x[pi]):.3g}")
    ax.set_ylim(0, top)
    ax.set_xlim(mus[0], mus[-1])
    S.style(ax, r"$\mu$" if poi_name == "mu" else poi_name, r"$-2\Delta\ln L$")
    ax.legend(loc="upper center", frameon=False, fontsize=9)
    if title:
        ax.set_title(title, loc="left", fontsize=9)
    return fig
