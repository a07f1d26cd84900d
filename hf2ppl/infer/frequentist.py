r"""Frequentist inference on the compiled graph (``constraints="aux"``): fits, profiles,
test statistics, asymptotic and toy CLs, upper limits, significances, pulls and impacts.

Everything numerical is pure JAX: one bounded Newton minimiser
(:mod:`hf2ppl.infer._optimize`) with exact Hessians, jit-compiled once per model and
``vmap``-ed over POI values, datasets (toys) and nominal yields. Results follow
``pyhf.infer`` (0.7) conventions: the same fits, the same test statistics, the same
return structures. See ``docs/frequentist.md`` for the formulas.

The objective is :math:`\mathrm{NLL}(\theta) = -\ln L(\theta)` of pyhf's ``Model.logpdf``
(Poisson main terms + auxiliary constraint terms), i.e. ``-model.logdensity_flat``.
A model compiled with ``constraints="prior"`` (or for the PyMC target) is recompiled
from its spec with ``constraints="aux"`` (once, cached): frequentist answers always
use pyhf's likelihood. Workspaces (path, dict, ...) are accepted too and compiled.

Example:
    >>> import hf2ppl
    >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", constraints="aux")  # doctest: +SKIP
    >>> hf2ppl.hypotest(m, 1.0, return_expected_set=True)  # doctest: +SKIP
    (array(0.3...), [array(...), ...])
"""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FitError, ParameterError

__all__ = [
    "FitResult",
    "ProfileResult",
    "SignificanceResult",
    "PullsResult",
    "ImpactsResult",
    "FitWarning",
    "fit",
    "profile",
    "test_statistic",
    "asimov_data",
    "hypotest",
    "upper_limit",
    "significance",
    "pulls",
    "impacts",
    "hypotest_fn",
    "significance_fn",
]

TEST_STATS = ("qtilde", "q", "q0", "tmu", "tmu_tilde")
#: above this many parameters the iterations use a Gauss-Newton model matrix instead of the exact Hessian
_GN_MIN_PARS = 40
_EXPECTED_NSIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)
_TOY_PERCENTILES = (2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681)


class FitWarning(UserWarning):
    """A fit stopped before meeting its convergence criterion (results are returned, flagged)."""


# ====================================================================== model handling
_ENGINES: OrderedDict[Any, _Engine] = OrderedDict()
_AUX_MODELS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_MAX_ENGINES = 64


def _aux_model(model: Any):
    """The ``constraints="aux"`` NumPyro model for ``model`` (compiled model or workspace)."""
    import hf2ppl
    from hf2ppl.compiled import CompiledModel

    if isinstance(model, CompiledModel):
        if model.target == "numpyro" and model.constraints == "aux":
            return model
        if model not in _AUX_MODELS:
            _AUX_MODELS[model] = hf2ppl.compile(model.spec, target="numpyro", constraints="aux", dtype=model.dtype)
        return _AUX_MODELS[model]
    return hf2ppl.compile(model, target="numpyro", constraints="aux")


