"""CPU pooling: one compiled loop nest per op, parallel over (image, channel) planes."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.registry import pair


@njit(cache=True, parallel=True)
def _pool(x, kh, kw, sh, sw, ph, pw, dh, dw, is_max):
    n, c, height, width = x.shape
    ho = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((n, c, ho, wo), np.float32)
    inv_area = 1.0 / (kh * kw)
    for plane in prange(n * c):
        b = plane // c
        ch = plane % c
        for oy in range(ho):
            for ox in range(wo):
                acc = -np.inf if is_max else 0.0
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= height:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pw + j * dw
                        if 0 <= ix < width:
                            v = x[b, ch, iy, ix]
                            if is_max:
                                acc = max(acc, v)
                            else:
                                acc += v
                out[b, ch, oy, ox] = acc if is_max else acc * inv_area
    return out


def _run(params: dict, x: np.ndarray, is_max: bool) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    return _pool(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, dh, dw, is_max)


def run_maxpool(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _run(params, inputs[0], True)


def run_avgpool(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _run(params, inputs[0], False)
