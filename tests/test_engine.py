"""The frequentist engine at the edges (issue 8): the EDM stopping rule, multi-start and the multimodal
warning (checked against a brute-force scan), empty and zero-rate bins, zero-signal limits, POI-less
models, level and bounds checks. References: pyhf 0.7 (tight scipy fits) or brute force / analytic answers.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings

import numpy as np
import pytest
from conftest import WORKSPACES

import hf2ppl
from hf2ppl.errors import FitError, ParameterError
from hf2ppl.infer.frequentist import FitWarning, MultimodalWarning

pyhf = pytest.importorskip("pyhf")
logging.getLogger("pyhf").setLevel(logging.ERROR)


pytestmark = pytest.mark.usefixtures("tight_pyhf")  # conftest.py


def _ws(channels: list[tuple[str, list[dict], list[float]]], poi: str = "mu", parameters: list | None = None) -> dict:
    return {
        "channels": [{"name": n, "samples": s} for n, s, _ in channels],
        "observations": [{"name": n, "data": d} for n, _, d in channels],
        "measurements": [{"name": "meas", "config": {"poi": poi, "parameters": parameters or []}}],
        "version": "1.0.0",
    }


def _sig(data, name="signal"):
    return {"name": name, "data": data, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}


def _bkg(data, histosys=None, name="background"):
    mods = [] if histosys is None else [{"name": "alpha", "type": "histosys", "data": {"hi_data": histosys[0], "lo_data": histosys[1]}}]
    return {"name": name, "data": data, "modifiers": mods}


# ---------------------------------------------------------------------------------------------- bimodal
def _bimodal_ws() -> dict:
    """Two channels share one histosys whose templates pull in opposite directions: channel A rises only for
    alpha > 0, channel B only for alpha < 0, and both see an excess, so the likelihood has one minimum at
    alpha > 0 and one at alpha < 0 (the alpha < 0 one deeper: B's excess is larger)."""
    return _ws([
        ("A", [_bkg([100.0], ([160.0], [100.0]))], [150.0]),
        ("B", [_bkg([100.0], ([100.0], [160.0]))], [158.0]),
        ("C", [_sig([10.0]), _bkg([50.0])], [58.0]),
    ])


def _brute_force_nll(ws: dict, mu_fixed: float | None = None):
    """min over a fine (alpha, mu) grid of pyhf's -logpdf, then refined with a local scipy fit from the best cell."""
    from scipy.optimize import minimize

    w = pyhf.Workspace(ws)
    model = w.model()
    data = np.asarray(w.data(model))
    ia, im = model.config.par_map["alpha"]["slice"].start, model.config.par_map["mu"]["slice"].start

    def nll(a, mu):
        x = np.zeros(2)
        x[ia], x[im] = a, mu
        return -float(model.logpdf(x, data)[0])

    alphas = np.linspace(-4.0, 4.0, 161)
    mus = np.array([mu_fixed]) if mu_fixed is not None else np.linspace(0.0, 10.0, 101)
    grid = np.array([[nll(a, m) for m in mus] for a in alphas])
    i, j = np.unravel_index(np.argmin(grid), grid.shape)
    if mu_fixed is None:
        res = minimize(lambda v: nll(v[0], v[1]), [alphas[i], mus[j]], bounds=[(-5, 5), (0, 10)], method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-10})
    else:
        res = minimize(lambda v: nll(v[0], mu_fixed), [alphas[i]], bounds=[(-5, 5)], method="L-BFGS-B", options={"ftol": 1e-14, "gtol": 1e-10})
    return min(res.fun, grid.min()), res.x, alphas, grid


