"""The backend-neutral model IR and its builder from a validated :class:`~hf2ppl.workspace.Spec`.

The IR is plain data: frozen dataclasses holding tuples and numpy arrays.
Loops over the JSON happen here, once; the math in :mod:`hf2ppl.histfactory`
then needs only a handful of array operations whatever the number of samples
and modifiers.

Layout (``S`` samples sorted by name, ``B`` bins of all channels concatenated
with channels sorted by name, as pyhf does; ``P`` parameters in pyhf's order):

* ``theta_ext = concat(theta, [0, 1])``: index ``P`` reads 0 (a neutral alpha),
  index ``P+1`` reads 1 (a neutral factor).
* ``factor_idx[k, s, b]``: index into ``theta_ext`` of the k-th multiplicative
  factor (normfactor, lumi, shapefactor, shapesys, staterror) acting on
  sample ``s`` in bin ``b``; unused slots point at the constant 1.
* ``normsys_idx/hi/lo[k, s, c]``: the k-th normsys acting on sample ``s`` in
  channel ``c`` (a normsys is constant over a channel's bins, so it is
  interpolated per channel and broadcast to bins with ``bin_channel``;
  neutral slots: alpha index P, hi = lo = 1).
* ``histosys_idx/hi/lo[k, s, b]``: likewise for histosys (neutral: alpha 0, hi = lo = nominal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import MeasurementError, ModelError
from .workspace import Spec, as_float

__all__ = ["ParameterSet", "Channel", "ModelIR", "build"]

#: pyhf's order of modifier types; parameter sets are ordered by it, then by first appearance.
MODIFIER_ORDER = ("histosys", "lumi", "normfactor", "normsys", "shapefactor", "shapesys", "staterror")
_FACTOR_TYPES = ("normfactor", "lumi", "shapefactor", "shapesys", "staterror")


@dataclass(frozen=True)
class ParameterSet:
    """One named parameter set (a modifier name), scalar or per bin.

    Attributes:
        name: the modifier name shared by all modifiers that use it.
        kind: the modifier type (``"normfactor"``, ..., ``"staterror"``); for a
            name shared by normsys and histosys, the first in pyhf's order.
        size: number of components.
        is_scalar: True for scalar sets (normfactor, lumi, normsys, histosys).
        start: offset of the first component in the flat parameter vector.
        inits, bounds, fixed: per component, after measurement overrides.
        constraint: ``None`` (free), ``"normal"`` or ``"poisson"``.
        auxdata: auxiliary data per component (constrained sets).
        sigmas: widths of the normal constraint per component.
        factors: Poisson constraint factors tau per component (shapesys).
        is_poi: whether this is the measurement's parameter of interest.
        labels: a label per component (``"SR[0]"``: channel and bin).
    """

    name: str
    kind: str
    size: int
    is_scalar: bool
    start: int
    inits: tuple[float, ...]
    bounds: tuple[tuple[float, float], ...]
    fixed: tuple[bool, ...]
    constraint: str | None = None
    auxdata: tuple[float, ...] | None = None
    sigmas: tuple[float, ...] | None = None
    factors: tuple[float, ...] | None = None
    is_poi: bool = False
    labels: tuple[str, ...] = ()

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)

    @property
    def free_mask(self) -> np.ndarray:
        return ~np.asarray(self.fixed, dtype=bool)

    @property
    def n_free(self) -> int:
        return int(self.free_mask.sum())

    @property
    def all_fixed(self) -> bool:
        return self.n_free == 0

    @property
    def dim(self) -> str:
        """Name of the dimension of a vector set (``"<name>_bin"``)."""
        return f"{self.name}_bin"

    @property
    def free_labels(self) -> tuple[str, ...]:
        return tuple(lab for lab, f in zip(self.labels, self.fixed) if not f)


@dataclass(frozen=True)
class Channel:
    """A channel: its bins occupy ``[start, stop)`` of the concatenated bin axis."""

    name: str
    nbins: int
    start: int
    samples: tuple[str, ...]

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.nbins)


@dataclass(frozen=True, eq=False)
class ModelIR:
    """The compiled model as plain numpy data. See the module docstring for the layout."""

    channels: tuple[Channel, ...]
    samples: tuple[str, ...]
    parameters: tuple[ParameterSet, ...]
    poi_name: str | None
    nominal: np.ndarray  # (S, B)
    factor_idx: np.ndarray  # (Kf, S, B) int
    normsys_idx: np.ndarray  # (Kn, S, C) int
    normsys_hi: np.ndarray
    normsys_lo: np.ndarray
    normsys_code: str
    histosys_idx: np.ndarray  # (Kh, S, B) int
    histosys_hi: np.ndarray
    histosys_lo: np.ndarray
    histosys_code: str
    bin_channel: np.ndarray  # (B,) channel index of each bin
    normal_idx: np.ndarray  # (Nn,) parameter indices of normal constraints
    normal_auxpos: np.ndarray  # (Nn,) positions in the auxdata vector
    normal_sigma: np.ndarray
    poisson_idx: np.ndarray  # (Np,)
    poisson_auxpos: np.ndarray
    poisson_factor: np.ndarray
    observed: np.ndarray  # (B,) main data
    auxdata: np.ndarray  # (A,) pyhf order
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------ metadata
    @property
    def npars(self) -> int:
        return sum(p.size for p in self.parameters)

    @property
    def nbins(self) -> int:
        return int(self.nominal.shape[1])

    @property
    def par_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for p in self.parameters:
            names += [p.name] if p.is_scalar else [f"{p.name}[{i}]" for i in range(p.size)]
        return tuple(names)

    @property
    def par_map(self) -> dict[str, ParameterSet]:
        return {p.name: p for p in self.parameters}

    @property
    def poi_index(self) -> int | None:
        return None if self.poi_name is None else self.par_map[self.poi_name].start

    @property
    def init(self) -> np.ndarray:
        return np.concatenate([np.asarray(p.inits, float) for p in self.parameters])

    @property
    def bounds(self) -> np.ndarray:
        return np.concatenate([np.asarray(p.bounds, float).reshape(-1, 2) for p in self.parameters])

    @property
    def fixed(self) -> np.ndarray:
        return np.concatenate([np.asarray(p.fixed, bool) for p in self.parameters])

    @property
    def free_index(self) -> np.ndarray:
        return np.flatnonzero(~self.fixed)

    def data_by_channel(self, main: np.ndarray | None = None) -> dict[str, np.ndarray]:
        main = self.observed if main is None else np.asarray(main)
        return {c.name: main[..., c.slice] for c in self.channels}


# ================================================================== builder
def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]


def _requirement(mtype: str, nbins: int) -> dict:
    """pyhf 0.7's default parameter-set requirements per modifier type."""
    if mtype == "normfactor":
        return dict(constraint=None, size=1, is_scalar=True, inits=(1.0,), bounds=((0.0, 10.0),), fixed=False)
    if mtype == "shapefactor":
        return dict(constraint=None, size=nbins, is_scalar=False, inits=(1.0,) * nbins, bounds=((0.0, 10.0),) * nbins, fixed=False)
    if mtype == "lumi":
        return dict(constraint="normal", size=1, is_scalar=True, inits=None, bounds=None, fixed=False, auxdata=None, sigmas=None)
    if mtype in ("normsys", "histosys"):
        return dict(constraint="normal", size=1, is_scalar=True, inits=(0.0,), bounds=((-5.0, 5.0),), fixed=False, auxdata=(0.0,), sigmas=(1.0,))
    raise AssertionError(mtype)


