"""pyhf's semantics at the edges: POI-less models, modifier_settings, code2 beyond |alpha| = 1,
and odd input that must become one-line hf2ppl errors."""

from __future__ import annotations

import copy
import json

import jax
import numpy as np
import pyhf
import pytest
from conftest import WORKSPACES

import hf2ppl
from hf2ppl import errors
from hf2ppl.interpolation import histosys_delta

ALL_MODS = WORKSPACES / "all_modifiers_2channel.json"
STAUS = WORKSPACES / "real" / "staus_SUSY-2018-04_BkgOnly.json"


@pytest.fixture()
def ws():
    return json.loads(ALL_MODS.read_text())


def _pyhf_logpdf(model, x, data):
    return float(model.logpdf(np.asarray(x, float), data)[0])


def _points(model, n, seed=0):
    """The suggested init and n points inside the suggested bounds (fixed parameters at their init)."""
    init = np.asarray(model.config.suggested_init(), float)
    b = np.asarray(model.config.suggested_bounds(), float)
    fixed = np.asarray(model.config.suggested_fixed(), bool)
    x = np.random.default_rng(seed).uniform(np.maximum(b[:, 0], init - 0.3), np.minimum(b[:, 1], init + 0.3), size=(n, len(b)))
    x[:, fixed] = init[fixed]
    return np.vstack([init, x])


# ================================================================ 1. POI-less models
def test_empty_poi_is_a_poi_less_model(ws):
    ws["measurements"][0]["config"]["poi"] = ""
    spec = hf2ppl.load(ws)
    assert spec.poi is None
    m = hf2ppl.compile(ws, constraints="aux")
    assert m.poi_name is None and m.poi_index is None and m.ir.poi_index is None
    assert not any(p.is_poi for p in m.parameters)
    pws = pyhf.Workspace(ws)
    ref = pws.model()  # pyhf: poi "" -> no POI
    assert ref.config.poi_name is None
    assert m.par_names == ref.config.par_names
    data = pws.data(ref)
    for x in _points(ref, 3):
        assert float(m.logdensity(x)) == pytest.approx(_pyhf_logpdf(ref, x, data), rel=1e-10)


def test_bkg_only_workspace_without_poi_equals_pyhf():
    doc = json.loads(STAUS.read_text())
    poi = doc["measurements"][0]["config"]["poi"]
    # the measurement's POI is a signal normfactor only the patches add: a clear error, with the way out
    with pytest.raises(errors.MeasurementError) as info:
        hf2ppl.load(doc)
    msg = str(info.value)
    assert "\n" not in msg and "/measurements/0/config/poi" in msg and repr(poi) in msg and "poi_name=None" in msg
    with pytest.raises(pyhf.exceptions.InvalidModel):
        pyhf.Workspace(doc).model()

    m = hf2ppl.compile(doc, constraints="aux", poi_name=None)
    pws = pyhf.Workspace(doc)
    ref = pws.model(poi_name=None)
    assert m.poi_name is None and m.poi_index is None and ref.config.poi_index is None
    assert m.par_names == ref.config.par_names
    np.testing.assert_allclose(m.suggested_init(), ref.config.suggested_init())
    np.testing.assert_array_equal(m.suggested_fixed(), ref.config.suggested_fixed())
    data = pws.data(ref)
    x = _points(ref, 4, seed=3)
    ours = np.asarray(jax.jit(jax.vmap(m.logdensity_flat))(x))
    np.testing.assert_allclose(ours, [_pyhf_logpdf(ref, xi, data) for xi in x], rtol=1e-10)


def test_poi_name_chooses_another_parameter(ws):
    pws = pyhf.Workspace(ws)
    for name in ("mu_bkg", "lumi", "jes"):
        m = hf2ppl.compile(ws, constraints="aux", poi_name=name)
        ref = pws.model(poi_name=name)
        assert m.poi_name == name == ref.config.poi_name
        assert m.poi_index == ref.config.poi_index
        assert [p.name for p in m.parameters if p.is_poi] == [name]
    assert hf2ppl.load(ws, poi_name="").poi is None  # as pyhf: "" means no POI
    assert hf2ppl.load(ws).poi == "mu"


