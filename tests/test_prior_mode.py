"""prior mode: priors from constraints, MAP == pyhf MLE with flat free priors, NumPyro model consistency."""

from __future__ import annotations

import jax
import numpy as np
import pyhf
import pytest
import scipy.optimize
import scipy.stats
from conftest import CASE_IDS, CASES, pyhf_model_and_data
from numpyro.infer.util import log_density

import hf2ppl
from hf2ppl import priors as P


def _compile(case, **kw):
    case = dict(case)
    return hf2ppl.compile(case.pop("workspace"), **case, **kw)


def _maximize(m):
    """Maximise m.logdensity over the free components with SLSQP inside the bounds (as pyhf does)."""
    free = m._free
    b = m.suggested_bounds()[free]
    f = jax.jit(lambda z: -m.logdensity_flat(m.from_free(z)))
    g = jax.jit(jax.grad(lambda z: -m.logdensity_flat(m.from_free(z))))
    # rates can vanish on a bound (e.g. a normfactor at 0): keep the objective finite for the line search
    res = scipy.optimize.minimize(lambda z: min(float(f(z)), 1e30), m.suggested_init()[free], jac=lambda z: np.asarray(g(z)),
                                  method="SLSQP", bounds=b, options={"ftol": 1e-14, "maxiter": 20000})
    full = m.suggested_init()
    full[free] = res.x
    return full


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=CASE_IDS)
def test_map_with_flat_priors_equals_pyhf_mle(case):
    m0 = _compile(case)
    flat = {p.name: P.Flat() for p in m0.free_parameters if p.constraint is None}
    m = _compile(case, constraints="prior", priors=flat)
    ref_model, data = pyhf_model_and_data(case)
    old = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-14))
    try:
        ref = pyhf.infer.mle.fit(data, ref_model)
    finally:
        pyhf.set_backend(*old)
    ours = _maximize(m)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_default_priors_from_constraints(shared_dir):
    m = hf2ppl.compile(shared_dir / "workspaces" / "all_modifiers_2channel.json")
    for p in m.free_parameters:
        prior = m.priors[p.name]
        if p.constraint == "normal":
            assert isinstance(prior, P.Normal)
            np.testing.assert_allclose(np.broadcast_to(prior.loc, p.n_free), np.asarray(p.auxdata)[p.free_mask])
            np.testing.assert_allclose(np.broadcast_to(prior.scale, p.n_free), np.asarray(p.sigmas)[p.free_mask])
        elif p.constraint == "poisson":
            assert isinstance(prior, P.Gamma)
            tau = np.asarray(p.factors)[p.free_mask]
            np.testing.assert_allclose(prior.rate, tau)
            np.testing.assert_allclose(prior.concentration, np.asarray(p.auxdata)[p.free_mask] + 1)
        else:
            assert isinstance(prior, P.Uniform)
            np.testing.assert_allclose(prior.low, np.asarray(p.bounds)[p.free_mask, 0])


@pytest.mark.parametrize("prior,ref", [
    (P.Normal(0.3, 2.0), scipy.stats.norm(0.3, 2.0)),
    (P.HalfNormal(1.5), scipy.stats.halfnorm(scale=1.5)),
    (P.LogNormal(0.1, 0.4), scipy.stats.lognorm(s=0.4, scale=np.exp(0.1))),
    (P.Gamma(3.0, 2.0), scipy.stats.gamma(3.0, scale=0.5)),
    (P.Uniform(0.0, 4.0), scipy.stats.uniform(0.0, 4.0)),
])
def test_prior_logpdf_matches_scipy(prior, ref):
    import jax.numpy as jnp

    from hf2ppl.xp import jax_namespace, numpy_namespace

    x = np.array([0.2, 0.9, 1.7, 3.1])
    for xp in (numpy_namespace(), jax_namespace()):
        np.testing.assert_allclose(np.asarray(prior.logpdf(xp, jnp.asarray(x) if xp.name == "jax" else x)), ref.logpdf(x), rtol=1e-12)
    # the numpy module itself (it lacks xlogy/gammaln: Gamma failed with it, issue 11)
    np.testing.assert_allclose(prior.logpdf(np, x), ref.logpdf(x), rtol=1e-12)


@pytest.mark.parametrize("constraints", ["prior", "aux"])
@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=CASE_IDS)
def test_numpyro_model_density_equals_logdensity(case, constraints):
    m = _compile(case, constraints=constraints)
    rng = np.random.default_rng(7)
    b = m.suggested_bounds()
    for _ in range(3):
        full = np.where(m.suggested_fixed(), m.suggested_init(), rng.uniform(b[:, 0] + 1e-3, b[:, 1] - 1e-3))
        sites = {p.name: m._site_value(p, full[p.slice]) for p in m.free_parameters}
        lp, trace = log_density(m.model, (), {}, sites)
        assert float(lp) == pytest.approx(float(m.logdensity(full)), rel=1e-10)
        assert float(m.logdensity(sites)) == pytest.approx(float(lp), rel=1e-10)
        for c in m.channels:
            assert trace[m.channel_site(c)]["is_observed"]


def test_user_priors_override(shared_dir):
    path = shared_dir / "workspaces" / "2_bin_corr.json"
    m = hf2ppl.compile(path, priors={"mu": P.Uniform(0, 5), "correlated_bkg_uncertainty": P.Normal(0.0, 2.0)})
    x = {"mu": 1.3, "correlated_bkg_uncertainty": 0.4}
    ref_model, data = pyhf_model_and_data({"workspace": str(path)})
    assert m.par_names == ["correlated_bkg_uncertainty", "mu"]  # pyhf order: histosys before normfactor
    pars = np.array([0.4, 1.3])
    aux = np.asarray(data[ref_model.config.nmaindata:])
    main = ref_model.logpdf(pars, data)[0] - float(ref_model.constraint_model.logpdf(aux, pars))
    expect = main + scipy.stats.uniform(0, 5).logpdf(1.3) + scipy.stats.norm(0, 2).logpdf(0.4)
    assert float(m.logdensity(x)) == pytest.approx(expect, rel=1e-12)
    assert float(m.logdensity({"mu": 5.5, "correlated_bkg_uncertainty": 0.0})) == -np.inf
