"""CPU conv: im2col into a bounded buffer, one SGEMM per chunk, then a fused bias(+ReLU) epilogue.

The whole convolution is one call into compiled code. Columns are built in chunks of
output rows so the scratch buffer stays small (VGG's first layers at 384x384 would
otherwise need hundreds of MB) while each GEMM stays large enough to run at BLAS speed.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.registry import pair

SCRATCH_FLOATS = 1 << 22  # 16 MB of im2col columns per chunk


@njit(cache=True, parallel=True)
def _im2col(x, c0, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, q0, q1, cols):
    """cols[(c, i, j), (q - q0) * wo + ox] = x[n, c0 + c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
    for output rows q = n * ho + oy in [q0, q1), zero where that falls in the padding."""
    height, width = x.shape[2], x.shape[3]
    for r in prange(cols.shape[0]):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        for q in range(q0, q1):
            n = q // ho
            iy = (q % ho) * sh - ph + i * dh
            base = (q - q0) * wo
            if iy < 0 or iy >= height:
                for ox in range(wo):
                    cols[r, base + ox] = 0.0
                continue
            for ox in range(wo):
                ix = ox * sw - pw + j * dw
                cols[r, base + ox] = x[n, c0 + c, iy, ix] if 0 <= ix < width else 0.0


@njit(cache=True, parallel=True)
def _epilogue(res, bias, o0, q0, q1, ho, wo, relu, out):
    """out[n, o0 + o, oy, :] = res[o, row] + bias[o0 + o], clamped at 0 when relu."""
    for o in prange(res.shape[0]):
        b = bias[o0 + o]
        for q in range(q0, q1):
            n = q // ho
            oy = q % ho
            base = (q - q0) * wo
            for ox in range(wo):
                v = res[o, base + ox] + b
                out[n, o0 + o, oy, ox] = max(v, 0.0) if relu else v


def run_conv(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x, = inputs
    w = weights["weight"]
    out_c, c_per_group, kh, kw = w.shape
    groups = params["groups"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(out_c, np.float32)
    (sh, sw), (ph, pw), (dh, dw) = (pair(params[k]) for k in ("stride", "padding", "dilation"))
    w3 = w.reshape(groups, out_c // groups, c_per_group * kh * kw)
    return conv2d_grouped(np.ascontiguousarray(x), w3, bias, kh, kw, sh, sw, ph, pw, dh, dw,
                          params["activation"] == "relu", SCRATCH_FLOATS)


@njit(cache=True)
def conv2d_grouped(x, w3, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu, scratch_floats):
    n, c, height, width = x.shape
    groups, og, k = w3.shape
    ho = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((n, groups * og, ho, wo), np.float32)
    total_rows = n * ho
    rows = max(1, min(total_rows, scratch_floats // max(1, k * wo)))
    cols = np.empty((k, rows * wo), np.float32)
    res = np.empty((og, rows * wo), np.float32)
    cg = c // groups
    for g in range(groups):
        wg = w3[g]
        for q0 in range(0, total_rows, rows):
            q1 = min(total_rows, q0 + rows)
            if q1 - q0 == rows:
                cols_q, res_q = cols, res
            else:
                cols_q = np.empty((k, (q1 - q0) * wo), np.float32)
                res_q = np.empty((og, (q1 - q0) * wo), np.float32)
            _im2col(x, g * cg, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, q0, q1, cols_q)
            np.dot(wg, cols_q, res_q)
            _epilogue(res_q, bias, g * og, q0, q1, ho, wo, relu, out)
    return out
