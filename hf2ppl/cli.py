"""The ``hf2ppl`` console script: a thin layer over the public API, a drop-in for pyhf's where they overlap.

    hf2ppl run [WORKSPACE]              the main job: model summary, MLE fit, CLs limits, NUTS posterior and the
                                        Bayesian-vs-frequentist table (writes crosscheck.png)
    hf2ppl inspect WORKSPACE            channels, samples, parameters, all measurements (pyhf's layout + hf2ppl's table)
    hf2ppl fit WORKSPACE                maximum-likelihood fit (pyhf's likelihood); --plot pulls|ranking|corr|postfit|prefit
    hf2ppl cls WORKSPACE                CLs at --test-poi, printed exactly as ``pyhf cls``
    hf2ppl limit WORKSPACE              observed and expected CLs upper limits (±1σ, ±2σ); --plot brazil figure
    hf2ppl crosscheck WORKSPACE         CLs and credible upper limits side by side; --prior, --plot
    hf2ppl sample WORKSPACE             NUTS posterior (constraints as priors), summary; --prior, NetCDF, HTML report
    hf2ppl patchset extract|apply|inspect|verify   as ``pyhf patchset ...``
    hf2ppl scan BKGONLY PATCHSET        CLs (--limits: upper limits) for every patch; --output FILE (resumable),
                                        --scheduler processes|tcp://..., --plot exclusion figure

Every WORKSPACE (and PATCHSET) may be ``-`` for standard input. Result subcommands take ``--json`` (and
``--output-file``). Bad input gives one line on stderr and exit status 2 (``HF2PPL_DEBUG=1`` shows the traceback).
Without WORKSPACE, ``run`` uses the bundled example (the thesis' 2_bin_corr model).

To add a subcommand: write ``cmd_x(args)`` and register it in :func:`build_parser` (``sub.add_parser``, then
``set_defaults(fn=cmd_x)``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from typing import Any

import numpy as np

# ArviZ 0.23 warns once a day about its coming refactor: noise in the middle of a result table
warnings.filterwarnings("ignore", message=r"[\s\S]*ArviZ is undergoing a major refactor", category=FutureWarning)


class CLIError(Exception):
    """A bad command line (reported in one line, exit status 2)."""


# ---------------------------------------------------------------------------------------------------- input
_STDIN_CACHE: dict[str, str] = {}


def _source(arg: str | None, what: str = "workspace") -> Any:
    """A path, or the parsed JSON of standard input for ``-``."""
    if arg != "-":
        return arg
    if "-" not in _STDIN_CACHE:
        if sys.stdin is None or sys.stdin.isatty():
            raise CLIError(f"no {what} given: pass a path, or pipe the JSON into standard input ('-')")
        _STDIN_CACHE["-"] = sys.stdin.read()
    text = _STDIN_CACHE["-"]
    if not text.strip():
        raise CLIError(f"no {what} on standard input")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what} on standard input is not valid JSON: {exc}") from None


def _read_doc(arg: str, what: str) -> dict:
    src = _source(arg, what)
    if isinstance(src, dict):
        return src
    try:
        with open(src, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CLIError(f"{what} file {src!r} does not exist") from None
    except IsADirectoryError:
        raise CLIError(f"{what} {src!r} is a directory, not a JSON file") from None
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what} {src!r} is not valid JSON: {exc}") from None


def _patches(args) -> list:
    """``-p/--patch`` items: a JSON-patch file (as pyhf) or ``patchset.json#name``."""
    out = []
    for item in getattr(args, "patch", None) or []:
        if "#" in item and not os.path.exists(item):
            path, name = item.rsplit("#", 1)
            out.append((_read_doc(path, "patchset"), name))
            continue
        doc = _read_doc(item, "patch")
        if isinstance(doc, dict) and "patch" in doc:  # an extracted patch --with-metadata
            doc = doc["patch"]
        if not isinstance(doc, list):
            raise CLIError(f"patch {item!r} is not a JSON patch (a list of operations) nor 'patchset.json#name'")
        out.append(doc)
    return out


def _load_kwargs(args) -> dict:
    kw: dict[str, Any] = {}
    if getattr(args, "measurement", None):
        kw["measurement"] = args.measurement
    p = _patches(args)
    if p:
        kw["patches"] = p
    return kw


