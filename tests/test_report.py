"""hf2ppl.report: a self-contained HTML page (or a folder) with diagnostics, summary, traces, corner, PPC
(the Diagnostics section's warnings, ratios and overlay: tests/test_report_diagnostics.py)."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings

import numpy as np
import pytest
from conftest import WORKSPACES

import hf2ppl

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def model():
    return hf2ppl.compile(json.loads((WORKSPACES / "all_modifiers_2channel.json").read_text()))


def fake_idata(m, n_div: int):
    """InferenceData from prior draws (no sampler needed) with ``n_div`` divergences flagged."""
    from hf2ppl.infer.idata import assemble, draw_prior

    rng = np.random.default_rng(0)
    x = draw_prior(m, 800, rng).reshape(2, 400, -1)
    div = np.zeros((2, 400), bool)
    div.flat[:n_div] = True
    return assemble(m, x, sample_stats={"diverging": div, "lp": rng.normal(size=(2, 400))}, sampler="test", prior=False)


def images(page: str) -> list[np.ndarray]:
    import matplotlib.image as mpimg

    out = []
    for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        raw = base64.b64decode(b64)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(mpimg.imread(io.BytesIO(raw), format="png"))
    return out


def test_report_html_self_contained(model, tmp_path):
    idata = fake_idata(model, n_div=3)
    out = hf2ppl.report(idata, model, tmp_path / "r.html")
    page = out.read_text()
    # self-contained: every image is embedded, nothing is loaded from elsewhere
    assert not re.findall(r'src="(?!data:)', page)
    imgs = images(page)
    # trace + corner + one PPC per channel + the prior-vs-posterior overlay
    assert len(imgs) == 3 + len(model.channels)
    for im in imgs:
        assert im.shape[0] > 100 and im.shape[1] > 100
        assert np.std(im[..., :3]) > 0.01  # not blank
    for col in ("r_hat", "ess_bulk", "ess_tail", "mcse_mean"):
        assert col in page
    assert "Warning: 3 divergent transitions" in page
    # prior draws stand in for the posterior: every unconstrained parameter is prior-dominated (ratio ~1), which the
    # report finds from the draws (assemble stores no warnings)
    assert "warnings" not in idata.attrs
    assert "<tr><td>PriorDominatedWarning</td>" in page and "</td><td>report</td></tr>" in page
    for p in model.free_parameters:
        assert p.name in page
    assert model.poi_name in page


def test_report_no_divergence_and_folder(model, tmp_path):
    idata = fake_idata(model, n_div=0)
    out = hf2ppl.report(idata, model, tmp_path / "rep")
    assert out.name == "index.html"
    page = out.read_text()
    assert "No divergent transitions" in page and not re.search(r"Warning: \d+ divergent", page)
    files = {f.name for f in (tmp_path / "rep").iterdir()}
    assert {"trace.png", "corner.png", "prior_posterior.png", "summary.csv", "index.html"} <= files
    assert '<img alt="prior vs posterior overlay" src="prior_posterior.png"/>' in page
    assert sum(f.startswith("ppc_") for f in files) == len(model.channels)


def test_report_on_sampled_posterior(tmp_path):
    m = hf2ppl.compile(json.loads((WORKSPACES / "2_bin_corr.json").read_text()))
    idata = hf2ppl.sample(m, chains=2, draws=200, warmup=200, seed=0)
    page = hf2ppl.report(idata, m, tmp_path / "corr.html").read_text()
    assert len(images(page)) == 4
    assert "correlated_bkg_uncertainty" in page and "mu" in page
    assert "Frequentist" not in page
    # the frequentist section: fit table, pulls, ranking, post-fit, and the cross-check from these draws
    page = hf2ppl.report(idata, m, tmp_path / "both.html", frequentist=True).read_text()
    assert len(images(page)) == 4 + 4
    fit = hf2ppl.fit(m)
    obs, exp = hf2ppl.upper_limit(m)
    assert f"-2 ln L = {fit.twice_nll:.6f}" in page and f"{fit.bestfit['mu']:.6g}" in page
    assert "Cross-check: CLs and credible upper limits on mu" in page and f"{float(obs):.4f}" in page
    assert "prior on mu: Uniform(low=0.0, high=10.0)" in page


def test_hf2ppl_report_stays_the_function_after_module_import(model, tmp_path):
    import hf2ppl.reporting as rep

    idata = fake_idata(model, n_div=0)
    assert hf2ppl.report is rep.report  # importing the module does not shadow the function
    assert hf2ppl.report(idata, model, tmp_path / "a.html").exists()
