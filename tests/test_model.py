"""The Python API's Model: what `run` returns (the crop grid, or the full map), output
shapes of classifiers and dense maps, classify() on what users have, cell_box."""
import numpy as np
import pytest

import graphconv
from graphconv.dense import crop_loop
from conftest import random_input

# a 37x37 crop whose pool drops the crop's last row and column (33 -> 16): each cell's
# field is 36x36, so the network computes cells whose field fits the image but whose
# 37x37 crop would not
FLOOR_SPEC = """
name: floor
input: {shape: [1, 37, 37]}
layers:
  - {name: conv1, op: conv, out_channels: 3, kernel_size: 5}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: fc1, op: fc, out_features: 4}
"""


@pytest.fixture
def floor_models(write_spec):
    spec = write_spec(FLOOR_SPEC)
    return graphconv.load(spec), graphconv.compile_model(spec)


def test_run_keeps_the_crop_grid_and_full_keeps_every_cell(floor_models, rng):
    classifier, fcn = floor_models
    image = random_input(rng, (2, 1, 40, 41))
    assert fcn.map_size(40, 41) == (2, 3)
    grid = fcn.run(image)
    full = fcn.run(image, full=True)
    assert grid.shape == (2, 4, 2, 3) and full.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(full[:, :, :2, :3], grid)
    np.testing.assert_allclose(grid, crop_loop(classifier, image, 2), rtol=1e-4, atol=1e-5)
    # the extra row is a real classifier output over a field inside the image: the 37x37
    # crop at row 4 would need row 40, but the cell only reads rows 4..39
    top, _, bottom, _ = fcn.cell_box(2, 0)
    assert (top, bottom) == (4, 40)


# ---- output shapes: vectors for classifiers, maps for fully convolutional networks ----------------

NETS = {
    # fc at the end: a classifier as trained
    "fc": "  - {name: c, op: conv, out_channels: 3, kernel_size: 3}\n  - {name: f, op: fc, out_features: 4}\n",
    # global pool then flatten (SqueezeNet, ResNet without its fc): PyTorch returns (N, K)
    "flatten": "  - {name: c, op: conv, out_channels: 4, kernel_size: 3}\n  - {name: g, op: globalavgpool}\n"
               "  - {name: f, op: flatten}\n",
    # global pool without flatten: PyTorch's pooling returns N x K x 1 x 1
    "pool": "  - {name: c, op: conv, out_channels: 4, kernel_size: 3}\n  - {name: g, op: globalavgpool}\n",
    # convs only, 1x1 at the crop: a fully convolutional network
    "conv": "  - {name: c, op: conv, out_channels: 4, kernel_size: 6}\n",
}


@pytest.mark.parametrize("net,vectors", [("fc", True), ("flatten", True), ("pool", False), ("conv", False)])
def test_a_classifier_returns_vectors_and_a_dense_network_maps(write_spec, rng, net, vectors):
    model = graphconv.load(write_spec("input: {shape: [2, 6, 6]}\nlayers:\n" + NETS[net]))
    x = random_input(rng, (3, 2, 6, 6))
    assert model.returns_vectors is vectors
    assert model.run(x).shape == ((3, 4) if vectors else (3, 4, 1, 1))
    assert model.run(x, full=True).shape == (3, 4, 1, 1)  # what the network computed, as it did
    np.testing.assert_array_equal(model.run(x, full=True).reshape(3, 4), model.run(x).reshape(3, 4))
    fcn = graphconv.compile_model(model.graph)  # fc-to-conv, remove-flatten: always maps
    assert not fcn.returns_vectors and fcn.run(x).shape == (3, 4, 1, 1)
    np.testing.assert_allclose(fcn.run(x).reshape(3, 4), model.run(x).reshape(3, 4), rtol=1e-5, atol=1e-6)


def test_the_shape_rule_is_the_same_on_every_device(write_spec, rng):
    from graphconv.backends import get_backend
    if get_backend("cuda").status() is not None:
        pytest.skip(f"CUDA unusable: {get_backend('cuda').status()}")
    model = graphconv.load(write_spec("input: {shape: [2, 6, 6]}\nlayers:\n" + NETS["fc"]))
    x = random_input(rng, (2, 2, 6, 6))
    on_cuda = model.run(x, device="cuda")
    assert on_cuda.shape == model.run(x).shape == (2, 4)
    np.testing.assert_allclose(on_cuda, model.run(x), rtol=1e-5, atol=1e-6)


def test_a_flattened_network_on_a_larger_image_still_returns_vectors(write_spec, rng):
    """As in PyTorch, where a global pool and a flatten make any input size one vector."""
    model = graphconv.load(write_spec("input: {shape: [2, 6, 6]}\nlayers:\n" + NETS["flatten"]))
    assert model.run(random_input(rng, (1, 2, 10, 12))).shape == (1, 4)
