"""CUDA global L2 norm: one block per (image, channel) plane, as the global average pool:
its threads sum the squares of strided pixels and halve the partial sums in shared
memory, then one thread takes the square root."""
from __future__ import annotations

import math

from numba import cuda, float64

THREADS = 64  # a power of two: the tree reduction halves it


@cuda.jit
def _global_norm(x, plane, out):
    job = cuda.blockIdx.x
    t = cuda.threadIdx.x
    partial = cuda.shared.array(THREADS, float64)
    total = 0.0
    for i in range(job * plane + t, (job + 1) * plane, THREADS):
        v = float64(x[i])
        total += v * v
    partial[t] = total
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step:
            partial[t] += partial[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        out[job] = math.sqrt(partial[0])


def run_global_l2norm(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, c, height, width = x.shape
    _global_norm[n * c, THREADS](x.reshape(x.size), height * width, out.reshape(out.size))
