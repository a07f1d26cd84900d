"""hf2ppl.scan: patchset scans against per-patch hf2ppl.hypotest and pyhf, on the shared patchset, the real
staus grid and a generated 200-point grid; Dask, resumability, bad patches, selection, output formats, the
exclusion figure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scan_grid

import hf2ppl
from hf2ppl.errors import ParameterError, PatchError

pytestmark = pytest.mark.usefixtures("tight_pyhf")

HERE = Path(__file__).resolve().parent
RTOL = 1e-5


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


# ---------------------------------------------------------------- the generated grid (200 points, 2 structures)
@pytest.fixture(scope="session")
def grid():
    bkg = scan_grid.bkgonly()
    return bkg, scan_grid.patchset(bkg)


@pytest.fixture(scope="session")
def grid_scan(grid):
    bkg, ps = grid
    return hf2ppl.scan(bkg, ps, chunk_size=64)


@pytest.fixture(scope="session")
def grid_reference(grid):
    ref = json.loads((HERE / "reference" / "scan_grid_reference.json").read_text())
    bkg, ps = grid
    if ref["bkgonly_sha256"] != scan_grid.digest(bkg) or ref["patchset_sha256"] != scan_grid.digest(ps):
        pytest.fail("tests/reference/scan_grid_reference.json is stale: rerun tests/reference/make_scan_reference.py")
    return ref["cases"]


def test_grid_is_what_the_issue_asks(grid):
    bkg, ps = grid
    nbins = sum(len(o["data"]) for o in bkg["observations"])
    assert nbins >= 50 and len(ps["patches"]) >= 200


def test_grid_scan_equals_pyhf(grid_scan, grid_reference):
    """Every one of the 200 points against pyhf's own per-patch hypotest (JAX backend, tight SLSQP)."""
    assert len(grid_scan) == 200 and not grid_scan.failed
    for row in grid_scan:
        ref = grid_reference[row["name"]]
        assert row["converged"], row
        assert _rel(row["cls_obs"], ref["cls_obs"]) < RTOL, (row["name"], row["cls_obs"], ref["cls_obs"])
        assert _rel(row["cls_exp"], ref["cls_exp"]) < RTOL, (row["name"], row["cls_exp"], ref["cls_exp"])


def test_grid_scan_equals_per_patch_hypotest(grid, grid_scan):
    """A spread of points of both structures against hf2ppl.hypotest on the patched workspace, compiled alone."""
    bkg, ps = grid
    for i in (0, 199):  # both structures (every 4th point, i % 4 == 3, has the extra histosys)
        p = ps["patches"][i]
        m = hf2ppl.compile(bkg, patches=[p], constraints="aux")
        cls, band = hf2ppl.hypotest(m, 1.0, return_expected_set=True)
        row = grid_scan[p["metadata"]["name"]]
        assert _rel(row["cls_obs"], cls) < 1e-7 and _rel(row["cls_exp"], band) < 1e-7


def test_structures_share_compiled_kernels(grid):
    """Patches whose signals differ only in yields (and in which systematics they carry) share one compiled
    kernel: the number of kernel sets built is the number of structures (2 in the grid), not of patches."""
    from hf2ppl import histfactory as hf
    from hf2ppl.ir import build
    from hf2ppl.workspace import load_patched

    bkg, ps = grid
    keys = set()
    for p in ps["patches"][:40]:
        ir = build(load_patched(bkg, p["patch"], p["metadata"]["name"]))
        keys.add(hf.tensors(ir).structure_key(entries=False))
    assert len(keys) == 2


