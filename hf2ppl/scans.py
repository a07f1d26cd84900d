"""Patchset scans (:func:`hf2ppl.scan`): CLs, optionally upper limits, for every signal point of a PatchSet.

(The module is ``scans`` so that ``hf2ppl.scan`` stays the function.)

Published likelihoods come as a background-only workspace plus a PatchSet of signal hypotheses. A scan
applies every selected patch, groups the patched models by *structure* (same parameters, bin layout and
modifier pattern; different yields) and fits each group in one vmapped, jitted call: the yields enter the
compiled kernels as data, so the number of compilations is the number of structures, not of patches.
Chunks of patches run in-process or as tasks on Dask (``scheduler=``); with ``output=`` every finished chunk
is appended to a JSON-lines file, and a rerun skips what is there.

Example:
    >>> import hf2ppl
    >>> res = hf2ppl.scan("BkgOnly.json", "patchset.json", limits=True, output="scan.jsonl")  # doctest: +SKIP
    >>> res.to_pandas()[["m_stau", "m_neutralino", "cls_obs", "cls_exp"]]  # doctest: +SKIP
    >>> hf2ppl.plot_exclusion(res, x="m_stau", y="m_neutralino")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import HF2PPLError, ParameterError, PatchError, WorkspaceError

__all__ = ["scan", "ScanResult", "select_patches", "verify_patchset"]

#: version of the JSON-lines format written by :func:`scan` (first line: a header with the options)
FORMAT_VERSION = 1
_BAND = ("m2", "m1", "", "p1", "p2")  # index i of pyhf's 5-value band (m2 = index 0, the -2σ expected-limit side)


# ====================================================================== result
@dataclass
class ScanResult:
    """One row per patch (a dict; see :func:`scan` for the keys), in the patchset's order.

    ``labels``: the PatchSet's metadata labels (each row has ``values[label]``); ``options``: what the scan
    computed (test statistic, POI value, level...).
    """

    rows: list[dict]
    labels: list[str]
    options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, name: str) -> dict:
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [r["name"] for r in self.rows]

    @property
    def failed(self) -> list[dict]:
        """Rows of patches that could not be evaluated (``error`` set)."""
        return [r for r in self.rows if r.get("error")]

    @property
    def flagged(self) -> list[dict]:
        """Rows whose result may be imprecise or wrong (``warnings`` non-empty: a fit did not converge, the
        likelihood is multimodal, a limit lies outside the POI bounds...)."""
        return [r for r in self.rows if r.get("warnings")]

    def to_pandas(self):
        """A ``pandas.DataFrame``, one row per patch: ``name``, one column per label, ``cls_obs``,
        ``cls_exp`` (median) and ``cls_exp_m2 .. cls_exp_p2`` (pyhf's band, ``m2`` = its index 0), the same
        for ``ul_obs``/``ul_exp`` when limits were computed, ``mu_hat``, ``converged``, ``edm``, ``multimodal``,
        ``warnings``, ``time``, ``error``."""
        import pandas as pd

        recs = []
        for r in self.rows:
            rec = {"name": r["name"]}
            rec.update({lab: r["values"].get(lab) for lab in self.labels})
            for key in ("cls", "ul"):
                if f"{key}_obs" not in r:
                    continue
                rec[f"{key}_obs"] = _nan(r[f"{key}_obs"])
                band = r.get(f"{key}_exp") or [None] * 5
                for i, suffix in enumerate(_BAND):
                    rec[f"{key}_exp" + (f"_{suffix}" if suffix else "")] = _nan(band[i])
            for k in ("mu_hat", "converged", "edm", "multimodal", "time", "error"):
                rec[k] = r.get(k)
            rec["warnings"] = "; ".join(r.get("warnings") or [])
            recs.append(rec)
        return pd.DataFrame.from_records(recs)

    def to_xarray(self):
        """An ``xarray.Dataset`` on the dimension ``patch`` (coordinates: ``name`` and the labels), with
        ``cls_obs``, ``cls_exp`` (``patch`` x ``band``; band = -2..2 in pyhf's order), ``ul_obs``/``ul_exp``
        when computed, ``mu_hat``, ``converged``, ``edm``, ``multimodal``, ``error``."""
        import xarray as xr

        df = self.to_pandas()
        n = len(df)
        coords = {"patch": np.arange(n), "name": ("patch", df["name"].to_numpy(str)), "band": [-2, -1, 0, 1, 2]}
        for lab in self.labels:
            coords[lab] = ("patch", df[lab].to_numpy())
        data = {}
        for key in ("cls", "ul"):
            if f"{key}_obs" not in df:
                continue
            data[f"{key}_obs"] = ("patch", df[f"{key}_obs"].to_numpy(float))
            cols = [f"{key}_exp" + (f"_{s}" if s else "") for s in _BAND]
            data[f"{key}_exp"] = (("patch", "band"), df[cols].to_numpy(float).reshape(n, 5))
        data["mu_hat"] = ("patch", df["mu_hat"].to_numpy(float))
        data["converged"] = ("patch", df["converged"].fillna(False).to_numpy(bool))
        data["edm"] = ("patch", df["edm"].to_numpy(float))
        data["multimodal"] = ("patch", df["multimodal"].fillna(False).to_numpy(bool))
        data["error"] = ("patch", df["error"].fillna("").to_numpy(str))
        return xr.Dataset(data, coords=coords, attrs={k: json.dumps(v) if not isinstance(v, (str, int, float)) else v
                                                      for k, v in self.options.items()})

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write the result in :func:`scan`'s JSON-lines format (a header line, then one row per line)."""
        tmp = Path(f"{path}.tmp")
        with open(tmp, "w") as f:
            f.write(_dumps(_header(self.options, self.labels)) + "\n")
            for r in self.rows:
                f.write(_dumps(r) + "\n")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ScanResult:
        """Read a file written by :func:`scan` (``output=``) or :meth:`to_jsonl` (a cut last line is ignored)."""
        header, rows, _ = _read_output(Path(path))
        if header is None:
            raise WorkspaceError(f"{path} is not an hf2ppl scan file (no header line)")
        return cls(rows, list(header.get("labels", [])), dict(header.get("options", {})))

    def __repr__(self) -> str:
        return (f"<ScanResult: {len(self.rows)} patches, {len(self.failed)} failed, {len(self.flagged)} flagged; "
                f"labels {self.labels}>")


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _clean(v: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return v


def _dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), allow_nan=False, separators=(",", ":"))


# ====================================================================== patchsets
def _digest(doc: Any, algorithm: str = "sha256") -> str:
    """pyhf's ``utils.digest``: the hash of the JSON text with sorted keys (json.dumps defaults otherwise)."""
    import hashlib

    text = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf8")
    try:
        return hashlib.new(algorithm, text).hexdigest()
    except ValueError:
        raise PatchError(f"the patchset's digest algorithm {algorithm!r} is not known to hashlib", path="/metadata/digests") from None


def verify_patchset(bkg_doc: Mapping, patchset: Mapping) -> None:
    """Check the PatchSet's ``metadata.digests`` against the background-only workspace (as pyhf's
    ``PatchSet.verify``); raise :class:`~hf2ppl.errors.PatchError` on a mismatch."""
    digests = patchset.get("metadata", {}).get("digests", {})
    for algorithm, expected in digests.items():
        got = _digest(bkg_doc, algorithm)
        if got != expected:
            raise PatchError(f"the patchset was made for another background-only workspace: its {algorithm} digest is "
                             f"{expected[:16]}..., this workspace's is {got[:16]}...; pass the matching workspace, or "
                             "verify=False to apply the patches anyway", path="/metadata/digests")


def select_patches(patchset: Mapping, patches: Any = None) -> list[dict]:
    """The entries of ``patchset`` selected by ``patches``: None (all); a patch name or a list of names; a
    tuple of metadata values or a list of them (as pyhf's ``patchset[values]``); a dict ``{label: value or
    list of values}`` (patches matching every label); or a predicate ``f(metadata) -> bool``."""
    entries = list(patchset["patches"])
    labels = list(patchset["metadata"]["labels"])
    if patches is None:
        return entries
    if callable(patches):
        return [p for p in entries if patches(p["metadata"])]
    if isinstance(patches, Mapping):
        unknown = [k for k in patches if k not in labels]
        if unknown:
            raise ParameterError(f"patches: unknown metadata labels {unknown}; the patchset's labels are {labels}")
        want = {k: [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])] for k, v in patches.items()}
        return [p for p in entries if all(float(p["metadata"]["values"][labels.index(k)]) in v for k, v in want.items())]
    if isinstance(patches, (str, tuple)):
        patches = [patches]
    by_name = {p["metadata"]["name"]: p for p in entries}
    by_values = {tuple(float(v) for v in p["metadata"]["values"]): p for p in entries}
    out = []
    for key in patches:
        if isinstance(key, str):
            if key not in by_name:
                close = [n for n in by_name if key.lower() in n.lower()][:5]
                raise PatchError(f"no patch named {key!r} in the patchset" + (f"; similar: {close}" if close else f" ({len(by_name)} patches)"),
                                 path="/patches")
            out.append(by_name[key])
        else:
            vals = tuple(float(v) for v in key)
            if vals not in by_values:
                raise PatchError(f"no patch with metadata values {list(key)} ({labels}) in the patchset", path="/patches")
            out.append(by_values[vals])
    return out


