"""Fast HMC/NUTS on a compiled NumPyro model: chains ``vmap``-ed, steps in a jitted ``lax.scan``.

Why not ``numpyro.infer.MCMC``? For small HistFactory models the gradient costs
microseconds, so the sampler's own overhead dominates: NumPyro traces the model
through its effect handlers to build the potential, collects fields through
Python-side post-processing, and re-traces on every ``MCMC`` object. Here the
potential is built directly from the compiled model's pure log density over the
*unconstrained* free vector ``z``:

.. math::

    \\log p(z) = \\log p(\\theta(x(z))) + \\log\\left|\\frac{\\partial x}{\\partial z}\\right|,

where ``x = T(z)`` maps each component according to its prior's support (interval →
scaled sigmoid, positive → exp, real → identity; the bijections of NumPyro's ``biject_to``).
BlackJAX's NUTS/HMC kernel is traced once: Stan's window adaptation is folded
into the step (step size and mass matrix are carried as runtime values), the
steps run in jitted ``lax.scan`` chunks of fixed length with chains ``vmap``-ed (on a CPU, one
group of chains per core, each group driven from its own host thread: :func:`chain_threads`),
and the compiled chunk is cached on the model, so a second call does not
retrace, whatever its number of warmup steps or draws.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Layout", "safe_noise", "make_step", "blackjax_chain_fn", "ChunkedSampler", "chain_threads", "auto_progress", "Progress", "get_cache", "get_layout",
           "stan_schedule", "KERNEL_ALIASES"]

#: user-facing kernel kwargs → canonical names
KERNEL_ALIASES = {
    "target_accept": "target_accept",
    "target_accept_prob": "target_accept",
    "target_acceptance_rate": "target_accept",
    "max_tree_depth": "max_tree_depth",
    "max_num_doublings": "max_tree_depth",
    "dense_mass": "dense_mass",
    "num_steps": "num_steps",
    "num_integration_steps": "num_steps",
    "initial_step_size": "initial_step_size",
    "init_jitter": "init_jitter",
}


def canonical_kernel_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Map aliases to canonical names; unknown names raise ``ParameterError``."""
    from ..errors import ParameterError

    out: dict[str, Any] = {}
    for k, v in kwargs.items():
        if k not in KERNEL_ALIASES:
            raise ParameterError(f"unknown sampler option {k!r}; known: {sorted(KERNEL_ALIASES)}")
        out[KERNEL_ALIASES[k]] = v
    return out


def get_layout(model: Any) -> Layout:
    """The model's :class:`Layout` (cached on the model)."""
    cache = get_cache(model)
    if "layout" not in cache:
        cache["layout"] = Layout(model)
    return cache["layout"]


def get_cache(model: Any) -> dict:
    """Per-model cache of jitted functions (lives as long as the model)."""
    cache = model.__dict__.get("_hf2ppl_bayes_cache")
    if cache is None:
        cache = {}
        model.__dict__["_hf2ppl_bayes_cache"] = cache
    return cache


#: most runs of one support kind (in the free order) for which :class:`Layout` maps the free vector slice by slice
#: instead of by index groups and a gather
MAX_RUNS = 16

#: a constrained component is sampled in standardised coordinates when its prior width on the
#: unconstrained scale is below this (staterror, lumi, shapesys with large tau; normsys/histosys have 1)
STANDARDISE_BELOW = 0.5


