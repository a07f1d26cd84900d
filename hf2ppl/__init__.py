"""hf2ppl: compile HistFactory JSON workspaces into NumPyro and PyMC model graphs.

Example:
    >>> import hf2ppl
    >>> m = hf2ppl.compile(hf2ppl.example("2_bin_corr.json"), target="numpyro")
    >>> m.par_names
    ['correlated_bkg_uncertainty', 'mu']
    >>> m.logdensity(m.init_params()).shape  # log posterior at the initial point: a JAX scalar
    ()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import errors, priors
from .compiled import CompiledModel
from .errors import HF2PPLError
from .ir import ModelIR, ParameterSet, build
from .workspace import Spec, load, load_patchset

__all__ = [
    "load",
    "load_patchset",
    "example",
    "build",
    "compile",
    "CompiledModel",
    "Spec",
    "ModelIR",
    "ParameterSet",
    "HF2PPLError",
    "errors",
    "priors",
]
__version__ = "0.1.0"

# Inference entry points live in hf2ppl.infer / hf2ppl.reporting and are imported lazily,
# so that `import hf2ppl` stays light.
_LAZY = {
    "fit": "hf2ppl.infer.frequentist",
    "profile": "hf2ppl.infer.frequentist",
    "hypotest": "hf2ppl.infer.frequentist",
    "upper_limit": "hf2ppl.infer.frequentist",
    "significance": "hf2ppl.infer.frequentist",
    "pulls": "hf2ppl.infer.frequentist",
    "impacts": "hf2ppl.infer.frequentist",
    "test_statistic": "hf2ppl.infer.frequentist",
    "asimov_data": "hf2ppl.infer.frequentist",
    "hypotest_fn": "hf2ppl.infer.frequentist",
    "significance_fn": "hf2ppl.infer.frequentist",
    "sample": "hf2ppl.infer.bayes",
    "svi": "hf2ppl.infer.bayes",
    "map_estimate": "hf2ppl.infer.bayes",
    "report": "hf2ppl.reporting",
    "set_cache_dir": "hf2ppl._jaxcache",
    "cache_dir": "hf2ppl._jaxcache",
    "scan": "hf2ppl.scans",
    "ScanResult": "hf2ppl.scans",
    "plot_exclusion": "hf2ppl.plot",
    "crosscheck": "hf2ppl.infer.crosscheck",
    "CrossCheckResult": "hf2ppl.infer.crosscheck",
}
__all__ += list(_LAZY)
# subpackages reachable as attributes after a bare `import hf2ppl` (imported on first access);
# `hf2ppl.infer` brings its frequentist and bayes modules, so `hf2ppl.infer.frequentist.fit` works
_SUBMODULES = {"infer": ("hf2ppl.infer.frequentist", "hf2ppl.infer.bayes"), "plot": ("hf2ppl.plot",),
               "reporting": ("hf2ppl.reporting",), "cli": ("hf2ppl.cli",)}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        for mod in _SUBMODULES[name]:
            importlib.import_module(mod)
        return importlib.import_module(f"hf2ppl.{name}")
    raise AttributeError(f"module 'hf2ppl' has no attribute {name!r}")

TARGETS = ("numpyro", "pymc")


def example(name: str = "2_bin_corr.json") -> str:
    """Path of a workspace bundled with hf2ppl (``2_bin_corr.json``, ``all_modifiers_2channel.json``).

    Example:
        >>> import hf2ppl
        >>> hf2ppl.example().endswith("2_bin_corr.json")
        True
    """
    from importlib import resources

    path = resources.files("hf2ppl") / "examples" / name
    if not path.is_file():
        available = sorted(p.name for p in (resources.files("hf2ppl") / "examples").iterdir() if p.name.endswith(".json"))
        raise errors.WorkspaceError(f"no bundled example {name!r}; available: {available}")
    return str(path)


def compile(
    workspace: Any,
    target: str = "numpyro",
    *,
    constraints: str = "prior",
    priors: Mapping[str, priors.Prior] | None = None,
    dtype: str = "float64",
    **load_kwargs: Any,
) -> CompiledModel:
    """Compile a HistFactory workspace into a model graph for ``target``.

    Args:
        workspace: path, JSON string, dict, ``pyhf.Workspace`` or :class:`Spec`.
        target: ``"numpyro"`` (JAX) or ``"pymc"`` (PyTensor).
        constraints: ``"prior"``: constraint terms become priors (Normal from normal constraints,
            Gamma(aux+1, tau) from shapesys, Uniform(bounds) on free parameters); ``"aux"``: constraint
            terms are auxiliary likelihoods with observed aux data, exactly as pyhf.
        priors: ``{parameter set name: hf2ppl.priors.Prior}`` overrides.
        dtype: ``"float64"`` (default) or ``"float32"``.
        **load_kwargs: ``measurement``, ``patches``, ``modifier_settings``, ``poi_name`` (see :func:`load`;
            ``poi_name=None`` compiles a model without a POI, as pyhf's ``ws.model(poi_name=None)``).

    Returns:
        A compiled model (:class:`~hf2ppl.targets.numpyro.NumPyroModel` or the PyMC one), same attributes for both.

    Example:
        >>> import hf2ppl, pyhf, json
        >>> m = hf2ppl.compile(hf2ppl.example(), constraints="aux")
        >>> ws = pyhf.Workspace(json.load(open(hf2ppl.example())))
        >>> model = ws.model()
        >>> x = model.config.suggested_init()
        >>> bool(abs(float(m.logdensity(x)) - float(model.logpdf(x, ws.data(model))[0])) < 1e-12)
        True
    """
    if target not in TARGETS:
        raise errors.ParameterError(f"target must be one of {TARGETS}, got {target!r}")
    spec = workspace if isinstance(workspace, Spec) and not load_kwargs else load(workspace, **load_kwargs)
    ir = build(spec)
    if target == "numpyro":
        from .targets.numpyro import NumPyroModel

        return NumPyroModel(spec, ir, constraints=constraints, priors=priors, dtype=dtype)
    from .targets.pymc import PyMCModel  # noqa: PLC0415

    return PyMCModel(spec, ir, constraints=constraints, priors=priors, dtype=dtype)
