"""Keep the two thread pools of a CPU run from fighting over the cores.

A CPU run alternates between numba's parallel loops (im2col, pooling, LRN, ...) and
OpenBLAS's threaded SGEMM. By default both pools busy-wait after finishing a piece
of work: OpenBLAS's workers spin for about 2^28 cycles and GNU OpenMP's (numba's
default threading layer here) for a while too, so each pool's spinning threads
steal the cores the other one needs next. On a 2-core machine that made AlexNet-FCN
twice as slow (200 ms against 87 ms at 384x384; see benchmarks/README.md).

The settings below make idle OpenBLAS workers sleep at once, and idle OpenMP workers
after a short spin. They are read when the libraries load, so `configure_process()`
(graphconv/process.py) applies them before the first run, and an explicit setting in
the environment always wins.

The OpenMP spin (GOMP_SPINCOUNT, GNU OpenMP's busy-wait iterations before a worker
sleeps; 10000 is roughly 0.1-0.2 ms) covers the gap between two kernels of one run, so
numba's workers are awake when the next parallel loop starts, and ends long before a
caller's next image. Sleeping at once (OMP_WAIT_POLICY=PASSIVE, the setting until
session 8) made every parallel loop wake them: with the conv layers off OpenBLAS, that
cost more than the fights it prevented. On 2 cores (benchmarks/cpu_vs_ort.py, medians
of 7): AlexNet classifier 25.1 -> 15.6-16.2 ms, AlexNet-FCN 54.3 -> 49.1-51.5, ResNet-50
63.9 -> 58.3-59.0, VGG-16 and ResNet-50 dense level; spinning for libgomp's default
300000 iterations (a few ms) made VGG-16 FCN 415 -> 459 ms and ResNet-50 dense 225 -> 284.

graphconv's kernels call numpy's OpenBLAS, and a script that imports numpy before
graphconv (nearly every script) has loaded it already, with its workers spinning:
AlexNet-FCN at 384x384 then took 143-149 ms against 87-90 ms. So an OpenBLAS that is
already loaded is told to read the environment again and to stop its workers, which
it restarts, with the new setting, on its next call.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
from pathlib import Path
from typing import Iterator

from graphconv.cgroups import CGROUP_MOUNT, lowest_limit
from graphconv.errors import GraphconvError

QUIET_WORKERS = {
    "OPENBLAS_THREAD_TIMEOUT": "4",  # spin 2^4 cycles (the minimum) before sleeping
    "GOMP_SPINCOUNT": "10000",       # OpenMP workers spin briefly between parallel regions, then sleep
}


def quiet_idle_workers() -> None:
    """Set the idle-wait settings above unless the user chose their own (for OpenMP, an
    OMP_WAIT_POLICY is a choice too), and apply the OpenBLAS one to any OpenBLAS loaded
    before they were set."""
    chosen_by_user = "OPENBLAS_THREAD_TIMEOUT" in os.environ
    for name, value in QUIET_WORKERS.items():
        if name == "GOMP_SPINCOUNT" and "OMP_WAIT_POLICY" in os.environ:
            continue
        os.environ.setdefault(name, value)
    if not chosen_by_user:
        requiet_loaded_openblas()


def requiet_loaded_openblas() -> list[str]:
    """Make every OpenBLAS already in this process re-read OPENBLAS_THREAD_TIMEOUT and
    restart its worker threads (`blas_thread_shutdown_` is what OpenBLAS itself calls
    around fork; its next call starts the workers again, reading the new timeout).
    Returns the libraries it re-quieted. Linux only; elsewhere, or for a BLAS without
    these entry points (MKL, Accelerate), it does nothing."""
    done = []
    for path in _loaded_libraries("openblas"):
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except (OSError, AttributeError):
            continue
        read_env()
        shutdown()
        done.append(path)
    return done


def _loaded_libraries(name_part: str) -> list[str]:
    """Shared libraries mapped into this process whose file name contains `name_part`."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    fields = (line.split(maxsplit=5) for line in maps.splitlines())
    paths = {f[5] for f in fields if len(f) == 6}  # address, perms, offset, dev, inode, path
    return sorted(p for p in paths if name_part in Path(p).name and ".so" in Path(p).name)


# ---- the caller's OpenMP thread count ---------------------------------------------------
#
# numba's omp layer, as it starts its thread pool (once per process), sets OpenMP's
# thread count (omp_set_num_threads) to numba's on the calling thread. PyTorch's CPU
# wheel loads its libgomp.so.1 under the same name, so the two share it, and PyTorch
# reads its thread count from that setting: a notebook's torch.get_num_threads() went
# from 2 to 1 at its first graphconv run with NUMBA_NUM_THREADS=1 (a review), its
# PyTorch code single-threaded from then on, and a torch imported after the run started
# with 1. graphconv starts the pool itself (`start_numba_threads`, before it loads or
# runs a kernel) and puts the setting back. numba's parallel loops later leave it alone.

