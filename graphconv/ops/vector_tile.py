"""Explicit-SIMD register tiles: the outer-product kernel BLAS libraries are built on,
written for numba as LLVM IR.

Why it exists. A fully-connected layer turned into a convolution multiplies a huge
weight matrix (fc6 of AlexNet: 4096 x 9216, 151 MB) by a few dozen output positions.
Each weight is fetched from memory once, so every fetched weight must meet all the
positions while it is in a register. The form that does this with the fewest loads
is the outer product of BLAS micro-kernels: broadcast one weight w[o, k] and multiply
it into 8 consecutive positions of the packed patch row cols[k, p:p+8], keeping
`rows x vectors` vectors of sums in registers for the whole k loop.

numba cannot say "this value is an 8-lane vector held in a register": LLVM finds
vectors only in loops it can vectorise, which for plain Python loops means the dot
product along k (`gemm_cpu.multiply_band`, which needs both operands in L1 and
reaches about 65% of the machine's SGEMM rate on fc6). So the k loop here is emitted
directly as LLVM IR through a numba intrinsic, with `<8 x float>` accumulators. In
L1 it runs at about 95% of one core's peak; streaming fc6's weights from memory,
the layer runs at 80% of the measured SGEMM ceiling on 2 cores (benchmarks/README.md).

`<8 x float>` is a generic LLVM vector: LLVM splits it into two halves for SSE or
NEON, so the kernel stays portable; 8 lanes is one AVX2 register. The conv's tiles
also come in 16 lanes (`<16 x float>`, one AVX-512 register), which it runs where the
machine has AVX-512 (`OUTER_LANES`).
"""
from __future__ import annotations

import os

from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from graphconv.ops.specialise import specialised

LANES = 8  # float32 lanes per vector register (AVX2)
LINE_FLOATS = 16  # float32 per 64-byte cache line
BLOCK_VECTORS = 5  # widest position block one tile covers: 40 positions
# Weight rows per tile for a block of 1..5 vectors. Each shape keeps 8-12 sums in flight
# (an FMA's latency times the two FMA ports) and fits the 16 vector registers; 2x6 and
# 3x4 spill and run at half speed (measured, one core, operands in L1).
TILE_ROWS = (0, 8, 4, 4, 2, 2)
# Where AVX-512VL gives 32 registers to 8-lane code too, the 4- and 5-vector blocks take
# 4 rows (16 and 20 sums): each patch vector loaded meets twice the weights. `stream_matmul`
# on AlexNet's fc6 as a conv at 36 positions (151 MB of weights), alternating, 2 threads,
# Zen 4: 0.87x the time of the 2-row tile; fc7's shape 0.79x (5 rows: the same).
WIDE_TILE_ROWS = (0, 8, 4, 4, 4, 4)


def _make_tile(rows: int, vectors: int, prefetching: bool = True, outer: bool = False, lanes: int = LANES):
    """An intrinsic adding a (rows x vectors*lanes) product into `sums`:

        sums[(s0 + r) * width + c0 + j] += sum_{k < steps} w[row_r * stride + k0 + k]
                                                          * cols[(k0 + k) * width + c0 + j]

    for r < rows and j < vectors * lanes, where row_r = min(row0 + r, last_row): the
    rows past the last weight row repeat it, and the caller leaves their sums unused,
    so a tile never needs a narrower twin for the matrix's last rows. Before its k loop
    it prefetches the same `steps` weights of each row `prefetch` floats ahead, into L2
    (`_prefetch_lines`): in the streaming loop that is the same rows' next chunk, which
    the hardware prefetcher does not see coming because the loop jumps between rows.

    All arrays are flat float32; offsets and strides count floats. An "outer" tile takes
    one more argument, `store`: store the products instead of adding them (a sum's first
    chunk, so the sums need no zeroing).
    """
    def signature(w, cols, sums, *flags):
        for array in (w, cols, sums):  # flat indexing from .data is right only for these
            if not (isinstance(array, types.Array) and array.dtype == types.float32 and array.ndim == 1
                    and array.layout == "C"):
                return None
        if not all(isinstance(flag, types.Boolean) for flag in flags):
            return None
        i = types.intp
        return (types.void(w, i, i, i, i, i, cols, i, i, sums, i, i, *[types.boolean] * len(flags)),
                _codegen(rows, vectors, prefetching, outer, lanes))

    if outer:
        @intrinsic
        def tile(typingctx, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store):
            return signature(w, cols, sums, store)
    else:
        @intrinsic
        def tile(typingctx, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch):
            return signature(w, cols, sums)
    tile.__name__ = f"tile_{rows}x{vectors}_{lanes}lanes" + ("_outer" if outer else "")
    return tile


def _codegen(rows: int, vectors: int, prefetching: bool, outer: bool, lanes: int):
    def codegen(context, builder, signature, args):
        w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch = args[:12]
        w_ptr, cols_ptr, sums_ptr = _data_pointers(context, builder, signature, args, (0, 6, 9))
        emit = _Emitter(builder, lanes)
        row_starts = [emit.add(emit.mul(emit.min(emit.add(row0, emit.const(r)), last_row), stride), k0)
                      for r in range(rows)]
        finals = _emit_products(emit, w_ptr, cols_ptr, row_starts, steps, emit.add(emit.mul(k0, width), c0), width,
                                vectors, prefetch=prefetch if prefetching else None)
        if outer:  # `prefetch` is the sums' row width; the sums have no column offset
            places = [[emit.add(emit.mul(emit.add(s0, emit.const(r)), prefetch), emit.const(v * lanes))
                       for v in range(vectors)] for r in range(rows)]
            emit.store_sums(sums_ptr, places, finals, args[12])
        else:
            places = [[emit.add(emit.mul(emit.add(s0, emit.const(r)), width), emit.add(c0, emit.const(v * lanes)))
                       for v in range(vectors)] for r in range(rows)]
            emit.add_to_sums(sums_ptr, places, finals)
        return context.get_dummy_value()
    return codegen


def _data_pointers(context, builder, signature, args, positions):
    """The float pointers behind the flat arrays among a tile's arguments."""
    return [context.make_array(signature.args[n])(context, builder, args[n]).data for n in positions]


