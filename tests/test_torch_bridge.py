"""The PyTorch bridge: the whole-network oracle, its per-layer profile, and its errors."""
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv import torch_bridge
from graphconv.runtime import Executor

LENET = Path(__file__).resolve().parent.parent / "specs" / "lenet.yaml"


@pytest.mark.skipif(torch_bridge.torch is None, reason="torch not installed")
def test_profile_names_every_layer_and_output_matches_graphconv(tmp_path):
    model = graphconv.load(LENET)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    profile = {}
    got = torch_bridge.torch_forward(model.graph, x, profile)
    assert list(profile) == [node.name for node in model.graph.layers()]
    np.testing.assert_allclose(got, Executor(model.graph).run(x), rtol=1e-4, atol=1e-5)


def test_missing_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch_bridge, "torch", None)
    with pytest.raises(graphconv.GraphconvError, match="PyTorch is not installed"):
        torch_bridge.torch_forward(graphconv.load(LENET).graph, np.zeros((1, 1, 32, 32), np.float32))
