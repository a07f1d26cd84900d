"""Profile-likelihood test statistics and Asimov data (pyhf's ``infer.test_statistics``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._engine import _check, _check_test_stat, _engine
from .asymptotics import tstat_np


# ====================================================================== test statistics
def test_statistic(model: Any, poi_value: float, data: Any = None, *, test_stat: str = "qtilde", init: Any = None, bounds: Any = None, fixed: Any = None) -> np.ndarray:
    r"""A profile-likelihood test statistic, as ``pyhf.infer.test_statistics``.

    ``"tmu"``/``"tmu_tilde"``: :math:`t_\mu = -2\ln\lambda(\mu)` (clipped at 0; the tilde variant is the same
    formula with the POI bounded at 0, as in pyhf); ``"q"``/``"qtilde"``: :math:`q_\mu = t_\mu` if
    :math:`\hat\mu \le \mu` else 0; ``"q0"``: :math:`q_0 = t_0` if :math:`\hat\mu \ge 0` else 0.

    Example:
        >>> hf2ppl.infer.frequentist.test_statistic(m, 1.0, test_stat="qtilde")  # doctest: +SKIP
    """
    _check_test_stat(test_stat)
    eng = _engine(model)
    poi = eng.need_poi("test_statistic")
    mu = 0.0 if test_stat == "q0" else float(poi_value)
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    d = eng.data(data)
    fm = fx.astype(float)
    fm[poi] = 1.0
    S = eng.starts(x0, lo, hi, fx)
    Sm = S.copy()
    Sm[:, poi] = mu
    r = eng.solve_best(np.stack([S, Sm]), lo, hi, np.stack([fx.astype(float), fm]), d[None])
    _check(r["converged"], "test_statistic", r)
    return np.asarray(tstat_np(mu, r["fun"][1], r["fun"][0], r["x"][0][poi], test_stat))


def asimov_data(model: Any, poi_value: float, data: Any = None, *, return_fitted_pars: bool = False, init: Any = None, bounds: Any = None, fixed: Any = None):
    """The Asimov dataset at ``poi_value`` (pyhf's ``generate_asimov_data``): expected main + aux data at the
    fixed-POI fit to ``data`` (nuisances profiled on the observed data).

    Example:
        >>> a = hf2ppl.infer.frequentist.asimov_data(m, 0.0)  # doctest: +SKIP
    """
    eng = _engine(model)
    poi = eng.need_poi("asimov_data", free=False)
    x0, lo, hi, fx = eng.setup(init, bounds, fixed)
    x0[poi] = poi_value
    fm = fx.astype(float)
    fm[poi] = 1.0
    S = eng.starts(x0, lo, hi, fx)
    S[:, poi] = poi_value
    r = eng.solve_best(S[None], lo, hi, fm[None], eng.data(data)[None])
    _check(r["converged"], "asimov_data", r)
    a = eng.expected(r["x"][0])
    return (a, r["x"][0]) if return_fitted_pars else a


