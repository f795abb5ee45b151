"""CUDA pooling: one thread per output element, consecutive threads on consecutive columns."""
from __future__ import annotations

import math

from numba import cuda

from graphconv.ops.cuda_launch import grid_1d, unravel_nchw
from graphconv.ops.registry import pair


@cuda.jit
def _pool(x, out, kh, kw, sh, sw, ph, pw, dh, dw, is_max):
    index = cuda.grid(1)
    n, c, ho, wo = out.shape
    if index >= n * c * ho * wo:
        return
    b, ch, oy, ox = unravel_nchw(index, c, ho, wo)
    height, width = x.shape[2], x.shape[3]
    acc = -math.inf if is_max else 0.0
    for i in range(kh):
        iy = oy * sh - ph + i * dh
        if 0 <= iy < height:
            for j in range(kw):
                ix = ox * sw - pw + j * dw
                if 0 <= ix < width:
                    v = x[b, ch, iy, ix]
                    acc = max(acc, v) if is_max else acc + v
    out[b, ch, oy, ox] = acc if is_max else acc / (kh * kw)


def _run(params: dict, x, is_max: bool, out) -> None:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    blocks, threads = grid_1d(out.size)
    _pool[blocks, threads](x, out, kh, kw, sh, sw, ph, pw, dh, dw, is_max)


def run_maxpool(params: dict, weights: dict, inputs: list, out) -> None:
    _run(params, inputs[0], True, out)


def run_avgpool(params: dict, weights: dict, inputs: list, out) -> None:
    _run(params, inputs[0], False, out)
