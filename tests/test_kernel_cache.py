"""numba's kernel cache is keyed by all of graphconv's sources, so a changed helper in
one file can never leave a stale copy inside a kernel cached from another."""
import os
import shutil
import subprocess
import sys

from graphconv import kernel_cache


def test_digest_changes_with_any_source_file(tmp_path):
    root = tmp_path / "pkg"
    shutil.copytree(kernel_cache.SOURCE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = kernel_cache.sources_digest(root)
    assert kernel_cache.sources_digest(root) == before, "the digest must be stable"
    helper = root / "ops" / "gemm_cpu.py"
    helper.write_text(helper.read_text() + "\n# a changed helper\n")
    assert kernel_cache.sources_digest(root) != before


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


def test_an_explicit_cache_dir_wins(tmp_path):
    chosen = tmp_path / "mine"
    assert _cache_dir_in_fresh_process(tmp_path, NUMBA_CACHE_DIR=str(chosen)) == str(chosen)
    assert list(chosen.rglob("*.nbi")) and not (tmp_path / "graphconv").exists()


KERNEL = ("import numpy as np, graphconv; from graphconv.ops.softmax import cpu; "
          "x = np.ones((1, 3, 2, 2), np.float32); cpu._softmax(x, np.empty_like(x)); "
          "print(len(cpu._softmax.stats.cache_misses))")


def test_a_damaged_cache_file_is_recompiled_not_fatal(tmp_path):
    """Garbage in the index or a data file of a graphconv kernel: the next run deletes
    it and compiles again (one cache miss), and the run after that loads from the
    cache once more."""
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "XDG_CACHE_HOME": str(tmp_path)}

    def misses():
        out = subprocess.run([sys.executable, "-c", KERNEL], env=env, capture_output=True, text=True)
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
