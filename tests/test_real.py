"""hf2ppl's fits and CLs against an independent pyhf reference on every shared workspace.

Covers every top-level ``shared/workspaces/*.json``, the ``patchset/`` example (each patch and the
bkg-only), the real ATLAS bkg-only workspaces of ``real/`` (with and without POI) and every patch
of every ``real/*_patchset.json`` (57 staus signal points). pyhf is far too slow on the real
workspaces for CI (seconds to minutes per fit), so its numbers are precomputed, by pyhf alone, by
``tests/reference/make_pyhf_reference.py`` into ``tests/reference/pyhf_reference.json`` (see that
script's docstring for the exact method, optimisers and tolerances).

Per case:

* ``test_fit``: ``hf2ppl.fit`` converges by its own criterion and its 2NLL is at or below the
  deepest of pyhf's tight free fits (numpy+SLSQP, numpy+MIGRAD, jax+SLSQP) plus ``NLL_TOL``.
* ``test_hypotest``: CLs obs and the 5 expected CLs at mu=1 (qtilde, asymptotics) equal pyhf's
  to ``CLS_RTOL`` relative, wherever pyhf's own free fit inside that hypotest is as deep as
  hf2ppl's (within ``NLL_TOL``); where it is not, pyhf is the one that is off, and the comparison
  is skipped (counted and listed in the summary). Models without a free POI must refuse hypotest.
* hf2ppl's ``FitWarning``/``MultimodalWarning`` are re-emitted with the case id (pytest's warnings
  summary lists them); non-convergence fails, multimodality does not.
* ``test_reference_covers_every_workspace_on_disk``: every case on disk is in the JSON, with the
  same file hashes (a new or changed workspace cannot go untested silently).
* ``test_zz_summary`` prints the table (``pytest -s`` or ``-rA``) and warns a one-line summary.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import WORKSPACES

import hf2ppl
from hf2ppl.errors import HF2PPLError
from hf2ppl.infer.frequentist import FitWarning

try:
    from hf2ppl.infer.frequentist import MultimodalWarning
except ImportError:  # not re-exported by hf2ppl.infer.frequentist (yet)
    from hf2ppl.infer.frequentist._engine import MultimodalWarning

HERE = Path(__file__).resolve().parent
REF_PATH = HERE / "reference" / "pyhf_reference.json"
NLL_TOL = 1e-6  # on 2NLL
CLS_RTOL = 1e-5
SLOW_NPARS = 150  # cases with more parameters than this take ~minutes (ewk2L: 217) -> pytest.mark.slow


def _generator():
    spec = importlib.util.spec_from_file_location("make_pyhf_reference", HERE / "reference" / "make_pyhf_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()
REF = json.loads(REF_PATH.read_text()) if REF_PATH.exists() else {"cases": {}}
CASES = {k: v for k, v in REF["cases"].items() if "error" not in v}
# a case whose workspace files changed since the reference was made cannot be compared to it
_DISK = GEN.disk_cases(WORKSPACES) if WORKSPACES.is_dir() else {}
CASES = {k: v for k, v in CASES.items() if k in _DISK and v.get("files") == GEN.file_hashes(_DISK[k], WORKSPACES)}


#: the staus grid's patches share one structure: by default every 10th (6 of 57 points, spread over the
#: grid; tests/test_scan.py compares 10 more through the scan) keeps the suite inside CI's budget;
#: HF2PPL_ALL_PATCHES=1 runs every patch (about 15 minutes more on 2 cores)
_EVERY = 1 if os.environ.get("HF2PPL_ALL_PATCHES") else 10


def _params() -> list:
    out = []
    patches = sorted(k for k, c in CASES.items() if c.get("patches") and str(c.get("workspace", "")).startswith("real/"))
    keep = set(patches[::_EVERY])
    for cid, c in sorted(CASES.items()):
        if cid in patches and cid not in keep:
            continue
        marks = [pytest.mark.slow] if c.get("npars", 0) > SLOW_NPARS else []
        out.append(pytest.param(cid, marks=marks, id=cid))
    return out


PARAMS = _params()
ROWS: dict[str, dict] = {}  # case id -> what the summary prints


class RealWorkspaceNote(UserWarning):
    """hf2ppl warned on a shared workspace (re-emitted here with the case id)."""


# ---------------------------------------------------------------------------- hf2ppl side (cached per case)
def _compile_kwargs(case: dict) -> dict:
    kw = {"patches": [(str(WORKSPACES / p), n) for p, n in case["patches"]]}
    if case["poi_name"] != GEN.DEFAULT:
        kw["poi_name"] = case["poi_name"]
    return kw


def _record(w: list) -> list[tuple[str, str]]:
    return [(x.category.__name__, str(x.message)) for x in w if issubclass(x.category, FitWarning)]


def _release_engines() -> None:
    """Drop hf2ppl's cached fitting engines (private ``_engine._ENGINES``).

    Workaround, not a semantic change: each engine of a real-sized model holds ~1150 memory mappings
    of jitted code and the cache keeps up to ``_MAX_ENGINES`` = 64 of them, so one process that fits
    ~57 distinct staus models exceeds Linux's ``vm.max_map_count`` (65530) and dies inside XLA
    ("LLVM ERROR: Unable to allocate section memory", abort or segfault in the JAX cache write).
    Every result a test needs is computed in :func:`run` and cached, so engines are not needed after it.
    """
    mod = importlib.import_module("hf2ppl.infer.frequentist._engine")
    cache = getattr(mod, "_ENGINES", None)
    if cache is not None:
        cache.clear()


@functools.cache
def run(cid: str) -> dict:
    """Compile, fit and (where pyhf could) hypotest one case with hf2ppl; all timings and warnings kept."""
    try:
        return _run(cid)
    finally:
        _release_engines()


def _run(cid: str) -> dict:
    case = CASES[cid]
    out: dict = {"warnings": []}
    t = time.perf_counter()
    m = hf2ppl.compile(str(WORKSPACES / case["workspace"]), constraints="aux", **_compile_kwargs(case))
    out["t_compile"] = time.perf_counter() - t
    out["par_names"] = list(m.par_names)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = time.perf_counter()
        out["fit"] = hf2ppl.fit(m)
        out["t_fit"] = time.perf_counter() - t
    out["fit_warnings"] = _record(w)
    if case["hypotest"]["reference"] is None:
        try:
            hf2ppl.hypotest(m, GEN.POI_TEST, return_expected_set=True)
            out["hypotest_error"] = None
        except HF2PPLError as e:
            out["hypotest_error"] = e
        return out
    poi = m.ir.poi_name
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = time.perf_counter()
        cls_obs, band = hf2ppl.hypotest(m, GEN.POI_TEST, test_stat="qtilde", return_expected_set=True)
        out["t_hypotest"] = time.perf_counter() - t
    out["hypotest_warnings"] = _record(w)
    out["cls"] = np.array([float(cls_obs)] + [float(b) for b in band])
    # diagnostic only: hf2ppl's fixed-POI fit at mu=1, to compare with the one inside pyhf's hypotest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["fixed_twice_nll"] = 2.0 * hf2ppl.fit(m, fixed={poi: GEN.POI_TEST}).nll
    return out


def _reemit(cid: str, recorded: list[tuple[str, str]]) -> None:
    for cat, msg in recorded:
        warnings.warn(f"{cid}: hf2ppl {cat}: {msg}", RealWorkspaceNote, stacklevel=2)


def _row(cid: str) -> dict:
    return ROWS.setdefault(cid, {"case": cid})


def rel(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


# ---------------------------------------------------------------------------- tests
def test_reference_covers_every_workspace_on_disk():
    """The stored pyhf reference is complete and valid. Workspaces added to (or changed in) shared/ after it
    was made are not failures of hf2ppl: they are listed in a warning (the top-level and patchset ones are
    still compared to pyhf live by tests/test_frequentist.py); rerun the generator with --resume."""
    assert REF_PATH.exists(), f"{REF_PATH} missing: run python tests/reference/make_pyhf_reference.py"
    assert len(CASES) >= 1, "no usable case in the pyhf reference"
    failed = sorted(k for k, v in REF["cases"].items() if "error" in v)
    assert not failed, f"the pyhf reference failed on {failed}: see their 'error' in {REF_PATH.name}"
    missing = sorted(set(_DISK) - set(REF["cases"]))
    stale = sorted(k for k in _DISK if k in REF["cases"] and k not in CASES and "error" not in REF["cases"][k])
    used = {f for c in _DISK.values() for f in GEN.case_files(c)}
    unused = sorted(str(p.relative_to(WORKSPACES)) for p in WORKSPACES.rglob("*.json") if str(p.relative_to(WORKSPACES)) not in used)
    if missing or stale or unused:
        warnings.warn(f"pyhf reference out of date: {len(missing)} case(s) without reference {missing[:5]}, {len(stale)} changed {stale[:5]}, "
                      f"uncovered files {unused[:5]}; run python tests/reference/make_pyhf_reference.py --resume", RealWorkspaceNote, stacklevel=1)


@pytest.mark.parametrize("cid", PARAMS)
def test_fit(cid):
    ref = CASES[cid]
    r = run(cid)
    f = r["fit"]
    assert r["par_names"] == ref["par_names"], "hf2ppl and pyhf order the parameters differently"
    _reemit(cid, r["fit_warnings"])
    pyhf_best = ref["best_fit"]["twice_nll"]
    diff = 2.0 * f.nll - pyhf_best
    row = _row(cid)
    row.update(npars=ref["npars"], twice_nll=2.0 * f.nll, pyhf_twice_nll=pyhf_best, pyhf_opt=ref["best_fit"]["optimizer"], d2nll=diff,
               niter=f.niter, converged=f.converged, edm=f.edm, status=f.status, multimodal=f.multimodal,
               t=r["t_compile"] + r["t_fit"] + r.get("t_hypotest", 0.0),
               warns=sorted({c for c, _ in r["fit_warnings"] + r.get("hypotest_warnings", [])}))
    assert f.converged, f"{cid}: hf2ppl.fit did not converge: status {f.status} ({f.message}), EDM {f.edm:.3g}, {f.niter} iterations"
    assert diff <= NLL_TOL, (f"{cid}: hf2ppl's minimum is above pyhf's: 2NLL {2 * f.nll:.12f} vs {pyhf_best:.12f} "
                             f"({ref['best_fit']['optimizer']}), +{diff:.3g}")


@pytest.mark.parametrize("cid", PARAMS)
def test_hypotest(cid):
    ref = CASES[cid]
    r = run(cid)
    h = ref["hypotest"]
    row = _row(cid)
    if h["reference"] is None:
        row["cls"] = f"n/a ({h['reason']})"
        assert r["hypotest_error"] is not None, f"{cid}: pyhf cannot hypotest ({h['reason']}) but hf2ppl.hypotest returned a result"
        return
    _reemit(cid, r["hypotest_warnings"])
    p = h[h["reference"]]
    want = np.array([p["cls_obs"]] + p["cls_exp"])
    got = r["cls"]
    d = rel(got, want)
    hf_2nll = 2.0 * r["fit"].nll
    pyhf_free = p["twice_nll"]["free_data"]
    row.update(cls_rel=float(d.max()), cls_ref=h["reference"], cls_obs=float(got[0]), pyhf_free_above=pyhf_free - hf_2nll,
               pyhf_fixed_above=p["twice_nll"]["fixed_data"] - r["fixed_twice_nll"])
    other = h.get("numpy_scipy", {})
    if h["reference"] != "numpy_scipy" and other.get("success"):
        row["cls_rel_numpy_scipy"] = float(rel(got, [other["cls_obs"]] + other["cls_exp"]).max())
    bad = [n for n, _ in r["hypotest_warnings"] if n != MultimodalWarning.__name__]
    assert not bad, f"{cid}: hf2ppl.hypotest: a fit did not converge: {r['hypotest_warnings']}"
    if pyhf_free > hf_2nll + NLL_TOL:
        row["skipped"] = True
        pytest.skip(f"{cid}: pyhf's free fit in its hypotest is {pyhf_free - hf_2nll:.3g} above hf2ppl's minimum "
                    f"(2NLL {pyhf_free:.10f} vs {hf_2nll:.10f}): pyhf's CLs are off; comparison skipped")
    names = ["CLs_obs"] + [f"CLs_exp[{i}]" for i in range(5)]
    worst = int(np.argmax(d))
    assert d.max() <= CLS_RTOL, (f"{cid}: CLs differ from pyhf ({h['reference']}) by {d.max():.3g} relative at {names[worst]}: "
                                 f"hf2ppl {got.tolist()} vs pyhf {want.tolist()}")


def _cell(v, width: int, spec: str) -> str:
    if isinstance(v, (float, np.floating)) and spec:
        v = format(v, spec)
    elif isinstance(v, (list, tuple)):
        v = ",".join(map(str, v)) or "-"
    return f"{v!s:>{width}}" if width > 0 else f"{v!s:<{-width}}"


def test_zz_summary():
    """The table of all cases run in this session (runs last; prints with -s / -rA)."""
    if not ROWS:
        pytest.skip("no case ran")
    cols = [("case", -40, ""), ("npars", 5, ""), ("d2nll", 10, ".2e"), ("pyhf_opt", 12, ""), ("niter", 5, ""),
            ("converged", 9, ""), ("multimodal", 10, ""), ("cls_rel", 9, ".2e"), ("cls_rel_numpy_scipy", 19, ".2e"),
            ("pyhf_free_above", 15, ".2e"), ("pyhf_fixed_above", 16, ".2e"), ("t", 6, ".1f"), ("warns", -10, "")]
    lines = ["  ".join(_cell(c, w, "") for c, w, _ in cols)]
    for cid in sorted(ROWS):
        lines.append("  ".join(_cell(ROWS[cid].get(c, "-"), w, s) for c, w, s in cols))
    skipped = sorted(k for k, v in ROWS.items() if v.get("skipped"))
    above = sorted(k for k, v in ROWS.items() if v.get("d2nll", -1) > NLL_TOL)
    unconv = sorted(k for k, v in ROWS.items() if v.get("converged") is False)
    cls_bad = sorted(k for k, v in ROWS.items() if not v.get("skipped") and v.get("cls_rel", 0) > CLS_RTOL)
    warned = sorted(k for k, v in ROWS.items() if v.get("warns"))
    lines += [f"{len(ROWS)} cases; hf2ppl above pyhf: {above}; not converged: {unconv}; CLs off: {cls_bad}; "
              f"CLs comparison skipped (pyhf shallower): {len(skipped)} {skipped}; hf2ppl warned on: {warned}"]
    print("\n" + "\n".join(lines))
    warnings.warn(lines[-1], RealWorkspaceNote, stacklevel=1)
