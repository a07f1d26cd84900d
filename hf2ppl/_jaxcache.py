"""JAX's persistent compilation cache, on by default for hf2ppl (see docs/cache.md).

The first fit in a fresh process spends seconds compiling its JAX programs; with the cache on, a
later process with the same model shapes loads the compiled executables from disk instead.

* Directory: ``HF2PPL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/hf2ppl/jax``, else
  ``~/.cache/hf2ppl/jax`` (``%LOCALAPPDATA%\\hf2ppl\\jax`` on Windows).
* Opt-out: ``HF2PPL_NO_CACHE=1`` (any non-empty value but ``"0"``), or ``hf2ppl.set_cache_dir(None)``.
* A cache directory the user gave JAX (``jax.config.update("jax_compilation_cache_dir", ...)`` or
  ``JAX_COMPILATION_CACHE_DIR``) or ``jax_enable_compilation_cache=False`` is left as it is.

Nothing here raises: a cache that cannot be set up (read-only home, ...) is logged and skipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["enable_compilation_cache", "set_cache_dir", "cache_dir", "default_cache_dir"]

# JAX's defaults for the two write thresholds; hf2ppl lowers them only when still at these values.
_JAX_MIN_COMPILE_TIME = 1.0
_JAX_MIN_ENTRY_SIZE = 0

_done = False  # enable_compilation_cache() ran (or set_cache_dir() was called): later calls are no-ops
_ours: str | None = None  # the directory hf2ppl gave JAX, None if hf2ppl did not set one


def _disabled_by_env() -> bool:
    v = os.environ.get("HF2PPL_NO_CACHE", "").strip()
    return v not in ("", "0")


def default_cache_dir() -> Path:
    """The directory hf2ppl would use (``HF2PPL_CACHE_DIR``, ``$XDG_CACHE_HOME/hf2ppl/jax`` or ``~/.cache/hf2ppl/jax``)."""
    env = os.environ.get("HF2PPL_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative value
        return Path(xdg) / "hf2ppl" / "jax"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "hf2ppl" / "jax"
    return Path.home() / ".cache" / "hf2ppl" / "jax"


def cache_dir() -> str | None:
    """The compilation cache directory in effect, or that the first compile will use; None when off."""
    import jax

    if not jax.config.jax_enable_compilation_cache:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current or _done:
        return current or None
    if _disabled_by_env():
        return None
    try:
        return str(default_cache_dir())
    except Exception:  # e.g. no home directory
        return None


def _usable(path: Path) -> bool:
    """Create ``path`` if needed and check it is a writable directory; log (never raise) if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
        return True
    except Exception as e:
        log.info("hf2ppl: JAX compilation cache off (cannot use %s: %s)", path, e)
        return False


def _drop_empty_entries(path: Path) -> None:
    """Delete 0-byte entries (a process killed between JAX's open and write of an entry leaves one).

    JAX never overwrites an existing entry and warns at every read of an unreadable one, so an empty
    file would warn in every later process; removing it lets the next compilation rewrite it.
    """
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name.endswith("-cache") and e.is_file(follow_symlinks=False) and e.stat().st_size == 0:
                    os.unlink(e.path)
    except OSError as e:
        log.debug("hf2ppl: could not scan the compilation cache %s: %s", path, e)


#: size bound of the persistent cache (LRU eviction and file locking, see _lower_thresholds)
_MAX_SIZE_BYTES = 2 * 1024**3


def _lower_thresholds(jax) -> None:
    """Cache hf2ppl's small programs too: JAX by default writes only programs that took >= 1 s to compile."""
    if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_MIN_COMPILE_TIME:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if jax.config.jax_persistent_cache_min_entry_size_bytes == _JAX_MIN_ENTRY_SIZE:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, no override by JAX
    # A size bound turns on JAX's LRU eviction, and with it a file lock around every read and write of an
    # entry. Without it JAX writes entries non-atomically, and a process reading an entry that another one
    # (a pytest-xdist worker, a Dask worker, a second notebook) is still writing can abort in XLA's
    # deserialiser: seen as "Fatal Python error: Aborted" in compilation_cache.get_executable_and_time.
    try:
        if jax.config.jax_compilation_cache_max_size == -1:
            import filelock  # noqa: F401  (JAX needs it for the lock)

            jax.config.update("jax_compilation_cache_max_size", _MAX_SIZE_BYTES)
    except Exception as e:  # pragma: no cover - very old/new JAX, or no filelock: no locking
        log.info("hf2ppl: could not bound the compilation cache (%s); concurrent processes may race on it", e)