OPENMP_LIBRARY = "libgomp.so.1"


def start_numba_threads() -> None:
    """Start numba's thread pool, where it has not started, leaving the calling thread's
    OpenMP thread count as it was (OpenMP's default, where starting it loaded OpenMP)."""
    import numba
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):
        return
    lib = _loaded_openmp()
    before = lib.omp_get_max_threads() if lib is not None else None
    try:
        numba.get_num_threads()  # starts the pool
    except ValueError as err:  # NUMBA_THREADING_LAYER names one not installed (tbb) or unknown
        layer = os.environ.get("NUMBA_THREADING_LAYER")
        said = f"NUMBA_THREADING_LAYER={layer!r}: " if layer else ""
        raise GraphconvError(f"{said}numba could not start its threads: {' '.join(str(err).split())}") from None
    lib = lib or _loaded_openmp()
    if lib is None:
        return
    before = before if before is not None else _openmp_default_threads()
    if lib.omp_get_max_threads() != before:
        lib.omp_set_num_threads(before)


def _loaded_openmp():
    """The GNU OpenMP library this process has loaded, or None (not loaded yet, or
    another OpenMP): looked up without loading it."""
    try:
        lib = ctypes.CDLL(OPENMP_LIBRARY, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        return lib if hasattr(lib, "omp_get_max_threads") and hasattr(lib, "omp_set_num_threads") else None
    except (OSError, AttributeError):  # not loaded; no RTLD_NOLOAD off Linux
        return None


def _openmp_default_threads() -> int:
    """The thread count OpenMP gives a thread it has not been told one: OMP_NUM_THREADS's
    first number, else the cores this process may run on."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        return int(first)
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, Slurm's and
    cgroups' CPU sets) and its cgroup's CPU quota (`cpu_quota_cores`), not the machine's
    count, which oversubscribes such a job."""
    quota = cpu_quota_cores()
    return min(_affinity_cores(), quota) if quota else _affinity_cores()


def _affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity off Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=8)
def cpu_quota_cores(membership: str | os.PathLike = "/proc/self/cgroup",
                    mount: str | os.PathLike = CGROUP_MOUNT) -> int | None:
    """The cores' worth of CPU time this process's cgroups allow, rounded up (`docker
    --cpus 2`, a Kubernetes pod's CPU limit: cgroup v2's `cpu.max`, v1's
    `cpu.cfs_quota_us` over `cpu.cfs_period_us`), or None where none is set. numba sizes
    its pool by the cores the process may be scheduled on, all 16 of such a container's
    machine: 16 threads then share 2 cores' time, and the kernel stops them all for the
    rest of each 100 ms period once it is spent. Read once per process."""
    quota = lowest_limit(_v2_cpu_quota, "cpu", _v1_cpu_quota, membership, mount)
    return None if quota is None else max(1, math.ceil(quota - 1e-6))


def _v2_cpu_quota(folder: Path) -> float | None:
    quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")  # "200000 100000", "max 100000"
    return int(quota) / int(period) if quota.isdigit() and period.isdigit() and int(period) > 0 else None


def _v1_cpu_quota(folder: Path) -> float | None:
    quota = int((folder / "cpu.cfs_quota_us").read_text())  # -1: none
    period = int((folder / "cpu.cfs_period_us").read_text())
    return quota / period if quota > 0 and period > 0 else None


# ---- how many threads the kernels run on ------------------------------------------------
#
# numba starts its pool once per process, of NUMBA_NUM_THREADS threads (default: the
# cores the process may be scheduled on, blind to a cgroup's quota), and a kernel splits
# its work over `numba.get_num_threads()`, which `numba.set_num_threads` lowers for the
# calling thread. The `graphconv` command sizes the pool to `usable_cores` before numba is
# imported (`fit_pool_to_quota`), and its --threads lowers the count for its run.

_POOL_SIZED_BY_GRAPHCONV = False


def fit_pool_to_quota() -> None:
    """Where the cgroup's CPU quota leaves fewer cores than the process may be scheduled
    on, and the user chose no NUMBA_NUM_THREADS, set it to the quota's cores: before numba
    is imported (numba reads it then), else nothing. `configure_process` calls it, and the
    command's entry point before it imports anything else."""
    global _POOL_SIZED_BY_GRAPHCONV
    if "NUMBA_NUM_THREADS" in os.environ or "numba" in sys.modules:
        return
    if usable_cores() < _affinity_cores():
        os.environ["NUMBA_NUM_THREADS"] = str(usable_cores())
        _POOL_SIZED_BY_GRAPHCONV = True


