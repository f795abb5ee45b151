"""CUDA fake_quantize: one thread per element, on flat views, rounding half to even as
the CPU's np.rint does."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from graphconv.ops.cuda_launch import grid_1d
from graphconv.ops.fake_quantize import grid

HALF, ONE, TWO = np.float32(0.5), np.float32(1.0), np.float32(2.0)  # float literals would compute in float64
WHOLE = np.float32(1 << 23)  # every float32 this large is an integer


@cuda.jit(device=True)
def _round_half_even(v):
    """v - floor(v) is exact in float32 (both are multiples of v's last place); ties go to
    the even neighbour. From 2 ** 23 on every float32 is an integer, and infinities and
    NaN are what they are (numba's simulator cannot floor them)."""
    if not abs(v) < WHOLE:
        return v
    below = math.floor(v)
    above = v - below
    if above > HALF or (above == HALF and below - TWO * math.floor(below / TWO) == ONE):
        below += ONE
    return below


@cuda.jit
def _fake_quantize(x, out, scale, least, most):
    i = cuda.grid(1)
    if i < x.size:
        steps = _round_half_even(x[i] / scale)
        if steps < least:
            steps = least
        elif steps > most:
            steps = most
        out[i] = steps * scale


def run_fake_quantize(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    blocks, threads = grid_1d(x.size)
    _fake_quantize[blocks, threads](x.reshape(x.size), out.reshape(out.size), *grid(params))