def _centre_width(model: Any, p) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and width of the prior of a constrained set's free components (``None``: not constrained).

    ``"prior"`` mode: the prior in use (Normal: loc/scale; Gamma: mean/sd; LogNormal: median and
    median×scale); ``"aux"`` mode: the prior implied by the aux data (:func:`hf2ppl.priors.default_prior`),
    i.e. the width of the constraint term.
    """
    from .. import priors as P

    if p.constraint is None:
        return None
    pr = model.priors[p.name] if model.constraints == "prior" else P.default_prior(p)
    v = pr.broadcast(p.n_free)
    if isinstance(pr, P.Normal):
        return v["loc"], v["scale"]
    if isinstance(pr, P.Gamma):
        return v["concentration"] / v["rate"], np.sqrt(v["concentration"]) / v["rate"]
    if isinstance(pr, P.LogNormal):
        return np.exp(v["loc"]), np.exp(v["loc"]) * v["scale"]
    return None


def standardisation(model: Any, kind: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    r"""Per free component ``(shift c, scale s)`` of the map ``z = c + s u`` from the sampler's coordinate
    ``u`` to the unconstrained coordinate ``z`` of the support bijection, and the sets it applies to.

    For a constrained component with prior centre :math:`x_c` and width :math:`\sigma` (see
    :func:`_centre_width`), ``c`` is the bijection's inverse at :math:`x_c` and ``s = σ / g'(c)`` its
    width on the unconstrained scale; when ``s`` < :data:`STANDARDISE_BELOW` the sampler moves in ``u``,
    the deviation from the centre in prior widths — for a real support exactly :math:`(x - x_c)/\sigma`,
    the standardised deviation (γ−1)/σ of a staterror or lumi, (γ−1)·√τ of a shapesys. Other
    components keep ``c = 0, s = 1``. The map is affine with a constant log-Jacobian ``Σ log s``, the
    support is unchanged, and draws are reported in the workspace's parameters.
    """
    n = len(kind)
    shift, scale = np.zeros(n), np.ones(n)
    names: list[str] = []
    off = 0
    for p in model.free_parameters:
        sl = slice(off, off + p.n_free)
        off += p.n_free
        cw = _centre_width(model, p)
        if cw is None:
            continue
        xc, sig = (np.asarray(a, float) for a in cw)
        k, a, b = kind[sl], lo[sl], hi[sl]
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(k == 0, xc, 0.0)
            d = np.ones_like(xc)
            pos = k == 1
            c = np.where(pos, np.log(np.maximum(xc - a, 1e-300)), c)
            d = np.where(pos, np.maximum(xc - a, 1e-300), d)
            w = b - a
            u = np.clip((xc - a) / w, 1e-6, 1 - 1e-6)
            itv = k == 2
            c = np.where(itv, np.log(u) - np.log1p(-u), c)
            d = np.where(itv, w * u * (1 - u), d)
            s = sig / d
        ok = np.isfinite(c) & np.isfinite(s) & (s > 0)
        use = ok & (s < STANDARDISE_BELOW)
        if np.any(use):
            shift[sl] = np.where(use, c, 0.0)
            scale[sl] = np.where(use, s, 1.0)
            names.append(p.name)
    return shift, scale, names


class Layout:
    """The free components of a compiled model, site by site, and their bijections to R^n.

    ``x`` is the constrained free vector (the model's ``_free`` order, which is the
    concatenation of the sample sites in parameter order); ``z`` the unconstrained one.

    Each component's support comes from its site distribution (NumPyro constraints): real →
    identity; ``x > lo`` → ``lo + exp(z)``; ``lo < x < hi`` → ``lo + (hi - lo) * sigmoid(z)``
    (sigmoid clipped away from 0 and 1, as NumPyro's ``biject_to``). When the free order has at most
    :data:`MAX_RUNS` runs of one support kind, each run is mapped on a slice and the runs concatenated (no
    gather, whose gradient is a scatter-add); otherwise the maps are evaluated per kind on static index
    groups and put back in order with one gather. The full parameter vector is assembled with a static
    gather rather than a scatter: a lean graph that compiles quickly.
    """

    def __init__(self, model: Any):
        from numpyro.distributions import constraints as C

        self.model = model
        dists = model.site_distributions()
        self.sites: list[tuple[str, bool, int, int]] = []
        kinds, lo, hi = [], [], []
        off = 0
        for p in model.free_parameters:
            self.sites.append((p.name, p.is_scalar, p.n_free, off))
            off += p.n_free
            c = dists[p.name].support
            while isinstance(c, C._IndependentConstraint):
                c = c.base_constraint
            shape = (p.n_free,)
            if isinstance(c, C._Real):
                k, a, b = 0, np.full(shape, -np.inf), np.full(shape, np.inf)
            elif isinstance(c, C._GreaterThan):
                k, a, b = 1, np.broadcast_to(np.asarray(c.lower_bound, float), shape), np.full(shape, np.inf)
            elif isinstance(c, C._Interval):
                k, a, b = 2, np.broadcast_to(np.asarray(c.lower_bound, float), shape), np.broadcast_to(np.asarray(c.upper_bound, float), shape)
            else:  # pragma: no cover - hf2ppl priors only have these supports
                raise NotImplementedError(f"no bijection for the support {c} of {p.name!r}")
            kinds.append(np.full(shape, k))
            lo.append(a)
            hi.append(b)
        self.n = off
        kind = np.concatenate(kinds) if kinds else np.zeros(0, int)
        self.lo, self.hi = (np.concatenate(lo), np.concatenate(hi)) if lo else (np.zeros(0), np.zeros(0))
        self.groups = [np.flatnonzero(kind == k) for k in range(3)]
        # maximal runs of one support kind in the free order: with few runs the map is a handful of slices and one
        # concatenation, no gathers (whose gradients are scatter-adds: as costly as a whole small density on CPU)
        cuts = np.flatnonzero(np.diff(kind)) + 1 if len(kind) else np.zeros(0, int)
        starts, stops = np.r_[0, cuts].astype(int), np.r_[cuts, len(kind)].astype(int)
        runs = [(int(kind[a]), int(a), int(b)) for a, b in zip(starts, stops) if b > a]
        self._runs = runs if len(runs) <= MAX_RUNS else None
        order = np.concatenate(self.groups)
        self.inv_order = None if np.array_equal(order, np.arange(self.n)) else np.argsort(order)
        # full parameter vector = concat(x, fixed values)[perm]
        npars = model.ir.npars
        free = np.asarray(model._free)
        fixed = np.setdiff1d(np.arange(npars), free)
        perm = np.empty(npars, dtype=np.int64)
        perm[free] = np.arange(len(free))
        perm[fixed] = len(free) + np.arange(len(fixed))
        self._fixed_vals = np.asarray(model.ir.init, float)[fixed]
        self._perm = None if len(fixed) == 0 and np.array_equal(free, np.arange(npars)) else perm
        self.shift, self.scale, self.standardised = standardisation(model, kind, self.lo, self.hi)
        self._affine = bool(self.standardised)
        self._log_priors = self._log_scale_priors(kind)

    def _log_scale_priors(self, kind: np.ndarray) -> list[tuple]:
        """Prior groups of the form ``c + a·log x - r·x`` (Gamma: the shapesys priors) on components mapped by
        ``x = exp(z)``: the potential evaluates them as ``c + a·z - r·x``, with no logarithm of ``x`` (it is ``z``).
        ``[(group, read of the free vector, c, a, r)]``."""
        from ..histfactory import _index
        from ..priors import log_scale_terms

        plan = getattr(self.model, "_prior_plan", None)
        if plan is None:
            return []
        pos = np.full(self.model.ir.npars, -1)
        pos[np.asarray(self.model._free)] = np.arange(self.n)
        out = []
        for g, (cls, idx, params) in enumerate(plan.groups):
            terms = log_scale_terms(cls, params)
            f = pos[idx]
            if terms is None or np.any(f < 0) or not np.all((kind[f] == 1) & (self.lo[f] == 0.0)):
                continue
            out.append((g, _index(f), *terms))
        return out

    def describe(self) -> dict[str, Any]:
        """{parameter set: (centre, width)} of the standardised sets, on the unconstrained scale."""
        return {name: (self.shift[off:off + n].tolist(), self.scale[off:off + n].tolist())
                for name, _s, n, off in self.sites if name in self.standardised}

    def _parts(self, v):
        for name, scalar, n, off in self.sites:
            yield name, scalar, (v[..., off] if scalar else v[..., off:off + n])

    def _map(self, z, with_logdet: bool):
        x, ld, _ = self._map_z(z, with_logdet)
        return x, ld

    def _map_z(self, z, with_logdet: bool):
        """``(x, log|dx/du|, z)``: ``z`` is the support bijection's argument (after the standardisation)."""
        import jax
        import jax.numpy as jnp

        ir, il, ii = self.groups
        parts, ld = [], 0.0
        if self._affine:  # the standardised coordinates of narrow constraints (see standardisation())
            z = jnp.asarray(self.shift, z.dtype) + jnp.asarray(self.scale, z.dtype) * z
            if with_logdet:
                ld = ld + float(np.sum(np.log(self.scale)))
        if self._runs is not None:  # slices of runs of one kind, in order: no gather
            finfo = jnp.finfo(z.dtype)
            for k, a, b in self._runs:
                zs = z[..., a:b]
                if k == 0:
                    parts.append(zs)
                elif k == 1:
                    parts.append(jnp.asarray(self.lo[a:b], z.dtype) + jnp.exp(zs))
                    if with_logdet:
                        ld = ld + jnp.sum(zs, axis=-1)
                else:
                    lo = jnp.asarray(self.lo[a:b], z.dtype)
                    w = self.hi[a:b] - self.lo[a:b]
                    parts.append(lo + jnp.asarray(w, z.dtype) * jnp.clip(jax.nn.sigmoid(zs), finfo.tiny, 1.0 - finfo.eps))
                    if with_logdet:
                        ld = ld + jnp.sum(jnp.asarray(np.log(w), z.dtype) + jax.nn.log_sigmoid(zs) + jax.nn.log_sigmoid(-zs), axis=-1)
            return (parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)), ld, z
        if len(ir):
            parts.append(z[..., ir])
        if len(il):
            zl = z[..., il]
            parts.append(jnp.asarray(self.lo[il], z.dtype) + jnp.exp(zl))
            if with_logdet:
                ld = ld + jnp.sum(zl, axis=-1)
        if len(ii):
            zi = z[..., ii]
            lo = jnp.asarray(self.lo[ii], z.dtype)
            w = jnp.asarray(self.hi[ii] - self.lo[ii], z.dtype)
            finfo = jnp.finfo(z.dtype)
            s = jnp.clip(jax.nn.sigmoid(zi), finfo.tiny, 1.0 - finfo.eps)
            parts.append(lo + w * s)
            if with_logdet:
                ld = ld + jnp.sum(jnp.log(w) + jax.nn.log_sigmoid(zi) + jax.nn.log_sigmoid(-zi), axis=-1)
        x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
        if self.inv_order is not None:
            x = x[..., self.inv_order]
        return x, ld, z

    def constrain(self, z):
        """``(x, log|dx/dz|)`` for one unconstrained vector ``z`` of shape (n,)."""
        return self._map(z, True)

    def constrain_only(self, z):
        """``x`` for unconstrained vectors of any batch shape (..., n)."""
        return self._map(z, False)[0]

    def unconstrain(self, x):
        """``z`` for constrained vectors of any batch shape (..., n) (numpy or JAX arrays)."""
        xp = np if isinstance(x, np.ndarray) else __import__("jax.numpy", fromlist=["x"])
        ir, il, ii = self.groups
        z = xp.zeros_like(x) if xp is np else None
        parts = []
        if len(ir):
            parts.append((ir, x[..., ir]))
        if len(il):
            parts.append((il, xp.log(x[..., il] - self.lo[il])))
        if len(ii):
            u = (x[..., ii] - self.lo[ii]) / (self.hi[ii] - self.lo[ii])
            parts.append((ii, xp.log(u) - xp.log1p(-u)))
        if xp is np:
            with np.errstate(divide="ignore", invalid="ignore"):
                for idx, v in parts:
                    z[..., idx] = v
        else:
            z = xp.concatenate([v for _, v in parts], axis=-1)
            z = z if self.inv_order is None else z[..., self.inv_order]
        return (z - self.shift) / self.scale if self._affine else z

    def full(self, x):
        """The full parameter vector (``par_names`` order) from the free components ``x`` (n,)."""
        import jax.numpy as jnp

        if self._perm is None:
            return x
        return jnp.concatenate([x, jnp.asarray(self._fixed_vals, x.dtype)])[self._perm]

    def split(self, x) -> dict[str, Any]:
        """{site: values} from constrained vectors (..., n)."""
        return {name: xi for name, _s, xi in self._parts(x)}

    def join(self, sites: dict[str, Any]):
        """Constrained vectors (..., n) from {site: values}."""
        import jax.numpy as jnp

        parts = []
        for name, scalar, _n, _off in self.sites:
            v = jnp.asarray(sites[name])
            parts.append(v[..., None] if scalar else v)
        return jnp.concatenate(parts, axis=-1)

    def init_x(self) -> np.ndarray:
        """The workspace inits of the free components (constrained), shape (n,), numpy."""
        return np.concatenate([np.reshape(np.asarray(v, float), (-1,)) for v in
                               (self.model.init_params()[name] for name, *_ in self.sites)])

    def potential(self, data=None) -> Callable:
        """Log density of ``z`` (unconstrained, with the log-Jacobian); Gamma priors on ``x = exp(z)`` are
        evaluated with ``log x = z`` (see :meth:`_log_scale_priors`)."""
        import jax.numpy as jnp

        m = self.model
        lp_groups = self._log_priors
        skip = tuple(g for g, *_ in lp_groups)

        def logdensity(z, data=data):
            x, ld, zb = self._map_z(z, True)
            lp = m.logdensity_flat(self.full(x), data, skip_priors=skip) + ld
            for _g, read, c, a, r in lp_groups:
                f = z.dtype
                lp = lp + jnp.sum(jnp.asarray(c, f) + jnp.asarray(a, f) * zb[..., read] - jnp.asarray(r, f) * x[..., read])
            return lp.astype(z.dtype)

        return logdensity


