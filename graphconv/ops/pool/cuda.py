"""CUDA pooling: one thread per output element, consecutive threads on consecutive columns.

Taps outside the image (in the padding, or past it where a ceil-mode window hangs off
the end) are left out of a max; an average divides by the taps that count along each
axis, those in the image and its padding (count_include_pad) or in the image alone, as
the CPU kernel and PyTorch do."""
from __future__ import annotations

import math
from functools import partial

from numba import cuda

from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d, unravel_nchw
from graphconv.ops.registry import pair


@cuda.jit(device=True, inline=True)
def _counted_taps(o, k, s, p, d, size, include_pad):
    """Taps of window `o` along one axis that an average divides by."""
    low = -p if include_pad else 0
    high = size + p if include_pad else size
    count = 0
    for t in range(k):
        pos = o * s - p + t * d
        if low <= pos < high:
            count += 1
    return count


@cuda.jit
def _pool(x, out, kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad):
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
                    if is_max:
                        acc = v if v > acc or v != v else acc  # a NaN wins, as on the CPU and in PyTorch
                    else:
                        acc += v
    if is_max:
        out[b, ch, oy, ox] = acc
    else:
        count = (_counted_taps(oy, kh, sh, ph, dh, height, include_pad)
                 * _counted_taps(ox, kw, sw, pw, dw, width, include_pad))
        out[b, ch, oy, ox] = acc / count if count > 0 else 0.0


def _launches(params: dict, is_max: bool, inputs: list, out) -> list[KernelCall]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    include_pad = is_max or params["count_include_pad"]  # maxpool has no such parameter
    return [(_pool, grid_1d(out.size), (inputs[0], out, kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad))]


def bind_maxpool(params: dict, weights: dict) -> BoundLaunches:
    return BoundLaunches(partial(_launches, params, True))


def bind_avgpool(params: dict, weights: dict) -> BoundLaunches:
    return BoundLaunches(partial(_launches, params, False))


def run_maxpool(params: dict, weights: dict, inputs: list, out) -> None:
    bind_maxpool(params, weights)(inputs, out)


def run_avgpool(params: dict, weights: dict, inputs: list, out) -> None:
    bind_avgpool(params, weights)(inputs, out)
