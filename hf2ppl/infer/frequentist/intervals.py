"""CLs hypothesis tests, upper limits, discovery significance and their differentiable versions
(pyhf's ``infer.hypotest`` and ``infer.intervals``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import FitError, ParameterError
from ._engine import FitWarning, _check, _check_test_stat, _Engine, _engine, _jnp, _merge_diag, fit_threads
from .asymptotics import asymptotics, at_mu, hypotest_chains, prepare
from .toys import _toy_results


# ====================================================================== hypotest
def _asymptotic_results(eng: _Engine, mus: np.ndarray, d: np.ndarray, opts: tuple, test_stat: str) -> dict:
    if mus.size == 1 and eng.k.sequential and fit_threads() > 1:  # one μ on a CPU: two chains of fits, two threads
        return hypotest_chains(eng, float(mus[0]), d, opts, test_stat)
    prep = prepare(eng, d, opts, test_stat)
    return at_mu(eng, mus, prep, d, opts, test_stat)


def hypotest(
    model: Any,
    poi_value: float | Sequence[float],
    data: Any = None,
    *,
    test_stat: str = "qtilde",
    calctype: str = "asymptotics",
    return_tail_probs: bool = False,
    return_expected: bool = False,
    return_expected_set: bool = False,
    init: Any = None,
    bounds: Any = None,
    fixed: Any = None,
    ntoys: int = 2000,
    seed: int = 0,
):
    r"""CLs hypothesis test at ``poi_value``, with the return structure and semantics of ``pyhf.infer.hypotest``.

    Returns ``CLs_obs`` (``CLs+b`` obs, i.e. the discovery p-value, for ``test_stat="q0"``), then, as requested,
    ``[CLs+b, CLb]`` (``[CLb]`` for q0) when ``return_tail_probs``, ``CLs_exp`` (median) when ``return_expected``,
    and the 5-value expected band ``[+2σ, +1σ, 0, -1σ, -2σ]`` (pyhf's ordering) when ``return_expected_set``;
    a tuple when more than one is returned. Values are 0-d numpy arrays; with a sequence of POI values
    (asymptotics only) every value gets a leading axis and the whole grid is one vmapped call.

    ``calctype="asymptotics"``: Wald approximation with the Asimov dataset at μ=0 (μ=1 for q0), as pyhf's
    ``AsymptoticCalculator`` (``calc_base_dist="normal"``). ``calctype="toys"``: ``ntoys`` toys per hypothesis
    drawn from the fixed-POI fits (at ``poi_value`` and at 0, or 1 for q0; numpy RNG seeded by ``seed``) and
    fitted in one vmapped batch,
    as pyhf's ``ToyCalculator`` (empirical tail fractions; expected band from percentiles).

    Example:
        >>> cls_obs, band = hf2ppl.hypotest(m, 1.0, return_expected_set=True)  # doctest: +SKIP
    """
    _check_test_stat(test_stat, ("qtilde", "q", "q0"))
    if calctype not in ("asymptotics", "toys"):
        raise ParameterError(f"calctype must be 'asymptotics' or 'toys', got {calctype!r}")
    eng = _engine(model)
    eng.need_poi("hypotest")
    opts = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    scalar = np.ndim(poi_value) == 0
    mus = np.atleast_1d(np.asarray(poi_value, float))
    if test_stat == "q0":
        mus = np.zeros_like(mus)
    if calctype == "asymptotics":
        r = _asymptotic_results(eng, mus, d, opts, test_stat)
    else:
        if not scalar:
            raise ParameterError("calctype='toys' takes a single poi_value")
        r = _toy_results(eng, float(mus[0]), d, opts, test_stat, int(ntoys), int(seed))
    _check(r["converged"], "hypotest", r.get("diag"))
    return _pack(r, scalar, test_stat == "q0", return_tail_probs, return_expected, return_expected_set)


def _pack(r: dict, scalar: bool, is_q0: bool, tail: bool, expected: bool, expected_set: bool):
    def sel(a):
        a = np.asarray(a, float)
        return np.asarray(a[0]) if scalar else a

    out: list[Any] = [sel(r["clsb"] if is_q0 else r["cls"])]
    if tail:
        out.append([sel(r["clb"])] if is_q0 else [sel(r["clsb"]), sel(r["clb"])])
    band_src = r["clsb_exp"] if is_q0 else r["cls_exp"]
    band = [sel(band_src[:, i]) for i in range(5)]
    if expected_set:
        if expected:
            out.append(band[2])
        out.append(band)
    elif expected:
        out.append(band[2])
    return tuple(out) if len(out) > 1 else out[0]


# ====================================================================== upper limit
def upper_limit(
    model: Any,
    data: Any = None,
    *,
    level: float = 0.05,
    scan: Sequence[float] | np.ndarray | None = None,
    test_stat: str = "qtilde",
    return_results: bool = False,
    init: Any = None,
    bounds: Any = None,
    fixed: Any = None,
    rtol: float = 1e-8,
    outside_bounds: str = "warn",
):
    r"""Observed and expected (5-value band) upper limits on the POI at CLs = ``level`` (asymptotics).

    With ``scan=None`` the roots of :math:`\mathrm{CLs}(\mu) - \mathrm{level}` are found (as pyhf's toms748
    scan, same bracketing from the POI bounds): a coarse vmapped grid then a vectorised Illinois
    (regula falsi) iteration on all six curves at once, to ``rtol``. With a ``scan`` the CLs curves are
    evaluated in one vmapped call and interpolated linearly (``np.interp``, as pyhf's ``linear_grid_scan``).

    Returns ``(obs_limit, exp_limits)`` as pyhf: ``exp_limits[i]`` is the limit of the i-th expected CLs
    curve of :func:`hypotest`'s band (``exp_limits[2]`` the median). ``return_results`` adds ``(poi_values, cls_obs, cls_exp (n, 5))`` of every evaluation.

    ``level`` must lie in (0, 1) (0.05 = 95% CL). A POI that does not change the expected data (a signal
    of zero yield) has no upper limit: :class:`~hf2ppl.errors.ParameterError`. As pyhf, the bracketing may
    extend past the POI's upper bound (fits with the POI fixed beyond it); a limit found there comes with a
    :class:`FitWarning` (``outside_bounds="warn"``, the default), silently as pyhf (``"ignore"``), or as an
    error (``"raise"``).

    Example:
        >>> obs, exp = hf2ppl.upper_limit(m)  # doctest: +SKIP
    """
    _check_test_stat(test_stat, ("qtilde", "q"))
    level = _check_level(level)
    if outside_bounds not in ("warn", "ignore", "raise"):
        raise ParameterError(f"outside_bounds must be 'warn', 'ignore' or 'raise', got {outside_bounds!r}")
    eng = _engine(model)
    poi = eng.need_poi("upper_limit")
    opts = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    prep = prepare(eng, d, opts, test_stat)
    _check_poi_matters(eng, prep["free_x"][0], opts)
    seen_mu: list[np.ndarray] = []
    seen_v: list[np.ndarray] = []
    diags: list[dict] = []

    fits_x: list[tuple[np.ndarray, np.ndarray]] = []  # the fixed-POI fits (data, Asimov) at each seen_mu

    def nearest_fits(mus: np.ndarray):
        """Warm starts of the fixed-POI fits at ``mus``: the fits at the nearest μ evaluated so far (the root
        finder's points close in on the limits, where fits from the unconditional fit take many iterations),
        with the POI moved; the cold start of at_mu keeps any basin from being inherited."""
        if not seen_mu:
            return None
        allm = np.concatenate(seen_mu)
        xd, xa = (np.concatenate([f[i] for f in fits_x]) for i in (0, 1))
        j = np.argmin(np.abs(allm[None, :] - mus[:, None]), axis=1)
        return xd[j], xa[j]

    def curves(mus: np.ndarray) -> np.ndarray:
        """(n, 6) CLs values: observed then the 5 expected."""
        mus = np.asarray(mus, float)
        out = at_mu(eng, mus, prep, d, opts, test_stat, warm=nearest_fits(mus))
        fits_x.append((np.asarray(out["fixed_fit"]), np.asarray(out["fixed_fit_asimov"])))
        v = np.concatenate([np.asarray(out["cls"])[:, None], np.asarray(out["cls_exp"])], axis=1)
        diags.append(out["diag"])
        seen_mu.append(mus)
        seen_v.append(v)
        return v

    if scan is not None:
        mus = np.asarray(scan, float)
        v = curves(mus)
        limits = [float(np.interp(level, v[::-1, i], mus[::-1])) for i in range(6)]
    else:
        limits = _root_limits(curves, float(opts[1][poi]), float(opts[2][poi]), level, rtol)
    _check(np.concatenate([dg["converged"] for dg in diags]), "upper_limit", _merge_diag(*diags))
    lo_b, hi_b = float(opts[1][poi]), float(opts[2][poi])
    out_of = [(name, v) for name, v in zip(("observed", "expected -2σ", "expected -1σ", "expected median", "expected +1σ", "expected +2σ"),
                                           limits) if not lo_b <= v <= hi_b]
    if out_of and outside_bounds != "ignore":
        msg = (f"upper_limit: {', '.join(f'{n} {v:.4g}' for n, v in out_of)} outside the POI bounds [{lo_b:g}, {hi_b:g}] of "
               f"{eng.m.poi_name!r} (found by fits with the POI fixed beyond its bound, as pyhf); widen the bounds to trust it")
        if outside_bounds == "raise":
            raise FitError(msg)
        warnings.warn(msg, FitWarning, stacklevel=2)
    obs, exp = np.asarray(limits[0]), [np.asarray(x) for x in limits[1:]]
    if return_results:
        allm = np.concatenate(seen_mu)
        allv = np.concatenate(seen_v)
        o = np.argsort(allm, kind="stable")
        return obs, exp, (allm[o], allv[o, 0], allv[o, 1:])
    return obs, exp


def _check_level(level: Any) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise ParameterError(f"level must be a number in (0, 1) (0.05 for 95% CL), got {level!r}") from None
    if not 0.0 < lv < 1.0:
        raise ParameterError(f"level must be in (0, 1) (0.05 for a 95% CL limit), got {level!r}")
    return lv


def _check_poi_matters(eng: _Engine, x: np.ndarray, opts: tuple) -> None:
    """Raise when the POI does not change the expected main data anywhere in its bounds (no limit exists)."""
    poi = eng.poi
    lo, hi = float(opts[1][poi]), float(opts[2][poi])
    pts = [v for v in (lo, hi, 0.0, 1.0, 0.5 * (lo + hi)) if np.isfinite(v)]
    rows = []
    for v in pts:
        y = x.copy()
        y[poi] = v
        rows.append(eng.expected(y)[: eng.B])
    rows = np.asarray(rows)
    if np.all(np.abs(rows - rows[0]) <= 1e-12 * (1.0 + np.abs(rows[0]))):
        raise ParameterError(f"upper_limit: the POI {eng.m.poi_name!r} does not change the expected data (its signal has zero yield "
                             "in every bin), so no upper limit exists; check the signal samples of the workspace or patch")


def _root_limits(curves, lo: float, hi: float, level: float, rtol: float, maxiter: int = 100) -> list[float]:
    """Six roots of ``curves(mu) - level`` for one model (see :func:`root_limits_many`); FitError if unbracketed."""
    roots, err = root_limits_many(lambda g, mus: curves(mus), np.array([lo]), np.array([hi]), level, rtol, maxiter)
    if err[0] is not None:
        raise FitError(f"upper_limit: {err[0]}")
    return [float(r) for r in roots[0]]


def root_limits_many(curves, lo: np.ndarray, hi: np.ndarray, level: float, rtol: float, maxiter: int = 100) -> tuple[np.ndarray, list]:
    """The roots of ``CLs(μ) - level`` of six curves (observed, then the five expected) of each of ``G`` models.

    ``curves(gidx, mus)`` returns the ``(n, 6)`` CLs values of model ``gidx[i]`` at ``mus[i]``. Each model is
    bracketed as pyhf's ``toms748_scan`` (halve the lower / double the upper bound from the POI bounds
    ``lo[g]``/``hi[g]`` until every curve is bracketed), then a vectorised Illinois (modified regula falsi)
    iteration runs on all ``6 G`` curves, every iteration one batched call. Returns ``(roots (G, 6), errors)``:
    ``errors[g]`` is None or a one-line reason (roots NaN) when model ``g`` could not be bracketed."""
    lo = np.array(lo, float)
    hi = np.array(hi, float)
    G = lo.size
    everyone = np.arange(G)
    f_lo = np.asarray(curves(everyone, lo), float) - level
    for _ in range(60):
        need = np.flatnonzero(np.any(f_lo < 0, axis=1))
        if not need.size:
            break
        lo[need] = np.where(lo[need] > 0, lo[need] / 2, lo[need] - 1e-3)
        f_lo[need] = np.asarray(curves(need, lo[need]), float) - level
    f_hi = np.asarray(curves(everyone, hi), float) - level
    for _ in range(60):
        need = np.flatnonzero(np.any(f_hi > 0, axis=1))
        if not need.size:
            break
        hi[need] *= 2
        f_hi[need] = np.asarray(curves(need, hi[need]), float) - level
    bad = np.any(f_hi > 0, axis=1) | np.any(f_lo < 0, axis=1) | ~np.all(np.isfinite(f_lo) & np.isfinite(f_hi), axis=1)
    errors = [(f"could not bracket CLs = {level:g} for POI values in [{lo[g]:.3g}, {hi[g]:.3g}] (CLs - level there: "
               f"{np.round(f_lo[g], 4).tolist()}, {np.round(f_hi[g], 4).tolist()})") if bad[g] else None for g in range(G)]
    a, b = np.repeat(lo[:, None], 6, axis=1), np.repeat(hi[:, None], 6, axis=1)
    fa, fb = f_lo.copy(), f_hi.copy()
    side = np.zeros((G, 6))
    for _ in range(maxiter):
        done = (np.abs(b - a) <= rtol * np.maximum(np.abs(a), np.abs(b)) + 1e-14) | (fa == 0) | (fb == 0) | bad[:, None]
        if np.all(done):
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            c = (a * fb - b * fa) / (fb - fa)
        c = np.where(np.isfinite(c) & (c > np.minimum(a, b)) & (c < np.maximum(a, b)), c, 0.5 * (a + b))
        gi, ji = np.nonzero(~done)
        fc = np.asarray(curves(gi, c[gi, ji]), float)[np.arange(gi.size), ji] - level
        i = (gi, ji)
        cross = fc * fb[i] < 0
        a_new = np.where(cross, b[i], a[i])
        fa_new = np.where(cross, fb[i], np.where(side[i] == -1, 0.5 * fa[i], fa[i]))
        b[i], fb[i] = c[i], fc
        a[i], fa[i] = a_new, fa_new
        side[i] = np.where(cross, 0.0, -1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(fb == 0, b, np.where(fa == 0, a, (a * fb - b * fa) / (fb - fa)))
    root = np.where(np.isfinite(root), root, 0.5 * (a + b))
    root[bad] = np.nan
    return root, errors


# ====================================================================== significance
@dataclass
class SignificanceResult:
    """Discovery test (q0): observed and expected (Asimov μ=1) p-values and significances Z = Φ⁻¹(1 - p).

    ``p_expected_set`` / ``z_expected_set``: the 5-value band (pyhf's order, median at index 2).
    """

    p_observed: float
    z_observed: float
    p_expected: float
    z_expected: float
    p_expected_set: np.ndarray
    z_expected_set: np.ndarray


def significance(model: Any, data: Any = None, *, init: Any = None, bounds: Any = None, fixed: Any = None) -> SignificanceResult:
    """Observed and expected discovery significance (pyhf ``hypotest(0, test_stat="q0", return_expected_set=True)``).

    Example:
        >>> s = hf2ppl.significance(m)  # doctest: +SKIP
        >>> s.z_observed, s.z_expected  # doctest: +SKIP
    """
    from scipy.special import ndtri

    def isf(p):  # = scipy.stats.norm.isf, without importing scipy.stats
        return -ndtri(p)

    p_obs, band = hypotest(model, 0.0, data, test_stat="q0", return_expected_set=True, init=init, bounds=bounds, fixed=fixed)
    band = np.asarray(band, float)
    return SignificanceResult(float(p_obs), float(isf(p_obs)), float(band[2]), float(isf(band[2])), band, isf(band))


# ====================================================================== differentiable functional API
def hypotest_fn(model: Any, poi_value: float, data: Any = None, *, test_stat: str = "qtilde", init: Any = None, bounds: Any = None, fixed: Any = None):
    """A pure JAX function ``f(nominal) -> (cls_obs, cls_exp[5])`` of the nominal yields ``(S, B)``.

    ``nominal`` replaces ``model.ir.nominal`` (samples in ``model.ir.samples`` order, bins of the channels
    concatenated); the fits inside are differentiated implicitly (custom VJP from the optimality
    conditions), so ``jax.grad`` / ``jax.jit`` / ``jax.vmap`` over ``nominal`` work (vmap: models differing
    only in yields).

    Example:
        >>> f = hypotest_fn(m, 1.0)  # doctest: +SKIP
        >>> i = m.ir.samples.index("signal")  # doctest: +SKIP
        >>> jax.grad(lambda s: f(jnp.asarray(m.ir.nominal).at[i].set(s))[1][2])(jnp.asarray(m.ir.nominal[i]))  # doctest: +SKIP
    """
    import jax.numpy as jnp

    _check_test_stat(test_stat, ("qtilde", "q", "q0"))
    eng = _engine(model)
    eng.need_poi("hypotest_fn")
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    x0, lo, hi, fx = _jnp(x0, lo, hi, fx.astype(float))
    d = _jnp(eng.data(data))[0]
    mus = jnp.asarray([0.0 if test_stat == "q0" else float(poi_value)])
    q0 = test_stat == "q0"

    def f(nominal):
        r = asymptotics(eng, mus, d, nominal, x0, lo, hi, fx, test_stat)
        if q0:
            return r["clsb"][0], r["clsb_exp"][0]
        return r["cls"][0], r["cls_exp"][0]

    return f


def significance_fn(model: Any, data: Any = None, *, init: Any = None, bounds: Any = None, fixed: Any = None):
    """A pure JAX function ``f(nominal) -> (Z_obs, Z_exp)`` (discovery significances, q0, Asimov μ=1),
    differentiable in the nominal yields by implicit differentiation. See :func:`hypotest_fn`.

    Example:
        >>> zf = significance_fn(m)  # doctest: +SKIP
        >>> jax.grad(lambda n: zf(n)[1])(jnp.asarray(m.ir.nominal))  # doctest: +SKIP
    """
    import jax.numpy as jnp

    eng = _engine(model)
    eng.need_poi("significance_fn")
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    x0, lo, hi, fx = _jnp(x0, lo, hi, fx.astype(float))
    d = _jnp(eng.data(data))[0]
    mus = jnp.zeros((1,))

    def f(nominal):
        r = asymptotics(eng, mus, d, nominal, x0, lo, hi, fx, "q0")
        q, qA = r["q"][0], r["qA"][0]
        return jnp.sqrt(jnp.where(q > 0, q, 1.0)) * (q > 0), jnp.sqrt(jnp.where(qA > 0, qA, 1.0)) * (qA > 0)

    return f


