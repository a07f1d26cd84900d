"""Load, patch and validate HistFactory JSON workspaces. Nothing numerical.

The schema is the one the installed pyhf ships (``pyhf/schemas/<version>``);
hf2ppl keeps no copy of it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
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

__all__ = ["Spec", "load", "load_patchset", "DEFAULT_MODIFIER_SETTINGS", "MEASUREMENT_POI"]

#: pyhf 0.7's default interpolation codes, used when no ``modifier_settings`` are given.
DEFAULT_MODIFIER_SETTINGS: dict[str, dict[str, str]] = {
    "normsys": {"interpcode": "code4"},
    "histosys": {"interpcode": "code4p"},
}
#: The code pyhf's modifier classes fall back to when a ``modifier_settings`` dict omits the type
#: (``pyhf.modifiers.normsys.normsys_combined(interpcode="code1")``, ``histosys_combined(interpcode="code0")``).
_APPLIER_DEFAULT_CODES = {"normsys": "code1", "histosys": "code0"}
_ALLOWED_CODES = {"normsys": ("code1", "code4"), "histosys": ("code0", "code2", "code4p")}


class _MeasurementPOI:
    """Sentinel: "the POI named by the measurement" (the default of :func:`load`'s ``poi_name``)."""

    def __repr__(self) -> str:
        return "MEASUREMENT_POI"

    def __reduce__(self) -> str:  # copies and pickles are the module's one instance
        return "MEASUREMENT_POI"


#: Default of ``poi_name``: take the POI from the measurement's ``config.poi`` (``""`` means none).
MEASUREMENT_POI = _MeasurementPOI()


@dataclass(frozen=True)
class Spec:
    """A validated, patched workspace with its measurement resolved.

    Attributes:
        workspace: the workspace dict after patches (validated against the schema).
        measurement: the selected measurement dict.
        measurement_index: its index in ``workspace["measurements"]``.
        modifier_settings: interpolation codes, resolved for both types
            (``{"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}``).
        poi_name: the parameter of interest: a parameter name, ``None`` for a POI-less model, or
            :data:`MEASUREMENT_POI` (the default) for the measurement's ``config.poi`` (where ``""``
            also means none, as in pyhf). :func:`load` stores the resolved name, so recompiling a
            ``Spec`` (``hf2ppl.compile(model.spec, ...)``) keeps a ``poi_name=`` override.
    """

    workspace: dict
    measurement: dict
    measurement_index: int
    modifier_settings: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_MODIFIER_SETTINGS))
    poi_name: str | None | _MeasurementPOI = MEASUREMENT_POI

    @property
    def measurement_poi(self) -> str | None:
        """The measurement's ``config.poi`` (``None`` for ``""``), whatever ``poi_name`` says."""
        return self.measurement["config"].get("poi") or None

    @property
    def poi(self) -> str | None:
        """The parameter of interest of the model (``None``: no POI)."""
        return self.measurement_poi if self.poi_name is MEASUREMENT_POI else (self.poi_name or None)

    @property
    def poi_from_measurement(self) -> bool:
        """Whether :attr:`poi` is the measurement's own POI (for error paths)."""
        return self.poi_name is MEASUREMENT_POI or self.poi == self.measurement_poi

    @property
    def channels(self) -> list[dict]:
        return self.workspace["channels"]

    @property
    def observations(self) -> dict[str, list[float]]:
        return {o["name"]: o["data"] for o in self.workspace["observations"]}


# ---------------------------------------------------------------- schema
@cache
def _schema_root():
    """pyhf's ``schemas`` folder, found without importing pyhf (``import pyhf`` loads its tensor backends:
    about 1 s of a first ``compile`` in a fresh process)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("pyhf")
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        if (Path(loc) / "schemas").is_dir():
            return Path(loc) / "schemas"
    return resources.files("pyhf") / "schemas"  # e.g. a zipped install: let importlib.resources find it


@cache
def _validator(version: str, schema_name: str, fragment: str = ""):
    """A jsonschema validator for pyhf's ``schema_name`` (optionally a ``#/json/pointer`` fragment of it)."""
    base = _schema_root() / version
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
    base = _schema_root()
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


