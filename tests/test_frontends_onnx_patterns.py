"""The ONNX front end's node-list patterns (graphconv/frontends/onnx_patterns.py): an op
that an exporter writes as several nodes imports as one graphconv layer, with
onnxruntime's scores, and a group that is not quite the pattern stays as it was."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.frontends import load_network  # noqa: E402
from graphconv.frontends.onnx_patterns import fused  # noqa: E402
from graphconv.model import Model  # noqa: E402

from test_frontends_onnx import onnxruntime_scores, onnxruntime_scores_named, save, tiny_model  # noqa: E402

SCOPE = "model/p_re_lu/"  # tf2onnx names a Keras layer's nodes so
CHANNELS = 4


def keras_prelu(alpha: np.ndarray, *, sub: bool, mul_first: bool, add_first: bool = True,
                relu_read_elsewhere: bool = False, channels_last: bool = False):
    """A conv, then Keras' PReLU as tf2onnx writes it: relu(x) + (-alpha) * relu(-x), or
    relu(x) - alpha * relu(-x) (`sub`), each operand order; `relu_read_elsewhere` adds
    relu(x) to the result, so relu(x) has a second reader; `channels_last`: on the conv's
    map transposed to (N, H, W, C) and back, as tf2onnx writes Keras' layers where its
    optimizer leaves the Transposes."""
    helper = onnx.helper
    product = ["alpha", "rn"] if mul_first else ["rn", "alpha"]
    combined = ["pos", "neg"] if sub or add_first else ["neg", "pos"]
    out = "p" if relu_read_elsewhere else "y"
    conv = "nchw" if channels_last else "c"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [conv], name="model/conv/Conv2D", pads=[1, 1, 1, 1])]
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["nchw"], ["c"], name="model/conv/tr", perm=[0, 2, 3, 1]))
        out = "nhwc"
    nodes += [helper.make_node("Relu", ["c"], ["pos"], name=SCOPE + "Relu"),
             helper.make_node("Neg", ["c"], ["n"], name=SCOPE + "Neg_1"),
             helper.make_node("Relu", ["n"], ["rn"], name=SCOPE + "Relu_1"),
             helper.make_node("Mul", product, ["neg"], name=SCOPE + "mul"),
             helper.make_node("Sub" if sub else "Add", combined, [out], name=SCOPE + ("sub" if sub else "add"))]
    if relu_read_elsewhere:
        nodes.append(helper.make_node("Add", ["p", "pos"], ["y"], name="model/add/add"))
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["nhwc"], ["y"], name="model/tr", perm=[0, 3, 1, 2]))
    rng = np.random.default_rng(7)
    inits = {"w": rng.standard_normal((CHANNELS, 3, 3, 3)), "b": rng.standard_normal(CHANNELS),
             "alpha": alpha if sub else -alpha}
    return tiny_model(nodes, inits)


FORMS = [dict(sub=False, mul_first=True, add_first=True), dict(sub=False, mul_first=False, add_first=True),
         dict(sub=False, mul_first=True, add_first=False), dict(sub=False, mul_first=False, add_first=False),
         dict(sub=True, mul_first=True), dict(sub=True, mul_first=False)]
SLOPES = [(CHANNELS, 1, 1), (1, CHANNELS, 1, 1), (), (1,)]


def form_id(form: dict) -> str:
    order = "" if form["sub"] else "-relu_first" if form["add_first"] else "-relu_last"
    return f"{'sub' if form['sub'] else 'add'}-alpha_{'first' if form['mul_first'] else 'last'}{order}"


@pytest.mark.parametrize("form", FORMS, ids=form_id)
@pytest.mark.parametrize("shape", SLOPES, ids=str)
def test_keras_prelu_as_tf2onnx_writes_it_is_one_prelu_layer(tmp_path, rng, form, shape):
    """Keras' PReLU(shared_axes=[1, 2]) (or one alpha for all) after a conv: five nodes,
    which imported as five layers (relu, a scale by -1, relu, a scale by -alpha, add),
    are one prelu layer named after the Keras layer, its slope alpha, scores exactly
    onnxruntime's."""
    alpha = rng.uniform(0.05, 0.5, shape).astype(np.float32)
    path = save(keras_prelu(alpha, **form), tmp_path / "prelu.onnx")
    graph = load_network(path, task="segmentation")
    layers = graph.layers()
    assert [n.op for n in layers] == ["conv", "prelu"]
    assert layers[1].name == "model_p_re_lu" and layers[1].inputs[0].name == layers[0].name
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("sub", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, CHANNELS), (CHANNELS,), (1, 1, 1, CHANNELS)], ids=str)
def test_keras_prelu_on_a_channels_last_map_is_one_prelu_layer(tmp_path, rng, sub, shape):
    """Keras' PReLU(shared_axes=[1, 2]) on the (N, H, W, C) map tf2onnx keeps between
    Transposes: alpha (1, 1, C) is per channel there, one prelu layer, exact."""
    alpha = rng.uniform(0.05, 0.5, shape).astype(np.float32)
    path = save(keras_prelu(alpha, sub=sub, mul_first=True, channels_last=True), tmp_path / "nhwc.onnx")
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["conv", "prelu"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=0, atol=1e-5)


