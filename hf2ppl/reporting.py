"""Diagnostics report of a posterior: one self-contained HTML page (or a folder of PNGs + summary).

Contents: a diagnostics section (the number of divergent transitions, R-hat/ESS, the table of
:mod:`hf2ppl.infer.diagnostics` warnings — or "none" — the posterior/prior width ratio of every
parameter, the non-identified products and a prior-vs-posterior overlay of the prior-dominated
parameters), the ``az.summary`` table (R-hat, bulk/tail ESS, MCSE), trace plots, a corner plot of
the parameter of interest and the leading nuisance parameters, and a posterior predictive check
per channel (observed counts against the posterior predictive median with 68% and 95% bands).

Plots are drawn on matplotlib's Agg canvas (no display, no change of the global backend).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["report"]

#: most parameters in the prior-vs-posterior overlay (the flagged ones, largest width ratio first)
N_OVERLAY = 12
#: parameters in the overlay when none is flagged (the largest width ratios)
N_OVERLAY_UNFLAGGED = 4
#: prior draws behind the overlay's prior histograms
N_PRIOR_DRAWS = 20000

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{padding:3px 8px;text-align:right;border-bottom:1px solid #eee}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.warn{background:#fff3cd;border:1px solid #e0b100;padding:.7em 1em;border-radius:4px}
.ok{background:#e7f5ea;border:1px solid #5aa469;padding:.7em 1em;border-radius:4px}
.bad td.rhat{color:#b00;font-weight:bold}img{max-width:100%}.meta{color:#666;font-size:.85em}
tr.flag td{background:#fff3cd}td.msg{text-align:left;max-width:760px}
"""


def _fig(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


# ------------------------------------------------------------------ parameter components
def _components(idata) -> list[tuple[str, str, np.ndarray]]:
    """(variable, label, draws (chain, draw)) for every scalar component of the posterior."""
    out = []
    post = idata.posterior
    for name in post.data_vars:
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        if not extra:
            out.append((name, name, np.asarray(da.values)))
            continue
        flat = da.stack(_c=extra)
        labs = [c if isinstance(c, str) else "/".join(map(str, np.atleast_1d(c))) for c in flat.coords["_c"].values]
        # "SR[3]" labels of one channel only: keep the bin ("name[3]") to keep plot labels short
        heads = {lab.split("[", 1)[0] for lab in labs}
        if len(heads) == 1 and all(lab.endswith("]") and "[" in lab for lab in labs):
            labs = [lab.split("[", 1)[1][:-1] for lab in labs]
        for i, lab in enumerate(labs):
            out.append((name, f"{name}[{lab}]", np.asarray(flat.values[..., i])))
    return out


def _poi(model: Any, idata) -> str | None:
    poi = getattr(model, "poi_name", None)
    return poi if poi in idata.posterior.data_vars else None


def _leading(comps, poi: str | None, k: int) -> list[tuple[str, str, np.ndarray]]:
    """POI first, then the k components most correlated with it (or with the largest relative spread)."""
    poi_c = [c for c in comps if c[0] == poi and c[1] == poi]
    rest = [c for c in comps if not (c[0] == poi and c[1] == poi)]
    if poi_c:
        x = poi_c[0][2].ravel()

        def score(c):
            y = c[2].ravel()
            if np.std(y) == 0 or np.std(x) == 0:
                return 0.0
            return abs(float(np.corrcoef(x, y)[0, 1]))
    else:
        def score(c):
            return float(np.std(c[2]))
    rest = sorted(rest, key=score, reverse=True)[:k]
    return poi_c + rest


# ------------------------------------------------------------------ plots
def trace_plot(comps) -> bytes:
    n = len(comps)
    fig = _fig(11, 1.9 * n + 0.4)
    axes = fig.subplots(n, 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2.6]})
    for (_, lab, x), (ax_d, ax_t) in zip(comps, axes):
        for c in range(x.shape[0]):
            ax_d.hist(x[c], bins=40, histtype="step", density=True, lw=1.1, label=f"chain {c}")
            ax_t.plot(x[c], lw=0.4, alpha=0.8)
        ax_d.set_title(lab, fontsize=9, loc="left")
        ax_d.set_yticks([])
        ax_t.set_title(f"{lab} trace", fontsize=9, loc="left")
        ax_t.margins(x=0)
    axes[-1, 1].set_xlabel("draw")
    fig.tight_layout()
    return _png(fig)


