"""Sampling speed, side by side in one process (issue 4). Not a test: run ``python benchmarks/sampling.py``.

2_bin_corr, 1000 warmup + 5000 draws x 2 chains, through
  (a) hf2ppl.sample (backend="blackjax"),
  (b) a hand-written BlackJAX NUTS: the model's log density written by hand in JAX,
      blackjax.window_adaptation + nuts in lax.scan, vmap over chains, one jit,
  (c) NumPyro NUTS with pyhf's jax ``logpdf`` as potential function (pyhf.set_backend("jax")),
  (d) a hand-written NumPyro model in numpyro.infer.MCMC (chain_method="vectorized"),
  (e) hf2ppl.sample(backend="numpyro"),
first call (compile included) and warm wall times (minimum over 5 calls for the fast engines, the
second call for NumPyro's MCMC), bulk ESS of mu and ESS/s.
Then the thesis' n-bin shapesys model (pyhf.simplemodels.uncorrelated_background) with
10, 100, 500 bins through hf2ppl.sample (with and without the optional InferenceData groups) and a
hand-written BlackJAX NUTS on the same density (:func:`nbin_logdensity`): warm time (minimum of 3),
bulk ESS of mu and min over parameters, ESS/s, microseconds per gradient, ratio to the hand-written.

Rows from other engines: append callables returning rows to ``EXTRA_ROWS``; if
``benchmarks/sampling_pymc.py`` exists, its ``rows()`` is imported and called.
A row is a dict: {"name", "first_s", "warm_s", "ess", "ess_per_s"} (missing values: None).

Options: ``--quick`` (fewer draws, for a smoke run), ``--bins 10,100,1000``, ``--skip-nbin``,
``--no-extra`` (no PyMC/extra rows), ``--skip-2bin`` (n-bin rows only), ``--json FILE``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import nbin_workspace  # noqa: E402

WS = Path(os.environ.get("HF2PPL_SHARED", ROOT.parent / "shared")) / "workspaces" / "2_bin_corr.json"

EXTRA_ROWS: list[Callable[[], list[dict]]] = []

WARMUP, DRAWS, CHAINS = 1000, 5000, 2


def ess_mu(draws: np.ndarray) -> float:
    """Bulk ESS of a (chains, draws) array."""
    import arviz as az

    return float(az.ess(np.asarray(draws)))


REPEAT = 5  # warm timings: the minimum over this many calls (the 2-core machine is shared and noisy)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def warm_min(fn: Callable[[], Any], n: int = REPEAT) -> tuple[float, Any]:
    """Minimum wall time over ``n`` calls (and the last result)."""
    best, out = float("inf"), None
    for _ in range(n):
        t, out = timed(fn)
        best = min(best, t)
    return best, out


def row(name: str, first: float | None, warm: float | None, ess: float | None) -> dict:
    return {"name": name, "first_s": first, "warm_s": warm, "ess": ess,
            "ess_per_s": (ess / warm) if (ess and warm) else None}


# ------------------------------------------------------------------ (a) hf2ppl
def bench_hf2ppl(backend: str = "blackjax") -> dict:
    import hf2ppl

    m = hf2ppl.compile(str(WS))

    def go():
        return hf2ppl.sample(m, chains=CHAINS, draws=DRAWS, warmup=WARMUP, seed=0, backend=backend, progress=False)

    first, _ = timed(go)
    warm, idata = warm_min(go, REPEAT if backend == "blackjax" else 1)
    return row(f"hf2ppl.sample (backend={backend})", first, warm, ess_mu(idata.posterior.mu.values))


def bench_hf2ppl_bare() -> dict:
    """hf2ppl.sample without the optional groups (posterior + sample_stats + observed/constant data)."""
    import hf2ppl

    m = hf2ppl.compile(str(WS))

    def go():
        return hf2ppl.sample(m, chains=CHAINS, draws=DRAWS, warmup=WARMUP, seed=0, progress=False,
                             predictive=False, log_likelihood=False, prior=False)

    first, _ = timed(go)
    warm, idata = warm_min(go)
    return row("hf2ppl.sample (no predictive/loglik/prior groups)", first, warm, ess_mu(idata.posterior.mu.values))


def _corr_arrays():
    """signal, background, histosys hi/lo and observed counts of 2_bin_corr as JAX arrays."""
    import jax.numpy as jnp

    spec = json.loads(WS.read_text())
    ch = spec["channels"][0]
    bkg = ch["samples"][1]
    data = bkg["modifiers"][0]["data"]
    return (jnp.asarray(ch["samples"][0]["data"]), jnp.asarray(bkg["data"]), jnp.asarray(data["hi_data"]),
            jnp.asarray(data["lo_data"]), jnp.asarray(spec["observations"][0]["data"]))


# ------------------------------------------------------------------ (b) hand-written BlackJAX
def _corr_logdensity_unconstrained():
    """2_bin_corr in prior mode by hand: mu ~ U(0, 10) (logit), alpha ~ N(0, 1), histosys code 0."""
    import jax
    import jax.numpy as jnp

    s, b, hi, lo, n = _corr_arrays()

    def logdensity(z):
        u, alpha = z[0], z[1]
        mu = 10.0 * jax.nn.sigmoid(u)
        log_jac = jnp.log(10.0) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
        delta = jnp.where(alpha > 0, alpha * (hi - b), alpha * (b - lo))
        lam = mu * s + b + delta
        return jnp.sum(jax.scipy.stats.poisson.logpmf(n, lam)) - 0.5 * alpha**2 + log_jac

    return logdensity


def _handwritten_chain(logdensity, key, z0):
    """One hand-written BlackJAX NUTS chain: Stan window adaptation, then DRAWS steps in lax.scan;
    returns (positions, divergences, integration steps)."""
    import blackjax
    import jax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    k1, k2 = jax.random.split(key)
    wa = blackjax.window_adaptation(blackjax.nuts, logdensity, adaptation_info_fn=get_filter_adapt_info_fn())
    (state, params), _ = wa.run(k1, z0, num_steps=WARMUP)
    step = blackjax.nuts(logdensity, **params).step

    def body(st, k):
        st, info = step(k, st)
        return st, (st.position, info.is_divergent, info.num_integration_steps)

    _, out = jax.lax.scan(body, state, jax.random.split(k2, DRAWS))
    return out


def bench_blackjax_handwritten() -> dict:
    import jax
    import jax.numpy as jnp

    logdensity = _corr_logdensity_unconstrained()

    def one_chain(key, z0):
        pos, div, _ = _handwritten_chain(logdensity, key, z0)
        return pos, div

    def build():
        return jax.jit(lambda key, z0: jax.vmap(one_chain)(jax.random.split(key, CHAINS), z0))

    z0 = jnp.tile(jnp.asarray([-2.2, 0.0]), (CHAINS, 1))

    def go(fn):
        pos, _ = jax.block_until_ready(fn(jax.random.PRNGKey(0), z0))
        return np.asarray(pos)

    fn = build()
    first, _ = timed(lambda: go(fn))
    warm, pos = warm_min(lambda: go(fn))
    mu = 10.0 / (1.0 + np.exp(-pos[..., 0]))
    return row("hand-written BlackJAX NUTS lax.scan", first, warm, ess_mu(mu))


# ------------------------------------------------------------------ (c) NumPyro NUTS on pyhf's jax logpdf
def bench_numpyro_pyhf() -> dict:
    import jax
    import jax.numpy as jnp
    import pyhf
    from numpyro.infer import MCMC, NUTS

    pyhf.set_backend("jax")
    ws = pyhf.Workspace(json.loads(WS.read_text()))
    model = ws.model()
    data = jnp.asarray(ws.data(model))
    init = jnp.asarray(model.config.suggested_init())
    mu_i = model.config.poi_index

    def potential(p):
        return -model.logpdf(p, data)[0]

    def go():
        mcmc = MCMC(NUTS(potential_fn=potential), num_warmup=WARMUP, num_samples=DRAWS, num_chains=CHAINS,
                    chain_method="vectorized", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), init_params=jnp.tile(init, (CHAINS, 1)))
        return np.asarray(mcmc.get_samples(group_by_chain=True))

    first, _ = timed(go)
    warm, s = timed(go)
    pyhf.set_backend("numpy")
    return row("NumPyro NUTS on pyhf jax logpdf", first, warm, ess_mu(s[..., mu_i]))


# ------------------------------------------------------------------ (d) hand-written NumPyro model
def bench_numpyro_handwritten() -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    s, b, hi, lo, n = _corr_arrays()

    def model():
        mu = numpyro.sample("mu", dist.Uniform(0.0, 10.0))
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
        delta = jnp.where(alpha > 0, alpha * (hi - b), alpha * (b - lo))
        numpyro.sample("n", dist.Poisson(mu * s + b + delta).to_event(1), obs=n)

    def go():
        mcmc = MCMC(NUTS(model), num_warmup=WARMUP, num_samples=DRAWS, num_chains=CHAINS,
                    chain_method="vectorized", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0))
        return np.asarray(mcmc.get_samples(group_by_chain=True)["mu"])

    first, _ = timed(go)
    warm, mu = timed(go)
    return row("hand-written NumPyro model, numpyro MCMC", first, warm, ess_mu(mu))


# ------------------------------------------------------------------ n-bin shapesys (thesis)
NBIN_REPEAT = 3  # warm n-bin timings: the minimum over this many calls


def bench_nbin(nbins: int, groups: bool = True, chain_method: str | None = None) -> dict:
    """hf2ppl.sample on the n-bin model; ``groups=False``: without the predictive/log-likelihood/prior groups;
    ``chain_method``: passed on (default: hf2ppl's, parallel chains on a CPU)."""
    import hf2ppl

    r = bench_model(hf2ppl.compile(nbin_workspace(nbins)), "", nbins, groups, chain_method)
    r["name"] = "hf2ppl.sample" + ("" if groups else " (no optional groups)") + (f" [{chain_method}]" if chain_method else "")
    return r


def nbin_logdensity(m):
    """The n-bin model's log density by hand in JAX, on hf2ppl's support bijections without standardisation:
    ``z = (logit(mu / 10), log gamma_1, ..., log gamma_n)``; mu ~ Uniform(0, 10), gamma_i ~ Gamma(a_i + 1, tau_i)
    (the prior-mode shapesys priors, read from the compiled model), Poisson main terms. Returns
    ``(logdensity, to_x)`` where ``to_x`` maps draws to hf2ppl's free-vector order."""
    import jax
    import jax.numpy as jnp
    from scipy.special import gammaln

    ir = m.ir
    names = [p.name for p in m.free_parameters]
    sys_p = next(p for p in m.free_parameters if p.name != "mu")
    g = m.priors[sys_p.name].broadcast(sys_p.n_free)
    conc, rate = jnp.asarray(g["concentration"]), jnp.asarray(g["rate"])
    samples = list(ir.samples)
    nom = np.asarray(ir.nominal)
    s = jnp.asarray(nom[samples.index("signal")])
    b = jnp.asarray(nom[samples.index("background")])
    n = jnp.asarray(np.asarray(ir.observed, float))
    lg_n = jnp.asarray(gammaln(np.asarray(ir.observed, float) + 1.0))
    lg_prior = jnp.asarray(g["concentration"] * np.log(g["rate"]) - gammaln(g["concentration"]))

    def logdensity(z):
        u, v = z[0], z[1:]
        mu = 10.0 * jax.nn.sigmoid(u)
        gam = jnp.exp(v)
        lam = mu * s + gam * b
        lp = jnp.sum(n * jnp.log(lam) - lam - lg_n) + jnp.sum(lg_prior + (conc - 1.0) * v - rate * gam)
        return lp + jnp.log(10.0) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u) + jnp.sum(v)

    mu_first = names.index("mu") == 0

    def to_x(pos):
        mu = 10.0 / (1.0 + np.exp(-pos[..., :1]))
        gam = np.exp(pos[..., 1:])
        return np.concatenate([mu, gam] if mu_first else [gam, mu], axis=-1)

    return logdensity, to_x


