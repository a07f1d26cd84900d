"""The documentation runs as written: every ```python block of the pages below, in order, one namespace per
page, in a scratch folder; and the API reference names every public function."""

from __future__ import annotations

import re
import warnings

import pytest
from conftest import ROOT

# docs/bayes.md, docs/cache.md and docs/scan.md belong to the pages' own issues (their tests there)
PAGES = ["README.md", "docs/concepts.md", "docs/figures.md", "docs/from_pyhf.md", "docs/frequentist.md", "docs/model.md", "docs/cli.md",
         "docs/pymc.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: str) -> list[str]:
    return BLOCK.findall((ROOT / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": f"docs:{page}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for i, code in enumerate(blocks(page)):
            exec(compile(code, f"{page}[block {i}]", "exec"), ns)  # noqa: S102 - the documentation's own code


def test_every_page_with_python_has_blocks():
    assert all(blocks(p) for p in PAGES if p not in ("docs/model.md", "docs/cli.md"))


def test_api_reference_covers_the_public_api():
    import hf2ppl
    import hf2ppl.plot

    text = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^### (\w+)$", text, re.M))
    public = {n for n in hf2ppl.__all__ if n not in ("errors", "priors", "HF2PPLError")} | set(hf2ppl.plot.__all__)
    assert public <= documented, sorted(public - documented)
