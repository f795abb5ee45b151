"""The channels-last pass and the runtime's channels-last storage: which values it marks,
that the CPU runtime hands them to kernels stored that way, and that whole networks give
the same maps with and without it."""
import numpy as np
import pytest

import graphconv
from graphconv.backends import get_backend
from graphconv.ops import get_op
from graphconv.ops.layout import is_channels_last, stored_channels_last
from graphconv.params import normalize_params
from graphconv.pass_manager import get_pass, run_passes
from graphconv.runtime import Executor
from graphconv.passes import channels_last as channels_last_pass

from conftest import SPECS, random_input
from nets import UNPADDED
from test_compiler import RESNET

POOLS = """
name: pools
input: {name: data, shape: [3, 20, 20]}
layers:
  - {name: a, op: conv, out_channels: 8, kernel_size: 3}
  - {name: a_pool, op: maxpool, kernel_size: 2}
  - {name: b, op: conv, out_channels: 8, kernel_size: 3}
  - {name: b_pool, op: maxpool, kernel_size: 2}
  - {name: norm, op: lrn, size: 3}
  - {name: c, op: conv, out_channels: 4, kernel_size: 1}
"""
NETWORKS = {"tinyresnet": RESNET, "pools": POOLS, **UNPADDED}


def compiled(write_spec, text):
    return graphconv.compile_model(write_spec(text)).graph


def test_marks_the_values_between_ops_that_take_channels_last(write_spec):
    graph = compiled(write_spec, RESNET)
    get_pass("channels-last").run(graph)
    # every value but the output (fc's conv): the batchnorms fold, the relus and the ReLU6
    # (a clip) fuse into their convs, the adds into the convs before them
    assert stored_channels_last(graph) == {"conv1", "pool1", "b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2",
                                           "b2_down", "gap"}
    assert {n.name for n in graph.layers()} - stored_channels_last(graph) == {"fc"}


def test_a_pool_reads_channels_last_into_either_storage_but_writes_channels_last_only_from_it(write_spec):
    """A pool writes an NCHW output from a channels-last input row by row at no extra cost
    (the reverse would be a transposing copy): b's value is channels-last though b_pool's
    must be NCHW (lrn reads it). It stayed NCHW, and a stem conv before a network's last
    pool ran NCHW at 3.7x the time. The other way round, a pool's output is channels-last
    only where its input is (a_pool's)."""
    graph = compiled(write_spec, POOLS)
    get_pass("channels-last").run(graph)
    assert stored_channels_last(graph) == {"a", "a_pool", "b"}
    graph = compiled(write_spec, POOLS.replace("  - {name: a, op: conv, out_channels: 8, kernel_size: 3}",
                                               "  - {name: a, op: lrn, size: 3}"))
    get_pass("channels-last").run(graph)
    assert stored_channels_last(graph) == {"b"}  # a is NCHW (lrn), so a_pool is too, though b reads it


def test_a_residual_input_is_stored_like_the_convs_output(write_spec):
    """A conv adds its residual input while writing, in its output's storage: tinydag's
    stem is channels-last because mix, which adds it, writes channels-last (its pool
    reads it so and writes NCHW for lrn, which takes NCHW only), so no run copies it into
    the other storage. The branches and their concat, which mix reads as its input, are
    channels-last. In the residual network above, whose convs all write channels-last,
    the residuals are channels-last."""
    graph = graphconv.compile_model(SPECS / "tinydag.yaml").graph
    get_pass("channels-last").run(graph)
    assert stored_channels_last(graph) == {"stem", "b1", "b2", "join", "mix", "fc1"}
    text = (SPECS / "tinydag.yaml").read_text()
    pool, norm = "  - {name: pool, op: maxpool, kernel_size: 3, stride: 2}\n", "  - {name: norm, op: lrn, size: 3}\n"
    graph = compiled(write_spec, text.replace(pool + norm, norm + pool))  # lrn reads mix: it writes NCHW
    get_pass("channels-last").run(graph)
    assert stored_channels_last(graph) == {"b1", "b2", "join", "fc1"}  # and its residual, stem, is NCHW


def test_the_mark_shows_in_the_printed_ir(write_spec):
    graph = run_passes(compiled(write_spec, RESNET), "channels-last")
    lines = {line.split(" = ")[0].strip(): line for line in str(graph).splitlines() if " = " in line}
    assert lines["%pool1"].endswith("[channels-last]") and lines["%b2_conv1"].endswith("[channels-last]")
    assert "channels-last" not in lines["%fc"]