def _compile(args, constraints: str = "aux", **kw):
    import hf2ppl

    return hf2ppl.compile(_source(args.workspace), constraints=constraints, **_load_kwargs(args), **kw)


def _level(args) -> float:
    """``--level``: the CLs size α in (0, 1) (0.05 → a 95% CL limit)."""
    lv = args.level
    if not (0.0 < lv < 1.0) or not np.isfinite(lv):
        raise CLIError(f"--level is the CLs size α, in (0, 1) (0.05 for a 95% CL limit), got {lv:g}")
    return lv


def _cl_label(alpha: float) -> str:
    return f"{100 * (1 - alpha):.4g}%"


_PRIOR_RE = re.compile(r"^\s*(?:(?P<name>[^=\s]+)\s*=\s*)?(?P<dist>[A-Za-z]+)\s*\((?P<args>[^()]*)\)\s*$")


def _prior(text: str, poi: str | None) -> tuple[str, Any]:
    """``'Uniform(0, 5)'`` (the POI) or ``'name=Normal(0, 1)'`` → ``(name, hf2ppl.priors object)``; no eval."""
    from . import priors

    m = _PRIOR_RE.match(text)
    kinds = [k for k in priors.__all__ if k not in ("Prior", "default_prior")]
    if not m or m["dist"] not in kinds:
        raise CLIError(f"--prior {text!r}: expected [NAME=]DIST(a, b, ...) with DIST one of {kinds}, e.g. 'Uniform(0, 5)'")
    try:
        vals = [float(v) for v in m["args"].split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--prior {text!r}: the arguments must be numbers") from None
    name = m["name"] or poi
    if name is None:
        raise CLIError(f"--prior {text!r}: the model has no POI; write NAME=DIST(...)")
    try:
        return name, getattr(priors, m["dist"])(*vals)
    except TypeError as exc:
        raise CLIError(f"--prior {text!r}: {exc}") from None


def _emit(args, obj: Any, text: str | None = None) -> None:
    """Print ``text`` (or JSON with --json); ``--output-file`` gets the JSON."""
    out = getattr(args, "output_file", None)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, sort_keys=True)
    if getattr(args, "json", False) or text is None:
        if not out:
            print(json.dumps(obj, indent=4, sort_keys=True))
    else:
        print(text)
    if out:
        print(f"wrote {out}", file=sys.stderr)


def _print_table(header, rows) -> str:
    cols = list(zip(*([header] + [[str(c) for c in r] for r in rows]))) if rows else [[h] for h in header]
    widths = [max(len(c) for c in col) for col in cols]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)] + ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(x.rstrip() for x in out)


def _f(x: Any) -> float:
    return float(np.asarray(x))


# ---------------------------------------------------------------------------------------------------- inspect
def _inspect_data(m) -> dict:
    ws = m.spec.workspace
    default = m.spec.measurement["name"]
    constraint = {None: "unconstrained", "normal": "constrained_by_normal", "poisson": "constrained_by_poisson"}
    mods: dict[str, set] = {}
    for ch in ws["channels"]:
        for s in ch["samples"]:
            for md in s["modifiers"]:
                mods.setdefault(md["name"], set()).add(md["type"])
    n_mods = len({(md["name"], md["type"]) for ch in ws["channels"] for s in ch["samples"] for md in s["modifiers"]})
    return {
        "channels": [[c.name, c.nbins] for c in m.ir.channels],
        "samples": list(m.ir.samples),
        "parameters": [[p.name, constraint[p.constraint], sorted(mods.get(p.name, {p.kind}))] for p in sorted(m.parameters, key=lambda p: p.name)],
        "measurements": [{"name": ms["name"], "poi": ms["config"]["poi"], "parameters": [p["name"] for p in ms["config"].get("parameters", [])],
                          "default": ms["name"] == default} for ms in ws["measurements"]],
        "n_modifiers": n_mods,
        "poi": m.poi_name,
        "interpolation": {"normsys": m.ir.normsys_code, "histosys": m.ir.histosys_code},
    }


