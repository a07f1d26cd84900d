"""The console script: a thin layer over the public API."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hf2ppl.cli import main


def test_inspect_and_fit(shared_dir, capsys):
    ws = str(shared_dir / "workspaces" / "all_modifiers_2channel.json")
    assert main(["inspect", ws]) == 0
    out = capsys.readouterr().out
    assert "mu (POI)" in out and "staterror_CR" in out and "shapesys" in out
    assert main(["fit", ws]) == 0
    out = capsys.readouterr().out
    assert "converged: True" in out and "mu_bkg" in out


def test_bad_workspace_exits_with_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"channels": []}')
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf2ppl: error:") and "\n" not in err


@pytest.mark.slow
def test_run_bundled_example_end_to_end():
    out = subprocess.run([sys.executable, "-m", "hf2ppl", "run", "--draws", "300", "--warmup", "300", "--chains", "2"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in ("mu (POI)", "Maximum-likelihood fit", "upper limit", "r_hat", "divergences"):
        assert needle in out.stdout
