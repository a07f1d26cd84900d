"""IR → NumPyro model and a pure JAX log-density.

The HistFactory math comes from :mod:`hf2ppl.histfactory` with the JAX
namespace; this module only supplies distributions and sample sites.

Float64: JAX computes in float32 unless ``jax_enable_x64`` is on. Compiling a
``dtype="float64"`` model turns that flag on (``jax.config.update``), once, at
``compile`` time — never at import. It is a process-wide JAX setting: arrays a
user creates afterwards default to float64 too. Pass ``dtype="float32"`` to
leave the flag untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import histfactory as hf
from .. import priors as P
from .._jaxcache import enable_compilation_cache
from ..compiled import CompiledModel
from ..errors import ParameterError
from ..xp import jax_namespace

__all__ = ["NumPyroModel", "ensure_x64"]
log = logging.getLogger(__name__)


def ensure_x64() -> None:
    """Enable JAX float64 (process-wide) if it is off; logs once at INFO level."""
    import jax

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
        log.info("hf2ppl: enabled jax_enable_x64 for a float64 model (pass dtype='float32' to avoid)")


def numpyro_distribution(prior: P.Prior, scalar: bool):
    """Lower an :mod:`hf2ppl.priors` object to a NumPyro distribution (event shape () or (n,))."""
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints as C

    v = {k: (jnp.asarray(a.reshape(())) if scalar else jnp.asarray(a)) for k, a in prior.values().items()}
    if isinstance(prior, P.Uniform):
        d = dist.Uniform(v["low"], v["high"])
    elif isinstance(prior, P.Flat):
        shape = () if scalar else np.shape(prior.values()["low"])
        return dist.ImproperUniform(C.interval(v["low"], v["high"]), (), shape)
    elif isinstance(prior, P.Normal):
        d = dist.Normal(v["loc"], v["scale"])
    elif isinstance(prior, P.HalfNormal):
        d = dist.HalfNormal(v["scale"])
    elif isinstance(prior, P.LogNormal):
        d = dist.LogNormal(v["loc"], v["scale"])
    elif isinstance(prior, P.Gamma):
        d = dist.Gamma(v["concentration"], v["rate"])
    else:  # pragma: no cover - all Prior subclasses are handled above
        raise ParameterError(f"prior {prior!r} has no NumPyro lowering")
    return d if scalar or d.batch_shape == () else d.to_event(1)


def _continuous_poisson():
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints as C

    class ContinuousPoisson(dist.Distribution):
        """Poisson(rate) whose log density accepts any non-negative real count (as pyhf's):
        ``n log(rate) - rate - lgamma(n + 1)``. Samples are ordinary Poisson integers (as floats)."""

        arg_constraints = {"rate": C.nonnegative}
        support = C.nonnegative
        reparametrized_params = ()

        def __init__(self, rate, *, validate_args=None):
            self.rate = rate
            super().__init__(jnp.shape(rate), validate_args=validate_args)

        def sample(self, key, sample_shape=()):
            shape = sample_shape + self.batch_shape
            return jax.random.poisson(key, self.rate, shape).astype(jnp.result_type(self.rate))

        def log_prob(self, value):
            return hf.poisson_logpdf(jax_namespace(), value, self.rate)

        @property
        def mean(self):
            return self.rate

        @property
        def variance(self):
            return self.rate

    return ContinuousPoisson


_CP = None


def continuous_poisson(rate):
    """A :class:`ContinuousPoisson` NumPyro distribution (built lazily to keep imports light)."""
    global _CP
    if _CP is None:
        _CP = _continuous_poisson()
    return _CP(rate)


class NumPyroModel(CompiledModel):
    """A workspace compiled to NumPyro/JAX. See :func:`hf2ppl.compile`.

    Attributes (beyond :class:`~hf2ppl.compiled.CompiledModel`):
        model: the NumPyro model ``model(data=None, record_expected=False)``: one sample site per
            parameter set with free components (named as in the workspace; vector sets hold their free
            components), one observed Poisson site per channel (named after the channel), and in
            ``"aux"`` mode one observed site ``aux_<name>`` per constrained parameter set.
        logdensity: pure, jit-able, differentiable JAX function of ``params`` (dict or flat array in
            ``par_names`` order) and optional ``data``.
    """

    target = "numpyro"

    def __init__(self, spec, ir, constraints="prior", priors=None, dtype="float64"):
        super().__init__(spec, ir, constraints, priors, dtype)
        if dtype == "float64":
            ensure_x64()
        enable_compilation_cache()
        import jax.numpy as jnp

        self._xp = jax_namespace()
        self._T = hf.tensors(ir, dtype)
        self._jinit = jnp.asarray(ir.init, dtype=dtype)
        self._dists: dict[str, Any] | None = None
        self.model = self._model

    # ------------------------------------------------------------ parameters
    def to_theta(self, params: Any):
        """Full flat parameter vector (``par_names`` order) from a dict or a flat array."""
        import jax.numpy as jnp

        if isinstance(params, Mapping):
            return self._assemble([(idx, jnp.reshape(jnp.asarray(value, dtype=self.dtype), (n,)))
                                   for idx, value, n in self._param_assignments(params)])
        theta = jnp.asarray(params, dtype=self.dtype)
        self._check_flat(theta.shape)
        return theta

    def _assemble(self, items):
        """The flat vector from ``(flat indices, values)`` pieces in ONE concatenate + gather (not one scatter
        per parameter set: real workspaces have a hundred sets, and this runs inside every density call)."""
        import jax.numpy as jnp

        if not items:
            return self._jinit
        P = self.ir.npars
        idx = np.concatenate([np.atleast_1d(np.arange(P)[i]) for i, _ in items])
        if np.unique(idx).size != idx.size:  # overlapping pieces: later ones win, as sequential assignment
            theta = self._jinit
            for i, v in items:
                theta = theta.at[i].set(v)
            return theta
        perm = np.arange(P)
        perm[idx] = P + np.arange(idx.size)
        return jnp.concatenate([self._jinit, *[v for _, v in items]])[perm]

    def from_free(self, free):
        """Full flat vector from the free components only (fixed ones at their init)."""
        return self._jinit.at[self._free].set(free)

    # ------------------------------------------------------------ densities
    def logdensity(self, params: Any, data: Any = None):
        """Log density at ``params``.

        ``"aux"`` mode: pyhf's ``model.logpdf`` (Poisson main terms + constraint terms), plus the log
        density of any non-flat user prior on free parameters. ``"prior"`` mode: Poisson main terms +
        log priors of the free components (log posterior up to the evidence).
        ``data``: None (observed), main counts (B,), or main + auxdata (pyhf layout).
        """
        return self.logdensity_flat(self.to_theta(params), data)

    def logdensity_flat(self, theta, data: Any = None, skip_priors: tuple[int, ...] = ()):
        """:meth:`logdensity` of a full flat vector (no dict handling; for jit/vmap/grad). ``skip_priors``: prior
        groups (``PriorPlan.groups`` positions) left out, for a caller that evaluates them itself."""
        main, aux = self._split_data(data)
        xp = self._xp
        lp = hf.main_logpdf(xp, self._T, theta, main)
        if self.constraints == "aux":
            lp = lp + hf.constraint_logpdf(xp, self._T, theta, aux)
        return lp + self._prior_plan.logpdf(xp, theta, self.dtype, skip_priors)

    def expected_data(self, params: Any, include_auxdata: bool = True):
        """Expected main counts (and auxdata expectations, pyhf layout), like pyhf's ``expected_data``."""
        import jax.numpy as jnp

        theta = self.to_theta(params)
        main = hf.expected_main(self._xp, self._T, theta)
        if not include_auxdata:
            return main
        return jnp.concatenate([main, hf.expected_auxdata(self._xp, self._T, theta)])

    def expected_rates(self, params: Any):
        """Expected rate per sample and bin, shape (samples, bins)."""
        return hf.expected_rates(self._xp, self._T, self.to_theta(params))

    # ------------------------------------------------------------ the NumPyro model
    def site_distributions(self) -> dict[str, Any]:
        """The NumPyro distribution of each parameter sample site."""
        if self._dists is None:
            self._dists = {p.name: numpyro_distribution(self.priors[p.name], p.is_scalar) for p in self.free_parameters}
        return self._dists

    def _model(self, data: Any = None, record_expected: bool = False):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        dists = self.site_distributions()
        theta = self._assemble([(self._site_index[p.name], jnp.reshape(numpyro.sample(p.name, dists[p.name]), (-1,)))
                                for p in self.free_parameters])
        main, aux = self._split_data(data)
        n = jnp.asarray(self.ir.observed if main is None else main, dtype=self.dtype)
        lam = hf.expected_main(self._xp, self._T, theta)
        for c in self.ir.channels:
            lam_c = lam[..., c.slice]
            if record_expected:
                numpyro.deterministic(f"expected_{c.name}", lam_c)
            numpyro.sample(self.channel_site(c.name), continuous_poisson(lam_c).to_event(1), obs=n[..., c.slice])
        if self.constraints == "aux":
            a = jnp.asarray(self.ir.auxdata if aux is None else aux, dtype=self.dtype)
            pos = 0
            for p in self.ir.parameters:
                if p.constraint is None:
                    continue
                th = theta[p.slice]
                ap = a[pos:pos + p.size]
                pos += p.size
                if p.constraint == "normal":
                    d = dist.Normal(th, jnp.asarray(p.sigmas, dtype=self.dtype))
                else:
                    d = continuous_poisson(th * jnp.asarray(p.factors, dtype=self.dtype))
                numpyro.sample(f"aux_{p.name}", d.to_event(1), obs=ap)

    def channel_site(self, channel: str) -> str:
        """Name of the observed site of ``channel`` (the channel name, unless a parameter has it)."""
        return channel if channel not in self.ir.par_map else f"obs_{channel}"
