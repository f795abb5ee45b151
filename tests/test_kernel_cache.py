"""numba's kernel cache is keyed by all of the kernels' sources (graphconv/ops/), so a
changed helper in one file can never leave a stale copy inside a kernel cached from
another, while changes elsewhere keep the cache; a cold cache is announced."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from graphconv import kernel_cache


def test_digest_changes_with_any_kernel_source_and_nothing_else(tmp_path):
    root = tmp_path / "pkg"
    shutil.copytree(kernel_cache.SOURCE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = kernel_cache.sources_digest(root)
    assert kernel_cache.sources_digest(root) == before, "the digest must be stable"
    cli = root / "cli.py"
    cli.write_text(cli.read_text() + "\n# the CLI changed: no kernel did\n")
    assert kernel_cache.sources_digest(root) == before
    helper = root / "ops" / "gemm_cpu.py"
    helper.write_text(helper.read_text() + "\n# a changed helper\n")
    assert kernel_cache.sources_digest(root) != before


def test_kernel_sources_import_nothing_else_of_graphconvs():
    """The digest covers ops/ and errors.py only: that is sound while no module under
    ops/ takes code or constants from anywhere else in graphconv. (ops/__init__.py installs
    the kernel cache before any kernel is defined: no kernel's code comes from there. An
    op's `onnx_import.py` holds its ONNX converter, for the importer, and no kernel.)"""
    import re
    allowed = {"graphconv.errors"}
    ops = kernel_cache.SOURCE_ROOT / "ops"
    for path in ops.rglob("*.py"):
        if path.name == "onnx_import.py":
            assert "cache=True" not in path.read_text() and "numba" not in path.read_text(), path
            continue
        for module in re.findall(r"^\s*(?:from|import)\s+(graphconv[\w.]*)", path.read_text(), re.M):
            if path == ops / "__init__.py" and module == "graphconv.kernel_cache":
                continue
            assert module.startswith("graphconv.ops") or module in allowed, (path, module)


def test_every_cached_kernel_is_routed_to_graphconvs_cache_whichever_module_comes_first():
    """`import graphconv` imports nothing (graphconv/__init__.py), and numba picks a kernel's
    cache folder as the kernel is defined: each module of graphconv's with cached kernels,
    imported first thing in a fresh process, has them all routed by graphconv's locator.
    They are all under graphconv/ops/, whose package installs the locator first (a kernel
    module elsewhere would also set numba up on import: tests/test_vector_width.py)."""
    modules = []
    for path in sorted(kernel_cache.SOURCE_ROOT.rglob("*.py")):
        if "cache=True" in path.read_text() and path.name != "kernel_cache.py" and "cuda" not in path.name:
            parts = path.relative_to(kernel_cache.SOURCE_ROOT.parent).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert "graphconv.ops.gemm_cpu" in modules and all(m.startswith("graphconv.ops.") for m in modules), modules
    code = ("import importlib, sys\n"
            "from numba.core.registry import CPUDispatcher\n"
            "module = importlib.import_module(sys.argv[1])\n"
            "kernels = [v for v in vars(module).values() if isinstance(v, CPUDispatcher) and v._cache is not None\n"
            "           and v.py_func.__module__ == module.__name__]\n"
            "stray = [k.__name__ for k in kernels if not getattr(type(k._cache._impl._locator), 'graphconv', False)]\n"
            "print(len(kernels), stray)\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    for module in (modules[0], "graphconv.ops.area_means", "graphconv.ops.gemm_cpu"):
        out = subprocess.run([sys.executable, "-c", code, module], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        count, stray = out.stdout.split(" ", 1)
        assert int(count) > 0 and stray.strip() == "[]", (module, out.stdout)


def test_cold_kernel_modules_looks_at_this_versions_cache(tmp_path, monkeypatch, write_spec):
    from numba.core.caching import _CacheLocator
    import graphconv
    from graphconv.ops.elementwise import cpu as elementwise_cpu
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    graph = graphconv.load_spec(write_spec("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: r, op: relu}\n"
                                           "  - {name: i, op: identity}\n"))
    assert kernel_cache.cold_kernel_modules(graph) == ["graphconv.ops.elementwise.cpu"]
    assert kernel_cache.cold_kernel_modules(graph, "cuda") == []
    folder = kernel_cache.kernel_cache_dir() / _CacheLocator.get_suitable_cache_subpath(elementwise_cpu.__file__)
    folder.mkdir(parents=True)
    (folder / "cpu._relu-8.py311.nbi").write_bytes(b"")
    assert kernel_cache.cold_kernel_modules(graph) == []
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "chosen"))  # numba's own locator: its folder is looked at
    assert kernel_cache.cold_kernel_modules(graph) == ["graphconv.ops.elementwise.cpu"]
    folder = tmp_path / "chosen" / _CacheLocator.get_suitable_cache_subpath(elementwise_cpu.__file__)
    folder.mkdir(parents=True)
    (folder / "cpu._relu-8.py311.nbi").write_bytes(b"")
    assert kernel_cache.cold_kernel_modules(graph) == []


def test_the_first_run_on_a_cold_cache_says_why_it_is_slow(tmp_path, write_spec):
    spec = write_spec("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: r, op: relu}\n")
    import numpy as np
    np.save(tmp_path / "x.npy", np.ones((1, 1, 4, 4), np.float32))
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "XDG_CACHE_HOME": str(tmp_path)}

    def run():
        return subprocess.run([sys.executable, "-m", "graphconv", "run", str(spec), "--input", str(tmp_path / "x.npy")],
                              env=env, capture_output=True, text=True, timeout=300)

    first, second = run(), run()
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    assert first.stderr.count(kernel_cache.COLD_NOTE) == 1
    assert kernel_cache.COLD_NOTE not in second.stderr
    from graphconv.cli import COMPILING
    assert COMPILING in first.stdout and COMPILING not in second.stdout  # the time said is not the run's own