def cmd_inspect(args) -> None:
    from .errors import HF2PPLError

    note = None
    try:
        m = _compile(args)
    except HF2PPLError as exc:  # a background-only workspace whose POI only the signal patches define
        if not str(getattr(exc, "path", "") or "").endswith("/config/poi"):
            raise
        m = _compile(args, poi_name=None)
        note = f"note: the measurement's POI is not in this workspace (background-only?): {' '.join(str(exc).split())[:160]}"
    d = _inspect_data(m)
    if note:
        d["note"] = note
    if getattr(args, "json", False):
        return _emit(args, d)
    names = [c for c, _ in d["channels"]] + d["samples"] + [p[0] for p in d["parameters"]] + [ms["name"] for ms in d["measurements"]]
    w = max(map(len, names)) if names else 10
    lines = [f"{'     Summary     ': >{w + 7}s}", f"{'-' * 18: >{w + 7}s}"]
    for key, n in (("channels", len(d["channels"])), ("samples", len(d["samples"])), ("parameters", len(d["parameters"])),
                   ("modifiers", d["n_modifiers"])):
        lines.append(f"{key: >{w}s}  {n}")
    lines += ["", f"{'channels': >{w}s}  {'nbins': ^5s}", f"{'-' * 10: >{w}s}  {'-' * 5: ^5s}"]
    lines += [f"{c: >{w}s}  {str(n): ^5s}" for c, n in d["channels"]]
    lines += ["", f"{'samples': >{w}s}", f"{'-' * 10: >{w}s}"] + [f"{s: >{w}s}" for s in d["samples"]]
    lines += ["", f"{'parameters': >{w}s}  {'constraint': <22s}  modifiers", f"{'-' * 10: >{w}s}  {'-' * 10: <22s}  {'-' * 10}"]
    lines += [f"{n: >{w}s}  {c: <22s}  {','.join(t)}" for n, c, t in d["parameters"]]
    lines += ["", f"{'measurement': >{w}s}  {'poi': ^22s}  parameters", f"{'-' * 10: >{w}s}  {'-' * 10: ^22s}  {'-' * 10}"]
    lines += [f"{('(*) ' if ms['default'] else '') + ms['name']: >{w}s}  {ms['poi']: ^22s}  {','.join(ms['parameters']) or '(none)'}"
              for ms in d["measurements"]]
    rows = []
    for p in m.parameters:
        b = np.asarray(p.bounds)
        rows.append([p.name + (" (POI)" if p.is_poi else ""), p.kind, p.size, p.constraint or "free",
                     "yes" if all(p.fixed) else ("partly" if any(p.fixed) else "no"),
                     np.round(np.asarray(p.inits), 4).tolist() if p.size <= 3 else f"{p.inits[0]:g}, ...",
                     f"[{b[:, 0].min():g}, {b[:, 1].max():g}]"])
    lines += ([""] + [note] if note else [])
    lines += ["", f"measurement used: {m.spec.measurement['name']}   POI: {m.poi_name}   interpolation: normsys {m.ir.normsys_code}, "
              f"histosys {m.ir.histosys_code}", "",
              _print_table(["parameter", "modifier", "size", "constraint", "fixed", "init", "bounds"], rows)]
    _emit(args, d, "\n".join(lines))


# ---------------------------------------------------------------------------------------------------- fit
FIT_PLOTS = ("pulls", "ranking", "corr", "postfit", "prefit")


def cmd_fit(args) -> None:
    import hf2ppl

    m = _compile(args)
    res = hf2ppl.fit(m)
    unc = res.uncertainties
    d = {"bestfit": res.bestfit, "uncertainties": unc, "twice_nll": res.twice_nll, "converged": bool(res.converged),
         "fixed": [n for n, f in zip(res.par_names, res.fixed) if f], "edm": res.edm, "niter": res.niter, "message": res.message}
    rows = [[n, f"{v:.6g}", "fixed" if f else f"{unc[n]:.4g}"] for (n, v), f in zip(res.bestfit.items(), res.fixed)]
    text = (f"Maximum-likelihood fit (pyhf likelihood)   -2 ln L = {res.twice_nll:.6f}   converged: {res.converged}\n"
            + _print_table(["parameter", "best fit", "± (Hessian)"], rows))
    written = _fit_plots(args, m, res)
    if written:
        d["figures"] = written
    _emit(args, d, text)
    for p in written.values():
        print(f"wrote {p}", file=sys.stderr)


