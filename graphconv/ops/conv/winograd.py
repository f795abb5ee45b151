"""Winograd F(2x2, 3x3): the conv strategy for 3x3, stride-1 layers (VGG's every conv,
AlexNet's conv3-5, ResNet's 3x3 layers).

Why. A direct convolution does 9 multiply-adds per output, input channel and output
channel, and the best CPU kernels (onnxruntime's MLAS, `outer`) run them at 80-85% of
the machine's FMA peak, so a direct kernel can at best tie them. Winograd's minimal
filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
computes each 2x2 block of outputs from a 4x4 block of input with 16 multiply-adds per
channel pair instead of 36, 2.25x fewer, in exchange for cheap linear transforms of
the input (additions only) and of the outputs:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

for a 3x3 filter g and a 4x4 input tile d, * element-wise. Summed over input channels
the element-wise products become 16 independent matrix products, one per position xi
of the 4x4 transformed tile: M[xi] (tiles x O) = V[xi] (tiles x C) @ U[xi]^T (C x O).
Those run on the same outer-product register tile as `outer` (`vector_tile.outer_tile`),
with U packed per xi as (C x block) panels per block of 24 output channels, or of 64 where
AVX-512 gives 32 vector registers (`vector_tile.OUTER_LANES`, `OUTER_VECTORS`).

Exactness. The transforms' coefficients are 0, +-1 and +-1/2, exact in binary; only the
order of the additions differs from the direct sum, so results differ from it by a few
float32 roundings, like any change of summation order (F(4x4, 3x3) would be 4x fewer
multiplications, but its transforms' larger coefficients amplify rounding considerably;
not used).

How a job runs. A job is a run of consecutive tiles (row-major over each image's tile
grid, the images of a batch one after another), sized so its buffers stay in L2, and one
part of the output channels: where the transformed weights U are larger than L2,
splitting the channels lets each job read less of U and take more tiles, so U is read
fewer times (`job_plan`). For each of the 16 positions xi it: gathers the transformed
input V[xi] for its tiles straight from the channels-last input (each
value is a signed sum of 4 input values, because every row of B^T has two non-zeros;
contiguous along channels, so it vectorises); and multiplies it by U[xi] into M[xi].
After the 4 positions of each row of the 4x4 tile, their M go through that row's share
of the output transform into the 2x2 outputs of each tile (`_add_row_to_outputs`). At
the end the outputs go to the output with the bias, the residual input if the conv
has one, and its activation. An input stored channels-last is read where it lies, its padding
read as zeros; an NCHW one is copied into padded channels-last order first, a big one
one band of tile rows at a time (`band_tile_rows`), each band followed by its jobs, so
the copy never passes BAND_BYTES.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from numba import njit, prange

from graphconv.ops.cache_size import WEIGHT_BYTE_COST, l2_bytes
from graphconv.ops.channels_last import store_channels
from graphconv.ops.fast_math import activate32
from graphconv.ops.registry import pair
from graphconv.ops.job_queue import job_counters, next_job
from graphconv.ops.unsigned_index import fill, unsigned
from graphconv.ops import vector_tile
from graphconv.ops.specialise import per_lane_width
from graphconv.ops.vector_tile import OUTER_TILES, outer_rows, outer_tile, padded_tile_rows

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])

# Row a of B^T d is sign[a, 0] * d[tap[a, 0]] + sign[a, 1] * d[tap[a, 1]].
INPUT_TAPS = np.array([np.flatnonzero(row) for row in B_T], np.int64)
INPUT_SIGNS = np.array([row[np.flatnonzero(row)] for row in B_T], np.float32)
# GRAPHCONV_WINOGRAD=0: never, for the memory: U is 16/9 of the weights, where the
# "outer" strategy's packed copy is the weights' size (VGG-16 FCN at 384 peaks at 873 MB
# with it, 820 MB without).
ENABLED = os.environ.get("GRAPHCONV_WINOGRAD", "1") != "0"
# The channels-last copy of the input is made for a band of tile rows at a time when the
# whole copy would pass this size: VGG-16's conv1_2 at 384x384 would copy 38 MB at once,
# as much as one of its activations, and it is the network's peak.
BAND_BYTES = 8 << 20
JOB_SHARE_OF_L2 = 0.75  # of a core's L2 for a job's V, 4 M and output sums; the rest for U's panels
MAX_JOB_TILES = 128
# `job_plan`'s cost of gathering one value of V (4 input loads and 3 adds, by channel runs),
# in multiply-adds of the register tile: measured on 2 Xeon cores (AVX-512) from one layer's
# times with 1 and 2 parts (256 channels at 96x96, the same runs).
GATHER_COST = 17
CHUNK = 512  # input channels per k chunk: all of them in VGG's and ResNet's layers (see cpu.OUTER_CHUNK;
# against 192: ResNet-50's 3x3 layers at 14x14 0.94x the time, at 7x7 0.89x, at 28x28 and 56x56 level)


def applies(params: dict) -> bool:
    """Whether a layer is one this strategy computes: a 3x3 kernel, stride 1, no
    dilation, one group."""
    return (pair(params["kernel_size"]) == (3, 3) and pair(params["stride"]) == (1, 1)
            and pair(params["dilation"]) == (1, 1) and params["groups"] == 1)


@njit(cache=True, parallel=True, boundscheck=False)
def pack_transformed_weights(w, block, packed):
    """packed[xi, C * c0 + c * width + j] = (G g G^T)[xi] of output channel c0 + j's filter
    g on input channel c, for each block of `block` output channels starting at c0 (width:
    the block's width, the last one's rounded up to whole vectors of 8): the layout the
    kernel's tile reads, U written straight into it in one parallel pass, in float64
    arithmetic (the padded channels stay as the caller made them: zero)."""
    out_c, c = w.shape[0], w.shape[1]
    o8 = packed.shape[1] // c
    for o in prange(out_c):
        c0 = (o // block) * block
        width = min(block, o8 - c0)
        for ci in range(c):
            at = c * c0 + ci * width + o - c0
            for a in range(4):
                r0 = _g_row(a, w[o, ci, 0, 0], w[o, ci, 1, 0], w[o, ci, 2, 0])  # (G g)[a, :]
                r1 = _g_row(a, w[o, ci, 0, 1], w[o, ci, 1, 1], w[o, ci, 2, 1])
                r2 = _g_row(a, w[o, ci, 0, 2], w[o, ci, 1, 2], w[o, ci, 2, 2])
                for b in range(4):
                    packed[4 * a + b, at] = _g_row(b, r0, r1, r2)


@njit(cache=True, inline="always")
def _g_row(a, x0, x1, x2):
    """Row a of G times (x0, x1, x2), in float64."""
    x0, x1, x2 = np.float64(x0), np.float64(x1), np.float64(x2)
    if a == 0:
        return x0
    if a == 3:
        return x2
    return 0.5 * (x0 + x2 + x1) if a == 1 else 0.5 * (x0 + x2 - x1)


def tiles_per_job(channels: int, out_channels: int) -> int:
    """Tiles whose V (tiles x C), 4 M and output sums (tiles x O each, 4 x that) fit
    JOB_SHARE_OF_L2 of the core's L2, for a job of `out_channels` output channels."""
    o8 = -(-out_channels // 8) * 8
    return max(8, min(MAX_JOB_TILES, int(JOB_SHARE_OF_L2 * l2_bytes()) // (4 * (channels + 8 * o8))))


@lru_cache(maxsize=1024)
def job_plan(images: int, tiles: int, channels: int, out_channels: int, threads: int) -> tuple[int, int]:
    """(runs, channel parts per run) for `images` images of `tiles` tiles: the batch's
    tiles cut into runs of consecutive tiles (row-major over each image's tile grid, the
    images one after another), each run split into parts by blocks of output channels,
    taken by the threads as they come free.

    Why it is worth planning. A job streams its part of U past its tiles: every job
    re-reads U, and a layer with more U than L2 holds (ResNet-50's and VGG's 512-channel
    layers: 16.8 MB) reads it from memory each time. Parts cut that: each job reads only
    its share, and its smaller M let it take more tiles within the L2 budget, so there
    are fewer runs; but each part gathers its tiles' V again. So the plan is the one whose
    busiest thread has the least estimated work (`_busiest_thread_cost`), over 1 or
    `threads` parts and the fewest runs that fit L2 up to `threads` more. On 2 Xeon cores
    (2 MB L2), weights cold as in a network, alone: 512 channels at 14x14 4.1 -> 2.5 ms (1
    run of 2 parts, not 4 runs), at 28x28 10.4 -> 7.2, at 48x48 24.2 -> 19.9; 256 at
    28x28 1.9 -> 1.6 (2 runs, 1 part). Runs span images, so a batch's small maps do not
    each read all of U: ResNet-50's layer4 at batch 16 (16 tiles an image) read it 16
    times a layer."""
    block = vector_tile.OUTER_VECTORS * vector_tile.OUTER_LANES
    blocks = -(-vector_tile.padded_channels(out_channels) // block)
    total = images * tiles
    best = None
    for parts in sorted({1, min(blocks, threads)}):
        part_channels = -(-blocks // parts) * block
        fewest = -(-total // tiles_per_job(channels, part_channels))
        for runs in range(fewest, min(total, fewest + threads) + 1):
            if -(-total // runs) * (runs - 1) >= total:  # the last run would be empty
                continue
            cost = _busiest_thread_cost(total, runs, parts, channels, part_channels, block * blocks, threads)
            if best is None or cost < best[0]:
                best = (cost, runs, parts)
    return best[1], best[2]


def _busiest_thread_cost(tiles: int, runs: int, parts: int, channels: int, part_channels: int, out_channels: int,
                         threads: int) -> float:
    """The busiest thread's work, in multiply-adds, when `threads` take runs x parts
    equal jobs over `tiles` tiles as they come free: each job's products, the V it
    gathers (GATHER_COST a value) and, where U does not fit L2, its share of U
    (WEIGHT_BYTE_COST a byte)."""
    per_job = -(-tiles // runs)
    u_bytes = 4 * 16 * channels * out_channels
    u_cost = WEIGHT_BYTE_COST * u_bytes / parts if u_bytes > l2_bytes() else 0.0
    job = 16 * per_job * channels * (part_channels + GATHER_COST) + u_cost
    return -(-runs * parts // threads) * job


def band_tile_rows(images: int, tile_rows: int, tile_cols: int, channels: int) -> int:
    """Tile rows per band of the channels-last copy: all of them, for every image at once,
    when that copy fits BAND_BYTES; else as many as fit one image's band (2 padded input
    rows per tile row, and 2 more below the last), at least one."""
    row_bytes = 4 * (2 * tile_cols + 2) * channels
    if images * (2 * tile_rows + 2) * row_bytes <= BAND_BYTES:
        return tile_rows
    return max(1, min(tile_rows, (BAND_BYTES // row_bytes - 2) // 2))


def scratch_floats(in_shape: tuple[int, ...], out_channels: int, out_hw: tuple[int, int], threads: int) -> int:
    """Floats a run allocates for an (N, C, H, W) input (`graphconv.memory` counts them):
    the padded channels-last copy of a band of tile rows (none for an input stored
    channels-last: counted anyway, an upper bound), and per thread one job's V, 4 M
    and output sums, sized as `winograd_conv` sizes them, for the larger of the jobs
    of a band and of the whole map (an input stored channels-last is read whole)."""
    n, c = in_shape[:2]
    tile_rows, tile_cols = -(-out_hw[0] // 2), -(-out_hw[1] // 2)
    band = band_tile_rows(n, tile_rows, tile_cols, c)
    copies = n if band == tile_rows else 1
    per_thread = max(_job_floats(copies, band * tile_cols, c, out_channels, threads),
                     _job_floats(n, tile_rows * tile_cols, c, out_channels, threads))
    return copies * (2 * band + 2) * (2 * tile_cols + 2) * c + threads * per_thread


def _job_floats(images: int, tiles: int, channels: int, out_channels: int, threads: int) -> int:
    """One thread's V, 4 M and output sums in `winograd_conv` for this `job_plan`."""
    runs, parts = job_plan(images, tiles, channels, out_channels, threads)
    slots = vector_tile.padded_tile_rows(-(-images * tiles // runs))
    block = vector_tile.OUTER_VECTORS * vector_tile.OUTER_LANES
    blocks = -(-vector_tile.padded_channels(out_channels) // block)
    return slots * channels + 8 * -(-blocks // parts) * block * slots


def winograd_conv(xp, top, left, wu, og, bias, activation, ho, wo, runs, parts, chunk, flat_out, flat_res,
                  image_pixels, channels_last, threads, image0, row0, lanes, block_vectors):
    """Output (image0 + b, o, row0 + y, x) for y < ho, from the channels-last input xp
    and U packed flat as 16 runs of (C x o8), each as `kxo_weights` packs a 1x1 conv's
    weights. Output row y's window starts at xp's row y - top, column x at x - left: xp
    is the layer's input itself with top and left its padding, or a padded copy (of a
    band of it, from padded input row 2 * row0) with top = left = 0; what lies outside
    xp reads as zero. A job is one of `runs` runs of consecutive tiles (row-major over
    each image's tile grid, the images one after another, so a run may span images) and
    one of `parts` ranges of the output blocks of `block_vectors` x `lanes` channels
    (`job_plan`). The output is flat, `image_pixels` (its whole
    height times wo) per image and channel, stored NCHW or `channels_last`; flat_res,
    when not empty, is a residual input stored as the output, added before the
    activation."""
    queue = job_counters(1)  # the next job to take (`next_job`)
    for _ in prange(threads):
        _winograd_thread(xp, top, left, wu, og, bias, activation, ho, wo, runs, parts, chunk, flat_out,
                         flat_res, image_pixels, channels_last, threads, image0, row0, lanes, block_vectors, queue)


def _winograd_thread(xp, top, left, wu, og, bias, activation, ho, wo, runs, parts, chunk, flat_out, flat_res,
                     image_pixels, channels_last, threads, image0, row0, lanes, block_vectors, queue):
    """One thread's share of `winograd_conv`: jobs taken from `queue` until none are left (a
    function of its own for numba's compile time: see `conv.cpu._outer_thread`)."""
    n, rows_in, cols_in, c = xp.shape
    o_pad = -(-og // lanes) * lanes
    block = block_vectors * lanes
    blocks = -(-o_pad // block)
    tile_cols = -(-wo // 2)
    image_tiles = -(-ho // 2) * tile_cols
    per_job = -(-n * image_tiles // runs)
    per_part = -(-blocks // parts)
    slots = padded_tile_rows(per_job)  # M rows per block: the last tile call's clamped rows land in the slack
    u_stride = c * o_pad  # floats of U per xi
    m_size = per_part * slots * block  # one M[xi], a part's blocks; the 4 M of a row of the 4x4 tile are kept
    flat_x = xp.reshape(-1)
    v = np.empty(slots * c, np.float32)
    m = np.empty(4 * m_size, np.float32)
    y = np.empty(per_part * slots * 4 * block, np.float32)
    while True:
        job = next_job(queue)
        if job >= runs * parts:
            break
        run, part = job // parts, job % parts
        tile0 = run * per_job  # counted over the batch
        tiles = min(per_job, n * image_tiles - tile0)
        if tiles <= 0:
            continue
        blk0, blk1 = part * per_part, min(blocks, (part + 1) * per_part)
        for xi in range(16):
            _gather_transformed_input(flat_x, xi, tile0, tiles, image_tiles, tile_cols, top, left, rows_in, cols_in, c,
                                      v)
            m0 = (xi % 4) * m_size
            for k0 in range(0, c, chunk):
                steps = min(chunk, c - k0)
                for blk in range(blk0, blk1):
                    c0 = blk * block
                    vectors = min(block_vectors, (o_pad - c0) // lanes)
                    step = outer_rows(lanes, vectors)
                    for p0 in range(0, tiles, step):  # the first chunk stores: M needs no zeroing
                        outer_tile(lanes, vectors, v, p0, tiles - 1, c, k0, steps, wu, xi * u_stride + c * c0,
                                   vectors * lanes, m, (m0 // block) + (blk - blk0) * slots + p0, block, k0 == 0)
            if xi % 4 == 3:
                _add_row_to_outputs(m, m_size, xi // 4, blk1 - blk0, tiles, slots, block, y)
        _write_outputs(y, bias, activation, image0, tile0, tiles, image_tiles, tile_cols, ho, wo, row0, blk0 * block,
                       min(og, blk1 * block), slots, block, flat_out, flat_res, og, image_pixels, channels_last)


@njit(cache=True, inline="always")
def _gather_transformed_input(flat_x, xi, tile0, tiles, image_tiles, tile_cols, top, left, rows_in, cols_in, c, v):
    """v[tile, :] = (B^T d B)[xi] for each tile of the job (tiles tile0 onwards, counted over
    the batch, `image_tiles` an image): a signed sum of 4 input pixels'
    channel runs (row a and column b of B^T each pick two of the tile's 4 rows/columns);
    a pixel outside the input (its padding) adds nothing."""
    a, bb = xi // 4, xi % 4
    i0, i1 = INPUT_TAPS[a, 0], INPUT_TAPS[a, 1]
    j0, j1 = INPUT_TAPS[bb, 0], INPUT_TAPS[bb, 1]
    s00 = INPUT_SIGNS[a, 0] * INPUT_SIGNS[bb, 0]
    s01 = INPUT_SIGNS[a, 0] * INPUT_SIGNS[bb, 1]
    s10 = INPUT_SIGNS[a, 1] * INPUT_SIGNS[bb, 0]
    s11 = INPUT_SIGNS[a, 1] * INPUT_SIGNS[bb, 1]
    for tt in range(tiles):
        b, ty, tx = _tile_place(tile0 + tt, image_tiles, tile_cols)
        y0, y1 = 2 * ty - top + i0, 2 * ty - top + i1
        x0, x1 = 2 * tx - left + j0, 2 * tx - left + j1
        p00 = ((b * rows_in + y0) * cols_in + x0) * c
        p01 = ((b * rows_in + y0) * cols_in + x1) * c
        p10 = ((b * rows_in + y1) * cols_in + x0) * c
        p11 = ((b * rows_in + y1) * cols_in + x1) * c
        at = tt * c
        rows_inside = 0 <= y0 < rows_in and 0 <= y1 < rows_in
        if rows_inside and 0 <= x0 < cols_in and 0 <= x1 < cols_in:
            for k in range(c):
                v[unsigned(at + k)] = (s00 * flat_x[unsigned(p00 + k)] + s01 * flat_x[unsigned(p01 + k)]
                                       + s10 * flat_x[unsigned(p10 + k)] + s11 * flat_x[unsigned(p11 + k)])
        else:
            _gather_edge_tile(v, at, flat_x, (p00, p01, p10, p11), (s00, s01, s10, s11), (y0, y0, y1, y1),
                              (x0, x1, x0, x1), rows_in, cols_in, c)


@njit(cache=True)
def _gather_edge_tile(v, at, flat_x, starts, signs, ys, xs, rows, cols, c):
    """`_gather_transformed_input` for a tile at the edge, from its pixels inside the
    input: 2, 1 or none of the 4 (rows inside times columns inside), in one pass. Not
    inlined: in the kernel's body its loops added 4 s to the kernel's first compile
    (17.7 -> 22 s)."""
    first, second, inside = 0, 0, 0
    for n in range(4):
        if 0 <= ys[n] < rows and 0 <= xs[n] < cols:
            if inside == 0:
                first = n
            else:
                second = n
            inside += 1
    pa, sa, pb, sb = starts[first], signs[first], starts[second], signs[second]
    if inside == 2:
        for k in range(c):
            v[unsigned(at + k)] = sa * flat_x[unsigned(pa + k)] + sb * flat_x[unsigned(pb + k)]
    elif inside == 1:
        for k in range(c):
            v[unsigned(at + k)] = sa * flat_x[unsigned(pa + k)]
    else:
        fill(v, at, at + c, 0.0)


@njit(cache=True, inline="always")
def _add_row_to_outputs(m, m_size, a, part_blocks, tiles, slots, block, y):
    """The output transform's share of row a of the 4x4 tile, from M[a, b] for b < 4 (m,
    one M per m_size floats): T[j] = sum_b A^T[j, b] M[a, b] = (M0 + M1 + M2, M1 - M2 - M3),
    then y[i, j] (+)= A^T[i, a] T[j]. Row 0 stores the top outputs and row 1 the bottom
    ones (A^T[:, 0] = (1, 0)), so y needs no zeroing. Done per row, separably, this reads
    each M once and updates y 12 times a tile, where adding each M[xi] into the outputs it
    enters read the 16 M 36 times and updated y 36 times. Alternating in one process, 2
    threads: ResNet-50's 3x3 layers at 224 24.5 -> 22.0 ms summed (the network 0.95 per
    round), VGG-16's at 224 154 -> 141 (0.92), ResNet-50's at 448 85.6 -> 82.4."""
    for blk in range(part_blocks):
        for tile in range(tiles):
            src = (blk * slots + tile) * block
            dst = (blk * slots + tile) * 4 * block
            for j in range(block):
                m1 = m[unsigned(m_size + src + j)]
                m2 = m[unsigned(2 * m_size + src + j)]
                t0 = m[unsigned(src + j)] + m1 + m2
                t1 = m1 - m2 - m[unsigned(3 * m_size + src + j)]
                if a == 0:  # A^T[:, a] = (1, 0)
                    y[unsigned(dst + j)] = t0
                    y[unsigned(dst + block + j)] = t1
                elif a == 1:  # (1, 1)
                    y[unsigned(dst + j)] += t0
                    y[unsigned(dst + block + j)] += t1
                    y[unsigned(dst + 2 * block + j)] = t0
                    y[unsigned(dst + 3 * block + j)] = t1
                elif a == 2:  # (1, -1)
                    y[unsigned(dst + j)] += t0
                    y[unsigned(dst + block + j)] += t1
                    y[unsigned(dst + 2 * block + j)] -= t0
                    y[unsigned(dst + 3 * block + j)] -= t1
                else:  # (0, -1)
                    y[unsigned(dst + 2 * block + j)] -= t0
                    y[unsigned(dst + 3 * block + j)] -= t1


@njit(cache=True, inline="always")
def _write_outputs(y, bias, activation, image0, tile0, tiles, image_tiles, tile_cols, ho, wo, row0, o0, o1, slots,
                   block, flat_out, flat_res, out_channels, image_pixels, channels_last):
    """The job's 2x2 output blocks (tiles tile0 onwards, counted over the batch from image
    image0, `image_tiles` an image), with bias, residual and activation, into the output,
    rows from row0 on (the tiles past an odd map's last row or column write only their
    real outputs): channel by channel into an NCHW output; into a channels-last one pixel
    by pixel, each pixel's channels of a block one contiguous run."""
    residual = flat_res.size > 0
    if channels_last:
        for tt in range(tiles):
            b, ty, tx = _tile_place(tile0 + tt, image_tiles, tile_cols)
            for q in range(4):
                oy, ox = 2 * ty + q // 2, 2 * tx + q % 2
                if oy < ho and ox < wo:
                    dst = ((image0 + b) * image_pixels + (row0 + oy) * wo + ox) * out_channels
                    for lo in range(o0, o1, block):
                        store_channels(y, ((((lo - o0) // block) * slots + tt) * 4 + q) * block, bias, lo, flat_res,
                                       flat_out, dst + lo, min(o1, lo + block) - lo, residual, activation)
        return
    for o in range(o0, o1):
        bo = bias[o]
        blk, lane = (o - o0) // block, o % block
        for tt in range(tiles):
            b, ty, tx = _tile_place(tile0 + tt, image_tiles, tile_cols)
            plane = ((image0 + b) * out_channels + o) * image_pixels + row0 * wo
            for i in range(2):
                oy = 2 * ty + i
                if oy >= ho:
                    continue
                at = ((blk * slots + tt) * 4 + 2 * i) * block + lane
                for j in range(2):
                    ox = 2 * tx + j
                    if ox < wo:
                        value = y[unsigned(at + j * block)] + bo
                        dst = plane + oy * wo + ox
                        if residual:
                            value += flat_res[unsigned(dst)]
                        flat_out[unsigned(dst)] = activate32(value, activation)


@njit(cache=True, inline="always")
def _tile_place(tile, image_tiles, tile_cols):
    """(image, tile row, tile column) of a tile counted over the batch."""
    b = tile // image_tiles
    local = tile - b * image_tiles
    return b, local // tile_cols, local % tile_cols


# The kernel compiled per register-tile width (`graphconv.ops.specialise`), as `outer`'s.
_WINOGRAD_THREAD = per_lane_width(_winograd_thread, dict(cache=True, boundscheck=False, error_model="numpy"),
                                  outer_tile=OUTER_TILES)
WINOGRAD_CONV = per_lane_width(winograd_conv, dict(cache=True, parallel=True, boundscheck=False),
                               _winograd_thread=_WINOGRAD_THREAD)
