"""Write docs/api.md, the API reference, from the docstrings: ``python docs/make_api.py``.

tests/test_docs.py checks that docs/api.md is what this script writes (so it moves with the code).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

SECTIONS = [
    ("Loading and compiling", "hf2ppl", ["load", "load_patchset", "example", "build", "compile", "CompiledModel", "Spec", "ModelIR", "ParameterSet"]),
    ("Frequentist inference (constraints='aux', pyhf's likelihood)", "hf2ppl",
     ["fit", "profile", "hypotest", "upper_limit", "significance", "pulls", "impacts", "test_statistic", "asimov_data", "hypotest_fn",
      "significance_fn"]),
    ("Bayesian inference (constraints='prior')", "hf2ppl", ["sample", "svi", "map_estimate"]),
    ("Bayesian vs frequentist", "hf2ppl", ["crosscheck", "CrossCheckResult"]),
    ("Patchset scans (see docs/scan.md)", "hf2ppl", ["scan", "ScanResult"]),
    ("Figures (hf2ppl.plot)", "hf2ppl.plot", ["plot_pulls", "plot_ranking", "plot_correlation", "plot_postfit", "plot_prefit", "plot_profile",
                                            "plot_brazil", "plot_crosscheck", "plot_exclusion"]),
    ("Reports", "hf2ppl", ["report"]),
    ("Priors (hf2ppl.priors)", "hf2ppl.priors", ["Uniform", "Normal", "HalfNormal", "LogNormal", "Gamma", "Flat", "default_prior"]),
    ("Errors (hf2ppl.errors)", "hf2ppl.errors", None),
    ("Compilation cache", "hf2ppl", ["set_cache_dir", "cache_dir"]),
]


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    para = doc.split("\n\n")[0].strip()
    return re.sub(r"\s+", " ", para)


def _signature(name: str, obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = "(...)"
    sig = re.sub(r" at 0x[0-9a-f]+", "", sig)
    return f"{name}{sig}"


def render() -> str:
    import importlib

    out = ["# API reference", "", "Generated from the docstrings by `python docs/make_api.py` (checked by `tests/test_docs.py`).",
           "Everything listed is importable as written (`hf2ppl.fit`, `hf2ppl.plot.plot_pulls`, `hf2ppl.priors.Normal`, ...);",
           "the full docstrings hold the arguments and runnable examples (`help(hf2ppl.fit)`).", ""]
    for title, modname, names in SECTIONS:
        mod = importlib.import_module(modname)
        if names is None:
            names = [n for n, v in vars(mod).items() if inspect.isclass(v) and issubclass(v, Exception) and v.__module__ == modname]
        names = [n for n in names if hasattr(mod, n) and not inspect.ismodule(getattr(mod, n))]
        if not names:
            continue
        out += [f"## {title}", ""]
        for n in names:
            obj = getattr(mod, n)
            prefix = "" if modname == "hf2ppl" else modname.removeprefix("hf2ppl.") + "."
            kind = "class " if inspect.isclass(obj) else ""
            out += [f"### {n}", "", f"`{kind}{prefix}{_signature(n, obj)}`", "", _summary(obj) or "(no docstring)", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    path = Path(__file__).with_name("api.md")
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if path.read_text() == text else 1)
    path.write_text(text)
    print(f"wrote {path}")
