"""The register-tiled matrix product behind the CPU conv and fc kernels.

`multiply_band` is the one inner kernel: 4 weight rows x 3 patches, 12 dot products
in vector registers. `stream_matmul` runs it over a whole weight matrix for the
"stream" strategy and the small-batch fc; the conv's "direct" strategy runs it over
row panels of overlapping patches (graphconv/ops/conv/cpu.py).

A fully-connected layer turned into a convolution evaluates a large weight matrix
(fc6 of AlexNet: 4096 x 9216, 151 MB) at only a few output positions (36 on a
384x384 image). A BLAS SGEMM handles that shape badly: it copies ("packs") the whole
weight matrix into its blocked layout on every call, which costs about as long as
the arithmetic when each weight is used only a few dozen times. Here the weights
are read once, in the layout they are stored in: each thread takes a contiguous
band of weight rows and multiplies 4 of them at a time against 3 positions at a
time, keeping the 12 dot products in vector registers (LLVM vectorises the
reduction over k because `fastmath` lets it reorder the sums).

The result goes straight to its place in the NCHW output, with bias and ReLU
applied, so the caller needs no epilogue pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

ROWS_PER_TILE = 4       # weight rows (output channels) per register tile
POSITIONS_PER_TILE = 3  # output positions per register tile; callers pad to a multiple
STREAM_MAX_POSITIONS = 96
STREAM_MIN_WEIGHTS = 1 << 22  # 16 MB of float32


@njit(cache=True, parallel=True, fastmath=True, boundscheck=False)
def stream_matmul(w, bias, relu, xt, positions, hw, o_offset, out3):
    """out3[p // hw, o_offset + o, p % hw] = act(sum_k w[o, k] * xt[p, k] + bias[o_offset + o])
    for p < positions.

    w: (M, K) C-contiguous weights; xt: (P, K) patches, one row per output position,
    with P a multiple of POSITIONS_PER_TILE (rows past `positions` are padding);
    out3: the output viewed as (N, C, H*W).
    """
    m, k = w.shape
    patches = xt.reshape(-1)
    for band in prange((m + ROWS_PER_TILE - 1) // ROWS_PER_TILE):
        o0 = band * ROWS_PER_TILE
        if positions == 1:  # a matrix-vector product: no padding positions to compute
            for o in range(o0, min(m, o0 + ROWS_PER_TILE)):
                _store_one(out3, relu, o_offset + o, 0, 0, _dot(w[o], xt[0]) + bias[o_offset + o])
        else:
            multiply_band(w, o0, patches, k, xt.shape[0], bias, relu, 0, positions, hw, o_offset, out3)


@njit(cache=True, fastmath=True, boundscheck=False)
def multiply_band(w, o0, patches, step, count, bias, relu, first, end, hw, o_offset, out3):
    """The register tile both streaming and direct convolution run on, for one band of
    weight rows o0 .. o0 + ROWS_PER_TILE - 1 (fewer at the end of w).

    Patch p (p < count, count a multiple of POSITIONS_PER_TILE) is
    patches[p * step : p * step + K]; a step below K lets neighbouring patches overlap,
    which is how the direct conv avoids copying each input pixel kh * kw times. Its
    result goes to output position first + p, and is dropped when that is >= end.
    """
    m, k = w.shape
    if o0 + ROWS_PER_TILE <= m:
        w0, w1, w2, w3 = w[o0], w[o0 + 1], w[o0 + 2], w[o0 + 3]
        for p0 in range(0, count, POSITIONS_PER_TILE):
            b = p0 * step
            x0, x1, x2 = patches[b:b + k], patches[b + step:b + step + k], patches[b + 2 * step:b + 2 * step + k]
            z = np.float32(0.0)
            a00 = a01 = a02 = a10 = a11 = a12 = a20 = a21 = a22 = a30 = a31 = a32 = z
            for i in range(k):
                u0, u1, u2, u3 = w0[i], w1[i], w2[i], w3[i]
                v0, v1, v2 = x0[i], x1[i], x2[i]
                a00 += u0 * v0
                a01 += u0 * v1
                a02 += u0 * v2
                a10 += u1 * v0
                a11 += u1 * v1
                a12 += u1 * v2
                a20 += u2 * v0
                a21 += u2 * v1
                a22 += u2 * v2
                a30 += u3 * v0
                a31 += u3 * v1
                a32 += u3 * v2
            where = _tile_positions(first + p0, end, hw)
            _store(out3, bias, relu, o_offset + o0, where, a00, a01, a02)
            _store(out3, bias, relu, o_offset + o0 + 1, where, a10, a11, a12)
            _store(out3, bias, relu, o_offset + o0 + 2, where, a20, a21, a22)
            _store(out3, bias, relu, o_offset + o0 + 3, where, a30, a31, a32)
    else:
        for o in range(o0, m):
            wo = w[o]
            for p0 in range(0, count, POSITIONS_PER_TILE):
                b = p0 * step
                x0, x1, x2 = patches[b:b + k], patches[b + step:b + step + k], patches[b + 2 * step:b + 2 * step + k]
                z = np.float32(0.0)
                a0 = a1 = a2 = z
                for i in range(k):
                    u = wo[i]
                    a0 += u * x0[i]
                    a1 += u * x1[i]
                    a2 += u * x2[i]
                _store(out3, bias, relu, o_offset + o, _tile_positions(first + p0, end, hw), a0, a1, a2)


@njit(cache=True, inline="always", fastmath=True)
def _dot(a, b):
    acc = np.float32(0.0)
    for i in range(a.size):
        acc += a[i] * b[i]
    return acc


@njit(cache=True, inline="always")
def _tile_positions(p0, end, hw):
    """(image, pixel) of the tile's 3 output positions p0, p0+1, p0+2, image -1 for those
    at or past `end`. Worked out once per tile: a division per stored value cost as
    much as the arithmetic of a direct conv tile with a short patch."""
    n0, q0 = p0 // hw, p0 % hw
    n1, q1 = (n0, q0 + 1) if q0 + 1 < hw else (n0 + 1, 0)
    n2, q2 = (n1, q1 + 1) if q1 + 1 < hw else (n1 + 1, 0)
    return (n0 if p0 < end else -1, q0, n1 if p0 + 1 < end else -1, q1, n2 if p0 + 2 < end else -1, q2)


@njit(cache=True, inline="always")
def _store(out3, bias, relu, channel, where, a0, a1, a2):
    b = bias[channel]
    n0, q0, n1, q1, n2, q2 = where
    _store_one(out3, relu, channel, n0, q0, a0 + b)
    _store_one(out3, relu, channel, n1, q1, a1 + b)
    _store_one(out3, relu, channel, n2, q2, a2 + b)


@njit(cache=True, inline="always")
def _store_one(out3, relu, channel, n, q, value):
    if n >= 0:
        out3[n, channel, q] = max(value, np.float32(0.0)) if relu else value


def prefers_stream(positions: int, weight_elements: int) -> bool:
    """Whether this product should stream its weights rather than call BLAS.

    Streaming wins only when the weights are large (far past the caches, so BLAS's
    packing copy is expensive) and each is used a few times. Measured on 2 cores:
    4096x1024 weights, stream 4.3 ms vs BLAS 7.2 ms at 64 positions, about even at
    100; 256x2304 weights at 36 positions, stream 1.2 ms vs BLAS 0.5 ms.
    """
    return positions <= STREAM_MAX_POSITIONS and weight_elements >= STREAM_MIN_WEIGHTS


@njit(cache=True)
def padded_positions(positions: int) -> int:
    """Rows a patch matrix needs so the kernel's position tiles come out whole."""
    return -(-positions // POSITIONS_PER_TILE) * POSITIONS_PER_TILE