def safe_noise(layout: Layout, x0: np.ndarray, noise: np.ndarray, max_halvings: int = 10) -> np.ndarray:
    """The start jitter ``noise`` (chains, n), halved chain by chain until the log density (and its
    gradient) at ``unconstrain(x0) + noise`` is finite: a jitter of ±0.5 on the logit scale of a normfactor
    on [-5, 5] can make it negative and a rate with it (ewk2L). Raises ``ParameterError`` when the
    workspace inits themselves have a non-finite log density."""
    import jax
    import jax.numpy as jnp

    from ..errors import ParameterError

    cache = get_cache(layout.model)
    if "start_vg" not in cache:
        cache["start_vg"] = jax.jit(jax.vmap(jax.value_and_grad(layout.potential())))
    vg = cache["start_vg"]
    base = layout.unconstrain(np.asarray(x0, dtype=noise.dtype))
    base = np.where(np.isfinite(base), base, 0.0)
    noise = np.array(noise, copy=True)

    def bad_rows(nz):
        v, g = vg(jnp.asarray(base + nz))
        return ~(np.isfinite(np.asarray(v)) & np.all(np.isfinite(np.asarray(g)), axis=-1))

    bad = bad_rows(noise)
    for _ in range(max_halvings):
        if not bad.any():
            return noise
        noise[bad] *= 0.5
        bad = bad_rows(noise)
    if bad.any():
        noise[bad] = 0.0
        if bad_rows(noise).any():
            raise ParameterError("the log density or its gradient is not finite at the workspace's inits; "
                                 "pass inits inside the support (measurement 'parameters' inits) or check the model")
    return noise


