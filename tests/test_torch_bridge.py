"""The PyTorch bridge: every op's reference against its PyTorch equivalent, the
whole-network oracle, its per-layer profile, and its errors."""
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv import torch_bridge
from graphconv.ops import NoTorchEquivalent, all_ops
from graphconv.runtime import Executor
from graphconv.params import normalize_params
from conftest import random_input

LENET = Path(__file__).resolve().parent.parent / "specs" / "lenet.yaml"
EXAMPLES = [pytest.param(op, example, id=f"{op.name}-{i}")
            for op in all_ops() for i, example in enumerate(op.examples)]
torch_only = pytest.mark.skipif(torch_bridge.torch is None, reason="torch not installed")


@torch_only
@pytest.mark.parametrize("opdef,example", EXAMPLES)
def test_reference_matches_torch_on_every_example(opdef, example, rng):
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (example.batch, *s)) for s in example.inputs]
    weights = opdef.seeded_weights(params, example.inputs, rng)
    try:
        got = torch_bridge.op_forward(opdef, params, weights, xs)
    except NoTorchEquivalent as err:
        pytest.skip(str(err))
    np.testing.assert_allclose(opdef.reference(params, weights, xs), got, rtol=1e-5, atol=1e-6)


@torch_only
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


@torch_only
def test_a_layer_pytorch_cannot_express_is_named(write_spec):
    spec = write_spec("""
        input: {name: data, shape: [1, 8, 8]}
        layers:
          - {name: pool, op: avgpool, kernel_size: 2, dilation: 2}
    """)
    with pytest.raises(NoTorchEquivalent, match="layer 'pool': PyTorch has no dilated average pooling"):
        torch_bridge.torch_forward(graphconv.load(spec).graph, np.zeros((1, 1, 8, 8), np.float32))
