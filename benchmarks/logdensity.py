"""Per-call cost of the jitted log density (and log density + gradient): hf2ppl vs pyhf.

Runs hf2ppl (aux mode, float64), pyhf numpy and pyhf jax (jitted) side by side in
one process on the shared workspaces and on the thesis' n-bin shapesys model
with 10 ... 10000 bins, and hf2ppl's compile time (load + IR + lowering).

A second table covers the real workspaces of ../shared/workspaces/real (a PatchSet's
background-only workspace POI-less, one of its patches, every other workspace as its
measurement says): log density + gradient per call, hf2ppl through the flat vector
(``jax.jit(jax.value_and_grad(m.logdensity_flat))``) and through the dict of free
parameter sets (``jax.jit(jax.value_and_grad(lambda p: m.logdensity(p)))`` at
``m.init_params()``), vs pyhf-jax ``jax.jit(jax.value_and_grad(lambda x: model.logpdf(x, data)[0]))``.

    python benchmarks/logdensity.py [--quick] [--no-real | --real] [--patch NAME]
"""

from __future__ import annotations

import argparse
import time

import jax
import pyhf
from common import REAL, analysis_workspace, machine, nbin_workspace, per_call, real_cases, shared_workspaces, timed

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


def real_row(case, rounds: int = 5, dict_path: bool = True) -> dict:
    """Log density + gradient per call on a real workspace (a ``common.RealCase``): hf2ppl flat and dict paths
    vs jitted pyhf-jax, best of ``rounds`` interleaved rounds; value agreement with pyhf at the suggested init.
    ``dict_path=False`` skips the dict path (its entries are then NaN)."""
    jnp = jax.numpy
    t0 = time.perf_counter()
    m = case.compile()
    t_compile = time.perf_counter() - t0
    x = jnp.asarray(m.suggested_init())
    p0 = {k: jnp.asarray(v) for k, v in m.init_params().items()}
    g_flat = jax.jit(jax.value_and_grad(m.logdensity_flat))
    g_dict = jax.jit(jax.value_and_grad(lambda p: m.logdensity(p)))
    # JAX's own cost of a jitted value_and_grad over this dict (one input and one gradient buffer per set)
    g_floor = jax.jit(jax.value_and_grad(lambda p: sum(jnp.sum(v) for v in p.values())))
    t_first_flat, (v_flat, _) = timed(g_flat, x)
    t_first_dict, (v_dict, _) = timed(g_dict, p0) if dict_path else (float("nan"), (float("nan"), None))
    model, data = case.pyhf_model("jax")
    pinit = pyhf.tensorlib.astensor(model.config.suggested_init())
    g_pyhf = jax.jit(jax.value_and_grad(lambda y: model.logpdf(y, data)[0]))
    t_first_pyhf, (v_pyhf, _) = timed(g_pyhf, pinit)
    if dict_path:
        g_floor(p0)
    runs = {"hf_flat": [], "hf_dict": [], "pyhf_jax": [], "dict_floor": []}
    for _ in range(rounds):
        runs["hf_flat"].append(per_call(g_flat, x, repeat=1))
        runs["pyhf_jax"].append(per_call(g_pyhf, pinit, repeat=1))
        runs["hf_dict"].append(per_call(g_dict, p0, repeat=1) if dict_path else float("nan"))
        runs["dict_floor"].append(per_call(g_floor, p0, repeat=1) if dict_path else float("nan"))
    pyhf.set_backend("numpy")
    out = {"model": case.name, "pars": m.ir.npars, "free": len(m._free), "sets": len(p0), "bins": m.ir.nbins, "compile_s": t_compile,
           "first_flat_s": t_first_flat, "first_dict_s": t_first_dict, "first_pyhf_s": t_first_pyhf,
           "dlogpdf_flat": float(abs(float(v_flat) - float(v_pyhf))), "dlogpdf_dict": float(abs(float(v_dict) - float(v_flat)))}
    out.update({k: min(v) for k, v in runs.items()})
    out["ratio_flat"] = out["pyhf_jax"] / out["hf_flat"]
    out["ratio_dict"] = out["pyhf_jax"] / out["hf_dict"]
    return out


REAL_HDR = ("model", "pars (free)", "bins", "hf2ppl flat+grad µs", "hf2ppl dict+grad µs", "dict floor µs (sets)", "pyhf-jax+grad µs",
            "jax/hf flat", "jax/hf dict", "target ≥1× (flat)", "|Δlogpdf| vs pyhf", "compile s", "first jit s flat / dict / pyhf")


def real_line(r: dict) -> str:
    us = 1e6
    ok = "met" if r["ratio_flat"] >= 1.0 else "**missed**"
    return (f"| {r['model']} | {r['pars']} ({r['free']}) | {r['bins']} | {r['hf_flat'] * us:.1f} | {r['hf_dict'] * us:.1f} | "
            f"{r['dict_floor'] * us:.1f} ({r['sets']}) | {r['pyhf_jax'] * us:.1f} | {r['ratio_flat']:.2f}× | {r['ratio_dict']:.2f}× | {ok} | {r['dlogpdf_flat']:.1e} | "
            f"{r['compile_s']:.2f} | {r['first_flat_s']:.2f} / {r['first_dict_s']:.2f} / {r['first_pyhf_s']:.2f} |")


def real_logdensity_cases(patch: str | None = None) -> list:
    """Every real case except the patches, plus one patch per PatchSet (``patch``, else the grid-centre one)."""
    return real_cases(REAL, n_patches=1, patch_names=[patch] if patch else None)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer models (and 3 rounds instead of 5 on the real workspaces)")
    ap.add_argument("--only", action="store_true", help="generated models only (no shared workspaces, no real workspaces)")
    ap.add_argument("--no-real", action="store_true", help="skip the real workspaces of ../shared/workspaces/real")
    ap.add_argument("--real", action="store_true", help="only the real workspaces")
    ap.add_argument("--patch", default=None, help="the PatchSet patch to use (default: the one nearest the centre of the signal grid)")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    if args.real:
        print(f"# machine: {machine()}")
        run_real(args)
        return
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
    if not args.no_real and not args.only:
        print()
        run_real(args)


def run_real(args) -> list[dict]:
    if not REAL.is_dir():
        print(f"# no real workspaces at {REAL} (set HF2PPL_SHARED)")
        return []
    print(f"# real workspaces ({REAL}): log density + gradient per call, best of {3 if args.quick else 5} interleaved rounds; "
          "'dict floor' = a trivial jitted value_and_grad over the same dict (JAX's per-call cost of one buffer per parameter set)")
    print("| " + " | ".join(REAL_HDR) + " |")
    print("|" + "---|" * len(REAL_HDR))
    rows = []
    for case in real_logdensity_cases(args.patch):
        r = real_row(case, rounds=3 if args.quick else 5)
        rows.append(r)
        print(real_line(r), flush=True)
    return rows


if __name__ == "__main__":
    main()