def test_bimodal_likelihood_global_minimum_and_warning():
    ws = _bimodal_ws()
    best, xbest, alphas, grid = _brute_force_nll(ws)
    # the brute-force profile along alpha really has two separated minima
    prof = grid.min(axis=1)
    loc = [k for k in range(1, len(prof) - 1) if prof[k] < prof[k - 1] and prof[k] <= prof[k + 1]]
    assert len(loc) >= 2 and alphas[loc[0]] < 0 < alphas[loc[-1]]
    m = hf2ppl.compile(ws, constraints="aux")
    with pytest.warns(MultimodalWarning, match="multimodal"):
        r = hf2ppl.fit(m)
    assert r.converged and r.multimodal and r.minima.size >= 1 and np.all(r.minima > 1e-3)
    assert r.nll <= best + 1e-7
    ia = m.par_names.index("alpha")
    assert r.x[ia] == pytest.approx(xbest[0], abs=1e-3) and r.x[ia] < 0
    # a single start from the suggested init (alpha = 0) may go either way; the multi-start answer never is worse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = hf2ppl.fit(m, starts=1)
    assert r.nll <= single.nll + 1e-12


def test_bimodal_test_statistic_uses_global_minima():
    ws = _bimodal_ws()
    free, *_ = _brute_force_nll(ws)
    fixed, *_ = _brute_force_nll(ws, mu_fixed=1.0)
    m = hf2ppl.compile(ws, constraints="aux")
    with pytest.warns(MultimodalWarning):
        t = float(hf2ppl.infer.frequentist.test_statistic(m, 1.0, test_stat="tmu"))
    assert t == pytest.approx(2.0 * (fixed - free), abs=1e-6)


def test_well_behaved_fit_is_silent_and_stops_early():
    m = hf2ppl.compile(WORKSPACES / "2_bin_corr.json", constraints="aux")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = hf2ppl.fit(m)
    assert r.converged and not r.multimodal and r.status == 0 and r.message.startswith("converged")
    assert 0 <= r.edm < 1e-10 and r.niter < 15
    # started at the minimum, the fit stops at once
    again = hf2ppl.fit(m, init=r.x, starts=1)
    assert again.niter <= 1 and again.converged


def test_converged_flag_is_the_edm_criterion():
    import jax.numpy as jnp

    from hf2ppl.infer._optimize import make_solver

    solve = make_solver(lambda x, a: jnp.sum(jnp.cosh(x - a)), maxiter=2)
    r = solve(jnp.full(3, 4.0), jnp.full(3, -10.0), jnp.full(3, 10.0), jnp.zeros(3), jnp.zeros(3))
    assert not bool(r.converged) and int(r.status) == 1 and float(r.edm) > 1e-10
    solve = make_solver(lambda x, a: jnp.sum(jnp.cosh(x - a)))
    r = solve(jnp.full(3, 4.0), jnp.full(3, -10.0), jnp.full(3, 10.0), jnp.zeros(3), jnp.asarray([1.0, 2.0, 20.0]))
    assert bool(r.converged) and int(r.status) == 0 and float(r.edm) < 1e-10
    assert float(r.x[2]) == 10.0  # at its bound exactly; the bound component does not enter the EDM
    # a start where the objective is not finite is reported as such
    solve = make_solver(lambda x, a: jnp.sum(jnp.log(x - a)))
    r = solve(jnp.full(2, -1.0), jnp.full(2, -5.0), jnp.full(2, 5.0), jnp.zeros(2), jnp.zeros(2))
    assert int(r.status) == 3 and not bool(r.converged)


def test_multistart_retires_extra_starts_in_the_primary_basin_only():
    """solve.multi: an extra start whose Newton target is the primary's minimum stops early (status 4, not
    converged, fewer iterations than alone); one heading for another, deeper minimum runs to it; without a
    converged primary nothing is retired."""
    import jax.numpy as jnp

    from hf2ppl.infer._optimize import STATUS_MESSAGES, make_solver

    # a double well in x[0] (minima near -1 and +1, the one at -1 deeper by ~0.2) times a convex part in x[1:]
    def f(x, a):
        return (x[0] ** 2 - 1.0) ** 2 + 0.1 * x[0] + jnp.sum(jnp.cosh(x[1:] - a))

    solve = make_solver(f)
    lo, hi, fx, a = jnp.full(3, -5.0), jnp.full(3, 5.0), jnp.zeros(3), jnp.asarray([0.5, -0.3])
    X0 = jnp.asarray([[1.5, 2.0, 2.0], [0.7, -2.0, 1.5], [-1.6, 1.0, 1.0]])
    r = solve.multi(X0, lo, hi, fx, jnp.asarray([100, 40, 40]), a)
    alone = solve(X0[1], lo, hi, fx, a)
    assert int(r.status[0]) == 0 and float(r.x[0, 0]) > 0  # primary: the shallower well
    assert int(r.status[1]) == 4 and not bool(r.converged[1]) and int(r.niter[1]) < int(alone.niter)
    assert float(r.fun[1]) >= float(r.fun[0]) and 4 in STATUS_MESSAGES
    assert int(r.status[2]) == 0 and float(r.x[2, 0]) < 0 and float(r.fun[2]) < float(r.fun[0]) - 0.1  # the deeper well
    # the primary capped before converging: no reference, nothing retired
    r = solve.multi(X0, lo, hi, fx, jnp.asarray([1, 40, 40]), a)
    assert not bool(r.converged[0]) and not np.any(np.asarray(r.status) == 4)