def bench_nbin_handwritten(nbins: int) -> dict:
    """Hand-written BlackJAX NUTS on the n-bin density (window_adaptation + nuts in lax.scan, vmap, one jit)."""
    import jax
    import jax.numpy as jnp

    import hf2ppl

    m = hf2ppl.compile(nbin_workspace(nbins))
    logdensity, to_x = nbin_logdensity(m)

    def one_chain(key, z0):
        return _handwritten_chain(logdensity, key, z0)

    fn = jax.jit(lambda key, z0: jax.vmap(one_chain)(jax.random.split(key, CHAINS), z0))
    z0 = jnp.asarray(np.concatenate([[-2.2], np.zeros(nbins)]) + np.random.default_rng(0).uniform(-0.5, 0.5, (CHAINS, nbins + 1)))

    def go():
        return [np.asarray(a) for a in jax.block_until_ready(fn(jax.random.PRNGKey(0), z0))]

    first, _ = timed(go)
    warm, (pos, div, nsteps) = warm_min(go, NBIN_REPEAT)
    x = to_x(pos)
    ess = _ess_per_column(x)
    mu_col = 0 if [p.name for p in m.free_parameters][0] == "mu" else -1
    return {"name": "hand-written BlackJAX NUTS", "bins": nbins, "first_s": first, "warm_s": warm,
            "mu_ess": float(ess[mu_col]), "min_ess": float(ess.min()), "mu_ess_per_s": float(ess[mu_col]) / warm,
            "min_ess_per_s": float(ess.min()) / warm, "divergences": int(div.sum()), "mean_tree_depth": None,
            "s_per_bin": warm / nbins, "us_per_grad": 1e6 * warm / float(nsteps.sum()) * CHAINS}


