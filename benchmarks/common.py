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


def nbin_workspace(n: int, seed: int = 0) -> dict:
    """The thesis' n-bin model: signal + background with an uncorrelated shapesys (2_bin_uncorr pattern)."""
    rng = np.random.default_rng(seed)
    sig = rng.uniform(5, 15, n).round(3).tolist()
    bkg = rng.uniform(40, 70, n).round(3).tolist()
    unc = (np.asarray(bkg) * rng.uniform(0.05, 0.2, n)).round(3).tolist()
    obs = (np.asarray(bkg) + rng.uniform(0, 10, n)).round().tolist()
    return {
        "channels": [{"name": "singlechannel", "samples": [
            {"name": "signal", "data": sig, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": bkg, "modifiers": [{"name": "uncorr_bkguncrt", "type": "shapesys", "data": unc}]},
        ]}],
        "observations": [{"name": "singlechannel", "data": obs}],
        "measurements": [{"name": "Measurement", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def shared_workspaces() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(WORKSPACES.glob("*.json"))}
