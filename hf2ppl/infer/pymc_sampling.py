"""NUTS on a PyMC-compiled model with ``pm.sample`` → :class:`arviz.InferenceData` in hf2ppl's layout.

``hf2ppl.sample(model, ...)`` lands here for ``target="pymc"`` models. The sampler is
``pm.sample(nuts_sampler=...)``: ``"pymc"`` (PyMC's own NUTS on the C backend),
``"numpyro"`` / ``"blackjax"`` (the PyTensor graph is transpiled to JAX by PyMC) or
``"nutpie"`` (Rust NUTS on the numba-compiled graph; ``pip install nutpie``). The
returned InferenceData has the groups, variable names and dims of the NumPyro path
(see :mod:`hf2ppl.infer.idata`); log-likelihood and predictive draws come from
PyMC's own machinery (``pm.compute_log_likelihood``, ``pm.sample_posterior_predictive``,
``pm.sample_prior_predictive``) on the same graph.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["sample_pymc", "NUTS_SAMPLERS", "available_nuts_samplers"]

NUTS_SAMPLERS = ("pymc", "numpyro", "blackjax", "nutpie")
_STATS = ("diverging", "energy", "tree_depth", "n_steps", "step_size", "acceptance_rate", "lp")


def available_nuts_samplers() -> list[str]:
    """The ``nuts_sampler`` values usable here (``"nutpie"`` only if it is installed)."""
    import importlib.util

    out = ["pymc"]
    for name in ("numpyro", "blackjax", "nutpie"):
        if importlib.util.find_spec(name) is not None:
            out.append(name)
    return out


def _quiet(fn, *args, **kwargs):
    """Run a PyMC call with its INFO logging ("Sampling: [...]", "Auto-assigning NUTS") silenced."""
    import warnings

    lg = logging.getLogger("pymc")
    level = lg.level
    lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # the only Potentials are the constant flat_<set> terms of "aux" mode: they do not bias predictive draws
            warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
            return fn(*args, **kwargs)
    finally:
        lg.setLevel(level)


def _blackjax_loop_fixed(seed, init_position, logp_fn, draws, tune, target_accept, **adaptation_kwargs):
    """pymc's ``_blackjax_inference_loop`` for blackjax >= 1.6 (pymc-devs/pymc#8367, fix in PR #8373).

    pymc <= 6.2 passes ``progress_bar`` into ``blackjax.window_adaptation`` (blackjax >= 1.6 forwards it to
    the NUTS kernel: TypeError) and calls the removed ``blackjax.progress_bar.gen_scan_fn``. Same
    algorithm and statistics otherwise: Stan window adaptation, then ``draws`` NUTS steps in a ``lax.scan``.
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    adaptation_kwargs.pop("progress_bar", None)
    algorithm = {"nuts": blackjax.nuts, "hmc": blackjax.hmc}[adaptation_kwargs.pop("algorithm", "nuts")]
    adapt = blackjax.window_adaptation(algorithm=algorithm, logdensity_fn=logp_fn, target_acceptance_rate=target_accept,
                                       adaptation_info_fn=get_filter_adapt_info_fn(), **adaptation_kwargs)
    (last_state, tuned_params), _ = adapt.run(seed, init_position, num_steps=tune)
    kernel = algorithm(logp_fn, **tuned_params).step

    def one_step(state, xs):
        _, rng_key = xs
        state, info = kernel(rng_key, state)
        stats = {"diverging": info.is_divergent, "energy": info.energy, "tree_depth": info.num_trajectory_expansions,
                 "n_steps": info.num_integration_steps, "acceptance_rate": info.acceptance_rate, "lp": state.logdensity,
                 "step_size": jnp.asarray(tuned_params["step_size"])}
        return state, (state.position, stats)

    keys = jax.random.split(seed, draws)
    _, (samples, stats) = jax.lax.scan(one_step, last_state, (jnp.arange(draws), keys))
    return samples, stats


class _patched_blackjax_loop:
    """Swap in :func:`_blackjax_loop_fixed` while ``pm.sample(nuts_sampler="blackjax")`` runs, if needed."""

    def __enter__(self):
        import blackjax
        import pymc.sampling.jax as pj

        self.orig = pj._blackjax_inference_loop
        if not hasattr(blackjax.progress_bar, "gen_scan_fn"):  # blackjax >= 1.6: pymc's loop is broken
            pj._blackjax_inference_loop = _blackjax_loop_fixed
        return self

    def __exit__(self, *exc):
        import pymc.sampling.jax as pj

        pj._blackjax_inference_loop = self.orig
        return False


