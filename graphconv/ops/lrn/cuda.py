"""CUDA LRN: one thread per output element, in float32.

Each thread sums the squares of its channel window at its pixel (consecutive threads
read consecutive pixels of each plane) and applies the power. One thread per pixel
walking all channels, the first version, left AlexNet's norm1 at 384 with 8836 threads
doing 96 powers each (0.41 ms on an H100, session 5): too few threads for the GPU. The
power (k + alpha/size * sum) ** -beta is 1 / sqrt(t * sqrt(t)) for AlexNet's beta = 0.75,
as on the CPU, else exp(-beta * log t), all in float32 (float64 arguments would make
every operation double precision)."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
from numba import cuda, float32

from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d, unravel_nchw


@cuda.jit
def _lrn(x, out, size, scale, beta, k):
    index = cuda.grid(1)
    n, c, height, width = x.shape
    if index >= n * c * height * width:
        return
    b, ch, y, xx = unravel_nchw(index, c, height, width)
    acc = float32(0.0)
    for j in range(max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)):
        v = x[b, j, y, xx]
        acc += v * v
    t = k + scale * acc
    if beta == float32(0.75):
        out[b, ch, y, xx] = x[b, ch, y, xx] / math.sqrt(t * math.sqrt(t))
    else:
        out[b, ch, y, xx] = x[b, ch, y, xx] * math.exp(-beta * math.log(t))


def _launches(params: dict, inputs: list, out) -> list[KernelCall]:
    x = inputs[0]
    size = params["size"]
    return [(_lrn, grid_1d(x.size), (x, out, size, np.float32(params["alpha"] / size), np.float32(params["beta"]),
                                     np.float32(params["k"])))]


def bind_lrn(params: dict, weights: dict) -> BoundLaunches:
    return BoundLaunches(partial(_launches, params))


def run_lrn(params: dict, weights: dict, inputs: list, out) -> None:
    bind_lrn(params, weights)(inputs, out)