# ---------------------------------------------------------------- numbers and nesting
class _HugeInt(float):
    """A JSON integer literal with more digits than Python will convert (``sys.get_int_max_str_digits``).

    It reads as ``±inf`` (no float holds it), so the finite-number checks reject it with its JSON path
    instead of ``json.loads`` failing with a ValueError that names no path.
    """

    ndigits: int

    def __new__(cls, literal: str):
        obj = super().__new__(cls, "-inf" if literal.startswith("-") else "inf")
        obj.ndigits = len(literal.lstrip("-"))
        return obj

    def __repr__(self) -> str:
        return f"an integer of {self.ndigits} digits"

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (_HugeInt, (("-" if self < 0 else "") + "9" * self.ndigits,))


def _parse_int(literal: str) -> int | float:
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    return _HugeInt(literal) if limit and len(literal.lstrip("-")) > limit else int(literal)


def _loads(text: str) -> Any:
    return json.loads(text, parse_int=_parse_int)


def _number_problem(v: Any) -> str | None:
    """Why ``v`` is not a finite number a float can hold (``None`` if it is one)."""
    if not _is_number(v):
        return f"is {v!r}, not a number"
    if isinstance(v, _HugeInt):
        return f"is {v!r}, too large for a float"
    if isinstance(v, int):
        try:
            float(v)
        except OverflowError:
            return f"is an integer of about {int(v.bit_length() * 0.30103) + 1} digits, too large for a float"
        return None
    if math.isnan(v) or math.isinf(v):
        return f"is {v!r}; it must be a finite number"
    return None


def as_float(v: Any, path: str, what: str, *, allow_inf: bool = False) -> float:
    """``float(v)`` for a JSON number at ``path``, or a :class:`ModelError` naming the path.

    Rejects non-numbers, NaN, integers too large for a float and (unless ``allow_inf``) infinities.
    """
    if allow_inf and isinstance(v, float) and not isinstance(v, _HugeInt) and math.isinf(v):
        return float(v)
    problem = _number_problem(v)
    if problem is not None:
        raise ModelError(f"{what} {problem}", path=path)
    return float(v)


#: How many levels of a too-deeply nested document an error path shows.
_SHOWN_DEPTH = 32
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def _deepest_in_text(text: str) -> tuple[int, tuple, bool]:
    """(depth, first path components, is_cycle) of the most deeply nested container of a JSON text.

    A regex scan, no recursion, so it works on documents ``json.loads`` cannot read.
    """
    stack: list[list] = []  # per open container: [is_object, current key or index]
    best, best_path, last = 0, (), None
    for m in _TOKEN.finditer(text):
        t = m.group()
        if t[0] == '"':
            last = t
        elif t in "[{":
            if len(stack) + 1 > best:
                best, best_path = len(stack) + 1, tuple(e[1] for e in stack[:_SHOWN_DEPTH])
            stack.append([t == "{", None if t == "{" else 0])
        elif t in "]}":
            if stack:
                stack.pop()
        elif stack and t == "," and not stack[-1][0]:
            stack[-1][1] += 1
        elif stack and t == ":" and stack[-1][0] and last is not None:
            try:
                stack[-1][1] = json.loads(last)
            except ValueError:
                stack[-1][1] = last.strip('"')
    return best, best_path, False


def _deepest_in_object(doc: Any) -> tuple[int, tuple, bool]:
    """(depth, first path components, is_cycle) of the most deeply nested container of a Python object."""
    def children(node):
        if isinstance(node, Mapping):
            return iter(node.items())
        if isinstance(node, (list, tuple)):
            return iter(enumerate(node))
        return None

    stack = [iter(((None, doc),))]
    keys: list = []
    ids: list[int] = []  # ids of the containers on the current path, and as a set
    on_path: set[int] = set()
    seen: set[int] = set()
    best, best_path = 0, ()
    while stack:
        for key, node in stack[-1]:
            it = children(node)
            if it is None:
                continue
            if id(node) in on_path:
                return len(keys) + 1, tuple(keys[1:] + [key])[:_SHOWN_DEPTH], True
            if id(node) in seen:
                continue
            seen.add(id(node))
            keys.append(key)
            ids.append(id(node))
            on_path.add(id(node))
            stack.append(it)
            if len(keys) > best:
                best, best_path = len(keys), tuple(keys[1:_SHOWN_DEPTH + 1])
            break
        else:
            stack.pop()
            if keys:
                keys.pop()
                on_path.discard(ids.pop())
    return best, best_path, False


