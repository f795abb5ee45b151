"""The "depthwise" CPU conv strategy, for convs with one input channel per group
(groups == in_channels: MobileNet's, EfficientNet's and ConvNeXt's 3x3 to 7x7
depthwise layers, with any channel multiplier): `conv_depthwise` on NCHW values,
`depthwise_channels_last` on values stored channels-last (where ConvNeXt's blocks keep
theirs, see `graphconv/ops/channels_last.py`).

The other strategies are built around a GEMM's reuse: every input value meets many
output channels. A depthwise conv has none (each output channel reads one input plane),
so "outer" ran it one 1-channel group at a time, at 3.5 GFLOP/s on ConvNeXt's 7x7
layers. Here each output plane is computed on its own, each tap one contiguous
multiply-add over whole rows of output at once, into a block of sums that stays in L1,
from a zero-padded copy of the input plane split into the stride's phases (see
`_depthwise`). Every index is unsigned (`unsigned_index`): numba's negative-index checks
kept the runs from being vectorised (40 -> 4.4 ms on one layer). 2 threads, AVX-512,
layers alone, "outer" -> "depthwise": ConvNeXt-tiny's 7x7 layers at 448x448, 96 channels
at 112x112 14.4 -> 3.5 ms, 192 at 56x56 12.7 -> 2.3, 384 at 28x28 7.0 -> 0.67;
EfficientNet-B0's 3x3 stride-2 layer on 144x56x56 2.3 -> 0.30.

The kernel computes any grouping (each output channel reads its group's input
channels in turn), so the tests force it on every grouped conv; only depthwise layers
choose it. It sums each output's taps one after another in float32, which is exact
enough for a depthwise patch (at most a few dozen taps), not for a dense conv's
thousands.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.fast_math import CONTRACT, RELU, activate_run
from graphconv.ops.unsigned_index import unsigned
from graphconv.ops.vector_tile import vector_run_8, vector_run_16


SUMS_FLOATS = 2048  # a block of sums (8 KB): with the rows its taps read, it stays in L1
BLOCK_FLOATS = 4096  # `depthwise_channels_last`'s block of sums (16 KB), for the same reason


def conv_depthwise(x, w, bias, sh, sw, ph, pw, dh, dw, relu, out):
    """out[b, o] = bias[o] + the taps w[o, ci] over input channel ci of o's group, for
    every ci, with stride (sh, sw), padding (ph, pw), dilation (dh, dw); then ReLU."""
    _depthwise(x, w, bias, sh, sw, ph, pw, dh, dw, relu, SUMS_FLOATS, out)


@njit(cache=True, parallel=True, boundscheck=False)
def _depthwise(x, w, bias, sh, sw, ph, pw, dh, dw, relu, sums_floats, out):
    """Each plane is first split into its sh x sw phases, zero padding included:
    phase (a, b) holds the padded plane's pixels (y * sh + a, x * sw + b) at (y, x), so
    tap (i, j) of output (oy, ox), at padded pixel (oy * sh + i * dh, ox * sw + j * dw),
    is pixel (oy + i * dh // sh, ox + j * dw // sw) of phase (i * dh % sh, j * dw % sw):
    stride 1 in every phase. All phases share one width, the output grid is laid out at
    that width too, and a tap is then one contiguous multiply-add over whole rows of
    output at once (the columns past the output's computed and dropped). On maps as
    narrow as ConvNeXt's last stage (28 columns at 448) a tap per output row cost more
    to set up than to run; on strided layers each tap's run had to skip every other
    pixel."""
    n, c, height, width = x.shape
    _, o, ho, wo = out.shape
    per_group_in, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    per_group_out = o // (c // per_group_in)
    wide = (width + 2 * pw + sw - 1) // sw  # a phase's width, and the output grid's
    tall = (height + 2 * ph + sh - 1) // sh
    phase_floats = tall * wide + (kw - 1) * dw // sw + 1  # the last row's taps run past its end
    block_rows = max(1, min(ho, sums_floats // wide))
    for job in prange(n * o):
        b = job // o
        oc = job % o
        first_in = (oc // per_group_out) * per_group_in
        dst = out[b, oc].reshape(-1)
        phases = np.zeros(sh * sw * phase_floats, np.float32)
        sums = np.empty(block_rows * wide, np.float32)
        for r0 in range(0, ho, block_rows):
            count = min(block_rows, ho - r0) * wide
            for p in range(count):
                sums[unsigned(p)] = bias[oc]
            for ci in range(per_group_in):
                if r0 == 0 or per_group_in > 1:
                    src = x[b, first_in + ci]
                    for y in range(height):
                        py = y + ph
                        row = (py % sh) * sw * phase_floats + (py // sh) * wide
                        for bx in range(sw):  # phase column bx holds padded columns bx, bx + sw, ...
                            first = (pw - bx + sw - 1) // sw if pw > bx else 0
                            last = (width + pw - bx + sw - 1) // sw
                            at = row + bx * phase_floats
                            for k in range(first, last):
                                phases[unsigned(at + k)] = src[y, unsigned(bx + k * sw - pw)]
                for i in range(kh):
                    for j in range(kw):
                        tap = w[oc, ci, i, j]
                        phase = ((i * dh) % sh * sw + (j * dw) % sw) * phase_floats
                        base = phase + (r0 + i * dh // sh) * wide + j * dw // sw
                        for p in range(count):
                            sums[unsigned(p)] += tap * phases[unsigned(base + p)]
            for r in range(count // wide):
                row = (r0 + r) * wo
                for ox in range(wo):
                    v = sums[unsigned(r * wide + ox)]
                    dst[unsigned(row + ox)] = max(v, np.float32(0.0)) if relu else v


@njit(cache=True, inline="always")
def _tap_over_row(sums, s0, flat_taps, t0, flat_x, x0, x_step, count, c):
    """sums[s0 + q * c + ch] += flat_taps[t0 + ch] * flat_x[x0 + q * x_step + ch] for q <
    count output pixels and ch < c channels: one tap over a row's pixels, a vector of
    channels at a time (`vector_tile.vector_run_16`: the tap's weights stay in a register
    while the pixels go by), the last 8 channels as an 8-lane vector, the last few alone."""
    ch = 0
    while ch + 16 <= c:
        vector_run_16(sums, s0 + ch, c, flat_taps, t0 + ch, flat_x, x0 + ch, x_step, count)
        ch += 16
    if ch + 8 <= c:
        vector_run_8(sums, s0 + ch, c, flat_taps, t0 + ch, flat_x, x0 + ch, x_step, count)
        ch += 8
    for rest in range(ch, c):
        for q in range(count):
            at = s0 + q * c + rest
            sums[unsigned(at)] += flat_taps[unsigned(t0 + rest)] * flat_x[unsigned(x0 + q * x_step + rest)]


def channels_last_taps(weight: np.ndarray) -> np.ndarray:
    """(C, 1, kh, kw) depthwise weights as (kh, kw, C): each tap's weights for every
    channel side by side, as `depthwise_channels_last` reads them."""
    return np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0), np.float32)


@njit(cache=True, parallel=True, boundscheck=False, fastmath=CONTRACT)
def depthwise_channels_last(xh, taps, bias, sh, sw, ph, pw, dh, dw, activation, out_h):
    """A depthwise conv (one output channel an input channel) on channels-last values:
    xh (N, H, W, C), taps (kh, kw, C), out_h (N, Ho, Wo, C). A job is an output row, cut
    into blocks of pixels whose sums (BLOCK_FLOATS) stay in L1 while every tap adds a run
    of C channels per output pixel into them (`_tap_over_row`): the channels are the
    vector, contiguous in the input, the weights and the sums alike. A whole row's sums
    (144 channels x 56 pixels, 32 KB) left L1 with the input rows the taps read, and each
    of the kh x kw taps read and wrote them from L2. The activation (`fast_math.activate_run`,
    its code) goes over a block's outputs as they are written: EfficientNet-B0's layers
    with silu took 1.1-1.3x the time alone (1.04x in the network) with a pass of its own
    over the map after."""
    n, height, width, c = xh.shape
    _, ho, wo, _ = out_h.shape
    kh, kw = taps.shape[0], taps.shape[1]
    flat_x, flat_taps, flat_out = xh.reshape(-1), taps.reshape(-1), out_h.reshape(-1)
    block = max(1, BLOCK_FLOATS // c)  # output pixels a block of sums holds
    for job in prange(n * ho):
        b = job // ho
        oy = job % ho
        sums = np.empty(min(block, wo) * c, np.float32)
        for p0 in range(0, wo, block):
            p1 = min(wo, p0 + block)
            for q in range(p1 - p0):
                for ch in range(c):
                    sums[unsigned(q * c + ch)] = bias[unsigned(ch)]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= height:
                    continue
                row = (b * height + iy) * width
                for j in range(kw):
                    off = j * dw - pw
                    lo = 0 if off >= 0 else (-off + sw - 1) // sw
                    hi = min(wo, (width - 1 - off) // sw + 1) if width - 1 - off >= 0 else 0
                    lo, hi = max(lo, p0), min(hi, p1)
                    if hi > lo:
                        _tap_over_row(sums, (lo - p0) * c, flat_taps, (i * kw + j) * c, flat_x,
                                      (row + lo * sw + off) * c, sw * c, hi - lo, c)
            at = ((b * ho + oy) * wo + p0) * c
            count = (p1 - p0) * c
            for k in range(count):
                v = sums[unsigned(k)]
                flat_out[unsigned(at + k)] = max(v, np.float32(0.0)) if activation == RELU else v
            activate_run(flat_out, at, count, activation)