# ====================================================================== evaluating one chunk
def _error_row(name: str, values: dict, error: str, limits: bool) -> dict:
    row = {"name": name, "values": values, "cls_obs": None, "cls_exp": None, "mu_hat": None, "converged": False,
           "edm": None, "multimodal": False, "warnings": [], "time": 0.0, "error": error}
    if limits:
        row.update(ul_obs=None, ul_exp=None)
    return row


def _run_chunk(ctx: dict, entries: list[tuple[str, dict, list]]) -> list[dict]:
    """Evaluate patches ``entries`` (name, metadata values, JSON-patch ops): build each patched model, group
    them by structure, fit each group in one batched call. Runs in-process or as a Dask task; never raises
    for a bad patch or a failed fit (the row says what went wrong)."""
    from . import histfactory as hf
    from .ir import build
    from .workspace import load_patched

    limits = bool(ctx["limits"])
    rows: dict[str, dict] = {}
    groups: dict[Any, list] = {}
    for name, values, ops in entries:
        t0 = time.perf_counter()
        try:
            spec = load_patched(ctx["bkg"], ops, name, measurement=ctx["measurement"], modifier_settings=ctx["modifier_settings"])
            ir = build(spec)
            if ir.poi_index is None:
                raise ParameterError(f"patch {name!r}: the patched workspace has no POI (measurement config.poi is empty "
                                     "or names no modifier)")
            if ir.fixed[ir.poi_index]:
                raise ParameterError(f"patch {name!r}: the POI {ir.poi_name!r} is fixed in the measurement config")
            T = hf.tensors(ir, ctx["dtype"])
        except HF2PPLError as exc:
            rows[name] = _error_row(name, values, str(exc), limits)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad patch must not end the scan
            rows[name] = _error_row(name, values, f"{type(exc).__name__}: {exc}", limits)
            continue
        key = (T.structure_key(entries=False), ir.poi_index)
        groups.setdefault(key, []).append((name, values, spec, ir, T, time.perf_counter() - t0))
    for key, items in groups.items():
        for part in _run_group_safely(ctx, key, items):
            rows[part["name"]] = part
    return [rows[name] for name, _, _ in entries]


