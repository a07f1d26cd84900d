"""Patchset scans: hf2ppl.scan (in-process and on a Dask LocalCluster) vs a pyhf loop over the patches.

Grids: the real 57-point staus grid (../shared/workspaces/real) and the generated 200-point grid of
tests/scan_grid.py (55 bins, two model structures). Per grid, side by side in one run:

* hf2ppl, fresh process, **cold** (an empty persistent compilation cache: every kernel compiles) and with
  the cache **warm** (the same command again): the process wall time, import included;
* hf2ppl in this process, warm (second scan of the grid);
* hf2ppl on ``dask.distributed.LocalCluster`` with ``--workers`` processes (cluster start included; the
  workers read the warm persistent cache);
* pyhf numpy (scipy) and pyhf jax (scipy, x64) looping over a spread of ``--pyhf-subset`` patches
  (patch + model + ``hypotest(1.0, return_expected_set=True)`` per patch), extrapolated to the grid.

All do the same work per patch: CLs obs + the 5-value expected band (qtilde, asymptotics). Ratios are
patches/s relative to pyhf numpy. ``--device-patches N``: also scan N generated patches (a larger grid of
the same family) in-process, for the GPU machine::

    python benchmarks/scan.py                       # both grids
    python benchmarks/scan.py --grid generated --device-patches 10000 --no-pyhf --no-dask
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
from common import REAL, machine  # noqa: E402

STAUS = (REAL / "staus_SUSY-2018-04_BkgOnly.json", REAL / "staus_SUSY-2018-04_patchset.json")


def grids(which: str) -> dict[str, tuple]:
    import scan_grid

    out = {}
    if which in ("staus", "both"):
        out["staus (57 points, 120 pars)"] = (json.loads(STAUS[0].read_text()), json.loads(STAUS[1].read_text()))
    if which in ("generated", "both"):
        bkg = scan_grid.bkgonly()
        out["generated (200 points, 55 bins)"] = (bkg, scan_grid.patchset(bkg))
    return out


def fresh_process(bkg: dict, ps: dict, cache: str, tmp: Path) -> float:
    """Wall time of ``python -c 'import hf2ppl; hf2ppl.scan(bkg, ps)'`` in a new process."""
    (tmp / "bkg.json").write_text(json.dumps(bkg))
    (tmp / "ps.json").write_text(json.dumps(ps))
    code = ("import warnings; warnings.simplefilter('ignore'); import hf2ppl; "
            f"r = hf2ppl.scan({str(tmp / 'bkg.json')!r}, {str(tmp / 'ps.json')!r}, progress=False); assert not r.failed")
    env = dict(os.environ, HF2PPL_CACHE_DIR=cache)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0


def pyhf_loop(bkg: dict, ps: dict, backend: str, k: int) -> tuple[float, int]:
    """Seconds per patch of a pyhf loop over ``k`` patches spread over the grid (the first one of the jax
    backend is run once untimed: pyhf's jit of a new model is then measured as it is in a loop)."""
    import pyhf

    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    pyhf.set_backend(backend, pyhf.optimize.scipy_optimizer())
    ws = pyhf.Workspace(bkg)
    pset = pyhf.PatchSet(ps)
    idx = np.unique(np.linspace(0, len(pset.patches) - 1, k).round().astype(int))
    patches = [pset.patches[i] for i in idx]

    def one(p):
        w = pyhf.Workspace(p.apply(ws))
        m = w.model()
        return pyhf.infer.hypotest(1.0, w.data(m), m, test_stat="qtilde", return_expected_set=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if backend == "jax":
            one(patches[0])
        t0 = time.perf_counter()
        for p in patches:
            one(p)
    return (time.perf_counter() - t0) / len(patches), len(patches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=("staus", "generated", "both"), default="both")
    ap.add_argument("--pyhf-subset", type=int, default=6, help="patches the pyhf loops time (extrapolated)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-pyhf", action="store_true")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--no-fresh", action="store_true", help="skip the fresh-process (cold/warm cache) runs")
    ap.add_argument("--device-patches", type=int, default=0)
    args = ap.parse_args()

    import hf2ppl

    print(f"# machine: {machine()}")
    rows = []
    for name, (bkg, ps) in grids(args.grid).items():
        n = len(ps["patches"])
        r = {"grid": name, "n": n}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if not args.no_fresh:
                cache = str(tmp / "cache")
                r["cold"] = fresh_process(bkg, ps, cache, tmp)
                r["fresh_warm_cache"] = fresh_process(bkg, ps, cache, tmp)
                print(f"{name}: fresh process, cold cache {r['cold']:.1f} s, warm cache {r['fresh_warm_cache']:.1f} s", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf2ppl.scan(bkg, ps, progress=False)
            t0 = time.perf_counter()
            res = hf2ppl.scan(bkg, ps, progress=False)
            r["warm"] = time.perf_counter() - t0
            r["flagged"], r["failed"] = len(res.flagged), len(res.failed)
            print(f"{name}: in-process warm {r['warm']:.1f} s ({n / r['warm']:.2f} patches/s; {r['flagged']} flagged, {r['failed']} failed)",
                  flush=True)
            if not args.no_dask:
                t0 = time.perf_counter()
                resd = hf2ppl.scan(bkg, ps, scheduler="processes", workers=args.workers, progress=False,
                                   chunk_size=max(4, -(-n // (4 * args.workers))))
                r["dask"] = time.perf_counter() - t0
                same = max(abs(a["cls_obs"] - b["cls_obs"]) for a, b in zip(res, resd))
                print(f"{name}: Dask LocalCluster ({args.workers} workers, start included) {r['dask']:.1f} s; "
                      f"max |ΔCLs| vs in-process {same:.1e}", flush=True)
        if not args.no_pyhf:
            for backend in ("numpy", "jax"):
                per, k = pyhf_loop(bkg, ps, backend, args.pyhf_subset)
                r[f"pyhf_{backend}"] = per * n
                r[f"pyhf_{backend}_k"] = k
                print(f"{name}: pyhf {backend} {per:.2f} s/patch over {k} patches -> {per * n:.0f} s for the grid (extrapolated)", flush=True)
        rows.append(r)

    if args.device_patches:
        import scan_grid

        bkg = scan_grid.bkgonly()
        ps = scan_grid.patchset(bkg)
        big = dict(ps)
        big["patches"] = [dict(p, metadata=dict(p["metadata"], name=f"{p['metadata']['name']}_{i}"))
                          for i in range(-(-args.device_patches // len(ps["patches"]))) for p in ps["patches"]][: args.device_patches]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf2ppl.scan(bkg, big, patches=[p["metadata"]["name"] for p in big["patches"][:1024]], progress=False)
            t0 = time.perf_counter()
            res = hf2ppl.scan(bkg, big, progress=False)
            dt = time.perf_counter() - t0
        print(f"device: {len(big['patches'])} generated patches in {dt:.1f} s = {len(big['patches']) / dt:.1f} patches/s "
              f"({len(res.failed)} failed, {len(res.flagged)} flagged)")

    print("\n| grid | hf2ppl fresh, cold cache | fresh, warm cache | in-process warm | Dask 2 workers | pyhf numpy (extrap.) | pyhf jax (extrap.) | patches/s hf2ppl warm / pyhf numpy |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        def s(key, r=r):
            return f"{r[key]:.1f} s" if key in r else "–"
        ratio = f"{(r['pyhf_numpy'] / r['warm']):.1f}×" if "pyhf_numpy" in r else "–"
        print(f"| {r['grid']} | {s('cold')} | {s('fresh_warm_cache')} | {s('warm')} | {s('dask')} | {s('pyhf_numpy')} | {s('pyhf_jax')} | {ratio} |")


if __name__ == "__main__":
    main()