def _nesting_error(what: str, *sources: Any) -> WorkspaceError | None:
    """The error for a RecursionError while reading ``sources``, or ``None`` if none is deeply nested."""
    found = []
    for src in sources:
        if isinstance(src, Spec):
            src = src.workspace
        text = None
        if isinstance(src, str) and src.lstrip().startswith(("{", "[")):
            text = src
        elif isinstance(src, (str, os.PathLike)):
            try:
                text = Path(src).read_text(errors="replace") if Path(src).is_file() else None
            except (OSError, ValueError):
                text = None
        found.append(_deepest_in_text(text) if text is not None else _deepest_in_object(src))
    depth, parts, cycle = max(found, key=lambda f: (f[2], f[0]), default=(0, (), False))
    if cycle:
        return WorkspaceError(f"the {what} contains itself here (a reference cycle); JSON documents are trees", path=_pointer(parts))
    if depth <= _SHOWN_DEPTH:
        return None
    return WorkspaceError(
        f"the {what} is nested {depth} levels deep (the path shows the first {len(parts)}), deeper than Python can "
        "read; HistFactory documents need fewer than 10 levels", path=_pointer(parts))


def _guard_nesting(fn, what: str, *sources: Any):
    """Run ``fn()``; turn a RecursionError caused by deeply nested (or cyclic) input into a WorkspaceError."""
    try:
        return fn()
    except RecursionError:
        err = _nesting_error(what, *sources)
        if err is None:
            raise
    raise err


