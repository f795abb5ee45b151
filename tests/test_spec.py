"""Spec files: parsing, defaults, errors that name file/line/layer, and the round trip."""
import numpy as np
import pytest

from graphconv.errors import GraphconvError
from graphconv.spec import load_spec, save_model, spec_text
from conftest import SPECS

TINY = """
name: tiny
input: {name: data, shape: [3, 36, 36]}
layers:
  - {name: conv1, op: conv, out_channels: 8, kernel_size: 5, stride: 1, padding: 0}
  - {name: relu1, op: relu}
  - {name: pool1, op: maxpool, kernel_size: 2, stride: 2}
  - {name: fc1, op: fc, out_features: 10}
  - {name: prob, op: softmax}
"""


def test_parses_the_issue_example(write_spec):
    graph = load_spec(write_spec(TINY))
    assert [n.name for n in graph.layers()] == ["conv1", "relu1", "pool1", "fc1", "prob"]
    assert graph.input_shape == (3, 36, 36) and graph.output.name == "prob"
    conv = graph.node("conv1")
    assert conv.params == dict(out_channels=8, kernel_size=5, stride=1, padding=0, dilation=1,
                               groups=1, bias=True, activation="none")
    assert conv.loc.line == 4 and graph.node("fc1").loc.line == 7
    assert graph.node("pool1").params["stride"] == 2
    assert graph.meta["seeded_weights"]
    assert conv.weights["weight"].shape == (8, 3, 5, 5)


def test_seeded_weights_are_deterministic(write_spec):
    a = load_spec(write_spec(TINY))
    b = load_spec(write_spec(TINY, "other.yaml"))
    np.testing.assert_array_equal(a.node("fc1").weights["weight"], b.node("fc1").weights["weight"])


def test_pool_stride_defaults_to_kernel_and_pairs_normalise(write_spec):
    graph = load_spec(write_spec("""
        input: {shape: [1, 10, 10]}
        layers:
          - {name: p, op: maxpool, kernel_size: [3, 2]}
          - {name: c, op: conv, out_channels: 2, kernel_size: [2, 2], stride: [1, 1]}
    """))
    assert graph.node("p").params["stride"] == (3, 2)
    assert graph.node("c").params["kernel_size"] == 2


@pytest.mark.parametrize("body,line,expected", [
    ("  - {name: a, op: convolution}\n", 3, "layer 'a': unknown op 'convolution'"),
    ("  - {name: a, op: conv, kernel_size: 3}\n", 3, "layer 'a': conv needs parameter 'out_channels'"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 3, kernal: 1}\n", 3, "unknown parameter(s) ['kernal']"),
    ("  - {name: a, op: relu}\n  - {name: a, op: relu}\n", 4, "layer 'a': duplicate layer name"),
    ("  - {name: a, op: relu, inputs: [nowhere]}\n", 3, "input 'nowhere' is not the input or an earlier layer"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 0}\n", 3, "'kernel_size' must be an integer >= 1"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 3, padding: -1}\n", 3, "'padding' must be"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 3, bias: 1}\n", 3, "'bias' must be true or false"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 30}\n", 3, "layer 'a': kernel of 30x30"),
    ("  - {name: a, op: conv, out_channels: 3, kernel_size: 3, groups: 2}\n", 3, "groups=2 must divide"),
    ("  - {name: a, op: add}\n", 3, "add takes at least 2 input(s), got 1"),
    ("  - {name: a, op: maxpool, kernel_size: 2}\n  - {name: b, op: concat, inputs: [a, data]}\n", 4,
     "concat needs inputs of one spatial size"),
    ("  - {name: a, op: relu\n", 4, "invalid YAML"),
    ("  - just a string\n", 1, "each layer must be a mapping"),
])
def test_errors_name_file_line_and_layer(write_spec, body, line, expected):
    path = write_spec("input: {name: data, shape: [2, 8, 8]}\nlayers:\n" + body)
    with pytest.raises(GraphconvError) as err:
        load_spec(path)
    message = str(err.value)
    assert expected in message
    assert message.startswith(f"net.yaml:{line}:")


def test_yaml_is_loaded_safely(write_spec):
    path = write_spec("input: !!python/object/apply:os.system ['echo pwned']\nlayers: []\n")
    with pytest.raises(GraphconvError, match="invalid YAML"):
        load_spec(path)


def test_weights_are_checked_against_shapes(write_spec, tmp_path):
    np.savez(tmp_path / "w.npz", **{"fc1.weight": np.zeros((10, 99), np.float32),
                                    "fc1.bias": np.zeros(10, np.float32),
                                    "conv1.weight": np.zeros((8, 3, 5, 5), np.float32),
                                    "conv1.bias": np.zeros(8, np.float32)})
    spec = TINY.replace("layers:", "weights: w.npz\nlayers:")
    with pytest.raises(GraphconvError, match=r"net.yaml:8: layer 'fc1': fc expects weight of shape "
                                             r"\[10, 2048\] for its input 8x16x16, but its weight has "
                                             r"shape \[10, 99\]"):
        load_spec(write_spec(spec))


def test_weights_missing_unknown_or_pickled(write_spec, tmp_path):
    spec = TINY.replace("layers:", "weights: w.npz\nlayers:")
    with pytest.raises(GraphconvError, match="weights file not found"):
        load_spec(write_spec(spec))
    np.savez(tmp_path / "w.npz", **{"ghost.weight": np.zeros(3, np.float32)})
    with pytest.raises(GraphconvError, match="no layer 'ghost'"):
        load_spec(write_spec(spec))
    np.savez(tmp_path / "w.npz", **{"conv1.weight": np.array([object()], dtype=object)})
    with pytest.raises(GraphconvError, match="cannot read weights"):
        load_spec(write_spec(spec))


@pytest.mark.parametrize("name", ["lenet", "alexnet", "vgg16", "tinydag"])
def test_round_trip_gives_the_same_graph(name, tmp_path):
    graph = load_spec(SPECS / f"{name}.yaml")
    save_model(graph, tmp_path / "model")
    again = load_spec(tmp_path / "model")
    assert str(again) == str(graph)
    assert spec_text(again) == spec_text(graph)
    for a, b in zip(graph.layers(), again.layers()):
        assert (a.name, a.op, a.params, [i.name for i in a.inputs]) == \
               (b.name, b.op, b.params, [i.name for i in b.inputs])
        for key in a.weights:
            np.testing.assert_array_equal(a.weights[key], b.weights[key])
