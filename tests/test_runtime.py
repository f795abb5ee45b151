"""Whole networks: the Numba runtime against the numpy references and against PyTorch;
the plans it runs (shapes, lifetimes, buffers) and where its output goes."""
from types import SimpleNamespace

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphconv
from graphconv.errors import GraphconvError
from graphconv.runtime import ALIGN_FLOATS, PLANS_KEPT, Executor, _place_values, make_plan, run_reference
from graphconv.shapes import infer_shapes
from conftest import SPECS, random_input
from nets import GATED
from graphconv.passes import channels_last as channels_last_pass
from graphconv.torch_bridge import torch, torch_forward

SMALL_SPECS = ["lenet", "tinydag"]


@pytest.mark.parametrize("name", SMALL_SPECS)
@pytest.mark.parametrize("batch", [1, 3])
def test_network_matches_reference(name, batch, rng):
    model = graphconv.load(SPECS / f"{name}.yaml")
    x = random_input(rng, (batch, *model.crop_shape))
    np.testing.assert_allclose(model.run(x, full=True), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("name", SMALL_SPECS + ["alexnet"])
def test_network_matches_torch(name, rng):
    model = graphconv.load(SPECS / f"{name}.yaml")
    x = random_input(rng, (2, *model.crop_shape))
    got = model.run(x)
    want = torch_forward(model.graph, x)
    assert got.shape == want.shape[:2]  # a classifier's (N, K), as PyTorch's returns
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-3, atol=1e-6)
    compiled = graphconv.compile_model(model.graph)
    np.testing.assert_allclose(compiled.run(x), want, rtol=1e-3, atol=1e-6)


def test_single_image_and_output_shape(rng):
    model = graphconv.load(SPECS / "lenet.yaml")
    assert model.run(random_input(rng, (1, 32, 32))).shape == (1, 10)
    assert graphconv.compile_model(model.graph).run(random_input(rng, (1, 32, 32))).shape == (1, 10, 1, 1)


@pytest.mark.parametrize("shape,message", [
    ((2, 3, 32, 32), r"input must be \(N, 1, H, W\)"),
    ((1, 1, 10, 10), r"the input is 10x10, smaller than the classifier's 32x32 crop"),
    ((1, 1, 40, 40), r"layer 'fc3': fc expects weight .* only accepts the crop size"),
])
def test_bad_inputs_are_user_errors(shape, message, rng):
    model = graphconv.load(SPECS / "lenet.yaml")
    with pytest.raises(GraphconvError, match=message):
        model.run(random_input(rng, shape))


def test_integer_input_is_rejected():
    with pytest.raises(GraphconvError, match="float32"):
        graphconv.load(SPECS / "lenet.yaml").run(np.zeros((1, 32, 32), np.int64))


@pytest.mark.parametrize("name", ["tinydag", "alexnet"])
def test_plan_shapes_lifetimes_and_arena(name):
    """Shapes are the shape rules' (with the batch); two values overlap in the arena only
    when one's last reader has run before the other is written, so no layer writes over
    one of its inputs."""
    graph = graphconv.load(SPECS / f"{name}.yaml").graph
    hw = graph.input_shape[1:]
    plan = make_plan(graph, 3, hw)
    assert plan.shapes == {k: (3, *v) for k, v in infer_shapes(graph, hw).items()}
    layers = graph.layers()
    written = {node.name: index for index, node in enumerate(layers)}
    for index, node in enumerate(layers):
        assert plan.last_use[node.name] == max([index] + [i for i, user in enumerate(layers)
                                                          if node in user.inputs])
    assert set(plan.offset_of) == set(written) - {graph.output.name}
    check_no_live_values_overlap(plan, written)
    assert plan.arena_floats < sum(np.prod(plan.shapes[a]) for a in plan.offset_of), "memory is reused"


def check_no_live_values_overlap(plan, written):
    """Every value fits the arena at an aligned offset, and values whose lives meet (from
    the layer that writes one to the last that reads it) take disjoint memory."""
    spans = {a: (offset, offset + int(np.prod(plan.shapes[a]))) for a, offset in plan.offset_of.items()}
    for a, (start, end) in spans.items():
        assert start % ALIGN_FLOATS == 0 and end <= plan.arena_floats
        for b, (other_start, other_end) in spans.items():
            if a != b and start < other_end and other_start < end:
                first, second = sorted((a, b), key=written.get)
                assert plan.last_use[first] < written[second], f"{first} and {second} overlap"


