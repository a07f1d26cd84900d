"""Test statistics and the asymptotic (Wald/Asimov) calculator, as pyhf's ``infer.calculators.AsymptoticCalculator``."""

from __future__ import annotations

import numpy as np

from ._engine import _EXPECTED_NSIGMA, _Engine, _jnp, _merge_diag


def tstat_np(mu, fixed_fun, free_fun, muhat, test_stat: str) -> np.ndarray:
    t = np.clip(2.0 * (np.asarray(fixed_fun) - np.asarray(free_fun)), 0.0, None)
    if test_stat in ("q", "qtilde"):
        return np.where(muhat > mu, 0.0, t)
    if test_stat == "q0":
        return np.where(muhat < 0.0, 0.0, t)
    return t

def prepare(eng: _Engine, d: np.ndarray, opts: tuple, test_stat: str, starts: int | None = None) -> dict:
    """The μ-independent fits: free fit to data, the Asimov data (fixed-POI fit at μ=0, or 1 for q0),
    and the free fit to the Asimov data. Both fits are multi-start (one vmapped call of ``2 x starts``)."""
    x0, lo, hi, fx = opts
    poi = eng.poi
    fa = fx.astype(float)
    fa[poi] = 1.0
    S_free = eng.starts(x0, lo, hi, fx, starts)
    S_as = S_free.copy()
    S_as[:, poi] = 1.0 if test_stat == "q0" else 0.0
    r1 = eng.solve_best(np.stack([S_free, S_as]), lo, hi, np.stack([fx.astype(float), fa]), d[None])
    xa = r1["x"][1]
    asimov = eng.expected(xa)
    # the unconditional fit to the Asimov data is known exactly: every likelihood term (main Poisson, Normal
    # and Poisson constraints) is maximal at the parameters that generated it (pyhf fits it numerically)
    freeA_fun = float(eng._nll_j(*_jnp(xa, asimov), eng.nominal))
    return dict(free_fun=r1["fun"][0], free_x=r1["x"][0], asimov=asimov, asimov_pars=xa, freeA_fun=freeA_fun, freeA_x=xa,
                converged=bool(np.all(r1["converged"])), fits=r1)


def at_mu(eng: _Engine, mus: np.ndarray, prep: dict, d: np.ndarray, opts: tuple, test_stat: str) -> dict:
    """Asymptotic p-values at each μ: the fixed-POI fits to data and to Asimov, each from two starts (warm: the
    unconditional fit with the POI moved to μ; cold: ``init``, so that no basin is inherited), all in one call."""
    from scipy.stats import norm

    x0, lo, hi, fx = opts
    poi = eng.poi
    mus = np.asarray(mus, float)
    n = mus.size
    warm = np.concatenate([np.repeat(prep["free_x"][None], n, axis=0), np.repeat(prep["freeA_x"][None], n, axis=0)])
    X = np.stack([warm, np.repeat(x0[None], 2 * n, axis=0)], axis=1)
    X[:, :, poi] = np.concatenate([mus, mus])[:, None]
    F = np.repeat(fx.astype(float)[None], 2 * n, axis=0)
    F[:, poi] = 1.0
    D = np.concatenate([np.repeat(d[None], n, axis=0), np.repeat(prep["asimov"][None], n, axis=0)])
    r = eng.solve_best(X, lo, hi, F, D)
    q = tstat_np(mus, r["fun"][:n], prep["free_fun"], prep["free_x"][poi], test_stat)
    qA = tstat_np(mus, r["fun"][n:], prep["freeA_fun"], prep["freeA_x"][poi], test_stat)
    sq, sqA = np.sqrt(q), np.sqrt(qA)
    with np.errstate(divide="ignore", invalid="ignore"):
        if test_stat == "qtilde":
            ts = np.where(sq <= sqA, sq - sqA, (q - qA) / (2.0 * sqA))
        else:
            ts = sq - sqA
        clsb, clb = norm.cdf(-(ts + sqA)), norm.cdf(-ts)
        nsig = np.asarray(_EXPECTED_NSIGMA)
        clsb_e = norm.cdf(-(nsig[None, :] + sqA[:, None]))
        clb_e = np.broadcast_to(norm.cdf(-nsig), clsb_e.shape)
        return dict(q=q, qA=qA, ts=ts, clsb=clsb, clb=clb, cls=clsb / clb, clsb_exp=clsb_e, clb_exp=clb_e,
                    cls_exp=clsb_e / clb_e, fixed_fit=r["x"][:n], fixed_fit_asimov=r["x"][n:],
                    converged=r["converged"][:n] & r["converged"][n:] & prep["converged"],
                    diag=_merge_diag(prep["fits"], r))