_NUTPIE_STATS = {"depth": "tree_depth", "logp": "lp", "mean_tree_accept": "acceptance_rate"}


def _sample_nutpie(model: Any, draws: int, warmup: int, chains: int, seed: int, progress: bool, kw: dict[str, Any]):
    """nutpie NUTS with the numba-compiled model cached on ``model`` (``pm.sample`` would recompile it on
    every call: ~10 s, against ~0.2 s of sampling for small models). Same call as ``pm.sample(nuts_sampler="nutpie")``."""
    import nutpie

    kw = dict(kw)
    nk = dict(kw.pop("nuts_sampler_kwargs", {}) or {})
    ck = {k: nk.pop(k) for k in ("backend", "gradient_backend") if k in nk}
    key = ("nutpie", tuple(sorted(ck.items())))
    compiled = model._fns.get(key)
    if compiled is None:
        compiled = model._fns[key] = nutpie.compile_pymc_model(model.model, **ck)
    nk.setdefault("target_accept", float(kw.pop("target_accept", 0.8)))
    nk.update(kw)
    return nutpie.sample(compiled, draws=draws, tune=warmup, chains=chains, seed=int(seed), progress_bar=progress,
                         save_warmup=False, **nk)


def chain_inits(model: Any, chains: int, seed: int, jitter: float = 0.5) -> list[dict[str, np.ndarray]]:
    """Per-chain initial values ``{set: value}`` (constrained space) for ``pm.sample(initvals=...)``.

    The same points the NumPyro target's samplers start from: the workspace inits jittered by
    ±``jitter`` in the standardised unconstrained coordinates of :class:`hf2ppl.infer._nuts.Layout`
    (a narrow staterror moves by half its width, not by ±1 as PyMC's default ``jitter+adapt_diag``
    on the untransformed scale, which puts rates below zero), always inside the support.
    """
    import jax.numpy as jnp

    from .. import compile as _compile
    from ._nuts import get_cache, get_layout

    shadow = model.__dict__.get("_numpyro_shadow")
    if shadow is None:  # the same workspace, priors and mode on the NumPyro target: only its Layout is used
        shadow = _compile(model.spec, target="numpyro", constraints=model.constraints,
                          priors={k: v for k, v in model.priors.items()} if model.constraints == "prior" else
                          {k: v for k, v in model.priors.items() if not _is_flat(v)}, dtype=model.dtype)
        model.__dict__["_numpyro_shadow"] = shadow
    get_cache(shadow)
    lay = get_layout(shadow)
    from ._nuts import safe_noise

    rng = np.random.default_rng([seed, 7])
    x0 = np.asarray(lay.init_x(), dtype=float)
    u0 = lay.unconstrain(x0)
    u0 = np.where(np.isfinite(u0), u0, 0.0) + safe_noise(lay, x0, rng.uniform(-jitter, jitter, (chains, lay.n)))
    x = np.asarray(lay.constrain_only(jnp.asarray(u0)), dtype=model.dtype)
    return [{k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in lay.split(xi).items()} for xi in x]


def _is_flat(prior) -> bool:
    from .. import priors as P

    return isinstance(prior, P.Flat)


def _sampler_kwargs(nuts_sampler: str, chains: int, opts: dict[str, Any]) -> dict[str, Any]:
    """Translate hf2ppl's kernel options to ``pm.sample`` keywords for ``nuts_sampler``."""
    kw: dict[str, Any] = {}
    ext = dict(opts.pop("nuts_sampler_kwargs", {}) or {})
    if "target_accept" in opts:
        kw["target_accept"] = float(opts.pop("target_accept"))
    tree = opts.pop("max_tree_depth", None)
    dense = bool(opts.pop("dense_mass", False))
    for k in ("initial_step_size", "method", "backend"):  # NumPyro-path options without a pm.sample twin
        opts.pop(k, None)
    if nuts_sampler == "pymc":
        if tree is not None:
            kw["max_treedepth"] = int(tree)
        # no PyMC jitter: the chains start at hf2ppl's jittered inits (chain_inits), inside the support
        kw.setdefault("init", "adapt_full" if dense else "adapt_diag")
    elif nuts_sampler in ("numpyro", "blackjax"):
        ext.setdefault("chain_method", "vectorized")
        ext.setdefault("jitter", False)
        if tree is not None:
            ext["max_tree_depth"] = int(tree)
        if dense:
            ext["dense_mass"] = True
    elif nuts_sampler == "nutpie":
        if tree is not None:
            ext["maxdepth"] = int(tree)
    if ext:
        kw["nuts_sampler_kwargs"] = ext
    kw.update(opts)
    return kw


