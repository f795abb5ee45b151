"""Every op's CPU kernel against its numpy reference: every registered op on each of
its examples, then the ops whose kernels have several paths over many more parameter
combinations. Kernels write into an output the harness allocates from the op's shape
rule, as the runtime's plan does, filled with NaN so that an element a kernel forgets
to write shows.

The references themselves are checked against each op's PyTorch equivalent (here for
the cases below, in test_torch_bridge.py for every example), so the chain
kernel == reference == torch holds op by op."""
import contextlib
from dataclasses import replace
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from graphconv.backends import get_backend
from graphconv.errors import GraphconvError, ShapeError
from graphconv.ops import all_ops, get_op
from graphconv.params import compact_params, normalize_params
from graphconv.ops.registry import pair
from graphconv.torch_bridge import op_forward, torch

from conftest import random_input
from graphconv.ops import vector_tile
from graphconv.ops.gemm_cpu import GROUP_ROWS
from graphconv.ops.activations import FUSED
from graphconv.ops.conv import cpu as conv_cpu, depthwise
from graphconv.ops.layout import nhwc

TILE_SHAPES = [(8, 3), (8, 4), (16, 3), (16, 4)]  # (lanes, vectors) of the conv's register tile


@contextlib.contextmanager
def tile_shape(lanes: int, vectors: int):
    """The conv kernels' tile as on a machine that picks (lanes, vectors): they read it
    when they pack weights and when they run."""
    with mock.patch.object(vector_tile, "OUTER_LANES", lanes), mock.patch.object(vector_tile, "OUTER_VECTORS", vectors):
        yield

EXAMPLES = [pytest.param(op, example, id=f"{op.name}-{i}")
            for op in all_ops() for i, example in enumerate(op.examples)]
CPU = get_backend("cpu")


STORAGES = [  # (inputs, output) stored channels-last: what a `channels_last` kernel must take
    pytest.param((False, False), id="nchw"), pytest.param((True, True), id="channels-last"),
    pytest.param((True, False), id="channels-last-in"), pytest.param((False, True), id="channels-last-out"),
]


STORAGE_CHOICES = [storage.values[0] for storage in STORAGES]


