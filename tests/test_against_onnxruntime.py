"""`graphconv inspect --profile --against onnxruntime`: onnxruntime on the same input and
threads, its per-node times matched to graphconv's layers, and the outputs compared."""
from __future__ import annotations

import re
import sys
import tempfile

import numpy as np
import pytest

from conftest import SPECS, graphconv_in_process

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import graphconv  # noqa: E402
from graphconv.against_onnxruntime import Comparison, _onto_rows, compare_with_onnxruntime, layer_of  # noqa: E402
from graphconv.compiler import compile_model  # noqa: E402
from graphconv.errors import GraphconvError  # noqa: E402
from graphconv.profiling import format_profile  # noqa: E402

LAYERS = {name: name for name in ("conv1", "conv1_bn", "layer1.0.conv2", "fc")}


@pytest.mark.parametrize("value, layer", [
    ("conv1", "conv1"),
    ("conv1_nchwc", "conv1"),                          # onnxruntime's blocked-layout node
    ("conv1_bn_nchwc", "conv1_bn"),                    # the longest layer name wins
    ("layer1.0.conv2/Conv_5_nchwc", "layer1.0.conv2"),  # a layer's inner value
    ("fc/Gemm_4", "fc"),
    ("ReorderOutput", None),                           # onnxruntime's own
    ("conv10", None),                                  # a longer name is not its prefix's layer
])
def test_an_onnxruntime_node_is_the_layer_whose_value_it_makes(value, layer):
    assert layer_of(value, LAYERS) == layer


def test_the_renamed_output_is_its_layer_s():
    assert layer_of("logits_nchwc", {**LAYERS, "logits": "fc"}) == "fc"


@pytest.fixture(scope="module")
def digits():
    return compile_model(SPECS / "digits.yaml")


def test_onnxruntime_computes_what_graphconv_does_and_each_layer_has_its_time(digits):
    x = np.random.default_rng(0).standard_normal((1, 1, 64, 80), dtype=np.float32)
    comparison = compare_with_onnxruntime(digits, x, "cpu", 1, "digits.yaml")
    assert comparison.largest_difference < 1e-4 * max(1.0, comparison.largest_score)
    assert comparison.largest_score > 0
    assert comparison.runs >= 3 and comparison.threads == 1
    assert comparison.graphconv_run > 0 and comparison.onnxruntime_run > 0
    convs = [node.name for node in digits.graph.layers() if node.op == "conv"]
    assert convs and all(comparison.layers.get(name, 0) > 0 for name in convs)
    assert set(comparison.layers) <= {node.name for node in digits.graph.layers()}
    assert set(comparison.untimed) == {node.name for node in digits.graph.layers()} - set(comparison.layers)


def comparison(layers: dict[str, float], own: dict[str, float] | None = None) -> Comparison:
    return Comparison("1.0", 1, layers, own or {}, 0.01, 0.02, 3, 0.0, 1.0,
                      tuple(name for name in ("conv", "relu") if name not in layers))


def profiled(digits) -> tuple[object, dict[str, float]]:
    names = [node.name for node in digits.graph.layers()]
    return digits.graph, {name: 0.001 * (i + 1) for i, name in enumerate(names)}


def test_a_layer_onnxruntime_fused_into_the_next_is_compared_with_it(digits):
    graph, profile = profiled(digits)
    first, second, *rest = profile
    table = format_profile(graph, profile, (28, 28), 1, "cpu", comparison({second: 0.0015, **{n: 1e-3 for n in rest}}))
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert re.search(r"\s-$", rows[first])
    assert re.search(r"\s1\.50\s+2\.00\s+\(with 1 above\)$", rows[second])  # (1 + 2 ms) / 1.5 ms


BLOCK_NET = """
name: block
task: segmentation
input: {shape: [4, 16, 16]}
layers:
  - {name: pad, op: pad, padding: 1}
  - {name: stem, op: conv, out_channels: 8, kernel_size: 3}
  - {name: stem_bn, op: batchnorm}
  - {name: expand, op: conv, out_channels: 16, kernel_size: 1}
  - {name: expand_relu, op: relu}
  - {name: dw, op: conv, out_channels: 16, kernel_size: 3, padding: 1, groups: 16}
  - {name: dw_relu, op: relu}
  - {name: project, op: conv, out_channels: 8, kernel_size: 1}
"""