def threads_chosen_by_user() -> int | None:
    """NUMBA_NUM_THREADS where the user set it (not `fit_pool_to_quota`), else None."""
    value = os.environ.get("NUMBA_NUM_THREADS")
    return int(value) if value and value.strip().isdigit() and not _POOL_SIZED_BY_GRAPHCONV else None


def pool_threads() -> int:
    """The threads numba's pool has, or will start with."""
    from numba.core import config
    return int(config.NUMBA_NUM_THREADS)


def kernel_threads() -> int:
    """The threads a CPU kernel run now on this thread splits its work over (each keeps
    its own scratch): numba's count once its pool runs, else the pool it will start."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False):
        import numba
        return numba.get_num_threads()
    return pool_threads() if "numba" in sys.modules else usable_cores()


@contextlib.contextmanager
def threads_set(threads: int | None, flag: str = "--threads") -> Iterator[None]:
    """The CPU kernels run on `threads` of numba's pool on this thread for the block (None:
    all of them), the count before restored after it (a command run from a notebook left
    its --threads to everything after it). More threads than the pool has are refused."""
    if threads is None:
        yield
        return
    import numba
    pool = pool_threads()
    if threads > pool:
        why = ("NUMBA_NUM_THREADS" if threads_chosen_by_user() else
               f"the cores this process may use{_quota_said()}; NUMBA_NUM_THREADS={threads} starts a larger pool")
        raise GraphconvError(f"{flag} {threads}: the CPU kernels have {pool} threads here ({why})")
    start_numba_threads()
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _quota_said() -> str:
    quota = cpu_quota_cores()
    return f": its cgroup allows {quota} cores' time" if quota and quota < _affinity_cores() else ""


# ---- fork() after GNU OpenMP -------------------------------------------------------------
#
# numba's CPU kernels run their parallel loops on its "omp" threading layer here (GNU
# OpenMP: numba's first choice, tbb, is not installed; its last, workqueue, aborts when two
# threads run kernels at once, which graphconv allows). GNU OpenMP's worker threads do not
# survive fork(), and numba's omp layer, called in a process forked from one that started
# it, prints "Terminating: fork() called from a process already using GNU OpenMP, this is
# unsafe." and kills that process: a fork-based multiprocessing.Pool whose parent ran a
# model loses every task and never returns. Nothing can bring the pool back in the child
# (its kernels are linked to the omp layer, which numba starts once per process), so the
# child is told instead, before any kernel runs, in an error Pool.map hands back to the
# parent.

FORK_ADVICE = ("use multiprocessing.get_context(\"spawn\") or get_context(\"forkserver\") for the pool "
               "(concurrent.futures.ProcessPoolExecutor(mp_context=...), joblib's default loky, Dask), or "
               "install tbb (pip install tbb), numba's fork-safe threading layer")


class ForkedAfterOpenMPError(GraphconvError):
    """A CPU run in a process forked from one whose numba kernels had started GNU OpenMP."""


_forked_after_openmp = False


def gnu_openmp_started() -> bool:
    """Whether numba's GNU OpenMP threading layer has started in this process (or in the
    one it was forked from). Looks only at modules already imported: it imports nothing."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or not getattr(parallel, "_is_initialized", False):
        return False
    if getattr(parallel, "_threading_layer", None) != "omp":
        return False
    omppool = sys.modules.get("numba.np.ufunc.omppool")
    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def _after_fork_in_child() -> None:
    """Remember, in the child, that its parent had started GNU OpenMP (a grandchild
    inherits the mark: its OpenMP state is just as broken)."""
    global _forked_after_openmp
    _forked_after_openmp = _forked_after_openmp or gnu_openmp_started()


def check_not_forked_after_openmp() -> None:
    """Raise ForkedAfterOpenMPError, naming the fix, in a process forked after GNU OpenMP
    started: a CPU kernel run here would kill the process (and hang a Pool)."""
    if _forked_after_openmp:
        raise ForkedAfterOpenMPError(
            "this process was forked (multiprocessing's default 'fork' start method on Linux) from one that had "
            "already started numba's GNU OpenMP threads, which graphconv's CPU kernels run on and which do not "
            f"survive fork(): a CPU run here would kill the process. {FORK_ADVICE[0].upper()}{FORK_ADVICE[1:]}")


if hasattr(os, "register_at_fork"):  # POSIX; the hook only sets the flag above
    os.register_at_fork(after_in_child=_after_fork_in_child)
