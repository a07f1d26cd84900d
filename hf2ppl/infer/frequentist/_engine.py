"""The per-model fitting engine: jitted, vmapped solver kernels, option handling, model cache."""

from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import ParameterError

TEST_STATS = ("qtilde", "q", "q0", "tmu", "tmu_tilde")
#: EDM tolerance of every fit, in units of NLL (Minuit's estimated distance to minimum)
EDM_TOL = 1e-10
#: iteration cap of the primary start of every fit, and of the extra starts of a multi-start fit (which only
#: serve to find other basins: one that has not converged by then is not used)
MAXITER = 100
ALT_MAXITER = 40
#: above this many parameters fits are single-start by default (``fit(..., starts=k)`` still multi-starts)
MULTISTART_MAX_PARS = 200
#: two local minima are distinct when their 2·NLL differ by more than this
MULTIMODAL_TOL = 1e-3
#: an extra start of a multi-start fit is retired (status 4) once its Newton target lies within this distance
#: (½ δᵀH*δ, NLL units) of the primary start's minimum and its predicted minimum is not deeper by more than
#: this: a quarter of MULTIMODAL_TOL (which is in units of 2·NLL), see hf2ppl.infer._optimize
RETIRE_TOL = MULTIMODAL_TOL / 4
_EXPECTED_NSIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)
_TOY_PERCENTILES = (2.27501319, 15.86552539, 50.0, 84.13447461, 97.72498681)


class FitWarning(UserWarning):
    """A fit stopped before meeting its convergence criterion (results are returned, flagged)."""


class MultimodalWarning(FitWarning):
    """Fits from different start points reached distinct local minima: the likelihood is multimodal
    (the reported result uses the deepest minimum found)."""


# ====================================================================== model handling
#: compiled kernels kept per process (LRU), one per model *structure* (parameters, bin layout, modifier
#: pattern): the yields and constraint widths are data, so every signal point of a patchset shares one set.
#: Each real-sized kernel set holds ~1150 memory mappings of XLA code; 64 of them exceeded Linux's
#: vm.max_map_count (65530) and the process aborted inside XLA. Evicted kernels recompile from the
#: persistent cache when needed again.
_KERNELS: OrderedDict[Any, _Kernels] = OrderedDict()
_MAX_KERNELS = 8
#: kept for callers that release compiled code (tests of many real models): clearing it releases the kernels
_ENGINES = _KERNELS
_MAX_ENGINES = _MAX_KERNELS
_AUX_MODELS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


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


def _flat_priors(m) -> bool:
    from ... import priors as _priors

    return all(isinstance(v, _priors.Flat) for v in m.priors.values())


def _kernel_key(m) -> Any:
    """Models with the same structure share their compiled kernels (computed once per model object). With
    non-flat priors (a user's aux-mode model with priors) the prior enters the kernel: no sharing."""
    key = getattr(m, "_hf2ppl_kernel_key", None)
    if key is None:
        key = ("struct", m._T.structure_key(), m.dtype) if _flat_priors(m) else ("id", id(m))
        try:
            m._hf2ppl_kernel_key = key
        except AttributeError:  # pragma: no cover - slotted model objects
            pass
    return key


def _kernels(m) -> _Kernels:
    key = _kernel_key(m)
    k = _KERNELS.get(key)
    if k is None or (key[0] == "id" and k.owner() is not m):
        k = _KERNELS[key] = _Kernels(m)
        while len(_KERNELS) > _MAX_KERNELS:
            _KERNELS.popitem(last=False)
    else:
        _KERNELS.move_to_end(key)
    return k


def _engine(model: Any) -> _Engine:
    m = _aux_model(model)
    eng = getattr(m, "_hf2ppl_engine", None)
    if eng is None:
        eng = _Engine(m)
        try:
            m._hf2ppl_engine = eng
        except AttributeError:  # pragma: no cover
            pass
    return eng


