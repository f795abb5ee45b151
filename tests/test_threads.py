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


FORK_POOL_SCRIPT = """
import multiprocessing as mp, sys
import numpy as np, graphconv
model = graphconv.compile_model(sys.argv[1])
x = np.zeros((1, 1, 40, 40), np.float32)
model.run(x)  # the parent starts numba's threads
def job(_):
    return model.run(x).shape
with mp.get_context("fork").Pool(1) as pool:
    try:
        print("RESULT", pool.map_async(job, range(2)).get(timeout=60))
    except mp.TimeoutError:
        print("HUNG")
    except graphconv.GraphconvError as err:
        print("ERROR", err)
"""


def test_a_fork_pool_after_a_run_returns_or_names_the_fix_and_never_hangs(tmp_path):
    """GNU OpenMP does not survive fork(): numba kills a forked child that runs a
    parallel kernel, and the Pool waited forever for its tasks. The child raises a
    GraphconvError instead, naming spawn/forkserver, which Pool.map hands back."""
    import subprocess
    import sys
    from conftest import SPECS
    script = tmp_path / "fork_pool.py"
    script.write_text(FORK_POOL_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(SPECS / "lenet.yaml")], capture_output=True,
                          text=True, timeout=240)
    out = done.stdout
    assert "HUNG" not in out and done.returncode == 0, (out, done.stderr[-2000:])
    if "ERROR" in out:  # numba on GNU OpenMP (with tbb, its fork-safe layer, the pool just works)
        assert 'get_context("spawn")' in out and "forkserver" in out
    else:
        assert "RESULT [" in out, out


def test_a_child_is_marked_only_when_its_parent_had_started_gnu_openmp(monkeypatch):
    monkeypatch.setattr(threads, "_forked_after_openmp", False)
    monkeypatch.setattr(threads, "gnu_openmp_started", lambda: False)
    threads._after_fork_in_child()
    threads.check_not_forked_after_openmp()
    monkeypatch.setattr(threads, "gnu_openmp_started", lambda: True)
    threads._after_fork_in_child()
    with pytest.raises(threads.ForkedAfterOpenMPError, match="forkserver"):
        threads.check_not_forked_after_openmp()


TORCH_THREADS_SCRIPT = """
import sys
import numpy as np
if sys.argv[2] == "before":
    import torch
    torch.set_num_threads(3)
import graphconv
model = graphconv.compile_model(sys.argv[1])
model.run(np.zeros((1, 1, 40, 40), np.float32))  # numba's thread pool starts here
if sys.argv[2] == "after":
    import torch
print(torch.get_num_threads())
"""


@pytest.mark.parametrize("torch_imported", ["before", "after"])
def test_a_run_leaves_pytorch_s_thread_count_alone(tmp_path, torch_imported):
    """numba's omp layer sets OpenMP's thread count to its own as its pool starts, and
    PyTorch shares that libgomp: after one run with NUMBA_NUM_THREADS=1, a notebook's
    torch.get_num_threads() was 1 (set to 3 before it; a torch imported later had 1 from
    the start), its PyTorch code single-threaded from then on."""
    import subprocess
    import sys
    from conftest import SPECS
    pytest.importorskip("torch")
    script = tmp_path / "torch_threads.py"
    script.write_text(TORCH_THREADS_SCRIPT)
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, str(script), str(SPECS / "lenet.yaml"), torch_imported],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = 3 if torch_imported == "before" else _torch_default_threads(env)
    assert int(done.stdout.split()[-1]) == expected, done.stdout


def _torch_default_threads(env: dict) -> int:
    """PyTorch's own default, asked of a process without graphconv: it counts physical cores,
    so a 2-vCPU machine with two hyperthreads on one core gets 1, not the affinity's 2."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                          capture_output=True, text=True, timeout=240, env=env, check=True)
    return int(done.stdout.split()[-1])


def _cgroup_tree(root, membership: str, files: dict[str, str]):
    from conftest import cgroup_tree
    return threads.cpu_quota_cores(*cgroup_tree(root, membership, files))


@pytest.mark.parametrize("membership, files, cores", [
    # v2: docker --cpus 2, --cpus 1.5 (rounded up: 1.5 cores' time keeps 2 threads busier than 1), none,
    # an ancestor's lower quota (a Kubernetes pod's limit above its container's)
    ("0::/\n", {"cpu.max": "200000 100000"}, 2),
    ("0::/\n", {"cpu.max": "150000 100000"}, 2),
    ("0::/\n", {"cpu.max": "max 100000"}, None),
    ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "max 100000", "kubepods/pod1/cpu.max": "50000 100000"}, 1),
    # v1's cpu controller (often mounted as cpu,cpuacct): quota over period, -1 for none
    ("3:cpu,cpuacct:/job_4\n", {"cpu/job_4/cpu.cfs_quota_us": "400000", "cpu/job_4/cpu.cfs_period_us": "100000"}, 4),
    ("3:cpu,cpuacct:/job_4\n", {"cpu/job_4/cpu.cfs_quota_us": "-1", "cpu/job_4/cpu.cfs_period_us": "100000"}, None),
    ("", {}, None),
])
def test_a_container_s_cpu_quota_is_read_as_cores(tmp_path, membership, files, cores):
    """numba sized its pool by the cores the process may be scheduled on: 16 threads in a
    container allowed 2 cores' time, all stopped for the rest of each period once it was spent."""
    assert _cgroup_tree(tmp_path, membership, files) == cores


QUOTA_SCRIPT = """
import os, sys
from graphconv import threads
threads.cpu_quota_cores = lambda: 1  # a container allowed one core's time
threads.fit_pool_to_quota()
import numba
print(os.environ.get("NUMBA_NUM_THREADS"), numba.config.NUMBA_NUM_THREADS, threads.threads_chosen_by_user())
"""


@pytest.mark.skipif(threads._affinity_cores() < 2, reason="one core: no quota can leave fewer")
def test_numba_s_pool_is_sized_to_the_quota_before_numba_is_imported_unless_the_user_chose():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    sized = subprocess.run([sys.executable, "-c", QUOTA_SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert sized.stdout.split() == ["1", "1", "None"]  # graphconv's sizing, not the user's choice
    chosen = subprocess.run([sys.executable, "-c", QUOTA_SCRIPT], env={**env, "NUMBA_NUM_THREADS": "2"},
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.split() == ["2", "2", "2"]


def test_threads_set_lowers_the_kernels_threads_for_a_block_and_refuses_more_than_the_pool():
    import numba
    threads.start_numba_threads()
    before = numba.get_num_threads()
    with threads.threads_set(1):
        assert threads.kernel_threads() == numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(threads.GraphconvError, match=rf"^--threads {threads.pool_threads() + 1}: the CPU kernels "
                                                     rf"have {threads.pool_threads()} threads here"):
        with threads.threads_set(threads.pool_threads() + 1):
            pass