def _engine_key(m) -> Any:
    """Models with the same content share their compiled kernels (a workspace compiled twice, a path...)."""
    from .. import priors as _priors

    if any(not isinstance(v, _priors.Flat) for v in m.priors.values()):
        return ("id", id(m))
    sp = m.spec
    try:
        content = json.dumps([sp.workspace, sp.measurement_index, sp.modifier_settings], sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - specs are plain JSON
        return ("id", id(m))
    return (hashlib.sha1(content.encode()).hexdigest(), m.dtype, m.ir.poi_name, m.ir.npars)


def _engine(model: Any) -> _Engine:
    m = _aux_model(model)
    key = _engine_key(m)
    eng = _ENGINES.get(key)
    if eng is None or (key[0] == "id" and eng.m is not m):
        eng = _ENGINES[key] = _Engine(m)
        while len(_ENGINES) > _MAX_ENGINES:
            _ENGINES.popitem(last=False)
    else:
        _ENGINES.move_to_end(key)
    return eng


class _Engine:
    """Jitted fitting kernels of one compiled model (built once, cached per model)."""

    def __init__(self, m):
        import jax
        import jax.numpy as jnp

        from .. import histfactory as hf
        from ._optimize import make_solver

        self.m = m
        ir = m.ir
        self.P, self.B, self.A = ir.npars, ir.nbins, int(ir.auxdata.shape[0])
        self.dtype = m.dtype
        self.poi = ir.poi_index
        self.nominal = jnp.asarray(ir.nominal, dtype=m.dtype)
        self.init = np.asarray(m.suggested_init(), float)
        self.bounds = np.asarray(m.suggested_bounds(), float)
        self.fixed = np.asarray(m.suggested_fixed(), bool)
        T, xp, B = m._T, m._xp, self.B
        plan = m._prior_plan

        def nll(x, data, nominal):
            lp = hf.logpdf(xp, T, x, data[:B], data[B:], nominal=nominal)
            return -(lp + plan.logpdf(xp, x, m.dtype))

        self.nll = nll
        # bytes of one problem's derivative intermediates ~ min(P, B) tangents x modifier slots x samples x bins
        slots = sum(int(np.prod(getattr(ir, k).shape)) for k in ("factor_idx", "normsys_idx", "histosys_idx")) + ir.nominal.size
        per_problem = 8.0 * min(self.P, self.B) * slots
        self.max_batch = max(2, 1 << int(np.log2(max(2.0, 2e9 / per_problem))))
        curvature = None
        if self.P > _GN_MIN_PARS and not plan.groups:
            ir_ = ir
            nidx, nsig2 = ir_.normal_idx, jnp.asarray(ir_.normal_sigma, dtype=m.dtype) ** 2
            pidx, ppos = ir_.poisson_idx, ir_.poisson_auxpos

            jac = jax.jacrev if B < self.P else jax.jacfwd  # fewer passes: min(bins, parameters)

            def curvature(x, data, nominal):
                """Gauss-Newton matrix J^T diag(w) J + constraint Hessian (w = n/λ², floored at 0.1/λ)."""
                lam = hf.expected_main(xp, T, x, nominal)
                J = jac(lambda y: hf.expected_main(xp, T, y, nominal))(x)
                n = data[:B]
                w = jnp.maximum(n / lam**2, 0.1 / lam)
                Hm = (J * w[:, None]).T @ J
                diag = jnp.zeros_like(x)
                if nidx.shape[0]:
                    diag = diag.at[nidx].add(1.0 / nsig2)
                if pidx.shape[0]:
                    a = data[B:][ppos]
                    diag = diag.at[pidx].add(a / x[pidx] ** 2)
                return Hm + jnp.diag(diag)

        self.solve = make_solver(nll, curvature=curvature)
        # kernels that need no covariance skip the final exact Hessian (only differs for Gauss-Newton models)
        self._solve_noh = self.solve if curvature is None else make_solver(nll, curvature=curvature, with_hessian=False)
        normal_idx, normal_pos = ir.normal_idx, ir.normal_auxpos
        poisson_idx, poisson_pos = ir.poisson_idx, ir.poisson_auxpos
        pfactor = jnp.asarray(ir.poisson_factor, dtype=m.dtype)

        def expected_full(x, nominal):
            main = hf.expected_main(xp, T, x, nominal)
            if not self.A:
                return main
            aux = jnp.zeros((self.A,), dtype=x.dtype)
            if normal_idx.shape[0]:
                aux = aux.at[normal_pos].set(x[normal_idx])
            if poisson_idx.shape[0]:
                aux = aux.at[poisson_pos].set(x[poisson_idx] * pfactor)
            return jnp.concatenate([main, aux])

        self.expected_full = expected_full
        self._expected_j = jax.jit(expected_full)
        # ONE batched kernel for every fit: start point, fixed mask and data batched; bounds and nominal shared.
        # Batches are padded to a few bucket sizes so that a model compiles it only a handful of times.
        self._batch_j = jax.jit(jax.vmap(self.solve, in_axes=(0, None, None, 0, 0, None)))
        self._batch_noh_j = jax.jit(jax.vmap(self._solve_noh, in_axes=(0, None, None, 0, 0, None)))
        self._nll_j = jax.jit(nll)

    # ------------------------------------------------------------ batched fits (numpy in, numpy out)
    @staticmethod
    def bucket(n: int) -> int:
        if n <= 2:
            return 2
        if n <= 4:
            return 4
        if n <= 16:
            return 16
        return 1 << (n - 1).bit_length()

    def solve_many(self, X0: np.ndarray, lo: np.ndarray, hi: np.ndarray, F: np.ndarray, D: np.ndarray, hessian: bool = False) -> dict:
        """Fit ``n`` problems (rows of X0, F, D) in one vmapped call; returns numpy arrays with leading axis n."""
        X0 = np.atleast_2d(np.asarray(X0, float))
        n = X0.shape[0]
        F = np.broadcast_to(np.asarray(F, float), (n, self.P))
        D = np.broadcast_to(np.asarray(D, float), (n, self.B + self.A))
        if n > self.max_batch:  # keep the memory of forward-mode derivatives bounded on big models
            parts = [self.solve_many(X0[i:i + self.max_batch], lo, hi, F[i:i + self.max_batch], D[i:i + self.max_batch], hessian)
                     for i in range(0, n, self.max_batch)]
            out = {k: np.concatenate([p[k] for p in parts]) for k in ("x", "fun", "grad_norm", "niter", "converged")}
            out["hessian"] = None if parts[0]["hessian"] is None else np.concatenate([np.asarray(p["hessian"]) for p in parts])
            return out
        size = self.bucket(n)
        if size > n:
            pad = [0] * (size - n)
            X0 = np.concatenate([X0, X0[pad]])
            F = np.concatenate([F, F[pad]])
            D = np.concatenate([D, D[pad]])
        r = (self._batch_j if hessian else self._batch_noh_j)(*_jnp(X0, lo, hi, F, D), self.nominal)
        out = {k: np.asarray(getattr(r, k))[:n] for k in ("x", "fun", "grad_norm", "niter", "converged")}
        out["hessian"] = r.hessian
        return out

    def expected(self, x: np.ndarray) -> np.ndarray:
        """Expected data (main + aux, pyhf layout) at flat parameters ``x``."""
        return np.asarray(self._expected_j(_jnp(x)[0], self.nominal))

    @staticmethod
    def tstat_np(mu, fixed_fun, free_fun, muhat, test_stat: str) -> np.ndarray:
        t = np.clip(2.0 * (np.asarray(fixed_fun) - np.asarray(free_fun)), 0.0, None)
        if test_stat in ("q", "qtilde"):
            return np.where(muhat > mu, 0.0, t)
        if test_stat == "q0":
            return np.where(muhat < 0.0, 0.0, t)
        return t

    def prepare(self, d: np.ndarray, opts: tuple, test_stat: str) -> dict:
        """The μ-independent fits: free fit to data, the Asimov data (fixed-POI fit at μ=0, or 1 for q0),
        and the free fit to the Asimov data."""
        x0, lo, hi, fx = opts
        poi = self.poi
        xa, fa = x0.copy(), fx.astype(float)
        xa[poi], fa[poi] = (1.0 if test_stat == "q0" else 0.0), 1.0
        r1 = self.solve_many(np.stack([x0, xa]), lo, hi, np.stack([fx.astype(float), fa]), d)
        xa = r1["x"][1]
        asimov = self.expected(xa)
        # the unconditional fit to the Asimov data is known exactly: every likelihood term (main Poisson, Normal
        # and Poisson constraints) is maximal at the parameters that generated it (pyhf fits it numerically)
        freeA_fun = float(self._nll_j(*_jnp(xa, asimov), self.nominal))
        return dict(free_fun=r1["fun"][0], free_x=r1["x"][0], asimov=asimov, asimov_pars=xa,
                    freeA_fun=freeA_fun, freeA_x=xa, converged=bool(np.all(r1["converged"])))

    def at_mu(self, mus: np.ndarray, prep: dict, d: np.ndarray, opts: tuple, test_stat: str) -> dict:
        """Asymptotic p-values at each μ (two fixed-POI fits per μ, all in one vmapped call)."""
        from scipy.stats import norm

        x0, lo, hi, fx = opts
        poi = self.poi
        mus = np.asarray(mus, float)
        n = mus.size
        # warm start: the unconditional best fits (to data / to Asimov) with the POI moved to mu
        X = np.concatenate([np.repeat(prep["free_x"][None], n, axis=0), np.repeat(prep["freeA_x"][None], n, axis=0)])
        X[:, poi] = np.concatenate([mus, mus])
        F = np.repeat(fx.astype(float)[None], 2 * n, axis=0)
        F[:, poi] = 1.0
        D = np.concatenate([np.repeat(d[None], n, axis=0), np.repeat(prep["asimov"][None], n, axis=0)])
        r = self.solve_many(X, lo, hi, F, D)
        q = self.tstat_np(mus, r["fun"][:n], prep["free_fun"], prep["free_x"][poi], test_stat)
        qA = self.tstat_np(mus, r["fun"][n:], prep["freeA_fun"], prep["freeA_x"][poi], test_stat)
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
                        converged=r["converged"][:n] & r["converged"][n:] & prep["converged"])

    # ------------------------------------------------------------ pure JAX (differentiable) version
    def asymptotics(self, mus, data, nominal, x0, lo, hi, fixed, test_stat="qtilde"):
        """Pure, jit-able and differentiable (implicit VJP of every fit) asymptotic CLs at each μ."""
        import jax
        import jax.numpy as jnp
        from jax.scipy.stats import norm

        poi = self.poi
        n = mus.shape[0]
        fpoi = fixed.at[poi].set(1.0)
        batch = jax.vmap(self._solve_noh, in_axes=(0, None, None, 0, 0, None))
        # stage 1: free fit to data and the Asimov-generating fit (two problems, one vmapped solve)
        x_as = x0.at[poi].set(1.0 if test_stat == "q0" else 0.0)
        r1 = batch(jnp.stack([x0, x_as]), lo, hi, jnp.stack([fixed, fpoi]), jnp.stack([data, data]), nominal)
        asimov = self.expected_full(r1.x[1], nominal)
        # stage 2: fixed-POI fits to data and to Asimov at every mu (one vmapped solve), warm-started from the
        # unconditional fits (the solution does not depend on the start); the unconditional Asimov fit is exact
        xm = jnp.tile(r1.x[0], (n, 1)).at[:, poi].set(mus)
        xa = jnp.tile(r1.x[1], (n, 1)).at[:, poi].set(mus)
        X = jnp.concatenate([xm, xa])
        Fm = jnp.tile(fpoi, (2 * n, 1))
        D = jnp.concatenate([jnp.tile(data, (n, 1)), jnp.tile(asimov, (n, 1))])
        r2 = batch(X, lo, hi, Fm, D, nominal)
        free_fun, muhat = r1.fun[0], r1.x[0, poi]
        freeA_fun, muhatA = self.nll(r1.x[1], asimov, nominal), r1.x[1, poi]

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

    # ------------------------------------------------------------ argument handling
    def data(self, data: Any) -> np.ndarray:
        """Full data vector (main + aux, pyhf layout) from None / main only / full."""
        if data is None:
            return np.asarray(self.m.observed_data(), float)
        if isinstance(data, Mapping):
            main, _ = self.m._split_data(data)
            return np.concatenate([np.asarray(main, float), self.m.ir.auxdata])
        d = np.asarray(data, dtype=float)
        if d.ndim != 1:
            raise ParameterError(f"data must be a 1-d vector, got shape {d.shape}")
        if d.shape[0] == self.B + self.A:
            return d
        if d.shape[0] == self.B:
            return np.concatenate([d, self.m.ir.auxdata])
        raise ParameterError(f"data has {d.shape[0]} entries; expected {self.B} (main) or {self.B + self.A} (main + auxdata, pyhf layout)")

    def index_of(self, name: str) -> list[int]:
        """Flat indices of a parameter: a set name (all components) or a flat name ``"set[i]"``."""
        pmap = self.m.ir.par_map
        if name in pmap:
            p = pmap[name]
            return list(range(p.start, p.start + p.size))
        names = self.m.par_names
        if name in names:
            return [names.index(name)]
        raise ParameterError(f"unknown parameter {name!r}; known: {list(pmap)[:20]}")

    def setup(self, init: Any = None, bounds: Any = None, fixed: Any = None, poi_fixed_ok: bool = True):
        """(x0, lo, hi, fixed mask) as numpy arrays from the user's options."""
        x0 = self.init.copy()
        if init is not None:
            if isinstance(init, Mapping):
                for k, v in init.items():
                    idx = self.index_of(k)
                    x0[idx] = np.broadcast_to(np.asarray(v, float), (len(idx),))
            else:
                a = np.asarray(init, float)
                if a.shape != (self.P,):
                    raise ParameterError(f"init must have {self.P} entries (par_names order), got shape {a.shape}")
                x0 = a.copy()
        b = self.bounds.copy()
        if bounds is not None:
            if isinstance(bounds, Mapping):
                for k, v in bounds.items():
                    idx = self.index_of(k)
                    b[idx] = np.asarray(v, float)
            else:
                a = np.asarray(bounds, float)
                if a.shape != (self.P, 2):
                    raise ParameterError(f"bounds must have shape ({self.P}, 2), got {a.shape}")
                b = a.copy()
        fx = self.fixed.copy()
        if fixed is not None:
            if isinstance(fixed, Mapping):
                for k, v in fixed.items():
                    idx = self.index_of(k)
                    fx[idx] = True
                    if v is not None:
                        x0[idx] = np.broadcast_to(np.asarray(v, float), (len(idx),))
            elif isinstance(fixed, str):
                fx[self.index_of(fixed)] = True
            else:
                a = np.asarray(fixed)
                if a.dtype == bool:
                    if a.shape != (self.P,):
                        raise ParameterError(f"a fixed mask must have {self.P} entries, got shape {a.shape}")
                    fx = a.copy()
                else:
                    for k in fixed:
                        fx[self.index_of(str(k))] = True
        if np.any(b[:, 0] > b[:, 1]):
            raise ParameterError("bounds: lower bound above upper bound for " + ", ".join(np.asarray(self.m.par_names)[b[:, 0] > b[:, 1]][:5]))
        bad = (~fx) & ((x0 < b[:, 0]) | (x0 > b[:, 1]))
        if np.any(bad):
            names = ", ".join(np.asarray(self.m.par_names)[bad][:5])
            raise ParameterError(f"init outside the bounds for {names}; adjust init or bounds")
        return x0, b[:, 0].copy(), b[:, 1].copy(), fx

    def need_poi(self, what: str, free: bool = True) -> int:
        if self.poi is None:
            raise ParameterError(f"{what} needs a parameter of interest, but the model has none; set measurements[].config.poi in the workspace")
        if free and self.fixed[self.poi]:
            raise ParameterError(f"{what}: the POI {self.m.poi_name!r} is fixed in the measurement config, which makes profile-likelihood "
                                 "inference impossible (as pyhf); unfix it in measurements[].config.parameters")
        return self.poi