def _reset_jax_cache() -> None:
    """Make JAX re-read the cache settings (it opens the cache once, at the first compilation that uses it)."""
    try:
        from jax.experimental.compilation_cache import compilation_cache as cc

        cc.reset_cache()
    except Exception as e:
        log.debug("hf2ppl: could not reset JAX's compilation cache: %s", e)


def _jax_cache_opened() -> bool:
    try:
        from jax._src import compilation_cache as _cc

        return bool(getattr(_cc, "_cache_initialized", False)) or getattr(_cc, "_cache", None) is not None
    except Exception:
        return False


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in hf2ppl's directory, once per process.

    Idempotent and cheap after the first call (``hf2ppl.compile`` calls it for every NumPyro model).
    Does nothing when ``HF2PPL_NO_CACHE`` is set, when the user already configured a JAX cache
    directory, when ``jax_enable_compilation_cache`` is off, or after :func:`set_cache_dir`.

    Returns:
        The cache directory JAX uses after the call (None when the cache is off).
    """
    global _done, _ours
    if _done:
        return _ours
    _done = True
    try:
        import jax

        if _disabled_by_env():
            log.debug("hf2ppl: JAX compilation cache off (HF2PPL_NO_CACHE)")
            return None
        if not jax.config.jax_enable_compilation_cache:
            log.debug("hf2ppl: JAX compilation cache off (jax_enable_compilation_cache=False)")
            return None
        if jax.config.jax_compilation_cache_dir:
            log.debug("hf2ppl: using the user's JAX compilation cache at %s", jax.config.jax_compilation_cache_dir)
            return None
        path = default_cache_dir()
        if not _usable(path):
            return None
        _drop_empty_entries(path)
        jax.config.update("jax_compilation_cache_dir", str(path))
        _lower_thresholds(jax)
        # JAX opens its cache lazily at the first compilation that uses it; a compilation before this
        # point without a directory leaves it unopened, so the directory still applies. Reset only if
        # it was somehow opened already (cannot happen without a directory, kept as a guard).
        if _jax_cache_opened():
            _reset_jax_cache()
        _ours = str(path)
        log.debug("hf2ppl: JAX compilation cache at %s", path)
        return _ours
    except Exception as e:  # a cache must never break a run
        log.info("hf2ppl: JAX compilation cache not enabled: %s", e)
        return None


def set_cache_dir(path: str | os.PathLike[str] | None) -> str | None:
    """Use ``path`` for JAX's persistent compilation cache, or turn the cache off with ``None``.

    Takes effect at once, also after compilations have already happened in this process, and
    overrides ``HF2PPL_CACHE_DIR``, ``HF2PPL_NO_CACHE`` and any JAX cache directory set before.
    The compile-time and size thresholds are lowered as for the default cache.

    Returns:
        The directory now in use (None if off, or if ``path`` cannot be created or written).

    Example:
        >>> import hf2ppl, tempfile
        >>> d = hf2ppl.set_cache_dir(tempfile.mkdtemp())
        >>> hf2ppl.set_cache_dir(None) is None
        True
    """
    global _done, _ours
    _done = True
    try:
        import jax

        new: str | None = None
        if path is not None:
            p = Path(os.fspath(path)).expanduser()
            if _usable(p):
                new = str(p)
                _drop_empty_entries(p)
        jax.config.update("jax_compilation_cache_dir", new)
        if new is not None:
            if not jax.config.jax_enable_compilation_cache:
                jax.config.update("jax_enable_compilation_cache", True)
            _lower_thresholds(jax)
        _reset_jax_cache()
        _ours = new
        return new
    except Exception as e:
        log.info("hf2ppl: could not set the JAX compilation cache directory: %s", e)
        return None
