"""Pulls and impacts (cabinetry's pull and ranking data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._engine import _check, _engine
from .fits import FitResult, fit


# ====================================================================== pulls and impacts
@dataclass
class PullsResult:
    """Post-fit pulls of constrained parameters: ``pull = (θ̂ - θ₀)/σ₀``, ``constraint = σ̂/σ₀``."""

    names: list[str]
    pulls: np.ndarray
    constraints: np.ndarray
    bestfit: np.ndarray
    uncertainties: np.ndarray
    prefit: np.ndarray
    prefit_width: np.ndarray


def pulls(model: Any, data: Any = None, *, fit_result: FitResult | None = None) -> PullsResult:
    """Pulls of the constrained, free parameters after the maximum-likelihood fit (cabinetry's pull plot data).

    Example:
        >>> p = hf2ppl.pulls(m)  # doctest: +SKIP
        >>> dict(zip(p.names, p.pulls))  # doctest: +SKIP
    """
    eng = _engine(model)
    r = fit_result or fit(model, data)
    c, w = eng.centre, eng.width
    sel = np.flatnonzero((w > 0) & ~r.fixed)
    names = [eng.m.par_names[i] for i in sel]
    err = r.errors
    return PullsResult(names, (r.x[sel] - c[sel]) / w[sel], err[sel] / w[sel], r.x[sel], err[sel], c[sel], w[sel])


@dataclass
class ImpactsResult:
    """Nuisance-parameter impacts on the POI (cabinetry's ranking), sorted by decreasing max |post-fit impact|.

    ``prefit_up/down``: :math:`\\hat\\mu(\\theta_j = \\hat\\theta_j \\pm \\sigma_{0,j}) - \\hat\\mu` (0 for unconstrained);
    ``postfit_up/down``: the same with the post-fit :math:`\\hat\\sigma_j`.
    """

    names: list[str]
    bestfit: np.ndarray
    uncertainties: np.ndarray
    prefit_up: np.ndarray
    prefit_down: np.ndarray
    postfit_up: np.ndarray
    postfit_down: np.ndarray
    poi_bestfit: float
    converged: bool


def impacts(model: Any, data: Any = None, *, fit_result: FitResult | None = None) -> ImpactsResult:
    """Impacts of every free nuisance parameter on the POI: ``4 × N`` refits with one parameter fixed at
    ``θ̂ ± σ`` (pre- and post-fit σ, clipped to the bounds), all in ONE vmapped call.

    Example:
        >>> imp = hf2ppl.impacts(m)  # doctest: +SKIP
        >>> imp.names[:5], imp.postfit_up[:5]  # doctest: +SKIP
    """
    eng = _engine(model)
    poi = eng.need_poi("impacts")
    r = fit_result or fit(model, data)
    d = eng.data(data)
    x0, lo, hi, fx = eng.setup()
    fx = r.fixed
    w = eng.width
    err = r.errors
    npar = [i for i in range(eng.P) if i != poi and not fx[i]]
    shifts = []
    for i in npar:
        for delta in (w[i], -w[i], err[i], -err[i]):
            shifts.append((i, np.clip(r.x[i] + delta, lo[i], hi[i])))
    n = len(shifts)
    mu_hat = float(r.x[poi])
    if n == 0:
        e = np.zeros(0)
        return ImpactsResult([], e, e, e, e, e, e, mu_hat, True)
    X0 = np.repeat(r.x[None], n, axis=0)
    F = np.repeat(fx[None].astype(float), n, axis=0)
    for k, (i, v) in enumerate(shifts):
        X0[k, i] = v
        F[k, i] = 1.0
    out = eng.solve_many(X0, lo, hi, F, d)
    mus = out["x"][:, poi].reshape(len(npar), 4) - mu_hat
    ok = _check(out["converged"], "impacts")
    zero = (w[npar] == 0)
    mus[zero, 0:2] = 0.0
    order = np.argsort(-np.max(np.abs(mus[:, 2:]), axis=1), kind="stable")
    idx = np.asarray(npar)[order]
    mus = mus[order]
    return ImpactsResult([eng.m.par_names[i] for i in idx], r.x[idx], err[idx], mus[:, 0], mus[:, 1], mus[:, 2], mus[:, 3], mu_hat, ok)

