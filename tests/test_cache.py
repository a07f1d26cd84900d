"""JAX's persistent compilation cache, on by default (hf2ppl/_jaxcache.py, docs/cache.md).

Every case runs in a fresh subprocess: the cache is process-wide JAX state, and what is tested is
precisely what a *new* process finds on disk. No timings are asserted; reuse is shown by JAX's own
monitoring events (``/jax/compilation_cache/cache_hits`` and ``.../cache_misses``, the latter
recorded when an entry is written) and by the files in the cache directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import WORKSPACES

WS = WORKSPACES / "2_bin_corr.json"

PRELUDE = """
import collections, json, sys
import jax, jax.monitoring
ev = collections.Counter()
jax.monitoring.register_event_listener(lambda e, **k: ev.__setitem__(e.rsplit("/", 1)[-1], ev[e.rsplit("/", 1)[-1]] + 1))
import hf2ppl
def emit(**kw):
    kw.update(hits=ev["cache_hits"], writes=ev["cache_misses"], jax_dir=jax.config.jax_compilation_cache_dir)
    print("RESULT " + json.dumps(kw))
"""

FIT = PRELUDE + """
m = hf2ppl.compile(sys.argv[1], constraints="aux")
r = hf2ppl.fit(m)
cls = float(hf2ppl.hypotest(m, 1.0))
emit(x=[float(v) for v in r.x], cls=cls)
"""

pytestmark = pytest.mark.skipif(not WS.exists(), reason=f"{WS} not found; set HF2PPL_SHARED")


def run(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter with a clean cache environment plus ``env``; its RESULT line."""
    e = {k: v for k, v in os.environ.items() if k not in ("HF2PPL_CACHE_DIR", "HF2PPL_NO_CACHE") and not k.startswith("JAX_")}
    e.update(JAX_PLATFORMS="cpu", **env)
    p = subprocess.run([sys.executable, "-c", code, str(WS)], env=e, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, p.stdout[-2000:] + p.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT ") :]) | {"stderr": p.stderr}


def entries(d) -> set[str]:
    return {p.name for p in d.iterdir() if p.name.endswith("-cache")} if d.is_dir() else set()


def test_second_process_reuses_the_cache(tmp_path):
    d = tmp_path / "jax"
    first = run(FIT, HF2PPL_CACHE_DIR=str(d))
    assert first["jax_dir"] == str(d)
    written = entries(d)
    assert len(written) > 0 and first["writes"] == len(written)  # small programs are cached too (thresholds lowered)

    second = run(FIT, HF2PPL_CACHE_DIR=str(d))
    assert second["writes"] == 0, "the second process compiled something the first had cached"
    assert second["hits"] >= len(written) > 0
    assert entries(d) == written
    assert second["x"] == pytest.approx(first["x"], rel=1e-12, abs=1e-12)
    assert second["cls"] == pytest.approx(first["cls"], rel=1e-12)
    assert "persistent compilation cache" not in second["stderr"]

    # an empty entry (a process killed mid-write) would make JAX warn in every later process: hf2ppl drops it
    victim = d / sorted(written)[0]
    victim.write_bytes(b"")
    third = run(FIT, HF2PPL_CACHE_DIR=str(d))
    assert "persistent compilation cache" not in third["stderr"]
    assert third["writes"] == 1 and entries(d) == written and victim.stat().st_size > 0


def test_opt_out_writes_nothing(tmp_path):
    d = tmp_path / "jax"
    out = run(FIT, HF2PPL_CACHE_DIR=str(d), HF2PPL_NO_CACHE="1")
    assert out["jax_dir"] is None and out["hits"] == out["writes"] == 0
    assert not d.exists() or not any(d.iterdir())


def test_set_cache_dir_after_compilations_and_off_again(tmp_path):
    """set_cache_dir takes effect mid-process (after JAX compiled without a cache); None turns it off."""
    d, d2 = tmp_path / "late", tmp_path / "never"
    code = PRELUDE + f"""
import jax.numpy as jnp
m = hf2ppl.compile(sys.argv[1], constraints="aux")   # HF2PPL_NO_CACHE: nothing enabled
jax.jit(m.logdensity)(m.init_params()).block_until_ready()
before = ev["cache_misses"]
assert hf2ppl.cache_dir() is None
assert hf2ppl.set_cache_dir({str(d)!r}) == {str(d)!r} == hf2ppl.cache_dir()
jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.arange(3.0)).block_until_ready()
after = ev["cache_misses"]
assert hf2ppl.set_cache_dir(None) is None and hf2ppl.cache_dir() is None
jax.jit(lambda x: jnp.cos(x) * 5.0)(jnp.arange(3.0)).block_until_ready()
emit(before=before, after=after)
"""
    out = run(code, HF2PPL_NO_CACHE="1", HF2PPL_CACHE_DIR=str(d2))
    assert out["before"] == 0 and out["after"] >= 1 and out["writes"] == out["after"] and out["jax_dir"] is None
    assert len(entries(d)) == out["after"] and not d2.exists()


def test_user_jax_dir_respected_and_unusable_dir_harmless(tmp_path):
    user, ours = tmp_path / "user", tmp_path / "ours"
    code = PRELUDE + """
m = hf2ppl.compile(sys.argv[1], constraints="aux")
jax.jit(m.logdensity)(m.init_params()).block_until_ready()
emit(min_time=jax.config.jax_persistent_cache_min_compile_time_secs)
"""
    out = run(code, JAX_COMPILATION_CACHE_DIR=str(user), HF2PPL_CACHE_DIR=str(ours))
    assert out["jax_dir"] == str(user) and out["min_time"] == 1.0  # neither the dir nor the thresholds touched
    assert not ours.exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = run(code, HF2PPL_CACHE_DIR=str(blocker / "jax"))  # cannot be created: the run goes on uncached
    assert out["jax_dir"] is None and out["writes"] == 0
