"""The register-tiled matrix products behind the CPU conv and fc kernels.

`stream_matmul` is the "stream" strategy: a fully-connected layer turned into a
convolution evaluates a large weight matrix (fc6 of AlexNet: 4096 x 9216, 151 MB) at
only a few output positions (36 on a 384x384 image). A BLAS SGEMM handles that shape
badly: it copies ("packs") the whole weight matrix into its blocked layout on every
call, which costs about as long as the arithmetic when each weight is used only a few
dozen times. Here the weights are read once, in the layout they are stored in, and
multiplied into the positions by the explicit-SIMD tiles of `vector_tile`. Only the
patches are packed: as a (K x positions) column matrix, walked in chunks of k small
enough to stay in L1 while a group of weight rows streams past them.

`multiply_band` is the dot-product tile (4 weight rows x 3 patches) the conv's
"direct" strategy runs over row panels of overlapping patches
(graphconv/ops/conv/cpu.py); overlapping patches cannot be packed as columns without
copying each input pixel kh * kw times.

Both write their result straight to its place in the NCHW output, with bias and ReLU
applied, so the caller needs no epilogue pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.specialise import per_lane_width
from graphconv.ops.unsigned_index import unsigned
from graphconv.ops.vector_tile import (BLOCK_VECTORS, LANES, STREAM_ROWS_16, STREAM_VECTORS_16, WIDE_TILE_ROWS,
                                       multiply_tile, multiply_tile_16, stream_rows_16, tile_rows)

ROWS_PER_TILE = 4       # multiply_band: weight rows (output channels) per register tile
POSITIONS_PER_TILE = 3  # multiply_band: output positions per tile; callers pad to a multiple
STREAM_MAX_POSITIONS = 64
STREAM_MIN_WEIGHTS = 1 << 20  # 4 MB of float32
MV_ROWS = 4  # weight rows per step of the matrix-vector product
GROUP_ROWS = 48  # weight rows a thread takes at a time in stream_matmul: whole tiles of 16, 12, 8 or 6
CHUNK_FLOATS = 4096  # 16 KB of patch columns per k chunk: they stay in L1 while the rows stream


STREAM_TILE_LANES = 8  # what `stream_matmul` sees: 8 or 16 in its copy for each width (STREAM_MATMUL)


def stream_matmul(w, bias, relu, cols, positions, hw, o_offset, out3, channels_last, wide):
    """out3[p // hw, o_offset + o, p % hw] = act(sum_k w[o, k] * cols[k, p] + bias[o_offset + o])
    for p < positions, where positions is a whole number of images of hw pixels, on the
    `wide` tiles (`vector_tile.WIDE_TILE_ROWS`: where 32 vector registers hold them) or
    the 16-register ones; in its copy for 16 lanes (`STREAM_MATMUL[16]`,
    `vector_tile.STREAM_LANES`), positions go 16 to a vector
    (`vector_tile.multiply_tile_16`) and only a block's last 8, if any, through the
    8-lane tiles. Each copy compiles only the tiles it can run
    (`graphconv.ops.specialise`): the 16-lane tiles and one 8-lane one, or the 8-lane
    ones.

    w: (M, K) C-contiguous weights; cols: (K, stream_width(positions)) patch columns,
    zero past `positions`; out3: the output viewed as (N, C, H*W), or as (N, H*W, C)
    when it is stored `channels_last` (the indices above then swap their last two).
    """
    m, k = w.shape
    if positions == 1:  # a matrix-vector product: memory-bound, no tile to fill
        matrix_vector(w, cols.reshape(-1), bias, relu, o_offset, out3)  # one pixel: either order is the same
        return
    width = cols.shape[1]
    chunk = max(LANES, CHUNK_FLOATS // width)
    flat_w, flat_cols = w.reshape(-1), cols.reshape(-1)
    for group in prange((m + GROUP_ROWS - 1) // GROUP_ROWS):
        first = group * GROUP_ROWS
        rows = min(GROUP_ROWS, m - first)
        slack = max(max(WIDE_TILE_ROWS), max(STREAM_ROWS_16))  # the last tile's rows past the group's
        sums = np.zeros((GROUP_ROWS + slack) * width, np.float32)
        for k0 in range(0, k, chunk):
            steps = min(chunk, k - k0)
            c0 = 0
            while c0 < width:
                if STREAM_TILE_LANES == 16 and width - c0 >= 16:
                    vectors = min(STREAM_VECTORS_16, (width - c0) // 16)
                    for r0 in range(0, rows, stream_rows_16(vectors)):
                        multiply_tile_16(vectors, flat_w, first + r0, m - 1, k, k0, steps, flat_cols, c0, width,
                                         sums, r0, chunk)
                    c0 += vectors * 16
                else:  # after 16-lane blocks, 8 positions are left at most: one vector
                    vectors = 1 if STREAM_TILE_LANES == 16 else min(BLOCK_VECTORS, (width - c0) // LANES)
                    for r0 in range(0, rows, tile_rows(vectors, wide)):
                        multiply_tile(vectors, wide, flat_w, first + r0, m - 1, k, k0, steps, flat_cols, c0, width,
                                      sums, r0, chunk)
                    c0 += vectors * LANES
        _store_sums(sums, width, first, rows, bias, relu, positions // hw, hw, o_offset, out3, channels_last)


@njit(cache=True, inline="always")
def _store_sums(sums, width, first, rows, bias, relu, images, hw, o_offset, out3, channels_last):
    """A group's rows of sums, (output channel, position), into the output: along each
    channel's positions, or along each position's channels when stored `channels_last`,
    so the writes are contiguous either way."""
    if channels_last:
        for n in range(images):
            for q in range(hw):
                for r in range(rows):
                    channel = o_offset + first + r
                    v = sums[r * width + n * hw + q] + bias[channel]
                    out3[n, q, channel] = max(v, np.float32(0.0)) if relu else v
        return
    for r in range(rows):
        channel = o_offset + first + r
        for n in range(images):
            for q in range(hw):
                _store_one(out3, relu, channel, n, q, sums[r * width + n * hw + q] + bias[channel])


@njit(cache=True)
def stream_width(positions: int, lanes: int = LANES) -> int:
    """Columns of the patch matrix `stream_matmul` takes: whole vectors of `lanes`
    positions (its copy's STREAM_TILE_LANES), or exactly 1 for a single position (its
    matrix-vector path reads the column as a contiguous vector).

    The 16-lane copy also takes whole 8-lane vectors, running a block's last 8 positions
    through an 8-lane tile, but that tile is bound by its weight broadcasts, one per
    8-lane FMA: 4096 x 4096 weights at 36 positions, alternating, 2 threads, Zen 5, took
    6.1 ms padded to 40 and 5.0 ms padded to 48 (three 16-lane vectors); 24 positions 6.1
    ms as 24, 3.9 ms as 32. So the 16-lane copy's callers pad to 16: the padded lanes cost
    less than that tile."""
    return 1 if positions == 1 else -(-positions // lanes) * lanes


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


@njit(cache=True, parallel=True, fastmath=True, boundscheck=False)
def matrix_vector(w, x, bias, relu, o_offset, out3):
    """out3[0, o_offset + o, 0] = act(w[o] . x + bias[o_offset + o]), MV_ROWS rows at a time:
    x is loaded once per MV_ROWS weights, and each core keeps MV_ROWS streams of weights
    in flight, so the product runs at the memory's read speed (fc6 at batch 1: 4.5 ->
    4.1 ms, 33 -> 37 GB/s; fc7: 1.9 -> 1.6 ms)."""
    m, k = w.shape
    if m < MV_ROWS:
        for o in range(m):
            _store_one(out3, relu, o_offset + o, 0, 0, _dot(w[o], x) + bias[o_offset + o])
        return
    flat_w = w.reshape(-1)
    for band in prange((m + MV_ROWS - 1) // MV_ROWS):
        o0 = min(band * MV_ROWS, m - MV_ROWS)  # the last band overlaps the one before: same sums
        r0, r1, r2, r3 = o0 * k, (o0 + 1) * k, (o0 + 2) * k, (o0 + 3) * k
        z = np.float32(0.0)
        a0 = a1 = a2 = a3 = z
        for i in range(k):
            v = x[unsigned(i)]
            a0 += flat_w[unsigned(r0 + i)] * v
            a1 += flat_w[unsigned(r1 + i)] * v
            a2 += flat_w[unsigned(r2 + i)] * v
            a3 += flat_w[unsigned(r3 + i)] * v
        o = o_offset + o0
        _store_one(out3, relu, o, 0, 0, a0 + bias[o])
        _store_one(out3, relu, o + 1, 0, 0, a1 + bias[o + 1])
        _store_one(out3, relu, o + 2, 0, 0, a2 + bias[o + 2])
        _store_one(out3, relu, o + 3, 0, 0, a3 + bias[o + 3])


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

    Streaming wins when each weight is used only a few dozen times, so BLAS's packing
    copy costs about as much as the arithmetic. Measured on 2 cores against numpy's
    OpenBLAS (medians of 9): at 36 positions it wins from 512x4608 weights (1.33 vs
    1.54 ms) up to fc6's 4096x9216 (20 vs 27 ms) and ties at 256x2304; at 64 positions
    it ties (4096x1024: 4.06 vs 4.04 ms); from 81 positions on BLAS wins by 15-30%.
    """
    return positions <= STREAM_MAX_POSITIONS and weight_elements >= STREAM_MIN_WEIGHTS


@njit(cache=True)
def padded_positions(positions: int) -> int:
    """Rows a patch matrix needs so the kernel's position tiles come out whole."""
    return -(-positions // POSITIONS_PER_TILE) * POSITIONS_PER_TILE


STREAM_MATMUL = per_lane_width(stream_matmul, dict(cache=True, parallel=True, fastmath=True, boundscheck=False),
                               STREAM_TILE_LANES={8: 8, 16: 16})
