"""The console script: a drop-in for pyhf's where they overlap.

``hf2ppl cls`` is compared with ``pyhf cls`` (pyhf's own click command, run in-process with click's runner) on
every shared workspace: same keys, same layout, values to 1e-5; the real staus point against the stored pyhf
reference (tests/reference/pyhf_reference.json, pyhf 0.7.6 numpy+scipy). The real console script runs in
subprocesses, batched into few invocations; bad input gives one line on stderr, exit 2, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CASE_IDS, CASES, PATCHSET, PATCHSET_BKG, WORKSPACES

from hf2ppl.cli import main

EXE = str(Path(sys.executable).with_name("hf2ppl"))
REAL = WORKSPACES / "real"
STAUS_BKG, STAUS_PS = REAL / "staus_SUSY-2018-04_BkgOnly.json", REAL / "staus_SUSY-2018-04_patchset.json"


def run(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: int = 600, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("HF2PPL_DEBUG", None)
    env.update(env_extra)
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def layout(text: str) -> str:
    """The JSON text with every number replaced by '#': the layout pyhf prints."""
    return re.sub(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", "#", text)


@pytest.fixture(scope="module")
def converged_pyhf():
    """`pyhf cls` always builds a fresh ``scipy_optimizer()`` at its default tolerance (and its ``--optconf
    tolerance=...`` reaches scipy as a string, a pyhf bug); at that tolerance its CLs_exp on SRee_SRmm_SRem_3channel
    is 1.3e-5 off the converged value (pyhf at tolerance 1e-14, pyhf-jax at 1e-13 in tests/reference), which hf2ppl
    matches to 1e-8. So pyhf's CLI runs here with its scipy optimizer converged (tolerance 1e-14), all else as is."""
    import functools

    import pyhf

    tight = functools.partial(pyhf.optimize.scipy_optimizer, tolerance=1e-14)
    mp = pytest.MonkeyPatch()
    mp.setattr(pyhf.optimize, "scipy", tight, raising=False)
    old = pyhf.get_backend()
    yield
    mp.undo()
    pyhf.set_backend(*old)


def pyhf_cls(*args: str) -> str:
    from click.testing import CliRunner
    from pyhf.cli import cli

    res = CliRunner().invoke(cli, ["cls", *args])
    assert res.exit_code == 0, res.output
    return res.output


def hf2ppl_cls(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["cls", *args]) == 0
    return capsys.readouterr().out


def cls_args(case: dict, tmp_path: Path) -> list[str]:
    args = [case["workspace"]]
    for ps, name in case.get("patches", []):
        patch = tmp_path / f"{name}.json"
        assert main(["patchset", "extract", ps, "--name", name, "--output-file", str(patch)]) == 0
        args += ["-p", str(patch)]
    return args


@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=CASE_IDS)
def test_cls_equals_pyhf_cls(case, tmp_path, capsys, converged_pyhf):
    args = cls_args(case, tmp_path)
    variants = [[], ["--test-poi", "0.5", "--test-stat", "q"]] if case["workspace"].endswith("2_bin_corr.json") else [[]]
    for extra in variants:
        ours, ref = hf2ppl_cls(capsys, *args, *extra), pyhf_cls(*args, *extra)
        assert layout(ours) == layout(ref)
        a, b = json.loads(ours), json.loads(ref)
        assert sorted(a) == sorted(b) == ["CLs_exp", "CLs_obs"]
        np.testing.assert_allclose(a["CLs_obs"], b["CLs_obs"], atol=1e-6)
        np.testing.assert_allclose(a["CLs_exp"], b["CLs_exp"], atol=1e-6)


def test_cls_options_output_file_and_pyhf_flags(tmp_path, capsys):
    ws = str(WORKSPACES / "2_bin_corr.json")
    out = tmp_path / "cls.json"
    assert main(["cls", ws, "--output-file", str(out), "--backend", "numpy", "--optimizer", "scipy", "--measurement", "Measurement"]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text()) == json.loads(hf2ppl_cls(capsys, ws))
    # toys: the same numbers as the Python API with pyhf's default 2000 toys
    import hf2ppl

    toys = json.loads(hf2ppl_cls(capsys, ws, "--calctype", "toybased"))
    obs, band = hf2ppl.hypotest(hf2ppl.compile(ws, constraints="aux"), 1.0, calctype="toys", ntoys=2000, return_expected_set=True)
    assert toys["CLs_obs"] == pytest.approx(float(obs)) and toys["CLs_exp"] == pytest.approx([float(v) for v in band])