def test_keras_prelu_whose_relu_is_read_elsewhere_is_not_fused_and_stays_exact(tmp_path, rng):
    """relu(x) read by another node too: the group stays the layers it was, exact."""
    alpha = rng.uniform(0.05, 0.5, (CHANNELS, 1, 1)).astype(np.float32)
    path = save(keras_prelu(alpha, sub=False, mul_first=True, relu_read_elsewhere=True), tmp_path / "read.onnx")
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["conv", "relu", "batchnorm", "relu", "batchnorm", "add", "add"]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=0, atol=1e-5)


def test_keras_prelu_of_an_alpha_per_position_is_not_fused_and_refused_as_before(tmp_path, rng):
    """Keras' PReLU without shared_axes learns an alpha per position of the crop's map: no
    per-channel slope, so the group is left alone and its Mul refused as it was."""
    alpha = rng.uniform(0.05, 0.5, (1, CHANNELS, 8, 8)).astype(np.float32)
    path = save(keras_prelu(alpha, sub=False, mul_first=True), tmp_path / "positions.onnx")
    with pytest.raises(GraphconvError, match=r"node 'model/p_re_lu/mul': Mul of a feature map by a constant of "
                                             r"shape \[1, 4, 8, 8\], a number for each position"):
        load_network(path, task="segmentation")