def sample_pymc(
    model: Any,
    *,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    nuts_sampler: str = "pymc",
    progress: bool | None = None,
    predictive: bool = True,
    log_likelihood: bool = True,
    prior: bool = True,
    keep_expected: bool = False,
    cores: int | None = 1,
    **kwargs: Any,
):
    """Sample the posterior of a ``target="pymc"`` model with ``pm.sample``.

    Args:
        model: a :class:`~hf2ppl.targets.pymc.PyMCModel` from ``hf2ppl.compile(..., target="pymc")``.
        chains, draws, warmup: chains, kept draws per chain, tuning steps per chain.
        seed: integer seed (same seed → same draws for a given sampler).
        nuts_sampler: ``"pymc"``, ``"numpyro"``, ``"blackjax"`` or ``"nutpie"`` (see :func:`available_nuts_samplers`).
        progress: progress bar; ``None`` → only in an interactive terminal or notebook.
        predictive, log_likelihood, prior: add ``posterior_predictive``, ``log_likelihood`` and
            ``prior``/``prior_predictive`` (``min(draws, 1000)`` prior draws).
        keep_expected: keep the ``expected_<channel>`` deterministics in the posterior.
        cores: processes for PyMC's own sampler (default 1: chains run one after another; ``None``
            lets PyMC choose). The JAX samplers vectorise chains on one device.
        **kwargs: ``target_accept``, ``max_tree_depth``, ``dense_mass`` (translated per sampler),
            ``nuts_sampler_kwargs`` and any other ``pm.sample`` keyword.

    Returns:
        ``arviz.InferenceData`` with the layout of :mod:`hf2ppl.infer.idata` (posterior, sample_stats,
        log_likelihood, posterior_predictive, prior, prior_predictive, observed_data, constant_data);
        ``attrs["sampler"]`` names the NUTS implementation.

    Example:
        >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", target="pymc")  # doctest: +SKIP
        >>> idata = hf2ppl.sample(m, chains=2, draws=1000, nuts_sampler="numpyro")  # doctest: +SKIP
        >>> float(idata.posterior["mu"].mean())  # doctest: +SKIP
    """
    import pymc as pm

    from .idata import assemble, draw_prior

    if getattr(model, "target", None) != "pymc":
        raise ParameterError(f"sample_pymc needs a model compiled with target='pymc', got {getattr(model, 'target', type(model).__name__)!r}")
    if nuts_sampler not in NUTS_SAMPLERS:
        raise ParameterError(f"nuts_sampler must be one of {NUTS_SAMPLERS}, got {nuts_sampler!r}")
    if nuts_sampler not in available_nuts_samplers():
        raise ParameterError(f"nuts_sampler={nuts_sampler!r} is not installed (pip install {nuts_sampler})")
    for name, v, lo in (("chains", chains, 1), ("draws", draws, 1), ("warmup", warmup, 0)):
        if int(v) != v or v < lo:
            raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
    if progress is None:
        from ._nuts import auto_progress

        progress = auto_progress()
    progress = bool(progress)
    kwargs = dict(kwargs)
    jitter = float(kwargs.pop("init_jitter", 0.5))
    kw = _sampler_kwargs(nuts_sampler, chains, kwargs)
    if nuts_sampler == "pymc":
        kw["cores"] = cores
    if nuts_sampler != "nutpie" and "initvals" not in kw:
        kw["initvals"] = chain_inits(model, int(chains), seed, jitter)
    pmodel = model.model
    names = [p.name for p in model.free_parameters]
    sites = model.channel_sites
    t0 = time.perf_counter()
    import contextlib

    patch = _patched_blackjax_loop() if nuts_sampler == "blackjax" else contextlib.nullcontext()
    if nuts_sampler == "nutpie":
        post = _sample_nutpie(model, int(draws), int(warmup), int(chains), seed, progress, kw)
    else:
        with pmodel, patch:
            post = _quiet(pm.sample, draws=int(draws), tune=int(warmup), chains=int(chains), random_seed=seed,
                          nuts_sampler=nuts_sampler, progressbar=progress, compute_convergence_checks=False,
                          idata_kwargs={"log_likelihood": False}, **kw)
    sampling_time = time.perf_counter() - t0
    x = np.concatenate([np.asarray(post.posterior[n]).reshape(chains, draws, -1) for n in names], axis=-1)
    ss = post.sample_stats
    ss = ss.rename({k: v for k, v in _NUTPIE_STATS.items() if k in ss and v not in ss})
    stats = {k: np.asarray(ss[k]) for k in _STATS if k in ss}
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    if "tree_depth" not in stats and "n_steps" in stats:
        stats["tree_depth"] = np.floor(np.log2(np.maximum(stats["n_steps"], 1))).astype(np.int64) + 1

    sampler = {
        "pymc": "pymc.sample NUTS (PyTensor C backend)",
        "numpyro": "pymc.sample(nuts_sampler='numpyro'): numpyro NUTS on the JAX-transpiled PyTensor graph",
        "blackjax": "pymc.sample(nuts_sampler='blackjax'): blackjax NUTS on the JAX-transpiled PyTensor graph",
        "nutpie": "nutpie NUTS on the numba-compiled PyTensor graph (nutpie.compile_pymc_model, cached on the model)",
    }[nuts_sampler]
    idata = assemble(model, x, sample_stats=stats, sampler=sampler, seed=seed, predictive=False, log_likelihood=False,
                     prior=False, extra_attrs={"num_chains": chains, "num_draws": draws, "num_warmup": warmup, "seed": seed,
                                               "method": "nuts", "backend": "pymc", "nuts_sampler": nuts_sampler,
                                               "sampling_time": sampling_time,
                                               "standardised": ",".join(getattr(model, "standardised", []))})
    extra: dict[str, Any] = {}
    from .idata import component_labels, count_dtype, loglik_dataset

    cdt = count_dtype(model)

    import arviz as az

    # PyMC's functions want the pm.Model's own coordinates (shapefactors: bare bin numbers)
    pm_post = az.InferenceData(posterior=idata.posterior.assign_coords(
        {p.dim: list(p.free_labels) for p in model.free_parameters if not p.is_scalar}))
    if log_likelihood:  # PyMC's per-channel pointwise log-likelihood, joined into the one whole-model variable
        ll = _quiet(pm.compute_log_likelihood, pm_post, var_names=sites, model=pmodel, extend_inferencedata=False,
                    progressbar=False)
        extra["log_likelihood"] = loglik_dataset(model, np.concatenate([np.asarray(ll[s_]) for s_ in sites], axis=-1), {})
    if predictive:
        pp = _quiet(pm.sample_posterior_predictive, pm_post, model=pmodel, var_names=sites, random_seed=np.random.default_rng([seed, 1]),
                    progressbar=False, return_inferencedata=True)
        extra["posterior_predictive"] = pp.posterior_predictive.astype(cdt)
    if prior:
        n_prior = min(int(draws), 1000)
        if model.constraints == "prior":
            pr = _quiet(pm.sample_prior_predictive, draws=n_prior, model=pmodel, var_names=names + sites, random_seed=np.random.default_rng([seed, 2]))
            extra["prior"] = pr.prior[names].assign_coords(
                {p.dim: component_labels(model, p) for p in model.free_parameters if not p.is_scalar})
            extra["prior_predictive"] = pr.prior_predictive[sites].astype(cdt)
        else:  # aux mode: the flat priors are improper; draw the proper priors the NumPyro path draws from
            import xarray as xr

            xp_ = draw_prior(model, n_prior, np.random.default_rng([seed, 7]))
            off, dv = 0, {}
            coords = {"chain": [0], "draw": np.arange(n_prior)}
            for p in model.free_parameters:
                v = xp_[None, :, off:off + p.n_free]
                off += p.n_free
                dv[p.name] = (("chain", "draw"), v[..., 0]) if p.is_scalar else (("chain", "draw", p.dim), v)
                if not p.is_scalar:
                    coords[p.dim] = list(p.free_labels)
            prior_ds = xr.Dataset(dv, coords=coords)
            ppr = _quiet(pm.sample_posterior_predictive, prior_ds, model=pmodel, var_names=sites, random_seed=np.random.default_rng([seed, 2]),
                         progressbar=False, return_inferencedata=True)
            extra["prior"] = prior_ds.assign_coords(
                {p.dim: component_labels(model, p) for p in model.free_parameters if not p.is_scalar})
            extra["prior_predictive"] = ppr.posterior_predictive.astype(cdt)
    attrs = dict(idata.posterior.attrs)
    if keep_expected:
        exp = post.posterior[[f"expected_{c.name}" for c in model.ir.channels]]
        idata.posterior = idata.posterior.assign({k: exp[k] for k in exp.data_vars})
        idata.posterior.attrs = attrs
    for name, ds in extra.items():
        ds = ds.copy()
        ds.attrs = attrs
        idata.add_groups({name: ds})
    from .diagnostics import check_mcmc

    check_mcmc(idata, model)
    return idata
