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

import ctypes
import os
from pathlib import Path

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
