"""Where numba keeps graphconv's compiled kernels, and why not beside the sources.

numba's on-disk cache (`cache=True`) is checked against the file that defines each
function, and nothing else. Most kernels call helpers from other files (every conv
strategy runs `gemm_cpu.multiply_band`), and the cached machine code of a kernel
contains its helpers: change a helper, or upgrade graphconv to a version where only
the helper's file changed, and the kernel keeps running the old helper.

So graphconv's own kernels are cached in a directory named after a digest of every
source the kernels are made of: `graphconv/ops/` (each op's kernels and the helpers
they share) and the one graphconv module it imports (`errors.py`). Any change to any
of them starts a fresh cache (one JIT compile of the kernels a network needs, 10-50 s,
see docs/performance.md), and an unchanged install reuses it from the first run on;
changes elsewhere in graphconv (the CLI, the passes, the runtime) keep the cache, as
the kernels' machine code cannot depend on them (tests/test_kernel_cache.py checks that
nothing under ops/ imports anything else of graphconv's). This
is done by a cache locator that numba consults for graphconv's functions only: no
environment variable is set and other packages' caches stay where numba puts them.
An explicit NUMBA_CACHE_DIR still wins for everything.

A cache file can also be damaged (a full disk, a killed process, a bad sector). numba
then fails on every call of that kernel, in every later process, until someone finds
and deletes the file. graphconv's kernels treat a file numba cannot unpickle as
missing: the file is deleted and the kernel compiled again.

Processes that compile at the same time (pytest's workers, a cluster's) share the
cache, and numba names a kernel's data files by counting the entries of the index it
read: two processes adding different signatures of one kernel could both take number 1,
and the index could end up naming one signature's file holding the other's machine
code (measured: a segfault in the stream conv, in every later process, until the cache
was cleared). graphconv's kernels name each data file after its key instead, and write
it before the index names it, so an index entry only ever names its own code; a lost
index update is a recompile, not a crash.

And numba's cache forgets, for a kernel compiled against a helper it loaded from the
cache, that the helper runs parallel loops (numba issues 8578 and 4807; its PR 9950 is
not merged): a kernel records the setup its parallel loops need (starting numba's
thread pool) from the helpers it compiled itself only. Compiled while another process
had cached the helper (pytest's workers; a first run of one network after another),
such a kernel loaded by a later process before any other parallel kernel ran jumps
into a thread pool that was never started: a segfault (measured: the stream conv,
alone in a fresh process, after `pytest -n 2 tests/test_ops.py` on an empty cache).
So every graphconv kernel loaded from the cache starts numba's thread pool first, as
numba does for one whose parallel loops it compiled itself. (The stream-conv segfault
that the race above was blamed for, in session 16, had the same symptom and may have
been this; both are handled.)
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from graphconv.threads import start_numba_threads

SOURCE_ROOT = Path(__file__).resolve().parent
KERNEL_SOURCES = ("ops", "errors.py")  # under SOURCE_ROOT: what compiled kernels are made of
COLD_NOTE = "note: compiling kernels for the kinds of layer this installation has not run before (once each): 10-60 s"


def sources_digest(root: Path = SOURCE_ROOT) -> str:
    """A short digest of the kernels' sources under `root` (KERNEL_SOURCES: every
    Python file under ops/, and errors.py), names and contents."""
    digest = hashlib.sha256()
    files = []
    for name in KERNEL_SOURCES:
        path = root / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """The per-user cache directory ($XDG_CACHE_HOME/graphconv, else ~/.cache/graphconv)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphconv"


def kernel_cache_dir() -> Path:
    """Where this version of graphconv's sources keeps its compiled kernels: under
    `cache_root()`, or where that cannot be written (a read-only home on a cluster's
    node, a cache folder another user made) under this user's folder in the temporary
    directory. numba cannot use a cache folder it cannot write, even a complete one, and
    failed every run with its traceback ("no locator available")."""
    preferred = cache_root() / f"kernels-{sources_digest()}"
    if _writable(preferred):
        return preferred
    user = getattr(os, "getuid", lambda: "user")()
    return Path(tempfile.gettempdir()) / f"graphconv-{user}" / preferred.name


def _writable(folder: Path) -> bool:
    """Whether `folder` can be written, or made where it is not there yet (its nearest
    existing ancestor a folder that can be written), without making it."""
    for there in (folder, *folder.parents):
        if os.path.lexists(there):
            return there.is_dir() and os.access(there, os.W_OK | os.X_OK)
    return False


def install_kernel_cache() -> bool:
    """Route graphconv's kernels to `kernel_cache_dir()` and make damaged cache files
    there a cache miss. Touches nothing of other packages. Returns False (leaving
    numba's defaults) if this numba's cache machinery is not the one this expects."""
    try:
        from numba.core import caching
    except ImportError:
        return False
    locators = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None)
    if not isinstance(locators, list) or not hasattr(caching, "UserProvidedCacheLocator"):
        return False
    locator = _graphconv_locator(caching.UserProvidedCacheLocator)
    if not any(getattr(cls, "graphconv", False) for cls in locators):
        locators.insert(0, locator)
    return _patch_cache_files(caching)


