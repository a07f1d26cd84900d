"""The runnable examples in the core docstrings."""

from __future__ import annotations

import doctest

import pytest

import hf2ppl
import hf2ppl.workspace


@pytest.mark.parametrize("module", [hf2ppl, hf2ppl.workspace], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.attempted > 0
    assert result.failed == 0


def test_import_is_light_and_subpackages_reachable():
    """`import hf2ppl` loads neither JAX nor ArviZ; `hf2ppl.infer.frequentist`, `hf2ppl.plot`, `hf2ppl.crosscheck`
    are reachable from it (imported on first access)."""
    import subprocess
    import sys

    code = ("import sys, hf2ppl; heavy = [m for m in ('jax', 'arviz', 'matplotlib', 'pymc') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert callable(hf2ppl.infer.frequentist.fit) and callable(hf2ppl.infer.bayes.sample); "
            "assert callable(hf2ppl.plot.plot_pulls) and callable(hf2ppl.crosscheck)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
