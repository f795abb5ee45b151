"""CPU kernel of inverted_residual: the three convs band by band ("fused rows"), or one
after another ("layers").

"fused rows": a job is a band of output rows of one image. It steps down its band a
few output rows at a time: the expand conv computes the input rows those rows' depthwise
taps read that the step before has not (one `gathered_tile` GEMM over them, into a
buffer of a few expanded rows kept in L2), the depthwise conv reads them there
(`depthwise.channels_last_row`), and the project conv takes the step's depthwise rows
(another GEMM over them) into the output, with the added input and the activation. The
expanded map, 6x the block's channels in MobileNetV2, and the depthwise output are never
written whole: layer by layer on a large map they went to memory and back twice each
(MobileNetV2's 144x112x112 map is 7 MB, a 224x224 one 29 MB, past the L3).
Measured on a 2-core AMD EPYC (AVX-512, 32 MB L3 shared), 2 threads, one block at a
time against its three convs on buffers of their own (as a plan holds them), alternating
in one process, ReLU6, batch 1: 24 -> 144 -> 24 at 224x224 11.2 -> 5.4 ms, at 112x112
1.52 -> 1.36, at 56x56 0.38 -> 0.36; 16 -> 96 stride 2 at 224x224 2.70 -> 1.57;
96 -> 576 -> 96 at 28x28 1.22 -> 0.92; 64 -> 384 -> 64 at 14x14 0.15 -> 0.12; 160 -> 960
-> 160 at 14x14 0.72 -> 0.66, but at 7x7 0.25 -> 0.33 (each of the two bands, 4 rows,
expands 2 rows more; 0.95x at batch 2, 1.07x to 320 channels at batch 8: rows of 7
pixels make short GEMMs). So a block runs fused where its expanded map per image is
FUSED_MIN_HIDDEN_BYTES or more, on channels-last values (what the CPU backend stores
between convs), else as the three layers.

Both take the values stored either way (`channels_last` "any"). "fused rows" reads a
channels-last input (a block's is, but the network's own input) and writes either
storage: an NCHW output (the network's) through a step's rows staged channels-last; a
block reading the network's input runs as layers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import get_num_threads, njit, prange

from graphconv.ops.conv.cpu import bind_conv, kxo_weights, prepare_conv, store_outer_job
from graphconv.ops.conv.depthwise import channels_last_row, channels_last_taps, row_geometry
from graphconv.ops.fast_math import CONTRACT, NONE, RELU, activate_run
from graphconv.ops.activations import fused_code
from graphconv.ops.inverted_residual import STAGES, added_input, stage_weights, stages
from graphconv.ops.channels_last import as_channels_last
from graphconv.ops.layout import nhwc
from graphconv.ops.registry import pair
from graphconv.ops.specialise import per_lane_width
from graphconv.ops import vector_tile
from graphconv.ops.vector_tile import GATHERED_TILES, gathered_tile, outer_rows, padded_tile_rows

FUSED_MIN_HIDDEN_BYTES = 256 << 10  # an expanded map per image from which "fused rows" runs (see above)
STEP_PIXELS = 96  # output pixels a step's project GEMM takes at least (whole rows), where STEP_BYTES allow
STEP_BYTES = 384 << 10  # the expanded rows a step keeps, at most (but a step's first row's taps need)
CHUNK = 512  # input channels a GEMM tile call sums (`conv.cpu.OUTER_CHUNK`'s role)
STRATEGIES = ("fused rows", "layers")


def prepare_inverted_residual(params: dict, weights: dict) -> dict:
    """Each stage's weights as its conv kernel keeps them (for "layers"), and the 1x1
    convs' packed for the GEMM tiles and the depthwise taps channels-last (for "fused rows")."""
    prepared = dict(weights)
    for name, stage in zip(STAGES, stages(params, weights["expand_weight"].shape[1])):
        for key, value in prepare_conv(stage, stage_weights(weights, name)).items():
            prepared[f"{name}_conv.{key}"] = value
    for name in ("expand", "project"):  # the 1x1 convs' packing for "outer" is the GEMM tiles' too
        packed = prepared.get(f"{name}_conv.weight_kxo")
        prepared[f"{name}_packed"] = (kxo_weights(weights[f"{name}_weight"], 1) if packed is None else packed).reshape(-1)
    prepared["depthwise_taps"] = channels_last_taps(weights["depthwise_weight"])
    return prepared