def corner_plot(comps) -> bytes:
    n = len(comps)
    size = max(2.0, min(2.6, 11 / n))
    fig = _fig(size * n, size * n)
    axes = fig.subplots(n, n, squeeze=False)
    data = [c[2].ravel() for c in comps]
    labels = [c[1] for c in comps]
    for i in range(n):
        for j in range(n):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                ax.hist(data[i], bins=50, histtype="stepfilled", color="#4c72b0", alpha=0.75)
                q = np.quantile(data[i], [0.16, 0.5, 0.84])
                for v, ls in zip(q, ("--", "-", "--")):
                    ax.axvline(v, color="k", lw=0.8, ls=ls)
                ax.set_yticks([])
                ax.set_title(f"{labels[i]}\n= {q[1]:.3g}$^{{+{q[2] - q[1]:.2g}}}_{{-{q[1] - q[0]:.2g}}}$", fontsize=7)
            else:
                ax.hist2d(data[j], data[i], bins=40, cmap="Blues")
            if i == n - 1:
                ax.set_xlabel(labels[j], fontsize=7)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=7)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=7)
    fig.subplots_adjust(wspace=0.06, hspace=0.3 if n > 1 else 0.05)
    return _png(fig)


def ppc_plot(idata, var: str, title: str) -> bytes:
    """Observed counts vs the posterior predictive median and central 68%/95% bands, per bin."""
    obs = np.asarray(idata.observed_data[var].values, dtype=float)
    pp = np.asarray(idata.posterior_predictive[var].values, dtype=float)
    pp = pp.reshape(-1, pp.shape[-1])
    q = np.quantile(pp, [0.025, 0.16, 0.5, 0.84, 0.975], axis=0)
    nb = obs.shape[0]
    edges = np.arange(nb + 1) - 0.5
    fig = _fig(max(6.0, min(12.0, 0.35 * nb + 4)), 4.2)
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})

    def step(a):
        return np.append(a, a[-1])

    ax.fill_between(edges, step(q[0]), step(q[4]), step="post", color="#f2c744", alpha=0.6, label="95% band")
    ax.fill_between(edges, step(q[1]), step(q[3]), step="post", color="#5aa469", alpha=0.7, label="68% band")
    ax.step(edges, step(q[2]), where="post", color="#1f4e79", lw=1.5, label="posterior predictive median")
    ax.errorbar(np.arange(nb), obs, yerr=np.sqrt(np.maximum(obs, 0)), fmt="o", color="k", ms=4, lw=1, label="observed")
    ax.set_ylabel("events per bin")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(fontsize=8, loc="best")
    ax.set_ylim(bottom=0)
    med = np.where(q[2] > 0, q[2], 1.0)
    axr.fill_between(edges, step(q[0] / med), step(q[4] / med), step="post", color="#f2c744", alpha=0.6)
    axr.fill_between(edges, step(q[1] / med), step(q[3] / med), step="post", color="#5aa469", alpha=0.7)
    axr.axhline(1.0, color="#1f4e79", lw=1)
    axr.errorbar(np.arange(nb), obs / med, yerr=np.sqrt(np.maximum(obs, 0)) / med, fmt="o", color="k", ms=3, lw=1)
    axr.set_ylabel("obs / median", fontsize=8)
    axr.set_xlabel("bin")
    if nb <= 30:
        axr.set_xticks(np.arange(nb))
    return _png(fig)