def test_a_run_s_time_says_the_kernels_compiled_during_it_where_none_was_foreseen(tmp_path, write_spec):
    """The forecast counts a module with one kernel cached as warm: a network using its
    other kernels compiled them unannounced, and the time printed read as the run's own."""
    spec = write_spec("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: r, op: relu}\n")
    import numpy as np
    np.save(tmp_path / "x.npy", np.ones((1, 1, 4, 4), np.float32))
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "XDG_CACHE_HOME": str(tmp_path)}
    code = ("import sys; from graphconv import cli, kernel_cache; "
            "kernel_cache.cold_kernel_modules = lambda graph, device='cpu': []; sys.exit(cli.main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "run", str(spec), "--input", str(tmp_path / "x.npy")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert kernel_cache.COLD_NOTE not in out.stderr
    from graphconv.cli import COMPILING
    said = r" in [0-9.]+ ms \([0-9.]+ s of it " + re.escape(COMPILING) + r"\) on cpu"
    assert re.search(said, out.stdout), out.stdout


def test_the_compile_clock_counts_compiling_not_loading():
    from numba import njit

    @njit
    def doubled(x):
        return 2 * x

    with kernel_cache.compile_clock() as compiled:
        doubled(1.0)
    assert compiled() > 0
    with kernel_cache.compile_clock() as compiled:
        doubled(2.0)  # compiled already for a float
    assert compiled() == 0


def test_verify_says_so_where_only_its_classifier_s_kernels_are_cold(monkeypatch, capsys):
    """verify runs the classifier on crops beside the compiled network: a warm dense pass
    and a cold crop loop sat 18 s without a word."""
    from graphconv import cli

    class Model:
        def __init__(self, cold):
            self.graph = cold

        def executor(self, device):
            return type("Executor", (), {"device": device})()

    monkeypatch.setattr(kernel_cache, "cold_kernel_modules", lambda graph, device: graph)
    assert not cli.note_cold_kernels(Model([]), "cpu", Model([]))
    assert kernel_cache.COLD_NOTE not in capsys.readouterr().err
    assert cli.note_cold_kernels(Model([]), "cpu", Model(["graphconv.ops.fc.cpu"]))
    assert capsys.readouterr().err.count(kernel_cache.COLD_NOTE) == 1


def test_an_images_batch_says_before_its_first_image_that_kernels_compile(tmp_path, write_spec, monkeypatch):
    """A photo review: a batch on a cold cache sat 40 s without a word, then said "1 of 1
    image -> maps in 39.7 s"; --image said why first."""
    import numpy as np
    from PIL import Image

    from conftest import graphconv_in_process
    spec = write_spec("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: r, op: relu}\n")
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(kernel_cache, "cold_kernel_modules", lambda graph, device="cpu": ["graphconv.ops.relu.cpu"])
    result = graphconv_in_process("run", spec, "--images", tmp_path / "a.png", "--output-dir", tmp_path / "maps",
                                  "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(kernel_cache.COLD_NOTE) == 1


def test_the_first_python_run_on_a_cold_cache_warns_why_it_is_slow(tmp_path, write_spec):
    """The Python API compiled quietly: a notebook's first cell hung 35 s without a word."""
    spec = write_spec("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: r, op: relu}\n")
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    code = "import sys, numpy as np, graphconv; graphconv.load(sys.argv[1]).run(np.ones((1, 1, 4, 4), np.float32))"

    def run():
        return subprocess.run([sys.executable, "-c", code, str(spec)], env=env, capture_output=True, text=True,
                              timeout=300)

    first, second = run(), run()
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    said = "GraphconvWarning: " + kernel_cache.COLD_NOTE.removeprefix("note: ")
    assert first.stderr.count(said) == 1 and "<string>:1: " in first.stderr, first.stderr  # at the caller's line
    assert said not in second.stderr


@pytest.mark.parametrize("foreseen", [False, True])
def test_a_python_call_that_compiled_unforeseen_says_why_it_was_slow(foreseen, monkeypatch, write_spec):
    """The warning before a run foresees cold modules only: a call compiling the other
    kernels of a partly cached module sat 12 s unexplained in a notebook's timing."""
    import contextlib
    import warnings
    import numpy as np
    import graphconv
    from graphconv.errors import GraphconvWarning
    monkeypatch.setattr(kernel_cache, "cold_kernel_modules", lambda graph, device="cpu": ["m"] if foreseen else [])
    monkeypatch.setattr(kernel_cache, "compile_clock", lambda: contextlib.nullcontext(lambda: 12.0))
    model = graphconv.load(write_spec("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: r, op: relu}\n"))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model.run(np.ones((1, 1, 4, 4), np.float32))
        model.run(np.ones((1, 1, 4, 4), np.float32))
    messages = [str(w.message) for w in said if issubclass(w.category, GraphconvWarning)]
    after = "this call spent 12 s compiling kernels this installation had not run before (once each): " \
            "later calls are faster"
    before = kernel_cache.COLD_NOTE.removeprefix("note: ")
    assert messages == ([before, after] if foreseen else [after, after])


def _cache_dir_in_fresh_process(tmp_path, **env):
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, **env,
           "XDG_CACHE_HOME": str(tmp_path)}
    code = ("import os, numpy as np, graphconv; from graphconv.ops.elementwise import cpu; "
            "x = np.ones((1, 1, 2, 2), np.float32); cpu.run_relu({}, {}, [x], np.empty_like(x)); "
            "print(os.environ.get('NUMBA_CACHE_DIR'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_graphconv_kernels_go_to_the_versioned_cache_without_setting_the_environment(tmp_path):
    assert _cache_dir_in_fresh_process(tmp_path) == "None"
    expected = tmp_path / "graphconv" / f"kernels-{kernel_cache.sources_digest()}"
    assert list(expected.rglob("*.nbi")), "numba wrote graphconv's kernel index there"


def test_a_cache_folder_that_cannot_be_written_falls_back_to_the_temporary_directory(tmp_path):
    """A read-only home (a cluster node's), or a cache folder another user made: numba
    cannot use a cache it cannot write and every run failed with "no locator available".
    The kernels go to this user's folder in the temporary directory instead. (A path
    below a file cannot be made a folder even by root, who may write read-only ones.)"""
    (tmp_path / "home").write_text("a file, not a folder")
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"},
           "XDG_CACHE_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    code = ("import numpy as np, graphconv; from graphconv.ops.elementwise import cpu; "
            "from graphconv.kernel_cache import kernel_cache_dir; "
            "x = np.ones((1, 1, 2, 2), np.float32); cpu.run_relu({}, {}, [x], np.empty_like(x)); "
            "print(kernel_cache_dir())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fallback = tmp_path / f"graphconv-{os.getuid()}" / f"kernels-{kernel_cache.sources_digest()}"
    assert out.stdout.strip() == str(fallback) and list(fallback.rglob("*.nbi"))


def test_an_explicit_cache_dir_wins(tmp_path):
    chosen = tmp_path / "mine"
    assert _cache_dir_in_fresh_process(tmp_path, NUMBA_CACHE_DIR=str(chosen)) == str(chosen)
    assert list(chosen.rglob("*.nbi")) and not (tmp_path / "graphconv").exists()


KERNEL = ("import numpy as np, graphconv; from graphconv.ops.softmax import cpu; "
          "x = np.ones((1, 3, 2, 2), np.float32); cpu._softmax(x, np.empty_like(x), False); "
          "print(len(cpu._softmax.stats.cache_misses))")


def test_a_damaged_cache_file_is_recompiled_not_fatal(tmp_path):
    """Garbage in the index or a data file of a graphconv kernel: the next run deletes
    it and compiles again (one cache miss), and the run after that loads from the
    cache once more."""
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "XDG_CACHE_HOME": str(tmp_path)}

    def misses():
        out = subprocess.run([sys.executable, "-c", KERNEL], env=env, capture_output=True, text=True,
                             cwd=tmp_path.parent)  # not beside the cache's own "graphconv" folder
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout)

    assert misses() == 1, "the first run compiles"
    assert misses() == 0, "the second loads from the cache"
    for pattern in ("*softmax*.nbc", "*softmax*.nbi"):
        damaged = list((tmp_path / "graphconv").rglob(pattern))
        assert damaged
        for path in damaged:
            path.write_bytes(os.urandom(64))
        assert misses() == 1, f"a damaged {pattern} file is a cache miss"
        assert misses() == 0, "and the rewritten cache is used again"


