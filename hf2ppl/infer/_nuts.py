"""Fast HMC/NUTS on a compiled NumPyro model: chains ``vmap``-ed, steps in a jitted ``lax.scan``.

Why not ``numpyro.infer.MCMC``? For small HistFactory models the gradient costs
microseconds, so the sampler's own overhead dominates: NumPyro traces the model
through its effect handlers to build the potential, collects fields through
Python-side post-processing, and re-traces on every ``MCMC`` object. Here the
potential is built directly from the compiled model's pure log density over the
*unconstrained* free vector ``z``:

.. math::

    \\log p(z) = \\log p(\\theta(x(z))) + \\log\\left|\\frac{\\partial x}{\\partial z}\\right|,

where ``x = T(z)`` maps each sample site through ``numpyro``'s ``biject_to`` of its
prior's support (interval → scaled sigmoid, positive → exp, real → identity).
BlackJAX's NUTS/HMC kernel is traced once: Stan's window adaptation is folded
into the step (step size and mass matrix are carried as runtime values), the
steps run in jitted ``lax.scan`` chunks of fixed length with chains ``vmap``-ed,
and the compiled chunk is cached on the model, so a second call does not
retrace, whatever its number of warmup steps or draws.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Layout", "make_step", "blackjax_chain_fn", "ChunkedSampler", "auto_progress", "Progress", "get_cache", "KERNEL_ALIASES"]

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


def get_cache(model: Any) -> dict:
    """Per-model cache of jitted functions (lives as long as the model)."""
    cache = model.__dict__.get("_hf2ppl_bayes_cache")
    if cache is None:
        cache = {}
        model.__dict__["_hf2ppl_bayes_cache"] = cache
    return cache


class Layout:
    """The free components of a compiled model, site by site, and their bijections to R^n.

    ``x`` is the constrained free vector (the model's ``_free`` order, which is the
    concatenation of the sample sites in parameter order); ``z`` the unconstrained one.
    """

    def __init__(self, model: Any):
        from numpyro.distributions.transforms import biject_to

        self.model = model
        dists = model.site_distributions()
        self.sites: list[tuple[str, bool, int, int]] = []
        off = 0
        for p in model.free_parameters:
            self.sites.append((p.name, p.is_scalar, p.n_free, off))
            off += p.n_free
        self.n = off
        self.transforms = {name: biject_to(dists[name].support) for name, *_ in self.sites}

    def _parts(self, v):
        for name, scalar, n, off in self.sites:
            yield name, scalar, (v[..., off] if scalar else v[..., off:off + n])

    def constrain(self, z):
        """``(x, log|dx/dz|)`` for one unconstrained vector ``z`` of shape (n,)."""
        import jax.numpy as jnp

        xs, ld = [], 0.0
        for name, _scalar, zi in self._parts(z):
            t = self.transforms[name]
            xi = t(zi)
            ld = ld + jnp.sum(t.log_abs_det_jacobian(zi, xi))
            xs.append(jnp.reshape(xi, (-1,)))
        return jnp.concatenate(xs), ld

    def constrain_only(self, z):
        """``x`` for unconstrained vectors of any batch shape (..., n)."""
        import jax.numpy as jnp

        xs = []
        for name, scalar, zi in self._parts(z):
            xi = self.transforms[name](zi)
            xs.append(xi[..., None] if scalar else xi)
        return jnp.concatenate(xs, axis=-1)

    def unconstrain(self, x):
        """``z`` for constrained vectors of any batch shape (..., n)."""
        import jax.numpy as jnp

        zs = []
        for name, scalar, xi in self._parts(x):
            zi = self.transforms[name].inv(xi)
            zs.append(zi[..., None] if scalar else zi)
        return jnp.concatenate(zs, axis=-1)

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

    def init_z(self, key, chains: int, jitter: float = 0.5):
        """Initial unconstrained positions (chains, n): the model's inits, jittered uniformly by ±``jitter``."""
        import jax
        import jax.numpy as jnp

        x0 = self.join({k: jnp.asarray(v) for k, v in self.model.init_params().items()})
        z0 = self.unconstrain(x0)
        z0 = jnp.where(jnp.isfinite(z0), z0, 0.0)
        return z0 + jax.random.uniform(key, (chains, self.n), minval=-jitter, maxval=jitter, dtype=z0.dtype)

    def potential(self, data=None) -> Callable:
        """Log density of ``z`` (unconstrained, with the log-Jacobian)."""
        m = self.model

        def logdensity(z, data=data):
            x, ld = self.constrain(z)
            return m.logdensity_flat(m.from_free(x), data) + ld

        return logdensity


