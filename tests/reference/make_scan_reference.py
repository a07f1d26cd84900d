"""Independent pyhf reference for tests/test_scan.py: writes tests/reference/scan_grid_reference.json.

Never imports hf2ppl: the generated grid (tests/scan_grid.py, plain numpy) is patched, modelled and tested by
pyhf alone, one patch at a time, as a pyhf user scans a patchset::

    for patch in patchset:
        ws = pyhf.Workspace(patch.apply(bkgonly)); model = ws.model(); data = ws.data(model)
        pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)

with the JAX backend (64 bit) and ``scipy_optimizer(tolerance=1e-13)``: SLSQP with autodiff gradients (the
numpy backend's finite differences are not precise enough for 1e-5 relative CLs at small CLs). Stored with
the sha256 of the generated documents, so the test can tell a stale reference::

    python tests/reference/make_scan_reference.py [--processes 2]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
OUTPUT = HERE / "scan_grid_reference.json"
TOL = 1e-13


def _one(args):
    bkg, patch = args
    import jax

    jax.config.update("jax_enable_x64", True)
    import pyhf

    pyhf.set_backend("jax", pyhf.optimize.scipy_optimizer(tolerance=TOL))
    t0 = time.perf_counter()
    ws = pyhf.Workspace(pyhf.patchset.Patch(patch).apply(pyhf.Workspace(bkg)))
    model = ws.model()
    data = ws.data(model)
    cls, band = pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
    return patch["metadata"]["name"], {"cls_obs": float(cls), "cls_exp": [float(v) for v in band], "seconds": time.perf_counter() - t0}


def main() -> None:
    import scan_grid as G

    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    bkg = G.bkgonly()
    ps = G.patchset(bkg)
    with mp.get_context("spawn").Pool(args.processes) as pool:
        results = dict(pool.map(_one, [(bkg, p) for p in ps["patches"]], chunksize=4))
    import pyhf

    out = {"generator": "tests/reference/make_scan_reference.py", "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "pyhf": pyhf.__version__, "optimizer": f"jax backend, scipy_optimizer(tolerance={TOL})", "poi_test": 1.0,
           "test_stat": "qtilde", "bkgonly_sha256": G.digest(bkg), "patchset_sha256": G.digest(ps), "cases": results}
    OUTPUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUTPUT} ({len(results)} patches)")


if __name__ == "__main__":
    main()
