"""Array namespaces the HistFactory math is written against.

A namespace offers the few functions :mod:`hf2ppl.histfactory` and
:mod:`hf2ppl.interpolation` use; arithmetic, comparisons and integer-array
indexing (``x[idx]``) come from the array types themselves. Targets pick one:
numpy (reference/eager), JAX (NumPyro target), PyTensor (PyMC target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Namespace", "numpy_namespace", "jax_namespace", "pytensor_namespace"]


@dataclass(frozen=True)
class Namespace:
    name: str
    asarray: Callable[..., Any]
    where: Callable[..., Any]
    exp: Callable[..., Any]
    log: Callable[..., Any]
    abs: Callable[..., Any]
    sqrt: Callable[..., Any]
    sum: Callable[..., Any]
    prod: Callable[..., Any]
    concatenate: Callable[..., Any]
    gammaln: Callable[..., Any]
    xlogy: Callable[..., Any]
    tensordot: Callable[..., Any]
    isfinite: Callable[..., Any]
    equal: Callable[..., Any]
    segment_sum: Callable[..., Any]  # segment_sum(values, segment_ids, n): sums of values per id, shape (n,)


def numpy_namespace() -> Namespace:
    import numpy as np
    from scipy import special

    def segment_sum(v, idx, n):
        return np.bincount(idx, weights=v, minlength=n)

    return Namespace("numpy", np.asarray, np.where, np.exp, np.log, np.abs, np.sqrt, np.sum, np.prod,
                     np.concatenate, special.gammaln, special.xlogy, np.tensordot, np.isfinite, np.equal, segment_sum)


def jax_namespace() -> Namespace:
    import jax
    import jax.numpy as jnp
    from jax.scipy import special

    def segment_sum(v, idx, n):
        return jax.ops.segment_sum(v, idx, num_segments=n, indices_are_sorted=True)

    return Namespace("jax", jnp.asarray, jnp.where, jnp.exp, jnp.log, jnp.abs, jnp.sqrt, jnp.sum, jnp.prod,
                     jnp.concatenate, special.gammaln, special.xlogy, jnp.tensordot, jnp.isfinite, jnp.equal, segment_sum)


def pytensor_namespace() -> Namespace:
    import pytensor.tensor as pt

    def xlogy0(x, y):  # x*log(y), 0 where x == 0; plain ops (pytensor's XlogY0 has no JAX dispatch), NaN-free gradient
        zero = pt.eq(x, 0)
        return pt.switch(zero, 0.0, x * pt.log(pt.switch(zero, 1.0, y)))

    def isfinite(x):  # pytensor.tensor has isinf/isnan but no isfinite
        return ~(pt.isinf(x) | pt.isnan(x))

    def segment_sum(v, idx, n):
        return pt.inc_subtensor(pt.zeros((n,), dtype=v.dtype)[idx], v)

    return Namespace("pytensor", pt.as_tensor_variable, pt.switch, pt.exp, pt.log, pt.abs, pt.sqrt, pt.sum, pt.prod,
                     pt.concatenate, pt.gammaln, xlogy0, pt.tensordot, isfinite, pt.eq, segment_sum)
