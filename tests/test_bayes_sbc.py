"""Simulation-based calibration (Talts et al. 2018) of the NUTS sampler on two small models.

For each replicate: draw parameters from the prior (scipy, from the declared prior values), simulate
main counts from the model, sample the posterior given those counts with hf2ppl's BlackJAX chain
(vmapped over replicates), thin, and record the rank of the true value among the draws. Calibrated
inference gives uniform ranks; we test each parameter component with a chi-square test on 10 bins.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import WORKSPACES
from scipy import stats

import hf2ppl
from hf2ppl import priors as P

N_REP = 200  # replicates
WARMUP, DRAWS, THIN = 300, 400, 4  # → 100 thinned draws per replicate, ranks in 0..100
N_BINS = 10


def prior_draw(prior: P.Prior, n_free: int, size: int, rng: np.random.Generator) -> np.ndarray:
    v = prior.broadcast(n_free)
    if isinstance(prior, P.Uniform):
        return stats.uniform(v["low"], v["high"] - v["low"]).rvs((size, n_free), random_state=rng)
    if isinstance(prior, P.Normal):
        return stats.norm(v["loc"], v["scale"]).rvs((size, n_free), random_state=rng)
    if isinstance(prior, P.Gamma):
        return stats.gamma(v["concentration"], scale=1.0 / v["rate"]).rvs((size, n_free), random_state=rng)
    raise AssertionError(f"no reference sampler for {prior!r}")


def sbc_ranks(m, seed: int) -> tuple[np.ndarray, list[str]]:
    import jax
    import jax.numpy as jnp

    from hf2ppl.infer._nuts import Layout, blackjax_chain_fn

    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for p in m.free_parameters:
        parts.append(prior_draw(m.priors[p.name], p.n_free, N_REP, rng))
        labels += [p.name] if p.is_scalar else list(p.free_labels)
    truth = np.concatenate(parts, axis=1)  # (N_REP, n_free), free order = site order
    lam = np.stack([np.asarray(m.expected_data(np.asarray(m.from_free(jnp.asarray(t))), include_auxdata=False)) for t in truth])
    data = rng.poisson(lam).astype(float)

    layout = Layout(m)
    chain = blackjax_chain_fn(layout, method="nuts", warmup=WARMUP, draws=DRAWS, opts={})
    z0 = np.asarray(layout.unconstrain(jnp.asarray(layout.init_x())))
    z0 = z0 + rng.uniform(-0.5, 0.5, (N_REP, layout.n))

    def run(key, z, d):
        out = chain(key, z, d)
        return layout.constrain_only(out["z"][::THIN]), out["diverging"].sum()

    keys = jax.random.split(jax.random.PRNGKey(seed), N_REP)
    x, div = jax.jit(jax.vmap(run))(keys, jnp.asarray(z0), jnp.asarray(data))
    x = np.asarray(x)  # (N_REP, L, n_free)
    assert int(np.sum(div)) < 0.01 * N_REP * DRAWS, "too many divergences for SBC to mean anything"
    ranks = np.sum(x < truth[:, None, :], axis=1)  # (N_REP, n_free) in 0..L
    return ranks, labels


def chi2_uniform(ranks: np.ndarray, L: int) -> float:
    bins = (ranks * N_BINS) // (L + 1)
    counts = np.bincount(bins, minlength=N_BINS)
    return float(stats.chisquare(counts).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize("name,priors", [
    ("2_bin_corr.json", {"mu": P.Uniform(0, 5)}),
    ("hello_world_shapesys.json", {"mu": P.Uniform(0, 5)}),
])
def test_sbc_rank_histograms_uniform(name, priors):
    m = hf2ppl.compile(json.loads((WORKSPACES / name).read_text()), priors=priors)
    ranks, labels = sbc_ranks(m, seed=2024)
    L = DRAWS // THIN
    assert ranks.shape == (N_REP, len(labels))
    for j, lab in enumerate(labels):
        p = chi2_uniform(ranks[:, j], L)
        assert p > 0.01, (lab, p, np.bincount((ranks[:, j] * N_BINS) // (L + 1), minlength=N_BINS))


def test_sbc_detects_a_miscalibrated_sampler():
    """Power check of the rank statistic: posteriors that are too narrow give U-shaped ranks."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=N_REP)
    # "posterior" draws centred on a noisy estimate but with half the correct width
    est = truth + rng.normal(size=N_REP)
    draws = est[:, None] + 0.5 * np.sqrt(0.5) * rng.normal(size=(N_REP, 100))
    ranks = np.sum(draws < truth[:, None], axis=1)
    assert chi2_uniform(ranks, 100) < 0.01