def _fit_plots(args, m, res) -> dict:
    kinds = [k for item in (getattr(args, "plot", None) or []) for k in item.split(",") if k]
    bad = [k for k in kinds if k not in FIT_PLOTS]
    if bad:
        raise CLIError(f"--plot {bad[0]!r}: choose from {', '.join(FIT_PLOTS)}")
    if not kinds:
        return {}
    import hf2ppl
    from hf2ppl import plot

    out_dir = args.plot_dir
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    pulls = hf2ppl.pulls(m, fit_result=res) if {"pulls", "ranking"} & set(kinds) else None
    for k in kinds:
        if k == "pulls":
            fig = plot.plot_pulls(pulls)
        elif k == "ranking":
            fig = plot.plot_ranking(hf2ppl.impacts(m, fit_result=res), pulls)
        elif k == "corr":
            fig = plot.plot_correlation(res)
        elif k == "postfit":
            fig = plot.plot_postfit(m, res)
        else:
            fig = plot.plot_prefit(m)
        path = os.path.join(out_dir, f"{k}.png")
        fig.savefig(path, bbox_inches="tight")
        written[k] = path
    return written


# ---------------------------------------------------------------------------------------------------- cls
def cmd_cls(args) -> None:
    import hf2ppl

    m = _compile(args)
    calctype = {"asymptotics": "asymptotics", "toybased": "toys"}[args.calctype]
    cls_obs, band = hf2ppl.hypotest(m, args.test_poi, test_stat=args.test_stat, calctype=calctype, return_expected_set=True)
    result = {"CLs_obs": _f(cls_obs), "CLs_exp": [_f(v) for v in band]}
    if args.output_file:
        with open(args.output_file, "w+", encoding="utf-8") as f:
            json.dump(result, f, indent=4, sort_keys=True)
    else:
        print(json.dumps(result, indent=4, sort_keys=True))


# ---------------------------------------------------------------------------------------------------- limit
def cmd_limit(args) -> None:
    import hf2ppl

    alpha = _level(args)
    lab = _cl_label(alpha)
    m = _compile(args)
    cls_obs, cls_exp = hf2ppl.hypotest(m, args.mu, test_stat=args.test_stat, return_expected_set=True)
    e5 = [_f(v) for v in cls_exp]
    res = hf2ppl.upper_limit(m, level=alpha, test_stat=args.test_stat, return_results=bool(args.plot))
    obs, exp = res[0], [_f(v) for v in res[1]]
    d = {"poi": m.poi_name, "level": alpha, "cl": 1 - alpha, "test_stat": args.test_stat,
         "cls_at_mu": {"mu": args.mu, "CLs_obs": _f(cls_obs), "CLs_exp": e5},
         "observed": _f(obs), "expected": exp, "expected_labels": ["-2sigma", "-1sigma", "median", "+1sigma", "+2sigma"]}
    text = (f"CLs at {m.poi_name} = {args.mu:g} ({args.test_stat}, asymptotics): observed {_f(cls_obs):.5f}, expected {e5[2]:.5f} "
            f"[±1σ {e5[1]:.5f} .. {e5[3]:.5f}, ±2σ {e5[0]:.5f} .. {e5[4]:.5f}]\n"
            f"{lab} CL upper limit on {m.poi_name} (CLs = {alpha:g}): observed {_f(obs):.4f}, expected {exp[2]:.4f} "
            f"(±1σ [{exp[1]:.4f}, {exp[3]:.4f}], ±2σ [{exp[0]:.4f}, {exp[4]:.4f}])")
    if args.plot:
        from hf2ppl import plot

        plot.plot_brazil(res, level=alpha, poi_name=m.poi_name).savefig(args.plot, bbox_inches="tight")
        d["figure"] = args.plot
    _emit(args, d, text)
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------- sampling
def _priors(args, poi: str | None) -> dict:
    out = {}
    for text in getattr(args, "prior", None) or []:
        name, pr = _prior(text, poi)
        out[name] = pr
    return out