# ---------------------------------------------------------------- reading
def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _read_json(source: Any, what: str) -> dict:
    """Turn a path, JSON string, dict or pyhf object into a fresh dict."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if isinstance(source, str) and text.lstrip().startswith(("{", "[")):
            try:
                return _loads(text)
            except ValueError as exc:  # JSONDecodeError and friends
                raise WorkspaceError(f"{what} is not valid JSON: {_short(str(exc))}") from None
        path = Path(source)
        shown = _short(repr(str(path)))
        try:
            exists = path.is_file()
            text = path.read_text() if exists else ""
        except OSError as exc:
            raise WorkspaceError(f"{what} file {shown} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise WorkspaceError(f"{what} file {shown} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        except ValueError as exc:  # e.g. an embedded NUL in the name
            raise WorkspaceError(f"{what} file {shown} cannot be read: {exc}") from None
        if not exists:
            raise WorkspaceError(f"{what} file {shown} does not exist")
        try:
            return _loads(text)
        except ValueError as exc:
            raise WorkspaceError(f"{what} file {shown} is not valid JSON: {_short(str(exc))}") from None
    raise WorkspaceError(f"{what} must be a path, a JSON string, a dict or a pyhf object, got {type(source).__name__}")


def load_patchset(source: Any) -> dict:
    """Read and validate a pyhf PatchSet (path, JSON string, dict or ``pyhf.PatchSet``)."""
    return _guard_nesting(lambda: _load_patchset(source), "patchset", source)


def _load_patchset(source: Any) -> dict:
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
        md = item.get("metadata")
        name = md.get("name", "patch") if isinstance(md, Mapping) else "patch"
        if not isinstance(item["patch"], list):
            raise PatchError(f"PatchSet entry {name!r}: 'patch' must be a list of JSON-patch operations, "
                             f"got {type(item['patch']).__name__}", path="/patch")
        return list(item["patch"]), name
    if isinstance(item, str) and "#" in item and not item.lstrip().startswith("["):
        ps_path, name = item.rsplit("#", 1)
        return _resolve_patch((ps_path, name))
    if isinstance(item, str):
        shown = _short(repr(item))
        try:
            text = item if item.lstrip().startswith("[") else Path(item).read_text()
            item = _guard_nesting(lambda: _loads(text), "JSON patch", text)
        except OSError as exc:
            raise PatchError(f"could not read JSON patch {shown}: {exc.strerror or exc}") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NUL in a file name
            raise PatchError(f"could not read JSON patch {shown}: {_short(str(exc))}") from None
    if isinstance(item, list) and all(isinstance(op, Mapping) for op in item):
        return list(item), "patch"
    raise PatchError(
        f"cannot interpret patch of type {type(item).__name__}; give a list of JSON-patch operations, "
        "a jsonpatch.JsonPatch, a pyhf Patch, (patchset, name) or 'patchset.json#name'"
    )


def _apply_patches(doc: dict, patches: Iterable[Any]) -> dict:
    if isinstance(patches, (str, Mapping, jsonpatch.JsonPatch)) or (isinstance(patches, tuple) and len(patches) == 2 and isinstance(patches[1], str)):
        patches = [patches]
    if not isinstance(patches, Iterable):
        raise PatchError(f"patches must be a list of patches, got {type(patches).__name__}")
    for k, item in enumerate(patches):
        ops, label = _resolve_patch(item)
        try:
            validate(ops, "jsonpatch.json", version="1.0.0")
        except SchemaError as exc:
            raise PatchError(f"patch {k} ({label}) is not a valid JSON patch: {exc}") from None
        try:
            doc = jsonpatch.JsonPatch(ops).apply(doc)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError, ValueError):
            _raise_failing_op(doc, ops, k, label)
    return doc


def _cow_copy(doc: dict, ops: list) -> dict:
    """A copy of ``doc`` in which every container on the paths of ``ops`` (``path`` and ``from``) is copied
    and everything else shared: applying ``ops`` in place to it leaves ``doc`` untouched (a deep copy of a
    published workspace costs more than the fit of a signal point)."""
    root = dict(doc)
    copied = {id(root)}
    for op in ops:
        for key in ("path", "from"):
            p = op.get(key) if isinstance(op, Mapping) else None
            if not isinstance(p, str) or not p.startswith("/"):
                continue
            node = root
            for tok in p.split("/")[1:-1]:
                tok = tok.replace("~1", "/").replace("~0", "~")
                try:
                    k = int(tok) if isinstance(node, list) else tok
                    child = node[k]
                except (ValueError, KeyError, IndexError, TypeError):
                    break  # the operation fails when applied, with its own error
                if isinstance(child, (dict, list)) and id(child) not in copied:
                    child = dict(child) if isinstance(child, dict) else list(child)
                    copied.add(id(child))
                    node[k] = child
                node = child
    return root


def load_patched(base: dict, ops: list, label: str = "patch", *, measurement: str | int | None = None,
                 modifier_settings: Mapping | None = None, poi_name: str | None | _MeasurementPOI = MEASUREMENT_POI) -> Spec:
    """:func:`load` of ``base`` with one patch ``ops`` applied, for scans over many patches: ``base`` (a dict,
    already validated) is not copied, only the containers the patch touches; the result is validated as
    :func:`load` does (:class:`PatchError` names the patch ``label`` and the failing operation)."""
    try:
        validate(ops, "jsonpatch.json", version="1.0.0")
    except SchemaError as exc:
        raise PatchError(f"patch {label!r} is not a valid JSON patch: {exc}") from None
    doc = _cow_copy(base, ops)
    try:
        doc = jsonpatch.JsonPatch(ops).apply(doc, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError, ValueError):
        _raise_failing_op(copy.deepcopy(base), ops, 0, label)
    validate(doc, "workspace.json")
    return _spec(doc, measurement, modifier_settings, poi_name)


def _raise_failing_op(doc: dict, ops: list[dict], k: int, label: str) -> None:
    """Apply ``ops`` one at a time to find the one that fails; raise a PatchError at its target path."""
    for j, op in enumerate(ops):
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError, TypeError, ValueError) as exc:
            raise PatchError(f"patch {k} ({label}), operation {j} ({op.get('op')!r}), does not apply to this workspace: "
                             f"{_short(str(exc), 160)}", path=op.get("path") or "/") from None
    raise PatchError(f"patch {k} ({label}) does not apply to this workspace")  # pragma: no cover - ops applied one by one


# ---------------------------------------------------------------- semantics
def _finite_nonneg(values: Any, path: str, what: str, *, allow_negative: bool = False) -> None:
    try:  # fast path; then find the culprit
        ok = all(math.isfinite(v) for v in values) and (allow_negative or not values or min(values) >= 0)
    except (OverflowError, TypeError, ValueError):  # an integer too large for a float, a non-number
        ok = False
    if ok:
        return
    for i, v in enumerate(values):
        problem = _number_problem(v)
        if problem is not None:
            raise ModelError(f"{what} entry {i} {problem}", path=f"{path}/{i}")
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
                        problem = _number_problem(v) or (None if v > 0 else f"is {v!r}")
                        if problem is not None:
                            raise ModelError(f"{label} {key} {problem}; normsys factors must be finite and > 0", path=f"{mp}/data/{key}")
    # observations of channels that are not in the model are ignored, as pyhf does


def _select_measurement(ws: dict, measurement: str | int | None) -> tuple[int, dict]:
    names = [m["name"] for m in ws["measurements"]]
    if measurement is None:
        idx = 0
    elif isinstance(measurement, int) and not isinstance(measurement, bool):
        if not 0 <= measurement < len(names):
            shown = measurement if abs(measurement) < 10**12 else "(a huge number)"
            raise MeasurementError(f"measurement index {shown} out of range; the workspace has {len(names)} ({names})", path="/measurements")
        idx = measurement
    else:
        if measurement not in names:
            raise MeasurementError(f"no measurement named {_short(repr(measurement))}; available: {names}", path="/measurements")
        idx = names.index(measurement)
    meas = ws["measurements"][idx]
    pnames = [p["name"] for p in meas["config"].get("parameters", [])]
    for i, n in enumerate(pnames):
        if pnames.index(n) != i:
            raise MeasurementError(f"parameter {n!r} is configured twice", path=f"/measurements/{idx}/config/parameters/{i}")
    return idx, meas


def _resolve_poi(ws: dict, idx: int, meas: dict, poi_name: Any) -> str | None:
    """The POI as pyhf's ``Workspace.model(poi_name=...)`` resolves it (``""`` and ``None``: no POI)."""
    modifiers = [m for c in ws["channels"] for s in c["samples"] for m in s["modifiers"]]
    names = {m["name"] for m in modifiers}
    normfactors = sorted({m["name"] for m in modifiers if m["type"] == "normfactor"})
    if poi_name is MEASUREMENT_POI:
        poi = meas["config"].get("poi") or None
        if poi is not None and poi not in names:
            raise MeasurementError(
                f"POI {poi!r} of measurement {meas['name']!r} is not a parameter of the model (no modifier has that name; "
                f"normfactors: {normfactors}); for a background-only workspace pass poi_name=None to compile it without a "
                "POI (as pyhf's ws.model(poi_name=None)), or poi_name='<parameter>' to choose another",
                path=f"/measurements/{idx}/config/poi")
        return poi
    if poi_name is None or poi_name == "":
        return None
    if not isinstance(poi_name, str):
        raise MeasurementError(f"poi_name must be a parameter name (str) or None, got {type(poi_name).__name__}")
    if poi_name not in names:
        raise MeasurementError(f"poi_name {_short(repr(poi_name))} is not a parameter of the model (no modifier has that name; "
                               f"normfactors: {normfactors})")
    return poi_name


