"""CUDA groupnorm: one block per (image, group), whose run of C / groups planes is
contiguous. Its threads sum strided values and `block_sum` adds their partial sums (the
mean), then the same for the squared differences from it (the variance), then they write
the output, scaled and shifted per channel, in float64 like the CPU kernel."""
from __future__ import annotations

from numba import cuda, float64

from graphconv.ops.cuda_launch import REDUCE_THREADS, block_sum


@cuda.jit
def _groupnorm(x, run, plane, per_group, weight, bias, eps, out):
    job = cuda.blockIdx.x
    t = cuda.threadIdx.x
    partial = cuda.shared.array(REDUCE_THREADS, float64)
    start = job * run
    total = 0.0
    for i in range(start + t, start + run, REDUCE_THREADS):
        total += x[i]
    mean = block_sum(partial, total, t) / run
    squares = 0.0
    for i in range(start + t, start + run, REDUCE_THREADS):
        d = x[i] - mean
        squares += d * d
    scale = 1.0 / (block_sum(partial, squares, t) / run + eps) ** 0.5
    groups = weight.size // per_group
    first_channel = (job % groups) * per_group
    for i in range(start + t, start + run, REDUCE_THREADS):
        ch = first_channel + (i - start) // plane
        out[i] = (x[i] - mean) * scale * weight[ch] + bias[ch]


def run_groupnorm(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, c, height, width = x.shape
    groups = params["groups"]
    per_group = c // groups
    _groupnorm[n * groups, REDUCE_THREADS](x.reshape(x.size), per_group * height * width, height * width, per_group,
                                    weights["weight"], weights["bias"], params["eps"], out.reshape(out.size))
