"""Independent pyhf reference for tests/test_real.py: writes tests/reference/pyhf_reference.json.

This script is the *independent method* that produced ``pyhf_reference.json``. It never imports
hf2ppl: every number in the JSON comes from pyhf (0.7.x) alone, with its own model code, its own
optimisers and its own hypothesis test. Rerun it whenever a workspace under ``shared/workspaces``
changes or is added::

    python tests/reference/make_pyhf_reference.py              # all cases, 2 processes
    python tests/reference/make_pyhf_reference.py --only staus  # regex on case ids, merged into the JSON
    python tests/reference/make_pyhf_reference.py --resume      # only cases missing or stale in the JSON

Cases (``disk_cases()``; tests/test_real.py asserts that every one of them is in the JSON):

* every top-level ``shared/workspaces/*.json`` (id = file stem);
* ``patchset/``: every patch of ``example_patchset.json`` on ``example_bkgonly.json``
  (id ``patchset-<patch>``) and the bkg-only alone (``patchset-bkgonly``), as tests/conftest.py;
* ``real/``: every ``*_BkgOnly.json`` with its measurement POI (id ``real-<stem>``, only when
  that POI exists in the bkg-only workspace) and without POI, ``poi_name=None``
  (id ``real-<stem>-nopoi``), and every patch of every ``real/*_patchset.json`` on its bkg-only
  (id ``<analysis>-<patch>``, e.g. ``staus-DS_100_1_Staus``).

Per case, on pyhf's observed data (main + auxdata, ``ws.data(model)``):

``fits``: the free maximum-likelihood fit ``pyhf.infer.mle.fit(data, model, return_fitted_val=True)``
  with suggested init/bounds/fixed, by three tight optimisers:

  * ``numpy_scipy``: numpy backend, ``pyhf.optimize.scipy_optimizer(tolerance=1e-10)`` (SLSQP,
    finite-difference gradients);
  * ``numpy_minuit``: numpy backend, ``pyhf.optimize.minuit_optimizer(tolerance=1e-6)``
    (MIGRAD, EDM < 0.002 * tolerance * errordef);
  * ``jax_scipy``: jax backend (64 bit), ``scipy_optimizer(tolerance=1e-13)``, i.e. SLSQP with
    pyhf's autodiff gradients (the finite-difference gradients of the numpy backend limit SLSQP to
    ~1e-4 sigma in the parameters, which is not enough for 1e-5 relative CLs at small CLs).

  Each records ``twice_nll`` (pyhf's fitted value), ``twice_nll_numpy`` (``-2 model.logpdf`` at
  the returned point, re-evaluated with the numpy backend, so all three are on one scale),
  ``success`` (pyhf raises ``FailedMinimization`` when the optimiser reports failure; the point it
  reached is still recorded), ``message`` and ``seconds``.
  ``best_fit`` = the lowest ``twice_nll_numpy`` over the three (any point is a valid upper bound on
  the minimum, successful or not), which optimiser reached it and its parameters ``x``.

``hypotest``: where the model has a free POI, ``pyhf.infer.hypotest(1.0, data, model,
  test_stat="qtilde", return_expected_set=True)`` (asymptotics), once with the briefed optimiser
  (``numpy_scipy``, tolerance 1e-10) and once with ``jax_scipy`` (tolerance 1e-13), each with
  ``cls_obs``, ``cls_exp`` (pyhf's 5-value band order), and from the calculator's fitted parameters
  the 2NLLs of its fits (``free_data``, ``fixed_data`` at mu=1, ``asimov_pars`` = fixed mu=0 fit to
  data, ``free_asimov``, ``fixed_asimov``) and ``muhat``. ``hypotest.reference`` names the one the
  tests compare against: ``jax_scipy`` when it succeeded, otherwise ``numpy_scipy``.

Also stored: pyhf/scipy/iminuit/jax versions, optimiser settings, the date, and the sha256 of every
input file, so the tests can tell a stale reference from a changed workspace.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SHARED = Path(os.environ.get("HF2PPL_SHARED", ROOT.parent / "shared"))
WORKSPACES = SHARED / "workspaces"
OUTPUT = HERE / "pyhf_reference.json"

SCIPY_TOL = 1e-10
MINUIT_TOL = 1e-6
JAX_SCIPY_TOL = 1e-13
POI_TEST = 1.0
DEFAULT = "<measurement>"  # poi_name not given: the measurement's POI


# ---------------------------------------------------------------------------- cases
def _short(stem: str) -> str:
    """``staus_SUSY-2018-04_BkgOnly`` -> ``staus``: the analysis prefix of a real workspace."""
    return stem.split("_")[0]


def _bkg_for_patchset(ps: Path) -> Path:
    return ps.with_name(ps.name.replace("_patchset.json", "_BkgOnly.json"))


def _patch_names(ps: Path) -> list[str]:
    return [p["metadata"]["name"] for p in json.loads(ps.read_text())["patches"]]


def _rel(p: Path) -> str:
    return str(p.relative_to(WORKSPACES))


def disk_cases(workspaces: Path = WORKSPACES) -> dict[str, dict]:
    """``{case id: {"workspace", "patches", "poi_name"}}`` (paths relative to ``workspaces``) for every
    workspace on disk; ``poi_name`` is ``DEFAULT`` for the measurement's POI or None for none."""
    cases: dict[str, dict] = {}

    def add(cid, ws, patches=(), poi=DEFAULT):
        assert cid not in cases, cid
        cases[cid] = {"workspace": str(Path(ws).relative_to(workspaces)),
                      "patches": [[str(Path(p).relative_to(workspaces)), n] for p, n in patches], "poi_name": poi}

    for f in sorted(workspaces.glob("*.json")):
        add(f.stem, f)
    bkg, ps = workspaces / "patchset" / "example_bkgonly.json", workspaces / "patchset" / "example_patchset.json"
    if ps.exists():
        for n in _patch_names(ps):
            add(f"patchset-{n}", bkg, [(ps, n)])
    if bkg.exists():
        add("patchset-bkgonly", bkg)
    real = workspaces / "real"
    for f in sorted(real.glob("*_BkgOnly.json")):
        spec = json.loads(f.read_text())
        poi = spec["measurements"][0]["config"]["poi"]
        names = {m["name"] for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]}
        if poi in names:  # the POI exists in the bkg-only itself (else only after patching)
            add(f"real-{f.stem}", f)
        add(f"real-{f.stem}-nopoi", f, poi=None)
    for ps in sorted(real.glob("*_patchset.json")):
        bkg = _bkg_for_patchset(ps)
        for n in _patch_names(ps):
            add(f"{_short(ps.stem)}-{n}", bkg, [(ps, n)])
    return cases


