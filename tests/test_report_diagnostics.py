"""hf2ppl.report's Diagnostics section: the warnings table (or "none"), posterior/prior width ratios,
non-identified products and the prior-vs-posterior overlay, on a model that is prior-dominated
(all_modifiers_2channel: mu_bkg and shape_cr enter only as a product) and on a well-behaved one (2_bin_corr)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import warnings

import numpy as np
import pytest
from conftest import WORKSPACES

import hf2ppl
from hf2ppl.infer.diagnostics import PRIOR_RATIO_MAX, NonIdentifiedWarning, PosteriorWarning, PriorDominatedWarning

warnings.filterwarnings("ignore", category=FutureWarning)


def section(page: str) -> str:
    """The Diagnostics section of a report page (up to the next h2)."""
    return page.split("<h2>Diagnostics</h2>", 1)[1].split("<h2>", 1)[0]


def ratio_rows(sec: str) -> dict[str, tuple[str, float, float, float, bool]]:
    """{label: (kind, prior sd, posterior sd, ratio, flagged)} from the width-ratio table."""
    table = sec.split("<table class='ratios'>", 1)[1].split("</table>", 1)[0]
    out = {}
    for flag, lab, kind, psd, qsd, r, mark in re.findall(
            r"<tr class='(flag|)'><td>(.*?)</td><td>(unconstrained|constrained)</td><td>.*?</td><td>(.*?)</td>"
            r"<td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table):
        assert (flag == "flag") == (mark == "prior-dominated")
        out[html.unescape(lab)] = (kind, float(psd), float(qsd), float(r), flag == "flag")
    return out


def overlay(page: str) -> np.ndarray | None:
    import matplotlib.image as mpimg

    m = re.search(r'<img alt="prior vs posterior overlay" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return None if m is None else mpimg.imread(io.BytesIO(base64.b64decode(m.group(1))), format="png")


def expected_ratios(idata, m) -> dict[str, tuple[bool, float, float]]:
    """{label: (unconstrained, posterior sd, prior sd)}, computed here from the draws: the prior sd of an
    unconstrained set is that of the uniform distribution on its bounds, of a constrained one the sd of the
    idata's prior group."""
    out = {}
    for p in m.free_parameters:
        post = np.asarray(idata.posterior[p.name].values).reshape(-1, p.n_free)
        prior = np.asarray(idata.prior[p.name].values).reshape(-1, p.n_free)
        bounds = np.asarray(m.ir.par_map[p.name].bounds, float)
        free = m.ir.par_map[p.name].constraint is None
        labs = [p.name] if p.is_scalar else [f"{p.name}[{c}]" for c in idata.posterior[p.name].coords[p.dim].values]
        for i, lab in enumerate(labs):
            psd = (bounds[i, 1] - bounds[i, 0]) / np.sqrt(12.0) if free else prior[:, i].std(ddof=1)
            out[lab] = (free, post[:, i].std(ddof=1), psd)
    return out


def check_ratio_table(rows, idata, m):
    exp = expected_ratios(idata, m)
    assert set(rows) == set(exp)
    for lab, (free, qsd, psd) in exp.items():
        kind, t_psd, t_qsd, t_r, flagged = rows[lab]
        assert kind == ("unconstrained" if free else "constrained")
        assert t_qsd == pytest.approx(qsd, rel=1e-3)
        # exact width for a uniform prior; the prior group's 1000 draws estimate the others to a few %
        assert t_psd == pytest.approx(psd, rel=1e-3 if free else 0.12)
        assert t_r == pytest.approx(t_qsd / t_psd, rel=2e-3, abs=2e-3)
        assert flagged == (free and qsd / psd > PRIOR_RATIO_MAX)


def test_prior_dominated_model(tmp_path):
    m = hf2ppl.compile(json.loads((WORKSPACES / "all_modifiers_2channel.json").read_text()))
    with pytest.warns(PosteriorWarning) as rec:
        idata = hf2ppl.sample(m, chains=2, draws=300, warmup=300, seed=1)
    fired = {type(w.message) for w in rec}
    assert {PriorDominatedWarning, NonIdentifiedWarning} <= fired
    out = hf2ppl.report(idata, m, tmp_path / "am.html")
    page = out.read_text()
    sec = section(page)
    # the warnings table: every warning the sampler stored, each found again by the report from the draws
    stored = list(idata.attrs["warnings"])
    assert f"{len(stored)} warning" in sec and "Warnings: none" not in sec
    for msg in stored:
        cls, _, text = msg.partition(": ")
        assert f"<tr><td>{cls}</td><td class='msg'>{html.escape(text)}</td><td>sampler and report</td></tr>" in sec
    # the ratio table, against sds computed here; the flagged rows are exactly those the warning names
    rows = ratio_rows(sec)
    check_ratio_table(rows, idata, m)
    flagged = sorted((lab for lab, r in rows.items() if r[4]), key=lambda lab: -rows[lab][3])
    assert flagged and all(lab.startswith(("mu_bkg", "shape_cr", "mu")) for lab in flagged)
    dom = next(s for s in stored if s.startswith("PriorDominatedWarning"))
    assert len(flagged) <= 8 and all(f"{lab} (" in dom for lab in flagged)  # the message names up to 8
    # the non-identified products: a table row per pair, corr(log a, log b) computed here
    assert "<h3>Non-identified products</h3>" in sec
    post = idata.posterior
    a = np.log(np.asarray(post["mu_bkg"].values).ravel())
    for lab in post["shape_cr"].coords[post["shape_cr"].dims[2]].values:
        b = np.log(np.asarray(post["shape_cr"].sel({post["shape_cr"].dims[2]: lab}).values).ravel())
        c = np.corrcoef(a, b)[0, 1]
        row = f"<tr><td>mu_bkg</td><td>shape_cr[{html.escape(str(lab))}]</td><td>{c:.3f}</td></tr>"
        assert (row in sec) == (c < -0.9)
    # the overlay of the flagged parameters, embedded and not blank
    assert f"Prior vs posterior: the {len(flagged)} prior-dominated parameter" in sec
    im = overlay(sec)
    assert im is not None and im.shape[0] > 150 and im.shape[1] > 300
    assert np.std(im[..., :3]) > 0.02
    (tmp_path / "overlay.png").write_bytes(base64.b64decode(re.search(
        r'alt="prior vs posterior overlay" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', sec).group(1)))


def test_well_behaved_model_says_none(tmp_path):
    m = hf2ppl.compile(json.loads((WORKSPACES / "2_bin_corr.json").read_text()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorWarning)  # the sampler's checks are silent
        idata = hf2ppl.sample(m, chains=2, draws=1000, warmup=500, seed=0)
    assert "warnings" not in idata.attrs
    page = hf2ppl.report(idata, m, tmp_path / "corr.html").read_text()
    sec = section(page)
    assert "Warnings: none" in sec and "<table class='warnings'>" not in sec
    assert "Non-identified products" not in sec
    rows = ratio_rows(sec)
    check_ratio_table(rows, idata, m)
    assert not any(r[4] for r in rows.values())
    # no parameter flagged: the overlay shows the largest ratios, and says so
    assert "no parameter is prior-dominated; the 2 largest width ratios" in sec
    assert overlay(sec) is not None
    # without the model only the stored warnings can be listed (none), and the report says what it lacks
    sec = section(hf2ppl.report(idata, None, tmp_path / "nomodel.html").read_text())
    assert "Warnings: none stored with the draws" in sec and "<table class='ratios'>" not in sec and overlay(sec) is None