def test_turned_off_it_clears_its_marks(write_spec, monkeypatch):
    graph = compiled(write_spec, RESNET)
    assert get_pass("channels-last").run(graph) is True
    assert get_pass("channels-last").run(graph) is False  # nothing left to change
    monkeypatch.setattr(channels_last_pass, "ENABLED", False)
    assert get_pass("channels-last").run(graph) is True
    assert stored_channels_last(graph) == frozenset()


def test_the_cpu_runtime_stores_marked_values_channels_last(write_spec, rng):
    """Each kernel sees its inputs and output stored as the plan says: channels-last for
    the marked values, NCHW for the others and always for the network's input and output."""
    executor = Executor(compiled(write_spec, RESNET))
    marked = stored_channels_last(executor.graph)
    seen = {}
    for step in executor.steps:
        def spy(inputs, out, _call=step.call, _step=step):
            seen[_step.name] = ([is_channels_last(x) for x in inputs], is_channels_last(out))
            _call(inputs, out)
        step.call = spy
    executor.run(random_input(rng, (2, 3, 64, 56)))  # gap (a 4x4 window pool) makes a 5x4 map: not 1x1
    for step in executor.steps:
        inputs, out = seen[step.name]
        assert inputs == [name in marked for name in step.inputs], step.name
        assert out == (step.name in marked), step.name
    assert seen["conv1"][0] == [False] and seen["fc"][1] is False


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("size", [None, (2, 1)])
def test_networks_give_the_same_maps_with_and_without_it(write_spec, rng, monkeypatch, name, size):
    """At the crop and on a larger image (`size`: extra crops down and across)."""
    text = NETWORKS[name]
    graph = compiled(write_spec, text)
    c, h, w = graph.input_shape
    if size is not None:
        h, w = h * size[0], w * size[1]
    x = random_input(rng, (2, c, h, w))
    bound = Executor(graph)
    with_it = bound.run(x)
    assert stored_channels_last(bound.graph), "nothing was stored channels-last: the test would prove nothing"
    assert stored_channels_last(graph) == frozenset()  # the executor's copy is marked, not the graph given
    monkeypatch.setattr(channels_last_pass, "ENABLED", False)
    bound = Executor(graph)
    without = bound.run(x)
    assert stored_channels_last(bound.graph) == frozenset()
    np.testing.assert_allclose(with_it, without, rtol=1e-4, atol=1e-5)


def test_bundled_specs_give_the_same_maps_with_and_without_it(rng, monkeypatch):
    model = graphconv.compile_model(SPECS / "tinydag.yaml")
    x = random_input(rng, (1, *model.crop_shape[:1], 2 * model.crop_shape[1], 2 * model.crop_shape[2]))
    with_it = Executor(model.graph).run(x)
    monkeypatch.setattr(channels_last_pass, "ENABLED", False)
    np.testing.assert_allclose(with_it, Executor(model.graph).run(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params,in_shape,nchw,channels_last", [
    (dict(out_channels=256, kernel_size=1), (1, 64, 56, 56), "pointwise", "outer"),  # reads it in place
    (dict(out_channels=2048, kernel_size=1), (1, 512, 7, 7), "stream", "outer"),  # ResNet's layer4: packed weights
    (dict(out_channels=4096, kernel_size=6), (1, 256, 6, 6), "stream", "stream"),  # AlexNet's fc6: 151 MB, streams
    (dict(out_channels=64, kernel_size=3, padding=1), (1, 64, 56, 56), "winograd", "winograd"),
])
def test_the_conv_strategy_follows_the_storage(params, in_shape, nchw, channels_last, monkeypatch):
    """What `--profile` shows per layer is what the kernel runs, for either storage (with
    8-lane tiles: 16 take big NCHW 1x1 layers to outer as well)."""
    from graphconv.ops import vector_tile
    monkeypatch.setattr(vector_tile, "OUTER_LANES", 8)
    conv = get_op("conv")
    params = normalize_params(conv, params)
    assert get_backend("cpu").variant(conv, params, in_shape) == nchw
    assert get_backend("cpu").variant(conv, params, in_shape, channels_last=True) == channels_last
