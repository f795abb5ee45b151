"""CUDA layernorm: one thread per position, walking its channels twice (a sum pass,
then the output); neighbouring threads read neighbouring positions, so loads coalesce."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from graphconv.ops.cuda_launch import grid_1d


@cuda.jit
def _layernorm(x, weight, bias, eps, out):
    i = cuda.grid(1)
    n, c, height, width = x.shape
    if i >= n * height * width:
        return
    b = i // (height * width)
    y = (i // width) % height
    j = i % width
    per_channel = np.float32(1.0) / np.float32(c)  # float32 throughout: dividing by the int c would be float64
    total = np.float32(0.0)
    for ch in range(c):
        total += x[b, ch, y, j]
    mean = total * per_channel
    squares = np.float32(0.0)
    for ch in range(c):
        d = x[b, ch, y, j] - mean
        squares += d * d
    inv = np.float32(1.0) / math.sqrt(squares * per_channel + eps)
    for ch in range(c):
        out[b, ch, y, j] = (x[b, ch, y, j] - mean) * inv * weight[ch] + bias[ch]


def run_layernorm(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    n, _, height, width = x.shape
    blocks, threads = grid_1d(n * height * width)
    _layernorm[blocks, threads](x, weights["weight"], weights["bias"], np.float32(params["eps"]), out)