# ------------------------------------------------------------------ progress bar
def auto_progress() -> bool:
    """True in an interactive terminal or a notebook, False under CI, pytest or redirected output."""
    if os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("HF2PPL_NO_PROGRESS"):
        return False
    ipy = sys.modules.get("IPython")  # a running notebook has imported it; importing it here costs ~0.4 s
    if ipy is not None:
        try:
            ip = ipy.get_ipython()
            if ip is not None and type(ip).__name__ == "ZMQInteractiveShell":
                return True
        except Exception:  # noqa: BLE001 - IPython broken
            pass
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """A tqdm progress bar (silently absent when tqdm is not installed)."""

    _current: Progress | None = None
    _lock = threading.Lock()

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.bar = total, desc, None

    def __enter__(self) -> Progress:
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, leave=True, mininterval=0.2)
        except Exception:  # noqa: BLE001 - tqdm is optional; fall back to silence
            self.bar = None
        Progress._current = self
        return self

    def __exit__(self, *exc) -> None:
        Progress._current = None
        if self.bar is not None:
            self.bar.n = self.total if exc[0] is None else self.bar.n
            self.bar.refresh()
            self.bar.close()

    def set(self, n: int, desc: str | None = None) -> None:
        if self.bar is None:
            return
        with Progress._lock:
            if n > self.bar.n:
                self.bar.n = n
                if desc:
                    self.bar.set_description(desc, refresh=False)
                self.bar.refresh()