def _summary_text(idata, header: str) -> str:
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summ = az.summary(idata, kind="all", round_to=4)
    div = int(np.asarray(idata.sample_stats["diverging"]).sum()) if "diverging" in idata.sample_stats else 0
    return (f"{header}\n{summ.to_string()}\ndivergences: {div}"
            + ("   WARNING: divergent transitions, inspect the report" if div else ""))


def cmd_sample(args) -> None:
    import hf2ppl

    spec = hf2ppl.load(_source(args.workspace), **_load_kwargs(args))
    pri = _priors(args, spec.poi)
    m = hf2ppl.compile(spec, constraints="prior", priors=pri or None)
    idata = hf2ppl.sample(m, chains=args.chains, draws=args.draws, warmup=args.warmup, seed=args.seed)
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summ = az.summary(idata, round_to=6)
    d = {"summary": json.loads(summ.to_json(orient="index")), "divergences": int(np.asarray(idata.sample_stats["diverging"]).sum()),
         "priors": {k: repr(v) for k, v in pri.items()}, "chains": args.chains, "draws": args.draws, "warmup": args.warmup}
    prior_line = ", ".join(f"{k} ~ {v!r}" for k, v in pri.items()) or "defaults (constraint terms as priors, free parameters Uniform(bounds))"
    text = _summary_text(idata, f"Posterior (NUTS: {args.chains} chains × {args.draws} draws, {args.warmup} warmup; priors: {prior_line})")
    if args.out:
        idata.to_netcdf(args.out)
        d["netcdf"] = args.out
    if args.report:
        d["report"] = str(hf2ppl.report(idata, m, args.report))
    _emit(args, d, text)
    for k in ("netcdf", "report"):
        if k in d:
            print(f"wrote {d[k]}", file=sys.stderr)


def _crosscheck(args, spec):
    import hf2ppl

    pri = _priors(args, spec.poi)
    if spec.poi is None:
        raise CLIError("crosscheck needs a model with a POI")
    poi_prior = pri.pop(spec.poi, None)
    if pri:
        raise CLIError(f"crosscheck: --prior sets the POI's prior only; got {sorted(pri)}")
    return hf2ppl.crosscheck(spec, level=1 - _level(args), poi_prior=poi_prior, chains=args.chains, draws=args.draws,
                             warmup=args.warmup, seed=args.seed, test_stat=args.test_stat)


def cmd_crosscheck(args) -> None:
    import hf2ppl

    spec = hf2ppl.load(_source(args.workspace), **_load_kwargs(args))
    r = _crosscheck(args, spec)
    d = r.to_dict()
    if args.plot:
        r.plot().savefig(args.plot, bbox_inches="tight")
        d["figure"] = args.plot
    _emit(args, d, str(r))
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)


def cmd_run(args) -> None:
    """The main job: inspect, fit, then limits and the posterior side by side."""
    if args.workspace is None:
        from . import example

        args.workspace = example()
    args.json = False
    args.output_file = None
    cmd_inspect(args)
    print()
    args.plot_dir, plot_path, args.plot = ".", args.plot, None
    cmd_fit(args)
    print()
    if args.no_sample:
        args.plot = None
        cmd_limit(args)
        return
    import hf2ppl

    spec = hf2ppl.load(_source(args.workspace), **_load_kwargs(args))
    r = _crosscheck(args, spec)
    print(_summary_text(r.idata, f"Posterior (constraints as priors, prior on {r.poi_name}: {r.prior}; NUTS: {args.chains} chains × "
                                 f"{args.draws} draws, {args.warmup} warmup)"))
    print()
    print(r)
    if plot_path:
        r.plot().savefig(plot_path, bbox_inches="tight")
        print(f"\nwrote {plot_path}")
    if args.report:
        print(f"wrote report {hf2ppl.report(r.idata, r.bayes_model, args.report, frequentist=True)}")


# ---------------------------------------------------------------------------------------------------- patchset
def _patchset(arg: str) -> dict:
    import hf2ppl

    return hf2ppl.load_patchset(_read_doc(arg, "patchset"))


