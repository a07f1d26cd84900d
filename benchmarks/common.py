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


# ---------------------------------------------------------------------------------------------------------
# Real (published) workspaces: ../shared/workspaces/real — plain workspaces and PatchSets, found generically.
REAL = WORKSPACES / "real"


class RealCase:
    """One real model: a workspace (optionally + one patch of a PatchSet) and the tasks it supports.

    ``poi_kw`` is passed as is to ``hf2ppl.compile(...)`` and to pyhf's ``Workspace.model(...)``: ``{}``
    (the measurement's POI) or ``{"poi_name": None}`` (POI-less, for background-only workspaces)."""

    def __init__(self, name: str, workspace: Path, tasks: tuple[str, ...], poi_kw: dict,
                 patchset: Path | None = None, patch: str | None = None, note: str = ""):
        self.name, self.workspace, self.tasks, self.poi_kw = name, Path(workspace), tuple(tasks), dict(poi_kw)
        self.patchset, self.patch, self.note = (Path(patchset) if patchset else None), patch, note

    @property
    def patches(self) -> list[tuple[str, str]]:
        return [(str(self.patchset), self.patch)] if self.patch else []

    def hf2ppl_kwargs(self) -> dict:
        """Keyword arguments of ``hf2ppl.compile`` (besides the workspace path)."""
        kw = {"constraints": "aux", **self.poi_kw}
        if self.patch:
            kw["patches"] = self.patches
        return kw

    def compile(self):
        import hf2ppl

        return hf2ppl.compile(str(self.workspace), **self.hf2ppl_kwargs())

    def pyhf_model(self, backend: str = "numpy", optimizer=None):
        """(pyhf model, data tensor) built under ``backend`` (set here, with ``optimizer``)."""
        import pyhf

        pyhf.set_backend(backend, optimizer if optimizer is not None else pyhf.optimize.scipy_optimizer())
        ws = pyhf.Workspace(_json(self.workspace))
        patches = [pyhf.PatchSet(_json(self.patchset))[self.patch]] if self.patch else []
        model = ws.model(patches=patches, **self.poi_kw)
        return model, pyhf.tensorlib.astensor(ws.data(model))

    def __repr__(self) -> str:
        return f"RealCase({self.name!r}, tasks={self.tasks}, poi_kw={self.poi_kw}{', ' + self.note if self.note else ''})"


_JSON_CACHE: dict[Path, dict] = {}


def _json(path: Path) -> dict:
    path = Path(path)
    if path not in _JSON_CACHE:
        _JSON_CACHE[path] = json.loads(path.read_text())
    return _JSON_CACHE[path]


def _is_patchset(d: dict) -> bool:
    return isinstance(d, dict) and "patches" in d and "metadata" in d and "channels" not in d


def _digests(ws: dict, algorithms) -> set[str]:
    import pyhf

    out = set()
    for alg in algorithms:
        try:
            out.add(pyhf.utils.digest(ws, algorithm=alg))
        except Exception:  # noqa: BLE001 - an algorithm pyhf does not know
            pass
    return out


def pair_patchsets(real_dir: Path = REAL) -> tuple[dict[Path, Path], list[Path], list[str]]:
    """({patchset path: its background-only workspace path}, plain workspace paths, notes).

    A PatchSet is paired with the workspace whose digest (``metadata.digests``, as pyhf computes it) matches;
    failing that, with a workspace whose file name shares the PatchSet's prefix (before ``_patchset``)."""
    files = sorted(Path(real_dir).glob("*.json"))
    patchsets = [f for f in files if _is_patchset(_json(f))]
    workspaces = [f for f in files if f not in patchsets and "channels" in _json(f)]
    pairs, notes = {}, []
    for ps in patchsets:
        meta = _json(ps)["metadata"]
        want = {str(v) for v in (meta.get("digests") or {}).values()}
        match = [w for w in workspaces if want & _digests(_json(w), (meta.get("digests") or {}).keys())]
        how = "digest"
        if not match:
            prefix = ps.stem.lower().split("_patchset")[0]
            match = [w for w in workspaces if w.stem.lower().startswith(prefix)]
            how = "file-name prefix (no digest match)"
        if match:
            pairs[ps] = match[0]
            notes.append(f"{ps.name} -> {match[0].name} (by {how})")
        else:
            notes.append(f"{ps.name}: no background-only workspace found in {real_dir}; skipped")
    return pairs, workspaces, notes


