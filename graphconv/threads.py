"""Keep the two thread pools of a CPU run from fighting over the cores.

A CPU run alternates between numba's parallel loops (im2col, pooling, LRN, ...) and
OpenBLAS's threaded SGEMM. By default both pools busy-wait after finishing a piece
of work: OpenBLAS's workers spin for about 2^28 cycles and GNU OpenMP's (numba's
default threading layer here) for a while too, so each pool's spinning threads
steal the cores the other one needs next. On a 2-core machine that made AlexNet-FCN
twice as slow (200 ms against 87 ms at 384x384; see benchmarks/README.md).

The settings below make idle workers sleep at once. They are read when the
libraries load, so this runs as the first thing `import graphconv` does, and an
explicit setting in the environment always wins.
"""
from __future__ import annotations

import os

QUIET_WORKERS = {
    "OPENBLAS_THREAD_TIMEOUT": "4",  # spin 2^4 cycles (the minimum) before sleeping
    "OMP_WAIT_POLICY": "PASSIVE",    # OpenMP workers sleep between parallel regions
}


def quiet_idle_workers() -> None:
    """Set the idle-wait settings above unless the user chose their own."""
    for name, value in QUIET_WORKERS.items():
        os.environ.setdefault(name, value)