# ---------------------------------------------------------------- the shared patchset and the real staus grid
def test_shared_patchset_equals_pyhf_and_hypotest(shared_dir):
    import pyhf

    bk = shared_dir / "workspaces" / "patchset" / "example_bkgonly.json"
    psf = shared_dir / "workspaces" / "patchset" / "example_patchset.json"
    res = hf2ppl.scan(bk, psf, limits=True)
    ws = pyhf.Workspace(json.loads(bk.read_text()))
    pset = pyhf.PatchSet(json.loads(psf.read_text()))
    assert len(res) == len(pset.patches)
    for p in pset.patches:
        w = pyhf.Workspace(p.apply(ws))
        model = w.model()
        cls, band = pyhf.infer.hypotest(1.0, w.data(model), model, test_stat="qtilde", return_expected_set=True)
        row = res[p.name]
        assert _rel(row["cls_obs"], cls) < RTOL and _rel(row["cls_exp"], band) < RTOL
        m = hf2ppl.compile(ws, patches=[p.patch], constraints="aux")
        obs, exp = hf2ppl.upper_limit(m)
        assert _rel(row["ul_obs"], obs) < 1e-6 and _rel(row["ul_exp"], exp) < 1e-6


def test_staus_points_equal_pyhf(shared_dir):
    """10 points of the real 57-point staus grid against pyhf's per-patch CLs (tests/reference, tight fits).

    The staus likelihood is multimodal in its nuisance parameters. Where every fit behind the CLs reached
    pyhf's minimum (2·NLL equal to 1e-6), CLs must equal pyhf's to 1e-5. Where a fit differs, hf2ppl's must be
    the deeper minimum (pyhf's is then a local one) and the row must say the likelihood is multimodal."""
    ref = json.loads((HERE / "reference" / "pyhf_reference.json").read_text())["cases"]
    real = shared_dir / "workspaces" / "real"
    ps = json.loads((real / "staus_SUSY-2018-04_patchset.json").read_text())
    names = [p["metadata"]["name"] for p in ps["patches"]][::6][:10]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hf2ppl.infer.frequentist.MultimodalWarning)
        res = hf2ppl.scan(real / "staus_SUSY-2018-04_BkgOnly.json", ps, patches=names)
    assert res.names == names
    same = 0
    for row in res:
        case = ref[f"staus-{row['name']}"]["hypotest"]
        r = case[case["reference"]]
        assert row["converged"] and not row["error"]
        mine, theirs = row["twice_nll"], r["twice_nll"]
        keys = ("free_data", "fixed_data", "asimov_pars")
        if all(abs(mine[k] - theirs[k]) < 1e-6 for k in keys):
            same += 1
            assert _rel(row["cls_obs"], r["cls_obs"]) < RTOL, (row["name"], row["cls_obs"], r["cls_obs"])
            assert _rel(row["cls_exp"], r["cls_exp"]) < RTOL, (row["name"], row["cls_exp"], r["cls_exp"])
            assert _rel(mine["fixed_asimov"], theirs["fixed_asimov"]) < 1e-8
        else:
            for k in keys:
                assert mine[k] < theirs[k] + 1e-6, (row["name"], k, mine[k], theirs[k])  # never a worse minimum
            assert row["multimodal"] and any("multimodal" in w for w in row["warnings"]), row["name"]


# ---------------------------------------------------------------- Dask: see test_docs_scan_page_runs_as_written (the page's
# Dask block scans through a 2-worker LocalCluster and compares with the in-process scan)