def _normalise_settings(settings: Mapping | None) -> dict:
    """Resolve ``modifier_settings`` exactly as pyhf 0.7 does.

    ``None`` (not given) means pyhf's defaults, normsys ``code4`` and histosys ``code4p``. A dict
    *replaces* those defaults: pyhf passes ``modifier_settings.get(type, {})`` as keyword arguments
    to the modifier class, whose own default applies to a type the dict omits (or whose entry has
    no ``"interpcode"``): normsys ``code1``, histosys ``code0``. So ``{"normsys": {"interpcode":
    "code4"}}`` gives histosys ``code0``, not ``code4p``. As a shorthand, an entry may also be the
    code itself (``{"histosys": "code2"}``); pyhf does not accept that.
    """
    if settings is None:
        return copy.deepcopy(DEFAULT_MODIFIER_SETTINGS)
    if not isinstance(settings, Mapping):
        raise WorkspaceError("modifier_settings must be a dict like {'normsys': {'interpcode': 'code4'}, "
                             f"'histosys': {{'interpcode': 'code4p'}}}}, got {type(settings).__name__}")
    out = {mtype: {"interpcode": code} for mtype, code in _APPLIER_DEFAULT_CODES.items()}
    for mtype, cfg in settings.items():
        if mtype not in _ALLOWED_CODES:
            raise WorkspaceError(f"modifier_settings: {_short(repr(mtype))} has no interpolation setting (only normsys, histosys)")
        if isinstance(cfg, Mapping):
            extra = sorted(str(k) for k in cfg if k != "interpcode")
            if extra:
                raise WorkspaceError(f"modifier_settings: {mtype} takes only 'interpcode', got {extra}")
            code = cfg.get("interpcode", _APPLIER_DEFAULT_CODES[mtype])
        elif isinstance(cfg, str):
            code = cfg
        else:
            raise WorkspaceError(f"modifier_settings: the {mtype} entry must be a dict like {{'interpcode': "
                                 f"{_ALLOWED_CODES[mtype][-1]!r}}}, got {type(cfg).__name__}")
        if not isinstance(code, str) or code not in _ALLOWED_CODES[mtype]:
            raise WorkspaceError(f"modifier_settings: interpcode {_short(repr(code))} for {mtype} is not one of {_ALLOWED_CODES[mtype]}")
        out[mtype] = {"interpcode": code}
    return out


