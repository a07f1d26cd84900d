"""Test statistics and the asymptotic (Wald/Asimov) calculator, as pyhf's ``infer.calculators.AsymptoticCalculator``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._engine import _EXPECTED_NSIGMA, _Engine, _merge_diag, _rows


def tstat_np(mu, fixed_fun, free_fun, muhat, test_stat: str) -> np.ndarray:
    t = np.clip(2.0 * (np.asarray(fixed_fun) - np.asarray(free_fun)), 0.0, None)
    if test_stat in ("q", "qtilde"):
        return np.where(muhat > mu, 0.0, t)
    if test_stat == "q0":
        return np.where(muhat < 0.0, 0.0, t)
    return t

@dataclass
class Models:
    """``G`` fitting problems of one structure, as per-model arrays with a leading axis ``G``: data ``D``
    (main + aux), start ``X0``, bounds ``LO``/``HI``, fixed mask ``FX``, and the models' values ``V`` (a
    stacked :meth:`~hf2ppl.histfactory.Tensors.values` pytree; None: the engine's own model, e.g. one
    hypotest) with their prefit ``centre``/``width`` (for the start points)."""

    D: np.ndarray
    X0: np.ndarray
    LO: np.ndarray
    HI: np.ndarray
    FX: np.ndarray
    V: Any = None
    centre: np.ndarray | None = None
    width: np.ndarray | None = None
    #: optional warm starts (e.g. the background-only fit of a scan): then the free fits start from ``XW`` and
    #: from ``X0`` (two starts, not :meth:`_Engine.starts`' spread)
    XW: np.ndarray | None = None

    @classmethod
    def one(cls, eng: _Engine, d: np.ndarray, opts: tuple) -> Models:
        x0, lo, hi, fx = opts
        return cls(d[None], x0[None], lo[None], hi[None], fx[None], None, eng.centre[None], eng.width[None])

    @property
    def G(self) -> int:
        return self.D.shape[0]

    def rows(self, g: np.ndarray) -> Any:
        return None if self.V is None else _rows(self.V, g)


def prepare(eng: _Engine, d: np.ndarray, opts: tuple, test_stat: str, starts: int | None = None) -> dict:
    """:func:`prepare_many` for one model and dataset (every output keeps its leading axis of length 1)."""
    return prepare_many(eng, Models.one(eng, d, opts), test_stat, starts)


def prepare_many(eng: _Engine, M: Models, test_stat: str, starts: int | None = None) -> dict:
    """The μ-independent fits of each of ``M.G`` models: free fit to data, the Asimov data (fixed-POI fit at
    μ=0, or 1 for q0), and the free fit to the Asimov data. Both fits are multi-start, all models in one
    vmapped call of ``2 G x starts`` problems (with warm starts ``M.XW``: from ``XW`` and ``X0``)."""
    poi, G = eng.poi, M.G
    if M.XW is not None:
        S_free = np.stack([M.XW, M.X0], axis=1)
    else:
        S_free = np.stack([eng.starts(M.X0[g], M.LO[g], M.HI[g], M.FX[g], starts, M.centre[g], M.width[g]) for g in range(G)])
    S_as = S_free.copy()
    S_as[:, :, poi] = 1.0 if test_stat == "q0" else 0.0
    fa = M.FX.astype(float)
    fa[:, poi] = 1.0
    g2 = np.r_[np.arange(G), np.arange(G)]
    r1 = eng.solve_best(np.concatenate([S_free, S_as]), M.LO[g2], M.HI[g2], np.concatenate([M.FX.astype(float), fa]), M.D[g2], M.rows(g2),
                         hessian=None if M.V is None else False)
    return _prepare_post(eng, M, r1)


def _prepare_post(eng: _Engine, M: Models, r1: dict, asimov: np.ndarray | None = None, freeA_fun: np.ndarray | None = None) -> dict:
    """:func:`prepare_many`'s output from its fits ``r1`` (free fits, then the fixed-POI fits that make the Asimov data)."""
    G = M.G
    xa = r1["x"][G:]
    if asimov is None:
        asimov = eng.expected(xa, M.V)
    # the unconditional fit to the Asimov data is known exactly: every likelihood term (main Poisson, Normal
    # and Poisson constraints) is maximal at the parameters that generated it (pyhf fits it numerically)
    if freeA_fun is None:
        freeA_fun = eng.nll_at(xa, asimov, M.V)
    return dict(free_fun=r1["fun"][:G], free_x=r1["x"][:G], asimov=asimov, asimov_pars=xa, freeA_fun=freeA_fun, freeA_x=xa,
                converged=r1["converged"][:G] & r1["converged"][G:], fits=r1)


def at_mu(eng: _Engine, mus: np.ndarray, prep: dict, d: np.ndarray, opts: tuple, test_stat: str, warm=None) -> dict:
    """:func:`at_mu_many` for one model and dataset at each μ of ``mus``."""
    mus = np.asarray(mus, float)
    return at_mu_many(eng, Models.one(eng, d, opts), np.zeros(mus.size, int), mus, prep, test_stat, warm)