def test_inspect_fit_limit_json_and_plots(shared_dir, capsys, tmp_path):
    import pyhf

    ws = str(shared_dir / "workspaces" / "all_modifiers_2channel.json")
    assert main(["inspect", ws]) == 0
    out = capsys.readouterr().out
    assert "mu (POI)" in out and "staterror_CR" in out and "constrained_by_poisson" in out and "(*) " in out
    assert main(["inspect", ws, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    pws = pyhf.Workspace(json.loads(Path(ws).read_text()))
    assert [ms["name"] for ms in d["measurements"]] == pws.measurement_names
    assert d["samples"] == pws.samples and [c for c, _ in d["channels"]] == pws.channels

    assert main(["fit", ws, "--json", "--plot", "pulls,corr", "--plot-dir", str(tmp_path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["converged"] and set(d["figures"]) == {"pulls", "corr"}
    assert all((tmp_path / f"{k}.png").stat().st_size > 10_000 for k in ("pulls", "corr"))
    model = pws.model()
    bf = pyhf.infer.mle.fit(pws.data(model), model)
    assert d["twice_nll"] == pytest.approx(float(-2 * model.logpdf(bf, pws.data(model))[0]), abs=1e-6)

    # --level 0.1 is a 90% limit, labelled so, equal to upper_limit(level=0.1)
    ws = str(shared_dir / "workspaces" / "2_bin_corr.json")
    assert main(["limit", ws, "--level", "0.1", "--plot", str(tmp_path / "brazil.png")]) == 0
    out = capsys.readouterr().out
    assert "90% CL upper limit on mu (CLs = 0.1)" in out and "95%" not in out
    assert (tmp_path / "brazil.png").stat().st_size > 10_000


def test_patchset_subcommands_match_pyhf(tmp_path, capsys):
    from click.testing import CliRunner
    from pyhf.cli import cli

    name = json.loads(PATCHSET.read_text())["patches"][0]["metadata"]["name"]
    for args in (["inspect", str(PATCHSET)], ["extract", str(PATCHSET), "--name", name],
                 ["extract", str(PATCHSET), "--name", name, "--with-metadata"], ["apply", str(PATCHSET_BKG), str(PATCHSET), "--name", name],
                 ["verify", str(PATCHSET_BKG), str(PATCHSET)]):
        capsys.readouterr()
        assert main(["patchset", *args]) == 0, args
        ours = capsys.readouterr().out
        ref = CliRunner().invoke(cli, ["patchset", *args])
        assert ref.exit_code == 0
        assert ours == ref.output, args


def test_console_script_stdin_version_real_and_bad_input(tmp_path):
    """The installed console script in subprocesses: stdin, --version, real workspaces, and every kind of bad input."""
    from hf2ppl import __version__

    corr = WORKSPACES / "2_bin_corr.json"
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"hf2ppl {__version__}"
    # stdin: cls and patchset apply (workspace from '-') give what the path gives
    r1, r2 = run("cls", "-", stdin=corr.read_text()), run("cls", str(corr))
    assert r1.returncode == r2.returncode == 0 and r1.stdout == r2.stdout
    name = json.loads(PATCHSET.read_text())["patches"][0]["metadata"]["name"]
    r = run("patchset", "apply", "-", str(PATCHSET), "--name", name, stdin=PATCHSET_BKG.read_text())
    assert r.returncode == 0 and json.loads(r.stdout)["channels"]
    # real/: inspect lists every measurement of the ATLAS workspaces (the staus point's CLs against the stored pyhf
    # reference: tests/test_notebook.py, where the notebook computes it)
    for ws in (REAL / "ewk2L_SUSY-2018-16_BkgOnly.json", STAUS_BKG):
        r = run("inspect", str(ws), "--json")
        assert r.returncode == 0, r.stderr
        assert [m["name"] for m in json.loads(r.stdout)["measurements"]] == [m["name"] for m in json.loads(ws.read_text())["measurements"]]
    r = run("patchset", "inspect", str(STAUS_PS))
    assert r.returncode == 0 and "DS_100_1_Staus" in r.stdout and f"{len(json.loads(STAUS_PS.read_text())['patches'])} patches found" in r.stdout

    bad_input_cases(tmp_path, check_script=True)


def bad_input_cases(tmp_path: Path, check_script: bool = False) -> dict:
    """Bad input: one line on stderr, non-zero exit, no traceback."""
    corr = WORKSPACES / "2_bin_corr.json"
    (tmp_path / "invalid.json").write_text("{not json")
    schema = json.loads(corr.read_text())
    del schema["observations"]
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "badpatch.json").write_text(json.dumps([{"op": "replace", "path": "/channels/7/name", "value": "x"}]))
    cases = {
        "missing file": (["cls", str(tmp_path / "missing.json")], "does not exist"),
        "invalid JSON": (["fit", str(tmp_path / "invalid.json")], "not valid JSON"),
        "schema violation": (["inspect", str(tmp_path / "schema.json")], "observations"),
        "unknown measurement": (["limit", str(corr), "--measurement", "nope"], "nope"),
        "bad patch": (["cls", str(corr), "-p", str(tmp_path / "badpatch.json")], "patch"),
        "unknown patch name": (["patchset", "extract", str(PATCHSET), "--name", "nope"], "nope"),
        "invalid level": (["limit", str(corr), "--level", "1.5"], "--level"),
        "level not a number": (["limit", str(corr), "--level", "abc"], "--level"),
        "bad prior": (["crosscheck", str(corr), "--prior", "Cauchy(0, 1)"], "--prior"),
        "empty stdin": (["cls", "-"], "standard input"),
    }
    for what in ("invalid JSON", "invalid level") if check_script else ():  # the installed script
        args, needle = cases[what]
        r = run(*args, stdin="")
        err = r.stderr.strip()
        assert r.returncode != 0 and "\n" not in err and "Traceback" not in err and needle in err, (what, err)
    return cases


def test_bad_input_one_line_no_traceback(tmp_path, capsys, monkeypatch):
    import io

    cases = bad_input_cases(tmp_path)
    for what, (args, needle) in cases.items():
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        capsys.readouterr()
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse's own errors
            rc = exc.code
        err = capsys.readouterr().err.strip()
        assert rc != 0, what
        assert "\n" not in err and "Traceback" not in err and err.startswith("hf2ppl"), (what, err)
        assert needle in err, (what, err)


def test_console_script_result_subcommands_json(tmp_path):
    """fit, limit and sample through the installed script (started together), --json checked (crosscheck's code
    path runs in the main job's test)."""
    import hf2ppl

    corr = str(WORKSPACES / "2_bin_corr.json")
    cmds = {"fit": ["fit", corr, "--json"], "limit": ["limit", corr, "--json", "--level", "0.1"],
            "sample": ["sample", "-", "--json", "--prior", "Uniform(0, 5)", "--chains", "2", "--draws", "200", "--warmup", "200"]}
    env = {k: v for k, v in os.environ.items() if k != "HF2PPL_DEBUG"}
    procs = {k: subprocess.Popen([EXE, *a], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k, a in cmds.items()}
    out = {}
    for k, p in procs.items():
        so, se = p.communicate(Path(corr).read_text() if k == "sample" else "", timeout=600)
        assert p.returncode == 0, (k, se[-2000:])
        out[k] = json.loads(so)
    m = hf2ppl.compile(corr, constraints="aux")
    fit = hf2ppl.fit(m)
    assert out["fit"]["bestfit"] == pytest.approx(fit.bestfit, abs=1e-6) and out["fit"]["converged"]
    obs, exp = hf2ppl.upper_limit(m, level=0.1)
    assert out["limit"]["observed"] == pytest.approx(float(obs)) and out["limit"]["cl"] == pytest.approx(0.9)
    assert out["limit"]["expected"] == pytest.approx([float(v) for v in exp])
    assert out["sample"]["priors"] == {"mu": "Uniform(low=0.0, high=5.0)"} and set(out["sample"]["summary"]) == set(m.par_names)
    assert out["sample"]["summary"]["mu"]["hdi_97%"] < 5.0


@pytest.mark.slow
def test_run_main_job_end_to_end(tmp_path):
    """The README's main job: fit, CLs and credible limits side by side (prior stated), the figure written, no ArviZ noise."""
    # a fresh cache folder: ArviZ's once-a-day FutureWarning would be due (its stamp lives in $XDG_CACHE_HOME/arviz)
    r = run("run", "--draws", "300", "--warmup", "300", "--chains", "2", cwd=tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for needle in ("mu (POI)", "Maximum-likelihood fit", "r_hat", "divergences", "95% CL upper limit on mu", "frequentist (CLs)",
                   "Bayesian (credible)", "prior on mu: Uniform(low=0.0, high=10.0)", "wrote crosscheck.png"):
        assert needle in out, needle
    assert "FutureWarning" not in r.stdout + r.stderr and "refactor" not in r.stdout + r.stderr
    assert (tmp_path / "crosscheck.png").stat().st_size > 20_000
