"""The ONNX front end: real classifier architectures exported by both PyTorch exporters
come in exactly (classifier output == PyTorch), compile to dense networks whose maps
equal the same conversion done by hand in PyTorch, import to a spec that loads back to
the same network, and bad files are one clean line."""
from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from graphconv.compiler import compile_model  # noqa: E402
from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.frontends import load_network  # noqa: E402
from graphconv.model import Model  # noqa: E402

import onnx_zoo  # noqa: E402
from conftest import SPECS, graphconv_in_process, graphconv_process  # noqa: E402

ARCHITECTURES = list(onnx_zoo.ZOO)
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(arch, dynamo=False, fold=True) -> (model, path); each file made once."""
    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(arch: str, dynamo: bool = False, fold: bool = True):
        key = (arch, dynamo, fold)
        if key not in cache:
            model = onnx_zoo.build(arch)
            path = folder / f"{arch}{'_dynamo' if dynamo else ''}{'' if fold else '_bn'}.onnx"
            onnx_zoo.export(model, path, dynamo=dynamo, fold=fold)
            cache[key] = (model, path)
        return cache[key]
    return get


def torch_scores(model, x: np.ndarray, dense: bool = False) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(x)
        return (model(x, dense=True) if dense else model(x)).numpy()


# the dynamo exporter is slow: these cover its ReduceMean/ReduceL2/ReduceMax/Expand/Reshape/Gather/Split/folding forms
DYNAMO_ARCHITECTURES = ("resnet", "mobilenetv2", "densenet", "vggbn", "convnext", "shufflenet", "cosine", "cbam",
                        "gem", "eca")
assert set(DYNAMO_ARCHITECTURES) <= set(ARCHITECTURES), set(DYNAMO_ARCHITECTURES) - set(ARCHITECTURES)


@pytest.mark.parametrize("how,arch", [
    pytest.param(how, arch, id=f"{how}-{arch}") for how in ["torchscript", "torchscript-keep-bn", "dynamo"]
    for arch in ARCHITECTURES if how != "dynamo" or arch in DYNAMO_ARCHITECTURES])
def test_classifier_output_equals_pytorch(exported, arch, how, rng):
    model, path = exported(arch, dynamo=how == "dynamo", fold=how != "torchscript-keep-bn")
    x = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    graphconv_model = Model(load_network(path))
    out = graphconv_model.run(x)
    expected = torch_scores(model, x)
    assert out.shape == expected.shape  # (N, K) like PyTorch: the classifier has its fc layers
    np.testing.assert_allclose(out, expected, **TOLERANCE)


@pytest.mark.parametrize("how,arch", [
    pytest.param(how, arch, id=f"{how}-{arch}") for how in ["torchscript", "dynamo"]
    for arch in ARCHITECTURES if how == "torchscript" or arch in ("convnext", "shufflenet", "vggbn")])
def test_a_model_exported_with_a_fixed_batch_imports_and_takes_any_batch(arch, how, tmp_path, rng):
    """An export whose example input was a batch of 3 (a data loader's batch; the dynamo
    exporter fixes it) writes 3 into its reshapes: x.view(x.size(0), -1) became
    Reshape(x, [3, -1]), refused as no flatten graphconv knew. The batch axis means "the
    batch" whatever the exporter wrote there."""
    model, path = onnx_zoo.build(arch), tmp_path / f"{arch}.onnx"
    onnx_zoo.export(model, path, batch=3, dynamic_batch=False, dynamo=how == "dynamo")
    imported = Model(load_network(path))
    for batch in (3, 1):
        x = rng.standard_normal((batch, 3, model.crop, model.crop)).astype(np.float32)
        np.testing.assert_allclose(imported.run(x), torch_scores(model, x), **TOLERANCE)


@pytest.mark.parametrize("arch", onnx_zoo.SLIDING)
def test_compiled_dense_map_equals_the_same_conversion_in_pytorch(exported, arch, rng):
    """The default pipeline folds batch norm, turns global pooling into window pooling and
    every fc into a conv: on an image larger than the crop, the map equals PyTorch running
    the hand-converted network (onnx_zoo's dense=True)."""
    model, path = exported(arch, fold=False)
    compiled = compile_model(path)
    assert not compiled.graph.find("globalavgpool") and not compiled.graph.find("fc")
    multiple = getattr(model, "multiple", 1)  # HRNet's branches meet only on multiples of 4
    size = [-(-(model.crop + extra) // multiple) * multiple for extra in (37, 50)]
    x = rng.standard_normal((1, 3, *size)).astype(np.float32)
    out = compiled.run(x)
    expected = torch_scores(model, x, dense=True)
    assert out.shape[2] >= 2 and out.shape[3] >= 2, "the map should be dense"
    np.testing.assert_allclose(out, expected[:, :, :out.shape[2], :out.shape[3]], **TOLERANCE)


def test_batchnorm_is_folded_where_it_follows_a_conv_and_kept_after_a_concat(exported):
    _, path = exported("densenet", fold=False)
    graph = load_network(path)
    compiled = compile_model(path).graph
    assert len(graph.find("batchnorm")) == 11
    assert 0 < len(compiled.find("batchnorm")) < 11  # norm1 of each dense layer reads a concat
    assert not compiled.find("concat") and not compiled.find("relu")  # each batchnorm reads the concat's inputs
    after_concats = [n for n in compiled.find("batchnorm") if len(n.inputs) > 1]
    assert len(after_concats) == 4 and all(n.params["activation"] == "relu" for n in after_concats)


def test_layer_and_weight_names_follow_the_pytorch_module_paths(exported):
    _, path = exported("resnet", fold=False)
    graph = load_network(path)
    names = {node.name for node in graph.layers()}
    assert {"conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer2.0.downsample.0", "head.fc"} <= names
    assert set(graph.node("layer1.0.bn1").weights) == {"weight", "bias", "running_mean", "running_var"}


def test_onnx_runtime_agrees_on_the_same_file(exported, rng):
    ort = pytest.importorskip("onnxruntime")
    model, path = exported("mobilenetv2")
    x = rng.standard_normal((1, 3, model.crop, model.crop)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(Model(load_network(path)).run(x).reshape(expected.shape), expected, **TOLERANCE)


def test_dynamic_input_size_needs_the_crop(tmp_path, rng):
    model = onnx_zoo.build("resnet")
    path = tmp_path / "dyn.onnx"
    onnx_zoo.export(model, path, dynamic_hw=True)
    with pytest.raises(GraphconvError, match="dynamic height or width.*--crop-size"):
        load_network(path)
    graph = load_network(path, crop_size=(64, 64))
    assert graph.input_shape == (3, 64, 64)
    with pytest.raises(GraphconvError, match=r"gives width 40, but the model's input 'x' is fixed at (\d+), the "
                       r"size it was exported at: leave out --crop-size to take \1x\d+ as the crop, or, where the "
                       r"model was trained on 32x40 crops, export it again with a dynamic height and width "
                       r"\(torch.onnx.export\(\.\.\., dynamic_axes=\{'x': \{2: 'height', 3: 'width'\}\}\)\)"):
        load_network(onnx_zoo_path_fixed(tmp_path), crop_size=(32, 40))


def onnx_zoo_path_fixed(tmp_path):
    path = tmp_path / "fixed.onnx"
    onnx_zoo.export(onnx_zoo.build("vggbn"), path)
    return path


# ---- hand-made files: what the exporters do not write ------------------------------------------

def tiny_model(nodes, initializers, *, opset=17, input_shape=(1, 3, 8, 8), output="y"):
    helper = onnx.helper
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.asarray(v, np.float32 if k != "shape" else np.int64), k)
         for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def save(model, path):
    onnx.save(model, str(path))
    return path


def test_gemm_alpha_beta_and_transb_0_and_matmul_add(tmp_path, rng):
    helper = onnx.helper
    w = rng.standard_normal((3 * 8 * 8, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    w2 = rng.standard_normal((5, 4)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["g"], alpha=0.5, beta=2.0, transB=0),
             helper.make_node("MatMul", ["g", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b2"], ["y"])]
    path = save(tiny_model(nodes, {"w": w, "b": b, "w2": w2, "b2": b2}), tmp_path / "gemm.onnx")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = ((0.5 * x.reshape(2, -1) @ w + 2.0 * b) @ w2 + b2)
    out = Model(load_network(path)).run(x)
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4)


def test_gemm_with_a_1_by_k_bias_matches_onnxruntime(tmp_path, rng):
    """C of shape (1, K) broadcasts onto (N, K) as ONNX allows; it was refused as a
    malformed node (numpy's broadcast_to cannot drop the leading 1)."""
    w = rng.standard_normal((5, 3 * 8 * 8)).astype(np.float32)
    b = rng.standard_normal((1, 5)).astype(np.float32)
    nodes = [onnx.helper.make_node("Flatten", ["x"], ["f"]),
             onnx.helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1, beta=0.5)]
    path = onnx_file(tmp_path / "gemm.onnx", nodes, {"w": w, "b": b}, input_shape=(1, 3, 8, 8))
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).run(x).reshape(2, 5), onnxruntime_scores(path, x),
                               **TOLERANCE)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torchvision_s_transform_input_imports(tmp_path, rng, opset):
    """GoogLeNet and Inception-v3 with pretrained weights re-normalise their input as
    unsqueeze(x[:, k], 1) * a_k + b_k per channel, concatenated: a Gather of one channel
    by a scalar index (a rank-3 view), which was refused."""
    helper = onnx.helper
    nodes, initializers = [], {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    for k, (a, b) in enumerate([(0.458, -0.03), (0.448, -0.088), (0.45, -0.188)]):
        initializers.update({f"k{k}": np.int64(k), f"a{k}": np.float32(a), f"b{k}": np.float32(b)})
        unsqueeze = (helper.make_node("Unsqueeze", [f"g{k}"], [f"u{k}"], axes=[1]) if opset < 13 else
                     helper.make_node("Unsqueeze", [f"g{k}", "axis1"], [f"u{k}"]))
        nodes += [helper.make_node("Gather", ["x", f"k{k}"], [f"g{k}"], axis=1), unsqueeze,
                  helper.make_node("Mul", [f"u{k}", f"a{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"c{k}"])]
    if opset >= 13:
        initializers["axis1"] = np.array([1], np.int64)
    nodes += [helper.make_node("Concat", ["c0", "c1", "c2"], ["cat"], axis=1),
              helper.make_node("Conv", ["cat", "w"], ["y"], kernel_shape=[3, 3])]
    path = onnx_file(tmp_path / "transform_input.onnx", nodes, initializers, opset=opset, input_shape=(1, 3, 9, 9))
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).executor("cpu").run(x), onnxruntime_scores(path, x),
                               **TOLERANCE)


def test_one_channel_taken_by_a_scalar_index_must_be_made_a_map_again(tmp_path, rng):
    nodes = [onnx.helper.make_node("Gather", ["x", "k"], ["g"], axis=1),
             onnx.helper.make_node("Softmax", ["g"], ["y"], axis=1, name="soft")]
    path = onnx_file(tmp_path / "gather.onnx", nodes, {"k": np.int64(0)}, input_shape=(1, 3, 4, 4))
    with pytest.raises(GraphconvError, match="node 'soft'"):
        load_network(path)


@pytest.mark.parametrize("trans_b,alpha", [(0, 1.0), (0, 2.5), (1, -0.5)])
def test_gemm_s_transposes_and_alpha_match_onnxruntime(tmp_path, rng, trans_b, alpha):
    w = rng.standard_normal((5, 3 * 8 * 8) if trans_b else (3 * 8 * 8, 5)).astype(np.float32)
    nodes = [onnx.helper.make_node("Flatten", ["x"], ["f"]),
             onnx.helper.make_node("Gemm", ["f", "w"], ["y"], transB=trans_b, alpha=alpha)]
    path = onnx_file(tmp_path / "gemm.onnx", nodes, {"w": w}, input_shape=(1, 3, 8, 8))
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).run(x).reshape(2, 5), onnxruntime_scores(path, x),
                               **TOLERANCE)


@pytest.mark.parametrize("training,ratio,refused", [(True, 0.5, True), (False, 0.5, False), (True, 0.0, False)])
def test_a_dropout_exported_in_training_mode_is_refused(tmp_path, rng, training, ratio, refused):
    """A model exported while in train() drops values at random: refused as a
    BatchNormalization in training mode is (it ran as the identity, silently)."""
    nodes = [onnx.helper.make_node("Dropout", ["x", "ratio", "training"], ["d"], name="drop"),
             onnx.helper.make_node("Relu", ["d"], ["y"])]
    path = onnx_file(tmp_path / "drop.onnx", nodes, {"ratio": np.float32(ratio), "training": np.bool_(training)},
                     opset=13, input_shape=(1, 3, 4, 4))
    if refused:
        with pytest.raises(GraphconvError, match=r"node 'drop'.*Dropout in training mode .* eval\(\) mode"):
            load_network(path)
    else:
        x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
        np.testing.assert_array_equal(Model(load_network(path)).executor("cpu").run(x), np.maximum(x, 0))


def test_sum_of_one_input_is_that_input(tmp_path, rng):
    """Sum(a) imported as an add of one input: a spec graphconv's own loader refused, and
    a traceback when run from the .onnx."""
    nodes = [onnx.helper.make_node("Relu", ["x"], ["a"]), onnx.helper.make_node("Sum", ["a"], ["s"]),
             onnx.helper.make_node("Sigmoid", ["s"], ["y"])]
    path = onnx_file(tmp_path / "sum.onnx", nodes, {}, input_shape=(1, 3, 6, 6))
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["relu", "sigmoid"]
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


def test_slice_before_op_set_10_reads_its_attributes(tmp_path, rng):
    """Before op set 10, Slice's starts, ends and axes are attributes (PyTorch's x[:, 1:3]
    exported at op set 9): it was refused as malformed."""
    nodes = [onnx.helper.make_node("Slice", ["x"], ["y"], starts=[1], ends=[3], axes=[1])]
    path = onnx_file(tmp_path / "slice.onnx", nodes, {}, opset=9, input_shape=(1, 4, 6, 6))
    graph = load_network(path, task="segmentation")
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(Model(graph).run(x), onnxruntime_scores(path, x))


def test_neg_of_a_map_is_a_scale_by_minus_one(tmp_path, rng):
    """-x (PyTorch's neg, as in min(x) written -max(-x)) was refused as constants-only."""
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["c"]), onnx.helper.make_node("Neg", ["c"], ["n"]),
             onnx.helper.make_node("Relu", ["n"], ["y"])]
    path = onnx_file(tmp_path / "neg.onnx", nodes, {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)},
                     input_shape=(1, 3, 8, 8))
    graph = load_network(path, task="segmentation")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)
    assert [n.op for n in compile_model(graph).graph.layers()] == ["conv"]  # the scale and relu fold into it


@pytest.mark.parametrize("starts, ends, steps", [
    ([-1], [-2 ** 63], [-1]),  # x.flip(1): RGB to BGR
    ([0], [2 ** 63 - 1], [2]),  # x[:, ::2]
    ([2], [0], [-1]),  # x[:, 2:0:-1]
    ([1], [3], [1]),  # x[:, 1:3]
])
def test_a_slice_of_the_channels_with_any_step_picks_them(tmp_path, rng, starts, ends, steps):
    """x.flip(1) is a Slice of the channels with step -1 (a model's own RGB to BGR): it
    was refused for its step; every step now picks the channels it names."""
    inits = {"starts": np.array(starts), "ends": np.array(ends), "axes": np.array([1]), "steps": np.array(steps),
             "w": rng.standard_normal((5, 4, 3, 3)).astype(np.float32)}
    picked = len(range(4)[slice(*starts, *ends, *steps)])
    inits["w"] = inits["w"][:, :picked].copy()
    nodes = [onnx.helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"], name="flip"),
             onnx.helper.make_node("Conv", ["s", "w"], ["y"], pads=[1, 1, 1, 1])]
    path = onnx_file(tmp_path / "flip.onnx", nodes, inits, input_shape=(1, 4, 6, 6))
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path, task="segmentation")).run(x), onnxruntime_scores(path, x),
                               **TOLERANCE)


def test_a_channel_reversal_of_a_channels_last_input_is_read_and_other_cuts_are_refused(tmp_path, rng):
    """Keras' x[..., ::-1] (caffe-style preprocessing inside the model) as tf2onnx writes
    it: a Slice of the NHWC input's axes 0 (whole: 0 to 1e9) and 3 (step -1), then the
    Transpose to NCHW. It was refused as 'Slice along axes [0, 3]; graphconv slices
    channels only (axis 1)', though axis 3 is the channels there. A cut of the height is
    refused naming it."""
    helper = onnx.helper
    inits = {"starts": np.array([0, 10 ** 9]), "ends": np.array([10 ** 9, -10 ** 9]), "axes": np.array([0, 3]),
             "steps": np.array([1, -1]), "mean": np.array([-103.9, -116.8, -123.7], np.float32),
             "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"], name="bgr"),
             helper.make_node("Add", ["s", "mean"], ["m"]),
             helper.make_node("Transpose", ["m"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["y"])]
    path = onnx_file(tmp_path / "bgr.onnx", nodes, inits, input_shape=(1, 8, 9, 3))
    graph = load_network(path, task="segmentation")
    assert graph.input_shape == (3, 8, 9)
    x = (rng.random((2, 3, 8, 9)) * 255).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x.transpose(0, 2, 3, 1).copy()),
                               **TOLERANCE)
    cut = onnx_file(tmp_path / "cut.onnx", nodes, {**inits, "axes": np.array([0, 1]), "steps": np.array([1, 1]),
                                                    "starts": np.array([0, 1]), "ends": np.array([10 ** 9, 7])},
                    input_shape=(1, 8, 9, 3))
    with pytest.raises(GraphconvError, match=r"node 'bgr': Slice along axes \[1\] of a channels-last \(NHWC\) "
                                             r"map; graphconv slices the channels \(axis 3\)"):
        load_network(cut, task="segmentation")


def test_prelu_slopes_follow_onnx_broadcasting(tmp_path, rng):
    """ONNX broadcasts a (C,) slope on an (N, C, H, W) map along its last axis, one slope
    per column: graphconv took it as one per channel whenever C == W, silently other
    scores. Per channel is (C, 1, 1) on a map (PyTorch's nn.PReLU(C)), (C,) on features."""
    slope = rng.standard_normal(6).astype(np.float32)
    per_column = onnx_file(tmp_path / "columns.onnx", [onnx.helper.make_node("PRelu", ["x", "s"], ["y"], name="p")],
                           {"s": slope}, input_shape=(1, 6, 6, 6))
    with pytest.raises(GraphconvError, match=r"node 'p': PRelu slope of shape \[6\] on a 6-channel value"):
        load_network(per_column, task="segmentation")
    per_channel = onnx_file(tmp_path / "channels.onnx", [onnx.helper.make_node("PRelu", ["x", "s"], ["y"])],
                            {"s": slope.reshape(6, 1, 1)}, input_shape=(1, 6, 6, 6))
    x = rng.standard_normal((2, 6, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(per_channel, task="segmentation")).run(x),
                               onnxruntime_scores(per_channel, x), **TOLERANCE)


@pytest.mark.parametrize("opset", [10, 13, 17, 19, 21])
def test_an_op_graphconv_has_no_converter_for_is_folded_when_its_inputs_are_constants(tmp_path, rng, opset):
    """A weight-only quantized model dequantizes its int8 conv weights in the graph: every
    input of DequantizeLinear is a constant, yet it was refused as an unsupported op; and
    at op sets 13 to 18, which PyTorch's and onnxruntime's quantizers write, ONNX's
    reference evaluator has no DequantizeLinear (it starts at 19): folded as 19."""
    helper = onnx.helper
    quantized = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    inits = {"wq": quantized, "scale": np.float32(0.02), "zero": np.int8(3)}
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["w"]),
             helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    path = onnx_file(tmp_path / "quantized.onnx", nodes, inits, opset=opset, input_shape=(1, 3, 8, 8))
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["conv"]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


class _Calibration:
    """Four random images for onnxruntime's quantize_static to choose its scales from."""

    def __init__(self, rng):
        self.images = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.images, None)


@pytest.mark.parametrize("activations", ["QInt8", "QUInt8"])
def test_a_qdq_model_from_onnxruntimes_quantizer_maps_its_scores_exactly(tmp_path, rng, activations):
    """A PyTorch network quantized by onnxruntime's quantize_static in QDQ form: its weights
    are dequantized constants, each activation a QuantizeLinear-DequantizeLinear pair (the
    quantizer drops the ReLUs, which the pair's range clamps), refused as "a QDQ model's
    quantized activations" before. Each pair is one fake_quantize layer, and the map on an
    image larger than the crop is onnxruntime's, value for value: the rounding to the
    quantization grid is the same on both (ties half to even)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    ort = pytest.importorskip("onnxruntime")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                          nn.Conv2d(16, 5, 1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(tmp_path / "float.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
        quantization.quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "qdq.onnx"), _Calibration(rng),
                                     quant_format=quantization.QuantFormat.QDQ,
                                     activation_type=getattr(quantization.QuantType, activations),
                                     weight_type=quantization.QuantType.QInt8)
    graph = load_network(tmp_path / "qdq.onnx", task="segmentation", crop_size=(16, 16))
    assert [n.op for n in graph.layers()].count("fake_quantize") == 5  # the input and four activations
    x = rng.standard_normal((2, 3, 40, 36)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "qdq.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(Model(graph).run(x), session.run(None, {"x": x})[0])


@pytest.mark.parametrize("zero, opset, attributes", [
    (np.int8(3), 13, {}),
    (None, 13, {}),  # no zero point: uint8, from 0
    (np.uint8(200), 19, {}),
    (np.int16(-5), 21, {}),
    (None, 21, {"output_dtype": onnx.TensorProto.INT8}),
])
def test_a_quantize_dequantize_pair_on_a_map_is_one_fake_quantize_layer(tmp_path, rng, zero, opset, attributes):
    """The pair's integer type (its zero point's, its output_dtype's, or uint8) is the
    range the map clamps to; values far outside it clamp, as onnxruntime's do."""
    helper = onnx.helper
    inits = {"scale": np.float32(0.037), **({"zero": zero} if zero is not None else {})}
    pair = ["scale", "zero"] if zero is not None else ["scale"]
    nodes = [helper.make_node("QuantizeLinear", ["x", *pair], ["q"], **attributes),
             helper.make_node("DequantizeLinear", ["q", *pair], ["y"])]
    path = onnx_file(tmp_path / "pair.onnx", nodes, inits, opset=opset, input_shape=(1, 3, 8, 8))
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["fake_quantize"]
    x = (rng.standard_normal((2, 3, 8, 8)) * 3).astype(np.float32)
    x[0, 0, 0, :4] = [1000.0, -1000.0, 0.0185, 0.0555]  # past every range; ties of 0.037 steps (to even: 0, 2)
    np.testing.assert_array_equal(Model(graph).run(x), onnxruntime_scores(path, x))


@pytest.mark.parametrize("nodes, inits, message", [
    ([("QuantizeLinear", ["x", "scale", "zero"], ["q"]), ("DequantizeLinear", ["q", "other", "zero"], ["y"])],
     {"other": np.float32(0.5)}, r"node 'n1'.*dequantizes with scale 0\.5 and zero point 3 the integers "
                                 r"QuantizeLinear 'n0' made with scale 0\.1[0-9]* and zero point 3; graphconv reads a "
                                 r"pair of the same"),
    ([("QuantizeLinear", ["x", "scales", "zero"], ["q"]), ("DequantizeLinear", ["q", "scales", "zero"], ["y"])],
     {"scales": np.full(3, 0.1, np.float32)}, r"node 'n0'.*QuantizeLinear with 3 scales \(one per channel or per "
                                               r"block\); graphconv reads one scale"),
    ([("QuantizeLinear", ["x", "scale", "zero"], ["y"])], {},
     r"node 'n0'.*its integers are the network's output; graphconv's maps are float32: export the model up to the "
     r"DequantizeLinear after it"),
    ([("QuantizeLinear", ["x", "scale", "zero"], ["q"]), ("Relu", ["q"], ["y"])], {},
     r"node 'n0'.*op QuantizeLinear, for Relu, is not supported: graphconv computes in float32, and reads a "
     r"quantized map only through the DequantizeLinear"),
    ([("DequantizeLinear", ["x", "scale", "zero"], ["y"])], {},
     r"node 'n0'.*DequantizeLinear of 'x', which no QuantizeLinear made"),
])
def test_quantized_activations_graphconv_cannot_read_are_refused_saying_why(tmp_path, nodes, inits, message):
    nodes = [onnx.helper.make_node(op, inputs, outputs, name=f"n{i}") for i, (op, inputs, outputs) in enumerate(nodes)]
    inits = {"scale": np.float32(0.1), "zero": np.int8(3), **inits}
    used = {name for node in nodes for name in node.input}
    path = onnx_file(tmp_path / "model.onnx", nodes, {k: v for k, v in inits.items() if k in used})
    with pytest.raises(GraphconvError, match=message):
        load_network(path, task="segmentation")


