"""The register-tiled implicit GEMM behind the CUDA conv and fc kernels.

A conv is a matrix product per group: out[o, q] = sum_k W[o, k] * cols[k, q], with o an
output channel, q an output position (image, row, column) and k a (tap, channel) pair,
taps outermost. `cols` (im2col) is never stored: each block gathers its slice of it
from the input. Where a group's channels are whole k-steps, a step's 8 k share one tap,
and the gather reads the tap table and checks the padding once a step (`one_tap`).

One block computes a `Tile` of `rows` output channels by `cols` positions. It walks k
in steps of BK = 8, staging the step's weights and input values in shared memory
(two buffers, so the next step's global loads are in flight while this one computes),
and each thread keeps `thread_rows` x `thread_cols` sums in registers. Per k a thread
reads its fragments as float4 shared loads (LDS.128: the 16-byte alignment and the
unsigned indices below are what let the compiler emit them) and does
thread_rows * thread_cols FMAs: for the 8x8 thread tile 64 FMAs for 4 loads, which is
what keeps an SGEMM on the FMA units rather than on shared memory.

The weights are stored transposed, (groups, K, O/groups), so a block's weight loads are
consecutive in o and coalesce; `taps` tells the gather where k reads from, relative to
the window's corner: its offset in the flat input, and the tap's row and column (for
the padding check).

A layer with few blocks (an fc made a conv has a few positions and a huge K) splits K
over `splits` blocks per tile; each writes its partial sums to a workspace and
`reduce_splits` adds them up with the epilogue (bias, residual, activation) that an unsplit
block applies itself.

`GemmLayer` is a conv or fc layer bound to the GPU (`bind_conv`, `bind_fc`): per input
size it asks `plan_launch` for the tile and split, and makes the tap table, the
geometry array and the workspace once.

Why the k-steps are eight written-out calls rather than a loop: LLVM does not unroll a
loop this long, and without the unroll every shared load needs its address computed at
run time instead of taking a constant offset (docs/gpu.md: the SASS, counted offline
with benchmarks/cuda_sass.py).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from numba import config, cuda, float32, int32, int64, uint32, uint64

from graphconv.ops.activations.cuda import activate
from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d

BK = 8  # k per shared-memory step: `gemm_kernel` writes its eight steps out
VECTOR = 4  # floats per shared-memory fragment load (LDS.128)
# Where an int64 parameter sits in the `dims` array each launch reads its geometry from
# (one device array instead of 18 scalar arguments: numba marshals every argument in
# Python on each launch).
DIMS = ("channels", "height", "width", "out_height", "out_width", "stride_y", "stride_x", "pad_y", "pad_x",
        "rows", "groups", "group_channels", "k_total", "k_chunk", "activation", "residual", "positions", "partial")
(CHANNELS, HEIGHT, WIDTH, OUT_HEIGHT, OUT_WIDTH, STRIDE_Y, STRIDE_X, PAD_Y, PAD_X, ROWS, GROUPS, GROUP_CHANNELS,
 K_TOTAL, K_CHUNK, ACTIVATION, RESIDUAL, POSITIONS, PARTIAL) = range(len(DIMS))
# The simulator has no aligned shared arrays; on a GPU 16 bytes is what LDS.128 needs.
_SHARED_ALIGNMENT = None if config.ENABLE_CUDASIM else 16


@dataclass(frozen=True)
class Tile:
    """The outputs one block computes: `rows` output channels x `cols` positions, each
    thread `thread_rows` x `thread_cols` of them."""

    rows: int
    cols: int
    thread_rows: int
    thread_cols: int
    # A cap on a thread's registers (ptxas spills past it), so that more blocks fit an
    # SM; None leaves ptxas its own count. For `benchmarks/gpu_tiles.py`'s variants.
    max_registers: int | None = None

    @property
    def threads(self) -> int:
        return (self.rows // self.thread_rows) * (self.cols // self.thread_cols)

    def check(self) -> None:
        """The shapes `gemm_kernel` is written for: sizes that are powers of 2, fragments
        of up to 4 consecutive floats, and every thread's B loads in one column (threads a
        multiple of cols)."""
        for size, per_thread in ((self.rows, self.thread_rows), (self.cols, self.thread_cols)):
            vector = min(VECTOR, per_thread)
            if size & (size - 1) or per_thread & (per_thread - 1):
                raise ValueError(f"{self}: sizes must be powers of 2")
            if per_thread % vector or size % per_thread:
                raise ValueError(f"{self}: a thread's {per_thread} of {size} are not whole fragments")
        if self.threads % self.cols or self.threads > 1024:
            raise ValueError(f"{self}: {self.threads} threads")


# Largest first: `plan_launch` prefers the first of equal estimates. The 256-thread
# 128-row tiles are capped at 128 registers a thread so that an SM holds two blocks of
# them (four of 128x32): on an H200 (session 35, `benchmarks/gpu_tiles.py`) that made
# 128x128 1.3x faster on VGG-16's conv3_2 at 1024 (45% of cuBLAS's SGEMM rate, from 33%)
# though it spills 156 bytes a thread, and 128x64 up to 1.7x (no spills: 129 registers
# uncapped); Nsight Compute showed the uncapped 128x128 at 12.5% occupancy, its warps
# mostly waiting on global loads.
TILES = (Tile(128, 128, 8, 8, 128), Tile(128, 64, 8, 4, 128), Tile(64, 128, 4, 8), Tile(64, 64, 4, 4),
         Tile(128, 32, 8, 4, 128), Tile(128, 16, 4, 4), Tile(256, 4, 4, 1))
# How fast each tile computes relative to the largest, per FMA of its padded work, and
# what moving a float costs in FMAs of the whole GPU (a block's loads; each partial sum
# of a split K written to the workspace and read back): fitted by
# `benchmarks/fit_planner.py` to every tile and K split timed on eleven VGG-16 and
# AlexNet layers on an H200 (`gpu_tiles.py --json`, session 35): its picks were then the
# fastest timed launch on seven of them, within 8% on two, and on two launches not timed
# (a 32-way split; a 4-way split of a big layer, where only 1 and 2 were timed).
_TILE_EFFICIENCY = dict(zip(TILES, (1.0, 0.81, 0.75, 0.52, 0.80, 0.46, 0.11)))
LOAD_FLOAT_FMAS = 3.1
WORKSPACE_FLOAT_FMAS = 63
# Blocks of each tile an SM holds at once, from ptxas's registers a thread for sm_90
# (benchmarks/cuda_sass.py, session 35: 128, 128, 127, 83, 128, 140, 136; allocated in
# 8s, 65536 an SM). The per-step gather's 128x16 and 256x4 kernels need fewer (96, 80:
# more blocks than counted here), the others about as many.
_RESIDENT_BLOCKS = dict(zip(TILES, (2, 2, 2, 2, 4, 3, 1)))
SMALLEST_SPLIT = 256  # k per split: below it the workspace traffic outweighs the parallelism
# Input sizes a GemmLayer keeps its launches for: twice the plans an Executor keeps
# (runtime.PLANS_KEPT), whose bound calls hold some of them.
LAUNCHES_KEPT = 8


@dataclass(frozen=True)
class Launch:
    """How one GEMM is launched: the tile, the grid and how many ways K is split."""

    tile: Tile
    grid: tuple[int, int, int]
    splits: int
    k_chunk: int

    def describe(self) -> str:
        """What `graphconv inspect --profile` shows as the layer's strategy: "128x64",
        or "128x16 K/8" when K is split eight ways."""
        split = f" K/{self.splits}" if self.splits > 1 else ""
        return f"{self.tile.rows}x{self.tile.cols}{split}"


def plan_launch(rows: int, positions: int, k_total: int, groups: int, processors: int) -> Launch:
    """The tile and K split with the least estimated time for a (rows x k_total) by
    (k_total x positions) product per group on a GPU with `processors` SMs: padded work
    over the tile's efficiency, counted in waves of the blocks the SMs hold at once;
    plus the blocks' loads and the pass over the workspace when K is split, spread over
    the SMs."""
    candidates = (launch_for(tile, splits, rows, positions, k_total, groups)
                  for tile in TILES for splits in _split_choices(k_total))
    # The first of equal costs: the larger tile, fewer splits.
    return min(candidates, key=lambda launch: estimated_cost(launch, rows, positions, groups, processors))


def estimated_cost(launch: Launch, rows: int, positions: int, groups: int, processors: int) -> float:
    """`plan_launch`'s estimate of a launch's time, in FMAs of one SM."""
    tile, resident, blocks = launch.tile, _RESIDENT_BLOCKS[launch.tile], math.prod(launch.grid)
    waves = math.ceil(blocks / (resident * processors))  # the blocks an SM holds share it
    work = waves * resident * tile.rows * tile.cols * launch.k_chunk / _TILE_EFFICIENCY[tile]
    loads = blocks * (tile.rows + tile.cols) * launch.k_chunk * LOAD_FLOAT_FMAS
    workspace = (launch.splits > 1) * launch.splits * rows * positions * groups * WORKSPACE_FLOAT_FMAS
    return work + (loads + workspace) / processors


def launch_for(tile: Tile, splits: int, rows: int, positions: int, k_total: int, groups: int) -> Launch:
    """The launch of `tile` with K cut into at most `splits` chunks of whole steps."""
    k_chunk = math.ceil(math.ceil(k_total / splits) / BK) * BK
    splits = math.ceil(k_total / k_chunk)
    grid = (math.ceil(positions / tile.cols), math.ceil(rows / tile.rows), groups * splits)
    return Launch(tile, grid, splits, k_chunk)


def _split_choices(k_total: int) -> list[int]:
    """1, 2, 4, ... while each split keeps at least SMALLEST_SPLIT of k."""
    choices = [1]
    while k_total // (choices[-1] * 2) >= SMALLEST_SPLIT and choices[-1] < 64:
        choices.append(choices[-1] * 2)
    return choices


def window_taps(group_channels: int, kernel: tuple[int, int], dilation: tuple[int, int],
                height: int, width: int) -> np.ndarray:
    """For each k = (tap row, tap column, channel) of a window over a height x width
    input, in the weights' order (`prepared_weights`): its offset from the window's corner
    in the flat input, then the tap's row and column offsets, side by side (a flat int32
    array of K triples, int64 where an offset needs it: the gather finds all three from
    one address).

    Taps outermost, channels innermost: where the group's channels are a multiple of BK,
    every k-step lies within one tap, and the kernel's `one_tap_steps` gather looks the
    table up once a step instead of once a value."""
    r, s, c = np.meshgrid(np.arange(kernel[0]) * dilation[0], np.arange(kernel[1]) * dilation[1],
                          np.arange(group_channels), indexing="ij")
    offsets = (c.astype(np.int64) * height + r) * width + s
    # int32 unless a group's planes hold 2^31 values or more (64 channels of 8192x8192)
    table = np.int32 if offsets.max() < 2 ** 31 else np.int64
    return np.stack([offsets.ravel(), r.ravel(), s.ravel()], axis=1).ravel().astype(table)


def one_tap_steps(group_channels: int) -> bool:
    """Whether every k-step of BK lies within one tap of the window (`window_taps`'
    order) and K is whole steps: so when a group's channels are whole steps."""
    return group_channels % BK == 0