def case_files(case: dict) -> list[str]:
    return [case["workspace"]] + sorted({p for p, _ in case["patches"]})


def file_hashes(case: dict, workspaces: Path = WORKSPACES, _cache: dict = {}) -> dict[str, str]:  # noqa: B006
    out = {}
    for rel in case_files(case):
        p = workspaces / rel
        if p not in _cache:
            _cache[p] = hashlib.sha256(p.read_bytes()).hexdigest()
        out[rel] = _cache[p]
    return out


# ---------------------------------------------------------------------------- pyhf side
_WS_CACHE: dict = {}


def _pyhf_model(case: dict):
    """pyhf's model and observed data (main + aux) for a case (cached per case and backend)."""
    import pyhf

    mkey = (json.dumps(case, sort_keys=True), pyhf.tensorlib.name)
    if mkey in _WS_CACHE:
        return _WS_CACHE[mkey]
    key = case["workspace"]
    if key not in _WS_CACHE:
        _WS_CACHE[key] = pyhf.Workspace(json.loads((WORKSPACES / key).read_text()))
    ws = _WS_CACHE[key]
    patches = []
    for ps_rel, name in case["patches"]:
        pkey = ("ps", ps_rel)
        if pkey not in _WS_CACHE:
            _WS_CACHE[pkey] = pyhf.PatchSet(json.loads((WORKSPACES / ps_rel).read_text()))
        patches.append(_WS_CACHE[pkey][name])
    kw = {} if case["poi_name"] == DEFAULT else {"poi_name": case["poi_name"]}
    model = ws.model(patches=patches, **kw)
    _WS_CACHE[mkey] = model, ws.data(model)
    return _WS_CACHE[mkey]


OPTIMIZERS = {
    "numpy_scipy": ("numpy", "scipy", SCIPY_TOL),
    "numpy_minuit": ("numpy", "minuit", MINUIT_TOL),
    "jax_scipy": ("jax", "scipy", JAX_SCIPY_TOL),
}


