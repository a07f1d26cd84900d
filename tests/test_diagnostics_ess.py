"""hf2ppl.infer.diagnostics.ess_rhat (vectorised over components) equals ArviZ's bulk/tail ESS and rank R-hat."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest

from hf2ppl.infer.diagnostics import ess_rhat


def ar1(rng, chains, draws, phi, shift=0.0):
    x = np.zeros((chains, draws))
    e = rng.normal(size=(chains, draws))
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x + shift


@pytest.mark.parametrize("chains,draws", [(1, 37), (2, 1000), (4, 501), (3, 8)])
def test_ess_rhat_equals_arviz(chains, draws):
    rng = np.random.default_rng(chains * 1000 + draws)
    cols = [rng.normal(size=(chains, draws)),                        # iid: ESS ~ N
            ar1(rng, chains, draws, 0.9),                            # correlated
            ar1(rng, chains, draws, -0.7),                           # antithetic (ESS > N)
            ar1(rng, chains, draws, 0.99, shift=np.arange(chains)[:, None] * 30.0),  # chains disagree: R-hat >> 1
            np.exp(rng.normal(size=(chains, draws)) * 2),            # skewed: tail ESS differs from bulk
            np.round(rng.normal(size=(chains, draws))),              # ties in the ranks
            np.full((chains, draws), 2.5),                           # constant
            ]
    x = np.stack(cols, axis=-1)
    x_nan = x.copy()
    x_nan[0, 3, 1] = np.nan
    for arr in (x, x_nan):
        b, t, r = ess_rhat(arr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for j in range(arr.shape[-1]):
                col = arr[..., j]
                eb, et = az.ess(col, method="bulk"), az.ess(col, method="tail")
                er = az.rhat(col) if chains > 1 else np.nan
                np.testing.assert_allclose([b[j], t[j], r[j]], [eb, et, er], rtol=1e-9, equal_nan=True, err_msg=f"column {j}")
    assert r[3] > 1.5 if chains > 1 else np.isnan(r[3])
