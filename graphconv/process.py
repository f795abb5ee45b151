"""`configure_process()`: the process-wide settings a fast CPU run wants, opt-in.

Importing graphconv changes nothing outside graphconv: no environment variables, no
thread pools, no malloc settings. These settings change how the whole process
behaves, so they are applied only when asked for: the `graphconv` command and the
benchmarks call this first thing; a script using the Python API calls it once,
before its first run, to get the same speed:

    import graphconv
    graphconv.configure_process()

What it does, and why (measured in the modules named):
* idle OpenBLAS and OpenMP workers sleep instead of spinning, so numba's parallel
  loops and OpenBLAS's SGEMM do not steal each other's cores (graphconv/threads.py:
  AlexNet-FCN at 384, 200 ms -> 87 ms on 2 cores);
* numba's thread pool is sized to the CPU time a container's or a batch job's cgroup
  allows (docker --cpus 2 on a 16-core machine: 2 threads, not 16 sharing 2 cores'
  time), where numba is not imported yet (graphconv/threads.py);
* glibc keeps freed memory, so each run's activations reuse pages instead of
  faulting in fresh ones (graphconv/allocator.py: a fresh 38 MB array 13.6 -> 2.0 ms);
* numba vectorises its loops 16 floats wide where the CPU has AVX-512, which LLVM
  avoids by default on Intel cores (graphconv/vector_width.py: EfficientNet-B0 8.1 ->
  7.2-7.7 ms on an Intel Xeon). Call it before anything compiles with numba: numba
  sets its compiler up once per process.

Settings the user made in the environment always win.
"""
from __future__ import annotations

from graphconv.allocator import keep_freed_memory
from graphconv.threads import fit_pool_to_quota, quiet_idle_workers
from graphconv.vector_width import prefer_wide_vectors


def configure_process() -> None:
    """Set this process up for fast CPU runs, as the `graphconv` command does: idle
    OpenBLAS/OpenMP workers sleep rather than spin, freed memory is kept for reuse, and
    numba vectorises 16 floats wide on AVX-512 (see graphconv.process). Call it once,
    first, before any model runs: numba sets its compiler up once per process, so a call
    after the first run keeps the vector width that run compiled with (and warns). Settings made in
    the environment win; calling it again does nothing more."""
    quiet_idle_workers()
    fit_pool_to_quota()
    keep_freed_memory()
    prefer_wide_vectors()