def bench_same_density(m, label: str, bins: int) -> dict:
    """Hand-written BlackJAX NUTS (``_handwritten_chain``) on hf2ppl's own potential (``Layout.potential()``:
    the same density, bijections and standardisation as ``hf2ppl.sample``), started like it: this row
    isolates the sampler machinery (chunking, folded adaptation, InferenceData, checks) from the density."""
    import jax
    import jax.numpy as jnp

    from hf2ppl.infer._nuts import get_layout

    lay = get_layout(m)
    pot = lay.potential()
    base = np.asarray(lay.unconstrain(lay.init_x()))
    z0 = jnp.asarray(np.where(np.isfinite(base), base, 0.0) + np.random.default_rng(0).uniform(-0.5, 0.5, (CHAINS, lay.n)))
    fn = jax.jit(lambda key, z0: jax.vmap(lambda k, z: _handwritten_chain(pot, k, z))(jax.random.split(key, CHAINS), z0))

    def go():
        return [np.asarray(a) for a in jax.block_until_ready(fn(jax.random.PRNGKey(0), z0))]

    first, _ = timed(go)
    warm, (pos, div, nsteps) = warm_min(go, NBIN_REPEAT)
    x = np.asarray(lay.constrain_only(jnp.asarray(pos)))
    ess = _ess_per_column(x)
    names = [p.name for p in m.free_parameters]
    poi = m.ir.poi_name if m.ir.poi_name in names else names[0]
    off = sum(p.n_free for p in m.free_parameters[:names.index(poi)])
    return {"name": f"hand-written BlackJAX on hf2ppl's potential ({label})", "bins": bins, "first_s": first, "warm_s": warm,
            "mu_ess": float(ess[off]), "min_ess": float(ess.min()), "mu_ess_per_s": float(ess[off]) / warm,
            "min_ess_per_s": float(ess.min()) / warm, "divergences": int(div.sum()), "mean_tree_depth": None,
            "s_per_bin": warm / bins, "us_per_grad": 1e6 * warm / float(nsteps.sum()) * CHAINS}


