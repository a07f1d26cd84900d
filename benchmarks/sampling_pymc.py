"""PyMC target sampling speed (issue 5), next to the NumPyro path. Not a test.

    python benchmarks/sampling_pymc.py [--quick] [--samplers pymc,numpyro,blackjax,nutpie] [--bins 100]

For 2_bin_corr and the thesis' n-bin shapesys model (``pyhf.simplemodels.uncorrelated_background``,
100 bins) in ``constraints="prior"`` mode: ``hf2ppl.sample`` on the ``target="pymc"`` model with each
available ``nuts_sampler`` (PyMC's own NUTS with ``cores=1``; numpyro/blackjax on the JAX-transpiled
graph, chains vectorised; nutpie on the numba-compiled graph), and ``hf2ppl.sample`` on the
``target="numpyro"`` model (default BlackJAX backend). Each is called twice on the same compiled
model: first call (compilation included) and warm call; bulk ESS of mu (and the minimum over all
parameters for the n-bin model) and ESS/s on the warm call. Full InferenceData (predictive,
log-likelihood, prior groups) in every case, as a user gets it.

``benchmarks/sampling.py`` imports :func:`rows` (rows ``{"name", "first_s", "warm_s", "ess", "ess_per_s"}``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import nbin_workspace  # noqa: E402

WS = Path(os.environ.get("HF2PPL_SHARED", ROOT.parent / "shared")) / "workspaces" / "2_bin_corr.json"
SAMPLERS = ("pymc", "numpyro", "blackjax", "nutpie")


def _ess(idata) -> tuple[float, float]:
    import arviz as az

    ess = az.ess(idata.posterior)
    return float(ess["mu"]), float(min(float(ess[v].min()) for v in ess.data_vars))


def _bench(name: str, model, sample_kwargs: dict, warmup: int, draws: int, chains: int) -> dict:
    import hf2ppl

    def go():
        return hf2ppl.sample(model, chains=chains, draws=draws, warmup=warmup, seed=0, progress=False, **sample_kwargs)

    t0 = time.perf_counter()
    go()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    idata = go()
    warm = time.perf_counter() - t0
    mu_ess, min_ess = _ess(idata)
    return {"name": name, "first_s": first, "warm_s": warm, "ess": mu_ess, "ess_per_s": mu_ess / warm,
            "min_ess": min_ess, "min_ess_per_s": min_ess / warm,
            "divergences": int(idata.sample_stats.diverging.sum())}


def _settings() -> tuple[int, int, int]:
    """warmup, draws, chains: those of benchmarks/sampling.py when it is the running script, else 1000, 5000, 2."""
    main = sys.modules.get("__main__")
    return (int(getattr(main, "WARMUP", 1000)), int(getattr(main, "DRAWS", 5000)), int(getattr(main, "CHAINS", 2)))


def rows(samplers: tuple[str, ...] | None = None, nbins: tuple[int, ...] = (100,), warmup: int | None = None,
         draws: int | None = None, chains: int | None = None, numpyro_path: bool = True, verbose: bool = False) -> list[dict]:
    """Benchmark rows: the PyMC target with each available ``nuts_sampler`` (and the NumPyro path) on
    2_bin_corr and on the n-bin models."""
    import hf2ppl
    from hf2ppl.infer.pymc_sampling import available_nuts_samplers

    w0, d0, c0 = _settings()
    warmup, draws, chains = warmup or w0, draws or d0, chains or c0
    avail = available_nuts_samplers()
    samplers = tuple(s for s in (samplers or SAMPLERS) if s in avail)
    models: list[tuple[str, Any]] = [("2_bin_corr", str(WS))] + [(f"nbin_{n}", nbin_workspace(n)) for n in nbins]
    out = []
    for label, ws in models:
        todo = []
        if numpyro_path:
            todo.append((f"hf2ppl.sample numpyro target (blackjax) [{label}]", hf2ppl.compile(ws), {}))
        for s in samplers:
            todo.append((f"PyMC target, nuts_sampler={s} [{label}]", hf2ppl.compile(ws, target="pymc"), {"nuts_sampler": s}))
        for name, m, kw in todo:
            try:
                r = _bench(name, m, kw, warmup, draws, chains)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other samplers
                r = {"name": name + f" FAILED: {exc!r}"[:200], "first_s": None, "warm_s": None, "ess": None, "ess_per_s": None}
            out.append(r)
            if verbose:
                print(_fmt_row(r), flush=True)
    return out


def _f(v, spec=".3g") -> str:
    return "—" if v is None else format(v, spec)


def _fmt_row(r: dict) -> str:
    return (f"| {r['name']} | {_f(r['first_s'])} | {_f(r['warm_s'])} | {_f(r['ess'], '.0f')} | {_f(r['ess_per_s'], '.0f')} | "
            f"{_f(r.get('min_ess'), '.0f')} | {_f(r.get('min_ess_per_s'), '.0f')} | {r.get('divergences', '—')} |")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 warmup + 500 draws")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--bins", default="100")
    args = ap.parse_args(argv)
    warmup, draws, chains = (200, 500, 2) if args.quick else (1000, 5000, 2)
    import jax
    import pymc

    print(f"# {os.cpu_count()} CPU cores; PyMC {pymc.__version__}; JAX {jax.__version__} on {jax.default_backend()}; "
          f"nutpie {'installed' if importlib.util.find_spec('nutpie') else 'not installed'}")
    print(f"# {warmup} warmup + {draws} draws x {chains} chains, constraints='prior', full InferenceData\n")
    print("| engine [model] | first s | warm s | ESS(mu) | ESS(mu)/s | min ESS | min ESS/s | div |")
    print("|---|---|---|---|---|---|---|---|")
    return rows(tuple(args.samplers.split(",")), tuple(int(b) for b in args.bins.split(",") if b), warmup, draws, chains,
                verbose=True)


if __name__ == "__main__":
    main()
