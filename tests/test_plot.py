"""hf2ppl.plot: every fit figure drawn from one real fit (the brazil band: tests/test_crosscheck.py), saved as PNG, and what it shows checked against the
numbers it was given (and the post-fit stack against pyhf's expected data at pyhf's best fit)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import WORKSPACES

import hf2ppl
from hf2ppl import plot

WS = WORKSPACES / "all_modifiers_2channel.json"
# HF2PPL_FIGURES=dir keeps the PNGs for a look
FIGDIR = os.environ.get("HF2PPL_FIGURES")


@pytest.fixture(scope="module")
def fitted():
    m = hf2ppl.compile(str(WS), constraints="aux")
    fr = hf2ppl.fit(m)
    mu, s = fr.bestfit["mu"], fr.uncertainties["mu"]
    return {"m": m, "fit": fr, "pulls": hf2ppl.pulls(m, fit_result=fr), "impacts": hf2ppl.impacts(m, fit_result=fr),
            "profile": hf2ppl.profile(m, np.linspace(max(0.0, mu - 2.5 * s), mu + 2.5 * s, 21))}


def save(fig, name: str, tmp_path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    out = Path(FIGDIR or tmp_path) / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    im = mpimg.imread(out)
    assert im.shape[0] > 150 and im.shape[1] > 150 and np.std(im[..., :3]) > 0.03  # not blank
    return im


def test_pulls(fitted, tmp_path):
    p = fitted["pulls"]
    fig = plot.plot_pulls(p)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(p.names)
    eb = ax.containers[0]
    x = eb.lines[0].get_xdata()
    np.testing.assert_allclose(x, p.pulls)
    seg = eb.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1, 0] - s[0, 0] for s in seg], 2 * np.asarray(p.constraints))
    save(fig, "pulls", tmp_path)
    fig = plot.plot_pulls(p, exclude=lambda n: n.startswith("staterror"))
    assert not any(t.get_text().startswith("staterror") for t in fig.axes[0].get_yticklabels())


def test_ranking(fitted, tmp_path):
    imp, p = fitted["impacts"], fitted["pulls"]
    fig = plot.plot_ranking(imp, p, top=5)
    ax = fig.axes[0]
    n = min(5, len(imp.names))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(imp.names[:n])
    widths = [[r.get_width() for r in c] for c in ax.containers]
    np.testing.assert_allclose(widths[0], imp.prefit_up[:n])
    np.testing.assert_allclose(widths[2], imp.postfit_up[:n])
    np.testing.assert_allclose(widths[3], imp.postfit_down[:n])
    # ranked: |post-fit impact| decreasing
    mx = np.max(np.abs([widths[2], widths[3]]), axis=0)
    assert np.all(np.diff(mx) <= 1e-12)
    save(fig, "ranking", tmp_path)


def test_correlation(fitted, tmp_path):
    fr = fitted["fit"]
    fig = plot.plot_correlation(fr)
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    free = np.flatnonzero(~fr.fixed)
    np.testing.assert_allclose(shown, fr.correlation[np.ix_(free, free)])
    save(fig, "correlation", tmp_path)
    # pruning keeps exactly the parameters with an off-diagonal |rho| >= threshold
    fig = plot.plot_correlation(fr, threshold=0.3)
    c = fr.correlation[np.ix_(free, free)]
    strong = [fr.par_names[free[i]] for i in range(free.size) if np.max(np.abs(np.delete(c[i], i))) >= 0.3]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == strong


def test_postfit_and_prefit_vs_pyhf(fitted, tmp_path):
    import pyhf

    m, fr = fitted["m"], fitted["fit"]
    fig = plot.plot_postfit(m, fr)
    ws = pyhf.Workspace(json.loads(WS.read_text()))
    pm = ws.model()
    bf = pyhf.infer.mle.fit(ws.data(pm), pm)
    exp = pm.expected_data(bf, include_auxdata=False)
    main_axes = fig.axes[0::2]
    assert len(main_axes) == len(m.channels)
    for ax, ch in zip(main_axes, m.ir.channels):
        # the outline of the stack (the black step) is the total expectation
        step = [s for s in ax.patches if s.get_edgecolor()[:3] == (0, 0, 0) and not s.get_fill()]
        tops = step[0].get_data()[0]
        np.testing.assert_allclose(tops, exp[ch.slice], rtol=2e-4)
        # data points are the observed counts
        np.testing.assert_allclose(ax.containers[0].lines[0].get_ydata(), ws.data(pm)[ch.slice])
    save(fig, "postfit", tmp_path)
    fig = plot.plot_prefit(m)
    exp0 = pm.expected_data(pm.config.suggested_init(), include_auxdata=False)
    for ax, ch in zip(fig.axes[0::2], m.ir.channels):
        step = [s for s in ax.patches if s.get_edgecolor()[:3] == (0, 0, 0) and not s.get_fill()]
        np.testing.assert_allclose(step[0].get_data()[0], exp0[ch.slice], rtol=1e-9)
    save(fig, "prefit", tmp_path)


def test_profile(fitted, tmp_path):
    pr = fitted["profile"]
    fig = plot.plot_profile(pr)
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), pr.delta_twice_nll)
    assert {1.0, 4.0} <= {float(ln.get_ydata()[0]) for ln in fig.axes[0].get_lines()[1:] if len(set(ln.get_ydata())) == 1}
    save(fig, "profile", tmp_path)
