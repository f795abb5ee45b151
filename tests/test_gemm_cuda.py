"""The CUDA implicit GEMM (graphconv/ops/gemm_cuda.py): every tile shape and K split
against the numpy conv reference, and the launch planner's arithmetic.

The kernels run on numba's simulator here (conftest), every CUDA thread in Python, so
the layers are small; `GRAPHCONV_TEST_GPU=1` runs the same cases on a GPU. The planner
is forced to each tile by replacing `plan_launch` where `GemmLayer` looks it up."""
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graphconv.backends import get_backend
from graphconv.ops import gemm_cuda, get_op
from graphconv.ops.gemm_cuda import BK, SMALLEST_SPLIT, TILES, Tile, launch_for, plan_launch
from graphconv.params import normalize_params
from conftest import random_input

CUDA = get_backend("cuda")
needs_cuda = pytest.mark.skipif(CUDA.status() is not None, reason=f"CUDA unusable: {CUDA.status()}")

# (conv params, input shape (N, C, H, W), residual): edges in every dimension of the
# product: rows and positions not multiples of any tile, K not a multiple of BK, padding,
# stride, dilation, groups, two images.
LAYERS = {
    "padded-strided": (dict(out_channels=5, kernel_size=3, stride=2, padding=1, activation="relu"),
                       (2, 3, 7, 6), False),
    "grouped-dilated-residual": (dict(out_channels=6, kernel_size=[2, 3], dilation=[2, 1], groups=2,
                                      padding=[1, 0], activation="relu"), (1, 4, 6, 7), True),
    "many-channels": (dict(out_channels=140, kernel_size=1), (2, 20, 3, 3), True),
    # 8 channels a group: every k-step within one tap, the gather's `one_tap` kernel.
    "whole-steps": (dict(out_channels=6, kernel_size=3, stride=[1, 2], padding=1, dilation=[2, 1], groups=2,
                         activation="relu"), (1, 16, 5, 4), True),
    # 128 output channels: rows in whole tiles (but for 256x4), the loads' `whole_rows` kernel.
    "whole-tiles": (dict(out_channels=128, kernel_size=3, padding=1), (1, 8, 4, 5), False),
    # ... with 3 channels: whole rows with the per-value gather (a network's first conv).
    "whole-tiles-3-channels": (dict(out_channels=128, kernel_size=3, padding=1), (1, 3, 4, 5), False),
}


def conv_case(name: str, rng):
    raw, in_shape, residual = LAYERS[name]
    opdef = get_op("conv")
    params = normalize_params(opdef, raw)
    weights = opdef.seeded_weights(params, [in_shape[1:]], rng)
    out_shape = (in_shape[0], *opdef.shape(params, [in_shape[1:]]))
    inputs = [random_input(rng, in_shape)] + ([random_input(rng, out_shape)] if residual else [])
    return opdef, params, weights, inputs, out_shape


def run_with(monkeypatch, tile: Tile, splits: int, opdef, params, weights, inputs, out_shape, narrow=None):
    """The layer's output on the CUDA backend with the planner's choice replaced (and
    the offsets' width, where `narrow` is given)."""
    monkeypatch.setattr(gemm_cuda, "plan_launch",
                        lambda rows, positions, k_total, groups, processors:
                        launch_for(tile, splits, rows, positions, k_total, groups))
    layer = CUDA.bind(opdef, params, CUDA.prepare_weights(opdef, params, weights))
    layer.narrow = narrow
    out = CUDA.to_device(np.full(out_shape, np.nan, np.float32))
    layer([CUDA.to_device(x) for x in inputs], out)
    return CUDA.to_host(out)


@needs_cuda
@pytest.mark.parametrize("layer", ["padded-strided", "whole-steps", "whole-tiles", "whole-tiles-3-channels"])
@pytest.mark.parametrize("tile", TILES + (replace(TILES[0], max_registers=None),),
                         ids=lambda t: f"{t.rows}x{t.cols}" + (f"-r{t.max_registers}" if t.max_registers else ""))
