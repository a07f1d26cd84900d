"""Assemble :class:`arviz.InferenceData` from draws of a compiled model's free parameters.

Conventions (shared by every hf2ppl sampler, NumPyro and PyMC targets alike):

* ``posterior`` / ``prior``: one variable per free parameter set, named as the set;
  vector sets get the dimension ``<set>_bin`` with coordinates ``pset.free_labels``.
* ``observed_data``, ``posterior_predictive``, ``prior_predictive``, ``log_likelihood``:
  one variable per channel (``model.channel_site(channel)``) with dimension
  ``<channel>_bin`` and integer coordinates; ``log_likelihood`` holds the per-bin
  Poisson log-likelihood so ``az.loo``/``az.waic`` work.
* ``constant_data``: ``nominal_<channel>`` with dims ``("sample", "<channel>_bin")``.
* ``sample_stats``: ArviZ names (``diverging``, ``energy``, ``tree_depth``, ``n_steps``,
  ``step_size``, ``acceptance_rate``, ``lp``).
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np

from ._nuts import get_cache

__all__ = ["derived_fn", "prior_draws_fn", "assemble", "prior_distributions"]


def _version() -> str:
    from .. import __version__

    return __version__


def derived_fn(model: Any, predictive: bool = True):
    """Jitted ``(key, x) -> (lam, loglik, ppc)`` for constrained free vectors ``x`` of shape (C, D, n).

    ``lam`` and ``loglik`` have shape (C, D, B); ``ppc`` are Poisson draws of the main counts (or None).
    """
    cache = get_cache(model)
    ck = ("derived", predictive)
    if ck in cache:
        return cache[ck]
    import jax
    import jax.numpy as jnp

    from .. import histfactory as hf

    xp, T = model._xp, model._T
    n_obs = jnp.asarray(model.ir.observed, dtype=model.dtype)

    def one(x):
        return hf.expected_main(xp, T, model.from_free(x))

    def f(key, x):
        lam = jax.vmap(jax.vmap(one))(x)
        ll = hf.poisson_logpdf(xp, n_obs, lam)
        ppc = jax.random.poisson(key, lam, dtype=jnp.int64 if model.dtype == "float64" else jnp.int32) if predictive else None
        return lam, ll, ppc

    cache[ck] = jax.jit(f)
    return cache[ck]


def prior_distributions(model: Any) -> dict[str, Any]:
    """Proper NumPyro distributions to draw the ``prior`` group from, one per free set.

    ``"prior"`` mode: the sites' priors. ``"aux"`` mode: a free set's prior if proper
    (a ``Flat`` prior on finite bounds is drawn uniformly on them), and for constrained sets the
    default prior implied by the aux data (flat × aux likelihood, normalised).
    """
    from .. import priors as P
    from ..targets.numpyro import numpyro_distribution

    if model.constraints == "prior":
        return dict(model.site_distributions())
    out = {}
    for p in model.free_parameters:
        pr = model.priors[p.name]
        if isinstance(pr, P.Flat):
            if p.constraint is not None:
                pr = P.default_prior(p)
            else:
                pr = P.Uniform(pr.low, pr.high)
        out[p.name] = numpyro_distribution(pr, p.is_scalar)
    return out


def prior_draws_fn(model: Any, n: int):
    """Jitted ``key -> (x, lam, prior_predictive)`` with ``x`` of shape (1, n, n_free)."""
    cache = get_cache(model)
    ck = ("prior", n)
    if ck in cache:
        return cache[ck]
    import jax
    import jax.numpy as jnp

    dists = prior_distributions(model)
    names = [p.name for p in model.free_parameters]
    der = derived_fn(model, True)

    def f(key):
        keys = jax.random.split(key, len(names) + 1)
        parts = []
        for k, p in zip(keys[:-1], model.free_parameters):
            v = dists[p.name].sample(k, (n,))
            parts.append(jnp.reshape(v, (n, p.n_free)))
        x = jnp.concatenate(parts, axis=-1)[None]
        lam, _ll, ppc = der(keys[-1], x)
        return x, ppc

    cache[ck] = jax.jit(f)
    return cache[ck]


def _param_dataset(model: Any, x: np.ndarray, extra_attrs: dict):
    """xarray Dataset of parameter draws from constrained free vectors (C, D, n)."""
    import xarray as xr

    C, D = x.shape[:2]
    data_vars, coords = {}, {"chain": np.arange(C), "draw": np.arange(D)}
    off = 0
    for p in model.free_parameters:
        v = x[..., off:off + p.n_free]
        off += p.n_free
        if p.is_scalar:
            data_vars[p.name] = (("chain", "draw"), v[..., 0])
        else:
            data_vars[p.name] = (("chain", "draw", p.dim), v)
            coords[p.dim] = list(p.free_labels)
    return xr.Dataset(data_vars, coords=coords, attrs=extra_attrs)


def _channel_dataset(model: Any, arr: np.ndarray | None, attrs: dict, with_chain: bool = True):
    """xarray Dataset with one variable per channel from an array (..., B)."""
    import xarray as xr

    data_vars, coords = {}, {}
    lead = ("chain", "draw") if with_chain else ()
    if with_chain:
        coords = {"chain": np.arange(arr.shape[0]), "draw": np.arange(arr.shape[1])}
    for c in model.ir.channels:
        dim = f"{c.name}_bin"
        data_vars[model.channel_site(c.name)] = (lead + (dim,), arr[..., c.slice])
        coords[dim] = np.arange(c.nbins)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def assemble(model: Any, x: np.ndarray, *, sample_stats: dict[str, np.ndarray] | None = None, sampler: str,
             key: Any = None, predictive: bool = True, log_likelihood: bool = True, prior: bool = True,
             prior_samples: int | None = None, extra_attrs: dict | None = None, extra_groups: dict | None = None):
    """Build the InferenceData for constrained free draws ``x`` (chains, draws, n_free).

    Args:
        model: the compiled NumPyro model.
        x: constrained free vectors, shape (chains, draws, n_free), in the model's free order.
        sample_stats: {ArviZ stat name: array (chains, draws)}.
        sampler: a short description stored in ``attrs["sampler"]``.
        key: JAX PRNG key for the posterior/prior predictive draws.
        predictive, log_likelihood, prior: which optional groups to add.
        prior_samples: number of prior draws (default: min(draws, 1000)).
    """
    import arviz as az
    import jax
    import xarray as xr

    attrs = {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "hf2ppl_version": _version(),
        "target": model.target,
        "constraints": model.constraints,
        "sampler": sampler,
        "inference_library": "hf2ppl",
    }
    attrs.update(extra_attrs or {})
    if key is None:
        key = jax.random.PRNGKey(0)
    k_post, k_prior = jax.random.split(key)
    groups: dict[str, Any] = {"posterior": _param_dataset(model, x, attrs)}
    if sample_stats:
        C, D = x.shape[:2]
        ss = {}
        for k, v in sample_stats.items():
            v = np.asarray(v)
            if v.shape == (C,):
                v = np.broadcast_to(v[:, None], (C, D))
            ss[k] = (("chain", "draw"), v)
        groups["sample_stats"] = xr.Dataset(ss, coords={"chain": np.arange(C), "draw": np.arange(D)}, attrs=attrs)
    if predictive or log_likelihood:
        lam, ll, ppc = jax.device_get(derived_fn(model, predictive)(k_post, x))
        if predictive:
            groups["posterior_predictive"] = _channel_dataset(model, ppc, attrs)
        if log_likelihood:
            groups["log_likelihood"] = _channel_dataset(model, ll, attrs)
    if prior:
        n = prior_samples or min(x.shape[1], 1000)
        xp, ppc = jax.device_get(prior_draws_fn(model, n)(k_prior))
        groups["prior"] = _param_dataset(model, xp, attrs)
        groups["prior_predictive"] = _channel_dataset(model, ppc, attrs)
    groups["observed_data"] = _channel_dataset(model, np.asarray(model.ir.observed), attrs, with_chain=False)
    nom = np.asarray(model.ir.nominal)
    cd, coords = {}, {"sample": list(model.ir.samples)}
    for c in model.ir.channels:
        dim = f"{c.name}_bin"
        cd[f"nominal_{c.name}"] = (("sample", dim), nom[:, c.slice])
        coords[dim] = np.arange(c.nbins)
    groups["constant_data"] = xr.Dataset(cd, coords=coords, attrs=attrs)
    groups.update(extra_groups or {})
    return az.InferenceData(**groups)