def test_buffers_hold_no_more_than_the_values_alive_together():
    """On a chain, the arena holds at most the two largest neighbouring activations, like
    freeing each value after its last use did."""
    graph = graphconv.compile_model(SPECS / "alexnet.yaml").graph
    plan = make_plan(graph, 1, (384, 384))
    layers = graph.layers()
    sizes = [np.prod(plan.shapes[n.name]) for n in layers if n.name != graph.output.name]
    assert plan.arena_floats <= max(a + b for a, b in zip(sizes, sizes[1:])) + 2 * ALIGN_FLOATS
    assert plan.buffer_bytes == 4 * plan.arena_floats


DENSE_BLOCK = """
name: dense
input: {shape: [8, 24, 24]}
layers:
  - {name: stem, op: conv, out_channels: 64, kernel_size: 1}
  - {name: wide0, op: conv, out_channels: 128, kernel_size: 1}
  - {name: new0, op: conv, out_channels: 8, kernel_size: 1}
""" + "".join(f"""  - {{name: cat{i}, op: concat, inputs: [stem{"".join(f", new{j}" for j in range(i))}]}}
  - {{name: wide{i}, op: conv, out_channels: 128, kernel_size: 1}}
  - {{name: new{i}, op: conv, out_channels: 8, kernel_size: 1}}
""" for i in range(1, 6)) + "  - {name: out, op: concat, inputs: [stem, new0, new1, new2, new3, new4, new5]}\n"


def test_a_dense_block_s_plan_holds_about_what_is_live_at_once(write_spec, rng):
    """DenseNet's blocks concatenate every earlier layer's few channels, which stay live to
    the block's end: reusing freed buffers whole, each 8-channel value held a freed
    map of up to 112 channels until then (DenseNet-121 at 2048x2048: 2692 MB planned, 576
    live at once). The arena holds at most an eighth more than the most live at once, and
    the run is still right."""
    model = graphconv.load(write_spec(DENSE_BLOCK))
    plan = make_plan(model.graph, 1, (24, 24))
    layers = model.graph.layers()
    written = {node.name: index for index, node in enumerate(layers)}
    check_no_live_values_overlap(plan, written)
    live = max(sum(int(np.prod(plan.shapes[a])) for a in plan.offset_of if written[a] <= i <= plan.last_use[a])
               for i in range(len(layers)))
    assert plan.arena_floats <= 1.125 * live
    x = random_input(rng, (1, 8, 24, 24))
    np.testing.assert_allclose(model.executor("cpu").run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 6)), min_size=1, max_size=30))