# ---------------------------------------------------------------- resumable output
_KILL_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import hf2ppl, scan_grid
bkg = scan_grid.bkgonly()
hf2ppl.scan(bkg, scan_grid.patchset(bkg), patches={names!r}, output={out!r}, chunk_size=4, progress=False)
"""


def test_killed_scan_resumes_complete_and_duplicate_free(tmp_path, grid, grid_scan):
    bkg, ps = grid
    names = grid_scan.names[::5][:32]
    out = tmp_path / "scan.jsonl"
    code = _KILL_SCRIPT.format(tests=str(HERE), names=names, out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 1 + 8:  # header + two chunks
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the scan ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    with open(out, "a") as f:  # a crash in the middle of a line: the cut line is dropped on resume
        f.write('{"name": "grid_')
    partial = hf2ppl.ScanResult.read(out)
    assert 8 <= len(partial) < len(names)
    res = hf2ppl.scan(bkg, ps, patches=names, output=out, chunk_size=4)
    assert res.names == names
    again = hf2ppl.ScanResult.read(out)
    assert sorted(again.names) == sorted(names) and len(again.names) == len(set(again.names))
    for row in res:
        np.testing.assert_allclose(row["cls_obs"], grid_scan[row["name"]]["cls_obs"], rtol=1e-9)
    with pytest.raises(ParameterError, match="other options"):
        hf2ppl.scan(bkg, ps, patches=names, output=out, poi_value=2.0)


# ---------------------------------------------------------------- bad patches, digests, selection
def test_invalid_patch_is_reported_and_the_scan_goes_on(grid, grid_scan):
    bkg, ps = grid
    bad = json.loads(json.dumps(ps))
    bad["patches"] = bad["patches"][:3]
    bad["patches"][1]["patch"][0]["path"] = "/channels/7/samples/0"  # no such channel
    with pytest.warns(hf2ppl.infer.frequentist.FitWarning, match="could not be evaluated"):
        res = hf2ppl.scan(bkg, bad)
    assert len(res) == 3 and len(res.failed) == 1
    err = res.failed[0]
    assert err["name"] == bad["patches"][1]["metadata"]["name"] and "/channels/7" in err["error"] and "\n" not in err["error"]
    for row in (res.rows[0], res.rows[2]):
        assert row["error"] is None and abs(row["cls_obs"] - grid_scan[row["name"]]["cls_obs"]) < 1e-9


def test_digest_mismatch_is_refused(grid):
    bkg, ps = grid
    other = json.loads(json.dumps(bkg))
    other["observations"][0]["data"][0] += 1.0
    with pytest.raises(PatchError, match="digest"):
        hf2ppl.scan(other, ps, patches=ps["patches"][0]["metadata"]["name"])
    res = hf2ppl.scan(other, ps, patches=ps["patches"][0]["metadata"]["name"], verify=False)
    assert len(res) == 1 and not res.failed


def test_selection_by_name_values_and_labels(grid):
    bkg, ps = grid
    from hf2ppl.scans import select_patches

    names = [p["metadata"]["name"] for p in ps["patches"]]
    assert [p["metadata"]["name"] for p in select_patches(ps, names[3])] == [names[3]]
    vals = tuple(ps["patches"][7]["metadata"]["values"])
    assert [p["metadata"]["name"] for p in select_patches(ps, [vals])] == [names[7]]
    sel = select_patches(ps, {"m2": 0.0})
    assert len(sel) == 20 and all(p["metadata"]["values"][1] == 0.0 for p in sel)
    assert len(select_patches(ps, lambda md: md["values"][0] > 1000)) == int(np.sum(scan_grid.M1 > 1000)) * len(scan_grid.M2)
    with pytest.raises(PatchError, match="no patch named"):
        select_patches(ps, ["nope"])
    with pytest.raises(ParameterError, match="unknown metadata labels"):
        select_patches(ps, {"mass": 1})


# ---------------------------------------------------------------- formats and the figure
def test_formats_round_trip(tmp_path, grid_scan):
    df = grid_scan.to_pandas()
    assert len(df) == 200 and {"m1", "m2", "cls_obs", "cls_exp", "cls_exp_m1", "cls_exp_p1", "converged"} <= set(df.columns)
    ds = grid_scan.to_xarray()
    assert ds["cls_exp"].shape == (200, 5) and list(ds["band"].values) == [-2, -1, 0, 1, 2]
    np.testing.assert_array_equal(ds["cls_obs"].values, df["cls_obs"].to_numpy())
    path = tmp_path / "grid.jsonl"
    grid_scan.to_jsonl(path)
    back = hf2ppl.ScanResult.read(path)
    assert back.names == grid_scan.names and back.labels == ["m1", "m2"]
    assert back.rows[5]["cls_exp"] == grid_scan.rows[5]["cls_exp"]


def test_exclusion_plot_from_a_real_scan(tmp_path, grid_scan):
    import matplotlib

    matplotlib.use("Agg")
    fig = hf2ppl.plot_exclusion(grid_scan, x="m1", y="m2")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "m1" and ax.get_ylabel() == "m2"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("Observed" in t for t in labels) and any("Expected" in t for t in labels) and any("1σ" in t for t in labels)
    out = Path(os.environ.get("HF2PPL_ARTIFACTS", tmp_path))  # set it to keep the PNG and look at it
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "exclusion_grid.png", dpi=110)
    assert (out / "exclusion_grid.png").stat().st_size > 10_000
    with pytest.raises(ParameterError, match="label"):
        hf2ppl.plot_exclusion(grid_scan, x="m1", y="mass")
    with pytest.raises(ParameterError, match="two metadata labels"):
        hf2ppl.plot_exclusion(hf2ppl.ScanResult(grid_scan.rows, ["m1"]))
    with pytest.raises(ParameterError, match="do not span"):
        hf2ppl.plot_exclusion(hf2ppl.ScanResult(grid_scan.rows[:10], ["m1", "m2"]))  # one value of m1


def test_scan_argument_errors(grid):
    bkg, ps = grid
    with pytest.raises(ParameterError, match="scheduler"):
        hf2ppl.scan(bkg, ps, patches=[], scheduler="mpi")
    with pytest.raises(ParameterError, match="level"):
        hf2ppl.scan(bkg, ps, limits=True, level=95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(hf2ppl.scan(bkg, ps, patches=[])) == 0


def test_cli_scan(tmp_path, shared_dir):
    bk = shared_dir / "workspaces" / "patchset" / "example_bkgonly.json"
    psf = shared_dir / "workspaces" / "patchset" / "example_patchset.json"
    out = tmp_path / "scan.jsonl"
    cmd = [sys.executable, "-m", "hf2ppl", "scan", str(bk), str(psf), "--limits", "--output", str(out), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-800:]
    doc = json.loads(p.stdout)
    assert doc["labels"] == ["x"] and len(doc["rows"]) == 1 and doc["rows"][0]["ul_obs"] > 0
    assert hf2ppl.ScanResult.read(out).names == [doc["rows"][0]["name"]]
    p = subprocess.run([sys.executable, "-m", "hf2ppl", "scan", str(tmp_path / "nope.json"), str(psf)], capture_output=True, text=True)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_docs_scan_page_runs_as_written(tmp_path, monkeypatch, grid):
    """docs/scan.md's python blocks, in order, on 6 points of the generated grid saved as the page's files
    (one of them scans through a dask.distributed.LocalCluster with 2 workers)."""
    import re

    bkg, ps = grid
    small = dict(ps, patches=ps["patches"][40:43] + ps["patches"][50:53])  # two values of m1, three of m2
    (tmp_path / "BkgOnly.json").write_text(json.dumps(bkg))
    (tmp_path / "patchset.json").write_text(json.dumps(small))
    monkeypatch.chdir(tmp_path)
    text = (HERE.parent / "docs" / "scan.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 3
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, code in enumerate(blocks):
            exec(compile(code, f"docs/scan.md[block {i}]", "exec"), ns)  # noqa: S102
    assert (tmp_path / "exclusion.png").exists() and len(ns["res"]) == 6 and len(ns["one"]) == 1
    # the Dask block: a 2-worker LocalCluster gives the in-process results (other batch compositions: equal to
    # rounding, 1e-9 relative seen) and the same fit flags
    for a, b in zip(ns["dres"].rows, ns["res"].rows):
        np.testing.assert_allclose(a["cls_obs"], b["cls_obs"], rtol=1e-7)
        np.testing.assert_allclose(a["cls_exp"], b["cls_exp"], rtol=1e-7)
        assert a["converged"] == b["converged"] and a["multimodal"] == b["multimodal"]
