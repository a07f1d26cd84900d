"""Warnings where a posterior (or its approximation) cannot be trusted.

Every Bayesian entry point runs the checks that apply to it and warns with a subclass of
:class:`PosteriorWarning`; the messages also go to ``idata.attrs["warnings"]`` (and the report).

=============================  ================================================================
warning                        fires when
=============================  ================================================================
:class:`DivergenceWarning`     any post-warmup transition diverged (NUTS/HMC)
:class:`ConvergenceWarning`    rank-normalised split R-hat > :data:`RHAT_MAX` or bulk/tail ESS
                               below :data:`ESS_PER_CHAIN_MIN` per chain, for any component
:class:`LaplaceWarning`        ``map_estimate``: a component at a bound, a Hessian that is not
                               positive definite (its sd is NaN, never a clipped 0), or an
                               optimiser stop away from a stationary point
:class:`SVIConvergenceWarning` ``svi``: the ELBO still decreasing over the last steps
:class:`PriorDominatedWarning` an unconstrained parameter (normfactor/shapefactor: flat or uniform
                               prior on its bounds) whose posterior sd is more than
                               :data:`PRIOR_RATIO_MAX` × its prior sd: the data barely constrain it,
                               its posterior reflects the bounds
:class:`NonIdentifiedWarning`  two positive unconstrained parameters whose logarithms have a
                               posterior correlation below ``-RIDGE_CORR``: only their product is
                               measured (a curved ridge ``a·b = const``)
=============================  ================================================================

Example:
    >>> import warnings, hf2ppl
    >>> from hf2ppl.infer.diagnostics import PosteriorWarning
    >>> with warnings.catch_warnings():  # doctest: +SKIP
    ...     warnings.simplefilter("error", PosteriorWarning)
    ...     idata = hf2ppl.sample(m)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["PosteriorWarning", "DivergenceWarning", "ConvergenceWarning", "LaplaceWarning", "SVIConvergenceWarning",
           "PriorDominatedWarning", "NonIdentifiedWarning", "check_mcmc", "mcmc_findings", "findings", "check_draws", "prior_widths",
           "prior_ratios", "ridges", "svi_trend", "ess_rhat", "RHAT_MAX", "ESS_PER_CHAIN_MIN", "PRIOR_RATIO_MAX", "RIDGE_CORR"]

#: largest acceptable rank-normalised split R-hat (Vehtari et al. 2021)
RHAT_MAX = 1.01
#: smallest acceptable bulk and tail ESS per chain (Vehtari et al. 2021: 100 per chain)
ESS_PER_CHAIN_MIN = 100
#: posterior/prior sd ratio above which an unconstrained parameter is called prior-dominated
PRIOR_RATIO_MAX = 0.5
#: |posterior correlation of log a and log b| above which a product a·b is called non-identified
RIDGE_CORR = 0.9


class PosteriorWarning(UserWarning):
    """Base class: a posterior, a mode or an approximation that may be wrong."""


class DivergenceWarning(PosteriorWarning):
    """Divergent transitions: the sampler could not follow the posterior's geometry."""


class ConvergenceWarning(PosteriorWarning):
    """R-hat or ESS outside the thresholds: the chains have not mixed or are too short."""


class LaplaceWarning(PosteriorWarning):
    """A MAP estimate at a bound, with a non-positive-definite Hessian, or not at a stationary point."""


class SVIConvergenceWarning(PosteriorWarning):
    """The SVI objective was still moving when the optimisation stopped."""


class PriorDominatedWarning(PosteriorWarning):
    """A free parameter's posterior is about as wide as its (bounds-only) prior."""


class NonIdentifiedWarning(PosteriorWarning):
    """Two free parameters enter (nearly) only as a product."""


def _emit(found: list[tuple[type, str]], warn: bool, stacklevel: int = 4) -> list[str]:
    if warn:
        for cls, msg in found:
            warnings.warn(msg, cls, stacklevel=stacklevel)
    return [f"{cls.__name__}: {msg}" for cls, msg in found]