def sequential_problems() -> bool:
    """Whether the multi-start kernels run their problems one after the other (``lax.map``) rather than as
    ``vmap`` lanes: on a CPU backend (the default there), where lanes run in lockstep, each iteration of a lane
    costs about as much as a whole single-problem iteration and every lane waits for the slowest (the
    hypotest's two multi-start fits: 59 -> 31 ms, a warm 57-point staus scan 8.0 -> 4.6 s); vmapped on an
    accelerator, whose lanes run in parallel. ``HF2PPL_PROBLEMS=vmap`` or ``=sequential`` overrides (read when a
    model structure's kernels are built)."""
    import os

    choice = os.environ.get("HF2PPL_PROBLEMS", "auto").strip().lower()
    if choice in ("vmap", "sequential"):
        return choice == "sequential"
    import jax

    return jax.default_backend() == "cpu"


def _sequential(fn, vaxis):
    """``fn`` mapped over the leading axis of its arguments one problem after the other (``lax.map``)."""
    from jax import lax

    def run(X0s, lo, hi, fixed, caps, data, vals):
        if vaxis is None:
            return lax.map(lambda a: fn(*a, vals), (X0s, lo, hi, fixed, caps, data))
        return lax.map(lambda a: fn(*a), (X0s, lo, hi, fixed, caps, data, vals))

    return run


def fit_threads() -> int:
    """Threads over which a multi-start call spreads its independent work on a CPU backend (1 or 2): 2 where
    the problems run sequentially (:func:`sequential_problems`) and the process may use two or more cores
    (``os.sched_getaffinity``), else 1. XLA executions launched from two Python threads run concurrently
    (JAX releases the GIL while one executes), where two dispatches from one thread queue behind each other:
    the problems of one call (a hypotest's free and fixed-POI fits, a limit's or a scan's fixed-POI fits) then
    run in two halves on two cores (see :meth:`_Engine._multi_threaded`; a fit, one problem, stays one call). ``HF2PPL_THREADS=1`` (or ``off``) turns it
    off, ``=2`` (or ``on``) forces it; read on every call."""
    import os

    choice = os.environ.get("HF2PPL_THREADS", "auto").strip().lower()
    if choice in ("1", "off", "0", "no", "false"):
        return 1
    if choice in ("2", "on", "yes", "true"):
        return 2
    import jax

    from .._optimize import usable_cores

    return 2 if usable_cores() >= 2 and jax.default_backend() == "cpu" else 1


_POOL = None


def _in_two_threads(fn, jobs: list) -> list:
    """``[fn(jobs[0]), fn(jobs[1])]``, the second in a worker thread while this thread runs the first (both in
    this thread when it is the worker itself: no nested use of the one-worker pool)."""
    global _POOL
    import threading

    if threading.current_thread().name.startswith("hf2ppl-fit"):
        return [fn(jobs[0]), fn(jobs[1])]
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf2ppl-fit")
    fut = _POOL.submit(fn, jobs[1])
    try:
        first = fn(jobs[0])
    finally:
        second = fut.result()
    return [first, second]


