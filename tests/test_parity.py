"""aux mode == pyhf's Model.logpdf, on the shared workspaces and on random workspaces."""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
import pyhf
import pytest
from conftest import CASE_IDS, CASES, pyhf_model_and_data
from hypothesis import HealthCheck, given, settings
from strategies import workspaces

import hf2ppl

CODES = list(itertools.product(["code1", "code4"], ["code0", "code2", "code4p"]))


def _compile(case, **kw):
    case = dict(case)
    ws = case.pop("workspace")
    return hf2ppl.compile(ws, constraints="aux", **case, **kw)


def _pyhf_logpdf(model, x, data):
    """pyhf's logpdf at each row of x; where an expected rate is negative pyhf gives NaN and
    hf2ppl -inf (zero likelihood), so NaN is mapped to -inf for the comparison."""
    ref = np.array([model.logpdf(xi, data)[0] for xi in x])
    neg = np.array([np.any(np.asarray(model.expected_actualdata(xi)) < 0) for xi in x])
    assert not np.any(np.isnan(ref) & ~neg), "pyhf gave NaN for a non-negative expectation"
    return np.where(np.isnan(ref) & neg, -np.inf, ref)


def _points(model, n, seed=0):
    """The suggested init and ``n`` uniform points in the bounds. With histosys code2, histosys parameters
    stay in [-1, 1]: beyond, hf2ppl continues the parabola linearly with matching value and slope (ROOT's
    code 2), where pyhf 0.7.6 drops the constant term (pyhf#2610; tested in test_semantics.py)."""
    b = np.asarray(model.config.suggested_bounds())
    x = np.random.default_rng(seed).uniform(b[:, 0], b[:, 1], size=(n, len(b)))
    x = np.vstack([np.asarray(model.config.suggested_init()), x])
    if model.config.modifier_settings.get("histosys", {}).get("interpcode") == "code2":
        for name, mtype in model.config.modifiers:
            if mtype == "histosys":
                sl = model.config.par_map[name]["slice"]
                x[:, sl] = np.clip(x[:, sl], -1.0, 1.0)
    return x


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=CASE_IDS)
@pytest.mark.parametrize("normsys,histosys", CODES, ids=[f"{a}-{b}" for a, b in CODES])
def test_logdensity_equals_pyhf(case, normsys, histosys):
    settings_ = {"normsys": {"interpcode": normsys}, "histosys": {"interpcode": histosys}}
    ref_model, data = pyhf_model_and_data(case, modifier_settings=settings_)
    m = _compile(case, modifier_settings=settings_)
    assert m.par_names == ref_model.config.par_names
    np.testing.assert_array_equal(m.suggested_fixed(), ref_model.config.suggested_fixed())
    np.testing.assert_allclose(m.suggested_init(), ref_model.config.suggested_init())
    np.testing.assert_allclose(m.auxdata, ref_model.config.auxdata)
    x = _points(ref_model, 100)
    ours = np.asarray(jax.jit(jax.vmap(m.logdensity_flat))(x))
    ref = _pyhf_logpdf(ref_model, x, data)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0)
    # dict params at the suggested init, and pyhf-layout data passed explicitly
    init_dict = {p.name: np.asarray(p.inits) for p in m.parameters}
    assert float(m.logdensity(init_dict, data=np.asarray(data))) == pytest.approx(ref[0], rel=1e-9)


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=CASE_IDS)
def test_expected_data_equals_pyhf(case):
    ref_model, _ = pyhf_model_and_data(case)
    m = _compile(case)
    for x in _points(ref_model, 5, seed=1):
        np.testing.assert_allclose(np.asarray(m.expected_data(x)), ref_model.expected_data(x), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(m.expected_data(x, include_auxdata=False)),
                                   ref_model.expected_data(x, include_auxdata=False), rtol=1e-10)


@settings(max_examples=int(__import__("os").environ.get("HF2PPL_HYPOTHESIS_EXAMPLES", 150)), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(workspaces())
def test_random_workspaces_equal_pyhf(case):
    """150 random workspaces (derandomized; ``HF2PPL_HYPOTHESIS_EXAMPLES=500`` or more for a long run) against pyhf."""
    ws, modifier_settings = case
    pws = pyhf.Workspace(ws)
    ref_model = pws.model(modifier_settings=modifier_settings)
    data = pws.data(ref_model)
    m = hf2ppl.compile(ws, constraints="aux", modifier_settings=modifier_settings)
    assert m.par_names == ref_model.config.par_names
    np.testing.assert_array_equal(m.suggested_fixed(), ref_model.config.suggested_fixed())
    x = _points(ref_model, 20)
    ours = np.asarray(jax.jit(jax.vmap(m.logdensity_flat))(x))
    ref = _pyhf_logpdf(ref_model, x, data)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0)


def test_float32_model_close_to_float64(shared_dir):
    path = shared_dir / "workspaces" / "all_modifiers_2channel.json"
    m64 = hf2ppl.compile(path, constraints="aux")
    m32 = hf2ppl.compile(path, constraints="aux", dtype="float32")
    x = m64.suggested_init()
    # jitted: eager float32 calls compile every primitive once more (tens of seconds on 2 cores)
    v32 = jax.jit(m32.logdensity_flat)(np.asarray(x, np.float32))
    assert v32.dtype == np.float32
    assert float(v32) == pytest.approx(float(m64.logdensity(x)), rel=1e-5)
    g = jax.jit(jax.grad(m32.logdensity_flat))(np.asarray(x, np.float32))
    assert g.dtype == np.float32 and np.all(np.isfinite(g))