def _verify(bkg: dict, ps: dict) -> None:
    """pyhf's ``PatchSet.verify``: every digest in the patchset's metadata is that of the background-only workspace
    (pyhf's ``utils.digest``: the hash of the JSON with sorted keys)."""
    import hashlib

    from .errors import PatchError

    text = json.dumps(bkg, sort_keys=True, ensure_ascii=False).encode("utf8")
    for algorithm, expected in ps["metadata"].get("digests", {}).items():
        try:
            got = hashlib.new(algorithm, text).hexdigest()
        except ValueError:
            raise CLIError(f"the patchset's digest algorithm {algorithm!r} is unknown") from None
        if got != expected:
            raise PatchError(f"the patchset does not belong to this background-only workspace: its {algorithm} digest is "
                             f"{expected[:16]}..., the workspace's is {got[:16]}...", path="/metadata/digests")


def _find_patch(ps: dict, name: str | None) -> dict:
    names = [p["metadata"]["name"] for p in ps["patches"]]
    if name is None:
        raise CLIError(f"--name is required; patches: {names[:10]}{' ...' if len(names) > 10 else ''}")
    for p in ps["patches"]:
        if p["metadata"]["name"] == name:
            return p
    raise CLIError(f"no patch named {name!r} in the patchset; patches: {names[:10]}{' ...' if len(names) > 10 else ''}")


def _write_or_print(obj: Any, output_file: str | None) -> None:
    if output_file:
        with open(output_file, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, sort_keys=True)
    else:
        print(json.dumps(obj, indent=4, sort_keys=True))


def cmd_patchset_extract(args) -> None:
    ps = _patchset(args.patchset)
    p = _find_patch(ps, args.name)
    if args.with_metadata:
        md = dict(p["metadata"])
        md.update(ps["metadata"])
        result: Any = {"metadata": md, "patch": p["patch"]}
    else:
        result = p["patch"]
    _write_or_print(result, args.output_file)


def cmd_patchset_apply(args) -> None:
    import hf2ppl

    bkg = _read_doc(args.background_only, "background-only workspace")
    ps = _patchset(args.patchset)
    p = _find_patch(ps, args.name)
    _verify(bkg, ps)
    spec = hf2ppl.load(bkg, patches=[p["patch"]])
    _write_or_print(spec.workspace, args.output_file)


def cmd_patchset_verify(args) -> None:
    import hf2ppl

    bkg = _read_doc(args.background_only, "background-only workspace")
    hf2ppl.load(bkg)  # a valid workspace
    _verify(bkg, _patchset(args.patchset))
    print("All good.")


def cmd_patchset_inspect(args) -> None:
    ps = _patchset(args.patchset)
    if getattr(args, "json", False):
        return _emit(args, {"labels": ps["metadata"]["labels"], "patches": [p["metadata"] for p in ps["patches"]]})
    print(f"\n    {len(ps['patches'])} patches found in Patchset")
    print("---------------------------------\n")
    for p in ps["patches"]:
        print(p["metadata"]["name"])


# ---------------------------------------------------------------------------------------------------- scan
def cmd_scan(args) -> None:
    import hf2ppl

    res = hf2ppl.scan(_source(args.background_only, "background-only workspace"), _source(args.patchset, "patchset"),
                      patches=args.patch or None, poi_value=args.test_poi, test_stat=args.test_stat, limits=args.limits,
                      level=args.level, scheduler=args.scheduler, workers=args.workers, output=args.output,
                      chunk_size=args.chunk_size, verify=not args.no_verify, measurement=args.measurement,
                      progress=None if not args.json else False)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        labels = res.labels
        hf2ppl.plot_exclusion(res, x=args.x or (labels[0] if labels else None), y=args.y or (labels[1] if len(labels) > 1 else None)
                              ).savefig(args.plot, dpi=130, bbox_inches="tight")
    rows = [[r["name"], *[f"{r['values'][lab]:g}" for lab in res.labels],
             "-" if r["cls_obs"] is None else f"{r['cls_obs']:.4g}", "-" if r["cls_exp"] is None else f"{r['cls_exp'][2]:.4g}",
             *([("-" if r.get("ul_obs") is None else f"{r['ul_obs']:.4g}"), ("-" if r.get("ul_exp") is None else f"{r['ul_exp'][2]:.4g}")]
               if args.limits else []),
             "failed: " + r["error"][:80] if r["error"] else ("; ".join(r["warnings"])[:80] if r["warnings"] else "ok")] for r in res]
    header = ["patch", *res.labels, "CLs obs", "CLs exp", *(["UL obs", "UL exp"] if args.limits else []), "status"]
    text = _print_table(header, rows) + f"\n{len(res)} patches, {len(res.failed)} failed, {len(res.flagged)} flagged"
    if args.output:
        text += f"; rows in {args.output}"
    if args.plot:
        text += f"; exclusion figure {args.plot}"
    _emit(args, {"labels": res.labels, "options": res.options, "rows": res.rows}, text)