def spread_patches(patchset: dict, k: int) -> list[str]:
    """``k`` patch names spread over the signal grid (``metadata.values``): the patch nearest the grid's
    centre, then repeatedly the one farthest from those already chosen (grid axes scaled to [0, 1])."""
    patches = patchset["patches"]
    names = [p["metadata"]["name"] for p in patches]
    if k >= len(names):
        return names
    try:
        v = np.asarray([[float(x) for x in p["metadata"]["values"]] for p in patches])
        span = np.ptp(v, axis=0)
        v = (v - v.min(axis=0)) / np.where(span > 0, span, 1.0)
    except (KeyError, TypeError, ValueError):  # no usable grid values: evenly spaced in file order
        return [names[int(i)] for i in np.round(np.linspace(0, len(names) - 1, k))]
    chosen = [int(np.argmin(np.linalg.norm(v - 0.5, axis=1)))]
    while len(chosen) < k:
        d = np.min(np.linalg.norm(v[:, None, :] - v[None, chosen, :], axis=2), axis=1)
        chosen.append(int(np.argmax(d)))
    return [names[i] for i in chosen]


def _poi_status(ws: dict) -> tuple[str | None, bool, bool]:
    """(measurement POI name, declared as a modifier, fixed in the measurement) of the first measurement."""
    meas = (ws.get("measurements") or [{}])[0].get("config", {})
    poi = meas.get("poi")
    declared = any(mod.get("name") == poi for ch in ws.get("channels", []) for s in ch.get("samples", []) for mod in s.get("modifiers", []))
    fixed = any(p.get("name") == poi and p.get("fixed") for p in meas.get("parameters", []))
    return poi, declared, fixed


def real_cases(real_dir: Path = REAL, n_patches: int | None = 5, patch_names: list[str] | None = None) -> tuple[list[RealCase], list[str]]:
    """The real models to benchmark and notes on how they were chosen.

    * A PatchSet's background-only workspace: fit only, POI-less (``poi_name=None`` in hf2ppl and pyhf).
    * Its patches (``patch_names``, else ``n_patches`` spread over the grid, None = all): fit, hypotest, upper limit.
    * Any other workspace: fit, hypotest and upper limit when its measurement POI is declared and free;
      fit only otherwise (POI-less when undeclared, the measurement as is when the POI is fixed in it)."""
    pairs, workspaces, notes = pair_patchsets(real_dir)
    bkg_of = {w: ps for ps, w in pairs.items()}
    cases: list[RealCase] = []
    for w in workspaces:
        ws = _json(w)
        if w in bkg_of:
            cases.append(RealCase(w.stem, w, ("fit",), {"poi_name": None}, note="background-only of a PatchSet: POI-less"))
            ps_path = bkg_of[w]
            ps = _json(ps_path)
            names = patch_names or spread_patches(ps, len(ps["patches"]) if n_patches is None else n_patches)
            known = {p["metadata"]["name"] for p in ps["patches"]}
            for n in names:
                if n not in known:
                    notes.append(f"patch {n!r} not in {ps_path.name}; skipped")
                    continue
                cases.append(RealCase(f"{ps_path.stem.split('_patchset')[0]}:{n}", w, ("fit", "hypotest", "upper_limit"), {}, ps_path, n, note="signal patch"))
            continue
        poi, declared, fixed = _poi_status(ws)
        if poi and declared and not fixed:
            cases.append(RealCase(w.stem, w, ("fit", "hypotest", "upper_limit"), {}, note=f"POI {poi}"))
        elif poi and declared:
            cases.append(RealCase(w.stem, w, ("fit",), {}, note=f"POI {poi!r} fixed in the measurement: fit only, measurement as is"))
        else:
            cases.append(RealCase(w.stem, w, ("fit",), {"poi_name": None}, note=f"POI {poi!r} not declared: fit only, POI-less"))
    return cases, notes
