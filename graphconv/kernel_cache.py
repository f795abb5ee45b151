"""Where numba keeps graphconv's compiled kernels, and why not beside the sources.

numba's on-disk cache (`cache=True`) is checked against the file that defines each
function, and nothing else. Most kernels call helpers from other files (every conv
strategy runs `gemm_cpu.multiply_band`), and the cached machine code of a kernel
contains its helpers: change a helper, or upgrade graphconv to a version where only
the helper's file changed, and the kernel keeps running the old helper.

So graphconv points numba at a cache directory named after a digest of all its own
sources: any change to any of them starts a fresh cache (one JIT compile of every
kernel, about 20 s), and an unchanged install reuses it from the first run on. This
runs when graphconv is imported, before any kernel module is; an explicit
NUMBA_CACHE_DIR always wins. numba then keeps the caches of other packages' functions
there too while graphconv is loaded, which changes nothing but their location.

A cache file can also be damaged (a full disk, a killed process, a bad sector). numba
then fails on every call of that kernel, in every later process, until someone finds
and deletes the file. `tolerate_damaged_cache_files` makes numba treat a file it
cannot unpickle as missing: the file is deleted and the kernel compiled again.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent


def sources_digest(root: Path = SOURCE_ROOT) -> str:
    """A short digest of every Python file under `root`, names and contents."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """The per-user cache directory ($XDG_CACHE_HOME/graphconv, else ~/.cache/graphconv)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphconv"


def use_versioned_cache() -> str | None:
    """Point numba's cache at kernels-<digest of these sources>; returns that directory,
    or None when the user has chosen their own NUMBA_CACHE_DIR."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    directory = str(cache_root() / f"kernels-{sources_digest()}")
    os.environ["NUMBA_CACHE_DIR"] = directory
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba already imported: it read the environment before we set it
        config.CACHE_DIR = directory
    return directory


DAMAGE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          ImportError, MemoryError)  # what unpickling random or truncated bytes raises


def tolerate_damaged_cache_files() -> bool:
    """Patch numba's cache reader so a damaged index or data file is a cache miss
    (deleted, then recompiled and rewritten) instead of an error on every run. Returns
    False, changing nothing, if this numba's cache reader is not the one this expects."""
    try:
        from numba.core.caching import IndexDataCacheFile
    except ImportError:
        return False
    if getattr(IndexDataCacheFile, "_graphconv_tolerant", False):
        return True
    load_index, load_data = IndexDataCacheFile.__dict__.get("_load_index"), IndexDataCacheFile.__dict__.get("_load_data")
    if load_index is None or load_data is None:
        return False

    def _load_index(self):
        try:
            return load_index(self)
        except DAMAGE:
            _remove(self._index_path)
            return {}

    def _load_data(self, name):
        try:
            return load_data(self, name)
        except DAMAGE as err:  # numba's `load` treats an OSError here as a miss
            _remove(self._data_path(name))
            raise OSError(f"damaged kernel cache file removed: {err}") from None

    IndexDataCacheFile._load_index = _load_index
    IndexDataCacheFile._load_data = _load_data
    IndexDataCacheFile._graphconv_tolerant = True
    return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
