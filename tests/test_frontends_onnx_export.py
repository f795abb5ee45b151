"""`graphconv export`: a compiled network written as ONNX with dynamic N, H and W gives,
in onnxruntime, the map `graphconv run` gives, on images of any size."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from graphconv.compiler import compile_model  # noqa: E402
from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.frontends import load_network  # noqa: E402
from graphconv.frontends.onnx_export import EXPORT_OPSET, OnnxWriter, save_onnx, to_onnx_model  # noqa: E402
from graphconv.ir import Graph  # noqa: E402
from graphconv.model import Model  # noqa: E402
from graphconv.ops import all_ops, get_op  # noqa: E402
from graphconv.params import normalize_params  # noqa: E402

from conftest import SPECS  # noqa: E402
from nets import FLOOR_SPEC, UNPADDED, UNPADDED_BEFORE_UPSAMPLE  # noqa: E402

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def onnxruntime_run(model_proto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def full_map(model: Model, x: np.ndarray) -> np.ndarray:
    """The network's whole output (Model.run keeps only cells of whole crops)."""
    return model.executor("cpu").run(x)


@pytest.mark.parametrize("name", sorted(UNPADDED))
@pytest.mark.parametrize("size", [(40, 44), (57, 31)])
def test_exported_fcn_matches_graphconv_on_larger_images(write_spec, name, size, rng):
    model = compile_model(write_spec(UNPADDED[name]))
    proto = to_onnx_model(model.graph)
    x = rng.standard_normal((2, model.crop_shape[0], *size)).astype(np.float32)
    np.testing.assert_allclose(onnxruntime_run(proto, x), full_map(model, x), **TOLERANCE)


def test_exported_input_is_dynamic_in_batch_height_and_width():
    model = compile_model(SPECS / "lenet.yaml")
    proto = to_onnx_model(model.graph)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", model.crop_shape[0], "H", "W"]
    import graphconv
    assert (proto.producer_name, proto.producer_version) == ("graphconv", graphconv.__version__)


def test_dilated_output_stride_exports(rng):
    model = compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="dilate")
    x = rng.standard_normal((1, *model.crop_shape[:1], 45, 51)).astype(np.float32)
    np.testing.assert_allclose(onnxruntime_run(to_onnx_model(model.graph), x), full_map(model, x), **TOLERANCE)


@pytest.mark.parametrize("op,extra", [("maxpool", {}), ("avgpool", {"count_include_pad": True})])
def test_pooling_padded_as_wide_as_its_window_exports_through_an_explicit_pad(op, extra, rng):
    from graphconv.ops import get_op
    from graphconv.params import normalize_params

    opdef = get_op(op)
    params = normalize_params(opdef, dict(kernel_size=2, dilation=3, stride=1, padding=2, **extra))
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    writer = OnnxWriter()
    writer.write("y", opdef, params, {}, ["x"])
    helper = onnx.helper
    graph = helper.make_graph(writer.nodes, "pad", [helper.make_tensor_value_info("x", 1, list(x.shape))],
                              [helper.make_tensor_value_info("y", 1, None)], writer.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)])
    assert "Pad" in [n.op_type for n in proto.graph.node]
    np.testing.assert_allclose(onnxruntime_run(proto, x), opdef.reference(params, {}, [x]), **TOLERANCE)


def test_shift_and_stitch_is_refused_with_the_way_out():
    """LeNet pads nowhere and dilates: the dilated network's map is the same."""
    model = compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    with pytest.raises(GraphconvError, match="; compile with --stride-method dilate for the same map$"):
        to_onnx_model(model.graph)


STITCHED = """
name: stitched
input: {shape: [2, 19, 19]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: pool1, op: maxpool, kernel_size: 2, CEIL}
  - {name: conv2, op: conv, out_channels: 3, kernel_size: 3}
"""


def test_dilate_is_suggested_only_where_it_can_rewrite_the_network_and_the_same_map_only_unpadded(write_spec):
    """A ceil_mode pool hanging off the crop cannot be dilated (compile with dilate
    refuses it): export says so, with what can be exported instead. A padded network can
    be dilated, but its map is not shift-and-stitch's near the copies' borders."""
    hanging = write_spec(STITCHED.replace("CEIL", "ceil_mode: true"), "hanging.yaml")
    with pytest.raises(GraphconvError, match="layer 'pool1': a ceil_mode pool"):
        compile_model(hanging, output_stride=1, stride_method="dilate")
    model = compile_model(hanging, output_stride=1, stride_method="shift")
    with pytest.raises(GraphconvError) as refused:
        to_onnx_model(model.graph)
    assert ("--stride-method dilate cannot rewrite this network (layer 'pool1': a ceil_mode pool whose last window "
            "hangs off the crop cannot be dilated (the finer pool has no such window)): export it compiled without "
            "--output-stride") in refused.value.message
    assert "compile with --stride-method dilate" not in refused.value.message
    padded = write_spec(STITCHED.replace(", CEIL", ""), "padded.yaml")
    compile_model(padded, output_stride=1, stride_method="dilate")  # dilate can
    with pytest.raises(GraphconvError) as refused:
        to_onnx_model(compile_model(padded, output_stride=1, stride_method="shift").graph)
    assert "compile with --stride-method dilate for a network ONNX can hold (this one pads" in refused.value.message
    assert "same map" not in refused.value.message


def test_export_says_why_dilate_cannot_in_inspect_s_words(write_spec, monkeypatch):
    """Why dilate cannot rewrite a shift-and-stitch network is worked out in one place,
    strides.dilate_problem (what inspect prints), not in a copy of it in the exporter."""
    from graphconv import strides

    model = compile_model(write_spec(STITCHED.replace("CEIL", "ceil_mode: true"), "hanging.yaml"),
                          output_stride=1, stride_method="shift")
    monkeypatch.setattr(strides, "dilate_problem", lambda graph, stride: f"the one reason, at stride {stride}")
    with pytest.raises(GraphconvError, match=r"--stride-method dilate cannot rewrite this network \(the one reason, "
                                             r"at stride 1\)"):
        to_onnx_model(model.graph)


EXPORTABLE = [pytest.param(op, example, id=f"{op.name}-{i}")
              for op in all_ops() if op.onnx is not None for i, example in enumerate(op.examples)]


