"""hf2ppl.crosscheck: the CLs and the credible upper limit side by side.

Known answers: for a single-bin counting experiment with known background b, n observed and a flat
prior on the signal s in [0, H], the posterior is p(s | n) ∝ (s + b)^n e^{-(s+b)}, whose CDF is a ratio
of regularised incomplete gamma functions; the credible upper limit is its root (scipy). With a
Gaussian-constrained background (staterror) the reference is a brute-force 2-d quadrature.
The CLs side is hf2ppl.upper_limit, itself tested against pyhf; here it is compared to pyhf directly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import WORKSPACES
from scipy import integrate, optimize, special, stats

import hf2ppl
from hf2ppl.errors import ParameterError
from hf2ppl.infer.crosscheck import credible_upper_limit

H = 50.0


def counting(n: int, b: float, staterror: float | None = None) -> dict:
    bkg = {"name": "bkg", "data": [b], "modifiers": []}
    if staterror is not None:
        bkg["modifiers"] = [{"name": "staterror_SR", "type": "staterror", "data": [staterror * b]}]
    return {"channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [1.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}, bkg]}],
        "observations": [{"name": "SR", "data": [float(n)]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0.0, H]]}]}}],
        "version": "1.0.0"}


def gamma_limit(n: int, b: float, cl: float) -> float:
    """Root of [P(n+1, s+b) - P(n+1, b)] / [P(n+1, H+b) - P(n+1, b)] = cl (P: regularised lower incomplete gamma)."""
    P = lambda x: special.gammainc(n + 1, x)  # noqa: E731
    tot = P(H + b) - P(b)
    return optimize.brentq(lambda s: (P(s + b) - P(b)) / tot - cl, 0.0, H, xtol=1e-13)


def _sample(m, seed=1, draws=300):
    return hf2ppl.sample(m, chains=2, draws=draws, warmup=300, seed=seed, progress=False, predictive=False,
                         log_likelihood=False, prior=False)


@pytest.mark.parametrize("n,b,cl", [(0, 1.0, 0.95), (3, 2.0, 0.95), (12, 5.0, 0.9)])
def test_counting_credible_limit_is_the_incomplete_gamma_solution(n, b, cl):
    m = hf2ppl.compile(counting(n, b))
    idata = _sample(m)
    r = credible_upper_limit(m, idata, cl)
    ref = gamma_limit(n, b, cl)
    assert r["limit"] == pytest.approx(ref, rel=1e-3)
    # the CDF on the grid is the analytic one
    P = lambda x: special.gammainc(n + 1, x)  # noqa: E731
    exact = (P(r["grid"] + b) - P(b)) / (P(H + b) - P(b))
    assert np.max(np.abs(r["cdf"] - exact)) < 1e-4
    # and the NUTS draws themselves follow that posterior: sample quantile within 5 MCSE
    import arviz as az

    x = idata.posterior["mu"].values
    q_mcse = float(az.mcse(idata, var_names=["mu"], method="quantile", prob=cl)["mu"])
    assert abs(np.quantile(x, cl) - ref) < 5 * q_mcse + 1e-3 * ref


def test_credible_limit_with_a_nuisance_parameter_vs_brute_force():
    n, b, rel, cl = 6, 3.0, 0.2, 0.95
    m = hf2ppl.compile(counting(n, b, staterror=rel))
    (lo_g, hi_g), = m.ir.par_map["staterror_SR"].bounds
    idata = _sample(m, seed=3, draws=500)
    r = credible_upper_limit(m, idata, cl)

    # brute force: p(s) ∝ ∫ Pois(n | s + b γ) N(γ | 1, rel) dγ on γ's bounds, s in [0, H]: a 2-d trapezoid rule
    g = np.linspace(max(lo_g, 1 - 10 * rel), min(hi_g, 1 + 10 * rel), 2001)
    s = np.linspace(0.0, 40.0, 4001)
    integrand = np.exp(stats.poisson.logpmf(n, s[:, None] + b * g[None, :])) * stats.norm.pdf(g, 1.0, rel)[None, :]
    dens = integrate.trapezoid(integrand, g, axis=1)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(s))])
    cdf /= cdf[-1]
    ref = float(np.interp(cl, cdf, s))
    assert abs(r["limit"] - ref) < 5 * r["mcse"] + 2e-3 * ref, (r["limit"], ref, r["mcse"])


@pytest.fixture(scope="session")
def corr_crosscheck():
    # the settings of the README and docs/concepts.md: one compiled sampler for all three
    return hf2ppl.crosscheck(str(WORKSPACES / "2_bin_corr.json"), chains=2, draws=300, warmup=300, seed=0)


def test_crosscheck_cls_side_is_pyhf(corr_crosscheck):
    import pyhf

    r = corr_crosscheck
    ws = pyhf.Workspace(json.loads((WORKSPACES / "2_bin_corr.json").read_text()))
    model = ws.model()
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(ws.data(model), model, scan=None, level=0.05)
    assert r.cls_observed == pytest.approx(float(obs), rel=2e-4)
    assert r.cls_expected == pytest.approx([float(e) for e in exp], rel=2e-4)
    bf = pyhf.infer.mle.fit(ws.data(model), model)
    assert r.mle == pytest.approx(float(bf[model.config.poi_index]), abs=1e-4)
    # the scan is hypotest on a grid: CLs crosses 0.05 at the observed limit
    assert np.interp(r.cls_observed, r.scan_mu, r.scan_cls_obs) == pytest.approx(0.05, abs=3e-3)
    # prior stated; JSON round trip; the table shows both limits
    assert r.prior_is_default and r.prior.startswith("Uniform(low=0.0, high=10.0")
    d = json.loads(r.to_json())
    assert d["cls_observed"] == r.cls_observed and d["bayes_limit"] == r.bayes_limit and d["cl"] == 0.95
    table = str(r)
    assert "95% CL upper limit on mu" in table and f"{r.cls_observed:.4f}" in table and f"{r.bayes_limit:.4f}" in table
    assert "prior on mu: Uniform" in table
    # the credible limit is the quantile of the same posterior (up to MC error) and a sane number
    assert abs(r.bayes_limit - r.bayes_quantile) < 5 * r.bayes_quantile_mcse + 5 * r.bayes_limit_mcse
    assert 0 < r.bayes_limit < 10


def test_crosscheck_level_and_prior_validated():
    with pytest.raises(ParameterError, match="upper_limit's level is the CLs size"):
        hf2ppl.crosscheck(hf2ppl.example(), level=0.05)
    with pytest.raises(ParameterError, match="confidence level"):
        hf2ppl.crosscheck(hf2ppl.example(), level=1.5)
    with pytest.raises(ParameterError, match="poi_prior"):
        hf2ppl.crosscheck(hf2ppl.example(), poi_prior=(0, 5))


def test_crosscheck_figure(corr_crosscheck, tmp_path):
    import matplotlib.image as mpimg

    fig = corr_crosscheck.plot()
    ax, tw = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("CL$_s$ 95% limit" in t for t in labels) and any("credible 95% limit" in t for t in labels)
    assert "expected $\\pm 2\\sigma$" in labels and "posterior CDF" in labels
    # the two limits are drawn where the result says
    at = {line.get_gid(): float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_gid()}
    assert at == pytest.approx({"cls_limit": corr_crosscheck.cls_observed, "credible_limit": corr_crosscheck.bayes_limit})
    out = tmp_path / "crosscheck.png"
    fig.savefig(out)
    im = mpimg.imread(out)
    assert im.shape[0] > 300 and np.std(im[..., :3]) > 0.05


def test_brazil_figure(corr_crosscheck, tmp_path):
    import matplotlib.image as mpimg

    from hf2ppl import plot

    r = corr_crosscheck
    # the structure upper_limit(..., return_results=True) returns: (obs, exp, (mus, cls_obs, cls_exp (n, 5)))
    fig = plot.plot_brazil((r.cls_observed, r.cls_expected, (r.scan_mu[::-1], r.scan_cls_obs[::-1], r.scan_cls_exp[::-1])))
    ax = fig.axes[0]
    at = {ln.get_gid(): float(ln.get_xdata()[0]) for ln in ax.get_lines() if ln.get_gid()}
    assert at == pytest.approx({"obs_limit": r.cls_observed, "exp_limit": r.cls_expected[2]})
    obs_line = next(ln for ln in ax.get_lines() if ln.get_label() == "observed CL$_s$")
    np.testing.assert_allclose(obs_line.get_xdata(), r.scan_mu)  # sorted back
    np.testing.assert_allclose(obs_line.get_ydata(), r.scan_cls_obs)
    band = ax.collections[0].get_paths()[0].vertices  # the ±2σ band spans columns 0 and 4
    assert band[:, 1].max() == pytest.approx(max(r.scan_cls_exp[:, 0].max(), r.scan_cls_exp[:, 4].max()))
    fig.savefig(tmp_path / "brazil.png")
    assert np.std(mpimg.imread(tmp_path / "brazil.png")[..., :3]) > 0.05