def _run_group_safely(ctx: dict, key: Any, items: list) -> list[dict]:
    try:
        return _run_group(ctx, key, items)
    except Exception as exc:  # noqa: BLE001 - isolate the patch responsible
        if len(items) == 1:
            name, values = items[0][:2]
            msg = str(exc) if isinstance(exc, HF2PPLError) else f"{type(exc).__name__}: {exc}"
            return [_error_row(name, values, msg, bool(ctx["limits"]))]
        return [r for it in items for r in _run_group_safely(ctx, key, [it])]


#: per structure (without the histosys/normsys entries), the union of the entries seen so far in this process
#: (:func:`~hf2ppl.histfactory.unify`): later chunks reuse the compiled kernels while the union does not grow
_LAYOUTS: dict[Any, tuple] = {}


def _run_group(ctx: dict, key: Any, items: list) -> list[dict]:
    """One batched hypotest (and limit search) over patches of one structure."""
    import jax

    from . import histfactory as hf
    from .infer.frequentist._engine import _check_stats, _Engine, _prefit_widths
    from .infer.frequentist.asymptotics import Models, at_mu_many, prepare_many
    from .targets.numpyro import NumPyroModel

    t0 = time.perf_counter()
    dtype, test_stat, limits = ctx["dtype"], ctx["test_stat"], bool(ctx["limits"])
    Ts, _LAYOUTS[key] = hf.unify([it[4] for it in items], _LAYOUTS.get(key))
    name0, _, spec0, ir0 = items[0][:4]
    rep = NumPyroModel(spec0, ir0, constraints="aux", dtype=dtype)
    rep._T = Ts[0]  # on the group's common entries
    eng = _Engine(rep)
    G = len(items)
    irs = [it[3] for it in items]
    V = jax.tree.map(lambda *a: np.stack(a), *[T.values() for T in Ts])
    D = np.stack([np.concatenate([ir.observed, ir.auxdata]) for ir in irs])
    X0 = np.stack([ir.init for ir in irs])
    B = np.stack([ir.bounds for ir in irs])
    FX = np.stack([ir.fixed for ir in irs])
    cw = [_prefit_widths(ir, ir.init) for ir in irs]
    LO, HI = B[:, :, 0].copy(), B[:, :, 1].copy()
    XW = None
    if ctx.get("warm"):  # start the free fits also from the background-only fit (shared parameter names)
        warm = ctx["warm"]
        XW = X0.copy()
        for j, name in enumerate(rep.par_names):
            if name in warm and j != ir0.poi_index:
                XW[:, j] = np.where(FX[:, j], X0[:, j], np.clip(warm[name], LO[:, j], HI[:, j]))
    M = Models(D, X0, LO, HI, FX, V, np.stack([c for c, _ in cw]), np.stack([w for _, w in cw]), XW)
    poi = eng.poi
    prep = prepare_many(eng, M, test_stat)
    mus = np.full(G, 0.0 if test_stat == "q0" else float(ctx["poi_value"]))
    r = at_mu_many(eng, M, np.arange(G), mus, prep, test_stat)
    fits = [(prep["fits"], g) for g in range(G)], [(prep["fits"], G + g) for g in range(G)], [(r["fits"], g) for g in range(G)], \
        [(r["fits"], G + g) for g in range(G)]
    ul = None
    ul_err: list = [None] * G
    if limits:
        ul, ul_err, extra = _limits(eng, M, prep, test_stat, float(ctx["level"]))
    wall = (time.perf_counter() - t0) / G
    rows = []
    for g, it in enumerate(items):
        name, values = it[0], it[1]
        diag = [f[g] for f in fits]
        if limits and extra["diag"] is not None:
            diag += [(extra["diag"], j) for j in np.flatnonzero(extra["gidx"] == g)]
        conv, edm, mm, minima, status = _check_stats(diag)
        row = {"name": name, "values": values, "cls_obs": float(r["cls"][g]), "cls_exp": [float(v) for v in r["cls_exp"][g]],
               "mu_hat": float(prep["free_x"][g, poi]),
               # 2·NLL of the fits behind the CLs (pyhf's names): free and fixed-POI fits to data, the Asimov-generating fit
               # (POI at 0, or 1 for q0), the fixed-POI fit to Asimov data
               "twice_nll": {"free_data": 2.0 * float(prep["free_fun"][g]), "fixed_data": 2.0 * float(r["fits"]["fun"][g]),
                             "asimov_pars": 2.0 * float(prep["fits"]["fun"][G + g]), "fixed_asimov": 2.0 * float(r["fits"]["fun"][G + g])},
               "converged": conv, "edm": edm, "multimodal": mm, "warnings": [],
               "time": wall + it[5], "error": None}
        if not conv:
            row["warnings"].append(f"a fit did not converge ({status}; EDM {edm:.3g}); results may be imprecise")
        if mm:
            row["warnings"].append("the likelihood is multimodal: fits from different start points reached distinct minima "
                                   f"(2ΔNLL above the deepest: {', '.join(f'{v:.4g}' for v in minima[:5])}); the deepest is used")
        if limits:
            if ul_err[g] is not None:
                row.update(ul_obs=None, ul_exp=None)
                row["warnings"].append(f"no upper limit: {ul_err[g]}")
            else:
                row.update(ul_obs=float(ul[g, 0]), ul_exp=[float(v) for v in ul[g, 1:]])
                lo_b, hi_b = M.LO[g, poi], M.HI[g, poi]
                out = [f"{n} {v:.4g}" for n, v in zip(("observed", "-2σ", "-1σ", "median", "+1σ", "+2σ"), ul[g]) if not lo_b <= v <= hi_b]
                if out:
                    row["warnings"].append(f"upper limit outside the POI bounds [{lo_b:g}, {hi_b:g}]: {', '.join(out)} "
                                           "(fits with the POI fixed beyond its bound, as pyhf)")
        rows.append(row)
    return rows