def _set(name: str):
    import pyhf

    backend, opt, tol = OPTIMIZERS[name]
    optimizer = pyhf.optimize.scipy_optimizer(tolerance=tol) if opt == "scipy" else pyhf.optimize.minuit_optimizer(tolerance=tol)
    pyhf.set_backend(backend, optimizer, precision="64b")


def _twice_nll_numpy(case: dict, x) -> float:
    """-2 logpdf at x with the numpy backend (the common scale of all optimisers)."""
    import numpy as np
    import pyhf

    old = pyhf.get_backend()
    pyhf.set_backend("numpy", old[1], precision="64b")
    try:
        model, data = _pyhf_model(case)
        return float(-2.0 * model.logpdf(np.asarray(x, float), np.asarray(data, float))[0])
    finally:
        pyhf.set_backend(*old)


def _free_fit(case: dict, name: str) -> dict:
    import numpy as np
    import pyhf

    _set(name)
    model, data = _pyhf_model(case)
    t = time.perf_counter()
    out = {"success": True, "message": ""}
    try:
        x, val = pyhf.infer.mle.fit(pyhf.tensorlib.astensor(data), model, return_fitted_val=True)
        x, val = np.asarray(x, float), float(val)
    except pyhf.exceptions.FailedMinimization as e:
        res = e.result
        x, val = np.asarray(res.x, float), float(res.fun)
        out.update(success=False, message=str(getattr(res, "message", e)))
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        return {"success": False, "message": f"{type(e).__name__}: {e}", "twice_nll": None, "twice_nll_numpy": None,
                "seconds": time.perf_counter() - t, "x": None}
    out["seconds"] = time.perf_counter() - t
    out["twice_nll"] = val
    out["twice_nll_numpy"] = _twice_nll_numpy(case, x)
    out["x"] = x.tolist()
    return out


def _hypotest(case: dict, name: str) -> dict:
    import numpy as np
    import pyhf

    _set(name)
    model, data = _pyhf_model(case)
    data = pyhf.tensorlib.astensor(data)
    t = time.perf_counter()
    try:
        cls_obs, band, calc = pyhf.infer.hypotest(POI_TEST, data, model, test_stat="qtilde",
                                                  return_expected_set=True, return_calculator=True)
    except pyhf.exceptions.FailedMinimization as e:
        return {"success": False, "message": str(getattr(e.result, "message", e)), "seconds": time.perf_counter() - t}
    except Exception as e:  # noqa: BLE001
        return {"success": False, "message": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t}
    secs = time.perf_counter() - t
    fp = calc.fitted_pars
    asimov = model.expected_data(fp.asimov_pars)

    def tn(pars, d):
        return float(-2.0 * model.logpdf(pars, d)[0])

    return {
        "success": True, "message": "", "seconds": secs,
        "cls_obs": float(cls_obs), "cls_exp": [float(b) for b in band],
        "muhat": float(np.asarray(fp.free_fit_to_data)[model.config.poi_index]),
        "twice_nll": {"free_data": tn(fp.free_fit_to_data, data), "fixed_data": tn(fp.fixed_poi_fit_to_data, data),
                      "asimov_pars": tn(fp.asimov_pars, data), "free_asimov": tn(fp.free_fit_to_asimov, asimov),
                      "fixed_asimov": tn(fp.fixed_poi_fit_to_asimov, asimov)},
    }


def compute(item: tuple[str, dict]) -> tuple[str, dict]:
    cid, case = item
    t0 = time.perf_counter()
    logging.getLogger("pyhf").setLevel(logging.CRITICAL)
    try:
        _set("numpy_scipy")
        model, _ = _pyhf_model(case)
        cfg = model.config
        poi = cfg.poi_index
        free_poi = poi is not None and not cfg.suggested_fixed()[poi]
        rec = {**case, "files": file_hashes(case), "npars": cfg.npars, "par_names": list(cfg.par_names),
               "poi": cfg.poi_name, "poi_free": bool(free_poi), "fits": {}}
        for name in OPTIMIZERS:
            rec["fits"][name] = _free_fit(case, name)
        ok = {k: v for k, v in rec["fits"].items() if v["twice_nll_numpy"] is not None}
        best = min(ok, key=lambda k: ok[k]["twice_nll_numpy"])
        rec["best_fit"] = {"optimizer": best, "twice_nll": ok[best]["twice_nll_numpy"], "success": ok[best]["success"],
                           "x": ok[best]["x"]}
        for f in rec["fits"].values():  # keep the JSON small: only the best point's parameters
            f.pop("x", None)
        if free_poi:
            h = {"numpy_scipy": _hypotest(case, "numpy_scipy"), "jax_scipy": _hypotest(case, "jax_scipy")}
            h["reference"] = "jax_scipy" if h["jax_scipy"]["success"] else ("numpy_scipy" if h["numpy_scipy"]["success"] else None)
            rec["hypotest"] = h
        else:
            why = "the model has no POI" if poi is None else f"the POI {cfg.poi_name!r} is fixed"
            rec["hypotest"] = {"reference": None, "reason": why}
        rec["seconds"] = time.perf_counter() - t0
        return cid, rec
    except Exception:  # noqa: BLE001 - reported in the JSON and on stderr
        return cid, {**case, "error": traceback.format_exc(), "seconds": time.perf_counter() - t0}


