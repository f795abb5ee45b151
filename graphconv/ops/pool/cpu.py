"""CPU pooling: one compiled loop nest per op, parallel over (image, channel) planes."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.registry import pair


@njit(cache=True, parallel=True, boundscheck=False)
def _pool(x, kh, kw, sh, sw, ph, pw, dh, dw, is_max):
    """Each output row is built tap by tap: for tap (i, j) the output columns whose input
    column lies inside the image are worked out once, so the loop over them has no
    bounds tests and vectorises (the first version tested every tap of every output)."""
    n, c, height, width = x.shape
    ho = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((n, c, ho, wo), np.float32)
    inv_area = np.float32(1.0 / (kh * kw))
    start = np.float32(-np.inf) if is_max else np.float32(0.0)
    for plane in prange(n * c):
        b = plane // c
        ch = plane % c
        for oy in range(ho):
            row = out[b, ch, oy]
            row[:] = start
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= height:
                    continue
                src = x[b, ch, iy]
                for j in range(kw):
                    offset = j * dw - pw  # input column of output column ox is ox * sw + offset
                    first = max(0, -(offset // sw)) if offset < 0 else 0
                    end = min(wo, (width - 1 - offset) // sw + 1)
                    if is_max:
                        for ox in range(first, end):
                            row[ox] = max(row[ox], src[ox * sw + offset])
                    else:
                        for ox in range(first, end):
                            row[ox] += src[ox * sw + offset]
            if not is_max:
                for ox in range(wo):
                    row[ox] *= inv_area
    return out


def _run(params: dict, x: np.ndarray, is_max: bool) -> np.ndarray:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    return _pool(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, dh, dw, is_max)


def run_maxpool(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _run(params, inputs[0], True)


def run_avgpool(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _run(params, inputs[0], False)
