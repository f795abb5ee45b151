"""CUDA global average pooling: one block per (image, channel) plane. Its threads sum
strided pixels and then halve the partial sums in shared memory, so a large map is
read by a whole block at once instead of by one thread in a serial loop."""
from __future__ import annotations

from numba import cuda, float64

THREADS = 64  # a power of two: the tree reduction halves it


@cuda.jit
def _global_mean(x, plane, out):
    job = cuda.blockIdx.x
    t = cuda.threadIdx.x
    partial = cuda.shared.array(THREADS, float64)
    total = 0.0
    for i in range(job * plane + t, (job + 1) * plane, THREADS):
        total += x[i]
    partial[t] = total
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step:
            partial[t] += partial[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        out[job] = partial[0] / plane


def run_globalavgpool(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, c, height, width = x.shape
    _global_mean[n * c, THREADS](x.reshape(x.size), height * width, out.reshape(out.size))