def _emit_products(emit, w_ptr, cols_ptr, row_starts, steps, cols_start, width, vectors, prefetch=None):
    """The tile's k loop; returns its len(row_starts) x `vectors` sums (vector values):
    sum_{k < steps} w[row_starts[r] + k] * cols[cols_start + k * width + v * emit.lanes + lane]."""
    if prefetch is not None:
        _prefetch_lines(emit.builder, emit, w_ptr, [emit.add(start, prefetch) for start in row_starts], steps)
    zeros = [[emit.zero] * vectors for _ in row_starts]
    return _emit_k_loop(emit, w_ptr, cols_ptr, row_starts, steps, cols_start, width, zeros)


def _emit_k_loop(emit, w_ptr, cols_ptr, row_starts, steps, cols_start, width, start):
    """`start` (rows x vectors vector values) plus the products of `_emit_products`, as
    values after the loop (the builder left after it)."""
    builder = emit.builder
    rows, vectors = len(start), len(start[0])
    k, before, loop, done = emit.open_loop("tile", steps)
    sums_in = [[builder.phi(emit.vector) for _ in range(vectors)] for _ in range(rows)]
    patch_row = emit.add(emit.mul(k, width), cols_start)
    patches = [emit.load_vector(cols_ptr, emit.add(patch_row, emit.const(v * emit.lanes))) for v in range(vectors)]
    sums_out = []
    for r in range(rows):
        at = emit.add(row_starts[r], k)
        weight = emit.broadcast(builder.load(builder.gep(w_ptr, [at])))
        sums_out.append([emit.fmuladd(weight, patches[v], sums_in[r][v]) for v in range(vectors)])
    for r in range(rows):
        for v in range(vectors):
            sums_in[r][v].add_incoming(start[r][v], before)
            sums_in[r][v].add_incoming(sums_out[r][v], loop)
    emit.close_loop(k, 1, steps, loop, done)

    builder.position_at_end(done)
    return [[_merge(builder, emit, (start[r][v], before), (sums_out[r][v], loop)) for v in range(vectors)]
            for r in range(rows)]


def _merge(builder, emit, *incoming):
    """A phi of (value, block) pairs: the value from whichever block control came from."""
    phi = builder.phi(emit.vector)
    for value, block in incoming:
        phi.add_incoming(value, block)
    return phi


def _prefetch_lines(builder, emit, base, starts, count):
    """A loop, before the tile's k loop, prefetching every 64-byte line of base[start :
    start + count] for each start: one prefetch per line and row. Issued at every k step
    instead (one per row per step, 16 per line), the prefetches took load slots from the
    tile. Alternating in one process, `stream_matmul` on ResNet-50's 49-position layer4
    shapes (4 of them) 7.4 -> 6.7 ms with its operands in cache and 7.9 -> 7.0 with the
    weights evicted first; on the fc6/fc7 shapes at 36 positions (AlexNet's and VGG's,
    which need the prefetch) 99 -> 93 and 114 -> 106 ms, in either order."""
    offset, _, loop, done = emit.open_loop("prefetch", count)
    for start in starts:
        emit.prefetch(base, emit.add(start, offset))
    emit.close_loop(offset, LINE_FLOATS, emit.add(count, emit.const(LINE_FLOATS - 1)), loop, done)
    builder.position_at_end(done)


class _Emitter:
    """The few LLVM IR idioms the tile is written in, named."""

    i64 = ir.IntType(64)
    i32 = ir.IntType(32)

    def __init__(self, builder: ir.IRBuilder, lanes: int = LANES):
        self.builder = builder
        self.lanes = lanes
        self.vector = ir.VectorType(ir.FloatType(), lanes)
        self.zero = ir.Constant(self.vector, [0.0] * lanes)
        module = builder.module
        self._fmuladd = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.vector, [self.vector] * 3), f"llvm.fmuladd.v{lanes}f32")
        address = ir.IntType(8).as_pointer()
        # declare_intrinsic mangles the name as the module's LLVM expects ("llvm.prefetch.p0i8")
        self._prefetch = module.declare_intrinsic(
            "llvm.prefetch", [address], ir.FunctionType(ir.VoidType(), [address, self.i32, self.i32, self.i32]))

    def open_loop(self, name: str, count):
        """Start a loop over i = 0, step, 2 * step, ... (step and limit are `close_loop`'s),
        skipped entirely when count <= 0: returns (i, the block before the loop, the loop's
        one body block, the block after it), with the builder in the body. The caller adds
        its own phis' incoming values and ends the body with `close_loop`."""
        builder = self.builder
        before = builder.block
        loop = builder.append_basic_block(f"{name}.loop")
        done = builder.append_basic_block(f"{name}.done")
        builder.cbranch(builder.icmp_signed(">", count, self.const(0)), loop, done)
        builder.position_at_end(loop)
        index = builder.phi(self.i64)
        index.add_incoming(self.const(0), before)
        return index, before, loop, done

    def close_loop(self, index, step: int, limit, loop, done) -> None:
        """End the loop `open_loop` began: i += step, again while i < limit."""
        index_next = self.add(index, self.const(step))
        index.add_incoming(index_next, loop)
        self.builder.cbranch(self.builder.icmp_signed("<", index_next, limit), loop, done)

    def const(self, value: int) -> ir.Constant:
        return ir.Constant(self.i64, value)

    def add(self, a, b):
        return self.builder.add(a, b)

    def mul(self, a, b):
        return self.builder.mul(a, b)

    def min(self, a, b):
        return self.builder.select(self.builder.icmp_signed("<", a, b), a, b)

    def load_vector(self, base, index):
        """A vector of floats from base[index]; unaligned, as patch rows start anywhere."""
        return self.builder.load(self.builder.bitcast(self.builder.gep(base, [index]), self.vector.as_pointer()),
                                 align=4)

    def store_vector(self, base, index, value):
        self.builder.store(value, self.builder.bitcast(self.builder.gep(base, [index]), self.vector.as_pointer()),
                           align=4)

    def add_to_sums(self, base, places, values):
        """base[places[r][v]] += values[r][v], vector by vector."""
        for row_places, row_values in zip(places, values):
            for at, value in zip(row_places, row_values):
                self.store_vector(base, at, self.builder.fadd(self.load_vector(base, at), value))

    def store_sums(self, base, places, values, store):
        """base[places[r][v]] = values[r][v] where `store` (an i1 known when the tile
        runs), else += : one branch for the whole tile, after its k loop."""
        with self.builder.if_else(store) as (first_chunk, later_chunk):
            with first_chunk:
                for row_places, row_values in zip(places, values):
                    for at, value in zip(row_places, row_values):
                        self.store_vector(base, at, value)
            with later_chunk:
                self.add_to_sums(base, places, values)

    def broadcast(self, scalar):
        lanes = self.builder.insert_element(ir.Constant(self.vector, ir.Undefined), scalar, ir.Constant(self.i32, 0))
        return self.builder.shuffle_vector(lanes, ir.Constant(self.vector, ir.Undefined),
                                           ir.Constant(ir.VectorType(self.i32, self.lanes), [0] * self.lanes))

    def fmuladd(self, a, b, c):
        """a * b + c: one FMA where the target has it, a multiply and an add where not."""
        return self.builder.call(self._fmuladd, [a, b, c])

    def prefetch(self, base, index):
        """Read-prefetch base[index] into L2 (locality 2); never faults, even past the end."""
        address = self.builder.bitcast(self.builder.gep(base, [index]), ir.IntType(8).as_pointer())
        self.builder.call(self._prefetch, [address, self.i32(0), self.i32(2), self.i32(1)])