@lru_cache(maxsize=None)
def gemm_kernel(tile: Tile, one_tap: bool = False, whole_rows: bool = False, narrow: bool = False):
    """The implicit-GEMM kernel for `tile`, compiled on its first launch:
    kernel[launch.grid, tile.threads](x, wt, taps, bias, res, out, dims), with x the
    flat NCHW input, wt the flat (groups, K, rows) weights, taps the flat int32 (K, 3)
    table of where each k reads (`window_taps`; int64 for planes of 2^31 values), and dims
    the int64 geometry (`DIMS`).
    `out` is the flat NCHW output, or the (splits, ...) workspace when its PARTIAL entry
    is set, where the sums are written without the epilogue. `one_tap` is for layers
    whose every k-step lies within one tap and is whole (`one_tap_steps`), `whole_rows`
    for layers whose rows are whole tiles: the loads then leave out the checks that
    cannot fail (a register and a comparison each, in a kernel short of registers).
    `narrow` computes the input's and weights' offsets in 32 bits, for arrays of fewer
    than 2^31 elements: numba does integer arithmetic in 64 bits, two registers and
    about twice the instructions a value, unless its result is cut to 32."""
    tile.check()
    rows, cols, thread_rows, thread_cols = tile.rows, tile.cols, tile.thread_rows, tile.thread_cols
    threads = tile.threads
    threads_x = cols // thread_cols
    vector_rows, vector_cols = min(VECTOR, thread_rows), min(VECTOR, thread_cols)
    row_group = rows * vector_rows // thread_rows  # rows between a thread's fragments
    col_group = cols * vector_cols // thread_cols
    a_size, b_size = BK * rows, BK * cols
    a_shared, b_shared = 2 * a_size, 2 * b_size  # two buffers each
    a_loads, b_loads = math.ceil(a_size / threads), math.ceil(b_size / threads)
    a_whole, b_whole = a_size % threads == 0, b_size % threads == 0  # every thread loads every round
    k_per_round = threads // cols  # the k rows of inputs one round of a block's loads covers
    whole_steps = one_tap
    # The types of the input's and weights' offsets: signed ones (a window's corner can lie
    # in the padding, before the input's start) and the unsigned index an array is read at.
    # Mixing 64-bit signed and unsigned would make numba compute in float64.
    signed, offset = (int32, uint32) if narrow else (int64, uint64)
    align = _SHARED_ALIGNMENT
    # Shifts and masks for the divisions by powers of two: numba's floor division of a
    # signed index costs a sign fix-up each time (`Tile.check` keeps the sizes powers of 2).
    rows_shift, cols_shift, threads_x_shift = rows.bit_length() - 1, cols.bit_length() - 1, threads_x.bit_length() - 1

    # The loads below have no branches: each reads a valid address (index 0 or the
    # step's first k stands in for one it must not read) and selects zero in its place.
    # With a branch around each gather, ptxas waited out each tap-table load in turn
    # before the next (four dependent global-memory latencies a step, Nsight Compute's
    # "long scoreboard" stalls); without, it issues all of a step's table loads at once.
    @cuda.jit(device=True, inline=True)
    def load_weights(wt, step_base, og, k_left, t, rows_left, a_reg):
        """This thread's share of the step's BK x rows weights (`step_base`: where the
        step's first k row of this block's columns starts) into registers; zero past
        the last row and past the last k (`k_left` of them remain), where there can be
        such."""
        for i in range(a_loads):
            e = t + threads * i
            ok = a_whole or e < a_size
            if not whole_steps:
                ok = ok & (e >> rows_shift < k_left)
            if not whole_rows:
                ok = ok & (e & (rows - 1) < rows_left)
            at = offset(step_base + offset((e >> rows_shift) * og + (e & (rows - 1)))) if ok else offset(0)
            value = wt[at]
            a_reg[i] = value if ok else float32(0.0)

    @cuda.jit(device=True, inline=True)
    def load_inputs(x, taps, k0, k_left, t, column_ok, column_base, iy0, ix0, height, width, plane, b_reg):
        """This thread's share of the step's BK x cols input values (all in its column),
        gathered through the tap table; zero in the padding and past the last position."""
        for i in range(b_loads):
            e = t + threads * i
            live = (b_whole or e < b_size) & (e >> cols_shift < k_left) & column_ok
            tap = uint64(3 * (k0 + (e >> cols_shift if live else 0)))  # the k's (offset, row, column)
            iy = iy0 + taps[tap + uint64(1)]
            ix = ix0 + taps[tap + uint64(2)]
            ok = live & (uint64(iy) < uint64(height)) & (uint64(ix) < uint64(width))  # a negative one wraps past
            at = offset(column_base + taps[tap]) if ok else offset(0)
            value = x[at]
            b_reg[i] = value if ok else float32(0.0)

    @cuda.jit(device=True, inline=True)
    def load_inputs_one_tap(x, taps, k0, k_left, t, column_ok, column_base, iy0, ix0, height, width, plane,
                            b_reg):
        """`load_inputs` for a step within one tap (and K in whole steps): its BK values
        of a column are one input pixel in consecutive channels, a plane apart, so the
        tap table is read and the padding checked once a step rather than once a value."""
        tap = uint64(3 * k0)
        iy = iy0 + taps[tap + uint64(1)]
        ix = ix0 + taps[tap + uint64(2)]
        inside = column_ok & (uint64(iy) < uint64(height)) & (uint64(ix) < uint64(width))
        first = t >> cols_shift  # this thread's first k of the step
        base = signed(column_base + taps[tap] + first * plane)
        for i in range(b_loads):
            e = t + threads * i
            ok = inside & (b_whole or e < b_size)
            at = offset(base + signed(i * k_per_round) * plane) if ok else offset(0)
            value = x[at]
            b_reg[i] = value if ok else float32(0.0)

    gather = load_inputs_one_tap if one_tap else load_inputs

    @cuda.jit(device=True, inline=True)
    def store_step(a_s, b_s, buffer, t, a_reg, b_reg):
        for i in range(a_loads):
            e = t + threads * i
            if a_whole or e < a_size:
                a_s[uint64(buffer * a_size + e)] = a_reg[i]
        for i in range(b_loads):
            e = t + threads * i
            if b_whole or e < b_size:
                b_s[uint64(buffer * b_size + e)] = b_reg[i]

    @cuda.jit(device=True, inline=True)
    def k_step(a_s, b_s, a_base, b_base, kk, acc, a_frag, b_frag):
        """One k of the step: each thread's outer product of its fragments."""
        for i in range(thread_rows):
            a_frag[i] = a_s[a_base + uint64(kk * rows + i % vector_rows + (i // vector_rows) * row_group)]
        for j in range(thread_cols):
            b_frag[j] = b_s[b_base + uint64(kk * cols + j % vector_cols + (j // vector_cols) * col_group)]
        for i in range(thread_rows):
            for j in range(thread_cols):
                acc[i, j] = cuda.fma(a_frag[i], b_frag[j], acc[i, j])

    @cuda.jit(device=True, inline=True)
    def epilogue(acc, bias, res, out, dims, group, split, row0, col0, ty, tx):
        """Each sum to its NCHW place: plus bias, residual and activation, or as it is into
        this split's slice of the workspace."""
        og = dims[ROWS]
        positions = dims[OUT_HEIGHT] * dims[OUT_WIDTH]
        total = dims[POSITIONS]
        out_channels = og * dims[GROUPS]
        partial = dims[PARTIAL]
        slice_base = split * total * out_channels
        col_at = cuda.local.array(thread_cols, dtype=uint64)
        col_ok = cuda.local.array(thread_cols, dtype=uint64)
        for j in range(thread_cols):
            q = col0 + tx * vector_cols + j % vector_cols + (j // vector_cols) * col_group
            col_ok[j] = q < total
            col_at[j] = uint64(slice_base + (q // positions) * out_channels * positions + q % positions)
        for i in range(thread_rows):
            m = row0 + ty * vector_rows + i % vector_rows + (i // vector_rows) * row_group
            o = group * og + m
            row_ok = m < og
            add = float32(0.0)
            if row_ok and not partial:
                add = bias[o]
            for j in range(thread_cols):
                if row_ok and col_ok[j]:
                    at = col_at[j] + uint64(o * positions)
                    value = acc[i, j] + add
                    if not partial:
                        if dims[RESIDUAL]:
                            value += res[at]
                        value = activate(value, dims[ACTIVATION])
                    out[at] = value

    # The simulator's jit takes no register cap (and has no registers to cap).
    capped = {"max_registers": tile.max_registers} if tile.max_registers and not config.ENABLE_CUDASIM else {}

    @cuda.jit(**capped)
    def kernel(x, wt, taps, bias, res, out, dims):
        a_s = cuda.shared.array(a_shared, float32, align)
        b_s = cuda.shared.array(b_shared, float32, align)
        acc = cuda.local.array((thread_rows, thread_cols), float32)
        a_reg = cuda.local.array(a_loads, float32)
        b_reg = cuda.local.array(b_loads, float32)
        a_frag = cuda.local.array(thread_rows, float32)
        b_frag = cuda.local.array(thread_cols, float32)
        t = cuda.threadIdx.x
        ty = t >> threads_x_shift
        tx = t & (threads_x - 1)
        og = dims[ROWS]
        k_total = dims[K_TOTAL]
        k_chunk = dims[K_CHUNK]
        groups = dims[GROUPS]
        group = cuda.blockIdx.z % groups
        split = cuda.blockIdx.z // groups
        row0 = cuda.blockIdx.y * rows
        col0 = cuda.blockIdx.x * cols
        k_lo = split * k_chunk
        k_hi = min(k_total, k_lo + k_chunk)
        # int32 where a value fits one (a side, a tap's row): a register each instead of
        # two, which the capped 128x128 tile spills less for.
        height = int32(dims[HEIGHT])
        width = int32(dims[WIDTH])
        plane = signed(dims[HEIGHT] * dims[WIDTH])
        out_width = dims[OUT_WIDTH]
        positions = dims[OUT_HEIGHT] * out_width
        # The one output position this thread gathers input for, all along k.
        q = col0 + (t & (cols - 1))
        column_ok = q < dims[POSITIONS]
        p = q % positions
        iy0 = int32((p // out_width) * dims[STRIDE_Y] - dims[PAD_Y])
        ix0 = int32((p % out_width) * dims[STRIDE_X] - dims[PAD_X])
        # The window's corner in the flat input: a tap adds its offset from the table.
        column_base = signed((((q // positions) * dims[CHANNELS] + group * dims[GROUP_CHANNELS]) * height + iy0) * width
                             + ix0)
        w_base = offset((group * k_total + k_lo) * og + row0)  # this block's weights at its first k
        w_step = offset(BK * og)
        rows_left = int32(og - row0)
        for i in range(thread_rows):
            for j in range(thread_cols):
                acc[i, j] = float32(0.0)
        load_weights(wt, w_base, og, k_hi - k_lo, t, rows_left, a_reg)
        gather(x, taps, k_lo, k_hi - k_lo, t, column_ok, column_base, iy0, ix0, height, width, plane, b_reg)
        store_step(a_s, b_s, 0, t, a_reg, b_reg)
        cuda.syncthreads()
        buffer = 0
        k0 = k_lo
        while k0 < k_hi:
            more = k0 + BK < k_hi
            if more:  # the next step's loads, in flight while this one computes
                w_base = offset(w_base + w_step)
                load_weights(wt, w_base, og, k_hi - k0 - BK, t, rows_left, a_reg)
                gather(x, taps, k0 + BK, k_hi - k0 - BK, t, column_ok, column_base, iy0, ix0, height, width, plane,
                       b_reg)
            a_base = uint64(buffer * a_size + ty * vector_rows)
            b_base = uint64(buffer * b_size + tx * vector_cols)
            k_step(a_s, b_s, a_base, b_base, 0, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 1, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 2, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 3, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 4, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 5, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 6, acc, a_frag, b_frag)
            k_step(a_s, b_s, a_base, b_base, 7, acc, a_frag, b_frag)
            if more:
                store_step(a_s, b_s, 1 - buffer, t, a_reg, b_reg)
            cuda.syncthreads()
            buffer = 1 - buffer
            k0 += BK
        epilogue(acc, bias, res, out, dims, group, split, row0, col0, ty, tx)

    return kernel


@cuda.jit
def reduce_splits(work, splits, bias, res, residual, act, out_channels, positions, out):
    """out = the sum of the splits' partial sums + bias (+ residual), through the activation: one thread
    per output element of the flat NCHW output."""
    i = cuda.grid(1)
    total = out.size
    if i < total:
        value = bias[(i // positions) % out_channels]
        for s in range(splits):
            value += work[s * total + i]
        if residual:
            value += res[i]
        value = activate(value, act)
        out[i] = value


def prepared_weights(weight: np.ndarray, bias: np.ndarray | None, groups: int) -> dict:
    """A layer's weights as `GemmLayer` reads them: a conv's (O, C/groups, kh, kw) as
    (groups, K, O/groups) with K in `window_taps`' order (taps outermost), an fc's (O, K)
    as (1, K, O), contiguous, so consecutive output channels of one k lie side by side
    as a block loads them; and the bias (zeros when there is none)."""
    out_c = weight.shape[0]
    by_group = weight.reshape(groups, out_c // groups, *weight.shape[1:])
    if weight.ndim == 4:  # (g, O/g, C/g, kh, kw) -> (g, kh, kw, C/g, O/g)
        weight_t = by_group.transpose(0, 3, 4, 2, 1)
    else:
        weight_t = by_group.transpose(0, 2, 1)
    weight_t = np.ascontiguousarray(weight_t.reshape(groups, -1, out_c // groups), np.float32)
    return {"weight_t": weight_t, "bias": bias if bias is not None else np.zeros(out_c, np.float32)}


class GemmLayer(BoundLaunches):
    """A conv (or fc) layer bound to the GPU: its prepared weights and geometry, and one
    launch per input shape, planned on first sight of that shape."""

    def __init__(self, weight_t, bias, kernel: tuple[int, int] = (1, 1), groups: int = 1,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                 dilation: tuple[int, int] = (1, 1), act: int = 0,
                 planner: Callable[[int, int, int, int, int], Launch] | None = None, one_tap: bool | None = None,
                 narrow: bool | None = None):
        """`planner(rows, positions, k_total, groups, processors)` picks each input
        shape's launch: `plan_launch` unless given (a benchmark forcing one tile).
        `one_tap` picks the gather: a tap-table lookup per k-step where every step lies
        within one tap (`one_tap_steps`, the default), else one per value; `narrow`,
        32-bit offsets into the input and weights: by default with the per-step
        gather, where both have fewer than 2^31 elements (benchmarks comparing them)."""
        super().__init__(self.kernel_launches)
        self.weight_t, self.bias = weight_t, bias
        self.kernel, self.groups, self.stride, self.padding, self.dilation = kernel, groups, stride, padding, dilation
        self.act, self.planner = act, planner
        self.rows = weight_t.shape[2]
        self.k_total = weight_t.shape[1]
        self.one_tap = one_tap_steps(self.k_total // (kernel[0] * kernel[1])) if one_tap is None else one_tap
        self.narrow = narrow
        self._flat_weights = weight_t.reshape(weight_t.size)
        self._launches: OrderedDict[tuple, tuple[Launch, Any, Any, Any]] = OrderedDict()

    def kernel_launches(self, inputs: list, out) -> list[KernelCall]:
        """The GEMM's launch on these arrays, and the split-K reduction's when K is split."""
        x = inputs[0]
        residual = inputs[1] if len(inputs) == 2 else None
        launch, taps, dims, work = self._launch(tuple(x.shape), tuple(out.shape), residual is not None)
        flat_out = out.reshape(out.size)
        flat_res = flat_out if residual is None else residual.reshape(residual.size)  # unread without one
        kernel = gemm_kernel(launch.tile, self.one_tap, self.rows % launch.tile.rows == 0, self._narrow(x.size))
        gemm = (kernel, (launch.grid, launch.tile.threads),
                (x.reshape(x.size), self._flat_weights, taps, self.bias, flat_res,
                 flat_out if work is None else work, dims))
        if work is None:
            return [gemm]
        return [gemm, (reduce_splits, grid_1d(out.size),
                       (work, launch.splits, self.bias, flat_res, residual is not None, self.act, out.shape[1],
                        out.shape[2] * out.shape[3], flat_out))]

    def _narrow(self, input_size: int) -> bool:
        """Whether this input's launch computes its offsets in 32 bits (`gemm_kernel`):
        they fit where the input and weights have fewer than 2^31 elements, and pay
        with the per-step gather (ptxas's counts: the 128x128 main loop's other
        instructions 132 -> 104; with the per-value gather some tiles gain, some lose)."""
        fits = max(input_size, self._flat_weights.size) < 2 ** 31
        return fits and (self.one_tap if self.narrow is None else self.narrow)

    def _launch(self, in_shape: tuple, out_shape: tuple, residual: bool) -> tuple[Launch, Any, Any, Any]:
        key = (in_shape, out_shape, residual)
        if key in self._launches:
            self._launches.move_to_end(key)
        else:
            self._launches[key] = self._plan(in_shape, out_shape, residual)
            if len(self._launches) > LAUNCHES_KEPT:  # each holds device memory (a split's workspace: MBs)
                self._launches.popitem(last=False)
        return self._launches[key]

    def _plan(self, in_shape: tuple, out_shape: tuple, residual: bool) -> tuple[Launch, Any, Any, Any]:
        n, channels, height, width = in_shape
        _, out_c, ho, wo = out_shape
        positions = n * ho * wo
        launch = (self.planner or plan_launch)(self.rows, positions, self.k_total, self.groups, processors())
        values = dict(channels=channels, height=height, width=width, out_height=ho, out_width=wo,
                      stride_y=self.stride[0], stride_x=self.stride[1], pad_y=self.padding[0],
                      pad_x=self.padding[1], rows=self.rows, groups=self.groups,
                      group_channels=channels // self.groups, k_total=self.k_total, k_chunk=launch.k_chunk,
                      activation=self.act, residual=residual, positions=positions, partial=launch.splits > 1)
        dims = cuda.to_device(np.array([values[name] for name in DIMS], np.int64))
        taps = cuda.to_device(window_taps(channels // self.groups, self.kernel, self.dilation, height, width))
        work = cuda.device_array(launch.splits * n * out_c * ho * wo, np.float32) if launch.splits > 1 else None
        return launch, taps, dims, work


def processors() -> int:
    """The GPU's SM count (what the launch plan fills in waves); 1 on numba's simulator,
    which runs one block at a time (so the plan there keeps padding, not waves, small)."""
    if config.ENABLE_CUDASIM:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def on_host(weights: dict) -> dict:
    """Weights as host arrays, wherever they are: `bind_conv` and `bind_fc` given weights
    as the spec has them (a kernel called directly) prepare them on the host."""
    return {key: value.copy_to_host() if hasattr(value, "copy_to_host") else np.asarray(value)
            for key, value in weights.items()}


def on_device(weights: dict) -> dict:
    return {key: cuda.to_device(np.ascontiguousarray(value)) for key, value in weights.items()}