def load(
    source: Any,
    *,
    measurement: str | int | None = None,
    patches: Iterable[Any] = (),
    modifier_settings: Mapping | None = None,
    poi_name: str | None | _MeasurementPOI = MEASUREMENT_POI,
) -> Spec:
    """Load a HistFactory workspace, apply patches, validate, and pick a measurement.

    Args:
        source: a path, a JSON string, a dict, a ``pyhf.Workspace`` or an existing :class:`Spec`
            (then ``patches``/``measurement`` are applied on top of its workspace; its measurement,
            modifier settings and POI are kept unless given again).
        measurement: measurement name or index (default: the first one, like pyhf).
        patches: JSON patches to apply in order. Each is a list of JSON-patch operations,
            a ``jsonpatch.JsonPatch``, a ``pyhf.patchset.Patch``, a PatchSet entry dict,
            a ``(patchset, name_or_values)`` tuple, or the string ``"patchset.json#name"``.
        modifier_settings: interpolation codes, read exactly as pyhf reads them: not given means
            normsys ``code4``, histosys ``code4p``; a dict replaces both, and a type it leaves out
            gets pyhf's per-modifier default (normsys ``code1``, histosys ``code0``), e.g.
            ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code2"}}``.
        poi_name: the parameter of interest, as pyhf's ``ws.model(poi_name=...)``: by default the
            measurement's ``config.poi`` (``""`` there means none); ``None`` for a model without a
            POI (e.g. a background-only workspace whose POI is a signal normfactor that only the
            patches add); or the name of any scalar parameter.

    Returns:
        A :class:`Spec`.

    Raises:
        hf2ppl.errors.WorkspaceError (or a subclass) with the JSON path of the problem.

    Example:
        >>> import hf2ppl
        >>> spec = hf2ppl.load(hf2ppl.example())
        >>> spec.poi
        'mu'
        >>> print(hf2ppl.load(hf2ppl.example(), poi_name=None).poi)
        None
        >>> hf2ppl.load(hf2ppl.example(), measurement="nope")
        Traceback (most recent call last):
        ...
        hf2ppl.errors.MeasurementError: at /measurements: no measurement named 'nope'; available: ['Measurement']
    """
    sources = (source, patches)
    return _guard_nesting(lambda: _load(source, measurement, patches, modifier_settings, poi_name), "workspace", *sources)


def _load(source: Any, measurement: Any, patches: Any, modifier_settings: Any, poi_name: Any) -> Spec:
    if isinstance(source, Spec):
        doc = copy.deepcopy(source.workspace)
        if modifier_settings is None:
            modifier_settings = source.modifier_settings
        if measurement is None:  # keep the Spec's measurement and POI
            measurement = source.measurement["name"]
            if poi_name is MEASUREMENT_POI:
                poi_name = source.poi_name
    else:
        doc = _read_json(source, "workspace")
    if isinstance(doc, Mapping) and "patches" in doc and "channels" not in doc:
        raise WorkspaceError("this is a PatchSet, not a workspace; pass it as patches=[(patchset, name)] to a background-only workspace")
    validate(doc, "workspace.json")
    if patches:
        doc = _apply_patches(doc, patches)
        validate(doc, "workspace.json")
    return _spec(doc, measurement, modifier_settings, poi_name)


def _spec(doc: dict, measurement: Any, modifier_settings: Any, poi_name: Any) -> Spec:
    """The Spec of a validated workspace document: semantic checks, measurement, settings, POI."""
    _check_semantics(doc)
    idx, meas = _select_measurement(doc, measurement)
    poi = _resolve_poi(doc, idx, meas, poi_name)
    return Spec(workspace=doc, measurement=meas, measurement_index=idx, modifier_settings=_normalise_settings(modifier_settings), poi_name=poi)