def staus_model():
    """The real staus search (SUSY-2018-04) with its DS_240_120 signal patch: 120 parameters, prior mode."""
    from common import REAL as real

    import hf2ppl

    return hf2ppl.compile(str(real / "staus_SUSY-2018-04_BkgOnly.json"),
                          patches=[(str(real / "staus_SUSY-2018-04_patchset.json"), "DS_240_120_Staus")])


def bench_model(m, label: str, bins: int, groups: bool = True, chain_method: str | None = None) -> dict:
    """hf2ppl.sample on a compiled model (as bench_nbin)."""
    import arviz as az

    import hf2ppl

    extra = {} if groups else {"predictive": False, "log_likelihood": False, "prior": False}
    if chain_method:
        extra["chain_method"] = chain_method

    def go():
        return hf2ppl.sample(m, chains=CHAINS, draws=DRAWS, warmup=WARMUP, seed=0, progress=False, **extra)

    first, _ = timed(go)
    warm, idata = warm_min(go, NBIN_REPEAT)
    ess = az.ess(idata.posterior)
    poi = m.ir.poi_name if m.ir.poi_name in ess else next(iter(ess.data_vars))
    grads = float(idata.sample_stats.n_steps.sum())
    mu_ess = float(np.min(ess[poi]))
    min_ess = float(min(float(ess[v].min()) for v in ess.data_vars))
    return {"name": f"hf2ppl.sample ({label})" + ("" if groups else " (no optional groups)")
            + (f" [{chain_method}]" if chain_method else ""), "bins": bins, "first_s": first,
            "warm_s": warm, "mu_ess": mu_ess, "min_ess": min_ess, "mu_ess_per_s": mu_ess / warm, "min_ess_per_s": min_ess / warm,
            "divergences": int(idata.sample_stats.diverging.sum()), "mean_tree_depth": float(idata.sample_stats.tree_depth.mean()),
            "s_per_bin": warm / bins, "us_per_grad": 1e6 * warm / grads * CHAINS}