def test_constants_cast_like_the_feature_map_are_float32_constants(tmp_path, rng):
    """PyTorch's dynamo exporter with optimize=False writes CastLike(constant, map) for a
    bias-free conv's bias and ReLU6's bounds: refused as an unsupported op."""
    helper = onnx.helper
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "zero": np.zeros(4, np.float64),
             "low": np.float32(0.0), "high": np.int64(6)}
    nodes = [helper.make_node("CastLike", ["zero", "x"], ["bias"]),
             helper.make_node("Conv", ["x", "w", "bias"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("CastLike", ["low", "c"], ["lo"]),
             helper.make_node("CastLike", ["high", "c"], ["hi"]),
             helper.make_node("CastLike", ["c", "lo"], ["same"]),
             helper.make_node("Clip", ["same", "lo", "hi"], ["y"])]
    path = onnx_file(tmp_path / "castlike.onnx", nodes, inits, opset=17, input_shape=(1, 3, 8, 8))
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["conv", "clip"]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32) * 4
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)
    nodes[-2] = helper.make_node("CastLike", ["c", "high"], ["same"])  # to int64: the map rounded
    path = onnx_file(tmp_path / "to_int.onnx", nodes, inits, opset=17, input_shape=(1, 3, 8, 8))
    with pytest.raises(GraphconvError, match="CastLike of the image's feature map to int64; graphconv computes in "
                                             "float32"):
        load_network(path, task="segmentation")


def test_a_file_of_two_outputs_is_told_how_to_keep_one(tmp_path, rng):
    """(logits, probs) or (logits, features): refused before any node is read, with the
    onnx call that cuts the file to the output wanted; that call's file loads."""
    helper = onnx.helper
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Softmax", ["y"], ["p"], axis=1),
             helper.make_node("ArgMax", ["y"], ["z"], axis=1)]  # no converter: refused, were it read
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 6, 6]),
         helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, ["N", 4, 6, 6]),
         helper.make_tensor_value_info("z", onnx.TensorProto.INT64, ["N", 1, 6, 6])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "models" / "two.onnx"  # in a folder: the hint's path works from where graphconv ran
    path.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(GraphconvError) as err:
        load_network(path, task="segmentation")
    assert str(err.value) == ("models/two.onnx: has 3 outputs ('y', 'p', 'z'); graphconv reads networks with one: "
                              "keep the one you want with onnx.utils.extract_model('models/two.onnx', 'one.onnx', "
                              "['x'], ['y'])")
    onnx.utils.extract_model("models/two.onnx", "one.onnx", ["x"], ["p"])  # as the hint says, from the same folder
    assert [n.op for n in load_network("one.onnx", task="segmentation").layers()] == ["conv", "softmax"]


def test_a_file_exported_without_its_weights_says_so(tmp_path):
    """export_params=False makes every parameter a graph input: "has 9 inputs" did not say why."""
    helper = onnx.helper
    nodes = [helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["y"])]
    graph = helper.make_graph(
        nodes, "noparams", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8]),
                            helper.make_tensor_value_info("conv.weight", onnx.TensorProto.FLOAT, [4, 3, 3, 3]),
                            helper.make_tensor_value_info("conv.bias", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    path = tmp_path / "noparams.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(GraphconvError, match=r"has 3 inputs \('x', 'conv.weight', 'conv.bias'\); graphconv reads "
                                             r"classifiers with one image input; the others are read as weights: "
                                             r"the file holds none \(exported with export_params=False\?\)"):
        load_network(path, task="segmentation")


def _conv_model(path, inputs: list, divisor: str | None = None):
    """A 3x3 conv on input x among `inputs` (ValueInfos), its map divided by input `divisor` if given."""
    helper = onnx.helper
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c" if divisor else "y"])]
    if divisor:
        nodes.append(helper.make_node("Div", ["c", divisor], ["y"]))
    output = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "inputs", inputs, [output],
                              [onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


IMAGE = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])


def test_a_second_input_read_at_run_time_is_named_not_taken_for_missing_weights(tmp_path):
    """An image and a temperature (logits / t): the file holds its weights, and the
    message said they were missing (export_params=False?)."""
    temperature = onnx.helper.make_tensor_value_info("temperature", onnx.TensorProto.FLOAT, [])
    path = _conv_model(tmp_path / "two.onnx", [IMAGE, temperature], divisor="temperature")
    with pytest.raises(GraphconvError) as err:
        load_network(path, task="segmentation")
    assert str(err.value) == ("two.onnx: has 2 inputs ('x', 'temperature'); graphconv reads classifiers with one image "
                              "input; 'temperature' (a scalar) is read at run time besides the image: fix the value "
                              "in the model (export a wrapper whose forward(x) passes it as a constant), or make it "
                              "an initializer of the file")


def test_an_input_nothing_reads_is_left_out(tmp_path, rng):
    """An input no node reads, listed before the image: graphconv maps the image alone."""
    flag = onnx.helper.make_tensor_value_info("unused_flag", onnx.TensorProto.FLOAT, [1])
    path = _conv_model(tmp_path / "unused.onnx", [flag, IMAGE])
    graph = load_network(path, task="segmentation")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "unused_flag": np.zeros(1, np.float32)})[0]
    np.testing.assert_allclose(Model(graph).run(x), expected, **TOLERANCE)


@pytest.mark.parametrize("shape", [None, ["N", "C", "H", "W"]], ids=["no-shape", "symbolic-channels"])
def test_an_input_of_unstated_channels_takes_those_its_first_conv_reads(tmp_path, rng, shape):
    """An input with no shape at all was said to have "0 dimensions", and one of a
    symbolic channel count was refused with no way forward; the first conv's weights say
    how many channels it reads, and --crop-size the rest."""
    path = _conv_model(tmp_path / "m.onnx", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)])
    graph = load_network(path, crop_size=(8, 8), task="segmentation")
    assert graph.input_shape == (3, 8, 8)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("shape", [None, ["N", "H", "W", "C"]], ids=["no-shape", "symbolic-channels"])
def test_a_channels_last_input_of_unstated_channels_takes_those_its_conv_reads_after_the_transpose(
        tmp_path, rng, shape):
    """tf2onnx's (N, H, W, C) input, rescaled and padded before its Transpose to NCHW:
    the conv after the Transpose says how many channels; refused with the NHWC shape to
    state where no conv says."""
    helper = onnx.helper
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "scale"], ["scaled"]),
             helper.make_node("Pad", ["scaled", "pads"], ["padded"]),
             helper.make_node("Transpose", ["padded"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["y"])]
    weights = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(np.float32(1 / 255), "scale"),
               onnx.numpy_helper.from_array(np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64), "pads")]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    network = load_network(tmp_path / "m.onnx", crop_size=(8, 8), task="segmentation")
    assert network.input_shape == (3, 8, 8)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = onnxruntime_scores(tmp_path / "m.onnx", x.transpose(0, 2, 3, 1).copy())
    np.testing.assert_allclose(Model(network).run(x), expected, **TOLERANCE)
    graph.node[3].op_type = "Relu"
    del graph.node[3].input[1:]
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(GraphconvError, match=re.escape("make_tensor_value_info('x', onnx.TensorProto.FLOAT, "
                                                       "['N', 'H', 'W', 3]))")):
        load_network(tmp_path / "m.onnx", crop_size=(8, 8), task="segmentation")


def test_an_input_of_unstated_shape_read_by_no_conv_says_how_to_state_it(tmp_path):
    helper = onnx.helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "m",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    with pytest.raises(GraphconvError) as err:
        load_network(tmp_path / "m.onnx", crop_size=(8, 8), task="segmentation")
    assert str(err.value) == (
        "m.onnx: input 'x' states no shape, and no conv reading it says how many channels it has; state its shape "
        "in the file, with your channel count: model.graph.input[0].CopyFrom(onnx.helper.make_tensor_value_info("
        "'x', onnx.TensorProto.FLOAT, ['N', 3, 'H', 'W']))")


def test_circular_padding_as_torchscript_writes_it_is_named(tmp_path):
    """Conv2d(padding_mode="circular") exported by TorchScript is Slices of the map's edges
    and Concats: it was refused as "Slice along axes [2] of a map", which said nothing."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 2)).eval()
    model.crop = 8
    onnx_zoo.export(model, tmp_path / "circular.onnx")
    with pytest.raises(GraphconvError, match=r"node '[^']*Slice[^']*': circular padding \(padding_mode='circular', "
                                             r".*graphconv has no wrapping pad"):
        load_network(tmp_path / "circular.onnx")


def test_a_model_calling_its_own_functions_is_read_with_them_inlined(tmp_path, rng):
    """torch.onnx.export(..., export_modules_as_functions={nn.Conv2d}) makes each conv a
    call of a function the file defines: it was refused as an op "from a custom domain"."""
    helper = onnx.helper
    block = helper.make_function(
        "torch.nn.modules.conv", "Conv2d", ["input", "weight", "bias"], ["output"],
        [helper.make_node("Conv", ["input", "weight", "bias"], ["c"]), helper.make_node("Relu", ["c"], ["output"])],
        [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("Conv2d", ["x", "w1", "b1"], ["h"], domain="torch.nn.modules.conv", name="c1"),
             helper.make_node("Conv2d", ["h", "w2", "b2"], ["y"], domain="torch.nn.modules.conv", name="c2")]
    weights = {"w1": rng.standard_normal((4, 3, 3, 3)), "b1": rng.standard_normal(4),
               "w2": rng.standard_normal((5, 4, 3, 3)), "b2": rng.standard_normal(5)}
    output = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "functions", [IMAGE], [output],
                              [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    path = tmp_path / "functions.onnx"
    onnx.save(helper.make_model(graph, functions=[block], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("torch.nn.modules.conv", 1)]), str(path))
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["conv", "relu", "conv", "relu"]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


class _GatedConv(torch.nn.Module):
    """A conv whose map a squeeze-and-excitation gate scales, the gate made a map in one
    of the ways PyTorch code writes it."""
    crop = 9

    def __init__(self, how: str):
        super().__init__()
        self.how, self.conv = how, torch.nn.Conv2d(3, 4, 3)
        self.squeeze, self.excite = torch.nn.Linear(4, 2), torch.nn.Linear(2, 4)

    def forward(self, x):
        c = self.conv(x)
        y = torch.sigmoid(self.excite(torch.relu(self.squeeze(c.mean((2, 3))))))
        if self.how == "none-none":
            return c * y[:, :, None, None]
        if self.how == "unsqueeze-last":
            return c * y.unsqueeze(-1).unsqueeze(-1)
        return c * y.view(y.shape[0], y.shape[1], 1, 1).expand_as(c)  # SENet's own code


@pytest.mark.parametrize("how", ["none-none", "unsqueeze-last", "expand-as"])
def test_squeeze_and_excitation_gates_made_maps_every_way_match_onnxruntime(tmp_path, rng, how):
    """The exporter writes y[:, :, None, None] and unsqueeze(-1) twice as two one-axis
    Unsqueezes, and SENet's expand_as as an Expand to the map's size: all were refused
    (only y.view(b, c, 1, 1) imported)."""
    torch.manual_seed(0)
    path = tmp_path / f"{how}.onnx"
    onnx_zoo.export(_GatedConv(how).eval(), path)
    graph = load_network(path, task="segmentation")
    assert "mul" in [n.op for n in graph.layers()]
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("last", [torch.nn.Softmax(dim=1), torch.nn.LogSoftmax(dim=1)], ids=["softmax", "log"])
def test_a_softmax_over_channels_exported_before_op_set_13_matches_onnxruntime(tmp_path, rng, opset, last):
    """Before op set 13 the exporter writes softmax(x, dim=1) on a map as Transpose
    [0, 3, 2, 1], a Softmax over the last axis and the Transpose back: it was refused at
    the first Transpose."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), last).eval()
    path = tmp_path / "softmax.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(net, (torch.randn(1, 3, 9, 9),), str(path), opset_version=opset, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    assert "Transpose" in [n.op_type for n in onnx.load(str(path)).graph.node]
    graph = load_network(path, task="segmentation")
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


def test_a_split_part_of_no_channels_is_left_out_unless_read(tmp_path, rng):
    """split=[0, 3] is valid ONNX: the empty part, read by nothing, is no layer (it was
    refused with numpy's "'stop' must be an integer >= 1"); read, it is one clear line."""
    helper = onnx.helper
    nodes = [helper.make_node("Split", ["x", "sizes"], ["empty", "all"], axis=1),
             helper.make_node("Relu", ["all"], ["y"])]
    path = onnx_file(tmp_path / "split.onnx", nodes, {"sizes": np.array([0, 3], np.int64)}, input_shape=(1, 3, 4, 4))
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(Model(load_network(path, task="segmentation")).run(x), onnxruntime_scores(path, x))
    nodes[1:] = [helper.make_node("Concat", ["all", "empty"], ["y"], axis=1)]
    read = onnx_file(tmp_path / "read.onnx", nodes, {"sizes": np.array([0, 3], np.int64)}, input_shape=(1, 3, 4, 4))
    with pytest.raises(GraphconvError, match="Split part 'empty' of no channels is read"):
        load_network(read, task="segmentation")


@pytest.mark.parametrize("op, inputs", [("Sum", ["a", "a", "b"]), ("Add", ["a", "a"]), ("Mul", ["a", "a"]),
                                        ("Concat", ["x", "x", "x"]), ("Sub", ["a", "a"])])
def test_a_node_that_reads_one_tensor_twice_equals_onnxruntime(tmp_path, rng, op, inputs):
    """Sum(a, a, b) is 2a + b: the second use of a once overwrote the first (a + b,
    silently); x * x and torch.cat([x, x, x], 1) (a grey input made RGB) failed."""
    import onnxruntime as ort
    helper = onnx.helper
    weights = {"w1": rng.standard_normal((4, 3, 3, 3)), "w2": rng.standard_normal((4, 3, 3, 3))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Conv", ["x", "w2"], ["b"]),
             helper.make_node(op, inputs, ["y"], **({"axis": 1} if op == "Concat" else {}))]
    path = save(tiny_model(nodes, weights), tmp_path / "twice.onnx")
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = Model(load_network(path, task="segmentation")).run(x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, message", [
    ([1, 4, 16, 8], r"Expand of a 1x1x8x8 map to \[1, 4, 16, 8\], a shape it does not broadcast to"),
    ([2, 4, 8, 8], r"Expand of a 1x1x8x8 map to \[2, 4, 8, 8\]; graphconv expands a map only across its channels"),
])
def test_expand_beyond_the_channels_is_refused_naming_the_node(tmp_path, rng, shape, message):
    """Expand goes through only as F.normalize uses it, across the channels, where the
    div after it broadcasts anyway; any other expansion would change what the map is."""
    helper = onnx.helper
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("ReduceL2", ["a"], ["n"], axes=[1]),
             helper.make_node("Expand", ["n", "shape"], ["y"], name="grow")]
    model = tiny_model(nodes, {"w": rng.standard_normal((4, 3, 1, 1)), "shape": np.array(shape, np.int64)})
    with pytest.raises(GraphconvError, match=r"node 'grow': " + message):
        load_network(save(model, tmp_path / "model.onnx"), task="segmentation")


def test_reshape_from_a_shape_chain_is_a_flatten(tmp_path, rng):
    """The TorchScript exporter's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze ->
    Concat -> Reshape, evaluated at import."""
    path = tmp_path / "v.onnx"
    onnx_zoo.export(onnx_zoo.build("vggbn"), path, fold=False)
    assert "Shape" in {node.op_type for node in onnx.load(str(path)).graph.node}
    graph = load_network(path)
    (flatten,) = graph.find("flatten")
    assert [user.op for user in flatten.users] == ["fc"]


def test_unsupported_op_names_the_node_and_the_op(tmp_path):
    helper = onnx.helper
    nodes = [helper.make_node("Einsum", ["x"], ["y"], name="Einsum_12", equation="nchw->nhwc")]  # attention's
    model = tiny_model(nodes, {})
    path = save(model, tmp_path / "model.onnx")
    with pytest.raises(GraphconvError, match=r"model.onnx: node 'Einsum_12': op Einsum is not supported; the ONNX "
                                             r"ops graphconv reads are listed in its docs/onnx.md") as refused:
        load_network(path)
    assert "Conv" not in str(refused.value)  # one short line, not the ~70 supported ops


def test_an_unsupported_op_names_the_supported_ones_of_similar_names(tmp_path):
    nodes = [onnx.helper.make_node("ReduceMin", ["x"], ["y"], name="r", axes=[2, 3])]
    path = save(tiny_model(nodes, {}), tmp_path / "model.onnx")
    with pytest.raises(GraphconvError, match=r"node 'r': op ReduceMin is not supported \(similar ones it reads: "
                                             r"[^)]*ReduceMax[^)]*\); the ONNX ops graphconv reads are listed"):
        load_network(path)


@pytest.mark.parametrize("node, why", [
    (("ArgMax", ["x"], {"axis": 1}), r"op ArgMax is not supported: the network ends in its decision; export it up "
                                     r"to its class scores"),
    (("ConvInteger", ["x", "w"], {}), r"quantized in operator form \(QOperator\)"),
    (("Sin", ["x"], {}), r"op Sin is not supported; the ONNX ops"),  # no "similar ones": Min is no relative
    (("Exp", ["x"], {}), r"op Exp is not supported; the ONNX ops"),  # nor is Expand
    (("Greater", ["x", "scale"], {}), r"op Greater is not supported; the ONNX ops"),  # nor is Gather
    (("DynamicQuantizeLinear", ["x"], {}), r"quantized dynamically \(onnxruntime's quantize_dynamic: .*import the "
                                           r"float model"),
])
def test_an_unsupported_op_says_what_kind_of_model_it_marks(tmp_path, node, why):
    """A decision, a quantized model, an op whose name is only by chance like a supported
    one: the refusal says what to give graphconv, not a list of lookalikes."""
    op, inputs, attributes = node
    nodes = [onnx.helper.make_node(op, inputs, ["y"], name="n", **attributes)]
    inits = {"scale": np.float32(0.1), "w": np.zeros((4, 3, 3, 3), np.uint8)}
    path = onnx_file(tmp_path / "model.onnx", nodes, {k: v for k, v in inits.items() if k in inputs})
    with pytest.raises(GraphconvError, match=why):
        load_network(path)


@pytest.mark.parametrize("domain, op, reads", [
    ("com.microsoft", "NhwcConv", "and com.microsoft's FusedConv, FusedGemm, Gelu and QuickGelu "),
    ("com.microsoft.nchwc", "Conv", "")])
def test_onnxruntime_s_own_ops_say_where_they_come_from(tmp_path, domain, op, reads):
    nodes = [onnx.helper.make_node(op, ["x", "w"], ["y"], name="c", domain=domain, activation="Relu")]
    path = onnx_file(tmp_path / "optimized.onnx", nodes, {"w": np.zeros((4, 3, 3, 3), np.float32)})
    with pytest.raises(GraphconvError, match=rf"node 'c': op {domain}.{op} is from a custom domain; "
                                             rf"graphconv reads the standard ONNX ops {reads}\({domain} ops are "
                                             r"onnxruntime's own: .* import the model as it was exported"):
        load_network(path)


def test_a_model_onnxruntime_optimised_and_saved_imports_and_matches_the_original(tmp_path, rng):
    """onnxruntime's "extended" level (optimized_model_filepath) fuses each conv and Gemm
    with its activation (com.microsoft FusedConv, FusedGemm), GELU into Gelu and SiLU
    into QuickGelu: read back as the ops they fuse, the scores are the original's."""
    ort = pytest.importorskip("onnxruntime")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 1),
                          nn.Tanh(), nn.Conv2d(8, 8, 1), nn.Hardsigmoid(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
                          nn.Conv2d(8, 8, 1), nn.SiLU(), nn.Conv2d(8, 8, 1), nn.GELU(), nn.Flatten(),
                          nn.Linear(8 * 5 * 5, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    original = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(original), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(original), options, providers=["CPUExecutionProvider"])
    fused = {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node
             if node.domain == "com.microsoft"}
    assert fused == {"FusedConv", "FusedGemm", "Gelu", "QuickGelu"}
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    scores = Model(load_network(options.optimized_model_filepath)).run(x)
    np.testing.assert_allclose(scores, onnxruntime_scores(original, x), **TOLERANCE)


def _onnxruntime_model(path, nodes, initializers: dict):
    """`onnx_file` that imports onnxruntime's com.microsoft op set too."""
    helper = onnx.helper
    graph = helper.make_graph(
        nodes, "fused", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers.items()])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


@pytest.mark.parametrize("activation, params", [
    ("Relu", None), ("LeakyRelu", [0.2]), ("Clip", [-1.0, 0.5]), ("Clip", [0.0, 6.0]), ("HardSigmoid", [0.3, 0.4]),
    ("Sigmoid", None), ("Tanh", None), (None, None)])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_conv_with_each_activation_and_a_residual_z_matches_onnxruntime(tmp_path, rng, activation, params,
                                                                             residual):
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    attrs.update({} if activation is None else dict(activation=activation))
    attrs.update({} if params is None else dict(activation_params=params))
    nodes = [onnx.helper.make_node("Conv", ["x", "w0"], ["z"], kernel_shape=[1, 1]),
             onnx.helper.make_node("FusedConv", ["x", "w", "b"] + (["z"] if residual else []), ["y"],
                                   domain="com.microsoft", **attrs)]
    path = _onnxruntime_model(tmp_path / "fused.onnx", nodes, {"w0": rng.standard_normal((4, 3, 1, 1)),
                                                               "w": rng.standard_normal((4, 3, 3, 3)),
                                                               "b": rng.standard_normal(4)})
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).run(x, full=True), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("node, message", [
    (onnx.helper.make_node("FusedConv", ["x", "w"], ["y"], name="c", domain="com.microsoft", activation="Selu"),
     r"node 'c': FusedConv with activation 'Selu'; graphconv reads Relu, Tanh, Sigmoid"),
    (onnx.helper.make_node("QuickGelu", ["x"], ["y"], name="q", domain="com.microsoft"),
     r"node 'q': QuickGelu with alpha 1.702: graphconv reads it as SiLU, x \* sigmoid\(x\) \(alpha 1\)"),
])
def test_onnxruntime_s_fused_ops_it_cannot_read_are_refused_naming_them(tmp_path, node, message):
    path = _onnxruntime_model(tmp_path / "fused.onnx", [node], {"w": np.zeros((4, 3, 3, 3))})
    with pytest.raises(GraphconvError, match=message):
        load_network(path)


def test_a_model_quantized_in_operator_form_is_said_so_at_its_first_quantize(tmp_path):
    """quantize_static's QOperator form begins with a QuantizeLinear of the input: it was
    refused as a QDQ model's quantized activations."""
    helper = onnx.helper
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="input_quantize"),
             helper.make_node("QLinearConv", ["q", "scale", "zero", "w", "scale", "zero", "scale", "zero"], ["c"]),
             helper.make_node("DequantizeLinear", ["c", "scale", "zero"], ["y"])]
    inits = {"scale": np.float32(0.1), "zero": np.uint8(0), "w": np.zeros((4, 3, 3, 3), np.uint8)}
    path = onnx_file(tmp_path / "qoperator.onnx", nodes, inits)
    with pytest.raises(GraphconvError, match=r"node 'input_quantize'.*op QuantizeLinear, for QLinearConv, is not supported: the model is "
                                             r"quantized in operator form \(QOperator\)"):
        load_network(path)


