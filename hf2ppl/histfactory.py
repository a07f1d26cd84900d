r"""The HistFactory math, once, against an array namespace ``xp`` (see :mod:`hf2ppl.xp`).

With parameters :math:`\theta` (flat, pyhf order), the expected rate of sample
:math:`s` in bin :math:`b` is

.. math::
    \nu_{sb}(\theta) = \Big(\nu^0_{sb} + \sum_{h \in \text{histosys}} \Delta_h(\alpha_h)\Big)
        \prod_{n \in \text{normsys}} f_n(\alpha_n) \prod_{k} \theta_{k(s,b)}

where the last product runs over the normfactor, lumi, shapefactor, shapesys
and staterror parameters acting on the cell. The log-likelihood is

.. math::
    \ln L(\theta) = \sum_b \ln \mathrm{Pois}\big(n_b \mid \textstyle\sum_s \nu_{sb}\big)
      + \sum_{j \in \text{normal}} \ln \mathcal N(a_j \mid \theta_j, \sigma_j)
      + \sum_{j \in \text{poisson}} \ln \mathrm{Pois}(a_j \mid \tau_j \theta_j)

with the continuous Poisson :math:`\ln\mathrm{Pois}(n|\lambda) = n\ln\lambda - \lambda - \ln\Gamma(n+1)`,
identical to pyhf's ``Model.logpdf``.

All functions take the tensors of a :class:`~hf2ppl.ir.ModelIR` (numpy
arrays, usable as constants by every backend) and a flat parameter vector.
"""

from __future__ import annotations

import math

import numpy as np

from .interpolation import histosys_delta, normsys_logfactor, normsys_precompute