def describe_inverted_residual(params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
    """Which strategy runs the block on an (N, C, H, W) input with values stored
    channels-last around it (`channels_last`) or not."""
    return "fused rows" if channels_last and _hidden_is_large(params, in_shape) else "layers"


def _hidden_is_large(params: dict, in_shape: tuple[int, ...]) -> bool:
    return 4 * params["hidden_channels"] * in_shape[2] * in_shape[3] >= FUSED_MIN_HIDDEN_BYTES


def run_inverted_residual(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray,
                          strategy: str | None = None) -> None:
    """The block on (N, C, H, W) inputs into `out`, with `weights` as
    `prepare_inverted_residual` left them or as the layer holds them; `strategy` forces
    one of STRATEGIES (tests run both), "fused rows" on values stored either way
    (channels-last copies made where they are not)."""
    if "expand_packed" not in weights:
        weights = prepare_inverted_residual(params, weights)
    _BoundBlock(params, weights, strategy)(inputs, out)


def bind_inverted_residual(params: dict, weights: dict) -> "_BoundBlock":
    return _BoundBlock(params, weights)


class _BoundBlock:
    """A block's call: its three convs' bound calls (for "layers") and its fused kernel's
    arguments but the values (for "fused rows")."""

    def __init__(self, params: dict, weights: dict, strategy: str | None = None):
        self.params, self.weights, self.strategy = params, weights, strategy
        self.convs = [bind_conv(stage, _conv_weights(weights, name))
                      for name, stage in zip(STAGES, stages(params, weights["expand_weight"].shape[1]))]

    def __call__(self, inputs: list[np.ndarray], out: np.ndarray) -> None:
        self.bind_values(inputs, out)()

    def bind_values(self, inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
        added = added_input(self.params, inputs)
        x, readable = nhwc(inputs[0]), _fused_rows_read(inputs[0], added, out)
        strategy = self.strategy or describe_inverted_residual(self.params, inputs[0].shape, readable)
        if strategy == "layers" and _hidden_is_large(self.params, inputs[0].shape):
            return lambda: self._bound_layers(inputs, out)()  # scratch of each run's, not held between runs
        if strategy == "layers":
            return self._bound_layers(inputs, out)
        if not readable:  # forced: on channels-last copies, the output copied back
            return lambda: self._fused_on_copies(inputs, out)
        return self._fused_call(x, added, out)

    def _bound_layers(self, inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
        """The three convs bound on their two maps, channels-last scratch this call holds
        (the plan holds no buffers for them: the memory estimate counts them as a
        step's). A small block (MobileNetV2's 7x7 ones) is bound once for every run: bound
        on each, its convs' binding and scratch took 84 us of its three steps' 500."""
        n, _, height, width = inputs[0].shape
        hidden = self.params["hidden_channels"]
        expanded = np.empty((n, height, width, hidden), np.float32).transpose(0, 3, 1, 2)
        depthwise = np.empty((n, out.shape[2], out.shape[3], hidden), np.float32).transpose(0, 3, 1, 2)
        added = added_input(self.params, inputs)
        expand, spatial, project = self.convs
        calls = (expand.bind_values([inputs[0]], expanded), spatial.bind_values([expanded], depthwise),
                 project.bind_values([depthwise] + ([added] if added is not None else []), out))

        def run() -> None:
            for call in calls:
                call()
        return run

    def _fused_on_copies(self, inputs: list[np.ndarray], out: np.ndarray) -> None:
        """Forced "fused rows" on values it does not read as they are: on channels-last
        copies, the output copied back."""
        added = added_input(self.params, inputs)
        result = np.empty((out.shape[0], *out.shape[2:], out.shape[1]), np.float32).transpose(0, 3, 1, 2)
        self._fused_call(as_channels_last(inputs[0]), as_channels_last(added).transpose(0, 3, 1, 2)
                         if added is not None else None, result)()
        out[...] = result

    def _fused_call(self, x: np.ndarray, added: np.ndarray | None, out: np.ndarray) -> Callable[[], None]:
        """The fused kernel's call on a channels-last (N, H, W, C) x into `out` (N, O, Ho,
        Wo), stored channels-last or NCHW, `added` stored as `out` is (or None)."""
        params, weights = self.params, self.weights
        kh, kw = pair(params["kernel_size"])
        (sh, sw), (ph, pw), (dh, dw) = (pair(params[key]) for key in ("stride", "padding", "dilation"))
        n, _, ho, wo = out.shape
        stored = nhwc(out)
        out_channels_last = stored is not None
        out = stored if out_channels_last else out
        if added is not None:
            added = nhwc(added) if out_channels_last else added
        step_rows = _step_rows(x.shape[2], wo, params["hidden_channels"], kh, sh, dh)
        band = -(-ho // max(1, min(-(-ho // step_rows), -(-get_num_threads() // n))))
        lanes = vector_tile.OUTER_LANES
        codes = [fused_code(params[key]) for key in ("expand_activation", "depthwise_activation", "activation")]
        return lambda: FUSED_ROWS[lanes](
            x, weights["expand_packed"], weights["expand_bias"], codes[0], weights["depthwise_taps"],
            weights["depthwise_bias"], codes[1], kh, kw, sh, sw, ph, pw, dh, dw, weights["project_packed"],
            weights["project_bias"], codes[2], _flat(added), out, out_channels_last, band, step_rows, lanes,
            vector_tile.OUTER_VECTORS)


def _fused_rows_read(x: np.ndarray, added: np.ndarray | None, out: np.ndarray) -> bool:
    """Whether the fused kernel takes these values as they are: x channels-last, `out`
    channels-last or C-contiguous NCHW (a network's output), `added` stored as `out` is."""
    out_channels_last = nhwc(out) is not None
    if not (nhwc(x) is not None and (out_channels_last or out.flags.c_contiguous)):
        return False
    return added is None or (nhwc(added) is not None if out_channels_last else added.flags.c_contiguous)


def _conv_weights(weights: dict, stage: str) -> dict:
    """A stage's weights as `prepare_inverted_residual` stored them for its conv kernel."""
    prefix = f"{stage}_conv."
    return {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}


def _flat(added: np.ndarray | None) -> np.ndarray:
    return np.empty(0, np.float32) if added is None else added.reshape(-1)


def _step_rows(width: int, wo: int, hidden: int, kh: int, sh: int, dh: int) -> int:
    """Output rows a step takes: enough for STEP_PIXELS pixels, fewer where the expanded
    rows they read would pass STEP_BYTES (never under one)."""
    rows = max(1, -(-STEP_PIXELS // wo))
    while rows > 1 and _expanded_rows(rows, kh, sh, dh) * width * hidden * 4 > STEP_BYTES:
        rows -= 1
    return rows


def _expanded_rows(rows: int, kh: int, sh: int, dh: int) -> int:
    """Input rows the depthwise taps of `rows` consecutive output rows read."""
    return (rows - 1) * sh + (kh - 1) * dh + 1


def _fused_rows(x, expand_w, expand_b, expand_act, taps, dw_b, dw_act, kh, kw, sh, sw, ph, pw, dh, dw, project_w,
                project_b, project_act, flat_added, out, out_channels_last, band, step_rows, lanes, block_vectors):
    """"fused rows" on channels-last x (N, H, W, C) into out (N, Ho, Wo, O) where
    `out_channels_last`, else (N, O, Ho, Wo) (through a step's rows staged channels-last,
    `_store_in_planes`), flat_added stored as out (empty: nothing added): `band` output
    rows a job, `step_rows` a step.
    `expanded` holds the last `most_rows` input rows' expanded rows, input row r's in
    slot r % most_rows: a step expands the rows its taps read that the steps before did
    not, and the rows it reads again stay where they are."""
    n, height, width, cin = x.shape
    if out_channels_last:
        _, ho, wo, cout = out.shape
    else:
        _, cout, ho, wo = out.shape
    hidden = expand_b.size
    flat_x, flat_taps, flat_out = x.reshape(-1), taps.reshape(-1), out.reshape(-1)
    no_added = np.empty(0, np.float32)
    first, tiled, by_rows = row_geometry(width, wo, kw, sw, pw, dw)
    bands = -(-ho // band)
    most_rows = min(height, (step_rows - 1) * sh + (kh - 1) * dh + 1)
    block = block_vectors * lanes
    sums_floats = max(-(-hidden // block) * padded_tile_rows(most_rows * width),
                      -(-cout // block) * padded_tile_rows(step_rows * wo)) * block
    for job in prange(n * bands):
        b, r0 = job // bands, (job % bands) * band
        r1 = min(ho, r0 + band)
        expanded = np.empty(most_rows * width * hidden, np.float32)
        spatial = np.empty(step_rows * wo * hidden, np.float32)
        sums = np.empty(sums_floats, np.float32)
        patch = np.empty(max(most_rows * width, step_rows * wo), np.int64)
        row_starts = np.empty(kh, np.int64)
        scratch = np.empty(2 * kh * kw + 2 * kh, np.int64)
        staged = np.empty(0 if out_channels_last else step_rows * wo * cout, np.float32)
        expanded_to = 0  # the input rows before which `expanded` holds the band's expanded rows
        for oy0 in range(r0, r1, step_rows):
            rows = min(step_rows, r1 - oy0)
            need_from = max(0, oy0 * sh - ph)
            need_to = min(height, (oy0 + rows - 1) * sh - ph + (kh - 1) * dh + 1)
            start = max(need_from, expanded_to)
            while start < need_to:  # input row r's expanded row goes in slot r % most_rows
                slot = start % most_rows
                count = min(need_to - start, most_rows - slot)
                pointwise(flat_x, ((b * height + start) * width) * cin, count * width, cin, expand_w, hidden,
                          expand_b, expand_act, expanded, slot * width * hidden, no_added, sums, patch, lanes,
                          block_vectors)
                start += count
            expanded_to = max(expanded_to, need_to)
            for r in range(rows):
                top = (oy0 + r) * sh - ph
                for i in range(kh):
                    row = top + i * dh
                    row_starts[i] = (row % most_rows) * width * hidden if 0 <= row < height else -1
                channels_last_row(expanded, row_starts, kh, kw, dw, sw, pw, width, hidden, wo, first, tiled, by_rows,
                                  flat_taps, dw_b, dw_act, spatial, r * wo * hidden, scratch)
            if out_channels_last:
                pointwise(spatial, 0, rows * wo, hidden, project_w, cout, project_b, project_act, flat_out,
                          (b * ho + oy0) * wo * cout, flat_added, sums, patch, lanes, block_vectors)
            else:
                pointwise(spatial, 0, rows * wo, hidden, project_w, cout, project_b, NONE, staged, 0, no_added, sums,
                          patch, lanes, block_vectors)
                _store_in_planes(staged, rows * wo, cout, flat_out, b * cout * ho * wo + oy0 * wo, ho * wo,
                                 flat_added, project_act)


@njit(cache=True, inline="always")
def _store_in_planes(staged, pixels, cout, flat_out, at, plane, flat_added, activation):
    """A step's `pixels` outputs, staged channels-last with the bias, into an NCHW output
    from flat_out[at] on (channel 0's first pixel of the step; `plane` values a channel),
    with the values added (stored as the output) and the activation."""
    added = flat_added.size > 0
    for o in range(cout):
        dst = at + o * plane
        for p in range(pixels):
            v = staged[p * cout + o]
            if added:
                v += flat_added[dst + p]
            flat_out[dst + p] = max(v, np.float32(0.0)) if activation == RELU else v
        activate_run(flat_out, dst, pixels, activation)


def pointwise(flat_x, x_at, pixels, cin, packed, og, bias, activation, flat_out, out_at, flat_added, sums, patch,
              lanes, block_vectors):
    """A 1x1 conv over `pixels` consecutive channels-last pixels of `cin` channels from
    flat_x[x_at] on into as many of `og` channels from flat_out[out_at] on, with the bias,
    flat_added's values at the output's places (empty: none) and the activation: the
    "outer" strategy's tiles (`conv.cpu._outer_thread`) on one run of pixels, weights
    packed by `kxo_weights`. Where `og` is whole vectors the last chunk's tiles write the
    outputs themselves, else every output goes through `sums`."""
    for q in range(pixels):
        patch[q] = x_at + q * cin
    o_pad = -(-og // lanes) * lanes
    block = block_vectors * lanes
    blocks = -(-o_pad // block)
    direct = og % lanes == 0
    block_pixels = padded_tile_rows(pixels)
    relu = 1 if activation == RELU else 0
    added = 1 if flat_added.size > 0 else 0
    for k0 in range(0, cin, CHUNK):
        span = (k0, 0, 1, cin, min(CHUNK, cin - k0))
        last_chunk = k0 + CHUNK >= cin
        for blk in range(blocks):
            c0 = blk * block
            vectors = min(block_vectors, (o_pad - c0) // lanes)
            width = vectors * lanes
            for p0 in range(0, pixels, outer_rows(lanes, vectors)):
                outputs = (1 if direct and last_chunk else 0, out_at + p0 * og + c0, og, c0, relu, added)
                gathered_tile(lanes, vectors, k0 == 0, flat_x, patch, p0, pixels - 1, span, packed,
                              cin * c0 + k0 * width, width, sums, blk * block_pixels + p0, block, outputs, flat_out,
                              bias, flat_added)
    if direct:
        if activation != RELU:
            activate_run(flat_out, out_at, pixels * og, activation)
    else:
        store_outer_job(sums, block, block_pixels, out_at // og, pixels, 0, og, 0, bias, activation, 0, flat_added,
                         flat_out, og, True)


# `pointwise` is called, not inlined: inlined at its three call sites, with every register
# tile of each, the kernel took 34 s to compile, half of MobileNetV2's first run on an empty
# cache (64 -> 48 s; steady runs unchanged within the noise, alternating processes).
_CALLED = dict(cache=True, boundscheck=False, fastmath=CONTRACT, error_model="numpy")  # the kernel's, but parallel
_POINTWISE = per_lane_width(pointwise, _CALLED, gathered_tile=GATHERED_TILES)
FUSED_ROWS = per_lane_width(_fused_rows, dict(_CALLED, parallel=True), pointwise=_POINTWISE)
