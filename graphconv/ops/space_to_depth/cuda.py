"""CUDA space_to_depth: one thread per output element, reading the input pixel
`source_channel` names (the CPU kernel's rule)."""
from __future__ import annotations

from numba import cuda

from graphconv.ops import space_to_depth
from graphconv.ops.cuda_launch import grid_1d, unravel_nchw

source_channel = cuda.jit(device=True, inline=True)(space_to_depth.source_channel)


@cuda.jit
def _space_to_depth(x, block, channels_first, out):
    index = cuda.grid(1)
    n, c_out, rows, cols = out.shape
    if index >= n * c_out * rows * cols:
        return
    b, oc, y, j = unravel_nchw(index, c_out, rows, cols)
    ic, dy, dx = source_channel(oc, x.shape[1], block, channels_first)
    out[b, oc, y, j] = x[b, ic, y * block + dy, j * block + dx]


def run_space_to_depth(params: dict, weights: dict, inputs: list, out) -> None:
    blocks, threads = grid_1d(out.size)
    _space_to_depth[blocks, threads](inputs[0], params["block"], params["order"] == "channels", out)