SHRINK_OPS = {  # a plugin op as its own package: the OpDef, its CPU kernel and its ONNX converters
    "__init__.py": """
import numpy as np
from graphconv.ops.registry import OpDef, Param, numel, register

register(OpDef(name="hardshrink", doc="x where |x| > lambd, else 0", params=(Param("lambd", "float", 0.5),),
               shape=lambda p, s: s[0], flops=lambda p, s, o: numel(o), package=__name__,
               reference=lambda p, w, i: np.where(np.abs(i[0]) > p["lambd"], i[0], 0).astype(np.float32)))
""",
    "cpu.py": """
import numpy as np

def run_hardshrink(params, weights, inputs, out):
    out[...] = np.where(np.abs(inputs[0]) > params["lambd"], inputs[0], 0)
""",
    "onnx_import.py": """
from graphconv.frontends.onnx import POINTWISE_LAYOUTS, converts


@converts("HardShrink", domain="mydomain")
def hard_shrink(imp, node):
    lambd = imp.attributes(node).get("lambd", 0.5)
    imp.add_layer(node, "hardshrink", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)], {"lambd": lambd})


@converts("Shrink")
def shrink(imp, node):
    attrs = imp.attributes(node)
    if attrs.get("bias", 0.0) != 0.0:
        raise imp.error("only a Shrink of bias 0 is a hardshrink")
    imp.add_layer(node, "hardshrink", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)], {"lambd": attrs.get("lambd")})
""",
}


@pytest.mark.parametrize("op_type, domain, attributes", [("HardShrink", "mydomain", {"lambd": 0.3}),
                                                          ("Shrink", "", {"lambd": 0.3}),
                                                          ("Shrink", "", {"lambd": 0.3, "bias": 0.1})])
def test_a_plugin_op_s_converters_in_its_own_package_read_it_from_onnx(tmp_path, monkeypatch, rng, op_type, domain,
                                                                         attributes):
    """A plugin op's `onnx_import` module beside its kernels registers converters, for a
    standard ONNX op type graphconv lacks (Shrink) or one of a custom domain (what
    PyTorch's register_custom_op_symbolic writes): compile --plugin reads the op, and the
    converter's own refusal names the node."""
    from graphconv.frontends import onnx as onnx_frontend
    from graphconv.ops import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(onnx_frontend, "CONVERTERS", dict(onnx_frontend.CONVERTERS))
    monkeypatch.setattr(onnx_frontend, "CUSTOM_CONVERTERS", dict(onnx_frontend.CUSTOM_CONVERTERS))
    monkeypatch.setattr(onnx_frontend, "_OP_MODULES_TRIED", set(onnx_frontend._OP_MODULES_TRIED))
    package = tmp_path / f"shrink_ops_{op_type.lower()}_{len(attributes)}"
    package.mkdir()
    for name, text in SHRINK_OPS.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = onnx.helper
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node(op_type, ["c"], ["y"], name="shrink", domain=domain, **attributes)],
        "shrunk", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [onnx.numpy_helper.from_array(weight, "w")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    path = save(helper.make_model(graph, opset_imports=opsets), tmp_path / "shrunk.onnx")
    done = graphconv_in_process("compile", path, "-o", tmp_path / "m", "--plugin", package.name, "--task",
                                "segmentation")
    if "bias" in attributes:
        assert done.returncode == 2 and "node 'shrink'" in done.stderr and "only a Shrink of bias 0" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    model = Model.load(tmp_path / "m")
    assert [node.op for node in model.graph.layers()] == ["conv", "hardshrink"]
    assert model.graph.layers()[1].params["lambd"] == pytest.approx(0.3)  # ONNX's float32 attribute
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    conv = sum(np.stack([np.tensordot(weight[:, :, i, j], x[0, :, i:i + 6, j:j + 6], axes=(1, 0))
                         for i in range(3) for j in range(3)]))
    np.testing.assert_allclose(model.run(x)[0], np.where(np.abs(conv) > 0.3, conv, 0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [6, 30])
def test_opsets_outside_the_supported_range_are_refused(tmp_path, opset):
    nodes = [onnx.helper.make_node("Relu", ["x"], ["y"])]
    path = save(tiny_model(nodes, {}, opset=opset), tmp_path / "old.onnx")
    with pytest.raises(GraphconvError, match=f"op set {opset}; graphconv reads op sets"):
        load_network(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_are_one_line(exported, tmp_path, damage):
    _, good = exported("alexnet")
    data = good.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x08\x07" + bytes(range(256)) * 4,
                     "empty": b""}[damage])
    with pytest.raises(GraphconvError, match="bad.onnx"):
        load_network(bad)


def test_missing_external_data_is_named(tmp_path, rng):
    model = tiny_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"])],
                       {"w": rng.standard_normal((64, 3, 3, 3))})
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(GraphconvError, match="external data file 'ext.weights' is missing"):
        load_network(path)


def test_external_data_outside_the_model_folder_is_refused(tmp_path, rng):
    model = tiny_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"])],
                       {"w": rng.standard_normal((64, 3, 3, 3))})
    inner = tmp_path / "models"
    inner.mkdir()
    onnx.save(model, str(tmp_path / "tmp.onnx"), save_as_external_data=True,
              location="w.bin", size_threshold=0)
    loaded = onnx.load(str(tmp_path / "tmp.onnx"), load_external_data=False)
    for entry in loaded.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../w.bin"
    onnx.save(loaded, str(inner / "escape.onnx"))
    with pytest.raises(GraphconvError, match="outside the model's folder"):
        load_network(inner / "escape.onnx")


def test_an_onnx_model_s_external_data_is_among_the_files_it_is_read_from(tmp_path, rng):
    """So `export ext.onnx -o ext.weights` is refused instead of replacing the weights."""
    from graphconv.cli import main

    model = tiny_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"])],
                       {"w": rng.standard_normal((64, 3, 3, 3))})
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    graph = load_network(tmp_path / "ext.onnx")
    assert str((tmp_path / "ext.weights").resolve()) in graph.meta["read_from"]
    before = (tmp_path / "ext.weights").read_bytes()
    assert main(["export", str(tmp_path / "ext.onnx"), "-o", str(tmp_path / "ext.weights")]) == 2
    assert (tmp_path / "ext.weights").read_bytes() == before


def test_graphconv_s_own_export_of_a_classifier_with_fc_layers_imports_back(tmp_path, rng):
    """graphconv exports an fc as Gemm then Unsqueeze to (N, K, 1, 1), which its importer
    refused ('Unsqueeze of axes [2, 3] of a rank-2 feature map')."""
    from graphconv.cli import main
    from graphconv.frontends.onnx_export import save_onnx

    original = load_network(SPECS / "lenet.yaml")
    save_onnx(original, tmp_path / "lenet.onnx")
    assert main(["import", str(tmp_path / "lenet.onnx"), "--crop-size", "32", "32", "-o",
                 str(tmp_path / "lenet.yaml")]) == 0
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(tmp_path / "lenet.yaml")).run(x), Model(original).run(x),
                               rtol=1e-5, atol=1e-6)


# ---- the CLI ---------------------------------------------------------------------------------------

graphconv = graphconv_process  # the command, in a process of its own


def test_cli_import_writes_a_spec_that_loads_back_to_the_same_network(exported, tmp_path, rng):
    model, path = exported("resnet", fold=False)
    spec = tmp_path / "out" / "resnet.yaml"
    result = graphconv("import", path, "-o", spec)
    assert result.returncode == 0, result.stderr
    text = spec.read_text()
    assert "layer1.0.conv1" in text and "weights: resnet.npz" in text
    assert set(np.load(spec.with_suffix(".npz"))) >= {"layer1.0.bn1.running_var", "head.fc.weight"}
    x = rng.standard_normal((1, 3, model.crop, model.crop)).astype(np.float32)
    np.testing.assert_allclose(Model.load(spec).run(x).reshape(1, -1), torch_scores(model, x), **TOLERANCE)


@pytest.mark.parametrize("arch", ["darknet", "antialiased"])
def test_an_imported_model_saved_as_a_spec_loads_back_with_its_slopes_and_pad_modes(exported, tmp_path, rng, arch):
    """PReLU's slopes travel in the weights file as `<layer>.weight`, a pad's mode in the
    spec."""
    from graphconv import save_model
    model, path = exported(arch)
    folder = save_model(load_network(path), tmp_path / arch)
    text = (folder / "model.yaml").read_text()
    assert ("op: prelu" in text) if arch == "darknet" else ("mode: reflect" in text and "mode: edge" in text)
    x = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    np.testing.assert_allclose(Model.load(folder).run(x), torch_scores(model, x), **TOLERANCE)


def test_cli_run_and_compile_take_an_onnx_file(exported, tmp_path, rng):
    model, path = exported("squeezenet")
    x = rng.standard_normal((1, 3, model.crop + 16, model.crop + 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = graphconv("compile", path, "-o", tmp_path / "fcn")
    assert result.returncode == 0, result.stderr
    result = graphconv("run", tmp_path / "fcn", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "y.npy")
    expected = torch_scores(model, x, dense=True)
    np.testing.assert_allclose(out, expected[:, :, :out.shape[2], :out.shape[3]], **TOLERANCE)
    inspect = graphconv("inspect", path)
    assert inspect.returncode == 0, inspect.stderr


def test_cli_bad_onnx_is_exit_2_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07\x12\x00garbage")
    result = graphconv("import", bad, "-o", tmp_path / "net.yaml")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "broken.onnx" in result.stderr
    assert not (tmp_path / "net.yaml").exists() and not (tmp_path / "net.npz").exists()
    result = graphconv("compile", bad, "-o", tmp_path / "fcn")
    assert result.returncode == 2 and not (tmp_path / "fcn").exists()


def test_cli_import_with_preprocess_and_labels(exported, tmp_path, rng):
    model, path = exported("alexnet")
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    spec = tmp_path / "alex.yaml"
    result = graphconv("import", path, "-o", spec, "--scale", "0.00392157", "--mean", "0.485,0.456,0.406",
                       "--std", "0.229,0.224,0.225", "--labels", labels)
    assert result.returncode == 0, result.stderr
    loaded = Model.load(spec)
    assert loaded.graph.meta["preprocess"]["std"] == [0.229, 0.224, 0.225]
    assert "values" not in loaded.graph.meta["preprocess"]  # pixels on 0..255, the default
    assert loaded.graph.meta["labels"][3] == "class 3"
    result = graphconv("import", path, "-o", tmp_path / "raw.yaml", "--values", "stored", "--scale", "0.0001")
    assert result.returncode == 0, result.stderr
    assert Model.load(tmp_path / "raw.yaml").graph.meta["preprocess"] == {"values": "stored", "scale": 0.0001}
    (tmp_path / "short.txt").write_text("a\nb\n")
    result = graphconv("import", path, "-o", tmp_path / "bad.yaml", "--labels", tmp_path / "short.txt")
    assert result.returncode == 2 and "has 2 names (one per line), but the model has 10 classes" in result.stderr
    assert not (tmp_path / "bad.yaml").exists() and not (tmp_path / "bad.npz").exists()
    result = graphconv("import", path, "-o", tmp_path / "bad.yaml", "--mean", "1,2")
    assert result.returncode == 2 and "--mean gives 2 numbers" in result.stderr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_onnx_bytes_load_or_fail_cleanly(exported, tmp_path, data):
    """Flipped, dropped and inserted bytes anywhere in a real export: the model loads, or
    one GraphconvError names the file; never another exception."""
    _, good = exported("squeezenet")
    raw = bytearray(good.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if kind == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "drop":
            del raw[at]
        else:
            raw.insert(at, data.draw(st.integers(0, 255)))
    path = tmp_path / "fuzzed.onnx"
    path.write_bytes(bytes(raw))
    try:
        load_network(path)
    except GraphconvError as err:
        assert "fuzzed.onnx" in str(err) and "\n" not in str(err)


def test_an_op_name_that_is_no_utf8_is_refused_as_no_onnx_op(tmp_path):
    """A flipped byte in an op's name (hypothesis found it: "Relu" read as b"\\xd2elu"):
    protobuf hands over bytes, on which onnx.defs.has raised a TypeError."""
    raw = tiny_model([onnx.helper.make_node("Relu", ["x"], ["y"], name="r")], {}).SerializeToString()
    assert raw.count(b"Relu") == 1
    path = tmp_path / "flipped.onnx"
    path.write_bytes(raw.replace(b"Relu", b"\xd2elu"))
    with pytest.raises(GraphconvError, match=r"flipped.onnx.*op \\xd2elu is no ONNX op"):
        load_network(path)


def test_nan_weights_are_refused(tmp_path, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[1, 2, 0, 0] = np.nan
    path = save(tiny_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="c")], {"w": w}), tmp_path / "n.onnx")
    with pytest.raises(GraphconvError, match="node 'c': its weight holds NaN"):
        load_network(path)


def test_batch_norm_with_a_variance_below_minus_eps_is_refused(tmp_path, rng):
    """sqrt(running_var + eps) of a negative number: every score would be NaN, exit 0."""
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             onnx.helper.make_node("BatchNormalization", ["c", "s", "b", "mu", "var"], ["y"], name="bn")]
    weights = {"w": rng.standard_normal((4, 3, 3, 3)), "s": np.ones(4), "b": np.zeros(4), "mu": np.zeros(4)}
    path = save(tiny_model(nodes, {**weights, "var": [1, -1, 1, 0]}), tmp_path / "bn.onnx")
    with pytest.raises(GraphconvError, match=r"^bn.onnx: layer 'bn': running_var \+ eps must be positive .* "
                                             r"not in 1 of 4 channels \(the first: channel 1, running_var -1"):
        load_network(path)
    path = save(tiny_model(nodes, {**weights, "var": [1, 2, 1, 0]}), tmp_path / "ok.onnx")
    assert np.isfinite(Model(load_network(path)).run(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))).all()


def test_a_tensor_whose_data_does_not_match_its_dims_is_one_line_naming_it(tmp_path, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = tiny_model([onnx.helper.make_node("Conv", ["x", "W"], ["y"], name="c")], {"W": w})
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-8]
    path = save(model, tmp_path / "rawshort.onnx")
    with pytest.raises(GraphconvError, match=r"^rawshort.onnx: initializer 'W' \(dims \[4, 3, 3, 3\]\) cannot be "
                                             r"read: cannot reshape array of size 106"):
        load_network(path)
    result = graphconv("inspect", path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "rawshort.onnx: initializer 'W'" in result.stderr
    value = onnx.numpy_helper.from_array(w, "Wc")
    value.raw_data = value.raw_data[:-4]
    nodes = [onnx.helper.make_node("Constant", [], ["Wc"], name="weights", value=value),
             onnx.helper.make_node("Conv", ["x", "Wc"], ["y"], name="c")]
    with pytest.raises(GraphconvError, match=r"^constant.onnx: the value of Constant node 'weights' \(dims "
                                             r"\[4, 3, 3, 3\]\) cannot be read"):
        load_network(save(tiny_model(nodes, {}), tmp_path / "constant.onnx"))


@pytest.mark.parametrize("dims,message", [
    ((1, 3, 0, 8), "input 'x' has an invalid height 0 (0 or negative)"),
    ((1, 3, 8, -2), "input 'x' has an invalid width -2 (0 or negative)"),
    ((1, 3, 0, -1), "input 'x' has an invalid height 0 and width -1 (0 or negative)"),
    ((1, 0, 8, 8), "input 'x' has an invalid channel count of 0 (0 or negative)"),
])
def test_input_dims_of_zero_or_less_are_invalid_not_dynamic(tmp_path, rng, dims, message):
    w = rng.standard_normal((4, 3, 3, 3))
    path = save(tiny_model([onnx.helper.make_node("Conv", ["x", "w"], ["y"])], {"w": w}, input_shape=dims),
                tmp_path / "dims.onnx")
    with pytest.raises(GraphconvError) as err:
        load_network(path)
    assert str(err.value).startswith(f"dims.onnx: {message}") and "dynamic" not in str(err.value)
    if dims[1] > 0:  # a crop given on the command line still stands in for the size the file lacks
        assert load_network(path, crop_size=(8, 8)).input_shape == (3, 8, 8)


def test_a_crop_over_the_memory_budget_names_the_model_file(tmp_path):
    from graphconv import memory

    path = save(tiny_model([onnx.helper.make_node("Relu", ["x"], ["y"])], {}, input_shape=(1, 3, 100000, 100000)),
                tmp_path / "huge.onnx")
    memory.set_memory_limit("512M")
    try:
        with pytest.raises(GraphconvError, match=r"^huge.onnx: the input crop 3x100000x100000 needs about"):
            load_network(path)
    finally:
        memory.set_memory_limit(None)


# ---- the ops of newer classifiers: ConvNeXt, ShuffleNetV2, EfficientNet, MobileNetV3 ----------

def layer_ops(path) -> list[str]:
    return [node.op for node in load_network(path).layers()]


def test_newer_classifiers_import_as_their_own_ops(exported):
    """Swish written as x * sigmoid(x) is one silu layer (the sigmoids left are the
    gates); ConvNeXt's channels-last Linears are 1x1 convs, its layer scale folds away;
    ShuffleNet's view-transpose-view is one channel_shuffle and its chunk two slices."""
    efficientnet = layer_ops(exported("efficientnet")[1])
    assert efficientnet.count("silu") == 8 and efficientnet.count("sigmoid") == 2
    assert efficientnet.count("mul") == 2
    mobilenet = layer_ops(exported("mobilenetv3")[1])
    assert mobilenet.count("hardswish") == 5 and mobilenet.count("hardsigmoid") == 2
    convnext = layer_ops(exported("convnext")[1])
    assert convnext.count("layernorm") == 5 and convnext.count("gelu") == 2
    assert "fc" in convnext and "batchnorm" in convnext  # the head's Linear; the layer scales
    assert not compile_model(exported("convnext")[1]).graph.find("batchnorm")  # folded into the pwconv2s
    shufflenet = layer_ops(exported("shufflenet")[1])
    assert shufflenet.count("channel_shuffle") == 2 and shufflenet.count("slice_channels") == 2


@pytest.mark.parametrize("arch", onnx_zoo.GATED)
def test_squeeze_and_excitation_networks_are_refused_for_dense_evaluation(exported, arch, tmp_path, capsys):
    from graphconv.cli import main
    _, path = exported(arch)
    with pytest.raises(GraphconvError, match="squeeze-and-excitation") as err:
        compile_model(path)
    assert str(err.value).startswith(f"{path}: layer 'block1")  # file and the gate's module path
    out = tmp_path / "compiled"
    assert main(["compile", str(path), "-o", str(out)]) == 2 and not out.exists()
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("dynamo", [False, True])
def test_group_normalised_networks_import_and_are_refused_for_dense_evaluation(exported, dynamo, tmp_path,
                                                                               capsys, rng):
    """GroupNorm as either exporter writes it (Reshape, InstanceNormalization, Reshape, then
    a Mul and an Add that fold into it) equals PyTorch; compiling it to slide is refused."""
    from graphconv.cli import main
    from graphconv.pass_manager import CLASSIFIER_PIPELINE
    model, path = exported("poolformer", dynamo=dynamo)
    classifier = compile_model(path, CLASSIFIER_PIPELINE)
    assert [n.params["groups"] for n in classifier.graph.find("groupnorm")] == [2, 1, 1]
    assert not classifier.graph.find("batchnorm") and classifier.graph.find("sub")
    x = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    np.testing.assert_allclose(classifier.run(x), torch_scores(model, x), **TOLERANCE)
    with pytest.raises(GraphconvError, match=r"layer '[^']+': groupnorm \(a GroupNorm or InstanceNorm\) takes "
                                             r"statistics of its whole map.*--crops"):
        compile_model(path)
    out = tmp_path / "compiled"
    assert main(["compile", str(path), "-o", str(out)]) == 2 and not out.exists()
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("arch,layer", [("poolformer", r"groupnorm \(a GroupNorm or InstanceNorm\)"),
                                        ("convnextv2", "global_l2norm")])
def test_networks_with_whole_map_statistics_are_refused_for_dense_evaluation(exported, arch, layer):
    _, path = exported(arch)
    with pytest.raises(GraphconvError, match=f"layer '[^']+': {layer} takes statistics of its whole map"):
        compile_model(path)


def test_gelu_written_out_before_opset_20_and_as_one_node_import_alike(tmp_path, rng):
    model = onnx_zoo.build("convnext")
    paths = {opset: tmp_path / f"convnext{opset}.onnx" for opset in (17, 20)}
    for opset, path in paths.items():
        onnx_zoo.export(model, path, opset=opset)
    ops = {opset: [n.op_type for n in onnx.load(str(path)).graph.node] for opset, path in paths.items()}
    assert "Erf" in ops[17] and "Gelu" not in ops[17] and "Gelu" in ops[20]
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    written_out, one_node = (Model(load_network(paths[opset])) for opset in (17, 20))
    assert [n.op for n in written_out.graph.layers()] == [n.op for n in one_node.graph.layers()]
    np.testing.assert_allclose(written_out.run(x), one_node.run(x), rtol=1e-6, atol=1e-6)


class Permuted(torch.nn.Module):
    """A network whose second op is `how`; each is refused with the reason."""
    crop = 8

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        if self.how == "transpose":
            return x.permute(0, 2, 1, 3).flatten(1)
        if self.how == "flatten-nhwc":  # a different order of the same numbers: must not pass as NCHW
            return x.permute(0, 2, 3, 1).flatten(1)
        return torch.nn.functional.layer_norm(x, (4, 6, 6)).flatten(1)  # over C, H and W


@pytest.mark.parametrize("how,message", [
    ("transpose", r"Transpose \[0, 2, 1, 3\] of a feature map; graphconv follows only"),
    ("layernorm", "normalises over more than the channels at one position"),
    ("flatten-nhwc", r"is a channels-last map flattened in \(H, W, C\) order; graphconv flattens in \(C, H, W\) "
                     r"order, and reorders such features only for a fully connected layer"),
])
def test_permutes_and_layernorms_graphconv_cannot_follow_are_refused(tmp_path, how, message):
    path = tmp_path / f"{how}.onnx"
    onnx_zoo.export(Permuted(how), path, opset=20)
    with pytest.raises(GraphconvError, match=message):
        load_network(path)


class Normalised(torch.nn.Module):
    """Preprocessing written into the model, as many exported classifiers carry it:
    (x - mean) / std per channel, 1 - x, x * 2 + 1 after a pool."""
    crop = 12

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        x = self.conv(1.0 - (x - self.mean) / self.std)
        x = torch.nn.functional.max_pool2d(x, 2) * 2.0 + 1.0
        return self.fc(torch.flatten(x, 1))


def test_normalisation_written_into_the_model_imports_and_compiles(tmp_path, rng):
    path = tmp_path / "normalised.onnx"
    model = Normalised().eval()
    onnx_zoo.export(model, path)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    graph = load_network(path)
    assert [n.op for n in graph.layers()][:2] == ["batchnorm", "conv"]  # x - mean, / std, 1 - x: one affine layer
    np.testing.assert_allclose(Model(graph).run(x), torch_scores(model, x), **TOLERANCE)
    compiled = compile_model(path)  # the shifts before the padded conv stay layers; the pool's scale too
    big = rng.standard_normal((1, 3, 20, 16)).astype(np.float32)
    assert compiled.run(big).shape == (1, 5, 5, 3)


# ---- padding that differs between the two sides: TensorFlow/Keras models, Pad nodes -------------
#
# tf2onnx writes Keras' padding="same" as auto_pad=SAME_UPPER or as explicit pads such as
# [0, 0, 1, 1] (stride 2 on an even input pads only the bottom and right), Keras'
# ZeroPadding2D and PyTorch's F.pad as Pad nodes. graphconv keeps a conv's or pool's
# symmetric part and puts a `pad` layer with the rest before it.

def onnx_file(path, nodes, initializers: dict, *, opset: int = 13, input_shape=(1, 3, 16, 16)):
    """A model of `nodes` on input x (dynamic batch) with initializers of their own dtypes."""
    helper = onnx.helper
    graph = helper.make_graph(
        nodes, "padded", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", *input_shape[1:]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def onnxruntime_scores(path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def keras_style(path, size: tuple[int, int], rng):
    """A MobileNet-like classifier as tf2onnx writes one: a SAME_UPPER stride-2 conv, a
    depthwise stride-2 conv with explicit pads [0, 0, 1, 1], a SAME_UPPER max pool, an
    average pool counting its uneven padding, global pooling, a dense layer and softmax."""
    helper = onnx.helper

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "stem.weight", "stem.bias"], ["a"], name="model/stem/Conv2D",
                         auto_pad="SAME_UPPER", strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "dw.weight"], ["c"], name="model/dw/depthwise", group=6,
                         pads=[0, 0, 1, 1], strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("MaxPool", ["c"], ["d"], name="model/pool/MaxPool", auto_pad="SAME_UPPER",
                         kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("AveragePool", ["d"], ["e"], name="model/avg/AvgPool", pads=[0, 1, 1, 0],
                         kernel_shape=[2, 2], strides=[1, 1], count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["e"], ["f"]),
        helper.make_node("Flatten", ["f"], ["g"]),
        helper.make_node("Gemm", ["g", "fc.weight", "fc.bias"], ["h"], transB=1),
        helper.make_node("Softmax", ["h"], ["y"], axis=-1),
    ]
    inits = {"stem.weight": weights(6, 3, 3, 3), "stem.bias": weights(6), "dw.weight": weights(6, 1, 3, 3),
             "fc.weight": weights(5, 6), "fc.bias": weights(5)}
    return onnx_file(path, nodes, inits, input_shape=(1, 3, *size))


