"""Load, patch and validate HistFactory JSON workspaces. Nothing numerical.

The schema is the one the installed pyhf ships (``pyhf/schemas/<version>``);
hf2ppl keeps no copy of it.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import referencing
import referencing.jsonschema

from .errors import MeasurementError, ModelError, PatchError, SchemaError, WorkspaceError

__all__ = ["Spec", "load", "load_patchset", "DEFAULT_MODIFIER_SETTINGS"]

#: pyhf 0.7's default interpolation codes.
DEFAULT_MODIFIER_SETTINGS: dict[str, dict[str, str]] = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}
_ALLOWED_CODES = {"normsys": ("code1", "code4"), "histosys": ("code0", "code2", "code4p")}


@dataclass(frozen=True)
class Spec:
    """A validated, patched workspace with its measurement resolved.

    Attributes:
        workspace: the workspace dict after patches (validated against the schema).
        measurement: the selected measurement dict.
        measurement_index: its index in ``workspace["measurements"]``.
        modifier_settings: interpolation codes, pyhf-style
            (``{"normsys": {"interpcode": "code4"}, ...}``).
    """

    workspace: dict
    measurement: dict
    measurement_index: int
    modifier_settings: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_MODIFIER_SETTINGS))

    @property
    def poi(self) -> str | None:
        return self.measurement["config"].get("poi")

    @property
    def channels(self) -> list[dict]:
        return self.workspace["channels"]

    @property
    def observations(self) -> dict[str, list[float]]:
        return {o["name"]: o["data"] for o in self.workspace["observations"]}


# ---------------------------------------------------------------- schema
@cache
def _validator(version: str, schema_name: str, fragment: str = ""):
    """A jsonschema validator for pyhf's ``schema_name`` (optionally a ``#/json/pointer`` fragment of it)."""
    base = resources.files("pyhf") / "schemas" / version
    if not base.joinpath(schema_name).is_file():
        raise SchemaError(f"unknown HistFactory schema version {version!r} (pyhf ships {_schema_versions()})", path="/version")
    resources_ = []
    for f in base.iterdir():
        if f.name.endswith(".json"):
            contents = json.loads(f.read_text())
            resources_.append((contents["$id"], referencing.Resource.from_contents(contents, default_specification=referencing.jsonschema.DRAFT6)))
    registry = referencing.Registry().with_resources(resources_)
    schema = json.loads(base.joinpath(schema_name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    # draft-06 ignores "$id" beside "$ref"; refer to the schema by its id so relative refs resolve
    return cls({"$ref": schema["$id"] + fragment}, registry=registry)


def _schema_versions() -> list[str]:
    base = resources.files("pyhf") / "schemas"
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name[0].isdigit())


def _pointer(parts: Iterable[Any]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts) if parts else "/"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _skeleton(doc: Any) -> Any:
    """A copy of ``doc`` whose long lists of plain numbers are cut to two entries.

    pyhf's schemas constrain numeric arrays only through ``"items": {"type": "number"}`` and
    ``minItems`` of 1 (its ``maxItems`` sits on the number, where it has no effect), so checking two
    entries, after confirming in plain Python that all entries are numbers, gives the same verdict
    as validating every bin with jsonschema, which is slow (minutes for large published workspaces).
    A list with any non-number is kept whole so the error path points at the culprit.
    """
    if isinstance(doc, Mapping):
        return {k: _skeleton(v) for k, v in doc.items()}
    if isinstance(doc, list):
        if len(doc) > 2 and all(_is_number(v) for v in doc):
            return doc[:2]
        return [_skeleton(v) for v in doc]
    return doc


def _raise(err, prefix: str, version: str, schema_name: str) -> None:
    if err is not None:
        msg = err.message
        if len(msg) > 200:
            msg = msg[:200] + "..."
        raise SchemaError(f"{msg} (HistFactory schema {version}/{schema_name})", path=prefix + _pointer(err.absolute_path).rstrip("/"))


def _shape_key(v: Any, key: str = "") -> Any:
    """What the schema can see of a modifier: types, list emptiness and the 'type' tag."""
    if isinstance(v, Mapping):
        return tuple(sorted((k, _shape_key(x, k)) for k, x in v.items()))
    if isinstance(v, list):
        if v and all(_is_number(x) for x in v):
            return ("numbers",)
        return tuple(_shape_key(x) for x in v)
    if isinstance(v, str):
        return ("str", v if key == "type" else "")
    return (type(v).__name__,)


def validate(doc: Mapping, schema_name: str = "workspace.json", version: str | None = None) -> None:
    """Validate ``doc`` against pyhf's schema ``schema_name``; raise :class:`SchemaError`.

    Workspaces are validated in two passes with the same schema: the document without its
    modifiers, then each modifier against the schema's modifier definitions (``anyOf`` of the
    seven types), once per distinct shape. Validating a published workspace with hundreds of
    thousands of modifiers in one pass takes minutes; this takes a fraction of a second.
    """
    version = str(version or (doc.get("version") if isinstance(doc, Mapping) else None) or "1.0.0")
    channels = doc.get("channels") if isinstance(doc, Mapping) else None
    if schema_name != "workspace.json" or not isinstance(channels, list):
        _raise(jsonschema.exceptions.best_match(_validator(version, schema_name).iter_errors(_skeleton(doc))), "", version, schema_name)
        return
    stripped = dict(doc)
    stripped["channels"] = []
    modifiers: list[tuple[str, Any]] = []
    for ci, c in enumerate(channels):
        if isinstance(c, Mapping) and isinstance(c.get("samples"), list):
            c = dict(c)
            samples = []
            for si, smp in enumerate(c["samples"]):
                if isinstance(smp, Mapping) and isinstance(smp.get("modifiers"), list):
                    modifiers += [(f"/channels/{ci}/samples/{si}/modifiers/{mi}", m) for mi, m in enumerate(smp["modifiers"])]
                    smp = {**smp, "modifiers": []}
                samples.append(smp)
            c["samples"] = samples
        stripped["channels"].append(c)
    _raise(jsonschema.exceptions.best_match(_validator(version, schema_name).iter_errors(_skeleton(stripped))), "", version, schema_name)
    mod_validator = _validator(version, "defs.json", "#/definitions/sample/properties/modifiers/items")
    seen: set = set()
    for path, m in modifiers:
        key = _shape_key(m)
        if key in seen:
            continue
        _raise(jsonschema.exceptions.best_match(mod_validator.iter_errors(_skeleton(m))), path, version, schema_name)
        seen.add(key)


# ---------------------------------------------------------------- reading
def _read_json(source: Any, what: str) -> dict:
    """Turn a path, JSON string, dict or pyhf object into a fresh dict."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if isinstance(source, str) and text.lstrip().startswith(("{", "[")):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise WorkspaceError(f"{what} is not valid JSON: {exc}") from None
        path = Path(source)
        if not path.is_file():
            raise WorkspaceError(f"{what} file {str(path)!r} does not exist")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise WorkspaceError(f"{what} file {str(path)!r} is not valid JSON: {exc}") from None
    raise WorkspaceError(f"{what} must be a path, a JSON string, a dict or a pyhf object, got {type(source).__name__}")


def load_patchset(source: Any) -> dict:
    """Read and validate a pyhf PatchSet (path, JSON string, dict or ``pyhf.PatchSet``)."""
    if hasattr(source, "patches") and hasattr(source, "metadata") and not isinstance(source, Mapping):
        doc = {"metadata": source.metadata, "patches": [{"metadata": p.metadata, "patch": p.patch} for p in source.patches], "version": source.version}
    else:
        doc = _read_json(source, "patchset")
    validate(doc, "patchset.json")
    return doc


def _resolve_patch(item: Any) -> tuple[list[dict], str]:
    """Return (list of JSON-patch operations, label) for one entry of ``patches``."""
    # pyhf.patchset.Patch and jsonpatch.JsonPatch both expose `.patch`
    if isinstance(item, jsonpatch.JsonPatch) or (hasattr(item, "patch") and hasattr(item, "metadata") and not isinstance(item, Mapping)):
        return list(item.patch), getattr(item, "name", "patch")
    if isinstance(item, tuple) and len(item) == 2:
        patchset, key = item
        ps = load_patchset(patchset)
        for p in ps["patches"]:
            md = p["metadata"]
            if key == md["name"] or (isinstance(key, (list, tuple)) and list(key) == list(md["values"])):
                return p["patch"], md["name"]
        names = [p["metadata"]["name"] for p in ps["patches"]]
        raise PatchError(f"patch {key!r} not found in the patchset; available: {names[:10]}{' ...' if len(names) > 10 else ''}", path="/patches")
    if isinstance(item, Mapping) and "patch" in item:  # one entry of a PatchSet
        return list(item["patch"]), item.get("metadata", {}).get("name", "patch")
    if isinstance(item, str) and "#" in item and not item.lstrip().startswith("["):
        ps_path, name = item.rsplit("#", 1)
        return _resolve_patch((ps_path, name))
    if isinstance(item, str):
        try:
            item = json.loads(item) if item.lstrip().startswith("[") else json.loads(Path(item).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PatchError(f"could not read JSON patch {item!r}: {exc}") from None
    if isinstance(item, list) and all(isinstance(op, Mapping) for op in item):
        return list(item), "patch"
    raise PatchError(
        f"cannot interpret patch of type {type(item).__name__}; give a list of JSON-patch operations, "
        "a jsonpatch.JsonPatch, a pyhf Patch, (patchset, name) or 'patchset.json#name'"
    )


def _apply_patches(doc: dict, patches: Iterable[Any]) -> dict:
    if isinstance(patches, (str, Mapping, jsonpatch.JsonPatch)) or (isinstance(patches, tuple) and len(patches) == 2 and isinstance(patches[1], str)):
        patches = [patches]
    for k, item in enumerate(patches):
        ops, label = _resolve_patch(item)
        try:
            validate(ops, "jsonpatch.json", version="1.0.0")
        except SchemaError as exc:
            raise PatchError(f"patch {k} ({label}) is not a valid JSON patch: {exc}") from None
        try:
            doc = jsonpatch.JsonPatch(ops).apply(doc)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError) as exc:
            raise PatchError(f"patch {k} ({label}) does not apply to this workspace: {exc}") from None
    return doc


# ---------------------------------------------------------------- semantics
def _finite_nonneg(values: Any, path: str, what: str, *, allow_negative: bool = False) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) or math.isinf(v):
            raise ModelError(f"{what} entry {i} is {v!r}; it must be a finite number", path=f"{path}/{i}")
        if v < 0 and not allow_negative:
            raise ModelError(f"{what} entry {i} is {v}; it must be >= 0", path=f"{path}/{i}")


def _check_semantics(ws: dict) -> None:
    chan_names = [c["name"] for c in ws["channels"]]
    for i, name in enumerate(chan_names):
        if chan_names.index(name) != i:
            raise ModelError(f"duplicate channel name {name!r} (also channel {chan_names.index(name)})", path=f"/channels/{i}/name")
    obs_names = [o["name"] for o in ws["observations"]]
    for i, name in enumerate(obs_names):
        if obs_names.index(name) != i:
            raise ModelError(f"duplicate observation name {name!r}", path=f"/observations/{i}/name")
    meas_names = [m["name"] for m in ws["measurements"]]
    for i, name in enumerate(meas_names):
        if meas_names.index(name) != i:
            raise ModelError(f"duplicate measurement name {name!r}", path=f"/measurements/{i}/name")
    obs = {o["name"]: (i, o["data"]) for i, o in enumerate(ws["observations"])}
    for i, o in enumerate(ws["observations"]):
        _finite_nonneg(o["data"], f"/observations/{i}/data", f"observed count of channel {o['name']!r}")
    for ci, ch in enumerate(ws["channels"]):
        cname = ch["name"]
        if cname not in obs:
            raise ModelError(f"channel {cname!r} has no entry in /observations", path=f"/channels/{ci}")
        nbins = len(obs[cname][1])
        snames = [s["name"] for s in ch["samples"]]
        for si, s in enumerate(ch["samples"]):
            sp = f"/channels/{ci}/samples/{si}"
            if snames.index(s["name"]) != si:
                raise ModelError(f"duplicate sample name {s['name']!r} in channel {cname!r}", path=f"{sp}/name")
            if len(s["data"]) != nbins:
                raise ModelError(
                    f"sample {s['name']!r} has {len(s['data'])} bins but channel {cname!r} has {nbins} "
                    f"(observations at /observations/{obs[cname][0]}/data)", path=f"{sp}/data")
            _finite_nonneg(s["data"], f"{sp}/data", f"nominal yield of sample {s['name']!r}")
            for mi, m in enumerate(s["modifiers"]):
                mp = f"{sp}/modifiers/{mi}"
                mtype, d = m["type"], m.get("data")
                label = f"{mtype} modifier {m['name']!r}"
                if mtype in ("shapesys", "staterror"):
                    if len(d) != nbins:
                        raise ModelError(f"{label} has {len(d)} uncertainties but the sample has {nbins} bins", path=f"{mp}/data")
                    _finite_nonneg(d, f"{mp}/data", f"uncertainty of {label}")
                elif mtype == "histosys":
                    for key in ("hi_data", "lo_data"):
                        if len(d[key]) != nbins:
                            raise ModelError(f"{label} {key} has {len(d[key])} bins but the sample has {nbins}", path=f"{mp}/data/{key}")
                        _finite_nonneg(d[key], f"{mp}/data/{key}", f"{label} {key}", allow_negative=True)
                elif mtype == "normsys":
                    for key in ("hi", "lo"):
                        v = d[key]
                        if not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v) or v <= 0:
                            raise ModelError(f"{label} {key} is {v!r}; normsys factors must be finite and > 0", path=f"{mp}/data/{key}")
    # observations of channels that are not in the model are ignored, as pyhf does


def _select_measurement(ws: dict, measurement: str | int | None) -> tuple[int, dict]:
    names = [m["name"] for m in ws["measurements"]]
    if measurement is None:
        idx = 0
    elif isinstance(measurement, int) and not isinstance(measurement, bool):
        if not 0 <= measurement < len(names):
            raise MeasurementError(f"measurement index {measurement} out of range; the workspace has {len(names)} ({names})", path="/measurements")
        idx = measurement
    else:
        if measurement not in names:
            raise MeasurementError(f"no measurement named {measurement!r}; available: {names}", path="/measurements")
        idx = names.index(measurement)
    meas = ws["measurements"][idx]
    poi = meas["config"].get("poi")
    modifier_names = {m["name"] for c in ws["channels"] for s in c["samples"] for m in s["modifiers"]}
    if poi is not None and poi not in modifier_names:
        raise MeasurementError(
            f"POI {poi!r} of measurement {meas['name']!r} is not a parameter of the model "
            f"(no modifier has that name; normfactors: {sorted({m['name'] for c in ws['channels'] for s in c['samples'] for m in s['modifiers'] if m['type'] == 'normfactor'})})",
            path=f"/measurements/{idx}/config/poi")
    pnames = [p["name"] for p in meas["config"].get("parameters", [])]
    for i, n in enumerate(pnames):
        if pnames.index(n) != i:
            raise MeasurementError(f"parameter {n!r} is configured twice", path=f"/measurements/{idx}/config/parameters/{i}")
    return idx, meas


def _normalise_settings(settings: Mapping | None) -> dict:
    out = copy.deepcopy(DEFAULT_MODIFIER_SETTINGS)
    for mtype, cfg in (settings or {}).items():
        if mtype not in _ALLOWED_CODES:
            raise WorkspaceError(f"modifier_settings: {mtype!r} has no interpolation setting (only normsys, histosys)")
        code = cfg.get("interpcode") if isinstance(cfg, Mapping) else cfg
        if code not in _ALLOWED_CODES[mtype]:
            raise WorkspaceError(f"modifier_settings: interpcode {code!r} for {mtype} is not one of {_ALLOWED_CODES[mtype]}")
        out[mtype] = {"interpcode": code}
    return out


def load(
    source: Any,
    *,
    measurement: str | int | None = None,
    patches: Iterable[Any] = (),
    modifier_settings: Mapping | None = None,
) -> Spec:
    """Load a HistFactory workspace, apply patches, validate, and pick a measurement.

    Args:
        source: a path, a JSON string, a dict, a ``pyhf.Workspace`` or an existing :class:`Spec`
            (then ``patches``/``measurement`` are applied on top of its workspace).
        measurement: measurement name or index (default: the first one, like pyhf).
        patches: JSON patches to apply in order. Each is a list of JSON-patch operations,
            a ``jsonpatch.JsonPatch``, a ``pyhf.patchset.Patch``, a PatchSet entry dict,
            a ``(patchset, name_or_values)`` tuple, or the string ``"patchset.json#name"``.
        modifier_settings: pyhf-style interpolation codes, e.g.
            ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}``.

    Returns:
        A :class:`Spec`.

    Raises:
        hf2ppl.errors.WorkspaceError (or a subclass) with the JSON path of the problem.

    Example:
        >>> import hf2ppl
        >>> spec = hf2ppl.load(hf2ppl.example())
        >>> spec.poi
        'mu'
        >>> hf2ppl.load(hf2ppl.example(), measurement="nope")
        Traceback (most recent call last):
        ...
        hf2ppl.errors.MeasurementError: at /measurements: no measurement named 'nope'; available: ['Measurement']
    """
    if isinstance(source, Spec):
        doc = copy.deepcopy(source.workspace)
        if modifier_settings is None:
            modifier_settings = source.modifier_settings
    else:
        doc = _read_json(source, "workspace")
    if "patches" in doc and "channels" not in doc:
        raise WorkspaceError("this is a PatchSet, not a workspace; pass it as patches=[(patchset, name)] to a background-only workspace")
    validate(doc, "workspace.json")
    if patches:
        doc = _apply_patches(doc, patches)
        validate(doc, "workspace.json")
    _check_semantics(doc)
    idx, meas = _select_measurement(doc, measurement)
    return Spec(workspace=doc, measurement=meas, measurement_index=idx, modifier_settings=_normalise_settings(modifier_settings))