def _init_worker():
    logging.getLogger("pyhf").setLevel(logging.CRITICAL)
    import warnings

    warnings.simplefilter("ignore")


# ---------------------------------------------------------------------------- driver
def _versions() -> dict:
    import iminuit
    import jax
    import numpy
    import pyhf
    import scipy

    return {"pyhf": pyhf.__version__, "scipy": scipy.__version__, "iminuit": iminuit.__version__,
            "jax": jax.__version__, "numpy": numpy.__version__, "python": sys.version.split()[0]}


def _write(doc: dict) -> None:
    doc["cases"] = dict(sorted(doc["cases"].items()))
    tmp = OUTPUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(OUTPUT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="regex on case ids (others kept from the existing JSON)")
    ap.add_argument("--resume", action="store_true", help="compute only cases missing, failed or stale in the JSON")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args(argv)

    cases = disk_cases()
    old = json.loads(OUTPUT.read_text()) if OUTPUT.exists() else {"cases": {}}
    todo = dict(cases)
    if args.only:
        todo = {k: v for k, v in todo.items() if re.search(args.only, k)}
    if args.resume:
        todo = {k: v for k, v in todo.items()
                if k not in old["cases"] or "error" in old["cases"][k] or old["cases"][k].get("files") != file_hashes(v)}
    keep = {k: v for k, v in old["cases"].items() if k in cases and k not in todo} if (args.only or args.resume) else {}
    doc = {
        "generator": "tests/reference/make_pyhf_reference.py",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "settings": {
            "optimizers": {k: {"backend": b, "optimizer": f"pyhf.optimize.{o}_optimizer(tolerance={t!r})"} for k, (b, o, t) in OPTIMIZERS.items()},
            "precision": "64b", "poi_test": POI_TEST, "test_stat": "qtilde", "calctype": "asymptotics",
            "hypotest_reference": "jax_scipy if it succeeded else numpy_scipy",
            "best_fit": "lowest twice_nll_numpy over fits.*",
        },
        "cases": keep,
    }
    # the slowest first (most parameters), so that the two processes finish together
    order = sorted(todo.items(), key=lambda kv: -(WORKSPACES / kv[1]["workspace"]).stat().st_size)
    print(f"{len(order)} cases to compute ({len(keep)} kept), {args.processes} processes", flush=True)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")  # jax does not survive fork
    with ctx.Pool(args.processes, initializer=_init_worker, maxtasksperchild=None) as pool:
        for i, (cid, rec) in enumerate(pool.imap_unordered(compute, order), 1):
            doc["cases"][cid] = rec
            if "error" in rec:
                print(f"[{i}/{len(order)}] {cid}: ERROR\n{rec['error']}", file=sys.stderr, flush=True)
            else:
                h = rec["hypotest"]
                ref = h.get(h["reference"]) if h["reference"] else None
                print(f"[{i}/{len(order)}] {cid}: 2nll={rec['best_fit']['twice_nll']:.10f} ({rec['best_fit']['optimizer']})"
                      + (f" CLs={ref['cls_obs']:.6g}" if ref else f" (no hypotest: {h.get('reason', 'failed')})")
                      + f"  {rec['seconds']:.1f}s  [{time.perf_counter() - t0:.0f}s]", flush=True)
            _write(doc)
    _write(doc)
    missing = sorted(set(cases) - set(doc["cases"]))
    errors = sorted(k for k, v in doc["cases"].items() if "error" in v)
    print(f"wrote {OUTPUT}: {len(doc['cases'])} cases; {len(missing)} on disk missing {missing[:5]}; errors {errors}")
    return 1 if missing or errors else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    sys.exit(main())
