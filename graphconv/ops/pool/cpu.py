"""CPU pooling: one compiled loop nest for max and average, parallel over (image, channel)
planes, its twin for values stored channels-last, parallel over output rows, and for
channels-last max pools of small windows (2 or 3 taps each way: nearly every network's)
a direct one."""
from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable

import numpy as np
from numba import njit, prange

from graphconv.ops.binding import BoundCall
from graphconv.ops.channels_last import as_channels_last, store_row_in_planes
from graphconv.ops.layout import nhwc
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
    count_include_pad=False makes it smaller near the edges. A window of 3 rows all inside
    the image reduces them into the strip in one pass (`_reduce_runs`), not a copy and two
    passes over it: 64x112x112 3x3/2 0.18 -> 0.12 ms, 192x56x56 0.12 -> 0.10 (2 threads,
    the two kernels alternating in one process)."""
    n, c, height, width = x.shape
    ho, wo = out.shape[2], out.shape[3]
    row_scale, col_scale, start, reduce, strip_width = _walk(kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad,
                                                             height, width, ho, wo)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # no array views made inside the loop
    for plane in prange(n * c):
        strip = np.empty(strip_width, np.float32)
        fill(strip, 0, strip_width, start)
        for oy in range(ho):
            _window_rows_into_strip(strip, pw, flat_x, plane * height * width, width, oy * sh - ph, kh, dh, height,
                                    is_max, reduce, start)
            row = (plane * ho + oy) * wo
            if kw == 3 and sw == 2 and dw == 1:  # the stems' and GoogLeNet's 3x3/2 pools: one loop
                _row_of_three_strided(flat_out, row, strip, wo, is_max)
            else:
                _copy(flat_out, row, strip, 0, sw, wo)
                for j in range(1, kw):
                    _reduce(flat_out, row, strip, j * dw, sw, wo, reduce)
            if not is_max:
                scale = row_scale[oy]
                for t in range(wo):
                    flat_out[unsigned(row + t)] *= scale * col_scale[unsigned(t)]


@njit(cache=True, parallel=True, boundscheck=False)
def _pool_channels_last(xh, kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad, out, into_planes):
    """`_pool` for an (N, H, W, C) input stored channels-last: the same separable walk,
    one output row per job, with every pixel's C channels in place of one value, so each
    tap is one contiguous run of C (vectorised across channels). `out` is the output's
    channels-last (N, Ho, Wo, C) storage, or with `into_planes` an NCHW output (a
    network's last layer): each row is pooled channels-last, then stored down the planes
    (`store_row_in_planes`). That row replaced a channels-last copy of the whole output
    and its transpose: 3x3/2 max pools into planes of 64x224x224 0.85 -> 0.52 ms, 64x112x112
    0.23 -> 0.17, 192x56x56 0.11 -> 0.08 (2 threads, alternating in one process)."""
    n, height, width, c = xh.shape
    ho, wo = (out.shape[2], out.shape[3]) if into_planes else (out.shape[1], out.shape[2])
    row_scale, col_scale, start, reduce, strip_pixels = _walk(kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad,
                                                              height, width, ho, wo)
    strip_width = strip_pixels * c
    flat_x = xh.reshape(-1)
    for job in prange(n * ho):
        b, oy = job // ho, job % ho
        row, flat_out, row_at = _output_row(out, into_planes, job, wo, c)
        strip = np.empty(strip_width, np.float32)
        fill(strip, 0, pw * c, start)  # the padding on either side (the image's part is written below): a
        fill(strip, (pw + width) * c, strip_width, start)  # fill of the whole strip cost 5-15% of the pool
        _window_rows_into_strip(strip, pw * c, flat_x, b * height * width * c, width * c, oy * sh - ph, kh, dh, height,
                                is_max, reduce, start)
        for ox in range(wo):
            at = row_at + ox * c
            scale = np.float32(1.0) if is_max else row_scale[oy] * col_scale[ox]
            if kw == 2 or kw == 3:
                _reduce_runs(flat_out, at, strip, ox * sw * c, dw * c, c, kw, is_max, scale)
                continue
            _combine_strided(flat_out, at, strip, ox * sw * c, 1, c, COPY)
            for j in range(1, kw):
                _combine_strided(flat_out, at, strip, (ox * sw + j * dw) * c, 1, c, reduce)
            if not is_max:
                for t in range(c):
                    flat_out[unsigned(at + t)] *= scale
        if into_planes:
            store_row_in_planes(row, out, b, oy)


@njit(cache=True, inline="always")
def _output_row(out, into_planes, job, wo, c):
    """Where a channels-last job writes its output row of `wo` pixels: (the row, the flat
    array it is in, where it starts). With `into_planes`, a row of its own, which
    `store_row_in_planes` then stores down the NCHW output's planes; else its place in
    the channels-last output (and an empty row)."""
    if into_planes:
        row = np.empty((wo, c), np.float32)
        return row, row.reshape(-1), 0
    return np.empty((0, c), np.float32), out.reshape(-1), job * wo * c


@njit(cache=True, parallel=True, boundscheck=False)
def _max_pool_small_windows(xh, kh, kw, sh, sw, ph, pw, dh, dw, out, into_planes):
    """Max pools of windows 2 or 3 taps each way on an (N, H, W, C) input stored
    channels-last, where every window has a tap in the image along each axis
    (`_every_window_reaches`): each output pixel's channels are the max of its taps read
    straight from the input, each channel's running max held in a register and stored
    once. A tap off the image reads the window's first tap in it instead, which leaves
    the max as it was, so no window has edge cases and the taps unroll. Against the
    separable walk of `_pool_channels_last` (a strip per row, written and read back, the
    max through np.maximum, whose NaN test and blend ran in every step), alternating in
    one process, 1 thread: 3x3/2 over 64x256x256 1.75 -> 1.20 ms, 64x112x112 0.15 ->
    0.08, 192x56x56 0.088 -> 0.054 (onnxruntime's blocked-layout pool inside ResNet-18:
    1.06 ms against 1.81 before). NaN propagates as PyTorch's does: a window holding one
    pools to NaN (`_max_of_taps`)."""
    n, height, width, c = xh.shape
    ho, wo = (out.shape[2], out.shape[3]) if into_planes else (out.shape[1], out.shape[2])
    flat_x, row_length = xh.reshape(-1), width * c
    for job in prange(n * ho):
        b, oy = job // ho, job % ho
        row, flat_out, row_at = _output_row(out, into_planes, job, wo, c)
        y0, y1, y2 = _taps_in_the_image(oy * sh - ph, dh, kh, height)
        image_at = b * height * row_length
        rows = (image_at + y0 * row_length, image_at + y1 * row_length, image_at + y2 * row_length)
        for ox in range(wo):
            x0, x1, x2 = _taps_in_the_image(ox * sw - pw, dw, kw, width)
            _max_of_taps(flat_out, row_at + ox * c, flat_x, rows, (x0 * c, x1 * c, x2 * c), kh, kw, c)
        if into_planes:
            store_row_in_planes(row, out, b, oy)


@njit(cache=True, inline="always")
def _taps_in_the_image(first, step, k, size):
    """A window's 2 or 3 taps along one axis (a 2-tap window's third repeats its second),
    each off the image replaced by the first in it: one must be (`_every_window_reaches`)."""
    t0, t1 = first, first + step
    t2 = first + 2 * step if k == 3 else t1
    inside = t0 if 0 <= t0 < size else (t1 if 0 <= t1 < size else t2)
    return (t0 if 0 <= t0 < size else inside, t1 if 0 <= t1 < size else inside, t2 if 0 <= t2 < size else inside)


@njit(cache=True, inline="always")
def _max_of_taps(flat_out, at, flat_x, rows, columns, kh, kw, c):
    """flat_out[at + t] = the max over the window's taps (rows x columns offsets, 2x2 or
    up to 3x3) of flat_x[row + column + t], t < c. The max is a compare and select, one
    instruction (vmaxps), with a NaN seen anywhere remembered beside it: np.maximum's
    NaN-propagating max took its test and blend in every step."""
    if kh == 2 and kw == 2:
        a, b = rows[0], rows[1]
        p, q = columns[0], columns[1]
        for t in range(c):
            m = flat_x[unsigned(a + p + t)]
            seen_nan = m != m
            for v in (flat_x[unsigned(a + q + t)], flat_x[unsigned(b + p + t)], flat_x[unsigned(b + q + t)]):
                m = v if v > m else m
                seen_nan |= v != v
            flat_out[unsigned(at + t)] = np.float32(np.nan) if seen_nan else m
        return
    for t in range(c):
        m = flat_x[unsigned(rows[0] + columns[0] + t)]
        seen_nan = m != m
        for row in rows:
            for column in columns:
                v = flat_x[unsigned(row + column + t)]
                m = v if v > m else m
                seen_nan |= v != v
        flat_out[unsigned(at + t)] = np.float32(np.nan) if seen_nan else m


@njit(cache=True, inline="always")
def _window_rows_into_strip(strip, at, flat_x, image_at, row_length, first, kh, dh, height, is_max, reduce, start):
    """strip[at:at + row_length] = the max or sum of a window's kh input rows, row
    `first + i * dh` of the image at flat_x[image_at:] (rows of row_length values), those
    inside the image; the start value where none is. Three rows all inside are reduced
    in one pass (`_reduce_runs`), not copied and reduced into twice."""
    if kh == 3 and first >= 0 and first + 2 * dh < height:
        _reduce_runs(strip, at, flat_x, image_at + first * row_length, dh * row_length, row_length, 3, is_max,
                     np.float32(1.0))
        return
    rows = 0
    for i in range(kh):
        iy = first + i * dh
        if 0 <= iy < height:
            _combine_strided(strip, at, flat_x, image_at + iy * row_length, 1, row_length, reduce if rows else COPY)
            rows += 1
    if rows == 0:
        fill(strip, at, at + row_length, start)


@njit(cache=True, inline="always")
def _row_of_three_strided(flat_out, at, strip, count, is_max):
    """flat_out[at + t] = max or sum of strip[2t], strip[2t + 1], strip[2t + 2], t < count:
    an output row of a 3-wide, stride-2 window from its reduced strip, in one loop."""
    if is_max:
        for t in range(count):
            flat_out[unsigned(at + t)] = np.maximum(np.maximum(strip[unsigned(2 * t)], strip[unsigned(2 * t + 1)]),
                                                    strip[unsigned(2 * t + 2)])
    else:
        for t in range(count):
            flat_out[unsigned(at + t)] = (strip[unsigned(2 * t)] + strip[unsigned(2 * t + 1)]
                                          + strip[unsigned(2 * t + 2)])


@njit(cache=True, inline="always")
def _reduce_runs(flat_out, at, strip, s0, step, c, kw, is_max, scale):
    """flat_out[at + t] = the max, or the sum times `scale`, of strip[s0 + j * step + t]
    over j < kw (2 or 3), for t < c: one loop, each value reduced in a register and
    stored once. For an output pixel's c channels from its taps in the strip, and for a
    strip from a window's three input rows. A loop per tap, as for other widths, was
    entered kw times a pixel and spent much of its time entering for a few dozen
    channels: 3x3/2 max pools 0.73-0.78x the time, average pools 0.65x (64-192
    channels, alternating in one process); the rows in one loop gained another 5%."""
    if kw == 2:
        if is_max:
            for t in range(c):
                flat_out[unsigned(at + t)] = np.maximum(strip[unsigned(s0 + t)], strip[unsigned(s0 + step + t)])
        else:
            for t in range(c):
                flat_out[unsigned(at + t)] = (strip[unsigned(s0 + t)] + strip[unsigned(s0 + step + t)]) * scale
    elif is_max:
        for t in range(c):
            flat_out[unsigned(at + t)] = np.maximum(np.maximum(strip[unsigned(s0 + t)], strip[unsigned(s0 + step + t)]),
                                                    strip[unsigned(s0 + 2 * step + t)])
    else:
        for t in range(c):
            flat_out[unsigned(at + t)] = (strip[unsigned(s0 + t)] + strip[unsigned(s0 + step + t)]
                                          + strip[unsigned(s0 + 2 * step + t)]) * scale


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


COPY, MAX, SUM = 0, 1, 2  # what `_combine_strided` does with each source value


# Every call site inlines the loops it may run, so each names only those: the strided
# ones (an output row's taps) take `_copy` or `_reduce`, which write strides 1 and 2 as
# constants LLVM vectorises; the contiguous ones call `_combine_strided` with step 1.
# One function for all three kinds at every site compiled 27 loops into the NCHW kernel
# and took 5.6 s; its first run in AlexNet-FCN with an empty cache, 6 s of 53.
@njit(cache=True, inline="always")
def _copy(acc, at, src, offset, step, count):
    """acc[at + t] = src[offset + t * step] for t < count."""
    if step == 1:
        _combine_strided(acc, at, src, offset, 1, count, COPY)
    elif step == 2:
        _combine_strided(acc, at, src, offset, 2, count, COPY)
    else:
        _combine_strided(acc, at, src, offset, step, count, COPY)


@njit(cache=True, inline="always")
def _reduce(acc, at, src, offset, step, count, how):
    """acc[at + t] = max or + of itself and src[offset + t * step] (MAX, SUM), t < count."""
    if step == 1:
        _max_or_sum(acc, at, src, offset, 1, count, how)
    elif step == 2:
        _max_or_sum(acc, at, src, offset, 2, count, how)
    else:
        _max_or_sum(acc, at, src, offset, step, count, how)


@njit(cache=True, inline="always")
def _combine_strided(acc, at, src, offset, step, count, how):
    """acc[at + t] = src[offset + t * step] (COPY), or max / + of the two (MAX, SUM), for
    t < count."""
    if how == COPY:
        for t in range(count):
            acc[unsigned(at + t)] = src[unsigned(offset + t * step)]
    else:
        _max_or_sum(acc, at, src, offset, step, count, how)


@njit(cache=True, inline="always")
def _max_or_sum(acc, at, src, offset, step, count, how):
    if how == MAX:
        _max_strided(acc, at, src, offset, step, count)
    else:
        _sum_strided(acc, at, src, offset, step, count)


@njit(cache=True, inline="always")
def _max_strided(acc, at, src, offset, step, count):
    """The max is np.maximum, not `v if v > a else a`: LLVM turned that select into a
    store only where v won and vectorised it as a masked store (vmaskmovps), slow on
    AMD; this loop ran 4x faster (0.51 -> 0.13 ns per element). It also propagates NaN,
    as PyTorch's max pooling does."""
    for t in range(count):
        acc[unsigned(at + t)] = np.maximum(acc[unsigned(at + t)], src[unsigned(offset + t * step)])


