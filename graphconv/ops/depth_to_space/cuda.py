"""CUDA depth_to_space: one thread per output element, reading the input channel
`source_channel` names (the CPU kernel's rule)."""
from __future__ import annotations

from numba import cuda

from graphconv.ops import depth_to_space
from graphconv.ops.cuda_launch import grid_1d, unravel_nchw

source_channel = cuda.jit(device=True, inline=True)(depth_to_space.source_channel)


@cuda.jit
def _depth_to_space(x, block, channels_first, out):
    index = cuda.grid(1)
    n, c_out, rows, cols = out.shape
    if index >= n * c_out * rows * cols:
        return
    b, oc, y, j = unravel_nchw(index, c_out, rows, cols)
    ic = source_channel(oc, y % block, j % block, c_out, block, channels_first)
    out[b, oc, y, j] = x[b, ic, y // block, j // block]


def run_depth_to_space(params: dict, weights: dict, inputs: list, out) -> None:
    blocks, threads = grid_1d(out.size)
    _depth_to_space[blocks, threads](inputs[0], params["block"], params["order"] == "channels", out)