def asymptotics(eng: _Engine, mus, data, nominal, x0, lo, hi, fixed, test_stat="qtilde"):
    """Pure, jit-able and differentiable (implicit VJP of every fit) asymptotic CLs at each μ."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.stats import norm

    poi = eng.poi
    n = mus.shape[0]
    fpoi = fixed.at[poi].set(1.0)
    batch = jax.vmap(eng.solve_yields, in_axes=(0, None, None, 0, 0, None))
    # stage 1: free fit to data and the Asimov-generating fit (two problems, one vmapped solve)
    x_as = x0.at[poi].set(1.0 if test_stat == "q0" else 0.0)
    r1 = batch(jnp.stack([x0, x_as]), lo, hi, jnp.stack([fixed, fpoi]), jnp.stack([data, data]), nominal)
    asimov = eng.expected_full(r1.x[1], nominal)
    # stage 2: fixed-POI fits to data and to Asimov at every mu (one vmapped solve), warm-started from the
    # unconditional fits (the solution does not depend on the start); the unconditional Asimov fit is exact
    xm = jnp.tile(r1.x[0], (n, 1)).at[:, poi].set(mus)
    xa = jnp.tile(r1.x[1], (n, 1)).at[:, poi].set(mus)
    X = jnp.concatenate([xm, xa])
    Fm = jnp.tile(fpoi, (2 * n, 1))
    D = jnp.concatenate([jnp.tile(data, (n, 1)), jnp.tile(asimov, (n, 1))])
    r2 = batch(X, lo, hi, Fm, D, nominal)
    free_fun, muhat = r1.fun[0], r1.x[0, poi]
    freeA_fun, muhatA = eng.nll(r1.x[1], asimov, nominal), r1.x[1, poi]

    def tstat(mu, fixed_fun, free_fun, muhat):
        t = jnp.clip(2.0 * (fixed_fun - free_fun), 0.0, None)
        if test_stat in ("q", "qtilde"):
            return jnp.where(muhat > mu, 0.0, t)
        if test_stat == "q0":
            return jnp.where(muhat < 0.0, 0.0, t)
        return t

    def one(mu, fd_fun, fa_fun):
        q = tstat(mu, fd_fun, free_fun, muhat)
        qA = tstat(mu, fa_fun, freeA_fun, muhatA)
        sq = jnp.sqrt(jnp.where(q > 0, q, 1.0)) * (q > 0)
        sqA = jnp.sqrt(jnp.where(qA > 0, qA, 1.0)) * (qA > 0)
        if test_stat == "qtilde":
            ts = jnp.where(sq <= sqA, sq - sqA, (q - qA) / (2.0 * jnp.where(sqA > 0, sqA, 1.0)))
        else:
            ts = sq - sqA
        nsig = jnp.asarray(_EXPECTED_NSIGMA, dtype=sqA.dtype)
        clsb_e = norm.cdf(-(nsig + sqA))
        clsb, clb = norm.cdf(-(ts + sqA)), norm.cdf(-ts)
        return dict(q=q, qA=qA, clsb=clsb, clb=clb, cls=clsb / clb, clsb_exp=clsb_e, cls_exp=clsb_e / norm.cdf(-nsig))

    return jax.vmap(one)(mus, r2.fun[:n], r2.fun[n:])

