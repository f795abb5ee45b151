"""CUDA channel moves: one thread per output element."""
from __future__ import annotations

from numba import cuda

from graphconv.ops.channels import source_rule
from graphconv.ops.cuda_launch import grid_1d, unravel_nchw


@cuda.jit
def _gather_channels(x, groups, per_group, start, out):
    i = cuda.grid(1)
    n, c, height, width = out.shape
    if i >= n * c * height * width:
        return
    b, ch, y, xx = unravel_nchw(i, c, height, width)
    out[b, ch, y, xx] = x[b, (ch % groups) * per_group + ch // groups + start, y, xx]


def _gather(op: str, params: dict, inputs: list, out) -> None:
    x = inputs[0]
    blocks, threads = grid_1d(out.size)
    _gather_channels[blocks, threads](x, *source_rule(op, params, x.shape[1]), out)


def run_channel_shuffle(params: dict, weights: dict, inputs: list, out) -> None:
    _gather("channel_shuffle", params, inputs, out)


def run_slice_channels(params: dict, weights: dict, inputs: list, out) -> None:
    _gather("slice_channels", params, inputs, out)
