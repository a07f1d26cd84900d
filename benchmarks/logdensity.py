"""Per-call cost of the jitted log density (and log density + gradient): hf2ppl vs pyhf.

Runs hf2ppl (aux mode, float64), pyhf numpy and pyhf jax (jitted) side by side in
one process on the shared workspaces and on the thesis' n-bin shapesys model
with 10 ... 10000 bins, and hf2ppl's compile time (load + IR + lowering).

    python benchmarks/logdensity.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import pyhf
from common import analysis_workspace, machine, nbin_workspace, per_call, shared_workspaces, timed

import hf2ppl


def pyhf_fns(ws: dict, backend: str):
    pyhf.set_backend(backend)
    w = pyhf.Workspace(ws)
    model = w.model()
    data = pyhf.tensorlib.astensor(w.data(model))
    init = pyhf.tensorlib.astensor(model.config.suggested_init())
    if backend == "numpy":
        return (lambda p: model.logpdf(p, data)), None, init
    f = jax.jit(lambda p: model.logpdf(p, data)[0])
    g = jax.jit(jax.value_and_grad(lambda p: model.logpdf(p, data)[0]))
    return f, g, init


def row(name: str, ws: dict, quick: bool) -> dict:
    t0 = time.perf_counter()
    m = hf2ppl.compile(ws, constraints="aux")
    t_compile = time.perf_counter() - t0
    x = jax.numpy.asarray(m.suggested_init())
    f = jax.jit(m.logdensity_flat)
    g = jax.jit(jax.value_and_grad(m.logdensity_flat))
    t_first, _ = timed(f, x)
    t_first_g, _ = timed(g, x)
    out = {"model": name, "pars": m.ir.npars, "bins": m.ir.nbins, "compile_s": t_compile, "jit_first_s": t_first + t_first_g}
    pf, pg, pinit = pyhf_fns(ws, "jax")
    pf(pinit), pg(pinit)
    # interleave the contenders and keep the best of several rounds: background load only adds time
    rounds = {"hf": [], "hf_grad": [], "pyhf_jax": [], "pyhf_jax_grad": []}
    for _ in range(5):
        rounds["hf"].append(per_call(f, x, repeat=1))
        rounds["pyhf_jax"].append(per_call(pf, pinit, repeat=1))
        rounds["hf_grad"].append(per_call(g, x, repeat=1))
        rounds["pyhf_jax_grad"].append(per_call(pg, pinit, repeat=1))
    out.update({k: min(v) for k, v in rounds.items()})
    if not quick or m.ir.nbins <= 1000:
        nf, _, ninit = pyhf_fns(ws, "numpy")
        nf(ninit)
        out["pyhf_np"] = min(per_call(nf, ninit, min_time=0.2, repeat=1) for _ in range(3))
    else:
        out["pyhf_np"] = float("nan")
    pyhf.set_backend("numpy")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer models")
    ap.add_argument("--only", action="store_true", help="generated models only")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    models = dict(shared_workspaces())
    if args.only:
        models = {}
    elif args.quick:
        models = {k: models[k] for k in ("2_bin_corr", "all_modifiers_2channel", "SRee_SRmm_SRem_3channel")}
    for n in (10, 100, 1000, 10000):
        models[f"nbin_{n}"] = nbin_workspace(n)
    models["analysis_37bins_132pars"] = analysis_workspace()
    if not args.quick:
        models["analysis_200bins_800pars"] = analysis_workspace(nbins=200, npars=800, nchannels=20, nsamples=30)
    print(f"# machine: {machine()}")
    hdr = ("model", "pars", "bins", "hf2ppl µs", "pyhf-jax µs", "pyhf-np µs", "jax/hf", "np/hf",
           "hf2ppl+grad µs", "pyhf-jax+grad µs", "jax/hf (grad)", "compile s", "first jit s")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, ws in models.items():
        r = row(name, ws, args.quick)
        us = 1e6
        print(f"| {r['model']} | {r['pars']} | {r['bins']} | {r['hf'] * us:.1f} | {r['pyhf_jax'] * us:.1f} | {r['pyhf_np'] * us:.1f} | "
              f"{r['pyhf_jax'] / r['hf']:.1f}× | {r['pyhf_np'] / r['hf']:.1f}× | {r['hf_grad'] * us:.1f} | {r['pyhf_jax_grad'] * us:.1f} | "
              f"{r['pyhf_jax_grad'] / r['hf_grad']:.1f}× | {r['compile_s']:.3f} | {r['jit_first_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
