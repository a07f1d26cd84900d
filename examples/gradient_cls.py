"""The gradient of the expected CLs with respect to the signal yields (the neos use case: optimise an
analysis for its expected sensitivity end to end).

    python examples/gradient_cls.py [workspace.json]

``hf2ppl.hypotest_fn(model, mu)`` is a pure JAX function of the nominal yields (samples × bins); the fits inside
are differentiated implicitly (optimality conditions), so ``jax.grad`` gives d CLs_exp / d yields in one
backward pass. Checked here against central finite differences.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

import hf2ppl

path = sys.argv[1] if len(sys.argv) > 1 else hf2ppl.example("2_bin_corr.json")
m = hf2ppl.compile(path, constraints="aux")
f = hf2ppl.hypotest_fn(m, 1.0)  # nominal (S, B) -> (CLs_obs, CLs_exp[5])
samples = list(m.ir.samples)
i = next(k for k, s in enumerate(samples) if "signal" in s.lower())
nom = jnp.asarray(m.ir.nominal)


def expected_cls(signal):
    return f(nom.at[i].set(signal))[1][2]  # median expected CLs at mu = 1


s0 = nom[i]
value, grad = jax.value_and_grad(expected_cls)(s0)
h = 1e-4 * jnp.maximum(jnp.abs(s0), 1.0)
fd = np.array([(expected_cls(s0.at[b].add(h[b])) - expected_cls(s0.at[b].add(-h[b]))) / (2 * h[b]) for b in range(s0.shape[0])])
print(f"sample {samples[i]!r}, yields {np.round(np.asarray(s0), 4).tolist()}")
print(f"expected CLs(mu=1) = {float(value):.6f}")
print(f"d CLs_exp / d signal yields (jax.grad):  {np.asarray(grad).round(6).tolist()}")
print(f"central finite differences:             {fd.round(6).tolist()}")
assert np.allclose(np.asarray(grad), fd, rtol=1e-3, atol=1e-7), "gradient and finite differences disagree"
# one step of gradient descent on the signal yields lowers the expected CLs (more sensitivity)
step = 0.1 * np.asarray(s0).mean() / max(float(jnp.abs(grad).max()), 1e-12)
print(f"after one gradient step: expected CLs {float(expected_cls(s0 - step * grad)):.6f}")
