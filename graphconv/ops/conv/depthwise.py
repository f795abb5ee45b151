"""The "depthwise" CPU conv strategy, for convs with one input channel per group
(groups == in_channels: MobileNet's, EfficientNet's and ConvNeXt's 3x3 to 7x7
depthwise layers, with any channel multiplier): `conv_depthwise` on NCHW values,
`depthwise_channels_last` on values stored channels-last (where ConvNeXt's blocks keep
theirs, see `graphconv/ops/channels_last.py`). Compiled for groups of 2, 4, 8 or 16 channels
in and out (`CHANNELS_LAST_TAPS`), the channels-last kernel is also the "grouped"
strategy's (ResNeXt's 3x3 layers): each input vector is rotated within its groups of
lanes to meet each tap's weights (`vector_tile._make_depthwise_tile`). On a classifier's
small late maps, whose short rows leave the channels-last kernel's tiles few pixels,
`depthwise_small_map` runs instead (`small_map_pays`).

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
from graphconv.ops.specialise import specialised
from graphconv.ops.vector_tile import (DEPTHWISE_PIXELS, DEPTHWISE_TILES, GROUP_WIDTHS, depthwise_row_tile,
                                       depthwise_tile)


SUMS_FLOATS = 2048  # a block of sums (8 KB): with the rows its taps read, it stays in L1


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


def channels_last_taps(weight: np.ndarray) -> np.ndarray:
    """(C, G, kh, kw) weights of a conv of G input and G output channels a group (G = 1:
    depthwise) as (kh, kw, G, C), as `CHANNELS_LAST_TAPS[G]` reads them: each tap's
    weights for every channel side by side, taps[i, j, d, o] the weight output channel o
    gives input channel (o + d) % G of its group, the one that the input vector rotated
    by d brings to o's lane (`vector_tile._make_depthwise_tile`)."""
    channels, group = weight.shape[:2]
    out = np.arange(channels)
    rotated = np.stack([weight[out, (out + d) % group] for d in range(group)])  # (G, C, kh, kw)
    return np.ascontiguousarray(rotated.transpose(2, 3, 0, 1), np.float32)


GROUP = 1  # channels a group: `_pixels` is compiled for each of vector_tile.GROUP_WIDTHS too (`CHANNELS_LAST_TAPS`)
CHANNELS_LAST_OPTIONS = dict(cache=True, parallel=True, boundscheck=False, fastmath=CONTRACT)


@njit(**CHANNELS_LAST_OPTIONS)
def depthwise_channels_last(xh, taps, bias, sh, sw, ph, pw, dh, dw, activation, out_h):
    """A depthwise conv (one output channel an input channel) on channels-last values:
    xh (N, H, W, C), taps (kh, kw, 1, C) (`channels_last_taps`), out_h (N, Ho, Wo, C);
    compiled for groups of G channels (G in and G out), with taps (kh, kw, G, C), in
    `CHANNELS_LAST_TAPS[G]`. A job is an output row. Its
    pixels whose taps all lie inside the row go DEPTHWISE_PIXELS at a time (`_inner_pixels`:
    a row of taps at a time where a depthwise conv steps one pixel, `_pixels_by_rows`),
    the others (the borders, the last few) one at a time, up to four vectors of channels
    side by side (`_pixels`), each through `vector_tile`'s tiles: the sums stay in
    registers over every tap. The activation (`fused_code`) goes over the row as it is
    written (`fast_math.activate_run`).

    Before, each tap added a run of channels times a block of the row's pixels into sums
    kept in L1, so every sum was loaded and stored once per tap: alone, alternating with
    it (2 threads, Intel AVX-512, with silu), EfficientNet-B0's 144x56x56 3x3 266 -> 174
    us, 240x28x28 5x5 227 -> 108, 32x112x112 3x3 200 -> 127; in the network (old and
    new in alternating processes) its 16 depthwise layers 2.07-2.32 -> 1.39-1.41 ms.
    onnxruntime keeps its sums in registers the same way. (Session 20's tile kept them
    over one row of taps only, and still stored them kh times: no clear gain.)"""
    n, height, width, c = xh.shape
    _, ho, wo, _ = out_h.shape
    kh, kw = taps.shape[0], taps.shape[1]
    flat_x, flat_taps, flat_out = xh.reshape(-1), taps.reshape(-1), out_h.reshape(-1)
    first, tiled, by_rows = row_geometry(width, wo, kw, sw, pw, dw)
    for job in prange(n * ho):
        b, oy = job // ho, job % ho
        top = oy * sh - ph
        row_starts = np.empty(kh, np.int64)
        for i in range(kh):
            row = top + i * dh
            row_starts[i] = (b * height + row) * width * c if 0 <= row < height else -1
        scratch = np.empty(2 * kh * kw + 2 * kh, np.int64)
        channels_last_row(flat_x, row_starts, kh, kw, dw, sw, pw, width, c, wo, first, tiled, by_rows, flat_taps,
                          bias, activation, flat_out, (b * ho + oy) * wo * c, scratch)


