"""Helpers shared by the benchmark scripts: timing, machine description, generated workspaces."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HF2PPL_SHARED", ROOT.parent / "shared"))
WORKSPACES = SHARED / "workspaces"


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    import jax

    return f"{model}; {os.cpu_count()} cores; JAX {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})"


def per_call(fn, *args, min_time: float = 0.3, repeat: int = 5) -> float:
    """Median seconds per call of an already-warm function (blocks on JAX results)."""
    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            out = fn(*args)
        _block(out)
        return time.perf_counter() - t0

    n = 1
    while run(n) < min_time / 10 and n < 1_000_000:
        n *= 4
    return float(np.median([run(n) / n for _ in range(repeat)]))


def _block(out):
    try:
        import jax

        jax.block_until_ready(out)
    except Exception:  # noqa: BLE001 - numpy outputs
        pass


def timed(fn, *args):
    """(seconds, result) of one call, blocking on JAX results."""
    t0 = time.perf_counter()
    out = fn(*args)
    _block(out)
    return time.perf_counter() - t0, out


def nbin_workspace(nbins: int) -> dict:
    """The thesis' n-bin model (reference 000 §5.2.2): ``pyhf.simplemodels.uncorrelated_background``
    with signal 5 per bin, background U(40, 60), 10% uncorrelated (shapesys) uncertainty, observed =
    background + 3, as a workspace dict. n bins -> n + 1 free parameters."""
    import pyhf

    rng = np.random.default_rng(nbins)
    sig = list(np.full(nbins, 5.0))
    bkg = list(np.round(rng.uniform(40, 60, nbins), 1))
    unc = list(np.round(np.asarray(bkg) * 0.1, 2))
    pyhf.set_backend("numpy")
    model = pyhf.simplemodels.uncorrelated_background(signal=sig, bkg=bkg, bkg_uncertainty=unc)
    obs = list(np.round(np.asarray(bkg) + 3.0))
    return {"channels": model.spec["channels"], "observations": [{"name": "singlechannel", "data": obs}],
            "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}


def shared_workspaces() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(WORKSPACES.glob("*.json"))}


def analysis_workspace(nbins: int = 37, npars: int = 132, nchannels: int = 8, nsamples: int = 6, seed: int = 1) -> dict:
    """An analysis-like workspace: several channels and samples, a signal normfactor, background
    normfactors, many normsys and histosys shared across samples and channels, and staterror per
    channel. With the defaults: 37 bins and 132 parameters, the size of the real workspace quoted
    in the issues."""
    rng = np.random.default_rng(seed)
    sizes = np.full(nchannels, nbins // nchannels)
    sizes[: nbins - sizes.sum()] += 1
    n_stat = nbins  # one staterror parameter per bin
    n_norm = 3  # mu + two background normfactors
    n_sys = npars - n_stat - n_norm
    assert n_sys > 0, "npars too small for this many bins"
    n_hist = n_sys // 3
    systs = [("histosys", f"hs_{i}") for i in range(n_hist)] + [("normsys", f"ns_{i}") for i in range(n_sys - n_hist)]
    samples = ["signal"] + [f"bkg_{i}" for i in range(nsamples - 1)]
    channels, observations = [], []
    for ci, nb in enumerate(sizes):
        cname = f"ch_{ci}"
        ch_samples = []
        total = np.zeros(nb)
        for si, sname in enumerate(samples):
            scale = 5.0 if sname == "signal" else rng.uniform(10, 100)
            nom = rng.uniform(0.5, 1.5, nb) * scale
            total += nom
            mods = []
            if sname == "signal":
                mods.append({"name": "mu", "type": "normfactor", "data": None})
            elif si <= 2:
                mods.append({"name": f"k_{sname}", "type": "normfactor", "data": None})
            for mtype, name in systs:
                if rng.uniform() > 0.5:
                    continue
                if mtype == "normsys":
                    d = rng.uniform(0.01, 0.15)
                    mods.append({"name": name, "type": "normsys", "data": {"hi": 1 + d, "lo": 1 - d * rng.uniform(0.5, 1.5)}})
                else:
                    r = rng.uniform(0.01, 0.1, nb)
                    mods.append({"name": name, "type": "histosys", "data": {"hi_data": (nom * (1 + r)).tolist(), "lo_data": (nom * (1 - r)).tolist()}})
            mods.append({"name": f"staterror_{cname}", "type": "staterror", "data": (nom * rng.uniform(0.01, 0.1, nb)).tolist()})
            ch_samples.append({"name": sname, "data": nom.tolist(), "modifiers": mods})
        channels.append({"name": cname, "samples": ch_samples})
        observations.append({"name": cname, "data": rng.poisson(total).astype(float).tolist()})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
