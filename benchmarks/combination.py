"""Combination-size fit (issue 8): a generated 20-channel x 50-bin x 10-sample model with a staterror and a
shapesys per channel, 10 normsys and a lumi (about 2000 parameters), fitted by ``hf2ppl.fit``: first call
and warm call wall time, iterations, EDM and the process's peak RSS. Target: under 30 s within 1 GB.

    python benchmarks/combination.py [--channels 20 --bins 50 --samples 10]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np


def workspace(channels: int, bins: int, samples: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    chans, obs = [], []
    for c in range(channels):
        smp, total = [], np.zeros(bins)
        for s in range(samples):
            data = rng.uniform(5.0, 50.0, bins)
            total += data
            mods = [{"name": "lumi", "type": "lumi", "data": None}]
            for k in range(10):
                if rng.random() < 0.5:
                    mods.append({"name": f"sys_{k}", "type": "normsys", "data": {"hi": 1.0 + rng.uniform(0.01, 0.1), "lo": 1.0 - rng.uniform(0.01, 0.1)}})
            if s == 0:
                mods.append({"name": "mu", "type": "normfactor", "data": None})
                mods.append({"name": f"shape_{c}", "type": "shapesys", "data": list(0.05 * data)})
            mods.append({"name": f"staterror_{c}", "type": "staterror", "data": list(0.03 * data)})
            smp.append({"name": f"s{s}", "data": list(data), "modifiers": mods})
        chans.append({"name": f"ch{c:02d}", "samples": smp})
        obs.append({"name": f"ch{c:02d}", "data": list(np.round(rng.poisson(total)).astype(float))})
    params = [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]], "inits": [1.0]}]
    return {"channels": chans, "observations": obs, "version": "1.0.0",
            "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": params}}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=20)
    ap.add_argument("--bins", type=int, default=50)
    ap.add_argument("--samples", type=int, default=10)
    a = ap.parse_args()
    t0 = time.perf_counter()
    import hf2ppl

    ws = workspace(a.channels, a.bins, a.samples)
    m = hf2ppl.compile(ws)
    t1 = time.perf_counter()
    r = hf2ppl.fit(m)
    t2 = time.perf_counter()
    r2 = hf2ppl.fit(m)
    t3 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores")
    print(f"model: {a.channels} channels x {a.bins} bins x {a.samples} samples, {m.ir.npars} parameters")
    print(f"compile {t1 - t0:.1f} s (import included); first fit {t2 - t1:.1f} s; warm fit {t3 - t2:.1f} s; "
          f"niter {r.niter} / {r2.niter}; converged {r.converged}; EDM {r.edm:.2g}; peak RSS {rss:.2f} GB")
    print(f"target < 30 s and < 1 GB: {'met' if (t2 - t1) < 30 and rss < 1 else 'missed'} (first call), "
          f"{'met' if (t3 - t2) < 30 and rss < 1 else 'missed'} (warm)")


if __name__ == "__main__":
    main()