# ------------------------------------------------------------------ the BlackJAX chain
@functools.lru_cache(maxsize=32)
def stan_schedule(warmup: int, initial_buffer: int = 75, first_window: int = 25, final_buffer: int = 50) -> np.ndarray:
    """Stan's warmup schedule: rows ``(stage, is_slow_window_end)``; stage 0 fast, 1 slow.

    The same schedule as ``blackjax.adaptation.staged_adaptation.build_schedule`` (tested), in
    numpy: a fast initial buffer, slow windows doubling in size (the mass matrix is re-estimated at
    the end of each), a fast final buffer; under 20 steps only the step size is adapted.
    """
    if warmup < 20:
        out = np.zeros((warmup, 2), dtype=np.int32)
        out.setflags(write=False)
        return out
    if initial_buffer + first_window + final_buffer > warmup:
        initial_buffer = int(0.15 * warmup)
        final_buffer = int(0.1 * warmup)
        first_window = warmup - initial_buffer - final_buffer
    rows = [(0, 0)] * initial_buffer
    final_start = warmup - final_buffer
    size, start = first_window, initial_buffer
    while start < final_start:
        cur_start, cur_size = start, size
        if 3 * cur_size <= final_start - cur_start:
            size = 2 * cur_size
        else:
            cur_size = final_start - cur_start
        start = cur_start + cur_size
        rows += [(1, 0)] * (start - 1 - cur_start) + [(1, 1)]
    rows += [(0, 0)] * (warmup - final_start)
    out = np.asarray(rows, dtype=np.int32).reshape(warmup, 2)
    out.setflags(write=False)
    return out