def prior_posterior_plot(panels) -> bytes:
    """Prior (grey) and posterior (blue) histograms per component; ``panels``: (label, prior draws, posterior
    draws, posterior/prior sd ratio, flagged)."""
    n = len(panels)
    ncol = min(4, n)
    nrow = -(-n // ncol)
    fig = _fig(2.75 * ncol, 2.3 * nrow + 0.3)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        lab, pr, po, ratio, flagged = panels[k]
        lo = min(np.quantile(pr, 0.001), po.min())
        hi = max(np.quantile(pr, 0.999), po.max())
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 51)
        ax.hist(pr, bins=bins, density=True, histtype="stepfilled", color="#999999", alpha=0.45, label="prior")
        ax.hist(po, bins=bins, density=True, histtype="stepfilled", color="#4c72b0", alpha=0.75, label="posterior")
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        ax.set_title(f"{lab}\nsd ratio {ratio:.2f}{' (prior-dominated)' if flagged else ''}", fontsize=8,
                     color="#b00000" if flagged else "k")
        if k == 0:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig)


def _prior_cell(pr: Any, n: int, i: int) -> str:
    """``Uniform(low=0, high=10)``: the prior of component ``i`` of a set of ``n``."""
    v = pr.broadcast(n)
    return f"{type(pr).__name__}(" + ", ".join(f"{k}={v[k][i]:.4g}" for k in v) + ")"


