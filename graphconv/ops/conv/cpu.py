"""CPU conv: one of nine strategies per layer (`STRATEGIES`), chosen from the layer's shape.

- "stream": large weights used at few output positions (the fully-connected layers
  fc-to-conv produced; see `gemm_cpu.prefers_stream`). The patches are gathered into
  a small (C*kh*kw x positions) column matrix and the weights are streamed once through
  `gemm_cpu.stream_matmul`; a BLAS GEMM would spend as long re-packing the weights
  as multiplying them.
- "pointwise": a 1x1, stride-1, unpadded conv. The input already is the column
  matrix (C x H*W): the outer-product tile runs over it in place, 4 output channels
  broadcast from the weight rows x 24 pixels (`_pointwise_group`), bias and ReLU on the
  way out. It was one OpenBLAS SGEMM per image; in a whole network, between numba's
  parallel loops, that SGEMM often took 5-30x its time alone (ResNet-50).
- "outer": most convs. The input is copied once to channels-last order; each tap row
  of an output pixel's patch is then one contiguous run of it, and an outer-product
  register tile (`vector_tile.gathered_tile`: 4 pixels' input values broadcast x 3
  vectors of 8 output channels, or, where AVX-512 gives 32 vector registers, 6 pixels'
  x 4 vectors of 16) runs over the runs with the weights packed once per Executor as (K x block)
  panels per block of 24 or 64 output channels (`prepare_conv`). No patch is copied, no
  im2col matrix, no separate epilogue.
- "winograd": 3x3, stride-1 layers with 64 input channels or more and 16 output channels
  or more (`suits_winograd`: VGG's every conv but the first, AlexNet's conv3-5,
  ResNet's 3x3 layers): Winograd's F(2x2, 3x3),
  16 products per 2x2 outputs and channel pair instead of 36, on the same register
  tile as "outer" (`winograd.py`). The weights are transformed and packed once per
  Executor (`prepare_conv`).
- "depthwise": one input channel per group (MobileNet, EfficientNet, ConvNeXt), where
  a GEMM has no reuse to exploit (`depthwise.py`): on NCHW values each output plane
  from a padded copy split into the stride's phases, a tap a contiguous run over whole
  output rows; on channels-last values per output row, a tap a run of C channels.
- "grouped": a grouped conv of 2, 4, 8 or 16 input and as many output channels a group
  (ResNeXt's 3x3 layers, RegNet's; 16 a group on large maps only), on channels-last values: the channels-last depthwise
  kernel compiled for groups, each input vector meeting each tap's G weight vectors
  rotated within its groups of G lanes (`vector_tile._make_depthwise_tile`). "outer"
  pads each group's few output channels to a whole vector of 16 and runs the groups one
  after another; ResNeXt-50's 128-channel 3x3 layers (32 groups of 4) at 56x56 alone,
  2 threads, AVX-512: 1.42 -> 0.19 ms.
- "small": a 1x1 conv with little work, such as a squeeze-and-excitation gate's two convs
  on one pixel (EfficientNet: 96 -> 4 -> 96 to 1152 -> 48 -> 1152): one plain loop
  nest on one thread (`_conv_small`), its fused activation included. Every other
  strategy starts a parallel loop or two and takes a dozen arguments or more, which cost
  10-20 us a call where the arithmetic takes one or two.
- "direct": the previous default, kept for comparison (and forced in tests): per output
  row, a row panel holding every patch as one contiguous (kw, kh, c) run, and a 4x3
  dot-product tile (`gemm_cpu.multiply_band`) over it.
- "im2col": never chosen now; forced in tests and kept for comparison. Columns are
  built in chunks of output rows so the scratch buffer stays small while each SGEMM
  stays large enough to run at BLAS speed. It took patches under 64 values (VGG's
  conv1_1: 27) until "outer" was measured faster on them too: 2 threads, alternating,
  VGG's conv1_1 at 384 8.3 against 36.8 ms with a channels-last output (11.4 against
  12.4 NCHW), LeNet's conv1 at batch 64 1.15 against 1.46. (Maps of under 4 output rows
  left it earlier: between numba's parallel loops an SGEMM that small took 8 ms where
  "outer" takes 0.12, on ResNet-50's 3x3 layers at 2x2.)

Every strategy applies the bias and the fused ReLU while writing the output. Any other
fused activation (the rest of `activations.FUSED`) goes over each run of outputs a kernel
has just written where the kernel writes runs ("outer", the channels-last depthwise
kernel, "winograd" into channels-last: `_writes_smooth_activation`), else over the
whole output in place right after (`_then_smooth_activation`).
"""
from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable

import numpy as np
from numba import get_num_threads, njit, prange

from graphconv.ops import aligned
from graphconv.ops.cache_size import WEIGHT_BYTE_COST, l2_bytes
from graphconv.ops.activations import fused_code
from graphconv.ops.activations.cpu import apply_in_place
from graphconv.ops.fast_math import CONTRACT, NONE, RELU, activate_run
from graphconv.ops.gemm_cpu import (ROWS_PER_TILE, STREAM_MATMUL, STREAM_TILE_LANES, multiply_band, padded_positions,
                                    prefers_stream, stream_matmul, stream_width)
from graphconv.ops.conv import is_depthwise, shape as output_shape
from graphconv.ops.conv import depthwise, winograd
from graphconv.ops.channels_last import (as_channels_last, as_nchw, as_stored_like, copy_into_planes, padded_copy,
                                         store_channels, stored_memory)
from graphconv.ops.layout import nhwc
from graphconv.ops.registry import pair
from graphconv.ops.job_queue import job_counters, next_job
from graphconv.ops.specialise import per_lane_width
from graphconv.ops.unsigned_index import fill, unsigned
from graphconv.ops import vector_tile
from graphconv.ops.vector_tile import (GATHERED_TILES, OUTER_ROWS, gathered_tile, outer_rows, outer_tile_8,
                                       padded_tile_rows)

SCRATCH_FLOATS = 1 << 22  # 16 MB of im2col columns per chunk
# prepare_conv packs weights under this many for "outer": ResNet-50's layer4 (9 MB at most),
# HRNet's 3x3 stride-2 512 -> 1024 at 7x7 (19 MB) and AlexNet's and VGG's fc8-as-conv (16 MB),
# which run it on channels-last values; not their fc6 and fc7 (67 MB and up), which stream
# (packing fc6 would double its 151 MB). In the networks, alternating with the bound at
# 3M (session 25): HRNet's layer 3.0 -> 2.3 ms, AlexNet-FCN's fc8 1.47 -> 1.00 ms,
# VGG-16 FCN's 1.62 -> 1.13 ms (fc7 would gain 14% for 67 MB more).
PACK_MAX_WEIGHTS = 5 << 20
WINOGRAD_MIN_CHANNELS = 16  # fewer output channels: the transforms would cost more than they save
WINOGRAD_MIN_IN_CHANNELS = 64  # fewer input channels: "outer" is faster (see `suits_winograd`)
WINOGRAD_MIN_POSITIONS = 16  # fewer outputs (4 tiles): an fc-like layer, which streams its weights
SMALL_MACS = 1 << 16  # multiply-adds a layer may have and still run "small": SE gates (55K at most in EfficientNet-B0)
GROUPED_16_MIN_PIXELS = 4096  # output pixels x stride from which "grouped" runs 16 channels a group (`_grouped_beats_outer`)
OUTER_1X1_MIN_CHANNELS = 32  # see `_outer_beats_pointwise`
OUTER_1X1_MIN_MACS = 1 << 24
STRATEGIES = ("stream", "pointwise", "direct", "im2col", "outer", "winograd", "depthwise", "grouped", "small")


def suits_winograd(params: dict, in_channels: int) -> bool:
    """A 3x3, stride-1, undilated, ungrouped conv with WINOGRAD_MIN_IN_CHANNELS input
    channels and WINOGRAD_MIN_CHANNELS output channels or more: the layers `prepare_conv`
    transforms the weights of (none when GRAPHCONV_WINOGRAD=0, `winograd.ENABLED`).

    With few input channels each tile's transforms weigh against little arithmetic saved.
    One layer at a time, channels-last in and out, on a 2-core AMD EPYC (AVX-512),
    Winograd against outer: 16 -> 16 at 112x112 0.74 against 0.19 ms, 32 -> 32 0.95
    against 0.62, 32 -> 64 at 128x128 1.64 against 1.46; 64 -> 32 at 64x64 level;
    64 -> 64 at 56x56 0.53 against 0.61, 128 -> 32 0.56 against 0.67. (Session 23; the
    bound was 16 both sides before.)"""
    return (winograd.ENABLED and winograd.applies(params) and in_channels >= WINOGRAD_MIN_IN_CHANNELS
            and params["out_channels"] >= WINOGRAD_MIN_CHANNELS)


