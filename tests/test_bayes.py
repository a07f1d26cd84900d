"""Bayesian inference (issue 4): InferenceData layout, backend agreement, exact references.

References are independent of the sampler: a brute-force grid integration of the
2_bin_corr posterior written from the HistFactory formulas with numpy/scipy, the
analytic Gamma posterior of a conjugate model, pyhf's MLE for MAP in aux mode.
"""

from __future__ import annotations

import copy
import json
import sys
import types
import warnings

import numpy as np
import pytest
from conftest import WORKSPACES
from scipy import integrate, stats

import hf2ppl
from hf2ppl import priors as P

warnings.filterwarnings("ignore", category=FutureWarning)


def ws(name: str) -> dict:
    return json.loads((WORKSPACES / name).read_text())


@pytest.fixture(scope="module")
def corr():
    return hf2ppl.compile(ws("2_bin_corr.json"), priors={"mu": P.Uniform(0, 5)})


# ------------------------------------------------------------------ InferenceData layout
@pytest.fixture(scope="module")
def idata_multi():
    """A model with two channels and vector sets (shapefactor, shapesys, staterror) on a small run."""
    m = hf2ppl.compile(ws("all_modifiers_2channel.json"))
    assert len(m.channels) == 2 and any(not p.is_scalar for p in m.free_parameters)
    return m, hf2ppl.sample(m, chains=2, draws=100, warmup=100, seed=0)


# groups, names, dims/coords, dtypes, the log-likelihood's values: tests/test_idata_contract.py


def test_idata_works_with_arviz(idata_multi):
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, idata = idata_multi
    summ = az.summary(idata)
    assert {"r_hat", "ess_bulk", "ess_tail", "mcse_mean"} <= set(summ.columns)
    assert len(summ) == sum(p.n_free for p in m.free_parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata)
        waic = az.waic(idata)
    assert np.isfinite(loo.elpd_loo) and np.isfinite(waic.elpd_waic)
    az.plot_ppc(idata, num_pp_samples=50)
    az.plot_trace(idata)
    plt.close("all")


def test_loo_per_channel(idata_multi):
    """The whole-model elpd is the sum of the per-channel ones (channel_view) and of loo_i by channel."""
    import arviz as az

    from hf2ppl.infer.idata import channel_view

    m, idata = idata_multi
    assert set(idata.observed_data.data_vars) == {m.channel_site(c) for c in m.channels}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = az.loo(idata, pointwise=True)
        per = {c: az.loo(channel_view(idata, c)).elpd_loo for c in m.channels}
    by = whole.loo_i.groupby("channel").sum()
    for c in m.ir.channels:
        assert idata.posterior_predictive[m.channel_site(c.name)].shape == (2, 100, c.nbins)
        np.testing.assert_allclose(float(by.sel(channel=c.name)), per[c.name], rtol=1e-8)
    np.testing.assert_allclose(sum(per.values()), whole.elpd_loo, rtol=1e-8)


def test_seed_reproducible_and_cached(corr):
    from hf2ppl.infer._nuts import get_cache

    a = hf2ppl.sample(corr, chains=2, draws=100, warmup=100, seed=3, prior=False)
    n_cached = len(get_cache(corr))
    b = hf2ppl.sample(corr, chains=2, draws=100, warmup=100, seed=3, prior=False)
    c = hf2ppl.sample(corr, chains=2, draws=100, warmup=100, seed=4, prior=False)
    assert len(get_cache(corr)) == n_cached  # second call reuses the jitted sampler
    np.testing.assert_array_equal(a.posterior.mu.values, b.posterior.mu.values)
    assert not np.array_equal(a.posterior.mu.values, c.posterior.mu.values)