def test_onnxruntime_s_times_go_to_the_layers_graphconv_fused_them_into(write_spec):
    """The executor runs a model as loaded with its pad and batch norm folded, its
    activations fused and the 1x1 -> depthwise -> 1x1 chain one inverted_residual layer:
    each layer's onnxruntime time goes to the row that computed it, none is lost."""
    model = graphconv.load(write_spec(BLOCK_NET))
    ran = model.executor("cpu").graph
    assert [(node.name, node.op) for node in ran.layers()] == [("stem", "conv"), ("project", "inverted_residual")]
    exported = {node.name: 0.001 * 2 ** i for i, node in enumerate(model.graph.layers())}
    onto = _onto_rows(exported, model.graph, ran)
    assert onto == pytest.approx({"stem": 0.001 * (1 + 2 + 4), "project": 0.001 * (8 + 16 + 32 + 64 + 128)})
    x = np.random.default_rng(0).standard_normal((1, 4, 20, 24), dtype=np.float32)
    compared = compare_with_onnxruntime(model, x, "cpu", 1, "block.yaml")
    assert set(compared.layers) <= {"stem", "project"} and compared.layers.get("project", 0) > 0


def test_onnxruntime_s_own_nodes_have_a_row_and_count_in_its_total(digits):
    graph, profile = profiled(digits)
    table = format_profile(graph, profile, (28, 28), 1, "cpu",
                           comparison({name: 1e-3 for name in profile}, {"ReorderOutput": 2e-3}))
    assert re.search(r"^\(onnxruntime's own: ReorderOutput\)\s+2\.00$", table, re.M)
    ours = sum(profile.values()) * 1e3
    theirs = len(profile) + 2.0
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert total.split()[1:] == [f"{ours:.2f}", f"{theirs:.2f}", f"{ours / theirs:.2f}"]


def test_inspect_against_onnxruntime_prints_both_and_leaves_nothing(monkeypatch, tmp_path):
    assert graphconv_in_process("compile", SPECS / "digits.yaml", "-o", tmp_path / "fcn").returncode == 0
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    result = graphconv_in_process("inspect", tmp_path / "fcn", "--input-size", 56, 64, "--against", "onnxruntime",
                                  "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime ms" in result.stdout
    whole = re.search(r"graphconv ([0-9.]+) ms, onnxruntime ([0-9.]+) ms: graphconv takes ([0-9.]+)x", result.stdout)
    assert whole
    ours, theirs, ratio = (float(whole[i]) for i in (1, 2, 3))  # each said to 2 decimals
    assert (ours - 0.005) / (theirs + 0.005) - 0.005 <= ratio <= (ours + 0.005) / (theirs - 0.005) + 0.005
    assert "1 thread each" in result.stdout
    assert float(re.search(r"outputs differ by at most (\S+) ", result.stdout)[1]) < 1e-4
    assert list((tmp_path / "temp").iterdir()) == []  # onnxruntime's profile, in a folder of its own, removed


def test_without_onnxruntime_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = graphconv_in_process("inspect", SPECS / "digits.yaml", "--against", "onnxruntime")
    assert result.returncode == 2
    assert "--against onnxruntime needs the onnx and onnxruntime packages: pip install onnx onnxruntime" in \
        result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_onnx_cannot_hold_is_refused_with_the_way_out(tmp_path):
    out = tmp_path / "stitched"
    assert graphconv_in_process("compile", SPECS / "digits.yaml", "-o", out, "--output-stride", 2,
                                "--stride-method", "shift").returncode == 0
    result = graphconv_in_process("inspect", out, "--against", "onnxruntime")
    assert result.returncode == 2
    assert "--against onnxruntime runs the model as graphconv exports it, and a shift-and-stitch model cannot be " \
           "exported" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_export_whose_output_differs_in_shape_is_an_error_not_a_traceback(digits, monkeypatch):
    import onnxruntime

    real = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda self, *a, **k: [real(self, *a, **k)[0][..., :1]])
    x = np.random.default_rng(0).standard_normal((1, 1, 64, 80), dtype=np.float32)
    with pytest.raises(GraphconvError, match="onnxruntime's output of the exported model has shape"):
        compare_with_onnxruntime(digits, x, "cpu", 1, "digits.yaml")