def test_processes_saving_different_signatures_at_once_never_mix_them_up(tmp_path, monkeypatch):
    """Two processes add a signature each to one kernel's cache, the second from the index
    as it was before the first wrote it (numba's own naming gave both data file number 1,
    and the index could name one signature's file holding the other's machine code: a
    segfault in every later run). Every entry the index keeps loads its own data."""
    from numba.core import caching
    monkeypatch.setattr(kernel_cache, "cache_root", lambda: tmp_path)
    assert kernel_cache.install_kernel_cache()
    first, second = (caching.IndexDataCacheFile(str(tmp_path / "kernels"), "kernel-1.py311", "stamp")
                     for _ in range(2))
    os.makedirs(tmp_path / "kernels")
    save_data = first._save_data

    def second_process_saves_meanwhile(name, data):  # with the index as it was: empty
        monkeypatch.setattr(second, "_load_index", lambda: {})
        second.save(("signature B",), "code for B")
        save_data(name, data)

    monkeypatch.setattr(first, "_save_data", second_process_saves_meanwhile)
    first.save(("signature A",), "code for A")
    index = first._load_index()
    assert index, "the index names what was saved"
    for key in index:
        assert first.load(key) == f"code for {key[0][-1]}"


PARALLEL_HELPER = '''
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def helper(a):
    for i in prange(a.size):
        a[i] += 1.0


@njit(cache=True)
def kernel(a):
    helper(a)
    return a.sum()
'''