@pytest.mark.parametrize("size", [(16, 16), (15, 17)])
def test_a_keras_style_classifier_with_same_padding_matches_onnxruntime(tmp_path, size, rng):
    """Even sizes pad only the far side; odd ones both sides alike in some layers."""
    path = keras_style(tmp_path / "keras.onnx", size, rng)
    graph = load_network(path)
    x = rng.standard_normal((2, 3, *size)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)
    pads = {n.name: n.params for n in graph.find("pad")}
    if size == (16, 16):
        constant = {"mode": "constant"}
        assert pads == {"stem.pad": {"padding": (0, 0, 1, 1), "value": 0.0, **constant},
                        "dw.pad": {"padding": (0, 0, 1, 1), "value": 0.0, **constant},
                        "model_pool_MaxPool.pad": {"padding": (0, 0, 1, 1), "value": -np.inf, **constant},
                        "model_avg_AvgPool.pad": {"padding": (0, 1, 1, 0), "value": 0.0, **constant}}
        assert [user.name for user in graph.node("stem.pad").users] == ["stem"]


def test_a_classifier_run_as_written_on_another_size_says_its_same_padding_is_the_crop_s(tmp_path, rng):
    """ONNX works SAME padding out for each input size, graphconv once, for the crop: run
    as written on a 17x17 input, a 16x16 classifier's vector is not onnxruntime's (the note
    says so, naming the layers, and --crop-size 17 17 gives onnxruntime's own)."""
    path = keras_style(tmp_path / "keras.onnx", (16, 16), rng)
    model = onnx.load(str(path))
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], ("H", "W")):
        dim.dim_param = name  # a dynamic input size, as a Keras model saved without one
    onnx.save(model, str(path))
    x = rng.standard_normal((1, 3, 17, 17)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    common = ["run", path, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", "--crop-size"]
    done = graphconv_in_process(*common, 16, 16)
    assert done.returncode == 0, done.stderr
    assert ("Its 2 strided layers with SAME padding (model/stem/Conv2D, model/pool/MaxPool) are padded as for the "
            "16x16 crop, where ONNX pads for each input size") in " ".join(done.stderr.split())
    assert not np.allclose(np.load(tmp_path / "y.npy"), onnxruntime_scores(path, x), **TOLERANCE)
    own = graphconv_in_process(*common, 17, 17)
    assert own.returncode == 0 and "SAME padding" not in own.stderr, own.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("softmax_axis", [-1, 3])
def test_channels_last_concat_and_softmax_as_unoptimised_tf2onnx_writes_them(tmp_path, rng, softmax_axis):
    """Keras' Concatenate and its last softmax on channels-last maps (Transposes tf2onnx's
    optimizer did not move away): a channels-last view's axis 3 is the channels, and the
    classifier slides, each cell its crop's onnxruntime scores."""
    helper = onnx.helper
    nhwc, nchw = dict(perm=[0, 2, 3, 1]), dict(perm=[0, 3, 1, 2])
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[3, 3]),
             helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[3, 3]),
             helper.make_node("Transpose", ["a"], ["a_last"], **nhwc),
             helper.make_node("Transpose", ["b"], ["b_last"], **nhwc),
             helper.make_node("Concat", ["a_last", "b_last"], ["ab_last"], name="concatenate", axis=3),
             helper.make_node("Relu", ["ab_last"], ["r_last"]),
             helper.make_node("Transpose", ["r_last"], ["r"], **nchw),
             helper.make_node("Conv", ["r", "wc"], ["c"], kernel_shape=[6, 6]),
             helper.make_node("Transpose", ["c"], ["c_last"], **nhwc),
             helper.make_node("Softmax", ["c_last"], ["y"], name="predictions", axis=softmax_axis)]
    weights = {"wa": rng.standard_normal((4, 3, 3, 3)), "wb": rng.standard_normal((2, 3, 3, 3)),
               "wc": rng.standard_normal((5, 6, 6, 6)) * 0.3}
    path = save(tiny_model(nodes, weights), tmp_path / "keras.onnx")
    crop = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    classifier = Model(load_network(path))
    np.testing.assert_allclose(classifier.run(crop).reshape(1, 5), onnxruntime_scores(path, crop).reshape(1, 5),
                               **TOLERANCE)
    image = rng.standard_normal((1, 3, 11, 10)).astype(np.float32)
    scores = compile_model(path).run(image)
    assert scores.shape == (1, 5, 4, 3)
    for row, col in ((0, 0), (3, 2), (2, 1)):
        window = image[:, :, row:row + 8, col:col + 8]
        np.testing.assert_allclose(scores[0, :, row, col], onnxruntime_scores(path, window).reshape(5), **TOLERANCE)


def test_channels_last_concat_along_another_axis_is_refused_naming_the_channels(tmp_path, rng):
    nodes = [onnx.helper.make_node("Transpose", ["x"], ["x_last"], perm=[0, 2, 3, 1]),
             onnx.helper.make_node("Concat", ["x_last", "x_last"], ["y"], name="stack_rows", axis=1)]
    path = save(tiny_model(nodes, {}), tmp_path / "rows.onnx")
    with pytest.raises(GraphconvError, match=r"node 'stack_rows'.*: Concat along axis 1 of channels-last \(NHWC\) "
                                             r"maps; graphconv concatenates channels \(axis 3 there\)"):
        load_network(path)


def test_a_keras_style_classifier_compiles_to_a_dense_map_that_tiles_exactly_and_verifies(tmp_path, rng):
    from graphconv.dense import verify
    from graphconv.tiling import min_tile, run_tiled

    path = keras_style(tmp_path / "keras.onnx", (16, 16), rng)
    classifier = Model(load_network(path))
    dense = compile_model(path)
    assert len(dense.graph.find("pad")) == 4  # uneven: nothing for fold-pad
    x = rng.standard_normal((1, 3, 16 + 45, 16 + 38)).astype(np.float32)
    whole = dense.run(x)
    assert whole.shape == (1, 5, *dense.map_size(61, 54))
    for tile in (max(min_tile(dense)), 40):
        np.testing.assert_allclose(run_tiled(dense, x, tile), whole, rtol=1e-4, atol=1e-6)
    report = verify(classifier, dense, x)
    assert report.conversion_exact and report.padding_explains and report.passed, str(report)
    assert any(layer.why == "padding top 0, left 0, bottom 1, right 1 of -inf" for layer in report.layers)


@pytest.mark.parametrize("form", ["opset11", "opset18-axes", "opset9-attribute", "opset10-attribute",
                                  "no-constant-value"])
def test_pad_nodes_in_every_op_set_form_match_onnxruntime(tmp_path, form, rng):
    helper = onnx.helper
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = {"w": w}
    if form == "opset11":
        opset, pad = 11, helper.make_node("Pad", ["x", "pads", "value"], ["p"], mode="constant")
        inits.update(pads=np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64), value=np.array(0.25, np.float32))
    elif form == "opset18-axes":  # pads for the listed axes only, negative axes counted from the end
        opset, pad = 18, helper.make_node("Pad", ["x", "pads", "", "axes"], ["p"])
        inits.update(pads=np.array([0, 2, 1, 0], np.int64), axes=np.array([-1, 2], np.int64))
    elif form == "no-constant-value":
        opset, pad = 13, helper.make_node("Pad", ["x", "pads"], ["p"])
        inits.update(pads=np.array([0, 0, 0, 1, 0, 0, 1, 0], np.int64))
    else:
        opset = int(form[len("opset"):].split("-")[0])
        pad = helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 0, 2], value=-1.5)
    nodes = [pad, helper.make_node("Conv", ["p", "w"], ["y"], strides=[2, 2])]
    path = onnx_file(tmp_path / f"{form}.onnx", nodes, inits, opset=opset, input_shape=(1, 3, 9, 8))
    graph = load_network(path)
    assert [n.op for n in graph.layers()] == ["pad", "conv"]
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x, full=True), onnxruntime_scores(path, x), **TOLERANCE)


def test_a_pad_of_nothing_is_no_layer(tmp_path, rng):
    nodes = [onnx.helper.make_node("Pad", ["x", "pads"], ["p"]), onnx.helper.make_node("Relu", ["p"], ["y"])]
    path = onnx_file(tmp_path / "zero.onnx", nodes, {"pads": np.zeros(8, np.int64)})
    assert [n.op for n in load_network(path).layers()] == ["relu"]


def test_a_pad_before_a_conv_is_folded_by_compile(tmp_path, rng):
    """ZeroPadding2D(1) then a conv of its own padding 1: fold-pad makes one conv padded by 2."""
    helper = onnx.helper
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="zero_padding2d"),
             helper.make_node("Conv", ["p", "conv1.weight"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])]
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
             "conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    path = onnx_file(tmp_path / "fold.onnx", nodes, inits)
    assert [n.op for n in load_network(path).layers()] == ["pad", "conv"]
    compiled = compile_model(path)
    assert [n.name for n in compiled.graph.layers()] == ["conv1"]
    assert compiled.graph.node("conv1").params["padding"] == (2, 2)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(compiled.run(x, full=True), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_a_pool_padded_wider_than_half_its_window_pads_with_a_pad_layer(tmp_path, op, rng):
    """ONNX allows pads up to the kernel; graphconv's pools, like PyTorch's, half the
    window: the pad layer carries all of it (-inf, or zeros that an average counts)."""
    attrs = {"count_include_pad": 1} if op == "AveragePool" else {}
    nodes = [onnx.helper.make_node(op, ["x"], ["y"], kernel_shape=[3, 3], pads=[2, 2, 2, 1], name="pool", **attrs)]
    path = onnx_file(tmp_path / "wide.onnx", nodes, {}, input_shape=(1, 3, 7, 6))
    graph = load_network(path)
    assert graph.node("pool.pad").params["padding"] == (2, 2, 2, 1) and graph.node("pool").params["padding"] == (0, 0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x, full=True), onnxruntime_scores(path, x), **TOLERANCE)


def test_the_pad_layer_is_named_after_its_conv_and_weight_names_stay(tmp_path, rng):
    helper = onnx.helper
    nodes = [helper.make_node("Conv", ["x", "features.0.weight", "features.0.bias"], ["y"], name="/features/Conv",
                              pads=[1, 0, 2, 1], kernel_shape=[3, 3])]
    inits = {"features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "features.0.bias": rng.standard_normal(4).astype(np.float32)}
    graph = load_network(onnx_file(tmp_path / "names.onnx", nodes, inits))
    assert [(n.name, n.op) for n in graph.layers()] == [("features.0.pad", "pad"), ("features.0", "conv")]
    assert graph.node("features.0.pad").params["padding"] == (0, 0, 1, 1)
    assert graph.node("features.0").params["padding"] == (1, 0)
    assert set(graph.node("features.0").weights) == {"weight", "bias"}


class ZeroPadded(torch.nn.Module):
    """PyTorch's way to TensorFlow's stride-2 'same' padding: nn.ZeroPad2d((0, 1, 0, 1))
    before an unpadded stride-2 conv, and F.pad with -inf before a max pool."""
    crop = 16

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(3, 6, 3, stride=2),
                                        torch.nn.ReLU())
        self.dw = torch.nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = torch.nn.functional.pad(self.dw(self.stem(x)), (1, 0, 1, 0), value=float("-inf"))
        x = torch.nn.functional.max_pool2d(x, 2)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_pytorch_zero_pad2d_model_through_either_exporter_equals_pytorch(tmp_path, dynamo, rng):
    """TorchScript writes each pad as a Pad node (its pads from a Shape-free constant
    chain); the dynamo exporter folds the ZeroPad2d into the Conv's pads [0, 0, 1, 1]."""
    torch.manual_seed(0)
    model = ZeroPadded().eval()
    path = tmp_path / "zeropad.onnx"
    onnx_zoo.export(model, path, dynamo=dynamo)
    graph = load_network(path)
    assert len(graph.find("pad")) == 2
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), torch_scores(model, x), **TOLERANCE)
    compiled = compile_model(path)
    assert len(compiled.graph.find("pad")) == 2  # both uneven: they stay
    big = rng.standard_normal((1, 3, 40, 24)).astype(np.float32)
    assert compiled.run(big).shape == (1, 4, 7, 3)


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(["Conv", "MaxPool", "AveragePool"]), auto_pad=st.sampled_from(
           ["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
       pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dilation=st.integers(1, 2),
       size=st.tuples(st.integers(3, 9), st.integers(3, 9)))
@example(op="MaxPool", auto_pad="NOTSET", pads=[0, 0, 0, 0], kernel=(1, 3), stride=(1, 2), dilation=2, size=(3, 4))
def test_uneven_pads_of_any_window_match_onnxruntime(tmp_path_factory, op, auto_pad, pads, kernel, stride, dilation,
                                                    size):
    """Conv, MaxPool and AveragePool (counting its padding) with random pads, SAME_UPPER
    or SAME_LOWER on odd and even sizes: graphconv's classifier equals onnxruntime, or
    both refuse (a window that does not fit). graphconv also refuses a window longer
    than the padded input, where onnxruntime returns an empty map. (onnxruntime 1.32's
    MaxPool works out SAME padding wrongly for a dilated window: its output contradicts
    ONNX's own shape inference and reference evaluator, which graphconv agrees with; so
    the SAME pools here are undilated.)"""
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), auto_pad=auto_pad)
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    if op == "Conv" or (op == "MaxPool" and not auto_pad.startswith("SAME")):
        attrs["dilations"] = [dilation, dilation]
    else:
        attrs["count_include_pad"] = 1
    inputs = ["x", "w"] if op == "Conv" else ["x"]
    inits = {"w": np.random.default_rng(1).standard_normal((2, 2, *kernel)).astype(np.float32)} if op == "Conv" else {}
    path = onnx_file(tmp_path_factory.mktemp("pads") / "w.onnx", [onnx.helper.make_node(op, inputs, ["y"], **attrs)],
                     inits, input_shape=(1, 2, *size))
    x = np.random.default_rng(2).standard_normal((1, 2, *size)).astype(np.float32)
    try:
        expected = onnxruntime_scores(path, x)
    except Exception:  # onnxruntime refuses it (no window fits, pads as wide as the kernel)
        return
    try:
        graph = load_network(path)
    except GraphconvError as err:
        # ONNX's shape rule gives no window there; onnxruntime returns an empty map, or for
        # a dilated MaxPool a map of values computed past the input's end
        pad = pads if auto_pad == "NOTSET" else [0, 0, 0, 0]
        extent = [(dilation if "dilations" in attrs else 1) * (k - 1) + 1 for k in kernel]
        fits = auto_pad.startswith("SAME") or all(extent[a] <= size[a] + pad[a] + pad[a + 2] for a in (0, 1))
        assert "does not fit" in str(err) and (expected.size == 0 or not fits), str(err)
        return
    np.testing.assert_allclose(Model(graph).run(x, full=True), expected, **TOLERANCE)


@pytest.mark.parametrize("opset", [11, 19])
def test_reflect_and_edge_pads_equal_onnxruntime(tmp_path, rng, opset):
    """Pad nodes in reflect and edge mode (the pads an input from op set 11 on; op set 19
    also has wrap, which is refused) become pad layers with the same numbers."""
    helper = onnx.helper
    inits = {"p1": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "p2": np.array([0, 0, 0, 3, 0, 0, 1, 0], np.int64)}
    nodes = [helper.make_node("Pad", ["x", "p1"], ["r"], mode="reflect", name="mirror"),
             helper.make_node("Pad", ["r", "p2"], ["y"], mode="edge", name="repeat")]
    path = onnx_file(tmp_path / "pads.onnx", nodes, inits, opset=opset, input_shape=(1, 3, 8, 8))
    graph = load_network(path)
    assert [(n.params["mode"], n.params["padding"]) for n in graph.find("pad")] == [
        ("reflect", (1, 2, 2, 1)), ("edge", (0, 3, 1, 0))]
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(Model(graph).run(x, full=True), onnxruntime_scores(path, x))


@pytest.mark.parametrize("case,message", [
    ("wrap", r"node 'pad_r': Pad mode 'wrap' is not supported; graphconv pads with a constant, a reflection "
             r"or the edge repeated .*; 'wrap' is circular padding: graphconv has no wrapping pad"),
    ("channels", r"node 'pad_r': Pad of the batch or channel axis \(pads \[0, 1, 0, 0, 0, 0, 0, 0\]\)"),
    ("crop", r"node 'pad_r': Pad with negative pads \[0, 0, -1, 0, 0, 0, 0, 0\] crops the map"),
    ("nan", r"node 'pad_r': Pad with a NaN constant_value"),
    ("avg-exclude", r"node 'avg': AveragePool pads \[0, 0, 1, 1\] differ between the two sides of an axis and "
                    r"count_include_pad=0.*\(export with symmetric padding or count_include_pad=1\)"),
    ("avg-exclude-keras", r"node 'avg': AveragePool pads \[0, 0, 1, 1\] .*\(in Keras, padding=\"valid\", or a crop "
                          r"size on which \"same\" pads both sides alike\)"),
    ("ceil", r"node 'avg': MaxPool pads \[0, 0, 1, 1\] differ between the two sides of an axis and ceil_mode=1"),
    ("negative-conv", r"node 'avg': Conv pads \[0, -1, 0, 0\] are negative"),
])
def test_refused_paddings_are_one_line_naming_the_file_and_node(tmp_path, capsys, case, message):
    from graphconv.cli import main
    helper = onnx.helper
    pads = {"channels": [0, 1, 0, 0, 0, 0, 0, 0], "crop": [0, 0, -1, 0, 0, 0, 0, 0]}.get(case, [0, 0, 1, 1, 0, 0, 1, 1])
    inits = {"pads": np.array(pads, np.int64), "value": np.array(np.nan if case == "nan" else 0.0, np.float32)}
    if case in ("wrap", "channels", "crop", "nan"):
        mode = case if case == "wrap" else "constant"
        nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode=mode, name="pad_r")]
    elif case == "negative-conv":
        inits["w"] = np.ones((2, 3, 3, 3), np.float32)
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, -1, 0, 0], name="avg")]
    else:
        op_type, extra = ("AveragePool", {}) if case.startswith("avg-exclude") else ("MaxPool", {"ceil_mode": 1})
        nodes = [helper.make_node(op_type, ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1],
                                  name="avg", **extra)]
    path = onnx_file(tmp_path / "refused.onnx", nodes, inits)
    if case.endswith("keras"):
        proto = onnx.load(str(path))
        proto.producer_name = "tf2onnx"  # the advice is Keras' own
        onnx.save(proto, str(path))
    with pytest.raises(GraphconvError, match=f"refused.onnx: {message}"):
        load_network(path)
    out = tmp_path / "net.yaml"
    assert main(["import", str(path), "-o", str(out)]) == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused.onnx" in err


KERAS_FIXTURES = sorted((Path(__file__).parent / "data").glob("keras_*.onnx"))
KERAS_FIXTURE_LAYERS = {"keras_moments_layer_norms": ("layernorm", 4),  # what a fixture is about; the rest pad
                        "keras_tf1_resize_bilinear": ("upsample", 1)}


@pytest.mark.parametrize("path", KERAS_FIXTURES, ids=lambda p: p.stem)
def test_keras_models_converted_by_tf2onnx_import_and_slide(path, rng):
    """Tiny Keras classifiers (tests/data/make_keras_fixtures.py: MobileNet's and
    EfficientNet's padding, ReLU6, swish, GlobalAveragePooling2D's Squeeze, Dense as
    MatMul + Add; one also with tf2onnx's default NHWC input, which graphconv reads as
    NCHW; caffe preprocessing, LayerNormalization in both of tf2onnx's forms, Dense on a
    map, Flatten -> BatchNormalization -> Dense; TF1's resize_bilinear, an asymmetric
    linear Resize) equal onnxruntime on their crop, compile
    to a dense network, and that network's map tiles exactly and verifies on a larger
    image."""
    from graphconv.dense import verify
    from graphconv.tiling import min_tile, run_tiled

    proto = onnx.load(str(path))
    assert "tf2onnx" in proto.doc_string
    nhwc = proto.graph.input[0].type.tensor_type.shape.dim[3].dim_value == 3  # tf2onnx's default input
    classifier = Model(load_network(path))
    kind, count = KERAS_FIXTURE_LAYERS.get(path.stem, ("pad", None))
    assert classifier.graph.find(kind) and classifier.crop_shape == (3, 32, 32)
    assert count is None or len(classifier.graph.find(kind)) == count
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = onnxruntime_scores_named(path, x.transpose(0, 2, 3, 1).copy() if nhwc else x)
    np.testing.assert_allclose(classifier.run(x), expected, **TOLERANCE)
    dense = compile_model(path)
    assert not dense.graph.find("fc") and not dense.graph.find("globalavgpool")
    big = rng.standard_normal((1, 3, 32 + 40, 32 + 25)).astype(np.float32)  # sides the TF1 merge takes: 4k, 4k + 1
    whole = dense.run(big)
    assert whole.shape[2:] == dense.map_size(72, 57)
    np.testing.assert_allclose(run_tiled(dense, big, max(min_tile(dense))), whole, rtol=1e-4, atol=1e-6)
    report = verify(classifier, dense, big, where=None)  # random pixels: whether padding changes top classes is moot
    assert report.conversion_exact and report.passed, str(report)


def onnxruntime_scores_named(path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("shape", [(16, 16, 3), (1, 3, 16, 16)])
def test_a_constant_per_position_is_refused_as_what_cannot_slide(tmp_path, rng, shape):
    """Keras' PReLU without shared_axes learns an alpha per position of its crop's map
    (tf2onnx: a Mul by an (H, W, C) constant): refused as a scale the rest of its kind were."""
    nodes = [onnx.helper.make_node("Mul", ["x", "alpha"], ["y"], name="prelu/mul")]
    path = onnx_file(tmp_path / "prelu.onnx", nodes, {"alpha": rng.standard_normal(shape).astype(np.float32)})
    with pytest.raises(GraphconvError, match=rf"node 'prelu/mul': Mul of a feature map by a constant of shape "
                                             rf"\[{', '.join(map(str, shape))}\], a number for each position of "
                                             r"the crop's map: .*PReLU\(shared_axes=\[1, 2\]\)"):
        load_network(path)


def test_a_squeeze_of_anything_but_a_pooled_map_is_refused(tmp_path):
    nodes = [onnx.helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq")]
    path = onnx_file(tmp_path / "squeeze.onnx", nodes, {"axes": np.array([2, 3], np.int64)})
    with pytest.raises(GraphconvError, match=r"node 'sq': Squeeze of axes \[2, 3\] of a rank-4 3x16x16 map; "
                                             r"graphconv squeezes only the 1x1 height and width"):
        load_network(path)


@pytest.mark.parametrize("rescaled", [False, True])
@pytest.mark.parametrize("plane", [False, True])
def test_a_grey_keras_input_whose_transpose_tf2onnx_writes_as_a_reshape_is_read(tmp_path, rng, rescaled, plane):
    """Keras' Input((28, 28, 1)): tf2onnx writes the Transpose of a one-channel (N, H, W, 1)
    input to (N, 1, H, W) as a Reshape, after a Rescaling's Mul or not; and Keras' MNIST
    form, Input((28, 28)) and a Reshape to (N, H, W, 1), then the same Reshape back. Both
    were refused as reshapes graphconv does not know."""
    helper = onnx.helper
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["x", "nhwc"], ["grey"])] if plane else []
    start = "grey" if plane else "x"
    if rescaled:
        nodes.append(helper.make_node("Mul", [start, "scale"], ["scaled"]))
    nodes += [helper.make_node("Reshape", ["scaled" if rescaled else start, "nchw"], ["t"]),
              helper.make_node("Conv", ["t", "w"], ["y"])]
    constants = {"w": w, "nchw": np.array([-1, 1, 10, 12], np.int64), "nhwc": np.array([-1, 10, 12, 1], np.int64),
                 "scale": np.float32(1 / 255)}
    path = onnx_file(tmp_path / "grey.onnx", nodes, constants, input_shape=(1, 10, 12) if plane else (1, 10, 12, 1))
    graph = load_network(path)
    assert graph.input_shape == (1, 10, 12)
    x = rng.standard_normal((2, 1, 10, 12)).astype(np.float32)
    expected = onnxruntime_scores(path, x[:, 0] if plane else x.transpose(0, 2, 3, 1).copy())
    np.testing.assert_allclose(Model(graph).run(x, full=True), expected, **TOLERANCE)


