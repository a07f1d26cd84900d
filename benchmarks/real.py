"""Real workspaces: hf2ppl vs pyhf (numpy, jax, numpy + minuit), side by side in one process.

For every workspace in ../shared/workspaces/real (any that appear there, found generically) and the
patches of every PatchSet there (paired with the background-only workspace its metadata digest names):

* warm time of ``fit``, ``hypotest(1.0)`` (qtilde, asymptotics, expected band) and ``upper_limit``
  (observed + 5 expected): hf2ppl (median of --repeats calls after a warm-up call), pyhf numpy (scipy),
  pyhf jax (scipy; the same model and data objects, called once before timing, so that pyhf's jitted
  objective is hot) and pyhf numpy + minuit (median of --pyhf-repeats); ratios pyhf / hf2ppl;
  iterations (hf2ppl ``niter``; pyhf's scipy ``nit`` / minuit ``nfcn`` from ``return_result_obj=True``)
  and the 2·NLL each reached (Δ = pyhf − hf2ppl: > 0 means hf2ppl found the deeper minimum);
  CLs and limits compared to hf2ppl's;
* the first call in a fresh process (subprocesses): ``import hf2ppl; m = hf2ppl.compile(...);
  hf2ppl.fit(m)`` (+ ``hypotest`` for models with a POI) with a cold persistent cache (HF2PPL_CACHE_DIR
  a new empty directory) and a warm one (the same run again, same directory), and pyhf numpy's
  first call in a fresh process for comparison; the whole process wall time and the call itself;
* log density + gradient per call (hf2ppl ``jax.jit(jax.value_and_grad(m.logdensity_flat))`` vs
  pyhf-jax jitted ``logpdf``, see benchmarks/logdensity.py).

Which tasks a workspace gets: a PatchSet's background-only workspace is fitted POI-less
(``poi_name=None`` in both); its patches get fit + hypotest + upper limit; any other workspace gets
all three when its measurement POI is declared and free, else a fit of the measurement as is (POI
fixed in the measurement, e.g. ewk2L's ``lumi``) or POI-less (POI not declared).

pyhf calls that are slow run fewer repeats: warm repeats stop once they would exceed --budget
seconds (marked ``(n=k)``), a pyhf numpy/minuit measurement with no repeat in the budget reports its
single warm-up call (marked ``¹``), and any pyhf call longer than --cap seconds is interrupted
(``>cap``; the ratio is then a lower bound; pyhf-jax's warm-up call, which compiles, is allowed 4× the
cap). hf2ppl calls are never capped (the budget limits their repeats, at least one after the warm-up).
The final markdown tables (paste into RESULTS.md) mark the issue's targets met / missed.

    python benchmarks/real.py                 # 5 staus patches spread over the grid (long on 2 cores)
    python benchmarks/real.py --quick         # 1 patch, fewer repeats, 30 s cap (smoke run)
    python benchmarks/real.py --all-patches   # all 57 patches
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from common import REAL, ROOT, machine, real_cases

logging.getLogger("pyhf").setLevel(logging.CRITICAL)

TASKS = ("fit", "hypotest", "upper_limit")
PYHF = ("pyhf-np", "pyhf-jax", "pyhf-minuit")
TARGET_FIT, TARGET_HYPO, TARGET_LD, TARGET_WARM_S, TARGET_COLD_S, TARGET_NITER = 5.0, 10.0, 1.0, 3.0, 8.0, 50


# ------------------------------------------------------------------------------------------------ timing
class CallCapped(Exception):
    pass


@contextmanager
def cap_seconds(seconds: float | None):
    """Interrupt the enclosed call after ``seconds`` (SIGALRM; Python-level code, so a long C call ends first)."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise CallCapped()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, old)