# ---------------------------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = _Parser(prog="hf2ppl", description="Compile HistFactory workspaces to NumPyro/PyMC and run inference.")
    ap.add_argument("--version", action="version", version=f"hf2ppl {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p, optional_ws=False, pyhf_patch=True):
        if optional_ws:
            p.add_argument("workspace", nargs="?", default=None, help="workspace JSON or - for stdin (default: bundled 2_bin_corr)")
        else:
            p.add_argument("workspace", nargs="?", default="-", help="workspace JSON, or - for standard input (the default)")
        p.add_argument("--measurement", help="measurement name (default: the first)")
        p.add_argument("-p", "--patch", action="append", help="a JSON-patch file (as pyhf) or 'patchset.json#name' (repeatable)")

    def output(p):
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--output-file", help="also write the JSON result to this file")

    def sampling(p, draws=1000):
        p.add_argument("--chains", type=int, default=4 if draws >= 1000 else 2)
        p.add_argument("--draws", type=int, default=draws)
        p.add_argument("--warmup", type=int, default=draws)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--prior", action="append", help="prior as [NAME=]DIST(args), e.g. 'Uniform(0, 5)' for the POI (repeatable)")

    def limits(p):
        p.add_argument("--level", type=float, default=0.05, help="CLs size α (0.05 → 95%% CL limits)")
        p.add_argument("--test-stat", choices=("qtilde", "q"), default="qtilde")

    p = sub.add_parser("run", help="the main job: summary, fit, CLs and credible limits side by side, posterior")
    common(p, optional_ws=True)
    sampling(p, draws=1000)
    limits(p)
    p.add_argument("--mu", type=float, default=1.0, help="POI value for the CLs printout (with --no-sample)")
    p.add_argument("--plot", default="crosscheck.png", help="the cross-check figure (default crosscheck.png; '' for none)")
    p.add_argument("--report", help="write an HTML report: the posterior's diagnostics and the frequentist section")
    p.add_argument("--no-sample", action="store_true", help="frequentist part only")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("inspect", help="channels, samples, parameters, measurements")
    common(p)
    output(p)
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("fit", help="maximum-likelihood fit")
    common(p)
    output(p)
    p.add_argument("--plot", action="append", help=f"figures to draw: {', '.join(FIT_PLOTS)} (repeatable or comma-separated)")
    p.add_argument("--plot-dir", default=".", help="folder of the figures (<kind>.png)")
    p.set_defaults(fn=cmd_fit)

    p = sub.add_parser("cls", help="CLs at --test-poi, printed as pyhf cls")
    common(p)
    p.add_argument("--output-file", help="write the JSON here instead of printing it")
    p.add_argument("--test-poi", type=float, default=1.0)
    p.add_argument("--test-stat", choices=("q", "qtilde"), default="qtilde")
    p.add_argument("--calctype", choices=("asymptotics", "toybased"), default="asymptotics")
    p.add_argument("--backend", choices=("numpy", "pytorch", "tensorflow", "jax", "np", "torch", "tf"),
                   help="accepted for pyhf compatibility; hf2ppl always computes with JAX")
    p.add_argument("--optimizer", choices=("scipy", "minuit"), help="accepted for pyhf compatibility; hf2ppl has its own minimiser")
    p.add_argument("--optconf", action="append", help="accepted for pyhf compatibility (ignored)")
    p.set_defaults(fn=cmd_cls)

    p = sub.add_parser("limit", help="observed and expected CLs upper limits")
    common(p)
    output(p)
    limits(p)
    p.add_argument("--mu", type=float, default=1.0, help="POI value for the CLs printout")
    p.add_argument("--plot", help="write the brazil-band figure to this PNG")
    p.set_defaults(fn=cmd_limit)

    p = sub.add_parser("crosscheck", help="CLs and Bayesian credible upper limits side by side")
    common(p)
    output(p)
    limits(p)
    sampling(p, draws=1000)
    p.add_argument("--plot", help="write the cross-check figure to this PNG")
    p.set_defaults(fn=cmd_crosscheck)

    p = sub.add_parser("sample", help="NUTS posterior (constraints as priors)")
    common(p)
    output(p)
    sampling(p, draws=1000)
    p.add_argument("--out", help="write the InferenceData to this NetCDF file")
    p.add_argument("--report", help="write an HTML diagnostics report to this path")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("patchset", help="patchsets: extract, apply, inspect, verify (as pyhf patchset)")
    ps = p.add_subparsers(dest="patchset_command", required=True, parser_class=_Parser)
    q = ps.add_parser("extract", help="a patch of a patchset, as JSON patch")
    q.add_argument("patchset", nargs="?", default="-")
    q.add_argument("--name", help="the name of the patch")
    q.add_argument("--output-file")
    q.add_argument("--with-metadata", action=argparse.BooleanOptionalAction, default=False)
    q.set_defaults(fn=cmd_patchset_extract)
    q = ps.add_parser("apply", help="the background-only workspace with a patch applied")
    q.add_argument("background_only", nargs="?", default="-")
    q.add_argument("patchset", nargs="?", default="-")
    q.add_argument("--name", help="the name of the patch")
    q.add_argument("--output-file")
    q.set_defaults(fn=cmd_patchset_apply)
    q = ps.add_parser("verify", help="check the patchset's digests against the background-only workspace")
    q.add_argument("background_only", nargs="?", default="-")
    q.add_argument("patchset", nargs="?", default="-")
    q.set_defaults(fn=cmd_patchset_verify)
    q = ps.add_parser("inspect", help="list the patches")
    q.add_argument("patchset", nargs="?", default="-")
    q.add_argument("--json", action="store_true")
    q.set_defaults(fn=cmd_patchset_inspect)

    p = sub.add_parser("scan", help="CLs (and limits) for every patch of a patchset: batched, resumable, on Dask")
    p.add_argument("background_only", help="background-only workspace JSON (or -)")
    p.add_argument("patchset", help="pyhf PatchSet JSON (or -)")
    p.add_argument("--patch", action="append", help="only this patch (by name; repeatable)")
    p.add_argument("--measurement", help="measurement name (default: the first)")
    p.add_argument("--test-poi", type=float, default=1.0, help="POI value of the CLs test (default 1)")
    p.add_argument("--test-stat", choices=("qtilde", "q"), default="qtilde")
    p.add_argument("--limits", action="store_true", help="also observed and expected upper limits")
    p.add_argument("--level", type=float, default=0.05, help="CLs size α of the limits (0.05: 95%% CL)")
    p.add_argument("--scheduler", help="'processes' (a local Dask cluster) or a Dask scheduler address tcp://host:port")
    p.add_argument("--workers", type=int, help="worker processes of --scheduler processes (default: one per core)")
    p.add_argument("--output", help="JSON-lines file, appended chunk by chunk; a rerun resumes where it stopped")
    p.add_argument("--chunk-size", type=int, help="patches per batch (default 32 on CPU, 512 on GPU)")
    p.add_argument("--no-verify", action="store_true", help="skip the check of the patchset's digest")
    p.add_argument("--plot", help="write the exclusion figure (observed, expected ±1σ) to this file")
    p.add_argument("-x", help="metadata label on the figure's x axis (default: the first)")
    p.add_argument("-y", help="metadata label on the figure's y axis (default: the second)")
    output(p)
    p.set_defaults(fn=cmd_scan)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .errors import HF2PPLError

    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (HF2PPLError, CLIError) as exc:
        print(f"hf2ppl: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf2ppl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hf2ppl ... | head`
        return 0
    except Exception as exc:  # noqa: BLE001 - the console script reports, it does not dump tracebacks
        if os.environ.get("HF2PPL_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"hf2ppl: error: {type(exc).__name__}: {msg[:500]} (HF2PPL_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