_tile_8x1 = _make_tile(8, 1)
_tile_4x2 = _make_tile(4, 2)
_tile_4x3 = _make_tile(4, 3)
_tile_2x4 = _make_tile(2, 4)
_tile_2x5 = _make_tile(2, 5)
_tile_4x4 = _make_tile(4, 4)
_tile_4x5 = _make_tile(4, 5)


@njit(cache=True, inline="always")
def tile_rows(vectors, wide):
    """Weight rows `multiply_tile` covers for a block of `vectors` position vectors."""
    return WIDE_TILE_ROWS[vectors] if wide else TILE_ROWS[vectors]


@njit(cache=True, inline="always")
def multiply_tile(vectors, wide, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch):
    """The tile for a block of `vectors` (1..BLOCK_VECTORS) position vectors, covering
    `tile_rows(vectors, wide)` weight rows from row0 (`wide`: the 32-register shapes,
    WIDE_TILE_ROWS); arguments as in `_make_tile`."""
    if vectors == 5 and wide:
        _tile_4x5(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 4 and wide:
        _tile_4x4(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 5:
        _tile_2x5(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 4:
        _tile_2x4(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 3:
        _tile_4x3(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 2:
        _tile_4x2(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    else:
        _tile_8x1(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)


def _vector_registers() -> int:
    """Vector registers the machine numba compiles for has: 32 with AVX-512 (zmm0-31;
    its VL extension lets 8-lane code use the 16 extra ones too), 16 otherwise (AVX2,
    SSE)."""
    features = llvm.get_host_cpu_features()
    return 32 if features.get("avx512f") and features.get("avx512vl") else 16


def _outer_tile_shape() -> tuple[int, int]:
    """(lanes per vector, vectors per block) of the tiles `outer` and `winograd` run:
    where 32 vector registers hold them (AVX-512), 4 vectors of 16 lanes (6 pixels x 64
    channels, 24 sums: `OUTER_ROWS_16`); elsewhere 3 of 8 (4 x 24, 12 sums), as 16 registers hold no
    more without spilling. GRAPHCONV_OUTER_LANES (8 or 16) and GRAPHCONV_OUTER_VECTORS
    (3 or 4) override either; the tests run every combination on any machine (a tile too
    large for the registers spills but stays exact).

    One core of a Zen 4, operands in L1: 4x3 of 8 lanes ran at 79% of the FMA peak, 4x4
    of 8 lanes at 86%, 4x4 of 16 lanes at 89% (Zen 4 runs a 16-lane FMA as two 8-lane
    halves, so the peak is the same, but each broadcast input value then meets twice
    the channels). ResNet's channel counts (multiples of 64) fill 64-channel blocks
    exactly; blocks of 24 left a 16- or 8-wide block with a slower tile. Measured in
    the network: docs/performance.md, session 15."""
    wide = _vector_registers() >= 32
    lanes = os.environ.get("GRAPHCONV_OUTER_LANES", "")
    vectors = os.environ.get("GRAPHCONV_OUTER_VECTORS", "")
    return (int(lanes) if lanes in ("8", "16") else 16 if wide else 8,
            int(vectors) if vectors in ("3", "4") else 4 if wide else 3)


# `stream_matmul`'s tiles in 16 lanes: blocks of 16 to 64 positions as 16-lane vectors
# (its callers pad the positions to whole 16-lane vectors: `gemm_cpu.stream_width`; a
# width of whole 8-lane vectors gives a block's last 8 an 8-lane tile). On an Intel Xeon
# with two 512-bit FMA units an 8-lane FMA does half the work of a 16-lane one in the
# same slot, so the 8-lane tiles cannot pass half its peak: AlexNet's fc6 as a conv at 36
# positions ran at 177 GFLOP/s on 2 cores there, onnxruntime at about 290
# (docs/performance.md, session 20). Rows per block of 1..4 vectors: 16 to 24 sums, each
# weight broadcast meeting every vector of the block; the 1- and 2-vector blocks take 16
# and 12 rows, not 8 (session 27, 2 threads, Zen 5, 4096 x 4096 weights: 32 positions
# 5.2 -> 3.0-4.0 ms, as long as 16 take: both then stream the weights at the memory's speed).
STREAM_ROWS_16 = (0, 16, 12, 8, 6)
_stream16_16x1, _stream16_12x2, _stream16_8x3, _stream16_6x4 = (_make_tile(STREAM_ROWS_16[v], v, lanes=16)
                                                              for v in (1, 2, 3, 4))
STREAM_VECTORS_16 = 4  # 64 positions, gemm_cpu.STREAM_MAX_POSITIONS


@njit(cache=True, inline="always")
def stream_rows_16(vectors):
    """Weight rows `multiply_tile_16` covers for a block of `vectors` 16-lane vectors."""
    return STREAM_ROWS_16[vectors]


@njit(cache=True, inline="always")
def multiply_tile_16(vectors, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch):
    """`multiply_tile` for a block of `vectors` (1..4) 16-lane position vectors, covering
    `stream_rows_16(vectors)` weight rows."""
    if vectors == 4:
        _stream16_6x4(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 3:
        _stream16_8x3(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    elif vectors == 2:
        _stream16_12x2(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)
    else:
        _stream16_16x1(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, prefetch)


def _stream_lanes() -> int:
    """16 where AVX-512 gives the 16-lane tiles their 32 registers, else 8;
    GRAPHCONV_STREAM_LANES (8 or 16) overrides (the tests run both on any machine)."""
    chosen = os.environ.get("GRAPHCONV_STREAM_LANES", "")
    return int(chosen) if chosen in ("8", "16") else 16 if _vector_registers() >= 32 else 8

# The tiles of the conv's "outer" strategy: no prefetch (its operands are in cache), and
# the sums get their own row width (the last argument) and no column offset, so the
# packed weights can be one contiguous (K x block) panel per block of output channels
# (c0 = the panel's offset, width = its width) while the sums are (pixels x block) per
# block. The strategy broadcasts patch values from its row panel (the `w` operand, one
# row per output pixel) and multiplies them into vectors of output channels.
# The kernels take the tile's shape as arguments (the callers read OUTER_LANES and
# OUTER_VECTORS when they run and when they pack the weights), so one source serves
# every shape and the tests can force each; each width's tiles are compiled into a copy
# of the kernel of their own (`graphconv.ops.specialise`), so a machine compiles the
# width it runs only.
OUTER_LANES, OUTER_VECTORS = _outer_tile_shape()  # blocks of 64 output channels, or of 24
WIDE_TILES = _vector_registers() >= 32  # whether `stream_matmul` runs WIDE_TILE_ROWS
STREAM_LANES = _stream_lanes()  # whether `stream_matmul` runs 16-lane tiles
OUTER_ROWS = (0, 8, 4, 4, 4)  # pixels per tile for 1..4 channel vectors of 8 lanes
# 16-lane tiles run where 32 registers hold them, and there the 4-vector tile takes 6
# pixels: 24 sums, 4 weight vectors and a broadcast make 29 registers, and each weight
# vector loaded meets 6 pixels instead of 4. Intel Xeon with two 512-bit FMA units, one
# core's L2 feeding the weight panels: ResNet-50's 1x1 convs 297-377 -> 372-418 GFLOP/s
# (docs/performance.md, session 20). The narrower 16-lane tiles (a block's last 16-48
# channels) gained nothing from more pixels, as they are bound by the broadcasts.
OUTER_ROWS_16 = (0, 8, 4, 4, 6)
TILE_ROWS_MULTIPLE = 24  # a multiple of every tile's pixels (4, 6, 8): see `padded_tile_rows`


@njit(cache=True, inline="always")
def outer_rows(lanes, vectors):
    """Pixels (the broadcast rows) one `outer_tile` or `gathered_tile` of `vectors`
    vectors of `lanes` lanes covers."""
    return OUTER_ROWS_16[vectors] if lanes == 16 else OUTER_ROWS[vectors]


@njit(cache=True, inline="always")
def padded_tile_rows(rows):
    """Rows of sums to hold `rows` rows computed by tiles of any height: the last tile
    of a run clamps its rows past the end to the last one and writes their sums into
    this slack, which must exist whatever the tile height."""
    return -(-rows // TILE_ROWS_MULTIPLE) * TILE_ROWS_MULTIPLE


def padded_channels(out_channels: int) -> int:
    """Output channels as the packed weights and the tiles' sums hold them: padded to
    whole vectors of the machine's tile (OUTER_LANES), zero past the real ones."""
    return -(-out_channels // OUTER_LANES) * OUTER_LANES


# _outer_L_V: the tile of V vectors of L lanes
_outer_8_1, _outer_8_2, _outer_8_3, _outer_8_4 = (_make_tile(OUTER_ROWS[v], v, False, True, 8) for v in (1, 2, 3, 4))
_outer_16_1, _outer_16_2, _outer_16_3, _outer_16_4 = (_make_tile(OUTER_ROWS_16[v], v, False, True, 16)
                                                      for v in (1, 2, 3, 4))


@njit(cache=True, inline="always")
def outer_tile_16(lanes, vectors, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width,
                  store=False):
    """sums[(s0 + r) * s_width + j] += sum_k w[row_r * stride + k0 + k] * cols[(k0 + k) * width + c0 + j]
    for r < outer_rows(lanes, vectors), j < vectors * lanes (row_r as in `_make_tile`); `=` instead
    of `+=` where `store`: a sum's first chunk, so the sums need no zeroing. `lanes` is 16
    here: the argument keeps `outer_tile`'s signature, whose name the kernels call this
    by (`OUTER_TILES`, `graphconv.ops.specialise`)."""
    if vectors == 4:
        _outer_16_4(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    elif vectors == 3:
        _outer_16_3(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    elif vectors == 2:
        _outer_16_2(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    else:
        _outer_16_1(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)


@njit(cache=True, inline="always")
def outer_tile_8(lanes, vectors, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width,
                 store=False):
    """`outer_tile_16` of 8-lane vectors."""
    if vectors == 4:
        _outer_8_4(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    elif vectors == 3:
        _outer_8_3(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    elif vectors == 2:
        _outer_8_2(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    else:
        _outer_8_1(w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)


OUTER_TILES = {8: outer_tile_8, 16: outer_tile_16}  # what a kernel's `outer_tile` is, per width


@njit(cache=True, inline="always")
def outer_tile(lanes, vectors, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width,
               store=False):
    """`outer_tile_16` or `outer_tile_8`, as `lanes` says: what a kernel compiled for
    either width calls (its copies per width call the one of theirs)."""
    if lanes == 16:
        outer_tile_16(lanes, vectors, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)
    else:
        outer_tile_8(lanes, vectors, w, row0, last_row, stride, k0, steps, cols, c0, width, sums, s0, s_width, store)


# The tiles of `outer`, which gathers each pixel's patch from where it lies in the
# channels-last input. Pixel r of the tile reads `segments` runs of `steps` taps, run g
# at x[patch[min(p0 + r, last)] + shift + g * seg_stride], which meet the weights' rows
# g * seg_k onwards: a tile's pixels may come from different output rows or images (a
# 14-pixel row would leave the last tile of 4 half empty), and one call may cover
# several tap rows (ResNet-50's 7x7 conv1 on 3 channels: 7 runs of 21 taps, which as
# 7 calls of 21 steps spent more time entering and leaving the tile than in it). The
# first k chunk's tile stores its products into the sums and the others add to them,
# so the sums need no zeroing. The last chunk's tile may instead write its pixels'
# finished outputs (sums, bias, ReLU) straight into a channels-last output, `direct`.

def _make_gathered_tile(rows: int, vectors: int, lanes: int = LANES):
    i = types.intp

    @intrinsic
    def tile(typingctx, x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, store, direct, out, bias,
             residual):
        arrays = (x, patch, cols, sums, out, bias, residual)
        arrays_fit = all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in arrays)
        floats_fit = all(a.dtype == types.float32 for a in arrays if a is not patch)
        if not arrays_fit or patch.dtype != types.int64 or not floats_fit:
            return None  # flat indexing from .data is right only for these
        if not (isinstance(span, types.UniTuple) and span.count == 5 and isinstance(span.dtype, types.Integer)
                and isinstance(direct, types.UniTuple) and direct.count == 6 and isinstance(direct.dtype, types.Integer)
                and isinstance(store, types.Boolean)):
            return None
        signature = types.void(x, patch, i, i, types.UniTuple(i, 5), cols, i, i, sums, i, i, types.boolean,
                               types.UniTuple(i, 6), out, bias, residual)
        return signature, _gathered_codegen(rows, vectors, lanes)
    tile.__name__ = f"gathered_tile_{rows}x{vectors}_{lanes}lanes"
    return tile


def _gathered_codegen(rows: int, vectors: int, lanes: int):
    def codegen(context, builder, signature, args):
        x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, store, direct, out, bias, residual = args
        x_ptr, patch_ptr, cols_ptr, sums_ptr, out_ptr, bias_ptr, res_ptr = _data_pointers(
            context, builder, signature, args, (0, 1, 5, 8, 13, 14, 15))
        shift, seg_stride, segments, seg_k, steps = (builder.extract_value(span, n) for n in range(5))
        emit = _Emitter(builder, lanes)
        patch_starts = [emit.add(builder.load(builder.gep(patch_ptr, [emit.min(emit.add(p0, emit.const(r)), last)])),
                                 shift) for r in range(rows)]
        g, before, loop, done = emit.open_loop("segment", segments)
        sums_in = [[builder.phi(emit.vector) for _ in range(vectors)] for _ in range(rows)]
        row_starts = [emit.add(start, emit.mul(g, seg_stride)) for start in patch_starts]
        cols_start = emit.add(c0, emit.mul(emit.mul(g, seg_k), width))  # the run's first weight row
        sums_out = _emit_k_loop(emit, x_ptr, cols_ptr, row_starts, steps, cols_start, width, sums_in)
        body_end = builder.block  # the segment loop's latch: the k loop's exit
        for r in range(rows):
            for v in range(vectors):
                sums_in[r][v].add_incoming(emit.zero, before)
                sums_in[r][v].add_incoming(sums_out[r][v], body_end)
        g_next = emit.add(g, emit.const(1))
        g.add_incoming(g_next, body_end)
        builder.cbranch(builder.icmp_signed("<", g_next, segments), loop, done)
        builder.position_at_end(done)
        products = [[_merge(builder, emit, (emit.zero, before), (sums_out[r][v], body_end)) for v in range(vectors)]
                    for r in range(rows)]
        places = [[emit.add(emit.mul(emit.add(s0, emit.const(r)), s_width), emit.const(v * lanes))
                   for v in range(vectors)] for r in range(rows)]
        enabled = builder.icmp_signed("!=", builder.extract_value(direct, 0), emit.const(0))
        with builder.if_else(enabled) as (to_output, to_sums):
            with to_output:
                _emit_direct_outputs(emit, sums_ptr, places, products, store, direct, out_ptr, bias_ptr, res_ptr, p0,
                                     last)
            with to_sums:
                emit.store_sums(sums_ptr, places, products, store)
        return context.get_dummy_value()
    return codegen


def _emit_direct_outputs(emit, sums_ptr, places, products, store, direct, out_ptr, bias_ptr, res_ptr, p0, last):
    """The tile's finished outputs into the channels-last output, with direct = (1, where
    pixel p0's first channel of the block goes, the output's channels, the block's first
    channel in bias, whether ReLU, whether a residual input): each row's vectors + the
    chunks before (from the sums, unless `store`: this chunk is the only one) + bias
    (+ the residual input, stored as the output, at the same place), ReLU (NaN kept, as
    max(v, 0) in the store loops), for the rows up to `last` only (those past it repeat
    the last pixel and have no place in the output)."""
    builder = emit.builder
    out_at, out_width, bias_at, relu, residual = (builder.extract_value(direct, n) for n in range(1, 6))
    relu = builder.icmp_signed("!=", relu, emit.const(0))
    biases = [emit.load_vector(bias_ptr, emit.add(bias_at, emit.const(v * emit.lanes)))
              for v in range(len(products[0]))]

    def write(with_earlier_chunks: bool, with_residual: bool) -> None:
        for r, (row_places, row_values) in enumerate(zip(places, products)):
            valid = builder.icmp_signed("<=", emit.add(p0, emit.const(r)), last)
            with builder.if_then(valid):
                row_at = emit.add(out_at, emit.mul(emit.const(r), out_width))
                for v, (at, value) in enumerate(zip(row_places, row_values)):
                    if with_earlier_chunks:
                        value = builder.fadd(emit.load_vector(sums_ptr, at), value)
                    value = builder.fadd(value, biases[v])
                    place = emit.add(row_at, emit.const(v * emit.lanes))
                    if with_residual:
                        value = builder.fadd(value, emit.load_vector(res_ptr, place))
                    clamped = builder.select(builder.fcmp_ordered("<", value, emit.zero), emit.zero, value)
                    emit.store_vector(out_ptr, place, builder.select(relu, clamped, value))

    def write_chunks(with_residual: bool) -> None:
        with builder.if_else(store) as (only_chunk, last_of_several):
            with only_chunk:
                write(False, with_residual)
            with last_of_several:
                write(True, with_residual)

    with builder.if_else(builder.icmp_signed("!=", residual, emit.const(0))) as (adds_residual, plain):
        with adds_residual:
            write_chunks(True)
        with plain:
            write_chunks(False)


# _gathered_L_V: the tile of V vectors of L lanes
_gathered_8_1, _gathered_8_2, _gathered_8_3, _gathered_8_4 = (_make_gathered_tile(OUTER_ROWS[v], v, 8)
                                                              for v in (1, 2, 3, 4))
_gathered_16_1, _gathered_16_2, _gathered_16_3, _gathered_16_4 = (_make_gathered_tile(OUTER_ROWS_16[v], v, 16)
                                                                  for v in (1, 2, 3, 4))


@njit(cache=True, inline="always")
def gathered_tile_16(lanes, vectors, store, x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, direct,
                     out, bias, residual):
    """With span = (shift, seg_stride, segments, seg_k, steps):
    sums[(s0 + r) * s_width + j] (+)= sum_{g < segments, k < steps}
        x[patch[min(p0 + r, last)] + shift + g * seg_stride + k] * cols[c0 + (g * seg_k + k) * width + j]
    for r < outer_rows(lanes, vectors) and j < vectors * lanes: `=` where `store`, `+=` otherwise.
    Where direct = (1, out_at, out_width, bias_at, relu, with_residual), the last chunk's
    tile writes instead out[at] = act(that sum + bias[bias_at + j] (+ residual[at])), at =
    out_at + r * out_width + j, for the rows p0 + r <= last (`_emit_direct_outputs`);
    direct[0] = 0 leaves out, bias and residual unread. `lanes` is 16 here, as in
    `outer_tile_16` (`GATHERED_TILES`)."""
    arguments = (x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, store, direct, out, bias, residual)
    if vectors == 4:
        _gathered_16_4(*arguments)
    elif vectors == 3:
        _gathered_16_3(*arguments)
    elif vectors == 2:
        _gathered_16_2(*arguments)
    else:
        _gathered_16_1(*arguments)


@njit(cache=True, inline="always")
def gathered_tile_8(lanes, vectors, store, x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, direct,
                    out, bias, residual):
    """`gathered_tile_16` of 8-lane vectors."""
    arguments = (x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, store, direct, out, bias, residual)
    if vectors == 4:
        _gathered_8_4(*arguments)
    elif vectors == 3:
        _gathered_8_3(*arguments)
    elif vectors == 2:
        _gathered_8_2(*arguments)
    else:
        _gathered_8_1(*arguments)


GATHERED_TILES = {8: gathered_tile_8, 16: gathered_tile_16}  # what a kernel's `gathered_tile` is, per width


@njit(cache=True, inline="always")
def gathered_tile(lanes, vectors, store, x, patch, p0, last, span, cols, c0, width, sums, s0, s_width, direct, out,
                  bias, residual):
    """`gathered_tile_16` or `gathered_tile_8`, as `lanes` says (as `outer_tile`)."""
    if lanes == 16:
        gathered_tile_16(lanes, vectors, store, x, patch, p0, last, span, cols, c0, width, sums, s0, s_width,
                         direct, out, bias, residual)
    else:
        gathered_tile_8(lanes, vectors, store, x, patch, p0, last, span, cols, c0, width, sums, s0, s_width,
                        direct, out, bias, residual)


# ---- the depthwise conv's tile: a few pixels' sums in registers over all their taps ----------

DEPTHWISE_PIXELS = 8  # pixels the wide depthwise tile covers: 8 vectors of sums, a weight vector, an input one


def _flat_depthwise_arguments(floats, indices, relu) -> bool:
    """Whether a depthwise tile's arrays are what its flat indexing from .data reads:
    1-D C-contiguous, float32 values and int64 indices, and `relu` a boolean."""
    flat = all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (*floats, *indices))
    return (flat and all(a.dtype == types.float32 for a in floats) and all(a.dtype == types.int64 for a in indices)
            and isinstance(relu, types.Boolean))


def _make_depthwise_tile(pixels: int, lanes: int, group: int = 1, vectors: int = 1):
    """An intrinsic computing `pixels` output pixels' `lanes` channels of a depthwise conv
    stored channels-last, their sums in registers over every tap:

        out[o0 + p * o_step + j] = act(bias[c0 + j]
            + sum_{t < count} taps[tap_ids[t] * t_step + c0 + j] * x[x0 + p * x_step + offsets[t] + j])

    for p < pixels, j < lanes, act ReLU where `relu`. The caller lists the taps that lie
    inside the input (tap_ids, and each one's offsets from a pixel's first tap), the
    same for all the pixels of a call. Each tap is a weight vector load, then one input
    vector load and one FMA per pixel: no sums through memory, where adding each tap over
    a run of pixels into sums in L1 (the kernel before) loaded and stored every sum once
    per tap.

    With `group` = G > 1 it computes a grouped conv of G input and G output channels a
    group (`depthwise.grouped_taps`), lanes a whole number of groups: each tap holds G
    weight vectors, d = 0..G-1, and the input vector loaded once meets each of them
    rotated by d within every group of G lanes (lane j reads channel
    j - j % G + (j + d) % G: one register shuffle), so

        out[... + j] = act(bias[c0 + j] + sum_t sum_{d < G}
            taps[(tap_ids[t] * G + d) * t_step + c0 + j] * x[x0 + p * x_step + offsets[t] + j - j % G + (j + d) % G])

    and every multiply-add is one the conv needs, where "outer" pads each group's few
    output channels to a whole vector.

    With `vectors` = V > 1 it computes V vectors of channels side by side (c0, c0 +
    lanes, ...): for one pixel (a row's border pixels), a single vector's sums are one
    chain of dependent multiply-adds, each waiting for the last; V chains overlap."""
    i = types.intp
    rotations = [ir.Constant(ir.VectorType(ir.IntType(32), lanes), [j - j % group + (j + d) % group
                                                                     for j in range(lanes)]) for d in range(group)]

    @intrinsic
    def depthwise_tile(typingctx, out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0,
                       relu):
        if not _flat_depthwise_arguments((out, taps, x, bias), (tap_ids, offsets), relu):
            return None  # flat indexing from .data is right only for these

        def codegen(context, builder, signature, args):
            _, o0, o_step, _, t_step, _, _, count, _, x0, x_step, _, c0, relu = args
            out_ptr, taps_ptr, ids_ptr, offsets_ptr, x_ptr, bias_ptr = _data_pointers(
                context, builder, signature, args, (0, 3, 5, 6, 8, 11))
            emit = _Emitter(builder, lanes)
            shifts = [emit.const(v * lanes) for v in range(vectors)]  # each vector's first channel past c0
            tiles = [(p, v) for p in range(pixels) for v in range(vectors)]
            start = [emit.load_vector(bias_ptr, emit.add(c0, shift)) for shift in shifts]
            starts = [emit.add(x0, emit.mul(emit.const(p), x_step)) for p in range(pixels)]
            t, before, loop, done = emit.open_loop("taps", count)
            sums_in = [builder.phi(emit.vector) for _ in tiles]
            first_weight = emit.mul(emit.mul(builder.load(builder.gep(ids_ptr, [t])), emit.const(group)), t_step)
            weights = [[emit.load_vector(taps_ptr, emit.add(emit.add(first_weight, emit.mul(emit.const(d), t_step)),
                                                            emit.add(c0, shift))) for d in range(group)]
                       for shift in shifts]
            offset = builder.load(builder.gep(offsets_ptr, [t]))
            sums_out = []
            for (p, v), total in zip(tiles, sums_in):
                value = emit.load_vector(x_ptr, emit.add(emit.add(starts[p], offset), shifts[v]))
                for d, weight in enumerate(weights[v]):
                    rotated = value if d == 0 else builder.shuffle_vector(
                        value, ir.Constant(emit.vector, ir.Undefined), rotations[d])
                    total = emit.fmuladd(weight, rotated, total)
                sums_out.append(total)
            for (p, v), phi, total in zip(tiles, sums_in, sums_out):
                phi.add_incoming(start[v], before)
                phi.add_incoming(total, loop)
            emit.close_loop(t, 1, count, loop, done)
            builder.position_at_end(done)
            finals = [_merge(builder, emit, (start[v], before), (total, loop)) for (p, v), total in zip(tiles, sums_out)]
            for (p, v), value in zip(tiles, finals):
                clamped = builder.select(builder.fcmp_ordered("<", value, emit.zero), emit.zero, value)
                emit.store_vector(out_ptr, emit.add(emit.add(o0, emit.mul(emit.const(p), o_step)), shifts[v]),
                                  builder.select(relu, clamped, value))
            return context.get_dummy_value()
        return types.void(out, i, i, taps, i, tap_ids, offsets, i, x, i, i, bias, i, types.boolean), codegen
    depthwise_tile.__name__ = (f"depthwise_tile_{pixels}x{lanes}lanes" + (f"x{vectors}" if vectors > 1 else "")
                               + (f"_groups_of_{group}" if group > 1 else ""))
    return depthwise_tile


BORDER_VECTORS = 4  # vectors of 16 channels a border pixel's tile computes side by side: 4 chains of sums

# depthwise_P_L: P pixels, L lanes (_1_64: BORDER_VECTORS vectors of 16)
_depthwise_8_16, _depthwise_1_16 = _make_depthwise_tile(DEPTHWISE_PIXELS, 16), _make_depthwise_tile(1, 16)
_depthwise_8_8, _depthwise_1_8 = _make_depthwise_tile(DEPTHWISE_PIXELS, 8), _make_depthwise_tile(1, 8)
_depthwise_1_64 = _make_depthwise_tile(1, 16, vectors=BORDER_VECTORS)


@njit(cache=True, inline="always")
def depthwise_tile(pixels, lanes, out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0,
                   relu):
    """`_make_depthwise_tile`'s intrinsic for DEPTHWISE_PIXELS pixels (`pixels` > 1) or
    one, of 16 lanes or 8, or, for one pixel, 64 (BORDER_VECTORS vectors of 16)."""
    if lanes == 64:
        _depthwise_1_64(out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0, relu)
    elif lanes == 16:
        if pixels > 1:
            _depthwise_8_16(out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0, relu)
        else:
            _depthwise_1_16(out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0, relu)
    elif pixels > 1:
        _depthwise_8_8(out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0, relu)
    else:
        _depthwise_1_8(out, o0, o_step, taps, t_step, tap_ids, offsets, count, x, x0, x_step, bias, c0, relu)


DEPTHWISE_ROW_WIDTHS = (3, 5, 7)  # kernel widths `depthwise_row_tile` is compiled for at stride 1
STRIDE_2_ROW_WIDTHS = (3, 5)  # and at stride 2 (MobileNet's and EfficientNet's downsampling convs)


def _make_depthwise_row_tile(pixels: int, lanes: int, kw: int, stride: int = 1):
    """`_make_depthwise_tile` (one channel a group) for a kernel `kw` taps wide that steps
    `stride` pixels along the row, undilated there, a row of taps at a time:

        out[o0 + p * o_step + j] = act(bias[c0 + j] + sum_{r < count} sum_{q < kw}
            taps[(row_ids[r] * kw + q) * t_step + c0 + j] * x[x0 + row_offsets[r] + (p * stride + q) * x_step + j])

    (x_step: one input pixel). Pixel p's tap q reads the input pixel that pixel p + 1's
    tap q - stride reads, so each row of taps loads the (pixels - 1) * stride + kw input
    vectors it spans once and meets them with its kw weight vectors: pixels * kw
    multiply-adds for that many loads plus kw, where the tap-by-tap tile loads
    (pixels + 1) * kw and is bound by its loads."""
    i = types.intp
    spanned = (pixels - 1) * stride + kw

    @intrinsic
    def depthwise_row_tile(typingctx, out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                           c0, relu):
        if not _flat_depthwise_arguments((out, taps, x, bias), (row_ids, row_offsets), relu):
            return None  # flat indexing from .data is right only for these

        def codegen(context, builder, signature, args):
            _, o0, o_step, _, t_step, _, _, count, _, x0, x_step, _, c0, relu = args
            out_ptr, taps_ptr, ids_ptr, offsets_ptr, x_ptr, bias_ptr = _data_pointers(
                context, builder, signature, args, (0, 3, 5, 6, 8, 11))
            emit = _Emitter(builder, lanes)
            start = emit.load_vector(bias_ptr, c0)
            r, before, loop, done = emit.open_loop("rows", count)
            sums_in = [builder.phi(emit.vector) for _ in range(pixels)]
            first_weight = emit.mul(emit.mul(builder.load(builder.gep(ids_ptr, [r])), emit.const(kw)), t_step)
            row_start = emit.add(x0, builder.load(builder.gep(offsets_ptr, [r])))
            values = [emit.load_vector(x_ptr, emit.add(row_start, emit.mul(emit.const(q), x_step)))
                      for q in range(spanned)]
            sums = list(sums_in)
            for q in range(kw):
                weight = emit.load_vector(taps_ptr, emit.add(emit.add(first_weight, emit.mul(emit.const(q), t_step)), c0))
                sums = [emit.fmuladd(weight, values[p * stride + q], sums[p]) for p in range(pixels)]
            for p in range(pixels):
                sums_in[p].add_incoming(start, before)
                sums_in[p].add_incoming(sums[p], loop)
            emit.close_loop(r, 1, count, loop, done)
            builder.position_at_end(done)
            finals = [_merge(builder, emit, (start, before), (sums[p], loop)) for p in range(pixels)]
            for p, value in enumerate(finals):
                clamped = builder.select(builder.fcmp_ordered("<", value, emit.zero), emit.zero, value)
                emit.store_vector(out_ptr, emit.add(o0, emit.mul(emit.const(p), o_step)),
                                  builder.select(relu, clamped, value))
            return context.get_dummy_value()
        return types.void(out, i, i, taps, i, row_ids, row_offsets, i, x, i, i, bias, i, types.boolean), codegen
    depthwise_row_tile.__name__ = (f"depthwise_row_tile_{pixels}x{lanes}lanes_{kw}wide"
                                   + (f"_stride_{stride}" if stride > 1 else ""))
    return depthwise_row_tile


# _depthwise_rows_L_K: DEPTHWISE_PIXELS pixels, L lanes, K taps wide; _sS: at stride S
_depthwise_rows_16_3, _depthwise_rows_16_5, _depthwise_rows_16_7 = (
    _make_depthwise_row_tile(DEPTHWISE_PIXELS, 16, kw) for kw in DEPTHWISE_ROW_WIDTHS)
_depthwise_rows_8_3, _depthwise_rows_8_5, _depthwise_rows_8_7 = (
    _make_depthwise_row_tile(DEPTHWISE_PIXELS, 8, kw) for kw in DEPTHWISE_ROW_WIDTHS)
_depthwise_rows_16_3_s2, _depthwise_rows_16_5_s2 = (
    _make_depthwise_row_tile(DEPTHWISE_PIXELS, 16, kw, 2) for kw in STRIDE_2_ROW_WIDTHS)
_depthwise_rows_8_3_s2, _depthwise_rows_8_5_s2 = (
    _make_depthwise_row_tile(DEPTHWISE_PIXELS, 8, kw, 2) for kw in STRIDE_2_ROW_WIDTHS)


@njit(cache=True, inline="always")
def depthwise_row_tile(kw, sw, lanes, out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                       c0, relu):
    """`_make_depthwise_row_tile`'s intrinsic for DEPTHWISE_PIXELS pixels, `kw` taps wide
    at stride `sw` (DEPTHWISE_ROW_WIDTHS at 1, STRIDE_2_ROW_WIDTHS at 2), of 16 lanes or
    8; x_step is one input pixel. (numba calls an intrinsic by name: one branch each.)"""
    if sw == 2:
        if lanes == 16:
            if kw == 3:
                _depthwise_rows_16_3_s2(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step,
                                        bias, c0, relu)
            else:
                _depthwise_rows_16_5_s2(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step,
                                        bias, c0, relu)
        elif kw == 3:
            _depthwise_rows_8_3_s2(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                                   c0, relu)
        else:
            _depthwise_rows_8_5_s2(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                                   c0, relu)
    elif lanes == 16:
        if kw == 3:
            _depthwise_rows_16_3(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                                 c0, relu)
        elif kw == 5:
            _depthwise_rows_16_5(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                                 c0, relu)
        else:
            _depthwise_rows_16_7(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias,
                                 c0, relu)
    elif kw == 3:
        _depthwise_rows_8_3(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias, c0, relu)
    elif kw == 5:
        _depthwise_rows_8_5(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias, c0, relu)
    else:
        _depthwise_rows_8_7(out, o0, o_step, taps, t_step, row_ids, row_offsets, count, x, x0, x_step, bias, c0, relu)


GROUP_WIDTHS = (2, 4, 8, 16)  # channels a group of the grouped convs the depthwise tile also runs (16 lanes divide
# by them; channels come in whole groups, so a group of 16 never reaches the 8-lane tile compiled beside it)


def _grouped_depthwise_tile(group: int):
    """`depthwise_tile` compiled for groups of `group` channels (`_make_depthwise_tile`)."""
    tiles = {f"_depthwise_{name}_{lanes}": _make_depthwise_tile(pixels, lanes, group)  # as _depthwise_P_L above
             for name, pixels in (("8", DEPTHWISE_PIXELS), ("1", 1)) for lanes in (16, 8)}
    tiles["_depthwise_1_64"] = _make_depthwise_tile(1, 16, group, vectors=BORDER_VECTORS)
    return specialised(depthwise_tile, f"_groups_of_{group}", dict(cache=True, inline="always"), **tiles)


DEPTHWISE_TILES = {1: depthwise_tile, **{group: _grouped_depthwise_tile(group) for group in GROUP_WIDTHS}}
"""`depthwise_tile` for 1 channel a group (a depthwise conv) and for each of GROUP_WIDTHS."""