class _Kernels:
    """Jitted fitting kernels of one model structure. Every kernel takes the model's float arrays (a
    :meth:`~hf2ppl.histfactory.Tensors.values` pytree) as an argument, shared by a batch or one per problem."""

    def __init__(self, m):
        import jax
        import jax.numpy as jnp

        from ... import histfactory as hf
        from .._optimize import _HESS_BLOCK, make_solver

        ir = m.ir
        self.owner = weakref.ref(m)
        self.P, self.B, self.A = ir.npars, ir.nbins, int(ir.auxdata.shape[0])
        P, B, A = self.P, self.B, self.A
        T, xp, dtype = m._T, m._xp, m.dtype
        plan = None if _flat_priors(m) else m._prior_plan  # flat priors: the box constraints are the solver's

        def prior(x):
            return 0.0 if plan is None else plan.logpdf(xp, x, dtype)

        def nll(x, data, nominal, vals):
            """NLL with the nominal yields replaced (every histosys entry read): the differentiable-yields path."""
            return -(hf.logpdf(xp, T.bind(vals), x, data[:B], data[B:], nominal=nominal) + prior(x))

        def nll_fit(x, data, vals):
            """NLL at the model's own yields (``vals``): only the histosys entries that can change a rate."""
            return -(hf.logpdf(xp, T.bind(vals), x, data[:B], data[B:]) + prior(x))

        normal_idx, normal_pos = ir.normal_idx, ir.normal_auxpos
        poisson_idx, poisson_pos = ir.poisson_idx, ir.poisson_auxpos

        def expected_full(x, nominal, vals):
            """Expected data (main + aux, pyhf layout); ``nominal=None``: the model's own yields."""
            Tv = T.bind(vals)
            main = hf.expected_main(xp, Tv, x, nominal)
            if not A:
                return main
            aux = jnp.zeros((A,), dtype=x.dtype)
            if normal_idx.shape[0]:
                aux = aux.at[normal_pos].set(x[normal_idx])
            if poisson_idx.shape[0]:
                aux = aux.at[poisson_pos].set(x[poisson_idx] * vals["poisson_factor"])
            return jnp.concatenate([main, aux])

        self.nll, self.nll_fit, self.expected_full = nll, nll_fit, expected_full
        # the exact Hessian from the model's structure (a few cells x parameters matrix products) where it applies,
        # else forward-over-reverse autodiff; flat priors only (a user's prior enters the NLL as an opaque term)
        self.structured = plan is None and hf.hessian_supported(T)
        fgh_fit = fgh_yields = None
        if self.structured:
            def _neg(fgh):
                return -fgh[0], -fgh[1], -fgh[2]

            def fgh_fit(x, data, vals):
                return _neg(hf.logpdf_value_grad_hessian(T.bind(vals), x, data[:B], data[B:]))

            def fgh_yields(x, data, nominal, vals):
                return _neg(hf.logpdf_value_grad_hessian(T.bind(vals), x, data[:B], data[B:], nominal=nominal))

            # bytes of one problem's Hessian intermediates: a few (cells x parameters) matrices and (P, P) ones
            per_problem = 8.0 * 8 * T.n_samples * T.n_bins * (P + 2) + 8.0 * 8 * P**2
        else:
            # ~ tangents per block x modifier slots x samples x bins
            slots = sum(int(np.prod(getattr(ir, k).shape)) for k in ("factor_idx", "normsys_idx", "histosys_idx")) + ir.nominal.size
            per_problem = 8.0 * 8 * min(P, _HESS_BLOCK) * slots + 8.0 * 4 * P**2
        self.max_batch = max(4, 1 << int(np.log2(max(4.0, 1e9 / per_problem))))
        self.solve = make_solver(nll_fit, tol=EDM_TOL, maxiter=MAXITER, retire_tol=RETIRE_TOL, value_grad_hessian=fgh_fit)
        self.solve_yields = make_solver(nll, tol=EDM_TOL, maxiter=MAXITER, retire_tol=RETIRE_TOL, value_grad_hessian=fgh_yields)
        # ONE batched kernel for every fit: start point, bounds, fixed mask, cap and data per problem; the values
        # shared by the batch (one model) or per problem (the models of a scan). Batches are padded to a few
        # bucket sizes so that a structure compiles it only a handful of times; small batches (fits, hypotests)
        # also return the exact Hessian at the minimum, big ones (toys, scans) not.
        self._batch, self._multi = {}, {}
        self.sequential = sequential_problems()
        for vaxis in (None, 0):
            batch = jax.vmap(self.solve.capped, in_axes=(0, 0, 0, 0, 0, 0, vaxis))
            self._batch[vaxis, True] = jax.jit(batch)
            self._batch[vaxis, False] = jax.jit(lambda *a, _b=batch: _b(*a)._replace(hessian=None))
            # multi-start problems: (n, k, P) starts, (n, k) caps; the primary start of each problem first, then its
            # extra starts, one after the other, with the primary's minimum as the reference of the retirement rule
            # (_optimize.multi)
            multi = (_sequential(self.solve.multi, vaxis) if self.sequential
                     else jax.vmap(self.solve.multi, in_axes=(0, 0, 0, 0, 0, 0, vaxis)))
            self._multi[vaxis, True] = jax.jit(multi)
            self._multi[vaxis, False] = jax.jit(lambda *a, _b=multi: _b(*a)._replace(hessian=None))
        self._expected_j = {v: jax.jit(jax.vmap(lambda x, vals: expected_full(x, None, vals), in_axes=(0, v))) for v in (None, 0)}
        self._nll_j = {v: jax.jit(jax.vmap(nll_fit, in_axes=(0, 0, v))) for v in (None, 0)}