def _diagnostics_section(idata: Any, model: Any, images: dict[str, bytes], src) -> list[str]:
    """The warnings table (or "none"), width ratios, non-identified products and the overlay: HTML parts."""
    from .infer import diagnostics as D

    stored = [str(w) for w in np.atleast_1d(idata.attrs.get("warnings", [])) if str(w)]
    redone = D.findings(idata, model) if model is not None else []
    msgs = list(dict.fromkeys(stored + redone))  # one row per message, the sampler's first
    parts = ["<h3>Warnings</h3>"]
    if model is None:
        parts.append("<p class='meta'>No model given: only the warnings stored with the draws are listed; the width "
                     "ratios, products and overlay need the model.</p>")
    if msgs:
        rows = ["<div class='warn'><b>" + f"{len(msgs)} warning{'s' if len(msgs) != 1 else ''}</b>: the posterior (or "
                "its approximation) may not be what it seems.</div>",
                "<table class='warnings'><tr><th>warning</th><th>message</th><th>found by</th></tr>"]
        for m in msgs:
            cls, _, text = m.partition(": ")
            by = " and ".join(w for w, inn in (("sampler", m in stored), ("report", m in redone)) if inn)
            rows.append(f"<tr><td>{html.escape(cls)}</td><td class='msg'>{html.escape(text)}</td><td>{by}</td></tr>")
        parts += rows + ["</table>"]
    elif model is None:
        parts.append("<div class='ok'>Warnings: none stored with the draws (given the model, the report redoes the checks "
                     "on the draws).</div>")
    else:
        checked = ("divergences, R-hat/ESS, " if "sample_stats" in idata.groups() else "") + \
            "prior domination, non-identified products"
        parts.append(f"<div class='ok'>Warnings: none (none stored with the draws; redone here on the draws: {checked}).</div>")
    if model is None:
        return parts
    from .infer.idata import _param_dataset, draw_prior, prior_for_draws

    ratios = D.prior_ratios(idata.posterior, model)
    widths = D.prior_widths(model)
    priors = prior_for_draws(model)
    nfree = {p.name: p.n_free for p in model.free_parameters}
    parts += ["<h3>Posterior/prior width ratios</h3>",
              f"<p class='meta'>Posterior sd / sd of the prior the <code>prior</code> group is drawn from (constraints "
              f"\"{html.escape(str(getattr(model, 'constraints', '')))}\"). An unconstrained parameter (normfactor, "
              f"shapefactor: its prior is its bounds) with a ratio above {D.PRIOR_RATIO_MAX} is flagged prior-dominated. "
              "For a constrained parameter a ratio near 1 means the data add little to its auxiliary measurement: "
              "expected for most nuisance parameters, not a warning.</p>",
              "<table class='ratios'><tr><th>parameter</th><th>kind</th><th>prior</th><th>prior sd</th><th>posterior sd</th>"
              "<th>ratio</th><th>flag</th></tr>"]
    index: dict[str, int] = {}
    for name, lab, r, free in ratios:
        i = index.get(name, 0)
        index[name] = i + 1
        w = float(widths[name][i])
        flag = free and np.isfinite(r) and r > D.PRIOR_RATIO_MAX
        parts.append(f"<tr class='{'flag' if flag else ''}'><td>{html.escape(lab)}</td>"
                     f"<td>{'unconstrained' if free else 'constrained'}</td>"
                     f"<td>{html.escape(_prior_cell(priors[name], nfree[name], i))}</td><td>{w:.4g}</td><td>{r * w:.4g}</td>"
                     f"<td>{r:.3f}</td><td>{'prior-dominated' if flag else ''}</td></tr>")
    parts.append("</table>")
    rid = D.ridges(idata.posterior, model)
    if rid:
        parts += ["<h3>Non-identified products</h3>",
                  f"<p class='meta'>Pairs of positive unconstrained parameters with corr(log a, log b) &lt; -{D.RIDGE_CORR}: "
                  "the data measure (nearly) only the product a·b.</p>",
                  "<table class='ridges'><tr><th>a</th><th>b</th><th>corr(log a, log b)</th></tr>"]
        parts += [f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{c:.3f}</td></tr>" for a, b, c in rid]
        parts.append("</table>")
    # overlay: the flagged components (largest ratio first), else the largest ratios
    pos = {}
    for k, (name, lab, r, free) in enumerate(ratios):
        pos[lab] = (name, k, r, free and np.isfinite(r) and r > D.PRIOR_RATIO_MAX)
    order = sorted(pos.items(), key=lambda t: -np.nan_to_num(t[1][2], nan=-np.inf))
    flagged = [t for t in order if t[1][3]]
    chosen = flagged[:N_OVERLAY] if flagged else [t for t in order if np.isfinite(t[1][2])][:N_OVERLAY_UNFLAGGED]
    if not chosen:
        return parts
    prior_ds = _param_dataset(model, draw_prior(model, N_PRIOR_DRAWS, np.random.default_rng(20240))[None], {})

    def draws(ds, name, lab):
        da = ds[name]
        v = np.asarray(da.values)
        if da.ndim == 2:
            return v.reshape(-1)
        labs = [f"{name}[{c}]" for c in da.coords[da.dims[2]].values]
        return v[..., labs.index(lab)].reshape(-1)

    panels = [(lab, draws(prior_ds, name, lab), draws(idata.posterior, name, lab), r, fl) for lab, (name, _, r, fl) in chosen]
    images["prior_posterior.png"] = prior_posterior_plot(panels)
    if flagged:
        cap = (f"the {len(chosen)} prior-dominated parameter{'s' if len(chosen) != 1 else ''}"
               + (f" with the largest ratios (of {len(flagged)})" if len(flagged) > len(chosen) else ""))
    else:
        cap = f"no parameter is prior-dominated; the {len(chosen)} largest width ratios"
    parts += [f"<h3>Prior vs posterior: {html.escape(cap)}</h3>",
              "<p class='meta'>Grey: the prior (draws of the prior the ratios refer to); blue: the posterior.</p>",
              src("prior_posterior.png", "prior vs posterior overlay")]
    return parts


# ------------------------------------------------------------------ the report
def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def report(idata: Any, model: Any = None, path: str | Path = "report.html", *, max_trace: int = 12,
           n_leading: int = 4, title: str | None = None, frequentist: bool = False) -> Path:
    """Write a diagnostics report of ``idata`` (from :func:`hf2ppl.sample` or the PyMC sampler).

    Args:
        idata: ``arviz.InferenceData`` with a posterior (and, for the PPC, posterior_predictive and
            observed_data groups).
        model: the compiled model (for the POI and channel names); optional.
        path: ``*.html`` → one self-contained page with the PNGs embedded (base64); any other path →
            a folder with ``index.html``, the PNGs and ``summary.csv``.
        max_trace: trace plots for at most this many parameter components (POI and leading first).
        n_leading: nuisance parameters in the corner plot (those most correlated with the POI).
        title: page title.
        frequentist: add the frequentist section (needs ``model``): the maximum-likelihood fit of pyhf's likelihood,
            pulls, ranking of impacts, post-fit yields, and — for a ``constraints="prior"`` model with a POI — the
            cross-check of the CLs and the credible upper limits from these draws (:func:`hf2ppl.crosscheck`).

    Returns:
        The path of the HTML page.

    Example:
        >>> idata = hf2ppl.sample(m, chains=4)  # doctest: +SKIP
        >>> hf2ppl.report(idata, m, "report.html")  # doctest: +SKIP
    """
    import arviz as az

    path = Path(path)
    folder = path.suffix.lower() not in (".html", ".htm")
    out_dir = path if folder else path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}

    summ = az.summary(idata)
    comps = _components(idata)
    poi = _poi(model, idata)
    lead = _leading(comps, poi, n_leading)
    ordered = lead + [c for c in comps if c not in lead]
    trace = ordered[:max_trace]
    images["trace.png"] = trace_plot(trace)
    if len(lead) >= 2:
        images["corner.png"] = corner_plot(lead)
    ppc_vars = []
    if "posterior_predictive" in idata.groups() and "observed_data" in idata.groups():
        for var in idata.observed_data.data_vars:
            if var in idata.posterior_predictive.data_vars:
                fn = f"ppc_{''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in var)}.png"
                images[fn] = ppc_plot(idata, var, f"channel {var}: posterior predictive check")
                ppc_vars.append((var, fn))

    n_div, n_total = None, None
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        div = np.asarray(idata.sample_stats.diverging.values)
        n_div, n_total = int(div.sum()), int(div.size)
    attrs = dict(idata.posterior.attrs)
    def nan_extreme(fn, col):  # NaN where the column is absent or all NaN (one chain: no R-hat)
        v = np.asarray(summ[col], float) if col in summ else np.zeros(0)
        return float(fn(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")

    max_rhat, min_ess = nan_extreme(np.max, "r_hat"), nan_extreme(np.min, "ess_bulk")

    def src(fn: str, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="{fn}"/>' if folder else _img(images[fn], alt)

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'hf2ppl posterior report')}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title or 'hf2ppl posterior report')}</h1>"]
    meta = {k: attrs[k] for k in ("sampler", "target", "constraints", "num_chains", "num_draws", "num_warmup", "hf2ppl_version", "created_at") if k in attrs}
    parts.append("<p class='meta'>" + " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items()) + "</p>")
    parts.append("<h2>Diagnostics</h2><h3>Sampler</h3>")
    if n_div is None:
        parts.append("<p>No divergence information (not an MCMC run).</p>")
    elif n_div > 0:
        parts.append(f"<div class='warn'><b>Warning: {n_div} divergent transition{'s' if n_div != 1 else ''}</b> out of {n_total} draws "
                     f"({100 * n_div / n_total:.2g}%). The posterior may be biased; increase <code>target_accept</code> "
                     "(e.g. 0.95) or reparametrise, and check where the divergences occur.</div>")
    else:
        parts.append(f"<div class='ok'>No divergent transitions in {n_total} draws.</div>")
    rh = "" if np.isnan(max_rhat) else f"max R-hat {max_rhat:.3f}{' (>1.01: chains disagree — run longer)' if max_rhat > 1.01 else ''}; "
    parts.append(f"<p>{rh}min bulk ESS {min_ess:.0f}.</p>")
    parts += _diagnostics_section(idata, model, images, src)
    parts.append("<h2>Summary</h2>")
    cols = [c for c in ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat") if c in summ.columns]
    rows = ["<table><tr><th>parameter</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"]
    for idx, r in summ[cols].iterrows():
        bad = "r_hat" in cols and r["r_hat"] > 1.01
        cells = "".join(f"<td class='{'rhat' if c == 'r_hat' else ''}'>{r[c]:.4g}</td>" for c in cols)
        rows.append(f"<tr class='{'bad' if bad else ''}'><td>{html.escape(str(idx))}</td>{cells}</tr>")
    rows.append("</table>")
    parts += rows
    if "corner.png" in images:
        parts.append(f"<h2>Corner plot: {html.escape(poi or 'leading parameters')} and leading nuisance parameters</h2>")
        parts.append("<p class='meta'>Nuisance parameters ranked by |posterior correlation| with the POI; lines: 16/50/84% quantiles.</p>")
        parts.append(src("corner.png", "corner plot"))
    if ppc_vars:
        parts.append("<h2>Posterior predictive checks</h2>")
        for var, fn in ppc_vars:
            parts.append(src(fn, f"posterior predictive check {var}"))
    parts.append(f"<h2>Trace plots</h2><p class='meta'>{len(trace)} of {len(comps)} components (POI and leading first).</p>")
    parts.append(src("trace.png", "trace plots"))
    if frequentist:
        parts += _frequentist_section(model, idata, images, src)
    parts.append("</body></html>")
    page = "\n".join(parts)
    if folder:
        for fn, png in images.items():
            (out_dir / fn).write_bytes(png)
        summ.to_csv(out_dir / "summary.csv")
        target = out_dir / "index.html"
    else:
        target = path
    target.write_text(page, encoding="utf-8")
    return target


# ------------------------------------------------------------------ the frequentist section
def _frequentist_section(model: Any, idata: Any, images: dict[str, bytes], src) -> list[str]:
    """Fit, pulls, ranking, post-fit and the CLs/credible cross-check: HTML parts; PNGs added to ``images``."""
    import hf2ppl
    from hf2ppl import plot

    from .errors import ParameterError

    if model is None:
        raise ParameterError("report(frequentist=True) needs the model")

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    parts = ["<h2>Frequentist: maximum-likelihood fit (pyhf's likelihood)</h2>"]
    fit = hf2ppl.fit(model)
    unc = fit.uncertainties
    parts.append(f"<p>-2 ln L = {fit.twice_nll:.6f}; converged: {fit.converged} ({html.escape(fit.message)}); "
                 f"{fit.niter} iterations.</p>")
    rows = ["<table><tr><th>parameter</th><th>best fit</th><th>± (Hessian)</th></tr>"]
    for (n, v), fx in zip(fit.bestfit.items(), fit.fixed):
        rows.append(f"<tr><td>{html.escape(n)}</td><td>{v:.6g}</td><td>{'fixed' if fx else f'{unc[n]:.4g}'}</td></tr>")
    parts += rows + ["</table>"]
    pulls = hf2ppl.pulls(model, fit_result=fit)
    figs = []
    if len(pulls.names):
        images["pulls.png"] = png(plot.plot_pulls(pulls))
        figs.append(("pulls.png", "Pulls of the constrained parameters"))
    if getattr(model, "poi_name", None) is not None:
        imp = hf2ppl.impacts(model, fit_result=fit)
        if len(imp.names):
            images["ranking.png"] = png(plot.plot_ranking(imp, pulls, top=20))
            figs.append(("ranking.png", f"Ranking of the impacts on {model.poi_name}"))
    images["postfit.png"] = png(plot.plot_postfit(model, fit))
    figs.append(("postfit.png", "Post-fit yields"))
    for fn, cap in figs:
        parts += [f"<h3>{html.escape(cap)}</h3>", src(fn, cap)]
    if getattr(model, "poi_name", None) is not None and getattr(model, "constraints", None) == "prior" and \
            getattr(model, "target", None) == "numpyro":
        r = hf2ppl.crosscheck(model, idata=idata)
        images["crosscheck.png"] = png(r.plot())
        parts += [f"<h2>Cross-check: CLs and credible upper limits on {html.escape(r.poi_name)}</h2>",
                  f"<pre>{html.escape(r.table())}</pre>", src("crosscheck.png", "cross-check")]
    return parts
