"""CUDA channel mean, L2 norm and max: one thread per output position, reducing its
channels (the CPU kernel's loop; `what` as there)."""
from __future__ import annotations

import math

from numba import cuda

from graphconv.ops.channel_mean import L2NORM, MAX, MEAN
from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _over_channels(x, what, out):
    index = cuda.grid(1)
    n, c, height, width = x.shape
    if index >= n * height * width:
        return
    b, _, y, j = unravel_nchw(index, 1, height, width)
    if what == MAX:
        best = x[b, 0, y, j]
        for ch in range(1, c):
            v = x[b, ch, y, j]
            if v > best or v != v:
                best = v
                if v != v:
                    break
        out[b, 0, y, j] = best
        return
    total = 0.0
    for ch in range(c):
        v = x[b, ch, y, j]
        total += v * v if what == L2NORM else v
    out[b, 0, y, j] = math.sqrt(total) if what == L2NORM else total / c


def _launch(inputs: list, what: int, out) -> None:
    blocks, threads = grid_1d(out.size)
    _over_channels[blocks, threads](inputs[0], what, out)


def run_channel_mean(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(inputs, MEAN, out)


def run_channel_l2norm(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(inputs, L2NORM, out)


def run_channel_max(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(inputs, MAX, out)