def _rows(V: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a stacked values pytree (numpy leaves)."""
    import jax

    return jax.tree.map(lambda a: a[idx], V)


def _starts(x0, lo, hi, fx, centre, width, k: int) -> np.ndarray:
    """``k`` start points of one model (see :meth:`_Engine.starts`)."""
    rng = np.random.default_rng(12345)
    P = x0.shape[0]
    w = np.where(fx, 0.0, 0.5 * width)
    X = [x0]
    if k > 1:
        X.append(np.where(w > 0, centre + w, x0))
    if k > 2:
        X.append(np.where(w > 0, centre - w, x0))
    while len(X) < k:
        z = np.clip(rng.standard_normal(P), -2.0, 2.0)
        X.append(np.where(w > 0, centre + w * z, np.where(fx, x0, x0 * np.exp(0.2 * z))))
    X = np.stack(X)
    span = hi - lo
    inner_lo = np.where(np.isfinite(span), lo + 1e-3 * span, lo)
    inner_hi = np.where(np.isfinite(span), hi - 1e-3 * span, hi)
    X[1:] = np.where(fx, x0, np.clip(X[1:], inner_lo, inner_hi))
    return X


class _Engine:
    """One model's side of the fitting kernels: its values, start points, options and data (built once per
    model, cheap); the compiled kernels are looked up by structure (:func:`_kernels`) on every call."""

    def __init__(self, m):
        import jax.numpy as jnp

        self.m = m
        ir = m.ir
        self.P, self.B, self.A = ir.npars, ir.nbins, int(ir.auxdata.shape[0])
        self.dtype = m.dtype
        self.poi = ir.poi_index
        self.nominal = jnp.asarray(ir.nominal, dtype=m.dtype)
        self.values = m._T.values()
        self.vals = {k: _tree_jnp(v) for k, v in self.values.items()}
        self.vals_full = {k: _tree_jnp(v) for k, v in m._T.values(full=True).items()}
        self.init = np.asarray(m.suggested_init(), float)
        self.bounds = np.asarray(m.suggested_bounds(), float)
        self.fixed = np.asarray(m.suggested_fixed(), bool)
        self.centre, self.width = _prefit_widths(ir, self.init)

    @property
    def k(self) -> _Kernels:
        return _kernels(self.m)

    @property
    def max_batch(self) -> int:
        return self.k.max_batch

    # the differentiable-yields path (asymptotics): the model's full values bound in
    def solve_yields(self, x0, lo, hi, fixed, data, nominal):
        return self.k.solve_yields(x0, lo, hi, fixed, data, nominal, self.vals_full)

    def expected_full(self, x, nominal):
        return self.k.expected_full(x, nominal, self.vals_full)

    def nll(self, x, data, nominal):
        return self.k.nll(x, data, nominal, self.vals_full)

    # ------------------------------------------------------------ batched fits (numpy in, numpy out)
    @staticmethod
    def bucket(n: int) -> int:
        """Batch sizes are padded to powers of two (1, 2, 4, 8, ...): few compilations, little padding."""
        return 1 << max(0, (n - 1).bit_length())

    _KEYS = ("x", "fun", "grad_norm", "niter", "converged", "edm", "status")

    def solve_many(self, X0: np.ndarray, lo: np.ndarray, hi: np.ndarray, F: np.ndarray, D: np.ndarray, caps: Any = None, V: Any = None,
                   hessian: bool | None = None) -> dict:
        """Fit ``n`` problems (rows of X0, F, D; ``lo``/``hi`` shared (P,) or per problem (n, P)) in one vmapped
        call; returns numpy arrays with leading axis n (``hessian`` (n, P, P) for batches of at most 16 problems,
        else None). ``caps``: per-problem iteration caps. ``V``: per-problem values (a stacked pytree of
        :meth:`~hf2ppl.histfactory.Tensors.values` of models of this structure); None: this model's.
        ``hessian=False``: never return the Hessian (one compiled variant less; scans)."""
        X0 = np.atleast_2d(np.asarray(X0, float))
        n = X0.shape[0]
        LO = np.broadcast_to(np.asarray(lo, float), (n, self.P))
        HI = np.broadcast_to(np.asarray(hi, float), (n, self.P))
        F = np.broadcast_to(np.asarray(F, float), (n, self.P))
        D = np.broadcast_to(np.asarray(D, float), (n, self.B + self.A))
        C = np.broadcast_to(np.asarray(MAXITER if caps is None else caps, np.int32), (n,))
        k = self.k
        if n > k.max_batch:  # keep the memory of forward-mode derivatives bounded on big models
            mb = k.max_batch
            parts = [self.solve_many(X0[i:i + mb], LO[i:i + mb], HI[i:i + mb], F[i:i + mb], D[i:i + mb], C[i:i + mb],
                                     None if V is None else _rows(V, np.arange(i, min(n, i + mb))), hessian=False)
                     for i in range(0, n, mb)]
            out = {key: np.concatenate([p[key] for p in parts]) for key in self._KEYS}
            out["hessian"] = None
            return out
        # batches of many models (scans) are padded to powers of 4: their sizes vary with how the patches of a
        # chunk fall into structures, and every size is one more compilation
        e = (max(n, 1) - 1).bit_length()
        size = self.bucket(n) if V is None else max(n, min(k.max_batch, 1 << (e + (e & 1))))
        if size > n:
            pad = np.r_[np.arange(n), np.zeros(size - n, int)]
            X0, LO, HI, F, D = X0[pad], LO[pad], HI[pad], F[pad], D[pad]
            C = np.concatenate([C, np.zeros(size - n, np.int32)])  # padding rows do no iterations
            if V is not None:
                V = _rows(V, pad)
        with_h = size <= 16 if hessian is None else bool(hessian)
        vals = self.vals if V is None else _tree_jnp(V)
        r = k._batch[None if V is None else 0, with_h](*_jnp(X0, LO, HI, F), np.asarray(C), _jnp(D)[0], vals)
        out = {key: np.asarray(getattr(r, key))[:n] for key in self._KEYS}
        out["hessian"] = np.asarray(r.hessian)[:n] if with_h else None
        return out

    def default_starts(self) -> int:
        """Starts of a multi-start fit when not given: 4 up to :data:`MULTISTART_MAX_PARS` parameters, else 1
        (every start costs a full Hessian per iteration; on the 217-parameter ATLAS fit 4 starts cost 4-10x one)."""
        return 4 if self.P <= MULTISTART_MAX_PARS else 1

    def starts(self, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, fx: np.ndarray, k: int | None = None,
               centre: np.ndarray | None = None, width: np.ndarray | None = None) -> np.ndarray:
        """``k`` start points for a multi-start fit: ``x0``, then the constrained free parameters moved by
        +σ/2 and -σ/2 of their constraints, then seeded random points (constrained: N(0, σ²/4) around the aux
        value, clipped at ±σ; unconstrained: ``x0 · exp(0.2 z)``); all inside the bounds, fixed components kept.
        (Moving hundreds of nuisance parameters by a full σ at once gives absurd start points on real
        likelihoods, with rates off by orders of magnitude.) ``centre``/``width``: another model's prefit
        values (a scan's signal point), default this model's."""
        k = self.default_starts() if k is None else int(k)
        return _starts(x0, lo, hi, fx, self.centre if centre is None else centre, self.width if width is None else width, k)

    def solve_best(self, X0s: np.ndarray, lo: np.ndarray, hi: np.ndarray, F: np.ndarray, D: np.ndarray, V: Any = None,
                   hessian: bool | None = None) -> dict:
        """Multi-start fits: problem ``i`` (fixed mask ``F[i]``, data ``D[i]``, bounds ``lo``/``hi`` shared or
        ``lo[i]``, values ``V`` row i or this model's) from each start ``X0s[i, j]``, all in one vmapped call;
        returns the best minimum per problem (see :meth:`best`)."""
        X0s = np.asarray(X0s, float)
        n, k = X0s.shape[:2]
        F = np.broadcast_to(np.asarray(F, float), (n, self.P))
        D = np.broadcast_to(np.asarray(D, float), (n, self.B + self.A))
        LO = np.broadcast_to(np.asarray(lo, float), (n, self.P))
        HI = np.broadcast_to(np.asarray(hi, float), (n, self.P))
        # the primary start (row 0 of each problem) runs first, then the extra starts with a bounded cap and the
        # primary's minimum as their retirement reference (an extra start in the primary's basin stops early)
        if k == 1:
            return self.best(self.solve_many(X0s[:, 0], LO, HI, F, D, None, V, hessian), n, 1)
        # k padded to 4, 8, ... with padding starts (cap 0, skipped): fits (k = 4) and the fixed-POI
        # fits of hypotests (k = 2) then share one compiled kernel per problem count (scans, V given, use 2 starts
        # throughout when warm-started: no padding to 4 there)
        kp = self.bucket(k) if V is not None else max(4, self.bucket(k))
        caps = np.zeros((n, kp), np.int32)
        caps[:, 0], caps[:, 1:k] = MAXITER, ALT_MAXITER
        X = np.concatenate([X0s, np.repeat(X0s[:, :1], kp - k, axis=1)], axis=1)
        r = self._solve_multi(X, LO, HI, F, D, caps, V, hessian)
        r = {key: (None if v is None else v[:, :k].reshape((n * k,) + v.shape[2:])) for key, v in r.items()}
        return self.best(r, n, k)

    def _solve_multi(self, X0s, LO, HI, F, D, caps, V, hessian) -> dict:
        """The multi-start kernel on ``n`` problems x ``k`` starts (arrays as :meth:`solve_best`, all per problem);
        numpy arrays with leading axes (n, k)."""
        n, k = X0s.shape[:2]
        kern = self.k
        mb = max(1, kern.max_batch // k)
        if n > mb:  # bounded memory of forward-mode derivatives on big models / big batches
            parts = [self._solve_multi(X0s[i:i + mb], LO[i:i + mb], HI[i:i + mb], F[i:i + mb], D[i:i + mb], caps[i:i + mb],
                                       None if V is None else _rows(V, np.arange(i, min(n, i + mb))), False)
                     for i in range(0, n, mb)]
            out = {key: np.concatenate([p[key] for p in parts]) for key in self._KEYS}
            out["hessian"] = None
            return out
        e = (max(n, 1) - 1).bit_length()
        # one model's problems: at least 2 (a fit's one problem padded), so that fit and hypotest (2 problems)
        # share one compiled kernel; a padding problem costs nothing when the problems run sequentially
        size = max(2, self.bucket(n)) if V is None else max(n, min(mb, 1 << (e + (e & 1))))
        if size > n:
            pad = np.r_[np.arange(n), np.zeros(size - n, int)]
            X0s, LO, HI, F, D = X0s[pad], LO[pad], HI[pad], F[pad], D[pad]
            caps = np.concatenate([caps, np.zeros((size - n, k), np.int32)])  # padding problems do no iterations
            if V is not None:
                V = _rows(V, pad)
        with_h = size * k <= 16 if hessian is None else bool(hessian)
        vaxis = None if V is None else 0
        if n >= 2 and kern.sequential and fit_threads() > 1:
            return self._multi_threaded(kern, X0s, LO, HI, F, D, caps, V, vaxis, with_h, n)
        out = self._call_multi(kern, X0s, LO, HI, F, D, caps, V, vaxis, with_h)
        return {key: (None if v is None else v[:n]) for key, v in out.items()}

    def _call_multi(self, kern, X0s, LO, HI, F, D, caps, V, vaxis, with_h) -> dict:
        """One call of the multi-start kernel (arrays already padded to a compiled size); numpy out."""
        vals = self.vals if V is None else _tree_jnp(V)
        r = kern._multi[vaxis, with_h](*_jnp(X0s, LO, HI, F), np.asarray(caps, np.int32), _jnp(D)[0], vals)
        out = {key: np.asarray(getattr(r, key)) for key in self._KEYS}
        out["hessian"] = np.asarray(r.hessian) if with_h else None
        return out

    def _multi_threaded(self, kern, X0s, LO, HI, F, D, caps, V, vaxis, with_h, n: int) -> dict:
        """The multi-start kernel's work split over two threads (:func:`fit_threads`): ``n >= 2`` real problems
        (a hypotest's free and fixed-POI fits, a limit's or a scan's fixed-POI fits) in two halves, one call of the
        same compiled kernel each (same padded shapes, so nothing new compiles; the other rows of a call are padding
        problems, cap 0, which cost nothing in the sequential kernel). Every problem's starts are the same function
        of the same inputs as in the one call, so the results are those of the one call. One problem (a fit) is one
        call: splitting its extra starts from its primary (a call for the primary, then two concurrent calls for
        two groups of extra starts with the primary's minimum as their reference) was slower on the 2-core machine
        (staus 4-start fit 15.5 -> 17.0 ms): two concurrent executions of that kernel overlapped poorly (two
        8.3 ms calls took 13.6 ms together)."""
        size, k = X0s.shape[:2]

        def sub(rows_, caps_):
            """A call on the problems ``rows_`` (padded with row ``rows_[0]``, cap 0, to ``size``)."""
            pad = np.r_[rows_, np.full(size - len(rows_), rows_[0], int)]
            c = np.zeros((size, k), np.int32)
            c[:len(rows_)] = caps_
            return pad, c

        h = (n + 1) // 2  # n >= 2 here (the caller makes one call for one problem)
        parts = [np.arange(0, h), np.arange(h, n)]
        jobs = []
        for rows_ in parts:
            pad, c = sub(rows_, caps[rows_])
            jobs.append((X0s[pad], LO[pad], HI[pad], F[pad], D[pad], c, None if V is None else _rows(V, pad)))
        outs = _in_two_threads(lambda a: self._call_multi(kern, *a, vaxis, with_h), jobs)
        return {key: (None if outs[0][key] is None else np.concatenate([o[key][:len(r_)] for o, r_ in zip(outs, parts)]))
                for key in outs[0]}

    def best(self, r: dict, groups: int, per: int) -> dict:
        """Reduce the output of ``groups x per`` problems (row ``g * per + j``: start ``j`` of problem ``g``) to
        the best converged (else lowest) minimum of each problem; adds ``multimodal`` (distinct local minima
        with 2ΔNLL above :data:`MULTIMODAL_TOL`) and ``minima`` (their 2ΔNLL above the best)."""
        fun = r["fun"].reshape(groups, per)
        conv = r["converged"].reshape(groups, per)
        finite = np.where(np.isfinite(fun), fun, np.inf)
        # the deepest converged minimum; only where no start converged, the deepest point reached
        score = np.where(conv.any(axis=1, keepdims=True), np.where(conv, finite, np.inf), finite)
        j = np.argmin(score, axis=1)
        rows = np.arange(groups) * per + j
        out = {k: (None if r[k] is None else r[k][rows]) for k in r}
        with np.errstate(invalid="ignore"):  # inf - inf for starts that never had a finite NLL
            d2 = 2.0 * (fun - fun[np.arange(groups), j][:, None])
        distinct = conv & np.isfinite(d2) & (d2 > MULTIMODAL_TOL)
        out["multimodal"] = distinct.any(axis=1)
        out["minima"] = [np.unique(np.round(d2[g][distinct[g]], 6)) for g in range(groups)]
        out["nstarts"] = per
        return out

    def nonfinite_reason(self, x: np.ndarray, d: np.ndarray | None = None) -> str:
        """A one-line explanation of a non-finite NLL at ``x``, naming the parameters or bins responsible."""
        names = np.asarray(self.m.par_names)
        if not np.all(np.isfinite(x)):
            return f"non-finite parameter values for {', '.join(names[~np.isfinite(x)][:5])}"
        d = self.m.observed_data() if d is None else d
        lam = self.expected(x)[: self.B]
        bad = (lam <= 0) & (np.asarray(d)[: self.B] > 0)
        if np.any(bad):
            labels = [f"{c.name}[{b - c.start}]" for b in np.flatnonzero(bad) for c in self.m.ir.channels if c.start <= b < c.start + c.nbins]
            return (f"the expected count is <= 0 where events are observed in bins {', '.join(labels[:5])} at the start point "
                    "(a histosys template extrapolated past zero?); start elsewhere (init=...) or check the templates")
        return "the NLL is not finite at the start point; check the data and the start point (init=...)"

    def expected(self, x: np.ndarray, V: Any = None) -> np.ndarray:
        """Expected data (main + aux, pyhf layout) at flat parameters ``x`` (P,), or at each row of ``x`` (n, P)
        with per-row values ``V`` (or this model's)."""
        X = np.atleast_2d(np.asarray(x, float))
        vals = self.vals if V is None else _tree_jnp(V)
        out = np.asarray(self.k._expected_j[None if V is None else 0](_jnp(X)[0], vals))
        return out[0] if np.ndim(x) == 1 else out

    def nll_at(self, X: np.ndarray, D: np.ndarray, V: Any = None) -> np.ndarray:
        """NLL at each row of ``X`` (n, P) with data ``D`` (n, B + A) and values ``V`` (per row, or this model's)."""
        vals = self.vals if V is None else _tree_jnp(V)
        return np.asarray(self.k._nll_j[None if V is None else 0](*_jnp(np.atleast_2d(X), np.atleast_2d(D)), vals))

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


def _tree_jnp(tree: Any) -> Any:
    """A pytree of numpy arrays as JAX arrays (dtype kept)."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.asarray, tree)


def _prefit_widths(ir, init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prefit centre, prefit σ) per flat parameter: aux value and σ for normal constraints,
    1 and 1/sqrt(τ) for Poisson (shapesys) constraints, (init, 0) for unconstrained ones (as cabinetry/pyhf)."""
    centre = np.asarray(init, float).copy()
    width = np.zeros(centre.shape[0])
    for p in ir.parameters:
        sl = p.slice
        if p.constraint == "normal":
            centre[sl] = np.asarray(p.auxdata, float)
            width[sl] = np.asarray(p.sigmas, float)
        elif p.constraint == "poisson":
            centre[sl] = 1.0
            width[sl] = 1.0 / np.sqrt(np.asarray(p.factors, float))
    return centre, width


def _merge_diag(*rs: dict) -> dict:
    """Concatenate the convergence diagnostics of several :meth:`_Engine.solve_best` outputs (for :func:`_check`)."""
    out = {k: np.concatenate([np.atleast_1d(np.asarray(r[k])) for r in rs]) for k in ("converged", "edm", "status", "multimodal")}
    out["minima"] = [m for r in rs for m in r["minima"]]
    return out


def _check_stats(rows: list[tuple[dict, int]]) -> tuple[bool, float, bool, list[float], str]:
    """(converged, largest EDM, multimodal, distinct minima (2ΔNLL), status message) of the fits at rows
    ``(output of solve_best, row)``, e.g. the fits behind one hypotest of a scan."""
    from .._optimize import STATUS_MESSAGES

    conv = all(bool(r["converged"][i]) for r, i in rows)
    edms = [float(r["edm"][i]) for r, i in rows]
    mm = any(bool(r["multimodal"][i]) for r, i in rows)
    minima = sorted({float(v) for r, i in rows for v in np.atleast_1d(r["minima"][i])})
    bad = [int(r["status"][i]) for r, i in rows if not bool(r["converged"][i])]
    status = STATUS_MESSAGES.get(bad[0], "?") if bad else STATUS_MESSAGES.get(0, "converged")
    return conv, max(edms) if edms else 0.0, mm, minima, status


def _check(converged: Any, what: str, r: dict | None = None) -> bool:
    """Warn (FitWarning) when a fit missed its EDM criterion, (MultimodalWarning) when starts found distinct minima."""
    ok = bool(np.all(np.asarray(converged)))
    if not ok:
        detail = ""
        if r is not None and "edm" in r:
            bad = ~np.asarray(r["converged"], bool)
            st = np.asarray(r["status"])[bad]
            from .._optimize import STATUS_MESSAGES

            detail = f" ({STATUS_MESSAGES.get(int(st[0]), '?')}; EDM {float(np.max(np.asarray(r['edm'])[bad])):.3g})" if st.size else ""
        warnings.warn(f"{what}: a fit did not converge{detail}; results may be imprecise", FitWarning, stacklevel=3)
    if r is not None and np.any(r.get("multimodal", False)):
        mins = sorted({float(v) for m in r["minima"] for v in np.atleast_1d(m)})
        warnings.warn(f"{what}: the likelihood is multimodal: fits from different start points reached distinct minima "
                      f"(2ΔNLL above the deepest: {', '.join(f'{v:.4g}' for v in mins[:5])}); the deepest is used", MultimodalWarning, stacklevel=3)
    return ok



def _check_test_stat(test_stat: str, allowed: Sequence[str] = TEST_STATS) -> None:
    if test_stat not in allowed:
        raise ParameterError(f"unknown test_stat {test_stat!r}; choose one of {tuple(allowed)}")

