"""Channels-last storage of a value: what the `channels-last` pass asks the CPU runtime for.

Every value in graphconv is logically (N, C, H, W), and every kernel receives its inputs
and its output with that shape. How a value is stored is the runtime's business: NCHW
(C-contiguous, the default) or channels-last, where each pixel's C channels lie side
by side, (N, H, W, C) in memory. The runtime hands a channels-last value to kernels as
an NCHW-shaped *view* of that memory (`view`), so its shape, every reference and every
shape rule stay as they are and only the strides tell the two apart, as PyTorch's
`memory_format=torch.channels_last` does.

Why. A 1x1 conv on NCHW reads each input channel's row of pixels a few dozen pixels at
a time, hundreds of rows apart (one per channel), and writes the output the same way;
on channels-last it reads and writes one contiguous run per block of pixels. The conv
strategies that copy their input into channels-last order (`outer`, `winograd`) skip the
transposing copy and the transposing write.

A kernel whose `OpDef` declares `channels_last` ("any", "like-input" or "into-planes") accepts inputs
stored either way and writes `out` as it is stored; other kernels only ever see NCHW
values (the pass stores a value channels-last only when its producer and all its users
are such ops).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.fast_math import RELU, activate_run
from graphconv.ops.layout import is_channels_last, nhwc
from graphconv.ops.unsigned_index import fill, unsigned

CHANNEL_BLOCK = 8  # channels the transposing copies move side by side
ROW_CHUNK = 16  # columns `store_row_in_planes` writes down the planes at a time: a cache line of each


def as_nchw(a: np.ndarray) -> np.ndarray:
    """`a` as a C-contiguous NCHW array (a copy when it is stored any other way). A
    channels-last value is transposed by `_channels_first`: numpy's own copy of the
    transposed view took 0.66 ms for ResNet-50's 1024x14x14 map, this 0.1 ms."""
    stored = nhwc(a)
    if stored is None:
        return np.ascontiguousarray(a)
    out = np.empty(a.shape, np.float32)
    _channels_first(stored, out)
    return out


def copy_into_planes(xh: np.ndarray, out: np.ndarray) -> None:
    """out (N, C, H, W) = xh (N, H, W, C), out stored NCHW: where a kernel that writes
    channels-last only computes a value the network keeps NCHW (its output)."""
    if out.flags.c_contiguous:
        _channels_first(xh, out)
    else:
        out[...] = xh.transpose(0, 3, 1, 2)


def as_channels_last(a: np.ndarray) -> np.ndarray:
    """`a`'s (N, H, W, C) channels-last storage: itself when it is stored so, else a copy."""
    stored = nhwc(a)
    if stored is not None:
        return stored
    stored = np.empty((a.shape[0], a.shape[2], a.shape[3], a.shape[1]), np.float32)
    padded_copy(a, 0, 0, 0, stored)
    return stored


def stored_memory(a: np.ndarray) -> np.ndarray:
    """The memory of a value stored NCHW or channels-last, as one flat array (a view)."""
    stored = nhwc(a)
    return (a if stored is None else stored).reshape(-1)


def memory_stored_alike(x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An elementwise op's input and output memory, stored alike (NCHW or channels-last,
    as `out` is: the input is copied only where the two differ), as flat arrays: one flat
    pass over them computes the op whichever way its values are stored
    (`channels_last="like-input"`)."""
    return stored_memory(as_stored_like(x, out)), stored_memory(out)


def as_stored_like(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`a` stored as `like` is: channels-last when `like` is (a copy unless `a` already
    is), else C-contiguous NCHW. Kernels use it for a residual input whose storage
    differs from their output's (rare: the pass gives both the same where it can)."""
    if is_channels_last(like):
        return as_channels_last(a).transpose(0, 3, 1, 2)
    return as_nchw(a)


def stored_like(a: np.ndarray, like: np.ndarray) -> bool:
    """Whether `a` is stored as `like` is (channels-last, or C-contiguous NCHW), so that
    `as_stored_like` would return its own memory. A C-contiguous value of one channel,
    or of one pixel an image, is stored both ways at once."""
    if nhwc(like) is None:
        return a.flags.c_contiguous
    if nhwc(a) is not None:
        return True
    return a.flags.c_contiguous and (a.shape[1] == 1 or a.shape[2] * a.shape[3] == 1)


def padded_copy(x: np.ndarray, c0: int, ph: int, pw: int, xp: np.ndarray) -> None:
    """xp[n, y, x, c] = x[n, c0 + c, y - ph, x - pw], zero in the padding (ph may be
    negative: a band that starts inside the image), for (N, H', W', C') xp: the padded
    channels-last copy conv strategies read their patches from, made from x stored NCHW
    (a transpose) or channels-last (row copies). An xp of G * N images holds G groups'
    copies one after another: xp[g * N + n] takes channels c0 + g * C' on (a grouped
    conv's every group in one parallel loop)."""
    stored = nhwc(x)
    if stored is None:
        _transpose_padded(np.ascontiguousarray(x), c0, xp.shape[3], ph, pw, xp)
    else:
        _copy_padded(stored, c0, ph, pw, xp)


@njit(cache=True, inline="always")
def store_channels(sums, at, bias, channel0, flat_res, flat_out, dst, count, residual, activation):
    """flat_out[dst + j] = act(sums[at + j] + bias[channel0 + j] (+ flat_res[dst + j])) for
    j < count: one pixel's run of channels, the epilogue of a conv writing channels-last;
    `activation` is the conv's `fused_code`."""
    for j in range(count):
        v = sums[unsigned(at + j)] + bias[unsigned(channel0 + j)]
        if residual:
            v += flat_res[unsigned(dst + j)]
        flat_out[unsigned(dst + j)] = max(v, np.float32(0.0)) if activation == RELU else v
    activate_run(flat_out, dst, count, activation)