@pytest.mark.parametrize("op", ["Erfc", "StatefulPartitionedCall"])
def test_an_op_the_exporter_left_unconverted_is_said_to_be_no_onnx_op(tmp_path, op):
    """tf2onnx writes a TensorFlow op it cannot convert as it is (Keras' exact gelu's Erfc,
    a grouped Conv2D's StatefulPartitionedCall) and exits 0: the refusal says whose the
    op is, not that graphconv lacks it."""
    nodes = [onnx.helper.make_node(op, ["x"], ["y"], name="left")]
    path = onnx_file(tmp_path / "left.onnx", nodes, {})
    proto = onnx.load(str(path))
    proto.producer_name = "tf2onnx"
    onnx.save(proto, str(path))
    with pytest.raises(GraphconvError, match=f"node 'left': op {op} is no ONNX op: tf2onnx left it unconverted"):
        load_network(path)


def test_an_nhwc_input_that_is_transposed_first_is_read_as_nchw(tmp_path, rng):
    """tf2onnx's default: the input (N, H, W, C), its readers Transposes to NCHW. graphconv
    reads it as its (N, C, H, W) input; an input read any other way as well stays NCHW."""
    helper = onnx.helper
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2])]
    path = onnx_file(tmp_path / "nhwc.onnx", nodes, {"w": w}, input_shape=(1, 10, 12, 3))
    graph = load_network(path)
    assert graph.input_shape == (3, 10, 12) and [n.op for n in graph.layers()] == ["pad", "conv"]
    x = rng.standard_normal((2, 3, 10, 12)).astype(np.float32)
    expected = onnxruntime_scores(path, x.transpose(0, 2, 3, 1).copy())
    np.testing.assert_allclose(Model(graph).run(x, full=True), expected, **TOLERANCE)
    nodes.append(helper.make_node("Relu", ["x"], ["also"]))
    mixed = onnx_file(tmp_path / "mixed.onnx", nodes, {"w": w}, input_shape=(1, 10, 12, 3))
    with pytest.raises(GraphconvError, match=r"Transpose \[0, 3, 1, 2\] of a feature map"):
        load_network(mixed)


class KerasStyle(torch.nn.Module):
    """A small Keras classifier as tf2onnx writes it: an (N, H, W, C) input, Keras'
    Rescaling (and a ZeroPadding2D) on it before the Transpose to channels-first, a conv,
    the Transpose back, then Flatten (or a Reshape whose target comes from Shape) and
    Dense, or a mean over H and W and Dense."""
    crop = 12

    def __init__(self, head: str, pad: bool):
        super().__init__()
        self.head, self.pad = head, pad
        self.conv = torch.nn.Conv2d(3, 4, 3)
        side = self.crop + 2 * pad - 2
        self.fc = torch.nn.Linear(4 if head == "mean" else 4 * side * side, 5)

    def forward(self, x):
        x = x * (1 / 255) - 0.5
        if self.pad:
            x = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1))  # W and H of the channels-last input
        x = torch.relu(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        if self.head == "mean":
            return self.fc(x.mean((1, 2)))
        return self.fc(x.flatten(1) if self.head == "flatten" else x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("head,pad", [("flatten", False), ("reshape", False), ("flatten", True), ("mean", True)])
def test_a_keras_dense_after_a_channels_last_flatten_reads_its_features_in_their_order(tmp_path, rng, head, pad):
    """tf2onnx's plain Keras CNN (Transpose back to NHWC, Flatten, Dense) was refused: the
    Dense's weight columns run in (H, W, C) order, which graphconv reorders to its own
    flatten's (C, H, W); ops before the input's Transpose made the input read as NCHW."""
    path = tmp_path / f"keras-{head}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(KerasStyle(head, pad).eval(), (torch.randn(1, 12, 12, 3),), str(path), dynamo=False,
                          opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    classifier = Model(load_network(path))
    assert classifier.crop_shape == (3, 12, 12)
    x = (rng.random((2, 3, 12, 12)) * 255).astype(np.float32)
    np.testing.assert_allclose(classifier.run(x), onnxruntime_scores(path, x.transpose(0, 2, 3, 1).copy()),
                               **TOLERANCE)
    if pad:
        return
    dense = compile_model(path)
    big = (rng.random((1, 3, 20, 17)) * 255).astype(np.float32)
    scores = dense.run(big)
    for i, j in [(0, 0), (8, 5), (3, 2)]:
        top, left, bottom, right = dense.cell_area.box(i, j)
        crop = big[:, :, top:bottom, left:right].transpose(0, 2, 3, 1).copy()
        np.testing.assert_allclose(scores[0, :, i, j], onnxruntime_scores(path, crop)[0], **TOLERANCE)


def test_an_identity_or_dropout_between_a_channels_last_flatten_and_its_dense_changes_nothing(tmp_path, rng):
    helper = onnx.helper
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["t"], ["f"]), helper.make_node("Identity", ["f"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"]), helper.make_node("MatMul", ["d", "w"], ["y"])]
    path = onnx_file(tmp_path / "dense.onnx", nodes, {"w": rng.standard_normal((3 * 5 * 7, 4)).astype(np.float32)},
                     input_shape=(1, 3, 5, 7))
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).run(x), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("rows", [35, 5])
def test_keras_layer_normalization_as_tf2onnx_writes_it_is_one_layernorm(tmp_path, rng, rows):
    """tf2onnx writes Keras' LayerNormalization(axis=-1) as the channels-last map
    Reshaped to (1, N*H*W, C, 1), a BatchNormalization (scale 1, bias 0) given that
    view's own mean and variance over axes 0, 2, 3, the Reshape back, and gamma and beta
    (Mul, Add). It was refused at the Reshape; it is one layernorm. A view that puts more
    than one position's channels together ((1, H, W*C, 1)) is refused saying so."""
    helper = onnx.helper
    per_row = 4 * 35 // rows
    inits = {"into": np.array([1, rows, per_row, 1], np.int64), "back": np.array([1, 5, 7, 4], np.int64),
             "ones": np.ones(rows, np.float32), "zeros": np.zeros(rows, np.float32),
             "count": np.float32(per_row), "axes": np.array([0, 2, 3], np.int64),
             "gamma": rng.uniform(0.5, 1.5, 4).astype(np.float32), "beta": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "into"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[0, 2, 3], keepdims=1),
             helper.make_node("Sub", ["r", "m"], ["d"]),
             helper.make_node("ReduceSumSquare", ["d"], ["ss"], axes=[0, 2, 3], keepdims=0),
             helper.make_node("Div", ["ss", "count"], ["var"]), helper.make_node("Squeeze", ["m", "axes"], ["ms"]),
             helper.make_node("BatchNormalization", ["r", "ones", "zeros", "ms", "var"], ["bn"],
                              name="ln/FusedBatchNormV3", epsilon=1e-3),
             helper.make_node("Reshape", ["bn", "back"], ["k"]), helper.make_node("Mul", ["k", "gamma"], ["g"]),
             helper.make_node("Add", ["g", "beta"], ["a"]),
             helper.make_node("Transpose", ["a"], ["y"], perm=[0, 3, 1, 2])]
    path = onnx_file(tmp_path / "ln.onnx", nodes, inits, input_shape=(1, 4, 5, 7))
    if rows != 35:
        with pytest.raises(GraphconvError, match=r"node 'ln': a LayerNorm written as a BatchNormalization of a "
                                                 r"channels-last 4x5x7 map viewed as \[1, 5, 28, 1\]"):
            load_network(path, task="segmentation")
        return
    graph = load_network(path, task="segmentation")
    assert [(n.name, n.op) for n in graph.layers()] == [("ln", "layernorm")]
    x = rng.standard_normal((1, 4, 5, 7)).astype(np.float32)  # batch 1: ONNX's statistics span the batch
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("shift", ["beta", "zero beta", "no center"])
@pytest.mark.parametrize("gamma", [True, False])
@pytest.mark.parametrize("layout", ["channels-first", "channels-last"])
@pytest.mark.parametrize("view", [None, "keeps", "changes"])
def test_keras_layer_normalization_written_as_its_moments_is_one_layernorm(tmp_path, rng, shift, gamma, layout,
                                                                            view):
    """tf2onnx writes Keras' LayerNormalization with epsilon below 1.001e-5 (ConvNeXt's
    1e-6) as tf.nn.moments and tf.nn.batch_normalization: inv = 1 / sqrt(mean((x -
    mean)^2) + eps) [* gamma]; x * inv + (beta - mean * inv), or -(mean * inv) where
    beta was zeros, or (-mean) * inv with center=False; its optimiser may leave the mean
    Reshaped to the shape it has at the crop. It was refused ("sub needs inputs of one
    shape"); it is one layernorm, and a Reshape of the mean to another shape is refused."""
    helper = onnx.helper
    axis, mean_shape = (1, [-1, 1, 5, 7]) if layout == "channels-first" else (3, [-1, 5, 7, 1])
    if view == "changes":
        mean_shape = [mean_shape[0], *mean_shape[1:][::-1]]
    inits = {"eps": np.full((1, 1, 1, 1), 1e-6, np.float32), "view": np.array(mean_shape, np.int64),
             "gamma": rng.uniform(0.5, 1.5, 4).astype(np.float32), "beta": rng.standard_normal(4).astype(np.float32)}
    if layout == "channels-first":
        inits["gamma"], inits["beta"] = inits["gamma"].reshape(1, 4, 1, 1), inits["beta"].reshape(1, 4, 1, 1)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]) if axis == 3 else
             helper.make_node("Identity", ["x"], ["t"]),
             helper.make_node("ReduceMean", ["t"], ["m"], axes=[axis], keepdims=1, name="model/ln/moments/mean"),
             *([helper.make_node("Reshape", ["m", "view"], ["mv"])] if view else []),
             helper.make_node("Sub", ["t", "mv" if view else "m"], ["d"]), helper.make_node("Mul", ["d", "d"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[axis], keepdims=1),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["root"]),
             helper.make_node("Reciprocal", ["root"], ["inv"]),
             *([helper.make_node("Mul", ["inv", "gamma"], ["s"])] if gamma else []),
             helper.make_node("Mul", ["t", "s" if gamma else "inv"], ["xs"])]
    scale = "s" if gamma else "inv"
    if shift == "no center":
        nodes += [helper.make_node("Neg", ["m"], ["nm"]), helper.make_node("Mul", ["nm", scale], ["shift"])]
    else:
        nodes += [helper.make_node("Mul", ["m", scale], ["ms"]),
                  helper.make_node("Sub", ["beta", "ms"], ["shift"]) if shift == "beta" else
                  helper.make_node("Neg", ["ms"], ["shift"])]
    nodes += [helper.make_node("Add", ["xs", "shift"], ["a"]),
              helper.make_node("Transpose", ["a"], ["y"], perm=[0, 3, 1, 2]) if axis == 3 else
              helper.make_node("Identity", ["a"], ["y"])]
    path = onnx_file(tmp_path / "ln.onnx", nodes, inits, input_shape=(1, 4, 5, 7))
    if view == "changes":
        crop_shape = [1, 1, 5, 7] if axis == 1 else [1, 5, 7, 1]
        with pytest.raises(GraphconvError, match=re.escape(f"node 'model/ln': a LayerNorm's mean, of shape "
                                                           f"{crop_shape} at the crop, reshaped to {mean_shape}; ")):
            load_network(path, task="segmentation")
        return
    graph = load_network(path, task="segmentation")
    assert [(n.name, n.op) for n in graph.layers()] == [("model_ln", "layernorm")]
    x = rng.standard_normal((2, 4, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("back", [[-1, 5, 7, 6], [-1, 7, 5, 6]])
def test_a_dense_on_each_position_of_a_channels_last_map_is_a_1x1_conv(tmp_path, rng, back):
    """Keras' Dense on a 4-D map as tf2onnx writes it (a Tensordot): the channels-last map
    Reshaped to (N*H*W, C) rows, a MatMul and an Add, the Reshape back to (N, H, W, K).
    It was refused at the first Reshape; a Reshape back to another shape is refused."""
    helper = onnx.helper
    inits = {"rows": np.array([-1, 4], np.int64), "back": np.array(back, np.int64),
             "w": rng.standard_normal((4, 6)).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "rows"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]), helper.make_node("Reshape", ["a", "back"], ["k"], name="back"),
             helper.make_node("Transpose", ["k"], ["y"], perm=[0, 3, 1, 2])]
    path = onnx_file(tmp_path / "dense.onnx", nodes, inits, input_shape=(1, 4, 5, 7))
    if back[1] != 5:
        with pytest.raises(GraphconvError, match=r"node 'back': Reshape of the 35x6 per-position rows of a "
                                                 r"channels-last map to \[-1, 7, 5, 6\]; graphconv reads them back"):
            load_network(path, task="segmentation")
        return
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["conv"]
    x = rng.standard_normal((2, 4, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), **TOLERANCE)


@pytest.mark.parametrize("channel_axis", ["unsqueeze-last", "reshape-last", "unsqueeze-first", "reshape-first"])
def test_a_grey_input_without_a_channel_axis_is_read_as_one_channel(tmp_path, rng, channel_axis):
    """Keras' MNIST classifier: an (N, H, W) input (scaled by 1/255 first) made (N, H, W, 1)
    by a Reshape or Unsqueeze; or (N, 1, H, W). It was refused as 'has 3 dimensions'."""
    helper = onnx.helper
    last = channel_axis.endswith("last")
    shaped = (helper.make_node("Unsqueeze", ["s", "axes"], ["u"]) if channel_axis.startswith("unsqueeze") else
              helper.make_node("Reshape", ["s", "shape"], ["u"]))
    nodes = [helper.make_node("Mul", ["x", "scale"], ["s"]), shaped,
             *([helper.make_node("Transpose", ["u"], ["t"], perm=[0, 3, 1, 2])] if last else
               [helper.make_node("Identity", ["u"], ["t"])]),
             helper.make_node("Conv", ["t", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["y"])]
    inits = {"scale": np.array(1 / 255, np.float32), "axes": np.array([3 if last else 1], np.int64),
             "shape": np.array([-1, 14, 14, 1] if last else [0, 1, 14, 14], np.int64),
             "w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
             "fc": rng.standard_normal((4 * 12 * 12, 5)).astype(np.float32)}
    path = onnx_file(tmp_path / "mnist.onnx", nodes, inits, input_shape=(1, 14, 14))
    classifier = Model(load_network(path))
    assert classifier.crop_shape == (1, 14, 14)
    x = (rng.random((2, 1, 14, 14)) * 255).astype(np.float32)
    np.testing.assert_allclose(classifier.run(x), onnxruntime_scores(path, x[:, 0].copy()), **TOLERANCE)
    dense = compile_model(path)
    big = (rng.random((1, 1, 20, 17)) * 255).astype(np.float32)
    top, left, bottom, right = dense.cell_area.box(4, 2)
    np.testing.assert_allclose(dense.run(big)[0, :, 4, 2],
                               onnxruntime_scores(path, big[:, 0, top:bottom, left:right].copy())[0], **TOLERANCE)


class GreyTorch(torch.nn.Module):
    """PyTorch's forms of a grey (N, H, W) input: x.view(N, 1, H, W) (a Reshape whose
    target comes from Shape) before a conv, or x.flatten(1) into an MLP."""

    def __init__(self, mlp: bool):
        super().__init__()
        self.mlp = mlp
        self.conv, self.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(14 * 14 if mlp else 2 * 12 * 12, 3)

    def forward(self, x):
        if self.mlp:
            return self.fc(x.flatten(1))
        return self.fc(self.conv(x.view(x.size(0), 1, 14, 14)).flatten(1))


@pytest.mark.parametrize("mlp", [False, True])
def test_pytorch_s_grey_input_forms_are_read(tmp_path, rng, mlp):
    path = tmp_path / "grey.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(GreyTorch(mlp).eval(), (torch.randn(1, 14, 14),), str(path), dynamo=False, opset_version=13,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    x = rng.standard_normal((2, 1, 14, 14)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).run(x), onnxruntime_scores(path, x[:, 0].copy()), **TOLERANCE)


class FlatHead(torch.nn.Module):
    crop = 12

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 2, 3), torch.nn.Linear(2 * 10 * 10, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_a_wrong_crop_for_a_model_of_dynamic_size_is_named_as_the_likely_cause(tmp_path):
    """The fc's "weight of shape [3, 200] for 288 input features" did not say that the
    --crop-size given is what made 288."""
    path = tmp_path / "dynamic.onnx"
    onnx_zoo.export(FlatHead(), path, dynamic_hw=True)
    assert load_network(path, crop_size=(12, 12)).input_shape == (3, 12, 12)
    with pytest.raises(GraphconvError, match=r"weight of shape \[3, 200\] for 288 input features \(the input's "
                                             r"height and width are not fixed in the file: is 14x14 the crop"):
        load_network(path, crop_size=(14, 14))


@pytest.mark.parametrize("keepdims", [0, 1])
def test_a_mean_over_a_channels_last_map_s_height_and_width_gives_what_onnx_gives(tmp_path, rng, keepdims):
    """Without keepdims it is (N, C) features: it was still seen as a channels-last map,
    and the MatMul after it (or the output) was a 1x1 conv's map, (N, K, 1, 1)."""
    helper = onnx.helper
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("ReduceMean", ["t"], ["m"], axes=[1, 2], keepdims=keepdims),
             helper.make_node("MatMul", ["m", "w"], ["y"])]
    path = onnx_file(tmp_path / "mean.onnx", nodes, {"w": rng.standard_normal((3, 4)).astype(np.float32)},
                     input_shape=(1, 3, 5, 7))
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    expected = onnxruntime_scores(path, x)
    scores = Model(load_network(path)).run(x)
    assert scores.shape == expected.reshape(2, 4, 1, 1).shape if keepdims else scores.shape == (2, 4)
    np.testing.assert_allclose(scores.reshape(-1), expected.reshape(-1), **TOLERANCE)


# (op set, op type, attributes, inputs after x, their initializers): the forms exporters write
RESIZE_FORMS = {
    "nearest-scales": (13, "Resize", dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                          nearest_mode="floor"), ["", "scales"], {"scales": [1, 1, 2, 3]}),
    "nearest-half-pixel": (19, "Resize", dict(mode="nearest"), ["", "scales"], {"scales": [1, 1, 3, 2]}),
    "nearest-sizes": (13, "Resize", dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                         nearest_mode="floor"), ["", "", "sizes"], {"sizes": [1, 3, 10, 14]}),
    "bilinear": (11, "Resize", dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
                 ["roi", "scales"], {"roi": [], "scales": [1, 1, 2, 2]}),  # op set 11: roi required
    "bilinear-default": (18, "Resize", dict(mode="linear"), ["", "scales"], {"scales": [1, 1, 4, 3]}),
    "resize-opset10": (10, "Resize", dict(mode="nearest"), ["scales"], {"scales": [1, 1, 2, 2]}),
    "nearest-half-pixel-round-ceil": (13, "Resize", dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                                                         nearest_mode="round_prefer_ceil"), ["", "scales"],
                                      {"scales": [1, 1, 4, 3]}),
    "nearest-axes": (18, "Resize", dict(mode="nearest", axes=[2, 3]), ["", "scales"], {"scales": [2, 3]}),
    "nearest-tf-half-pixel": (13, "Resize", dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn",
                                                 nearest_mode="floor"), ["", "scales"],
                              {"scales": [1, 1, 2, 3]}),  # tf2onnx's UpSampling2D
    "nearest-sizes-axes": (18, "Resize", dict(mode="nearest", axes=[3, 2]), ["", "", "sizes"], {"sizes": [21, 10]}),
    "bilinear-align-corners": (13, "Resize", dict(mode="linear", coordinate_transformation_mode="align_corners"),
                               ["", "scales"], {"scales": [1, 1, 2, 3]}),  # runs as written, cannot slide
    "linear-negative-axes": (19, "Resize", dict(mode="linear", axes=[-1, -2]), ["", "scales"], {"scales": [3, 2]}),
    "upsample-opset9": (9, "Upsample", dict(mode="nearest"), ["scales"], {"scales": [1, 1, 2, 3]}),
    # linear with asymmetric coordinates: TF1's resize_bilinear through tf2onnx, and what linear meant before
    # op set 11 (Upsample, Resize 10)
    "linear-asymmetric": (13, "Resize", dict(mode="linear", coordinate_transformation_mode="asymmetric"),
                          ["", "scales"], {"scales": [1, 1, 2, 3]}),
    "linear-asymmetric-sizes": (13, "Resize", dict(mode="linear", coordinate_transformation_mode="asymmetric"),
                                ["", "", "sizes"], {"sizes": [1, 3, 20, 14]}),
    "linear-resize-opset10": (10, "Resize", dict(mode="linear"), ["scales"], {"scales": [1, 1, 3, 2]}),
    "linear-upsample-opset9": (9, "Upsample", dict(mode="linear"), ["scales"], {"scales": [1, 1, 2, 4]}),
    "upsample-opset7": (7, "Upsample", dict(mode="nearest", scales=[1.0, 1.0, 3.0, 2.0]), [], {}),
}


@pytest.mark.parametrize("form", sorted(RESIZE_FORMS))
def test_resize_and_upsample_in_every_form_match_onnxruntime(tmp_path, form, rng):
    opset, op_type, attrs, extra, inits = RESIZE_FORMS[form]
    inits = {k: np.array(v, np.int64 if k == "sizes" else np.float32) for k, v in inits.items()}
    nodes = [onnx.helper.make_node(op_type, ["x", *extra], ["y"], **attrs)]
    path = onnx_file(tmp_path / f"{form}.onnx", nodes, inits, opset=opset, input_shape=(1, 3, 5, 7))
    [layer] = load_network(path).layers()
    assert layer.op == "upsample"
    assert layer.params["mode"] == ("bilinear" if attrs["mode"] == "linear" else "nearest")
    x = rng.standard_normal((1 if "sizes" in inits else 2, 3, 5, 7)).astype(np.float32)  # sizes name the batch
    np.testing.assert_allclose(Model(load_network(path)).run(x, full=True), onnxruntime_scores(path, x),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case,message", [
    ("tf-crop-and-resize", r"linear Resize with coordinate_transformation_mode 'tf_crop_and_resize': graphconv "
                           r"interpolates with half-pixel coordinates \(PyTorch's align_corners=False\), "
                           r"align_corners \(align_corners=True\) or asymmetric ones"),
    ("cubic", r"Resize mode 'cubic' is not supported"),
    ("fraction", r"Resize by 1.5 x 2: graphconv enlarges by whole numbers"),
    ("channels", r"Resize with scales \[1.0, 2.0, 2.0, 2.0\]: graphconv enlarges rows and columns only"),
    ("round-asymmetric", r"nearest Resize with coordinate_transformation_mode 'asymmetric' and nearest_mode "
                         r"'round_prefer_floor'"),
    # half-pixel coordinates floored or ceiled pick other cells than a repeat: rows a, a, a, b for x2 with floor
    ("floor-half-pixel", r"nearest Resize with coordinate_transformation_mode 'half_pixel' and nearest_mode 'floor'"),
    ("ceil-pytorch-half-pixel", r"nearest Resize with coordinate_transformation_mode 'pytorch_half_pixel' and "
                                r"nearest_mode 'ceil'"),
])
def test_resizes_that_cannot_slide_are_refused_naming_the_node(tmp_path, case, message):
    attrs = {"tf-crop-and-resize": dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"),
             "cubic": dict(mode="cubic"), "round-asymmetric": dict(coordinate_transformation_mode="asymmetric"),
             "floor-half-pixel": dict(coordinate_transformation_mode="half_pixel", nearest_mode="floor"),
             "ceil-pytorch-half-pixel": dict(coordinate_transformation_mode="pytorch_half_pixel", nearest_mode="ceil"),
             }.get(case, dict(mode="nearest"))
    scales = {"fraction": [1, 1, 1.5, 2], "channels": [1, 2, 2, 2]}.get(case, [1, 1, 2, 2])
    nodes = [onnx.helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)]
    path = onnx_file(tmp_path / "resize.onnx", nodes, {"scales": np.array(scales, np.float32)}, opset=13)
    with pytest.raises(GraphconvError, match=f"resize.onnx: node 'up': {message}"):
        load_network(path)