def _jnp(*arrays):
    import jax.numpy as jnp

    return tuple(jnp.asarray(a, dtype=float) for a in arrays)


def _check(converged: Any, what: str) -> bool:
    ok = bool(np.all(np.asarray(converged)))
    if not ok:
        warnings.warn(f"{what}: a fit did not converge (projected gradient above tolerance); results may be imprecise", FitWarning, stacklevel=3)
    return ok


# ====================================================================== fit
@dataclass
class FitResult:
    """Result of :func:`fit`.

    Attributes:
        bestfit: ``{flat parameter name: value}`` at the minimum.
        uncertainties: ``{flat parameter name: sqrt(diag(covariance))}`` (0 for fixed parameters).
        x: the best-fit flat vector (``par_names`` order).
        nll: :math:`-\\ln L` at the minimum (``twice_nll = 2 * nll`` is pyhf's fitted value).
        covariance, correlation: (P, P) from the inverse Hessian on the free parameters (0 rows for fixed).
        converged: True when the projected gradient met the tolerance; niter, grad_norm for diagnosis.
    """

    par_names: list[str]
    x: np.ndarray
    nll: float
    covariance: np.ndarray
    correlation: np.ndarray
    converged: bool
    niter: int
    grad_norm: float
    fixed: np.ndarray
    hessian: np.ndarray = field(repr=False)

    @property
    def bestfit(self) -> dict[str, float]:
        return dict(zip(self.par_names, map(float, self.x)))

    @property
    def errors(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    @property
    def uncertainties(self) -> dict[str, float]:
        return dict(zip(self.par_names, map(float, self.errors)))

    @property
    def twice_nll(self) -> float:
        return 2.0 * self.nll


def _covariance(H: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = H.shape[0]
    free = np.flatnonzero(~fixed)
    cov = np.zeros((P, P))
    if free.size:
        Hf = H[np.ix_(free, free)]
        try:
            C = np.linalg.inv(Hf)
        except np.linalg.LinAlgError:
            C = np.linalg.pinv(Hf)
        if not np.all(np.isfinite(C)):
            C = np.linalg.pinv(Hf)
        cov[np.ix_(free, free)] = C
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(sd, sd) > 0, cov / np.outer(sd, sd), 0.0)
    np.fill_diagonal(corr, np.where(sd > 0, 1.0, 0.0))
    return cov, corr


def fit(model: Any, data: Any = None, *, fixed: Any = None, init: Any = None, bounds: Any = None) -> FitResult:
    """Maximum-likelihood fit (pyhf's ``pyhf.infer.mle.fit``), bounded, with exact-Hessian uncertainties.

    Args:
        model: a compiled model (any constraints mode/target; recompiled with ``constraints="aux"``) or a workspace.
        data: None (observed), main counts ``(B,)`` or main + auxdata ``(B+A,)`` in pyhf's layout.
        fixed: parameters to hold constant: ``{name: value or None}`` (None keeps the start value), a list of
            names, or a boolean mask over ``par_names``; names are parameter sets or flat names ``"set[i]"``.
            Parameters fixed in the workspace stay fixed.
        init: start values: ``{name: value}`` or a flat vector (default: the model's suggested init).
        bounds: ``{name: (lo, hi)}`` or a ``(P, 2)`` array (default: the model's suggested bounds).

    Returns:
        :class:`FitResult`. A fit that ends at a non-finite NLL raises :class:`~hf2ppl.errors.FitError`;
        one that stops early is returned with ``converged=False`` and a :class:`FitWarning`.

    Example:
        >>> r = hf2ppl.fit(m)  # doctest: +SKIP
        >>> r.bestfit["mu"], r.uncertainties["mu"]  # doctest: +SKIP
    """
    eng = _engine(model)
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    r = eng.solve_many(x0[None], lo, hi, fx.astype(float)[None], d, hessian=True)
    return _fit_result(eng, r, 0, fx)


def _fit_result(eng: _Engine, r: dict, i: int, fx: np.ndarray) -> FitResult:
    x = r["x"][i]
    nll = float(r["fun"][i])
    if not np.isfinite(nll) or not np.all(np.isfinite(x)):
        raise FitError(f"fit ended at a non-finite NLL ({nll}); check the data and the start point")
    H = np.asarray(r["hessian"][i])
    cov, corr = _covariance(H, fx)
    ok = _check(r["converged"][i], "fit")
    return FitResult(list(eng.m.par_names), x, nll, cov, corr, ok, int(r["niter"][i]), float(r["grad_norm"][i]), fx, H)


# ====================================================================== profile
@dataclass
class ProfileResult:
    """Result of :func:`profile`.

    Attributes:
        poi_values: the scanned POI values, shape (n,).
        delta_twice_nll: :math:`-2\\Delta\\ln L = 2(\\mathrm{NLL}(\\mu, \\hat{\\hat\\theta}) - \\mathrm{NLL}(\\hat\\mu, \\hat\\theta))`, shape (n,).
        nll: the NLL of each fixed-POI fit, shape (n,).
        bestfit: best-fit flat parameters at each point (n, P); nuisances profiled.
        global_fit: the unconditional :class:`FitResult`.
        converged: per point.
    """

    poi_values: np.ndarray
    delta_twice_nll: np.ndarray
    nll: np.ndarray
    bestfit: np.ndarray
    global_fit: FitResult
    converged: np.ndarray
    par_names: list[str]

    def bestfit_dict(self, i: int) -> dict[str, float]:
        return dict(zip(self.par_names, map(float, self.bestfit[i])))


def profile(model: Any, poi_values: Sequence[float] | np.ndarray, data: Any = None, *, fixed: Any = None, init: Any = None, bounds: Any = None) -> ProfileResult:
    """Profile-likelihood scan of the POI: the global fit, then all fixed-POI fits in ONE jitted, vmapped call.

    Example:
        >>> s = hf2ppl.profile(m, np.linspace(0, 3, 50))  # doctest: +SKIP
        >>> s.delta_twice_nll.min()  # ~0 near the best fit  # doctest: +SKIP
    """
    eng = _engine(model)
    poi = eng.need_poi("profile")
    mus = np.atleast_1d(np.asarray(poi_values, float))
    if mus.ndim != 1:
        raise ParameterError(f"poi_values must be a 1-d sequence, got shape {mus.shape}")
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    n = mus.size
    g = _fit_result(eng, eng.solve_many(x0[None], lo, hi, fx.astype(float)[None], d, hessian=True), 0, fx)
    X0 = np.repeat(g.x[None], n, axis=0)  # warm start from the global fit (same minimum, fewer iterations)
    X0[:, poi] = mus
    F = np.repeat(fx[None].astype(float), n, axis=0)
    F[:, poi] = 1.0
    r = eng.solve_many(X0, lo, hi, F, d)  # every grid point in ONE vmapped call
    nll = r["fun"]
    ok = r["converged"]
    _check(ok, "profile")
    return ProfileResult(mus, 2.0 * (nll - g.nll), nll, r["x"], g, ok, list(eng.m.par_names))


# ====================================================================== test statistics
def test_statistic(model: Any, poi_value: float, data: Any = None, *, test_stat: str = "qtilde", init: Any = None, bounds: Any = None, fixed: Any = None) -> np.ndarray:
    r"""A profile-likelihood test statistic, as ``pyhf.infer.test_statistics``.

    ``"tmu"``/``"tmu_tilde"``: :math:`t_\mu = -2\ln\lambda(\mu)` (clipped at 0; the tilde variant is the same
    formula with the POI bounded at 0, as in pyhf); ``"q"``/``"qtilde"``: :math:`q_\mu = t_\mu` if
    :math:`\hat\mu \le \mu` else 0; ``"q0"``: :math:`q_0 = t_0` if :math:`\hat\mu \ge 0` else 0.

    Example:
        >>> hf2ppl.infer.frequentist.test_statistic(m, 1.0, test_stat="qtilde")  # doctest: +SKIP
    """
    _check_test_stat(test_stat)
    eng = _engine(model)
    poi = eng.need_poi("test_statistic")
    mu = 0.0 if test_stat == "q0" else float(poi_value)
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    xm, fm = x0.copy(), fx.astype(float)
    xm[poi], fm[poi] = mu, 1.0
    r = eng.solve_many(np.stack([x0, xm]), lo, hi, np.stack([fx.astype(float), fm]), d)
    _check(r["converged"], "test_statistic")
    return np.asarray(eng.tstat_np(mu, r["fun"][1], r["fun"][0], r["x"][0][poi], test_stat))


def asimov_data(model: Any, poi_value: float, data: Any = None, *, return_fitted_pars: bool = False, init: Any = None, bounds: Any = None, fixed: Any = None):
    """The Asimov dataset at ``poi_value`` (pyhf's ``generate_asimov_data``): expected main + aux data at the
    fixed-POI fit to ``data`` (nuisances profiled on the observed data).

    Example:
        >>> a = hf2ppl.infer.frequentist.asimov_data(m, 0.0)  # doctest: +SKIP
    """
    eng = _engine(model)
    poi = eng.need_poi("asimov_data", free=False)
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    x0[poi] = poi_value
    fm = fx.astype(float)
    fm[poi] = 1.0
    r = eng.solve_many(x0[None], lo, hi, fm[None], eng.data(data))
    _check(r["converged"], "asimov_data")
    a = eng.expected(r["x"][0])
    return (a, r["x"][0]) if return_fitted_pars else a


def _check_test_stat(test_stat: str, allowed: Sequence[str] = TEST_STATS) -> None:
    if test_stat not in allowed:
        raise ParameterError(f"unknown test_stat {test_stat!r}; choose one of {tuple(allowed)}")


# ====================================================================== hypotest
def _asymptotic_results(eng: _Engine, mus: np.ndarray, d: np.ndarray, opts: tuple, test_stat: str) -> dict:
    prep = eng.prepare(d, opts, test_stat)
    return eng.at_mu(mus, prep, d, opts, test_stat)


def _toy_results(eng: _Engine, mu: float, d: np.ndarray, opts: tuple, test_stat: str, ntoys: int, seed: int) -> dict:
    x0, lo, hi, fx = opts
    poi = eng.poi
    f0 = fx.astype(float)
    fm = f0.copy()
    fm[poi] = 1.0
    xs, xb = x0.copy(), x0.copy()
    xs[poi], xb[poi] = mu, (1.0 if test_stat == "q0" else 0.0)
    # observed: free fit and fixed-POI fit; the toy-generating fits at mu and at the background hypothesis
    r0 = eng.solve_many(np.stack([x0, xs, xb]), lo, hi, np.stack([f0, fm, fm]), d)
    t_obs = float(eng.tstat_np(mu, r0["fun"][1], r0["fun"][0], r0["x"][0][poi], test_stat))
    rng = np.random.default_rng(seed)
    toys = np.concatenate([_sample_toys(eng, rng, r0["x"][1], ntoys), _sample_toys(eng, rng, r0["x"][2], ntoys)])
    n = toys.shape[0]
    X = np.concatenate([np.repeat(x0[None], n, axis=0), np.repeat(xs[None], n, axis=0)])
    F = np.concatenate([np.repeat(f0[None], n, axis=0), np.repeat(fm[None], n, axis=0)])
    r = eng.solve_many(X, lo, hi, F, np.concatenate([toys, toys]))  # every toy fit in one vmapped call
    ts = eng.tstat_np(mu, r["fun"][n:], r["fun"][:n], r["x"][:n, poi], test_stat)
    ts_s, ts_b = ts[:ntoys], ts[ntoys:]

    def pv(samples_sorted, value):
        k = samples_sorted.shape[0]
        return (k - np.searchsorted(samples_sorted, value, side="left")) / k

    ss, sb = np.sort(ts_s), np.sort(ts_b)
    clsb, clb = pv(ss, t_obs), pv(sb, t_obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        pe_sb = pv(ss, ts_b)
        pe_b = pv(sb, ts_b)
        pe_s = pe_sb / pe_b
        band = np.percentile(np.stack([pe_sb, pe_b, pe_s], axis=1), _TOY_PERCENTILES, axis=0)  # (5, 3)
        cls = clsb / clb
    conv = bool(np.all(r["converged"]) and np.all(r0["converged"]))
    return dict(
        ts=np.asarray([t_obs]), clsb=np.asarray([clsb]), clb=np.asarray([clb]), cls=np.asarray([cls]),
        clsb_exp=band[None, :, 0], clb_exp=band[None, :, 1], cls_exp=band[None, :, 2], converged=np.asarray([conv]),
        toys_sb=ts_s, toys_b=ts_b,
    )


def _sample_toys(eng: _Engine, rng: np.random.Generator, x: np.ndarray, ntoys: int) -> np.ndarray:
    """Toy datasets (main + aux, pyhf layout) drawn at parameters ``x``: Poisson main counts,
    Normal aux for normal constraints, Poisson aux for Poisson constraints (as pyhf's ``make_pdf(...).sample``)."""
    ir = eng.m.ir
    lam = eng.expected(x)
    main = rng.poisson(lam[: eng.B], size=(ntoys, eng.B)).astype(float)
    if not eng.A:
        return main
    aux = np.zeros((ntoys, eng.A))
    if ir.normal_idx.shape[0]:
        aux[:, ir.normal_auxpos] = x[ir.normal_idx] + ir.normal_sigma * rng.standard_normal((ntoys, ir.normal_idx.shape[0]))
    if ir.poisson_idx.shape[0]:
        rate = lam[eng.B:][ir.poisson_auxpos]
        aux[:, ir.poisson_auxpos] = rng.poisson(rate, size=(ntoys, rate.shape[0]))
    return np.concatenate([main, aux], axis=1)


def hypotest(
    model: Any,
    poi_value: float | Sequence[float],
    data: Any = None,
    *,
    test_stat: str = "qtilde",
    calctype: str = "asymptotics",
    return_tail_probs: bool = False,
    return_expected: bool = False,
    return_expected_set: bool = False,
    init: Any = None,
    bounds: Any = None,
    fixed: Any = None,
    ntoys: int = 2000,
    seed: int = 0,
):
    r"""CLs hypothesis test at ``poi_value``, with the return structure and semantics of ``pyhf.infer.hypotest``.

    Returns ``CLs_obs`` (``CLs+b`` obs, i.e. the discovery p-value, for ``test_stat="q0"``), then, as requested,
    ``[CLs+b, CLb]`` (``[CLb]`` for q0) when ``return_tail_probs``, ``CLs_exp`` (median) when ``return_expected``,
    and the 5-value expected band ``[+2σ, +1σ, 0, -1σ, -2σ]`` (pyhf's ordering) when ``return_expected_set``;
    a tuple when more than one is returned. Values are 0-d numpy arrays; with a sequence of POI values
    (asymptotics only) every value gets a leading axis and the whole grid is one vmapped call.

    ``calctype="asymptotics"``: Wald approximation with the Asimov dataset at μ=0 (μ=1 for q0), as pyhf's
    ``AsymptoticCalculator`` (``calc_base_dist="normal"``). ``calctype="toys"``: ``ntoys`` toys per hypothesis
    drawn from the fixed-POI fits (at ``poi_value`` and at 0, or 1 for q0; numpy RNG seeded by ``seed``) and
    fitted in one vmapped batch,
    as pyhf's ``ToyCalculator`` (empirical tail fractions; expected band from percentiles).

    Example:
        >>> cls_obs, band = hf2ppl.hypotest(m, 1.0, return_expected_set=True)  # doctest: +SKIP
    """
    _check_test_stat(test_stat, ("qtilde", "q", "q0"))
    if calctype not in ("asymptotics", "toys"):
        raise ParameterError(f"calctype must be 'asymptotics' or 'toys', got {calctype!r}")
    eng = _engine(model)
    eng.need_poi("hypotest")
    opts = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    scalar = np.ndim(poi_value) == 0
    mus = np.atleast_1d(np.asarray(poi_value, float))
    if test_stat == "q0":
        mus = np.zeros_like(mus)
    if calctype == "asymptotics":
        r = _asymptotic_results(eng, mus, d, opts, test_stat)
    else:
        if not scalar:
            raise ParameterError("calctype='toys' takes a single poi_value")
        r = _toy_results(eng, float(mus[0]), d, opts, test_stat, int(ntoys), int(seed))
    _check(r["converged"], "hypotest")
    return _pack(r, scalar, test_stat == "q0", return_tail_probs, return_expected, return_expected_set)


def _pack(r: dict, scalar: bool, is_q0: bool, tail: bool, expected: bool, expected_set: bool):
    def sel(a):
        a = np.asarray(a, float)
        return np.asarray(a[0]) if scalar else a

    out: list[Any] = [sel(r["clsb"] if is_q0 else r["cls"])]
    if tail:
        out.append([sel(r["clb"])] if is_q0 else [sel(r["clsb"]), sel(r["clb"])])
    band_src = r["clsb_exp"] if is_q0 else r["cls_exp"]
    band = [sel(band_src[:, i]) for i in range(5)]
    if expected_set:
        if expected:
            out.append(band[2])
        out.append(band)
    elif expected:
        out.append(band[2])
    return tuple(out) if len(out) > 1 else out[0]


# ====================================================================== upper limit
def upper_limit(
    model: Any,
    data: Any = None,
    *,
    level: float = 0.05,
    scan: Sequence[float] | np.ndarray | None = None,
    test_stat: str = "qtilde",
    return_results: bool = False,
    init: Any = None,
    bounds: Any = None,
    fixed: Any = None,
    rtol: float = 1e-8,
):
    r"""Observed and expected (5-value band) upper limits on the POI at CLs = ``level`` (asymptotics).

    With ``scan=None`` the roots of :math:`\mathrm{CLs}(\mu) - \mathrm{level}` are found (as pyhf's toms748
    scan, same bracketing from the POI bounds): a coarse vmapped grid then a vectorised Illinois
    (regula falsi) iteration on all six curves at once, to ``rtol``. With a ``scan`` the CLs curves are
    evaluated in one vmapped call and interpolated linearly (``np.interp``, as pyhf's ``linear_grid_scan``).

    Returns ``(obs_limit, exp_limits)`` as pyhf: ``exp_limits[i]`` is the limit of the i-th expected CLs
    curve of :func:`hypotest`'s band (``exp_limits[2]`` the median). ``return_results`` adds ``(poi_values, cls_obs, cls_exp (n, 5))`` of every evaluation.

    Example:
        >>> obs, exp = hf2ppl.upper_limit(m)  # doctest: +SKIP
    """
    _check_test_stat(test_stat, ("qtilde", "q"))
    eng = _engine(model)
    poi = eng.need_poi("upper_limit")
    opts = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    prep = eng.prepare(d, opts, test_stat)
    seen_mu: list[np.ndarray] = []
    seen_v: list[np.ndarray] = []
    conv = [True]

    def curves(mus: np.ndarray) -> np.ndarray:
        """(n, 6) CLs values: observed then the 5 expected."""
        out = eng.at_mu(np.asarray(mus, float), prep, d, opts, test_stat)
        v = np.concatenate([np.asarray(out["cls"])[:, None], np.asarray(out["cls_exp"])], axis=1)
        conv[0] &= bool(np.all(np.asarray(out["converged"])))
        seen_mu.append(np.asarray(mus, float))
        seen_v.append(v)
        return v

    if scan is not None:
        mus = np.asarray(scan, float)
        v = curves(mus)
        limits = [float(np.interp(level, v[::-1, i], mus[::-1])) for i in range(6)]
    else:
        limits = _root_limits(curves, float(opts[1][poi]), float(opts[2][poi]), level, rtol)
    if not conv[0]:
        warnings.warn("upper_limit: a fit did not converge", FitWarning, stacklevel=2)
    obs, exp = np.asarray(limits[0]), [np.asarray(x) for x in limits[1:]]
    if return_results:
        allm = np.concatenate(seen_mu)
        allv = np.concatenate(seen_v)
        o = np.argsort(allm, kind="stable")
        return obs, exp, (allm[o], allv[o, 0], allv[o, 1:])
    return obs, exp


def _root_limits(curves, lo: float, hi: float, level: float, rtol: float, maxiter: int = 100) -> list[float]:
    """Six roots of ``curves(mu) - level``: bracket as pyhf's ``toms748_scan`` (halve the lower / double the
    upper bound until every curve is bracketed), then a vectorised Illinois (modified regula falsi)
    iteration on all six curves, one μ per call (the same small compiled batch as ``hypotest``)."""

    def ev(mus: np.ndarray) -> np.ndarray:
        mus = np.asarray(mus, float)
        return np.concatenate([curves(mus[i:i + 1]) for i in range(mus.size)]) - level

    f_lo = ev(np.array([lo]))[0]
    it = 0
    while np.any(f_lo < 0) and it < 60:
        lo = lo / 2 if lo > 0 else lo - 1e-3
        f_lo = ev(np.array([lo]))[0]
        it += 1
    f_hi = ev(np.array([hi]))[0]
    it = 0
    while np.any(f_hi > 0) and it < 60:
        hi *= 2
        f_hi = ev(np.array([hi]))[0]
        it += 1
    a, b = np.full(6, lo), np.full(6, hi)
    fa, fb = f_lo.copy(), f_hi.copy()
    side = np.zeros(6)
    for _ in range(maxiter):
        done = (np.abs(b - a) <= rtol * np.maximum(np.abs(a), np.abs(b)) + 1e-14) | (fa == 0) | (fb == 0)
        if np.all(done):
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            c = (a * fb - b * fa) / (fb - fa)
        c = np.where(np.isfinite(c) & (c > np.minimum(a, b)) & (c < np.maximum(a, b)), c, 0.5 * (a + b))
        todo = np.flatnonzero(~done)
        fc_all = ev(c[todo])
        for j, i in enumerate(todo):
            fc = fc_all[j, i]
            if fc * fb[i] < 0:
                a[i], fa[i] = b[i], fb[i]
                b[i], fb[i] = c[i], fc
                side[i] = 0
            else:
                b[i], fb[i] = c[i], fc
                if side[i] == -1:
                    fa[i] *= 0.5
                side[i] = -1
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(fb == 0, b, np.where(fa == 0, a, (a * fb - b * fa) / (fb - fa)))
    root = np.where(np.isfinite(root), root, 0.5 * (a + b))
    return [float(r) for r in root]


# ====================================================================== significance
@dataclass
class SignificanceResult:
    """Discovery test (q0): observed and expected (Asimov μ=1) p-values and significances Z = Φ⁻¹(1 - p).

    ``p_expected_set`` / ``z_expected_set``: the 5-value band (pyhf's order, median at index 2).
    """

    p_observed: float
    z_observed: float
    p_expected: float
    z_expected: float
    p_expected_set: np.ndarray
    z_expected_set: np.ndarray


def significance(model: Any, data: Any = None, *, init: Any = None, bounds: Any = None, fixed: Any = None) -> SignificanceResult:
    """Observed and expected discovery significance (pyhf ``hypotest(0, test_stat="q0", return_expected_set=True)``).

    Example:
        >>> s = hf2ppl.significance(m)  # doctest: +SKIP
        >>> s.z_observed, s.z_expected  # doctest: +SKIP
    """
    from scipy.stats import norm

    p_obs, band = hypotest(model, 0.0, data, test_stat="q0", return_expected_set=True, init=init, bounds=bounds, fixed=fixed)
    band = np.asarray(band, float)
    return SignificanceResult(float(p_obs), float(norm.isf(p_obs)), float(band[2]), float(norm.isf(band[2])), band, norm.isf(band))


# ====================================================================== differentiable functional API
def hypotest_fn(model: Any, poi_value: float, data: Any = None, *, test_stat: str = "qtilde", init: Any = None, bounds: Any = None, fixed: Any = None):
    """A pure JAX function ``f(nominal) -> (cls_obs, cls_exp[5])`` of the nominal yields ``(S, B)``.

    ``nominal`` replaces ``model.ir.nominal`` (samples in ``model.ir.samples`` order, bins of the channels
    concatenated); the fits inside are differentiated implicitly (custom VJP from the optimality
    conditions), so ``jax.grad`` / ``jax.jit`` / ``jax.vmap`` over ``nominal`` work (vmap: models differing
    only in yields).

    Example:
        >>> f = hypotest_fn(m, 1.0)  # doctest: +SKIP
        >>> i = m.ir.samples.index("signal")  # doctest: +SKIP
        >>> jax.grad(lambda s: f(jnp.asarray(m.ir.nominal).at[i].set(s))[1][2])(jnp.asarray(m.ir.nominal[i]))  # doctest: +SKIP
    """
    import jax.numpy as jnp

    _check_test_stat(test_stat, ("qtilde", "q", "q0"))
    eng = _engine(model)
    eng.need_poi("hypotest_fn")
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    x0, lo, hi, fx = _jnp(x0, lo, hi, fx.astype(float))
    d = _jnp(eng.data(data))[0]
    mus = jnp.asarray([0.0 if test_stat == "q0" else float(poi_value)])
    q0 = test_stat == "q0"

    def f(nominal):
        r = eng.asymptotics(mus, d, nominal, x0, lo, hi, fx, test_stat)
        if q0:
            return r["clsb"][0], r["clsb_exp"][0]
        return r["cls"][0], r["cls_exp"][0]

    return f


def significance_fn(model: Any, data: Any = None, *, init: Any = None, bounds: Any = None, fixed: Any = None):
    """A pure JAX function ``f(nominal) -> (Z_obs, Z_exp)`` (discovery significances, q0, Asimov μ=1),
    differentiable in the nominal yields by implicit differentiation. See :func:`hypotest_fn`.

    Example:
        >>> zf = significance_fn(m)  # doctest: +SKIP
        >>> jax.grad(lambda n: zf(n)[1])(jnp.asarray(m.ir.nominal))  # doctest: +SKIP
    """
    import jax.numpy as jnp

    eng = _engine(model)
    eng.need_poi("significance_fn")
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    x0, lo, hi, fx = _jnp(x0, lo, hi, fx.astype(float))
    d = _jnp(eng.data(data))[0]
    mus = jnp.zeros((1,))

    def f(nominal):
        r = eng.asymptotics(mus, d, nominal, x0, lo, hi, fx, "q0")
        q, qA = r["q"][0], r["qA"][0]
        return jnp.sqrt(jnp.where(q > 0, q, 1.0)) * (q > 0), jnp.sqrt(jnp.where(qA > 0, qA, 1.0)) * (qA > 0)

    return f


# ====================================================================== pulls and impacts
def _prefit_widths(eng: _Engine) -> tuple[np.ndarray, np.ndarray]:
    """(prefit centre, prefit σ) per flat parameter: aux value and σ for normal constraints,
    1 and 1/sqrt(τ) for Poisson (shapesys) constraints, (init, 0) for unconstrained ones (as cabinetry/pyhf)."""
    centre = eng.init.copy()
    width = np.zeros(eng.P)
    for p in eng.m.ir.parameters:
        sl = p.slice
        if p.constraint == "normal":
            centre[sl] = np.asarray(p.auxdata, float)
            width[sl] = np.asarray(p.sigmas, float)
        elif p.constraint == "poisson":
            centre[sl] = 1.0
            width[sl] = 1.0 / np.sqrt(np.asarray(p.factors, float))
    return centre, width


@dataclass
class PullsResult:
    """Post-fit pulls of constrained parameters: ``pull = (θ̂ - θ₀)/σ₀``, ``constraint = σ̂/σ₀``."""

    names: list[str]
    pulls: np.ndarray
    constraints: np.ndarray
    bestfit: np.ndarray
    uncertainties: np.ndarray
    prefit: np.ndarray
    prefit_width: np.ndarray


def pulls(model: Any, data: Any = None, *, fit_result: FitResult | None = None) -> PullsResult:
    """Pulls of the constrained, free parameters after the maximum-likelihood fit (cabinetry's pull plot data).

    Example:
        >>> p = hf2ppl.pulls(m)  # doctest: +SKIP
        >>> dict(zip(p.names, p.pulls))  # doctest: +SKIP
    """
    eng = _engine(model)
    r = fit_result or fit(model, data)
    c, w = _prefit_widths(eng)
    sel = np.flatnonzero((w > 0) & ~r.fixed)
    names = [eng.m.par_names[i] for i in sel]
    err = r.errors
    return PullsResult(names, (r.x[sel] - c[sel]) / w[sel], err[sel] / w[sel], r.x[sel], err[sel], c[sel], w[sel])


@dataclass
class ImpactsResult:
    """Nuisance-parameter impacts on the POI (cabinetry's ranking), sorted by decreasing max |post-fit impact|.

    ``prefit_up/down``: :math:`\\hat\\mu(\\theta_j = \\hat\\theta_j \\pm \\sigma_{0,j}) - \\hat\\mu` (0 for unconstrained);
    ``postfit_up/down``: the same with the post-fit :math:`\\hat\\sigma_j`.
    """

    names: list[str]
    bestfit: np.ndarray
    uncertainties: np.ndarray
    prefit_up: np.ndarray
    prefit_down: np.ndarray
    postfit_up: np.ndarray
    postfit_down: np.ndarray
    poi_bestfit: float
    converged: bool


def impacts(model: Any, data: Any = None, *, fit_result: FitResult | None = None) -> ImpactsResult:
    """Impacts of every free nuisance parameter on the POI: ``4 × N`` refits with one parameter fixed at
    ``θ̂ ± σ`` (pre- and post-fit σ, clipped to the bounds), all in ONE vmapped call.

    Example:
        >>> imp = hf2ppl.impacts(m)  # doctest: +SKIP
        >>> imp.names[:5], imp.postfit_up[:5]  # doctest: +SKIP
    """
    eng = _engine(model)
    poi = eng.need_poi("impacts")
    r = fit_result or fit(model, data)
    d = eng.data(data)
    x0, lo, hi, fx = eng.setup()
    fx = r.fixed
    c, w = _prefit_widths(eng)
    err = r.errors
    npar = [i for i in range(eng.P) if i != poi and not fx[i]]
    shifts = []
    for i in npar:
        for delta in (w[i], -w[i], err[i], -err[i]):
            shifts.append((i, np.clip(r.x[i] + delta, lo[i], hi[i])))
    n = len(shifts)
    mu_hat = float(r.x[poi])
    if n == 0:
        e = np.zeros(0)
        return ImpactsResult([], e, e, e, e, e, e, mu_hat, True)
    X0 = np.repeat(r.x[None], n, axis=0)
    F = np.repeat(fx[None].astype(float), n, axis=0)
    for k, (i, v) in enumerate(shifts):
        X0[k, i] = v
        F[k, i] = 1.0
    out = eng.solve_many(X0, lo, hi, F, d)
    mus = out["x"][:, poi].reshape(len(npar), 4) - mu_hat
    ok = _check(out["converged"], "impacts")
    zero = (w[npar] == 0)
    mus[zero, 0:2] = 0.0
    order = np.argsort(-np.max(np.abs(mus[:, 2:]), axis=1), kind="stable")
    idx = np.asarray(npar)[order]
    mus = mus[order]
    return ImpactsResult([eng.m.par_names[i] for i in idx], r.x[idx], err[idx], mus[:, 0], mus[:, 1], mus[:, 2], mus[:, 3], mu_hat, ok)