# ------------------------------------------------------------------ progress bar
def auto_progress() -> bool:
    """True in an interactive terminal or a notebook, False under CI, pytest or redirected output."""
    if os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST") or os.environ.get("HF2PPL_NO_PROGRESS"):
        return False
    try:  # notebooks
        from IPython import get_ipython  # type: ignore

        ip = get_ipython()
        if ip is not None and type(ip).__name__ == "ZMQInteractiveShell":
            return True
    except Exception:  # noqa: BLE001 - IPython absent or broken
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
def stan_schedule(warmup: int) -> np.ndarray:
    """Stan's warmup schedule: rows ``(stage, is_slow_window_end)``; stage 0 fast, 1 slow."""
    from blackjax.adaptation.staged_adaptation import build_schedule

    if warmup == 0:
        return np.zeros((0, 2), dtype=np.int32)
    return np.asarray(build_schedule(warmup), dtype=np.int32).reshape(warmup, 2)


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

    def init(key, z0, data=None):
        state = hmc.init(z0, layout.potential(data))
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
        out = {
            "z": state.position,
            "lp": state.logdensity,
            "diverging": info.is_divergent,
            "energy": info.energy,
            "acceptance_rate": info.acceptance_rate,
            "n_steps": info.num_integration_steps,
            "step_size": eps,
        }
        if method == "nuts":
            out["tree_depth"] = info.num_trajectory_expansions
        return (key, state, ss, mm, eps, imm), out

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


class ChunkedSampler:
    """Chains ``vmap``-ed, steps in jitted ``lax.scan`` chunks of fixed length, driven from Python.

    One compiled chunk serves any number of warmup steps and draws (steps past the end of the run
    in the last chunk are skipped by a ``lax.cond``), so a second call with other lengths does not
    recompile. The chain initialisation (unconstraining the inits, the first
    gradient) happens inside the first chunk, so a first call compiles one function only. The
    Python loop dispatches the chunks asynchronously (or blocks per chunk to drive a progress bar).
    """

    def __init__(self, layout: Layout, *, method: str, opts: dict[str, Any], chunk: int = 500,
                 compiler_options: dict | None = None):
        import jax
        import jax.numpy as jnp

        self.layout, self.chunk = layout, int(chunk)
        init, step = make_step(layout, method=method, opts=opts)

        def init_chains(seed, x0, noise):
            z0 = layout.unconstrain(jnp.asarray(x0, noise.dtype))
            z0 = jnp.where(jnp.isfinite(z0), z0, 0.0) + noise
            keys = jax.random.split(jax.random.PRNGKey(seed), noise.shape[0])
            return jax.vmap(init)(keys, z0)

        def run_chunk(carry, xs, seed, x0, noise, first):
            carry = jax.lax.cond(first, lambda c: init_chains(seed, x0, noise), lambda c: c, carry)

            def maybe_step(c, x):  # steps past the end of the run (last chunk) are skipped
                shapes = jax.eval_shape(step, c, x)
                return jax.lax.cond(x[4], step, lambda c, x: (c, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1])), c, x)

            def one(c):
                c, out = jax.lax.scan(maybe_step, c, xs)
                out["x"] = layout.constrain_only(out.pop("z"))
                return c, out

            return jax.vmap(one)(carry)

        self._init_shape = init_chains
        self._chunk = jax.jit(run_chunk, compiler_options=compiler_options)
        self._dummy: dict[int, Any] = {}

    def _dummy_carry(self, seed, x0, noise):
        import jax

        c = noise.shape[0]
        if c not in self._dummy:
            shapes = jax.eval_shape(self._init_shape, seed, x0, noise)
            self._dummy[c] = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        return self._dummy[c]

    def run(self, seed: int, x0: np.ndarray, noise: np.ndarray, *, warmup: int, draws: int,
            progress: Progress | None = None) -> dict[str, np.ndarray]:
        """Run ``warmup + draws`` steps per chain; returns host arrays (chains, draws, ...).

        ``x0``: constrained initial free vector (n,); ``noise``: (chains, n) jitter added on the
        unconstrained scale; ``seed``: integer seed of the chains' random streams.
        """
        import jax

        seed = np.uint32(seed % 2**32)
        x0 = np.asarray(x0, dtype=noise.dtype)
        carry = self._dummy_carry(seed, x0, noise)
        total, ch = warmup + draws, self.chunk
        outs = []
        for start in range(0, total, ch):
            xs = step_inputs(warmup, start, start + ch, total)
            carry, out = self._chunk(carry, xs, seed, x0, noise, np.bool_(start == 0))
            if start + ch > warmup:  # keep only chunks that hold draws
                lo, hi = max(warmup - start, 0), min(total - start, ch)
                outs.append((lo, hi, out))
            if progress is not None:
                jax.block_until_ready(carry)
                progress.set(min(start + ch, total), "warmup" if start + ch <= warmup else "sampling")
        host = jax.device_get([o for *_, o in outs])
        res = {}
        for k in host[0]:
            res[k] = np.concatenate([h[k][:, lo:hi] for (lo, hi, _), h in zip(outs, host)], axis=1)
        return res
