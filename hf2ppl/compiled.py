"""The compiled-model base class shared by every target (same attributes everywhere)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import priors as _priors
from .errors import ParameterError
from .ir import ModelIR, ParameterSet
from .workspace import Spec

__all__ = ["CompiledModel"]


class CompiledModel:
    """A workspace compiled for one target.

    Attributes:
        spec: the validated workspace (:class:`~hf2ppl.workspace.Spec`).
        ir: the backend-neutral :class:`~hf2ppl.ir.ModelIR`.
        target: ``"numpyro"`` or ``"pymc"``.
        constraints: ``"prior"`` (Bayesian priors from aux data) or ``"aux"`` (pyhf's auxiliary likelihood).
        priors: the prior of every parameter set with free components (``"prior"`` mode; empty in ``"aux"`` mode).
        par_names: flat parameter names in pyhf's order (``"name[i]"`` for vector sets).
        parameters: the :class:`~hf2ppl.ir.ParameterSet` metadata, in order.
        data: observed main counts by channel.
        auxdata: the auxiliary data vector (pyhf order).
        poi_name / poi_index: the parameter of interest and its flat index.
    """

    target: str = ""

    def __init__(self, spec: Spec, ir: ModelIR, constraints: str = "prior", priors: Mapping | None = None, dtype: str = "float64"):
        if constraints not in ("prior", "aux"):
            raise ParameterError(f"constraints must be 'prior' or 'aux', got {constraints!r}")
        if dtype not in ("float64", "float32"):
            raise ParameterError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        if constraints == "aux" and priors:
            bad = [n for n, p in priors.items() if n in ir.par_map and ir.par_map[n].constraint is not None]
            if bad:
                raise ParameterError(f"priors given for constrained parameters {bad} in constraints='aux' mode; "
                                     "use constraints='prior' to replace constraint terms by priors")
        self.spec = spec
        self.ir = ir
        self.constraints = constraints
        self.dtype = dtype
        if constraints == "prior":
            self.priors = _priors.resolve(ir, priors)
            plan = self.priors
        else:  # aux mode: constraint terms stay in the likelihood; every free set is flat on its bounds unless given
            user = dict(priors or {})
            self.priors = _priors.resolve(ir, {p.name: user.get(p.name, _priors.Flat()) for p in ir.parameters if not p.all_fixed})
            plan = {k: v for k, v in self.priors.items() if not isinstance(v, _priors.Flat)}
        self._prior_plan = _priors.PriorPlan(ir, plan)
        self._init = ir.init
        self._free = ir.free_index
        self._site_index = {p.name: p.start + np.flatnonzero(p.free_mask) for p in self.free_parameters}

    # ------------------------------------------------------------ metadata
    @property
    def par_names(self) -> list[str]:
        return list(self.ir.par_names)

    @property
    def parameters(self) -> tuple[ParameterSet, ...]:
        return self.ir.parameters

    @property
    def poi_name(self) -> str | None:
        return self.ir.poi_name

    @property
    def poi_index(self) -> int | None:
        return self.ir.poi_index

    @property
    def data(self) -> dict[str, np.ndarray]:
        return self.ir.data_by_channel()

    @property
    def auxdata(self) -> np.ndarray:
        return self.ir.auxdata.copy()

    @property
    def channels(self) -> list[str]:
        return [c.name for c in self.ir.channels]

    @property
    def free_parameters(self) -> tuple[ParameterSet, ...]:
        """Parameter sets with at least one free component (one sample site each)."""
        return tuple(p for p in self.ir.parameters if not p.all_fixed)

    def suggested_init(self) -> np.ndarray:
        return self.ir.init.copy()

    def suggested_bounds(self) -> np.ndarray:
        return self.ir.bounds.copy()

    def suggested_fixed(self) -> np.ndarray:
        return self.ir.fixed.copy()

    def init_params(self) -> dict[str, np.ndarray]:
        """Initial values of the sample sites: {parameter set: value} (free components only)."""
        return {p.name: self._site_value(p, np.asarray(p.inits, float)) for p in self.free_parameters}

    def observed_data(self, include_auxdata: bool = True) -> np.ndarray:
        """Observed data in pyhf's layout (main counts, then auxdata): ``ws.data(model)``."""
        return np.concatenate([self.ir.observed, self.ir.auxdata]) if include_auxdata else self.ir.observed.copy()

    @staticmethod
    def _site_value(p: ParameterSet, full: np.ndarray) -> np.ndarray:
        v = np.asarray(full)[..., p.free_mask]
        return v[..., 0] if p.is_scalar else v

    def __repr__(self) -> str:
        ir = self.ir
        return (f"<{type(self).__name__} target={self.target!r} constraints={self.constraints!r} "
                f"channels={len(ir.channels)} bins={ir.nbins} samples={len(ir.samples)} "
                f"parameters={ir.npars} (free {len(self._free)}) poi={ir.poi_name!r}>")

    # ------------------------------------------------------------ parameter handling (array-library neutral)
    def _param_assignments(self, params: Mapping) -> list[tuple[Any, Any, int]]:
        """Validate a ``{parameter set: value}`` dict; return ``(flat indices, value, n)`` per entry.

        A value has either all components of its set or only the free ones (a sample site's shape);
        every free set must be present. Targets write the values into their own arrays.
        """
        pmap = self.ir.par_map
        out = []
        for name, value in params.items():
            if name not in pmap:
                raise ParameterError(f"unknown parameter {name!r}; parameters: {list(pmap)[:20]}")
            p = pmap[name]
            n = int(np.prod(np.shape(value)))
            if n == p.size:
                out.append((p.slice, value, n))
            elif n == p.n_free:
                out.append((self._site_index[name], value, n))
            else:
                raise ParameterError(f"parameter {name!r} got {n} values; it has {p.size} components ({p.n_free} free)")
        missing = [p.name for p in self.free_parameters if p.name not in params]
        if missing:
            raise ParameterError(f"params lacks free parameters {missing[:10]}; give every free parameter set or a flat array")
        return out

    def _check_flat(self, shape: tuple) -> None:
        if tuple(shape[-1:]) != (self.ir.npars,):
            raise ParameterError(f"flat params must have {self.ir.npars} entries (par_names order), got shape {tuple(shape)}")

    def _split_data(self, data: Any):
        """Return (main, aux) arrays from None / pyhf layout / main only / dict by channel."""
        if data is None:
            return None, None
        if isinstance(data, Mapping):
            missing = [c.name for c in self.ir.channels if c.name not in data]
            if missing:
                raise ParameterError(f"data dict lacks channels {missing}")
            main = np.concatenate([np.asarray(data[c.name], float).reshape(-1) for c in self.ir.channels])
            return main, None
        n = np.shape(data)[-1]
        B, A = self.ir.nbins, self.ir.auxdata.shape[0]
        if n == B + A and A:
            return data[..., :B], data[..., B:]
        if n == B:
            return data, None
        raise ParameterError(f"data has {n} entries; expected {B} (main) or {B + A} (main + auxdata, pyhf layout)")
