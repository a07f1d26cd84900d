"""The toy calculator (pyhf's ``ToyCalculator``): toys drawn at fixed-POI fits, all fitted in one vmapped batch."""

from __future__ import annotations

import numpy as np

from ._engine import _TOY_PERCENTILES, _Engine
from .asymptotics import tstat_np


def _toy_results(eng: _Engine, mu: float, d: np.ndarray, opts: tuple, test_stat: str, ntoys: int, seed: int) -> dict:
    x0, lo, hi, fx = opts
    poi = eng.poi
    f0 = fx.astype(float)
    fm = f0.copy()
    fm[poi] = 1.0
    xs, xb = x0.copy(), x0.copy()
    xs[poi], xb[poi] = mu, (1.0 if test_stat == "q0" else 0.0)
    # observed: free fit and fixed-POI fit; the toy-generating fits at mu and at the background hypothesis
    r0 = eng.solve_many(np.stack([x0, xs, xb]), lo, hi, np.stack([f0, fm, fm]), d)
    t_obs = float(tstat_np(mu, r0["fun"][1], r0["fun"][0], r0["x"][0][poi], test_stat))
    rng = np.random.default_rng(seed)
    toys = np.concatenate([_sample_toys(eng, rng, r0["x"][1], ntoys), _sample_toys(eng, rng, r0["x"][2], ntoys)])
    n = toys.shape[0]
    X = np.concatenate([np.repeat(x0[None], n, axis=0), np.repeat(xs[None], n, axis=0)])
    F = np.concatenate([np.repeat(f0[None], n, axis=0), np.repeat(fm[None], n, axis=0)])
    r = eng.solve_many(X, lo, hi, F, np.concatenate([toys, toys]))  # every toy fit in one vmapped call
    ts = tstat_np(mu, r["fun"][n:], r["fun"][:n], r["x"][:n, poi], test_stat)
    ts_s, ts_b = ts[:ntoys], ts[ntoys:]

    def pv(samples_sorted, value):
        k = samples_sorted.shape[0]
        return (k - np.searchsorted(samples_sorted, value, side="left")) / k

    ss, sb = np.sort(ts_s), np.sort(ts_b)
    clsb, clb = pv(ss, t_obs), pv(sb, t_obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        pe_sb = pv(ss, ts_b)
        pe_b = pv(sb, ts_b)
        pe_s = pe_sb / pe_b
        band = np.percentile(np.stack([pe_sb, pe_b, pe_s], axis=1), _TOY_PERCENTILES, axis=0)  # (5, 3)
        cls = clsb / clb
    conv = bool(np.all(r["converged"]) and np.all(r0["converged"]))
    return dict(
        ts=np.asarray([t_obs]), clsb=np.asarray([clsb]), clb=np.asarray([clb]), cls=np.asarray([cls]),
        clsb_exp=band[None, :, 0], clb_exp=band[None, :, 1], cls_exp=band[None, :, 2], converged=np.asarray([conv]),
        toys_sb=ts_s, toys_b=ts_b,
    )


def _sample_toys(eng: _Engine, rng: np.random.Generator, x: np.ndarray, ntoys: int) -> np.ndarray:
    """Toy datasets (main + aux, pyhf layout) drawn at parameters ``x``: Poisson main counts,
    Normal aux for normal constraints, Poisson aux for Poisson constraints (as pyhf's ``make_pdf(...).sample``)."""
    ir = eng.m.ir
    lam = eng.expected(x)
    main = rng.poisson(lam[: eng.B], size=(ntoys, eng.B)).astype(float)
    if not eng.A:
        return main
    aux = np.zeros((ntoys, eng.A))
    if ir.normal_idx.shape[0]:
        aux[:, ir.normal_auxpos] = x[ir.normal_idx] + ir.normal_sigma * rng.standard_normal((ntoys, ir.normal_idx.shape[0]))
    if ir.poisson_idx.shape[0]:
        rate = lam[eng.B:][ir.poisson_auxpos]
        aux[:, ir.poisson_auxpos] = rng.poisson(rate, size=(ntoys, rate.shape[0]))
    return np.concatenate([main, aux], axis=1)


