"""The "depthwise" CPU conv strategy, for convs with one input channel per group
(groups == in_channels: MobileNet's, EfficientNet's and ConvNeXt's 3x3 to 7x7
depthwise layers, with any channel multiplier).

The other strategies are built around a GEMM's reuse: every input value meets many
output channels. A depthwise conv has none (each output channel reads one input plane),
so "outer" ran it one 1-channel group at a time, at 3.5 GFLOP/s on ConvNeXt's 7x7
layers. Here each output plane is computed on its own, row by row: for each tap, one
multiply-add of a contiguous run of the input row into a row of sums that stays in L1,
the run clipped where the tap would read padding, so no padded copy is made. Every
index is unsigned (`unsigned_index`), without which numba's negative-index checks keep
the runs from being vectorised: 40 -> 4.4 ms on ConvNeXt's 96-channel 7x7 layer at
112x112 (2 threads, AVX-512), where "outer" takes 11.9.

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


@njit(cache=True, parallel=True, boundscheck=False)
def conv_depthwise(x, w, bias, sh, sw, ph, pw, dh, dw, relu, out):
    """out[b, o] = bias[o] + the taps w[o, ci] over input channel ci of o's group, for
    every ci, with stride (sh, sw), padding (ph, pw), dilation (dh, dw); then ReLU."""
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