def step_inputs(warmup: int, start: int, stop: int, total: int | None = None) -> tuple[np.ndarray, ...]:
    """Per-step inputs of steps ``start..stop-1``.

    ``(stage, slow-window end, in warmup, last warmup step, active)``; steps at or beyond ``total``
    (default: no limit) are inactive and skipped by the chunked sampler.
    """
    sched = stan_schedule(warmup)
    i = np.arange(start, stop)
    inw = i < warmup
    idx = np.clip(i, 0, max(warmup - 1, 0))
    stage = np.where(inw, sched[idx, 0] if warmup else 0, 0).astype(np.int32)
    wend = np.where(inw, sched[idx, 1] if warmup else 0, 0).astype(bool)
    active = np.ones(i.shape, bool) if total is None else i < total
    return stage, wend, inw, i == warmup - 1, active


def make_step(layout: Layout, *, method: str, opts: dict[str, Any]) -> tuple[Callable, Callable]:
    """``(init, step)`` of one chain of NUTS/HMC with Stan's window adaptation folded into the step.

    ``init(key, z0, data) -> carry``; ``step(carry, xs, data) -> (carry, out)`` with
    ``xs = (stage, slow_window_end, in_warmup, last_warmup_step)`` (see :func:`step_inputs`).
    The kernel's step size and inverse mass matrix are carried as runtime values, so warmup and
    draws share a single trace of the kernel, and the compiled step does not depend on the number
    of warmup steps or draws. During warmup, dual averaging adapts the step size and Welford's
    algorithm the (diagonal or dense) inverse mass matrix in Stan's doubling slow windows
    (BlackJAX's building blocks); the last warmup step sets the step size to the dual-averaging
    average, as Stan does.
    """
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.mcmc import hmc, nuts

    if method not in ("nuts", "hmc"):
        from ..errors import ParameterError

        raise ParameterError(f"method must be 'nuts' or 'hmc', got {method!r}")
    if method == "nuts":
        kernel = nuts.build_kernel()
        extra = {"max_num_doublings": int(opts.get("max_tree_depth", 10))}
    else:
        kernel = hmc.build_kernel()
        extra = {"num_integration_steps": int(opts.get("num_steps", 16))}
    target = float(opts.get("target_accept", 0.8))
    dense = bool(opts.get("dense_mass", False))
    step0 = float(opts.get("initial_step_size", 1.0))
    mm_init, mm_update, mm_final = mass_matrix_adaptation(not dense)
    da_init, da_update, da_final = dual_averaging_adaptation(target)

    def init(key, z0, data=None, potential=None):
        state = hmc.init(z0, potential or layout.potential(data))
        eps = jnp.asarray(step0, z0.dtype)
        mm = mm_init(layout.n)
        return key, state, da_init(eps), mm, eps, mm.inverse_mass_matrix.astype(z0.dtype)

    def adapt(args, st, we, last, position, acc):
        ss, mm, eps, imm = args
        acc = jnp.where(jnp.isfinite(acc), acc, 0.0)
        ss = da_update(ss, acc)
        mm = jax.lax.cond(st == 1, lambda m: mm_update(m, position), lambda m: m, mm)
        ss, mm = jax.lax.cond(we, lambda a: (da_init(da_final(a[0])), mm_final(a[1])), lambda a: a, (ss, mm))
        eps_new = jnp.where(last, jnp.exp(ss.log_step_size_avg), jnp.exp(ss.log_step_size))
        return ss, mm, eps_new.astype(eps.dtype), mm.inverse_mass_matrix.astype(imm.dtype)

    def step(carry, xs, data=None):
        key, state, ss, mm, eps, imm = carry
        st, we, inw, last = xs[:4]
        key, k = jax.random.split(key)
        state, info = kernel(k, state, layout.potential(data), eps, imm, **extra)
        ss, mm, eps, imm = jax.lax.cond(
            inw, lambda a: adapt(a, st, we, last, state.position, info.acceptance_rate), lambda a: a, (ss, mm, eps, imm))
        f = state.position.dtype
        out = {
            "z": state.position,
            "lp": state.logdensity.astype(f),
            "diverging": info.is_divergent.astype(bool),
            "energy": info.energy.astype(f),
            "acceptance_rate": info.acceptance_rate.astype(f),
            "n_steps": jnp.asarray(info.num_integration_steps).astype(jnp.int32),
            "step_size": eps.astype(f),
        }
        if method == "nuts":
            out["tree_depth"] = info.num_trajectory_expansions.astype(jnp.int32)
        return (key, state, ss, mm, eps, imm), out

    def empty_out(z):
        """Zeros shaped like ``step``'s output for position ``z`` (for skipped steps), without tracing it."""
        f = z.dtype
        out = {"z": jnp.zeros_like(z), "lp": jnp.zeros((), f), "diverging": jnp.zeros((), bool), "energy": jnp.zeros((), f),
               "acceptance_rate": jnp.zeros((), f), "n_steps": jnp.zeros((), jnp.int32), "step_size": jnp.zeros((), f)}
        if method == "nuts":
            out["tree_depth"] = jnp.zeros((), jnp.int32)
        return out

    step.empty_out = empty_out

    return init, step


