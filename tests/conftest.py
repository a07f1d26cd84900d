"""Shared test fixtures: the workspaces of ../shared beside the checkout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The suite compiles into its own persistent JAX cache, fresh for each run and shared by the xdist
# workers of that run (never a user's ~/.cache/hf2ppl, which a killed earlier run could have left stale).
if "HF2PPL_CACHE_DIR" not in os.environ and "HF2PPL_NO_CACHE" not in os.environ:
    import tempfile

    _run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    os.environ["HF2PPL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"hf2ppl-test-cache-{_run}")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HF2PPL_SHARED", ROOT.parent / "shared"))
WORKSPACES = SHARED / "workspaces"
WORKSPACE_FILES = sorted(WORKSPACES.glob("*.json"))
PATCHSET_BKG = WORKSPACES / "patchset" / "example_bkgonly.json"
PATCHSET = WORKSPACES / "patchset" / "example_patchset.json"


def patch_names() -> list[str]:
    if not PATCHSET.exists():
        return []
    return [p["metadata"]["name"] for p in json.loads(PATCHSET.read_text())["patches"]]


def all_workspace_cases() -> list[tuple[str, dict]]:
    """(id, load kwargs) for every shared workspace and every patch of the patchset."""
    cases = [(f.stem, {"workspace": str(f)}) for f in WORKSPACE_FILES]
    cases += [(f"patchset-{n}", {"workspace": str(PATCHSET_BKG), "patches": [(str(PATCHSET), n)]}) for n in patch_names()]
    cases += [("patchset-bkgonly", {"workspace": str(PATCHSET_BKG)})] if PATCHSET_BKG.exists() else []
    return cases


CASES = all_workspace_cases()
CASE_IDS = [c[0] for c in CASES]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    assert WORKSPACES.is_dir(), f"shared workspaces not found at {WORKSPACES}; set HF2PPL_SHARED"
    return SHARED


def pyhf_model_and_data(case: dict, **config_kwargs):
    """The pyhf reference model and its data (main + aux) for a case of all_workspace_cases()."""
    import pyhf

    ws = pyhf.Workspace(json.loads(Path(case["workspace"]).read_text()))
    patches = []
    for ps_path, name in case.get("patches", []):
        ps = pyhf.PatchSet(json.loads(Path(ps_path).read_text()))
        patches.append(ps[name])
    model = ws.model(patches=patches, **config_kwargs)
    return model, ws.data(model)


@pytest.fixture(scope="module")
def tight_pyhf():
    """pyhf numpy backend with a tight scipy fit (tolerance 1e-12) for a module's comparisons, restored afterwards."""
    import pyhf

    old = pyhf.get_backend()
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    yield
    pyhf.set_backend(*old)
