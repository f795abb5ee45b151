"""CPU conv: one of three strategies per layer, chosen from the layer's shape.

- "stream": large weights used at few output positions (the fully-connected layers
  fc-to-conv produced; see `gemm_cpu.prefers_stream`). The patches are gathered into
  a small (positions x C*kh*kw) matrix and the weights are streamed once through
  `gemm_cpu.stream_matmul`; a BLAS GEMM would spend as long re-packing the weights
  as multiplying them.
- "pointwise": a 1x1, stride-1, unpadded conv. The input already is the column
  matrix (C x H*W), so each image is one SGEMM with no copy before it.
- "im2col": everything else. Columns are built in chunks of output rows so the
  scratch buffer stays small (VGG's first layers at 384x384 would otherwise need
  hundreds of MB) while each SGEMM stays large enough to run at BLAS speed.

Every strategy applies the bias and the fused ReLU while writing the output.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.gemm_cpu import padded_positions, prefers_stream, stream_matmul
from graphconv.ops.registry import pair

SCRATCH_FLOATS = 1 << 22  # 16 MB of im2col columns per chunk
STRATEGIES = ("stream", "pointwise", "im2col")


def choose_strategy(params: dict, in_shape: tuple[int, ...]) -> str:
    """The strategy `run_conv` uses for this layer on an (N, C, H, W) input."""
    n, c, height, width = in_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    ho = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    weights = params["out_channels"] * (c // params["groups"]) * kh * kw
    if prefers_stream(n * ho * wo, weights):
        return "stream"
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return "pointwise"
    return "im2col"


describe_conv = choose_strategy  # what `--profile` and the benchmarks show per layer


def run_conv(params: dict, weights: dict, inputs: list[np.ndarray],
             strategy: str | None = None) -> np.ndarray:
    x = np.ascontiguousarray(inputs[0])
    w = weights["weight"]
    out_c, c_per_group, kh, kw = w.shape
    groups = params["groups"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(out_c, np.float32)
    relu = params["activation"] == "relu"
    geometry = tuple(v for k in ("stride", "padding", "dilation") for v in pair(params[k]))
    w3 = w.reshape(groups, out_c // groups, c_per_group * kh * kw)
    strategy = strategy or choose_strategy(params, x.shape)
    if strategy == "stream":
        return _conv_stream(x, w3, bias, kh, kw, *geometry, relu)
    if strategy == "pointwise":
        return _conv_pointwise(x, w3, bias, relu)
    return _conv_im2col(x, w3, bias, kh, kw, *geometry, relu, SCRATCH_FLOATS)


@njit(cache=True)
def _output_size(height, width, kh, kw, sh, sw, ph, pw, dh, dw):
    return (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1


# ---- stream ---------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _patches(x, c0, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, xt):
    """xt[(n, oy, ox), (c, i, j)] = x[n, c0 + c, oy*sh - ph + i*dh, ox*sw - pw + j*dw], zero in
    the padding; rows past the last position stay zero."""
    height, width = x.shape[2], x.shape[3]
    positions = x.shape[0] * ho * wo
    taps = kh * kw
    for p in prange(xt.shape[0]):
        row = xt[p]
        if p >= positions:
            row[:] = 0.0
            continue
        n = p // (ho * wo)
        oy = (p // wo) % ho
        ox = p % wo
        for r in range(row.size):
            c = r // taps
            iy = oy * sh - ph + ((r // kw) % kh) * dh
            ix = ox * sw - pw + (r % kw) * dw
            inside = 0 <= iy < height and 0 <= ix < width
            row[r] = x[n, c0 + c, iy, ix] if inside else 0.0


@njit(cache=True)
def _conv_stream(x, w3, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu):
    n, c, height, width = x.shape
    groups, og, k = w3.shape
    ho, wo = _output_size(height, width, kh, kw, sh, sw, ph, pw, dh, dw)
    out = np.empty((n, groups * og, ho, wo), np.float32)
    out3 = out.reshape(n, groups * og, ho * wo)
    positions = n * ho * wo
    xt = np.empty((padded_positions(positions), k), np.float32)
    for g in range(groups):
        _patches(x, g * (c // groups), kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, xt)
        stream_matmul(w3[g], bias, relu, xt, positions, ho * wo, g * og, out3)
    return out


# ---- pointwise ------------------------------------------------------------------------------

@njit(cache=True)
def _conv_pointwise(x, w3, bias, relu):
    n, c, height, width = x.shape
    groups, og, _ = w3.shape
    cg = c // groups
    out = np.empty((n, groups * og, height, width), np.float32)
    for b in range(n):
        for g in range(groups):
            cols = x[b, g * cg:(g + 1) * cg].reshape(cg, height * width)
            res = out[b, g * og:(g + 1) * og].reshape(og, height * width)
            np.dot(w3[g], cols, res)
        _bias_inplace(out[b], bias, relu)
    return out


@njit(cache=True, parallel=True)
def _bias_inplace(planes, bias, relu):
    flat = planes.reshape(planes.shape[0], -1)
    for o in prange(flat.shape[0]):
        b = bias[o]
        for i in range(flat.shape[1]):
            v = flat[o, i] + b
            flat[o, i] = max(v, 0.0) if relu else v


# ---- im2col ---------------------------------------------------------------------------------

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


@njit(cache=True)
def _conv_im2col(x, w3, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu, scratch_floats):
    n, c, height, width = x.shape
    groups, og, k = w3.shape
    ho, wo = _output_size(height, width, kh, kw, sh, sw, ph, pw, dh, dw)
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