def measure(fn, *, repeats: int, cap: float | None, budget: float, min_repeats: int, first_cap: float | None = None) -> dict:
    """Warm-up call (``first``), then up to ``repeats`` timed calls (``min_repeats`` of them regardless of the
    budget, the rest while their total stays within ``budget``); ``warm`` = median of the repeats, else the
    warm-up call when ``min_repeats == 0`` (``from_first``). Calls over ``cap`` seconds (the warm-up: ``first_cap``,
    default ``cap``) are interrupted."""
    out = {"first": None, "warm": None, "n": 0, "capped": False, "from_first": False, "out": None, "error": None, "warnings": []}

    def once(limit):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            with cap_seconds(limit):
                res = fn()
            t = time.perf_counter() - t0
        for x in w:
            msg = f"{x.category.__name__}: {str(x.message).splitlines()[0][:160]}"
            if msg not in out["warnings"]:
                out["warnings"].append(msg)
        return t, res

    try:
        out["first"], out["out"] = once(cap if first_cap is None else first_cap)
        times: list[float] = []
        spent = 0.0
        while len(times) < repeats:
            est = times[-1] if times else out["first"]
            if len(times) >= min_repeats and spent + est > budget:
                break
            t, out["out"] = once(cap)
            times.append(t)
            spent += t
        out["n"] = len(times)
        if times:
            out["warm"] = float(np.median(times))
        elif min_repeats == 0:
            out["warm"], out["from_first"] = out["first"], True
    except CallCapped:
        out["capped"] = True
    except Exception as e:  # noqa: BLE001 - a failing contender is reported, not fatal
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return out


# ------------------------------------------------------------------------------------------------ task runners
def hf2ppl_tasks(m, starts: int | None = None) -> dict:
    import hf2ppl

    def fit():
        r = hf2ppl.fit(m) if starts is None else hf2ppl.fit(m, starts=starts)
        return {"twice_nll": 2.0 * float(r.nll), "niter": int(r.niter), "converged": bool(r.converged), "edm": float(r.edm),
                "multimodal": bool(r.multimodal)}

    def hypotest():
        cls, band = hf2ppl.hypotest(m, 1.0, return_expected_set=True)
        return {"values": [float(cls), *map(float, band)]}

    def upper_limit():
        obs, exp = hf2ppl.upper_limit(m)
        return {"values": [float(obs), *map(float, exp)]}

    return {"fit": fit, "hypotest": hypotest, "upper_limit": upper_limit}


def pyhf_tasks(model, data) -> dict:
    import pyhf
    from frequentist import pyhf_toms748_upper_limit

    logging.getLogger("pyhf").setLevel(logging.CRITICAL)  # pyhf logs every interrupted (capped) evaluation as an error
    def fit():
        _, twice_nll, res = pyhf.infer.mle.fit(data, model, return_fitted_val=True, return_result_obj=True)
        return {"twice_nll": float(twice_nll), "niter": int(res["nit"]) if "nit" in res else None, "nfev": int(res.get("nfev", -1)),
                "converged": bool(res.get("success", True))}

    def hypotest():
        cls, band = pyhf.infer.hypotest(1.0, data, model, return_expected_set=True)
        return {"values": [float(cls), *map(float, band)]}

    def upper_limit():
        lims, ncalls = pyhf_toms748_upper_limit(data, model)
        return {"values": [float(x) for x in lims], "ncalls": ncalls}

    return {"fit": fit, "hypotest": hypotest, "upper_limit": upper_limit}


def pyhf_backend(name: str) -> tuple[str, object]:
    import pyhf

    if name == "pyhf-minuit":
        return "numpy", pyhf.optimize.minuit_optimizer(verbose=0)
    return ("jax" if name == "pyhf-jax" else "numpy"), pyhf.optimize.scipy_optimizer()


# ------------------------------------------------------------------------------------------------ fresh processes
HF_CHILD = """
import json, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import hf2ppl
t1 = time.perf_counter()
m = hf2ppl.compile({path!r}, **{kw!r})
t2 = time.perf_counter()
r = hf2ppl.fit(m)
t3 = time.perf_counter()
out = {{"import": t1 - t0, "compile": t2 - t1, "fit": t3 - t2, "niter": int(r.niter), "twice_nll": 2 * float(r.nll)}}
if {hypo!r}:
    t4 = time.perf_counter()
    cls = hf2ppl.hypotest(m, 1.0, return_expected_set=True)[0]
    out["hypotest"] = time.perf_counter() - t4
    out["cls"] = float(cls)
out["cache_dir"] = hf2ppl.cache_dir()
print("RESULT " + json.dumps(out))
"""

