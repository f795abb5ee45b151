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