def test_every_tile_matches_the_reference(tile, layer, monkeypatch, rng):
    """Each of the kernel's variants: a tap-table lookup per value (3 channels), per
    k-step, and per k-step with rows in whole tiles."""
    opdef, params, weights, inputs, out_shape = conv_case(layer, rng)
    got = run_with(monkeypatch, tile, 1, opdef, params, weights, inputs, out_shape)
    np.testing.assert_allclose(got, opdef.reference(params, weights, inputs), rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("layer", ["grouped-dilated-residual", "whole-steps"])
@pytest.mark.parametrize("splits", [1, 2, 3])
def test_k_splits_add_up_with_the_epilogue(splits, layer, monkeypatch, rng):
    """Partial sums over K chunks (the last one short) are added with bias, residual and
    ReLU by the reduction pass, on grouped, dilated, padded layers."""
    opdef, params, weights, inputs, out_shape = conv_case(layer, rng)
    got = run_with(monkeypatch, Tile(64, 64, 4, 4), splits, opdef, params, weights, inputs, out_shape)
    np.testing.assert_allclose(got, opdef.reference(params, weights, inputs), rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("tile", [Tile(64, 64, 4, 4), Tile(128, 16, 4, 4)], ids=lambda t: f"{t.rows}x{t.cols}")
def test_blocks_past_the_first_row_and_column(tile, monkeypatch, rng):
    """140 output channels (the last row block part full), 18 positions (two column
    blocks of 16) and K = 20 in two splits: every block offset of the grid."""
    opdef, params, weights, inputs, out_shape = conv_case("many-channels", rng)
    got = run_with(monkeypatch, tile, 2, opdef, params, weights, inputs, out_shape)
    np.testing.assert_allclose(got, opdef.reference(params, weights, inputs), rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("narrow", [True, False], ids=["32-bit", "64-bit"])
@pytest.mark.parametrize("layer", ["padded-strided", "whole-steps", "whole-tiles"])
def test_offsets_in_32_or_64_bits_give_the_same_layer(layer, narrow, monkeypatch, rng):
    """The offsets into the input and weights in either width, with either gather (the
    default picks 32 bits with the per-step one), windows hanging into the padding; a
    tile whose threads load two values of each a step."""
    opdef, params, weights, inputs, out_shape = conv_case(layer, rng)
    got = run_with(monkeypatch, Tile(64, 64, 4, 4), 1, opdef, params, weights, inputs, out_shape, narrow)
    np.testing.assert_allclose(got, opdef.reference(params, weights, inputs), rtol=1e-4, atol=1e-5)


@needs_cuda
def test_offsets_are_32_bit_only_where_the_arrays_are_under_2_to_the_31(rng):
    opdef, params, weights, _, _ = conv_case("whole-steps", rng)
    layer = CUDA.bind(opdef, params, CUDA.prepare_weights(opdef, params, weights))
    assert layer._narrow(2 ** 31 - 1) and not layer._narrow(2 ** 31)
    layer.narrow = True
    assert not layer._narrow(2 ** 31)


@needs_cuda
def test_a_bound_layer_plans_each_input_size(rng, monkeypatch):
    """The bound layer keeps one launch per input size, the most recent LAUNCHES_KEPT of
    them (each holds device memory), and gets each size right."""
    monkeypatch.setattr(gemm_cuda, "LAUNCHES_KEPT", 2)
    opdef, params, weights, _, _ = conv_case("padded-strided", rng)
    layer = CUDA.bind(opdef, params, CUDA.prepare_weights(opdef, params, weights))
    for in_shape in [(1, 3, 7, 6), (1, 3, 9, 5), (1, 3, 7, 6), (1, 3, 5, 5), (1, 3, 9, 5)]:
        x = random_input(rng, in_shape)
        out = CUDA.to_device(np.zeros((1, *opdef.shape(params, [in_shape[1:]])), np.float32))
        layer([CUDA.to_device(x)], out)
        np.testing.assert_allclose(CUDA.to_host(out), opdef.reference(params, weights, [x]), rtol=1e-4, atol=1e-5)
    assert [key[0] for key in layer._launches] == [(1, 3, 5, 5), (1, 3, 9, 5)]


@pytest.mark.parametrize("group_channels, kernel, one_tap", [
    (16, (3, 3), True), (512, (7, 7), True), (8, (1, 1), True), (3, (3, 3), False), (12, (3, 3), False),
    (20, (1, 1), False)])
def test_a_step_stays_within_one_tap_where_the_channels_are_whole_steps(group_channels, kernel, one_tap):
    """What picks the per-step gather: the tap table's k order puts a tap's channels
    side by side, so where each tap has whole steps of them every step's BK taps agree
    and K is whole steps."""
    assert gemm_cuda.one_tap_steps(group_channels) is one_tap
    taps = gemm_cuda.window_taps(group_channels, kernel, (1, 1), 9, 9).reshape(-1, 3)
    if one_tap:
        steps = taps[:, 1:].reshape(-1, BK, 2)
        assert (steps == steps[:, :1]).all()
    elif kernel != (1, 1):
        steps = taps[:len(taps) - len(taps) % BK, 1:].reshape(-1, BK, 2)
        assert not (steps == steps[:, :1]).all()


def test_the_tap_table_widens_to_int64_where_an_offset_needs_it():
    """A group of 64 planes of 8192x8192 holds 2^32 values: int32 offsets wrapped."""
    assert gemm_cuda.window_taps(8, (3, 3), (1, 1), 100, 100).dtype == np.int32
    wide = gemm_cuda.window_taps(64, (1, 1), (1, 1), 8192, 8192).reshape(-1, 3)
    assert wide.dtype == np.int64 and wide[-1, 0] == 63 * 8192 * 8192


def test_every_tile_is_one_the_kernel_is_written_for():
    for tile in TILES:
        tile.check()
    with pytest.raises(ValueError):
        Tile(64, 64, 3, 4).check()


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 5000), positions=st.integers(1, 20000), k_total=st.integers(1, 30000),
       groups=st.sampled_from([1, 2, 32]), processors=st.sampled_from([1, 16, 132]))
def test_the_plan_covers_the_whole_product(rows, positions, k_total, groups, processors):
    launch = plan_launch(rows, positions, k_total, groups, processors)
    assert launch.tile in TILES
    assert launch.grid[0] * launch.tile.cols >= positions > (launch.grid[0] - 1) * launch.tile.cols
    assert launch.grid[1] * launch.tile.rows >= rows > (launch.grid[1] - 1) * launch.tile.rows
    assert launch.grid[2] == groups * launch.splits
    assert launch.k_chunk % BK == 0
    assert (launch.splits - 1) * launch.k_chunk < k_total <= launch.splits * launch.k_chunk
    assert launch.splits == 1 or math.ceil(k_total / launch.splits) >= SMALLEST_SPLIT // 2


def test_the_plan_tiles_big_convs_and_splits_fc_layers():
    """VGG-16's conv3_1 at 1024 fills the GPU many times over with a large tile (128
    positions wide), unsplit; fc6 of a classifier (one position, K = 25088) is split
    along K to give the SMs work."""
    big = plan_launch(256, 256 * 256, 128 * 9, 1, 132)
    assert big.tile.cols == 128 and big.tile.threads == 256 and big.splits == 1
    fc6 = plan_launch(4096, 1, 25088, 1, 132)
    assert fc6.tile.cols <= 4 and fc6.splits > 1