def test_keras_prelu_of_a_dense_layer_takes_one_slope_per_feature(tmp_path, rng):
    """After a Dense layer (Gemm: (N, F)), Keras' alpha is (F,): one PRelu of that slope."""
    helper = onnx.helper
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["c"], name="model/dense/MatMul", transB=1),
             helper.make_node("Relu", ["c"], ["pos"], name=SCOPE + "Relu"),
             helper.make_node("Neg", ["c"], ["n"], name=SCOPE + "Neg_1"),
             helper.make_node("Relu", ["n"], ["rn"], name=SCOPE + "Relu_1"),
             helper.make_node("Mul", ["alpha", "rn"], ["neg"], name=SCOPE + "mul"),
             helper.make_node("Add", ["pos", "neg"], ["y"], name=SCOPE + "add")]
    inits = {"w": rng.standard_normal((5, 3 * 8 * 8)), "alpha": -rng.uniform(0.05, 0.5, 5)}
    path = save(tiny_model(nodes, inits), tmp_path / "dense.onnx")
    graph = load_network(path)
    assert [n.op for n in graph.layers()][-1:] == ["prelu"] and "relu" not in [n.op for n in graph.layers()]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x).reshape(1, -1), onnxruntime_scores(path, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("sub", [False, True])
def test_the_fused_prelu_writes_the_group_s_output_and_takes_alpha_as_its_slope(sub):
    """The node list: one PRelu in the Add's (Sub's) place, writing its output; a Sub's
    constant is the slope itself, an Add's (-alpha) is negated by a Constant just before."""
    alpha = np.array([0.25, 0.5, 0.125, 1.0], np.float32).reshape(CHANNELS, 1, 1)
    model = keras_prelu(alpha, sub=sub, mul_first=False)
    values = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes, _ = fused(model.graph.node, values.get, lambda node, message: pytest.fail(message), 17, ["y"])
    assert [n.op_type for n in nodes] == ["Conv"] + ([] if sub else ["Constant"]) + ["PRelu"]
    prelu = nodes[-1]
    assert list(prelu.output) == ["y"] and prelu.input[0] == "c" and prelu.name == "model/p_re_lu"
    slope = values["alpha"] if sub else onnx.numpy_helper.to_array(nodes[1].attribute[0].t)
    if not sub:
        assert prelu.input[1] == nodes[1].output[0] != "alpha"
    np.testing.assert_array_equal(slope, alpha)


# ---- adaptive average pooling whose output size does not divide the map -------------------

torch = pytest.importorskip("torch")


class AdaptiveHead(torch.nn.Module):
    """A classifier of no padding (its dense map is exactly its crops' scores) whose head
    is torchvision VGG's: AdaptiveAvgPool2d(out), flatten, two Linears; crop 40 leaves an
    8x8 map, 24 a 4x4, 28 a 5x5; stride 4."""

    def __init__(self, out: tuple[int, int], pool: type = torch.nn.AdaptiveAvgPool2d, then_conv: bool = False):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.avgpool = pool(out)
        self.after = nn.Conv2d(6, 6, 1) if then_conv else nn.Identity()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(6 * out[0] * out[1], 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(self.after(self.avgpool(self.features(x))))


def dynamo_export(model, crop: int, path):
    """What torch.onnx.export writes by default (the dynamo exporter): the TorchScript
    exporter refuses an adaptive pool whose output size does not divide the map."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 3, crop, crop),), str(path), dynamo=True, verbose=False)
    return path


@pytest.mark.parametrize("crop, out, op, stride", [
    (40, (7, 7), "avgpool", (4, 4)),  # 8 -> 7 (VGG-16 at a 256 crop): bins of 2 at every pixel, one pool layer
    (40, (7, 4), "avgpool", (4, 8)),  # and 8 -> 4 across: bins of 2 every 2 pixels, a map of twice the stride
    (24, (7, 7), None, (4, 4)),       # 4 -> 7 (VGG at a 128 crop): bins of 1 and 2, folded into the Linear
    (28, (3, 3), None, (4, 4)),       # 5 -> 3 (VGG at 288: 9 -> 7): bins of 2 and 3
    (24, (8, 8), None, (4, 4)),       # 4 -> 8 (AlexNet's (6, 6) over a 3x3 map): each pixel repeated
])
def test_an_adaptive_average_pool_that_does_not_divide_the_map_slides_exactly(tmp_path, rng, crop, out, op, stride):
    """torchvision's VGG and AlexNet heads on a model trained at another crop than 224:
    imported (a pool layer where the bins are of one size, else the Linear's weight taking
    the pool in), compiled, and the dense map equal to PyTorch on every crop."""
    import graphconv
    torch.manual_seed(0)
    model = AdaptiveHead(out).eval()
    path = dynamo_export(model, crop, tmp_path / "head.onnx")
    compiled = graphconv.compile_model(path)
    ops = [n.op for n in compiled.graph.layers()]
    assert ("avgpool" in ops) == (op == "avgpool")
    (sy, sx), rows, cols = stride, 4, 3
    image = rng.standard_normal((1, 3, crop + sy * (rows - 1), crop + sx * (cols - 1))).astype(np.float32)
    dense = compiled.run(image)
    with torch.no_grad():
        crops = [[model(torch.from_numpy(image[:, :, sy * i:sy * i + crop, sx * j:sx * j + crop])).numpy()[0]
                  for j in range(cols)] for i in range(rows)]
    expected = np.array(crops).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(dense, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("linear", ["Gemm transB=0", "MatMul and Add"])
def test_an_adaptive_pool_folds_into_a_linear_written_either_way(tmp_path, rng, linear):
    """The Linear after a 4 -> 7 pool as other exporters write it, its weight (features,
    outputs): Gemm of transB=0, or MatMul then the bias's Add; the classifier equals
    onnxruntime's on its crop."""
    import graphconv
    torch.manual_seed(0)
    model = onnx.load(str(dynamo_export(AdaptiveHead((7, 7)), 24, tmp_path / "gemm.onnx")))
    gemm = next(node for node in model.graph.node if node.op_type == "Gemm")
    weights = {init.name: init for init in model.graph.initializer}
    transposed = onnx.numpy_helper.to_array(weights[gemm.input[1]]).T.copy()
    weights[gemm.input[1]].CopyFrom(onnx.numpy_helper.from_array(transposed, gemm.input[1]))
    if linear == "Gemm transB=0":
        next(a for a in gemm.attribute if a.name == "transB").i = 0
    else:
        position = list(model.graph.node).index(gemm)
        product = gemm.output[0] + "_product"
        nodes = [onnx.helper.make_node("MatMul", gemm.input[:2], [product], name=gemm.name),
                 onnx.helper.make_node("Add", [product, gemm.input[2]], list(gemm.output), name=gemm.name + "_bias")]
        model.graph.node.remove(gemm)
        for offset, node in enumerate(nodes):
            model.graph.node.insert(position + offset, node)
    path = save(model, tmp_path / "linear.onnx")
    x = rng.standard_normal((1, 3, 24, 24)).astype(np.float32)
    expected = onnxruntime_scores_named(path, x)
    np.testing.assert_allclose(graphconv.load(path).run(x), expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_an_adaptive_pool_of_two_bin_sizes_not_before_a_linear_is_refused_saying_why(tmp_path):
    """4 -> 7 then a conv: no Linear to take the pool in, and no window slides it."""
    import graphconv
    path = dynamo_export(AdaptiveHead((7, 7), then_conv=True), 24, tmp_path / "conv_after.onnx")
    with pytest.raises(GraphconvError, match=r"adaptive average pooling to 7x7 over a 4x4 map .* its bins are of "
                                             r"two sizes, which no sliding window computes; .* here none follows"):
        graphconv.load(path)


def test_gathered_windows_whose_maximum_is_taken_are_not_taken_for_the_average_pool(tmp_path):
    """The dynamo exporter's gathered bins (8 -> 7), then ReduceMax in place of ReduceMean
    (an adaptive max pool; PyTorch's exporter writes none): not the average, so left to
    the converters, which refuse its Transpose."""
    import graphconv
    path = dynamo_export(AdaptiveHead((7, 7)), 40, tmp_path / "mean.onnx")
    model = onnx.load(str(path))
    (mean,) = [node for node in model.graph.node if node.op_type == "ReduceMean"]
    mean.op_type = "ReduceMax"
    onnx.save(model, str(tmp_path / "max.onnx"))
    with pytest.raises(GraphconvError, match=r"Transpose \[2, 3, 0, 1\] of a feature map"):
        graphconv.load(tmp_path / "max.onnx")