def build(spec: Spec) -> ModelIR:
    """Build the :class:`ModelIR` of a validated :class:`~hf2ppl.workspace.Spec`."""
    ws = spec.workspace
    mpath = f"/measurements/{spec.measurement_index}/config/parameters"
    obs = spec.observations
    chan_index = {c["name"]: i for i, c in enumerate(ws["channels"])}
    channel_names = sorted(chan_index)
    nbins = {c: len(obs[c]) for c in channel_names}
    starts, b0 = {}, 0
    for c in channel_names:
        starts[c] = b0
        b0 += nbins[c]
    B = b0
    samples = sorted({s["name"] for c in ws["channels"] for s in c["samples"]})
    S = len(samples)
    sidx = {s: i for i, s in enumerate(samples)}

    # per channel, per sample: (sample dict, json path, {type/name: (modifier, path)}) -- last duplicate wins, as in pyhf
    cells: dict[str, dict[str, tuple[dict, str, dict]]] = {}
    seen_unshared: dict[str, str] = {}
    for c in ws["channels"]:
        ci = chan_index[c["name"]]
        for si, s in enumerate(c["samples"]):
            sp = f"/channels/{ci}/samples/{si}"
            mods: dict[str, tuple[dict, str]] = {}
            for mi, m in enumerate(s["modifiers"]):
                key = f"{m['type']}/{m['name']}"
                if m["type"] == "shapesys" and (key in seen_unshared or key in mods):
                    raise ModelError(
                        f"shapesys {m['name']!r} is used again (first at {seen_unshared.get(key, sp)}); shapesys parameters "
                        "cannot be shared between samples; use distinct names", path=f"{sp}/modifiers/{mi}/name")
                mods[key] = (m, f"{sp}/modifiers/{mi}")
            for key in mods:
                if key.startswith("shapesys/"):
                    seen_unshared.setdefault(key, sp)
            cells.setdefault(c["name"], {})[s["name"]] = (s, sp, mods)
    all_mods = sorted({(m["name"], m["type"]) for c in ws["channels"] for s in c["samples"] for m in s["modifiers"]})

    nominal = np.zeros((S, B))
    for c in channel_names:
        for sname, (s, _, _) in cells[c].items():
            nominal[sidx[sname], starts[c]:starts[c] + nbins[c]] = np.asarray(s["data"], float)

    # ---- parameter requirements, collected in pyhf's order
    reqs: dict[str, dict[str, list]] = {t: {} for t in MODIFIER_ORDER}
    first_path: dict[str, str] = {}
    for c in channel_names:
        for sname in samples:
            if sname not in cells[c]:
                continue
            s, sp, mods = cells[c][sname]
            for name, mtype in sorted((m["name"], m["type"]) for m, _ in mods.values()):
                key = f"{mtype}/{name}"
                first_path.setdefault(name, mods[key][1])
                if mtype in ("staterror", "shapesys"):
                    continue  # handled below
                req = _requirement(mtype, nbins[c])
                if mtype == "shapefactor" and name in reqs[mtype] and reqs[mtype][name][0]["size"] != nbins[c]:
                    raise ModelError(
                        f"shapefactor {name!r} is shared by channels with different numbers of bins "
                        f"({reqs[mtype][name][0]['size']} and {nbins[c]} in {c!r})", path=mods[key][1])
                reqs[mtype].setdefault(name, [req])

    # shapesys: one set per modifier, first appearance
    shapesys_info: dict[str, tuple[str, int]] = {}
    for c in channel_names:
        for sname in samples:
            if sname not in cells[c]:
                continue
            s, sp, mods = cells[c][sname]
            for name in sorted(m["name"] for m, _ in mods.values() if m["type"] == "shapesys"):
                m, _ = mods[f"shapesys/{name}"]
                nom = np.asarray(s["data"], float)
                unc = np.asarray(m["data"], float)
                valid = (nom > 0) & (unc > 0)
                fac = np.where(valid, np.divide(nom**2, unc**2, out=np.ones_like(nom), where=valid), 1.0)
                reqs["shapesys"].setdefault(name, [dict(
                    constraint="poisson", size=nbins[c], is_scalar=False, inits=(1.0,) * nbins[c],
                    bounds=((1e-10, 10.0),) * nbins[c], fixed=tuple(bool(v) for v in ~valid),
                    auxdata=tuple(fac.tolist()), factors=tuple(fac.tolist()))])
                shapesys_info[name] = (c, sidx[sname])

    # staterror: sets in name order; bins = union of channels where the carrying samples have it
    staterror_bins: dict[str, np.ndarray] = {}
    for name in sorted({n for n, t in all_mods if t == "staterror"}):
        key = f"staterror/{name}"
        masks: dict[str, np.ndarray] = {}
        for sname in samples:
            mask = np.zeros(B, bool)
            for c in channel_names:
                if sname in cells[c] and key in cells[c][sname][2]:
                    mask[starts[c]:starts[c] + nbins[c]] = True
            if mask.any():
                masks[sname] = mask
        ref_name, ref = next(iter(masks.items()))
        for sname, mask in masks.items():
            if not np.array_equal(mask, ref):
                raise ModelError(
                    f"staterror {name!r} is on sample {ref_name!r} and sample {sname!r} in different sets of channels; "
                    "pyhf requires every sample carrying a staterror to carry it in the same channels", path=first_path[name])
        covered = np.flatnonzero(ref)
        nomsall = sum(nominal[sidx[s]] for s in masks)
        rel2 = np.zeros(B)
        for c in channel_names:
            for sname in masks:
                if sname in cells[c] and key in cells[c][sname][2]:
                    unc = np.asarray(cells[c][sname][2][key][0]["data"], float)
                    sl = slice(starts[c], starts[c] + nbins[c])
                    tot = nomsall[sl]
                    rel2[sl] += np.where(tot > 0, (unc / np.where(tot > 0, tot, 1.0)) ** 2, 0.0)
        sig = np.sqrt(rel2)[covered]
        fixed = sig == 0
        sig = np.where(fixed, 1.0, sig)
        n = len(covered)
        reqs["staterror"][name] = [dict(
            constraint="normal", size=n, is_scalar=False, inits=(1.0,) * n, bounds=((1e-10, 10.0),) * n,
            fixed=tuple(bool(f) for f in fixed), auxdata=(1.0,) * n, sigmas=tuple(sig.tolist()))]
        staterror_bins[name] = covered

    ordered: dict[str, list[tuple[str, dict]]] = {}
    for mtype in MODIFIER_ORDER:
        for name, rl in reqs[mtype].items():
            ordered.setdefault(name, []).extend((mtype, r) for r in rl)

    # ---- combine requirements and apply measurement overrides
    user = {p["name"]: (i, p) for i, p in enumerate(spec.measurement["config"].get("parameters", []))}
    poi = spec.poi
    psets: list[ParameterSet] = []
    start = 0
    for name, rl in ordered.items():
        kind, req = rl[0]
        for k2, r2 in rl[1:]:
            if r2 != req:
                raise ModelError(
                    f"parameter {name!r} is used by a {kind} and a {k2} modifier with incompatible definitions; "
                    "use distinct modifier names", path=first_path[name])
        req = dict(req)
        size = req["size"]
        upath = None
        if name in user:
            ui, ucfg = user[name]
            upath = f"{mpath}/{ui}"
            for key in ("inits", "bounds", "auxdata", "sigmas", "factors", "fixed"):
                if key not in ucfg:
                    continue
                v = ucfg[key]
                if key == "fixed":
                    if isinstance(v, bool):
                        req["fixed"] = v
                    elif len(_as_list(v)) != size:
                        raise ModelError(f"parameter {name!r} has {size} components but 'fixed' has {len(_as_list(v))} entries", path=f"{upath}/fixed")
                    else:
                        req["fixed"] = tuple(bool(x) for x in v)
                    continue
                if key not in req or (key == "sigmas" and kind in ("normsys", "histosys")) or (key == "factors" and kind != "shapesys"):
                    raise ModelError(f"parameter {name!r} ({kind}) does not use the '{key}' attribute", path=f"{upath}/{key}")
                v = _as_list(v)
                if len(v) != size:
                    raise ModelError(f"parameter {name!r} has {size} components but '{key}' has {len(v)} entries", path=f"{upath}/{key}")
                if key == "bounds":
                    pairs = []
                    for j, b in enumerate(v):
                        bp = f"{upath}/bounds/{j}"
                        if not isinstance(b, (list, tuple)) or len(b) != 2:
                            raise ModelError(f"parameter {name!r} bound {j} is {b!r}; each bound must be a pair [lower, upper]", path=bp)
                        lo, hi = (as_float(x, f"{bp}/{e}", f"parameter {name!r} bound {j} {side}", allow_inf=True)
                                  for e, (x, side) in enumerate(zip(b, ("lower", "upper"))))
                        if not lo <= hi:
                            raise ModelError(f"parameter {name!r} bound {j} has lower {lo} > upper {hi}", path=bp)
                        pairs.append((lo, hi))
                    v = pairs
                else:
                    v = [as_float(x, f"{upath}/{key}/{j}", f"parameter {name!r} {key} entry {j}") for j, x in enumerate(v)]
                    for j, x in enumerate(v):
                        if key == "sigmas" and not x > 0:
                            raise ModelError(f"parameter {name!r} {key} entry {j} is {x}; it must be > 0", path=f"{upath}/{key}/{j}")
                req[key] = tuple(v)
        for key in ("inits", "bounds", "auxdata", "sigmas"):
            if key in req and req[key] is None:
                raise ModelError(
                    f"{kind} parameter {name!r} needs '{key}' in the measurement's parameter configuration "
                    "(e.g. lumi: auxdata [1.0], sigmas [rel. uncertainty], inits [1.0], bounds [[lo, hi]])",
                    path=upath or mpath)
        fixed = req["fixed"]
        fixed = (fixed,) * size if isinstance(fixed, bool) else tuple(fixed)
        labels = _labels(name, kind, size, shapesys_info, staterror_bins, channel_names, starts)
        psets.append(ParameterSet(
            name=name, kind=kind, size=size, is_scalar=req["is_scalar"], start=start,
            inits=tuple(float(x) for x in req["inits"]), bounds=tuple(tuple(b) for b in req["bounds"]), fixed=fixed,
            constraint=req["constraint"], auxdata=req.get("auxdata"),
            sigmas=req.get("sigmas") if req["constraint"] == "normal" else None,
            factors=req.get("factors"), is_poi=(name == poi), labels=labels))
        start += size
    if not psets:
        raise ModelError("the model has no parameters (no modifiers in any sample)", path="/channels")
    pmap = {p.name: p for p in psets}
    P = start
    if poi is not None and pmap[poi].size != 1:  # pyhf: "not currently supported as parameter of interest"
        where = "" if spec.poi_from_measurement else f" (poi_name={poi!r})"
        raise MeasurementError(f"POI {poi!r}{where} must be a scalar parameter, it has {pmap[poi].size} components ({pmap[poi].kind}); "
                               "pick a normfactor or other one-component parameter, or poi_name=None",
                               path=f"/measurements/{spec.measurement_index}/config/poi" if spec.poi_from_measurement else None)

    # ---- dense slot tensors
    ZERO, ONE = P, P + 1
    fac_cells: dict[tuple[int, str], list[np.ndarray]] = {}
    ns_cells: dict[tuple[int, str], list[tuple[int, float, float]]] = {}
    hs_cells: dict[tuple[int, str], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for c in channel_names:
        nb = nbins[c]
        for sname, (_, _, mods) in cells[c].items():
            cell = (sidx[sname], c)
            for m, _ in mods.values():
                mtype, name = m["type"], m["name"]
                p = pmap[name]
                if mtype in ("normfactor", "lumi"):
                    fac_cells.setdefault(cell, []).append(np.full(nb, p.start))
                elif mtype in ("shapefactor", "shapesys"):
                    fac_cells.setdefault(cell, []).append(p.start + np.arange(nb))
                elif mtype == "staterror":
                    pos = np.searchsorted(staterror_bins[name], np.arange(starts[c], starts[c] + nb))
                    fac_cells.setdefault(cell, []).append(p.start + pos)
                elif mtype == "normsys":
                    ns_cells.setdefault(cell, []).append((p.start, float(m["data"]["hi"]), float(m["data"]["lo"])))
                elif mtype == "histosys":
                    hs_cells.setdefault(cell, []).append(
                        (p.start, np.asarray(m["data"]["hi_data"], float), np.asarray(m["data"]["lo_data"], float)))
    Kf = max((len(v) for v in fac_cells.values()), default=0)
    Kn = max((len(v) for v in ns_cells.values()), default=0)
    Kh = max((len(v) for v in hs_cells.values()), default=0)
    factor_idx = np.full((Kf, S, B), ONE, dtype=np.int32)
    C = len(channel_names)
    cidx = {c: i for i, c in enumerate(channel_names)}
    normsys_idx = np.full((Kn, S, C), ZERO, dtype=np.int32)
    normsys_hi = np.ones((Kn, S, C))
    normsys_lo = np.ones((Kn, S, C))
    histosys_idx = np.full((Kh, S, B), ZERO, dtype=np.int32)
    histosys_hi = np.broadcast_to(nominal, (Kh, S, B)).copy()
    histosys_lo = histosys_hi.copy()
    for (si, c), lst in fac_cells.items():
        sl = slice(starts[c], starts[c] + nbins[c])
        for k, idx in enumerate(lst):
            factor_idx[k, si, sl] = idx
    for (si, c), lst in ns_cells.items():
        for k, (i, hi, lo) in enumerate(lst):
            normsys_idx[k, si, cidx[c]], normsys_hi[k, si, cidx[c]], normsys_lo[k, si, cidx[c]] = i, hi, lo
    bin_channel = np.concatenate([np.full(nbins[c], cidx[c], dtype=np.int32) for c in channel_names])
    for (si, c), lst in hs_cells.items():
        sl = slice(starts[c], starts[c] + nbins[c])
        for k, (i, hi, lo) in enumerate(lst):
            histosys_idx[k, si, sl], histosys_hi[k, si, sl], histosys_lo[k, si, sl] = i, hi, lo

    # ---- constraints and auxdata in pyhf order
    aux, n_idx, n_pos, n_sig, p_idx, p_pos, p_fac = [], [], [], [], [], [], []
    for p in psets:
        if p.constraint is None:
            continue
        pos = len(aux) + np.arange(p.size)
        aux += list(p.auxdata)
        idx = p.start + np.arange(p.size)
        if p.constraint == "normal":
            n_idx.append(idx), n_pos.append(pos), n_sig.append(np.asarray(p.sigmas, float))
        else:
            p_idx.append(idx), p_pos.append(pos), p_fac.append(np.asarray(p.factors, float))

    def cat(xs, dtype):
        return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)

    observed = np.concatenate([np.asarray(obs[c], float) for c in channel_names])
    channels = tuple(Channel(c, nbins[c], starts[c], tuple(sorted(cells[c]))) for c in channel_names)
    return ModelIR(
        channels=channels, samples=tuple(samples), parameters=tuple(psets), poi_name=poi,
        nominal=nominal, factor_idx=factor_idx,
        normsys_idx=normsys_idx, normsys_hi=normsys_hi, normsys_lo=normsys_lo,
        normsys_code=spec.modifier_settings["normsys"]["interpcode"],
        histosys_idx=histosys_idx, histosys_hi=histosys_hi, histosys_lo=histosys_lo,
        histosys_code=spec.modifier_settings["histosys"]["interpcode"],
        bin_channel=bin_channel,
        normal_idx=cat(n_idx, np.int32), normal_auxpos=cat(n_pos, np.int32), normal_sigma=cat(n_sig, float),
        poisson_idx=cat(p_idx, np.int32), poisson_auxpos=cat(p_pos, np.int32), poisson_factor=cat(p_fac, float),
        observed=observed, auxdata=np.asarray(aux, float),
        meta={"measurement": spec.measurement["name"], "modifier_settings": spec.modifier_settings},
    )


def _labels(name, kind, size, shapesys_info, staterror_bins, channel_names, starts) -> tuple[str, ...]:
    if size == 1 and kind not in ("shapefactor", "shapesys", "staterror"):
        return (name,)
    if kind == "shapesys":
        c = shapesys_info[name][0]
        return tuple(f"{c}[{i}]" for i in range(size))
    if kind == "staterror":
        out = []
        for b in staterror_bins[name]:
            c = max((ch for ch in channel_names if starts[ch] <= b), key=lambda ch: starts[ch])
            out.append(f"{c}[{b - starts[c]}]")
        return tuple(out)
    return tuple(f"{i}" for i in range(size))