__all__ = [
    "FIT_VALUES",
    "FULL_VALUES",
    "Tensors",
    "tensors",
    "unify",
    "expected_rates",
    "expected_main",
    "expected_auxdata",
    "poisson_logpdf",
    "normal_logpdf",
    "main_logpdf",
    "constraint_logpdf",
    "logpdf",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: most runs (see :func:`_factor_runs`) for which the free factors are built from slices instead of one gather
MAX_FACTOR_RUNS = 48


def _factor_runs(factor_idx: np.ndarray, one: int):
    """The factor slots ``factor_idx`` (K, S, B) as runs over the flattened cells, or ``None`` when there are
    more than :data:`MAX_FACTOR_RUNS` of them.

    Per slot ``k``, a tuple of ``(kind, length, index)`` covering the S·B cells in order: ``kind`` 0 is a run of
    the neutral index ``one`` (factor 1), 1 a run of one parameter (a normfactor or lumi on a sample: a
    broadcast), 2 a run of consecutive parameters starting at ``index`` (a shapesys, staterror or shapefactor on
    a channel: a slice). Built from slices and broadcasts the factors need no gather, whose gradient is a
    scatter-add (on a CPU as costly as the rest of a small density); slots that are neutral everywhere are left out.
    """
    K = factor_idx.shape[0]
    flat = factor_idx.reshape(K, -1)
    out, total = [], 0
    for k in range(K):
        row, runs, i, n = flat[k], [], 0, flat.shape[1]
        while i < n:
            v, j = int(row[i]), i + 1
            if v == one:
                while j < n and row[j] == one:
                    j += 1
                runs.append((0, j - i, one))
            elif j < n and row[j] == v:
                while j < n and row[j] == v:
                    j += 1
                runs.append((1, j - i, v))
            else:
                while j < n and row[j] == row[j - 1] + 1 and row[j] != one:
                    j += 1
                runs.append((2, j - i, v) if j - i > 1 else (1, 1, v))
            i = j
        if all(r[0] == 0 for r in runs):
            continue
        total += sum(r[0] != 0 for r in runs)
        if total > MAX_FACTOR_RUNS:
            return None
        out.append(tuple(runs))
    return tuple(out)


def _index(idx: np.ndarray):
    """A slice where ``idx`` is a contiguous ascending range (a cheaper read than a gather), else ``idx``."""
    idx = np.asarray(idx)
    if idx.ndim == 1 and idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return idx


#: the float arrays of :class:`Tensors` that the fitting kernels read; :meth:`Tensors.values` returns them and
#: :meth:`Tensors.bind` puts them back, so that compiled kernels take them as data (one compilation per structure)
FIT_VALUES = ("nominal", "hs_lo_a", "hs_hi_a", "ns_pre", "normal_sigma", "normal_logsigma", "poisson_factor")
#: ... and the differentiable-yields path (``nominal=`` replaced: every histosys entry is read)
FULL_VALUES = FIT_VALUES + ("hs_lo", "hs_hi")


class Tensors:
    """The IR's arrays in a given float dtype, plus precomputed constants (code-4 coefficients).

    The layout is sparse: one entry per modifier present, sorted by its cell. Two masks select, among the
    structural entries (a modifier on a sample), those the kernels evaluate: histosys entries whose templates
    differ from the nominal, normsys entries with hi or lo different from 1 (others cannot change a rate at
    the IR's nominal yields). ``masks=`` overrides them, e.g. with the union over the signal points of a
    patchset, so that all of them share one :meth:`structure_key` and one compiled kernel.
    """

    def __init__(self, ir, dtype="float64", masks=None):
        f = np.dtype(dtype)
        self.dtype = f
        self.npars = ir.npars
        self.ext = np.array([0.0, 1.0], dtype=f)
        self.nominal = ir.nominal.astype(f)
        self.factor_idx = ir.factor_idx
        self.factor_runs = _factor_runs(ir.factor_idx, ir.npars + 1)
        self.normsys_code = ir.normsys_code
        self.histosys_code = ir.histosys_code
        self.bin_channel = ir.bin_channel
        P = ir.npars
        S, B = ir.nominal.shape
        C = ir.normsys_idx.shape[2] if ir.normsys_idx.ndim == 3 else 0
        self.n_samples, self.n_bins, self.n_channels = S, B, C
        k, s_, b = np.nonzero(ir.histosys_idx != P)  # neutral slots read alpha index P (= 0)
        cell = s_ * B + b
        o = np.lexsort((k, cell))
        hs_par, hs_cell = ir.histosys_idx[k, s_, b][o].astype(np.int32), cell[o].astype(np.int32)
        hs_lo, hs_hi = ir.histosys_lo[k, s_, b][o].astype(f), ir.histosys_hi[k, s_, b][o].astype(f)
        k, s_, c = np.nonzero(ir.normsys_idx != P)  # neutral slots: alpha index P, hi = lo = 1
        cell = s_ * C + c
        o = np.lexsort((k, cell))
        ns_par, ns_cell = ir.normsys_idx[k, s_, c][o].astype(np.int32), cell[o].astype(np.int32)
        ns_lo, ns_hi = ir.normsys_lo[k, s_, c][o], ir.normsys_hi[k, s_, c][o]
        self._set_entries(hs_par, hs_cell, hs_lo, hs_hi, ns_par, ns_cell, ns_lo, ns_hi, masks)
        self.normal_idx = _index(ir.normal_idx)
        self.normal_auxpos = _index(ir.normal_auxpos)
        self.normal_aux = ir.auxdata[ir.normal_auxpos].astype(f)
        self.normal_sigma = ir.normal_sigma.astype(f)
        self.normal_logsigma = np.log(ir.normal_sigma).astype(f)
        self.poisson_idx = _index(ir.poisson_idx)
        self.poisson_auxpos = _index(ir.poisson_auxpos)
        self.poisson_aux = ir.auxdata[ir.poisson_auxpos].astype(f)
        self.n_normal = int(ir.normal_idx.shape[0])
        self.n_poisson = int(ir.poisson_idx.shape[0])
        # expected auxdata = concat(normal means, poisson rates)[aux_order], in pyhf's auxdata order
        self.aux_order = np.argsort(np.concatenate([ir.normal_auxpos, ir.poisson_auxpos])).astype(np.int32)
        self.poisson_factor = ir.poisson_factor.astype(f)
        self.observed = ir.observed.astype(f)
        self.auxdata = ir.auxdata.astype(f)
        # data-only normalisation terms, precomputed for the observed data
        from scipy.special import gammaln

        self.lgamma_observed = gammaln(ir.observed + 1.0).astype(f)
        self.lgamma_poisson_aux = gammaln(ir.auxdata[ir.poisson_auxpos] + 1.0).astype(f)

    def _set_entries(self, hs_par, hs_cell, hs_lo, hs_hi, ns_par, ns_cell, ns_lo, ns_hi, masks=None) -> None:
        """The sparse histosys/normsys entries (sorted by cell) and what the kernels read of them."""
        f = self.dtype
        self.hs_par, self.hs_cell, self.hs_lo, self.hs_hi = hs_par, hs_cell, hs_lo.astype(f), hs_hi.astype(f)
        nom_e = self.nominal.reshape(-1)[hs_cell]
        hs_mask = (self.hs_lo != nom_e) | (self.hs_hi != nom_e)
        ns_mask = (ns_hi != 1.0) | (ns_lo != 1.0)
        if masks is not None:
            hs_mask, ns_mask = (np.asarray(m_, bool) for m_ in masks)
            if hs_mask.shape != hs_par.shape or ns_mask.shape != ns_par.shape:
                raise ValueError("Tensors: masks do not match the model's modifier entries")
        #: the masks in use (see the class docstring)
        self.masks = (hs_mask, ns_mask)
        a = np.flatnonzero(hs_mask)
        self.hs_active = a
        self.hs_par_a, self.hs_cell_a = hs_par[a], hs_cell[a]
        self.hs_lo_a, self.hs_hi_a = self.hs_lo[a], self.hs_hi[a]
        self.ns_par_all, self.ns_cell_all, self.ns_lo_all, self.ns_hi_all = ns_par, ns_cell, ns_lo, ns_hi
        self.ns_par, self.ns_cell = ns_par[ns_mask], ns_cell[ns_mask]
        pre = normsys_precompute(np, self.normsys_code, ns_lo[ns_mask], ns_hi[ns_mask])
        self.ns_pre = {k_: ([c_.astype(f) for c_ in v] if k_ == "coef" else v.astype(f)) for k_, v in pre.items()}

    @property
    def hs_entries_active(self):
        return self.hs_par_a, self.hs_cell_a, self.hs_lo_a, self.hs_hi_a

    def values(self, full: bool = False) -> dict:
        """The float arrays the fitting kernels read (:data:`FIT_VALUES`; ``full``: :data:`FULL_VALUES`), a pytree."""
        return {k: getattr(self, k) for k in (FULL_VALUES if full else FIT_VALUES)}

    def bind(self, values: dict) -> Tensors:
        """A copy whose float arrays are replaced by ``values`` (e.g. JAX tracers: the yields of a batch of models)."""
        t = object.__new__(Tensors)
        t.__dict__.update(self.__dict__)
        t.__dict__.update(values)
        return t

    def structure_key(self, entries: bool = True) -> str:
        """A digest of everything but the float values: models with equal keys compile to the same kernels.
        ``entries=False``: without the histosys/normsys entries; models with equal such keys (e.g. the signal
        points of a patchset, whose signals carry different systematics) share kernels after :func:`unify`."""
        import hashlib

        h = hashlib.sha1()
        h.update(repr((self.dtype.str, self.npars, self.n_samples, self.n_bins, self.n_channels, self.normsys_code, self.histosys_code,
                       self.n_normal, self.n_poisson, sorted(self.ns_pre))).encode())
        entry_arrays = (self.hs_par, self.hs_cell, self.hs_active, self.ns_par, self.ns_cell) if entries else ()
        for a in (self.factor_idx, self.bin_channel, *entry_arrays, self.aux_order,
                  self.normal_idx, self.normal_auxpos, self.poisson_idx, self.poisson_auxpos):
            if isinstance(a, slice):
                h.update(repr(a).encode())
            else:
                a = np.ascontiguousarray(a)
                h.update(repr(a.shape).encode() + a.dtype.str.encode())
                h.update(a.tobytes())
        return h.hexdigest()


def tensors(ir, dtype="float64", masks=None) -> Tensors:
    return Tensors(ir, dtype, masks)


def unify(Ts: list[Tensors], layout: tuple | None = None) -> tuple[list[Tensors], tuple]:
    """Models of equal ``structure_key(entries=False)`` rewritten on one common set of histosys/normsys
    entries: the union of theirs (and of ``layout``, a previous result), an entry a model lacks given neutral
    values (histosys templates equal to its nominal, normsys hi = lo = 1: exactly no effect in every code).
    An entry is evaluated for all when it can change a rate in any. Returns the rewritten models (one
    ``structure_key``: one compiled kernel) and the layout, to pass to the next call (kernels are reused
    while the union does not grow)."""
    P1 = Ts[0].npars + 2
    hs_codes = [T.hs_cell.astype(np.int64) * P1 + T.hs_par for T in Ts]
    ns_codes = [T.ns_cell_all.astype(np.int64) * P1 + T.ns_par_all for T in Ts]
    hs_on = [c[m] for c, m in zip(hs_codes, (T.masks[0] for T in Ts))]
    ns_on = [c[m] for c, m in zip(ns_codes, (T.masks[1] for T in Ts))]
    if layout is not None:
        hs_codes.append(layout[0])
        ns_codes.append(layout[2])
        hs_on.append(layout[0][layout[1]])
        ns_on.append(layout[2][layout[3]])
    hs_u, ns_u = np.unique(np.concatenate(hs_codes)), np.unique(np.concatenate(ns_codes))
    hs_m, ns_m = np.isin(hs_u, np.concatenate(hs_on)), np.isin(ns_u, np.concatenate(ns_on))
    hs_par, hs_cell = (hs_u % P1).astype(np.int32), (hs_u // P1).astype(np.int32)
    ns_par, ns_cell = (ns_u % P1).astype(np.int32), (ns_u // P1).astype(np.int32)
    out = []
    for T, hc, nc in zip(Ts, hs_codes, ns_codes):
        t = object.__new__(Tensors)
        t.__dict__.update(T.__dict__)
        pos = np.searchsorted(hs_u, hc)
        lo = T.nominal.reshape(-1)[hs_cell].astype(T.dtype)
        hi = lo.copy()
        lo[pos], hi[pos] = T.hs_lo, T.hs_hi
        npos = np.searchsorted(ns_u, nc)
        nlo, nhi = np.ones(ns_u.size), np.ones(ns_u.size)
        nlo[npos], nhi[npos] = T.ns_lo_all, T.ns_hi_all
        t._set_entries(hs_par, hs_cell, lo, hi, ns_par, ns_cell, nlo, nhi, (hs_m, ns_m))
        out.append(t)
    return out, (hs_u, hs_m, ns_u, ns_m)


def expected_rates(xp, T: Tensors, theta, nominal=None):
    """Expected rate per sample and bin, shape ``(S, B)``.

    ``nominal`` optionally replaces the nominal yields (``(S, B)``; used to
    differentiate with respect to yields); histosys variations keep their
    absolute up/down templates.

    The modifiers are evaluated on the sparse entries of :class:`Tensors` (one per modifier present):
    histosys variations are segment-summed into their cells, normsys factors multiplied as
    ``exp`` of a segment sum of their logarithms, the free factors gathered densely.
    """
    nom = T.nominal if nominal is None else nominal
    S, B, C = T.n_samples, T.n_bins, T.n_channels
    rates = nom
    if nominal is None:  # only the entries that change the rate at the IR's nominal yields
        hs_par, hs_cell, hs_lo, hs_hi = T.hs_par_a, T.hs_cell_a, T.hs_lo_a, T.hs_hi_a
    else:
        hs_par, hs_cell, hs_lo, hs_hi = T.hs_par, T.hs_cell, T.hs_lo, T.hs_hi
    if hs_par.shape[0]:
        nom_e = nom.reshape((-1,))[hs_cell]
        delta = histosys_delta(xp, T.histosys_code, theta[hs_par], hs_lo, nom_e, hs_hi)
        rates = rates + xp.segment_sum(delta, hs_cell, S * B).reshape((S, B))
    if T.ns_par.shape[0]:
        logf, negative = normsys_logfactor(xp, T.normsys_code, theta[T.ns_par], T.ns_pre)
        # a product of normsys factors beyond e^±600 (rates off by 260 orders of magnitude) is clamped: such
        # points are reached only by wild trial steps, where subnormal arithmetic would slow every lane down
        logF = xp.segment_sum(logf, T.ns_cell, S * C)
        F = xp.exp(xp.where(logF < -600.0, -600.0, xp.where(logF > 600.0, 600.0, logF)))
        if negative is not None:  # the sign of the product: (-1)^(number of negative factors)
            count = xp.segment_sum(negative.astype(logf.dtype), T.ns_cell, S * C)
            F = F * (1.0 - 2.0 * (count % 2.0))
        F = F.reshape((S, C))
        rates = rates * F[:, T.bin_channel]  # (S, C) -> (S, B)
    if T.factor_runs is not None:  # slices and broadcasts of theta, no gather (see _factor_runs)
        if T.factor_runs:
            F = None
            for runs in T.factor_runs:
                parts = []
                for kind, n, i in runs:
                    if kind == 0:
                        parts.append(xp.asarray(np.ones(n, T.dtype)))
                    elif kind == 1:
                        parts.append(theta[i] * xp.asarray(np.ones(n, T.dtype)))
                    else:
                        parts.append(theta[i:i + n])
                f = parts[0] if len(parts) == 1 else xp.concatenate(parts)
                F = f if F is None else F * f
            rates = rates * F.reshape((S, B))
    elif T.factor_idx.shape[0]:
        ext = xp.concatenate([theta, xp.asarray(T.ext)])
        rates = rates * xp.prod(ext[T.factor_idx], axis=0)
    return rates


def expected_main(xp, T: Tensors, theta, nominal=None):
    """Expected main-measurement counts per bin, shape ``(B,)``."""
    return xp.sum(expected_rates(xp, T, theta, nominal), axis=0)


def expected_auxdata(xp, T: Tensors, theta):
    """Expectations of the auxiliary data (normal: theta, Poisson: tau * theta), pyhf's auxdata order."""
    parts = []
    if T.n_normal:
        parts.append(theta[T.normal_idx])
    if T.n_poisson:
        parts.append(theta[T.poisson_idx] * T.poisson_factor)
    if not parts:
        return theta[:0]
    return xp.concatenate(parts)[T.aux_order]


def poisson_logpdf(xp, n, lam, lgamma_n1=None):
    r"""Continuous Poisson :math:`n \ln\lambda - \lambda - \ln\Gamma(n+1)`, elementwise.

    The one rule for expectations at or below zero (a histosys extrapolated past zero), chosen to equal
    pyhf's ``Model.logpdf`` wherever pyhf's value is finite:

    * :math:`n = 0`: :math:`-\lambda` for every :math:`\lambda` (pyhf's ``xlogy(0, λ) = 0``), gradient
      :math:`-1` (finite also at :math:`\lambda = 0`, where ``xlogy`` has a NaN derivative);
    * :math:`n > 0, \lambda \le 0`: :math:`-\infty` (pyhf: :math:`-\infty` at 0, NaN below) with a zero
      gradient; the minimiser rejects any step that lands there.

    ``lgamma_n1`` optionally supplies a precomputed :math:`\ln\Gamma(n+1)`.
    """
    lg = xp.gammaln(n + 1.0) if lgamma_n1 is None else lgamma_n1
    if isinstance(n, np.ndarray) and not np.any(n == 0):  # constant counts, none empty: two selects fewer
        bad = lam <= 0
        return xp.where(bad, -np.inf, n * xp.log(xp.where(bad, 1.0, lam)) - lam - lg)
    empty = xp.equal(n, 0)
    bad = (lam <= 0) & ~empty
    safe = xp.where(empty | bad, 1.0, lam)
    lp = xp.where(empty, -lam, n * xp.log(safe) - lam - lg)
    return xp.where(bad, -np.inf, lp)


def normal_logpdf(xp, x, mu, sigma, log_sigma=None):
    r""":math:`-\tfrac12((x-\mu)/\sigma)^2 - \ln\sigma - \tfrac12\ln 2\pi`, elementwise."""
    z = (x - mu) / sigma
    return -0.5 * z * z - (xp.log(sigma) if log_sigma is None else log_sigma) - _HALF_LOG_2PI


def main_logpdf(xp, T: Tensors, theta, main=None, nominal=None):
    """Sum of the Poisson main terms over all bins."""
    lam = expected_main(xp, T, theta, nominal)
    if main is None:
        return xp.sum(poisson_logpdf(xp, T.observed, lam, T.lgamma_observed))
    return xp.sum(poisson_logpdf(xp, main, lam))


def constraint_logpdf(xp, T: Tensors, theta, aux=None):
    """Sum of the auxiliary (constraint) terms, as pyhf's constraint model."""
    total = 0.0
    if T.n_normal:
        a = T.normal_aux if aux is None else aux[T.normal_auxpos]
        total = total + xp.sum(normal_logpdf(xp, a, theta[T.normal_idx], T.normal_sigma, T.normal_logsigma))
    if T.n_poisson:
        rate = theta[T.poisson_idx] * T.poisson_factor
        if aux is None:
            total = total + xp.sum(poisson_logpdf(xp, T.poisson_aux, rate, T.lgamma_poisson_aux))
        else:
            total = total + xp.sum(poisson_logpdf(xp, aux[T.poisson_auxpos], rate))
    return total


def logpdf(xp, T: Tensors, theta, main=None, aux=None, nominal=None):
    """pyhf's ``Model.logpdf``: main terms plus constraint terms."""
    return main_logpdf(xp, T, theta, main, nominal) + constraint_logpdf(xp, T, theta, aux)


# ====================================================================== exact Hessian, from the structure
#: the structured Hessian is used while the per-cell derivative matrices (cells x parameters) stay this small
HESSIAN_MAX_CELLS_X_PARS = 1 << 21
#: ... and while a cell has at most this many free-factor slots (its second derivatives are products of the others)
HESSIAN_MAX_FACTOR_SLOTS = 8


def hessian_supported(T: Tensors) -> bool:
    """Whether :func:`logpdf_value_grad_hessian` applies to ``T`` (sizes within the bounds above)."""
    return (T.n_samples * T.n_bins * (T.npars + 2) <= HESSIAN_MAX_CELLS_X_PARS
            and len(_live_factor_slots(T)) <= HESSIAN_MAX_FACTOR_SLOTS)


def _live_factor_slots(T: Tensors) -> list[int]:
    one = T.npars + 1
    return [k for k in range(T.factor_idx.shape[0]) if np.any(T.factor_idx[k] != one)]


def _d012(fun, x, has_aux=False):
    """``(f(x), f'(x), f''(x))`` of an elementwise function, by nested forward mode (JAX); with ``has_aux``
    (``fun`` returns ``(f, aux)``) also ``aux``."""
    import jax
    import jax.numpy as jnp

    t = jnp.ones_like(x)
    if not has_aux:
        (f, d1), (_, d2) = jax.jvp(lambda y: jax.jvp(fun, (y,), (t,)), (x,), (t,))
        return f, d1, d2
    def inner(y):
        f, d1, aux = jax.jvp(fun, (y,), (t,), has_aux=True)
        return (f, d1), aux

    (f, d1), (_, d2), aux = jax.jvp(inner, (x,), (t,), has_aux=True)
    return f, d1, d2, aux


def _tdot(a, b):
    """``a.T @ b`` (a sum over cells) with the transpose of ``a`` materialised first: XLA's CPU dot on a
    transposed operand (contracting its leading axis) ran 2-4x slower than the copy plus a plain product
    (staus: the 96 x 40 x 96 normsys block 53 -> ~17 us per Hessian)."""
    from jax import lax

    return lax.optimization_barrier(a.T) @ b


def logpdf_value_grad_hessian(T: Tensors, theta, main=None, aux=None, nominal=None):
    r"""``(value, gradient (P,), Hessian (P, P))`` of :func:`logpdf` at ``theta``, the derivatives assembled from
    the model's structure in forward mode (JAX only; no reverse pass).

    Every cell (sample :math:`s`, bin :math:`b`) has the rate :math:`\nu = N\,A\,F` with the normsys product
    :math:`N = \prod_n f_n(\alpha_n) = \pm e^{\sum_n \ln|f_n|}`, the additive part :math:`A = \nu^0 + \sum_h
    \Delta_h(\alpha_h)` and the free factors :math:`F = \prod_k \theta_{k}`: each term a function of *one*
    parameter. With :math:`\ell_1, \ell_2` the first two derivatives of :math:`\ln|f_n|` per entry,
    :math:`\Delta', \Delta''` those of the histosys variations, :math:`F_{-k}` (:math:`F_{-kl}`) the product of
    the factors but slot :math:`k` (slots :math:`k, l`), and the per-cell gradient vectors
    :math:`L = \sum_n \ell_1 e_{\alpha_n}`, :math:`D = \sum_h \Delta' e_{\alpha_h}`, :math:`\Phi = \sum_k F_{-k}
    e_{\theta_k}` and :math:`\nabla G = F D + A \Phi` (:math:`G = AF`):

    .. math::
        \nabla\nu = N (G L + \nabla G), \qquad
        \nabla^2\nu = N\big[G (L L^\top + \mathrm{diag}\,\ell_2) + L\nabla G^\top + \nabla G L^\top
            + F\,\mathrm{diag}\,\Delta'' + D\Phi^\top + \Phi D^\top + A \textstyle\sum_{k\ne l} F_{-kl}
            e_{\theta_k} e_{\theta_l}^\top\big]

    and with :math:`\phi_b(\lambda) = -\ln\mathrm{Pois}(n_b|\lambda)`, :math:`\lambda_b = \sum_s \nu_{sb}`,
    :math:`J = \partial\lambda/\partial\theta`, the NLL's main-term Hessian is
    :math:`J^\top \mathrm{diag}(\phi'') J + \sum_{sb} \phi'_b \nabla^2\nu_{sb}`; the constraint terms add a
    diagonal; the gradient is :math:`-J^\top\phi'` plus the constraints'. All of it is a few (cells x P) matrix
    products instead of P forward-over-reverse passes. The
    per-entry derivatives are those of :func:`histosys_delta` / :func:`normsys_logfactor` /
    :func:`poisson_logpdf` themselves (nested forward mode): the same math, equal to ``jax.value_and_grad`` and
    ``jax.hessian`` of :func:`logpdf` to rounding (tests/test_hessian.py).
    """
    import jax
    import jax.numpy as jnp

    from .xp import jax_namespace

    xp = jax_namespace()
    P, S, B, C = T.npars, T.n_samples, T.n_bins, T.n_channels
    Q, nc = P + 2, S * B
    dt = theta.dtype
    cells = np.arange(nc)
    A = jnp.asarray(T.nominal if nominal is None else nominal, dt).reshape(-1)
    if nominal is None:
        hs_par, hs_cell, hs_lo, hs_hi = T.hs_par_a, T.hs_cell_a, T.hs_lo_a, T.hs_hi_a
    else:
        hs_par, hs_cell, hs_lo, hs_hi = T.hs_par, T.hs_cell, T.hs_lo, T.hs_hi
    Dm = None
    if hs_par.shape[0]:
        nom_e = A[hs_cell]
        dv, d1, d2 = _d012(lambda a: histosys_delta(xp, T.histosys_code, a, hs_lo, nom_e, hs_hi), theta[hs_par])
        A = A + jax.ops.segment_sum(dv, hs_cell, nc, indices_are_sorted=True)
        cols_hs = np.unique(hs_par)
        Dm = jnp.zeros((nc, cols_hs.size), dt).at[hs_cell, np.searchsorted(cols_hs, hs_par)].add(d1)
    N, L = jnp.ones((nc,), dt), None
    row = (np.arange(S)[:, None] * C + np.asarray(T.bin_channel)[None, :]).reshape(-1)
    if T.ns_par.shape[0]:
        alpha = theta[T.ns_par]
        lv, l1, l2, negative = _d012(lambda a: normsys_logfactor(xp, T.normsys_code, a, T.ns_pre), alpha, has_aux=True)
        logF = jax.ops.segment_sum(lv, T.ns_cell, S * C, indices_are_sorted=True)
        Nc = jnp.exp(jnp.clip(logF, -600.0, 600.0))
        if negative is not None:
            count = jax.ops.segment_sum(negative.astype(dt), T.ns_cell, S * C, indices_are_sorted=True)
            Nc = Nc * (1.0 - 2.0 * (count % 2.0))
        N = Nc[row]
        cols_ns = np.unique(T.ns_par)
        L = jnp.zeros((S * C, cols_ns.size), dt).at[T.ns_cell, np.searchsorted(cols_ns, T.ns_par)].add(l1)[row]
    ext = jnp.concatenate([theta, jnp.asarray(T.ext, dt)])
    slots = _live_factor_slots(T)
    idx = [np.asarray(T.factor_idx[k]).reshape(-1) for k in slots]
    fv = [ext[i] for i in idx]

    def prod_except(*skip):
        out = jnp.ones((nc,), dt)
        for j, v in enumerate(fv):
            if j not in skip:
                out = out * v
        return out

    F = prod_except()
    # the derivative matrices have one column per parameter that enters them (few of the P, on real models)
    cols_f = np.unique(np.concatenate(idx)) if idx else np.zeros(0, int)
    cols_f = cols_f[cols_f < P]
    Phi = None
    if cols_f.size:
        Phi = jnp.zeros((nc, cols_f.size), dt)
        for j, i in enumerate(idx):
            sel = i < P
            Phi = Phi.at[cells[sel], np.searchsorted(cols_f, i[sel])].add(prod_except(j)[sel])
    lam = (N * A * F).reshape(S, B).sum(axis=0)
    n = T.observed if main is None else main
    lg = T.lgamma_observed if main is None else None
    phi, phi1, phi2 = _d012(lambda x: -poisson_logpdf(xp, n, x, lg), lam)
    wN = jnp.tile(phi1, S) * N  # phi'_b N per cell (cells are sample-major)
    G = A * F
    # grad G = F D + A Phi on the columns cols_g = (histosys parameters, factor parameters)
    parts, cols = [], []
    if Dm is not None:
        parts.append(F[:, None] * Dm)
        cols.append(cols_hs)
    if Phi is not None:
        parts.append(A[:, None] * Phi)
        cols.append(cols_f)
    gradG = None if not parts else (parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1))
    cols_g = None if not cols else np.concatenate(cols)
    H = jnp.zeros((Q, Q), dt)
    diag = jnp.zeros((Q,), dt)
    # Gauss-Newton part J^T diag(phi'') J, J = d lambda / d theta (B, Q)
    J = jnp.zeros((B, Q), dt)
    if L is not None:
        J = J.at[:, cols_ns].add(((N * G)[:, None] * L).reshape(S, B, -1).sum(axis=0))
    if gradG is not None:
        J = J.at[:, cols_g].add((N[:, None] * gradG).reshape(S, B, -1).sum(axis=0))
    H = H + _tdot(J, phi2[:, None] * J)
    if L is not None:
        H = H.at[np.ix_(cols_ns, cols_ns)].add(_tdot(L, (wN * G)[:, None] * L))
        if gradG is not None:
            X = _tdot(L, wN[:, None] * gradG)
            H = H.at[np.ix_(cols_ns, cols_g)].add(X).at[np.ix_(cols_g, cols_ns)].add(X.T)
        q = jax.ops.segment_sum(wN * G, row, S * C)
        diag = diag + jax.ops.segment_sum(q[T.ns_cell] * l2, T.ns_par, Q)
    if Dm is not None:
        diag = diag + jax.ops.segment_sum((wN * F)[hs_cell] * d2, hs_par, Q)
        if Phi is not None:
            Y = _tdot(Dm, wN[:, None] * Phi)
            H = H.at[np.ix_(cols_hs, cols_f)].add(Y).at[np.ix_(cols_f, cols_hs)].add(Y.T)
    wNA = wN * A
    for j in range(len(idx)):
        for k in range(j + 1, len(idx)):
            c = wNA * prod_except(j, k)
            H = H.at[idx[j], idx[k]].add(c).at[idx[k], idx[j]].add(c)
    H = H + jnp.diag(diag)
    # the constraint terms: each a function of one parameter, so their Hessian is diagonal (= H @ 1)
    (c, gc), (_, hc) = jax.jvp(jax.value_and_grad(lambda t: constraint_logpdf(xp, T, t, aux)), (theta,), (jnp.ones_like(theta),))
    return c - jnp.sum(phi), gc - (J.T @ phi1)[:P], jnp.diag(hc) - H[:P, :P]
