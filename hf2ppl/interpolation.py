r"""Interpolation codes of HistFactory as pyhf 0.7 implements them (code2 beyond |α| > 1: see below), for any array namespace.

All functions act elementwise on broadcastable arrays ``alpha``, ``lo``, ``nom``, ``hi``.

histosys (additive; they return :math:`\Delta` with :math:`\nu = \nu^0 + \sum \Delta`):

* ``code0``: piecewise linear, :math:`\Delta = \alpha(\nu^+ - \nu^0)` for :math:`\alpha > 0`,
  :math:`\alpha(\nu^0 - \nu^-)` otherwise.
* ``code2``: quadratic for :math:`|\alpha| \le 1` with :math:`a = \tfrac12(\nu^+ + \nu^-) - \nu^0`,
  :math:`b = \tfrac12(\nu^+ - \nu^-)`, :math:`\Delta = a\alpha^2 + b\alpha`, and beyond the linear
  extrapolation of that parabola, so :math:`\Delta` and :math:`\Delta'` are continuous at :math:`\pm 1`:
  :math:`\Delta = (a + b) + (b + 2a)(\alpha - 1)` for :math:`\alpha > 1` (value :math:`a + b = \nu^+ - \nu^0`,
  slope :math:`b + 2a`) and :math:`\Delta = (a - b) + (b - 2a)(\alpha + 1)` for :math:`\alpha < -1`
  (value :math:`a - b = \nu^- - \nu^0`, slope :math:`b - 2a`). This is ROOT's ``PiecewiseInterpolation``
  code 2. **It differs from pyhf 0.7.6 for** :math:`|\alpha| > 1`: pyhf's slow reference
  (``_slow_code2``) has the same slopes but drops the offsets, :math:`(b + 2a)(\alpha - 1)` and
  :math:`(b - 2a)(\alpha + 1)`, so it jumps at :math:`\pm 1`; its fast path (the one ``pyhf.Model``
  uses) additionally computes :math:`(b - 2a)\alpha` for :math:`\alpha < -1` (scikit-hep/pyhf#2610,
  fixed in #2668; the missing offsets are #2729). Inside :math:`[-1, 1]` all agree.
* ``code4p``: linear for :math:`|\alpha| > 1`, and inside the 6th-order polynomial
  :math:`\Delta = \alpha S + \alpha^2(15 - 10\alpha^2 + 3\alpha^4) A` with
  :math:`S = \tfrac12(\delta^+ + \delta^-)`, :math:`A = \tfrac1{16}(\delta^+ - \delta^-)`,
  :math:`\delta^+ = \nu^+ - \nu^0`, :math:`\delta^- = \nu^0 - \nu^-`.

normsys (multiplicative, on factors ``hi``/``lo`` relative to a nominal of 1):

* ``code1``: exponential, :math:`f = \mathrm{hi}^{\alpha}` for :math:`\alpha > 0`, :math:`\mathrm{lo}^{-\alpha}` otherwise.
* ``code4``: exponential for :math:`|\alpha| \ge 1`, inside :math:`f = 1 + \sum_{i=1}^6 a_i \alpha^i`
  with the :math:`a_i` fixed by continuity of :math:`f, f', f''` at :math:`\pm 1` (pyhf's matrix).
"""

from __future__ import annotations

import numpy as np

__all__ = ["histosys_delta", "normsys_factor", "normsys_logfactor", "normsys_precompute", "code4_coefficients", "HISTOSYS_CODES", "NORMSYS_CODES"]

HISTOSYS_CODES = ("code0", "code2", "code4p")
NORMSYS_CODES = ("code1", "code4")