@njit(cache=True, inline="always")
def store_row_in_planes(row, out, b, y):
    """out[b, :, y, :] = row.T: an output row a kernel computed channels-last, (cols, C),
    into a C-contiguous NCHW output (a network's last layer reading a channels-last map),
    a cache line of columns at a time down the C planes. Written pixel by pixel, each
    pixel's C values going to C planes, the planes' lines conflict in the cache wherever
    the planes lie a power of two apart: an upsample into 64 planes of 448x448 ran 7x
    slower. Flat indices in place of out[b, ch, y, ox]: zero pad 3 and nearest x2 of
    64x112x112 into planes 0.38 -> 0.20 and 1.4-1.8 -> 0.6-0.8 ms, of 64x224x224 1.7-2.0
    -> 1.0-1.7 and 6.6-8.3 -> 4.0-4.6 ms (2 threads, two runs each)."""
    cols, c = row.shape
    plane = out.shape[2] * out.shape[3]
    flat_row, flat_out = row.reshape(-1), out.reshape(-1)
    row_start = b * c * plane + y * out.shape[3]
    for start in range(0, cols, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, cols)
        for ch in range(c):
            at = row_start + ch * plane
            for ox in range(start, stop):
                flat_out[unsigned(at + ox)] = flat_row[unsigned(ox * c + ch)]


@njit(cache=True, parallel=True, boundscheck=False)
def _channels_first(xh, out):
    """out[n, c, y, x] = xh[n, y, x, c]: a channels-last value back to NCHW, a block of
    CHANNEL_BLOCK channels per job (each pixel's block one short contiguous read)."""
    n, height, width, c = xh.shape
    plane = height * width
    blocks = -(-c // CHANNEL_BLOCK)
    flat_x, flat_out = xh.reshape(-1), out.reshape(-1)
    for job in prange(n * blocks):
        b, c0 = job // blocks, (job % blocks) * CHANNEL_BLOCK
        count = min(CHANNEL_BLOCK, c - c0)
        source, dst = b * plane * c + c0, (b * c + c0) * plane
        for p in range(plane):
            for j in range(count):
                flat_out[unsigned(dst + j * plane + p)] = flat_x[unsigned(source + p * c + j)]


@njit(cache=True, parallel=True, boundscheck=False)
def _transpose_padded(x, c0, cg, ph, pw, xp):
    """`padded_copy` from an NCHW x (cg = xp's channels).

    A transpose, one padded row at a time: CHANNEL_BLOCK channel rows are read side by
    side, so each pixel's channels are written as one contiguous run. Against one
    channel at a time, alternating in one process: 128x192x192 4.4 -> 2.2 ms, 256x96x96
    3.5 -> 1.0 ms (VGG's conv2_1 and conv3_x input at 384x384)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    flat_x, flat_xp = x.reshape(-1), xp.reshape(-1)
    plane = height * width
    for job in prange(xp.shape[0] * xp.shape[1]):
        n, iy, first_pixel = _start_padded_row(flat_xp, job, xp.shape, ph, pw, height, width)
        if iy < 0:
            continue
        group, image = n // x.shape[0], n % x.shape[0]
        source = (image * channels + c0 + group * cg) * plane + iy * width
        block = 0
        while block + CHANNEL_BLOCK <= cg:
            for ix in range(width):
                pixel = first_pixel + ix * cg + block
                for c in range(CHANNEL_BLOCK):
                    flat_xp[unsigned(pixel + c)] = flat_x[unsigned(source + (block + c) * plane + ix)]
            block += CHANNEL_BLOCK
        for c in range(block, cg):
            for ix in range(width):
                flat_xp[unsigned(first_pixel + ix * cg + c)] = flat_x[unsigned(source + c * plane + ix)]


@njit(cache=True, parallel=True, boundscheck=False)
def _copy_padded(xh, c0, ph, pw, xp):
    """`padded_copy` from the (N, H, W, C) storage of a channels-last x: row copies, one
    padded row per job."""
    height, width, channels = xh.shape[1], xh.shape[2], xh.shape[3]
    cg = xp.shape[3]
    flat_x, flat_xp = xh.reshape(-1), xp.reshape(-1)
    for job in prange(xp.shape[0] * xp.shape[1]):
        n, iy, first_pixel = _start_padded_row(flat_xp, job, xp.shape, ph, pw, height, width)
        if iy < 0:
            continue
        group, image = n // xh.shape[0], n % xh.shape[0]
        source = (image * height + iy) * width * channels + c0 + group * cg
        for ix in range(width):
            for c in range(cg):
                flat_xp[unsigned(first_pixel + ix * cg + c)] = flat_x[unsigned(source + ix * channels + c)]


@njit(cache=True, inline="always")
def _start_padded_row(flat_xp, job, padded_shape, ph, pw, height, width):
    """Row `job` (counted over images) of a padded channels-last copy: zero it where it is
    padding (all of it above or below the image, its borders otherwise). Returns (image,
    input row, or -1 for a padding row, offset of the row's first real pixel)."""
    rows, padded_width, cg = padded_shape[1], padded_shape[2], padded_shape[3]
    n, iy = job // rows, job % rows - ph
    row = job * padded_width * cg
    end = row + padded_width * cg
    if iy < 0 or iy >= height:
        fill(flat_xp, row, end, 0.0)
        return n, -1, row
    fill(flat_xp, row, row + pw * cg, 0.0)
    fill(flat_xp, row + (pw + width) * cg, end, 0.0)
    return n, iy, row + pw * cg
