"""Bayesian inference on compiled models: NUTS/HMC, SVI and MAP → :class:`arviz.InferenceData`.

* :func:`sample` — NUTS or HMC. ``backend="blackjax"`` (default) runs Stan's window adaptation and
  the draws in one jitted ``lax.scan``, chains ``vmap``-ed on one device, cached per model and
  settings (see :mod:`hf2ppl.infer._nuts`); ``backend="numpyro"`` uses ``numpyro.infer.MCMC``
  with ``chain_method="vectorized"``. PyMC-compiled models are dispatched to the PyMC sampler.
* :func:`svi` — stochastic variational inference with an autoguide; draws from the fitted guide.
* :func:`map_estimate` — the posterior mode with Laplace (inverse-Hessian) uncertainties.

All of it runs on a GPU unchanged when JAX sees one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError
from ._nuts import ChunkedSampler, Layout, chain_threads, Progress, auto_progress, canonical_kernel_kwargs, get_cache, get_layout, safe_noise

if TYPE_CHECKING:  # pragma: no cover
    import arviz

__all__ = ["sample", "svi", "map_estimate", "MAPResult"]

BACKENDS = ("blackjax", "numpyro")
#: number of draws in the ``prior`` group (one chain)
PRIOR_DRAWS = 1000


def _check_numpyro_model(model: Any) -> None:
    if getattr(model, "target", None) != "numpyro":
        raise ParameterError(f"expected a model compiled with target='numpyro', got {getattr(model, 'target', type(model).__name__)!r}")


def _sampler_dtype(model: Any) -> str:
    """The sampler's float dtype: the model's, except float64 whenever JAX runs with x64 (BlackJAX's
    trajectory code creates default-dtype constants, which would mix float64 into a float32 chain)."""
    import jax

    return "float64" if jax.config.jax_enable_x64 else model.dtype


def _layout(model: Any) -> Layout:
    return get_layout(model)


def sample(
    model: Any,
    *,
    method: str = "nuts",
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    backend: str = "blackjax",
    progress: bool | None = None,
    predictive: bool = True,
    log_likelihood: bool = True,
    prior: bool = True,
    chain_method: str | None = None,
    **kernel_kwargs: Any,
) -> arviz.InferenceData:
    """Draw from the posterior of a compiled model with NUTS or HMC.

    Args:
        model: a model from :func:`hf2ppl.compile` (``target="numpyro"``; ``"pymc"`` models are
            handed to the PyMC sampler).
        method: ``"nuts"`` or ``"hmc"`` (static trajectory length ``num_steps``, default 16).
        chains: number of chains.
        draws, warmup: draws kept per chain and adaptation steps per chain (Stan's window adaptation
            of step size and diagonal mass matrix).
        seed: integer seed (same seed → same draws).
        backend: ``"blackjax"`` (fast path: cached jitted ``lax.scan`` chunks, see docs/bayes.md) or ``"numpyro"``
            (``numpyro.infer.MCMC``, ``chain_method="vectorized"``).
        chain_method: how the fast path runs the chains: ``"vectorized"`` (``vmap``-ed in one execution),
            ``"parallel"`` (groups of chains driven from one host thread per CPU core: on a CPU each core runs
            its chains), or ``None``: parallel on a CPU backend, vectorized on an accelerator
            (``HF2PPL_CHAINS`` sets the default). Chain ``i`` has the same random stream either way.
        progress: show a progress bar; ``None`` → only in an interactive terminal or notebook.
        predictive, log_likelihood, prior: add the ``posterior_predictive``, ``log_likelihood``
            and ``prior``/``prior_predictive`` groups.
        **kernel_kwargs: ``target_accept`` (0.8), ``max_tree_depth`` (10), ``dense_mass`` (False),
            ``num_steps`` (HMC, 16), ``initial_step_size`` (1.0), ``init_jitter`` (0.5: inits are the
            workspace's inits jittered by ±init_jitter on the unconstrained scale).

    Returns:
        ``arviz.InferenceData`` with groups posterior, sample_stats, posterior_predictive,
        log_likelihood, prior, prior_predictive, observed_data and constant_data (see
        :mod:`hf2ppl.infer.idata` for names and dims).

    Example:
        >>> m = hf2ppl.compile(hf2ppl.example("2_bin_corr.json"))  # doctest: +SKIP
        >>> idata = hf2ppl.sample(m, chains=2, draws=2000)  # doctest: +SKIP
        >>> az.summary(idata, var_names=["mu"])  # doctest: +SKIP
    """
    if getattr(model, "target", None) == "pymc":
        from .pymc_sampling import sample_pymc  # noqa: PLC0415 - built by the PyMC target

        return sample_pymc(model, chains=chains, draws=draws, warmup=warmup, seed=seed,
                           nuts_sampler=kernel_kwargs.pop("nuts_sampler", "pymc"), progress=progress,
                           predictive=predictive, log_likelihood=log_likelihood, prior=prior, **kernel_kwargs)
    _check_numpyro_model(model)
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if method not in ("nuts", "hmc"):
        raise ParameterError(f"method must be 'nuts' or 'hmc', got {method!r}")
    for name, v, lo in (("chains", chains, 1), ("draws", draws, 1), ("warmup", warmup, 0)):
        if int(v) != v or v < lo:
            raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
    opts = canonical_kernel_kwargs(kernel_kwargs)
    threads = chain_threads(chains, chain_method)
    progress = auto_progress() if progress is None else bool(progress)
    from .idata import assemble, draw_prior

    layout = _layout(model)
    rng = np.random.default_rng([seed, 7])
    x0 = layout.init_x()
    jitter = float(opts.get("init_jitter", 0.5))
    noise = rng.uniform(-jitter, jitter, (chains, layout.n)).astype(_sampler_dtype(model))
    noise = safe_noise(layout, x0, noise)  # every chain starts where the log density and gradient are finite
    x_prior = draw_prior(model, PRIOR_DRAWS, rng) if prior else None
    if backend == "blackjax":
        x, stats, sampler = _run_blackjax(model, layout, method, draws, warmup, opts, progress, seed, x0, noise, threads)
    else:
        x, stats, sampler = _run_numpyro(model, layout, method, chains, draws, warmup, opts, progress, seed, x0, noise)
    attrs = {"num_chains": chains, "num_draws": draws, "num_warmup": warmup, "seed": seed,
             "method": method, "backend": backend, "standardised": ",".join(layout.standardised)}
    from concurrent.futures import ThreadPoolExecutor

    from .diagnostics import _emit, mcmc_findings

    # the checks read the posterior and sample_stats only: they run in a second thread (numpy's sorts and FFTs
    # release the GIL) while the predictive, log-likelihood and prior groups are computed
    core = assemble(model, x, sample_stats=stats, sampler=sampler, seed=seed, predictive=False, log_likelihood=False,
                    prior=False, extra_attrs=attrs)
    with ThreadPoolExecutor(1) as pool:
        checks = pool.submit(mcmc_findings, core, model)
        if predictive or log_likelihood or prior:
            idata = assemble(model, x, sample_stats=stats, sampler=sampler, seed=seed, predictive=predictive,
                             log_likelihood=log_likelihood, prior=prior, x_prior=x_prior, extra_attrs=attrs)
        else:
            idata = core
        found = checks.result()
    msgs = _emit(found, True, stacklevel=3)
    if msgs:
        idata.attrs["warnings"] = msgs
    return idata


def _run_blackjax(model, layout, method, draws, warmup, opts, progress, seed, x0, noise, threads=1):
    """Draws and sampler statistics from the cached chunked sampler (see :mod:`hf2ppl.infer._nuts`)."""
    ck = ("blackjax", method, tuple(sorted((k, v) for k, v in opts.items() if k != "init_jitter")))
    cache = get_cache(model)
    if ck not in cache:
        cache[ck] = ChunkedSampler(layout, method=method, opts=opts)
    sampler = cache[ck]
    if progress:
        with Progress(warmup + draws, "warmup") as bar:
            out = sampler.run(seed, x0, noise, warmup=warmup, draws=draws, progress=bar, threads=threads)
    else:
        out = sampler.run(seed, x0, noise, warmup=warmup, draws=draws, threads=threads)
    x = out.pop("x")
    stats = {k: np.asarray(v) for k, v in out.items()}
    stats["diverging"] = stats["diverging"].astype(bool)
    threads = max(1, min(threads, x.shape[0]))
    how = "vmap over chains" if threads == 1 else f"chains in {threads} vmap-ed groups on {threads} host threads"
    return x, stats, f"blackjax.{method} kernel, Stan window adaptation, lax.scan chunks, {how}"


def _run_numpyro(model, layout, method, chains, draws, warmup, opts, progress, seed, x0, noise):
    """NumPyro's ``MCMC`` (NUTS/HMC kernel, its own adaptation) on the same potential as the fast path.

    The kernel gets ``potential_fn`` (minus the log density of the standardised unconstrained vector,
    :meth:`Layout.potential`) and starts at the workspace inits (+ jitter) in those coordinates, so no
    chain starts outside the support (NumPyro's default ``init_to_uniform`` on (-2, 2) gave negative
    rates with lumi/staterror). Draws are mapped back to the workspace's parameters.
    """
    import jax
    import jax.numpy as jnp
    from numpyro.infer import HMC, MCMC, NUTS

    pot = layout.potential()

    def potential_fn(u):
        return -pot(u)

    common = dict(target_accept_prob=float(opts.get("target_accept", 0.8)), dense_mass=bool(opts.get("dense_mass", False)),
                  step_size=float(opts.get("initial_step_size", 1.0)))
    if method == "nuts":
        kernel = NUTS(potential_fn=potential_fn, max_tree_depth=int(opts.get("max_tree_depth", 10)), **common)
    else:
        kernel = HMC(potential_fn=potential_fn, num_steps=int(opts.get("num_steps", 16)), **common)
    # NumPyro re-initialises the kernel on every run (a fresh trace and compile per call); this path is
    # the reference, the fast path is backend="blackjax".
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=draws, num_chains=chains, chain_method="vectorized",
                progress_bar=progress)
    u0 = layout.unconstrain(np.asarray(x0, dtype=noise.dtype))
    u0 = np.where(np.isfinite(u0), u0, 0.0) + noise
    key = jax.random.PRNGKey(seed)
    fields = ("diverging", "energy", "num_steps", "adapt_state.step_size", "accept_prob", "potential_energy")
    mcmc.run(key, init_params=jnp.asarray(u0), extra_fields=fields)
    u = mcmc.get_samples(group_by_chain=True)
    x = np.asarray(jax.device_get(layout.constrain_only(u)))
    ex = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
    n_steps = np.asarray(ex["num_steps"])
    stats = {
        "diverging": np.asarray(ex["diverging"]).astype(bool),
        "energy": np.asarray(ex["energy"]),
        "n_steps": n_steps,
        "step_size": np.asarray(ex["adapt_state.step_size"]),
        "acceptance_rate": np.asarray(ex["accept_prob"]),
        "lp": -np.asarray(ex["potential_energy"]),
    }
    if method == "nuts":
        stats["tree_depth"] = np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1
    return x, stats, f"numpyro.infer.{type(kernel).__name__} (MCMC, chain_method='vectorized', potential_fn)"


# ================================================================== MAP + Laplace
@dataclass
class MAPResult:
    """The posterior mode and its Laplace approximation.

    Attributes:
        params: {parameter set: value at the mode} (free components; vector sets as arrays).
        uncertainties: {parameter set: standard deviations from the inverse Hessian}.
        bestfit: full flat parameter vector (``par_names`` order) at the mode.
        free_names: flat names of the free components (order of ``covariance``).
        covariance: inverse Hessian of ``-logdensity`` in the constrained free space.
        logdensity: log density at the mode.
        converged: the optimiser's success flag.
    """

    params: dict[str, Any]
    uncertainties: dict[str, Any]
    bestfit: np.ndarray
    free_names: list[str]
    covariance: np.ndarray
    logdensity: float
    converged: bool
    info: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]


def _sites(layout: Layout, x: np.ndarray) -> dict[str, Any]:
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in layout.split(np.asarray(x)).items()}


def map_estimate(model: Any, *, init: dict[str, Any] | None = None, maxiter: int = 1000, tol: float = 1e-10) -> MAPResult:
    """Posterior mode (maximum of ``model.logdensity``) with Laplace uncertainties.

    The optimisation runs in the sampler's standardised unconstrained coordinates (L-BFGS-B on JAX
    gradients, then Newton steps on the exact Hessian, models up to 500 free components); the
    covariance is the inverse Hessian of ``-logdensity`` in the *constrained* parameters at the
    mode. With ``constraints="aux"`` and flat priors the log density is pyhf's ``logpdf``, so the
    mode and the uncertainties are the frequentist MLE and its Hesse errors.

    Warns (:class:`~hf2ppl.infer.diagnostics.LaplaceWarning`) when a component ends at a bound, when the
    Hessian is not positive definite (those components' sd are NaN, never a clipped 0), or when the
    optimiser stopped away from a stationary point (``converged`` is then False). ``info`` holds
    ``edm`` (the expected distance to the minimum, ``g·H⁻¹g/2`` in the standardised coordinates),
    ``at_bound`` and ``hessian_pd``.

    Args:
        model: a model compiled with ``target="numpyro"``.
        init: optional starting values {parameter set: value} (default: the workspace inits).
        maxiter, tol: optimiser settings.

    Example:
        >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", constraints="aux")  # doctest: +SKIP
        >>> r = hf2ppl.map_estimate(m)  # doctest: +SKIP
        >>> r.params["mu"], r.uncertainties["mu"]  # doctest: +SKIP
    """
    import warnings

    import jax
    import jax.numpy as jnp
    from scipy.optimize import minimize

    from .diagnostics import LaplaceWarning

    _check_numpyro_model(model)
    layout = _layout(model)
    cache = get_cache(model)
    if "map_fns" not in cache:
        def negpost_z(z):  # no Jacobian: the mode of the density of x, not of z
            return -model.logdensity_flat(layout.full(layout.constrain_only(z)))

        def neg_x(x):
            return -model.logdensity_flat(layout.full(x))

        cache["map_fns"] = (jax.jit(jax.value_and_grad(negpost_z)), jax.jit(jax.hessian(neg_x)), jax.jit(jax.hessian(negpost_z)))
    vg, hess, hess_z = cache["map_fns"]
    start = dict(model.init_params())
    start.update(init or {})
    z0 = layout.unconstrain(np.asarray(layout.join({k: jnp.asarray(v, dtype=model.dtype) for k, v in start.items()})))
    z0 = np.where(np.isfinite(z0), z0, 0.0)

    def fun(z):
        v, g = vg(jnp.asarray(z))
        return float(v), np.asarray(g, dtype=float)

    res = minimize(fun, z0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter, "ftol": tol, "gtol": 1e-8})
    z, fz = np.asarray(res.x, float), float(res.fun)
    edm = np.nan
    from ._optimize import one_blas_thread  # numpy's BLAS vs XLA's threads: see there

    with one_blas_thread():
        if layout.n <= 500:  # Newton polish: L-BFGS-B's relative-reduction stop can end far (in nats) from the top
            for _ in range(30):
                fz, g = fun(z)
                Hz = np.asarray(hess_z(jnp.asarray(z)), float)
                try:
                    np.linalg.cholesky(Hz)
                    step = np.linalg.solve(Hz, g)
                except np.linalg.LinAlgError:
                    edm = np.nan
                    break
                edm = 0.5 * float(g @ step)
                if edm < 1e-12:
                    break
                t = 1.0
                while t > 1e-6:
                    f_new = fun(z - t * step)[0]
                    if f_new < fz:
                        z, fz = z - t * step, f_new
                        break
                    t *= 0.5
                else:
                    break
        x = np.asarray(layout.constrain_only(jnp.asarray(z)))
        # components at a bound (the bijection's unconstrained coordinate far out: x within 1e-6 of the width)
        zraw = layout.shift + layout.scale * z
        kinds = np.zeros(layout.n, int)
        kinds[layout.groups[1]], kinds[layout.groups[2]] = 1, 2
        at_bound = ((kinds == 1) & (zraw < -13.8)) | ((kinds == 2) & (np.abs(zraw) > 13.8))
        H = np.asarray(hess(jnp.asarray(x)))
        names = [model.par_names[i] for i in model._free]
        eig = np.linalg.eigvalsh(0.5 * (H + H.T)) if np.all(np.isfinite(H)) else np.array([np.nan])
        pd = bool(np.all(np.isfinite(eig)) and eig.min() > 0)
        try:
            cov = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            cov = np.linalg.pinv(H)
    d = np.diag(cov)
    sd = np.where(np.isfinite(d) & (d > 0), np.sqrt(np.abs(d)), np.nan)
    converged = bool(res.success) and (np.isfinite(edm) and edm < 1e-4 if layout.n <= 500 else True)
    if np.any(at_bound):
        lab = [names[i] for i in np.flatnonzero(at_bound)]
        warnings.warn(f"map_estimate: the mode is at a bound for {lab[:8]}: the Laplace approximation does not hold there "
                      "(the posterior is cut by the bound; sample it instead)", LaplaceWarning, stacklevel=2)
    if not pd:
        bad = [names[i] for i in np.flatnonzero(~(np.isfinite(d) & (d > 0)))]
        warnings.warn(f"map_estimate: the Hessian at the mode is not positive definite (smallest eigenvalue {eig.min():.3g}); "
                      f"no Laplace sd for {bad[:8] or 'any component (all diagonal entries positive, but the matrix is indefinite)'} "
                      "(NaN); the mode may be a saddle, on a bound or on a flat ridge", LaplaceWarning, stacklevel=2)
    if not converged:
        warnings.warn(f"map_estimate: the optimiser stopped away from a stationary point ({res.message}; edm={edm:.3g}); "
                      "the mode may be off — raise maxiter or give init", LaplaceWarning, stacklevel=2)
    return MAPResult(params=_sites(layout, x), uncertainties=_sites(layout, sd), bestfit=np.asarray(model.from_free(jnp.asarray(x))),
                     free_names=names, covariance=cov, logdensity=-fz, converged=converged,
                     info={"nit": int(res.nit), "message": str(res.message), "edm": edm, "hessian_pd": pd,
                           "at_bound": [names[i] for i in np.flatnonzero(at_bound)]})


# ================================================================== SVI
#: default SVI settings: Adam whose step size decays exponentially from SVI_LR to SVI_LR * SVI_DECAY
SVI_STEPS, SVI_LR, SVI_DECAY = 5000, 0.05, 0.02
#: largest estimated distance (in guide sds) between the fitted location and the ELBO optimum
SVI_MOVED_MAX = 0.3


def svi(
    model: Any,
    *,
    guide: str = "normal",
    steps: int = SVI_STEPS,
    optimizer: Any = None,
    seed: int = 0,
    draws: int = 1000,
    learning_rate: float | None = None,
    rank: int | None = None,
    num_particles: int = 1,
    progress: bool | None = None,
) -> arviz.InferenceData:
    """Stochastic variational inference with a NumPyro autoguide; draws from the fitted guide.

    The guide lives in the samplers' standardised unconstrained coordinates (see
    :func:`hf2ppl.infer._nuts.standardisation`): a narrow constraint (lumi of width 0.017) is a unit-width
    coordinate there, so one step size suits every parameter. The guide starts at the workspace inits;
    draws are mapped back to the workspace's parameters. Warns
    (:class:`~hf2ppl.infer.diagnostics.SVIConvergenceWarning`) when the loss still decreased over the
    last 20% of the steps, and runs the prior-domination/ridge checks on the draws.

    Args:
        model: a model compiled with ``target="numpyro"``.
        guide: ``"normal"`` (mean field, ``AutoNormal``), ``"mvn"`` (full covariance,
            ``AutoMultivariateNormal``) or ``"lowrank"`` (``AutoLowRankMultivariateNormal``, ``rank``).
        steps: optimisation steps (run in one jitted ``lax.scan``).
        optimizer: a ``numpyro.optim`` optimiser (default: Adam with a step size decaying exponentially
            from ``learning_rate`` (0.05) to 2% of it over ``steps``).
        seed: integer seed.
        draws: draws from the fitted guide (one chain).
        num_particles: ELBO particles per step.
        progress: show NumPyro's progress bar; ``None`` → only when interactive.

    Returns:
        ``arviz.InferenceData``: posterior (guide draws, one chain), posterior_predictive,
        log_likelihood, observed_data, constant_data, and a group ``svi`` with the ``loss``
        (negative ELBO) per step; the final loss is ``attrs["final_loss"]``.

    Example:
        >>> idata = hf2ppl.svi(m, guide="mvn", steps=3000)  # doctest: +SKIP
        >>> idata.svi.loss.plot()  # doctest: +SKIP
    """
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    import numpyro.optim as optim
    import xarray as xr
    from numpyro.infer import SVI, Trace_ELBO, init_to_value
    from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal, AutoNormal

    from .diagnostics import SVIConvergenceWarning, _emit, check_draws, svi_trend

    _check_numpyro_model(model)
    guides = {"normal": AutoNormal, "mvn": AutoMultivariateNormal, "lowrank": AutoLowRankMultivariateNormal}
    if guide not in guides:
        raise ParameterError(f"guide must be one of {sorted(guides)}, got {guide!r}")
    if int(steps) != steps or steps < 1:
        raise ParameterError(f"steps must be a positive integer, got {steps!r}")
    layout = _layout(model)
    pot = layout.potential()
    n = layout.n

    def std_model():
        u = numpyro.sample("u", dist.ImproperUniform(dist.constraints.real, (), (n,)))
        numpyro.factor("logdensity", pot(u))

    u0 = layout.unconstrain(np.asarray(layout.init_x(), dtype=_sampler_dtype(model)))
    u0 = np.where(np.isfinite(u0), u0, 0.0)
    kw: dict[str, Any] = {"init_loc_fn": init_to_value(values={"u": jnp.asarray(u0)})}
    if guide == "lowrank" and rank is not None:
        kw["rank"] = rank
    g = guides[guide](std_model, **kw)
    if optimizer is not None:
        opt = optimizer
    else:
        lr = float(SVI_LR if learning_rate is None else learning_rate)
        opt = optim.Adam(lambda i: lr * SVI_DECAY ** (i / steps))
    s = SVI(std_model, g, opt, loss=Trace_ELBO(num_particles=num_particles))
    key = jax.random.PRNGKey(seed)
    k_fit, k_draw = jax.random.split(key)
    progress = auto_progress() if progress is None else bool(progress)
    res = s.run(k_fit, steps, progress_bar=progress)
    u = g.sample_posterior(k_draw, res.params, sample_shape=(draws,))["u"]
    x = np.asarray(jax.device_get(layout.constrain_only(u)))[None]
    losses = np.asarray(res.losses)
    # distance of the guide's location from the ELBO optimum, in guide sds: |d loss / d loc| * sd (a Newton step of
    # a mean-field guide, curvature 1/sd^2), the gradient averaged over 256 particles (noise ~0.06)
    moved = np.nan
    locs = [k for k in res.params if k.endswith("loc")]
    if locs:
        elbo = Trace_ELBO(num_particles=256)

        def loss_at(loc):
            return elbo.loss(k_draw, {**res.params, locs[0]: loc}, std_model, g)

        grad = np.asarray(jax.grad(loss_at)(res.params[locs[0]]))
        sd_u = np.asarray(jnp.std(u, axis=0))
        moved = float(np.max(np.abs(grad) * sd_u)) if grad.size else 0.0
    from .idata import assemble

    svi_group = xr.Dataset({"loss": (("step",), losses)}, coords={"step": np.arange(len(losses))},
                           attrs={"guide": guide, "final_loss": float(losses[-1])})
    idata = assemble(model, x, sampler=f"numpyro SVI ({type(g).__name__}, Trace_ELBO, standardised coordinates)", seed=seed,
                     prior=False, extra_attrs={"guide": guide, "steps": steps, "final_loss": float(losses[-1]), "seed": seed,
                                               "distance_to_optimum": moved,
                                               "standardised": ",".join(layout.standardised)},
                     extra_groups={"svi": svi_group})
    found = []
    drop, se = svi_trend(losses)
    if not np.isfinite(losses[-1]):
        found.append((SVIConvergenceWarning, "svi: the loss is not finite at the end; the guide is unusable"))
    elif np.isfinite(drop) and drop > max(3.0 * se, 0.05):
        found.append((SVIConvergenceWarning, f"svi: not converged — the loss fell by {drop:.3g} nats (± {se:.2g}) between the last "
                                             f"two fifths of the {steps} steps; raise steps or the learning rate"))
    elif np.isfinite(moved) and moved > SVI_MOVED_MAX:
        found.append((SVIConvergenceWarning, f"svi: not converged — the ELBO gradient puts the optimum {moved:.2f} guide sd from "
                                             f"the fitted location after {steps} steps; raise steps or the learning rate"))
    elif not np.isfinite(drop):
        found.append((SVIConvergenceWarning, f"svi: {steps} steps are too few (or too many losses non-finite) to judge convergence"))
    n_bad = int(np.sum(~np.isfinite(losses)))
    if n_bad > 0.01 * len(losses):
        found.append((SVIConvergenceWarning, f"svi: {n_bad} of {len(losses)} steps had a non-finite loss (guide draws outside the "
                                             "support); the fit may be unstable"))
    found += check_draws(idata.posterior, model)
    msgs = _emit(found, True, stacklevel=2)
    if msgs:
        idata.attrs["warnings"] = msgs
    return idata
