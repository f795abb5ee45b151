"""CUDA global average pooling: one block per (image, channel) plane. Its threads sum
strided pixels and then halve the partial sums in shared memory (`block_sum`), so a
large map is read by a whole block at once instead of by one thread in a serial loop."""
from __future__ import annotations

from numba import cuda, float64

from graphconv.ops.cuda_launch import REDUCE_THREADS, block_sum


@cuda.jit
def _global_mean(x, plane, out):
    job = cuda.blockIdx.x
    t = cuda.threadIdx.x
    partial = cuda.shared.array(REDUCE_THREADS, float64)
    total = 0.0
    for i in range(job * plane + t, (job + 1) * plane, REDUCE_THREADS):
        total += x[i]
    total = block_sum(partial, total, t)
    if t == 0:
        out[job] = total / plane


def run_globalavgpool(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, c, height, width = x.shape
    _global_mean[n * c, REDUCE_THREADS](x.reshape(x.size), height * width, out.reshape(out.size))
