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
