r"""The Bayesian-vs-frequentist cross-check of one compiled model, in one call.

:func:`crosscheck` puts side by side, for the parameter of interest μ:

* the maximum-likelihood estimate :math:`\hat\mu \pm \sigma` (Hessian) of pyhf's likelihood;
* the observed and expected CLs upper limits (``qtilde``, asymptotics, ±1σ/±2σ bands), exactly as
  :func:`hf2ppl.upper_limit` (i.e. as pyhf);
* the Bayesian credible upper limit :math:`\mu_{\rm up}` with :math:`P(\mu \le \mu_{\rm up}\mid x) = \mathrm{CL}`,
  from NUTS draws of the posterior of the same workspace compiled with ``constraints="prior"``
  (constraint terms as priors) and a prior on μ that is flat on [0, upper bound of μ] unless ``poi_prior`` is given.

The credible limit is computed from the Rao-Blackwellised marginal posterior CDF of μ:
for every kept draw :math:`\theta_s` of the nuisance parameters, the conditional posterior
:math:`p(\mu\mid\theta_s, x) \propto L(x\mid\mu,\theta_s)\,\pi(\mu)` is integrated on a grid of μ
(trapezoid rule on the log density of the compiled graph), and the marginal is their average,
:math:`\hat F(\mu) = \frac1S\sum_s F(\mu\mid\theta_s, x)`. This estimator is unbiased for the
marginal CDF and has a far smaller Monte-Carlo error than the sample quantile (for a model without
nuisance parameters it is exact up to the quadrature); its MC error is estimated from the spread of
the per-chain limits. The plain sample quantile and its MCSE (ArviZ) are reported beside it.

Example:
    >>> import hf2ppl
    >>> r = hf2ppl.crosscheck(hf2ppl.example(), draws=300, warmup=300, chains=2)  # doctest: +SKIP
    >>> print(r)  # doctest: +SKIP
    >>> r.plot().savefig("crosscheck.png")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["crosscheck", "CrossCheckResult", "credible_upper_limit"]


def _quiet_arviz():
    """Import ArviZ without its once-a-day "major refactor" FutureWarning (it is not about hf2ppl's use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"[\s\S]*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz as az
    return az


def _check_cl(level: Any) -> float:
    try:
        cl = float(level)
    except (TypeError, ValueError):
        raise ParameterError(f"level must be a confidence level in (0.5, 1), e.g. 0.95; got {level!r}") from None
    if not 0.5 < cl < 1.0:
        raise ParameterError(f"level is the confidence level of crosscheck, in (0.5, 1) (0.95 for 95% CL), got {level!r}"
                             + ("; upper_limit's level is the CLs size 1 - CL (0.05)" if 0.0 < cl <= 0.5 else ""))
    return cl


def _prior_text(prior: Any) -> str:
    """``Uniform(low=0.0, high=10.0)`` also for a prior resolved on the bounds (``low=[0.0]``)."""
    return re.sub(r"\[([^\[\],]+)\]", r"\1", repr(prior))


def cl_label(cl: float) -> str:
    """``0.95`` → ``"95%"``, ``0.9`` → ``"90%"``, ``0.683`` → ``"68.3%"``."""
    return f"{100 * cl:.4g}%"


@dataclass
class CrossCheckResult:
    """Result of :func:`crosscheck`. Limits on the POI ``poi_name`` at confidence level ``cl``.

    Attributes:
        cl: the confidence / credibility level (0.95); the CLs size is ``1 - cl``.
        mle, mle_uncertainty: :math:`\\hat\\mu` and its Hessian uncertainty (pyhf's likelihood).
        cls_observed: observed CLs upper limit; cls_expected: the 5 expected limits, ``[-2σ, -1σ, median, +1σ, +2σ]``.
        scan_mu, scan_cls_obs, scan_cls_exp: CLs curves on a grid of μ (``scan_cls_exp`` (n, 5), pyhf's band order
            ``[+2σ, +1σ, 0, -1σ, -2σ]`` in CLs, i.e. the ``-2σ`` *limit* comes from column 4).
        bayes_limit: the credible upper limit (Rao-Blackwellised CDF), ``bayes_limit_mcse`` its MC error;
        bayes_quantile, bayes_quantile_mcse: the plain sample quantile at ``cl`` and its MCSE (ArviZ).
        posterior_mean, posterior_median, posterior_sd: of μ (from the draws).
        prior: the prior of μ, as text; prior_is_default: whether it is the default flat one.
        grid_mu, grid_density, grid_cdf: the marginal posterior density and CDF of μ (Rao-Blackwellised).
        chains, draws, warmup, divergences, r_hat, ess_bulk: of the NUTS run.
        idata: the ``arviz.InferenceData`` of the posterior; bayes_model: the model it was drawn from (neither in :meth:`to_dict`).
    """

    poi_name: str
    cl: float
    test_stat: str
    mle: float
    mle_uncertainty: float
    cls_observed: float
    cls_expected: list[float]
    scan_mu: np.ndarray
    scan_cls_obs: np.ndarray
    scan_cls_exp: np.ndarray
    bayes_limit: float
    bayes_limit_mcse: float
    bayes_quantile: float
    bayes_quantile_mcse: float
    posterior_mean: float
    posterior_median: float
    posterior_sd: float
    prior: str
    prior_is_default: bool
    grid_mu: np.ndarray
    grid_density: np.ndarray
    grid_cdf: np.ndarray
    chains: int
    draws: int
    warmup: int
    divergences: int
    r_hat: float
    ess_bulk: float
    idata: Any = field(default=None, repr=False)
    bayes_model: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return cl_label(self.cl)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything but the InferenceData."""
        def conv(v):
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, (np.floating, np.integer)):
                return v.item()
            return v

        out = {k: conv(v) for k, v in self.__dict__.items() if k not in ("idata", "bayes_model")}
        out["cls_size"] = 1.0 - self.cl
        return out

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    def table(self) -> str:
        """The side-by-side table (plain text)."""
        e = self.cls_expected
        mu = self.poi_name
        rows = [
            (f"{self.label} CL upper limit on {mu}", "frequentist (CLs)", "Bayesian (credible)"),
            ("observed", f"{self.cls_observed:.4f}", f"{self.bayes_limit:.4f} ± {self.bayes_limit_mcse:.2g} (MC)"),
            ("expected median", f"{e[2]:.4f}", ""),
            ("expected ±1σ", f"[{e[1]:.4f}, {e[3]:.4f}]", ""),
            ("expected ±2σ", f"[{e[0]:.4f}, {e[4]:.4f}]", ""),
            (f"{mu} estimate", f"{self.mle:.4f} ± {self.mle_uncertainty:.4f} (MLE)",
             f"{self.posterior_median:.4f} (median), {self.posterior_mean:.4f} ± {self.posterior_sd:.4f} (mean ± sd)"),
            ("sample quantile", "", f"{self.bayes_quantile:.4f} ± {self.bayes_quantile_mcse:.2g} (MCSE)"),
        ]
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"frequentist: {self.test_stat}, asymptotic CLs (pyhf's likelihood, constraint terms as auxiliary measurements)")
        lines.append(f"Bayesian: NUTS, {self.chains} chains × {self.draws} draws ({self.warmup} warmup), {self.divergences} divergences, "
                     f"R-hat({mu}) {self.r_hat:.3f}, ESS {self.ess_bulk:.0f}; constraint terms as priors")
        lines.append(f"prior on {mu}: {self.prior}" + (" (default: flat on [0, upper bound of the POI])" if self.prior_is_default else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, **kwargs: Any):
        """The figure: CLs vs μ with bands and the posterior density/CDF on a twin axis (:func:`hf2ppl.plot.plot_crosscheck`)."""
        from ..plot.limits import plot_crosscheck

        return plot_crosscheck(self, **kwargs)


# ---------------------------------------------------------------------------------------------- the Bayesian part
def _flat_draws(model: Any, posterior) -> np.ndarray:
    """Full flat parameter vectors (chain, draw, P) from a posterior group (fixed components at their inits)."""
    ir = model.ir
    post = {p.name: np.asarray(posterior[p.name].values, float) for p in model.free_parameters}
    shape = next(iter(post.values())).shape[:2]
    theta = np.broadcast_to(np.asarray(ir.init, float), shape + (ir.npars,)).copy()
    for p in model.free_parameters:
        idx = p.start + np.flatnonzero(p.free_mask)
        v = post[p.name]
        theta[..., idx] = v[..., None] if v.ndim == 2 else v
    return theta


def _rb_cdf(model: Any, theta: np.ndarray, grid: np.ndarray, block: int = 16) -> np.ndarray:
    """Per-draw conditional posterior densities of the POI on ``grid``, normalised: (S, G)."""
    import jax
    import jax.numpy as jnp

    poi = model.poi_index
    g = jnp.asarray(grid, dtype=model.dtype)

    def one(th):
        ths = jnp.broadcast_to(th, (g.shape[0], th.shape[0])).at[:, poi].set(g)
        return jax.vmap(model.logdensity_flat)(ths)

    fn = jax.jit(jax.vmap(one))
    S = theta.shape[0]
    pad = (-S) % block
    th = np.concatenate([theta, np.repeat(theta[-1:], pad, axis=0)]) if pad else theta
    lp = np.concatenate([np.asarray(fn(jnp.asarray(th[i:i + block], dtype=model.dtype))) for i in range(0, th.shape[0], block)])[:S]
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    lp = lp - lp.max(axis=1, keepdims=True)
    dens = np.exp(lp)
    norm = np.trapezoid(dens, grid, axis=1)
    return dens / norm[:, None]


def _cdf_of(dens: np.ndarray, grid: np.ndarray) -> np.ndarray:
    inc = 0.5 * (dens[..., 1:] + dens[..., :-1]) * np.diff(grid)
    c = np.concatenate([np.zeros(dens.shape[:-1] + (1,)), np.cumsum(inc, axis=-1)], axis=-1)
    return c / c[..., -1:]


def _crossing(cdf: np.ndarray, grid: np.ndarray, p: float) -> float:
    i = int(np.searchsorted(cdf, p))
    i = min(max(i, 1), grid.size - 1)
    c0, c1 = cdf[i - 1], cdf[i]
    return float(grid[i - 1] + (p - c0) / (c1 - c0) * (grid[i] - grid[i - 1])) if c1 > c0 else float(grid[i])


def _grid(lo: float, hi: float, draws: np.ndarray, n_coarse: int = 512, n_fine: int = 1536) -> np.ndarray:
    """Quadrature grid for μ: uniform on [lo, hi] plus a dense part over the range the draws cover."""
    d = np.asarray(draws, float).ravel()
    sd = float(np.std(d)) or 1e-3 * max(1.0, abs(hi - lo))
    a = max(lo, float(d.min()) - 3 * sd)
    b = min(hi, float(d.max()) + 3 * sd)
    parts = [np.linspace(lo, hi, n_coarse)]
    if b > a:
        parts.append(np.linspace(a, b, n_fine))
    return np.unique(np.concatenate(parts))


def credible_upper_limit(model: Any, idata: Any, cl: float = 0.95, *, max_draws: int = 1000,
                         support: tuple[float, float] | None = None) -> dict[str, Any]:
    """Rao-Blackwellised credible upper limit of the POI from posterior draws of a ``constraints="prior"`` model.

    Returns ``{"limit", "mcse", "grid", "density", "cdf", "chain_limits"}``. ``support``: the quadrature range of μ
    (default: the interval of the POI's prior, else its bounds).
    """
    cl = _check_cl(cl)
    poi = model.poi_name
    if poi is None:
        raise ParameterError("credible_upper_limit needs a model with a POI")
    theta = _flat_draws(model, idata.posterior)
    C, D, P = theta.shape
    keep = np.unique(np.linspace(0, D - 1, max(1, min(D, max_draws // C))).round().astype(int))
    theta = theta[:, keep]
    if support is None:
        pr = model.priors.get(poi)
        iv = pr.interval() if pr is not None else None
        b = np.asarray(model.ir.bounds[model.poi_index], float)
        lo, hi = (float(np.ravel(iv[0])[0]), float(np.ravel(iv[1])[0])) if iv is not None else (float(b[0]), float(b[1]))
    else:
        lo, hi = map(float, support)
    grid = _grid(lo, hi, theta[..., model.poi_index])
    dens = _rb_cdf(model, theta.reshape(-1, P), grid).reshape(C, len(keep), -1)
    chain_dens = dens.mean(axis=1)
    dens_all = chain_dens.mean(axis=0)
    cdf = _cdf_of(dens_all, grid)
    limit = _crossing(cdf, grid, cl)
    chain_limits = np.array([_crossing(_cdf_of(cd, grid), grid, cl) for cd in chain_dens])
    mcse = float(np.std(chain_limits, ddof=1) / np.sqrt(C)) if C > 1 else float("nan")
    return {"limit": limit, "mcse": mcse, "grid": grid, "density": dens_all, "cdf": cdf, "chain_limits": chain_limits}


# ---------------------------------------------------------------------------------------------- crosscheck
def crosscheck(
    model: Any,
    *,
    level: float = 0.95,
    poi_prior: Any = None,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    test_stat: str = "qtilde",
    scan: Any = None,
    backend: str = "blackjax",
    progress: bool | None = False,
    idata: Any = None,
    **load_kwargs: Any,
) -> CrossCheckResult:
    """The frequentist (CLs) and the Bayesian (credible) upper limit of the POI of one workspace, side by side.

    Args:
        model: a compiled model (either constraints mode; its spec is compiled in both modes) or a workspace.
        level: the confidence / credibility level, in (0.5, 1) (0.95). The CLs limit is
            ``upper_limit(level=1 - level)``.
        poi_prior: an :mod:`hf2ppl.priors` prior for the POI (default: ``Uniform(0, upper bound)``, a flat prior on
            [0, the POI's upper bound]; ``max(0, lower bound)`` when the lower bound is positive).
        chains, draws, warmup, seed, backend, progress: of :func:`hf2ppl.sample` (NUTS).
        test_stat: ``"qtilde"`` (pyhf's default for limits) or ``"q"``.
        scan: μ values for the CLs curves of the figure (default: 61 points from 0 to 1.6 × the largest limit).
        idata: posterior draws you already have (``hf2ppl.sample(model)`` of this ``model``, compiled with
            ``constraints="prior"``): no new NUTS run; the POI's prior is then the model's own (stated in the result),
            and ``poi_prior`` must be None.
        **load_kwargs: ``measurement``, ``patches``, ... when ``model`` is a workspace.

    Returns:
        :class:`CrossCheckResult`; ``print(result)`` gives the side-by-side table, ``result.plot()`` the figure,
        ``result.to_dict()`` the numbers.

    Example:
        >>> r = hf2ppl.crosscheck(hf2ppl.example(), chains=2, draws=500, warmup=500)  # doctest: +SKIP
        >>> r.cls_observed, r.bayes_limit  # doctest: +SKIP
    """
    import hf2ppl
    from hf2ppl import priors as P

    cl = _check_cl(level)
    spec = model.spec if hasattr(model, "spec") and hasattr(model, "ir") else hf2ppl.load(model, **load_kwargs)
    freq = model if getattr(model, "constraints", None) == "aux" and getattr(model, "target", None) == "numpyro" else \
        hf2ppl.compile(spec, constraints="aux")
    poi = freq.poi_name
    if poi is None:
        raise ParameterError("crosscheck needs a model with a parameter of interest (poi_name)")
    lo_b, hi_b = (float(v) for v in np.asarray(freq.ir.bounds[freq.poi_index]))
    if idata is not None:
        if getattr(model, "constraints", None) != "prior" or poi_prior is not None:
            raise ParameterError("crosscheck(idata=...) takes the constraints='prior' model the draws came from, and no poi_prior")
        poi_prior = model.priors[poi]
        iv = poi_prior.interval()
        default = iv is not None and isinstance(poi_prior, P.Uniform) and np.allclose(np.ravel(iv[0]), max(0.0, lo_b)) and \
            np.allclose(np.ravel(iv[1]), hi_b)
    default = poi_prior is None if idata is None else default
    if poi_prior is None:
        poi_prior = P.Uniform(max(0.0, lo_b), hi_b)
    if not isinstance(poi_prior, P.Prior):
        raise ParameterError(f"poi_prior must be an hf2ppl.priors prior (e.g. priors.Uniform(0, 10)), got {poi_prior!r}")

    # ---- frequentist: pyhf's likelihood
    mle = hf2ppl.fit(freq)
    obs, exp = hf2ppl.upper_limit(freq, level=1.0 - cl, test_stat=test_stat)
    exp = [float(v) for v in exp]
    if scan is None:
        top = max([float(obs)] + exp)
        scan = np.linspace(0.0 if lo_b <= 0 else lo_b, max(top * 1.6, top + 1e-3), 61)
    scan = np.asarray(scan, float)
    cls_obs, band = hf2ppl.hypotest(freq, scan, test_stat=test_stat, return_expected_set=True)
    band = np.stack([np.asarray(b, float) for b in band], axis=1)

    # ---- Bayesian: the same spec, constraint terms as priors, the stated prior on the POI
    if idata is None:
        bayes = hf2ppl.compile(spec, constraints="prior", priors={poi: poi_prior})
        idata = hf2ppl.sample(bayes, chains=chains, draws=draws, warmup=warmup, seed=seed, backend=backend,
                              progress=progress, predictive=False, log_likelihood=False, prior=False)
    else:
        bayes = model
        chains, draws = (int(idata.posterior.sizes[k]) for k in ("chain", "draw"))
        warmup = int(idata.posterior.attrs.get("num_warmup", warmup))
    az = _quiet_arviz()
    rb = credible_upper_limit(bayes, idata, cl)
    x = np.asarray(idata.posterior[poi].values, float)
    q = float(np.quantile(x, cl))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_mcse = float(az.mcse(idata, var_names=[poi], method="quantile", prob=cl)[poi])
        r_hat = float(az.rhat(idata, var_names=[poi])[poi]) if chains > 1 else float("nan")
        ess = float(az.ess(idata, var_names=[poi])[poi])
    div = int(np.asarray(idata.sample_stats["diverging"]).sum()) if "diverging" in idata.sample_stats else 0
    return CrossCheckResult(
        poi_name=poi, cl=cl, test_stat=test_stat, mle=float(mle.bestfit[poi]), mle_uncertainty=float(mle.uncertainties[poi]),
        cls_observed=float(obs), cls_expected=exp, scan_mu=scan, scan_cls_obs=np.asarray(cls_obs, float), scan_cls_exp=band,
        bayes_limit=rb["limit"], bayes_limit_mcse=rb["mcse"], bayes_quantile=q, bayes_quantile_mcse=q_mcse,
        posterior_mean=float(x.mean()), posterior_median=float(np.median(x)), posterior_sd=float(x.std()),
        prior=_prior_text(poi_prior), prior_is_default=default, grid_mu=rb["grid"], grid_density=rb["density"], grid_cdf=rb["cdf"],
        chains=chains, draws=draws, warmup=warmup, divergences=div, r_hat=r_hat, ess_bulk=ess, idata=idata, bayes_model=bayes)
