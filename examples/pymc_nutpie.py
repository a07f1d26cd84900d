"""The PyMC target: the same workspace as a native ``pm.Model``, sampled with nutpie when it is installed.

    python examples/pymc_nutpie.py [workspace.json]

nutpie (``pip install "hf2ppl[nutpie]"``) is optional: without it PyMC's own NUTS runs.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np

import hf2ppl

warnings.filterwarnings("ignore", category=FutureWarning)
path = sys.argv[1] if len(sys.argv) > 1 else hf2ppl.example("2_bin_corr.json")

m = hf2ppl.compile(path, target="pymc")
print(m)
print(m.model)  # a pm.Model: named dims and coords from the workspace
sampler = "nutpie" if importlib.util.find_spec("nutpie") else "pymc"
print(f"NUTS sampler: {sampler}" + ("" if sampler == "nutpie" else " (nutpie not installed)"))
idata = hf2ppl.sample(m, chains=2, draws=500, warmup=500, seed=1, nuts_sampler=sampler, progress=False)

import arviz as az  # noqa: E402

print(az.summary(idata, var_names=[m.poi_name]))
# the same posterior from the NumPyro target (BlackJAX NUTS on the JAX graph)
ref = hf2ppl.sample(hf2ppl.compile(path), chains=2, draws=500, warmup=500, seed=1, progress=False)
a, b = (np.asarray(x.posterior[m.poi_name]).ravel() for x in (idata, ref))
print(f"posterior mean of {m.poi_name}: PyMC/{sampler} {a.mean():.3f}, NumPyro/BlackJAX {b.mean():.3f}")
