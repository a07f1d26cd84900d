"""Assemble :class:`arviz.InferenceData` from draws of a compiled model's free parameters.

The contract (shared by every hf2ppl sampler, NumPyro and PyMC targets alike; written down in
docs/bayes.md and enforced by tests/test_idata_contract.py):

* ``posterior`` / ``prior``: one float variable per free parameter set, named as the set;
  vector sets get the dimension ``<set>_bin`` with string coordinates (:func:`component_labels`,
  ``"SR[0]"``: channel and bin).
* ``observed_data``, ``posterior_predictive``, ``prior_predictive``: one variable per channel
  (``model.channel_site(channel)``) with dimension ``<channel>_bin`` and integer coordinates
  ``0..n-1``; all three of one dtype, :func:`count_dtype` (int64 when the observed counts are whole
  numbers, else float64).
* ``log_likelihood``: ONE variable, :func:`main_site` (``"main"``), the per-bin Poisson
  log-likelihood of all channels, dimension ``main_bin`` with string coordinates ``"SR[0]"`` and a
  non-index coordinate ``channel``: ``az.loo(idata)``/``az.compare`` work without arguments, and
  ``loo(..., pointwise=True).loo_i.groupby("channel").sum()`` splits the elpd by channel;
  :func:`channel_view` gives an InferenceData whose log-likelihood is one channel's.
* ``constant_data``: ``nominal_<channel>`` with dims ``("sample", "<channel>_bin")``.
* ``sample_stats``: ArviZ names (``diverging`` bool, ``energy``, ``tree_depth``, ``n_steps``,
  ``step_size``, ``acceptance_rate``, ``lp``).
* attrs: on the InferenceData itself (``idata.attrs``) and on every group.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np

from ._nuts import get_cache, get_layout

__all__ = ["lam_ll", "lam_ll_fn", "draw_prior", "prior_for_draws", "assemble", "main_site", "component_labels",
           "channel_view", "bin_labels", "count_dtype"]


def _version() -> str:
    from .. import __version__

    return __version__


def lam_ll(model: Any, x):
    """Expected main counts and per-bin Poisson log-likelihood of the observed counts.

    ``x``: constrained free vectors (..., n_free) → ``(lam, loglik)`` each (..., B). Traceable (no jit).
    """
    import jax
    import jax.numpy as jnp

    from .. import histfactory as hf

    xp, T = model._xp, model._T
    n_obs = jnp.asarray(model.ir.observed, dtype=model.dtype)
    flat = jnp.reshape(x, (-1, x.shape[-1]))
    layout = get_layout(model)
    lam = jax.vmap(lambda v: hf.expected_main(xp, T, layout.full(v)))(flat)
    lam = jnp.reshape(lam, x.shape[:-1] + (lam.shape[-1],))
    return lam, hf.poisson_logpdf(xp, n_obs, lam)


def lam_ll_fn(model: Any):
    """Jitted :func:`lam_ll` (cached on the model)."""
    cache = get_cache(model)
    if "lam_ll" not in cache:
        import jax

        get_layout(model)  # build (and cache) the layout outside of any trace

        cache["lam_ll"] = jax.jit(lambda x: lam_ll(model, x))
    return cache["lam_ll"]


LAM_BLOCK = 2048  # rows per call of the jitted expected-counts function (one compiled shape)


def lam_ll_blocks(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lam_ll` of rows ``x`` (N, n) in fixed-size blocks: one compiled shape for any N."""
    fn = lam_ll_fn(model)
    N = x.shape[0]
    pad = (-N) % LAM_BLOCK
    xp = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad and N else x
    outs = [fn(xp[i:i + LAM_BLOCK]) for i in range(0, xp.shape[0], LAM_BLOCK)]  # dispatched asynchronously
    lam = np.concatenate([np.asarray(o[0]) for o in outs])[:N]
    ll = np.concatenate([np.asarray(o[1]) for o in outs])[:N]
    return lam, ll


def prior_for_draws(model: Any) -> dict[str, Any]:
    """A proper :mod:`hf2ppl.priors` object per free set to draw the ``prior`` group from.

    ``"prior"`` mode: the sites' priors. ``"aux"`` mode: a free set's prior if proper (a ``Flat``
    prior on an unconstrained set is drawn uniformly on its bounds), and for constrained sets the
    default prior implied by the aux data (flat prior × aux likelihood, normalised).
    """
    from .. import priors as P

    out = {}
    for p in model.free_parameters:
        pr = model.priors[p.name]
        if isinstance(pr, P.Flat):
            pr = P.default_prior(p) if p.constraint is not None else P.Uniform(pr.low, pr.high)
        out[p.name] = pr
    return out