def _components(ds) -> list[tuple[str, str, np.ndarray]]:
    """(set, label, draws (chain, draw)) of every scalar component in a posterior-like Dataset."""
    out = []
    for name in ds.data_vars:
        da = ds[name]
        if da.ndim == 2:
            out.append((name, name, np.asarray(da.values)))
        else:
            dim = da.dims[2]
            for i, lab in enumerate(da.coords[dim].values):
                out.append((name, f"{name}[{lab}]", np.asarray(da.values[..., i])))
    return out


def prior_widths(model: Any) -> dict[str, np.ndarray]:
    """{free set: prior sd per free component} of the prior the ``prior`` group is drawn from."""
    from .. import priors as P
    from .idata import prior_for_draws

    out = {}
    for p in model.free_parameters:
        pr = prior_for_draws(model)[p.name]
        v = pr.broadcast(p.n_free)
        if isinstance(pr, (P.Uniform, P.Flat)):
            sd = (v["high"] - v["low"]) / np.sqrt(12.0)
        elif isinstance(pr, P.Normal):
            sd = v["scale"]
        elif isinstance(pr, P.HalfNormal):
            sd = v["scale"] * np.sqrt(1.0 - 2.0 / np.pi)
        elif isinstance(pr, P.LogNormal):
            s2 = v["scale"] ** 2
            sd = np.sqrt((np.exp(s2) - 1.0) * np.exp(2 * v["loc"] + s2))
        elif isinstance(pr, P.Gamma):
            sd = np.sqrt(v["concentration"]) / v["rate"]
        else:  # pragma: no cover - every prior is handled
            sd = np.full(p.n_free, np.nan)
        out[p.name] = np.asarray(sd, float)
    return out


def prior_ratios(posterior, model: Any) -> list[tuple[str, str, float, bool]]:
    """(set, label, posterior sd / prior sd, is unconstrained) per free component."""
    widths = prior_widths(model)
    pmap = model.ir.par_map
    out = []
    for name in posterior.data_vars:
        if name not in widths:
            continue
        da = np.asarray(posterior[name].values)
        sd = da.reshape(-1, *da.shape[2:]).std(axis=0, ddof=1).reshape(-1)
        labs = [name] if da.ndim == 2 else [f"{name}[{v}]" for v in posterior[name].coords[posterior[name].dims[2]].values]
        for lab, s, w in zip(labs, sd, widths[name]):
            out.append((name, lab, float(s / w) if w > 0 else np.nan, pmap[name].constraint is None))
    return out


def ridges(posterior, model: Any, corr: float = RIDGE_CORR) -> list[tuple[str, str, float]]:
    """Pairs (label a, label b, corr(log a, log b)) of positive unconstrained components with corr < -corr."""
    pmap = model.ir.par_map
    comps = []
    for name, lab, v in _components(posterior):
        p = pmap.get(name)
        if p is None or p.constraint is not None or np.min(np.asarray(p.bounds)[:, 0]) < 0:
            continue
        v = v.reshape(-1)
        if np.all(v > 0) and np.std(v) > 0:
            comps.append((lab, np.log(v)))
    out = []
    if len(comps) < 2:
        return out
    c = np.corrcoef(np.stack([v for _, v in comps]))
    for i in range(len(comps)):
        for j in range(i + 1, len(comps)):
            if c[i, j] < -corr:
                out.append((comps[i][0], comps[j][0], float(c[i, j])))
    return out