def blackjax_chain_fn(layout: Layout, *, method: str, warmup: int, draws: int, opts: dict[str, Any]) -> Callable:
    """Pure function ``(key, z0, data) -> dict`` running one chain (warmup + draws) in one ``lax.scan``.

    For batches of chains or of data sets (simulation-based calibration): ``jax.vmap`` it.
    Returns ``z`` (draws, n) unconstrained draws and the per-draw statistics.
    """
    import jax

    init, step = make_step(layout, method=method, opts=opts)
    xs = step_inputs(warmup, 0, warmup + draws)

    def chain(key, z0, data=None):
        carry = init(key, z0, data)
        _, out = jax.lax.scan(lambda c, x: step(c, x, data), carry, xs)
        return {k: v[warmup:] for k, v in out.items()}

    return chain


def chain_threads(chains: int, chain_method: str | None = None) -> int:
    """How many host threads run the chains: ``"vectorized"`` → 1 (all chains ``vmap``-ed in one
    execution); ``"parallel"`` → one per usable core, at most one per chain; ``None`` (default) →
    ``"parallel"`` on a CPU backend (two XLA executions launched from two threads run on two cores at once,
    while one ``vmap``-ed execution uses one core), ``"vectorized"`` on an accelerator, whose lanes already run
    in parallel. ``HF2PPL_CHAINS=vectorized|parallel`` sets the default."""
    from ..errors import ParameterError

    choice = chain_method if chain_method is not None else os.environ.get("HF2PPL_CHAINS", "auto").strip().lower()
    if choice not in ("auto", "vectorized", "parallel"):
        raise ParameterError(f"chain_method must be 'vectorized' or 'parallel', got {choice!r}")
    if choice == "auto":
        import jax

        choice = "parallel" if jax.default_backend() == "cpu" else "vectorized"
    if choice == "vectorized":
        return 1
    from ._optimize import usable_cores

    return max(1, min(int(chains), usable_cores()))