def test_parallel_chain_groups_run_the_same_chains(corr):
    """Chains split over host threads (padded to equal groups) follow the same streams as all chains vmap-ed:
    on a short run the draws agree to rounding (NUTS's trajectory choices amplify rounding only over long runs)."""
    from hf2ppl.infer._nuts import ChunkedSampler, get_layout

    lay = get_layout(corr)
    s = ChunkedSampler(lay, method="nuts", opts={})
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (3, lay.n))
    one = s.run(5, lay.init_x(), noise, warmup=15, draws=10, threads=1)
    two = s.run(5, lay.init_x(), noise, warmup=15, draws=10, threads=2)  # groups of 2: chains (0, 1) and (2, pad)
    assert one["x"].shape == two["x"].shape == (3, 10, lay.n)
    np.testing.assert_allclose(two["x"], one["x"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(two["n_steps"], one["n_steps"])
    assert len(s._compiled) == 2  # one executable per group shape (3 chains; 2 chains), none per thread


def test_chain_methods(corr):
    from hf2ppl.errors import ParameterError
    from hf2ppl.infer._nuts import chain_threads

    kw = dict(chains=2, draws=200, warmup=200, seed=2, predictive=False, log_likelihood=False, prior=False)
    par = hf2ppl.sample(corr, chain_method="parallel", **kw)
    np.testing.assert_array_equal(par.posterior.mu.values, hf2ppl.sample(corr, chain_method="parallel", **kw).posterior.mu.values)
    vec = hf2ppl.sample(corr, chain_method="vectorized", **kw)
    assert "vmap over chains" in vec.attrs["sampler"]
    assert par.posterior.mu.shape == vec.posterior.mu.shape == (2, 200)
    assert chain_threads(4, "vectorized") == 1 and 1 <= chain_threads(4, "parallel") <= 4 and chain_threads(1, "parallel") == 1
    with pytest.raises(ParameterError, match="chain_method"):
        hf2ppl.sample(corr, chain_method="pmap", **kw)


def test_bad_arguments(corr):
    from hf2ppl.errors import ParameterError

    with pytest.raises(ParameterError):
        hf2ppl.sample(corr, backend="stan")
    with pytest.raises(ParameterError):
        hf2ppl.sample(corr, method="mh")
    with pytest.raises(ParameterError):
        hf2ppl.sample(corr, draws=0)
    with pytest.raises(ParameterError):
        hf2ppl.sample(corr, draws=10, warmup=10, bogus_option=1)


def test_progress_auto_is_silent_under_pytest():
    from hf2ppl.infer._nuts import auto_progress

    assert auto_progress() is False


def test_progress_bar_runs(corr, capsys):
    idata = hf2ppl.sample(corr, chains=2, draws=50, warmup=50, seed=0, progress=True, prior=False)
    assert idata.posterior.mu.shape == (2, 50)


def test_pymc_models_are_dispatched(monkeypatch):
    calls = {}

    def sample_pymc(model, **kw):
        calls.update(kw, model=model)
        return "idata"

    monkeypatch.setitem(sys.modules, "hf2ppl.infer.pymc_sampling", types.SimpleNamespace(sample_pymc=sample_pymc))
    fake = types.SimpleNamespace(target="pymc")
    out = hf2ppl.sample(fake, chains=3, draws=7, warmup=5, seed=2, nuts_sampler="numpyro", target_accept=0.9)
    assert out == "idata"
    assert calls["model"] is fake
    assert (calls["chains"], calls["draws"], calls["warmup"], calls["seed"], calls["nuts_sampler"]) == (3, 7, 5, 2, "numpyro")
    assert calls["target_accept"] == 0.9 and "progress" in calls


# ------------------------------------------------------------------ backends agree
def _agree(a, b, names, k=5.0, rhat=1.01):
    import arviz as az

    sa, sb = az.summary(a, var_names=names), az.summary(b, var_names=names)
    for row in sa.index:
        d = abs(sa.loc[row, "mean"] - sb.loc[row, "mean"])
        err = np.hypot(sa.loc[row, "mcse_mean"], sb.loc[row, "mcse_mean"])
        assert d < k * err + 1e-3, (row, sa.loc[row, "mean"], sb.loc[row, "mean"], err)
        # widths agree within their Monte Carlo errors (a fixed 6% cut was ~2 sigma for short HMC chains)
        dsd = abs(sa.loc[row, "sd"] - sb.loc[row, "sd"])
        esd = np.hypot(sa.loc[row, "mcse_sd"], sb.loc[row, "mcse_sd"])
        assert dsd < k * esd + 0.01 * sb.loc[row, "sd"], (row, sa.loc[row, "sd"], sb.loc[row, "sd"], esd)
        assert sa.loc[row, "r_hat"] < rhat and sb.loc[row, "r_hat"] < rhat


@pytest.fixture(scope="module")
def shapesys():
    return hf2ppl.compile(ws("hello_world_shapesys.json"))


@pytest.mark.parametrize("which", ["corr", "shapesys"])
def test_backends_agree(which, request):
    m = request.getfixturevalue(which)
    kw = dict(chains=4, draws=2000, warmup=500, seed=11, prior=False, predictive=False, log_likelihood=False)
    a = hf2ppl.sample(m, backend="blackjax", **kw)
    b = hf2ppl.sample(m, backend="numpyro", **kw)
    _agree(a, b, [p.name for p in m.free_parameters])
    # quantiles of the POI within MC error too
    qa = np.quantile(a.posterior[m.poi_name].values, [0.16, 0.5, 0.84])
    qb = np.quantile(b.posterior[m.poi_name].values, [0.16, 0.5, 0.84])
    np.testing.assert_allclose(qa, qb, atol=0.05 * float(a.posterior[m.poi_name].std()) * 4)


def test_hmc_agrees_with_nuts(corr):
    kw = dict(chains=4, draws=2000, warmup=500, seed=5, prior=False, predictive=False, log_likelihood=False)
    a = hf2ppl.sample(corr, method="nuts", **kw)
    b = hf2ppl.sample(corr, method="hmc", num_steps=8, **kw)
    assert "tree_depth" not in b.sample_stats
    _agree(a, b, ["mu", "correlated_bkg_uncertainty"], rhat=1.05)


# ------------------------------------------------------------------ brute-force grid for 2_bin_corr
def neg_logpost_np(spec: dict, mu, alpha, sig_scale: float = 1.0):
    """-log posterior (up to a constant) of 2_bin_corr with mu ~ U(0, 5), alpha ~ N(0, 1), numpy only.

    lam_b = mu * s_b + b_b + histosys(alpha) (pyhf code 0: piecewise linear), n_b ~ Poisson(lam_b).
    """
    from scipy.special import gammaln

    ch = spec["channels"][0]
    s = np.array(ch["samples"][0]["data"]) * sig_scale
    bk = ch["samples"][1]
    b = np.array(bk["data"])
    hi = np.array(bk["modifiers"][0]["data"]["hi_data"])
    lo = np.array(bk["modifiers"][0]["data"]["lo_data"])
    n = np.array(spec["observations"][0]["data"])
    mu, alpha = np.asarray(mu)[..., None], np.asarray(alpha)[..., None]
    delta = np.where(alpha > 0, alpha * (hi - b), alpha * (b - lo))
    lam = np.clip(mu * s + b + delta, 1e-300, None)
    return -(np.sum(n * np.log(lam) - lam - gammaln(n + 1), axis=-1) - 0.5 * alpha[..., 0] ** 2)


def grid_posterior_mu(spec: dict, mu_max: float = 5.0, sig_scale: float = 1.0):
    """Marginal posterior CDF of mu on a grid (see :func:`neg_logpost_np`)."""
    mu = np.linspace(0, mu_max, 2001)
    al = np.linspace(-7, 7, 1401)
    M, A = np.meshgrid(mu, al, indexing="ij")
    logp = -neg_logpost_np(spec, M, A, sig_scale)
    p = np.exp(logp - logp.max())
    marg = integrate.trapezoid(p, al, axis=1)
    cdf = integrate.cumulative_trapezoid(marg, mu, initial=0.0)
    cdf /= cdf[-1]
    return mu, cdf


def test_2bin_corr_matches_grid_integration(corr):
    spec = ws("2_bin_corr.json")
    mu, cdf = grid_posterior_mu(spec)
    ref = np.interp([0.16, 0.5, 0.84], cdf, mu)
    idata = hf2ppl.sample(corr, chains=4, draws=10000, warmup=1000, seed=2, prior=False, predictive=False, log_likelihood=False)
    got = np.quantile(idata.posterior.mu.values, [0.16, 0.5, 0.84])
    np.testing.assert_allclose(got, ref, atol=0.02)
    # the tolerance has power: a 10% error in the signal yield moves the quantiles by more than it
    wrong = np.interp([0.16, 0.5, 0.84], *grid_posterior_mu(spec, sig_scale=1.1)[::-1])
    assert np.max(np.abs(wrong - ref)) > 0.04


# ------------------------------------------------------------------ conjugate model
def conjugate_ws(n_obs: int, b: float) -> dict:
    samples = [{"name": "signal", "data": [1.0], "modifiers": [{"name": "s", "type": "normfactor", "data": None}]}]
    if b > 0:
        samples.append({"name": "background", "data": [b], "modifiers": []})
    return {
        "channels": [{"name": "SR", "samples": samples}],
        "observations": [{"name": "SR", "data": [float(n_obs)]}],
        "measurements": [{"name": "m", "config": {"poi": "s", "parameters": [{"name": "s", "bounds": [[0.0, 1000.0]], "inits": [2.0]}]}}],
        "version": "1.0.0",
    }


def _thinned(idata, name, every=4):
    return idata.posterior[name].values[:, ::every].ravel()


@pytest.fixture(scope="module")
def conj0():
    return hf2ppl.compile(conjugate_ws(5, 0.0), priors={"s": P.Gamma(2.0, 0.5)})


@pytest.mark.parametrize("backend", ["blackjax", "numpyro"])
def test_conjugate_gamma_posterior_exact(conj0, backend):
    a, r, n = 2.0, 0.5, 5
    idata = hf2ppl.sample(conj0, chains=4, draws=2000, warmup=500, seed=0, prior=False, backend=backend)
    x = _thinned(idata, "s")
    post = stats.gamma(a + n, scale=1.0 / (r + 1.0))
    assert stats.kstest(x, post.cdf).pvalue > 0.01
    # power check: the prior alone (or a posterior that forgot the data) is rejected
    assert stats.kstest(x, stats.gamma(a + n - 2, scale=1.0 / (r + 1.0)).cdf).pvalue < 0.01


@pytest.mark.parametrize("backend", ["blackjax", "numpyro"])
def test_conjugate_known_background_numerical_cdf(backend):
    a, r, n, b = 3.0, 0.4, 9, 4.0
    m = hf2ppl.compile(conjugate_ws(n, b), priors={"s": P.Gamma(a, r)})
    idata = hf2ppl.sample(m, chains=4, draws=2000, warmup=500, seed=1, prior=False, backend=backend)
    x = _thinned(idata, "s")
    # p(s | n) ∝ s^(a-1) e^{-r s} (s + b)^n e^{-(s + b)}
    grid = np.linspace(0, 60, 60001)
    logp = (a - 1) * np.log(np.clip(grid, 1e-300, None)) - r * grid + n * np.log(grid + b) - grid
    p = np.exp(logp - logp.max())
    cdf = integrate.cumulative_trapezoid(p, grid, initial=0.0)
    cdf /= cdf[-1]
    assert stats.kstest(x, lambda v: np.interp(v, grid, cdf)).pvalue > 0.01
    # power: ignoring the background is rejected
    assert stats.kstest(x, stats.gamma(a + n, scale=1.0 / (r + 1.0)).cdf).pvalue < 0.01


def test_prior_group_matches_prior(conj0):
    a, r = 2.0, 0.5
    idata = hf2ppl.sample(conj0, chains=2, draws=1000, warmup=100, seed=0)
    x = idata.prior.s.values.ravel()
    assert x.size == 1000
    assert stats.kstest(x, stats.gamma(a, scale=1 / r).cdf).pvalue > 0.01
    lam = x  # signal yield 1, no background
    pp = idata.prior_predictive.SR.values.ravel()
    assert abs(pp.mean() - lam.mean()) < 4 * np.sqrt(lam.mean() + lam.var()) / np.sqrt(pp.size) * 2


# ------------------------------------------------------------------ MAP and SVI
def _pyhf_hesse(model, data, best):
    """Finite-difference covariance of -2 log L from pyhf's numpy logpdf (independent of JAX)."""
    import pyhf

    pyhf.set_backend("numpy")

    def nll(x):
        return -float(model.logpdf(x, data)[0])

    k = len(best)
    H = np.zeros((k, k))
    h = 1e-4
    for i in range(k):
        for j in range(k):
            e_i, e_j = np.eye(k)[i] * h, np.eye(k)[j] * h
            H[i, j] = (nll(best + e_i + e_j) - nll(best + e_i - e_j) - nll(best - e_i + e_j) + nll(best - e_i - e_j)) / (4 * h * h)
    return np.linalg.inv(H)


@pytest.mark.parametrize("name", ["2_bin_corr.json", "litehf_sample_staterror_shapesys.json"])
def test_map_equals_pyhf_mle_in_aux_mode(name):
    import pyhf

    pyhf.set_backend("numpy")
    spec = ws(name)
    pws = pyhf.Workspace(spec)
    model = pws.model()
    data = pws.data(model)
    best = np.asarray(pyhf.infer.mle.fit(data, model))
    m = hf2ppl.compile(spec, constraints="aux")
    r = hf2ppl.map_estimate(m)
    assert r.converged
    assert m.par_names == list(model.config.par_names)
    np.testing.assert_allclose(r.bestfit, best, atol=2e-4, rtol=1e-3)
    cov = _pyhf_hesse(model, data, best)
    np.testing.assert_allclose(np.sqrt(np.diag(r.covariance)), np.sqrt(np.diag(cov)), rtol=2e-3)
    np.testing.assert_allclose(r.logdensity, float(model.logpdf(best, data)[0]), atol=1e-6)


def test_map_prior_mode_is_posterior_mode(corr):
    from scipy.optimize import minimize

    r = hf2ppl.map_estimate(corr)
    spec = ws("2_bin_corr.json")
    ref = minimize(lambda v: float(neg_logpost_np(spec, v[0], v[1])), [1.0, 0.3], method="L-BFGS-B",
                   bounds=[(0, 5), (-5, 5)], options={"ftol": 1e-14, "gtol": 1e-10}).x
    np.testing.assert_allclose([r["mu"], r["correlated_bkg_uncertainty"]], ref, atol=2e-4)
    # Laplace: inverse Hessian of the numpy formula by finite differences
    h = 1e-4
    f = lambda a, b: float(neg_logpost_np(spec, a, b))  # noqa: E731
    m0, a0 = ref
    H = np.array([[(f(m0 + h, a0) - 2 * f(m0, a0) + f(m0 - h, a0)) / h**2,
                   (f(m0 + h, a0 + h) - f(m0 + h, a0 - h) - f(m0 - h, a0 + h) + f(m0 - h, a0 - h)) / (4 * h * h)],
                  [0.0, (f(m0, a0 + h) - 2 * f(m0, a0) + f(m0, a0 - h)) / h**2]])
    H[1, 0] = H[0, 1]
    sd = np.sqrt(np.diag(np.linalg.inv(H)))
    np.testing.assert_allclose([r.uncertainties["mu"], r.uncertainties["correlated_bkg_uncertainty"]], sd, rtol=1e-3)


@pytest.mark.parametrize("guide", ["normal", "mvn", "lowrank"])
def test_svi_approximates_posterior(corr, guide):
    idata = hf2ppl.svi(corr, guide=guide, steps=3000, seed=0, draws=2000)
    assert "svi" in idata.groups() and idata.svi.loss.shape == (3000,)
    loss = idata.svi.loss.values
    assert loss[-200:].mean() < loss[:50].mean()
    assert idata.posterior.mu.shape == (1, 2000)
    spec = ws("2_bin_corr.json")
    mu, cdf = grid_posterior_mu(spec)
    ref_median = np.interp(0.5, cdf, mu)
    assert abs(np.median(idata.posterior.mu.values) - ref_median) < 0.1
    assert "posterior_predictive" in idata.groups() and "log_likelihood" in idata.groups()


def test_aux_mode_sampling_has_proper_prior_group():
    m = hf2ppl.compile(ws("hello_world_shapesys.json"), constraints="aux")
    idata = hf2ppl.sample(m, chains=2, draws=200, warmup=200, seed=0)
    assert np.all(np.isfinite(idata.prior.uncorr_bkguncrt.values))
    assert idata.posterior.attrs["constraints"] == "aux"
    lo, hi = m.free_parameters[0].bounds[0]
    assert np.all((idata.prior.mu.values >= lo) & (idata.prior.mu.values <= hi))


def test_copy_of_spec_untouched():
    spec = ws("2_bin_corr.json")
    before = copy.deepcopy(spec)
    hf2ppl.map_estimate(hf2ppl.compile(spec))
    assert spec == before


@pytest.mark.parametrize("name", ["2_bin_corr.json", "all_modifiers_2channel.json"])
def test_layout_bijections_match_numpyro_biject_to(name):
    import jax.numpy as jnp
    from numpyro.distributions.transforms import biject_to

    from hf2ppl.infer._nuts import get_layout, stan_schedule

    m = hf2ppl.compile(ws(name), priors={"mu": P.LogNormal(0.0, 1.0)})
    lay = get_layout(m)
    z = np.random.default_rng(0).normal(size=lay.n) * 3
    x, ld = lay.constrain(jnp.asarray(z))
    dists = m.site_distributions()
    xs, ref_ld = [], 0.0
    if name == "all_modifiers_2channel.json":  # staterror/lumi/shapesys are narrow: sampled standardised
        assert {"lumi", "staterror_CR"} <= set(lay.standardised), lay.standardised
    zz = lay.shift + lay.scale * z  # the standardised coordinates' affine map, then NumPyro's bijection
    ref_ld = float(np.sum(np.log(lay.scale)))
    for site, scalar, n, off in lay.sites:
        t = biject_to(dists[site].support)
        zi = jnp.asarray(zz[off] if scalar else zz[off:off + n])
        xi = t(zi)
        ref_ld += float(jnp.sum(t.log_abs_det_jacobian(zi, xi)))
        xs.append(np.reshape(np.asarray(xi), -1))
    np.testing.assert_allclose(np.asarray(x), np.concatenate(xs), rtol=1e-12)
    np.testing.assert_allclose(float(ld), ref_ld, rtol=1e-12)
    np.testing.assert_allclose(lay.unconstrain(np.asarray(x)), z, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(lay.full(x)), np.asarray(m.from_free(x)))
    # Stan's warmup schedule, reimplemented in numpy, is BlackJAX's
    from blackjax.adaptation.staged_adaptation import build_schedule

    for w in (10, 20, 150, 1000, 1234):
        np.testing.assert_array_equal(stan_schedule(w), np.asarray(build_schedule(w)).reshape(w, 2))


def test_fixed_nuisance_parameter_matches_1d_grid():
    """A parameter fixed in the measurement stays at its init: posterior of mu from a 1-D grid."""
    spec = ws("2_bin_corr.json")
    spec["measurements"][0]["config"]["parameters"] = [{"name": "correlated_bkg_uncertainty", "fixed": True, "inits": [0.5]}]
    m = hf2ppl.compile(spec, priors={"mu": P.Uniform(0, 5)})
    assert [p.name for p in m.free_parameters] == ["mu"]
    idata = hf2ppl.sample(m, chains=4, draws=3000, warmup=500, seed=3, prior=False)
    assert list(idata.posterior.data_vars) == ["mu"]
    mu = np.linspace(0, 5, 20001)
    logp = -neg_logpost_np(ws("2_bin_corr.json"), mu, np.full_like(mu, 0.5))
    cdf = integrate.cumulative_trapezoid(np.exp(logp - logp.max()), mu, initial=0.0)
    ref = np.interp([0.16, 0.5, 0.84], cdf / cdf[-1], mu)
    np.testing.assert_allclose(np.quantile(idata.posterior.mu.values, [0.16, 0.5, 0.84]), ref, atol=0.025)


def test_float32_model_samples():
    m = hf2ppl.compile(ws("hello_world_shapesys.json"), dtype="float32")
    idata = hf2ppl.sample(m, chains=2, draws=300, warmup=300, seed=0)
    assert np.all(np.isfinite(idata.posterior.mu.values))
    assert int(idata.sample_stats.diverging.sum()) == 0