def _ess_many(a: np.ndarray) -> np.ndarray:
    """ArviZ's ``_ess`` (Geyer's initial positive and monotone sequences on the FFT autocovariance) for ``k``
    components at once: ``a`` (k, chains, draws) → (k,). The sequential loops of ArviZ become a first-failure
    index and a cumulative minimum of the pair sums."""
    from scipy.fft import next_fast_len

    a = np.asarray(a, float)
    k, C, n = a.shape
    total = C * n
    valid = np.all(np.isfinite(a), axis=(1, 2))
    a = np.where(valid[:, None, None], a, 0.0)
    const = (a.max(axis=(1, 2)) - a.min(axis=(1, 2))) < np.finfo(float).resolution
    m = next_fast_len(2 * n)
    x = a - a.mean(axis=2, keepdims=True)
    f = np.fft.rfft(x, n=m, axis=2)
    acov = np.fft.irfft(f * np.conjugate(f), n=m, axis=2)[..., :n] / n
    mean_var = acov[:, :, 0].mean(axis=1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if C > 1:
        var_plus = var_plus + a.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
    rho[:, 0] = 1.0
    j_last = len(range(1, n - 3, 2))  # pairs (2j, 2j+1), j = 1..j_last, that ArviZ's loop may compute
    pairs = rho[:, :2 * (j_last + 1)].reshape(k, j_last + 1, 2)
    S = pairs.sum(axis=2)
    fail = ~(S > 0)
    J = np.where(fail.any(axis=1), np.argmax(fail, axis=1), j_last)
    smin = np.minimum.accumulate(np.where(np.isfinite(S), S, np.inf), axis=1)
    upto = np.arange(j_last + 1)[None, :] < J[:, None]
    even = pairs[np.arange(k), J, 0]
    last = np.where((S[np.arange(k), J] >= 0) | (even > 0) | (J == 0), even, 0.0)
    tau = -1.0 + 2.0 * np.sum(np.where(upto, smin, 0.0), axis=1) + last
    bad = np.isnan(rho[:, 1]) | ~np.isfinite(tau)  # ArviZ: NaN when its sequence holds a NaN (only rho[1] can)
    tau = np.maximum(tau, 1.0 / np.log10(total))
    ess = np.where(bad, np.nan, total / np.where(bad, 1.0, tau))
    return np.where(valid, np.where(const, float(total), ess), np.nan)


def _split(a: np.ndarray) -> np.ndarray:
    half = a.shape[2] // 2
    return np.concatenate([a[:, :, :half], a[:, :, a.shape[2] - half:]], axis=1)


def _average_ranks(flat: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(flat, method="average", axis=1)`` (1-based; ties get their mean rank), from numpy's
    unstable argsort (vectorised quicksort: ~7x faster than the stable sort rankdata uses; the order within a
    tie group does not change its mean rank). MCMC draws have ties: a rejected NUTS proposal repeats a point."""
    k, n = flat.shape
    order = np.argsort(flat, axis=1)
    sv = np.sort(flat, axis=1)  # = flat[order] row by row, and cheaper than that gather
    pos = np.broadcast_to(np.arange(n), (k, n))
    first = np.ones((k, n), bool)
    first[:, 1:] = sv[:, 1:] != sv[:, :-1]
    ranks_sorted = pos + 1.0
    if not first.all():  # the mean of a tie group's positions: (first + last) / 2
        start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
        last = np.ones((k, n), bool)
        last[:, :-1] = first[:, 1:]
        end = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
        ranks_sorted = (start + end) / 2.0 + 1.0
    ranks = np.empty((k, n))
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    return ranks


def _z_scale(a: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    k = a.shape[0]
    flat = a.reshape(k, -1)
    rank = _average_ranks(flat)
    return ndtri((rank - 0.375) / (flat.shape[1] + 0.25)).reshape(a.shape)  # norm.ppf without its checks


def _rhat_many(a: np.ndarray) -> np.ndarray:
    N = a.shape[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        B = N * a.mean(axis=2).var(axis=1, ddof=1)
        W = a.var(axis=2, ddof=1).mean(axis=1)
        return np.sqrt((B / W + N - 1) / N)


def ess_rhat(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bulk ESS, tail ESS, rank-normalised split R-hat) of each component of ``draws`` (chains, draws, k), with
    ArviZ's definitions (``az.ess(method="bulk"/"tail")``, ``az.rhat``; Vehtari et al. 2021), vectorised over
    the components: ArviZ loops over them in Python, seconds for a 500-parameter posterior. R-hat is NaN for
    one chain; everything is NaN for a component with a non-finite draw or fewer than 4 draws.

    Example:
        >>> import numpy as np
        >>> b, t, r = ess_rhat(np.random.default_rng(0).normal(size=(4, 1000, 3)))
        >>> bool(np.all(b > 3000) and np.all(np.abs(r - 1) < 0.01))
        True
    """
    x = np.moveaxis(np.asarray(draws, float), 2, 0)  # (k, chains, draws)
    k, C, D = x.shape
    nan = np.full(k, np.nan)
    if D < 4 or k == 0:
        return nan, nan.copy(), nan.copy()
    if k > 1 and x.size > PARALLEL_ABOVE:  # two halves of the components in two threads (numpy releases the GIL)
        from concurrent.futures import ThreadPoolExecutor

        h = k // 2
        with ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(_ess_rhat, (x[:h], x[h:])))
        return tuple(np.concatenate([a, b]) for a, b in zip(*parts))
    return _ess_rhat(x)


#: ``ess_rhat`` splits its components over two threads above this many draws in all
PARALLEL_ABOVE = 1_000_000


def _ess_rhat(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k, C, D = x.shape
    nan = np.full(k, np.nan)
    valid = np.all(np.isfinite(x), axis=(1, 2))
    x = np.where(valid[:, None, None], x, 0.0)
    split = _split(x)
    z = _z_scale(split)  # one ranking for the bulk ESS and the bulk R-hat
    bulk = _ess_many(z)
    flat = x.reshape(k, -1)
    tail = np.full(k, np.inf)
    for q in (0.05, 0.95):
        iq = (x <= np.quantile(flat, q, axis=1)[:, None, None]).astype(float)
        tail = np.minimum(tail, _ess_many(_split(iq)))
    if C > 1:
        folded = np.abs(split - np.median(split.reshape(k, -1), axis=1)[:, None, None])
        rhat = np.maximum(_rhat_many(z), _rhat_many(_z_scale(folded)))
    else:
        rhat = nan.copy()
    bad = ~valid
    return np.where(bad, np.nan, bulk), np.where(bad, np.nan, tail), np.where(bad, np.nan, rhat)


def check_draws(posterior, model: Any) -> list[tuple[type, str]]:
    """Prior-dominated and non-identified checks on posterior draws (any sampler, SVI too)."""
    found: list[tuple[type, str]] = []
    dom = [(lab, r) for _s, lab, r, free in prior_ratios(posterior, model) if free and np.isfinite(r) and r > PRIOR_RATIO_MAX]
    if dom:
        txt = ", ".join(f"{lab} ({r:.2f})" for lab, r in dom[:8]) + (" ..." if len(dom) > 8 else "")
        found.append((PriorDominatedWarning,
                      f"posterior sd / prior sd > {PRIOR_RATIO_MAX} for unconstrained parameters {txt}: the data barely constrain "
                      "them and their posterior reflects the prior bounds (report the prior; consider fixing or reparametrising)"))
    rid = ridges(posterior, model)
    if rid:
        txt = ", ".join(f"{a}·{b} (corr of logs {c:.2f})" for a, b, c in rid[:6]) + (" ..." if len(rid) > 6 else "")
        found.append((NonIdentifiedWarning,
                      f"only products of free parameters are measured: {txt}; their individual posteriors are set by the prior "
                      "volume (fix one factor, or sample the product)"))
    return found


def mcmc_findings(idata, model: Any) -> list[tuple[type, str]]:
    """(warning class, message) of the MCMC checks on ``idata`` (divergences, R-hat/ESS, prior domination,
    ridges), without warning or touching ``idata``."""
    found: list[tuple[type, str]] = []
    post = idata.posterior
    C, D = post.sizes["chain"], post.sizes["draw"]
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        n_div = int(np.asarray(idata.sample_stats["diverging"]).sum())
        if n_div:
            found.append((DivergenceWarning, f"{n_div} of {C * D} post-warmup transitions diverged: the posterior may be biased; "
                                             "raise target_accept (e.g. 0.95) or reparametrise"))
    comps = _components(post)
    ess_b, ess_t, rhat = ess_rhat(np.stack([v for *_, v in comps], axis=-1)) if comps else (np.zeros(0),) * 3
    bad_r, bad_e = [], []
    for (_name, lab, _v), eb, et, rv in zip(comps, ess_b, ess_t, rhat):
        ev = min(eb, et)
        if not np.isfinite(ev) or ev < ESS_PER_CHAIN_MIN * C:
            bad_e.append((lab, ev))
        if C > 1 and (not np.isfinite(rv) or rv > RHAT_MAX):
            bad_r.append((lab, rv))
    if bad_r:
        bad_r.sort(key=lambda t: -np.nan_to_num(t[1], nan=np.inf))
        txt = ", ".join(f"{lab} ({r:.3g})" for lab, r in bad_r[:6]) + (" ..." if len(bad_r) > 6 else "")
        found.append((ConvergenceWarning, f"R-hat > {RHAT_MAX} for {len(bad_r)} component(s): {txt}; the chains disagree — run longer "
                                          "or check the model for multimodality/non-identifiability"))
    if bad_e:
        bad_e.sort(key=lambda t: np.nan_to_num(t[1], nan=-1))
        txt = ", ".join(f"{lab} ({e:.0f})" for lab, e in bad_e[:6]) + (" ..." if len(bad_e) > 6 else "")
        found.append((ConvergenceWarning, f"bulk/tail ESS below {ESS_PER_CHAIN_MIN} per chain ({ESS_PER_CHAIN_MIN * C} in all) for "
                                          f"{len(bad_e)} component(s): {txt}; run more draws"))
    found += check_draws(post, model)
    return found


def check_mcmc(idata, model: Any, *, warn: bool = True) -> list[str]:
    """Run the MCMC checks on ``idata`` (divergences, R-hat/ESS, prior domination, ridges); warn and
    return the messages (also stored in ``idata.attrs["warnings"]``)."""
    msgs = _emit(mcmc_findings(idata, model), warn)
    if msgs:
        idata.attrs["warnings"] = msgs
    return msgs


def findings(idata, model: Any) -> list[str]:
    """The messages the checks that can be redone from the draws give on ``idata`` ("Class: message"), with no
    warning and ``idata`` untouched: the MCMC checks when ``idata`` has ``sample_stats`` (a sampler's output),
    else the prior-domination/ridge checks alone (SVI draws). Checks of the fit itself (SVI's loss trend, MAP)
    exist only in ``idata.attrs["warnings"]``."""
    if "sample_stats" in idata.groups():
        return _emit(mcmc_findings(idata, model), False)
    return _emit(check_draws(idata.posterior, model), False)


def svi_trend(losses: np.ndarray, frac: float = 0.2) -> tuple[float, float]:
    """(decrease of the mean loss between the second-to-last and last ``frac`` of the steps, its standard
    error from 20 block means per window): the ELBO is still moving when the decrease is large against both
    the noise and 0.05 nats."""
    losses = np.asarray(losses, float)
    n = len(losses)
    w = max(int(frac * n), 20)
    if 2 * w > n:
        return np.nan, np.nan
    a, b = losses[n - 2 * w:n - w], losses[n - w:]
    nb = 20
    with warnings.catch_warnings():  # a few non-finite losses (a guide draw outside the support) are skipped
        warnings.simplefilter("ignore")
        ba = np.asarray([np.nanmean(np.where(np.isfinite(x), x, np.nan)) for x in np.array_split(a, nb)])
        bb = np.asarray([np.nanmean(np.where(np.isfinite(x), x, np.nan)) for x in np.array_split(b, nb)])
    ba, bb = ba[np.isfinite(ba)], bb[np.isfinite(bb)]
    if len(ba) < 3 or len(bb) < 3:
        return np.nan, np.nan
    se = float(np.sqrt(ba.var(ddof=1) / len(ba) + bb.var(ddof=1) / len(bb)))
    return float(ba.mean() - bb.mean()), se