@pytest.mark.parametrize("opdef,example", EXPORTABLE)
def test_every_exportable_op_matches_its_reference_in_onnxruntime(opdef, example, rng):
    """Each op's ONNX form, on each of its examples, against its numpy reference."""
    from graphconv.params import normalize_params

    params = normalize_params(opdef, example.params)
    weights = opdef.seeded_weights(params, example.inputs, rng)
    xs = [rng.standard_normal((example.batch, *shape)).astype(np.float32) for shape in example.inputs]
    names = [f"x{i}" for i in range(len(xs))]
    writer = OnnxWriter()
    if opdef.name == "lrn" and params["size"] % 2 == 0:
        with pytest.raises(GraphconvError, match="even size"):
            writer.write("y", opdef, params, weights, names)
        return
    if opdef.name == "avgpool" and not params["count_include_pad"] and params["padding"][0] >= params["kernel_size"][0]:
        with pytest.raises(GraphconvError, match="narrower than its padding"):
            writer.write("y", opdef, params, weights, names)
        return
    if opdef.name == "fake_quantize" and params["qmax"] - params["qmin"] > 255:
        with pytest.raises(GraphconvError, match="needs integers wider than 8 bits, which ONNX's QuantizeLinear takes "
                                                 "from op set 21 on"):
            writer.write("y", opdef, params, weights, names)
        return
    writer.write("y", opdef, params, weights, names)
    helper = onnx.helper
    graph = helper.make_graph(
        writer.nodes, "one", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(x.shape))
                              for n, x in zip(names, xs)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], writer.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)])
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, dict(zip(names, xs)))[0]
    np.testing.assert_allclose(out, opdef.reference(params, weights, xs), **TOLERANCE)


