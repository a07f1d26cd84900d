"""Hypothesis strategies for random HistFactory workspaces that pyhf accepts.

They cover all 7 modifier types, parameters shared across samples and channels,
several channels, zero-yield bins and zero uncertainties, fixed parameters,
measurement overrides (inits, bounds, auxdata, fixed, lumi configuration) and
every interpolation code.
"""

from __future__ import annotations

from hypothesis import strategies as st

SAMPLE_POOL = ("bkg_a", "bkg_b", "signal")
NORMSYS_POOL = ("ns_jes", "ns_xsec", "ns_eff")
HISTOSYS_POOL = ("hs_shape", "hs_res")


def _yields(draw, n, *, allow_zero=True, lo=0.5, hi=60.0):
    vals = []
    for _ in range(n):
        if allow_zero and draw(st.integers(0, 9)) == 0:
            vals.append(0.0)
        else:
            vals.append(draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False)))
    return vals


@st.composite
def workspaces(draw, max_channels: int = 3, max_bins: int = 4):
    """A random workspace dict (schema 1.0.0) and the modifier_settings to use, as (ws, settings)."""
    nchan = draw(st.integers(1, max_channels))
    cnames = draw(st.lists(st.sampled_from(["SR", "CR_top", "CR_w", "VR", "SR_b"]), min_size=nchan, max_size=nchan, unique=True))
    uses_lumi = draw(st.booleans())
    channels, observations = [], []
    poi_placed = False
    for ci, cname in enumerate(cnames):
        nb = draw(st.integers(1, max_bins))
        snames = draw(st.lists(st.sampled_from(SAMPLE_POOL), min_size=1, max_size=3, unique=True))
        if ci == 0 and "signal" not in snames:
            snames.append("signal")
        samples = []
        stat_name = f"staterror_{cname}" if draw(st.booleans()) else None
        for sname in snames:
            nom = _yields(draw, nb)
            if all(v == 0 for v in nom):
                nom[0] = 1.0
            mods = []
            if sname == "signal" and (not poi_placed or draw(st.booleans())):
                mods.append({"name": "mu", "type": "normfactor", "data": None})
                poi_placed = True
            if draw(st.integers(0, 3)) == 0:
                mods.append({"name": "k_norm", "type": "normfactor", "data": None})
            if uses_lumi and draw(st.integers(0, 2)) > 0:
                mods.append({"name": "lumi", "type": "lumi", "data": None})
            for ns in draw(st.lists(st.sampled_from(NORMSYS_POOL), max_size=3, unique=True)):
                hi = draw(st.floats(0.7, 1.5))
                lo = draw(st.floats(0.6, 1.3))
                mods.append({"name": ns, "type": "normsys", "data": {"hi": hi, "lo": lo}})
            for hs in draw(st.lists(st.sampled_from(HISTOSYS_POOL), max_size=2, unique=True)):
                rel_hi = [draw(st.floats(-0.08, 0.08)) for _ in range(nb)]
                rel_lo = [draw(st.floats(-0.08, 0.08)) for _ in range(nb)]
                mods.append({"name": hs, "type": "histosys", "data": {
                    "hi_data": [v * (1 + r) for v, r in zip(nom, rel_hi)],
                    "lo_data": [v * (1 + r) for v, r in zip(nom, rel_lo)]}})
            if draw(st.integers(0, 3)) == 0:
                unc = [0.0 if draw(st.integers(0, 5)) == 0 else v * draw(st.floats(0.02, 0.5)) for v in nom]
                mods.append({"name": f"shapesys_{cname}_{sname}", "type": "shapesys", "data": unc})
            if stat_name and draw(st.booleans()):
                unc = [0.0 if draw(st.integers(0, 6)) == 0 else v * draw(st.floats(0.01, 0.3)) for v in nom]
                mods.append({"name": stat_name, "type": "staterror", "data": unc})
            if draw(st.integers(0, 5)) == 0:
                mods.append({"name": f"sf_{nb}bins", "type": "shapefactor", "data": None})
            samples.append({"name": sname, "data": nom, "modifiers": mods})
        channels.append({"name": cname, "samples": samples})
        obs = [float(draw(st.integers(0, 80))) for _ in range(nb)]
        observations.append({"name": cname, "data": obs})
    if not poi_placed:  # make sure the POI exists
        channels[0]["samples"][-1]["modifiers"].append({"name": "mu", "type": "normfactor", "data": None})
    names = {m["name"]: m["type"] for c in channels for s in c["samples"] for m in s["modifiers"]}
    params = []
    if "lumi" in names:
        sigma = draw(st.floats(0.01, 0.1))
        params.append({"name": "lumi", "auxdata": [1.0], "sigmas": [sigma], "bounds": [[1 - 5 * sigma, 1 + 5 * sigma]], "inits": [1.0]})
    if draw(st.booleans()):
        params.append({"name": "mu", "bounds": [[0.0, draw(st.floats(2.0, 20.0))]], "inits": [draw(st.floats(0.5, 1.5))]})
    normsys_present = [n for n, t in names.items() if t in ("normsys", "histosys")]
    if normsys_present and draw(st.booleans()):
        params.append({"name": draw(st.sampled_from(normsys_present)), "fixed": True})
    remaining = [n for n in normsys_present if n not in {p["name"] for p in params}]
    if remaining and draw(st.booleans()):
        params.append({"name": draw(st.sampled_from(remaining)), "auxdata": [draw(st.floats(-0.5, 0.5))]})
    if "k_norm" in names and draw(st.booleans()):
        params.append({"name": "k_norm", "fixed": True, "inits": [draw(st.floats(0.8, 1.2))]})
    ws = {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": params}}],
        "version": "1.0.0",
    }
    settings = {
        "normsys": {"interpcode": draw(st.sampled_from(["code1", "code4"]))},
        "histosys": {"interpcode": draw(st.sampled_from(["code0", "code2", "code4p"]))},
    }
    return ws, settings