RUN_KERNEL = '''
import os, sys
from pathlib import Path
from graphconv import kernel_cache
kernel_cache.cache_root = lambda: Path(os.environ["NUMBA_CACHE_DIR"])  # these files count as graphconv's
kernel_cache.install_kernel_cache()  # what importing graphconv.ops does
sys.path.insert(0, sys.argv[1])
import numpy as np
import parallel_helper
print(parallel_helper.kernel(np.zeros(1000)))
'''


def test_a_kernel_compiled_against_a_cached_parallel_helper_loads_in_a_fresh_process(tmp_path):
    """numba (issues 8578, 4807) caches a kernel compiled against a helper it loaded from
    the cache without the helper's need for a started thread pool; loaded first in a
    later process it segfaulted. Replayed: one process caches both, the kernel's entry
    is dropped, a second process compiles the kernel against the cached helper, and a
    third loads that kernel before anything else."""
    (tmp_path / "parallel_helper.py").write_text(PARALLEL_HELPER)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run():
        out = subprocess.run([sys.executable, "-c", RUN_KERNEL, str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"exit status {out.returncode}: {out.stderr[-2000:]}"
        assert float(out.stdout) == 1000.0

    run()
    for path in (tmp_path / "cache").rglob("parallel_helper.kernel-*"):
        path.unlink()
    run()
    run()


def test_any_garbage_in_a_cache_file_is_a_miss_not_an_error(tmp_path, monkeypatch):
    """Unpickling random bytes raises many kinds of error (CI once met an OverflowError
    the subprocess test above had never drawn); each one is a cache miss that removes the
    file. Many seeded byte strings, checked in process, where the draw is reproducible."""
    import numpy as np
    from numba.core import caching
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernel_cache.install_kernel_cache()
    directory = kernel_cache.kernel_cache_dir() / "fuzz"
    directory.mkdir(parents=True)
    cache_file = caching.IndexDataCacheFile(str(directory), "kernel", source_stamp=("stamp", 1))
    rng = np.random.default_rng(0)
    for _ in range(400):
        garbage = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        cache_file.save("key", ("code", 1))
        data_file = next(directory.glob("*.nbc"))
        data_file.write_bytes(garbage)
        assert cache_file.load("key") is None
        assert not data_file.exists()
        cache_file.save("key", ("code", 1))
        index_file = directory / "kernel.nbi"
        index_file.write_bytes(garbage)
        assert cache_file.load("key") is None
        assert not index_file.exists()