@pytest.mark.parametrize("form", ["instance-norm", "group-norm-18", "group-norm-21"])
def test_instance_and_group_normalization_nodes_match_onnxruntime(tmp_path, form, rng):
    """InstanceNorm2d is a groupnorm of one channel a group; ONNX's GroupNormalization
    scales per group in op set 18 and per channel from 21."""
    helper = onnx.helper
    if form == "instance-norm":
        opset, groups, per = 17, 6, 6
        node = helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], epsilon=1e-3)
    else:
        opset, groups = int(form[-2:]), 3
        per = groups if opset == 18 else 6
        node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=groups,
                                epsilon=1e-3)
    inits = {"scale": rng.uniform(0.5, 1.5, per).astype(np.float32),
             "bias": rng.uniform(-0.5, 0.5, per).astype(np.float32)}
    path = onnx_file(tmp_path / f"{form}.onnx", [node], inits, opset=opset, input_shape=(1, 6, 5, 4))
    [layer] = load_network(path).layers()
    assert layer.op == "groupnorm" and layer.params["groups"] == groups
    x = (rng.standard_normal((2, 6, 5, 4)) * 3 + 1).astype(np.float32)
    try:
        expected = onnxruntime_scores(path, x)
    except Exception as err:  # an onnxruntime without this op set's GroupNormalization
        pytest.skip(f"onnxruntime cannot run it: {str(err)[:80]}")
    np.testing.assert_allclose(Model(load_network(path)).run(x, full=True), expected, rtol=1e-4, atol=1e-5)


def test_space_to_depth_nodes_match_onnxruntime_and_slide(tmp_path, rng):
    nodes = [onnx.helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2),
             onnx.helper.make_node("Conv", ["s", "w"], ["y"])]
    inits = {"w": rng.standard_normal((3, 12, 3, 3)).astype(np.float32)}
    path = onnx_file(tmp_path / "s2d.onnx", nodes, inits, input_shape=(1, 3, 8, 10))
    graph = load_network(path)
    assert [(n.op, n.params.get("block")) for n in graph.layers()] == [("space_to_depth", 2), ("conv", None)]
    x = rng.standard_normal((2, 3, 8, 10)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x, full=True), onnxruntime_scores(path, x), **TOLERANCE)
    big = rng.standard_normal((1, 3, 21, 17)).astype(np.float32)  # odd sides: the last row and column fill no patch
    np.testing.assert_allclose(Model(graph).run(big, full=True), Model(graph).run(big[:, :, :20, :16], full=True))


@pytest.mark.parametrize("reader, ends", [("SpaceToDepth", [6, 8]), ("Relu", [8, 10]), ("SpaceToDepth", [4, 8])])
def test_a_slice_of_rows_and_columns_is_read_only_as_space_to_depth_s_trim(tmp_path, rng, reader, ends):
    """graphconv's export trims H and W to multiples of the block before SpaceToDepth
    (ONNX refuses other sides): that Slice is read as the space_to_depth layer, which
    leaves those rows and columns out itself. A Slice of rows and columns read by
    anything else, or cutting more than the block's remainder, is still refused."""
    helper = onnx.helper
    attrs = dict(blocksize=2) if reader == "SpaceToDepth" else {}
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["t"]),
             helper.make_node(reader, ["t"], ["y"], **attrs)]
    inits = {"starts": np.zeros(2, np.int64), "ends": np.array(ends, np.int64), "axes": np.array([2, 3], np.int64)}
    path = onnx_file(tmp_path / "trim.onnx", nodes, inits, input_shape=(1, 3, 7, 9))
    if (reader, ends) != ("SpaceToDepth", [6, 8]):
        with pytest.raises(GraphconvError, match="Slice along axes"):
            load_network(path)
        return
    graph = load_network(path)
    assert [(n.op, n.params.get("block")) for n in graph.layers()] == [("space_to_depth", 2)]
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x, full=True), onnxruntime_scores(path, x), **TOLERANCE)


def test_a_constant_crop_before_space_to_depth_in_a_file_of_any_size_is_refused(tmp_path):
    """x[:, :, :32, :32] then SpaceToDepth, in a file whose input takes any size, crops
    every image to 32x32 (onnxruntime: 16x16 cells at 64); read as the export's trim to
    the blocks it gave 32x32 cells there. Only ends computed from the map's own Shape, as
    the export writes them, are that trim."""
    helper = onnx.helper
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["t"]),
             helper.make_node("SpaceToDepth", ["t"], ["y"], blocksize=2)]
    inits = {"starts": np.zeros(2, np.int64), "ends": np.array([32, 32], np.int64), "axes": np.array([2, 3], np.int64)}
    path = onnx_file(tmp_path / "crop.onnx", nodes, inits, input_shape=(1, 3, "h", "w"))
    with pytest.raises(GraphconvError, match="Slice along axes"):
        load_network(path, crop_size=(33, 33))


@pytest.mark.parametrize("shape", [[1, 3, -1], [0, 3, 256], [1, 3, 256]])
def test_a_map_made_tokens_is_refused_saying_a_transformer_does_not_slide(tmp_path, shape):
    """(N, C, H*W) read by a Transpose (a vision transformer's patch embedding, an
    attention block's tokens), not by the InstanceNormalization that would make it
    GroupNorm's view: timm's ViT and LeViT were told only which reshapes graphconv
    knows."""
    helper = onnx.helper
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["t"], name="tokens"),
             helper.make_node("Transpose", ["t"], ["y"], perm=[0, 2, 1])]
    path = onnx_file(tmp_path / "attention.onnx", nodes, {"shape": np.array(shape, np.int64)})
    with pytest.raises(GraphconvError, match=rf"node 'tokens': Reshape of a 1x3x16x16 map to \[{shape[0]}, 3, "
                                             rf"{shape[2]}\]: its pixels made a sequence of tokens, as a vision "
                                             r"transformer's patch embedding \(ViT, LeViT\) .* does not slide"):
        load_network(path)


def test_a_reshape_graphconv_does_not_know_says_which_it_does(tmp_path):
    path = onnx_file(tmp_path / "odd.onnx", [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"], name="odd")],
                     {"shape": np.array([1, 48, -1], np.int64)})
    with pytest.raises(GraphconvError, match=r"node 'odd': Reshape of a 1x3x16x16 value to \[1, 48, -1\]; "
                                             r"graphconv recognises .* GroupNorm, space-to-depth and split attention"):
        load_network(path)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    """unet(up_kernel) -> (the PyTorch U-Net, its ONNX file exported at 32x32 with dynamic
    sides, the spec `graphconv import --task segmentation` wrote from it); each made once."""
    folder = tmp_path_factory.mktemp("unet")
    made = {}

    def get(up_kernel: int = 2):
        if up_kernel not in made:
            torch.manual_seed(0)
            model = onnx_zoo.UNetSmall(up_kernel=up_kernel).eval()
            path, spec = folder / f"unet{up_kernel}.onnx", folder / f"unet{up_kernel}.yaml"
            onnx_zoo.export(model, path, dynamic_hw=True)
            result = graphconv("import", path, "-o", spec, "--crop-size", 32, 32, "--task", "segmentation")
            assert result.returncode == 0, result.stderr
            made[up_kernel] = model, path, spec
        return made[up_kernel]
    return get


@pytest.mark.parametrize("up_kernel", [2, 4])
def test_a_segmentation_network_maps_every_pixel_as_pytorch_does(unet, up_kernel, rng):
    """ConvTranspose imports as a conv and depth_to_space; a network whose spec says
    `task: segmentation` returns its whole map on any image, not one cell per crop, equal
    to PyTorch's."""
    model, _, spec = unet(up_kernel)
    net = Model.load(spec)
    assert net.segmentation and "task: segmentation" in spec.read_text()
    assert [n.op for n in net.graph.layers()].count("depth_to_space") == 1
    x = rng.standard_normal((2, 3, 48, 64)).astype(np.float32)
    got = net.run(x)
    assert got.shape == (2, 3, 48, 64) and net.map_size(48, 64) == (48, 64)
    np.testing.assert_allclose(got, torch_scores(model, x), rtol=1e-4, atol=1e-5)
    compiled = compile_model(spec)  # nothing to convert; it stays a segmentation network
    assert compiled.segmentation
    np.testing.assert_allclose(compiled.run(x), got, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("up_kernel", [2, 4])
def test_a_segmentation_network_tiles_exactly_and_draws_its_heatmap(unet, up_kernel, tmp_path):
    _, _, spec = unet(up_kernel)
    Image = pytest.importorskip("PIL.Image")
    picture = (np.random.default_rng(4).random((90, 118, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "scene.png")
    whole = graphconv("run", spec, "--image", tmp_path / "scene.png", "--output", tmp_path / "whole.npy",
                      "--heatmap", "top")
    assert whole.returncode == 0, whole.stderr
    tiled = graphconv("run", spec, "--image", tmp_path / "scene.png", "--tile", "40", "--output",
                      tmp_path / "tiled.npy")
    assert tiled.returncode == 0, tiled.stderr
    want, got = np.load(tmp_path / "whole.npy"), np.load(tmp_path / "tiled.npy")
    assert want.shape == (1, 3, 90, 118)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    refused = graphconv("run", spec, "--image", tmp_path / "scene.png", "--crops")
    assert refused.returncode == 2 and "a segmentation network's map is its dense pass" in refused.stderr
    refused = graphconv("verify", spec, "--input-size", 64, 64)
    assert refused.returncode == 2 and "segmentation network is dense already" in refused.stderr


@pytest.mark.parametrize("kernel,stride,pad,extra,groups", [
    (2, 2, 0, 0, 1), (4, 2, 1, 0, 1), (3, 2, 1, 1, 1), (5, 3, 1, 0, 1), (6, 3, 2, 1, 1), (4, 4, 0, 0, 1),
    (3, 1, 1, 0, 1), (2, 3, 0, 1, 1), (2, 2, 0, 0, 2), (4, 2, 1, 0, 6)])
def test_conv_transposes_that_enlarge_by_their_stride_equal_pytorch(kernel, stride, pad, extra, groups, tmp_path,
                                                                    rng):
    """Each phase of the output pixels gathers the same input offsets: kernels equal to,
    larger than (overlapping) or smaller than the stride, padded, with output padding,
    grouped (FCN's bilinear upsampling is one group per class; a review's U-Net decoder
    had groups=2: refused, naming no value)."""
    import warnings

    torch.manual_seed(kernel * 7 + stride)
    up = torch.nn.ConvTranspose2d(6, 6, kernel, stride=stride, padding=pad, output_padding=extra,
                                  groups=groups).eval()
    x = torch.randn(1, 6, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(up, (x,), str(tmp_path / "up.onnx"), dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}})
    net = Model.load(tmp_path / "up.onnx", crop_size=(10, 10))
    image = rng.standard_normal((2, 6, 7, 9)).astype(np.float32)
    with torch.no_grad():
        want = up(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(net.run(image, full=True), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attributes,named", [
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "pads \\[1, 1, 1, 1\\]"),  # 2H - 1 rows
    (dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]), "output_padding \\[0, 0\\], dilations \\[2, 2\\]"),
])
def test_conv_transposes_of_other_sizes_are_refused_by_name(attributes, named, tmp_path):
    from onnx import helper
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", **attributes)]
    weight = np.ones((3, 2, *attributes["kernel_shape"]), np.float32)
    save(tiny_model(nodes, {"w": weight}), tmp_path / "up.onnx")
    with pytest.raises(GraphconvError, match=f"node 'up'.*ConvTranspose.*{named}.*upsampling kind"):
        Model.load(tmp_path / "up.onnx")


def test_an_fcn_head_resized_to_the_input_is_a_segmentation_network(tmp_path, rng):
    """torchvision's FCN and DeepLab end so: scores at stride 8, bilinearly resized to the
    input's own size (Resize with sizes from a Shape chain). At the crop that is a factor
    of 8, and the map is the input's size on any image whose sides are multiples of 8."""
    import warnings

    import torch.nn.functional as F

    class FCNHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layers = [torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
                      torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1)]
            self.body = torch.nn.Sequential(*layers)

        def forward(self, x):
            return F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)

    torch.manual_seed(3)
    model = FCNHead().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(tmp_path / "fcn.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    result = graphconv("import", tmp_path / "fcn.onnx", "-o", tmp_path / "fcn.yaml", "--crop-size", 64, 64,
                       "--task", "segmentation")
    assert result.returncode == 0, result.stderr
    x = rng.standard_normal((1, 3, 96, 128)).astype(np.float32)
    net = Model.load(tmp_path / "fcn.yaml")
    np.testing.assert_allclose(net.run(x), torch_scores(model, x), rtol=1e-4, atol=1e-5)
    # Elsewhere its factor of 8 gives another map than PyTorch's resize to the input's size
    # (100x100: 104x104 of other values, silently; then refused): the image is padded to
    # 104x104 with zeros and the map cut back, as one pads an image by hand for PyTorch.
    x = rng.standard_normal((1, 3, 100, 100)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 4), (0, 4)))
    assert net.padded_hw(100, 100) == (104, 104) and net.map_size(100, 100) == (100, 100)
    # PyTorch on the 100x100 image as it is resizes 13x13 cells by 100/13: other values
    # everywhere, not only near the padding, as the note says
    assert net.padding_note(100, 100).endswith(
        "labels near those edges see the padding; where the model itself, on the 100x100 image as it is, resizes "
        "its 13x13 map to the image (layer Resize), it enlarges it by 7.692x7.692, not 8, so its scores differ from "
        "these everywhere, by enough to change some labels (these keep the cells 8 pixels apart, where the network "
        "computed them); for its "
        "own numbers, give an image whose sides are multiples of 8")
    assert net.padding_note(96, 128) is None
    np.testing.assert_allclose(net.run(x), torch_scores(model, padded)[:, :, :100, :100], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.run_tiled(x, 64), net.run(x), rtol=1e-5, atol=1e-6)