# pyhf's inverse of the code-4 boundary-condition matrix for alpha0 = 1
_CODE4_AINV = np.array([
    [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
    [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
    [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
    [3.0 / -2, 3.0 / -2, -7.0 / -8, 7.0 / -8, -1.0 / 8, -1.0 / 8],
    [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
    [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
])


def histosys_delta(xp, code: str, alpha, lo, nom, hi):
    """Additive histosys variation for interpolation ``code`` (code0, code2, code4p)."""
    if code == "code0":
        return xp.where(alpha > 0, alpha * (hi - nom), alpha * (nom - lo))
    if code == "code2":
        a = 0.5 * (hi + lo) - nom
        b = 0.5 * (hi - lo)
        inside = alpha * alpha * a + alpha * b
        above = (a + b) + (b + 2 * a) * (alpha - 1.0)
        below = (a - b) + (b - 2 * a) * (alpha + 1.0)
        return xp.where(alpha > 1, above, xp.where(alpha >= -1, inside, below))
    if code == "code4p":
        d_up = hi - nom
        d_dn = nom - lo
        s = 0.5 * (d_up + d_dn)
        a = 0.0625 * (d_up - d_dn)
        a2 = alpha * alpha
        inside = (a2 * (a2 * (a2 * 3.0 - 10.0) + 15.0)) * a + alpha * s
        return xp.where(alpha < -1, alpha * d_dn, xp.where(alpha > 1, alpha * d_up, inside))
    raise ValueError(f"unknown histosys interpolation code {code!r}; use one of {HISTOSYS_CODES}")


def code4_coefficients(xp, lo, hi):
    """The six polynomial coefficients of code 4, stacked on a new leading axis (6, ...)."""
    ones = hi * 0 + 1.0
    log_up, log_dn = xp.log(hi), xp.log(lo)
    b = [hi - ones, lo - ones, log_up * hi, -log_dn * lo, log_up * log_up * hi, log_dn * log_dn * lo]
    return [sum(float(_CODE4_AINV[r, c]) * b[c] for c in range(6)) for r in range(6)]


def normsys_precompute(xp, code: str, lo, hi) -> dict:
    """Data-only inputs of :func:`normsys_factor`: ``log(hi)``, ``log(lo)`` and, for code4, the coefficients."""
    pre = {"log_hi": xp.log(hi), "log_lo": xp.log(lo)}
    if code == "code4":
        pre["coef"] = code4_coefficients(xp, lo, hi)
    return pre


def _normsys_pieces(xp, code: str, alpha, pre: dict):
    r"""The two pieces every normsys code is made of: the exponent :math:`|\alpha| \log(\mathrm{hi\ or\ lo})`
    and, for code4, the inner polynomial :math:`1 + \sum_i a_i \alpha^i` (None for code1)."""
    if code not in NORMSYS_CODES:
        raise ValueError(f"unknown normsys interpolation code {code!r}; use one of {NORMSYS_CODES}")
    lin = xp.abs(alpha) * xp.where(alpha >= 0, pre["log_hi"], pre["log_lo"])
    if code == "code1":
        return lin, None
    c = pre["coef"]
    return lin, 1.0 + alpha * (c[0] + alpha * (c[1] + alpha * (c[2] + alpha * (c[3] + alpha * (c[4] + alpha * c[5])))))


def normsys_factor(xp, code: str, alpha, lo, hi, pre: dict | None = None):
    """Multiplicative normsys factor for interpolation ``code`` (code1, code4).

    The exponential pieces are written as ``exp(|alpha| log(hi or lo))``, which equals pyhf's
    ``hi**alpha`` / ``lo**(-alpha)`` and has a cheaper, NaN-free gradient. ``pre`` (from
    :func:`normsys_precompute`) may be passed to skip the data-only work.
    """
    pre = normsys_precompute(xp, code, lo, hi) if pre is None else pre
    lin, poly = _normsys_pieces(xp, code, alpha, pre)
    expo = xp.exp(lin)
    return expo if poly is None else xp.where(xp.abs(alpha) < 1, poly, expo)


def normsys_logfactor(xp, code: str, alpha, pre: dict):
    """``(log|f|, f < 0)`` of :func:`normsys_factor`: code1 is then linear in :math:`|\alpha|`, and a product
    of factors is one ``exp`` of a sum. The code-4 polynomial can be negative for very asymmetric hi/lo
    (real workspaces have lo = 0.01 with hi = 100): its sign is returned so that a product keeps pyhf's
    (negative) value; |f| is floored at 1e-300. The sign is None for code1 (never negative)."""
    lin, poly = _normsys_pieces(xp, code, alpha, pre)
    if poly is None:
        return lin, None
    inside = xp.abs(alpha) < 1
    mag = xp.abs(poly)
    safe = xp.where(inside & (mag > 1e-300), mag, 1.0)
    return xp.where(inside, xp.where(mag > 1e-300, xp.log(safe), -690.8), lin), inside & (poly < 0)
