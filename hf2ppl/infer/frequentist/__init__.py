r"""Frequentist inference on the compiled graph (``constraints="aux"``): fits, profiles,
test statistics, asymptotic and toy CLs, upper limits, significances, pulls and impacts.

Everything numerical is pure JAX: one bounded Newton minimiser
(:mod:`hf2ppl.infer._optimize`) with exact Hessians, jit-compiled once per model and
``vmap``-ed over POI values, datasets (toys) and nominal yields. Results follow
``pyhf.infer`` (0.7) conventions: the same fits, the same test statistics, the same
return structures. See ``docs/frequentist.md`` for the formulas.

The objective is :math:`\mathrm{NLL}(\theta) = -\ln L(\theta)` of pyhf's ``Model.logpdf``
(Poisson main terms + auxiliary constraint terms), i.e. ``-model.logdensity_flat``.
A model compiled with ``constraints="prior"`` (or for the PyMC target) is recompiled
from its spec with ``constraints="aux"`` (once, cached): frequentist answers always
use pyhf's likelihood. Workspaces (path, dict, ...) are accepted too and compiled.

Example:
    >>> import hf2ppl
    >>> m = hf2ppl.compile("../shared/workspaces/2_bin_corr.json", constraints="aux")  # doctest: +SKIP
    >>> hf2ppl.hypotest(m, 1.0, return_expected_set=True)  # doctest: +SKIP
    (array(0.3...), [array(...), ...])
"""

from __future__ import annotations

from ._engine import TEST_STATS, FitWarning, MultimodalWarning, _engine  # noqa: F401
from .asymptotics import tstat_np  # noqa: F401
from .fits import FitResult, ProfileResult, fit, profile
from .intervals import SignificanceResult, hypotest, hypotest_fn, significance, significance_fn, upper_limit
from .pulls import ImpactsResult, PullsResult, impacts, pulls
from .test_statistics import asimov_data, test_statistic
from .toys import _sample_toys  # noqa: F401

__all__ = [
    "FitResult",
    "ProfileResult",
    "SignificanceResult",
    "PullsResult",
    "ImpactsResult",
    "FitWarning",
    "MultimodalWarning",
    "fit",
    "profile",
    "test_statistic",
    "asimov_data",
    "hypotest",
    "upper_limit",
    "significance",
    "pulls",
    "impacts",
    "hypotest_fn",
    "significance_fn",
]