def _ess_per_column(x: np.ndarray) -> np.ndarray:
    """Bulk ESS of each column of draws (chains, draws, k)."""
    import arviz as az

    return np.asarray([float(az.ess(x[..., j])) for j in range(x.shape[-1])])


# ------------------------------------------------------------------ driver
def process_warmup() -> None:
    """Import the libraries and run a trivial jit/grad once, so that no engine's "first call" pays
    the process-wide start-up (XLA client, library imports) for the others."""
    import arviz  # noqa: F401
    import blackjax  # noqa: F401
    import jax
    import jax.numpy as jnp
    import numpyro  # noqa: F401
    import pyhf  # noqa: F401
    import xarray  # noqa: F401

    import hf2ppl  # noqa: F401

    jax.config.update("jax_enable_x64", True)
    jax.block_until_ready(jax.jit(jax.vmap(jax.grad(lambda x: jnp.sum(jnp.sin(x) ** 2))))(jnp.ones((2, 3))))


def machine() -> str:
    import jax

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on "
            f"{jax.devices()[0].platform.upper()} ({jax.devices()[0].device_kind})")


def fmt(v: Any, spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    global WARMUP, DRAWS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bins", default="10,100,500")
    ap.add_argument("--skip-nbin", action="store_true")
    ap.add_argument("--skip-2bin", action="store_true", help="only the n-bin rows")
    ap.add_argument("--no-extra", action="store_true", help="skip EXTRA_ROWS and benchmarks/sampling_pymc.py")
    ap.add_argument("--json", default=None, help="write the results to this file")
    ap.add_argument("--staus", action="store_true", help="add the real staus workspace (120 parameters) rows")
    args = ap.parse_args(argv)
    if args.quick:
        WARMUP, DRAWS = 200, 500
    process_warmup()
    print(f"machine: {machine()}")
    rows: list[dict] = []
    if not args.skip_2bin:
        print(f"2_bin_corr: {WARMUP} warmup + {DRAWS} draws x {CHAINS} chains\n")
        for fn in (bench_hf2ppl, bench_blackjax_handwritten, bench_numpyro_pyhf, bench_numpyro_handwritten,
                   lambda: bench_hf2ppl("numpyro"), bench_hf2ppl_bare):
            r = fn()
            rows.append(r)
            print(f"  {r['name']:<52} first {fmt(r['first_s'])} s  warm {fmt(r['warm_s'])} s  ESS(mu) {fmt(r['ess'], '.0f')}",
                  flush=True)
        extra = [] if args.no_extra else list(EXTRA_ROWS)
        pymc_file = Path(__file__).with_name("sampling_pymc.py")
        if pymc_file.exists() and not args.no_extra:
            spec = importlib.util.spec_from_file_location("sampling_pymc", pymc_file)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
            extra.append(mod.rows)
        for fn in extra:
            try:
                rows += list(fn())
            except Exception as exc:  # noqa: BLE001 - a broken hook must not hide the other rows
                print(f"  extra rows {fn!r} failed: {exc!r}")
        ref = rows[1]
        print(f"\n{'engine':<52} {'first s':>8} {'warm s':>8} {'ESS':>7} {'ESS/s':>9} {'warm/(b)':>9} {'(b)=1 speed':>11}")
        for r in rows:
            ratio = r["warm_s"] / ref["warm_s"] if r["warm_s"] else None
            print(f"{r['name']:<52} {fmt(r['first_s']):>8} {fmt(r['warm_s']):>8} {fmt(r['ess'], '.0f'):>7} "
                  f"{fmt(r['ess_per_s'], '.0f'):>9} {fmt(ratio, '.2f'):>9} {fmt(1 / ratio if ratio else None, '.2f'):>11}")
        a, c = rows[0], rows[2]
        print(f"\nhf2ppl warm / hand-written BlackJAX = {a['warm_s'] / ref['warm_s']:.2f} (target <= 1.5)")
        print(f"NumPyro-on-pyhf warm / hf2ppl warm = {c['warm_s'] / a['warm_s']:.1f} (target >= 10)")
        print(f"hf2ppl first call = {a['first_s']:.2f} s (target <= 5 s)")
    nb = []
    if not args.skip_nbin:
        print(f"\nn-bin shapesys (uncorrelated_background), {WARMUP} warmup + {DRAWS} draws x {CHAINS} chains; warm = min of "
              f"{NBIN_REPEAT}; ratio = warm / hand-written BlackJAX warm; load {os.getloadavg()[0]:.2f}")
        print(f"{'engine':<40} {'bins':>5} {'first s':>8} {'warm s':>7} {'ESS(mu)':>8} {'min ESS':>8} {'ESS(mu)/s':>10} "
              f"{'minESS/s':>9} {'us/grad':>8} {'div':>4} {'ratio':>6}")
        import hf2ppl

        cases = [(nbins, None) for nbins in [int(b) for b in args.bins.split(",") if b]] + ([(None, "staus")] if args.staus else [])
        for nbins, real in cases:
            if real is None:
                ref_nb = bench_nbin_handwritten(nbins)
                m = hf2ppl.compile(nbin_workspace(nbins))
                todo = (bench_nbin(nbins), bench_nbin(nbins, groups=False), bench_nbin(nbins, chain_method="vectorized"),
                        bench_same_density(m, "n-bin", nbins), ref_nb)
            else:  # no density by hand for 120 parameters: the reference is BlackJAX on hf2ppl's potential
                m = staus_model()
                bins = int(m.ir.nominal.shape[1])
                ref_nb = bench_same_density(m, "staus", bins)
                todo = (bench_model(m, "staus DS_240_120", bins), bench_model(m, "staus DS_240_120", bins, groups=False),
                        bench_model(m, "staus DS_240_120", bins, chain_method="vectorized"), ref_nb)
            for r in todo:
                r["ratio"] = r["warm_s"] / ref_nb["warm_s"]
                r["load"] = os.getloadavg()[0]
                nb.append(r)
                print(f"{r['name']:<40} {r['bins']:>5} {r['first_s']:>8.2f} {r['warm_s']:>7.3f} {r['mu_ess']:>8.0f} "
                      f"{r['min_ess']:>8.0f} {r['mu_ess_per_s']:>10.0f} {r['min_ess_per_s']:>9.0f} {r['us_per_grad']:>8.2f} "
                      f"{r['divergences']:>4} {r['ratio']:>6.2f}", flush=True)
    res = {"machine": machine(), "rows": rows, "nbin": nb}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