def test_values_placed_in_the_arena_never_overlap_while_both_live(values):
    """Any lives and sizes (value i written by layer i, last read `reach` layers later):
    the greedy placement never lets two values whose lives meet share memory, starts each
    on a cache line and keeps the arena within the sum of the values."""
    layers = [SimpleNamespace(name=f"v{i}") for i in range(len(values) + 1)]  # the last is the output
    shapes = {f"v{i}": (1, 1, 1, size) for i, (size, _) in enumerate(values)}
    last_use = {f"v{i}": min(i + reach, len(values)) for i, (_, reach) in enumerate(values)}
    offset_of, arena = _place_values(layers, shapes, last_use, f"v{len(values)}")
    plan = SimpleNamespace(offset_of=offset_of, shapes=shapes, last_use=last_use, arena_floats=arena)
    check_no_live_values_overlap(plan, {f"v{i}": i for i in range(len(values))})
    assert arena <= sum(-(-size // ALIGN_FLOATS) * ALIGN_FLOATS for size, _ in values)


def test_plans_are_cached_per_input_size_and_bounded():
    executor = Executor(graphconv.compile_model(SPECS / "lenet.yaml").graph)
    first = executor.plan(1, 32, 32)
    assert executor.plan(1, 32, 32) is first
    for size in range(36, 36 + 4 * PLANS_KEPT, 4):
        executor.plan(1, size, size)
    assert executor.plan(1, 32, 32) is not first, "the oldest plan was dropped"
    assert executor.plan(1, 32, 32) == first


def test_a_larger_run_lets_go_of_the_arena_it_replaces_before_making_its_own(rng):
    """A tiled run's tile of 4080x4032 pixels after one of 4032x4080 made its arena while
    the smaller one was still held: both at once, 380 MB over the memory budget. The
    larger run's peak now holds the new arena, not the old one beside it; and
    `release_memory` lets go of it between runs."""
    import tracemalloc

    model = graphconv.compile_model(SPECS / "lenet.yaml")
    executor = model.executor("cpu")
    small, large = random_input(rng, (1, 1, 300, 300)), random_input(rng, (1, 1, 340, 340))
    tracemalloc.start()  # before the first run: the old arena is traced, and so is its release
    try:
        executor.run(small)
        old = executor._arena.nbytes
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        executor.run(large)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    new, output = executor._arena.nbytes, 4 * int(np.prod(executor.plan(1, 340, 340).output_shape))
    assert new > old > 4 * large.size  # the arena is what a run holds, and it grew
    assert peak < new - old // 2 + 2 * output + (1 << 20), (peak, old, new)
    assert executor.release_memory() and executor._arena is None
    np.testing.assert_array_equal(executor.run(large), model.run(large))


def test_runs_of_several_sizes_share_buffers(rng):
    """Buffers grow to the largest size asked of them and are reused: alternating sizes
    and batches gives each run the right answer, and each output stays the caller's."""
    model = graphconv.compile_model(SPECS / "tinydag.yaml")
    executor = model.executor("cpu")
    inputs = [random_input(rng, shape) for shape in
              [(1, 3, 28, 24), (2, 3, 60, 52), (1, 3, 28, 24), (3, 3, 36, 40)]]
    outputs = [executor.run(x) for x in inputs]
    for x, got in zip(inputs, outputs):
        np.testing.assert_allclose(got, run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


def test_layers_bound_to_the_buffers_follow_sizes_and_thread_counts(rng):
    """The Executor binds its convs' and pools' calls to a plan's buffers once
    (`bind_values`) and again when the buffers grow or numba's thread count changes:
    every run, in any order of sizes and counts, still gets the reference's answer."""
    model = graphconv.compile_model(SPECS / "tinydag.yaml")
    check_bound_runs(model, [((1, 3, 28, 24), False), ((2, 3, 60, 52), False), ((1, 3, 28, 24), True),
                             ((1, 3, 28, 24), False), ((2, 3, 60, 52), True)],
                     ["b1", "b2", "join", "mix", "pool", "fc1", "fc2"], rng)  # not stem: it reads the input


def check_bound_runs(model, runs, bound_layers, rng):
    """Runs of (shape, on one thread or all), in turn: each gets the reference's answer,
    and its plan's bound calls are those of `bound_layers`, bound for its thread count."""
    executor = model.executor("cpu")
    threads = numba.get_num_threads()
    try:
        for shape, one_thread in runs:
            count = 1 if one_thread else threads
            numba.set_num_threads(count)
            x = random_input(rng, shape)
            np.testing.assert_allclose(executor.run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)
            state, _, calls = executor._bound[(shape[0], *shape[2:])]
            assert state == count
            assert [step.name for step, call in zip(executor.steps, calls) if call is not None] == bound_layers
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("channels_last", [True, False])
def test_pools_gates_and_products_bound_to_the_buffers_follow_sizes_and_thread_counts(channels_last, write_spec,
                                                                                    rng, monkeypatch):
    """A squeeze-and-excitation block's global pool, sigmoid and channel product bind to
    the buffers like the convs (`ops/binding.py`): pooled by pixels or by channels as the
    thread count allows, values stored either way, every run the reference's answer."""
    monkeypatch.setattr(channels_last_pass, "ENABLED", channels_last)
    model = graphconv.load(write_spec(GATED))
    # c1's map: 5x5, pooled by channels; 19x19, by pixels (on all threads, or one)
    check_bound_runs(model, [((1, 3, 12, 12), False), ((2, 3, 40, 40), False), ((1, 3, 12, 12), True),
                             ((2, 3, 40, 40), True)],
                     ["squeeze", "reduce", "expand", "gate", "excite", "head"], rng)


def test_output_goes_into_out(rng):
    """A C-contiguous `out` is written by the last kernel itself; a strided view into a
    larger map (what a tile will pass) gets a copy; anything else is refused."""
    executor = Executor(graphconv.load(SPECS / "lenet.yaml").graph)
    x = random_input(rng, (2, 1, 32, 32))
    want = run_reference(executor.graph, x)
    out = np.empty((2, 10, 1, 1), np.float32)
    assert executor.run(x, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    big = np.zeros((2, 12, 3, 3), np.float32)
    view = big[:, 1:11, 1:2, 2:]
    assert executor.run(x, out=view) is view
    np.testing.assert_allclose(view, want, rtol=1e-4, atol=1e-5)
    assert np.count_nonzero(big) == want.size
    for bad in (np.empty((2, 10, 1, 2), np.float32), np.empty((2, 10, 1, 1)), [0.0] * 20):
        with pytest.raises(GraphconvError, match=r"out must be a float32 array of shape \(2, 10, 1, 1\)"):
            executor.run(x, out=bad)
    frozen = np.empty((2, 10, 1, 1), np.float32)
    frozen.setflags(write=False)
    with pytest.raises(GraphconvError, match="writable"):
        executor.run(x, out=frozen)


def test_profile_names_every_layer(rng):
    executor = Executor(graphconv.load(SPECS / "tinydag.yaml").graph)
    profile = {}
    executor.run(random_input(rng, (1, 3, 28, 24)), profile)
    assert list(profile) == [node.name for node in executor.graph.layers()]
    assert all(seconds >= 0 for seconds in profile.values())


def test_taps_return_each_named_layer_s_value_though_its_buffer_is_reused(rng):
    """The values a run taps are copies taken as each layer writes them (verify compares
    many layers' maps from one run), NCHW whichever way the kernels stored them."""
    graph = graphconv.load(SPECS / "tinydag.yaml").graph
    executor = Executor(graph.copy())
    assert any(node.annotations.get("layout") == "channels-last" for node in executor.graph.layers())
    x = random_input(rng, (2, 3, 28, 24))
    names = [node.name for node in graph.layers()]
    taps = dict.fromkeys(names)
    out = executor.run(x, taps=taps)
    np.testing.assert_array_equal(taps[names[-1]], out)
    values = {graph.input.name: x}
    for node in graph.layers():  # each layer's reference on the tapped values of its inputs
        values[node.name] = taps[node.name]
        expected = node.opdef.reference(node.params, node.weights, [values[i.name] for i in node.inputs])
        assert taps[node.name].flags.c_contiguous
        np.testing.assert_allclose(taps[node.name], expected, rtol=1e-4, atol=1e-4)


def test_a_network_without_layers_is_refused():
    graph = graphconv.load(SPECS / "lenet.yaml").graph
    for node in reversed(graph.layers()):
        graph.remove(node)
    with pytest.raises(GraphconvError, match="no layers"):
        Executor(graph)


def test_edits_after_a_run_take_effect_on_the_next_run(rng):
    """A Model keeps its executors and receptive field per graph version: an edit to
    the weights, the params or the structure is what the next run computes."""
    model = graphconv.compile_model(SPECS / "lenet.yaml")
    x = random_input(rng, (1, 1, 72, 72))
    first = model.run(x)
    model.graph.set_weights("fc5", bias=np.arange(10, dtype=np.float32))
    np.testing.assert_allclose(model.run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(model.run(x), first)
    assert model.graph.node("conv1").params["activation"] == "relu"  # fused by the default pipeline
    before = model.run(x)
    model.graph.set_params("conv1", activation="none")
    assert not np.allclose(model.run(x), before)
    np.testing.assert_allclose(model.run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)
    model.graph.remove("prob")
    np.testing.assert_allclose(model.run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)
    model.graph.set_params("pool1", stride=1)
    assert model.output_stride == (2, 2), "the receptive field follows the edit"


def test_params_and_weights_are_edited_through_the_graph():
    graph = graphconv.load_spec(SPECS / "lenet.yaml")
    with pytest.raises(TypeError):
        graph.node("conv1").params["stride"] = 2
    with pytest.raises(TypeError):
        graph.node("conv1").weights["bias"] = np.zeros(6, np.float32)
    version = graph.version
    graph.set_params("conv1", stride=2)
    assert graph.version > version
