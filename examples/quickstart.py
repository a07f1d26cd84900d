"""hf2ppl quick start: one workspace, the Bayesian and the frequentist answer side by side.

    python examples/quickstart.py [workspace.json]

Uses the bundled thesis model (2_bin_corr) by default.
"""

from __future__ import annotations

import sys

import arviz as az
import numpy as np

import hf2ppl
from hf2ppl import priors

path = sys.argv[1] if len(sys.argv) > 1 else hf2ppl.example("2_bin_corr.json")

# --- frequentist: pyhf's likelihood (constraint terms as auxiliary measurements)
freq = hf2ppl.compile(path, target="numpyro", constraints="aux")
print(freq)
mle = hf2ppl.fit(freq)
print("MLE:", {k: round(v, 4) for k, v in mle.bestfit.items()})
obs, exp = hf2ppl.upper_limit(freq)
print(f"95% CLs upper limit on {freq.poi_name}: observed {float(obs):.3f}, expected {float(np.asarray(exp)[2]):.3f}")

# --- Bayesian: constraint terms as priors, a Uniform(0, 5) prior on the POI (as in the thesis)
poi = freq.poi_name
bayes = hf2ppl.compile(path, target="numpyro", priors={poi: priors.Uniform(0, 5)})
idata = hf2ppl.sample(bayes, chains=4, draws=1000, warmup=1000, seed=1)
print(az.summary(idata, var_names=[poi]))
q16, q50, q84 = np.quantile(idata.posterior[poi].values, [0.16, 0.5, 0.84])
print(f"posterior {poi}: {q50:.3f} +{q84 - q50:.3f} -{q50 - q16:.3f}  (68% central interval)")
print(f"95% credible upper limit: {np.quantile(idata.posterior[poi].values, 0.95):.3f}")
hf2ppl.report(idata, bayes, "quickstart_report.html")
print("wrote quickstart_report.html")
