"""Frequentist benchmark (issue 3): hf2ppl vs pyhf (numpy and jax backends), side by side in one process.

Per model: a CLs hypotest with the expected band (qtilde, asymptotics), an upper limit (obs + 5 expected,
root finding), and a 50-point profile-likelihood μ scan (hf2ppl: ONE vmapped call; pyhf: a Python loop of
fixed-POI fits). "warm" = second call (compiled); "first" = first call including JIT compilation.

pyhf timings that would blow the time budget are extrapolated from a measured subset and marked "~".

Usage:
    python benchmarks/frequentist.py            # shared workspaces + generated 10/37/100-bin models (~8 min on 2 cores)
    python benchmarks/frequentist.py --big      # + the 1000-bin, 200-NP model (slow: see RESULTS.md)
    python benchmarks/frequentist.py --quick    # fewer models, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("HF2PPL_SHARED", ROOT.parent / "shared")) / "workspaces"

warnings.filterwarnings("ignore")
logging.getLogger("pyhf").setLevel(logging.ERROR)


def generated_workspace(nbins: int, n_normsys: int, n_histosys: int, staterror: bool, seed: int = 0) -> dict:
    """signal + background, ``n_normsys`` normsys and ``n_histosys`` histosys on the background, optional staterror."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, nbins)
    bkg = 200.0 * np.exp(-2.0 * x) + 20.0
    sig = 15.0 * np.exp(-0.5 * ((x - 0.6) / 0.08) ** 2) + 0.5
    mods = []
    for k in range(n_normsys):
        d = 0.01 + 0.05 * rng.random()
        mods.append({"name": f"norm_{k}", "type": "normsys", "data": {"hi": 1 + d, "lo": 1 - d * (0.8 + 0.4 * rng.random())}})
    for k in range(n_histosys):
        shape = 0.03 * np.sin(2 * np.pi * (k + 1) * x / 3 + rng.random()) * bkg
        mods.append({"name": f"hist_{k}", "type": "histosys", "data": {"hi_data": list(bkg + shape), "lo_data": list(bkg - 0.9 * shape)}})
    if staterror:
        mods.append({"name": "staterror_sr", "type": "staterror", "data": list(0.05 * bkg)})
    obs = rng.poisson(bkg + 0.3 * sig).astype(float)
    return {
        "channels": [{"name": "sr", "samples": [
            {"name": "signal", "data": list(sig), "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": list(bkg), "modifiers": mods},
        ]}],
        "observations": [{"name": "sr", "data": list(obs)}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def models(quick: bool, big: bool = False) -> list[tuple[str, dict]]:
    out = []
    names = ["2_bin_corr", "all_modifiers_2channel"] if quick else ["2_bin_corr", "hello_world_shapesys", "all_modifiers_2channel", "litehf_multi_channel"]
    for n in names:
        out.append((n, json.loads((SHARED / f"{n}.json").read_text())))
    out.append(("gen 10 bins, 10 NP + staterror", generated_workspace(10, 5, 5, True)))
    out.append(("gen 37 bins, 94 NP + staterror (132 pars)", generated_workspace(37, 47, 47, True)))
    if not quick:
        out.append(("gen 100 bins, 50 NP", generated_workspace(100, 25, 25, False)))
    if big:
        out.append(("gen 1000 bins, 200 NP", generated_workspace(1000, 100, 100, False)))
    return out


def pyhf_toms748_upper_limit(pd, pm, level: float = 0.05):
    """pyhf's ``toms748_scan`` (same bracketing, scipy toms748, rtol 1e-4) with float cache keys:
    pyhf 0.7.6's own version fails on the jax backend (jax arrays are unhashable cache keys)."""
    import pyhf
    from scipy.optimize import toms748

    cache: dict[float, tuple] = {}

    def res(mu):
        mu = float(mu)
        if mu not in cache:
            r = pyhf.infer.hypotest(mu, pd, pm, return_expected_set=True)
            cache[mu] = (float(r[0]), [float(x) for x in r[1]])
        return cache[mu]

    def f(mu, i):
        r = res(mu)
        return (r[0] if i == 0 else r[1][i - 1]) - level

    lo, hi = pm.config.suggested_bounds()[pm.config.poi_index]
    while np.any(np.asarray([res(lo)[0], *res(lo)[1]]) < level):
        lo /= 2
    while np.any(np.asarray([res(hi)[0], *res(hi)[1]]) > level):
        hi *= 2
    out = []
    for i in range(6):
        ks = np.asarray(list(cache))
        vals = np.asarray([f(k, i) for k in ks])
        a = ks[vals >= 0][np.argmin(vals[vals >= 0])]
        b = ks[vals < 0][np.argmax(vals[vals < 0])]
        out.append(toms748(f, a, b, args=(i,), k=2, xtol=2e-12, rtol=1e-4))
    return out, len(cache)


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_model(name: str, ws: dict, args) -> dict:
    import pyhf

    import hf2ppl

    mu_grid = np.linspace(0.0, 3.0, 50)
    row = {"model": name}
    m = hf2ppl.compile(ws, constraints="aux")
    row["bins"], row["pars"] = m.ir.nbins, m.ir.npars
    rep = 2 if args.quick else 3
    # ---- hf2ppl
    row["h_first"], _ = timed(lambda: hf2ppl.hypotest(m, 1.0, return_expected_set=True))
    row["h_warm"], ours = timed(lambda: hf2ppl.hypotest(m, 1.0, return_expected_set=True), rep)
    row["ul_first"], _ = timed(lambda: hf2ppl.upper_limit(m))
    row["ul_warm"], ul = timed(lambda: hf2ppl.upper_limit(m), rep)
    row["scan_first"], _ = timed(lambda: hf2ppl.profile(m, mu_grid))
    row["scan_warm"], _ = timed(lambda: hf2ppl.profile(m, mu_grid), rep)
    # ---- pyhf
    pws = pyhf.Workspace(ws)
    big = m.ir.npars > 60
    for backend in ("numpy", "jax"):
        pyhf.set_backend(backend)
        pm = pws.model()
        pd = pws.data(pm)
        if backend == "numpy" and m.ir.npars > 150 and not args.full:
            row["np_h"] = None
            row["np_ul"] = row["np_scan"] = None
            continue
        t1, theirs = timed(lambda pm=pm, pd=pd: pyhf.infer.hypotest(1.0, pd, pm, return_expected_set=True))
        if backend == "numpy":
            row["np_h"] = t1
        else:
            row["jax_h_first"] = t1
            row["jax_h"], theirs = timed(lambda pm=pm, pd=pd: pyhf.infer.hypotest(1.0, pd, pm, return_expected_set=True))
            row["cls_diff"] = abs(float(theirs[0]) - float(ours[0])) / float(theirs[0])
        th = row["np_h"] if backend == "numpy" else row["jax_h"]
        # upper limit: pyhf's toms748 scan; extrapolated (~) from the hypotest time when too slow
        if th * 25 < args.budget:
            t, (lims, ncalls) = timed(lambda pm=pm, pd=pd: pyhf_toms748_upper_limit(pd, pm))
            ul_t = (t, False)
            row["ul_diff"] = max(abs(x - y) / y for x, y in zip(lims, [float(ul[0]), *map(float, ul[1])]))
            row["ul_calls"] = ncalls
        else:
            ul_t = (th * row.get("ul_calls", 25), True)  # ~25 hypotests is typical for pyhf's toms748 scan
        # 50-point scan: a loop of fixed-POI fits; measure 5 points when slow and extrapolate
        npts = 50
        tf, _ = timed(lambda pm=pm, pd=pd: pyhf.infer.mle.fixed_poi_fit(mu_grid[1], pd, pm, return_fitted_val=True))
        if backend == "jax":  # first call compiles
            tf, _ = timed(lambda pm=pm, pd=pd: pyhf.infer.mle.fixed_poi_fit(mu_grid[2], pd, pm, return_fitted_val=True))
        if tf * npts < args.budget:
            t, _ = timed(lambda pm=pm, pd=pd: [pyhf.infer.mle.fixed_poi_fit(mu, pd, pm, return_fitted_val=True) for mu in mu_grid])
            sc_t = (t, False)
        else:
            t, _ = timed(lambda pm=pm, pd=pd: [pyhf.infer.mle.fixed_poi_fit(mu, pd, pm, return_fitted_val=True) for mu in mu_grid[:5]])
            sc_t = (t * npts / 5, True)
        key = "np" if backend == "numpy" else "jax"
        row[f"{key}_ul"] = ul_t
        row[f"{key}_scan"] = sc_t
    pyhf.set_backend("numpy")
    del big
    return row


def fmt_t(v) -> str:
    if v is None:
        return "skip"
    if isinstance(v, tuple):
        t, est = v
        return ("~" if est else "") + fmt_t(t)
    if v < 1e-3:
        return f"{v * 1e6:.0f}µs"
    if v < 1:
        return f"{v * 1e3:.1f}ms"
    return f"{v:.2f}s"


def ratio(a, b) -> str:
    if a is None or b is None:
        return "–"
    ta = a[0] if isinstance(a, tuple) else a
    est = isinstance(a, tuple) and a[1]
    return ("~" if est else "") + f"{ta / b:.0f}×"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer models and repeats")
    ap.add_argument("--full", action="store_true", help="also run pyhf numpy on the largest models (slow)")
    ap.add_argument("--big", action="store_true", help="add the 1000-bin, 200-NP model (adds ~20 min on 2 cores)")
    ap.add_argument("--only", default="", help="run only the models whose name contains this string")
    ap.add_argument("--budget", type=float, default=40.0, help="seconds allowed per pyhf measurement before extrapolating")
    args = ap.parse_args()

    import jax

    import hf2ppl

    print(f"hf2ppl {hf2ppl.__version__}, jax {jax.__version__}, devices {jax.devices()}")
    try:
        import pyhf

        print(f"pyhf {pyhf.__version__}")
    except ImportError:  # pragma: no cover
        sys.exit("pyhf is required for the side-by-side benchmark")
    t0 = time.time()
    rows = []
    for name, ws in models(args.quick, args.big):
        if args.only and args.only not in name:
            continue
        print(f"... {name}", flush=True)
        rows.append(bench_model(name, ws, args))
        print("    " + json.dumps({k: (v if not isinstance(v, float) else round(v, 5)) for k, v in rows[-1].items()}, default=str), flush=True)
    hdr = ("| model | bins | pars | hypotest hf2ppl first / warm | pyhf-np | pyhf-jax first / warm | × np | × jax "
           "| UL hf2ppl warm | UL pyhf-np | UL pyhf-jax | × jax | ΔUL rel | scan50 hf2ppl first / warm | scan50 pyhf-np | scan50 pyhf-jax | × jax | ΔCLs rel |")
    print()
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in rows:
        uld = f"{r['ul_diff']:.0e}" if "ul_diff" in r else "–"
        print(f"| {r['model']} | {r['bins']} | {r['pars']} | {fmt_t(r['h_first'])} / {fmt_t(r['h_warm'])} | {fmt_t(r.get('np_h'))} "
              f"| {fmt_t(r['jax_h_first'])} / {fmt_t(r['jax_h'])} | {ratio(r.get('np_h'), r['h_warm'])} | {ratio(r['jax_h'], r['h_warm'])} "
              f"| {fmt_t(r['ul_warm'])} | {fmt_t(r.get('np_ul'))} | {fmt_t(r['jax_ul'])} | {ratio(r['jax_ul'], r['ul_warm'])} | {uld} "
              f"| {fmt_t(r['scan_first'])} / {fmt_t(r['scan_warm'])} | {fmt_t(r.get('np_scan'))} | {fmt_t(r['jax_scan'])} "
              f"| {ratio(r['jax_scan'], r['scan_warm'])} | {r['cls_diff']:.1e} |")
    print(f"\ntotal benchmark time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
