"""`next_job(counter)`: the jobs of a parallel kernel handed out one at a time, to
whichever thread asks first.

The CPU kernels run `for t in prange(threads)` with one persistent scratch buffer per
thread, and used to give thread t the jobs t, t + threads, ... fixed in advance. On a
shared machine one core is often slower than the other for a few milliseconds (another
tenant on its sibling hyperthread or its cache), and a fixed split then waits for the
slow core's last job; onnxruntime's thread pool hands out work as threads become free.
numba's prange schedules statically whatever `set_parallel_chunksize` says (measured:
16 uneven iterations split 8 + 8 either way), so the kernels take their jobs from a
shared counter instead: a 1-element int64 array made before the parallel loop, from
which each thread takes `job = next_job(queue)` until the job number passes the last.

The job numbers and what each job computes are the same as before, so results stay
bit-identical; only which thread runs a job changes. Alternating in one process against
the fixed split (`outer` and `winograd`, medians per round): ResNet-50 at 224 0.93-0.99
in four runs, at 448 0.93-0.95, VGG-16 FCN at 384 0.95.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def next_job(typingctx, counter):
    """counter[0] += 1 atomically; the value before. `counter` is a 1-element int64 array
    shared by the threads. Read it only through this: after the parallel loop the
    function that made it may still see the 0 it wrote (measured; LLVM does not know
    the loop's threads wrote to it)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64 and counter.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        first = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", first, ir.Constant(ir.IntType(64), 1), "monotonic")
    return types.int64(counter), codegen


@njit(cache=True)
def job_counters(count):
    """`count` counters at 0 for `next_job`. Made in this plain function: in a
    parallel=True kernel numba makes `np.zeros` a parallel loop of its own, a fork and
    join of the threads (about 1 us) before the kernel's own (EfficientNet-B0 ran 145
    parallel regions a run for its 132 steps)."""
    return np.zeros(count, np.int64)