def draw_prior(model: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` prior draws of the constrained free vector, shape (n, n_free), with numpy."""
    from .. import priors as P

    priors = prior_for_draws(model)
    parts = []
    for p in model.free_parameters:
        pr = priors[p.name]
        v = pr.broadcast(p.n_free)
        shape = (n, p.n_free)
        if isinstance(pr, (P.Uniform, P.Flat)):
            lo, hi = v["low"], v["high"]
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                raise ValueError(f"cannot draw from an unbounded flat prior of {p.name!r}")
            d = rng.uniform(lo, hi, shape)
        elif isinstance(pr, P.Normal):
            d = rng.normal(v["loc"], v["scale"], shape)
        elif isinstance(pr, P.HalfNormal):
            d = np.abs(rng.normal(0.0, v["scale"], shape))
        elif isinstance(pr, P.LogNormal):
            d = rng.lognormal(v["loc"], v["scale"], shape)
        elif isinstance(pr, P.Gamma):
            d = rng.gamma(v["concentration"], 1.0 / v["rate"], shape)
        else:  # pragma: no cover - every Prior subclass is handled above
            raise TypeError(f"no sampler for prior {pr!r}")
        parts.append(d)
    return np.concatenate(parts, axis=-1)


def count_dtype(model: Any) -> type:
    """dtype of observed and predictive counts: int64 when every observed count is a whole number, else
    float64 (Asimov data, placeholder 1e-8 counts). Observations and predictions always share it, which is
    what ``az.plot_ppc`` needs (integer → histograms, float → KDEs)."""
    obs = np.asarray(model.ir.observed, dtype=float)
    return np.int64 if np.all(np.isfinite(obs)) and np.all(obs == np.round(obs)) else np.float64


def _poisson(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Poisson draws; a negative or NaN rate (e.g. a prior draw that extrapolates a histosys below 0) gives 0."""
    lam = np.clip(np.nan_to_num(np.asarray(lam, dtype=float), nan=0.0, posinf=0.0), 0.0, None)
    if lam.size <= POISSON_PARALLEL_ABOVE or lam.ndim == 0:
        return rng.poisson(lam)
    # large arrays (a posterior predictive of 10^6+ counts): two blocks from two child streams of ``rng`` in two
    # threads (numpy draws without the GIL); the draws depend on the seed only
    from concurrent.futures import ThreadPoolExecutor

    flat = lam.reshape(-1)
    h = flat.size // 2
    gens = rng.spawn(2)
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda gb: gb[0].poisson(gb[1]), ((gens[0], flat[:h]), (gens[1], flat[h:])))
    return np.concatenate([a, b]).reshape(lam.shape)


#: Poisson draws above this many are made in two threads
POISSON_PARALLEL_ABOVE = 1_000_000


def main_site(model: Any) -> str:
    """Name of the whole-model log-likelihood variable: ``"main"`` (``"main_all"`` if a channel or
    parameter is called ``"main"``)."""
    taken = set(model.ir.par_map) | {model.channel_site(c) for c in model.channels}
    return "main" if "main" not in taken else "main_all"


def bin_labels(model: Any) -> tuple[list[str], list[str]]:
    """``(["SR[0]", ...], ["SR", ...])``: a label and the channel of every main bin."""
    labs, chans = [], []
    for c in model.ir.channels:
        labs += [f"{c.name}[{i}]" for i in range(c.nbins)]
        chans += [c.name] * c.nbins
    return labs, chans


def component_labels(model: Any, p) -> list[str]:
    """Coordinates of a vector set's free components: the IR's labels, except shapefactors, whose
    bare bin numbers become ``"<channel>[i]"`` (``"CR+SR[i]"`` for one shared by several channels)."""
    labs = list(p.free_labels)
    if p.kind != "shapefactor" or not all(lab.isdigit() for lab in labs):
        return labs
    chans = [c["name"] for c in model.spec.channels
             if any(m["name"] == p.name and m["type"] == "shapefactor" for s in c["samples"] for m in s["modifiers"])]
    head = "+".join(chans) if chans else p.name
    return [f"{head}[{lab}]" for lab in labs]


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
            coords[p.dim] = component_labels(model, p)
    return xr.Dataset(data_vars, coords=coords, attrs=extra_attrs)


def _channel_dataset(model: Any, arr: np.ndarray | None, attrs: dict, with_chain: bool = True):
    """xarray Dataset of counts with one variable per channel from an array (..., B), dtype :func:`count_dtype`."""
    import xarray as xr

    data_vars, coords = {}, {}
    lead = ("chain", "draw") if with_chain else ()
    if with_chain:
        coords = {"chain": np.arange(arr.shape[0]), "draw": np.arange(arr.shape[1])}
    arr = np.asarray(arr).astype(count_dtype(model))
    for c in model.ir.channels:
        dim = f"{c.name}_bin"
        data_vars[model.channel_site(c.name)] = (lead + (dim,), arr[..., c.slice])
        coords[dim] = np.arange(c.nbins)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def loglik_dataset(model: Any, loglik: np.ndarray, attrs: dict):
    """The ``log_likelihood`` group: one variable (:func:`main_site`) over all main bins (C, D, B)."""
    import xarray as xr

    labs, chans = bin_labels(model)
    name = main_site(model)
    dim = f"{name}_bin"
    ll = np.asarray(loglik, dtype=np.float64)
    coords = {"chain": np.arange(ll.shape[0]), "draw": np.arange(ll.shape[1]), dim: labs, "channel": (dim, chans)}
    return xr.Dataset({name: (("chain", "draw", dim), ll)}, coords=coords, attrs=attrs)


def channel_view(idata, channel: str):
    """A shallow InferenceData whose ``log_likelihood`` holds one channel's bins (for a per-channel
    ``az.loo``/``az.compare``); ``channel`` is the channel name.

    Example:
        >>> az.loo(channel_view(idata, "SR"))  # doctest: +SKIP
    """
    import arviz as az

    from ..errors import ParameterError

    ll = idata.log_likelihood
    name = next(iter(ll.data_vars))
    da = ll[name]
    dim = da.dims[-1]
    chans = np.asarray(da.coords["channel"].values)
    if channel not in set(chans.tolist()):
        raise ParameterError(f"channel {channel!r} not in the log-likelihood; channels: {sorted(set(chans.tolist()))}")
    sub = ll.isel({dim: np.flatnonzero(chans == channel)})
    groups = {g: idata[g] for g in idata.groups() if g != "log_likelihood"}
    return az.InferenceData(attrs=dict(idata.attrs), log_likelihood=sub, **groups)


def assemble(model: Any, x: np.ndarray, *, sample_stats: dict[str, np.ndarray] | None = None, sampler: str,
             seed: int = 0, lam: np.ndarray | None = None, loglik: np.ndarray | None = None,
             x_prior: np.ndarray | None = None, lam_prior: np.ndarray | None = None,
             predictive: bool = True, log_likelihood: bool = True, prior: bool = True,
             prior_samples: int | None = None, extra_attrs: dict | None = None, extra_groups: dict | None = None):
    """Build the InferenceData for constrained free draws ``x`` (chains, draws, n_free).

    Args:
        model: the compiled NumPyro model.
        x: constrained free vectors, shape (chains, draws, n_free), in the model's free order.
        sample_stats: {ArviZ stat name: array (chains, draws) or (chains,)}.
        sampler: a short description stored in ``attrs["sampler"]``.
        seed: seed of the numpy generator for the predictive Poisson draws and prior draws.
        lam, loglik: expected counts and per-bin log-likelihood at ``x`` if already computed.
        x_prior, lam_prior: prior draws (n, n_free) and their expected counts if already computed.
        predictive, log_likelihood, prior: which optional groups to add.
        prior_samples: number of prior draws when ``x_prior`` is not given (default 1000).
    """
    import arviz as az
    import xarray as xr

    attrs = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "hf2ppl_version": _version(),
        "target": model.target,
        "constraints": model.constraints,
        "sampler": sampler,
        "inference_library": "hf2ppl",
    }
    attrs.update(extra_attrs or {})
    rng = np.random.default_rng([seed, 1234])
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
    need_post = (predictive or log_likelihood) and (lam is None or loglik is None)
    x = np.asarray(x)
    if prior and x_prior is None:
        x_prior = draw_prior(model, prior_samples or 1000, rng)
    need_prior = prior and lam_prior is None
    if need_post or need_prior:  # one call (one compile) for posterior and prior draws
        C, D, n = x.shape
        parts = ([np.reshape(x, (C * D, n))] if need_post else []) + ([np.asarray(x_prior)] if need_prior else [])
        lam_all, ll_all = lam_ll_blocks(model, np.concatenate(parts))
        if need_post:
            lam, loglik = lam_all[:C * D].reshape(C, D, -1), ll_all[:C * D].reshape(C, D, -1)
        if need_prior:
            lam_prior = lam_all[-len(x_prior):]
    if predictive:
        groups["posterior_predictive"] = _channel_dataset(model, _poisson(rng, lam), attrs)
    if log_likelihood:
        groups["log_likelihood"] = loglik_dataset(model, loglik, attrs)
    if prior:
        groups["prior"] = _param_dataset(model, np.asarray(x_prior)[None], attrs)
        groups["prior_predictive"] = _channel_dataset(model, _poisson(rng, np.asarray(lam_prior)[None]), attrs)
    groups["observed_data"] = _channel_dataset(model, np.asarray(model.ir.observed), attrs, with_chain=False)
    nom = np.asarray(model.ir.nominal)
    cd, coords = {}, {"sample": list(model.ir.samples)}
    for c in model.ir.channels:
        dim = f"{c.name}_bin"
        cd[f"nominal_{c.name}"] = (("sample", dim), np.asarray(nom[:, c.slice], dtype=np.float64))
        coords[dim] = np.arange(c.nbins)
    groups["constant_data"] = xr.Dataset(cd, coords=coords, attrs=attrs)
    groups.update(extra_groups or {})
    return az.InferenceData(attrs=attrs, **groups)
