"""examples/quickstart.ipynb runs clean, top to bottom, in a fresh kernel (nbclient)."""

from __future__ import annotations

import json

import nbformat
import pytest
from conftest import ROOT, SHARED


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("HF2PPL_SHARED", str(SHARED))
    # a notebook shows figures inline: .ci/run exports MPLBACKEND=Agg, which the kernel would inherit (no images)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    for needle in ("95% CL upper limit on mu", "Bayesian (credible)", "prior on mu: Uniform(low=0.0, high=10.0)", "mu_SIG =", "CLs_obs"):
        assert needle in text, needle
    assert "Traceback" not in text and "FutureWarning" not in "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if "data" in o and "image/png" in o.data]
    assert len(images) >= 4  # PPC, pulls, post-fit, cross-check
    # the staus point's CLs equal the stored pyhf reference (pyhf 0.7.6, numpy + scipy)
    ref = json.loads((ROOT / "tests" / "reference" / "pyhf_reference.json").read_text())["cases"]["staus-DS_100_1_Staus"]["hypotest"]
    ref = ref["numpy_scipy"]
    got = json.loads(next(line for line in text.splitlines() if line.startswith('{"CLs_obs"')))
    assert got["CLs_obs"] == pytest.approx(ref["cls_obs"], abs=1e-5) and got["CLs_exp"] == pytest.approx(ref["cls_exp"], abs=1e-5)
