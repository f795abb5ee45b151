"""The "depthwise" CPU conv strategy, for convs with one input channel per group
(groups == in_channels: MobileNet's, EfficientNet's and ConvNeXt's 3x3 to 7x7
depthwise layers, with any channel multiplier).

The other strategies are built around a GEMM's reuse: every input value meets many
output channels. A depthwise conv has none (each output channel reads one input plane),
so "outer" ran it one 1-channel group at a time, at 3.5 GFLOP/s on ConvNeXt's 7x7
layers. Here each output plane is computed on its own, each tap one contiguous
multiply-add into a block of sums that stays in L1: at stride 1 over whole padded rows
at once, otherwise over one output row, clipped where the tap would read padding. Every
index is unsigned (`unsigned_index`), without which numba's negative-index checks keep
the runs from being vectorised (40 -> 4.4 ms on one layer). ConvNeXt-tiny's 7x7 layers
at 448x448, 2 threads (AVX-512), alone: 96 channels at 112x112 14.0 ms with "outer" ->
3.5, 192 at 56x56 12.2 -> 2.1, 384 at 28x28 9.3 -> 0.85.

The kernel computes any grouping (each output channel reads its group's input
channels in turn), so the tests force it on every grouped conv; only depthwise layers
choose it. It sums each output's taps one after another in float32, which is exact
enough for a depthwise patch (at most a few dozen taps), not for a dense conv's
thousands.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.unsigned_index import unsigned


def applies(params: dict, in_channels: int) -> bool:
    """One input channel per group, more than one group: the layers this strategy is for."""
    return params["groups"] > 1 and params["groups"] == in_channels


@njit(cache=True, inline="always")
def _tap_columns(off, sw, width, wo):
    """Output columns [lo, hi) whose input column ox * sw + off lies in [0, width)."""
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    hi = (width - 1 - off) // sw + 1 if width - 1 - off >= 0 else 0
    return lo, min(max(hi, lo), wo)


SUMS_FLOATS = 2048  # the stride-1 path's block of sums (8 KB): with its input rows, it stays in L1


def conv_depthwise(x, w, bias, sh, sw, ph, pw, dh, dw, relu, out):
    """out[b, o] = bias[o] + the taps w[o, ci] over input channel ci of o's group, for
    every ci, with stride (sh, sw), padding (ph, pw), dilation (dh, dw); then ReLU."""
    if sh == 1 and sw == 1:
        _depthwise_flat(x, w, bias, ph, pw, dh, dw, relu, SUMS_FLOATS, out)
    else:
        _depthwise_rows(x, w, bias, sh, sw, ph, pw, dh, dw, relu, out)


@njit(cache=True, parallel=True, boundscheck=False)
def _depthwise_flat(x, w, bias, ph, pw, dh, dw, relu, sums_floats, out):
    """Stride 1: each plane copied once into a zero-padded one; then, on that flat copy,
    a tap is one contiguous multiply-add over whole rows of output at once (each row as
    wide as the padded input, the extra columns computed and dropped). On maps as narrow
    as ConvNeXt's last stage (28 columns at 448) a tap per output row cost more to set
    up than to run."""
    n, c, height, width = x.shape
    _, o, ho, wo = out.shape
    per_group_in, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    per_group_out = o // (c // per_group_in)
    wide = width + 2 * pw
    padded_floats = (height + 2 * ph) * wide + (kw - 1) * dw
    block_rows = max(1, min(ho, sums_floats // wide))
    for job in prange(n * o):
        b = job // o
        oc = job % o
        first_in = (oc // per_group_out) * per_group_in
        dst = out[b, oc].reshape(-1)
        padded = np.zeros(padded_floats, np.float32)
        sums = np.empty(block_rows * wide, np.float32)
        for r0 in range(0, ho, block_rows):
            count = min(block_rows, ho - r0) * wide
            for p in range(count):
                sums[unsigned(p)] = bias[oc]
            for ci in range(per_group_in):
                if r0 == 0 or per_group_in > 1:
                    src = x[b, first_in + ci]
                    for y in range(height):
                        row = (y + ph) * wide + pw
                        for xx in range(width):
                            padded[unsigned(row + xx)] = src[y, xx]
                for i in range(kh):
                    for j in range(kw):
                        tap = w[oc, ci, i, j]
                        base = (r0 + i * dh) * wide + j * dw
                        for p in range(count):
                            sums[unsigned(p)] += tap * padded[unsigned(base + p)]
            for r in range(count // wide):
                row = (r0 + r) * wo
                for ox in range(wo):
                    v = sums[unsigned(r * wide + ox)]
                    dst[unsigned(row + ox)] = max(v, np.float32(0.0)) if relu else v


@njit(cache=True, parallel=True, boundscheck=False)
def _depthwise_rows(x, w, bias, sh, sw, ph, pw, dh, dw, relu, out):
    """Any stride: output row by row, each tap's run clipped where it would read padding."""
    n, c, height, width = x.shape
    _, o, ho, wo = out.shape
    per_group_in, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    per_group_out = o // (c // per_group_in)
    for job in prange(n * o):
        b = job // o
        oc = job % o
        first_in = (oc // per_group_out) * per_group_in
        dst = out[b, oc].reshape(-1)
        sums = np.empty(wo, np.float32)
        for oy in range(ho):
            for ox in range(wo):
                sums[unsigned(ox)] = bias[oc]
            for ci in range(per_group_in):
                src = x[b, first_in + ci].ravel()
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= height:
                        continue
                    for j in range(kw):
                        off = j * dw - pw
                        lo, hi = _tap_columns(off, sw, width, wo)
                        tap = w[oc, ci, i, j]
                        base = iy * width + off
                        if sw == 1:
                            for ox in range(lo, hi):
                                sums[unsigned(ox)] += tap * src[unsigned(base + ox)]
                        else:
                            for ox in range(lo, hi):
                                sums[unsigned(ox)] += tap * src[unsigned(base + ox * sw)]
            row = oy * wo
            if relu:
                for ox in range(wo):
                    dst[unsigned(row + ox)] = max(sums[unsigned(ox)], np.float32(0.0))
            else:
                for ox in range(wo):
                    dst[unsigned(row + ox)] = sums[unsigned(ox)]