@njit(cache=True, inline="always")
def _sum_strided(acc, at, src, offset, step, count):
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


def _geometry(params: dict, is_max: bool) -> tuple:
    """The kernels' window arguments from params; how many windows (ceil mode's extra
    ones included) they take from out.shape, which the shape rule sized."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        pair(params[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
    include_pad = is_max or params["count_include_pad"]  # maxpool has no such parameter
    return (kh, kw, sh, sw, ph, pw, dh, dw, is_max, include_pad)


def _small_windows_fit(geometry: tuple, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """Whether `_max_pool_small_windows` takes this pool: windows of 2 or 3 taps each way,
    every one with a tap in the image along each axis."""
    kh, kw, sh, sw, ph, pw, dh, dw = geometry[:8]
    return (kh in (2, 3) and kw in (2, 3) and _every_window_reaches(kh, sh, ph, dh, in_hw[0], out_hw[0])
            and _every_window_reaches(kw, sw, pw, dw, in_hw[1], out_hw[1]))


@lru_cache(maxsize=256)
def _every_window_reaches(k: int, s: int, p: int, d: int, size: int, n_out: int) -> bool:
    """Whether each of `n_out` windows along an axis has a tap in [0, size): one hanging
    past the edge by more than its dilation (ceil mode's, a padding as wide as a dilated
    window) has none, and pools to -inf. Remembered: a network's last layer is chosen on
    every run (its output is the caller's), and this loop took 0.3 ms of a 111-wide map's."""
    taps = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d
    return bool(np.all(np.any((taps >= 0) & (taps < size), axis=1)))


def _run(params: dict, x: np.ndarray, is_max: bool, out: np.ndarray) -> None:
    """The pool on an NCHW input `_pool_call` cannot read as it is: a copy of it, C-contiguous
    for an NCHW output, channels-last for a channels-last one."""
    out_stored = nhwc(out)
    if out_stored is None:
        _pool(np.ascontiguousarray(x), *_geometry(params, is_max), out)
    else:
        _pool_channels_last(as_channels_last(x), *_geometry(params, is_max), out_stored, False)


def _pool_call(params: dict, is_max: bool, inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
    """`_run` for these arrays as a call of no arguments, its kernel and arguments worked
    out here where no copy is needed (`ops/binding.py`: an Executor binds it once per plan)."""
    x = inputs[0]
    x_stored, out_stored = nhwc(x), nhwc(out)
    if x_stored is None and out_stored is None and x.flags.c_contiguous:
        return partial(_pool, x, *_geometry(params, is_max), out)
    if x_stored is not None:
        geometry = _geometry(params, is_max)
        target = out if out_stored is None else out_stored
        if is_max and _small_windows_fit(geometry, x_stored.shape[1:3], out.shape[2:]):
            return partial(_max_pool_small_windows, x_stored, *geometry[:8], target, out_stored is None)
        return partial(_pool_channels_last, x_stored, *geometry, target, out_stored is None)
    return partial(_run, params, x, is_max, out)  # a copy on every call


def run_maxpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _pool_call(params, True, inputs, out)()


def run_avgpool(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _pool_call(params, False, inputs, out)()


def bind_maxpool(params: dict, weights: dict) -> BoundCall:
    return BoundCall(partial(_pool_call, params, True))


def bind_avgpool(params: dict, weights: dict) -> BoundCall:
    return BoundCall(partial(_pool_call, params, False))
