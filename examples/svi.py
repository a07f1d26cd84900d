"""Stochastic variational inference on a compiled model, next to NUTS and the MAP.

    python examples/svi.py [workspace.json]
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

import hf2ppl

warnings.filterwarnings("ignore", category=FutureWarning)
path = sys.argv[1] if len(sys.argv) > 1 else hf2ppl.example("2_bin_corr.json")

m = hf2ppl.compile(path)  # constraints as priors
poi = m.poi_name
q = hf2ppl.svi(m, guide="normal", steps=3000, draws=2000, seed=0, progress=False)  # mean-field Normal guide
nuts = hf2ppl.sample(m, chains=2, draws=1000, warmup=500, seed=0, progress=False)
mode = hf2ppl.map_estimate(m)
for name, idata in (("SVI (mean-field normal)", q), ("NUTS", nuts)):
    x = np.asarray(idata.posterior[poi]).ravel()
    print(f"{name:24s} {poi}: mean {x.mean():.3f}  sd {x.std():.3f}  95% quantile {np.quantile(x, 0.95):.3f}")
print(f"{'MAP':24s} {poi}: {float(np.asarray(mode[poi])):.3f}")
