"""Maximum-likelihood fits and profile-likelihood scans (pyhf's ``infer.mle``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import FitError, ParameterError
from .._optimize import one_blas_thread
from ._engine import _check, _Engine, _engine


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
        converged: True exactly when the stopping criterion holds: the estimated distance to minimum
            ``edm`` = ½ gᵀH⁻¹g (exact Hessian, free components) is below the tolerance (in units of NLL).
        edm, niter, status, message: the criterion's value, iterations used, status code and its meaning
            (:data:`hf2ppl.infer._optimize.STATUS_MESSAGES`); grad_norm: the projected-gradient inf-norm.
        multimodal: True when fits from different start points reached distinct local minima (2ΔNLL above
            ``MULTIMODAL_TOL``); ``minima`` lists their 2ΔNLL above the reported (deepest) one; ``nstarts``.
            The first start runs first; an extra start whose own Newton target is that start's minimum (both
            local quadratic models agree on its place and depth, ``RETIRE_TOL``) is stopped there (status 4) and
            counts as the same minimum; only extra starts that converge by the EDM criterion are candidates.
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
    edm: float = float("nan")
    status: int = 0
    multimodal: bool = False
    minima: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nstarts: int = 1

    @property
    def message(self) -> str:
        from .._optimize import STATUS_MESSAGES

        return STATUS_MESSAGES.get(self.status, f"status {self.status}")

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
    with one_blas_thread():
        return _covariance_impl(H, fixed)


def _covariance_impl(H: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def fit(model: Any, data: Any = None, *, fixed: Any = None, init: Any = None, bounds: Any = None, starts: int | None = None) -> FitResult:
    """Maximum-likelihood fit (pyhf's ``pyhf.infer.mle.fit``), bounded, with exact-Hessian uncertainties.

    Args:
        model: a compiled model (any constraints mode/target; recompiled with ``constraints="aux"``) or a workspace.
        data: None (observed), main counts ``(B,)`` or main + auxdata ``(B+A,)`` in pyhf's layout.
        fixed: parameters to hold constant: ``{name: value or None}`` (None keeps the start value), a list of
            names, or a boolean mask over ``par_names``; names are parameter sets or flat names ``"set[i]"``.
            Parameters fixed in the workspace stay fixed.
        init: start values: ``{name: value}`` or a flat vector (default: the model's suggested init).
        bounds: ``{name: (lo, hi)}`` or a ``(P, 2)`` array (default: the model's suggested bounds).
        starts: number of start points fitted together (one jitted call): ``init``, the constrained
            parameters at ±σ/2, then seeded random points (see ``_Engine.starts``); the deepest minimum is
            returned and a :class:`MultimodalWarning` raised when distinct minima were found. 1 = ``init`` only;
            default 4, or 1 above 200 parameters (``MULTISTART_MAX_PARS``).

    Returns:
        :class:`FitResult`. A fit that ends at a non-finite NLL raises :class:`~hf2ppl.errors.FitError`;
        one that misses the EDM criterion is returned with ``converged=False`` and a :class:`FitWarning`.

    Example:
        >>> r = hf2ppl.fit(m)  # doctest: +SKIP
        >>> r.bestfit["mu"], r.uncertainties["mu"]  # doctest: +SKIP
    """
    eng = _engine(model)
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    return _fit_result(eng, _multistart(eng, x0, lo, hi, fx, d, starts), 0, fx)


def _multistart(eng: _Engine, x0, lo, hi, fx, d, starts: int | None = None) -> dict:
    if starts is not None and int(starts) < 1:
        raise ParameterError(f"starts must be >= 1, got {starts}")
    return eng.solve_best(eng.starts(x0, lo, hi, fx, starts)[None], lo, hi, fx.astype(float)[None], d[None])


def _fit_result(eng: _Engine, r: dict, i: int, fx: np.ndarray) -> FitResult:
    x = r["x"][i]
    nll = float(r["fun"][i])
    if not np.isfinite(nll) or not np.all(np.isfinite(x)):
        raise FitError(f"fit: {eng.nonfinite_reason(r['x'][i])}")
    H = np.asarray(r["hessian"][i])
    cov, corr = _covariance(H, fx)
    sub = {k: (v[i:i + 1] if isinstance(v, np.ndarray) else v) for k, v in r.items() if k in ("converged", "edm", "status")}
    sub.update(multimodal=np.asarray(r["multimodal"][i:i + 1]), minima=[r["minima"][i]])
    ok = _check(r["converged"][i], "fit", sub)
    return FitResult(list(eng.m.par_names), x, nll, cov, corr, ok, int(r["niter"][i]), float(r["grad_norm"][i]), fx, H,
                     float(r["edm"][i]), int(r["status"][i]), bool(r["multimodal"][i]), np.asarray(r["minima"][i]), int(r["nstarts"]))


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
    g = _fit_result(eng, _multistart(eng, x0, lo, hi, fx, d), 0, fx)
    # every grid point from two starts (the global fit, warm; the init, so no basin is inherited), ONE vmapped call
    X0 = np.stack([np.repeat(g.x[None], n, axis=0), np.repeat(x0[None], n, axis=0)], axis=1)
    X0[:, :, poi] = mus[:, None]
    F = np.repeat(fx[None].astype(float), n, axis=0)
    F[:, poi] = 1.0
    r = eng.solve_best(X0, lo, hi, F, d[None])
    nll = r["fun"]
    ok = r["converged"]
    _check(ok, "profile", r)
    return ProfileResult(mus, 2.0 * (nll - g.nll), nll, r["x"], g, ok, list(eng.m.par_names))


