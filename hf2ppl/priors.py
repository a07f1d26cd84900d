r"""Backend-neutral prior objects and the default priors implied by constraints.

Default priors in ``constraints="prior"`` mode (see docs/priors.md):

* normal-constrained sets (normsys, histosys, lumi, staterror):
  :math:`\theta \sim \mathcal N(a, \sigma)` with the set's aux data :math:`a` and width :math:`\sigma`;
* Poisson-constrained sets (shapesys): the conjugate posterior of the constraint
  :math:`\mathrm{Pois}(a \mid \tau\gamma)` under a flat ur-prior,
  :math:`\gamma \sim \mathrm{Gamma}(\alpha = a + 1, \beta = \tau)` (rate parametrisation);
* free sets (normfactor, shapefactor): :math:`\mathrm{Uniform}(\text{bounds})`.

Each prior's log density is written once against an array namespace ``xp`` and
is lowered to NumPyro or PyMC distributions by the targets. Parameters may be
scalars or arrays (one value per component of a vector parameter set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["Prior", "Uniform", "Normal", "HalfNormal", "LogNormal", "Gamma", "Flat", "default_prior"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _namespace(xp):
    """An :mod:`hf2ppl.xp` namespace for ``xp`` (the numpy and jax.numpy modules lack ``xlogy``/``gammaln``)."""
    from . import xp as X

    name = getattr(xp, "__name__", None)
    if name == "numpy":
        return X.numpy_namespace()
    if name == "jax.numpy":
        return X.jax_namespace()
    return xp


class Prior:
    """Base class. Subclasses define ``params`` (names), ``support`` and ``_logpdf``."""

    params: ClassVar[tuple[str, ...]] = ()
    support: ClassVar[str] = "real"  # "real" | "positive" | "interval" | "bounds"

    def values(self) -> dict[str, np.ndarray]:
        return {k: _arr(getattr(self, k)) for k in self.params}

    def logpdf(self, xp, x, **params):
        """Elementwise log density at ``x`` (``params`` default to this prior's).

        ``xp``: an :mod:`hf2ppl.xp` namespace, or the ``numpy`` / ``jax.numpy`` module itself.

        Example:
            >>> import numpy as np
            >>> round(float(Gamma(2.0, 1.5).logpdf(np, 1.0)), 6)
            -0.68907
        """
        p = params or self.values()
        return type(self)._logpdf(_namespace(xp), x, **p)

    def interval(self, bounds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) arrays of an interval support, else None."""
        return None

    def broadcast(self, n: int) -> dict[str, np.ndarray]:
        return {k: np.broadcast_to(v, (n,)).astype(float) for k, v in self.values().items()}

    def __repr__(self) -> str:  # compact, shows arrays as lists
        args = ", ".join(f"{k}={np.round(_arr(getattr(self, k)), 6).tolist()}" for k in self.params)
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True, repr=False)
class _OnBounds(Prior):
    """A prior on an interval; without ``low``/``high`` the interval is the parameter's bounds."""

    low: Any = None
    high: Any = None
    params: ClassVar = ("low", "high")
    support: ClassVar = "interval"

    def with_bounds(self, bounds: np.ndarray):
        lo = bounds[:, 0] if self.low is None else self.low
        hi = bounds[:, 1] if self.high is None else self.high
        return type(self)(_arr(lo), _arr(hi))

    def interval(self, bounds=None):
        return _arr(self.low), _arr(self.high)


@dataclass(frozen=True, repr=False)
class Uniform(_OnBounds):
    """Uniform(low, high); ``Uniform()`` means uniform over the parameter's bounds."""

    @staticmethod
    def _logpdf(xp, x, low, high):
        inside = (x >= low) * (x <= high)
        return xp.where(inside, -xp.log(high - low) + 0.0 * x, -np.inf)


@dataclass(frozen=True, repr=False)
class Flat(_OnBounds):
    """Improper flat prior (log density 0) on the parameter's bounds (or on [low, high])."""

    @staticmethod
    def _logpdf(xp, x, low, high):
        inside = (x >= low) * (x <= high)
        return xp.where(inside, 0.0 * x, -np.inf)


@dataclass(frozen=True, repr=False)
class Normal(Prior):
    """Normal(loc, scale)."""

    loc: Any = 0.0
    scale: Any = 1.0
    params: ClassVar = ("loc", "scale")

    @staticmethod
    def _logpdf(xp, x, loc, scale):
        z = (x - loc) / scale
        return -0.5 * z * z - xp.log(scale) - _HALF_LOG_2PI


@dataclass(frozen=True, repr=False)
class HalfNormal(Prior):
    """HalfNormal(scale) on x >= 0."""

    scale: Any = 1.0
    params: ClassVar = ("scale",)
    support: ClassVar = "positive"

    @staticmethod
    def _logpdf(xp, x, scale):
        z = x / scale
        return xp.where(x >= 0, math.log(2.0) - 0.5 * z * z - xp.log(scale) - _HALF_LOG_2PI, -np.inf)


@dataclass(frozen=True, repr=False)
class LogNormal(Prior):
    """LogNormal(loc, scale): log(x) ~ Normal(loc, scale)."""

    loc: Any = 0.0
    scale: Any = 1.0
    params: ClassVar = ("loc", "scale")
    support: ClassVar = "positive"

    @staticmethod
    def _logpdf(xp, x, loc, scale):
        lx = xp.log(x)
        z = (lx - loc) / scale
        return -0.5 * z * z - xp.log(scale) - _HALF_LOG_2PI - lx


