import os
import signal
import subprocess
import sys
import textwrap

# CUDA kernels are tested on numba's simulator unless a real GPU is asked for
# (GRAPHCONV_TEST_GPU=1); numba reads this when it is first imported, so set it first.
if os.environ.get("GRAPHCONV_TEST_GPU") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

from pathlib import Path

import numpy as np
import pytest

import graphconv

graphconv.configure_process()  # as the CLI does: the suite's runs at the CLI's speed

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def graphconv_process(*args, cwd=None) -> subprocess.CompletedProcess:
    """`graphconv ARGS` in a process of its own, as a user runs it: its exit status and
    output (text) to check."""
    return subprocess.run([sys.executable, "-m", "graphconv", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def graphconv_in_process(*args) -> subprocess.CompletedProcess:
    """`graphconv ARGS` run by `graphconv.cli.main` in this process, its output captured:
    what `graphconv_process` gives, without a second's start-up (a fresh interpreter
    imports numba and loads the kernels again). For tests of what the command does,
    not of what the process around it does (signals, start-up, the environment)."""
    import contextlib
    import io

    from graphconv.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code if isinstance(stop.code, int) else 2
    return subprocess.CompletedProcess(["graphconv", *map(str, args)], status, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def isolated_pass_registry(monkeypatch):
    """Tests (and CLI runs with --plugin) may register passes and ops; none leaks into the next test."""
    from graphconv import pass_manager
    from graphconv.ops import registry
    pass_manager.load_builtin_passes()
    monkeypatch.setattr(pass_manager, "_REGISTRY", dict(pass_manager._REGISTRY))
    monkeypatch.setattr(pass_manager, "PLUGIN_OPS", dict(pass_manager.PLUGIN_OPS))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture(autouse=True)
def working_folder_is_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own folder, as a user runs graphconv in theirs: messages
    name files relative to it (`errors.shown_path`), and nothing lands in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def torch_weights_do_not_depend_on_earlier_tests():
    """Modules a test builds take their weights from torch's global generator: seeded per
    test, they are the same whichever tests ran before on that worker. (Only where a test
    module has imported torch: the rest never load it.)"""
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(0)


@pytest.fixture(autouse=True)
def no_chunk_failed_before(monkeypatch):
    """A TIFF chunk that failed to decode silences asyncio's reports of pending tasks for
    the rest of the process (`sources._CHUNK_FAILED`): not across tests."""
    from graphconv import sources
    monkeypatch.setattr(sources, "_CHUNK_FAILED", False)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def write_spec(tmp_path):
    """write_spec(text, name="net.yaml") -> path of a spec file written from dedented text."""
    def write(text: str, name: str = "net.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path
    return write


def random_input(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def cgroup_tree(root: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /proc/self/cgroup and a /sys/fs/cgroup tree under `root` (their paths returned):
    `files` maps a file below the mount ("memory/job/memory.limit_in_bytes") to its contents."""
    (root / "cgroup").write_text(membership)
    for name, text in files.items():
        (root / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "fs" / name).write_text(text + "\n")
    return root / "cgroup", root / "fs"


HANG_SECONDS = 120


@pytest.fixture
def fails_if_it_hangs():
    """Fail the test after HANG_SECONDS rather than hang the suite: for the tests of a FIFO
    or /dev/zero, which a regression waits on, or reads, for ever (pytest.fail's exception
    is no Exception, so no `except Exception` in graphconv swallows it)."""
    def stop(signum, frame):
        pytest.fail(f"still running after {HANG_SECONDS} s: waiting on a pipe or reading a device?")
    before = signal.signal(signal.SIGALRM, stop)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
