"""CUDA sigmoid: one thread per element, on flat views."""
from __future__ import annotations

import math

from numba import cuda

from graphconv import cuda_backend


@cuda.jit
def _sigmoid(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = 1.0 / (1.0 + math.exp(-x[i]))


def run_sigmoid(params: dict, weights: dict, inputs: list):
    x = inputs[0]
    out = cuda_backend.empty(x.shape)
    blocks, threads = cuda_backend.grid_1d(x.size)
    _sigmoid[blocks, threads](x.reshape(x.size), out.reshape(out.size))
    return out