@njit(**CHANNELS_LAST_OPTIONS)
def depthwise_small_map(xh, taps, bias, sh, sw, ph, pw, dh, dw, activation, out_h, job_lanes):
    """`depthwise_channels_last` (one channel a group) for maps whose rows are too short
    for its tiles of DEPTHWISE_PIXELS pixels to cover them: a job is `job_lanes` channels
    (`small_map_job_lanes`) of every row. It copies them, zero-padded, into a buffer of
    its own (a few tens of KB: it stays in L2), where every pixel has every tap inside, so each row goes
    through the tiles of DEPTHWISE_PIXELS pixels whole (a row of taps at a time where the
    width and stride have a row tile). A row's last tile may run past its end: the pixels
    past it are the next rows' first, written again when those rows come (a job takes the
    rows in order); only the last few pixels of the map go one at a time.

    On a 7x7 map a 5x5 window leaves no pixel for the row kernel's tiles (they need 8
    with every tap inside), so each was computed alone, loading a weight vector per
    multiply-add; and 7 rows are 7 jobs, 4 for one thread and 3 for the other."""
    n, height, width, c = xh.shape
    _, ho, wo, _ = out_h.shape
    kh, kw = taps.shape[0], taps.shape[1]
    hp, wp = height + 2 * ph, width + 2 * pw
    flat_x, flat_taps, flat_out = xh.reshape(-1), taps.reshape(-1), out_h.reshape(-1)
    by_rows = row_geometry(width, wo, kw, sw, pw, dw)[2]
    relu = activation == RELU
    row_ids, tap_ids = np.arange(kh), np.arange(kh * kw)
    for job in prange(-(-c // job_lanes)):
        c0 = job * job_lanes
        lanes = min(job_lanes, c - c0)
        # the last row's last tile reads up to DEPTHWISE_PIXELS pixels past the buffer's end
        padded = np.zeros(n * hp * wp * lanes + (DEPTHWISE_PIXELS * sw + (kw - 1) * dw) * lanes, np.float32)
        _copy_job_channels_padded(flat_x, n, height, width, c, c0, lanes, ph, pw, wp, hp, padded)
        row_offsets, offsets = row_ids * dh * wp * lanes, np.empty(kh * kw, np.int64)
        for t in range(kh * kw):
            offsets[t] = ((t // kw) * dh * wp + (t % kw) * dw) * lanes
        for row in range(n * ho):
            b, oy = row // ho, row % ho
            x_row, o_row = (b * hp + oy * sh) * wp * lanes, row * wo * c + c0
            ox = 0
            while ox < wo:
                if row * wo + ox + DEPTHWISE_PIXELS <= n * ho * wo:
                    if by_rows:
                        _small_map_pixels_by_rows(kw, sw, flat_out, o_row + ox * c, c, flat_taps, row_ids,
                                                  row_offsets, kh, tap_ids, offsets, padded, x_row + ox * sw * lanes,
                                                  lanes, bias, c0, relu)
                    else:
                        _small_map_pixels(DEPTHWISE_PIXELS, flat_out, o_row + ox * c, c, flat_taps, tap_ids, offsets,
                                          kh * kw, padded, x_row + ox * sw * lanes, sw * lanes, bias, c0, lanes, relu)
                    ox += DEPTHWISE_PIXELS
                else:
                    _small_map_pixels(1, flat_out, o_row + ox * c, c, flat_taps, tap_ids, offsets, kh * kw, padded,
                                      x_row + ox * sw * lanes, sw * lanes, bias, c0, lanes, relu)
                    ox += 1
            if lanes == c:
                activate_run(flat_out, o_row, wo * c, activation)
            else:
                for ox in range(wo):
                    activate_run(flat_out, o_row + ox * c, lanes, activation)


def small_map_pays(out_shape: tuple[int, int, int, int], width: int, kh: int, kw: int, sw: int, pw: int,
                   dw: int) -> bool:
    """Whether `depthwise_small_map` beats `depthwise_channels_last` on a depthwise layer
    writing out_shape (N, C, Ho, Wo) from rows `width` wide: windows 5x5 or wider on rows
    whose tiles leave 40% of the pixels or more to go one at a time, and channels enough
    to share among the threads (384, or a map of 128K values). 2 threads, AMD AVX-512,
    with SiLU, medians alternating in one process (rows -> small map): 7x7 maps, 1152
    channels 5x5 44-55 -> 25-35 us, 768 7x7 48-58 -> 24-36; 14x14, 480 5x5 46-55 -> 33-46,
    384 7x7 61-74 -> 46-56; 192 at 28x28 7x7 135-142 -> 76-93. 3x3 windows only drew
    (7x7 maps) or lost (14x14: 1.2-1.5x; every pixel's input is copied for 9 taps), and
    so did fewer channels (240 at 14x14 5x5: 0.9-1.4x; 96 at 7x7: 1.3-1.9x)."""
    n, c, ho, wo = out_shape
    first, tiled, _ = row_geometry.py_func(width, wo, kw, sw, pw, dw)
    alone = wo - (tiled - first)
    return min(kh, kw) >= 5 and 10 * alone >= 4 * wo and (c >= 384 or n * c * ho * wo >= 1 << 17)


def small_map_job_lanes(c: int, threads: int) -> int:
    """Channels a job of `depthwise_small_map`: 4, 3 or 2 vectors of 16, whichever gives
    the busiest thread the fewest (the threads take equal runs of jobs): 672 channels
    are 11 jobs of 64 on 2 threads, 6 for one; 14 of 48 are 7 each."""
    vectors = -(-c // 16)
    best, best_load = 4, vectors * 4
    for per_job in (4, 3, 2):
        jobs = -(-vectors // per_job)
        load = -(-jobs // threads) * per_job  # the busiest thread's vectors
        if load < best_load:
            best, best_load = per_job, load
    return best * 16


@njit(cache=True, inline="always")
def _copy_job_channels_padded(flat_x, n, height, width, c, c0, lanes, ph, pw, wp, hp, padded):
    """Channels c0..c0 + lanes of every pixel of xh (flat_x: n x height x width x c)
    into `padded` (n x hp x wp x lanes, zeroed before), ph rows and pw columns in. Not
    `channels_last.padded_copy`: that is a parallel pass of its own over equal groups of
    channels into one shared copy; here each job copies its own channels, in its loop,
    into a buffer that stays in its core's cache."""
    for b in range(n):
        for y in range(height):
            source = ((b * height + y) * width) * c + c0
            target = ((b * hp + y + ph) * wp + pw) * lanes
            for x in range(width):
                for j in range(lanes):
                    padded[unsigned(target + x * lanes + j)] = flat_x[unsigned(source + x * c + j)]


@njit(cache=True, inline="always")
def _small_map_pixels_by_rows(kw, sw, flat_out, o0, c, flat_taps, row_ids, row_offsets, rows, tap_ids, offsets,
                              padded, x0, lanes, bias, c0, relu):
    """DEPTHWISE_PIXELS pixels' `lanes` channels from c0 on, from the padded buffer of
    `depthwise_small_map`, a row of taps at a time (`depthwise_row_tile`); the few
    channels past the last vector tap by tap (tap_ids and offsets: every tap's)."""
    ch = 0
    while ch + 16 <= lanes:
        depthwise_row_tile(kw, sw, 16, flat_out, o0 + ch, c, flat_taps, c, row_ids, row_offsets, rows, padded,
                           x0 + ch, lanes, bias, c0 + ch, relu)
        ch += 16
    if ch + 8 <= lanes:
        depthwise_row_tile(kw, sw, 8, flat_out, o0 + ch, c, flat_taps, c, row_ids, row_offsets, rows, padded,
                           x0 + ch, lanes, bias, c0 + ch, relu)
        ch += 8
    _small_map_one_by_one(DEPTHWISE_PIXELS, ch, flat_out, o0, c, flat_taps, tap_ids, offsets, rows * kw, padded,
                          x0, sw * lanes, bias, c0, lanes, relu)


@njit(cache=True, inline="always")
def _small_map_pixels(pixels, flat_out, o0, c, flat_taps, tap_ids, offsets, count, padded, x0, x_step, bias, c0,
                      lanes, relu):
    """`pixels` pixels' `lanes` channels from c0 on, from the padded buffer of
    `depthwise_small_map`, tap by tap (`depthwise_tile`): one pixel's four vectors side
    by side where the job has 64 channels."""
    ch = 0
    if pixels == 1 and lanes == 64:
        depthwise_tile(1, 64, flat_out, o0, c, flat_taps, c, tap_ids, offsets, count, padded, x0, x_step, bias, c0,
                       relu)
        ch = 64
    while ch + 16 <= lanes:
        depthwise_tile(pixels, 16, flat_out, o0 + ch, c, flat_taps, c, tap_ids, offsets, count, padded, x0 + ch,
                       x_step, bias, c0 + ch, relu)
        ch += 16
    if ch + 8 <= lanes:
        depthwise_tile(pixels, 8, flat_out, o0 + ch, c, flat_taps, c, tap_ids, offsets, count, padded, x0 + ch,
                       x_step, bias, c0 + ch, relu)
        ch += 8
    _small_map_one_by_one(pixels, ch, flat_out, o0, c, flat_taps, tap_ids, offsets, count, padded, x0, x_step, bias,
                          c0, lanes, relu)


@njit(cache=True, inline="always")
def _small_map_one_by_one(pixels, ch, flat_out, o0, c, flat_taps, tap_ids, offsets, count, padded, x0, x_step, bias,
                          c0, lanes, relu):
    """Channels c0 + ch.. c0 + lanes of `pixels` pixels, one at a time: those past the
    job's last whole vector."""
    for p in range(pixels):
        for j in range(ch, lanes):
            total = bias[c0 + j]
            for t in range(count):
                total += (flat_taps[unsigned(tap_ids[t] * c + c0 + j)]
                          * padded[unsigned(x0 + p * x_step + offsets[t] + j)])
            flat_out[unsigned(o0 + p * c + j)] = max(total, np.float32(0.0)) if relu else total


@njit(cache=True, inline="always")
def row_geometry(width, wo, kw, sw, pw, dw):
    """(first, tiled, by_rows) of a channels-last depthwise conv's rows, for
    `channels_last_row`: its pixels from `first` to `tiled` have every tap column inside
    the row and go DEPTHWISE_PIXELS at a time, a row of taps at a time where `by_rows`."""
    # the pixels from `first` to `inside` have every tap column in the row: ox * sw - pw >= 0
    # and ox * sw <= reach; the wide tiles take them up to `tiled`
    first = min(wo, -(-pw // sw))
    reach = width - 1 - (kw - 1) * dw + pw
    inside = max(first, min(wo, reach // sw + 1) if reach >= 0 else 0)
    tiled = first + (inside - first) // DEPTHWISE_PIXELS * DEPTHWISE_PIXELS
    # vector_tile.DEPTHWISE_ROW_WIDTHS at stride 1, STRIDE_2_ROW_WIDTHS at 2
    by_rows = dw == 1 and ((sw == 1 and (kw == 3 or kw == 5 or kw == 7)) or (sw == 2 and (kw == 3 or kw == 5)))
    return first, tiled, by_rows


@njit(cache=True, inline="always")
def channels_last_row(flat_x, row_starts, kh, kw, dw, sw, pw, width, c, wo, first, tiled, by_rows, flat_taps, bias,
                      activation, flat_out, row_out, scratch):
    """One output row of a channels-last depthwise conv into flat_out from row_out on:
    row_starts[i] is where the input row under tap row i starts in flat_x (its pixel 0),
    -1 where that row is padding, so the rows may lie anywhere (the fused inverted
    residual keeps a few expanded rows in a buffer of its own); (first, tiled, by_rows)
    from `row_geometry`; scratch holds 2 * (kh * kw + kh) int64s."""
    kk = kh * kw
    tap_ids, offsets = scratch[:kk], scratch[kk:2 * kk]
    row_ids, row_offsets = scratch[2 * kk:2 * kk + kh], scratch[2 * kk + kh:2 * kk + 2 * kh]
    relu = activation == RELU
    rows = 0
    for i in range(kh):
        if row_starts[i] >= 0:
            row_ids[rows] = i
            row_offsets[rows] = row_starts[i]
            rows += 1
    # x0 + offsets[t] is pixel ox's tap t, with x0 = (ox * sw - pw) * c: the tiled pixels' taps
    # are those of pixel `first`, every column of which is inside, as of the others
    count = _taps_inside(row_ids, row_offsets, rows, first * sw - pw, kw, dw, width, c, tap_ids, offsets)
    for ox in range(first, tiled, DEPTHWISE_PIXELS):
        _inner_pixels(by_rows, kw, sw, flat_out, row_out + ox * c, flat_taps, row_ids, row_offsets, rows, tap_ids,
                      offsets, count, flat_x, (ox * sw - pw) * c, sw * c, bias, c, relu)
    for ox in range(wo):
        if first <= ox < tiled:
            continue
        count = _taps_inside(row_ids, row_offsets, rows, ox * sw - pw, kw, dw, width, c, tap_ids, offsets)
        _pixels(1, flat_out, row_out + ox * c, flat_taps, tap_ids, offsets, count, flat_x, (ox * sw - pw) * c,
                sw * c, bias, c, relu)
    activate_run(flat_out, row_out, wo * c, activation)


@njit(cache=True, inline="always")
def _taps_inside(row_ids, row_offsets, rows, left, kw, dw, width, c, tap_ids, offsets):
    """How many taps of the window whose first tap column is input column `left` lie
    inside the input, on the `rows` tap rows inside it (row_ids, and row_offsets: where
    each one's input row starts); their numbers and their offsets from that column's
    place in a row (channels-last) into tap_ids and offsets."""
    count = 0
    for r in range(rows):
        for j in range(kw):
            if 0 <= left + j * dw < width:
                tap_ids[count] = row_ids[r] * kw + j
                offsets[count] = row_offsets[r] + j * dw * c
                count += 1
    return count


@njit(cache=True, inline="always")
def _inner_pixels(by_rows, kw, sw, flat_out, o0, flat_taps, row_ids, row_offsets, rows, tap_ids, offsets, count,
                  flat_x, x0, x_step, bias, c, relu):
    """DEPTHWISE_PIXELS pixels with every tap column inside the row: a row of taps at a
    time where `by_rows` (`_pixels_by_rows`), else tap by tap (`_pixels`)."""
    if by_rows:
        _pixels_by_rows(kw, sw, flat_out, o0, flat_taps, row_ids, row_offsets, rows, tap_ids, offsets, count, flat_x,
                        x0, x_step, bias, c, relu)
    else:
        _pixels(DEPTHWISE_PIXELS, flat_out, o0, flat_taps, tap_ids, offsets, count, flat_x, x0, x_step, bias, c, relu)


@njit(cache=True, inline="always")
def _inner_pixels_tap_by_tap(by_rows, kw, sw, flat_out, o0, flat_taps, row_ids, row_offsets, rows, tap_ids,
                             offsets, count, flat_x, x0, x_step, bias, c, relu):
    """`_inner_pixels` of the grouped kernels, which have no row tiles (`by_rows` is for
    one channel a group): tap by tap, and their kernels never compile the row tiles."""
    _pixels(DEPTHWISE_PIXELS, flat_out, o0, flat_taps, tap_ids, offsets, count, flat_x, x0, x_step, bias, c, relu)


@njit(cache=True, inline="always")
def _pixels_by_rows(kw, sw, flat_out, o0, flat_taps, row_ids, row_offsets, rows, tap_ids, offsets, count, flat_x,
                    x0, x_step, bias, c, relu):
    """`_pixels` for DEPTHWISE_PIXELS pixels of a depthwise conv that steps `sw` pixels
    along the row, undilated there, `kw` taps wide (one of DEPTHWISE_ROW_WIDTHS at stride
    1, STRIDE_2_ROW_WIDTHS at 2), every tap column inside: the vectors of channels
    through `depthwise_row_tile`, a row of taps at a time. 1 thread, pw -> depthwise -> pw on 96 channels at 112 (with the border
    pixels' four chains, `_pixels`), the depthwise layer's median: 7x7 1.78 -> 1.35 ms,
    5x5 0.98 -> 0.78, 3x3 0.51 -> 0.44; the 7x7 block against onnxruntime 1.42x -> 1.34x
    (its 1x1 convs are most of the rest)."""
    ch = 0
    while ch + 16 <= c:
        depthwise_row_tile(kw, sw, 16, flat_out, o0 + ch, c, flat_taps, c, row_ids, row_offsets, rows, flat_x,
                           x0 + ch, c, bias, ch, relu)
        ch += 16
    if ch + 8 <= c:
        depthwise_row_tile(kw, sw, 8, flat_out, o0 + ch, c, flat_taps, c, row_ids, row_offsets, rows, flat_x,
                           x0 + ch, c, bias, ch, relu)
        ch += 8
    _channels_one_by_one(DEPTHWISE_PIXELS, ch, flat_out, o0, flat_taps, tap_ids, offsets, count, flat_x, x0, x_step,
                         bias, c, relu)


@njit(cache=True, inline="always")
def _pixels(pixels, flat_out, o0, flat_taps, tap_ids, offsets, count, flat_x, x0, x_step, bias, c, relu):
    """`pixels` consecutive output pixels (DEPTHWISE_PIXELS or 1) of one row, every
    channel: whole vectors of 16 channels, then one of 8, through `depthwise_tile`, the
    last few channels one by one; one pixel's vectors four at a time first, where there
    are so many (four chains of sums overlapping, not one waiting on itself)."""
    ch = 0
    while pixels == 1 and ch + 64 <= c:
        depthwise_tile(1, 64, flat_out, o0 + ch, c, flat_taps, c, tap_ids, offsets, count, flat_x, x0 + ch, x_step,
                       bias, ch, relu)
        ch += 64
    while ch + 16 <= c:
        depthwise_tile(pixels, 16, flat_out, o0 + ch, c, flat_taps, c, tap_ids, offsets, count, flat_x, x0 + ch,
                       x_step, bias, ch, relu)
        ch += 16
    if ch + 8 <= c:
        depthwise_tile(pixels, 8, flat_out, o0 + ch, c, flat_taps, c, tap_ids, offsets, count, flat_x, x0 + ch,
                       x_step, bias, ch, relu)
        ch += 8
    _channels_one_by_one(pixels, ch, flat_out, o0, flat_taps, tap_ids, offsets, count, flat_x, x0, x_step, bias, c,
                         relu)


@njit(cache=True, inline="always")
def _channels_one_by_one(pixels, ch, flat_out, o0, flat_taps, tap_ids, offsets, count, flat_x, x0, x_step, bias, c,
                         relu):
    """Channels ch.. of `pixels` pixels, each reading its GROUP input channels as the
    tiles' lanes do, rotated by d: the few past the last whole vector."""
    for p in range(pixels):
        for rest in range(ch, c):
            total = bias[rest]
            for t in range(count):
                at = x0 + p * x_step + offsets[t] + rest - rest % GROUP
                for d in range(GROUP):
                    total += (flat_taps[unsigned((tap_ids[t] * GROUP + d) * c + rest)]
                              * flat_x[unsigned(at + (rest + d) % GROUP)])
            flat_out[unsigned(o0 + p * c + rest)] = max(total, np.float32(0.0)) if relu else total


def _grouped_channels_last(group: int):
    """`depthwise_channels_last` for groups of `group` channels: its `_pixels` and that
    one's tiles compiled for them (`specialise.specialised`)."""
    inline = dict(cache=True, inline="always")
    one_by_one = specialised(_channels_one_by_one, f"_groups_of_{group}", inline, GROUP=group)
    pixels = specialised(_pixels, f"_groups_of_{group}", inline, depthwise_tile=DEPTHWISE_TILES[group],
                         _channels_one_by_one=one_by_one)
    inner = specialised(_inner_pixels_tap_by_tap, f"_groups_of_{group}", inline, _pixels=pixels)
    row = specialised(channels_last_row, f"_groups_of_{group}", inline, _pixels=pixels, _inner_pixels=inner)
    return specialised(depthwise_channels_last, f"_groups_of_{group}", CHANNELS_LAST_OPTIONS, channels_last_row=row)


CHANNELS_LAST_TAPS = {1: depthwise_channels_last, **{group: _grouped_channels_last(group) for group in GROUP_WIDTHS}}
"""The channels-last kernel per channels a group: 1 for depthwise convs, GROUP_WIDTHS for
the grouped convs the CPU conv's "grouped" strategy runs."""
