"""CUDA shift_copies: one thread per output element."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _shift_copies(x, out, fy, fx, sy, sx):
    i = cuda.grid(1)
    n, c, height, width = x.shape
    if i < out.size:
        batch, channel, y, col = unravel_nchw(i, c, height, width)
        copy, image = batch // n, batch % n
        src_y, src_x = y + (copy // fx) * sy, col + (copy % fx) * sx
        value = 0.0
        if src_y < height and src_x < width:
            value = x[image, channel, src_y, src_x]
        out[batch, channel, y, col] = value


def run_shift_copies(params: dict, weights: dict, inputs: list, out) -> None:
    (fy, fx), (sy, sx) = params["factor"], params["step"]
    blocks, threads = grid_1d(out.size)
    _shift_copies[blocks, threads](inputs[0], out, fy, fx, sy, sx)
