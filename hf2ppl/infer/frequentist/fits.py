"""Maximum-likelihood fits and profile-likelihood scans (pyhf's ``infer.mle``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import FitError, ParameterError
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


