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


def test_an_explicit_cache_dir_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert kernel_cache.use_versioned_cache() is None
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)


def test_importing_graphconv_points_numba_at_the_versioned_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = ("import numba, graphconv, graphconv.ops.gemm_cpu; "
            "print(numba.config.CACHE_DIR)")  # numba imported first: config must follow too
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    expected = tmp_path / "graphconv" / f"kernels-{kernel_cache.sources_digest()}"
    assert out.stdout.strip() == str(expected)
    assert expected.is_dir(), "numba writes its cache index there"


KERNEL = """
import graphconv
from numba import njit

@njit(cache=True)
def twice(x):
    return 2 * x

print(twice(21), len(twice.stats.cache_misses))
"""


def test_a_damaged_cache_file_is_recompiled_not_fatal(tmp_path):
    """Garbage in the index or a data file: the next run deletes it and compiles again
    (one cache miss), and the run after that loads from the cache once more."""
    (tmp_path / "kernel_module.py").write_text(KERNEL)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run():
        out = subprocess.run([sys.executable, "kernel_module.py"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        value, misses = out.stdout.split()
        assert value == "42"
        return int(misses)

    assert run() == 1, "the first run compiles"
    assert run() == 0, "the second loads from the cache"
    for pattern in ("*.nbc", "*.nbi"):
        for path in (tmp_path / "cache").rglob(pattern):
            path.write_bytes(os.urandom(64))
        assert run() == 1, f"a damaged {pattern} file is a cache miss"
        assert run() == 0, "and the rewritten cache is used again"
