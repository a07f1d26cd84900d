"""A generated reinterpretation grid for the scan tests: a 55-bin background-only workspace and a PatchSet of
200 signal points on a (m1, m2) grid. Plain Python + numpy (no hf2ppl, no pyhf), deterministic: the pyhf
reference (tests/reference/make_scan_reference.py) and the tests build the same documents.

Every fourth point also carries a signal shape systematic (a histosys), so the patchset has two model
structures; every point's signal has its own normsys and per-bin MC statistical uncertainty (staterror, which
changes the staterror constraint widths: values, not structure).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

SR_BINS, CR_BINS = 40, 15
M1 = np.linspace(200.0, 1150.0, 20)
M2 = np.linspace(0.0, 450.0, 10)


def _r(a) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(a, float)]


def digest(doc) -> str:
    """pyhf.utils.digest (sha256 of json.dumps with sorted keys)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf8")).hexdigest()


def bkgonly() -> dict:
    rng = np.random.default_rng(20261201)
    x = np.linspace(0.0, 1.0, SR_BINS)
    b1_sr = 60.0 * np.exp(-3.0 * x) + 2.0
    b2_sr = 25.0 * np.exp(-1.5 * x) + 1.0
    b1_cr = np.linspace(300.0, 120.0, CR_BINS)
    b2_cr = np.linspace(40.0, 25.0, CR_BINS)
    shape_up, shape_dn = b2_sr * (1.0 + 0.08 * (x - 0.5)), b2_sr * (1.0 - 0.06 * (x - 0.5))

    def stat(n):
        return _r(0.04 * np.sqrt(n) + 0.02 * n)

    sr = {"name": "SR", "samples": [
        {"name": "bkg1", "data": _r(b1_sr), "modifiers": [
            {"name": "mu_bkg", "type": "normfactor", "data": None},
            {"name": "staterror_SR", "type": "staterror", "data": stat(b1_sr)},
            {"name": "bkg1_theory", "type": "normsys", "data": {"hi": 1.07, "lo": 0.94}}]},
        {"name": "bkg2", "data": _r(b2_sr), "modifiers": [
            {"name": "staterror_SR", "type": "staterror", "data": stat(b2_sr)},
            {"name": "bkg2_xsec", "type": "normsys", "data": {"hi": 1.15, "lo": 0.87}},
            {"name": "bkg2_shape", "type": "histosys", "data": {"hi_data": _r(shape_up), "lo_data": _r(shape_dn)}},
            {"name": "lumi", "type": "lumi", "data": None}]}]}
    cr = {"name": "CR", "samples": [
        {"name": "bkg1", "data": _r(b1_cr), "modifiers": [
            {"name": "mu_bkg", "type": "normfactor", "data": None},
            {"name": "staterror_CR", "type": "staterror", "data": stat(b1_cr)}]},
        {"name": "bkg2", "data": _r(b2_cr), "modifiers": [
            {"name": "staterror_CR", "type": "staterror", "data": stat(b2_cr)},
            {"name": "bkg2_xsec", "type": "normsys", "data": {"hi": 1.15, "lo": 0.87}},
            {"name": "lumi", "type": "lumi", "data": None}]}]}
    obs_sr = rng.poisson(b1_sr + b2_sr).astype(float)
    obs_cr = rng.poisson(b1_cr + b2_cr).astype(float)
    return {
        "channels": [cr, sr],
        "observations": [{"name": "CR", "data": _r(obs_cr)}, {"name": "SR", "data": _r(obs_sr)}],
        "measurements": [{"name": "meas", "config": {"poi": "mu_SIG", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "bounds": [[0.9, 1.1]], "inits": [1.0]}]}}],
        "version": "1.0.0",
    }


def signal(m1: float, m2: float) -> np.ndarray:
    """Signal yields in the SR: a bump whose position follows m1, falling cross-section, compressed spectra weaker."""
    x = np.linspace(0.0, 1.0, SR_BINS)
    centre = 0.1 + 0.8 * (m1 - 200.0) / 950.0
    amp = 30.0 * np.exp(-(m1 - 200.0) / 260.0) * (0.35 + 0.65 * np.clip((m1 - m2 - 50.0) / 400.0, 0.0, 1.0))
    return amp * np.exp(-0.5 * ((x - centre) / 0.12) ** 2) + 0.01


def patchset(bkg: dict | None = None) -> dict:
    bkg = bkgonly() if bkg is None else bkg
    sr_index = [c["name"] for c in bkg["channels"]].index("SR")
    patches = []
    k = 0
    for m1 in M1:
        for m2 in M2:
            s = signal(m1, m2)
            mods = [{"name": "mu_SIG", "type": "normfactor", "data": None},
                    {"name": "sig_xsec", "type": "normsys", "data": {"hi": float(f"{1.05 + 0.1 * m1 / 1150:.4f}"),
                                                                      "lo": float(f"{0.96 - 0.08 * m1 / 1150:.4f}")}},
                    {"name": "staterror_SR", "type": "staterror", "data": _r(0.03 * s + 0.05 * np.sqrt(s))},
                    {"name": "lumi", "type": "lumi", "data": None}]
            if k % 4 == 3:
                mods.append({"name": "sig_shape", "type": "histosys", "data": {"hi_data": _r(s * 1.1), "lo_data": _r(s * 0.92)}})
            name = f"grid_{int(m1)}_{int(m2)}"
            patches.append({"metadata": {"name": name, "values": [float(m1), float(m2)]},
                            "patch": [{"op": "add", "path": f"/channels/{sr_index}/samples/0",
                                       "value": {"name": "signal", "data": _r(s), "modifiers": mods}}]})
            k += 1
    return {"metadata": {"description": "generated signal grid for hf2ppl's scan tests", "digests": {"sha256": digest(bkg)},
                         "labels": ["m1", "m2"], "references": {"hepdata": "ins1234567"}},
            "patches": patches, "version": "1.0.0"}
