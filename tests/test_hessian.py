"""The structured value/gradient/Hessian of the log density (``histfactory.logpdf_value_grad_hessian``, what
every fit's Newton iterations use) against JAX autodiff of ``histfactory.logpdf`` (an independent route:
reverse mode and forward-over-reverse on the plain density), on every shared workspace and the real ones,
every interpolation code, points with the POI at 0 and bins with no events, and the yields path."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CASE_IDS, CASES, WORKSPACES

import hf2ppl
from hf2ppl import histfactory as hf
from hf2ppl.xp import jax_namespace

XP = jax_namespace()


def _check(m, points, nominal=None, data=None):
    T, B = m._T, m.ir.nbins
    d = np.asarray(m.observed_data() if data is None else data, float)
    nom = None if nominal is None else jnp.asarray(nominal)

    def ref(x, d):
        return hf.logpdf(XP, T, x, d[:B], d[B:], nominal=nom)

    ref_fgh = jax.jit(lambda x, d: (ref(x, d), jax.grad(ref)(x, d), jax.hessian(ref)(x, d)))
    new_fgh = jax.jit(lambda x, d: hf.logpdf_value_grad_hessian(T, x, d[:B], d[B:], nominal=nom))
    finite = 0
    for x in points:
        x, dj = jnp.asarray(x), jnp.asarray(d)
        (f0, g0, H0), (f1, g1, H1) = ref_fgh(x, dj), new_fgh(x, dj)
        if not np.isfinite(float(f0)):  # a rate below zero where events are observed: -inf in both
            assert float(f1) == float(f0)
            continue
        finite += 1
        np.testing.assert_allclose(float(f1), float(f0), rtol=1e-13, atol=1e-10)
        gs, Hs = float(np.max(np.abs(g0))) + 1.0, float(np.max(np.abs(H0)))
        np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), rtol=0, atol=1e-12 * gs)
        np.testing.assert_allclose(np.asarray(H1), np.asarray(H0), rtol=0, atol=1e-12 * Hs)
        np.testing.assert_allclose(np.asarray(H1), np.asarray(H1).T, rtol=0, atol=1e-13 * Hs)
    assert finite >= 2


def _points(m, k: int, seed: int, spread: float = 0.4):
    init, b = np.asarray(m.suggested_init(), float), np.asarray(m.suggested_bounds(), float)
    rng = np.random.default_rng(seed)
    pts = [init]
    for _ in range(k):
        x = np.clip(init + rng.uniform(-spread, spread, init.shape), b[:, 0], b[:, 1])
        pts.append(x)
    if m.ir.poi_index is not None:  # the background-only point of every hypotest: free factors at 0
        x = pts[-1].copy()
        x[m.ir.poi_index] = 0.0
        pts.append(x)
    return pts


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=CASE_IDS)
def test_structured_derivatives_equal_autodiff(case):
    m = hf2ppl.compile(case["workspace"], patches=case.get("patches"), constraints="aux")
    assert hf.hessian_supported(m._T)
    _check(m, _points(m, 3, seed=11))


@pytest.mark.parametrize("codes", [("code0", "code1"), ("code2", "code4"), ("code4p", "code1")])
def test_structured_derivatives_every_interpolation_code(codes):
    hs, ns = codes
    ws = WORKSPACES / "all_modifiers_2channel.json"
    m = hf2ppl.compile(str(ws), constraints="aux", modifier_settings={"histosys": {"interpcode": hs}, "normsys": {"interpcode": ns}})
    assert m._T.histosys_code == hs and m._T.normsys_code == ns
    # |alpha| beyond 1 exercises the extrapolation branches of every code
    _check(m, _points(m, 4, seed=3, spread=1.8))


@pytest.mark.parametrize("name", ["staus_SUSY-2018-04_BkgOnly.json", "ewk2L_SUSY-2018-16_BkgOnly.json"])
def test_structured_derivatives_real(name):
    m = hf2ppl.compile(str(WORKSPACES / "real" / name), constraints="aux", poi_name=None)
    _check(m, _points(m, 2, seed=5, spread=0.3))


def test_structured_derivatives_empty_bins_and_yields_path():
    """Bins with no events (the n = 0 rule of poisson_logpdf), and the differentiable-yields path
    (``nominal=`` given: every histosys entry read)."""
    m = hf2ppl.compile(str(WORKSPACES / "SRee_SRmm_SRem_3channel.json"), constraints="aux")
    B = m.ir.nbins
    d = np.asarray(m.observed_data(), float)
    d[: B // 2] = 0.0
    pts = _points(m, 2, seed=7)
    _check(m, pts, data=d)
    rng = np.random.default_rng(2)
    _check(m, pts, nominal=m.ir.nominal * rng.uniform(0.5, 1.5, m.ir.nominal.shape))


def test_fits_use_the_structured_hessian():
    """The fitting kernels take the structured route on real workspaces (flat priors), autodiff with a prior."""
    from hf2ppl.infer.frequentist._engine import _engine

    staus = json.loads((WORKSPACES / "real" / "staus_SUSY-2018-04_BkgOnly.json").read_text())
    m = hf2ppl.compile(staus, constraints="aux", poi_name=None)
    assert _engine(m).k.structured
    mp = hf2ppl.compile(str(WORKSPACES / "2_bin_corr.json"), constraints="aux", priors={"mu": hf2ppl.priors.Normal(1.0, 2.0)})
    assert not _engine(mp).k.structured
    r = hf2ppl.fit(mp)
    assert r.converged


def test_autodiff_hessian_fallback_fits_the_same(monkeypatch):
    """Models beyond the structured Hessian's size bound (or with a user's prior) fit with the blocked
    forward-over-reverse Hessian (64 tangents per block): on staus (118 parameters, two blocks) the same
    minimum as the structured route."""
    import importlib

    eng_mod = importlib.import_module("hf2ppl.infer.frequentist._engine")
    staus = json.loads((WORKSPACES / "real" / "staus_SUSY-2018-04_BkgOnly.json").read_text())
    out = {}
    for structured in (True, False):
        eng_mod._KERNELS.clear()
        if not structured:
            monkeypatch.setattr(hf, "HESSIAN_MAX_CELLS_X_PARS", 0)
        m = hf2ppl.compile(staus, constraints="aux", poi_name=None)
        assert eng_mod._engine(m).k.structured is structured
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[structured] = hf2ppl.fit(m, starts=1)
    eng_mod._KERNELS.clear()
    a, b = out[True], out[False]
    assert a.converged and b.converged
    assert a.nll == pytest.approx(b.nll, abs=1e-8)
    np.testing.assert_allclose(a.x, b.x, atol=1e-4)