def test_poi_name_errors(ws):
    with pytest.raises(pyhf.exceptions.InvalidModel):
        pyhf.Workspace(ws).model(poi_name="shape_cr")
    with pytest.raises(errors.MeasurementError) as info:
        hf2ppl.compile(ws, poi_name="shape_cr")  # a 3-bin shapefactor
    assert "scalar" in str(info.value) and "shape_cr" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(errors.MeasurementError, match="poi_name 'nope' is not a parameter"):
        hf2ppl.load(ws, poi_name="nope")
    with pytest.raises(errors.MeasurementError, match="poi_name must be"):
        hf2ppl.load(ws, poi_name=3)
    bad = copy.deepcopy(ws)
    bad["measurements"][0]["config"]["poi"] = "shape_cr"
    with pytest.raises(errors.MeasurementError) as info:
        hf2ppl.compile(bad)
    assert info.value.path == "/measurements/0/config/poi"


def test_poi_override_survives_recompiles(ws):
    for poi in (None, "mu_bkg"):
        m = hf2ppl.compile(ws, constraints="prior", poi_name=poi)
        assert m.spec.poi == poi
        # what the frequentist code does with a prior-mode model
        again = hf2ppl.compile(m.spec, target="numpyro", constraints="aux")
        assert again.poi_name == poi
        # reloading a Spec (e.g. with patches) keeps its measurement and POI
        patched = hf2ppl.load(m.spec, patches=[[{"op": "replace", "path": "/observations/0/data/0", "value": 3.0}]])
        assert patched.poi == poi and patched.workspace["observations"][0]["data"][0] == 3.0
        assert hf2ppl.load(m.spec, poi_name="mu").poi == "mu"
    nopoi = hf2ppl.compile(ws, poi_name=None)
    with pytest.raises(errors.ParameterError, match="parameter of interest"):
        hf2ppl.hypotest(nopoi, 1.0)


