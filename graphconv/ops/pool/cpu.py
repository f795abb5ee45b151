"""CPU pooling: one compiled loop nest for max and average, parallel over (image, channel)
planes, and its twin for values stored channels-last, parallel over output rows."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels_last import as_channels_last, as_nchw, nhwc
from graphconv.ops.registry import pair
from graphconv.ops.unsigned_index import fill, unsigned


@njit(cache=True, parallel=True, boundscheck=False)
def _pool(x, kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad, out):
    """Separably: each output row first reduces its kh input rows into one strip
    (contiguous reads), then reduces kw strided taps of the strip: kh*W + kw*Wo
    operations per output row instead of kh*kw*Wo strided ones. The strip carries the
    left padding and room for every window's last tap (ceil mode's included) on the
    right, filled with the reduction's start value, so each tap is one loop over all the
    output columns with no edge cases, and strides 1 and 2 are written as constants LLVM
    can vectorise. Against the previous kernel (per-tap column ranges, one strided loop
    for every stride, a conditional store for the max), alternating in one process:
    ResNet-50's maxpool at 224 (64x112x112, 3x3/2) 0.84 -> 0.24 ms, at 448 3.35 -> 0.87.
    Taps outside the image (in the padding, or past it in ceil mode) are left out of a
    max and count as zero in an average, whose divisor is rows[oy] * columns[ox]: the
    taps that count along each axis (`_inverse_tap_counts`), kh*kw unless ceil mode or
    count_include_pad=False makes it smaller near the edges."""
    n, c, height, width = x.shape
    ho, wo = out.shape[2], out.shape[3]
    row_scale, col_scale, start, reduce, strip_width = _walk(kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad,
                                                             height, width, ho, wo)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # no array views made inside the loop
    for plane in prange(n * c):
        strip = np.empty(strip_width, np.float32)
        fill(strip, 0, strip_width, start)
        for oy in range(ho):
            i0, rows = _taps_inside(oy * sh - ph, dh, kh, height)
            if rows == 0:
                fill(strip, pw, pw + width, start)
            else:
                _reduce_taps(strip, pw, flat_x, (plane * height + oy * sh - ph + i0 * dh) * width, dh * width, rows,
                             1, width, reduce, 3)
            row = (plane * ho + oy) * wo
            _reduce_taps(flat_out, row, strip, 0, dw, kw, sw, wo, reduce, 1)  # strided: one tap a pass is faster
            if not is_max:
                scale = row_scale[oy]
                for t in range(wo):
                    flat_out[unsigned(row + t)] *= scale * col_scale[unsigned(t)]


@njit(cache=True, parallel=True, boundscheck=False)
def _pool_channels_last(xh, kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad, outh):
    """`_pool` for (N, H, W, C) input and output stored channels-last: the same separable
    walk, one output row per job, with every pixel's C channels in place of one value, so
    each tap is one contiguous run of C (vectorised across channels)."""
    n, height, width, c = xh.shape
    ho, wo = outh.shape[1], outh.shape[2]
    row_scale, col_scale, start, reduce, strip_pixels = _walk(kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad,
                                                              height, width, ho, wo)
    strip_width = strip_pixels * c
    flat_x, flat_out = xh.reshape(-1), outh.reshape(-1)
    for job in prange(n * ho):
        b, oy = job // ho, job % ho
        strip = np.empty(strip_width, np.float32)
        fill(strip, 0, strip_width, start)
        i0, rows = _taps_inside(oy * sh - ph, dh, kh, height)
        if rows:
            _reduce_taps(strip, pw * c, flat_x, (b * height + oy * sh - ph + i0 * dh) * width * c, dh * width * c,
                         rows, 1, width * c, reduce, 3)
        for ox in range(wo):
            at = (job * wo + ox) * c
            _reduce_taps(flat_out, at, strip, ox * sw * c, dw * c, kw, 1, c, reduce, 3)
            if not is_max:
                scale = row_scale[oy] * col_scale[ox]
                for t in range(c):
                    flat_out[unsigned(at + t)] *= scale


@njit(cache=True, inline="always")
def _walk(kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad, height, width, ho, wo):
    """What both walks start from: each output row's and column's average divisor (as
    1 / taps), the reduction's start value and kind, and the strip's width in pixels
    (the left padding and every window's last tap included)."""
    row_scale = _inverse_tap_counts(kh, sh, ph, dh, height, ho, include_pad)
    col_scale = _inverse_tap_counts(kw, sw, pw, dw, width, wo, include_pad)
    start = np.float32(-np.inf) if is_max else np.float32(0.0)
    strip_pixels = max(pw + width, (wo - 1) * sw + (kw - 1) * dw + 1)
    return row_scale, col_scale, start, MAX if is_max else SUM, strip_pixels


COPY, MAX, SUM = 0, 1, 2  # what `_combine` does with each source value


@njit(cache=True, inline="always")
def _taps_inside(first, d, k, size):
    """(the first tap, how many taps) of a window starting at `first` with dilation d
    and k taps whose positions first + i * d lie in [0, size): they are consecutive."""
    i0, count = 0, 0
    for i in range(k):
        if 0 <= first + i * d < size:
            if count == 0:
                i0 = i
            count += 1
    return i0, count


@njit(cache=True, inline="always")
def _reduce_taps(acc, at, src, offset, gap, taps, step, count, how, per_pass):
    """acc[at + t] = the max (MAX) or sum (SUM) over g < taps of
    src[offset + g * gap + t * step], for t < count. A max takes up to `per_pass` (1..3)
    taps per pass over acc, which three a pass read and write a third as often as one.
    Measured alone, 2 threads, alternating with one tap a pass: maxpools stored
    channels-last 0.72-0.87x the time (ResNet-50's at 224, 64x112x112 3x3/2: 0.105 ->
    0.076 ms; VGG-16's 2x2/2, AlexNet's 3x3/2), NCHW 3x3 ones 0.86-0.97x, NCHW 2x2 ones
    0.92-1.12x. The strided column taps of an NCHW walk stay one a pass: three a pass
    took them 1.1-1.4x as long."""
    if how == MAX:
        for g in range(0, taps, per_pass):
            a = offset + g * gap
            _max3(acc, at, src, a, a + gap, a + 2 * gap, min(per_pass, taps - g), step, count, g == 0)
        return
    _combine(acc, at, src, offset, step, count, COPY)
    for g in range(1, taps):
        _combine(acc, at, src, offset + g * gap, step, count, how)


@njit(cache=True, inline="always")
def _max3(acc, at, src, a, b, c, k, step, count, fresh):
    """acc[at + t] = the max of the first k (1..3) of src[a + t * step], src[b + ...],
    src[c + ...] and, unless `fresh`, acc[at + t]; strides 1 and 2 as constants, so
    LLVM vectorises their loops."""
    if step == 1:
        _max3_strided(acc, at, src, a, b, c, k, 1, count, fresh)
    elif step == 2:
        _max3_strided(acc, at, src, a, b, c, k, 2, count, fresh)
    else:
        _max3_strided(acc, at, src, a, b, c, k, step, count, fresh)


@njit(cache=True, inline="always")
def _max3_strided(acc, at, src, a, b, c, k, step, count, fresh):
    """`_max3` for one stride. The max is np.maximum, not `v if v > a else a`: LLVM
    turned that select into a store only where v won and vectorised it as a masked store
    (vmaskmovps), slow on AMD; np.maximum ran 4x faster (0.51 -> 0.13 ns per element).
    It also propagates NaN, as PyTorch's max pooling does."""
    if k == 3 and fresh:
        for t in range(count):
            s = t * step
            acc[unsigned(at + t)] = np.maximum(np.maximum(src[unsigned(a + s)], src[unsigned(b + s)]),
                                               src[unsigned(c + s)])
    elif k == 3:
        for t in range(count):
            s = t * step
            acc[unsigned(at + t)] = np.maximum(np.maximum(acc[unsigned(at + t)], src[unsigned(a + s)]),
                                               np.maximum(src[unsigned(b + s)], src[unsigned(c + s)]))
    elif k == 2 and fresh:
        for t in range(count):
            s = t * step
            acc[unsigned(at + t)] = np.maximum(src[unsigned(a + s)], src[unsigned(b + s)])
    elif k == 2:
        for t in range(count):
            s = t * step
            acc[unsigned(at + t)] = np.maximum(acc[unsigned(at + t)],
                                               np.maximum(src[unsigned(a + s)], src[unsigned(b + s)]))
    elif fresh:
        for t in range(count):
            acc[unsigned(at + t)] = src[unsigned(a + t * step)]
    else:
        for t in range(count):
            acc[unsigned(at + t)] = np.maximum(acc[unsigned(at + t)], src[unsigned(a + t * step)])


@njit(cache=True, inline="always")
def _combine(acc, at, src, offset, step, count, how):
    """acc[at + t] = src[offset + t * step] (COPY), or the sum of the two (SUM), for
    t < count; strides 1 and 2 as constants, so LLVM vectorises their loops."""
    if step == 1:
        _combine_strided(acc, at, src, offset, 1, count, how)
    elif step == 2:
        _combine_strided(acc, at, src, offset, 2, count, how)
    else:
        _combine_strided(acc, at, src, offset, step, count, how)


@njit(cache=True, inline="always")
def _combine_strided(acc, at, src, offset, step, count, how):
    """`_combine` for one stride."""
    if how == COPY:
        for t in range(count):
            acc[unsigned(at + t)] = src[unsigned(offset + t * step)]
    else:
        for t in range(count):
            acc[unsigned(at + t)] += src[unsigned(offset + t * step)]


@njit(cache=True)
def _inverse_tap_counts(k, s, p, d, size, n_out, include_pad):
    """1 / (taps of window o that count in an average), per output o along one axis:
    those in [-p, size + p) (count_include_pad: the padding counts, what ceil mode's
    last window hangs past it does not) or in [0, size). 0 for a window with none,
    which averages to 0."""
    scale = np.zeros(n_out, np.float32)  # float32: the products vectorise with the output
    low, high = (-p, size + p) if include_pad else (0, size)
    for o in range(n_out):
        count = 0
        for t in range(k):
            if low <= o * s - p + t * d < high:
                count += 1
        if count:
            scale[o] = 1.0 / count
    return scale


def _run(params: dict, x: np.ndarray, is_max: bool, out: np.ndarray) -> None:
    """The window geometry from params; how many windows (ceil mode's extra ones
    included) from out.shape, which the shape rule sized."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    include_pad = is_max or params["count_include_pad"]  # maxpool has no such parameter
    geometry = (kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad)
    x_stored, out_stored = nhwc(x), nhwc(out)
    if x_stored is None and out_stored is None:
        _pool(np.ascontiguousarray(x), *geometry, out)
        return
    if x_stored is None:
        x_stored = as_channels_last(x)
    if out_stored is None:
        out_stored = np.empty(out.transpose(0, 2, 3, 1).shape, np.float32)
        _pool_channels_last(x_stored, *geometry, out_stored)
        out[...] = as_nchw(out_stored.transpose(0, 3, 1, 2))
        return
    _pool_channels_last(x_stored, *geometry, out_stored)


def run_maxpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _run(params, inputs[0], True, out)


def run_avgpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _run(params, inputs[0], False, out)
