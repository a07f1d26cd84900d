"""Each warning of hf2ppl.infer.diagnostics fires on a model built to trigger it and stays silent on a
well-behaved one; the standardised parametrisation makes a stiff constraint samplable."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import WORKSPACES

import hf2ppl
from hf2ppl.infer import diagnostics as D


def ws(name: str) -> dict:
    return json.loads((WORKSPACES / name).read_text())


def caught(fn, *a, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*a, **kw)
    return out, [x for x in w if issubclass(x.category, D.PosteriorWarning)]


def kinds(ws_):
    return {w.category for w in ws_}


@pytest.fixture(scope="module")
def corr():
    return hf2ppl.compile(ws("2_bin_corr.json"))


@pytest.fixture(scope="module")
def corr_idata(corr):
    return caught(hf2ppl.sample, corr, chains=4, draws=500, warmup=500, seed=0)


def test_well_behaved_posterior_is_silent(corr_idata):
    idata, w = corr_idata
    assert w == [], [str(x.message) for x in w]
    assert "warnings" not in idata.attrs


def test_divergence_and_rhat_ess_warnings_fire(corr, corr_idata):
    """The MCMC checks on the well-behaved run, altered: divergent transitions, one chain shifted by 2 sd
    (R-hat), draws repeated in blocks of 50 (ESS)."""
    idata, _ = corr_idata
    bad = idata.copy()
    div = np.zeros(bad.sample_stats.diverging.shape, bool)
    div[0, :3] = True
    bad.sample_stats["diverging"] = (("chain", "draw"), div)
    _, w = caught(D.check_mcmc, bad, corr)
    assert kinds(w) == {D.DivergenceWarning} and "3 of 2000" in str(w[0].message)
    bad = idata.copy()
    mu = bad.posterior["mu"].values.copy()
    mu[0] += 2 * mu.std()
    bad.posterior["mu"] = (("chain", "draw"), mu)
    _, w = caught(D.check_mcmc, bad, corr)
    assert D.ConvergenceWarning in kinds(w) and any("R-hat" in str(x.message) and "mu" in str(x.message) for x in w)
    bad = idata.copy()
    v = bad.posterior["correlated_bkg_uncertainty"].values
    bad.posterior["correlated_bkg_uncertainty"] = (("chain", "draw"), np.repeat(v[:, ::50], 50, axis=1))
    _, w = caught(D.check_mcmc, bad, corr)
    assert any("ESS" in str(x.message) and "correlated_bkg_uncertainty" in str(x.message) for x in w)


def test_prior_dominated_and_product_ridge_fire():
    """all_modifiers_2channel: mu_bkg and the shapefactor shape_cr enter the CR only as a product."""
    m = hf2ppl.compile(ws("all_modifiers_2channel.json"))
    idata, w = caught(hf2ppl.sample, m, chains=2, draws=300, warmup=300, seed=1)
    assert {D.PriorDominatedWarning, D.NonIdentifiedWarning} <= kinds(w)
    rid = D.ridges(idata.posterior, m)
    assert any("mu_bkg" in a + b and "shape_cr" in a + b for a, b, _ in rid)
    assert all("staterror" not in a + b and "lumi" not in a + b for a, b, _ in rid)  # constrained sets are not checked
    assert idata.attrs["warnings"]


def test_map_at_bound_and_non_pd_hessian_warn_with_nan_sd(corr):
    """SRee_SRmm_SRem_3channel: observations of 1e-8 put mu_Sig's mode on its lower bound 0, where the
    Hessian is not positive definite — a NaN sd and a warning, never a clipped 0."""
    r, w = caught(hf2ppl.map_estimate, corr)
    assert w == [] and r.converged and r.info["hessian_pd"] and r.info["at_bound"] == []
    m = hf2ppl.compile(ws("SRee_SRmm_SRem_3channel.json"))
    r, w = caught(hf2ppl.map_estimate, m)
    assert D.LaplaceWarning in kinds(w)
    assert r.info["at_bound"] == ["mu_Sig"] and r.params["mu_Sig"] < 1e-5
    sd = np.concatenate([np.atleast_1d(v) for v in r.uncertainties.values()])
    assert not np.any(sd == 0.0)
    if not r.info["hessian_pd"]:
        assert any("not positive definite" in str(x.message) for x in w)


def test_svi_not_converged_warns_and_default_converges(corr):
    spec = ws("hello_world_shapesys.json")  # 4x the observed counts: the posterior of mu is far from its init 1
    spec["observations"][0]["data"] = [4 * v for v in spec["observations"][0]["data"]]
    _, w = caught(hf2ppl.svi, hf2ppl.compile(spec), steps=300, draws=200, learning_rate=0.002)
    assert D.SVIConvergenceWarning in kinds(w), [str(x.message) for x in w]
    idata, w = caught(hf2ppl.svi, corr, steps=2000, draws=500)
    assert D.SVIConvergenceWarning not in kinds(w), [str(x.message) for x in w]
    drop, se = D.svi_trend(idata.svi.loss.values)
    assert drop < max(3 * se, 0.05) and idata.attrs["distance_to_optimum"] < 0.3


def test_svi_trend_detects_a_slope():
    rng = np.random.default_rng(0)
    flat = 10 + rng.normal(0, 1, 5000)
    assert D.svi_trend(flat)[0] < 3 * D.svi_trend(flat)[1]
    slope = flat - np.linspace(0, 5, 5000)
    drop, se = D.svi_trend(slope)
    assert drop > 3 * se and drop > 0.5


def stiff_workspace(n=435.0, sigma=0.001):
    """One bin with 435 events and a shapesys of absolute uncertainty 0.001 (tau = (435/0.001)^2 = 1.9e11)."""
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "sig", "data": [10.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "bkg", "data": [n], "modifiers": [{"name": "stat", "type": "shapesys", "data": [sigma]},
                                                      {"name": "lumi", "type": "lumi", "data": None}]}]}],
        "observations": [{"name": "SR", "data": [450.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.915, 1.085]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


def test_stiff_shapesys_is_sampled_standardised():
    """tau = 1.9e11: the shapesys gamma is sampled as (gamma - centre) / width; NUTS mixes (R-hat, ESS)
    and gamma's posterior is its Gamma(a + 1, tau) prior (the one bin cannot move it: width 2.3e-6)."""
    m = hf2ppl.compile(stiff_workspace())
    from hf2ppl.infer._nuts import get_layout

    assert {"stat", "lumi"} <= set(get_layout(m).standardised)
    # 1000 draws: with 400, the R-hat of the lumi-mu ridge is above 1.01 for 2 of 6 seeds by chance (1.013, 1.0135);
    # with 1000 its largest over 6 seeds is 1.008
    idata, w = caught(hf2ppl.sample, m, chains=2, draws=1000, warmup=500, seed=0)
    assert D.ConvergenceWarning not in kinds(w) and D.DivergenceWarning not in kinds(w), [str(x.message) for x in w]
    p = m.ir.par_map["stat"]
    a, tau = p.auxdata[0], p.factors[0]
    g = idata.posterior["stat"].values.reshape(-1)
    np.testing.assert_allclose(g.std(), np.sqrt(a + 1) / tau, rtol=0.15)
    assert abs(g.mean() - (a + 1) / tau) < 4 * np.sqrt(a + 1) / tau / np.sqrt(100)
    r, w = caught(hf2ppl.map_estimate, hf2ppl.compile(stiff_workspace(), constraints="aux"))
    assert r.converged and r.info["edm"] < 1e-8 and w == []
