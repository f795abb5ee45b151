"""Whole networks: the Numba runtime against the numpy references and against PyTorch."""
import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.runtime import Executor, resolve_device, run_reference
from conftest import SPECS, random_input
from graphconv.torch_bridge import torch, torch_forward

SMALL_SPECS = ["lenet", "tinydag"]


@pytest.mark.parametrize("name", SMALL_SPECS)
@pytest.mark.parametrize("batch", [1, 3])
def test_network_matches_reference(name, batch, rng):
    model = graphconv.load(SPECS / f"{name}.yaml")
    x = random_input(rng, (batch, *model.crop_shape))
    np.testing.assert_allclose(model.run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("name", SMALL_SPECS + ["alexnet"])
def test_network_matches_torch(name, rng):
    model = graphconv.load(SPECS / f"{name}.yaml")
    x = random_input(rng, (2, *model.crop_shape))
    got = model.run(x)
    want = torch_forward(model.graph, x)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    compiled = graphconv.compile_model(model.graph)
    np.testing.assert_allclose(compiled.run(x), want, rtol=1e-3, atol=1e-6)


def test_single_image_and_output_shape(rng):
    model = graphconv.load(SPECS / "lenet.yaml")
    assert model.run(random_input(rng, (1, 32, 32))).shape == (1, 10, 1, 1)


@pytest.mark.parametrize("shape,message", [
    ((2, 3, 32, 32), r"input must be \(N, 1, H, W\)"),
    ((1, 1, 10, 10), r"input of 10x10 does not fit the network: lenet.yaml:11: layer .conv2.: kernel of 5x5"),
    ((1, 1, 40, 40), r"layer 'fc3': fc expects weight .* only accepts the crop size"),
])
def test_bad_inputs_are_user_errors(shape, message, rng):
    model = graphconv.load(SPECS / "lenet.yaml")
    with pytest.raises(GraphconvError, match=message):
        model.run(random_input(rng, shape))


def test_integer_input_is_rejected():
    with pytest.raises(GraphconvError, match="float32"):
        graphconv.load(SPECS / "lenet.yaml").run(np.zeros((1, 32, 32), np.int64))


def test_intermediates_are_freed():
    executor = Executor(graphconv.load(SPECS / "tinydag.yaml").graph)
    freed = [name for step in executor.steps for name in step.frees]
    assert len(freed) == len(set(freed))
    assert "stem_relu" in freed and "prob" not in freed


def test_unknown_device():
    with pytest.raises(GraphconvError, match="unknown device"):
        resolve_device("tpu")


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