def test_load_sources_agree(shared_dir):
    path = shared_dir / "workspaces" / "2_bin_corr.json"
    text = path.read_text()
    sources = [path, str(path), text, json.loads(text), pyhf.Workspace(json.loads(text)), hf2ppl.load(path)]
    values = [float(hf2ppl.compile(s, constraints="aux").logdensity([1.2, 0.3])) for s in sources]
    assert len(set(values)) == 1


def test_patch_forms_agree(shared_dir):
    bkg = shared_dir / "workspaces" / "patchset" / "example_bkgonly.json"
    ps_path = shared_dir / "workspaces" / "patchset" / "example_patchset.json"
    ps = json.loads(ps_path.read_text())
    name = ps["patches"][0]["metadata"]["name"]
    forms = [
        [(ps_path, name)],
        [f"{ps_path}#{name}"],
        [ps["patches"][0]["patch"]],
        [ps["patches"][0]],
        [pyhf.PatchSet(ps)[name]],
        [(ps_path, ps["patches"][0]["metadata"]["values"])],
    ]
    ref_model, data = pyhf_model_and_data({"workspace": str(bkg), "patches": [(str(ps_path), name)]})
    x = ref_model.config.suggested_init()
    for patches in forms:
        m = hf2ppl.compile(bkg, constraints="aux", patches=patches)
        assert float(m.logdensity(x)) == pytest.approx(float(ref_model.logpdf(x, data)[0]), rel=1e-12)


def test_measurement_selection(shared_dir):
    ws = json.loads((shared_dir / "workspaces" / "2_bin_corr.json").read_text())
    second = json.loads(json.dumps(ws["measurements"][0]))
    second["name"] = "tight"
    second["config"]["parameters"] = [{"name": "mu", "bounds": [[0.0, 3.0]], "inits": [0.5]}]
    ws["measurements"].append(second)
    m = hf2ppl.compile(ws, measurement="tight")
    assert m.ir.par_map["mu"].bounds == ((0.0, 3.0),) and m.ir.par_map["mu"].inits == (0.5,)
    assert hf2ppl.compile(ws, measurement=1).ir.par_map["mu"].inits == (0.5,)
    ref = pyhf.Workspace(ws).model(measurement_name="tight")
    assert m.suggested_bounds().tolist() == [list(b) for b in ref.config.suggested_bounds()]


def test_gradient_matches_finite_differences(shared_dir):
    for name in ["all_modifiers_2channel.json", "SRee_SRmm_SRem_3channel.json", "litehf_sample_staterror_shapesys.json"]:
        for mode in ("aux", "prior"):
            m = hf2ppl.compile(shared_dir / "workspaces" / name, constraints=mode)
            b = m.suggested_bounds()
            rng = np.random.default_rng(3)
            x = rng.uniform(b[:, 0] + 0.2 * (b[:, 1] - b[:, 0]), b[:, 1] - 0.2 * (b[:, 1] - b[:, 0]))
            x = np.where(m.suggested_fixed(), m.suggested_init(), x)
            g = np.asarray(jax.jit(jax.grad(m.logdensity_flat))(x))
            f = jax.jit(m.logdensity_flat)
            h = 1e-6
            fd = np.array([(float(f(x + h * e)) - float(f(x - h * e))) / (2 * h) for e in np.eye(len(x))])
            np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=CASE_IDS)
def test_factor_slices_equal_the_gather(case):
    """The free factors built from slices and broadcasts (``Tensors.factor_runs``) equal the general gather
    layout, values and gradients, on every shared workspace (real ones included: ewk2L has too many runs and
    takes the gather in both, the others the slices)."""
    ref_model, _ = pyhf_model_and_data(case)
    _check_factor_layouts(_compile(case), _points(ref_model, 3, seed=3))


@pytest.mark.parametrize("name", ["staus_SUSY-2018-04_BkgOnly.json", "ewk2L_SUSY-2018-16_BkgOnly.json"])
def test_factor_slices_equal_the_gather_real(name):
    from conftest import WORKSPACES

    m = hf2ppl.compile(str(WORKSPACES / "real" / name), constraints="aux", poi_name=None)
    init, b = m.suggested_init(), m.suggested_bounds()
    rng = np.random.default_rng(5)
    pts = [np.clip(init + rng.uniform(-0.3, 0.3, init.shape), b[:, 0], b[:, 1]) for _ in range(3)]
    assert (m._T.factor_runs is None) == (name.startswith("ewk2L"))  # 21 runs on staus; ewk2L has more than the cap
    _check_factor_layouts(m, pts)


def _check_factor_layouts(m, points):
    import copy

    from hf2ppl import histfactory as hf
    from hf2ppl.xp import jax_namespace

    T = m._T
    G = copy.copy(T)
    G.factor_runs = None
    xp = jax_namespace()
    rates_a, rates_b = (jax.jit(lambda t, U=U: hf.expected_rates(xp, U, t)) for U in (T, G))
    grad_a, grad_b = (jax.jit(jax.grad(lambda t, U=U: hf.logpdf(xp, U, t))) for U in (T, G))
    for x in points:
        x = jax.numpy.asarray(x)
        np.testing.assert_allclose(np.asarray(rates_a(x)), np.asarray(rates_b(x)), rtol=1e-14, atol=0)
        ga, gb = grad_a(x), grad_b(x)
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-12, atol=1e-12)
