"""The InferenceData contract of docs/bayes.md, enforced on every sampler path.

Every path (NumPyro target: backend blackjax and numpyro, SVI; PyMC target: nuts_sampler pymc,
numpyro, blackjax, and nutpie when it is installed — ``importlib.util.find_spec("nutpie")``) starts
on the shared workspaces, including the real staus likelihood (120 parameters), and returns
InferenceData that passes one check: group and variable names, dims/coords named after the
workspace, dtypes, the whole-model log-likelihood (recomputed independently from the model's
expected counts with scipy's Poisson formula), top-level attrs; then ``az.plot_ppc``, ``az.loo``,
``az.compare`` and ``az.plot_trace`` run on it.

Test time is scarce (each path's first call compiles a sampler: 3-30 s): the start-up of every path is
checked on every workspace and several seeds without sampling (the log density and gradient at the
starting points), the full contract on tiny runs (2 chains × 100 draws after 100 warmup steps) of
each path on the workspaces that broke it, with different seeds. ``HF2PPL_CONTRACT=all`` runs the whole
matrix instead: every path on every shared workspace, the real ones (staus, ewk2L) included, with the seed
varying along the workspaces.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import pytest
from conftest import WORKSPACES
from scipy.special import gammaln, xlogy

import hf2ppl
from hf2ppl.infer.diagnostics import PosteriorWarning
from hf2ppl.infer.idata import component_labels, count_dtype
from hf2ppl.targets.pymc import _support

SMALL = sorted(p.name for p in WORKSPACES.glob("*.json"))
REAL = "real/staus_SUSY-2018-04_BkgOnly.json"
RUN = dict(chains=2, draws=100, warmup=100)

_MODELS: dict = {}


def model(name: str, target: str = "numpyro"):
    key = (name, target)
    if key not in _MODELS:
        kw = {"poi_name": None} if name.startswith("real/") else {}
        _MODELS[key] = hf2ppl.compile(str(WORKSPACES / name), target=target, **kw)
    return _MODELS[key]


def run(path: str, name: str, seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)  # tiny runs: R-hat/ESS warnings are expected here
        warnings.simplefilter("ignore", FutureWarning)
        if path == "svi":
            m = model(name)
            return m, hf2ppl.svi(m, steps=400, draws=200, seed=seed)
        if path.startswith("pymc"):
            m = model(name, "pymc")
            return m, hf2ppl.sample(m, seed=seed, nuts_sampler=path.split(":")[1], **RUN)
        m = model(name)
        return m, hf2ppl.sample(m, seed=seed, backend=path, **RUN)


def check_contract(m, idata, path: str) -> None:
    mcmc = path != "svi"
    groups = set(idata.groups())
    need = {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data"}
    need |= {"sample_stats", "prior", "prior_predictive"} if mcmc else {"svi"}
    assert need <= groups, (need - groups)
    # posterior / prior: one float variable per free set, dims <set>_bin with the workspace's labels
    post = idata.posterior
    C, D = post.sizes["chain"], post.sizes["draw"]
    assert set(post.data_vars) == {p.name for p in m.free_parameters}
    for g in ["posterior"] + (["prior"] if mcmc else []):
        ds = idata[g]
        for p in m.free_parameters:
            da = ds[p.name]
            assert np.issubdtype(da.dtype, np.floating) and np.all(np.isfinite(da.values)), (g, p.name)
            if p.is_scalar:
                assert da.dims == ("chain", "draw"), (g, p.name, da.dims)
            else:
                assert da.dims == ("chain", "draw", p.dim), (g, p.name, da.dims)
                assert [str(v) for v in da.coords[p.dim].values] == component_labels(m, p), (g, p.name)
                assert all("[" in str(v) for v in da.coords[p.dim].values)  # "SR[0]", never a bare bin number
            if g == "posterior":  # inside the prior's support: the bounds for Uniform/flat priors, x > 0 for Gamma,
                # none for Normal (constraints="prior" documents staterror/lumi/normsys as Normal(a, sigma) and shapesys
                # as Gamma; the workspace's bounds are the fit's: ewk2L's staterror of sigma 0.98 has draws below 0)
                _kind, lo, hi = _support(m.priors[p.name], p.n_free)
                v = da.values.reshape(C * D, -1)
                assert np.all((v >= lo - 1e-12) & (v <= hi + 1e-12)), (p.name, "outside its prior's support")
    # counts: one variable per channel, observations and predictions of one dtype
    dt = count_dtype(m)
    sites = [m.channel_site(c) for c in m.channels]
    assert set(idata.observed_data.data_vars) == set(sites)
    for c in m.ir.channels:
        site, dim = m.channel_site(c.name), f"{c.name}_bin"
        obs = idata.observed_data[site]
        assert obs.dims == (dim,) and obs.dtype == dt, (site, obs.dims, obs.dtype)
        np.testing.assert_array_equal(obs.coords[dim].values, np.arange(c.nbins))
        np.testing.assert_allclose(obs.values, m.data[c.name])
        for g in ["posterior_predictive"] + (["prior_predictive"] if mcmc else []):
            pp = idata[g][site]
            assert pp.dims == ("chain", "draw", dim) and pp.dtype == dt, (g, site, pp.dims, pp.dtype)
            assert np.all(pp.values >= 0)
        nom = idata.constant_data[f"nominal_{c.name}"]
        assert nom.dims == ("sample", dim) and list(nom.coords["sample"].values) == list(m.ir.samples)
    assert set(idata.posterior_predictive.data_vars) == set(sites)
    # log_likelihood: ONE whole-model variable over all bins, == Poisson of the expected counts
    ll = idata.log_likelihood
    assert list(ll.data_vars) == ["main"]
    da = ll["main"]
    assert da.dims == ("chain", "draw", "main_bin") and da.shape == (C, D, m.ir.nbins) and da.dtype == np.float64
    assert list(da.coords["main_bin"].values) == [f"{c.name}[{i}]" for c in m.ir.channels for i in range(c.nbins)]
    assert list(da.coords["channel"].values) == [c.name for c in m.ir.channels for _ in range(c.nbins)]
    d = D // 2
    lam = np.asarray(m.expected_data({p.name: post[p.name].values[C - 1, d] for p in m.free_parameters}, include_auxdata=False))
    n = m.ir.observed
    np.testing.assert_allclose(da.values[C - 1, d], xlogy(n, lam) - lam - gammaln(n + 1), rtol=1e-8, atol=1e-10)
    if mcmc:
        ss = idata.sample_stats
        assert ss["diverging"].dtype == bool and ss["diverging"].dims == ("chain", "draw")
        for k in ("lp", "step_size", "acceptance_rate", "tree_depth"):
            assert ss[k].dims == ("chain", "draw"), k
        assert np.all(np.isfinite(ss["lp"].values))
    # attrs at the top level (and on the groups)
    for attrs in (idata.attrs, post.attrs):
        assert {"hf2ppl_version", "target", "constraints", "sampler", "created_at"} <= set(attrs), attrs
    assert idata.attrs["target"] == m.target


def run_arviz(idata) -> None:
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings of 200 draws
        loo = az.loo(idata)
        assert np.isfinite(loo.elpd_loo)
        cmp = az.compare({"a": idata, "b": idata})
        assert len(cmp) == 2
        az.plot_ppc(idata, num_pp_samples=10)
        az.plot_trace(idata, var_names=list(idata.posterior.data_vars)[:3])
    plt.close("all")


# the full contract on the workspaces that broke a path (lumi/staterror: NumPyro's init; non-integer
# data and 2-bin channels: plot_ppc) and on one of each modifier structure; every path at least once,
# the costly ones (a fresh compile per call: numpyro's MCMC, pm.sample with JAX) on the smallest models
CASES = [("blackjax", "2_bin_corr.json", 0), ("blackjax", "hello_world_shapesys.json", 1), ("blackjax", "litehf_sample_lumi.json", 2),
         ("blackjax", "all_modifiers_2channel.json", 0), ("blackjax", "SRee_SRmm_SRem_3channel.json", 1), ("blackjax", REAL, 0),
         ("numpyro", "litehf_sample_lumi.json", 0), ("numpyro", "litehf_sample_lumi.json", 1),
         ("svi", "hello_world_shapesys.json", 1),
         ("pymc:pymc", "all_modifiers_2channel.json", 0), ("pymc:numpyro", "litehf_sample_lumi.json", 2),
         ("pymc:blackjax", "hello_world_shapesys.json", 0)]
if importlib.util.find_spec("nutpie") is not None:  # optional dependency (pip install hf2ppl[nutpie])
    CASES += [("pymc:nutpie", "all_modifiers_2channel.json", 0)]

# HF2PPL_CONTRACT=all: the whole matrix, every path on every shared workspace (real ones included), the seed
# varying along the workspaces (~15-25 min with two workers; the default run above is its rotation)
PATHS = ["blackjax", "numpyro", "svi", "pymc:pymc", "pymc:numpyro", "pymc:blackjax"] + (
    ["pymc:nutpie"] if importlib.util.find_spec("nutpie") is not None else [])
if os.environ.get("HF2PPL_CONTRACT", "").strip().lower() == "all":
    ALL = SMALL + sorted(f"real/{p.name}" for p in (WORKSPACES / "real").glob("*BkgOnly.json"))
    CASES = [(path, name, (i + j) % 4) for i, name in enumerate(ALL) for j, path in enumerate(PATHS)]


@pytest.mark.parametrize("name", SMALL + sorted(f"real/{p.name}" for p in (WORKSPACES / "real").glob("*BkgOnly.json")))
def test_every_path_starts_inside_the_support(name):
    """Every workspace, several seeds: the points every sampler path starts from (the NumPyro target's
    jittered inits in standardised coordinates — blackjax, numpyro, SVI's guide at jitter 0 — and the
    PyMC samplers' initvals) are inside the bounds with a finite log density and gradient."""
    import jax.numpy as jnp

    from hf2ppl.infer._nuts import get_cache, get_layout, safe_noise
    from hf2ppl.infer.pymc_sampling import chain_inits

    for constraints in ("prior",) if name.startswith("real/") else ("prior", "aux"):  # real: ~10 s per mode
        kw = {"poi_name": None} if name.startswith("real/") else {}
        m = model(name) if constraints == "prior" else hf2ppl.compile(str(WORKSPACES / name), constraints="aux", **kw)
        lay = get_layout(m)
        lo, hi = np.asarray(m.ir.bounds)[m._free].T
        for seed in range(4):
            rng = np.random.default_rng([seed, 7])
            x0 = lay.init_x()
            raw = rng.uniform(-0.5, 0.5, (4, lay.n))
            noise = safe_noise(lay, x0, raw)  # as hf2ppl.sample does
            if name.startswith("real/ewk2L") and constraints == "prior" and seed == 1:
                assert not np.array_equal(noise, raw)  # this raw jitter makes a normfactor (bounds [-5, 5]) negative
            u0 = lay.unconstrain(x0) + noise
            v, g = get_cache(m)["start_vg"](jnp.asarray(u0))
            assert np.all(np.isfinite(np.asarray(v))) and np.all(np.isfinite(np.asarray(g))), (name, constraints, seed)
            x = np.asarray(lay.constrain_only(jnp.asarray(u0)))
            assert np.all((x >= lo) & (x <= hi)), (name, constraints, seed)
            for start in chain_inits(m, 2, seed):  # the PyMC path's initvals (same rule, constrained values)
                xs = np.asarray(lay.join({k: np.asarray(vv) for k, vv in start.items()}))
                assert np.all((xs >= lo) & (xs <= hi))
                assert np.isfinite(float(m.logdensity(start))), (name, constraints, seed, start)


@pytest.mark.parametrize("path,name,seed", CASES, ids=[f"{p}-{n.removesuffix('.json')}-s{s}" for p, n, s in CASES])
def test_contract(path, name, seed):
    m, idata = run(path, name, seed)
    check_contract(m, idata, path)
    run_arviz(idata)
    if path.startswith("pymc"):
        assert path.split(":")[1] in idata.attrs["sampler"]


def test_contract_check_can_fail():
    """The check rejects what the issue found: integer predictions beside float observations, per-channel
    log-likelihood variables, bare shapefactor coordinates, empty top-level attrs."""
    import xarray as xr

    m, idata = run("blackjax", "SRee_SRmm_SRem_3channel.json", 0)
    check_contract(m, idata, "blackjax")
    bad = idata.copy()
    bad.posterior_predictive = bad.posterior_predictive.astype(np.int64)
    with pytest.raises(AssertionError):
        check_contract(m, bad, "blackjax")
    bad = idata.copy()
    site = m.channel_site(m.channels[0])
    bad.log_likelihood = bad.log_likelihood.assign({site: bad.log_likelihood["main"][..., :1]})
    with pytest.raises(AssertionError):
        check_contract(m, bad, "blackjax")
    bad = idata.copy()
    bad.attrs = {}
    with pytest.raises(AssertionError):
        check_contract(m, bad, "blackjax")
    m2, idata2 = run("blackjax", "all_modifiers_2channel.json", 0)
    bad = idata2.copy()
    bad.posterior = bad.posterior.assign_coords(shape_cr_bin=xr.DataArray(["0", "1", "2"], dims="shape_cr_bin"))
    with pytest.raises(AssertionError):
        check_contract(m2, bad, "blackjax")