@dataclass(frozen=True, repr=False)
class Gamma(Prior):
    """Gamma(concentration, rate): density ∝ x^(concentration-1) exp(-rate x)."""

    concentration: Any = 1.0
    rate: Any = 1.0
    params: ClassVar = ("concentration", "rate")
    support: ClassVar = "positive"

    @staticmethod
    def _logpdf(xp, x, concentration, rate):
        return concentration * xp.log(rate) + xp.xlogy(concentration - 1.0, x) - rate * x - xp.gammaln(concentration)


def default_prior(pset) -> Prior:
    """The prior implied by a parameter set's constraint and aux data (see module docstring)."""
    free = pset.free_mask
    if pset.constraint == "normal":
        return Normal(_arr(pset.auxdata)[free], _arr(pset.sigmas)[free])
    if pset.constraint == "poisson":
        return Gamma(_arr(pset.auxdata)[free] + 1.0, _arr(pset.factors)[free])
    return Uniform().with_bounds(np.asarray(pset.bounds, float).reshape(-1, 2)[free])


# ------------------------------------------------------------------ resolution and vectorised evaluation
class PriorPlan:
    """Priors of all free components, grouped by prior family for vectorised evaluation.

    ``groups`` is a list of ``(PriorClass, flat parameter indices, {param: array})``.
    """

    def __init__(self, ir, priors: dict[str, Prior]):
        by_cls: dict[type, tuple[list, dict[str, list]]] = {}
        for pset in ir.parameters:
            if pset.name not in priors:
                continue
            prior = priors[pset.name]
            idx = pset.start + np.flatnonzero(pset.free_mask)
            entry = by_cls.setdefault(type(prior), ([], {k: [] for k in prior.params}))
            entry[0].append(idx)
            for k, v in prior.broadcast(len(idx)).items():
                entry[1][k].append(v)
        self.groups = [
            (cls, np.concatenate(idx).astype(np.int32), {k: np.concatenate(v) for k, v in params.items()})
            for cls, (idx, params) in by_cls.items()
        ]
        from .histfactory import _index

        # a contiguous group is read as a slice (a gather's gradient is a scatter-add)
        self._reads = [_index(idx) for _cls, idx, _p in self.groups]

    def logpdf(self, xp, theta, dtype=None, skip: tuple[int, ...] = ()):
        """Sum of the log prior densities of all free components of ``theta`` (``skip``: groups left out, e.g.
        evaluated on the sampler's unconstrained scale, see :meth:`log_scale_terms`)."""
        total = 0.0
        for g, ((cls, _idx, params), read) in enumerate(zip(self.groups, self._reads)):
            if g in skip:
                continue
            p = {k: (v.astype(dtype) if dtype is not None else v) for k, v in params.items()}
            total = total + xp.sum(cls._logpdf(xp, theta[read], **p))
        return total


def log_scale_terms(cls: type, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(c, a, r)`` with ``log p(x) = c + a·log x - r·x`` for a prior family of that form on ``x > 0``
    (Gamma; ``None`` for the others): a sampler that moves in ``log x`` evaluates it without a logarithm."""
    if cls is Gamma:
        k, r = np.asarray(params["concentration"], float), np.asarray(params["rate"], float)
        from scipy.special import gammaln

        return k * np.log(r) - gammaln(k), k - 1.0, r
    return None


def resolve(ir, user: dict[str, Prior] | None) -> dict[str, Prior]:
    """One prior per parameter set with free components: the user's, else :func:`default_prior`.

    ``Uniform()``/``Flat()`` without limits take the parameter's bounds; scalar
    parameters broadcast to the set's free components.
    """
    from .errors import ParameterError

    user = dict(user or {})
    pmap = ir.par_map
    for name, prior in user.items():
        if name not in pmap:
            raise ParameterError(f"priors: {name!r} is not a parameter of the model; parameters: {list(pmap)[:20]}")
        if not isinstance(prior, Prior):
            raise ParameterError(f"priors[{name!r}] must be an hf2ppl.priors object (Uniform, Normal, ...), got {type(prior).__name__}")
        if pmap[name].all_fixed:
            raise ParameterError(f"priors: parameter {name!r} is fixed in the measurement; unfix it to give it a prior")
    out: dict[str, Prior] = {}
    for pset in ir.parameters:
        if pset.all_fixed:
            continue
        prior = user.get(pset.name) or default_prior(pset)
        bounds = np.asarray(pset.bounds, float).reshape(-1, 2)[pset.free_mask]
        if isinstance(prior, (Uniform, Flat)):
            prior = prior.with_bounds(bounds)
        for k, v in prior.values().items():
            if v.ndim > 1 or (v.ndim == 1 and v.shape[0] not in (1, pset.n_free)):
                raise ParameterError(f"priors[{pset.name!r}].{k} has shape {v.shape}; expected a scalar or {pset.n_free} values")
            if not np.all(np.isfinite(v)):
                raise ParameterError(f"priors[{pset.name!r}].{k} is not finite: {v}")
        out[pset.name] = prior
    return out