class _DeepLabV3(torch.nn.Module):
    """torchvision's DeepLabV3 in small: ASPP branches at stride 8 and an image-pooling
    branch (global average, 1x1 conv, ReLU) resized "to the size of" the ASPP's input,
    concatenated, projected, resized to the input's size; or the pooled branch written
    with expand_as."""

    def __init__(self, expand: bool = False):
        super().__init__()
        nn = torch.nn
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.branches = nn.ModuleList([nn.Conv2d(12, 6, 1), nn.Conv2d(12, 6, 3, padding=2, dilation=2)])
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(12, 6, 1), nn.ReLU())
        self.head = nn.Conv2d(18, 4, 1)
        self.expand = expand

    def forward(self, x):
        import torch.nn.functional as F

        features = self.backbone(x)
        pooled = self.pooled(features)
        pooled = (pooled.expand_as(features[:, :6]) if self.expand
                  else F.interpolate(pooled, size=features.shape[-2:], mode="bilinear", align_corners=False))
        y = self.head(torch.cat([*(b(features) for b in self.branches), pooled], dim=1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("opset, expand, dynamo, dynamic", [(11, False, False, True), (17, False, False, True),
                                                            (17, True, False, True), (18, False, True, True),
                                                            (18, True, True, False), (17, False, False, False)])
def test_deeplab_s_image_pooling_runs_whole_on_every_size(tmp_path, rng, opset, expand, dynamo, dynamic):
    """The pooled branch is 1x1, resized to the feature map's size: the crop's factor (8 at
    a 64 crop) fitted the crop alone, so DeepLabV3 ran at its crop only and crashed on
    delivering its map (no receptive field). It is a broadcast over the feature map now:
    equal to PyTorch on any size a multiple of 8, compiled or not; tiles are refused,
    the pooled average being the whole image's. TorchScript takes the size from the
    feature map's Shape; the dynamo exporter computes it from the input's ((H + 7) // 8,
    re-evaluated at other sizes to find the map it follows), or, exported at a fixed size,
    writes the crop's (TorchScript: after the N and C of the pooled map's own Shape, which
    was refused as an upsample by 8)."""
    torch.manual_seed(5)
    model = _DeepLabV3(expand).eval()
    axes = {"dynamic_axes": {"x": {2: "h", 3: "w"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(tmp_path / "dl.onnx"), dynamo=dynamo,
                          opset_version=opset, input_names=["x"], **axes)
    net = Model.load(tmp_path / "dl.onnx", crop_size=(64, 64), task="segmentation")
    assert net.graph.find("broadcast") and len(net.graph.find("upsample")) == 1  # the head's, to the input's size
    compiled = compile_model(net.graph)
    for hw in ((64, 64), (96, 136), (200, 80)):
        x = rng.standard_normal((1, 3, *hw)).astype(np.float32)
        for model_ in (net, compiled):
            np.testing.assert_allclose(model_.run(x), torch_scores(model, x), rtol=1e-4, atol=1e-6)
    with pytest.raises(GraphconvError, match="needs the whole image in one pass"):
        compiled.run_tiled(rng.standard_normal((1, 3, 200, 80)).astype(np.float32), 100)
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
    result = graphconv("run", tmp_path / "dl.onnx", "--task", "segmentation", "--crop-size", 64, 64,
                       "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "y.npy").shape == (1, 4, 64, 64)


class _PSPNet(torch.nn.Module):
    """PSPNet's pyramid pooling in small: the stride-4 map average-pooled into 1x1, 2x2
    and 4x4 bins (AdaptiveAvgPool2d), each 1x1-convolved and resized back to the map's
    size, concatenated with it, projected, resized to the input's size."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(bins), nn.Conv2d(8, 2, 1), nn.ReLU())
                                     for bins in (1, 2, 4)])
        self.head = nn.Conv2d(14, 3, 1)

    def forward(self, x):
        import torch.nn.functional as F

        features = self.backbone(x)
        pyramid = [F.interpolate(stage(features), size=features.shape[-2:], mode="bilinear", align_corners=False)
                   for stage in self.stages]
        y = self.head(torch.cat([features, *pyramid], dim=1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_pspnet_s_pyramid_exported_runs_at_its_size_and_says_its_bins_are_fixed_windows_elsewhere(tmp_path, rng):
    """AdaptiveAvgPool2d exported is an AveragePool of the windows it has at the export's
    size (ONNX has no adaptive pooling), the resize back a fixed factor. At its size the
    network equals PyTorch; on a larger image the windows stay (4x4 bins on a map twice
    the size, where PyTorch cuts 2x2), so the run says so, naming the pool. It was
    refused at the Concat ("compile it or run --crops", neither of which a segmentation
    network takes) until the bin-1 branch became a broadcast."""
    torch.manual_seed(7)
    model = _PSPNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(tmp_path / "psp.onnx"), dynamo=False,
                          opset_version=17, input_names=["x"])
    net = Model.load(tmp_path / "psp.onnx", task="segmentation")
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(net.run(x), torch_scores(model, x), rtol=1e-4, atol=1e-6)
    assert net.size_notes(64, 64) == []
    said = net.fixed_bins_note(128, 128)
    assert said.startswith("note: psp's stages.1.0 averages its map at the 64x64 crop in 2x2 bins, windows of 8x8 "
                           "that Resize_1 enlarges back (and 1 more such): PyTorch's AdaptiveAvgPool2d as an exporter "
                           "writes it; on this 128x128 image the windows stay 8x8, where the model itself would cut "
                           "its map into 2x2 bins"), said
    assert net.run(rng.standard_normal((1, 3, 128, 128)).astype(np.float32)).shape == (1, 3, 128, 128)
    np.save(tmp_path / "x.npy", rng.standard_normal((1, 3, 128, 128)).astype(np.float32))
    result = graphconv("run", tmp_path / "psp.onnx", "--task", "segmentation", "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "y.npy")
    assert result.returncode == 0 and "windows of 8x8 that Resize_1 enlarges back" in result.stderr, result.stderr


def test_a_constant_size_in_a_file_of_any_size_stays_fixed(tmp_path, rng):
    """A 1x1 pooled map resized to a constant size where the file's input takes any size
    is that size on every image (onnxruntime: 8x8 at 32 and at 64): the crop's factor,
    not a broadcast over the 8x8-at-the-crop map (16x16 at 64), which only a file fixed
    at its crop, exported statically, means."""
    helper = onnx.helper
    arrays = {"w1": rng.standard_normal((4, 3, 3, 3)), "w2": rng.standard_normal((2, 4, 1, 1))}
    initializers = [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()]
    initializers.append(onnx.numpy_helper.from_array(np.array([1, 4, 8, 8], np.int64), "sizes"))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[4, 4]),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Resize", ["p", "", "", "sizes"], ["r"], mode="nearest"),
             helper.make_node("Conv", ["r", "w2"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "fixed_size", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                   [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializers)
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "fixed_size.onnx")
    net = Model.load(path, crop_size=(32, 32), task="segmentation")
    assert [n.op for n in net.graph.layers()] == ["conv", "globalavgpool", "upsample", "conv"]
    assert net.run(rng.standard_normal((1, 3, 64, 64)).astype(np.float32)).shape == (1, 2, 8, 8)


def test_task_on_the_command_line_runs_an_onnx_file_as_a_segmentation_network(unet, tmp_path, rng):
    """`--task segmentation` for an ONNX file run directly (no import), here on Dask
    workers too, which load the model themselves; `Model.load(..., task=...)` in Python."""
    model, path, _ = unet(2)
    x = rng.standard_normal((1, 3, 40, 56)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = graphconv("run", path, "--input", tmp_path / "x.npy", "--crop-size", 32, 32, "--task", "segmentation",
                       "--output", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), torch_scores(model, x), rtol=1e-4, atol=1e-5)
    as_classifier = Model.load(path, crop_size=(32, 32))
    assert not as_classifier.segmentation and as_classifier.map_size(40, 56) == (9, 25)
    assert Model.load(path, crop_size=(32, 32), task="segmentation").map_size(40, 56) == (40, 56)
    if importlib.util.find_spec("distributed") is None:
        return
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray((np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    outputs = []
    for extra in ([], ["--workers", "1", "--tile", "32"]):
        result = graphconv("run", path, "--image", tmp_path / "s.png", "--crop-size", 32, 32, "--task",
                           "segmentation", "--output", tmp_path / f"m{len(outputs)}.npy", *extra)
        assert result.returncode == 0, result.stderr
        outputs.append(np.load(tmp_path / f"m{len(outputs)}.npy"))
    assert outputs[0].shape == (1, 3, 40, 56)
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-6)


def _half_precision(path, out_path, keep_io_types: bool, rounded_only: bool = False) -> None:
    """The model converted to float16 as onnxconverter-common converts one: every float
    weight float16, and either float16 inputs and outputs, or (keep_io_types) float32 ones
    with a Cast after the input and before the output. `rounded_only`: the float32 model
    with its weights rounded to float16's values, what graphconv should compute either way."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            half = array.astype(np.float16)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(half.astype(np.float32) if rounded_only else half,
                                                                  tensor.name))
    if not rounded_only and keep_io_types:
        x, y = graph.input[0].name, graph.output[0].name
        for node in graph.node:
            node.input[:] = [f"{x}_half" if name == x else name for name in node.input]
            node.output[:] = [f"{y}_half" if name == y else name for name in node.output]
        graph.node.insert(0, helper.make_node("Cast", [x], [f"{x}_half"], to=TensorProto.FLOAT16))
        graph.node.append(helper.make_node("Cast", [f"{y}_half"], [y], to=TensorProto.FLOAT))
    elif not rounded_only:
        graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
        graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    onnx.save(model, str(out_path))


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_a_float16_model_runs_in_float32_on_its_weights(exported, tmp_path, rng, keep_io_types):
    """A model converted to float16 imports with its weights widened to float32 and the
    Casts at its ends as no-ops: the float32 model with float16-rounded weights, exactly."""
    _, path = exported("resnet")
    _half_precision(path, tmp_path / "half.onnx", keep_io_types)
    _half_precision(path, tmp_path / "rounded.onnx", keep_io_types, rounded_only=True)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    half, rounded = load_network(tmp_path / "half.onnx"), load_network(tmp_path / "rounded.onnx")
    np.testing.assert_allclose(Model(half).run(x), Model(rounded).run(x), rtol=1e-6, atol=1e-6)
    # widened without a word before: the import says so (the float32 file with the same values says nothing)
    assert half.meta["narrow_weights"] == ["float16"] and "narrow_weights" not in rounded.meta
    said = graphconv_process("import", tmp_path / "half.onnx", "-o", tmp_path / "half.yaml").stderr
    assert "weights are stored as float16; graphconv widens them to float32 (exactly)" in said


def test_a_cast_of_the_feature_map_to_integers_is_refused(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    _, path = exported("resnet")
    model = onnx.load(str(path))
    x = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = [f"{x}_int" if name == x else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", [x], [f"{x}_int8"], to=TensorProto.INT8))
    model.graph.node.insert(1, helper.make_node("Cast", [f"{x}_int8"], [f"{x}_int"], to=TensorProto.FLOAT))
    onnx.save(model, str(tmp_path / "int8.onnx"))
    with pytest.raises(GraphconvError, match="Cast of the image's feature map to INT8; graphconv computes in float32"):
        load_network(tmp_path / "int8.onnx")


# ---- what a tester's PyTorch exports wrote: indexing, squeezes, sums and maxima over H and W ---

class Headed(torch.nn.Module):
    """A stride-2 conv, then the head `how` PyTorch users write: each must import, equal
    PyTorch at the crop, and slide to a map whose every cell is the classifier on its crop."""
    crop = 12
    stride = 2

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)
        self.fc = torch.nn.Linear(6, 4)
        self.act = {"tanh": torch.nn.Tanh(), "elu": torch.nn.ELU(0.7), "selu": torch.nn.SELU(),
                    "celu": torch.nn.CELU(1.3), "softplus": torch.nn.Softplus(), "mish": torch.nn.Mish(),
                    "softsign": torch.nn.Softsign(),
                    "gelu-tanh": torch.nn.GELU("tanh"), "gelu": torch.nn.GELU(), "abs": None,
                    "softplus-beta": torch.nn.Softplus(beta=2.0)}.get(how, torch.nn.Identity())

    def forward(self, x):
        F = torch.nn.functional
        if self.how == "bgr":
            x = x[:, [2, 1, 0]]
        x = self.conv(x)
        x = torch.abs(x) if self.how == "abs" else self.act(x * 3.0)  # * 3: the activations' tails too
        if self.how == "index-00":
            x = F.adaptive_avg_pool2d(x, 1)[:, :, 0, 0]
        elif self.how == "sum":
            x = x.sum((2, 3)) / 100
        elif self.how == "squeeze-twice":
            x = F.adaptive_avg_pool2d(x, 1).squeeze(-1).squeeze(-1)
        elif self.how == "amax":
            x = x.amax((2, 3))
        elif self.how == "adaptive-max":
            x = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        else:
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.log_softmax(self.fc(x), dim=1) if self.how == "log-softmax" else self.fc(x)


def per_crop_scores(model, image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """PyTorch's scores of each crop of `image` at the model's stride, as a (1, K, rows, cols) map."""
    crop, stride = model.crop, model.stride
    crops = [image[:, :, i * stride:i * stride + crop, j * stride:j * stride + crop]
             for i in range(rows) for j in range(cols)]
    scores = torch_scores(model, np.concatenate(crops))
    return scores.reshape(rows, cols, -1).transpose(2, 0, 1)[None]


def check_imported_head(path, model, rng):
    """At the crop, graphconv's classifier equals PyTorch; compiled, on a larger image,
    each cell of its map equals PyTorch on that cell's crop."""
    x = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    graph = load_network(path)
    np.testing.assert_allclose(Model(graph).run(x), torch_scores(model, x), **TOLERANCE)
    image = rng.standard_normal((1, 3, 19, 22)).astype(np.float32)
    out = compile_model(path).run(image)
    assert out.shape == (1, 4, 4, 6)
    np.testing.assert_allclose(out, per_crop_scores(model, image, 4, 6), **TOLERANCE)
    return graph


HEADS = {"index-00": ["globalavgpool", "flatten"], "sum": ["globalavgpool", "batchnorm"],
         "squeeze-twice": ["globalavgpool", "flatten"], "amax": ["maxpool"], "adaptive-max": ["maxpool", "flatten"],
         "bgr": ["conv", "conv", "globalavgpool", "flatten"]}


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("how", sorted(HEADS))
def test_heads_pytorch_users_write_import_and_slide_crop_by_crop(tmp_path, how, dynamo, rng):
    """x[:, :, 0, 0] and .squeeze(-1).squeeze(-1) of a pooled map are a flatten (the
    first once read a missing view and was reported as a malformed node); x.sum((2, 3))
    is a global average pool times H * W, which on a larger image is each crop's sum;
    x.amax((2, 3)) (and the dynamo exporter's AdaptiveMaxPool2d(1)) a max pool over the
    crop's map; x[:, [2, 1, 0]] a 1x1 conv picking channels (a Gather; the dynamo
    exporter's Transpose, GatherND, Transpose)."""
    torch.manual_seed(0)
    model = Headed(how).eval()
    path = tmp_path / f"{how}.onnx"
    onnx_zoo.export(model, path, dynamo=dynamo)
    graph = check_imported_head(path, model, rng)
    ops = [n.op for n in graph.layers()]
    assert ops[-len(HEADS[how]) - 1:-1] == HEADS[how] if how != "bgr" else ops[:2] == ["conv", "conv"]


class ViewThenFlatten(torch.nn.Module):
    """A channel shuffle or pixel_unshuffle right before flatten(1) and the fc: the dynamo
    exporter writes the view back and the flatten as one Reshape of the 5-D or 6-D view."""
    crop = 8
    stride = 2

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = self.conv(x)
        n, c, h, w = x.shape
        if self.how == "shuffle":
            x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        else:
            x = torch.nn.functional.pixel_unshuffle(x, 2)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("how", ["shuffle", "pixel_unshuffle"])
def test_a_view_the_dynamo_exporter_merges_with_the_flatten_is_read(tmp_path, how, rng):
    """It was refused: "Reshape of a 2-group view of 8x4x4 value to [-1, 128]"."""
    torch.manual_seed(0)
    model = ViewThenFlatten(how).eval()
    onnx_zoo.export(model, tmp_path / "m.onnx", dynamo=True)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    graph = load_network(tmp_path / "m.onnx")
    assert [n.op for n in graph.layers()][1:3] == ["channel_shuffle" if how == "shuffle" else "space_to_depth",
                                                   "flatten"]
    np.testing.assert_allclose(Model(graph).run(x), torch_scores(model, x), **TOLERANCE)


class OneClassHead(Headed):
    """A binary classifier's head as people write it for BCEWithLogitsLoss: one score per
    image, its class axis dropped (`how`), sometimes scaled or squashed after."""

    def __init__(self, how: str):
        super().__init__(how)
        self.fc = torch.nn.Linear(6, 1)

    def forward(self, x):
        score = self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1), 1))
        if self.how == "squeeze":
            return score.squeeze(1)
        if self.how == "sigmoid-view":
            return torch.sigmoid(score).view(-1)
        if self.how == "flatten":
            return score.flatten()
        if self.how == "scaled-squeeze-unsqueeze":
            return torch.tanh(score.squeeze(-1) / 1.5 + 0.25).unsqueeze(1)
        return torch.softmax(score.squeeze(1), dim=0)  # "softmax-over-the-batch"


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("how", ["squeeze", "sigmoid-view", "flatten", "scaled-squeeze-unsqueeze"])
def test_one_class_heads_that_drop_their_class_axis_import_and_slide(tmp_path, how, dynamo, rng):
    """fc(x).squeeze(1), .view(-1), .flatten(): a binary classifier's (N,) scores were
    refused ("Squeeze of axes [1] of a rank-2 1x1x1 value"). graphconv keeps the class
    axis: its classifier gives (N, 1), its map (N, 1, rows, cols), each cell the score
    PyTorch gives that cell's crop."""
    torch.manual_seed(0)
    model = OneClassHead(how).eval()
    path = tmp_path / f"{how}.onnx"
    onnx_zoo.export(model, path, dynamo=dynamo)
    x = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    out = Model(load_network(path)).run(x)
    assert out.shape == (2, 1)
    np.testing.assert_allclose(out, torch_scores(model, x).reshape(2, 1), **TOLERANCE)
    image = rng.standard_normal((1, 3, 19, 22)).astype(np.float32)
    dense = compile_model(path).run(image)
    expected = per_crop_scores(model, image, 4, 6) if how == "scaled-squeeze-unsqueeze" else \
        per_crop_scores(model, image, 4, 6).reshape(1, 1, 4, 6)
    np.testing.assert_allclose(dense, expected, **TOLERANCE)


def test_an_op_across_the_batch_of_one_class_scores_is_refused(tmp_path):
    """softmax(fc(x).squeeze(1), dim=0) mixes the images of a batch: not a classifier of each crop."""
    path = tmp_path / "softmax.onnx"
    onnx_zoo.export(OneClassHead("softmax-over-the-batch").eval(), path)
    with pytest.raises(GraphconvError, match=r"Softmax on the feature map seen as \(N,\) scores .*; graphconv reads it so only in"):
        load_network(path)


ACTIVATIONS = {"tanh": "tanh", "elu": "elu", "selu": "selu", "celu": "celu", "softplus": "softplus", "mish": "mish",
               "softsign": "softsign", "gelu-tanh": "gelu", "gelu": "gelu", "abs": "abs"}


def export_at(model, path, *, dynamo: bool, opset: int) -> None:
    """torch.onnx.export at `opset` through either exporter (onnx_zoo.export's dynamo
    form takes the exporter's default op set; here the dynamo exporter writes op set 18
    and converts it down where asked)."""
    if not dynamo:
        onnx_zoo.export(model, path, opset=opset)
        return
    import warnings
    size = model.crop if isinstance(model.crop, tuple) else (model.crop, model.crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(onnx_zoo.Wrapped(model), (torch.randn(1, 3, *size),), str(path),
                          dynamo=True, opset_version=opset, input_names=["x"], verbose=False)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("how", sorted(ACTIVATIONS))
def test_elementwise_activations_import_as_one_layer_and_slide(tmp_path, how, opset, dynamo, rng):
    """Tanh, Elu, Selu, Celu, Softplus and Abs nodes are graphconv's ops; nn.Mish
    (Softplus, Tanh, Mul before op set 18, one Mish node from it) is one mish layer, and
    nn.GELU('tanh'), written out with Tanh before op set 20, one gelu (the dynamo
    exporter's x * (0.5 * (1 + tanh(...))) too). The dynamo exporter writes
    nn.Softplus() as Where(x > 20, x, softplus(x)): one softplus layer; both write
    nn.Softsign as x / (|x| + 1): one softsign layer."""
    torch.manual_seed(0)
    model = Headed(how).eval()
    path = tmp_path / f"{how}.onnx"
    export_at(model, path, dynamo=dynamo, opset=opset)
    graph = check_imported_head(path, model, rng)
    layers = [n for n in graph.layers()]
    assert [n.op for n in layers if n.op not in ("conv", "batchnorm", "globalavgpool", "flatten", "fc")] \
        == [ACTIVATIONS[how]]
    if how == "gelu-tanh":
        assert graph.find("gelu")[0].params["approximate"] == "tanh"


class LayerNormed(torch.nn.Module):
    """A stride-2 conv, then a LayerNorm over each position's channels, written as
    nn.LayerNorm on a channels-last view ("last", ConvNeXt's blocks) or out in Python over
    axis 1 (ConvNeXt's own LayerNorm(data_format="channels_first"); "first"), with or
    without its weight and bias."""
    crop = 12
    stride = 2

    def __init__(self, form: str, affine: bool = True):
        super().__init__()
        self.form = form
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)
        self.norm = torch.nn.LayerNorm(6, eps=1e-6, elementwise_affine=affine)
        if affine:
            torch.nn.init.normal_(self.norm.weight)
            torch.nn.init.normal_(self.norm.bias)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = self.conv(x)
        if self.form == "last":
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        else:
            mean = x.mean(1, keepdim=True)
            variance = (x - mean).pow(2).mean(1, keepdim=True)
            x = (x - mean) / torch.sqrt(variance + self.norm.eps)
            if self.norm.weight is not None:
                x = self.norm.weight[:, None, None] * x + self.norm.bias[:, None, None]
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("form,affine,opset,dynamo", [
    ("last", True, 11, False), ("last", True, 16, False), ("last", False, 13, False),
    ("first", True, 17, False), ("first", False, 17, False), ("first", True, 18, True)])
def test_a_layer_norm_written_out_imports_as_one_layernorm(tmp_path, rng, form, affine, opset, dynamo):
    """nn.LayerNorm before op set 17 (the TorchScript exporter writes it out: ReduceMean,
    Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) and ConvNeXt's channels_first
    LayerNorm at any op set were refused ("Sub on a channels-last view")."""
    torch.manual_seed(0)
    model = LayerNormed(form, affine).eval()
    path = tmp_path / "norm.onnx"
    export_at(model, path, dynamo=dynamo, opset=opset)
    graph = check_imported_head(path, model, rng)
    assert [n.op for n in graph.layers()].count("layernorm") == 1


def test_a_layer_norm_s_weight_along_the_width_is_not_taken_per_channel(tmp_path, rng):
    """Over axis 1 of (N, C, H, W) a weight of shape (C,) scales along W (where W == C):
    taken as one per channel it differed from onnxruntime by 1.7."""
    helper = onnx.helper
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1]), helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["q"]), helper.make_node("ReduceMean", ["q"], ["v"], axes=[1]),
             helper.make_node("Add", ["v", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["d", "s"], ["n"]), helper.make_node("Mul", ["n", "w"], ["y"], name="scale")]
    initializers = {"two": np.float32(2), "eps": np.float32(1e-5), "w": rng.standard_normal(4).astype(np.float32)}
    path = onnx_file(tmp_path / "ln.onnx", nodes, initializers, opset=13, input_shape=(1, 4, 4, 4))
    with pytest.raises(GraphconvError, match=r"LayerNorm's weight of shape \[4\] is not one value per channel"):
        load_network(path)
    initializers["w"] = initializers["w"].reshape(4, 1, 1)
    path = onnx_file(tmp_path / "ln.onnx", nodes, initializers, opset=13, input_shape=(1, 4, 4, 4))
    x = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).executor("cpu").run(x), onnxruntime_scores(path, x),
                               **TOLERANCE)


class Softplus(torch.nn.Module):
    """nn.Softplus alone, on a 3 x 5 x 7 map."""
    crop = (5, 7)

    def __init__(self, **kwargs):
        super().__init__()
        self.act = torch.nn.Softplus(**kwargs)

    def forward(self, x):
        return self.act(x)


def far_and_near_the_threshold(rng) -> np.ndarray:
    """-40 to 40, then 20 and 10, the float32 numbers next to them and 19.5..20.5, then
    the normal distribution: where nn.Softplus' threshold switches to x."""
    near = [np.nextafter(np.float32(t), np.float32(t + d)) for t in (20, 10) for d in (-1, 1)]
    around = np.concatenate([[20, 10, *near], np.linspace(19.5, 20.5, 105 - 6)]).astype(np.float32)
    return np.concatenate([np.linspace(-40, 40, 105, dtype=np.float32).reshape(1, 3, 5, 7),
                           around.reshape(1, 3, 5, 7), rng.standard_normal((1, 3, 5, 7)).astype(np.float32)])


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
def test_the_dynamo_exporters_softplus_threshold_equals_onnxruntime_and_pytorch(tmp_path, beta, rng):
    """The dynamo exporter writes nn.Softplus(beta) as Where(beta * x > 20, x,
    softplus(beta * x) / beta): above 20 softplus rounds to x in float32, so it imports as
    one softplus layer (with scale layers by beta and 1 / beta around it where beta != 1);
    from -40 to 40 and on both sides of 20 it equals onnxruntime and PyTorch."""
    model = Softplus(beta=beta).eval()
    path = tmp_path / "softplus.onnx"
    export_at(model, path, dynamo=True, opset=18)
    assert {"Greater", "Where"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    x = far_and_near_the_threshold(rng)
    graph = load_network(path, task="segmentation")
    ops = [n.op for n in graph.layers()]
    assert ops == ["softplus"] if beta == 1.0 else ops.count("softplus") == 1
    out = Model(graph).run(x)
    expected = np.concatenate([onnxruntime_scores(path, image[None]) for image in x])  # a batch of 1
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, torch_scores(model, x), rtol=1e-6, atol=1e-6)


def test_a_softplus_threshold_where_x_and_softplus_differ_is_refused_naming_it(tmp_path):
    """nn.Softplus(threshold=10): just above 10, x and softplus(x) differ by 4.5e-5,
    more than float32 rounding; graphconv's softplus is not that function."""
    path = tmp_path / "softplus10.onnx"
    export_at(Softplus(threshold=10.0).eval(), path, dynamo=True, opset=18)
    with pytest.raises(GraphconvError, match=r"nn.Softplus with threshold 10 .*differs from softplus\(x\) by up to "
                                             r"4.5e-05.*threshold of 15 or more"):
        load_network(path, task="segmentation")


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_a_classifier_ending_in_log_softmax_imports_and_slides_crop_by_crop(tmp_path, dynamo, rng):
    """nn.LogSoftmax / F.log_softmax(dim=1) after the fc (a classifier trained with
    NLLLoss): one log_softmax layer, over the classes at each cell of the dense map."""
    torch.manual_seed(0)
    model = Headed("log-softmax").eval()
    path = tmp_path / "log_softmax.onnx"
    onnx_zoo.export(model, path, dynamo=dynamo)
    assert "LogSoftmax" in [n.op_type for n in onnx.load(str(path)).graph.node]
    graph = check_imported_head(path, model, rng)
    assert [n.op for n in graph.layers()][-2:] == ["fc", "log_softmax"]


@pytest.mark.parametrize("axis,opset,shape", [(1, 13, (1, 6, 3, 4)), (-3, 18, (1, 6, 3, 4)), (1, 11, (1, 6, 1, 1)),
                                              (-3, 11, (1, 6, 1, 1))])
def test_log_softmax_nodes_equal_onnxruntime_on_large_values(tmp_path, axis, opset, shape, rng):
    """Over the channels at each position, stable where exp would overflow (values in the
    thousands) and where a softmax underflows to 0 (whose log would be -inf). Before op
    set 13 axis 1 of a 1 x 1 map is over its channels too."""
    path = onnx_file(tmp_path / "log_softmax.onnx", [onnx.helper.make_node("LogSoftmax", ["x"], ["y"], axis=axis)],
                     {}, opset=opset, input_shape=shape)
    x = (rng.standard_normal((3, *shape[1:])) * np.array([1, 100, 1000])[:, None, None, None]).astype(np.float32)
    out = Model(load_network(path, task="segmentation")).run(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, onnxruntime_scores(path, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis,opset,message", [
    (1, 11, "over axis 1 of a 3x2x2 map in op set 11, which takes it over the channels, rows and columns together"),
    (-1, 13, "over axis -1 of a rank-4 value; graphconv's [a-z_]+ is over channels \\(axis 1\\)")], ids=["whole-map-in-op-set-11", "columns"])
def test_softmaxes_not_over_the_channels_are_refused(tmp_path, op, axis, opset, message):
    """Before op set 13 (Log)Softmax's axis 1 of an (N, C, H, W) map is over C * H * W
    values together (such a Softmax was imported as over the channels, and its maps
    summed to H * W); axis -1 from op set 13 is over the columns."""
    path = onnx_file(tmp_path / "softmax.onnx", [onnx.helper.make_node(op, ["x"], ["y"], axis=axis)], {},
                     opset=opset, input_shape=(1, 3, 2, 2))
    with pytest.raises(GraphconvError, match=f"{op} {message}"):
        load_network(path, task="segmentation")


@pytest.mark.parametrize("divisor", ["abs-plus-2", "abs-of-other", "abs-read-twice"])
def test_divisions_like_softsign_but_not_it_stay_divisions(tmp_path, divisor, rng):
    """Only x / (|x| + 1) is a softsign: x / (|x| + 2), x / (|y| + 1) and a |x| + 1 that
    another node reads too keep their layers, and equal onnxruntime."""
    one, two = np.array(1.0, np.float32), np.array(2.0, np.float32)
    nodes = [onnx.helper.make_node("Sigmoid", ["x"], ["s"]),
             onnx.helper.make_node("Abs", ["s" if divisor == "abs-of-other" else "x"], ["a"]),
             onnx.helper.make_node("Add", ["a", "two" if divisor == "abs-plus-2" else "one"], ["d"]),
             onnx.helper.make_node("Div", ["x", "d"], ["q"])]
    if divisor == "abs-read-twice":
        nodes.append(onnx.helper.make_node("Add", ["q", "d"], ["y"]))
    else:
        nodes.append(onnx.helper.make_node("Add", ["q", "s"], ["y"]))
    path = onnx_file(tmp_path / "div.onnx", nodes, {"one": one, "two": two}, opset=13, input_shape=(1, 3, 5, 7))
    graph = load_network(path, task="segmentation")
    assert not graph.find("softsign") and graph.find("div")
    x = (rng.standard_normal((2, 3, 5, 7)) * 3).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [("Tanh", {}), ("Softplus", {}), ("Softsign", {}), ("Mish", {}), ("Abs", {}),
                                      ("Elu", {"alpha": 0.4}), ("Selu", {}), ("Selu", {"alpha": 1.2, "gamma": 0.9}), ("Celu", {"alpha": 2.0})])
def test_activation_nodes_equal_onnxruntime_far_out_on_both_sides(tmp_path, op, attrs, rng):
    """Values up to +-40, where exp overflows a naive softplus and tanh saturates."""
    nodes = [onnx.helper.make_node(op, ["x"], ["y"], **attrs)]
    path = onnx_file(tmp_path / "act.onnx", nodes, {}, opset=18, input_shape=(1, 3, 5, 7))
    x = np.concatenate([np.linspace(-40, 40, 105, dtype=np.float32).reshape(1, 3, 5, 7),
                        rng.standard_normal((1, 3, 5, 7)).astype(np.float32)])
    out = Model(load_network(path, task="segmentation")).run(x)
    np.testing.assert_allclose(out, onnxruntime_scores(path, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nodes,initializers,message", [
    ([("Gather", ["x", "i"], {"axis": 2})], {"i": np.array([0, 3], np.int64)},
     r"node 'n0': Gather of indices \[0, 3\] along axis 2 of a rank-4 3x16x16 value; graphconv gathers a list of "
     r"channels \(axis 1\), or the one cell of a 1x1 map"),
    ([("Gather", ["x", "i"], {"axis": 1})], {"i": np.array([0, 5], np.int64)},
     r"node 'n0': Gather of indices \[0, 5\] along axis 1, of size 3: out of range"),
    ([("ReduceSum", ["x", "a"], {})], {"a": np.array([1], np.int64)},
     r"node 'n0': ReduceSum over axes \[1\] of a rank-4 NCHW value; graphconv adds over height and width"),
    ([("ReduceMax", ["x"], {"axes": [1], "keepdims": 0})], {},
     r"node 'n0': ReduceMax over axes \[1\] of a rank-4 NCHW value \(keepdims=0\)"),
    ([("MaxPool", ["x"], {})], {}, r"node 'n0': MaxPool is malformed: it lacks its attribute 'kernel_shape'"),
    ([("GlobalAveragePool", ["x"], {}), ("Squeeze", ["n0", "a"], {}), ("Gather", ["n1", "i"], {"axis": 0})],
     {"a": np.array([3], np.int64), "i": np.array(0, np.int64)},
     r"node 'n2': Gather of indices 0 along axis 0 of a rank-3 3x1x1 value"),
    ([("Flatten", ["x"], {}), ("Gather", ["n0", "i"], {"axis": 0})], {"i": np.array([0], np.int64)},
     r"node 'n1': Gather of indices \[0\] along axis 0 of a rank-2"),
])
def test_gathers_and_reductions_graphconv_cannot_follow_are_refused_not_called_malformed(tmp_path, nodes,
                                                                                       initializers, message):
    """A Gather of the plain map once looked up a view that does not exist, and the
    KeyError read as a damaged file; now a missing attribute is what 'malformed' means."""
    made = [onnx.helper.make_node(op, inputs, ["y" if i == len(nodes) - 1 else f"n{i}"], name=f"n{i}", **attrs)
            for i, (op, inputs, attrs) in enumerate(nodes)]  # node i makes n{i}, the last y
    path = onnx_file(tmp_path / "refused.onnx", made, initializers, opset=13)
    with pytest.raises(GraphconvError, match=message) as refused:
        load_network(path)
    assert "malformed" not in message or "lacks its attribute" in str(refused.value)
    assert "KeyError" not in str(refused.value)


