"""CUDA conv as an implicit GEMM: out[o, t] = sum_k W[o, k] * cols[k, t], where the im2col
matrix `cols` is never stored; each 16x16 tile of it is gathered from the input into
shared memory. threadIdx.x walks output positions, so loads and stores coalesce. A
residual input is added in the same epilogue as the bias."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from graphconv.ops.registry import pair

TILE = 16


@cuda.jit
def _conv_gemm(x, w2, bias, res, residual, out, cg, kh, kw, sh, sw, ph, pw, dh, dw, og, relu):
    w_tile = cuda.shared.array((TILE, TILE), float32)
    x_tile = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    g = cuda.blockIdx.z
    col = cuda.blockIdx.x * TILE + tx
    row = cuda.blockIdx.y * TILE + ty
    n_img, _, height, width = x.shape
    ho, wo = out.shape[2], out.shape[3]
    positions = ho * wo
    total = n_img * positions
    k_total = cg * kh * kw
    n = col // positions
    p = col % positions
    oy = p // wo
    ox = p % wo
    acc = float32(0.0)
    for k0 in range(0, k_total, TILE):
        k = k0 + tx
        if row < og and k < k_total:
            w_tile[ty, tx] = w2[g * og + row, k]
        else:
            w_tile[ty, tx] = 0.0
        k = k0 + ty
        value = float32(0.0)
        if col < total and k < k_total:
            c = k // (kh * kw)
            r = k % (kh * kw)
            iy = oy * sh - ph + (r // kw) * dh
            ix = ox * sw - pw + (r % kw) * dw
            if 0 <= iy < height and 0 <= ix < width:
                value = x[n, g * cg + c, iy, ix]
        x_tile[ty, tx] = value
        cuda.syncthreads()
        for kk in range(TILE):
            acc += w_tile[ty, kk] * x_tile[kk, tx]
        cuda.syncthreads()
    if row < og and col < total:
        o = g * og + row
        v = acc + bias[o]
        if residual:
            v += res[n, o, oy, ox]
        if relu and v < 0:
            v = 0.0
        out[n, o, oy, ox] = v


def conv_on_device(x, weight, bias, kh, kw, groups, stride, padding, dilation, relu, out, residual=None) -> None:
    """The implicit GEMM into `out`, whose (N, O, ho, wo) shape sets the launch; plus
    `residual` (of out's shape) when given."""
    n, c = x.shape[0], x.shape[1]
    _, out_c, ho, wo = out.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    og = out_c // groups
    w2 = weight.reshape(out_c, weight.size // out_c)
    if bias is None:
        bias = cuda.to_device(np.zeros(out_c, np.float32))
    grid = (math.ceil(n * ho * wo / TILE), math.ceil(og / TILE), groups)
    res = out if residual is None else residual  # never read when there is none
    _conv_gemm[grid, (TILE, TILE)](x, w2, bias, res, residual is not None, out, c // groups, kh, kw, sh, sw, ph, pw,
                                   dh, dw, og, relu)


def run_conv(params: dict, weights: dict, inputs: list, out) -> None:
    w = weights["weight"]
    conv_on_device(inputs[0], w, weights.get("bias"), w.shape[2], w.shape[3], params["groups"],
                   pair(params["stride"]), pair(params["padding"]), pair(params["dilation"]),
                   params["activation"] == "relu", out, inputs[1] if len(inputs) == 2 else None)
