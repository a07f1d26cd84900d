"""Every bad input gets a one-line hf2ppl error naming the JSON path."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import hf2ppl
from hf2ppl import errors


@pytest.fixture()
def ws(shared_dir):
    return json.loads((shared_dir / "workspaces" / "all_modifiers_2channel.json").read_text())


def _mod(ws, ch, sample, mtype):
    for i, m in enumerate(ws["channels"][ch]["samples"][sample]["modifiers"]):
        if m["type"] == mtype:
            return i, m
    raise LookupError(mtype)


def check(exc_type, path_fragment, fn, *args, **kwargs):
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert path_fragment in msg, msg
    assert isinstance(info.value, errors.HF2PPLError)
    return msg


def test_schema_violation(ws):
    bad = copy.deepcopy(ws)
    bad["channels"][0]["samples"][0]["data"] = "many"
    check(errors.SchemaError, "/channels/0/samples/0/data", hf2ppl.load, bad)
    bad = copy.deepcopy(ws)
    del bad["observations"]
    check(errors.SchemaError, "observations", hf2ppl.load, bad)
    bad = copy.deepcopy(ws)
    bad["channels"][1]["samples"][0]["modifiers"][0]["type"] = "magic"
    check(errors.SchemaError, "/channels/1/samples/0/modifiers/0", hf2ppl.load, bad)


def test_sample_bin_count_mismatch(ws):
    bad = copy.deepcopy(ws)
    bad["channels"][0]["samples"][1]["data"].append(3.0)
    msg = check(errors.ModelError, "/channels/0/samples/1/data", hf2ppl.load, bad)
    assert "/observations/0/data" in msg


def test_observation_bin_count_mismatch(ws):
    bad = copy.deepcopy(ws)
    bad["observations"][1]["data"] = [1.0]
    check(errors.ModelError, "/channels/1/samples/0/data", hf2ppl.load, bad)


@pytest.mark.parametrize("mtype,key", [("histosys", "hi_data"), ("staterror", None), ("shapesys", None)])
def test_modifier_bin_count_mismatch(ws, mtype, key):
    bad = copy.deepcopy(ws)
    for ci, c in enumerate(bad["channels"]):
        for si, s in enumerate(c["samples"]):
            for mi, m in enumerate(s["modifiers"]):
                if m["type"] == mtype:
                    target = m["data"][key] if key else m["data"]
                    target.append(1.0)
                    path = f"/channels/{ci}/samples/{si}/modifiers/{mi}/data" + (f"/{key}" if key else "")
                    check(errors.ModelError, path, hf2ppl.load, bad)
                    return
    raise AssertionError(f"no {mtype} in fixture")


def test_unknown_measurement_and_poi(ws):
    check(errors.MeasurementError, "/measurements", hf2ppl.load, ws, measurement="nope")
    check(errors.MeasurementError, "/measurements", hf2ppl.load, ws, measurement=7)
    bad = copy.deepcopy(ws)
    bad["measurements"][0]["config"]["poi"] = "not_a_parameter"
    check(errors.MeasurementError, "/measurements/0/config/poi", hf2ppl.load, bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_bad_nominal_yields(ws, value):
    bad = copy.deepcopy(ws)
    bad["channels"][1]["samples"][0]["data"][1] = value
    check(errors.ModelError, "/channels/1/samples/0/data/1", hf2ppl.load, bad)


@pytest.mark.parametrize("value", [float("nan"), -0.5])
@pytest.mark.parametrize("mtype", ["shapesys", "staterror"])
def test_bad_uncertainties(ws, mtype, value):
    bad = copy.deepcopy(ws)
    mi, m = _mod(bad, 0, 1, mtype) if mtype == "shapesys" else _mod(bad, 0, 0, mtype)
    m["data"][0] = value
    si = 1 if mtype == "shapesys" else 0
    check(errors.ModelError, f"/channels/0/samples/{si}/modifiers/{mi}/data/0", hf2ppl.load, bad)


def test_bad_histosys_and_normsys(ws):
    bad = copy.deepcopy(ws)
    mi, m = _mod(bad, 0, 0, "histosys")
    m["data"]["lo_data"][2] = float("nan")
    check(errors.ModelError, f"/channels/0/samples/0/modifiers/{mi}/data/lo_data/2", hf2ppl.load, bad)
    bad = copy.deepcopy(ws)
    mi, m = _mod(bad, 0, 0, "normsys")
    m["data"]["lo"] = -0.2
    check(errors.ModelError, f"/channels/0/samples/0/modifiers/{mi}/data/lo", hf2ppl.load, bad)


def test_bad_observations(ws):
    bad = copy.deepcopy(ws)
    bad["observations"][0]["data"][0] = -3.0
    check(errors.ModelError, "/observations/0/data/0", hf2ppl.load, bad)


def test_duplicate_names(ws):
    bad = copy.deepcopy(ws)
    bad["channels"][1]["name"] = bad["channels"][0]["name"]
    check(errors.ModelError, "/channels/1/name", hf2ppl.load, bad)
    bad = copy.deepcopy(ws)
    bad["channels"][0]["samples"][1]["name"] = bad["channels"][0]["samples"][0]["name"]
    check(errors.ModelError, "/channels/0/samples/1/name", hf2ppl.load, bad)


@pytest.mark.parametrize("key,value", [("inits", [1.0, 1.0]), ("bounds", [[0, 5], [0, 5]]), ("auxdata", [1.0, 2.0]), ("sigmas", [0.1, 0.1])])
def test_parameter_config_wrong_length(ws, key, value):
    bad = copy.deepcopy(ws)
    params = bad["measurements"][0]["config"]["parameters"]
    params.append({"name": "lumi" if key in ("auxdata", "sigmas") else "mu_bkg", key: value})
    # lumi is configured already; replace instead of duplicating
    if key in ("auxdata", "sigmas"):
        params.pop()
        idx = next(i for i, p in enumerate(params) if p["name"] == "lumi")
        params[idx][key] = value
    else:
        idx = len(params) - 1
    check(errors.ModelError, f"/measurements/0/config/parameters/{idx}/{key}", hf2ppl.compile, bad)


def test_vector_parameter_config_wrong_length(ws):
    bad = copy.deepcopy(ws)
    bad["measurements"][0]["config"]["parameters"].append({"name": "shape_cr", "inits": [1.0, 1.0]})
    check(errors.ModelError, "/measurements/0/config/parameters/3/inits", hf2ppl.compile, bad)
    bad["measurements"][0]["config"]["parameters"][3] = {"name": "shape_cr", "bounds": [[0, 2]] * 4}
    check(errors.ModelError, "/measurements/0/config/parameters/3/bounds", hf2ppl.compile, bad)


def test_lumi_without_configuration(ws):
    bad = copy.deepcopy(ws)
    bad["measurements"][0]["config"]["parameters"] = [p for p in bad["measurements"][0]["config"]["parameters"] if p["name"] != "lumi"]
    check(errors.ModelError, "/measurements/0/config/parameters", hf2ppl.compile, bad)


def test_bad_patches(shared_dir, ws):
    ps = shared_dir / "workspaces" / "patchset" / "example_patchset.json"
    bkg = shared_dir / "workspaces" / "patchset" / "example_bkgonly.json"
    check(errors.PatchError, "/patches", hf2ppl.load, bkg, patches=[(ps, "no_such_patch")])
    check(errors.PatchError, "does not apply", hf2ppl.load, ws, patches=[[{"op": "replace", "path": "/channels/9/name", "value": "x"}]])
    check(errors.PatchError, "not a valid JSON patch", hf2ppl.load, ws, patches=[[{"op": "explode", "path": "/channels"}]])


def test_unreadable_sources(tmp_path):
    check(errors.WorkspaceError, "does not exist", hf2ppl.load, tmp_path / "missing.json")
    f = tmp_path / "broken.json"
    f.write_text("{not json")
    check(errors.WorkspaceError, "not valid JSON", hf2ppl.load, f)
    check(errors.WorkspaceError, "must be a path", hf2ppl.load, 42)


def test_bad_params_and_options(shared_dir):
    path = shared_dir / "workspaces" / "2_bin_corr.json"
    m = hf2ppl.compile(path)
    check(errors.ParameterError, "unknown parameter", m.logdensity, {"nope": 1.0, "mu": 1.0, "correlated_bkg_uncertainty": 0.0})
    check(errors.ParameterError, "lacks free parameters", m.logdensity, {"mu": 1.0})
    check(errors.ParameterError, "got 3 values", m.logdensity, {"mu": [1.0, 2.0, 3.0], "correlated_bkg_uncertainty": 0.0})
    check(errors.ParameterError, "flat params", m.logdensity, np.ones(5))
    check(errors.ParameterError, "data has", m.logdensity, np.ones(2), np.ones(7))
    check(errors.ParameterError, "target", hf2ppl.compile, path, target="stan")
    check(errors.ParameterError, "constraints", hf2ppl.compile, path, constraints="maybe")
    check(errors.ParameterError, "not a parameter", hf2ppl.compile, path, priors={"nu": hf2ppl.priors.Normal()})
    check(errors.WorkspaceError, "interpcode", hf2ppl.compile, path, modifier_settings={"histosys": {"interpcode": "code9"}})