class Unsupported(torch.nn.Module):
    crop = 8

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).amin((2, 3))


def test_a_dynamo_node_is_named_with_its_output_and_the_line_of_python_that_made_it(tmp_path):
    """The dynamo exporter names nodes 'n0' or 'node_Reshape_7', which say nothing of where
    they are; it records the Python source line, which does."""
    path = tmp_path / "amin.onnx"
    onnx_zoo.export(Unsupported().eval(), path, dynamo=True)
    with pytest.raises(GraphconvError, match=r"node '[^']+' \(output 'amin', from test_frontends_onnx.py line \d+: "
                                             r"return self.conv\(x\).amin\(\(2, 3\)\)\): op ReduceMin is not "
                                             r"supported"):
        load_network(path)


class Gated(torch.nn.Module):
    crop = 8

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        c = self.conv(x)
        return c * torch.sigmoid(c.mean((2, 3), keepdim=True))


def test_a_dynamo_layer_a_pass_refuses_is_placed_by_the_line_of_python_that_made_it(tmp_path):
    """timm's SE-ResNet exported by dynamo was refused at "layer 'node_mean'": the pass
    refusing it has no ONNX node to hand, so the layer keeps the line the exporter recorded."""
    path = tmp_path / "gated.onnx"
    onnx_zoo.export(Gated().eval(), path, dynamo=True)
    with pytest.raises(GraphconvError) as refused:
        compile_model(load_network(path, crop_size=(8, 8)))
    assert re.search(r"gated.onnx \(from test_frontends_onnx.py line \d+: return c \* torch.sigmoid\(c.mean\("
                     r"\(2, 3\), keepdim=True\)\)\): layer '[^']+': this global average pool", str(refused.value))


class _Excite(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class Excited(torch.nn.Module):
    crop = 8

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.se = _Excite()

    def forward(self, x):
        return self.se(self.conv(x))


def test_a_dynamo_layer_is_named_by_its_module_path(tmp_path):
    """A timm user's compile refusal named 'node_mean', 'node_mul' and 'node_Sigmoid_26'
    (dynamo's node names), where TorchScript's export named 'blocks.0.0.se': the module
    path the dynamo exporter records (name_scopes) names the layers now."""
    path = tmp_path / "excited.onnx"
    onnx_zoo.export(Excited().eval(), path, dynamo=True)
    graph = load_network(path, crop_size=(8, 8))
    assert [n.name for n in graph.layers()] == [  # onnx_zoo.export wraps the model as `model`
        "model.conv", "model.se.mean", "model.se.fc", "model.se.sigmoid", "model.se.mul"]
    with pytest.raises(GraphconvError, match=r"layer 'model.se.mean': this global average pool feeds layer "
                                             r"'model.se.mul'"):
        compile_model(graph)


def test_a_scale_another_layer_already_reads_is_not_merged_into(tmp_path, rng):
    """y = relu(conv) * c2; sigmoid(y) + y * 3: the Mul by 3 merged into y's scale layer,
    which the Sigmoid, converted before it, reads too (0.22 off onnxruntime)."""
    import onnxruntime as ort
    helper = onnx.helper
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Mul", ["r", "c2"], ["y"]), helper.make_node("Sigmoid", ["y"], ["z1"]),
             helper.make_node("Mul", ["y", "c3"], ["z2"]), helper.make_node("Add", ["z1", "z2"], ["out"])]
    constants = {"w": rng.standard_normal((4, 3, 3, 3)), "c2": np.arange(1, 5).reshape(1, 4, 1, 1),
                 "c3": np.full((1, 4, 1, 1), 3.0)}
    path = save(tiny_model(nodes, constants, output="out"), tmp_path / "two_readers.onnx")
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = Model(load_network(path, task="segmentation")).run(x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# ---- a per-feature scale and shift between the flatten and the Linear: fastai's head and others ----

FEATURE_NORMED = {"flat-scale": onnx_zoo.FlatScaleSmall, "fastai-head": onnx_zoo.FastaiHeadSmall,
                  "flat-norm-4x4": onnx_zoo.FlatNormSmall}


@pytest.mark.parametrize("arch,how", [  # the dynamo exporter is slow; its Mul form is the one that differs
    pytest.param(arch, how, id=f"{arch}-{how}") for how in ["torchscript", "torchscript-keep-bn", "dynamo"]
    for arch in sorted(FEATURE_NORMED) if how != "dynamo" or arch == "flat-scale"])
def test_a_scale_and_shift_of_the_flattened_features_folds_into_the_fc_and_slides(tmp_path, arch, how, rng):
    """x.flatten(1) * w, and BatchNorm1d after a Flatten (fastai's head, over a 1x1 pooled
    map; over a plain conv stack's 4x4 map), import as a batchnorm over the C*H*W features
    that sat between the flatten and the fc, so the flatten stayed, compile left a network
    that took only its crop, and a larger image failed inside on the batchnorm's weight
    shape. Folded into the fc, the map equals PyTorch on every crop (no layer pads)."""
    torch.manual_seed(0)
    model = FEATURE_NORMED[arch]().eval()
    path = tmp_path / f"{arch}.onnx"
    onnx_zoo.export(model, path, dynamo=how == "dynamo", fold=how != "torchscript-keep-bn")
    crops = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    np.testing.assert_allclose(Model(load_network(path)).run(crops), torch_scores(model, crops), rtol=1e-5, atol=1e-5)
    compiled = compile_model(path)
    assert not compiled.graph.find("batchnorm") and not compiled.graph.find("flatten")
    image = rng.standard_normal((1, 3, model.crop + 9, model.crop + 7)).astype(np.float32)
    out = compiled.run(image)
    assert out.shape == (1, 5, 5, 4)
    np.testing.assert_allclose(out, per_crop_scores(model, image, 5, 4), rtol=1e-5, atol=1e-5)


def test_what_stops_a_flattened_head_sliding_is_named_by_compile_and_verify(tmp_path):
    """A ReLU between the BatchNorm1d and the Linear: the batchnorm (a scale and shift per
    feature, not per channel) cannot fold into it, the flatten cannot go, and compile and
    verify say which layer stops the network sliding
    (exit 2, one line) instead of failing inside on the batchnorm's weight shape."""
    torch.manual_seed(0)
    model = onnx_zoo.FlatNormSmall(relu_before_fc=True).eval()
    path = tmp_path / "relu-head.onnx"
    onnx_zoo.export(model, path, fold=False)
    message = (r"layer 'head\.1': this batchnorm reads the 96 features of flatten 'head\.0' \(its 6x4x4 map\) "
               r"before "
               r"any fc: .* cannot be compiled to slide .*--crops")
    with pytest.raises(GraphconvError, match=message):
        compile_model(path)
    for args in (["compile", path, "-o", tmp_path / "out"], ["verify", path, "--input-size", "20", "20"]):
        result = graphconv_process(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "this batchnorm reads the 96 features" in result.stderr and "expects weight" not in result.stderr
    assert not (tmp_path / "out").exists()


# ---- nn.LocalResponseNorm, which the exporters write out (neither writes ONNX's LRN) ----------------

@pytest.mark.parametrize("how", ["torchscript-13", "torchscript-17", "dynamo"])
def test_local_response_norm_as_the_exporters_write_it_is_graphconv_s_lrn_and_slides(tmp_path, how, rng):
    """x * x, a 5-D view, a Pad along the channels, a 3-D AveragePool, the view back, *
    alpha + k, ** beta, x / that: one lrn layer (PyTorch's window and alpha / size, for an
    odd and an even size), equal to PyTorch on the crop and, compiled, on every crop."""
    torch.manual_seed(0)
    model = onnx_zoo.CaffeAlexNetSmall().eval()
    path = tmp_path / f"caffe-{how}.onnx"
    export_at(model, path, dynamo=how == "dynamo", opset=int(how.split("-")[1]) if "-" in how else 18)
    graph = load_network(path)
    lrns = graph.find("lrn")
    assert [(n.params["size"], n.params["beta"], n.params["k"]) for n in lrns] == [(5, 0.75, 2.0), (4, 0.75, 1.5)]
    assert [n.params["alpha"] for n in lrns] == pytest.approx([0.02, 0.5])
    crops = rng.standard_normal((2, 3, model.crop, model.crop)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(crops), torch_scores(model, crops), rtol=1e-5, atol=1e-5)
    image = rng.standard_normal((1, 3, model.crop + 17, model.crop + 9)).astype(np.float32)
    out = compile_model(path).run(image)
    assert out.shape == (1, 5, 3, 2)
    np.testing.assert_allclose(out, per_crop_scores(model, image, 3, 2), rtol=1e-5, atol=1e-5)


def test_a_local_response_norm_decomposition_that_differs_is_refused_as_one(tmp_path):
    """The same start (x * x viewed 5-D, padded along the channels, averaged) with another
    ending cannot be graphconv's lrn: the refusal says what it looks like."""
    class NotQuite(torch.nn.Module):
        crop = 8

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 6, 3)

        def forward(self, x):
            x = self.conv(x)
            div = torch.nn.functional.pad((x * x).unsqueeze(1), (0, 0, 0, 0, 1, 1))
            div = torch.nn.functional.avg_pool3d(div, (3, 1, 1), stride=1).squeeze(1)
            return x / (div * 0.1 + 1.0).sqrt()  # a square root, not a Pow

    path = tmp_path / "not-quite.onnx"
    onnx_zoo.export(NotQuite().eval(), path)
    with pytest.raises(GraphconvError, match=r"this looks like nn\.LocalResponseNorm's decomposition .*, but no "
                                             r"x / \(k \+ alpha \* that average\) \*\* beta follows it"):
        load_network(path)


class _LrnLike(torch.nn.Module):
    """x * x viewed (N, 1, C, H, W), padded along the channels by `mode`, averaged over 3
    channels, viewed back, then x / (1 + 0.1 * that) ** 0.75, plus `extra` of the inner
    values ("average": the averaged map; "square": x * x; "base": 1 + 0.1 * the average)
    added to the result."""
    crop = 8

    def __init__(self, mode: str = "constant", extra: str = ""):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.mode, self.extra = mode, extra

    def forward(self, x):
        x = self.conv(x)
        square = x * x
        div = torch.nn.functional.pad(square.unsqueeze(1), (0, 0, 0, 0, 1, 1), mode=self.mode)
        div = torch.nn.functional.avg_pool3d(div, (3, 1, 1), stride=1).squeeze(1)
        base = div * 0.1 + 1.0
        out = x / base.pow(0.75)
        return out + {"average": div, "square": square, "base": base}[self.extra] if self.extra else out


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_a_local_response_norm_decomposition_padded_other_than_with_zeros_is_refused(tmp_path, mode):
    """F.pad(..., mode="reflect" or "replicate") of the 5-D view is a Pad whose mode is not
    "constant": its channels past the ends are not zeros, so graphconv's lrn (PyTorch's
    window of zeros past the ends) would differ from PyTorch by up to 2; it is refused."""
    torch.manual_seed(0)
    path = tmp_path / f"lrn-{mode}.onnx"
    onnx_zoo.export(_LrnLike(mode).eval(), path)
    onnx_mode = {"reflect": "reflect", "replicate": "edge"}[mode]  # ONNX's name for it
    with pytest.raises(GraphconvError, match=r"this looks like nn\.LocalResponseNorm's decomposition .*, but its "
                                             r"Pad is not \(1, 1\) zero channels around a window of 3 \(its mode is "
                                             rf"'{onnx_mode}'\)"):
        load_network(path)


@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
@pytest.mark.parametrize("extra", ["average", "square", "base"])
def test_a_local_response_norm_decomposition_whose_inner_values_are_read_elsewhere_is_refused(tmp_path, extra, how):
    """The lrn's own nodes (x * x, the view, Pad, AveragePool, the view back, TorchScript's
    If with its Shape, Gather and Equal, * alpha, + k, ** beta) go when they are fused into
    one lrn: a node outside them that reads one of their values (here an Add of the
    average, of x * x, or of k + alpha * the average, to the result) is refused by name,
    not left reading a value no node makes."""
    torch.manual_seed(0)
    path = tmp_path / f"lrn-{extra}-{how}.onnx"
    onnx_zoo.export(_LrnLike(extra=extra).eval(), path, dynamo=how == "dynamo")
    with pytest.raises(GraphconvError, match=r"this looks like nn\.LocalResponseNorm's decomposition .*, but "
                                             r"node '[^']*' .*reads its value '[^']*'"):
        load_network(path)


def test_the_lrn_like_module_with_zero_padding_and_nothing_else_reading_is_graphconv_s_lrn(tmp_path, rng):
    """The control of the two refusals above: zero padding, nothing else reading its
    values, and the same module imports as one lrn equal to PyTorch."""
    torch.manual_seed(0)
    model = _LrnLike().eval()
    path = tmp_path / "lrn.onnx"
    onnx_zoo.export(model, path)
    graph = load_network(path, task="segmentation")
    assert len(graph.find("lrn")) == 1
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Model(graph).run(x), expected, rtol=1e-5, atol=1e-5)


class _CatAvgMax(torch.nn.Module):
    """timm's global_pool='catavgmax': the average and the max pooled map, concatenated.
    The TorchScript exporter writes the max as a MaxPool whose kernel and stride are the
    crop's map, the dynamo exporter as a ReduceMax: as written, a classifier whose branches
    meet only on its crop; compiled, both pools slide."""
    crop = 32

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        pooled = [torch.nn.functional.adaptive_avg_pool2d(x, 1), torch.nn.functional.adaptive_max_pool2d(x, 1)]
        return self.fc(torch.cat(pooled, 1).flatten(1))


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_concat_of_average_and_max_pooled_maps_verifies_and_says_it_meets_on_the_crop_as_written(
        dynamo, tmp_path, capsys, rng):
    """`verify` measured padding on the classifier as written, whose max pool (stride: the
    crop's map) and global average pool meet at different strides, and refused a network
    `compile` slides exactly; the as-written classifier on another size was told to crop
    the image to a "multiple of 2" that does not fit either."""
    import torch.nn.functional as F

    from graphconv.cli import main
    torch.manual_seed(0)
    model, path = _CatAvgMax().eval(), tmp_path / "catavgmax.onnx"
    onnx_zoo.export(model, path, dynamo=dynamo)
    assert main(["verify", str(path), "--input-size", "80", "80"]) == 0
    assert "result: PASS" in capsys.readouterr().out
    x = rng.standard_normal((1, 3, 80, 80)).astype(np.float32)
    features = torch.relu(model.conv(torch.from_numpy(x)))
    pooled = torch.cat([F.avg_pool2d(features, 16, stride=1), F.max_pool2d(features, 16, stride=1)], 1)
    expected = F.conv2d(pooled, model.fc.weight[:, :, None, None], model.fc.bias).detach().numpy()
    np.testing.assert_allclose(compile_model(path).run(x), expected, **TOLERANCE)
    assert main(["inspect", str(path), "--input-size", "80", "80"]) == 2
    err = capsys.readouterr().err
    assert "branches meet only on its 32x32 crop" in err and "graphconv compile" in err and "multiples" not in err


def test_sqrt_and_reciprocal_of_a_map_are_powers_and_a_power_per_channel_is_refused(tmp_path, rng):
    """Sqrt and Reciprocal on the feature map import as `pow` layers (0.5 and -1) and equal
    onnxruntime; an exponent per channel, or a map as the exponent, is refused naming the
    node (graphconv raises a map to one constant power)."""
    helper = onnx.helper
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sqrt", ["r"], ["s"]),
             helper.make_node("Add", ["s", "one"], ["t"]), helper.make_node("Reciprocal", ["t"], ["y"])]
    path = save(tiny_model(nodes, {"one": np.ones((1, 3, 1, 1))}), tmp_path / "roots.onnx")
    graph = load_network(path)
    assert [n.params["exponent"] for n in graph.find("pow")] == [0.5, -1.0]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x, full=True), onnxruntime_scores(path, x), rtol=1e-6)
    for exponent, said in ((np.full((1, 3, 1, 1), 2.0), "3 exponents"), ("x", "another feature map")):
        pow_node = helper.make_node("Pow", ["x", exponent if isinstance(exponent, str) else "e"], ["y"], name="gem_pow")
        inits = {} if isinstance(exponent, str) else {"e": exponent}
        path = save(tiny_model([pow_node], inits), tmp_path / "pow.onnx")
        with pytest.raises(GraphconvError, match=f"node 'gem_pow'.*Pow of a map by {said}"):
            load_network(path)


def test_eca_views_that_split_the_channels_are_refused_and_a_spatial_gate_written_first_multiplies(tmp_path, rng):
    """A Reshape of the pooled vector to [-1, 1, 4] (two sequences an image, not ECA's one
    across all 8 channels) is not a channel_conv; a CBAM gate written first,
    sigmoid(max over channels) * x, is the map times its gate."""
    helper = onnx.helper
    taps = rng.standard_normal((1, 1, 3)).astype(np.float32)
    for into, back in (([-1, 1, 4], [-1, 8, 1, 1]), ([1, 1, -1], [-1, 4, 1, 1])):
        nodes = [helper.make_node("Conv", ["x", "w0"], ["m"], kernel_shape=[1, 1]),
                 helper.make_node("GlobalAveragePool", ["m"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
                 helper.make_node("Reshape", ["f", "into"], ["v"]),
                 helper.make_node("Conv", ["v", "taps"], ["c"], kernel_shape=[3], pads=[1, 1], name="eca_conv"),
                 helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Reshape", ["g", "back"], ["y"])]
        inits = {"w0": rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "taps": taps,
                 "into": np.array(into, np.int64), "back": np.array(back, np.int64)}
        path = onnx_file(tmp_path / "split.onnx", nodes, inits, input_shape=(1, 3, 4, 4))
        with pytest.raises(GraphconvError, match="node 'eca_conv': a Conv1d across the channels"):
            load_network(path)
    nodes = [helper.make_node("ReduceMax", ["x"], ["most"], axes=[1], keepdims=1),
             helper.make_node("Sigmoid", ["most"], ["g"]), helper.make_node("Mul", ["g", "x"], ["y"])]
    path = onnx_file(tmp_path / "gate_first.onnx", nodes, {}, input_shape=(1, 3, 6, 6))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == ["channel_max", "sigmoid", "mul"]
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=1e-6)


class Funnel(torch.nn.Module):
    """A stride-2 conv, then FReLU's funnel activation, max(x, bn(depthwise_conv(x)))
    (torch.max of two maps: ONNX Max), then the usual head. The depthwise conv is 1x1
    here (FReLU's is 3x3, padded) so that the map slides exactly, crop by crop."""
    crop = 12
    stride = 2

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)
        self.funnel = torch.nn.Conv2d(6, 6, 1, groups=6)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = self.conv(x)
        x = torch.max(x, self.bn(self.funnel(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_frelu_s_max_of_two_maps_imports_as_one_maximum_layer_and_slides(tmp_path, dynamo, rng):
    torch.manual_seed(0)
    model = onnx_zoo.randomize_batchnorm(Funnel())
    path = tmp_path / "funnel.onnx"
    export_at(model, path, dynamo=dynamo, opset=17)
    graph = check_imported_head(path, model, rng)
    assert len(graph.find("maximum")) == 1


@pytest.mark.parametrize("onnx_op,constants,op", [("Max", (0.0,), "relu"), ("Max", (-0.5,), "clip"),
                                                  ("Max", (-0.5, 0.25), "clip"), ("Min", (0.5,), "clip"),
                                                  ("Min", (0.5, -0.25), "clip")])
def test_max_or_min_of_a_map_and_numbers_is_a_clip(tmp_path, onnx_op, constants, op, rng):
    names = [f"c{i}" for i in range(len(constants))]
    nodes = [onnx.helper.make_node(onnx_op, ["x", *names], ["y"])]
    path = onnx_file(tmp_path / "max.onnx", nodes, {n: np.array(c, np.float32) for n, c in zip(names, constants)},
                     input_shape=(1, 3, 5, 7))
    graph = load_network(path, task="segmentation")
    assert [n.op for n in graph.layers()] == [op]
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=1e-6)


def test_max_of_three_maps_equals_onnxruntime_and_of_maps_of_different_shapes_is_refused(tmp_path, rng):
    helper = onnx.helper
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Max", ["x", "s", "n"], ["y"])]
    path = onnx_file(tmp_path / "max3.onnx", nodes, {}, input_shape=(1, 3, 5, 7))
    graph = load_network(path, task="segmentation")
    assert graph.find("maximum")
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(Model(graph).run(x), onnxruntime_scores(path, x), rtol=1e-6)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Max", ["x", "p"], ["y"], name="m")]
    path = onnx_file(tmp_path / "max_broadcast.onnx", nodes, {}, input_shape=(1, 3, 5, 7))
    with pytest.raises(GraphconvError, match=r"node 'm': Max of maps of different shapes 3x5x7, 3x1x1"):
        load_network(path, task="segmentation")
    nodes[1] = helper.make_node("Sum", ["x", "p"], ["y"], name="m")
    path = onnx_file(tmp_path / "sum_broadcast.onnx", nodes, {}, input_shape=(1, 3, 5, 7))
    with pytest.raises(GraphconvError, match=r"node 'm': Sum of maps of different shapes 3x5x7, 3x1x1; graphconv adds"):
        load_network(path, task="segmentation")
    nodes = [helper.make_node("ReduceMean", ["x"], ["p"], axes=[1]), helper.make_node("Sub", ["x", "p"], ["y"], name="m")]
    path = onnx_file(tmp_path / "sub_broadcast.onnx", nodes, {}, input_shape=(1, 3, 5, 7))
    with pytest.raises(GraphconvError, match=r"node 'm': Sub of maps of different shapes 3x5x7, 1x5x7; graphconv "
                                             r"subtracts maps of one shape \(no broadcasting\); one value per "
                                             r"position across the channels is a statistic over them, such as a "
                                             r"LayerNorm's mean"):
        load_network(path, task="segmentation")


def test_keras_relu6_as_tf2onnx_writes_it_max_then_min_is_a_clip_to_0_6(tmp_path, rng):
    helper = onnx.helper
    nodes = [helper.make_node("Max", ["x", "zero"], ["m"]), helper.make_node("Min", ["m", "six"], ["y"])]
    path = onnx_file(tmp_path / "relu6.onnx", nodes, {"zero": np.array(0, np.float32), "six": np.array(6, np.float32)},
                     input_shape=(1, 3, 5, 7))
    graph = load_network(path, task="segmentation")
    x = 4 * rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(Model(graph).run(x), np.clip(x, 0, 6))
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Min", ["x", "s"], ["y"], name="m")]
    path = onnx_file(tmp_path / "min_of_maps.onnx", nodes, {}, input_shape=(1, 3, 5, 7))
    with pytest.raises(GraphconvError, match=r"node 'm': Min of feature maps; graphconv takes the minimum of one map "
                                             r"and numbers"):
        load_network(path, task="segmentation")
