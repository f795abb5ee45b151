"""graphconv quiets idle BLAS/OpenMP workers by default but never overrides the user."""
import os

from graphconv import threads


def test_defaults_are_set_when_absent(monkeypatch):
    for name in threads.QUIET_WORKERS:
        monkeypatch.delenv(name, raising=False)
    threads.quiet_idle_workers()
    assert {name: os.environ[name] for name in threads.QUIET_WORKERS} == threads.QUIET_WORKERS


def test_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.quiet_idle_workers()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_importing_graphconv_applied_them():
    assert all(name in os.environ for name in threads.QUIET_WORKERS)