def stored_channels_last(a):
    """`a`'s values in channels-last storage, as the runtime hands such a value to kernels."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def run_kernel(opdef, params, weights, xs, storage=(False, False), **kernel_options):
    """The CPU kernel's output for inputs `xs`, written into a NaN-filled array of the
    shape the op's shape rule gives; the inputs must come out unchanged. `storage` says
    whether the inputs and the output are stored channels-last."""
    images = int(xs[0].shape[0] * Fraction(opdef.batch_scale(params)))
    shape = (images, *opdef.shape(params, [x.shape[1:] for x in xs]))
    out = np.full(shape, np.nan, np.float32)
    if storage[0]:
        xs = [stored_channels_last(x) for x in xs]
    if storage[1]:
        out = stored_channels_last(out)
    before = [x.copy() for x in xs]
    assert CPU.kernel(opdef)(params, weights, xs, out, **kernel_options) is None
    for x, original in zip(xs, before):
        np.testing.assert_array_equal(x, original, err_msg=f"{opdef.name} wrote into its input")
    return np.ascontiguousarray(out)


@pytest.mark.parametrize("opdef", all_ops(), ids=lambda op: op.name)
def test_every_op_has_examples_a_torch_equivalent_and_a_cpu_kernel(opdef):
    """What the registry-driven tests need from an op, asked for by name."""
    assert opdef.examples, f"give {opdef.name}'s OpDef a few examples (registry.Example)"
    assert opdef.torch is not None, f"give {opdef.name}'s OpDef its PyTorch equivalent (torch=)"
    assert callable(CPU.kernel(opdef))


@pytest.mark.parametrize("opdef,example", EXAMPLES)
def test_seeded_weights_fit_the_op(opdef, example, rng):
    params = normalize_params(opdef, example.params)
    weights = opdef.seeded_weights(params, example.inputs, rng)
    expected = opdef.weight_shapes(params, example.inputs) if opdef.has_weights else {}
    assert {k: w.shape for k, w in weights.items()} == {k: tuple(s) for k, s in expected.items()}
    assert all(np.isfinite(w).all() for w in weights.values())


@pytest.mark.parametrize("opdef,example", EXAMPLES)
def test_cpu_kernel_matches_reference_on_every_example(opdef, example, rng):
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (example.batch, *s)) for s in example.inputs]
    weights = opdef.seeded_weights(params, example.inputs, rng)
    want = opdef.reference(params, weights, xs)
    for kernel_weights in (weights, CPU.prepare_weights(opdef, params, weights)):  # as given, as stored
        np.testing.assert_allclose(run_kernel(opdef, params, kernel_weights, xs), want,
                                   rtol=1e-4, atol=1e-5)


PER_ELEMENT_EXAMPLES = [example for example in EXAMPLES if example.values[0].per_element]


@pytest.mark.parametrize("opdef,example", PER_ELEMENT_EXAMPLES)
def test_a_per_element_op_gives_the_same_values_however_its_input_is_shaped(opdef, example, rng):
    """What `OpDef.per_element` promises remove-flatten: the op on a flattened map (C*H*W
    channels of one cell) is the op on the map, flattened; reference and kernel alike."""
    assert opdef.arity == (1, 1) and not opdef.has_weights
    params = normalize_params(opdef, example.params)
    x = random_input(rng, (example.batch, *example.inputs[0]))
    flat = x.reshape(x.shape[0], -1, 1, 1)
    on_map = opdef.reference(params, {}, [x])
    np.testing.assert_array_equal(opdef.reference(params, {}, [flat]), on_map.reshape(flat.shape))
    np.testing.assert_allclose(run_kernel(opdef, params, {}, [flat]), on_map.reshape(flat.shape), rtol=1e-4, atol=1e-5)


def _padded_by_a_value(opdef, example) -> bool:
    """A one-input example whose padding a pad of `padding_value` stands for."""
    params = normalize_params(opdef, example.params)
    return (opdef.padding_value is not None and len(example.inputs) == 1 and any(pair(params["padding"]))
            and opdef.padding_value(params) is not None)


PADDED_EXAMPLES = [example for example in EXAMPLES if _padded_by_a_value(*example.values)]


@pytest.mark.parametrize("opdef,example", PADDED_EXAMPLES)
def test_an_op_s_padding_is_a_pad_of_its_padding_value_in_front(opdef, example, rng):
    """What `OpDef.padding_value` promises fold-pad: the layer padding p equals the layer
    unpadded on its input padded by p with that value."""
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (example.batch, *s)) for s in example.inputs]
    weights = opdef.seeded_weights(params, example.inputs, rng)
    ph, pw = pair(params["padding"])
    padded = np.pad(xs[0], ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=opdef.padding_value(params))
    unpadded = opdef.reference({**params, "padding": (0, 0)}, weights, [padded])
    np.testing.assert_allclose(unpadded, opdef.reference(params, weights, xs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opdef,example", [example for example in EXAMPLES if example.values[0].keeps_values
                                           or example.values[0].gives_probabilities])
def test_ops_said_to_keep_values_or_give_probabilities_do(opdef, example, rng):
    """`keeps_values`: the output holds the input's values, moved at most; `gives_
    probabilities`: every output is in 0..1 (what heatmaps' fixed scale relies on)."""
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (example.batch, *s)) * 5 for s in example.inputs]
    out = opdef.reference(params, opdef.seeded_weights(params, example.inputs, rng), xs)
    if opdef.keeps_values:
        np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(xs[0], axis=None))
    if opdef.gives_probabilities:
        assert out.min() >= 0 and out.max() <= 1


CHANNELS_LAST_EXAMPLES = [example for example in EXAMPLES if example.values[0].channels_last]


@pytest.mark.parametrize("storage", STORAGES[1:])
@pytest.mark.parametrize("opdef,example", CHANNELS_LAST_EXAMPLES)
def test_channels_last_kernel_matches_reference_on_every_example(opdef, example, storage, rng):
    """Every op that declares `channels_last` on values stored that way, in, out or both."""
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (example.batch, *s)) for s in example.inputs]
    weights = opdef.seeded_weights(params, example.inputs, rng)
    np.testing.assert_allclose(run_kernel(opdef, params, CPU.prepare_weights(opdef, params, weights), xs, storage),
                               opdef.reference(params, weights, xs), rtol=1e-4, atol=1e-5)


def test_an_op_named_as_another_op_s_alias_is_refused_at_registration(monkeypatch):
    """A contributor's new `hardtanh` registered fine while OP_ALIASES read the name as
    clip, and a registry test failed later with a set assertion naming no op."""
    from graphconv.ops import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(GraphconvError, match=r"op 'hardtanh' is listed in OP_ALIASES .* another name for 'clip'"):
        registry.register(replace(get_op("clip"), name="hardtanh"))
    registry.register(replace(get_op("clip"), name="clip_again"))  # a name no alias takes


def test_an_op_s_package_registers_it_again_another_package_may_not():
    """importlib.reload of an op being edited in a notebook raised "op registered twice"
    (a ValueError); another package's op of the same name must still be refused."""
    from graphconv.ops import registry

    mine = registry.register(replace(get_op("clip"), name="my_clip", package="my_ops.clip"))
    edited = registry.register(replace(mine, doc="edited"))
    assert get_op("my_clip") is edited
    with pytest.raises(GraphconvError, match="op 'my_clip' is already registered by my_ops.clip; their_ops.clip "
                                             r"registers it again \(rename one\)"):
        registry.register(replace(mine, package="their_ops.clip"))


def test_a_missing_kernel_is_a_clear_error_but_a_broken_one_is_not(tmp_path, monkeypatch):
    """No cuda.py, or no run_<op> in it: a GraphconvError naming the op, the device and
    what was looked for. An import failing inside an existing kernel module is a bug and
    stays one."""
    package = tmp_path / "graphconv_test_cpu_only"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cpu.py").write_text("import graphconv_test_no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cpu_only = replace(get_op("relu"), package="graphconv_test_cpu_only")
    with pytest.raises(GraphconvError,
                       match=r"^op 'relu' has no cuda kernel \(no module graphconv_test_cpu_only.cuda\)$"):
        get_backend("cuda").kernel(cpu_only)
    with pytest.raises(ModuleNotFoundError, match="graphconv_test_no_such_module"):
        CPU.kernel(cpu_only)
    unnamed = replace(get_op("relu"), kernel_name="no_such_kernel")
    with pytest.raises(GraphconvError, match=r"^op 'relu' has no cpu kernel \(graphconv.ops.elementwise.cpu has no "
                                             r"run_no_such_kernel\)$"):
        CPU.kernel(unnamed)
    (tmp_path / "graphconv_test_one_file.py").write_text("")  # a plugin op registered from one file
    one_file = replace(get_op("relu"), package="graphconv_test_one_file")
    with pytest.raises(GraphconvError, match=r"\(no module graphconv_test_one_file.cpu \(graphconv_test_one_file is "
                                             r"a module, not a package: kernels live in "
                                             r"graphconv_test_one_file/cpu.py\)\)"):
        CPU.kernel(one_file)


# ---- the ops whose kernels have several paths, over many more cases -------------------------

def make_weights(opdef, params, in_shapes, rng):
    """Standard-normal weights: larger than the seeded ones, so a kernel's rounding
    differences show against the tolerances."""
    if not opdef.has_weights:
        return {}
    return {k: random_input(rng, s) for k, s in opdef.weight_shapes(params, in_shapes).items()}


def check_op(name, raw_params, in_shapes, rng, batch=2, rtol=1e-4, atol=1e-4, prepared=False,
             **kernel_options):
    """The CPU kernel against the reference; `prepared` passes the weights as the Executor
    stores them (the CPU backend's `prepare_weights`) rather than as the spec gives them."""
    opdef = get_op(name)
    params = normalize_params(opdef, raw_params)
    xs = [random_input(rng, (batch, *s)) for s in in_shapes]
    weights = make_weights(opdef, params, in_shapes, rng)
    kernel_weights = CPU.prepare_weights(opdef, params, weights) if prepared else weights
    got = run_kernel(opdef, params, kernel_weights, xs, **kernel_options)
    want = opdef.reference(params, weights, xs)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return params, weights, xs, want


CONV_CASES = [
    dict(out_channels=4, kernel_size=3),
    dict(out_channels=5, kernel_size=[3, 2], stride=[2, 1], padding=[1, 0]),
    dict(out_channels=6, kernel_size=3, dilation=2, padding=2),
    dict(out_channels=6, kernel_size=[2, 3], dilation=[3, 1], stride=3),
    dict(out_channels=6, kernel_size=3, groups=3, stride=2, padding=1),
    dict(out_channels=6, kernel_size=1, groups=6),
    dict(out_channels=4, kernel_size=5, bias=False, activation="relu"),
    dict(out_channels=3, kernel_size=[9, 7]),  # kernel covering the whole input: fc-as-conv
]


def applicable_strategies(params, in_channels):
    """Every CPU conv strategy that can run this layer on `in_channels` (pointwise needs a
    plain 1x1, winograd a plain 3x3, grouped as many channels in as out, 2-16 a group)."""
    normalized = normalize_params(get_op("conv"), params)
    return [s for s in conv_cpu.STRATEGIES if conv_cpu.can_run(s, normalized, in_channels)]


@pytest.mark.parametrize("params", CONV_CASES)
@pytest.mark.parametrize("in_shape", [(6, 9, 7), (6, 11, 13)])
def test_conv_matches_reference(params, in_shape, rng):
    check_op("conv", params, [in_shape], rng)  # the strategy the shape picks
    for strategy in applicable_strategies(params, in_shape[0]):
        check_op("conv", params, [in_shape], rng, strategy=strategy)
        check_op("conv", params, [in_shape], rng, strategy=strategy, prepared=True)


@pytest.mark.parametrize("kernel, groups", [(3, 1), (1, 1), (3, 8), (3, 2)])
@pytest.mark.parametrize("storage", [(False, False), (True, True)])
def test_relu6_clamps_at_both_ends_in_every_strategy(kernel, groups, storage, rng):
    """Inputs scaled so that the conv's outputs pass 6 as well as 0: each strategy clamps
    both ends (the random examples elsewhere rarely reach 6)."""
    opdef = get_op("conv")
    params = normalize_params(opdef, dict(out_channels=8, kernel_size=kernel, padding=kernel // 2, groups=groups,
                                          activation="relu6"))
    x = random_input(rng, (2, 8, 12, 12)) * 8
    weights = make_weights(opdef, params, [(8, 12, 12)], rng)
    want = opdef.reference(params, weights, [x])
    assert (want == 6).any() and (want == 0).any() and ((want > 0) & (want < 6)).any()
    for strategy in applicable_strategies(params, 8):
        got = run_kernel(opdef, params, weights, [x], storage, strategy=strategy)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=strategy)


@pytest.mark.parametrize("params,in_shape,expected", [
    (dict(out_channels=4096, kernel_size=6), (1, 256, 11, 11), "stream"),    # fc6-as-conv: 36 positions
    (dict(out_channels=4096, kernel_size=1), (1, 4096, 6, 6), "stream"),     # fc7-as-conv
    (dict(out_channels=4096, kernel_size=1), (3, 4096, 6, 6), "pointwise"),  # 108 positions: past stream
    (dict(out_channels=4096, kernel_size=1), (1, 4096, 9, 9), "pointwise"),  # 81 positions: past stream
    (dict(out_channels=1000, kernel_size=1), (1, 4096, 6, 6), "stream"),     # fc8-as-conv, 16 MB
    (dict(out_channels=512, kernel_size=3, padding=1), (1, 512, 7, 7), "winograd"),  # ResNet layer4: 16 tiles
    (dict(out_channels=512, kernel_size=3), (1, 512, 3, 3), "stream"),  # one position: fc-like
    (dict(out_channels=512, kernel_size=3, stride=2, padding=1), (1, 512, 14, 14), "stream"),  # 9 MB at 49
    (dict(out_channels=256, kernel_size=3, stride=2, padding=1), (1, 256, 14, 14), "outer"),  # 2.4 MB
    (dict(out_channels=64, kernel_size=3, padding=1), (1, 256, 6, 6), "winograd"),
    (dict(out_channels=64, kernel_size=3, padding=1, dilation=2), (1, 256, 6, 6), "outer"),
    (dict(out_channels=8, kernel_size=3, padding=1), (1, 256, 6, 6), "outer"),  # too few outputs to transform
    (dict(out_channels=64, kernel_size=1), (1, 32, 20, 20), "pointwise"),    # a real 1x1 conv
    (dict(out_channels=64, kernel_size=1, stride=2), (1, 128, 40, 40), "outer"),
    (dict(out_channels=64, kernel_size=1, stride=2), (1, 32, 40, 40), "outer"),      # patches of 32
    (dict(out_channels=64, kernel_size=3, padding=1), (1, 64, 20, 20), "winograd"),
    (dict(out_channels=64, kernel_size=3, padding=1), (1, 32, 20, 20), "outer"),  # 32 in: Winograd's transforms weigh
    (dict(out_channels=16, kernel_size=3, padding=1), (1, 64, 20, 20), "winograd"),
    (dict(out_channels=8, kernel_size=3, padding=1), (1, 64, 20, 20), "outer"),
    (dict(out_channels=64, kernel_size=3, padding=1, groups=2), (1, 32, 20, 20), "outer"),
    (dict(out_channels=96, kernel_size=7, padding=3, groups=96), (1, 96, 56, 56), "depthwise"),  # ConvNeXt
    (dict(out_channels=64, kernel_size=3, stride=2, padding=1, groups=32), (1, 32, 20, 20), "depthwise"),
    (dict(out_channels=64, kernel_size=3, padding=1), (1, 3, 224, 224), "outer"),    # VGG conv1_1: K=27
    (dict(out_channels=64, kernel_size=11, stride=4), (1, 3, 224, 224), "outer"),   # AlexNet conv1
    (dict(out_channels=512, kernel_size=3, padding=1), (1, 512, 28, 28), "winograd"),  # VGG conv4_2 at 224
    (dict(out_channels=512, kernel_size=3, padding=1), (1, 512, 48, 48), "winograd"),  # and at 384: 9 MB
    (dict(out_channels=192, kernel_size=5, padding=2), (1, 64, 27, 27), "outer"),   # AlexNet conv2 at 224
    (dict(out_channels=48, kernel_size=1), (1, 1152, 1, 1), "small"),   # EfficientNet's largest SE gate: 55K MACs
    (dict(out_channels=1152, kernel_size=1), (1, 48, 1, 1), "small"),
    (dict(out_channels=4, kernel_size=1, activation="silu"), (1, 96, 1, 1), "small"),
    (dict(out_channels=48, kernel_size=1), (2, 1152, 1, 1), "pointwise"),   # 110K: past SMALL_MACS
    (dict(out_channels=48, kernel_size=1, groups=2), (1, 1152, 1, 1), "pointwise"),  # grouped
    (dict(out_channels=384, kernel_size=3, padding=1), (1, 256, 13, 13), "winograd"),  # AlexNet conv3 at 224
    (dict(out_channels=64, kernel_size=[3, 5]), (1, 32, 5, 40), "outer"),  # 3 output rows: split by channels
    (dict(out_channels=256, kernel_size=3, padding=1), (1, 256, 2, 2), "outer"),  # ResNet's layer3 at 32x32
    (dict(out_channels=64, kernel_size=3), (1, 64, 5, 40), "winograd"),  # 2 rows of tiles are enough
])
def test_conv_strategy_follows_the_layer_shape(params, in_shape, expected, monkeypatch):
    """As on an AVX2 machine (8-lane tiles everywhere); what 16 lanes change is in
    `test_wide_vectors_take_big_1x1_layers_to_outer`."""
    monkeypatch.setattr(vector_tile, "OUTER_LANES", 8)
    opdef = get_op("conv")
    normalized = normalize_params(opdef, params)
    assert conv_cpu.choose_strategy(normalized, in_shape) == expected
    assert CPU.variant(opdef, normalized, in_shape) == expected
    assert CPU.variant(get_op("maxpool"), {}, in_shape) == ""  # one strategy: nothing to show


@pytest.mark.parametrize("params,in_shape,expected", [
    (dict(out_channels=512, kernel_size=1), (1, 1024, 14, 14), "outer"),     # DenseNet-121's transition3
    (dict(out_channels=4096, kernel_size=1), (1, 4096, 9, 9), "outer"),      # fc7 past stream
    (dict(out_channels=64, kernel_size=1), (1, 64, 128, 128), "outer"),
    (dict(out_channels=96, kernel_size=1), (1, 16, 112, 112), "pointwise"),  # 16 input channels
    (dict(out_channels=24, kernel_size=1), (1, 144, 56, 56), "pointwise"),   # 10.8M multiply-adds
])
def test_wide_vectors_take_big_1x1_layers_to_outer(params, in_shape, expected, monkeypatch):
    monkeypatch.setattr(vector_tile, "OUTER_LANES", 16)
    assert conv_cpu.choose_strategy(normalize_params(get_op("conv"), params), in_shape) == expected


@settings(max_examples=40, deadline=None)
@given(c=st.sampled_from([1, 2, 4, 9, 17]), groups=st.sampled_from([1, 2, 5]), o_per=st.integers(1, 3),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 3), dw=st.integers(1, 3),
       h=st.integers(1, 12), w=st.integers(1, 12), batch=st.integers(1, 3), activation=st.sampled_from(FUSED),
       storage=st.sampled_from(STORAGE_CHOICES))
def test_conv_hypothesis(c, groups, o_per, kh, kw, sh, sw, ph, pw, dh, dw, h, w, batch, activation, storage):
    """Odd sizes people would not think of: kernels just fitting, strides past the end,
    channel counts that fill blocks of 8 with some left over..."""
    c = c * groups
    if dh * (kh - 1) + 1 > h + 2 * ph or dw * (kw - 1) + 1 > w + 2 * pw:
        return
    params = dict(out_channels=o_per * groups, kernel_size=[kh, kw], stride=[sh, sw],
                  padding=[ph, pw], dilation=[dh, dw], groups=groups,
                  activation=activation)
    for strategy in applicable_strategies(params, c):
        for prepared in (False, True):  # taps in the spec's order and in prepare_conv's
            check_op("conv", params, [(c, h, w)], np.random.default_rng(h * 31 + w), batch=batch,
                     strategy=strategy, prepared=prepared, storage=storage)


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 20), multiplier=st.integers(1, 3), kh=st.integers(1, 7), kw=st.integers(1, 7),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 3), pw=st.integers(0, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), h=st.integers(1, 15), w=st.integers(1, 40),
       batch=st.integers(1, 2), activation=st.sampled_from(FUSED), residual=st.booleans(),
       storage=st.sampled_from(STORAGE_CHOICES))
def test_conv_depthwise_hypothesis(c, multiplier, kh, kw, sh, sw, ph, pw, dh, dw, h, w, batch, activation, residual,
                                   storage):
    """The depthwise strategy, which depthwise layers choose, on the sizes where clipping
    each tap's run at the padding goes wrong first: kernels wider than the map, padding
    as wide as the kernel, strides past the end, channel multipliers, rows of one pixel."""
    if dh * (kh - 1) + 1 > h + 2 * ph or dw * (kw - 1) + 1 > w + 2 * pw:
        return
    params = dict(out_channels=c * multiplier, kernel_size=[kh, kw], stride=[sh, sw], padding=[ph, pw],
                  dilation=[dh, dw], groups=c, activation=activation)
    conv = get_op("conv")
    out_shape = conv.shape(normalize_params(conv, params), [(c, h, w)])
    in_shapes = [(c, h, w), out_shape] if residual else [(c, h, w)]
    if c > 1:
        assert conv_cpu.choose_strategy(normalize_params(conv, params), (batch, c, h, w)) == "depthwise"
    for prepared in (False, True):
        check_op("conv", params, in_shapes, np.random.default_rng(h * 31 + w), batch=batch, strategy="depthwise",
                 prepared=prepared, storage=storage)


@pytest.mark.parametrize("c,w", [(24, 400), (40, 230), (37, 300), (1152, 9), (2100, 4), (16, 12), (88, 61)])
@pytest.mark.parametrize("k,s,activation", [(3, 1, "relu"), (5, 2, "silu"), (3, 2, "gelu"), (7, 1, "none"),
                                            (5, 1, "hardswish")])
def test_depthwise_channels_last_over_tiles_of_pixels_and_vectors(c, w, k, s, activation, rng):
    """The channels-last depthwise kernel where a row's inner pixels take several tiles of
    DEPTHWISE_PIXELS (a row of taps at a time: 3, 5 and 7 wide at stride 1, 3 and 5 at 2) and leave a
    few over, or none fit (6 inner pixels: a 7x7 window on 12), besides its border pixels
    (64 channels at a time where there are so many: 88 = 64 + 16 + 8); channels as 16-lane
    vectors, an 8-lane one (24, 40) and single ones (37: 16 + 16 + 5); a smooth activation
    over each row as it is written."""
    params = dict(out_channels=c, kernel_size=k, stride=s, padding=k // 2, groups=c, activation=activation)
    check_op("conv", params, [(c, 5, w)], rng, batch=1, strategy="depthwise", storage=(True, True))


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 100), kh=st.integers(1, 7), kw=st.integers(1, 7), s=st.integers(1, 2), p=st.integers(0, 3),
       d=st.integers(1, 2), h=st.integers(1, 15), w=st.integers(1, 15), batch=st.integers(1, 2),
       vectors=st.integers(1, 4), activation=st.sampled_from(FUSED))
def test_depthwise_small_map_hypothesis(c, kh, kw, s, p, d, h, w, batch, vectors, activation):
    """The small-map depthwise kernel, whichever layers it would be chosen for: tiles of
    DEPTHWISE_PIXELS pixels running past a row's end into the next rows (rows of 1 to 15
    pixels), the map's last pixels one at a time, jobs of 1 to 4 vectors of channels
    leaving an 8-lane vector or single channels over, a row of taps at a time (widths 3, 5
    and 7, strides 1 and 2, undilated) or tap by tap, any activation."""
    if d * (kh - 1) + 1 > h + 2 * p or d * (kw - 1) + 1 > w + 2 * p:
        return
    rng = np.random.default_rng(c * 1000 + h * 16 + w)
    params = normalize_params(get_op("conv"), dict(out_channels=c, kernel_size=[kh, kw], stride=s, padding=p,
                                                   dilation=d, groups=c, activation=activation))
    x = random_input(rng, (batch, c, h, w))
    weights = {"weight": rng.standard_normal((c, 1, kh, kw), dtype=np.float32),
               "bias": rng.standard_normal(c, dtype=np.float32)}
    want = get_op("conv").reference(params, weights, [x])
    out = np.full(want.shape, np.nan, np.float32).transpose(0, 2, 3, 1).copy()
    depthwise.depthwise_small_map(x.transpose(0, 2, 3, 1).copy(), depthwise.channels_last_taps(weights["weight"]),
                                  weights["bias"], s, s, p, p, d, d, conv_cpu.fused_code(activation), out, 16 * vectors)
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c,h,k,s,activation,residual", [
    (1152, 7, 5, 1, "silu", False),  # EfficientNet-B0's features.13-15
    (672, 14, 5, 2, "silu", False),  # its features.12: 14x14 -> 7x7
    (392, 14, 7, 1, "none", True),  # ConvNeXt's 14x14 stage (384 there), with the block's residual added
    (400, 9, 5, 1, "relu", False),  # 400 = 6 jobs of 64 and one of 16 on 2 threads
])
@pytest.mark.parametrize("storage", [(True, True), (True, False)], ids=["channels-last", "into-nchw-output"])
def test_depthwise_small_map_in_the_layer(c, h, k, s, activation, residual, storage, rng):
    """Depthwise layers on small maps run the small-map kernel, channels-last as the
    compiled networks store them, and equal the reference; so does a network's last
    layer, which reads a channels-last map into the NCHW output (through a channels-last
    buffer of its own: the NCHW kernel on copies took 8x onnxruntime's time)."""
    params = dict(out_channels=c, kernel_size=k, stride=s, padding=k // 2, groups=c, activation=activation)
    out_shape = get_op("conv").shape(normalize_params(get_op("conv"), params), [(c, h, h)])
    assert depthwise.small_map_pays((1, *out_shape), h, k, k, s, k // 2, 1)
    in_shapes = [(c, h, h), out_shape] if residual else [(c, h, h)]
    with mock.patch.object(depthwise, "depthwise_small_map", wraps=depthwise.depthwise_small_map) as small_map:
        check_op("conv", params, in_shapes, rng, batch=1, strategy="depthwise", storage=storage)
    assert small_map.called


@pytest.mark.parametrize("shape,width,k,s,pays", [
    ((1, 1152, 7, 7), 7, 5, 1, True),
    ((4, 768, 7, 7), 7, 7, 1, True),
    ((1, 192, 28, 28), 28, 7, 1, True),
    ((1, 1152, 7, 7), 7, 3, 1, False),  # 3x3 windows: the row kernel's border pixels cost little more
    ((1, 240, 14, 14), 14, 5, 1, False),  # too few channels to share
    ((1, 192, 56, 56), 56, 7, 1, False),  # rows long enough for the row kernel's tiles
])
def test_depthwise_small_map_is_chosen_where_it_pays(shape, width, k, s, pays):
    assert depthwise.small_map_pays(shape, width, k, k, s, k // 2, 1) is pays


@pytest.mark.parametrize("c,threads,lanes", [(1152, 2, 64), (672, 2, 48), (480, 2, 48), (384, 2, 64), (100, 2, 64),
                                             (1152, 4, 48), (672, 3, 32)])
def test_small_map_jobs_share_the_channels_evenly(c, threads, lanes):
    """Jobs of 4, 3 or 2 vectors, whichever leaves the busiest thread (threads take equal
    runs of jobs) the fewest vectors: 672 channels are 11 jobs of 64 or 14 of 48."""
    assert depthwise.small_map_job_lanes(c, threads) == lanes


@settings(max_examples=40, deadline=None)
@given(group=st.sampled_from(vector_tile.GROUP_WIDTHS), groups=st.integers(2, 13), k=st.integers(1, 5),
       s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2), h=st.integers(3, 9), w=st.integers(3, 34),
       batch=st.integers(1, 2), activation=st.sampled_from(FUSED), residual=st.booleans(),
       storage=st.sampled_from(STORAGE_CHOICES))
def test_conv_grouped_hypothesis(group, groups, k, s, p, d, h, w, batch, activation, residual, storage):
    """The "grouped" strategy (2, 4, 8 or 16 channels in and out a group, each input vector
    rotated within its groups of lanes): channel counts that fill 16-lane vectors, leave
    an 8-lane one or single channels over (groups of 2 and 4 split across them), rows with
    several 8-pixel tiles and borders, strides and dilations, a residual input, every
    storage (the kernel runs channels-last, on copies where a value is not)."""
    c = group * groups
    if d * (k - 1) + 1 > min(h, w) + 2 * p:
        return
    params = dict(out_channels=c, kernel_size=k, stride=s, padding=p, dilation=d, groups=groups, activation=activation)
    out_shape = get_op("conv").shape(normalize_params(get_op("conv"), params), [(c, h, w)])
    in_shapes = [(c, h, w), out_shape] if residual else [(c, h, w)]
    for prepared in (False, True):
        check_op("conv", params, in_shapes, np.random.default_rng(c * 7 + w), batch=batch, strategy="grouped",
                 prepared=prepared, storage=storage)


@pytest.mark.parametrize("params,in_channels,expected", [
    (dict(out_channels=128, kernel_size=3, padding=1, groups=32), 128, "grouped"),  # ResNeXt-50 32x4d, layer1
    (dict(out_channels=256, kernel_size=3, stride=2, padding=1, groups=32), 256, "grouped"),  # layer2.0: 8 a group
    (dict(out_channels=512, kernel_size=3, padding=1, groups=32), 512, "outer"),  # layer3: 16 a group, at 28x28
    (dict(out_channels=64, kernel_size=3, padding=1, groups=16), 32, "outer"),  # 2 in, 4 out a group
    (dict(out_channels=64, kernel_size=3, padding=1, groups=64), 64, "depthwise"),
])
def test_grouped_strategy_takes_groups_of_2_to_16_channels_in_and_out(params, in_channels, expected):
    params = normalize_params(get_op("conv"), params)
    assert conv_cpu.choose_strategy(params, (1, in_channels, 28, 28), channels_last=True) == expected
    runs = expected == "grouped" or in_channels // params["groups"] == 16  # 16 a group: chosen on large maps
    assert conv_cpu.can_run("grouped", params, in_channels) == runs


@pytest.mark.parametrize("channels, groups, size, stride, expected", [
    (64, 4, 512, 2, "grouped"),  # RegNetX's first stage at 1024: 3.5x onnxruntime's time through "outer"
    (320, 20, 64, 1, "grouped"),
    (768, 48, 64, 2, "grouped"),  # 32x32 out, stride 2
    (512, 32, 28, 1, "outer"),  # ResNeXt's layer3 at 448
    (512, 32, 14, 1, "outer"),
])
def test_sixteen_channels_a_group_run_grouped_on_large_maps_only(channels, groups, size, stride, expected):
    params = normalize_params(get_op("conv"), dict(out_channels=channels, kernel_size=3, stride=stride, padding=1,
                                                   groups=groups))
    assert conv_cpu.choose_strategy(params, (1, channels, size, size), channels_last=True) == expected


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 40), o=st.one_of(st.integers(1, 70), st.sampled_from([8, 24, 32, 48, 64])),
       k=st.integers(1, 5), s=st.integers(1, 3),
       p=st.integers(0, 2), dw=st.integers(1, 2), h=st.integers(5, 14), w=st.integers(5, 30),
       batch=st.integers(1, 3), activation=st.sampled_from(FUSED), chunk=st.sampled_from([8, 24, 128]),
       positions=st.sampled_from([1, 16, 64]), threads=st.integers(1, 3), residual=st.booleans(),
       storage=st.sampled_from(STORAGE_CHOICES), tile=st.sampled_from(TILE_SHAPES))
def test_conv_outer_hypothesis(c, o, k, s, p, dw, h, w, batch, activation, chunk, positions, threads, residual, storage,
                               tile):
    """The outer-product strategy over channel counts that fill its blocks of 24-64
    channels (every tile shape, not only this machine's) and
    8-lane vectors with some left over (or none), tiles of 4 and 8 pixels that span
    output rows and images or run part-empty, taps in one chunk or split into several,
    jobs of one or several output rows or images, or of part of a row (a small map
    split between the threads), with and without a residual input."""
    if dw * (k - 1) + 1 > w + 2 * p or k > h + 2 * p:
        return
    params = dict(out_channels=o, kernel_size=k, stride=s, padding=p, dilation=[1, dw],
                  activation=activation)
    shapes = [(c, h, w)]
    if residual:
        shapes.append(get_op("conv").shape(normalize_params(get_op("conv"), params), shapes))
    for prepared in (False, True):
        with mock.patch.object(conv_cpu, "OUTER_CHUNK", chunk), tile_shape(*tile), \
                mock.patch.object(conv_cpu, "OUTER_POSITIONS", positions), \
                mock.patch.object(conv_cpu, "get_num_threads", lambda: threads):
            check_op("conv", params, shapes, np.random.default_rng(c * 97 + o), batch=batch,
                     strategy="outer", prepared=prepared, storage=storage)


@pytest.mark.parametrize("out_c", [16, 48, 128])
@pytest.mark.parametrize("kernel,chunk", [(1, 512), (1, 8), (3, 512)])
@pytest.mark.parametrize("activation", ["relu", "none", "silu"])
def test_outer_writes_a_residual_layer_from_its_tiles(out_c, kernel, chunk, activation, rng):
    """A channels-last layer of whole vectors with a residual input (a ResNet block's
    last conv, its add fused): the last chunk's tiles write sum + bias + residual and the
    ReLU themselves, whether that chunk is the only one or the last of several, one
    thread taking every job or two sharing them."""
    params = dict(out_channels=out_c, kernel_size=kernel, padding=kernel // 2, activation=activation)
    for threads in (1, 2):
        with mock.patch.object(conv_cpu, "OUTER_CHUNK", chunk), \
                mock.patch.object(conv_cpu, "get_num_threads", lambda: threads):
            check_op("conv", params, [(24, 9, 7), (out_c, 9, 7)], rng, batch=2, strategy="outer",
                     storage=(True, True))


@pytest.mark.parametrize("activation", ["silu", "gelu", "hardswish"])
@pytest.mark.parametrize("out_c,hw,batch", [(200, (3, 3), 1), (40, (30, 20), 2)])
def test_outer_activates_a_job_written_in_parts_of_its_channels_or_whole(activation, out_c, hw, batch, rng):
    """A channels-last "outer" job covering every output channel activates its pixels as
    one run; one split into parts by vectors of channels (a small map, many channels: 2
    threads, one job) activates each pixel's part of the channels."""
    parts = conv_cpu.outer_jobs(batch, *hw, out_c, 2)[1]
    assert parts == (2 if out_c == 200 else 1)
    with mock.patch.object(conv_cpu, "get_num_threads", lambda: 2):
        check_op("conv", dict(out_channels=out_c, kernel_size=1, activation=activation), [(24, *hw)], rng,
                 batch=batch, strategy="outer", storage=(True, True))


@pytest.mark.parametrize("tile", TILE_SHAPES)
@pytest.mark.parametrize("out_c", [192, 200])
@pytest.mark.parametrize("chunk", [8, 512])
@pytest.mark.parametrize("storage", STORAGE_CHOICES)
def test_outer_splits_a_small_map_by_vectors_across_blocks(tile, out_c, chunk, storage, rng):
    """One 7x7 image on 2 threads is one job split into parts by vectors of output
    channels, whose boundary falls inside a block of the packed weights (192 channels:
    96 + 96 where blocks hold 64 or 24; 200: 104 + 96 or 112 + 88); each part's pieces
    of those blocks are summed in their own columns, in several chunks of taps or one,
    stored or written from the tiles, channels-last or NCHW."""
    with tile_shape(*tile):
        assert conv_cpu.outer_jobs(1, 7, 7, out_c, 2) == (49, 2)
        with mock.patch.object(conv_cpu, "OUTER_CHUNK", chunk), \
                mock.patch.object(conv_cpu, "get_num_threads", lambda: 2):
            check_op("conv", dict(out_channels=out_c, kernel_size=1, activation="silu"), [(40, 7, 7)], rng,
                     batch=1, strategy="outer", storage=storage)


@pytest.mark.parametrize("tile", TILE_SHAPES)
@pytest.mark.parametrize("strategy,hw", [("outer", (4, 4)), ("outer", (5, 5)), ("outer", (2, 7)),
                                         ("winograd", (8, 8)), ("winograd", (9, 7))])
def test_a_jobs_last_tile_writes_only_its_own_slack(strategy, hw, tile):
    """A job whose pixel count (16, 25, 14; Winograd's 12 and 15 tiles) is no multiple of
    the tile's height (4, 6 or 8 pixels) ends in a tile whose rows past the last pixel
    repeat it; their sums must land in the job's own slack, not in the next block of
    channels' first rows, which later chunks of taps add to (3 blocks, 5 chunks)."""
    params = dict(out_channels=150, kernel_size=1 if strategy == "outer" else 3, padding=0)
    chunks = {"outer": (conv_cpu, "OUTER_CHUNK"), "winograd": (conv_cpu.winograd, "CHUNK")}[strategy]
    with mock.patch.object(*chunks, 8), tile_shape(*tile), mock.patch.object(conv_cpu, "get_num_threads", lambda: 1):
        check_op("conv", params, [(40, hw[0] + (2 if strategy == "winograd" else 0), hw[1])],
                 np.random.default_rng(hw[0] * 31 + hw[1]), batch=1, strategy=strategy, storage=(True, True))


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 40), o=st.integers(1, 60), p=st.integers(0, 2), h=st.integers(1, 13), w=st.integers(1, 13),
       batch=st.integers(1, 3), activation=st.sampled_from(FUSED), chunk=st.sampled_from([8, 192]),
       plan=st.tuples(st.sampled_from([1, 2, 3, 8, 500]), st.sampled_from([1, 2, 3, 20])), threads=st.integers(1, 3),
       band_bytes=st.sampled_from([1, 3000, 8 << 20]), residual=st.booleans(),
       storage=st.sampled_from(STORAGE_CHOICES), tile=st.sampled_from(TILE_SHAPES))
def test_conv_winograd_hypothesis(c, o, p, h, w, batch, activation, chunk, plan, threads, band_bytes, residual,
                                  storage, tile):
    """Winograd F(2x2, 3x3) over maps of odd sizes (the last tiles half outside), channel
    counts that fill its blocks of 24-64 channels (every tile shape) and 8-lane vectors with some left over, input
    channels in several chunks, any plan of runs of tiles and parts by output channels
    (`job_plan`'s or not: more runs than tiles or more parts than blocks of channels leave
    jobs empty), a channels-last input read in place
    (its padding read as zeros) and an NCHW one through its channels-last copy, made whole
    or one band of tile rows at a time (band_bytes 1: a band per tile row), with and
    without a residual input."""
    if 3 > h + 2 * p or 3 > w + 2 * p:
        return
    params = dict(out_channels=o, kernel_size=3, padding=p, activation=activation)
    shapes = [(c, h, w)]
    if residual:
        shapes.append(get_op("conv").shape(normalize_params(get_op("conv"), params), shapes))
    for prepared in (False, True):
        with mock.patch.object(conv_cpu.winograd, "CHUNK", chunk), tile_shape(*tile), \
                mock.patch.object(conv_cpu.winograd, "job_plan", lambda images, tiles, c, o, threads: plan), \
                mock.patch.object(conv_cpu.winograd, "BAND_BYTES", band_bytes), \
                mock.patch.object(conv_cpu, "get_num_threads", lambda: threads):
            check_op("conv", params, shapes, np.random.default_rng(c * 101 + o), batch=batch,
                     strategy="winograd", prepared=prepared, storage=storage)


@pytest.mark.parametrize("params,in_shape", [
    (dict(out_channels=48, kernel_size=1), (40, 7, 9)),                          # outer in place (channels-last)
    (dict(out_channels=33, kernel_size=3, padding=1), (17, 9, 11)),              # winograd
    (dict(out_channels=30, kernel_size=3, stride=2, padding=1), (20, 13, 9)),    # outer on a padded copy
    (dict(out_channels=600, kernel_size=3, stride=2), (600, 5, 5)),              # stream
])
@pytest.mark.parametrize("residual", [False, True])
def test_a_bound_conv_matches_run_conv_on_every_geometry_it_meets(params, in_shape, residual, rng):
    """The Executor's call (`OpDef.bind`): the same output as `run_conv` for sizes and
    storages met in any order, again and again, one remembered binder per geometry; and
    its call bound to a run's arrays (`bind_values`) computes from their contents when called."""
    opdef = get_op("conv")
    params = normalize_params(opdef, dict(params, activation="relu"))
    weights = CPU.prepare_weights(opdef, params, make_weights(opdef, params, [in_shape], rng))
    bound = CPU.bind(opdef, params, weights)
    for batch, grow, storage in [(1, 0, (True, True)), (2, 3, (False, False)), (1, 0, (True, True)),
                                 (1, 0, (False, True)), (2, 3, (False, False))]:
        c, h, w = in_shape
        shapes = [(c, h + grow, w + grow)]
        if residual:
            shapes.append(opdef.shape(params, shapes))
        xs = [random_input(rng, (batch, *s)) for s in shapes]
        want = run_kernel(opdef, params, weights, xs, storage)
        got = np.full(want.shape, np.nan, np.float32)
        ins = [stored_channels_last(x) for x in xs] if storage[0] else xs
        out = stored_channels_last(got) if storage[1] else got
        bound(ins, out)
        np.testing.assert_array_equal(np.ascontiguousarray(out), want)
        bound_to_values = bound.bind_values(ins, out)  # what an Executor keeps per plan: reads the values as
        want = run_kernel(opdef, params, weights, [x * 2 for x in xs], storage)  # they are when it runs
        for x in ins:
            x *= 2
        got[...] = np.nan
        bound_to_values()
        np.testing.assert_array_equal(np.ascontiguousarray(out), want)
    assert len(bound.binders) == 3


def test_an_op_without_a_bind_hook_is_its_run_function_with_params_and_weights_fixed(rng):
    opdef = get_op("relu")
    x = random_input(rng, (1, 3, 4, 5))
    out = np.empty_like(x)
    CPU.bind(opdef, {}, {})([x], out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))


@pytest.mark.parametrize("n,ho,wo,out_channels,threads,tile,expected", [
    (1, 56, 56, 256, 2, (8, 3), (112, 1)),   # ResNet-50's layer1: jobs of 2 rows, 28 of them
    (1, 28, 28, 512, 2, (16, 4), (196, 1)),  # its layer2: 4 jobs of 196, where 10 of 3 rows left 420 + 364
    (1, 95, 95, 96, 2, (8, 3), (96, 1)),     # AlexNet's conv1 at 384: 95 jobs, the last 1 pixel
    (1, 14, 14, 256, 2, (8, 3), (196, 2)),   # 128 + 128 channels across blocks of 24, not 100 + 96 pixels
    (1, 14, 14, 256, 2, (8, 4), (196, 2)),   # blocks of 32 split 256 channels 128 + 128
    (1, 14, 14, 256, 2, (16, 4), (196, 2)),  # and blocks of 64 too
    (1, 14, 14, 1024, 2, (8, 3), (196, 2)),  # 512 + 512 channels (50%) against 100 + 96 pixels (51.0%)
    (1, 14, 14, 1024, 2, (16, 4), (196, 2)),  # 512 + 512
    (1, 7, 7, 512, 2, (8, 3), (49, 2)),      # 7 + 6 tiles of 4 pixels would be less even than 256 + 256 channels
    (1, 7, 7, 192, 2, (16, 4), (49, 2)),     # 96 + 96 channels (6 vectors), not blocks 128 + 64 or pixels 28 + 21
    (1, 7, 7, 80, 2, (16, 4), (28, 1)),      # 3 + 2 vectors (60%) against 28 + 21 pixels (57%)
    (2, 14, 14, 256, 2, (8, 3), (196, 1)),   # one image a thread
    (3, 7, 7, 64, 2, (8, 3), (49, 2)),       # 3 images on 2 threads: each split by channels
    (3, 7, 7, 48, 2, (8, 4), (49, 2)),       # a block of 32 and one of 16
    (3, 7, 7, 48, 2, (16, 4), (49, 2)),      # one block of 64, split 2 + 1 vectors
    (3, 7, 7, 16, 2, (16, 4), (49, 1)),      # one vector: nothing to split
    (1, 5, 5, 16, 1, (8, 3), (25, 1)),       # one thread: one job
    (3, 5, 5, 16, 1, (8, 3), (75, 1)),       # one thread: one job for the batch, which reads the weights once
    (16, 7, 7, 512, 2, (16, 4), (196, 1)),   # ResNet layer4 at batch 16: 4 images a job, not 16 jobs
    (15, 7, 7, 512, 2, (16, 4), (196, 1)),   # 4 + 4 + 4 + 3 images: 8 and 7 a thread
    (64, 1, 1, 1000, 2, (16, 4), (32, 1)),   # a batch of 1x1 maps: 2 jobs, not 64 reads of the weights
])
def test_outer_jobs_share_a_layer_evenly(n, ho, wo, out_channels, threads, tile, expected):
    with tile_shape(*tile):
        assert conv_cpu.outer_jobs(n, ho, wo, out_channels, threads) == expected


@pytest.mark.parametrize("weight_bytes,expected", [
    (1 << 20, (32, 1)),         # weights L2 holds: the pixels split more evenly (32 + 32, against 512 + 488 channels)
    (4 * 2048 * 1024, (64, 2)),  # ResNet-50's fc at 448, 8 MB: each thread reads half the weights once, not all
])
def test_outer_jobs_count_reading_weights_that_do_not_fit_l2(weight_bytes, expected):
    with tile_shape(16, 4), mock.patch.object(conv_cpu, "l2_bytes", lambda: 2 << 20):
        assert conv_cpu.outer_jobs(1, 8, 8, 1000, 2, weight_bytes) == expected


@given(pixels=st.integers(1, 5000), size=st.integers(1, 300), threads=st.integers(1, 8))
def test_busiest_thread_count_is_what_threads_taking_jobs_in_turn_get(pixels, size, threads):
    """`_busiest_thread_pixels`, the rule job sizes are chosen by, against a simulation:
    equal-speed threads, each taking the next job as it comes free."""
    loads = [0] * threads
    for start in range(0, pixels, size):
        loads[loads.index(min(loads))] += min(size, pixels - start)
    assert conv_cpu._busiest_thread_pixels(pixels, size, threads) == max(loads)


@pytest.mark.parametrize("out_channels,job_pixels,tile,expected", [
    (8, 49, (8, 3), 24 * 72 + 98),       # one 24-channel block of sums for 72 pixels (a multiple of every tile height)
    (8, 49, (8, 4), 32 * 72 + 98),       # blocks of 32 are 32 wide even for 8 channels
    (8, 49, (16, 4), 64 * 72 + 98),      # and blocks of 64, 64
    (64, 196, (8, 3), 72 * 216 + 392),   # 3 blocks of 24
    (64, 196, (16, 4), 64 * 216 + 392),  # 1 block of 64
])
def test_outer_scratch_follows_the_tile_shape(out_channels, job_pixels, tile, expected):
    """What `graphconv.memory` budgets per thread for "outer": the sums `_outer_group`
    allocates (whole blocks of the machine's tile) and the patch offsets."""
    with tile_shape(*tile):
        assert conv_cpu.outer_job_floats(out_channels, job_pixels) == expected


@pytest.mark.parametrize("images,tile_rows,tile_cols,channels,band_bytes,expected", [
    (1, 192, 192, 64, 8 << 20, 41),   # VGG's conv1_2 at 384: 84 padded rows of 98.8 KB in 8 MB
    (2, 14, 14, 256, 8 << 20, 14),    # small maps: the whole copy, every image at once
    (1, 5, 5, 64, 1, 1),              # at least one tile row
    (4, 48, 48, 512, 8 << 20, 19),    # over the budget for 4 images: one image's band at a time
])
def test_winograd_band_tile_rows(images, tile_rows, tile_cols, channels, band_bytes, expected):
    with mock.patch.object(conv_cpu.winograd, "BAND_BYTES", band_bytes):
        assert conv_cpu.winograd.band_tile_rows(images, tile_rows, tile_cols, channels) == expected


@pytest.mark.parametrize("params,in_shape", [
    (dict(out_channels=40, kernel_size=1), (20, 7, 9)),                 # pointwise
    (dict(out_channels=33, kernel_size=3, padding=1), (17, 9, 11)),     # winograd
    (dict(out_channels=30, kernel_size=3, stride=2, padding=1), (20, 13, 9)),  # outer
    (dict(out_channels=600, kernel_size=3, stride=2), (600, 5, 5)),     # stream: 1-4 positions
])
@pytest.mark.parametrize("activation", FUSED)
@pytest.mark.parametrize("storage", STORAGES)
def test_conv_adds_a_residual_input_before_the_activation(params, in_shape, activation, storage, rng):
    """Every strategy, with a second input of the output's shape: added to the output
    before the activation (the strategies that do not add it while writing add it after)."""
    params = dict(params, activation=activation)
    out_shape = get_op("conv").shape(normalize_params(get_op("conv"), params), [in_shape])
    for strategy in applicable_strategies(params, in_shape[0]):
        for prepared in (False, True):
            check_op("conv", params, [in_shape, out_shape], rng, strategy=strategy, prepared=prepared,
                     storage=storage)


@pytest.mark.parametrize("plan", [(1, 1), (2, 2), (3, 1), (7, 2)])
@pytest.mark.parametrize("storage", STORAGE_CHOICES)
def test_winograd_runs_span_the_images_of_a_batch(plan, storage, rng):
    """Runs of tiles counted over the batch (5 images of 3x3 tiles, 45 tiles): a run that
    starts in one image and ends in another gathers and writes each tile in its own image,
    with a residual input and the activation, whatever the runs and channel parts."""
    params = dict(out_channels=40, kernel_size=3, padding=1, activation="relu")
    with mock.patch.object(conv_cpu.winograd, "job_plan", lambda images, tiles, c, o, threads: plan), \
            mock.patch.object(conv_cpu, "get_num_threads", lambda: 2):
        check_op("conv", params, [(24, 6, 5), (40, 6, 5)], rng, batch=5, strategy="winograd", storage=storage)


@pytest.mark.parametrize("worker", [*conv_cpu._OUTER_THREAD.values(),
                                    *conv_cpu.winograd._WINOGRAD_THREAD.values()])
def test_per_thread_kernel_bodies_compile_as_parallel_loop_bodies_do(worker):
    """The conv kernels' per-thread functions (their parallel loops' bodies, moved out for
    compile time) keep numba's error model for parallel loop bodies: under the default,
    each division checks for zero and LLVM does not vectorise the SiLU over a job's
    outputs (EfficientNet-B0 ran 8 -> 14 ms). No timing test could say so; this does."""
    assert worker.targetoptions.get("error_model") == "numpy"


@contextlib.contextmanager
def l2_of(size: int):
    """Winograd's job plans as on a core with `size` bytes of L2 (its cache of plans emptied around)."""
    conv_cpu.winograd.job_plan.cache_clear()
    try:
        with mock.patch.object(conv_cpu.winograd, "l2_bytes", lambda: size):
            yield
    finally:  # a failed assertion inside leaves no plans made for that L2 behind
        conv_cpu.winograd.job_plan.cache_clear()


@pytest.mark.parametrize("l2,images,tiles,channels,out_channels,threads,expected", [
    (2 << 20, 1, 49, 512, 512, 2, (1, 2)),    # ResNet layer4 at 14x14: one run, each thread reads half of U once
    (2 << 20, 1, 196, 512, 512, 2, (2, 2)),   # VGG conv4 at 224: 2 runs of 2 parts (was 10 runs, U read 10 times)
    (2 << 20, 1, 196, 256, 256, 2, (2, 1)),   # U 4 MB: 2 runs of 98 tiles, no part gathers V twice
    (2 << 20, 1, 2304, 64, 64, 2, (18, 1)),   # U fits L2: runs of 128 tiles
    (2 << 20, 4, 49, 512, 512, 2, (2, 2)),    # a batch: runs span images (was one per image, U read 4 times)
    (2 << 20, 16, 16, 512, 512, 2, (2, 2)),   # ResNet layer4 at batch 16: U read twice, not 16 times
    (2 << 20, 1, 196, 512, 512, 8, (2, 8)),   # 8 threads: 16 jobs
    (512 << 10, 1, 196, 512, 512, 2, (6, 2)),  # a smaller L2 holds fewer tiles a run
    (512 << 10, 1, 16, 512, 512, 2, (1, 2)),   # ResNet layer4 at 7x7
    (512 << 10, 1, 100, 40, 40, 2, (2, 1)),    # 3 runs would leave a thread idle a third of the time
    (2 << 20, 1, 3, 8, 8, 2, (2, 1)),         # no run is empty
])
def test_winograd_job_plan(l2, images, tiles, channels, out_channels, threads, expected):
    with l2_of(l2):
        assert conv_cpu.winograd.job_plan(images, tiles, channels, out_channels, threads) == expected


@settings(max_examples=200, deadline=None)
@given(l2=st.sampled_from([256 << 10, 512 << 10, 2 << 20]), images=st.integers(1, 4), tiles=st.integers(1, 3000),
       channels=st.integers(1, 1024), out_channels=st.integers(1, 1024), threads=st.integers(1, 16))
def test_winograd_job_plans_are_runnable_and_no_worse_than_one_part(l2, images, tiles, channels, out_channels,
                                                                    threads):
    """Every plan has runs (over the batch's tiles) of at least one tile, at most
    MAX_JOB_TILES of them (or 8), and parts that each get output channels; and its
    estimated busiest thread is never worse than the plan of one part with the fewest runs
    that fit L2."""
    winograd = conv_cpu.winograd
    with l2_of(l2):
        runs, parts = winograd.job_plan(images, tiles, channels, out_channels, threads)
        block = vector_tile.OUTER_VECTORS * vector_tile.OUTER_LANES
        blocks = -(-vector_tile.padded_channels(out_channels) // block)
        total = images * tiles
        per_job = -(-total // runs)
        assert 1 <= runs <= total and per_job * (runs - 1) < total
        assert per_job <= max(8, winograd.MAX_JOB_TILES)
        assert parts in (1, min(blocks, threads))
        cost = winograd._busiest_thread_cost
        one_part = -(-total // winograd.tiles_per_job(channels, blocks * block))
        while one_part > 1 and -(-total // one_part) * (one_part - 1) >= total:
            one_part -= 1
        assert (cost(total, runs, parts, channels, -(-blocks // parts) * block, blocks * block, threads)
                <= cost(total, one_part, 1, channels, blocks * block, blocks * block, threads))


def test_winograd_transforms_are_the_minimal_filtering_algorithm(rng):
    """A^T [(G g G^T) * (B^T d B)] A is the 2x2 valid correlation of a 4x4 tile d with a
    3x3 filter g: the identity the strategy rests on, in float64."""
    wg = conv_cpu.winograd
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    want = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)])
    got = wg.A_T @ ((wg.G @ g @ wg.G.T) * (wg.B_T @ d @ wg.B_T.T)) @ wg.A_T.T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("out_c,c", [(40, 17), (24, 3), (5, 2), (70, 33)])
@pytest.mark.parametrize("tile", TILE_SHAPES)
def test_winograd_weights_are_g_g_gt_packed_per_block_of_channels(out_c, c, tile, rng):
    """The packed U against numpy in float64: U[xi] = (G g G^T)[xi], as (C x width)
    panels per block of 24-64 output channels, the channels padded with zeros to whole
    vectors."""
    wg = conv_cpu.winograd
    w = random_input(rng, (out_c, c, 3, 3))
    u = np.einsum("ai,ocij,bj->aboc", wg.G, w.astype(np.float64), wg.G).reshape(16, out_c, c)
    lanes, vectors = tile
    o_pad = -(-out_c // lanes) * lanes
    u = np.concatenate([u, np.zeros((16, o_pad - out_c, c))], axis=1)
    block = lanes * vectors
    want = np.concatenate([u[:, c0:c0 + block].transpose(0, 2, 1).reshape(16, -1) for c0 in range(0, o_pad, block)],
                          axis=1)
    with tile_shape(*tile):
        np.testing.assert_allclose(conv_cpu.winograd_weights(w), want.reshape(-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("groups, per_group", [(25, 16), (32, 4), (3, 40)])
@pytest.mark.parametrize("storage", [(False, False), (True, True)])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_outer_runs_every_group_of_a_grouped_conv_in_one_loop(groups, per_group, storage, threads, residual, rng):
    """RegNet's and ResNeXt's grouped 3x3 layers through `_outer_groups` (every group's
    jobs in one parallel loop, a queue a group), for thread counts that leave threads
    in different groups at once."""
    c = groups * per_group
    params = dict(out_channels=c, kernel_size=3, padding=1, groups=groups, activation="relu")
    shapes = [(c, 7, 9)] + ([(c, 7, 9)] if residual else [])
    with mock.patch.object(conv_cpu, "get_num_threads", lambda: threads):
        check_op("conv", params, shapes, rng, batch=2, strategy="outer", prepared=True, storage=storage)


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 40), o=st.integers(1, 70), groups=st.sampled_from([1, 2]), h=st.integers(1, 14),
       w=st.integers(1, 30), batch=st.integers(1, 3), activation=st.sampled_from(FUSED), chunk=st.sampled_from([8, 128]),
       threads=st.integers(1, 3), wide=st.booleans(), storage=st.sampled_from(STORAGE_CHOICES))
def test_conv_pointwise_hypothesis(c, o, groups, h, w, batch, activation, chunk, threads, wide, storage):
    """The 1x1 kernel over pixel counts that leave its 24-pixel tiles and 8-pixel vectors
    part-empty (and under one vector), output channels split between threads (few pixel
    jobs) or not (`wide` maps: enough jobs), input channels in several chunks."""
    params = dict(out_channels=o * groups, kernel_size=1, groups=groups, activation=activation)
    w = w + 100 if wide else w
    for prepared in (False, True):
        with mock.patch.object(conv_cpu, "POINTWISE_CHUNK", chunk), \
                mock.patch.object(conv_cpu, "get_num_threads", lambda: threads):
            check_op("conv", params, [(c * groups, h, w)], np.random.default_rng(c * 89 + o), batch=batch,
                     strategy="pointwise", prepared=prepared, storage=storage)


@pytest.mark.parametrize("params,in_shape", [
    (dict(out_channels=1280, kernel_size=3, padding=1, dilation=2), (1, 512, 6, 5)),  # over PACK_MAX_WEIGHTS
    (dict(out_channels=64, kernel_size=3, padding=1), (1, 64, 2, 2)),  # a Winograd layer on a tiny map
])
def test_conv_weights_prepare_did_not_pack_are_packed_on_their_first_outer_run(params, in_shape, rng):
    """Weights of PACK_MAX_WEIGHTS (20 MB) and more are left unpacked by prepare_conv
    (they may only ever stream), a Winograd layer's are transformed instead; the first
    run that takes either through "outer" packs them, once (re-packing them on every run
    made ResNet-50 at 32x32 take 8x its time)."""
    opdef = get_op("conv")
    params = normalize_params(opdef, params)
    x = random_input(rng, in_shape)
    weights = make_weights(opdef, params, [x.shape[1:]], rng)
    prepared = CPU.prepare_weights(opdef, params, weights)
    assert "weight_kxo" not in prepared
    want = opdef.reference(params, weights, [x])
    packed = []
    for _ in range(2):
        got = np.empty_like(want)
        conv_cpu.run_conv(params, prepared, [x], got, strategy="outer")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
        packed.append(prepared["weight_kxo"])
    assert packed[0] is packed[1]  # kept, not packed again


def test_conv_large_input_uses_several_chunks(rng, monkeypatch):
    """The im2col buffer is filled in chunks of output rows; results must not depend on it."""
    from graphconv.ops.conv import cpu
    monkeypatch.setattr(cpu, "SCRATCH_FLOATS", 50)
    check_op("conv", dict(out_channels=3, kernel_size=3, padding=1, groups=1), [(2, 10, 9)], rng, batch=3,
             strategy="im2col")


POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),  # overlapping, AlexNet-style
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=[3, 2], stride=[1, 2], dilation=[2, 1]),
    dict(kernel_size=2, stride=1, dilation=3, padding=1),
]


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
@pytest.mark.parametrize("params", POOL_CASES)
@pytest.mark.parametrize("in_shape", [(3, 9, 9), (2, 8, 11)])
def test_pool_matches_reference(op, params, in_shape, rng):
    check_op(op, params, [in_shape], rng)


NARROW_WINDOWS = [  # the pools' one-loop paths: windows 2 or 3 wide, rows of 3 all inside or not
    dict(kernel_size=3, stride=2, padding=1),  # ResNet's stem
    dict(kernel_size=3, stride=2, ceil_mode=True),  # GoogLeNet's, SqueezeNet's
    dict(kernel_size=3, stride=1, padding=1),  # Inception's branch pool
    dict(kernel_size=3, stride=2, dilation=2, padding=2),
    dict(kernel_size=2, stride=2),  # VGG's
    dict(kernel_size=2, stride=1, ceil_mode=True),
    dict(kernel_size=[3, 2], stride=[2, 1], padding=[1, 0]),
    dict(kernel_size=[2, 3], stride=[1, 2], padding=[0, 1], count_include_pad=False),
]


@pytest.mark.parametrize("storage", STORAGE_CHOICES)
@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
@pytest.mark.parametrize("params", NARROW_WINDOWS)
def test_narrow_windows_in_either_storage(op, params, storage, rng):
    if op == "maxpool" and "count_include_pad" in params:
        params = {k: v for k, v in params.items() if k != "count_include_pad"}
    check_op(op, params, [(5, 11, 12)], rng, storage=storage)


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(["maxpool", "avgpool"]), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dh=st.integers(1, 2), dw=st.integers(1, 3), h=st.integers(1, 10), w=st.integers(1, 10),
       ceil_mode=st.booleans(), count_include_pad=st.booleans(), storage=st.sampled_from(STORAGE_CHOICES))
def test_pool_hypothesis(op, kh, kw, sh, sw, ph, pw, dh, dw, h, w, ceil_mode, count_include_pad, storage):
    """The kernel works out, per tap, which output columns read inside the image, and per
    window how many taps an average divides by; windows hanging over either edge by any
    amount (ceil mode's past the padding too) are where that goes wrong."""
    if ph > kh // 2 or pw > kw // 2:
        return  # PyTorch's rule: padding at most half the kernel
    params = dict(kernel_size=[kh, kw], stride=[sh, sw], padding=[ph, pw], dilation=[dh, dw],
                  ceil_mode=ceil_mode)
    if op == "avgpool":
        params["count_include_pad"] = count_include_pad
    try:
        get_op(op).shape(normalize_params(get_op(op), params), [(2, h, w)])
    except ShapeError:
        return  # no window fits
    check_op(op, params, [(2, h, w)], np.random.default_rng(h * 13 + w), storage=storage)


def test_pool_defaults_leave_existing_specs_as_they_were():
    """ceil_mode and count_include_pad default to what every spec meant before they
    existed (floor, padding counted), and a spec written back leaves them out."""
    for name in ("maxpool", "avgpool"):
        params = normalize_params(get_op(name), dict(kernel_size=3, stride=2, padding=1))
        assert params["ceil_mode"] is False
        assert compact_params(get_op(name), params) == dict(kernel_size=3, stride=2, padding=1)
    assert normalize_params(get_op("avgpool"), dict(kernel_size=2))["count_include_pad"] is True


@pytest.mark.parametrize("size,kernel,stride,padding,dilation,expected", [
    (5, 2, 2, 0, 1, 3),   # floor 2: a last window of one pixel
    (6, 3, 2, 1, 1, 4),   # floor 3: the last window starts in the image, hangs past the padding
    (4, 2, 3, 1, 1, 2),   # a third window would start in the right padding: dropped
    (3, 4, 2, 0, 1, 1),   # a window longer than the input still gives one
    (8, 2, 2, 0, 1, 4),   # even: ceil and floor agree
    (6, 2, 2, 0, 2, 3),   # dilated taps 4 and 6: the second past the end
])
def test_ceil_output_follows_pytorch(size, kernel, stride, padding, dilation, expected):
    from graphconv.ops.pool import ceil_output
    assert ceil_output(size, kernel, stride, padding, dilation) == expected
    if torch is not None:
        x = torch.zeros(1, 1, size, size)
        got = torch.nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True)
        assert got.shape[-1] == expected


def test_avgpool_divisor_near_the_edges():
    """On an image of ones an average is (taps in the image) / (taps that count). With
    count_include_pad=False that is 1 everywhere; with it, each axis contributes
    in-image / (in the image or its padding), and the part of a ceil-mode window past
    the padding never counts: 3x3 windows, stride 2, padding 1 on 6 pixels read
    {-1, 0, 1}, ..., {5, 6, 7}: 2/3, 1, 1, then 1/2 (5 in the image, 6 padding, 7 past)."""
    x = np.ones((1, 1, 6, 6), np.float32)
    avgpool = get_op("avgpool")
    include = normalize_params(avgpool, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True))
    per_axis = np.array([2 / 3, 1, 1, 1 / 2])
    np.testing.assert_allclose(run_kernel(avgpool, include, {}, [x])[0, 0], np.outer(per_axis, per_axis),
                               rtol=1e-6)
    np.testing.assert_allclose(avgpool.reference(include, {}, [x])[0, 0], np.outer(per_axis, per_axis),
                               rtol=1e-6)
    exclude = {**include, "count_include_pad": False}
    np.testing.assert_allclose(run_kernel(avgpool, exclude, {}, [x]), 1.0, rtol=1e-6)


@pytest.mark.parametrize("size,alpha,beta,k", [(1, 1e-4, 0.75, 1.0), (3, 0.1, 0.5, 2.0),
                                               (5, 1e-2, 0.75, 2.0), (4, 0.5, 1.0, 1.0)])
@pytest.mark.parametrize("channels", [1, 3, 7])
def test_lrn_matches_reference(size, alpha, beta, k, channels, rng):
    check_op("lrn", dict(size=size, alpha=alpha, beta=beta, k=k), [(channels, 4, 5)], rng)


@pytest.mark.parametrize("in_shape", [(3, 4, 5), (10, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch", [1, 2, 4, 21])
@pytest.mark.parametrize("out_features", [7, 70])
@pytest.mark.parametrize("path", ["stream", "stream-16", "dots", "blas"])
def test_fc_matches_reference(in_shape, bias, batch, out_features, path, rng, monkeypatch):
    """Every fc strategy, forced: the weight-streaming product (positions 8 or 16 to a
    vector), the dot products, one SGEMM."""
    from graphconv.ops.fc import cpu
    strategy = path.removesuffix("-16")
    monkeypatch.setattr(cpu, "choose_strategy", lambda rows, outputs: strategy)
    monkeypatch.setattr(vector_tile, "STREAM_LANES", 16 if path == "stream-16" else 8)
    check_op("fc", dict(out_features=out_features, bias=bias), [in_shape], rng, batch=batch)


@pytest.mark.parametrize("rows, outputs, strategy", [(1, 1000, "stream"), (64, GROUP_ROWS, "stream"), (1, 2, "dots"),
                                                     (64, GROUP_ROWS - 1, "dots"), (65, 1000, "blas"),
                                                     (65, 2, "blas")])
def test_fc_keeps_blas_for_big_batches_only(rows, outputs, strategy):
    """Batches up to a crop batch (STREAM_MAX_POSITIONS) never call BLAS, whose idle
    workers spin and take cores from the next kernels; fewer outputs than the streaming
    tiles' group of rows take one dot product each."""
    from graphconv.ops.fc import cpu
    assert cpu.choose_strategy(rows, outputs) == strategy
    assert cpu.describe_fc({"out_features": outputs}, (rows, 16)) == strategy


# none and relu: the store loops apply them as they write; every other entry of FUSED is applied in place
@pytest.mark.parametrize("activation", [name for name in FUSED if name not in ("none", "relu")])
@pytest.mark.parametrize("extra", [0, 1])
def test_a_fused_activation_in_place_on_one_thread_or_many(activation, extra, rng):
    """`apply_in_place` on SERIAL_VALUES values (one thread) and one more (the parallel
    kernels), against the op's own reference."""
    from graphconv.ops.activations import cpu as activations_cpu, fused_reference
    values = random_input(rng, (1, activations_cpu.SERIAL_VALUES + extra, 1, 1)) * 4
    want = fused_reference(activation, values)
    activations_cpu.apply_in_place(activation, values)
    np.testing.assert_allclose(values, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lanes", [8, 16])
@pytest.mark.parametrize("in_shape,batch", [((40, 7, 8), 2), ((24, 3, 3), 1), ((16, 12, 12), 1)])
@pytest.mark.parametrize("storage", STORAGES)
def test_conv_stream_in_either_vector_width(lanes, in_shape, batch, storage, rng, monkeypatch):
    """The stream strategy with its positions 8 or 16 to a vector: 60 positions (4 vectors
    of 16), 1 (the matrix-vector path) and 100 (a block of 64, then 2 vectors of 16 and
    an 8-lane tile for the last 8 of the 104 it pads to)."""
    monkeypatch.setattr(vector_tile, "STREAM_LANES", lanes)
    check_op("conv", dict(out_channels=70, kernel_size=3, activation="relu"), [in_shape], rng, batch=batch,
             strategy="stream", storage=storage)


# ---- the references against their ops' PyTorch equivalents, over the cases above ---------

torch_only = pytest.mark.skipif(torch is None, reason="torch not installed")


@torch_only
@pytest.mark.parametrize("params", CONV_CASES)
def test_conv_reference_matches_torch(params, rng):
    p, w, xs, want = check_op("conv", params, [(6, 11, 13)], rng)
    np.testing.assert_allclose(want, op_forward(get_op("conv"), p, w, xs), rtol=1e-4, atol=1e-4)


@torch_only
@pytest.mark.parametrize("params", POOL_CASES)
def test_pool_references_match_torch(params, rng):
    p, w, xs, want = check_op("maxpool", params, [(3, 9, 9)], rng)
    np.testing.assert_allclose(want, op_forward(get_op("maxpool"), p, w, xs))
    if pair(p["dilation"]) == (1, 1):  # PyTorch has no dilated average pooling
        p, w, xs, want = check_op("avgpool", params, [(3, 9, 9)], rng)
        np.testing.assert_allclose(want, op_forward(get_op("avgpool"), p, w, xs), rtol=1e-5, atol=1e-6)


@torch_only
def test_lrn_reference_matches_torch(rng):
    for size in (1, 2, 3, 5):
        p, w, xs, want = check_op("lrn", dict(size=size, alpha=0.3, beta=0.75, k=2.0), [(6, 3, 4)], rng)
        np.testing.assert_allclose(want, op_forward(get_op("lrn"), p, w, xs), rtol=1e-5, atol=1e-6)


@torch_only
@settings(max_examples=150, deadline=None)
@given(op=st.sampled_from(["maxpool", "avgpool"]), kh=st.integers(1, 5), kw=st.integers(1, 5),
       sh=st.integers(1, 4), sw=st.integers(1, 4), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dilation=st.integers(1, 2), h=st.integers(1, 11), w=st.integers(1, 11),
       ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_pool_reference_matches_torch_hypothesis(op, kh, kw, sh, sw, ph, pw, dilation, h, w, ceil_mode,
                                                 count_include_pad):
    """ceil_mode x count_include_pad x padding x stride x kernel against PyTorch: the same
    inputs accepted or refused, the same output size, the same values (PyTorch's divisor
    for a ceil-mode window past the padding is the subtle one)."""
    if ph > kh // 2 or pw > kw // 2:
        return  # PyTorch refuses padding over half the kernel; graphconv measures it against the extent
    if op == "avgpool":
        dilation = 1  # PyTorch has no dilated average pooling
    opdef = get_op(op)
    raw = dict(kernel_size=[kh, kw], stride=[sh, sw], padding=[ph, pw], dilation=dilation, ceil_mode=ceil_mode)
    if op == "avgpool":
        raw["count_include_pad"] = count_include_pad
    params = normalize_params(opdef, raw)
    x = np.random.default_rng(kh * 100 + h * 13 + w).standard_normal((2, 3, h, w)).astype(np.float32)
    try:
        out_shape = opdef.shape(params, [x.shape[1:]])
    except ShapeError:
        with pytest.raises(RuntimeError):
            op_forward(opdef, params, {}, [x])
        return
    want = op_forward(opdef, params, {}, [x])
    assert want.shape[1:] == out_shape
    np.testing.assert_allclose(opdef.reference(params, {}, [x]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_kernel(opdef, params, {}, [x]), want, rtol=1e-5, atol=1e-6)


def test_clip_passes_nan_through_like_torch():
    """NaN fails both comparisons, so it is not clamped (torch.clamp keeps it too);
    infinities are clamped."""
    opdef = get_op("clip")
    params = normalize_params(opdef, dict(min=0.0, max=6.0))
    x = np.array([np.nan, -np.inf, np.inf, -1.0, 3.0, 7.0], np.float32).reshape(1, 6, 1, 1)
    want = np.array([np.nan, 0.0, 6.0, 0.0, 3.0, 6.0], np.float32).reshape(1, 6, 1, 1)
    np.testing.assert_array_equal(run_kernel(opdef, params, {}, [x]), want)
    np.testing.assert_array_equal(opdef.reference(params, {}, [x]), want)
    if torch is not None:
        np.testing.assert_array_equal(op_forward(opdef, params, {}, [x]), want)


FAKE_QUANTIZE_TIES = (  # scale 0.5, int8: x / 0.5 is a tie at +-0.5, 1.5, 2.5 and 127.5; 200 and inf clamp to 127
    np.array([0.25, 0.75, 1.25, -0.25, -0.75, 100.0, -100.0, np.inf, -np.inf, np.nan, 63.5, 63.75], np.float32),
    np.array([0.0, 1.0, 1.0, -0.0, -1.0, 63.5, -64.0, 63.5, -64.0, np.nan, 63.5, 63.5], np.float32))


def test_fake_quantize_rounds_ties_to_even_and_clamps_like_torch():
    """Halfway values round to the even integer, as ONNX's QuantizeLinear and torch.round
    do (not away from zero); values past the range, infinities included, clamp to its
    ends; NaN stays NaN."""
    opdef = get_op("fake_quantize")
    params = normalize_params(opdef, dict(scale=0.5))
    x, want = (a.reshape(1, -1, 1, 1) for a in FAKE_QUANTIZE_TIES)
    np.testing.assert_array_equal(run_kernel(opdef, params, {}, [x]), want)
    np.testing.assert_array_equal(opdef.reference(params, {}, [x]), want)
    if torch is not None:
        np.testing.assert_array_equal(op_forward(opdef, params, {}, [x]), want)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("kernel_size, nans", [(3, 1 + 2 + 1), (2, 3)])
def test_maxpool_propagates_nan_like_torch(storage, kernel_size, nans):
    """A window holding a NaN pools to NaN wherever the NaN sits in it (first tap, later
    tap, first row, later row), as torch.nn.MaxPool2d and the numpy reference do; the
    windows without one are untouched. In either storage: channels-last small windows
    have a kernel of their own, which keeps the NaN beside a max that would drop it."""
    opdef = get_op("maxpool")
    params = normalize_params(opdef, dict(kernel_size=kernel_size, stride=2, padding=kernel_size // 2))
    x = np.arange(2 * 7 * 8, dtype=np.float32).reshape(1, 2, 7, 8)
    x[0, 0, 0, 0] = x[0, 0, 4, 5] = x[0, 1, 6, 7] = np.nan
    got = run_kernel(opdef, params, {}, [x], storage)
    want = opdef.reference(params, {}, [x])
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got).sum() == nans  # 3x3: (4, 5) is in two windows along the row, one down the column
    if torch is not None:
        np.testing.assert_array_equal(op_forward(opdef, params, {}, [x]), want)


@pytest.mark.parametrize("storage", STORAGES)
def test_channel_max_propagates_nan_like_torch(storage):
    """A position with a NaN among its channels (first, middle or last) has max NaN, as
    torch.amax and numpy give; the others are their largest channel, -inf included."""
    opdef = get_op("channel_max")
    x = np.arange(2 * 4 * 3 * 5, dtype=np.float32).reshape(2, 4, 3, 5) % 7 - 3
    x[0, 0, 0, 0] = x[0, 2, 1, 3] = x[1, 3, 2, 4] = np.nan
    x[1, :, 0, 0] = -np.inf
    want = opdef.reference({}, {}, [x])
    assert np.isnan(want).sum() == 3 and want[1, 0, 0, 0] == -np.inf
    np.testing.assert_array_equal(run_kernel(opdef, {}, {}, [x], storage), want)
    if torch is not None:
        np.testing.assert_array_equal(op_forward(opdef, {}, {}, [x]), want)


@pytest.mark.parametrize("exponent", [0.5, -0.5, -1.0, -2.0, 3.0, 1 / 3, 2.5, 0.0])
def test_pow_gives_nan_and_infinities_like_torch(exponent):
    """A negative value to a fractional power is NaN, 0 to a negative power inf (-0 to an
    odd one -inf), infinities and NaN as C's pow: what numpy gives, and torch but for
    the power -0.5."""
    opdef = get_op("pow")
    params = normalize_params(opdef, dict(exponent=exponent))
    x = np.array([-2.0, -0.0, 0.0, 0.5, 3.0, np.inf, -np.inf, np.nan, -1.0], np.float32).reshape(1, 9, 1, 1)
    want = opdef.reference(params, {}, [x])
    np.testing.assert_array_equal(run_kernel(opdef, params, {}, [x]), want)
    if torch is not None and exponent != -0.5:  # torch takes -0.5 as rsqrt: -inf at -0, NaN at -inf (C: inf, 0)
        np.testing.assert_allclose(op_forward(opdef, params, {}, [x]), want, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["softmax", "log_softmax"]), c=st.integers(1, 70), h=st.integers(1, 3),
       w=st.integers(1, 40), spread=st.sampled_from([1.0, 30.0, 300.0]), seed=st.integers(0, 2**16))
def test_softmax_hypothesis(op, c, h, w, spread, seed):
    """Any number of classes and any row width (the kernel's loops run over a row's
    pixels, vectorised: widths off its vector width leave a tail), and logits far apart,
    where e^(x - max) is far below float32's smallest number for all but the top class."""
    opdef = get_op(op)
    params = normalize_params(opdef, {})
    x = (spread * np.random.default_rng(seed).standard_normal((2, c, h, w))).astype(np.float32)
    np.testing.assert_allclose(run_kernel(opdef, params, {}, [x]), opdef.reference(params, {}, [x]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_of_a_nan_or_inf_logit_is_nan_at_that_cell_only_like_torch(op):
    opdef = get_op(op)
    params = normalize_params(opdef, {})
    x = np.zeros((1, 3, 1, 4), np.float32)
    x[0, :, 0, 0] = [np.nan, 0.0, 1.0]
    x[0, :, 0, 1] = [np.inf, 0.0, 1.0]
    x[0, :, 0, 2] = [-np.inf, 0.0, 1.0]
    got = run_kernel(opdef, params, {}, [x])
    assert np.isnan(got[0, :, 0, :2]).all() and not np.isnan(got[0, :, 0, 2:]).any()
    assert got[0, 0, 0, 2] == (0.0 if op == "softmax" else -np.inf)
    if torch is not None:
        np.testing.assert_allclose(got, op_forward(opdef, params, {}, [x]), rtol=1e-6)


def test_clip_refuses_min_above_max():
    opdef = get_op("clip")
    with pytest.raises(ShapeError, match="min 2.0 is greater than max 1.0"):
        opdef.shape(normalize_params(opdef, dict(min=2, max=1)), [(1, 2, 2)])
    assert normalize_params(opdef, {}) == {"min": -3.4028234663852886e38, "max": 3.4028234663852886e38}


@pytest.mark.parametrize("channels,size", [(3, (5, 7)), (17, (1, 1)), (2, (33, 40))])
def test_batchnorm_and_global_pool_over_larger_maps(channels, size, rng):
    """Larger than the examples: a mean far from zero (the kernel subtracts it before
    scaling, so its small differences keep their precision), and a global mean over
    1320 pixels (summed in float64)."""
    batchnorm = get_op("batchnorm")
    params = normalize_params(batchnorm, dict(eps=1e-3))
    x = (100.0 + rng.standard_normal((2, channels, *size))).astype(np.float32)
    weights = {"weight": rng.uniform(0.5, 2, channels), "bias": rng.uniform(-1, 1, channels),
               "running_mean": 100.0 + rng.uniform(-1, 1, channels),
               "running_var": rng.uniform(0.5, 2, channels)}
    weights = {k: v.astype(np.float32) for k, v in weights.items()}
    want = batchnorm.reference(params, weights, [x])
    np.testing.assert_allclose(run_kernel(batchnorm, params, weights, [x]), want, rtol=1e-4, atol=1e-4)
    if torch is not None:
        np.testing.assert_allclose(op_forward(batchnorm, params, weights, [x]), want, rtol=1e-4, atol=1e-4)
    pool = get_op("globalavgpool")
    np.testing.assert_allclose(run_kernel(pool, {}, {}, [x]), pool.reference({}, {}, [x]), rtol=1e-6)


def test_flatten_is_c_h_w_order():
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    got = run_kernel(get_op("flatten"), {}, {}, [x])
    assert got.shape == (1, 24, 1, 1)
    np.testing.assert_array_equal(got.ravel(), np.arange(24))


NO_SCIPY_RUN = """
import sys
class NoScipy:
    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("scipy is blocked in this test")
sys.meta_path.insert(0, NoScipy())
import numpy as np
from graphconv.ops import get_op
from graphconv.ops.conv import cpu as conv_cpu
from graphconv.ops.fc import cpu as fc_cpu
from graphconv.params import compact_params, normalize_params
rng = np.random.default_rng(0)
conv = get_op("conv")
for raw in (dict(out_channels=8, kernel_size=3, padding=1), dict(out_channels=8, kernel_size=1)):
    params = normalize_params(conv, raw)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in conv.weight_shapes(params, [x.shape[1:]]).items()}
    for strategy in conv_cpu.STRATEGIES:
        if conv_cpu.can_run(strategy, params):
            got = np.empty((2, *conv.shape(params, [x.shape[1:]])), np.float32)
            conv_cpu.run_conv(params, w, [x], got, strategy=strategy)
            np.testing.assert_allclose(got, conv.reference(params, w, [x]), rtol=1e-4, atol=1e-4)
fc = get_op("fc")
params = normalize_params(fc, dict(out_features=5))
x = rng.standard_normal((70, 12, 1, 1)).astype(np.float32)
w = {k: rng.standard_normal(s).astype(np.float32) for k, s in fc.weight_shapes(params, [x.shape[1:]]).items()}
got = np.empty((70, 5, 1, 1), np.float32)
fc_cpu.run_fc(params, w, [x], got)
np.testing.assert_allclose(got, fc.reference(params, w, [x]), rtol=1e-4, atol=1e-4)
print("ran without scipy")
"""


def test_cpu_kernels_run_without_scipy():
    """graphconv does not depend on scipy: its kernels call BLAS through numpy, outside
    numba code (numba's own np.dot would need scipy's BLAS)."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", NO_SCIPY_RUN], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ran without scipy" in result.stdout


@pytest.mark.parametrize("channels,size,threads", [(3, (40, 33), 2), (70, (12, 12), 3), (130, (7, 7), 2),
                                                   (20, (300, 200), 2), (17, (9, 9), 1)])
def test_global_average_pool_channels_last_by_pixels_or_by_channels(channels, size, threads, rng):
    """Channels-last global pooling cut into parts of pixels (maps of PIXEL_BLOCK pixels a
    thread or more: several blocks a part, a last block part-full) or into runs of
    channels (smaller maps), on values far from 0, where float32 sums of a 60000-pixel
    map would drift: within a few float32 roundings (of the 64-pixel blocks' sums) of the
    float64 mean, whatever the map's size."""
    from graphconv.ops.globalavgpool import cpu as pool_cpu
    pool = get_op("globalavgpool")
    x = (100.0 + rng.standard_normal((2, channels, *size))).astype(np.float32)
    stored = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert nhwc(stored) is not None
    out = np.empty((2, channels, 1, 1), np.float32)
    with mock.patch.object(pool_cpu, "get_num_threads", lambda: threads):
        pool_cpu.run_globalavgpool({}, {}, [stored], out)
    np.testing.assert_allclose(out, pool.reference({}, {}, [x]), rtol=5e-7)


@pytest.mark.parametrize("block", [1, 2, 3])
@pytest.mark.parametrize("order", ["blocks", "channels"])
def test_depth_to_space_undoes_space_to_depth_and_is_pixel_shuffle(block, order, rng):
    """Checked against what does not share its code: its CPU kernel after space_to_depth's
    gives the input back, and in the channels order it is PyTorch's pixel_shuffle."""
    to_depth, to_space = get_op("space_to_depth"), get_op("depth_to_space")
    params = normalize_params(to_space, dict(block=block, order=order))
    x = random_input(rng, (2, 3, 4 * block, 5 * block))
    depth = run_kernel(to_depth, normalize_params(to_depth, dict(block=block, order=order)), {}, [x])
    np.testing.assert_array_equal(run_kernel(to_space, params, {}, [depth]), x)
    if order == "channels":
        torch = pytest.importorskip("torch")
        shuffled = torch.nn.functional.pixel_shuffle(torch.from_numpy(depth), block).numpy()
        np.testing.assert_array_equal(run_kernel(to_space, params, {}, [depth]), shuffled)


def test_an_op_that_sees_its_whole_input_names_a_pass_that_makes_it_slide():
    """`sees_whole_input`'s pass is what the messages refusing such a layer tell the user to
    run: it must exist, and each op it makes slide is one of those ops."""
    from graphconv.pass_manager import get_pass
    whole = {op.name: op.sees_whole_input for op in all_ops() if op.sees_whole_input}
    assert set(whole) == {"fc", "flatten", "globalavgpool"}
    for cure, why in whole.values():
        assert get_pass(cure).name == cure and why
    assert {op.name for op in all_ops() if op.fixes_input_size} == {"fc", "flatten"}