def at_mu_many(eng: _Engine, M: Models, gidx: np.ndarray, mus: np.ndarray, prep: dict, test_stat: str,
               warm: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Asymptotic p-values of model ``gidx[i]`` at ``mus[i]`` for every ``i``: the fixed-POI fits to data and
    to Asimov, each from two starts (warm: the unconditional fit with the POI moved to μ, or row ``i`` of
    ``warm = (data fits, Asimov fits)`` (n, P) where given, e.g. the fixed-POI fits at a nearby μ; cold: the
    start point, so that no basin is inherited), all in one call. ``prep``: :func:`prepare_many` of ``M``."""
    poi = eng.poi
    mus = np.asarray(mus, float)
    gidx = np.asarray(gidx, int)
    g2 = np.r_[gidx, gidx]
    if warm is None:
        warm = (prep["free_x"][gidx], prep["freeA_x"][gidx])
    X = np.stack([np.concatenate(warm), M.X0[g2]], axis=1)
    X[:, :, poi] = np.concatenate([mus, mus])[:, None]
    F = M.FX[g2].astype(float)
    F[:, poi] = 1.0
    D = np.concatenate([M.D[gidx], prep["asimov"][gidx]])
    r = eng.solve_best(X, M.LO[g2], M.HI[g2], F, D, M.rows(g2), hessian=None if M.V is None else False)
    return _pvalues(eng, M, gidx, mus, prep, test_stat, r)


def _pvalues(eng: _Engine, M: Models, gidx: np.ndarray, mus: np.ndarray, prep: dict, test_stat: str, r: dict) -> dict:
    """:func:`at_mu_many`'s output from its fixed-POI fits ``r`` (to data, then to the Asimov data)."""
    from scipy.special import ndtr  # = scipy.stats.norm.cdf, without importing scipy.stats (0.8 s on a first call)

    poi, n = eng.poi, mus.size
    q = tstat_np(mus, r["fun"][:n], prep["free_fun"][gidx], prep["free_x"][gidx, poi], test_stat)
    qA = tstat_np(mus, r["fun"][n:], prep["freeA_fun"][gidx], prep["freeA_x"][gidx, poi], test_stat)
    sq, sqA = np.sqrt(q), np.sqrt(qA)
    with np.errstate(divide="ignore", invalid="ignore"):
        if test_stat == "qtilde":
            ts = np.where(sq <= sqA, sq - sqA, (q - qA) / (2.0 * sqA))
        else:
            ts = sq - sqA
        clsb, clb = ndtr(-(ts + sqA)), ndtr(-ts)
        nsig = np.asarray(_EXPECTED_NSIGMA)
        clsb_e = ndtr(-(nsig[None, :] + sqA[:, None]))
        clb_e = np.broadcast_to(ndtr(-nsig), clsb_e.shape)
        return dict(q=q, qA=qA, ts=ts, clsb=clsb, clb=clb, cls=clsb / clb, clsb_exp=clsb_e, clb_exp=clb_e,
                    cls_exp=clsb_e / clb_e, fixed_fit=r["x"][:n], fixed_fit_asimov=r["x"][n:],
                    converged=r["converged"][:n] & r["converged"][n:] & prep["converged"][gidx],
                    diag=_merge_diag(prep["fits"], r), fits=r)


def hypotest_chains(eng: _Engine, mu: float, d: np.ndarray, opts: tuple, test_stat: str, starts: int | None = None) -> dict:
    """``at_mu(eng, [mu], prepare(eng, d, opts, test_stat, starts), d, opts, test_stat)`` as two independent chains
    of fits in two threads (:func:`~._engine.fit_threads`): the data chain (free fit, then the fixed-POI fit at μ
    warm-started from it) and the Asimov chain (the fixed-POI fit that makes the Asimov data, the Asimov data
    and its exact free NLL, then the fixed-POI fit at μ to it). The same fits, from the same starts and with
    the same kernels, as the two halves of the threaded two-problem calls (:meth:`_Engine._multi_threaded`),
    without waiting between the two calls for the slower half, and with the Asimov chain's small calls
    overlapping the data chain's fits; the results are identical."""
    from ._engine import _in_two_threads

    M = Models.one(eng, d, opts)
    poi = eng.poi
    mus = np.asarray([mu], float)
    S_free = eng.starts(M.X0[0], M.LO[0], M.HI[0], M.FX[0], starts, M.centre[0], M.width[0])[None]
    S_as = S_free.copy()
    S_as[:, :, poi] = 1.0 if test_stat == "q0" else 0.0
    fx = M.FX.astype(float)
    fa = fx.copy()
    fa[:, poi] = 1.0

    def fixed_at_mu(warm_x, data):
        X = np.stack([warm_x, M.X0], axis=1)
        X[:, :, poi] = mu
        return eng.solve_best(X, M.LO, M.HI, fa, data)

    def chain(which):
        if which == "data":
            r1 = eng.solve_best(S_free, M.LO, M.HI, fx, M.D)
            return r1, fixed_at_mu(r1["x"], M.D), None, None
        r1 = eng.solve_best(S_as, M.LO, M.HI, fa, M.D)
        xa = r1["x"]
        asimov = eng.expected(xa)
        freeA_fun = eng.nll_at(xa, asimov)
        return r1, fixed_at_mu(xa, asimov), asimov, freeA_fun

    (rd1, rd2, _, _), (ra1, ra2, asimov, freeA_fun) = _in_two_threads(chain, ["data", "asimov"])
    prep = _prepare_post(eng, M, _cat_best(rd1, ra1), asimov, freeA_fun)
    return _pvalues(eng, M, np.zeros(1, int), mus, prep, test_stat, _cat_best(rd2, ra2))


def _cat_best(a: dict, b: dict) -> dict:
    """Two :meth:`_Engine.solve_best` outputs as one (rows of ``a``, then of ``b``)."""
    out = {}
    for k, v in a.items():
        if v is None or isinstance(v, (int, np.integer)):
            out[k] = v
        elif isinstance(v, list):
            out[k] = v + b[k]
        else:
            out[k] = np.concatenate([v, b[k]])
    return out


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