def _graphconv_locator(base: type) -> type:
    root = str(SOURCE_ROOT) + os.sep
    directory = str(kernel_cache_dir())

    class GraphconvCacheLocator(base):
        """numba's locator for a user-provided cache directory, applied to functions
        defined in graphconv's own files, with the versioned directory."""

        graphconv = True

        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = os.path.join(directory, self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            from numba.core import config
            if config.CACHE_DIR or not os.path.abspath(py_file).startswith(root):
                return None  # the user's own choice, or not one of ours
            return super(base, cls).from_function(py_func, py_file)

    return GraphconvCacheLocator


def _is_damage(err: Exception) -> bool:
    """Whether an error from reading a cache file means its bytes are damaged. Unpickling
    random bytes can raise nearly anything (UnpicklingError, EOFError, ValueError,
    OverflowError for a huge string length, KeyError for an unknown memo, RecursionError
    ...; CI met an OverflowError after sessions of passing runs), so every error is
    damage except an OSError: that one is the file system's (a permission, a full disk),
    and numba's own handling of it stands."""
    return not isinstance(err, OSError)


def _patch_cache_files(caching) -> bool:
    """Patch numba's cache files under graphconv's cache root (files elsewhere behave
    exactly as before): a damaged index or data file is a cache miss (deleted, then
    recompiled and rewritten) instead of an error on every run; data files are named by
    their key; and a kernel loaded starts numba's thread pool first (module docstring)."""
    reader = getattr(caching, "IndexDataCacheFile", None)
    if reader is None:
        return False
    if getattr(reader, "_graphconv_tolerant", False):
        return True
    load_index, load_data = reader.__dict__.get("_load_index"), reader.__dict__.get("_load_data")
    save = reader.__dict__.get("save")
    if load_index is None or load_data is None or save is None:
        return False

    def ours(cache_file) -> bool:
        return str(cache_file._cache_path).startswith(str(cache_root()))

    def _load_index(self):
        if ours(self):  # the lookup before a kernel is loaded or compiled: the pool starts as graphconv starts it
            start_numba_threads()
        try:
            return load_index(self)
        except Exception as err:
            if not ours(self) or not _is_damage(err):
                raise
            _remove(self._index_path)
            return {}

    def _load_data(self, name):
        try:
            data = load_data(self, name)
        except Exception as err:  # numba's `load` treats an OSError here as a miss
            if not ours(self) or not _is_damage(err):
                raise
            _remove(self._data_path(name))
            raise OSError(f"damaged kernel cache file removed: {err}") from None
        if ours(self):
            start_numba_threads()  # as numba's `_reload_parfors` would, keeping PyTorch's thread count
        return data

    def save_by_key(self, key, data):
        if not ours(self):
            return save(self, key, data)
        name = self._data_name_pattern.format(number=_key_number(key))
        self._save_data(name, data)
        overloads = self._load_index()
        if overloads.get(key) != name:
            overloads[key] = name
            self._save_index(overloads)

    reader._load_index = _load_index
    reader._load_data = _load_data
    reader.save = save_by_key
    reader._graphconv_tolerant = True
    return True


def _key_number(key) -> int:
    """A number for a cache entry's data file that only its key gives (48 bits of a digest)."""
    return int.from_bytes(hashlib.sha256(pickle.dumps(key, protocol=4)).digest()[:6], "big")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def cold_kernel_modules(graph, device: str = "cpu") -> list[str]:
    """The CPU kernel modules (e.g. 'graphconv.ops.conv.cpu') that running `graph` needs
    and that have nothing in this version's cache yet: their first use compiles them
    (seconds each). A cheap look at the cache folder (an explicit NUMBA_CACHE_DIR's, where
    numba's own locator puts them, a cluster's usual setting), nothing compiled or
    loaded: a module with one kernel compiled counts as warm, and where graphconv cannot
    tell (another device, numba's cache machinery not installed) the answer is [] ."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if device != "cpu" or not (chosen or _installed()):
        return []
    import importlib.util
    from numba.core.caching import _CacheLocator

    directory = Path(chosen) if chosen else kernel_cache_dir()
    cold = []
    for package in sorted({node.opdef.package for node in graph.layers()}):
        module = f"{package}.cpu"
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        source = Path(spec.origin)
        if "cache=True" not in source.read_text():
            continue  # nothing of it is compiled (identity copies with numpy)
        folder = directory / _CacheLocator.get_suitable_cache_subpath(str(source))
        if not any(folder.glob(f"{source.stem}.*.nbi")):
            cold.append(module)
    return cold


@contextmanager
def compile_clock() -> Iterator[Callable[[], float]]:
    """Seconds numba spent compiling kernels (not loading them from the cache) inside the
    block, read by calling what it yields. `cold_kernel_modules` foresees a cold module
    only: a module one of whose kernels is cached counts as warm, so a network using its
    other kernels compiles them unforeseen, and a run's time must say so from what
    happened rather than from the forecast."""
    from numba.core import event

    listener = event.TimingListener()
    with event.install_listener("numba:compile", listener):
        yield lambda: listener.duration if listener.done else 0.0


def _installed() -> bool:
    """Whether graphconv's cache locator is in numba's list (install_kernel_cache ran)."""
    try:
        from numba.core import caching
    except ImportError:
        return False
    locators = getattr(getattr(caching, "CacheImpl", None), "_locator_classes", None) or []
    return any(getattr(cls, "graphconv", False) for cls in locators)
