"""IR → PyMC model (a native PyTensor graph) and a compiled PyTensor log-density.

The HistFactory math comes from :mod:`hf2ppl.histfactory` with the PyTensor
namespace (:func:`hf2ppl.xp.pytensor_namespace`) — the same functions the JAX
target calls — so the ``pm.Model`` holds ordinary PyTensor operations: PyMC's
graph rewrites, its C/numba/JAX backends, nutpie and ``pm.model_to_graphviz``
all see through it (no black-box Op).

Graph (``constraints="prior"``)::

    <set>           one random variable per parameter set with free components
                    (scalar, or a vector over its free components with dim "<set>_bin")
    expected_<ch>   pm.Deterministic expected counts of channel <ch> (dim "<ch>_bin")
    <ch>            observed continuous Poisson of channel <ch> (dim "<ch>_bin")

``constraints="aux"`` adds one observed auxiliary term ``aux_<set>`` per
constrained set (Normal, or continuous Poisson of ``tau * gamma``) and gives
sets without a user prior an improper flat density on their bounds
(``pm.Uniform`` plus a constant ``pm.Potential`` ``flat_<set>`` that cancels
``-log(width)``), exactly like the NumPyro target; the log density is then
pyhf's ``Model.logpdf``.

The observed Poisson terms use the continuous Poisson of pyhf
(:func:`hf2ppl.histfactory.poisson_logpdf`) through ``pm.CustomDist`` so that
non-integer data (Asimov data, non-integer aux data) are accepted; their
random draws are ordinary ``pm.Poisson`` draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import histfactory as hf
from .. import priors as P
from ..compiled import CompiledModel
from ..errors import ParameterError
from ..xp import pytensor_namespace

__all__ = ["PyMCModel", "pymc_variable", "poisson_logp", "poisson_dist"]


def poisson_logp(value, lam):
    r"""Continuous Poisson log density (pyhf's), elementwise: :math:`n\ln\lambda - \lambda - \ln\Gamma(n+1)`."""
    return hf.poisson_logpdf(pytensor_namespace(), value, lam)


def poisson_dist(lam, size):
    """Random graph of the observed Poisson terms: ``pm.Poisson`` draws cast to float.

    A negative expected count (possible far in the tails, e.g. linear histosys extrapolation under a
    flat prior) draws 0; the log density is unaffected.
    """
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    return pt.cast(pm.Poisson.dist(pt.maximum(lam, 0.0), size=size), pytensor.config.floatX)


def _f(x, dtype: str = "float64") -> np.ndarray:
    # numpy arrays (never python floats): PyTensor turns python floats into the smallest exact dtype
    # (often float32), which would compute e.g. log(high - low) in single precision.
    return np.asarray(x, dtype=dtype)


def _support(prior: P.Prior, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(kind, lo, hi)`` per free component of the support of ``prior``'s PyMC lowering (see
    :func:`hf2ppl.infer._nuts.standardisation`): 0 real, 1 ``x > lo`` (log transform), 2 ``lo < x < hi``
    (interval transform), -1 none of these (an upper bound only: never standardised)."""
    v = {k: np.broadcast_to(np.asarray(a, float), (n,)) for k, a in prior.values().items()}
    inf = np.full(n, np.inf)
    if isinstance(prior, (P.Flat, P.Uniform)):
        lo, hi = v["low"], v["high"]
        kind = np.where(np.isfinite(lo) & np.isfinite(hi), 2, np.where(np.isfinite(lo), 1, np.where(np.isfinite(hi), -1, 0)))
        return kind, lo, hi
    if isinstance(prior, (P.HalfNormal, P.LogNormal, P.Gamma)):
        return np.ones(n, int), np.zeros(n), inf
    return np.zeros(n, int), -inf, inf


class Standardise:
    """PyMC value transform ``u = (z - c) / s`` after the variable's support transform ``z``: the sampler moves
    in ``u``, the deviation from the prior centre in prior widths (the NumPyro target's standardised
    coordinates, :func:`hf2ppl.infer._nuts.standardisation`); the variable and its draws keep the
    workspace's parametrisation. Passed as ``transform=``, which PyMC chains after the default transform.
    Built lazily (PyMC is imported only when the PyMC target is used)."""

    def __new__(cls, shift: np.ndarray, scale: np.ndarray, dtype: str = "float64"):
        import pytensor.tensor as pt
        from pymc.distributions.transforms import Transform

        class _Standardise(Transform):
            name = "standardised"

            def forward(self, value, *inputs):
                return (value - _f(shift, dtype)) / _f(scale, dtype)

            def backward(self, value, *inputs):
                return _f(shift, dtype) + _f(scale, dtype) * value

            def log_jac_det(self, value, *inputs):
                return pt.zeros_like(value) + _f(np.log(scale), dtype)

        return _Standardise()


def pymc_variable(name: str, prior: P.Prior, pset, *, flat_potential: bool = True, dtype: str = "float64",
                  standardise: tuple[np.ndarray, np.ndarray] | None = None):
    """Create (inside a ``pm.Model`` context) the random variable of parameter set ``pset`` with ``prior``.

    Vector sets get shape ``(n_free,)`` and dim ``pset.dim``. ``standardise=(shift, scale)`` (per free component)
    adds the :class:`Standardise` value transform. :class:`~hf2ppl.priors.Flat` becomes
    ``pm.Uniform`` on the bounds plus a constant ``pm.Potential("flat_<name>", sum(log(width)))``, so
    that the log density is 0 on the bounds (an interval-transformed improper prior); with an
    infinite bound it becomes ``pm.Flat`` with the matching interval transform.

    Example:
        >>> import pymc as pm, hf2ppl
        >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", target="pymc")  # doctest: +SKIP
        >>> m.model["mu"]  # the Uniform(0, 10) prior of the POI  # doctest: +SKIP
    """
    import pymc as pm
    import pytensor.tensor as pt

    scalar = pset.is_scalar
    v = {k: (_f(a, dtype).reshape(()) if scalar else _f(np.broadcast_to(a, (pset.n_free,)), dtype)) for k, a in prior.values().items()}
    kw: dict[str, Any] = {} if scalar else {"dims": pset.dim}
    if standardise is not None:  # narrow constraint: the sampler moves in prior widths (see Standardise)
        c, s = standardise
        kw["transform"] = Standardise(c.reshape(()) if scalar else c, s.reshape(()) if scalar else s, dtype)
    if isinstance(prior, P.Flat):
        lo, hi = v["low"], v["high"]
        if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
            rv = pm.Uniform(name, lo, hi, **kw)
            if flat_potential:
                pm.Potential(f"flat_{name}", pt.as_tensor_variable(_f(np.sum(np.log(hi - lo)), dtype)))
            return rv
        from pymc.distributions.transforms import Interval

        lo_t = None if not np.any(np.isfinite(lo)) else lo
        hi_t = None if not np.any(np.isfinite(hi)) else hi
        if (lo_t is not None and not np.all(np.isfinite(lo))) or (hi_t is not None and not np.all(np.isfinite(hi))):
            raise ParameterError(f"Flat prior of {name!r}: mixed finite and infinite bounds are not supported by the PyMC target")
        tr = None if lo_t is None and hi_t is None else Interval(lo_t, hi_t)
        return pm.Flat(name, default_transform=tr, shape=() if scalar else (pset.n_free,), **kw)
    if isinstance(prior, P.Uniform):
        return pm.Uniform(name, v["low"], v["high"], **kw)
    if isinstance(prior, P.Normal):
        return pm.Normal(name, v["loc"], v["scale"], **kw)
    if isinstance(prior, P.HalfNormal):
        return pm.HalfNormal(name, sigma=v["scale"], **kw)
    if isinstance(prior, P.LogNormal):
        return pm.LogNormal(name, v["loc"], v["scale"], **kw)
    if isinstance(prior, P.Gamma):
        return pm.Gamma(name, alpha=v["concentration"], beta=v["rate"], **kw)
    raise ParameterError(f"prior {prior!r} has no PyMC lowering")  # pragma: no cover


class PyMCModel(CompiledModel):
    """A workspace compiled to a PyMC model. See :func:`hf2ppl.compile`.

    Attributes (beyond :class:`~hf2ppl.compiled.CompiledModel`):
        model: the ``pm.Model`` (see the module docstring for its variables, dims and coords: ``<set>_bin``
            holds the free labels of a vector set, ``<channel>_bin`` the bin numbers 0..n-1, ``sample``
            the sample names).
        logdensity: a compiled PyTensor function of ``params`` (dict or flat array in ``par_names`` order),
            numpy in, float out; same value as the NumPyro target's.

    Example:
        >>> import hf2ppl, pymc as pm
        >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", target="pymc", constraints="aux")  # doctest: +SKIP
        >>> m.logdensity(m.suggested_init())  # pyhf's model.logpdf  # doctest: +SKIP
        >>> f = m.model.compile_logp(jacobian=False)  # doctest: +SKIP
        >>> f(m.value_point(m.suggested_init()))  # the same number from PyMC's own graph  # doctest: +SKIP
        >>> pm.model_to_graphviz(m.model)  # doctest: +SKIP
    """

    target = "pymc"
    #: keyword arguments of ``pytensor.function`` for the helper functions (logdensity, expected_data,
    #: value_point), e.g. ``{"mode": "FAST_COMPILE"}`` to trade run time for compile time.
    compile_kwargs: dict[str, Any] = {}

    def __init__(self, spec, ir, constraints="prior", priors=None, dtype="float64"):
        super().__init__(spec, ir, constraints, priors, dtype)
        self._xp = pytensor_namespace()
        self._T = hf.tensors(ir, dtype)
        self._fns: dict[str, Any] = {}
        self.model = self._build()

    # ------------------------------------------------------------ names
    def channel_site(self, channel: str) -> str:
        """Name of the observed variable of ``channel`` (the channel name, unless a parameter has it)."""
        return channel if channel not in self.ir.par_map else f"obs_{channel}"

    def channel_dim(self, channel: str) -> str:
        """Name of the bin dimension of ``channel``: ``"<channel>_bin"`` (as in :mod:`hf2ppl.infer.idata`)."""
        return f"{channel}_bin"

    @property
    def channel_sites(self) -> list[str]:
        return [self.channel_site(c.name) for c in self.ir.channels]

    @property
    def coords(self) -> dict[str, list]:
        """The model's coordinates: vector parameter sets, channel bins and samples."""
        coords: dict[str, list] = {}
        for p in self.free_parameters:
            if not p.is_scalar:
                coords[p.dim] = list(p.free_labels)
        for c in self.ir.channels:
            coords[self.channel_dim(c.name)] = list(range(c.nbins))
        coords["sample"] = list(self.ir.samples)
        return coords

    # ------------------------------------------------------------ the pm.Model
    def _build(self):
        import pymc as pm
        import pytensor.tensor as pt

        xp, T, dt = self._xp, self._T, self.dtype
        std = self._standardisation()
        with pm.Model(coords=self.coords, name="") as model:
            pieces = []
            for p in self.ir.parameters:
                init = _f(p.inits, dt)
                if p.all_fixed:
                    pieces.append(pt.as_tensor_variable(init))
                    continue
                rv = pymc_variable(p.name, self.priors[p.name], p, dtype=dt, standardise=std.get(p.name))
                v = pt.reshape(rv, (1,)) if p.is_scalar else rv
                if p.n_free < p.size:
                    v = pt.set_subtensor(pt.as_tensor_variable(init)[np.flatnonzero(p.free_mask)], v)
                pieces.append(v)
            theta = pt.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            self._theta = theta
            lam = hf.expected_main(xp, T, theta)
            n = _f(self.ir.observed, dt)
            for c in self.ir.channels:
                dim = self.channel_dim(c.name)
                lam_c = pm.Deterministic(f"expected_{c.name}", lam[c.slice], dims=dim)
                pm.CustomDist(self.channel_site(c.name), lam_c, dist=poisson_dist, logp=poisson_logp, signature="()->()",
                              observed=n[c.slice], dims=dim)
            if self.constraints == "aux":
                a = _f(self.ir.auxdata, dt)
                pos = 0
                for p in self.ir.parameters:
                    if p.constraint is None:
                        continue
                    th, ap = theta[p.slice], a[pos:pos + p.size]
                    pos += p.size
                    if p.constraint == "normal":
                        pm.Normal(f"aux_{p.name}", mu=th, sigma=_f(p.sigmas, dt), observed=ap)
                    else:
                        pm.CustomDist(f"aux_{p.name}", th * _f(p.factors, dt), dist=poisson_dist, logp=poisson_logp,
                                      signature="()->()", observed=ap)
        return model

    def _standardisation(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{set: (shift, scale)} of the narrow constraints, chosen as on the NumPyro target
        (:func:`hf2ppl.infer._nuts.standardisation`) from the supports of the PyMC lowering of the priors."""
        from ..infer._nuts import standardisation

        parts = [_support(self.priors[p.name], p.n_free) for p in self.free_parameters]
        if not parts:
            return {}
        kind, lo, hi = (np.concatenate(x) for x in zip(*parts))
        shift, scale, names = standardisation(self, np.where(kind < 0, 3, kind), lo, hi)
        out, off = {}, 0
        for p in self.free_parameters:
            sl = slice(off, off + p.n_free)
            off += p.n_free
            use = (kind[sl] >= 0) & (scale[sl] != 1.0)
            if p.name in names and np.any(use):
                out[p.name] = (np.where(use, shift[sl], 0.0), np.where(use, scale[sl], 1.0))
        self.standardised = list(out)
        return out

    @property
    def free_variable_names(self) -> list[str]:
        """Names of the parameter random variables (one per parameter set with free components)."""
        return [p.name for p in self.free_parameters]

    # ------------------------------------------------------------ parameters
    def to_theta(self, params: Any) -> np.ndarray:
        """Full flat parameter vector (``par_names`` order) from a dict or a flat array (numpy)."""
        if isinstance(params, Mapping):
            theta = np.asarray(self.ir.init, dtype=self.dtype).copy()
            for idx, value, _ in self._param_assignments(params):
                theta[idx] = np.asarray(value, dtype=self.dtype).reshape(-1)
            return theta
        theta = np.asarray(params, dtype=self.dtype)
        if theta.ndim != 1:
            raise ParameterError(f"flat params must have {self.ir.npars} entries (par_names order), got shape {theta.shape}")
        self._check_flat(theta.shape)
        return theta

    def point(self, params: Any) -> dict[str, np.ndarray]:
        """Values of the parameter random variables (constrained space): ``{set name: value}``."""
        theta = self.to_theta(params)
        return {p.name: self._site_value(p, theta[p.slice]) for p in self.free_parameters}

    def value_point(self, params: Any) -> dict[str, np.ndarray]:
        """The point in PyMC's value-variable space (transformed names and values) for ``params``.

        Feed it to ``model.compile_logp()`` / ``model.compile_dlogp()``.

        Example:
            >>> f = m.model.compile_logp(jacobian=False)  # doctest: +SKIP
            >>> f(m.value_point({"mu": 1.0, "correlated_bkg_uncertainty": 0.2}))  # doctest: +SKIP
        """
        fn = self._fns.get("value_point")
        if fn is None:
            fn = self._fns["value_point"] = self._compile_value_point()
        outs = fn(self.to_theta(params))
        return {vv.name: np.asarray(o) for vv, o in zip(self._value_vars, outs)}

    def _compile_value_point(self):
        import pytensor
        import pytensor.tensor as pt

        m = self.model
        theta = pt.vector("theta", dtype=self.dtype)
        outs, self._value_vars = [], []
        for p in self.free_parameters:
            rv = m[p.name]
            v = theta[self._site_index[p.name]]
            v = v[0] if p.is_scalar else v
            tr = m.rvs_to_transforms.get(rv)
            outs.append(v if tr is None else tr.forward(v, *rv.owner.inputs))
            self._value_vars.append(m.rvs_to_values[rv])
        return pytensor.function([theta], outs, on_unused_input="ignore", **self.compile_kwargs)

    # ------------------------------------------------------------ densities
    def _compile_logdensity(self):
        import pytensor
        import pytensor.tensor as pt

        xp, T = self._xp, self._T
        theta = pt.vector("theta", dtype=self.dtype)
        main = pt.vector("main", dtype=self.dtype)
        aux = pt.vector("aux", dtype=self.dtype)
        lp = hf.main_logpdf(xp, T, theta, main)
        if self.constraints == "aux":
            lp = lp + hf.constraint_logpdf(xp, T, theta, aux)
        lp = lp + self._prior_plan.logpdf(xp, theta, self.dtype)
        return pytensor.function([theta, main, aux], pt.as_tensor_variable(lp), on_unused_input="ignore", **self.compile_kwargs)

    def logdensity(self, params: Any, data: Any = None) -> float:
        """Log density at ``params`` (dict or flat array), as the NumPyro target's ``logdensity``.

        ``"aux"`` mode: pyhf's ``model.logpdf`` plus any non-flat user prior; ``"prior"`` mode: Poisson
        main terms + log priors of the free components. ``data``: None (observed), main counts, or main +
        auxdata (pyhf layout). A compiled PyTensor function (compiled on first call).

        Example:
            >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", target="pymc", constraints="aux")  # doctest: +SKIP
            >>> m.logdensity(m.suggested_init())  # doctest: +SKIP
        """
        fn = self._fns.get("logdensity")
        if fn is None:
            fn = self._fns["logdensity"] = self._compile_logdensity()
        main, aux = self._split_data(data)
        main = self.ir.observed if main is None else main
        aux = self.ir.auxdata if aux is None else aux
        return float(fn(self.to_theta(params), _f(main, self.dtype), _f(aux, self.dtype)))

    def logdensity_flat(self, theta: Any, data: Any = None) -> float:
        """:meth:`logdensity` of a full flat vector."""
        return self.logdensity(np.asarray(theta), data)

    def _compile_expected(self):
        import pytensor
        import pytensor.tensor as pt

        theta = pt.vector("theta", dtype=self.dtype)
        main = hf.expected_main(self._xp, self._T, theta)
        rates = hf.expected_rates(self._xp, self._T, theta)
        aux = hf.expected_auxdata(self._xp, self._T, theta)
        return pytensor.function([theta], [main, aux, rates], **self.compile_kwargs)

    def _expected(self, params):
        fn = self._fns.get("expected")
        if fn is None:
            fn = self._fns["expected"] = self._compile_expected()
        return fn(self.to_theta(params))

    def expected_data(self, params: Any, include_auxdata: bool = True) -> np.ndarray:
        """Expected main counts (and auxdata expectations, pyhf layout), like pyhf's ``expected_data``."""
        main, aux, _ = self._expected(params)
        if not include_auxdata or not self.ir.auxdata.shape[0]:
            return main
        return np.concatenate([main, aux])

    def expected_rates(self, params: Any) -> np.ndarray:
        """Expected rate per sample and bin, shape (samples, bins)."""
        return self._expected(params)[2]