def suits_grouped(params: dict, in_channels: int) -> bool:
    """Groups of G input and G output channels, G one of vector_tile.GROUP_WIDTHS: what
    "grouped" runs."""
    groups = params["groups"]
    return (groups > 1 and params["out_channels"] == in_channels and in_channels % groups == 0
            and in_channels // groups in vector_tile.GROUP_WIDTHS)


def _grouped_beats_outer(params: dict, in_channels: int, out_pixels: int) -> bool:
    """Whether "grouped" is chosen for a layer it runs: always for 2 to 8 channels a
    group; for 16 (RegNetX, ResNeXt's layer3) where the output's pixels times the
    stride's reach GROUPED_16_MIN_PIXELS. There its 16 rotations a tap cost less than
    "outer", whose 16-lane tiles each group fills alone; on small maps, more. One layer,
    1 thread, channels-last, grouped against outer (ms): 64 channels 512 -> 256 stride 2
    24.7 / 53.0, 320 at 128 -> 64 stride 2 5.5 / 9.3, 128 at 128 6.9 / 9.2, 320 at 64
    4.2 / 4.8, 768 at 64 -> 32 stride 2 4.6 / 5.2; 256 at 56 2.8 / 3.4 but 128 at 56
    1.7 / 1.4; 256 at 28 0.87 / 0.73, 512 at 14 0.78 / 0.37."""
    if in_channels // params["groups"] < 16:
        return True
    sh, sw = pair(params["stride"])
    return out_pixels * sh * sw >= GROUPED_16_MIN_PIXELS


def can_run(strategy: str, params: dict, in_channels: int | None = None) -> bool:
    """Whether `strategy` computes this layer at all (the others run any conv); "grouped"
    needs to know the input's channels."""
    if strategy == "grouped":
        return in_channels is not None and suits_grouped(params, in_channels)
    if strategy in ("pointwise", "small"):
        plain = tuple(pair(params[k]) for k in ("kernel_size", "stride", "padding")) == ((1, 1), (1, 1), (0, 0))
        return plain and (strategy == "pointwise" or params["groups"] == 1)
    if strategy == "winograd":
        return winograd.applies(params)
    if strategy == "depthwise":  # any grouping, but summing a long patch in one float32 row is for few taps
        return params["groups"] > 1
    return True


def choose_strategy(params: dict, in_shape: tuple[int, ...],
                    out_hw: tuple[int, int] | None = None, channels_last: bool = False) -> str:
    """The strategy `run_conv` uses for this layer on an (N, C, H, W) input whose output
    is out_hw (by default, what the op's shape rule says), `channels_last` when its
    input or its output is stored that way.

    Measured on 2 AVX2 cores (Zen 3), alternating in one process: outer against direct
    (the previous default) on whole networks, AlexNet's conv1 at 384 3.47 -> 2.89 ms and
    VGG's and AlexNet's 3x3 and 5x5 layers level or up to 10% faster; against im2col +
    OpenBLAS on the layers im2col had (2 MB of weights and more: VGG's conv4_x and
    conv5_x, AlexNet's conv3-5, ResNet's 3x3 layers at 14x14) level at best and up to
    3x faster where OpenBLAS's threads and numba's hand the cores back and forth badly
    (VGG-16 at 224: conv4_2 123 -> 42 ms); on patches of under 64 values (VGG's
    conv1_1: 27), the last layers im2col had, see the module docstring. 1x1 convs on
    NCHW values go through `_pointwise_group` (outer's channels-last copy would be as
    long as their arithmetic).

    With a channels-last value on either side, "outer" also takes the 1x1 layers (it
    reads a channels-last input in place) and the small-map layers "stream" would take
    where their packed weights stay under PACK_MAX_WEIGHTS: alternating in one process,
    on ResNet-50's layer4 at 224 (7x7 maps, channels-last), 512->2048 1x1 1.10 -> 0.93
    ms, 2048->512 1.26 -> 0.95, the 1x1 stride-2 1024->2048 2.39 -> 2.10, the 3x3
    stride-2 512->512 2.87 -> 2.28. AlexNet's and VGG's fc layers, far larger, stream.
    """
    strategy = _strategy_for_nchw(params, in_shape, out_hw)
    if channels_last and (strategy == "pointwise" or strategy == "stream" and _packed_for_outer(params, in_shape)):
        return "outer"
    return strategy


def _packed_for_outer(params: dict, in_shape: tuple[int, ...]) -> bool:
    """Whether `prepare_conv` packs this layer's weights for "outer" (a Winograd layer's
    are transformed instead: on a map too small for Winograd it keeps streaming)."""
    return _weight_elements(params, in_shape) < PACK_MAX_WEIGHTS and not suits_winograd(params, in_shape[1])


def _weight_elements(params: dict, in_shape: tuple[int, ...]) -> int:
    kh, kw = pair(params["kernel_size"])
    return params["out_channels"] * (in_shape[1] // params["groups"]) * kh * kw


def _strategy_for_nchw(params: dict, in_shape: tuple[int, ...], out_hw: tuple[int, int] | None) -> str:
    n, c = in_shape[:2]
    ho, wo = out_hw or output_shape(params, [tuple(in_shape[1:])])[1:]
    weights = _weight_elements(params, in_shape)
    if is_depthwise(params, c):
        return "depthwise"
    if suits_grouped(params, c) and _grouped_beats_outer(params, c, n * ho * wo):
        return "grouped"
    if can_run("small", params) and n * ho * wo * c * params["out_channels"] <= SMALL_MACS:
        return "small"
    if suits_winograd(params, c) and n * ho * wo >= WINOGRAD_MIN_POSITIONS:
        return "winograd"
    if prefers_stream(n * ho * wo, weights):
        return "stream"
    if can_run("pointwise", params) and not _outer_beats_pointwise(n * ho * wo * weights, c):
        return "pointwise"
    return "outer"


def _outer_beats_pointwise(macs: int, in_channels: int) -> bool:
    """Whether a 1x1 conv on NCHW values runs faster through "outer" (a channels-last
    copy of the input, then 16-lane tiles) than through "pointwise" (8-lane tiles on the
    NCHW input in place): where the vectors are 16 lanes wide, for layers of
    OUTER_1X1_MIN_CHANNELS input channels and OUTER_1X1_MIN_MACS multiply-adds or more.
    One layer at a time on a 2-core AMD EPYC (AVX-512), pointwise -> outer: DenseNet-121's
    transitions 1024->512 at 14x14 1.01 -> 0.61 ms, 256->128 at 56x56 1.01 -> 0.75;
    64->64 at 128x128 1.32 -> 0.67; AlexNet-FCN's fc7 at 9x9 18.0 -> 8.3; level or up
    to 1.3x slower below those sizes (144->24 at 56x56 0.13 against 0.17 ms), 1.5x
    slower with 16 input channels (16->96 at 112x112). On AVX2 (8 lanes both) pointwise
    was measured faster (see `choose_strategy`)."""
    return (vector_tile.OUTER_LANES == 16 and in_channels >= OUTER_1X1_MIN_CHANNELS
            and macs >= OUTER_1X1_MIN_MACS)


describe_conv = choose_strategy  # what `--profile` and the benchmarks show per layer


def prepare_conv(params: dict, weights: dict) -> dict:
    """Pack the weights once, so no run repacks them: for "winograd" where it suits the
    layer, whatever its size ("weight_winograd", `winograd_weights`), else for "outer"
    ("weight_kxo", `kxo_weights`); the other strategies read the spec's "weight", kept
    as given (no copy). For "outer", weights of PACK_MAX_WEIGHTS and more are not packed
    here: in practice FC-like layers have them, which mostly run "stream". `run_conv`
    packs a layer's weights the first time a run takes them through "outer" without
    them (those, or a Winograd layer's on a map too small for Winograd) and keeps them
    in this dict from then on (AlexNet-FCN's fc7, 67 MB, never is)."""
    w = weights["weight"]
    if suits_winograd(params, w.shape[1]):
        return dict(weights, weight_winograd=winograd_weights(w))
    if w.size >= PACK_MAX_WEIGHTS:  # may well run "stream" only: packed on its first "outer" run instead
        return dict(weights)
    return dict(weights, weight_kxo=kxo_weights(w, params["groups"]))


def run_conv(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray,
             strategy: str | None = None) -> None:
    """The layer on (N, C, H, W) input into `out`, with `weights` as the spec gives them
    or as `prepare_conv` stored them; `strategy` overrides the choice (tests force each one).
    The input, the residual input and `out` may each be stored NCHW or channels-last
    (`graphconv.ops.channels_last`): "outer" and "winograd" read either (they copy the
    input into padded channels-last order anyway, which from channels-last is a plain
    row copy, or no copy at all for an unpadded layer) and write either; a 1x1 layer
    with a channels-last value on either side runs "outer" in place of "pointwise";
    "stream" and "im2col" gather their patch columns from either and write either (their
    epilogues index the output through its strides); "direct" (only ever forced) runs
    on NCHW copies, into an NCHW output transposed into `out` after."""
    _conv_binder(params, weights, inputs, out, strategy)(inputs, out)()


def bind_conv(params: dict, weights: dict) -> "_BoundConv":
    """`run_conv` for one layer of an Executor, keeping its `_conv_binder` per geometry."""
    return _BoundConv(params, weights)


Binder = Callable[[list[np.ndarray], np.ndarray], Callable[[], None]]


class _BoundConv:
    """A layer's `run_conv`, remembering what it works out for each shape and storage of
    its values (the strategy, the geometry, the kernel's arguments that are not views):
    worked out on every call, that cost 18 us a call, 1-2 ms of a ResNet-50 run at 224
    (its 53 convs), where onnxruntime spends microseconds per node."""

    def __init__(self, params: dict, weights: dict):
        self.params, self.weights = params, weights
        self.binders: dict[tuple, Binder] = {}

    def __call__(self, inputs: list[np.ndarray], out: np.ndarray) -> None:
        self.bind_values(inputs, out)()

    def bind_values(self, inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
        """The layer on these very arrays, as a call of no arguments, with everything a
        call works out from them done here once: the views the kernel takes, the job
        split, the thread count (numba's, now). An Executor keeps one per layer and plan
        (`Executor.run`): between two kernels the worker threads wait on Python, and a
        ResNet-50 run at 224 spent 1.41 ms of its 39 there when every call worked them
        out (1.02 ms with the bound calls; 2.3-2.9 ms on a noisy machine)."""
        key = (out.shape, out.strides, *[(x.shape, x.strides) for x in inputs])
        binder = self.binders.get(key)
        if binder is None:
            if len(self.binders) >= CALLS_KEPT:  # an Executor fed images of every size
                self.binders.clear()
            binder = self.binders[key] = _conv_binder(self.params, self.weights, inputs, out, None)
        return binder(inputs, out)


CALLS_KEPT = 16  # geometries a layer keeps its binders for (the Executor keeps plans for a few sizes)


def _conv_binder(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray,
                 strategy: str | None) -> Binder:
    """`run_conv` for values of these shapes and storage: a function of the values alone,
    which returns the call of no arguments that runs the layer on them. Where the kernel
    would take a copy of an input (an NCHW input that is not C-contiguous, a residual
    input stored unlike the output), that call binds again each time it runs, so it
    reads the values as they are then."""
    binder = _strategy_binder(params, weights, inputs, out, strategy)
    if _takes_views(inputs, out):
        return binder
    return lambda inputs, out: partial(_bind_and_run, binder, inputs, out)


def _takes_views(inputs: list[np.ndarray], out: np.ndarray) -> bool:
    """Whether the arrays the kernels take for these values (`_input`, `_residual`) are
    views of them, not copies."""
    taken = [_input(inputs), *([_residual(inputs, out)] if len(inputs) == 2 else [])]
    return all(np.may_share_memory(array, value) for array, value in zip(taken, inputs))


def _bind_and_run(binder: Binder, inputs: list[np.ndarray], out: np.ndarray) -> None:
    binder(inputs, out)()


def _strategy_binder(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray,
                     strategy: str | None) -> Binder:
    """`_conv_binder`'s binder for whichever strategy runs the layer."""
    x_stored, out_stored = nhwc(inputs[0]), nhwc(out)  # each None where stored NCHW
    channels_last = x_stored is not None or out_stored is not None or any(nhwc(x) is not None for x in inputs[1:])
    strategy = strategy or choose_strategy(params, inputs[0].shape, out.shape[2:], channels_last)
    if channels_last and strategy == "pointwise":  # forced: its kernel reads and writes NCHW only
        strategy = "outer"
    if params["activation"] not in ("none", "relu") and not _writes_smooth_activation(strategy, params, inputs, out):
        return _then_smooth_activation(_strategy_binder(dict(params, activation="none"), weights, inputs, out,
                                                        strategy), params["activation"])
    taps_route = _channels_last_taps_route(strategy, params, inputs, out)
    if taps_route == "in place":
        return _channels_last_taps_binder(params, weights)
    if taps_route == "on copies":
        return _channels_last_copies_binder(params, weights)
    if channels_last and strategy in ("direct", "depthwise"):  # their NCHW kernels, on copies
        return partial(partial, _on_nchw_copies, strategy, params, weights)
    groups = params["groups"]
    kh, kw = pair(params["kernel_size"])
    out_c = params["out_channels"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(out_c, np.float32)
    relu = params["activation"] == "relu"
    activation = fused_code(params["activation"])
    geometry = tuple(v for k in ("stride", "padding", "dilation") for v in pair(params[k]))
    if strategy not in ADDS_RESIDUAL and len(inputs) == 2:
        plain = _strategy_binder(dict(params, activation="none"), weights, inputs[:1], out, strategy)
        return lambda inputs, out: partial(_then_add_residual, plain(inputs[:1], out), relu, inputs, out)
    if strategy == "winograd":
        wu = weights["weight_winograd"] if "weight_winograd" in weights else winograd_weights(
            _spec_weights(weights, groups, kh, kw))
        return partial(_bind_winograd, wu, bias, pair(params["padding"]), activation)
    if strategy == "outer":
        if "weight_kxo" not in weights:  # not packed by prepare_conv (large, Winograd's, or as the spec gives them)
            weights["weight_kxo"] = kxo_weights(_spec_weights(weights, groups, kh, kw), groups)  # once, kept
        return partial(_bind_outer, weights["weight_kxo"], out_c // groups, bias, kh, kw, geometry, activation)
    if strategy == "small":
        w2 = np.ascontiguousarray(_spec_weights(weights, 1, 1, 1).reshape(out_c, -1))
        return lambda inputs, out: partial(_small_call, inputs[0], w2, bias, relu, out)
    if strategy == "depthwise":
        w = np.ascontiguousarray(_spec_weights(weights, groups, kh, kw))
        return lambda inputs, out: partial(depthwise.conv_depthwise, _input(inputs), w, bias, *geometry, relu, out)
    if strategy == "direct":
        wk = _taps_last(weights, groups)
        return lambda inputs, out: partial(_conv_direct, _input(inputs), wk, bias, kh, kw, *geometry, relu,
                                           get_num_threads(), out)
    taps_last = "weight_kwkhc" in weights  # stream, pointwise and im2col take either order
    w3 = weights["weight_kwkhc"] if taps_last else _taps_first(weights, groups, kh, kw)
    if strategy == "stream":
        return lambda inputs, out: partial(_stream_call, w3, bias, kh, kw, geometry, relu, taps_last, out_c, inputs,
                                           out)
    if strategy == "pointwise":
        return lambda inputs, out: partial(_conv_pointwise, _input(inputs), w3, bias, relu, out,
                                           _residual(inputs, out))
    return lambda inputs, out: partial(_conv_im2col, *_stored_input(inputs), w3, bias, kh, kw, *geometry, relu,
                                       taps_last, SCRATCH_FLOATS, out)


def _writes_smooth_activation(strategy: str, params: dict, inputs: list[np.ndarray], out: np.ndarray) -> bool:
    """Whether the strategy's kernel applies a smooth activation itself, over each run of
    outputs it has just written (`fast_math.activate_run`): "outer" always, "winograd"
    into a channels-last output (into NCHW it writes 2x2 blocks one value at a time),
    the channels-last depthwise kernel ("grouped"'s too) where there is no residual input to add first.
    EfficientNet-B0 at 224 against the same convs followed by `_then_smooth_activation`'s
    pass, alternating in one process (2 threads, Intel AVX-512): 0.958x the time; its 1x1
    convs 0.93x, depthwise 0.96x, stem 0.94x."""
    if strategy == "outer":
        return True
    if strategy == "winograd":
        return nhwc(out) is not None
    return len(inputs) == 1 and _channels_last_taps_route(strategy, params, inputs, out) is not None


def _channels_last_taps_route(strategy: str, params: dict, inputs: list[np.ndarray], out: np.ndarray) -> str | None:
    """How `depthwise.CHANNELS_LAST_TAPS`' kernel runs the layer, if it does: "in place"
    where input and output are both stored channels-last; "on copies" for "grouped" (no
    other kernel) and for a depthwise layer reading a channels-last input into an NCHW
    output (a network that ends in one), where the NCHW kernel on copies took 8x
    onnxruntime's time (1152 channels 5x5 at 7x7: 0.38 ms against 0.05); else None.
    It computes one output channel an input channel (a depthwise conv without
    multiplier) or the groups "grouped" runs."""
    if strategy not in ("depthwise", "grouped"):
        return None
    in_channels = inputs[0].shape[1]
    depthwise_alone = is_depthwise(params, in_channels) and params["out_channels"] == params["groups"]
    if not (depthwise_alone or suits_grouped(params, in_channels)):
        return None
    x_stored, out_stored = _channels_last_memory(inputs[0]), _channels_last_memory(out)
    if x_stored is not None and out_stored is not None:
        return "in place"
    return "on copies" if strategy == "grouped" or x_stored is not None else None


def _channels_last_memory(a: np.ndarray) -> np.ndarray | None:
    """`nhwc`, and also the memory of a value of one pixel or one channel, which is the
    same stored either way."""
    t = a.transpose(0, 2, 3, 1)
    return t if t.flags.c_contiguous else None


def _channels_last_taps_binder(params: dict, weights: dict) -> Binder:
    """`depthwise.CHANNELS_LAST_TAPS`' kernel for the layer's channels a group."""
    kh, kw = pair(params["kernel_size"])
    taps = depthwise.channels_last_taps(_spec_weights(weights, params["groups"], kh, kw))
    kernel = depthwise.CHANNELS_LAST_TAPS[taps.shape[2]]
    bias = weights.get("bias")
    bias = np.zeros(params["out_channels"], np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    geometry = tuple(v for k in ("stride", "padding", "dilation") for v in pair(params[k]))
    relu = params["activation"] == "relu"
    _, sw, _, pw, _, dw = geometry

    def binder(inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
        residual = len(inputs) == 2  # added after, then the ReLU, as every strategy outside ADDS_RESIDUAL does
        arguments = (_channels_last_memory(inputs[0]), taps, bias, *geometry,
                     fused_code("none" if residual else params["activation"]), _channels_last_memory(out))
        if taps.shape[2] == 1 and depthwise.small_map_pays(out.shape, inputs[0].shape[3], kh, kw, sw, pw, dw):
            plain = partial(depthwise.depthwise_small_map, *arguments,
                            depthwise.small_map_job_lanes(out.shape[1], get_num_threads()))
        else:
            plain = partial(kernel, *arguments)
        return partial(_then_add_residual, plain, relu, inputs, out) if residual else plain
    return binder


def _input(inputs: list[np.ndarray]) -> np.ndarray:
    """The input as a kernel takes it: as stored where that is channels-last, else C-contiguous NCHW."""
    x = inputs[0]
    return x if nhwc(x) is not None else np.ascontiguousarray(x)


def _stored_input(inputs: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """(the input's memory, as NCHW or (N, H, W, C), whether it is channels-last)."""
    stored = nhwc(inputs[0])
    return (np.ascontiguousarray(inputs[0]), False) if stored is None else (stored, True)


def _residual(inputs: list[np.ndarray], out: np.ndarray) -> np.ndarray:
    """The residual input, flat and stored as `out` is; NO_RESIDUAL when there is none."""
    return stored_memory(as_stored_like(inputs[1], out)) if len(inputs) == 2 else NO_RESIDUAL


def _then_add_residual(plain: Callable[[], None], relu: bool, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """A strategy that cannot add the residual input while writing: the conv, then the sum."""
    plain()
    _add_residual(stored_memory(out), _residual(inputs, out), relu)


def _then_smooth_activation(plain: Binder, activation: str) -> Binder:
    """A conv with an activation past relu (the rest of `FUSED`) whose kernel
    does not apply it (`_writes_smooth_activation`): the conv, then a vectorised pass of
    the activation over the output in place, while it is still in cache. This pass costs
    0.75-1.0x the separate layer (the less, the larger the map), which reads one buffer
    and writes another. Per value in a kernel's scalar store loop, behind the branch on the
    activation, it stayed scalar (2.5 ns a value after a Winograd 3x3 into NCHW, where
    this pass costs 0.4)."""
    def binder(inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
        conv = plain(inputs, out)

        def run() -> None:
            conv()
            apply_in_place(activation, out)
        return run
    return binder


def _channels_last_copies_binder(params: dict, weights: dict) -> Binder:
    """`_channels_last_taps_binder`, whose kernel reads and writes channels-last only, for
    values stored NCHW (a value the `channels-last` pass left NCHW: the network's output,
    or every value with GRAPHCONV_CHANNELS_LAST=0): it writes a channels-last buffer of
    its own, then copies it into the output's planes; an NCHW input is copied
    channels-last at each run (the buffer is bound once, the input's values change)."""
    in_place = _channels_last_taps_binder(params, weights)

    def binder(inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
        n, c, height, width = out.shape
        stored_out = _channels_last_memory(out)
        buffer = np.empty((n, height, width, c), np.float32) if stored_out is None else stored_out
        written = buffer.transpose(0, 3, 1, 2)
        if all(_channels_last_memory(x) is not None for x in inputs):
            conv = in_place(inputs, written)
        else:
            conv = partial(_bind_and_run_on_channels_last_copies, in_place, inputs, written)
        return conv if stored_out is not None else partial(_then_into_planes, conv, buffer, out)
    return binder


def _bind_and_run_on_channels_last_copies(binder: Binder, inputs: list[np.ndarray], out: np.ndarray) -> None:
    binder([as_channels_last(x).transpose(0, 3, 1, 2) for x in inputs], out)()


def _then_into_planes(conv: Callable[[], None], buffer: np.ndarray, out: np.ndarray) -> None:
    conv()
    copy_into_planes(buffer, out)


def _on_nchw_copies(strategy: str, params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    out_stored = nhwc(out)
    nchw_out = out if out_stored is None else np.empty(out.shape, np.float32)
    run_conv(params, weights, [as_nchw(x) for x in inputs], nchw_out, strategy)
    if out_stored is not None:
        padded_copy(nchw_out, 0, 0, 0, out_stored)


def _stream_call(w3, bias, kh, kw, geometry, relu, taps_last, out_c, inputs, out) -> None:
    x, channels_last = _stored_input(inputs)
    out_stored = nhwc(out)
    n, _, ho, wo = out.shape
    out3 = out.reshape(n, out_c, ho * wo) if out_stored is None else out_stored.reshape(n, ho * wo, out_c)
    CONV_STREAM[vector_tile.STREAM_LANES](x, channels_last, w3, bias, kh, kw, *geometry, relu, taps_last, ho, wo, out3,
                                          out_stored is not None, vector_tile.WIDE_TILES)


NO_RESIDUAL = np.zeros(0, np.float32)  # what the residual-adding strategies get for "no residual input"
ADDS_RESIDUAL = ("winograd", "outer", "pointwise")  # while writing; the others add it in a pass after


@njit(cache=True, parallel=True, boundscheck=False)
def _add_residual(flat_out, flat_res, relu):
    """out = act(out + res), for the strategies that do not add a residual themselves."""
    for i in prange(flat_out.size):
        v = flat_out[i] + flat_res[i]
        flat_out[i] = max(v, np.float32(0.0)) if relu else v


def _taps_last(weights: dict, groups: int) -> np.ndarray:
    """(groups, O/groups, K) weights with K ordered (kw, kh, c)."""
    if "weight_kwkhc" in weights:
        return weights["weight_kwkhc"]
    return kwkhc_weights(weights["weight"], groups)


def _spec_weights(weights: dict, groups: int, kh: int, kw: int) -> np.ndarray:
    """(O, C/groups, kh, kw) weights, as the spec stores them."""
    if "weight" in weights:
        return weights["weight"]
    g, og, k = _taps_first(weights, groups, kh, kw).shape
    return _taps_first(weights, groups, kh, kw).reshape(g * og, k // (kh * kw), kh, kw)


def _taps_first(weights: dict, groups: int, kh: int, kw: int) -> np.ndarray:
    """(groups, O/groups, K) weights with K ordered (c, kh, kw), as the spec stores them."""
    if "weight" in weights:
        w = weights["weight"]
        return w.reshape(groups, w.shape[0] // groups, -1)
    wk = weights["weight_kwkhc"]
    g, og, k = wk.shape
    return np.ascontiguousarray(
        wk.reshape(g, og, kw, kh, k // (kw * kh)).transpose(0, 1, 4, 3, 2)).reshape(g, og, k)


# ---- patch columns (stream and im2col) ------------------------------------------------------

@njit(cache=True, parallel=True, boundscheck=False)
def _patch_columns(x, channels_last, c0, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, q0, q1, taps_last, cols):
    """cols[(c, i, j), (q - q0) * wo + ox] = x[n, c0 + c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
    for the output rows q = n * ho + oy in [q0, q1): the im2col matrix of those rows. Zero
    where a tap falls in the padding and in the columns past the last row's; rows ordered
    (j, i, c) instead when `taps_last`, to match weights stored that way. x is the input
    as stored: (N, C, H, W), or (N, H, W, C) when `channels_last`."""
    if channels_last:
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        channel_step, row_step, column_step = 1, width * channels, channels
    else:
        channels, height, width = x.shape[1], x.shape[2], x.shape[3]
        channel_step, row_step, column_step = height * width, width, 1
    image_step = channels * height * width
    cg = cols.shape[0] // (kh * kw)
    row_length = cols.shape[1]
    flat_x, flat_cols = x.reshape(-1), cols.reshape(-1)
    for r in prange(cols.shape[0]):
        if taps_last:
            c, i, j = r % cg, (r // cg) % kh, r // (cg * kh)
        else:
            c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        offset = j * dw - pw  # ix = ox * sw + offset
        lo = min(wo, max(0, -(offset // sw)))  # first ox whose ix >= 0
        hi = max(lo, min(wo, (width - 1 - offset) // sw + 1))  # one past the last ix < width
        row = r * row_length
        n, oy = q0 // ho, q0 % ho
        for q in range(q0, q1):
            start = row + (q - q0) * wo
            iy = oy * sh - ph + i * dh
            source = n * image_step + (c0 + c) * channel_step + iy * row_step + offset * column_step
            oy += 1
            if oy == ho:
                n, oy = n + 1, 0
            if iy < 0 or iy >= height:
                fill(flat_cols, start, start + wo, 0.0)
                continue
            fill(flat_cols, start, start + lo, 0.0)
            if sw * column_step == 1:  # a contiguous run: vectorised
                for ox in range(lo, hi):
                    flat_cols[unsigned(start + ox)] = flat_x[unsigned(source + ox)]
            else:
                step = sw * column_step
                for ox in range(lo, hi):
                    flat_cols[unsigned(start + ox)] = flat_x[unsigned(source + ox * step)]
            fill(flat_cols, start + hi, start + wo, 0.0)
        fill(flat_cols, row + (q1 - q0) * wo, row + row_length, 0.0)


# ---- stream ---------------------------------------------------------------------------------

def _conv_stream(x, channels_last, w3, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu, taps_last, ho, wo, out3,
                 out_channels_last, wide):
    """x: the input as stored (see `_patch_columns`); out3: the output as (N, C, H*W), or
    as (N, H*W, C) when it is stored channels-last (`out_channels_last`); `wide`: which
    of `stream_matmul`'s 8-lane tiles run (the lane width is that of this function's
    copy in CONV_STREAM that runs)."""
    n, c = x.shape[0], x.shape[3] if channels_last else x.shape[1]
    groups, og, k = w3.shape
    positions = n * ho * wo
    cols = np.empty((k, stream_width(positions, STREAM_TILE_LANES)), np.float32)
    for g in range(groups):
        _patch_columns(x, channels_last, g * (c // groups), kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, 0, n * ho,
                       taps_last, cols)
        stream_matmul(w3[g], bias, relu, cols, positions, ho * wo, g * og, out3, out_channels_last, wide)


# ---- small ----------------------------------------------------------------------------------

def _small_call(x: np.ndarray, w2: np.ndarray, bias: np.ndarray, relu: bool, out: np.ndarray) -> None:
    """`_conv_small` on the input's pixels as the rows of a C-contiguous (pixels x C)
    matrix: a view where the input is stored channels-last or is one pixel (an SE gate's),
    else a copy as small as the layer."""
    _conv_small(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, x.shape[1]), w2, bias, relu, out)


@njit(cache=True, fastmath={"reassoc", "contract"}, boundscheck=False)
def _conv_small(pixels, w2, bias, relu, out):
    """out[b, o, y, x] = act(bias[o] + sum_c w2[o, c] * pixels[(b * H + y) * W + x, c]) on one
    thread; out as stored (an NCHW array or a channels-last view), w2 (O, C). Each output
    is one dot product of two contiguous rows, summed in whatever order vectorises (a
    gate's few hundred products stay well inside the tolerance float32 gives any order)."""
    n, o, height, width = out.shape
    for p in range(pixels.shape[0]):
        b, y, xx = p // (height * width), (p // width) % height, p % width
        for oc in range(o):
            total = bias[oc]
            for k in range(pixels.shape[1]):
                total += w2[oc, k] * pixels[p, k]
            out[b, oc, y, xx] = max(total, np.float32(0.0)) if relu else total


# ---- direct ---------------------------------------------------------------------------------

def kwkhc_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """(O, C/groups, kh, kw) weights as (groups, O/groups, kw*kh*C/groups), ordered (kw, kh, c):
    the order in which a patch lies in the direct strategy's row panel."""
    out_c, cg, kh, kw = w.shape
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1)).reshape(groups, out_c // groups, kw * kh * cg)


@njit(cache=True, boundscheck=False)
def _fill_row_panel(image, oy, kh, kw, sh, sw, dh, dw, wo, overlap, panel):
    """Lay out the patches of output row `oy` so each is contiguous in (kw, kh, c) order.

    With dw == 1 ("overlap") the panel holds every input column once, as
    panel[(x * kh + i) * C + c] = image[oy*sh + i*dh, x, c]; output column ox's patch then
    starts at ox * sw * kh * C, overlapping its neighbours. With dilation along w the
    taps of one patch are not adjacent columns, so each patch is copied out whole."""
    width, cg = image.shape[1], image.shape[2]
    if overlap:
        for i in range(kh):
            src = image[oy * sh + i * dh]
            for x in range(width):
                base = (x * kh + i) * cg
                for c in range(cg):  # element loops: a slice copy per pixel costs more than 3 floats
                    panel[base + c] = src[x, c]
    else:
        k = kw * kh * cg
        for ox in range(wo):
            for j in range(kw):
                for i in range(kh):
                    base = ox * k + (j * kh + i) * cg
                    src = image[oy * sh + i * dh, ox * sw + j * dw]
                    for c in range(cg):
                        panel[base + c] = src[c]


@njit(cache=True, parallel=True, boundscheck=False)
def _direct_group(xp, wk, bias, relu, kh, kw, sh, sw, dh, dw, o_offset, ho, wo, out3, threads):
    """Every output row of one group: build its row panel, then run every band of
    weight rows over it with `multiply_band`. Threads take rows as they become free
    (`next_job`) and each keeps one panel, so nothing is allocated per row."""
    n, _, width, cg = xp.shape
    og, k = wk.shape
    overlap = dw == 1
    step = sw * kh * cg if overlap else k
    count = padded_positions(wo)
    size = max(width * kh * cg, (count - 1) * step + k) if overlap else count * k
    jobs = n * ho
    queue = job_counters(1)  # the next job to take (`next_job`)
    for t in prange(threads):
        panel = np.zeros(size, np.float32)  # the tail past the last real patch stays zero
        while True:
            job = next_job(queue)
            if job >= jobs:
                break
            b = job // ho
            oy = job % ho
            _fill_row_panel(xp[b], oy, kh, kw, sh, sw, dh, dw, wo, overlap, panel)
            first = b * ho * wo + oy * wo
            for o0 in range(0, og, ROWS_PER_TILE):
                multiply_band(wk, o0, panel, step, count, bias, relu, first, first + wo, ho * wo,
                              o_offset, out3)


def _conv_direct(x, wk, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu, threads, out):
    n, c, height, width = x.shape
    groups, og, _ = wk.shape
    cg = c // groups
    ho, wo = out.shape[2], out.shape[3]
    out3 = out.reshape(n, groups * og, ho * wo)
    xp = np.empty((n, height + 2 * ph, width + 2 * pw, cg), np.float32)
    for g in range(groups):
        padded_copy(x, g * cg, ph, pw, xp)
        _direct_group(xp, wk[g], bias, relu, kh, kw, sh, sw, dh, dw, g * og, ho, wo, out3, threads)


# ---- pointwise ------------------------------------------------------------------------------

POINTWISE_VECTORS = 3  # pixel vectors per tile: 24 pixels (the 3-vector tile, on every machine)
POINTWISE_TILE = POINTWISE_VECTORS * 8
POINTWISE_PIXELS = 4 * POINTWISE_TILE  # pixels a job covers: 96
POINTWISE_CHUNK = 128  # input channels per k chunk: 24 pixels' chunk is 12 KB, in L1
POINTWISE_ROWS = 64  # output channels whose weight chunk is reused across a job's pixels (a multiple of 8)


def _conv_pointwise(x, w3, bias, relu, out, flat_res):
    """The 1x1 product without BLAS: `_pointwise_group` per group."""
    n, c, height, width = x.shape
    groups, og, cg = w3.shape
    x3 = x.reshape(n, c, height * width)
    out3 = out.reshape(n, groups * og, height * width)
    for g in range(groups):
        _pointwise_group(x3, w3[g], bias, relu, g * og, g * cg, POINTWISE_CHUNK, out3, flat_res, get_num_threads())


@njit(cache=True, parallel=True, boundscheck=False)
def _pointwise_group(x3, w, bias, relu, o_offset, c_offset, chunk, out3, flat_res, threads):
    """out3[b, o_offset + o, p] = act(sum_c w[o, c] * x3[b, c_offset + c, p] + bias) for one
    group, straight from the NCHW input (for a 1x1 conv it already is the C x H*W column
    matrix). A job is a block of POINTWISE_PIXELS pixels of one image (and, when there
    are fewer than 8 such blocks per thread, a thread's share of the output channels:
    fc7 as a 1x1 conv on AlexNet-FCN's 11x11 stride-16 map made 2 blocks of 96 and 24
    pixels, and one thread did 4/5 of the work, 50.7 against 35.0 ms split by channels):
    for each chunk of input channels and each 24 pixels (12 KB of input, in L1), the
    outer-product tile runs over every output channel, 4 at a time broadcast from the
    weight rows, times 3 vectors of 8 pixels. The pixels past the last whole vector (fewer than 8) are copied
    into one zero-padded vector per input channel and run through the 8 x 1 tile. A
    residual input (flat_res, laid out as out3; empty when there is none) is added
    before the activation."""
    n, _, hw = x3.shape
    residual = flat_res.size > 0
    og, cg = w.shape
    full = hw // 8 * 8
    per_image = max(1, -(-full // POINTWISE_PIXELS))
    jobs = n * per_image
    parts = 1 if jobs >= 8 * threads else threads  # few jobs: each thread takes all, for its share of the outputs
    half = -(-og // (8 * parts)) * 8  # output channels per part, whole tiles
    o_pad = og + 8  # sums rows per 24 pixels: the last tile's clamped rows land in the slack
    tiles = POINTWISE_PIXELS // POINTWISE_TILE
    flat_w, flat_x = w.reshape(-1), x3.reshape(-1)
    flat_out = out3.reshape(-1)
    channels, out_channels = x3.shape[1], out3.shape[1]
    queue = job_counters(1)  # the next job to take (`next_job`)
    for t in prange(threads):
        sums = np.empty(tiles * o_pad * POINTWISE_TILE, np.float32)
        tail = np.empty(cg * 8, np.float32)
        while True:
            job = next_job(queue)
            if job >= jobs * parts:
                break
            b = (job // parts) // per_image
            p_start = ((job // parts) % per_image) * POINTWISE_PIXELS
            p_end = min(full, p_start + POINTWISE_PIXELS)
            o_lo = (job % parts) * half
            o_hi = min(og, o_lo + half)
            if o_lo >= o_hi:
                continue
            fill(sums, 0, sums.size, 0.0)
            image = (b * channels + c_offset) * hw
            for k0 in range(0, cg, chunk):
                steps = min(chunk, cg - k0)
                for ob in range(o_lo, o_hi, POINTWISE_ROWS):  # 64 weight rows' chunk (32 KB) stays in cache
                    oe = min(o_hi, ob + POINTWISE_ROWS)
                    for p0 in range(p_start, p_end, POINTWISE_TILE):
                        vectors = min(POINTWISE_VECTORS, (p_end - p0) // 8)
                        rows = OUTER_ROWS[vectors]
                        s0 = ((p0 - p_start) // POINTWISE_TILE) * o_pad
                        for o in range(ob, oe, rows):
                            outer_tile_8(8, vectors, flat_w, o, og - 1, cg, k0, steps, flat_x, image + p0, hw,
                                         sums, s0 + o, POINTWISE_TILE)
            for p0 in range(p_start, p_end, POINTWISE_TILE):
                s0 = ((p0 - p_start) // POINTWISE_TILE) * o_pad
                count = min(POINTWISE_TILE, p_end - p0)
                for o in range(o_lo, o_hi):
                    channel = o_offset + o
                    _store_run(sums, (s0 + o) * POINTWISE_TILE, bias[channel], flat_res, flat_out,
                               (b * out_channels + channel) * hw + p0, count, residual, relu)
            if p_end == full and full < hw:  # the last job of the image: the pixels past whole vectors,
                left = hw - full            # copied into one zero-padded vector per input channel
                for c in range(cg):
                    for j in range(8):
                        tail[c * 8 + j] = flat_x[unsigned(image + c * hw + full + j)] if j < left else 0.0
                fill(sums, 0, o_pad * POINTWISE_TILE, 0.0)
                for k0 in range(0, cg, chunk):
                    steps = min(chunk, cg - k0)
                    for o in range(o_lo, o_hi, OUTER_ROWS[1]):
                        outer_tile_8(8, 1, flat_w, o, og - 1, cg, k0, steps, tail, 0, 8, sums, o, POINTWISE_TILE)
                for o in range(o_lo, o_hi):
                    channel = o_offset + o
                    _store_run(sums, o * POINTWISE_TILE, bias[channel], flat_res, flat_out,
                               (b * out_channels + channel) * hw + full, left, residual, relu)


@njit(cache=True, inline="always")
def _store_run(sums, at, bias_value, flat_res, flat_out, dst, count, residual, relu):
    """flat_out[dst + j] = act(sums[at + j] + bias_value (+ flat_res[dst + j])) for j < count:
    one output channel's run of a job's pixels. Flat arrays and unsigned indices: indexing
    the 3-d output with a signed pixel index kept the loop scalar. Alternating in one
    process, on ResNet-50's residual 1x1 layers: 64->256 at 56x56 1.48 -> 0.91 ms, 128->512
    at 28x28 0.98 -> 0.73, 256->1024 at 14x14 0.78 -> 0.66 (the others level). Not used by
    `outer`, whose sums are read with a stride of 24: LLVM vectorised that with gathers,
    slow on AMD, and its 3x3 stride-2 layers ran 3-5% slower than with the scalar loop."""
    if residual:
        for j in range(count):
            v = sums[unsigned(at + j)] + bias_value + flat_res[unsigned(dst + j)]
            flat_out[unsigned(dst + j)] = max(v, np.float32(0.0)) if relu else v
    else:
        for j in range(count):
            v = sums[unsigned(at + j)] + bias_value
            flat_out[unsigned(dst + j)] = max(v, np.float32(0.0)) if relu else v


# ---- im2col ---------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _epilogue(res, bias, o0, q0, q1, ho, wo, relu, out):
    """out[n, o0 + o, oy, :] = res[o, row] + bias[o0 + o], clamped at 0 when relu."""
    for o in prange(res.shape[0]):
        b = bias[o0 + o]
        for q in range(q0, q1):
            n = q // ho
            oy = q % ho
            base = (q - q0) * wo
            for ox in range(wo):
                v = res[o, base + ox] + b
                out[n, o0 + o, oy, ox] = max(v, 0.0) if relu else v


def _conv_im2col(x, channels_last, w3, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu, taps_last, scratch_floats, out):
    """x: the input as stored (see `_patch_columns`); out: the output, stored NCHW or
    channels-last (`_epilogue` writes it through its strides)."""
    n, c = x.shape[0], x.shape[3] if channels_last else x.shape[1]
    groups, og, k = w3.shape
    ho, wo = out.shape[2], out.shape[3]
    total_rows = n * ho
    rows = max(1, min(total_rows, scratch_floats // max(1, k * wo)))
    cols = np.empty((k, rows * wo), np.float32)
    res = np.empty((og, rows * wo), np.float32)
    cg = c // groups
    for g in range(groups):
        wg = w3[g]
        for q0 in range(0, total_rows, rows):
            q1 = min(total_rows, q0 + rows)
            if q1 - q0 == rows:
                cols_q, res_q = cols, res
            else:
                cols_q = np.empty((k, (q1 - q0) * wo), np.float32)
                res_q = np.empty((og, (q1 - q0) * wo), np.float32)
            _patch_columns(x, channels_last, g * cg, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, q0, q1, taps_last,
                           cols_q)
            np.matmul(wg, cols_q, out=res_q)
            _epilogue(res_q, bias, g * og, q0, q1, ho, wo, relu, out)


# ---- outer ----------------------------------------------------------------------------------

OUTER_CHUNK = 512  # taps per k chunk
# Each chunk past the first reloads every tile's sums, and the weight panels stream from L2
# whatever the chunk (a 64-column panel of 192 taps is 48 KB, past L1). Alternating in one
# process (Zen 4, 16-lane tiles), against the 192 taps sized for L1 on AVX2: ResNet-50 0.971x
# the time at 224 (its 1x1 and stride-2 layers 0.92-1.0x, 7x7 maps gaining most). A whole
# tap row's run (up to 4096) was as fast, with VGG-16 FCN at 384 0.937x and AlexNet-FCN level,
# but each sum then runs sequentially over up to 4096 products: the conv tests' rounding
# differences passed their tolerance at 1024 and more (a 3x3 stride-2 layer on 600 channels).
OUTER_POSITIONS = 64  # output pixels a job covers at least, so each weight chunk is reused
OUTER_JOB_TARGET = 112  # of the job sizes that share a layer out equally well, the one nearest this
# Maps this small run as one job per image, split between the threads (`outer_jobs`):
# ResNet-50's 14x14 layers (0.5-2 MB of weights, which jobs of OUTER_POSITIONS read again
# from L3 each)
# 1-2% faster end to end at 224 and 448 than at 64, alternating in one process; 800
# (its 28x28 layers too) level.
WHOLE_MAP_POSITIONS = 256
BATCH_JOB_SLACK = 1.15  # how much over an even share of a batch's images a thread may get


def packed_weight_elements(params: dict, weight_elements: int) -> int:
    """Floats `kxo_weights` holds for a weight of `weight_elements`: each group's output
    channels padded to whole vectors (`vector_tile.padded_channels`)."""
    out_c, groups = params["out_channels"], params["groups"]
    return groups * vector_tile.padded_channels(out_c // groups) * (weight_elements // out_c)


def prepared_weight_elements(params: dict, weight_shape: tuple[int, ...]) -> int:
    """Floats `prepare_conv` adds beside the spec's weights of `weight_shape` (O, C/groups, kh, kw)."""
    elements = int(np.prod(weight_shape))
    if suits_winograd(params, weight_shape[1]):
        return 16 * weight_shape[1] * vector_tile.padded_channels(params["out_channels"])
    return packed_weight_elements(params, elements) if elements < PACK_MAX_WEIGHTS else 0


def kxo_weights(w: np.ndarray, groups: int) -> np.ndarray:
    """(O, C/groups, kh, kw) weights packed for the "outer" strategy: per group, taps in
    (kh, kw, c) order (a tap row of a patch is then one contiguous run of the channels-last
    input), one contiguous (K x block) panel per block of `vector_tile.OUTER_VECTORS` x
    `OUTER_LANES` output channels (24 or 64; the last block narrower, its channels padded
    with zeros to a whole vector: `vector_tile.padded_channels`), flat. A vector load gives 8 or 16
    output channels of one tap, and a chunk of taps of one block is one contiguous run."""
    out_c, cg, kh, kw = w.shape
    og, k = out_c // groups, cg * kh * kw
    o_pad = vector_tile.padded_channels(og)
    packed = aligned.zeros((groups, k * o_pad))
    spec = w.reshape(groups, og, cg, kh, kw)
    block = vector_tile.OUTER_VECTORS * vector_tile.OUTER_LANES
    for c0 in range(0, o_pad, block):  # view to view, block by block: no temporary as large as w
        width = min(block, o_pad - c0)
        real = max(0, min(width, og - c0))
        panel = packed[:, k * c0:k * (c0 + width)].reshape(groups, kh, kw, cg, width)
        panel[..., :real] = spec[:, c0:c0 + real].transpose(0, 3, 4, 2, 1)
    return packed


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """(O, C, 3, 3) weights for the "winograd" strategy: U = G g G^T per position xi of
    the 4x4 transformed tile, each xi's (O x C) matrix packed as `kxo_weights` packs a 1x1
    conv's weights, the 16 one after another, flat (`winograd.pack_transformed_weights`:
    VGG-16's in 0.05 s). 16/9 of the weights' size (plus the output channels padded to a
    multiple of 8)."""
    out_c, c = w.shape[:2]
    packed = aligned.zeros((16, c * vector_tile.padded_channels(out_c)))
    winograd.pack_transformed_weights(np.ascontiguousarray(w, np.float32),
                                      vector_tile.OUTER_VECTORS * vector_tile.OUTER_LANES, packed)
    return packed.reshape(-1)


def _bind_winograd(wu: np.ndarray, bias: np.ndarray, padding: tuple[int, int], activation: int,
                   inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
    """The layer through `winograd.winograd_conv`: on the input itself where it is stored
    channels-last (the kernel reads the padding as zeros), else on a padded channels-last
    copy made per call, for all of it at once or, where that would pass
    `winograd.BAND_BYTES`, for one image's band of tile rows at a time
    (`winograd.band_tile_rows`). Reading a channels-last input in place spares ResNet-50
    at 224 its 13 copies (0.38 ms of its run; the network 0.993x the time, alternating
    in one process; level at 448)."""
    x = _input(inputs)
    n, c, height, width = x.shape
    og, ho, wo = out.shape[1:]
    threads = get_num_threads()
    tile_rows, tile_cols = -(-ho // 2), -(-wo // 2)
    stored = nhwc(x)
    band = tile_rows if stored is not None else winograd.band_tile_rows(n, tile_rows, tile_cols, c)
    copies = n if band == tile_rows else 1
    flat_out, flat_res, out_channels_last = stored_memory(out), _residual(inputs, out), nhwc(out) is not None

    def arguments(image: int, row: int, rows: int) -> tuple:  # the kernel's after the input and its offsets
        runs, parts = winograd.job_plan(copies, rows * tile_cols, c, og, threads)
        return (wu, og, bias, activation, min(ho - 2 * row, 2 * rows), wo, runs, parts, winograd.CHUNK, flat_out,
                flat_res, ho * wo, out_channels_last, threads, image, 2 * row, vector_tile.OUTER_LANES,
                vector_tile.OUTER_VECTORS)

    kernel = winograd.WINOGRAD_CONV[vector_tile.OUTER_LANES]  # compiled for the tiles `arguments` name
    if stored is not None:
        return partial(kernel, stored, *padding, *arguments(0, 0, tile_rows))
    bands = []  # (first image, first tile row, tile rows, the kernel's arguments)
    for image in range(0, n, copies):
        for row in range(0, tile_rows, band):
            rows = min(band, tile_rows - row)
            bands.append((image, row, rows, arguments(image, row, rows)))
    return partial(_winograd_bands, kernel, x, (copies, 2 * band + 2, 2 * tile_cols + 2, c), padding, copies, bands)


def _winograd_bands(kernel, x: np.ndarray, padded_shape: tuple[int, ...], padding: tuple[int, int], copies: int,
                    bands: list[tuple]) -> None:
    """Each band's padded channels-last copy (zero past the input and its padding), then its kernel."""
    xp = np.empty(padded_shape, np.float32)
    for image, row, rows, arguments in bands:
        band_xp = xp[:, :2 * rows + 2]  # leading rows: still contiguous
        padded_copy(x[image:image + copies], 0, padding[0] - 2 * row, padding[1], band_xp)
        kernel(band_xp, 0, 0, *arguments)


def _outer_group(xp, wp, og, bias, activation, kh, kw, sh, sw, dh, dw, o_offset, ho, wo, chunk, job_pixels, parts,
                 flat_out, flat_res, out_channels, channels_last, threads, lanes, block_vectors):
    """Every output pixel of one group, `job_pixels` consecutive pixels (counted over the
    batch) per job, each job split into `parts` parts by vectors of output channels
    (`outer_jobs`): a part's boundary may fall inside a block of the packed weights, whose
    columns on either side two parts' tiles then cover, each summing into those columns.
    The patches are read straight from the channels-last input: for each tap row i (and,
    when dilated along w, each tap column j) the taps of a pixel are one contiguous run
    of xp, which starts `patch[q]` + the tap's shift for the job's pixel q, so no patch
    is ever copied; where a run is short (conv1's 7 taps of 3 channels),
    one chunk takes several tap rows' runs. For each chunk and each block of
    `block_vectors` x `lanes` output channels (24 or 64), the outer-product tile runs
    over every pixel of the job: 4 pixels' input values broadcast, times 3 vectors of 8
    channels of the packed weights (or 6 pixels' times 4 vectors of 16), 12 (24) vector
    sums in registers. The
    weight chunk stays in cache while the job's pixels stream past it; the sums (pixels
    x block per block) go to the output (flat, `out_channels` channels,
    stored NCHW or channels-last) with bias, the residual input if any (flat_res, stored
    as the output; empty when there is none) and the activation (`fused_code`) at the end
    of the job. Where the output is channels-last, of one group, in whole vectors of
    channels, the last chunk's tiles write the outputs themselves
    (`vector_tile.gathered_tile`'s `direct`), with bias, the residual input and ReLU, and
    the job only applies a smooth activation after: no pass through the sums. EfficientNet-B0 at
    224 (2 threads, Intel AVX-512; before and after in alternating processes, per-layer
    profiles): its 1x1 convs 4.2-4.3 -> 3.7 ms, its stem 0.47-0.49 -> 0.33-0.37 ms, the
    network 8.7-8.8 -> 7.9-8.0 ms; ResNet-50 0.98x. The same layers alone, on NCHW input
    copied first, took the same time either way: the gain is in the network, where the
    next layer reads this one's output."""
    queue = job_counters(1)  # the next job to take (`next_job`)
    for _ in prange(threads):
        _outer_thread(xp, wp, og, bias, activation, kh, kw, sh, sw, dh, dw, o_offset, ho, wo, chunk, job_pixels, parts,
                      flat_out, flat_res, out_channels, channels_last, threads, lanes, block_vectors, queue)


def _outer_groups(xps, wps, og, bias, activation, kh, kw, sh, sw, dh, dw, o_offset, ho, wo, chunk, job_pixels,
                  parts, flat_out, flat_res, out_channels, channels_last, threads, lanes, block_vectors):
    """`_outer_group` for every group of a grouped conv in one parallel loop: group g's
    padded input xps[g], packed weights wps[g], output channels from g * og. Each thread
    goes through the groups in order and takes each one's jobs from that group's own
    queue, so no thread waits for the others between groups."""
    groups = xps.shape[0]
    queues = job_counters(groups)  # group g's next job (`next_job`)
    for _ in prange(threads):
        for g in range(groups):
            _outer_thread(xps[g], wps[g], og, bias, activation, kh, kw, sh, sw, dh, dw, o_offset + g * og, ho, wo,
                          chunk, job_pixels, parts, flat_out, flat_res, out_channels, channels_last, threads, lanes,
                          block_vectors, queues[g:g + 1])


def _outer_thread(xp, wp, og, bias, activation, kh, kw, sh, sw, dh, dw, o_offset, ho, wo, chunk, job_pixels, parts,
                  flat_out, flat_res, out_channels, channels_last, threads, lanes, block_vectors, queue):
    """One thread's share of `_outer_group`: jobs taken from `queue` until none are left.
    A function of its own, not the body of the parallel loop, for numba's compile time:
    its parallel passes simplified the loop body's IR, every tile variant inlined, twice
    in the fusion pass; the kernel took 25 s to compile, 15 s now (AlexNet-FCN's first
    run with an empty cache 65 -> 45 s with Winograd's kernel split the same way). It
    keeps what a parallel loop's body gets from numba: error_model="numpy", without which
    every division checks for zero and the SiLU over a job's outputs ran 5x slower."""
    n, rows_in, cols_in, cg = xp.shape
    o_pad = -(-og // lanes) * lanes
    k = wp.size // o_pad
    block = block_vectors * lanes
    blocks = -(-o_pad // block)
    run, segments_per_row, rows_per_chunk = _chunking(kh, kw, cg, dw, chunk)
    plane = ho * wo
    pixels = n * plane
    jobs = -(-pixels // job_pixels) * parts
    per_part = -(-(o_pad // lanes) // parts)  # vectors of output channels a part
    block_pixels = padded_tile_rows(job_pixels)  # sums rows a block: the last tile's clamped pixels land in the slack
    flat_x = xp.reshape(-1)
    # the last chunk's tiles write the outputs themselves (`vector_tile.gathered_tile`'s
    # `direct`); where that chunk is the only one, no sums are needed (`outer_writes_directly`)
    direct = channels_last and out_channels == og and og % lanes == 0
    residual = 1 if flat_res.size > 0 else 0
    one_chunk = _one_chunk(kh, kw, cg, dw, chunk)
    relu = 1 if activation == RELU else 0
    sums = np.empty(0 if direct and one_chunk else blocks * block_pixels * block, np.float32)
    patch = np.empty(job_pixels, np.int64)
    while True:
        job = next_job(queue)
        if job >= jobs:
            break
        q0 = (job // parts) * job_pixels
        count = min(job_pixels, pixels - q0)
        o_lo = (job % parts) * per_part * lanes
        o_hi = min(o_pad, o_lo + per_part * lanes)
        _patch_starts(q0, count, ho, wo, rows_in, cols_in, cg, sh, sw, patch)
        for i in range(0, kh, rows_per_chunk):
            segments = min(rows_per_chunk, kh - i)  # tap rows i, i + 1, ... in one tile call
            for j in range(segments_per_row):
                tap = (i * kw + j) * cg  # the segment's first tap in the packed order
                for k0 in range(0, run, chunk):
                    shift = (i * dh * cols_in + j * dw) * cg + k0  # from a patch's start in xp
                    span = (shift, dh * cols_in * cg, segments, kw * cg, min(chunk, run - k0))
                    first_chunk = i == 0 and j == 0 and k0 == 0  # stores its products: no zeroing
                    last_chunk = i + rows_per_chunk >= kh and j == segments_per_row - 1 and k0 + chunk >= run
                    c0 = o_lo
                    while c0 < o_hi:  # the part's channels, a piece of one packed block at a time
                        blk = c0 // block
                        within = c0 - blk * block
                        bw = min(block, o_pad - blk * block)  # the block's (K x bw) panel
                        vectors = min(bw - within, o_hi - c0) // lanes
                        panel = k * blk * block + (tap + k0) * bw + within  # the chunk's weights in it
                        piece_sums = sums[within:]
                        for p0 in range(0, count, outer_rows(lanes, vectors)):
                            outputs = (1 if direct and last_chunk else 0, (q0 + p0) * out_channels + c0,
                                       out_channels, c0, relu, residual)
                            gathered_tile(lanes, vectors, first_chunk, flat_x, patch, p0, count - 1, span, wp,
                                          panel, bw, piece_sums, blk * block_pixels + p0, block, outputs,
                                          flat_out, bias, flat_res)
                        c0 += vectors * lanes
        if direct:
            _activate_job(flat_out, q0, count, o_lo, min(og, o_hi), 0, out_channels, activation)
        else:
            store_outer_job(sums, block, block_pixels, q0, count, o_lo, min(og, o_hi), plane,
                             bias, activation, o_offset, flat_res, flat_out, out_channels, channels_last)


@njit(cache=True, inline="always")
def _activate_job(flat_out, q0, count, o_lo, o_hi, o_offset, out_channels, activation):
    """A smooth activation over the group's channels o_lo..o_hi (from o_offset on) of a
    job's pixels, just written into a channels-last output: one run when they are every
    channel of those pixels, else each pixel's run (runs of a few dozen values spent much
    of their time in the loop's scalar remainder: EfficientNet's stem, 32 channels, ran
    1.15x slower per pixel than as one run)."""
    if o_hi - o_lo == out_channels:
        activate_run(flat_out, q0 * out_channels, count * out_channels, activation)
    else:
        for q in range(count):
            activate_run(flat_out, (q0 + q) * out_channels + o_offset + o_lo, o_hi - o_lo, activation)


@njit(cache=True, inline="always")
def _chunking(kh, kw, cg, dw, chunk):
    """How `_outer_group` walks a pixel's taps: (contiguous taps per segment, segments
    per tap row, tap rows a chunk takes at once). Where a row's run is short (3 channels
    x 7 taps) a chunk takes several rows, as evenly as `chunk` allows (11 rows of 33
    taps: 4 + 4 + 3)."""
    run = kw * cg if dw == 1 else cg
    segments_per_row = 1 if dw == 1 else kw
    rows_per_chunk = 1 if run >= chunk else -(-kh // -(-kh // (chunk // run)))
    return run, segments_per_row, rows_per_chunk


@njit(cache=True, inline="always")
def _one_chunk(kh, kw, cg, dw, chunk):
    """Whether every tap of a pixel goes in one tile call."""
    run, segments_per_row, rows_per_chunk = _chunking(kh, kw, cg, dw, chunk)
    return segments_per_row == 1 and rows_per_chunk >= kh and run <= chunk


@njit(cache=True, inline="always")
def _patch_starts(q0, count, ho, wo, rows_in, cols_in, cg, sh, sw, patch):
    """patch[q] = where the patch of output pixel q0 + q (counted over the batch) starts in
    the flat channels-last input, for q < count: one division for the job, not per pixel."""
    b, oy, ox = q0 // (ho * wo), (q0 % (ho * wo)) // wo, q0 % wo
    for q in range(count):
        patch[q] = ((b * rows_in + oy * sh) * cols_in + ox * sw) * cg
        ox += 1
        if ox == wo:
            ox, oy = 0, oy + 1
            if oy == ho:
                oy, b = 0, b + 1


@njit(cache=True, inline="always")
def store_outer_job(sums, block, block_pixels, q0, count, o_lo, o_hi, plane, bias, activation, o_offset,
                     flat_res, flat_out, out_channels, channels_last):
    """Output channels o_lo..o_hi of a job's `count` pixels from its sums (`block` channels
    a block), with the bias, the residual input and the activation."""
    residual = flat_res.size > 0
    if channels_last:  # each pixel's channels are one run of the output
        relu_only = RELU if activation == RELU else NONE
        for q in range(count):
            dst = (q0 + q) * out_channels + o_offset
            lo = o_lo
            while lo < o_hi:  # the channels of one block's sums at a time
                blk = lo // block
                hi = min(o_hi, (blk + 1) * block)
                store_channels(sums, (blk * block_pixels + q) * block + lo - blk * block, bias, o_offset + lo,
                               flat_res, flat_out, dst + lo, hi - lo, residual, relu_only)
                lo = hi
        _activate_job(flat_out, q0, count, o_lo, o_hi, o_offset, out_channels, activation)
        return
    q = 0
    while q < count:  # one image's pixels at a time
        b = (q0 + q) // plane
        end = min(count, (b + 1) * plane - q0)
        for o in range(o_lo, o_hi):
            channel = o_offset + o
            bo = bias[channel]
            at = ((o // block) * block_pixels + q) * block + o % block
            dst = (b * out_channels + channel) * plane + q0 + q - b * plane
            for m in range(end - q):  # strided reads: see `_store_run` on why not it
                v = sums[unsigned(at + m * block)] + bo
                if residual:
                    v += flat_res[unsigned(dst + m)]
                flat_out[unsigned(dst + m)] = max(v, np.float32(0.0)) if activation == RELU else v
            activate_run(flat_out, dst, end - q, activation)
        q = end


def _bind_outer(wp, og, bias, kh, kw, geometry, activation, inputs, out) -> Callable[[], None]:
    """`_outer_group` on a padded channels-last copy of the input made per call, or on the
    input itself where it is stored channels-last, unpadded and ungrouped; a grouped
    conv's groups through `_outer_groups`."""
    x = _input(inputs)
    sh, sw, ph, pw, dh, dw = geometry
    n, c, height, width = x.shape
    groups = wp.shape[0]
    stored = nhwc(x)
    flat_out, flat_res, out_channels_last = stored_memory(out), _residual(inputs, out), nhwc(out) is not None
    arguments = _outer_arguments(wp[0], og, bias, activation, kh, kw, (sh, sw, dh, dw), 0, out.shape, flat_out,
                                 flat_res, out_channels_last)  # every group's but its weights and channels
    lanes = arguments[-2]  # the kernels compiled for these tiles
    if stored is not None and ph == pw == 0 and groups == 1:
        return partial(OUTER_GROUP[lanes], stored, *arguments)
    padded_shape = (groups * n, height + 2 * ph, width + 2 * pw, c // groups)
    if groups == 1:
        return partial(_outer_on_padded_copy, OUTER_GROUP[lanes], x, padded_shape, ph, pw, arguments)
    return partial(_outer_groups_on_padded_copies, OUTER_GROUPS[lanes], x, padded_shape, ph, pw, wp, arguments[1:])


def _outer_on_padded_copy(kernel, x, padded_shape, ph, pw, arguments) -> None:
    """The input copied into a padded channels-last buffer, then `_outer_group` (`kernel`)."""
    xp = np.empty(padded_shape, np.float32)
    padded_copy(x, 0, ph, pw, xp)
    kernel(xp, *arguments)


def _outer_groups_on_padded_copies(kernel, x, padded_shape, ph, pw, wp, arguments) -> None:
    """Every group's padded channels-last copy made in one parallel loop, then
    `_outer_groups`: two parallel loops for the layer, where a loop per group each cost
    RegNetX-400MF's 25-group 3x3 layers at 7x7 most of their time (0.21-0.23 ms a layer
    at 26 GFLOP/s, 2 cores)."""
    groups = wp.shape[0]
    xp = np.empty(padded_shape, np.float32)
    padded_copy(x, 0, ph, pw, xp)
    kernel(xp.reshape(groups, padded_shape[0] // groups, *padded_shape[1:]), wp, *arguments)


def _outer_arguments(wp, og, bias, activation, kh, kw, steps, o_offset, out_shape, flat_out, flat_res,
                     channels_last) -> tuple:
    """`_outer_group`'s arguments after the input, for every output pixel of one group
    (steps: the strides and dilations), its jobs (`outer_jobs`) shared between numba's
    threads as they are now."""
    n, out_channels, ho, wo = out_shape
    threads = get_num_threads()
    job_pixels, parts = outer_jobs(n, ho, wo, og, threads, 4 * wp.size)
    return (wp, og, bias, activation, kh, kw, *steps, o_offset, ho, wo, OUTER_CHUNK, job_pixels, parts, flat_out,
            flat_res, out_channels, channels_last, threads, vector_tile.OUTER_LANES, vector_tile.OUTER_VECTORS)


def _even_job_pixels(pixels: int, threads: int) -> int:
    """The job size, whole tiles of 4 pixels from OUTER_POSITIONS to WHOLE_MAP_POSITIONS,
    that leaves the busiest thread the fewest pixels when `threads` take equal jobs (and
    the remainder, last) as they come free; of equals, the one nearest OUTER_JOB_TARGET.
    ResNet-50's 28x28 maps: 4 jobs of 196 pixels, 392 a thread, where jobs of 3 rows
    (84) left one thread 420 and the other 364."""
    return _most_even_job_pixels(pixels, threads, OUTER_POSITIONS, WHOLE_MAP_POSITIONS, OUTER_JOB_TARGET)


@lru_cache(maxsize=1024)
def _most_even_job_pixels(pixels: int, threads: int, smallest: int, largest: int, target: int) -> int:
    """`_even_job_pixels`, remembered: a layer bound per call (one reading the caller's
    input) asks it on every run, and trying 49 sizes costs tens of microseconds."""
    return min(range(smallest, largest + 1, 4),
               key=lambda size: (_busiest_thread_pixels(pixels, size, threads), abs(size - target)))


def _busiest_thread_pixels(pixels: int, size: int, threads: int) -> int:
    """Pixels the busiest of `threads` computes when they take jobs of `size` (the last
    one the remainder) in order, each the next as it comes free, at equal speed."""
    jobs = -(-pixels // size)
    rounds, extra = divmod(jobs - 1, threads)  # the full jobs before the last: some threads get one more
    return max(rounds * size + pixels - (jobs - 1) * size, (rounds + 1) * size if extra else 0)


def outer_writes_directly(params: dict, in_channels: int, out_channels_last: bool) -> bool:
    """Whether `_outer_group` writes this layer's outputs straight from its tiles in a
    single k chunk, so that it keeps no sums: a channels-last output of one group in whole
    vectors of channels, and every tap of a pixel in one chunk (its
    `rows_per_chunk` and `run` logic). `graphconv.memory` counts no sums for it then:
    they are never touched, and AlexNet's resident memory at 320x288 fell from 4.7 to
    3.1 MB with them, under half the estimate that still counted them."""
    groups, og = params["groups"], params["out_channels"]
    kh, kw = pair(params["kernel_size"])
    one_chunk = _one_chunk.py_func(kh, kw, in_channels // groups, pair(params["dilation"])[1], OUTER_CHUNK)
    return out_channels_last and groups == 1 and og % vector_tile.OUTER_LANES == 0 and one_chunk


def outer_job_floats(out_channels: int, job_pixels: int) -> int:
    """Floats of `_outer_group`'s scratch per thread for a job of `job_pixels` output
    pixels (`graphconv.memory` counts them): its sums, whole blocks of channels by whole
    tiles of pixels, and its pixels' patch offsets (int64, two floats' worth each)."""
    block = vector_tile.OUTER_VECTORS * vector_tile.OUTER_LANES
    blocks = -(-vector_tile.padded_channels(out_channels) // block)
    return blocks * block * vector_tile.padded_tile_rows(job_pixels) + 2 * job_pixels


def _whole_images_a_job(n: int, plane: int, threads: int) -> int:
    """Images per job for maps of WHOLE_MAP_POSITIONS pixels or fewer: the most that keep a
    job within that many pixels and leave the busiest thread at most BATCH_JOB_SLACK over
    an even share of the images, so that a batch of small maps is not one job per image,
    each reading every weight (ResNet-50's layer4 at batch 16: its 1x1 and 3x3 layers'
    weights read 16 times a run, now 4). One image where no such count exists: each image
    is then split between the threads (`outer_jobs`)."""
    most = max(1, WHOLE_MAP_POSITIONS // plane)
    for jobs in range(1, n):
        images = -(-n // jobs)  # the fewest jobs first, each count as evenly as it goes
        if images <= most and _busiest_thread_images(n, images, threads) <= BATCH_JOB_SLACK * n / threads:
            return images
    return 1


def _busiest_thread_images(n: int, images: int, threads: int) -> int:
    """Images the busiest of `threads` gets when they take jobs of `images` images (the
    last one the rest) in order, each the next as it comes free."""
    loads = [0] * threads
    for first in range(0, n, images):
        loads[loads.index(min(loads))] += min(images, n - first)
    return max(loads)


def outer_jobs(n: int, ho: int, wo: int, out_channels: int, threads: int, weight_bytes: int = 0) -> tuple[int, int]:
    """(pixels per job, channel parts per job) for `_outer_group` on an n x ho x wo output.
    A map of WHOLE_MAP_POSITIONS pixels or fewer is one job per image, so each thread
    reads the layer's weights once instead of once per job; larger ones are cut into
    jobs of whole tiles of 4 pixels, OUTER_POSITIONS or more, that share out between the
    threads as evenly as any such size (`_even_job_pixels`). Too few jobs to share out
    evenly (3 on 2 threads) are each split into `threads` parts by vectors of output
    channels, or, for one image, its pixels into `threads` jobs, whichever leaves the
    busiest thread less work: EfficientNet-B0's 192 channels at 7x7 split 96 + 96 (blocks
    of 64 split 128 + 64, the pixels 28 + 21), its 80 channels at 14x14 by pixels, 100 + 96
    (5 vectors of 16 split 3 + 2). Split by vectors rather than blocks: 1152 -> 320 at 7x7
    99 -> 88 us, 960 -> 160 and 160 -> 960 0.95x, 17 other layers of those networks'
    last stages level (2 threads, AMD EPYC, per-layer profiles, alternating processes).
    That work counts, where the packed weights (`weight_bytes`) are more than L2 holds,
    the weights each job reads: all of them for a share of the pixels, its share for a
    part (`cache_size.WEIGHT_BYTE_COST`). ResNet-50's fc at 448, 2048 -> 1000 channels on
    8x8 pixels (8 MB of weights), took 1.9 ms split by pixels (onnxruntime 1.0)."""
    plane = ho * wo
    job_pixels = _whole_images_a_job(n, plane, threads) * plane if plane <= WHOLE_MAP_POSITIONS \
        else _even_job_pixels(n * plane, threads)
    jobs = -(-n * plane // job_pixels)
    if jobs >= 4 * threads or jobs % threads == 0:
        return job_pixels, 1
    lanes = vector_tile.OUTER_LANES
    vectors = -(-out_channels // lanes)
    parts = min(vectors, threads)
    busiest_part = min(out_channels, -(-vectors // parts) * lanes) / out_channels
    even_pixels = -(-(-(-plane // threads)) // 4) * 4  # whole tiles of 4 pixels
    # reading the weights, in pixels' worth of multiply-adds (a pixel takes k x out_channels;
    # the weights are 4 k x o_pad bytes)
    reading = 4 * WEIGHT_BYTE_COST * vector_tile.padded_channels(out_channels) / out_channels \
        if weight_bytes > l2_bytes() else 0.0
    if n == 1 and even_pixels + reading < (plane + reading) * busiest_part:
        return even_pixels, 1
    return job_pixels, parts


# `outer`'s kernels, compiled per register-tile width (`graphconv.ops.specialise`): the
# per-thread body with that width's tiles, the parallel loops with that width's body.
_OUTER_THREAD = per_lane_width(_outer_thread, dict(cache=True, boundscheck=False, fastmath=CONTRACT,
                                                   error_model="numpy"), gathered_tile=GATHERED_TILES)
OUTER_GROUP = per_lane_width(_outer_group, dict(cache=True, parallel=True, boundscheck=False),
                             _outer_thread=_OUTER_THREAD)
OUTER_GROUPS = per_lane_width(_outer_groups, dict(cache=True, parallel=True, boundscheck=False),
                              _outer_thread=_OUTER_THREAD)
CONV_STREAM = per_lane_width(_conv_stream, dict(cache=True), stream_matmul=STREAM_MATMUL,  # "stream", per width
                             STREAM_TILE_LANES={8: 8, 16: 16})