def _limits(eng, M, prep, test_stat: str, level: float):
    """Observed and expected upper limits of every model of a group (one batched root search)."""
    from .infer.frequentist.asymptotics import at_mu_many
    from .infer.frequentist.intervals import root_limits_many

    poi, G = eng.poi, M.G
    # a POI that does not change the expected data has no upper limit
    Xlo, Xhi = prep["free_x"].copy(), prep["free_x"].copy()
    Xlo[:, poi], Xhi[:, poi] = M.LO[:, poi], M.HI[:, poi]
    elo, ehi = eng.expected(Xlo, M.V)[:, : eng.B], eng.expected(Xhi, M.V)[:, : eng.B]
    flat = np.all(np.abs(ehi - elo) <= 1e-12 * (1.0 + np.abs(elo)), axis=1)
    ok = np.flatnonzero(~flat)
    diags: list = []
    gids: list = []
    roots = np.full((G, 6), np.nan)
    errs: list = ["the POI does not change the expected data (its signal has zero yield in every bin)" if f else None for f in flat]
    if ok.size:
        def curves(gidx, mus):
            gidx = ok[np.asarray(gidx, int)]
            out = at_mu_many(eng, M, gidx, mus, prep, test_stat)
            diags.append(out["fits"])
            gids.append(np.r_[gidx, gidx])
            return np.concatenate([np.asarray(out["cls"])[:, None], np.asarray(out["cls_exp"])], axis=1)

        rr, ee = root_limits_many(curves, M.LO[ok, poi], M.HI[ok, poi], level, 1e-8)
        roots[ok] = rr
        for j, g in enumerate(ok):
            errs[g] = ee[j]
    if diags:
        merged = {k: np.concatenate([d[k] for d in diags]) for k in ("converged", "edm", "status", "multimodal")}
        merged["minima"] = [m for d in diags for m in d["minima"]]
        extra = {"diag": merged, "gidx": np.concatenate(gids)}
    else:
        extra = {"diag": None, "gidx": np.zeros(0, int)}
    return roots, errs, extra