def test_cli_export_then_onnxruntime(tmp_path, rng):
    folder = tmp_path / "fcn"
    compiled = subprocess.run([sys.executable, "-m", "graphconv", "compile", SPECS / "lenet.yaml", "-o", folder],
                              capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    out = tmp_path / "fcn.onnx"
    result = subprocess.run([sys.executable, "-m", "graphconv", "export", folder, "-o", out],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"note: {out} states no preprocess (the model has none" in result.stderr  # lenet states none
    stated = subprocess.run([sys.executable, "-m", "graphconv", "export", SPECS / "digits.yaml", "-o",
                             tmp_path / "digits.onnx"], capture_output=True, text=True)
    assert stated.returncode == 0 and "states no preprocess" not in stated.stderr, stated.stderr
    model = Model.load(folder)
    x = rng.standard_normal((1, model.crop_shape[0], 64, 80)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_map = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(onnx_map, full_map(model, x), **TOLERANCE)
    before = out.read_bytes()
    again = subprocess.run([sys.executable, "-m", "graphconv", "export", out, "-o", out], capture_output=True,
                           text=True)
    assert again.returncode == 2 and "-o is the model being exported" in again.stderr
    assert out.read_bytes() == before  # the user's model is not replaced by its own export


def test_an_uncompiled_classifier_exports_as_it_runs_taking_its_crop_and_returning_vectors(tmp_path, rng):
    """A spec exported as written (fc layers) declared dynamic H and W, which its fc
    cannot take (onnxruntime failed on another size), and returned (N, K, 1, 1) where
    graphconv and the ONNX file it came from return (N, K)."""
    from graphconv.frontends import load_network

    classifier = Model(load_network(SPECS / "lenet.yaml"))
    save_onnx(classifier.graph, tmp_path / "lenet.onnx")
    session = ort.InferenceSession(str(tmp_path / "lenet.onnx"), providers=["CPUExecutionProvider"])
    c, h, w = classifier.crop_shape
    assert session.get_inputs()[0].shape == ["N", c, h, w] and session.get_outputs()[0].shape == ["N", 10]
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    scores = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(scores, classifier.run(x), **TOLERANCE)
    back = Model(load_network(tmp_path / "lenet.onnx"))
    np.testing.assert_allclose(back.run(x), scores, **TOLERANCE)
    fcn = compile_model(SPECS / "lenet.yaml")  # the compiled network still takes any size
    save_onnx(fcn.graph, tmp_path / "fcn.onnx")
    assert ort.InferenceSession(str(tmp_path / "fcn.onnx"), providers=["CPUExecutionProvider"]).get_inputs()[0].shape \
        == ["N", c, "H", "W"]


def test_an_uncompiled_pooled_classifier_exports_taking_any_size_and_states_no_cells(write_spec, tmp_path, rng):
    """A global pool takes any size (one vector pooled over it, as graphconv runs it), so
    the input is dynamic; the export stated a map's cells (`graphconv.cells`) for its
    (N, K) output, which has none."""
    spec = write_spec("""
    name: pooled
    input: {shape: [3, 12, 12]}
    layers:
      - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
      - {name: gap, op: globalavgpool}
      - {name: flat, op: flatten}
      - {name: fc, op: fc, out_features: 3}
    """)
    classifier = Model(load_network(spec))
    save_onnx(classifier.graph, tmp_path / "pooled.onnx")
    exported = onnx.load(str(tmp_path / "pooled.onnx"))
    assert "graphconv.cells" not in {p.key for p in exported.metadata_props}
    x = rng.standard_normal((2, 3, 20, 17)).astype(np.float32)
    np.testing.assert_allclose(onnxruntime_run(exported, x), classifier.run(x), **TOLERANCE)
    assert "graphconv.cells" in {p.key for p in to_onnx_model(compile_model(spec).graph).metadata_props}


SE_SEGMENTATION = """
name: seg
task: segmentation
input: {shape: [3, 16, 16]}
layers:
  - {name: c1, op: conv, out_channels: 8, kernel_size: 3, padding: 1}
  - {name: gp, op: globalavgpool}
  - {name: f1, op: fc, out_features: 4}
  - {name: f2, op: fc, out_features: 8}
  - {name: g, op: sigmoid}
  - {name: m, op: mul, inputs: [c1, g]}
  - {name: head, op: conv, out_channels: 4, kernel_size: 1}
"""


def test_fc_layers_on_a_pooled_vector_keep_the_export_dynamic_and_its_output_a_map(write_spec, rng):
    """A segmentation network whose squeeze-and-excitation gate is made of fc layers
    returns maps of any size: its export stays (N, C, H, W) -> (N, K, rows, cols) (taking
    it for a classifier as written flattened a map, and the checker refused the file)."""
    model = Model.load(write_spec(SE_SEGMENTATION))
    session = ort.InferenceSession(to_onnx_model(model.graph).SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["N", 3, "H", "W"]
    assert session.get_outputs()[0].shape == ["N", 4, "rows", "cols"]
    x = rng.standard_normal((1, 3, 20, 22)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], model.run(x), **TOLERANCE)


PYRAMID = """
name: pyramid
task: segmentation
input: {shape: [3, 16, 16]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: down, op: conv, out_channels: 4, kernel_size: 3, stride: 2, padding: 1}
  - {name: up, op: upsample, factor: 2}
  - {name: sum, op: add, inputs: [c1, up]}
"""


def test_a_network_that_takes_only_multiples_of_its_stride_exports_with_dynamic_sizes(write_spec, rng):
    """Its sum of a map and its upsampled half refuses odd sides: the export, probing an
    odd size only, fixed H and W at the crop, and onnxruntime refused 32x48."""
    model = Model.load(write_spec(PYRAMID))
    session = ort.InferenceSession(to_onnx_model(model.graph).SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["N", 3, "H", "W"]
    x = rng.standard_normal((1, 3, 32, 48)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], model.run(x), **TOLERANCE)


def test_cli_export_of_a_shift_and_stitch_model_is_exit_2_and_writes_nothing(tmp_path):
    folder = tmp_path / "s"
    subprocess.run([sys.executable, "-m", "graphconv", "compile", SPECS / "lenet.yaml", "-o", folder,
                    "--output-stride", "2", "--stride-method", "shift"], check=True, capture_output=True)
    result = subprocess.run([sys.executable, "-m", "graphconv", "export", folder, "-o", tmp_path / "s.onnx"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--stride-method dilate" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "s.onnx").exists()


def test_save_onnx_writes_a_loadable_file(tmp_path):
    model = compile_model(SPECS / "lenet.yaml")
    save_onnx(model.graph, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))


@pytest.mark.parametrize("arch", ["resnet", "densenet", "googlenet", "mobilenetv2", "convnext", "shufflenet"])
def test_imported_classifier_compiled_and_exported_runs_in_onnxruntime(arch, tmp_path, rng):
    """The whole round trip a user makes: PyTorch -> ONNX -> graphconv compile (batch norm
    folded, global pooling made dense) -> ONNX -> onnxruntime on a larger image."""
    pytest.importorskip("torch")
    import onnx_zoo

    path = tmp_path / f"{arch}.onnx"
    onnx_zoo.export(onnx_zoo.build(arch), path, fold=False)
    model = compile_model(path)
    x = rng.standard_normal((1, 3, 90, 75)).astype(np.float32)
    np.testing.assert_allclose(onnxruntime_run(to_onnx_model(model.graph), x), full_map(model, x), **TOLERANCE)


def test_without_the_onnx_package_the_message_says_how_to_get_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # an import of it fails as a missing package's does
    from graphconv.frontends.onnx import require_onnx
    with pytest.raises(GraphconvError, match=r"pip install 'graphconv\[onnx\]'"):
        require_onnx()


def test_a_network_padded_unevenly_exports_its_pad_layers(write_spec, rng):
    """Pad layers (zeros before a stride-2 conv, -inf before a max pool) are Pad nodes:
    onnxruntime gives graphconv's map on images of other sizes, dilated too."""
    spec = write_spec("""
        input: {shape: [3, 16, 14]}
        layers:
          - {name: c1.pad, op: pad, padding: [0, 0, 1, 1]}
          - {name: c1, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
          - {name: p1.pad, op: pad, padding: [1, 0, 0, 1], value: -.inf}
          - {name: p1, op: maxpool, kernel_size: 2}
          - {name: fc, op: fc, out_features: 3}
        """)
    for options in ({}, {"output_stride": 2, "stride_method": "dilate"}):
        model = compile_model(spec, **options)
        proto = to_onnx_model(model.graph)
        assert [n.op_type for n in proto.graph.node].count("Pad") == 2
        x = rng.standard_normal((2, 3, 29, 23)).astype(np.float32)
        np.testing.assert_allclose(onnxruntime_run(proto, x), full_map(model, x), **TOLERANCE)


def test_an_exported_model_states_its_crop_preprocess_labels_and_task_and_imports_back_with_them(tmp_path, rng):
    """ONNX's dynamic H and W lose the training crop, and ONNX has no place for the
    preprocess or the class names: graphconv writes them as metadata_props and reads them
    back, so the digits classifier exported and imported needs no --crop-size, --scale
    or --labels, and its compiled form runs from the .onnx on a page as from its folder."""
    from graphconv.cli import main
    from graphconv.frontends import load_network

    original = Model.load(SPECS / "digits.yaml")
    assert main(["export", str(SPECS / "digits.yaml"), "-o", str(tmp_path / "digits.onnx")]) == 0
    assert main(["import", str(tmp_path / "digits.onnx"), "-o", str(tmp_path / "back.yaml")]) == 0
    back = Model.load(tmp_path / "back.yaml")
    assert back.crop_shape == original.crop_shape
    for key in ("preprocess", "labels"):
        assert back.graph.meta[key] == original.graph.meta[key]
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(back.run(x), original.run(x), rtol=1e-6, atol=1e-7)
    compiled = compile_model(SPECS / "digits.yaml")
    compiled.graph.meta["task"] = "segmentation"  # stated, and read back, like the rest
    save_onnx(compiled.graph, tmp_path / "fcn.onnx")
    graph = load_network(tmp_path / "fcn.onnx")
    assert graph.meta["task"] == "segmentation" and graph.input_shape == (1, 28, 28)
    assert graph.meta["labels"] == original.graph.meta["labels"]
    assert graph.meta["compiled"] == {"passes": compiled.graph.meta["compiled"]["passes"]}


@pytest.mark.parametrize("key, value", [("graphconv.crop", "[0, 28]"), ("graphconv.labels", "[1, 2]"),
                                        ("graphconv.preprocess", "{\"scale\": \"x\"}"), ("graphconv.task", "nope"),
                                        ("graphconv.crop", "not json"),
                                        # names a labels file would refuse: printed raw, then a compiled
                                        # model's labels file graphconv could not read back
                                        ("graphconv.labels",
                                         json.dumps(["\u001b[31mred"] + [f"d{i}" for i in range(9)])),
                                        ("graphconv.labels", json.dumps([" "] + [f"d{i}" for i in range(9)])),
                                        ("graphconv.compiled", "{\"passes\": 3}")])
def test_metadata_that_graphconv_did_not_write_is_refused(tmp_path, key, value):
    from graphconv.frontends import load_network

    model = to_onnx_model(compile_model(SPECS / "digits.yaml").graph)
    onnx.helper.set_model_props(model, {key: value})
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(GraphconvError, match="odd.onnx"):
        load_network(tmp_path / "odd.onnx")


def test_a_graphconv_export_s_stated_crop_is_its_crop_whatever_size_its_input_is_fixed_at(tmp_path):
    """An export fixed at one size (export --input-size, or a static-shape tool's edit)
    holds the network compiled from the crop it states: read with the fixed size as its
    crop, its cells were placed and kept as 40x44 crops'. It was once passed on as if
    --crop-size had been given, and refused as a conflict with the fixed size; a
    --crop-size given still wins."""
    from graphconv.frontends import load_network

    model = to_onnx_model(compile_model(SPECS / "digits.yaml").graph)
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (40, 44)):
        dim.ClearField("dim_param")
        dim.dim_value = size
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    assert load_network(tmp_path / "fixed.onnx").input_shape == (1, 28, 28)
    assert load_network(tmp_path / "fixed.onnx", crop_size=(40, 44)).input_shape == (1, 40, 44)


def test_export_replaces_only_an_onnx_file_graphconv_exported(tmp_path):
    """`import resnet.onnx`, compile, then `export ... -o resnet.onnx` replaced the user's
    trained model with graphconv's export of it, exit 0."""
    from graphconv.cli import main

    users = tmp_path / "theirs.onnx"
    theirs = to_onnx_model(compile_model(SPECS / "lenet.yaml").graph)
    del theirs.metadata_props[:]
    theirs.doc_string = "exported by pytorch"
    onnx.save(theirs, str(users))
    before = users.read_bytes()
    assert main(["export", str(SPECS / "digits.yaml"), "-o", str(users)]) == 2
    assert users.read_bytes() == before
    (tmp_path / "notes.onnx").write_text("not a model")
    assert main(["export", str(SPECS / "digits.yaml"), "-o", str(tmp_path / "notes.onnx")]) == 2
    for _ in range(2):  # graphconv's own export, written and written again
        assert main(["export", str(SPECS / "digits.yaml"), "-o", str(tmp_path / "ours.onnx")]) == 0


# ---- every exportable op read back by graphconv's own ONNX importer ----------------------------

EVERY = "every example"


def _example_key(op: str, params: dict | str) -> tuple[str, str]:
    """(op, its example's params as written in ops.py), stable however the examples are
    ordered; EVERY for all of the op's examples."""
    return op, params if params == EVERY else repr(sorted(params.items()))


# The op examples that cannot round-trip, keyed by their params (EVERY: all the op's):
# where they are refused, "export" or "import", and why. Every other example of every op
# with an `onnx=` form must come back as it went; each listed one must still be refused
# where it says (test_what_cannot_round_trip_is_refused_where_it_says), so one that
# starts to round-trip, or an entry no example matches any more, fails.
NO_ROUND_TRIP = {
    _example_key("lrn", dict(size=2, alpha=0.5, beta=1.0)): (
        "export", "an even size has no ONNX form: export refuses it (tested above)"),
    _example_key("avgpool", dict(kernel_size=2, dilation=[4, 3], stride=1, padding=[2, 1], count_include_pad=False)): (
        "export", "a window narrower than its padding without counting it has no ONNX form that onnxruntime runs: "
                  "export refuses it (tested above)"),
    _example_key("fake_quantize", dict(scale=1e-4, qmin=-32768, qmax=32767)): (
        "export", "a 16-bit range needs op set 21's QuantizeLinear: export refuses it (tested above)"),
    **{_example_key("softmax", dict(groups=groups)): (
        "import", "a softmax over groups of channels exports as Reshape, Softmax, Reshape, a view the importer does "
                  "not recognise (it reads the views exporters write for known blocks)") for groups in (2, 3)},
}


def no_round_trip(opdef, example) -> tuple[str, str] | None:
    """NO_ROUND_TRIP's (where, why) for this example of `opdef`, or None."""
    return (NO_ROUND_TRIP.get(_example_key(opdef.name, example.params))
            or NO_ROUND_TRIP.get(_example_key(opdef.name, EVERY)))

# Layers that follow the op's, by op: whose ONNX form can be no node at all (identity,
# dropout, and examples of a pad of zeros, an upsample by 1, a slice of every channel) is
# its input, which the importer refuses as a network of no layers, so a sign-keeping
# leaky_relu follows.
FOLLOWED_BY = {op: ("leaky_relu", {"alpha": 0.5}) for op in ("identity", "dropout", "pad", "upsample", "slice_channels")}


def _stride_to(size: int, target: int) -> int:
    """The stride of a 1-wide window that takes `size` cells to `target`."""
    return next(s for s in range(1, size + 1) if (size - 1) // s + 1 == target)


def one_layer_graph(opdef, example, params: dict, weights: dict, rng) -> Graph:
    """The example's layer behind the graph's one input (and before FOLLOWED_BY's layer).
    An op of several inputs reads channel slices of one input of all their channels,
    pooled to each input's size (a strided 1 x 1 avgpool, or the global average for a
    1 x 1 input), since an ONNX classifier has one image input."""
    shapes = [tuple(s) for s in example.inputs]
    height, width = max(s[1] for s in shapes), max(s[2] for s in shapes)
    graph = Graph("one", "x", shapes[0] if len(shapes) == 1 else (sum(s[0] for s in shapes), height, width))
    sources, start = [], 0
    for i, (channels, h, w) in enumerate(shapes if len(shapes) > 1 else []):
        source = graph.add(f"in{i}", "slice_channels", ["x"], dict(start=start, stop=start + channels))
        if (h, w) == (1, 1) != (height, width):
            source = graph.add(f"in{i}_pooled", "globalavgpool", [source])
        elif (h, w) != (height, width):
            source = graph.add(f"in{i}_pooled", "avgpool", [source], dict(
                kernel_size=1, stride=(_stride_to(height, h), _stride_to(width, w))))
        sources.append(source)
        start += channels
    graph.output = graph.add("layer", opdef.name, sources or ["x"], params, weights)
    if opdef.name in FOLLOWED_BY:
        op, after = FOLLOWED_BY[opdef.name]
        after_def = get_op(op)
        shape = opdef.shape(params, shapes)
        graph.output = graph.add("after", op, ["layer"], after, after_def.seeded_weights(
            normalize_params(after_def, after), [shape], rng))
    return graph


@pytest.mark.parametrize("opdef,example", EXPORTABLE)
def test_every_exportable_op_reads_back_through_the_onnx_importer(opdef, example, tmp_path, rng):
    """Export the op's example as an ONNX file, import it with graphconv's importer and run
    both through the ops' numpy references: an importer converter that is missing or reads
    an attribute wrong fails here by the op's name."""
    from graphconv.frontends import load_network
    from graphconv.runtime import run_reference

    if no_round_trip(opdef, example):
        pytest.skip(no_round_trip(opdef, example)[1])
    params = normalize_params(opdef, example.params)
    weights = opdef.seeded_weights(params, example.inputs, rng)
    graph = one_layer_graph(opdef, example, params, weights, rng)
    save_onnx(graph, tmp_path / "one.onnx")
    imported = load_network(tmp_path / "one.onnx")
    x = rng.standard_normal((example.batch, *graph.input_shape)).astype(np.float32)
    np.testing.assert_allclose(run_reference(imported, x), run_reference(graph, x), **TOLERANCE)


@pytest.mark.parametrize("key", sorted(NO_ROUND_TRIP), ids=lambda key: f"{key[0]}{key[1]}".replace(" ", ""))
def test_what_cannot_round_trip_is_refused_where_it_says(key, tmp_path, rng):
    """Each NO_ROUND_TRIP entry names examples that exist, and each of them is still
    refused (a GraphconvError) by the export or the importer, where the entry says: one
    that starts to round-trip, or whose examples were changed, is noticed, not skipped."""
    from graphconv.frontends import load_network

    where, _ = NO_ROUND_TRIP[key]
    opdef = get_op(key[0])
    examples = [e for e in opdef.examples if key in (_example_key(opdef.name, e.params), (opdef.name, EVERY))]
    assert examples, f"NO_ROUND_TRIP lists {key}, which no example of {opdef.name} has any more: remove it"
    for example in examples:
        params = normalize_params(opdef, example.params)
        graph = one_layer_graph(opdef, example, params, opdef.seeded_weights(params, example.inputs, rng), rng)
        path = tmp_path / f"{opdef.name}.onnx"
        if where == "export":
            with pytest.raises(GraphconvError):
                save_onnx(graph, path)
        else:
            save_onnx(graph, path)
            with pytest.raises(GraphconvError):
                load_network(path)


@pytest.mark.parametrize("spec", ["lenet.yaml", "tinydag.yaml"])
def test_an_export_imported_again_keeps_its_layers_names(spec, tmp_path):
    """Layers without weights came back as `pool1_MaxPool_5`: the importer names them
    after their ONNX node, which the export named after the op."""
    model = compile_model(SPECS / spec)
    save_onnx(model.graph, tmp_path / "m.onnx")
    again = compile_model(tmp_path / "m.onnx")
    assert [node.name for node in again.graph.layers()] == [node.name for node in model.graph.layers()]


@pytest.mark.parametrize("size", [(64, 64), (70, 53), (37, 45)])
def test_an_exported_space_to_depth_stem_imports_back_and_slides_alike(tmp_path, rng, size):
    """TResNet's stem: its export trims H and W to multiples of the block with a Slice
    along axes 2 and 3 before SpaceToDepth, which the importer refused as a slice of
    something other than channels, so `graphconv run fcn.onnx` could not run graphconv's
    own export. Read back, it is the same map as the compiled model's, and onnxruntime's,
    on sizes that are not multiples of the block too."""
    pytest.importorskip("torch")
    import graphconv
    import onnx_zoo

    onnx_zoo.export(onnx_zoo.build("tresnet"), tmp_path / "tresnet.onnx")
    model = compile_model(tmp_path / "tresnet.onnx")
    save_onnx(model.graph, tmp_path / "fcn.onnx")
    again = graphconv.load(tmp_path / "fcn.onnx")
    assert [n.op for n in again.graph.layers() if n.op == "space_to_depth"] == ["space_to_depth"] * 2
    x = rng.standard_normal((1, 3, *size)).astype(np.float32)
    expected = full_map(model, x)
    np.testing.assert_allclose(full_map(again, x), expected, **TOLERANCE)
    np.testing.assert_allclose(onnxruntime_run(onnx.load(str(tmp_path / "fcn.onnx")), x), expected, **TOLERANCE)


# ---- the input sizes an export states, for runtimes that check none ----------------------------

UNET = """
name: unet
task: segmentation
input: {shape: [2, 16, 16]}
layers:
  - {name: skip, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: pool, op: maxpool, kernel_size: 2}
  - {name: deep, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: up, op: upsample, factor: 2}
  - {name: cat, op: concat, inputs: [up, skip]}
  - {name: head, op: conv, out_channels: 3, kernel_size: 1}
"""


def stated(proto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}


def export_cli(tmp_path, capsys, model_path) -> tuple[object, str]:
    """`graphconv export` in this process: the file it wrote, and what it said on stderr."""
    from graphconv.cli import main

    out = tmp_path / "fcn.onnx"
    assert main(["export", str(model_path), "-o", str(out)]) == 0
    return onnx.load(str(out)), capsys.readouterr().err


def test_a_segmentation_network_that_pads_states_how_to_pad_and_following_it_gives_graphconv_s_map(
        write_spec, tmp_path, capsys, rng):
    """graphconv pads a 17x19 image to 18x20 for a U-Net and cuts the map back; the
    export stated nothing, so onnxruntime failed in the Concat (or, for a DeepLab-like
    net, returned a misaligned map). The file states the rule (no crop minimum: a
    segmentation network takes smaller images), export notes it, and padding as stated
    gives graphconv's map."""
    spec = write_spec(UNET, "unet.yaml")
    proto, err = export_cli(tmp_path, capsys, spec)
    sizes = json.loads(stated(proto)["graphconv.input_sizes"])
    assert sizes["sides"] == {"period": [2, 2], "remainders": [[0], [0]]} and sizes["pad_to_fit"] is True
    assert "at_least" not in sizes
    assert ("input sizes: unet gives one label per pixel only on images whose height and width are multiples of "
            "2x2 pixels: pad each image with zeros at the bottom and right") in proto.doc_string
    assert "fcn.onnx states its input sizes" in err and "pad each image with zeros at the bottom and right" in err
    x = rng.standard_normal((1, 2, 17, 19)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)))
    expected = Model.load(spec).run(x)
    np.testing.assert_allclose(onnxruntime_run(proto, padded)[:, :, :17, :19], expected, **TOLERANCE)


def test_branches_that_meet_on_some_sides_are_stated_with_the_crop_minimum(write_spec, tmp_path, capsys):
    """An HRNet-like network failed in onnxruntime with a broadcast error on sides its
    branches do not meet on, and one smaller than the crop could crash it: the file
    states both, and export notes the sides (the crop alone goes without a note)."""
    folder = tmp_path / "m"
    compile_model(write_spec(UNPADDED_BEFORE_UPSAMPLE, "branches.yaml")).save(folder)
    proto, err = export_cli(tmp_path, capsys, folder)
    sizes = json.loads(stated(proto)["graphconv.input_sizes"])
    assert sizes["at_least"] == [21, 21] and "pad_to_fit" not in sizes
    assert sizes["sides"] == {"period": [2, 2], "remainders": [[1], [1]]}
    assert "input sizes: at least 21x21 pixels" in proto.doc_string
    assert "unpadded's branches meet only on images of height 2k+1 and width 2k+1 pixels" in proto.doc_string
    assert "resize or crop each image to such a size" in err and "pad each image" not in err


def test_a_plain_classifier_states_only_its_crop_minimum_and_export_says_nothing_of_sizes(tmp_path, capsys):
    folder = tmp_path / "m"
    compile_model(SPECS / "lenet.yaml").save(folder)
    proto, err = export_cli(tmp_path, capsys, folder)
    _, hc, wc = Model.load(folder).crop_shape
    sizes = json.loads(stated(proto)["graphconv.input_sizes"])
    assert sizes == {"at_least": [hc, wc], "rules": [f"at least {hc}x{wc} pixels (the crop; graphconv refuses "
                                                     "smaller images)"]}
    assert "input sizes" not in err
    assert "pad each image" not in proto.doc_string and "meet only" not in proto.doc_string


def test_a_classifier_fixed_at_its_crop_states_no_size_rule():
    """Its input's fixed H and W say it already."""
    proto = to_onnx_model(Model.load(SPECS / "lenet.yaml").graph)
    assert "graphconv.input_sizes" not in stated(proto) and "input sizes" not in proto.doc_string


@pytest.mark.parametrize("value", ['{"at_least": [0, 4]}', '{"sides": {"period": [2, 2], "remainders": [[2], [0]]}}',
                                   '{"pad_to_fit": false}', '{"rules": "pad"}', '[21, 21]'])
def test_a_stated_size_rule_of_another_shape_is_refused(tmp_path, value):
    from graphconv.frontends import load_network

    proto = to_onnx_model(compile_model(SPECS / "lenet.yaml").graph)
    onnx.helper.set_model_props(proto, {**stated(proto), "graphconv.input_sizes": '{"at_least": [28, 28], "other": 1}'})
    onnx.save(proto, str(tmp_path / "later.onnx"))
    load_network(tmp_path / "later.onnx")  # a key a later version adds is let be
    onnx.helper.set_model_props(proto, {**stated(proto), "graphconv.input_sizes": value})
    onnx.save(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(GraphconvError, match="its metadata 'graphconv.input_sizes' is not what graphconv's export"):
        load_network(tmp_path / "m.onnx")


def test_an_export_notes_the_dilated_pools_tensorrt_refuses(tmp_path, capsys):
    """--stride-method dilate makes a MaxPool with dilations, which onnxruntime runs and
    TensorRT's ONNX parser refuses: export says so, and what to export for TensorRT."""
    folder = tmp_path / "m"
    compile_model(SPECS / "lenet.yaml", output_stride=1, stride_method="dilate").save(folder)
    proto, err = export_cli(tmp_path, capsys, folder)
    assert any(n.op_type == "MaxPool" and any(a.name == "dilations" and list(a.ints) != [1, 1] for a in n.attribute)
               for n in proto.graph.node)
    assert ("fcn.onnx has MaxPool nodes with dilations (from --output-stride's dilate method): onnxruntime runs "
            "them, but TensorRT's ONNX parser takes pools without dilation only; for TensorRT, export the network "
            "compiled without --output-stride") in err
    folder = tmp_path / "full"
    compile_model(SPECS / "lenet.yaml").save(folder)
    assert "TensorRT" not in export_cli(tmp_path, capsys, folder)[1]


def test_the_shift_and_stitch_refusal_tells_that_dilated_pools_do_not_suit_tensorrt():
    model = compile_model(SPECS / "lenet.yaml", output_stride=1, stride_method="shift")
    with pytest.raises(GraphconvError, match="compile with --stride-method dilate for the same map; its pools are then "
                                             "dilated, which onnxruntime runs but TensorRT's ONNX parser refuses"):
        to_onnx_model(model.graph)


def test_seeded_weights_are_stated_and_running_the_export_says_so(tmp_path, capsys):
    """The export of a network with seeded weights said so in its doc string only:
    `graphconv run fcn.onnx` ran it without a word."""
    from graphconv.cli import main

    folder = tmp_path / "m"
    compile_model(SPECS / "lenet.yaml").save(folder)
    proto, _ = export_cli(tmp_path, capsys, folder)
    assert stated(proto)["graphconv.seeded_weights"] == "true"
    assert Model.load(tmp_path / "fcn.onnx").graph.meta["seeded_weights"] is True
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    assert main(["run", str(tmp_path / "fcn.onnx"), "--input", str(tmp_path / "x.npy")]) == 0
    assert "deterministic seeded (random)" in capsys.readouterr().err
    trained = Model.load(SPECS / "lenet.yaml")
    trained.graph.meta.pop("seeded_weights")
    assert "graphconv.seeded_weights" not in stated(to_onnx_model(trained.graph))


def _logits_onnx(path, rng, names: tuple[str, str] = ("input", "logits")):
    """A PyTorch-like export: conv -> relu -> flatten -> Gemm, its input and output named `names`."""
    helper = onnx.helper
    image, logits = names
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 4 * 10 * 10)).astype(np.float32)
    nodes = [helper.make_node("Conv", [image, "conv.weight"], ["c"], name="/conv/Conv"),
             helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
             helper.make_node("Flatten", ["r"], ["f"], axis=1, name="/Flatten"),
             helper.make_node("Gemm", ["f", "fc.weight"], [logits], transB=1, name="/fc/Gemm")]
    graph = helper.make_graph(nodes, "logits", [helper.make_tensor_value_info(image, onnx.TensorProto.FLOAT,
                                                                              ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, ["N", 5])],
                              [onnx.numpy_helper.from_array(w, "conv.weight"),
                               onnx.numpy_helper.from_array(fc, "fc.weight")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("names,recorded", [(("input", "logits"), "output_name: logits"),
                                            (("input:0", "probs:0"), "input_name: input:0")])
def test_an_imported_network_s_input_and_output_keep_their_names_through_compile_and_export(tmp_path, rng, names,
                                                                                          recorded):
    """A deployment's sess.run(["logits"], ...) failed on the export: its output was named
    after graphconv's last layer ('fc', 'h.3', 'h.1_crop_cells'). tf2onnx's 'input:0' is
    no layer name graphconv keeps ('input_0'): the export was fed {"input_0": x}, though
    the model it came from, and the docs, said {"input:0": x}."""
    from conftest import graphconv_in_process

    source = _logits_onnx(tmp_path / "m.onnx", rng, names=names)
    assert graphconv_in_process("compile", source, "-o", tmp_path / "fcn").returncode == 0
    assert recorded in (tmp_path / "fcn" / "model.yaml").read_text()
    result = graphconv_in_process("export", tmp_path / "fcn", "-o", tmp_path / "fcn.onnx")
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(tmp_path / "fcn.onnx"), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 3, 30, 21)).astype(np.float32)
    image, output = names
    (scores,) = session.run([output], {image: x})
    np.testing.assert_allclose(scores, full_map(Model.load(tmp_path / "fcn"), x), **TOLERANCE)


def test_a_layer_added_after_the_imported_output_keeps_its_own_name_in_the_export(tmp_path, rng):
    """The imported spec edited as the docs invite, a softmax appended after 'logits': the
    export named the softmax's probabilities 'logits'. The name stays with the layer that
    gave it; the softmax's output is named after the softmax."""
    from conftest import graphconv_in_process

    source = _logits_onnx(tmp_path / "m.onnx", rng, names=("input", "logits"))
    assert graphconv_in_process("import", source, "-o", tmp_path / "net.yaml").returncode == 0
    spec = (tmp_path / "net.yaml").read_text()
    assert "output_name: logits" in spec and "output_layer: " in spec
    (tmp_path / "net.yaml").write_text(spec + "  - {name: prob, op: softmax}\n")
    assert graphconv_in_process("compile", tmp_path / "net.yaml", "-o", tmp_path / "fcn").returncode == 0
    assert graphconv_in_process("export", tmp_path / "fcn", "-o", tmp_path / "fcn.onnx").returncode == 0
    exported = onnx.load(str(tmp_path / "fcn.onnx"))
    assert [o.name for o in exported.graph.output] == ["prob"]
    probabilities = onnxruntime_run(exported, rng.standard_normal((1, 3, 30, 21)).astype(np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_a_spec_s_export_names_its_output_after_its_last_layer():
    spec = to_onnx_model(compile_model(SPECS / "lenet.yaml").graph)
    assert [o.name for o in spec.graph.output] == [compile_model(SPECS / "lenet.yaml").graph.output.name]


def test_the_export_s_ir_version_is_the_least_its_opset_needs():
    """It was whatever the installed onnx package stamps (IR 14 with onnx 1.23), which
    onnxruntime 1.20 refuses, though op set 19 needs only IR 9."""
    model = to_onnx_model(compile_model(SPECS / "lenet.yaml").graph)
    opsets = [onnx.helper.make_opsetid("", EXPORT_OPSET)]
    assert model.ir_version == onnx.helper.find_min_ir_version_for(opsets) <= 9


def test_an_export_with_a_global_pool_converts_down_to_op_set_17_and_runs_the_same(write_spec, rng):
    """Older TensorRT takes op set 17: onnx's version converter refused every export with
    a global pool (its window AveragePool carried dilations [1, 1], which AveragePool has
    from op set 19 only)."""
    spec = write_spec("""
    name: pooled
    input: {shape: [3, 12, 12]}
    layers:
      - {name: c1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
      - {name: mp, op: maxpool, kernel_size: 2}
      - {name: gap, op: globalavgpool}
      - {name: flat, op: flatten}
      - {name: fc, op: fc, out_features: 3}
    """)
    exported = to_onnx_model(compile_model(spec).graph)
    older = onnx.version_converter.convert_version(exported, 17)
    onnx.checker.check_model(older, full_check=True)
    assert [o.version for o in older.opset_import if o.domain in ("", "ai.onnx")] == [17]
    x = rng.standard_normal((2, 3, 30, 26)).astype(np.float32)
    np.testing.assert_allclose(onnxruntime_run(older, x), onnxruntime_run(exported, x), rtol=1e-6, atol=1e-6)


def test_an_export_states_where_its_cells_stand_and_which_graphconv_keeps(write_spec, rng):
    """A deployment could not place the exported map's cells on the image, nor tell why it
    had a row or column more than graphconv's map: the file says both."""
    fcn = compile_model(write_spec(FLOOR_SPEC))  # each cell reads 36x36 of its 37x37 crop
    model = to_onnx_model(fcn.graph)
    cells = json.loads({p.key: p.value for p in model.metadata_props}["graphconv.cells"])
    (_, hc, wc), (sy, sx) = fcn.crop_shape, fcn.output_stride
    assert cells["cell_step_yx"] == [sy, sx] and cells["cell_area_hw"] == [hc, wc]
    assert cells["first_cell_centre_yx"] == [hc / 2, wc / 2]
    assert f"rows 0 .. (H - {hc}) // {sy} and columns 0 .. (W - {wc}) // {sx}" in cells["map_kept"]
    x = rng.standard_normal((1, 1, 38, 41)).astype(np.float32)
    exported = onnxruntime_run(model, x)
    rows, cols = (38 - hc) // sy + 1, (41 - wc) // sx + 1
    assert exported.shape[2:] != (rows, cols)  # the export computes past the last whole crop here
    np.testing.assert_allclose(exported[:, :, :rows, :cols], fcn.run(x), **TOLERANCE)


def test_a_model_over_onnx_s_file_limit_is_refused_in_one_line_before_it_is_built(tmp_path, monkeypatch):
    """A 2.2 GB model died in protobuf's EncodeError, a traceback, after 30 s and 8.5 GB."""
    from conftest import graphconv_in_process
    from graphconv.frontends import onnx_export

    monkeypatch.setattr(onnx_export, "ONNX_FILE_LIMIT", 1000)
    monkeypatch.setattr(onnx_export, "to_onnx_model",
                        lambda graph, checked=True: pytest.fail("built before the size check"))
    result = graphconv_in_process("export", SPECS / "lenet.yaml", "-o", tmp_path / "m.onnx")
    assert result.returncode == 2 and "over ONNX's 2 GiB limit for one file" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.onnx").exists()


def test_an_export_that_would_pass_the_memory_limit_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """A 0.92 GB model peaked at 7.4 GB exporting (the weights as TensorProtos, copied into
    the graph, copied into the model, serialised twice, parsed by the checker), whatever
    --memory-limit said: it now holds EXPORT_COPIES copies and is refused where those
    do not fit."""
    from conftest import graphconv_in_process
    from graphconv.frontends import onnx_export

    monkeypatch.setattr(onnx_export, "to_onnx_model", lambda graph, checked=True: pytest.fail("built"))
    weights = sum(a.nbytes for node in load_network(SPECS / "lenet.yaml").layers() for a in node.weights.values())
    limit = (onnx_export.EXPORT_COPIES * weights) // 1024 - 1
    result = graphconv_in_process("export", SPECS / "lenet.yaml", "-o", tmp_path / "m.onnx", "--memory-limit",
                                  f"{limit}K")
    assert result.returncode == 2, result.stderr
    assert re.search(r"m.onnx: exporting [0-9.]+ KB of weights \(held 4 times at once: .*\) needs about [0-9.]+ KB, "
                     r"over the memory limit", result.stderr), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.onnx").exists()


def test_the_export_s_initializers_are_the_weights_each_once(tmp_path):
    """`OnnxWriter` writes each weight into the model once, from the graph's own array."""
    onnx = pytest.importorskip("onnx")
    model = compile_model(SPECS / "tinydag.yaml")
    save_onnx(model.graph, tmp_path / "m.onnx")
    tensors = onnx.load(tmp_path / "m.onnx").graph.initializer
    written = {t.name: onnx.numpy_helper.to_array(t) for t in tensors}
    expected = {f"{node.name}.{key}": array for node in model.graph.layers() for key, array in node.weights.items()}
    assert set(expected) <= set(written) and len(written) == len(tensors)
    for name, array in expected.items():
        np.testing.assert_array_equal(written[name].reshape(array.shape), array)


def test_export_to_a_dash_is_refused_not_written_as_a_file_named_dash(tmp_path, monkeypatch):
    from conftest import graphconv_in_process

    monkeypatch.chdir(tmp_path)
    result = graphconv_in_process("export", SPECS / "lenet.yaml", "-o", "-")
    assert result.returncode == 2 and "-o -: export writes a file, not standard output" in result.stderr
    assert not (tmp_path / "-").exists()



@pytest.mark.parametrize("name", ["model.txt", "model.npz", "model"])
def test_export_to_a_name_that_is_not_onnx_is_refused(tmp_path, monkeypatch, name):
    """`export -o scores.txt` wrote ONNX under a text file's name, exit 0: the name says the
    format everywhere else (run's --output, cells -o), so a name that is not .onnx is refused."""
    from conftest import graphconv_in_process

    monkeypatch.chdir(tmp_path)
    result = graphconv_in_process("export", SPECS / "lenet.yaml", "-o", name)
    assert result.returncode == 2 and "export writes ONNX: name the file .onnx" in result.stderr
    assert name in result.stderr and list(tmp_path.iterdir()) == []
    assert graphconv_in_process("export", SPECS / "lenet.yaml", "-o", "lenet.ONNX").returncode == 0

def test_export_for_deployment_takes_uint8_pixels_at_a_fixed_shape_and_gives_the_top_classes(tmp_path, capsys, rng):
    """--pixels --input-size --batch --argmax: a TensorRT-style file of one shape that takes
    the decoded image (uint8 (N, H, W, C)) and normalises it itself, giving graphconv's
    scores on the preprocessed pixels and each cell's top class; it imports back (the
    classes output dropped, the fixed size read as the crop it states) and maps as the
    model does on other sizes."""
    from graphconv.cli import main
    from graphconv.images import preprocess

    folder, out = tmp_path / "fcn", tmp_path / "deploy.onnx"
    model = compile_model(SPECS / "digits.yaml")
    model.preprocess = {"scale": -1 / 255, "mean": [-1.0], "std": [0.5]}  # the order and signs matter
    model.save(folder)
    assert main(["export", str(folder), "-o", str(out), "--pixels", "--input-size", "60", "52", "--batch", "2",
                 "--argmax"]) == 0
    said = capsys.readouterr()
    assert "input uint8 pixels 2 x 60 x 52 x 1, output 2 x 11 x 9 x 7, and top classes 2 x 9 x 7" in said.out
    assert "states no preprocess" not in said.err
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (given,), outputs = session.get_inputs(), session.get_outputs()
    assert (given.shape, given.type) == ([2, 60, 52, 1], "tensor(uint8)")
    assert [(o.name, o.shape, o.type) for o in outputs] == [("prob", [2, 11, 9, 7], "tensor(float)"),
                                                            ("classes", [2, 9, 7], "tensor(int64)")]
    pixels = rng.integers(0, 256, (2, 60, 52, 1), dtype=np.uint8)
    scores, classes = session.run(None, {given.name: pixels})
    x = np.stack([preprocess(image.transpose(2, 0, 1).astype(np.float32), model.preprocess) for image in pixels])
    np.testing.assert_allclose(scores, full_map(model, x), **TOLERANCE)
    np.testing.assert_array_equal(classes, scores.argmax(axis=1))
    metadata = stated(onnx.load(str(out)))
    assert "graphconv.preprocess" not in metadata  # applied in the graph: an import must not apply it again
    assert json.loads(metadata["graphconv.pixels"])["preprocess_in_graph"] == model.preprocess
    assert json.loads(metadata["graphconv.classes_output"]) == "classes"
    back = Model.load(out)
    assert back.crop_shape == model.crop_shape and back.preprocess in (None, {"scale": 1.0})
    image = rng.integers(0, 256, (1, 1, 75, 90)).astype(np.float32)  # another size than the export's
    np.testing.assert_allclose(back.run(image), model.run(preprocess(image[0], model.preprocess)[None]), **TOLERANCE)


@pytest.mark.parametrize("spec, options, refusal", [
    ("lenet", ["--input-size", "20", "28"], "--input-size 20 28: smaller than lenet's 32x32 crop"),
    ("lenet-uncompiled", ["--input-size", "40", "40"], "--input-size 40 40: lenet takes its 32x32 crop alone "
                                                      "(compile it first"),
    ("branches", ["--input-size", "30", "31"], "--input-size 30 31: unpadded's branches meet only on images of "
                                               "height 2k+1 and width 2k+1 pixels"),
    ("stored", ["--pixels"], "--pixels: the file would take 8-bit pixels (uint8), but the model's preprocess takes "
                             "the values an image stores"),
])
def test_export_refuses_a_fixed_size_or_pixels_the_network_cannot_take_and_writes_nothing(
        write_spec, tmp_path, capsys, spec, options, refusal):
    from graphconv.cli import main

    folder = tmp_path / "m"
    if spec == "lenet":
        compile_model(SPECS / "lenet.yaml").save(folder)
    elif spec == "lenet-uncompiled":
        folder = SPECS / "lenet.yaml"
    elif spec == "branches":
        compile_model(write_spec(UNPADDED_BEFORE_UPSAMPLE, "branches.yaml")).save(folder)
    else:
        model = compile_model(SPECS / "lenet.yaml")
        model.preprocess = {"values": "stored", "scale": 0.0001}
        model.save(folder)
    assert main(["export", str(folder), "-o", str(tmp_path / "x.onnx"), *options]) == 2
    assert f"{folder.name}: {refusal}" in capsys.readouterr().err  # named by the model (relative to the cwd)
    assert not (tmp_path / "x.onnx").exists()


CEIL_POOL = """
name: ceil_pool
input: {shape: [3, 12, 11]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: pool1, op: POOL, kernel_size: 2, stride: 2, padding: 1, ceil_mode: true}
  - {name: fc1, op: fc, out_features: 5}
"""


@pytest.mark.parametrize("pool", ["avgpool", "maxpool"])
def test_a_ceil_mode_pool_whose_last_window_pytorch_drops_exports_at_fixed_sizes(write_spec, rng, pool):
    """PyTorch drops a ceil-mode window that would start in the padding (10x9 -> 6x5 here);
    ONNX's shape inference keeps it (6x6): the export of a classifier, or of any model at an
    --input-size, failed with an AssertionError and a traceback (exit 1). Written as floor
    mode there (the same windows), it runs in onnxruntime as graphconv does."""
    spec = write_spec(CEIL_POOL.replace("POOL", pool))
    classifier = Model.load(spec)
    x = rng.standard_normal((2, 3, 12, 11)).astype(np.float32)
    np.testing.assert_allclose(onnxruntime_run(to_onnx_model(classifier.graph), x).reshape(2, 5), classifier.run(x),
                               **TOLERANCE)
    fcn = compile_model(spec)
    from graphconv.frontends.onnx_export import ExportOptions
    big = rng.standard_normal((1, 3, 30, 29)).astype(np.float32)
    fixed = to_onnx_model(fcn.graph, options=ExportOptions(input_size=(30, 29)))
    np.testing.assert_allclose(onnxruntime_run(fixed, big), full_map(fcn, big), **TOLERANCE)


def test_a_ceil_mode_pool_dropping_a_window_on_one_axis_and_keeping_one_on_the_other_is_refused(write_spec):
    """A 3x2 window on a 10x9 map keeps ceil's extra window down the rows and drops it across
    the columns: no ONNX pool does both, said at the layer, not an AssertionError."""
    spec = write_spec(CEIL_POOL.replace("POOL", "maxpool").replace("kernel_size: 2, stride: 2",
                                                                    "kernel_size: [3, 2], stride: 2"))
    with pytest.raises(GraphconvError, match=r"layer 'pool1': a ceil_mode pool of a 10x9 map whose last window "
                                             r"PyTorch drops on one axis .* has no ONNX form"):
        to_onnx_model(Model.load(spec).graph)
