"""conv-to-fc: a conv is an fc layer with a sparse, weight-shared dense matrix."""
import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.model import as_map
from graphconv.ops import get_op
from graphconv.params import normalize_params
from conftest import SPECS, random_input

from graphconv.passes.conv_to_fc import dense_matrix


@pytest.mark.parametrize("raw", [
    dict(out_channels=4, kernel_size=3, stride=2),
    dict(out_channels=4, kernel_size=3, padding=1),
    dict(out_channels=4, kernel_size=[2, 3], dilation=[2, 1], padding=[1, 0]),
    dict(out_channels=6, kernel_size=3, groups=3, stride=[1, 2]),
    dict(out_channels=3, kernel_size=1, bias=False),
])
def test_dense_matrix_equals_the_conv(raw, rng):
    conv = get_op("conv")
    params = normalize_params(conv, raw)
    in_shape = (6, 7, 8)
    out_shape = conv.shape(params, [in_shape])
    weights = {k: random_input(rng, s) for k, s in conv.weight_shapes(params, [in_shape]).items()}
    x = random_input(rng, (3, *in_shape))
    matrix, bias = dense_matrix(params, weights, in_shape, out_shape)
    y = x.reshape(3, -1) @ matrix.T + (bias if bias is not None else 0)
    np.testing.assert_allclose(y.reshape(3, *out_shape), conv.reference(params, weights, [x]), rtol=1e-4, atol=1e-5)


def test_round_trip_conv_to_fc_to_conv_keeps_outputs(rng, write_spec):
    net = graphconv.load(write_spec("""
        input: {shape: [3, 9, 8]}
        layers:
          - {name: conv, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1, groups: 1}
          - {name: fc, op: fc, out_features: 5}
    """))
    as_fc = graphconv.run_passes(net.graph, "shape-inference,conv-to-fc{layer=conv}")
    assert as_fc.node("conv").op == "fc" and as_fc.node("conv").weights["weight"].shape == (4 * 5 * 4, 3 * 9 * 8)
    back = graphconv.run_passes(as_fc, "fc-to-conv")
    assert [n.op for n in back.layers()] == ["conv", "conv"]
    x = random_input(rng, (2, 3, 9, 8))
    want = net.run(x)
    np.testing.assert_allclose(graphconv.Model(as_fc).run(x), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(graphconv.Model(back).run(x), as_map(want), rtol=1e-4, atol=1e-6)


def test_fused_relu_is_kept(rng):
    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    as_fc = graphconv.run_passes(fcn.graph, "conv-to-fc")
    assert [n.op for n in as_fc.layers()].count("fc") == 3  # fc3..fc5 (1x1 outputs) come back as fc
    x = random_input(rng, (1, 1, 32, 32))
    np.testing.assert_allclose(as_map(graphconv.Model(as_fc).run(x)), fcn.run(x), rtol=1e-4, atol=1e-6)


def test_size_limit_and_refusals():
    lenet = graphconv.compile_model(SPECS / "lenet.yaml").graph
    with pytest.raises(GraphconvError, match=r"layer 'fc3': as fc it needs a 120x400 matrix \(48,000 entries\), "
                                             r"over the limit of 1,000; raise it with conv-to-fc\{max_elements=48000\}"):
        graphconv.run_passes(lenet, "conv-to-fc{layer=fc3,max_elements=1000}")
    with pytest.raises(GraphconvError, match="layer 'conv1': cannot become fc"):
        graphconv.run_passes(lenet, "conv-to-fc{layer=conv1}")
    with pytest.raises(GraphconvError, match="no conv layer named 'nope'"):
        graphconv.run_passes(lenet, "conv-to-fc{layer=nope}")