PYHF_CHILD = """
import json, time, warnings, logging
warnings.filterwarnings("ignore")
logging.getLogger("pyhf").setLevel(logging.CRITICAL)
t0 = time.perf_counter()
import pyhf
t1 = time.perf_counter()
pyhf.set_backend("numpy")
ws = pyhf.Workspace(json.load(open({path!r})))
patches = [pyhf.PatchSet(json.load(open(p)))[n] for p, n in {patches!r}]
model = ws.model(patches=patches, **{poi_kw!r})
data = ws.data(model)
t2 = time.perf_counter()
twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)[1]
t3 = time.perf_counter()
out = {{"import": t1 - t0, "compile": t2 - t1, "fit": t3 - t2, "twice_nll": float(twice_nll)}}
if {hypo!r}:
    t4 = time.perf_counter()
    cls = pyhf.infer.hypotest(1.0, data, model, return_expected_set=True)[0]
    out["hypotest"] = time.perf_counter() - t4
    out["cls"] = float(cls)
print("RESULT " + json.dumps(out))
"""


def run_child(code: str, env: dict, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "wall": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"rc {p.returncode}: {tail[:200]}", "wall": wall}
    r = json.loads(lines[-1][len("RESULT "):])
    r["wall"] = wall
    r["call"] = r["compile"] + r["fit"] + r.get("hypotest", 0.0)
    return r


