"""CUDA global L2 norm: one block per (image, channel) plane, as the global average pool:
its threads sum the squares of strided pixels, `block_sum` adds their partial sums, and
one thread takes the square root."""
from __future__ import annotations

import math

from numba import cuda, float64

from graphconv.ops.cuda_launch import REDUCE_THREADS, block_sum


@cuda.jit
def _global_norm(x, plane, out):
    job = cuda.blockIdx.x
    t = cuda.threadIdx.x
    partial = cuda.shared.array(REDUCE_THREADS, float64)
    total = 0.0
    for i in range(job * plane + t, (job + 1) * plane, REDUCE_THREADS):
        v = float64(x[i])
        total += v * v
    total = block_sum(partial, total, t)
    if t == 0:
        out[job] = math.sqrt(total)


def run_global_l2norm(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, c, height, width = x.shape
    _global_norm[n * c, REDUCE_THREADS](x.reshape(x.size), height * width, out.reshape(out.size))
