"""graphconv quiets idle BLAS/OpenMP workers by default but never overrides the user."""
import os

import pytest

from graphconv import threads


def test_defaults_are_set_when_absent(monkeypatch):
    for name in [*threads.QUIET_WORKERS, "OMP_WAIT_POLICY"]:
        monkeypatch.delenv(name, raising=False)
    threads.quiet_idle_workers()
    assert {name: os.environ[name] for name in threads.QUIET_WORKERS} == threads.QUIET_WORKERS


def test_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    threads.quiet_idle_workers()
    assert os.environ["GOMP_SPINCOUNT"] == "5"


def test_an_explicit_openmp_wait_policy_is_not_overridden_by_a_spin_count(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    threads.quiet_idle_workers()
    assert "GOMP_SPINCOUNT" not in os.environ and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_importing_graphconv_sets_nothing_and_configure_process_sets_them():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in threads.QUIET_WORKERS and k != "OMP_WAIT_POLICY"}
    code = ("import os, graphconv; names = {names!r}; print(any(n in os.environ for n in names)); "
            "graphconv.configure_process(); print(all(n in os.environ for n in names))"
            ).format(names=sorted(threads.QUIET_WORKERS))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_an_openblas_loaded_earlier_is_requieted_only_when_graphconv_set_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "requiet_loaded_openblas", lambda: calls.append(1) or [])
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "10")
    threads.quiet_idle_workers()
    assert calls == []  # the user's own value was there when OpenBLAS loaded
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    threads.quiet_idle_workers()
    assert calls == [1]


REQUIET_AFTER_USE = """
import numpy as np
a = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
before = a @ a  # OpenBLAS's workers are running now
from graphconv import threads
print("requieted:", threads.requiet_loaded_openblas())
np.testing.assert_allclose(a @ a, before, rtol=1e-5)  # workers restart on the next call
print("ok")
"""


def test_requieting_openblas_keeps_it_working():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    result = subprocess.run([sys.executable, "-c", REQUIET_AFTER_USE], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.endswith("ok\n")
    if "openblas" not in result.stdout.split("ok")[0].lower():
        pytest.skip("numpy here does not use OpenBLAS")