class ChunkedSampler:
    """Chains ``vmap``-ed, steps in jitted ``lax.scan`` chunks of fixed length, driven from Python.

    One compiled chunk serves any number of warmup steps and draws (steps past the end of the run
    in the last chunk are skipped by a ``lax.cond``), so a second call with other lengths does not
    recompile. The chain initialisation (unconstraining the inits, the first
    gradient) happens inside the first chunk, so a first call compiles one function only. The
    Python loop dispatches the chunks asynchronously (or blocks per chunk to drive a progress bar).

    With ``threads`` > 1 the chains are split into that many equal groups (the last padded with copies
    of its first chain, whose draws are dropped, so that one compiled chunk serves every group), each
    group driven from its own host thread: on a CPU the groups run on separate cores. Chain ``i`` gets
    the same random stream (``split(PRNGKey(seed), chains)[i]``) and start whatever the grouping.
    """

    def __init__(self, layout: Layout, *, method: str, opts: dict[str, Any], chunk: int = 500,
                 compiler_options: dict | None = None):
        import jax

        self.layout, self.chunk = layout, int(chunk)
        init, step = make_step(layout, method=method, opts=opts)

        def init_chains(keys, z0, potential=None):
            return jax.vmap(lambda k, z: init(k, z, potential=potential))(keys, z0)

        def run_chunk(carry, xs, keys, z0, first):
            carry = jax.lax.cond(first, lambda c: init_chains(keys, z0), lambda c: c, carry)

            def maybe_step(c, x):  # steps past the end of the run (last chunk) are skipped
                return jax.lax.cond(x[4], step, lambda c, x: (c, step.empty_out(c[1].position)), c, x)

            def one(c):
                c, out = jax.lax.scan(maybe_step, c, xs)
                out["x"] = layout.constrain_only(out.pop("z"))
                return c, out

            return jax.vmap(one)(carry)

        self._init_shape = init_chains
        self._chunk = jax.jit(run_chunk, compiler_options=compiler_options)
        self._dummy: dict[int, Any] = {}
        self._compiled: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def _dummy_carry(self, keys, z0):
        import jax
        import jax.numpy as jnp

        c = z0.shape[0]
        if c not in self._dummy:  # shapes only: trace the init with a trivial potential (cheap)
            shapes = jax.eval_shape(lambda *a: self._init_shape(*a, potential=lambda z: -0.5 * jnp.sum(z * z)), keys, z0)
            self._dummy[c] = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        return self._dummy[c]

    def _executable(self, args):
        """The chunk compiled for these argument shapes, once (ahead of time, so that threads starting
        together do not each compile it)."""
        import jax

        sig = tuple((np.shape(a), np.result_type(a).str) for a in jax.tree.leaves(args))
        with self._lock:
            if sig not in self._compiled:
                self._compiled[sig] = self._chunk.lower(*args).compile()
            return self._compiled[sig]

    def _run_group(self, keys, z0, warmup, draws, done=None, g=0):
        import jax

        carry = self._dummy_carry(keys, z0)
        total, ch = warmup + draws, self.chunk
        outs = []
        for start in range(0, total, ch):
            xs = step_inputs(warmup, start, start + ch, total)
            args = (carry, xs, keys, z0, np.bool_(start == 0))
            carry, out = self._executable(args)(*args)
            if start + ch > warmup:  # keep only chunks that hold draws
                lo, hi = max(warmup - start, 0), min(total - start, ch)
                outs.append((lo, hi, out))
            if done is not None:
                jax.block_until_ready(carry)
                done(g, min(start + ch, total))
        host = jax.device_get([o for *_, o in outs])
        return {k: np.concatenate([h[k][:, lo:hi] for (lo, hi, _), h in zip(outs, host)], axis=1) for k in host[0]}

    def run(self, seed: int, x0: np.ndarray, noise: np.ndarray, *, warmup: int, draws: int,
            progress: Progress | None = None, threads: int = 1) -> dict[str, np.ndarray]:
        """Run ``warmup + draws`` steps per chain; returns host arrays (chains, draws, ...).

        ``x0``: constrained initial free vector (n,); ``noise``: (chains, n) jitter added on the
        unconstrained scale; ``seed``: integer seed of the chains' random streams; ``threads``: host
        threads driving groups of chains (see the class docstring).
        """
        import jax

        chains = noise.shape[0]
        keys = np.asarray(jax.random.split(jax.random.PRNGKey(np.uint32(seed % 2**32)), chains))
        z0 = self.layout.unconstrain(np.asarray(x0, dtype=noise.dtype))
        z0 = np.where(np.isfinite(z0), z0, 0.0) + noise
        threads = max(1, min(int(threads), chains))
        done = None
        if progress is not None:
            steps = [0] * threads

            def done(g, n):
                steps[g] = n
                m = min(steps)
                progress.set(m, "warmup" if m <= warmup else "sampling")

        if threads == 1:
            return self._run_group(keys, z0, warmup, draws, done)
        size = -(-chains // threads)
        pad = np.r_[np.arange(chains), np.zeros(size * threads - chains, int)]  # padding: copies of chain 0
        groups = [pad[g * size:(g + 1) * size] for g in range(threads)]
        from concurrent.futures import ThreadPoolExecutor

        self._executable((self._dummy_carry(keys[groups[0]], z0[groups[0]]), step_inputs(warmup, 0, self.chunk, warmup + draws),
                          keys[groups[0]], z0[groups[0]], np.bool_(True)))  # compile before the threads start
        with ThreadPoolExecutor(threads) as pool:
            futs = [pool.submit(self._run_group, keys[idx], z0[idx], warmup, draws, done, g) for g, idx in enumerate(groups)]
            parts = [f.result() for f in futs]
        res = {k: np.concatenate([p[k] for p in parts], axis=0)[:chains] for k in parts[0]}
        return res