# ====================================================================== output file
def _header(options: dict, labels: list[str]) -> dict:
    return {"hf2ppl_scan": FORMAT_VERSION, "options": options, "labels": labels}


def _read_output(path: Path) -> tuple[dict | None, list[dict], int]:
    """(header, rows, byte offset after the last complete line) of a scan file; a cut last line is ignored."""
    header, rows, good = None, [], 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # a line cut by a crash: dropped (and truncated before appending)
        line = data[pos:end].strip()
        pos = end + 1
        if not line:
            good = pos
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if pos >= len(data):
                break
            lineno = data[:pos].count(b"\n")
            raise WorkspaceError(f"{path}: line {lineno} is not valid JSON; not a file written by hf2ppl.scan?") from None
        if header is None:
            if not isinstance(obj, dict) or "hf2ppl_scan" not in obj:
                raise WorkspaceError(f"{path} exists and is not an hf2ppl scan file; choose another output path")
            header = obj
        else:
            rows.append(obj)
        good = pos
    return header, rows, good


class _Output:
    """The JSON-lines output of a scan: a header line (options), then rows appended chunk by chunk with one
    write + fsync each, so a crash loses at most the chunks in flight (a cut last line is dropped on resume)."""

    def __init__(self, path: str | os.PathLike, options: dict, labels: list[str]):
        self.path = Path(path)
        self.done: dict[str, dict] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            header, rows, good = _read_output(self.path)
            if header is None:
                raise WorkspaceError(f"{self.path} exists but holds no scan header; delete it or choose another output path")
            if header.get("options") != _clean(options):
                diff = sorted(k for k in set(options) | set(header.get("options", {})) if _clean(options.get(k)) != header.get("options", {}).get(k))
                raise ParameterError(f"{self.path} was written by a scan with other options (differing: {diff}); "
                                     "use another output file or delete it")
            self.done = {r["name"]: r for r in rows}
            with open(self.path, "r+b") as f:
                f.truncate(good)
        else:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w") as f:
                f.write(_dumps(_header(options, labels)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def append(self, rows: list[dict]) -> None:
        text = "".join(_dumps(r) + "\n" for r in rows)
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


# ====================================================================== schedulers
def _client(scheduler: Any, workers: int | None):
    """(client, owned) for a Dask scheduler spec."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError(f"scheduler={scheduler!r} needs dask.distributed: pip install 'hf2ppl[dask]'") from None
    if isinstance(scheduler, Client):
        return scheduler, None
    if scheduler == "processes":
        n = int(workers or os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    if isinstance(scheduler, str) and "://" in scheduler:
        return Client(scheduler), None
    raise ParameterError(f"scheduler must be None (in-process), 'processes' (a local Dask cluster), a scheduler address "
                         f"'tcp://host:port' or a dask.distributed.Client; got {scheduler!r}")


def _progress(progress: Any, total: int, initial: int):
    show = progress if progress is not None else (sys.stderr.isatty() or "ipykernel" in sys.modules)
    if not show or not total:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, desc="scan", unit="patch", smoothing=0.1)


def _default_chunk() -> int:
    try:
        import jax

        return 512 if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else 32
    except Exception:  # noqa: BLE001
        return 32


# ====================================================================== the public entry point
def scan(
    bkgonly: Any,
    patchset: Any,
    *,
    patches: Any = None,
    poi_value: float = 1.0,
    test_stat: str = "qtilde",
    limits: bool = False,
    level: float = 0.05,
    scheduler: Any = None,
    workers: int | None = None,
    output: str | os.PathLike | None = None,
    progress: bool | None = None,
    chunk_size: int | None = None,
    verify: bool = True,
    measurement: str | int | None = None,
    modifier_settings: Mapping | None = None,
    dtype: str = "float64",
) -> ScanResult:
    r"""CLs at ``poi_value`` (and, with ``limits=True``, the observed and expected upper limits) for every
    selected patch of a PatchSet applied to a background-only workspace.

    Each patch gives the same numbers as ``hf2ppl.hypotest(compile(bkgonly, patches=[patch],
    constraints="aux"), poi_value, return_expected_set=True, test_stat=test_stat)`` (asymptotics, pyhf's
    conventions) and ``hf2ppl.upper_limit(..., level=level)``, except where a likelihood is multimodal: a
    scan first fits the background-only workspace (multi-start) and starts every patch's fits from that
    minimum as well as from the suggested init, which can reach deeper minima than per-patch starts (the row
    is then flagged ``multimodal``; on the real staus grid the μ=0 fit of every point is 0.11 deeper in 2·NLL
    than pyhf's and ``hypotest``'s, and CLs moves accordingly). Patches of one model structure are fitted
    together in one vmapped call (chunks of ``chunk_size``: 32 on CPU, 512 on GPU).

    Args:
        bkgonly: the background-only workspace (path, JSON string, dict, ``pyhf.Workspace``).
        patchset: the PatchSet (path, JSON string, dict, ``pyhf.PatchSet``). Its ``metadata.digests`` are
            checked against ``bkgonly`` (``verify=False`` skips this).
        patches: which patches (default all): names, metadata value tuples, ``{label: values}``, or a
            predicate on the patch metadata; see :func:`select_patches`.
        scheduler: None runs in this process; ``"processes"`` starts a local Dask cluster (``workers``
            processes, default one per core); ``"tcp://host:port"`` or a ``dask.distributed.Client`` uses an
            existing cluster (``pip install "hf2ppl[dask]"``). Workers compile once per structure.
        output: a JSON-lines file: a header (the options) then one row per patch, appended (and fsynced)
            chunk by chunk. A rerun with the same file skips the patches already in it, so an interrupted
            scan resumes where it stopped; a file written with other options is refused.
        progress: a progress bar (patches, rate, ETA); default: when stderr is a terminal or in a notebook.

    Returns:
        :class:`ScanResult`: one row per patch with ``name``, ``values`` (metadata by label), ``cls_obs``,
        ``cls_exp`` (pyhf's 5-value band), ``mu_hat``, ``twice_nll`` (2·NLL of the free and fixed-POI fits to
        data, of the Asimov-generating fit and of the fixed-POI fit to Asimov data, with pyhf's names), with
        ``limits`` also ``ul_obs`` and ``ul_exp`` (5),
        the fit status (``converged``: every fit met the EDM criterion; ``edm``: the largest; ``multimodal``),
        ``warnings`` (why a row may be imprecise), ``time`` (seconds per patch) and ``error`` (a one-line
        reason when the patch could not be evaluated; the scan goes on).

    Example:
        >>> res = hf2ppl.scan("BkgOnly.json", "patchset.json", patches={"m_neutralino": 0})  # doctest: +SKIP
    """
    from .infer.frequentist._engine import _check_test_stat
    from .infer.frequentist.intervals import _check_level
    from .workspace import _read_json, load, load_patchset

    if not (scheduler is None or scheduler == "processes" or (isinstance(scheduler, str) and "://" in scheduler)
            or type(scheduler).__name__ == "Client"):
        raise ParameterError(f"scheduler must be None (in-process), 'processes' (a local Dask cluster), a scheduler address "
                             f"'tcp://host:port' or a dask.distributed.Client; got {scheduler!r}")
    _check_test_stat(test_stat, ("qtilde", "q", "q0"))
    if limits and test_stat not in ("qtilde", "q"):
        raise ParameterError(f"limits=True needs test_stat 'qtilde' or 'q', got {test_stat!r}")
    level = _check_level(level)
    if dtype not in ("float64", "float32"):
        raise ParameterError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    try:
        poi_value = float(poi_value)
    except (TypeError, ValueError):
        raise ParameterError(f"poi_value must be a number, got {poi_value!r}") from None
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ParameterError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if hasattr(bkgonly, "workspace") and hasattr(bkgonly, "measurement_index"):  # a Spec
        bkg_doc = bkgonly.workspace
    else:
        bkg_doc = _read_json(bkgonly, "workspace")
    if isinstance(bkg_doc, Mapping) and "patches" in bkg_doc and "channels" not in bkg_doc:
        raise WorkspaceError("the first argument is a PatchSet; pass the background-only workspace first, then the patchset")
    load(bkg_doc, measurement=measurement, modifier_settings=modifier_settings, poi_name=None)  # validate once
    ps = load_patchset(patchset)
    if verify:
        verify_patchset(bkg_doc, ps)
    labels = list(ps["metadata"]["labels"])
    selected = select_patches(ps, patches)
    names = [p["metadata"]["name"] for p in selected]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PatchError(f"the patchset has several patches named {dup[:5]}; names must be unique", path="/patches")
    options = {"poi_value": poi_value, "test_stat": test_stat, "limits": bool(limits), "level": level if limits else None,
               "measurement": measurement, "modifier_settings": modifier_settings, "dtype": dtype,
               "bkgonly_sha256": _digest(bkg_doc)}
    out = _Output(output, options, labels) if output is not None else None
    done = dict(out.done) if out is not None else {}
    todo = [(p["metadata"]["name"], dict(zip(labels, p["metadata"]["values"])), p["patch"]) for p in selected
            if p["metadata"]["name"] not in done]
    ctx = {"bkg": bkg_doc, "measurement": measurement, "modifier_settings": modifier_settings, "poi_value": poi_value,
           "test_stat": test_stat, "limits": bool(limits), "level": level, "dtype": dtype,
           "warm": _background_fit(bkg_doc, measurement, modifier_settings, dtype) if todo else None}
    size = chunk_size or _default_chunk()
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    bar = _progress(progress, len(selected), len(selected) - len(todo))
    results: dict[str, dict] = {}

    def finished(rows: list[dict]) -> None:
        if out is not None:
            out.append(rows)
        for r in rows:
            results[r["name"]] = r
        if bar is not None:
            bar.update(len(rows))

    try:
        if scheduler is None:
            for ch in chunks:
                finished(_run_chunk(ctx, ch))
        else:
            _run_dask(scheduler, workers, ctx, chunks, finished)
    finally:
        if bar is not None:
            bar.close()
    rows = [done.get(n) or results[n] for n in names]
    res = ScanResult(rows, labels, _clean(options))
    _warn_summary(res)
    return res


def _background_fit(bkg_doc: dict, measurement: Any, modifier_settings: Any, dtype: str) -> dict | None:
    """The background-only maximum-likelihood fit (multi-start), by flat parameter name: every patch's free
    fits start from it and from the suggested init. None when it cannot be fitted (no free parameters...)."""
    import hf2ppl

    from .infer.frequentist._engine import FitWarning

    try:
        m = hf2ppl.compile(bkg_doc, constraints="aux", poi_name=None, measurement=measurement, modifier_settings=modifier_settings, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            r = hf2ppl.fit(m)
    except HF2PPLError:
        return None
    if not np.all(np.isfinite(r.x)):
        return None
    return {n: float(v) for n, v in zip(m.par_names, r.x)}


def _run_dask(scheduler: Any, workers: int | None, ctx: dict, chunks: list, finished: Callable) -> None:
    from dask.distributed import as_completed

    client, owned = _client(scheduler, workers)
    futures = []
    try:
        if chunks:
            ctx_f = client.scatter(ctx, broadcast=True)
            futures = [client.submit(_run_chunk, ctx_f, ch, pure=False) for ch in chunks]
            for fut in as_completed(futures):
                finished(fut.result())
    finally:
        for f in futures:
            f.cancel()
        if owned is not None:
            client.close()
            owned.close()


def _warn_summary(res: ScanResult) -> None:
    from .infer.frequentist._engine import FitWarning

    n = len(res)
    if res.failed:
        warnings.warn(f"scan: {len(res.failed)} of {n} patches could not be evaluated (row 'error'), e.g. "
                      f"{res.failed[0]['name']}: {res.failed[0]['error']}", FitWarning, stacklevel=3)
    if res.flagged:
        warnings.warn(f"scan: {len(res.flagged)} of {n} patches have results that may be imprecise (row 'warnings'), e.g. "
                      f"{res.flagged[0]['name']}: {res.flagged[0]['warnings'][0]}", FitWarning, stacklevel=3)

