"""The per-model fitting engine: jitted, vmapped solver kernels, option handling, model cache."""

from __future__ import annotations

import hashlib
import json
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import ParameterError

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
    from ... import priors as _priors

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

        from ... import histfactory as hf
        from .._optimize import make_solver

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



def _check_test_stat(test_stat: str, allowed: Sequence[str] = TEST_STATS) -> None:
    if test_stat not in allowed:
        raise ParameterError(f"unknown test_stat {test_stat!r}; choose one of {tuple(allowed)}")