# ================================================================ 2. modifier_settings as pyhf reads them
#: (settings, resolved (normsys, histosys) codes in pyhf 0.7.6)
SETTINGS = [
    (None, ("code4", "code4p")),
    ({}, ("code1", "code0")),
    ({"normsys": {"interpcode": "code4"}}, ("code4", "code0")),
    ({"normsys": {"interpcode": "code1"}}, ("code1", "code0")),
    ({"histosys": {"interpcode": "code4p"}}, ("code1", "code4p")),
    ({"histosys": {"interpcode": "code2"}}, ("code1", "code2")),
    ({"normsys": {}}, ("code1", "code0")),
    ({"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}, ("code4", "code4p")),
    ({"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code2"}}, ("code1", "code2")),
]


def _alpha_point(model, values):
    """suggested init with the normsys/histosys parameters set to ``values`` in turn."""
    x = np.asarray(model.config.suggested_init(), float)
    k = 0
    for name in model.config.par_order:
        if model.config.param_set(name).__class__.__name__ == "constrained_by_normal" and name != "lumi" and model.config.param_set(name).n_parameters == 1:
            x[model.config.par_slice(name)] = values[k % len(values)]
            k += 1
    assert k >= 3
    return x


@pytest.mark.parametrize("settings,codes", SETTINGS, ids=[json.dumps(s) for s, _ in SETTINGS])
def test_modifier_settings_resolve_like_pyhf(ws, settings, codes):
    pws = pyhf.Workspace(ws)
    kw = {} if settings is None else {"modifier_settings": copy.deepcopy(settings)}
    ref = pws.model(**kw)
    appliers = ref.main_model.modifiers_appliers
    assert (appliers["normsys"].interpcode, appliers["histosys"].interpcode) == codes
    m = hf2ppl.compile(ws, constraints="aux", **kw)
    assert (m.ir.normsys_code, m.ir.histosys_code) == codes
    data = pws.data(ref)
    # code2 beyond |alpha| = 1 deliberately differs from pyhf (see test_code2_*), so stay inside there
    # (par order jes, xsec_bkg, fixed_syst, sig_theory: one histosys, three normsys; codes only differ inside |alpha| < 1)
    values = (0.5, -0.9, 0.9, -0.5) if codes[1] == "code2" else (-0.5, -1.5, 1.5, 0.5)
    x = _alpha_point(ref, values)
    expected = _pyhf_logpdf(ref, x, data)
    assert float(m.logdensity(x)) == pytest.approx(expected, rel=1e-10)
    if codes != ("code4", "code4p"):  # the codes matter at this point: the test can tell them apart
        default = pws.model()
        assert abs(_pyhf_logpdf(default, x, data) - expected) > 1e-6


def test_modifier_settings_bad(ws):
    for bad, frag in [("code4", "must be a dict"), ({"normsys": None}, "must be a dict"),
                      ({"normsys": {"interpcode": "code4", "extra": 1}}, "only 'interpcode'"),
                      ({"lumi": {"interpcode": "code1"}}, "no interpolation setting"),
                      ({"histosys": {"interpcode": "code1"}}, "not one of")]:
        with pytest.raises(errors.WorkspaceError, match=frag):
            hf2ppl.load(ws, modifier_settings=bad)


# ================================================================ 3. code2 beyond |alpha| = 1
def _triples(n=40, seed=0):
    rng = np.random.default_rng(seed)
    nom = rng.uniform(5, 50, n)
    return nom * rng.uniform(0.5, 1.0, n), nom, nom * rng.uniform(1.0, 1.6, n)


def _code2(alpha, lo, nom, hi):
    return np.asarray(histosys_delta(np, "code2", np.asarray(alpha, float), lo, nom, hi))


def test_code2_is_continuous_with_continuous_slope():
    lo, nom, hi = _triples()
    a = 0.5 * (hi + lo) - nom
    b = 0.5 * (hi - lo)
    eps = 1e-7
    for edge, value, slope in ((1.0, a + b, b + 2 * a), (-1.0, a - b, b - 2 * a)):
        np.testing.assert_allclose(_code2(edge, lo, nom, hi), value, rtol=1e-12)
        left, right = _code2(edge - eps, lo, nom, hi), _code2(edge + eps, lo, nom, hi)
        np.testing.assert_allclose(left, value, atol=1e-5)
        np.testing.assert_allclose(right, value, atol=1e-5)
        # one-sided slopes from both pieces equal the parabola's slope 2a*edge + b
        np.testing.assert_allclose((right - value) / eps, slope, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose((value - left) / eps, slope, rtol=1e-5, atol=1e-5)
    # with JAX: the derivative just outside equals the one just inside
    g = jax.vmap(jax.grad(lambda t, lo_, nom_, hi_: histosys_delta(jax.numpy, "code2", t, lo_, nom_, hi_)))
    for edge in (1.0, -1.0):
        inside = g(np.full(lo.shape, edge * (1 - 1e-9)), lo, nom, hi)
        outside = g(np.full(lo.shape, edge * (1 + 1e-9)), lo, nom, hi)
        np.testing.assert_allclose(outside, inside, rtol=1e-6)
    # hi = nom = lo gives no variation anywhere (the neutral slots of the IR rely on it)
    assert not np.any(_code2(np.linspace(-5, 5, 11)[:, None], nom, nom, nom))


def test_code2_against_pyhf_slow_interpolator():
    lo, nom, hi = _triples(12, seed=1)
    grid = np.array([-5.0, -3.0, -1.7, -1.2, -1.0 - 1e-6, -1.0, -0.6, 0.0, 0.3, 1.0, 1.0 + 1e-6, 1.4, 2.5, 5.0])
    hsets = [[np.stack([lo, nom, hi]).tolist()]]  # (systematic, sample, [lo, nom, hi], bins)
    slow = np.asarray(pyhf.interpolators._slow_code2(hsets)([grid.tolist()]))[0, 0]  # (alpha, bins)
    ours = np.stack([_code2(t, lo, nom, hi) for t in grid])
    # pyhf's slow path is the same parabola inside [-1, 1] and the same slopes outside; it lacks the
    # offsets (hi - nom above, lo - nom below) that make the pieces meet (scikit-hep/pyhf#2729)
    offset = np.where(grid[:, None] > 1, hi - nom, np.where(grid[:, None] < -1, lo - nom, 0.0))
    np.testing.assert_allclose(ours, slow + offset, rtol=1e-12, atol=1e-12)
    inside = np.abs(grid) <= 1
    np.testing.assert_allclose(ours[inside], slow[inside], rtol=1e-12, atol=1e-12)
    # and outside they really differ (so this test can tell the two formulas apart)
    assert np.all(np.abs(ours[~inside] - slow[~inside]) > 1e-3)


def test_compiled_code2_model_uses_the_continuous_extrapolation():
    ws = {
        "channels": [{"name": "SR", "samples": [{"name": "bkg", "data": [10.0, 20.0], "modifiers": [
            {"name": "shape", "type": "histosys", "data": {"hi_data": [13.0, 21.0], "lo_data": [8.0, 16.0]}},
            {"name": "mu", "type": "normfactor", "data": None}]}]}],
        "observations": [{"name": "SR", "data": [11.0, 19.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    m = hf2ppl.compile(ws, constraints="aux", modifier_settings={"histosys": {"interpcode": "code2"}})
    nom, hi, lo = np.array([10.0, 20.0]), np.array([13.0, 21.0]), np.array([8.0, 16.0])
    a, b = 0.5 * (hi + lo) - nom, 0.5 * (hi - lo)
    for alpha, delta in ((-2.0, (a - b) + (b - 2 * a) * (-1.0)), (2.5, (a + b) + (b + 2 * a) * 1.5), (0.4, a * 0.16 + b * 0.4)):
        x = np.array([alpha, 1.0])  # par order: shape, mu
        np.testing.assert_allclose(np.asarray(m.expected_data(x, include_auxdata=False)), nom + delta, rtol=1e-12)


# ================================================================ 4. odd input -> one-line hf2ppl errors
def check(exc_type, path, fn, *args, **kwargs):
    """``fn`` raises ``exc_type`` (an HF2PPLError) with a one-line message naming ``path``."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    err = info.value
    msg = str(err)
    assert isinstance(err, errors.HF2PPLError)
    assert "\n" not in msg and len(msg) < 600, msg
    if path is not None:
        assert err.path == path, msg
        assert msg.startswith(f"at {path}:"), msg
    return msg


@pytest.mark.parametrize("bounds", [[[0, 1, 2]], [[5]], [[]]], ids=["triple", "single", "empty"])
def test_bounds_not_a_pair(ws, bounds):
    ws["measurements"][0]["config"]["parameters"][1]["bounds"] = bounds
    msg = check(errors.ModelError, "/measurements/0/config/parameters/1/bounds/0", hf2ppl.compile, ws)
    assert "pair" in msg


def test_bounds_not_a_list_of_lists(ws):
    ws["measurements"][0]["config"]["parameters"][1]["bounds"] = [5]
    check(errors.SchemaError, "/measurements/0/config/parameters/1/bounds/0", hf2ppl.load, ws)


@pytest.mark.parametrize("key,path", [
    ("inits", "/measurements/0/config/parameters/1/inits/0"),
    ("auxdata", "/measurements/0/config/parameters/0/auxdata/0"),
    ("sigmas", "/measurements/0/config/parameters/0/sigmas/0"),
])
@pytest.mark.parametrize("value", [10**400, float("nan")], ids=["huge-int", "nan"])
def test_measurement_numbers(ws, key, path, value):
    pi = int(path.split("/")[5])
    ws["measurements"][0]["config"]["parameters"][pi][key] = [value]
    check(errors.ModelError, path, hf2ppl.compile, ws)


def test_huge_bound(ws):
    ws["measurements"][0]["config"]["parameters"][1]["bounds"] = [[0, 10**400]]
    msg = check(errors.ModelError, "/measurements/0/config/parameters/1/bounds/0/1", hf2ppl.compile, ws)
    assert "too large for a float" in msg


def _set_first(ws, mtype, fn):
    for ci, c in enumerate(ws["channels"]):
        for si, s in enumerate(c["samples"]):
            for mi, m in enumerate(s["modifiers"]):
                if m["type"] == mtype:
                    return fn(m, f"/channels/{ci}/samples/{si}/modifiers/{mi}/data")
    raise LookupError(mtype)


HUGE_SITES = {
    "observation": lambda ws: (ws["observations"][1]["data"].__setitem__(1, 10**400), "/observations/1/data/1"),
    "yield": lambda ws: (ws["channels"][1]["samples"][0]["data"].__setitem__(0, -(10**400)), "/channels/1/samples/0/data/0"),
    "normsys": lambda ws: _set_first(ws, "normsys", lambda m, p: (m["data"].__setitem__("lo", 10**400), f"{p}/lo")),
    "histosys": lambda ws: _set_first(ws, "histosys", lambda m, p: (m["data"]["hi_data"].__setitem__(1, 10**400), f"{p}/hi_data/1")),
    "staterror": lambda ws: _set_first(ws, "staterror", lambda m, p: (m["data"].__setitem__(0, 10**400), f"{p}/0")),
    "shapesys": lambda ws: _set_first(ws, "shapesys", lambda m, p: (m["data"].__setitem__(2, 10**400), f"{p}/2")),
}


@pytest.mark.parametrize("site", list(HUGE_SITES))
def test_integer_too_large_for_a_float_in_a_dict(ws, site):
    _, path = HUGE_SITES[site](ws)
    msg = check(errors.ModelError, path, hf2ppl.load, ws)
    assert "too large for a float" in msg


@pytest.mark.parametrize("digits", [400, 5000], ids=["400-digits", "5000-digits"])  # 5000 > Python's int-string limit
def test_integer_too_large_for_a_float_in_json_text(ws, tmp_path, digits):
    ws["observations"][0]["data"][2] = 123456789.0
    text = json.dumps(ws).replace("123456789.0", "9" * digits, 1)
    path = "/observations/0/data/2"
    assert "too large for a float" in check(errors.ModelError, path, hf2ppl.load, text)
    f = tmp_path / "ws.json"
    f.write_text(text)
    assert "too large for a float" in check(errors.ModelError, path, hf2ppl.load, str(f))
    assert "too large for a float" in check(errors.ModelError, path, hf2ppl.compile, f)


def _nested(n):
    x = []
    for _ in range(n):
        x = [x]
    return x


def test_deep_nesting_in_json_text(tmp_path):
    deep = "[" * 100000
    p32 = "/0" * 32
    msg = check(errors.WorkspaceError, p32, hf2ppl.load, deep)
    assert "100000 levels" in msg
    f = tmp_path / "deep.json"
    f.write_text('{"channels": ' + "[" * 50000 + "]" * 50000 + "}")
    check(errors.WorkspaceError, "/channels" + "/0" * 31, hf2ppl.load, str(f))
    check(errors.WorkspaceError, p32, hf2ppl.load_patchset, deep)
    check(errors.WorkspaceError, "/a" * 32, hf2ppl.load_patchset, '{"a": ' * 100000)


def test_deep_nesting_in_python_objects(ws):
    bad = copy.deepcopy(ws)
    bad["channels"][0]["samples"][0]["extra"] = _nested(5000)
    msg = check(errors.WorkspaceError, "/channels/0/samples/0/extra" + "/0" * 27, hf2ppl.load, bad)
    assert "levels deep" in msg
    check(errors.WorkspaceError, "/metadata" + "/0" * 31, hf2ppl.load_patchset, {"metadata": _nested(5000), "patches": []})
    op = {"op": "add", "path": "/channels/0/samples/0/extra", "value": _nested(5000)}
    check(errors.WorkspaceError, "/0/0/value" + "/0" * 29, hf2ppl.load, ws, patches=[[op]])  # patches[0][0]
    cyclic = copy.deepcopy(ws)
    cyclic["channels"][0]["samples"][0]["self"] = cyclic["channels"]
    msg = check(errors.WorkspaceError, "/channels/0/samples/0/self", hf2ppl.load, cyclic)
    assert "cycle" in msg


def test_patch_that_does_not_apply_names_its_target(ws):
    ops = [{"op": "replace", "path": "/observations/0/data/0", "value": 1.0},
           {"op": "add", "path": "/channels/7/samples/-", "value": {}}]
    msg = check(errors.PatchError, "/channels/7/samples/-", hf2ppl.load, ws, patches=[ops])
    assert "operation 1" in msg
    check(errors.PatchError, None, hf2ppl.load, ws, patches=5)
    check(errors.PatchError, "/patch", hf2ppl.load, ws, patches=[{"patch": 5}])


def test_unreadable_sources(tmp_path):
    f = tmp_path / "latin1.json"
    f.write_bytes(b'{"channels": "\xff"}')
    assert "UTF-8" in check(errors.WorkspaceError, None, hf2ppl.load, str(f))
    assert "File name too long" in check(errors.WorkspaceError, None, hf2ppl.load, "x" * 5000)
    assert "does not exist" in check(errors.WorkspaceError, None, hf2ppl.load, "a\0b")
    assert "cannot be read" in check(errors.WorkspaceError, None, hf2ppl.load_patchset, "y" * 5000)
    check(errors.PatchError, None, hf2ppl.load, ALL_MODS, patches=["z" * 5000])
    check(errors.WorkspaceError, None, hf2ppl.load, '{"channels": [1, 2')  # truncated JSON
