"""The ``hf2ppl`` console script: a thin layer over the public API.

    hf2ppl run [WORKSPACE]        model summary, MLE fit, CLs and upper limit, NUTS posterior summary
    hf2ppl inspect WORKSPACE      parameters and channels
    hf2ppl fit WORKSPACE          maximum-likelihood fit (pyhf's likelihood)
    hf2ppl limit WORKSPACE        observed and expected CLs upper limits on the POI
    hf2ppl sample WORKSPACE       NUTS posterior (prior mode), summary, optional NetCDF/HTML report

Without WORKSPACE, ``run`` uses the bundled example (the thesis' 2_bin_corr model).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _load_kwargs(args) -> dict:
    kw = {}
    if getattr(args, "measurement", None):
        kw["measurement"] = args.measurement
    if getattr(args, "patch", None):
        kw["patches"] = list(args.patch)
    return kw


def _print_table(header, rows) -> None:
    cols = list(zip(*([header] + [[str(c) for c in r] for r in rows]))) if rows else [[h] for h in header]
    widths = [max(len(c) for c in col) for col in cols]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def cmd_inspect(args) -> None:
    import hf2ppl

    m = hf2ppl.compile(args.workspace, constraints="aux", **_load_kwargs(args))
    print(f"workspace: {args.workspace}")
    print(f"measurement: {m.ir.meta['measurement']}   POI: {m.poi_name}   "
          f"interpolation: normsys {m.ir.normsys_code}, histosys {m.ir.histosys_code}")
    print(f"channels: {', '.join(f'{c.name} ({c.nbins} bins)' for c in m.ir.channels)}   samples: {', '.join(m.ir.samples)}\n")
    rows = []
    for p in m.parameters:
        b = np.asarray(p.bounds)
        rows.append([p.name + (" (POI)" if p.is_poi else ""), p.kind, p.size, p.constraint or "free",
                     "yes" if all(p.fixed) else ("partly" if any(p.fixed) else "no"),
                     np.round(np.asarray(p.inits), 4).tolist() if p.size <= 3 else f"{p.inits[0]:g}, ...",
                     f"[{b[:, 0].min():g}, {b[:, 1].max():g}]"])
    _print_table(["parameter", "modifier", "size", "constraint", "fixed", "init", "bounds"], rows)


def cmd_fit(args) -> None:
    import hf2ppl

    m = hf2ppl.compile(args.workspace, constraints="aux", **_load_kwargs(args))
    res = hf2ppl.fit(m)
    print(f"\nMaximum-likelihood fit (pyhf likelihood)   -2 ln L = {2 * res.nll:.6f}   converged: {res.converged}")
    unc = res.uncertainties
    rows = [[n, f"{v:.6g}", "fixed" if f else f"{unc[n]:.4g}"] for (n, v), f in zip(res.bestfit.items(), res.fixed)]
    _print_table(["parameter", "best fit", "± (Hessian)"], rows)


def cmd_limit(args) -> None:
    import hf2ppl

    m = hf2ppl.compile(args.workspace, constraints="aux", **_load_kwargs(args))
    cls_obs, cls_exp = hf2ppl.hypotest(m, args.mu, test_stat="qtilde", return_expected_set=True)
    print(f"\nCLs at {m.poi_name} = {args.mu:g} (qtilde, asymptotics): observed {float(cls_obs):.5f}, "
          f"expected {float(np.asarray(cls_exp)[2]):.5f} [±1σ {float(np.asarray(cls_exp)[1]):.5f} .. {float(np.asarray(cls_exp)[3]):.5f}]")
    obs, exp = hf2ppl.upper_limit(m, level=args.level)
    exp = np.asarray(exp)
    print(f"95% CLs upper limit on {m.poi_name}: observed {float(obs):.4f}, expected {exp[2]:.4f} "
          f"(±1σ [{exp[1]:.4f}, {exp[3]:.4f}], ±2σ [{exp[0]:.4f}, {exp[4]:.4f}])")


def cmd_sample(args) -> None:
    import arviz as az

    import hf2ppl

    m = hf2ppl.compile(args.workspace, constraints="prior", **_load_kwargs(args))
    print(f"\nPosterior (constraints as priors, NUTS: {args.chains} chains × {args.draws} draws, {args.warmup} warmup)")
    idata = hf2ppl.sample(m, chains=args.chains, draws=args.draws, warmup=args.warmup, seed=args.seed)
    with_pd = az.summary(idata, kind="all", round_to=4)
    print(with_pd.to_string())
    div = int(np.asarray(idata.sample_stats["diverging"]).sum())
    print(f"divergences: {div}" + ("   WARNING: divergent transitions, inspect the report" if div else ""))
    if getattr(args, "out", None):
        idata.to_netcdf(args.out)
        print(f"wrote {args.out}")
    if getattr(args, "report", None):
        path = hf2ppl.report(idata, m, args.report)
        print(f"wrote report {path}")


def cmd_run(args) -> None:
    if args.workspace is None:
        from . import example

        args.workspace = example()
    cmd_inspect(args)
    cmd_fit(args)
    if not args.no_limits:
        cmd_limit(args)
    if not args.no_sample:
        cmd_sample(args)


def main(argv: list[str] | None = None) -> int:
    from .errors import HF2PPLError

    ap = argparse.ArgumentParser(prog="hf2ppl", description="Compile HistFactory workspaces to NumPyro/PyMC and run inference.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, optional_ws=False):
        if optional_ws:
            p.add_argument("workspace", nargs="?", default=None, help="workspace JSON (default: bundled 2_bin_corr example)")
        else:
            p.add_argument("workspace", help="workspace JSON")
        p.add_argument("--measurement", help="measurement name (default: the first)")
        p.add_argument("--patch", action="append", help="patch as 'patchset.json#name' (repeatable)")

    def sampling(p):
        p.add_argument("--chains", type=int, default=2)
        p.add_argument("--draws", type=int, default=1000)
        p.add_argument("--warmup", type=int, default=1000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", help="write the InferenceData to this NetCDF file")
        p.add_argument("--report", help="write an HTML diagnostics report to this path")

    p = sub.add_parser("run", help="the main job: summary, fit, limits, posterior")
    common(p, optional_ws=True)
    sampling(p)
    p.add_argument("--mu", type=float, default=1.0, help="POI value for the CLs printout")
    p.add_argument("--level", type=float, default=0.05)
    p.add_argument("--no-sample", action="store_true")
    p.add_argument("--no-limits", action="store_true")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("inspect", help="parameters and channels")
    common(p)
    p.set_defaults(fn=cmd_inspect)
    p = sub.add_parser("fit", help="maximum-likelihood fit")
    common(p)
    p.set_defaults(fn=cmd_fit)
    p = sub.add_parser("limit", help="CLs and upper limits")
    common(p)
    p.add_argument("--mu", type=float, default=1.0)
    p.add_argument("--level", type=float, default=0.05)
    p.set_defaults(fn=cmd_limit)
    p = sub.add_parser("sample", help="NUTS posterior")
    common(p)
    sampling(p)
    p.set_defaults(fn=cmd_sample)
    args = ap.parse_args(argv)
    try:
        args.fn(args)
    except HF2PPLError as exc:
        print(f"hf2ppl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