def fresh_process(case, timeout: float, with_pyhf: bool = True) -> dict:
    hypo = "hypotest" in case.tasks
    env = {k: v for k, v in os.environ.items() if k not in ("HF2PPL_NO_CACHE", "JAX_COMPILATION_CACHE_DIR", "HF2PPL_CACHE_DIR")}
    tmp = tempfile.mkdtemp(prefix="hf2ppl-bench-cache-")
    env["HF2PPL_CACHE_DIR"] = tmp
    code = HF_CHILD.format(path=str(case.workspace), kw=case.hf2ppl_kwargs(), hypo=hypo)
    try:
        out = {"cold": run_child(code, env, timeout), "warm": run_child(code, env, timeout)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if with_pyhf:
        out["pyhf"] = run_child(PYHF_CHILD.format(path=str(case.workspace), patches=[tuple(p) for p in case.patches], poi_kw=case.poi_kw, hypo=hypo),
                                env, timeout)
    return out


# ------------------------------------------------------------------------------------------------ formatting
def fmt_t(v: float | None) -> str:
    if v is None:
        return "–"
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms"
    return f"{v:.2f} s"


def fmt_meas(r: dict | None, want: int, cap: float) -> str:
    if r is None:
        return "–"
    if r["error"]:
        return "error"
    if r["capped"]:
        return f">{cap:g} s (capped)"
    s = fmt_t(r["warm"])
    if r["from_first"]:
        return s + " ¹"
    if r["n"] < want:
        s += f" (n={r['n']})"
    return s


def ratio(theirs: dict | None, ours: dict | None, cap: float) -> tuple[float | None, str]:
    """(value, text) of theirs / ours; a capped pyhf call gives a lower bound (">")."""
    if not theirs or not ours or ours["warm"] is None or theirs["error"]:
        return None, "–"
    if theirs["capped"]:
        return cap / ours["warm"], ">" + fmt_x(cap / ours["warm"])
    if theirs["warm"] is None:
        return None, "–"
    v = theirs["warm"] / ours["warm"]
    return v, fmt_x(v) + (" ¹" if theirs["from_first"] else "")


def fmt_x(v: float) -> str:
    return f"{v:.0f}×" if v >= 100 else (f"{v:.1f}×" if v >= 1 else f"{v:.2f}×")


def result_of(r: dict | None):
    return None if (r is None or r["out"] is None or r["error"] or r["capped"]) else r["out"]


def describe(task: str, r: dict | None) -> str:
    o = result_of(r)
    if o is None:
        return ""
    if task == "fit":
        it = f"niter {o['niter']}" if o.get("niter") is not None else f"nfev {o.get('nfev')}"
        extra = f" edm {o['edm']:.1e}" if "edm" in o else ""
        extra += " MULTIMODAL" if o.get("multimodal") else ""
        return f"{it}  2NLL {o['twice_nll']:.6f}  converged {o['converged']}{extra}"
    v = o["values"]
    label = "CLs obs" if task == "hypotest" else "UL obs"
    return f"{label} {v[0]:.6g}  exp {' '.join(f'{x:.4g}' for x in v[1:])}" + (f"  ({o['ncalls']} hypotests)" if "ncalls" in o else "")


def niter_text(task: str, r: dict | None) -> str:
    o = result_of(r)
    if o is None or task != "fit":
        return "–"
    return str(o["niter"]) if o.get("niter") is not None else f"nfcn {o.get('nfev')}"


def delta_text(task: str, ours: dict | None, theirs: dict | None) -> str:
    a, b = result_of(ours), result_of(theirs)
    if a is None or b is None:
        return "–"
    if task == "fit":
        return f"{b['twice_nll'] - a['twice_nll']:+.1e}"
    va, vb = np.asarray(a["values"]), np.asarray(b["values"])
    return f"{np.max(np.abs(vb - va) / np.maximum(np.abs(va), 1e-300)):.0e}"


def value_text(task: str, r: dict | None) -> str:
    o = result_of(r)
    if o is None:
        return "–"
    return f"{o['twice_nll']:.4f}" if task == "fit" else f"{o['values'][0]:.5g}"


def mark(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


# ------------------------------------------------------------------------------------------------ main
def bench_case(case, args, log) -> dict:
    import pyhf

    row: dict = {"case": case.name, "tasks": [t for t in case.tasks if t in args.tasks], "note": case.note, "runs": {}}
    t0 = time.perf_counter()
    m = case.compile()
    row["compile_s"] = time.perf_counter() - t0
    row["pars"], row["free"], row["bins"] = m.ir.npars, len(m._free), m.ir.nbins
    log(f"\n... {case.name}: {row['pars']} parameters ({row['free']} free), {row['bins']} bins; tasks {', '.join(row['tasks'])} ({case.note})")
    log(f"    hf2ppl compile {row['compile_s']:.2f} s")

    def report(task, who, r, want):
        extra = f"  [{'; '.join(r['warnings'][:3])}]" if r["warnings"] else ""
        err = f"  ERROR {r['error']}" if r["error"] else ""
        first = fmt_t(r["first"]) if r["first"] is not None else ("capped" if r["capped"] else "–")
        log(f"    {task:<11} {who:<13} first {first}  warm {fmt_meas(r, want, args.cap)}  "
            f"{describe(task, r)}{err}{extra}")

    contenders = [("hf2ppl", None)] + ([("hf2ppl-1start", 1)] if args.one_start else [])
    for who, starts in contenders:
        fns = hf2ppl_tasks(m, starts)
        for task in row["tasks"]:
            if who == "hf2ppl-1start" and task != "fit":
                continue
            r = measure(fns[task], repeats=args.repeats, cap=None, budget=args.budget, min_repeats=1)  # hf2ppl: never capped
            row["runs"][(task, who)] = r
            report(task, who, r, args.repeats)
    for who in [c for c in PYHF if c in args.contenders]:
        backend, opt = pyhf_backend(who)
        try:
            model, data = case.pyhf_model(backend, opt)
        except Exception as e:  # noqa: BLE001
            log(f"    {who}: cannot build the pyhf model: {type(e).__name__}: {e}")
            continue
        fns = pyhf_tasks(model, data)
        for task in row["tasks"]:
            jax_ = who == "pyhf-jax"  # its warm-up call traces and compiles: allowed 4x the cap
            r = measure(fns[task], repeats=args.pyhf_repeats, cap=args.cap, budget=args.budget, min_repeats=1 if jax_ else 0,
                        first_cap=4 * args.cap if jax_ else None)
            row["runs"][(task, who)] = r
            report(task, who, r, args.pyhf_repeats)
        del model, data, fns
        pyhf.set_backend("numpy")
    if args.logdensity:
        from logdensity import real_row

        ld = real_row(case, rounds=3 if args.quick else 5, dict_path=False)
        row["ld"] = ld
        log(f"    logdensity+grad  hf2ppl {ld['hf_flat'] * 1e6:.1f} µs  pyhf-jax {ld['pyhf_jax'] * 1e6:.1f} µs  "
            f"({ld['ratio_flat']:.2f}×)  |Δlogpdf| {ld['dlogpdf_flat']:.1e}")
    if args.fresh:
        fr = fresh_process(case, args.fresh_timeout)
        row["fresh"] = fr
        for k, label in (("cold", "hf2ppl cold cache"), ("warm", "hf2ppl warm cache"), ("pyhf", "pyhf numpy")):
            f = fr.get(k)
            if f is None:
                continue
            if "error" in f:
                log(f"    fresh process  {label:<18} ERROR {f['error']}")
                continue
            parts = f"import {f['import']:.2f} + compile {f['compile']:.2f} + fit {f['fit']:.2f}" + (f" + hypotest {f['hypotest']:.2f}" if "hypotest" in f else "")
            log(f"    fresh process  {label:<18} process {f['wall']:.2f} s, call {f['call']:.2f} s ({parts} s)"
                + (f", niter {f['niter']}" if "niter" in f else ""))
    return row


def tables(rows: list[dict], args, log) -> None:
    want = {"hf2ppl": args.repeats, "hf2ppl-1start": args.repeats, **{c: args.pyhf_repeats for c in PYHF}}
    pys = [c for c in PYHF if c in args.contenders]
    log("\n## Warm calls (median; ¹ = single warm-up call, (n=k) = fewer repeats than asked, >cap = interrupted)\n")
    hdr = ["model", "pars", "task", "hf2ppl"] + (["hf2ppl 1-start"] if args.one_start else []) + pys + [f"{c}/hf" for c in pys]
    hdr += ["niter hf2ppl / " + " / ".join(pys), "hf2ppl 2NLL / CLs / UL", "Δ " + " / ".join(pys)]
    log("| " + " | ".join(hdr) + " |")
    log("|" + "---|" * len(hdr))
    for row in rows:
        for task in row["tasks"]:
            runs = row["runs"]
            ours = runs.get((task, "hf2ppl"))
            cells = [row["case"], str(row["pars"]), task, fmt_meas(ours, want["hf2ppl"], args.cap)]
            if args.one_start:
                cells.append(fmt_meas(runs.get((task, "hf2ppl-1start")), want["hf2ppl"], args.cap) if task == "fit" else "–")
            cells += [fmt_meas(runs.get((task, c)), want[c], args.cap) for c in pys]
            cells += [ratio(runs.get((task, c)), ours, args.cap)[1] for c in pys]
            cells.append(" / ".join(niter_text(task, runs.get((task, w))) for w in ["hf2ppl", *pys]))
            cells.append(value_text(task, ours))
            cells.append(" / ".join(delta_text(task, ours, runs.get((task, c))) for c in pys))
            log("| " + " | ".join(cells) + " |")
    log("\nΔ: fit = 2NLL(pyhf) − 2NLL(hf2ppl) (> 0: hf2ppl's minimum is deeper); hypotest / upper_limit = max relative "
        "difference over CLs obs + 5 expected (limits: pyhf's toms748 at rtol 1e-4, hf2ppl at 1e-8).")

    if args.fresh:
        log("\n## First call in a fresh process (call = compile + fit [+ hypotest]; process = whole `python -c` wall time)\n")
        hdr = ["model", "calls", "hf2ppl cold cache: call / process", "hf2ppl warm cache: call / process", "pyhf numpy: call / process",
               f"cold ≤ {TARGET_COLD_S:g} s (call / process)", f"warm ≤ {TARGET_WARM_S:g} s (call / process)"]
        log("| " + " | ".join(hdr) + " |")
        log("|" + "---|" * len(hdr))
        for row in rows:
            fr = row.get("fresh")
            if not fr:
                continue

            def cp(f):
                return "error" if (f is None or "error" in f) else f"{f['call']:.2f} / {f['wall']:.2f} s"

            def tgt(f, lim):
                if f is None or "error" in f:
                    return "–"
                return f"{mark(f['call'] <= lim)} / {mark(f['wall'] <= lim)}"

            calls = "fit + hypotest" if "hypotest" in row["case_tasks"] else "fit"
            log(f"| {row['case']} | {calls} | {cp(fr['cold'])} | {cp(fr['warm'])} | {cp(fr.get('pyhf'))} | "
                f"{tgt(fr['cold'], TARGET_COLD_S)} | {tgt(fr['warm'], TARGET_WARM_S)} |")

    if args.logdensity:
        log("\n## Log density + gradient per call (jitted; best of interleaved rounds)\n")
        log("| model | pars | hf2ppl µs | pyhf-jax µs | pyhf-jax/hf2ppl | ≥ 1× |")
        log("|---|---|---|---|---|---|")
        for row in rows:
            ld = row.get("ld")
            if ld:
                log(f"| {row['case']} | {row['pars']} | {ld['hf_flat'] * 1e6:.1f} | {ld['pyhf_jax'] * 1e6:.1f} | {ld['ratio_flat']:.2f}× | {mark(ld['ratio_flat'] >= TARGET_LD)} |")

    # ---------------------------------------------------------------- targets
    log("\n## Targets\n")
    log("| target | worst case | value | status |")
    log("|---|---|---|---|")

    def worst(items, lower_is_worse=True):
        items = [(n, v) for n, v in items if v is not None]
        if not items:
            return None
        return min(items, key=lambda t: t[1]) if lower_is_worse else max(items, key=lambda t: t[1])

    if args.logdensity:
        w = worst([(r["case"], r["ld"]["ratio_flat"]) for r in rows if r.get("ld")])
        if w:
            log(f"| log density + gradient ≥ {TARGET_LD:g}× pyhf-jax jitted, every real workspace | {w[0]} | {w[1]:.2f}× | {mark(w[1] >= TARGET_LD)} |")
    for task, lim in (("fit", TARGET_FIT), ("hypotest", TARGET_HYPO)):
        vals = [(r["case"], ratio(r["runs"].get((task, "pyhf-jax")), r["runs"].get((task, "hf2ppl")), args.cap)[0])
                for r in rows if task in r["tasks"]]
        w = worst(vals)
        if w:
            incomplete = any(v is None for _, v in vals)
            log(f"| warm {task} ≥ {lim:g}× pyhf-jax, every real workspace | {w[0]} | {fmt_x(w[1])} | {mark(w[1] >= lim)}"
                f"{' (some cases not measured)' if incomplete else ''} |")
        elif task in args.tasks and "pyhf-jax" in args.contenders:
            log(f"| warm {task} ≥ {lim:g}× pyhf-jax | – | not measured | – |")
    if args.fresh:
        for key, lim, label in (("warm", TARGET_WARM_S, "warm cache"), ("cold", TARGET_COLD_S, "cold cache")):
            vals = [(r["case"], r["fresh"][key]) for r in rows if r.get("fresh") and "error" not in r["fresh"][key]]
            if vals:
                wc = max(vals, key=lambda t: t[1]["call"])
                wp = max(vals, key=lambda t: t[1]["wall"])
                log(f"| first call in a fresh process ≤ {lim:g} s, {label} (call) | {wc[0]} | {wc[1]['call']:.2f} s | {mark(wc[1]['call'] <= lim)} |")
                log(f"| … the same, whole process (interpreter + imports) | {wp[0]} | {wp[1]['wall']:.2f} s | {mark(wp[1]['wall'] <= lim)} |")
    fits = [r for r in rows if "fit" in r["tasks"] and result_of(r["runs"].get(("fit", "hf2ppl")))]
    if fits:
        big = [r for r in fits if r["pars"] == 217] or [max(fits, key=lambda r: r["pars"])]
        for r in big:
            o = result_of(r["runs"][("fit", "hf2ppl")])
            ok = o["converged"] and o["niter"] <= TARGET_NITER
            log(f"| the {r['pars']}-parameter fit converged in ≤ {TARGET_NITER} iterations | {r['case']} | niter {o['niter']}, "
                f"converged {o['converged']} | {mark(ok)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 patch per PatchSet (unless --patches/--patch/--all-patches), --repeats 2, --pyhf-repeats 1, "
                         "--cap 30, --budget 10, 3 log-density rounds")
    ap.add_argument("--patches", type=int, default=None, help="number of patches per PatchSet, spread over the signal grid (default 5; --quick 1)")
    ap.add_argument("--all-patches", action="store_true", help="every patch of every PatchSet (57 for staus)")
    ap.add_argument("--patch", action="append", default=None, metavar="NAME", help="this patch (repeatable) instead of the spread subset")
    ap.add_argument("--only", default="", help="only the cases whose name contains this string")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)} (default all)")
    ap.add_argument("--contenders", default=",".join(PYHF), help=f"comma-separated pyhf contenders among {','.join(PYHF)} (default all)")
    ap.add_argument("--repeats", type=int, default=None, help="hf2ppl warm repeats after the warm-up call (default 5; --quick 2)")
    ap.add_argument("--pyhf-repeats", type=int, default=None, help="pyhf warm repeats after the warm-up call (default 3; --quick 1)")
    ap.add_argument("--cap", type=float, default=None, help="per-call time cap for pyhf calls in seconds; longer calls are interrupted and shown as >cap "
                         "(pyhf-jax's compiling warm-up call: 4x; hf2ppl calls are never capped) (default 300; --quick 30)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of warm repeats per measurement; repeats stop when the next would exceed it (at least 1 for hf2ppl "
                         "and pyhf-jax; pyhf numpy/minuit then report the warm-up call, marked ¹) (default 60; --quick 10)")
    ap.add_argument("--no-one-start", dest="one_start", action="store_false", help="skip the extra hf2ppl fit(starts=1) column")
    ap.add_argument("--no-fresh", dest="fresh", action="store_false", help="skip the fresh-process (subprocess) measurements")
    ap.add_argument("--fresh-timeout", type=float, default=600.0, help="timeout of one fresh-process run in seconds (default 600)")
    ap.add_argument("--no-logdensity", dest="logdensity", action="store_false", help="skip the log density + gradient timing")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit numpy's and scipy's OpenBLAS to this many threads for the whole run (threadpoolctl; default: "
                         "as the environment says). On few cores OpenBLAS's worker threads contend with XLA's: pyhf-jax's warm "
                         "staus fit took 450 ms with 2 BLAS threads and 20 ms with 1 on the 2-core machine")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the raw measurements to PATH")
    args = ap.parse_args()
    q = args.quick
    args.repeats = args.repeats if args.repeats is not None else (2 if q else 5)
    args.pyhf_repeats = args.pyhf_repeats if args.pyhf_repeats is not None else (1 if q else 3)
    args.cap = args.cap if args.cap is not None else (30.0 if q else 300.0)
    args.budget = args.budget if args.budget is not None else (10.0 if q else 60.0)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.contenders = [c for c in args.contenders.split(",") if c]
    bad = [t for t in args.tasks if t not in TASKS] + [c for c in args.contenders if c not in PYHF]
    if bad:
        ap.error(f"unknown task/contender {bad}")
    n_patches = None if args.all_patches else (args.patches if args.patches is not None else (1 if q else 5))

    import jax

    import hf2ppl

    jax.config.update("jax_enable_x64", True)
    import pyhf

    def log(s=""):
        print(s, flush=True)

    log(f"# machine: {machine()}")
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")  # kept for the whole run
    try:
        from threadpoolctl import threadpool_info

        log("# BLAS threads: " + ", ".join(f"{Path(i['filepath']).name} {i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas")
            + (f" (limited by --blas-threads {args.blas_threads})" if args.blas_threads is not None else " (environment default)"))
    except Exception:  # pragma: no cover
        pass
    log(f"# hf2ppl {hf2ppl.__version__}, pyhf {pyhf.__version__}, python {sys.version.split()[0]}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    log(f"# hf2ppl persistent compilation cache of this process: {hf2ppl.cache_dir()} (affects the in-process 'first' times only)")
    log(f"# repeats: hf2ppl {args.repeats}, pyhf {args.pyhf_repeats}; per-call cap {args.cap:g} s; warm-repeat budget {args.budget:g} s")
    if not REAL.is_dir():
        sys.exit(f"no real workspaces at {REAL}; set HF2PPL_SHARED")
    cases, notes = real_cases(REAL, n_patches=n_patches, patch_names=args.patch)
    for n in notes:
        log(f"# {n}")
    cases = [c for c in cases if args.only in c.name]
    log(f"# cases: {', '.join(c.name for c in cases)}")
    t0 = time.time()
    rows = []
    for case in cases:
        row = bench_case(case, args, log)
        row["case_tasks"] = case.tasks
        rows.append(row)
    tables(rows, args, log)
    log(f"\ntotal benchmark time {time.time() - t0:.0f} s; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        def clean(r):
            r = dict(r)
            r["runs"] = {f"{t}/{w}": {k: v for k, v in x.items()} for (t, w), x in r["runs"].items()}
            return r

        Path(args.json).write_text(json.dumps([clean(r) for r in rows], indent=1, default=str))
        log(f"raw measurements written to {args.json}")


if __name__ == "__main__":
    main()