# ---------------------------------------------------------------------------------------------- empty bins
def _empty_bin_ws() -> dict:
    """A bin with zero expected rate in every sample and zero observed (common in real analyses), with a
    staterror and a histosys on the sample."""
    return _ws([("SR", [
        {"name": "signal", "data": [3.0, 0.0, 2.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [10.0, 0.0, 4.0], "modifiers": [
            {"name": "stat", "type": "staterror", "data": [1.0, 0.0, 0.5]},
            {"name": "alpha", "type": "histosys", "data": {"hi_data": [12.0, 0.0, 5.0], "lo_data": [8.0, 0.0, 3.0]}},
        ]},
    ], [12.0, 0.0, 3.0])])


def _negative_ws() -> dict:
    """A histosys whose down template reaches zero in a bin with no events (extrapolated past it: negative)."""
    return _ws([("SR", [
        {"name": "signal", "data": [3.0, 2.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [10.0, 4.0], "modifiers": [
            {"name": "alpha", "type": "histosys", "data": {"hi_data": [12.0, 6.0], "lo_data": [4.0, 0.0]}}]},
    ], [12.0, 0.0])])


def test_zero_rate_bins_fit_and_hypotest_like_pyhf():
    ws = _empty_bin_ws()
    w = pyhf.Workspace(ws)
    model = w.model()
    data = w.data(model)
    pars, twice = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    m = hf2ppl.compile(ws, constraints="aux")
    import jax

    g = jax.jit(jax.grad(m.logdensity_flat))(m.suggested_init())
    assert np.all(np.isfinite(np.asarray(g)))
    r = hf2ppl.fit(m)
    assert r.converged and np.all(np.isfinite(r.errors))
    assert 2 * r.nll <= float(twice) + 1e-6
    ours = hf2ppl.hypotest(m, 1.0, return_expected_set=True)
    ref = pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
    assert float(ours[0]) == pytest.approx(float(ref[0]), rel=1e-5)
    np.testing.assert_allclose(np.asarray(ours[1], float), np.asarray(ref[1], float), rtol=1e-5)


def test_zero_observed_negative_expectation_equals_pyhf():
    """n = 0 with a negative expected count: pyhf's log density is finite (-lambda); hf2ppl's is the same."""
    ws = _negative_ws()
    w = pyhf.Workspace(ws)
    model = w.model()
    data = w.data(model)
    m = hf2ppl.compile(ws, constraints="aux")
    x = np.asarray(model.config.suggested_init(), float)
    x[model.config.par_map["alpha"]["slice"]] = -1.7  # bin 2: 4 - 1.7 * 4 + 2 < 0 with 0 observed
    lam = np.asarray(model.expected_actualdata(x))
    assert lam[1] < 0 < lam[0]
    ref = float(model.logpdf(x, data)[0])
    assert np.isfinite(ref)
    assert float(m.logdensity_flat(x)) == pytest.approx(ref, rel=1e-12)
    # where events are observed, a negative expectation has zero likelihood (pyhf: NaN)
    y = x.copy()
    y[model.config.par_map["alpha"]["slice"]] = -3.0  # bin 1 too: 10 - 3 * 6 + 3 < 0 with 12 observed
    assert float(m.logdensity_flat(y)) == -np.inf


def test_start_point_with_zero_likelihood_is_a_clear_error():
    m = hf2ppl.compile(_negative_ws(), constraints="aux")
    with pytest.raises(FitError, match=r"SR\[0\]"):
        hf2ppl.fit(m, init={"alpha": -3.0}, starts=1)


# ---------------------------------------------------------------------------------------------- limits
def test_upper_limit_of_a_zero_signal_is_an_error():
    ws = json.loads((WORKSPACES / "2_bin_corr.json").read_text())
    ws["channels"][0]["samples"][0]["data"] = [0.0, 0.0]
    m = hf2ppl.compile(ws, constraints="aux")
    with pytest.raises(ParameterError, match="no upper limit exists"):
        hf2ppl.upper_limit(m)


@pytest.mark.parametrize("level", [95, 0.0, 1.0, -0.05, "x"])
def test_upper_limit_level_is_checked(level):
    m = hf2ppl.compile(WORKSPACES / "2_bin_corr.json", constraints="aux")
    with pytest.raises(ParameterError, match="level"):
        hf2ppl.upper_limit(m, level=level)


def test_limits_beyond_the_poi_bound_warn_or_raise():
    ws = json.loads((WORKSPACES / "2_bin_corr.json").read_text())
    ws["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": [[0.0, 0.5]], "inits": [0.2]}]
    m = hf2ppl.compile(ws, constraints="aux")
    with pytest.warns(FitWarning, match="outside the POI bounds"):
        obs, exp = hf2ppl.upper_limit(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obs2, exp2 = hf2ppl.upper_limit(m, outside_bounds="ignore")  # pyhf's behaviour: silent
    assert float(obs2) == pytest.approx(float(obs), rel=1e-10) and float(obs) > 0.5
    with pytest.raises(FitError, match="outside the POI bounds"):
        hf2ppl.upper_limit(m, outside_bounds="raise")
    # the limit beyond the bound is a real root of CLs = level (fits with the POI fixed past its bound, as pyhf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(hf2ppl.hypotest(m, float(obs))) == pytest.approx(0.05, rel=1e-5)


# ---------------------------------------------------------------------------------------------- POI-less
def test_poi_less_model_fits_like_pyhf_and_refuses_poi_calls():
    path = WORKSPACES / "real" / "staus_SUSY-2018-04_BkgOnly.json"
    ws = json.loads(path.read_text())
    m = hf2ppl.compile(ws, constraints="aux", poi_name=None)
    assert m.poi_name is None
    r = hf2ppl.fit(m)
    assert r.converged
    w = pyhf.Workspace(ws)
    model = w.model(poi_name=None)
    x = np.asarray(model.config.suggested_init(), float)
    assert float(m.logdensity_flat(x)) == pytest.approx(float(model.logpdf(x, w.data(model))[0]), rel=1e-12)
    # pyhf's minimum is no deeper than ours (tight pyhf fits of this workspace take minutes: compare the NLL there)
    assert -float(model.logpdf(r.x, w.data(model))[0]) == pytest.approx(r.nll, rel=1e-12)
    for call in (lambda: hf2ppl.hypotest(m, 1.0), lambda: hf2ppl.upper_limit(m), lambda: hf2ppl.profile(m, [0.0, 1.0])):
        with pytest.raises(ParameterError, match="parameter of interest"):
            call()
    ws2 = copy.deepcopy(ws)
    ws2["measurements"][0]["config"]["poi"] = ""
    assert hf2ppl.compile(ws2, constraints="aux").poi_name is None


@pytest.mark.parametrize("name", ["SRee_SRmm_SRem_3channel.json", "bimodal"])
def test_sequential_and_vmapped_problems_agree(name, monkeypatch):
    """The multi-start kernels run their problems one after the other on a CPU and as vmap lanes on an
    accelerator (``_engine.sequential_problems``): the same fits, hypotests and limits either way (the vmap
    path is what a GPU runs, checked here on the CPU)."""
    import importlib

    eng_mod = importlib.import_module("hf2ppl.infer.frequentist._engine")
    ws = _bimodal_ws() if name == "bimodal" else json.loads((WORKSPACES / name).read_text())
    out = {}
    for mode in ("sequential", "vmap"):
        monkeypatch.setenv("HF2PPL_PROBLEMS", mode)
        eng_mod._KERNELS.clear()
        m = hf2ppl.compile(ws, constraints="aux")
        assert eng_mod._kernels(m).sequential == (mode == "sequential")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = hf2ppl.fit(m)
            obs, exp = hf2ppl.hypotest(m, 1.0, return_expected_set=True)
            lim = hf2ppl.upper_limit(m, scan=np.linspace(0.1, 5.0, 7)) if name != "bimodal" else (obs, exp)
        out[mode] = (f.nll, f.x, obs, exp, lim)
    eng_mod._KERNELS.clear()
    a, b = out["sequential"], out["vmap"]
    assert a[0] == pytest.approx(b[0], abs=1e-9)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    np.testing.assert_allclose(np.r_[a[2], np.ravel(a[3])], np.r_[b[2], np.ravel(b[3])], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(np.ravel(np.concatenate([np.atleast_1d(a[4][0]), np.ravel(a[4][1])])),
                               np.ravel(np.concatenate([np.atleast_1d(b[4][0]), np.ravel(b[4][1])])), rtol=1e-7)


@pytest.mark.parametrize("name", ["SRee_SRmm_SRem_3channel.json", "bimodal"])
def test_threaded_and_sequential_calls_agree(name, monkeypatch):
    """On a CPU the problems of one multi-start call are spread over two threads (``_engine.fit_threads``: a
    hypotest's free and fixed-POI fits, a limit's fixed-POI fits, in two halves): the same fits, warnings,
    hypotests and limits as with ``HF2PPL_THREADS=1`` (one kernel call), start by start."""
    import importlib

    eng_mod = importlib.import_module("hf2ppl.infer.frequentist._engine")
    ws = _bimodal_ws() if name == "bimodal" else json.loads((WORKSPACES / name).read_text())
    m = hf2ppl.compile(ws, constraints="aux")
    if not eng_mod._kernels(m).sequential:
        pytest.skip("the problems are vmapped on this backend: no threads")
    out, calls = {}, []
    orig = eng_mod._Engine._call_multi

    def counted(self, *a, **kw):
        calls.append(1)
        return orig(self, *a, **kw)

    monkeypatch.setattr(eng_mod._Engine, "_call_multi", counted)
    ncalls = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("HF2PPL_THREADS", threads)
        assert eng_mod.fit_threads() == int(threads)
        calls.clear()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f = hf2ppl.fit(m)
            ncalls_fit = len(calls)
            obs, exp = hf2ppl.hypotest(m, 1.0, return_expected_set=True)
            lim = hf2ppl.upper_limit(m, scan=np.linspace(0.1, 5.0, 7)) if name != "bimodal" else (obs, exp)
        kinds = sorted({type(x.message).__name__ for x in w})
        out[threads] = (f, obs, exp, lim, kinds, ncalls_fit)
        ncalls[threads] = len(calls)
    a, b = out["1"], out["2"]
    assert a[5] == b[5] == 1  # a fit (one problem) is one call either way
    assert 2 * a[0].nll == pytest.approx(2 * b[0].nll, abs=1e-10)
    np.testing.assert_allclose(a[0].x, b[0].x, atol=1e-9)
    assert (a[0].multimodal, a[0].converged, a[0].status, a[0].niter) == (b[0].multimodal, b[0].converged, b[0].status, b[0].niter)
    np.testing.assert_allclose(a[0].minima, b[0].minima, atol=1e-9)
    np.testing.assert_allclose(np.r_[a[1], np.ravel(a[2])], np.r_[b[1], np.ravel(b[2])], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.ravel(np.concatenate([np.atleast_1d(a[3][0]), np.ravel(a[3][1])])),
                               np.ravel(np.concatenate([np.atleast_1d(b[3][0]), np.ravel(b[3][1])])), rtol=1e-10)
    assert a[4] == b[4]
    assert ncalls["2"] > ncalls["1"]  # the hypotest's (and the limit's) problems did go to two calls
    if name == "bimodal":
        assert b[0].multimodal and "MultimodalWarning" in b[4]
