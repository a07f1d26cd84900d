"""Fast HMC/NUTS on a compiled NumPyro model: one ``jit``, chains ``vmap``-ed, draws in a ``lax.scan``.

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
Stan's window adaptation (``blackjax.window_adaptation``) and the draws run in
one jitted function, vmapped over chains, and cached per model and settings, so
a second call with the same shapes does not retrace.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Layout", "blackjax_chain_fn", "auto_progress", "Progress", "get_cache", "KERNEL_ALIASES"]

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
    """A tqdm bar fed from inside jitted code through ``jax.debug.callback`` (host side)."""

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

    @staticmethod
    def tick(i, warmup: int) -> None:
        cur = Progress._current
        if cur is not None:
            cur.set(int(i), "warmup" if int(i) < warmup else "sampling")


# ------------------------------------------------------------------ the BlackJAX chain
def stan_schedule(warmup: int) -> np.ndarray:
    """Stan's warmup schedule: rows ``(stage, is_slow_window_end)``; stage 0 fast, 1 slow."""
    from blackjax.adaptation.staged_adaptation import build_schedule

    if warmup == 0:
        return np.zeros((0, 2), dtype=np.int32)
    return np.asarray(build_schedule(warmup), dtype=np.int32).reshape(warmup, 2)


def blackjax_chain_fn(layout: Layout, *, method: str, warmup: int, draws: int, opts: dict[str, Any],
                      progress_every: int = 0) -> Callable:
    """Pure function ``(key, z0, data) -> dict`` running one chain (warmup + draws); vmap it over chains.

    Warmup and draws are **one** ``lax.scan`` over ``warmup + draws`` steps with a single trace of
    the BlackJAX NUTS (or HMC) kernel; during the first ``warmup`` steps Stan's window adaptation
    (dual averaging of the step size, Welford estimate of the diagonal or dense inverse mass matrix
    in doubling slow windows, BlackJAX's building blocks) updates the kernel's parameters, which
    are carried as runtime values. Tracing the kernel once halves the compile time compared with
    ``blackjax.window_adaptation`` followed by a separate sampling scan.

    Returns a dict of arrays: ``z`` (draws, n) unconstrained draws, ``diverging``, ``energy``,
    ``n_steps``, ``acceptance_rate``, ``lp`` (draws,), ``tree_depth`` (NUTS), ``step_size`` (scalar),
    ``inverse_mass_matrix``.
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
    sched = stan_schedule(warmup)
    total = warmup + draws
    stage = np.concatenate([sched[:, 0], np.zeros(draws, np.int32)])
    wend = np.concatenate([sched[:, 1], np.zeros(draws, np.int32)]).astype(bool)

    def chain(key, z0, data=None):
        logdensity = layout.potential(data)
        state = hmc.init(z0, logdensity)
        ss = da_init(jnp.asarray(step0, z0.dtype))
        mm = mm_init(layout.n)
        eps = jnp.asarray(step0, z0.dtype)
        imm = mm.inverse_mass_matrix.astype(z0.dtype)

        def adapt(args, i, st, we, position, acc):
            ss, mm, eps, imm = args
            acc = jnp.where(jnp.isfinite(acc), acc, 0.0)
            ss = da_update(ss, acc)
            mm = jax.lax.cond(st == 1, lambda m: mm_update(m, position), lambda m: m, mm)
            ss, mm = jax.lax.cond(we, lambda a: (da_init(da_final(a[0])), mm_final(a[1])), lambda a: a, (ss, mm))
            eps = jnp.where(i == warmup - 1, jnp.exp(ss.log_step_size_avg), jnp.exp(ss.log_step_size))
            return ss, mm, eps.astype(z0.dtype), mm.inverse_mass_matrix.astype(z0.dtype)

        def body(carry, xs):
            state, ss, mm, eps, imm = carry
            i, k, st, we = xs
            state, info = kernel(k, state, logdensity, eps, imm, **extra)
            if warmup:
                ss, mm, eps, imm = jax.lax.cond(
                    i < warmup, lambda a: adapt(a, i, st, we, state.position, info.acceptance_rate), lambda a: a, (ss, mm, eps, imm))
            if progress_every:
                jax.lax.cond(i % progress_every == 0, lambda: jax.debug.callback(Progress.tick, i, warmup), lambda: None)
            out = {
                "z": state.position,
                "lp": state.logdensity,
                "diverging": info.is_divergent,
                "energy": info.energy,
                "acceptance_rate": info.acceptance_rate,
                "n_steps": info.num_integration_steps,
            }
            if method == "nuts":
                out["tree_depth"] = info.num_trajectory_expansions
            return (state, ss, mm, eps, imm), out

        keys = jax.random.split(key, total)
        (_, _, _, eps, imm), out = jax.lax.scan(body, (state, ss, mm, eps, imm), (jnp.arange(total), keys, stage, wend))
        out = {k: v[warmup:] for k, v in out.items()}
        out["step_size"] = eps
        out["inverse_mass_matrix"] = imm
        return out

    return chain


def to_numpy(tree: Any) -> Any:
    import jax

    return jax.tree.map(np.asarray, tree)
