"""The inverted_residual op's CPU kernel: "fused rows" and "layers" against the numpy
reference (the three convs' references one after another) over the geometries, channel
counts and storages a network gives it."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from graphconv.ops import get_op
from graphconv.ops.inverted_residual import cpu
from graphconv.ops.layout import is_channels_last
from graphconv.params import normalize_params

OP = get_op("inverted_residual")
ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish")


def channels_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


STORAGES = ("nchw", "channels-last", "channels-last-in")  # what is stored channels-last: nothing, all, the inputs


def run(params, weights, inputs, strategy, stored):
    """The kernel's output on `inputs` (stored as `stored` says, one of STORAGES), NCHW."""
    shape = OP.shape(params, [x.shape[1:] for x in inputs])
    out = np.full((inputs[0].shape[0], *shape), np.nan, np.float32)
    if stored == "channels-last":
        inputs, out = [channels_last(x) for x in inputs], channels_last(out)
    elif stored == "channels-last-in":  # an added second input is stored as the output
        inputs = [channels_last(inputs[0])] + inputs[1:]
    cpu.run_inverted_residual(params, cpu.prepare_inverted_residual(params, weights), inputs, out, strategy)
    return np.ascontiguousarray(out)


def assert_matches_reference(params, weights, inputs, strategy, stored):
    want = OP.reference(params, weights, inputs)
    got = run(params, weights, inputs, strategy, stored)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(in_channels=st.integers(1, 20), hidden=st.sampled_from([3, 8, 16, 24, 40, 64, 96]),
       out_channels=st.integers(1, 20), kernel=st.sampled_from([(3, 3), (5, 5), (7, 7), (3, 5), (1, 3)]),
       stride=st.sampled_from([(1, 1), (2, 2), (1, 2)]), padding=st.sampled_from([(0, 0), (1, 1), (2, 1), (3, 3)]),
       dilation=st.sampled_from([(1, 1), (2, 2), (1, 2)]), size=st.tuples(st.integers(7, 17), st.integers(7, 17)),
       batch=st.integers(1, 3), activations=st.tuples(*[st.sampled_from(ACTIVATIONS)] * 3),
       added=st.sampled_from(["none", "input", "second"]), stored=st.sampled_from(STORAGES),
       step_pixels=st.sampled_from([1, 10, 96]), threads=st.sampled_from([1, 2]))
def test_fused_rows_match_the_reference(in_channels, hidden, out_channels, kernel, stride, padding, dilation, size,
                                        batch, activations, added, stored, step_pixels, threads, monkeypatch):
    """Every geometry the depthwise conv may have (strides, dilations, padding past the
    taps' reach), channels that are and are not whole vectors, steps of one row to many
    (so a band's steps reuse expanded rows, wrapping around the buffer), bands split
    between threads, and the input added or a second one."""
    from numba import get_num_threads, set_num_threads
    rng = np.random.default_rng(0)
    (kh, kw), (dh, dw) = kernel, dilation
    if any(extent > side + 2 * pad for extent, side, pad in
           zip(((kh - 1) * dh + 1, (kw - 1) * dw + 1), size, padding)):
        return  # the window does not fit
    params = normalize_params(OP, dict(
        out_channels=out_channels, hidden_channels=hidden, kernel_size=list(kernel), stride=list(stride),
        padding=list(padding), dilation=list(dilation), expand_activation=activations[0],
        depthwise_activation=activations[1], activation=activations[2], add_input=added == "input"))
    x = rng.standard_normal((batch, in_channels, *size)).astype(np.float32)
    if added == "input":
        params = dict(params, out_channels=in_channels)
    shape = OP.shape(dict(params, add_input=False), [x.shape[1:]])
    if added == "input" and shape != x.shape[1:]:
        return  # a strided block cannot add its input
    weights = OP.seeded_weights(params, [x.shape[1:]], rng)
    inputs = [x] + ([rng.standard_normal((batch, *shape)).astype(np.float32)] if added == "second" else [])
    monkeypatch.setattr(cpu, "STEP_PIXELS", step_pixels)
    before = get_num_threads()
    set_num_threads(threads)
    try:
        assert_matches_reference(params, weights, inputs, "fused rows", stored)
    finally:
        set_num_threads(before)


@pytest.mark.parametrize("strategy", cpu.STRATEGIES)
@pytest.mark.parametrize("stored", STORAGES)
@pytest.mark.parametrize("hidden,out_channels", [(600, 24), (144, 24), (96, 32), (40, 7)],
                         ids=["two-chunks", "mobilenet", "whole-vectors", "few"])
def test_both_strategies_match_the_reference(strategy, stored, hidden, out_channels):
    """Expanded channels past one GEMM chunk (`cpu.CHUNK`, the project conv's sums
    added up over chunks), outputs that fill whole vectors (the tiles write them) and
    that do not (through the sums); MobileNetV2's block with its residual."""
    rng = np.random.default_rng(1)
    params = normalize_params(OP, dict(out_channels=out_channels, hidden_channels=hidden, kernel_size=3, padding=1,
                                       expand_activation="relu6", depthwise_activation="relu6",
                                       add_input=out_channels == 24))
    in_channels = 24 if out_channels == 24 else 5
    weights = OP.seeded_weights(params, [(in_channels, 12, 10)], rng)
    x = rng.standard_normal((2, in_channels, 12, 10)).astype(np.float32)
    assert_matches_reference(params, weights, [x], strategy, stored)


def test_fused_rows_run_on_large_channels_last_maps_only():
    """"fused rows" where the expanded map per image is FUSED_MIN_HIDDEN_BYTES or more and
    the values around the block are stored channels-last; the three layers otherwise."""
    params = normalize_params(OP, dict(out_channels=24, hidden_channels=144, kernel_size=3, padding=1))
    assert cpu.describe_inverted_residual(params, (1, 24, 56, 56), channels_last=True) == "fused rows"
    assert cpu.describe_inverted_residual(params, (1, 24, 56, 56)) == "layers"
    assert cpu.describe_inverted_residual(params, (8, 24, 7, 7), channels_last=True) == "layers"


def test_an_nchw_input_runs_as_layers_and_an_nchw_output_fused(rng, monkeypatch):
    """A block reading the network's input (stored NCHW) runs its three convs, even on a
    map that would run fused; one writing the network's output (NCHW) runs fused."""
    params = normalize_params(OP, dict(out_channels=8, hidden_channels=64, kernel_size=3, padding=1))
    weights = OP.seeded_weights(params, [(8, 70, 70)], rng)
    x = rng.standard_normal((1, 8, 70, 70)).astype(np.float32)
    bound = cpu.bind_inverted_residual(params, cpu.prepare_inverted_residual(params, weights))
    assert cpu.describe_inverted_residual(params, x.shape, channels_last=True) == "fused rows"
    fused_call = cpu._BoundBlock._fused_call
    ran_fused = []
    monkeypatch.setattr(cpu._BoundBlock, "_fused_call", lambda *args: ran_fused.append(1) or fused_call(*args))
    for stored_x, fused in ((x, False), (channels_last(x), True)):
        ran_fused.clear()
        out = np.empty((1, 8, 70, 70), np.float32)
        bound([stored_x], out)
        assert bool(ran_fused) == fused and not is_channels_last(out)
        np.testing.assert_allclose(out, OP.reference(params, weights, [x]), rtol=1e-4, atol=1e-4)
