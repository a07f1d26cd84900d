"""Write examples/quickstart.ipynb (and execute it in place with nbclient): ``python examples/make_quickstart.py``.

The notebook is committed executed; tests/test_notebook.py runs it again on every test run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent

cells = [
    ("md", """# hf2ppl quick start: one workspace, the Bayesian and the frequentist answer

On the thesis' 4-bin model (one channel, a signal normfactor `mu`, a histosys `theta` and a normsys
`SF_theta` on the background), then on a real ATLAS likelihood (the staus search, SUSY-2018-04, one
signal point of its HEPData patchset):

1. compile the workspace → sample the posterior with NUTS → ArviZ summary and posterior predictive check;
2. maximum-likelihood fit (pyhf's likelihood) → pulls;
3. CLs and the cross-check: the CLs upper limit next to the Bayesian credible limit, and their figure."""),
    ("code", """import json
import os
import warnings
from pathlib import Path

import arviz as az

import hf2ppl
from hf2ppl import plot

warnings.filterwarnings("ignore", category=FutureWarning)  # ArviZ's note about its coming refactor
# the shared workspaces sit beside the checkout (../shared from the repository root); HF2PPL_SHARED overrides
SHARED = Path(os.environ.get("HF2PPL_SHARED", Path.cwd().resolve().parent.parent / "shared"))
WS4 = SHARED / "workspaces" / "4_bin.json"
print(WS4, WS4.exists())"""),
    ("md", """## 1. Bayesian: constraint terms as priors

`hf2ppl.compile` defaults to `constraints="prior"`: the histosys and normsys parameters get Normal(0, 1)
priors (their constraint terms), the normfactor `mu` a Uniform prior on its bounds [0, 10]."""),
    ("code", """m = hf2ppl.compile(WS4)
print(m)
print(m.priors)
idata = hf2ppl.sample(m, chains=2, draws=500, warmup=500, seed=1, progress=False)
az.summary(idata)"""),
    ("code", """az.plot_ppc(idata, num_pp_samples=100);"""),
    ("md", """## 2. Frequentist: pyhf's likelihood, the fit and its pulls"""),
    ("code", """f = hf2ppl.compile(WS4, constraints="aux")
fit = hf2ppl.fit(f)
print({k: round(v, 4) for k, v in fit.bestfit.items()}, "converged:", fit.converged)
plot.plot_pulls(hf2ppl.pulls(f, fit_result=fit))"""),
    ("code", """plot.plot_postfit(f, fit)"""),
    ("md", """## 3. CLs and the cross-check

`hf2ppl.crosscheck` computes the observed and expected CLs upper limits (as pyhf) and the 95% credible
upper limit of `mu` from NUTS draws of the same workspace with a flat prior on [0, 10], and prints them
side by side. The draws of section 1 are such draws (the default prior of `mu` is Uniform on its bounds
[0, 10]), so they are passed in (`idata=`) instead of sampling again; without it, crosscheck runs NUTS
itself (`poi_prior=` for another prior). Its figure shows the CLs curves with the ±1σ/±2σ bands and, on the right axis, the
posterior density and CDF of `mu`."""),
    ("code", """cls_obs, band = hf2ppl.hypotest(f, 1.0, return_expected_set=True)
print(f"CLs(mu=1): observed {float(cls_obs):.4f}, expected {float(band[2]):.4f}")
r = hf2ppl.crosscheck(m, idata=idata)
print(r)"""),
    ("code", """r.plot()"""),
    ("md", """## A real likelihood: ATLAS staus (SUSY-2018-04)

The background-only workspace and one signal point of its patchset (120 parameters): the fit and a
CLs hypothesis test, as `pyhf cls` would give."""),
    ("code", """real = SHARED / "workspaces" / "real"
staus = hf2ppl.compile(real / "staus_SUSY-2018-04_BkgOnly.json", constraints="aux",
                       patches=[(real / "staus_SUSY-2018-04_patchset.json", "DS_100_1_Staus")])
print(staus)
sfit = hf2ppl.fit(staus)
print(f"mu_SIG = {sfit.bestfit['mu_SIG']:.3f} ± {sfit.uncertainties['mu_SIG']:.3f}, -2lnL = {sfit.twice_nll:.3f}, converged: {sfit.converged}")
cls_obs, band = hf2ppl.hypotest(staus, 1.0, return_expected_set=True)
print(json.dumps({"CLs_obs": float(cls_obs), "CLs_exp": [float(b) for b in band]}))  # what `hf2ppl cls` / `pyhf cls` print"""),
]

nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]

if __name__ == "__main__":
    out = HERE / "quickstart.ipynb"
    if "--no-execute" not in sys.argv:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbf.write(nb, out)
    print(f"wrote {out}")
