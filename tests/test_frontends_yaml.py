"""Spec files: parsing, defaults, errors that name file/line/layer, and the round trip."""
import re

import numpy as np
import pytest

from graphconv.errors import GraphconvError, shown_path
from graphconv.frontends import load_network as load_spec
from graphconv.frontends.yaml import save_model, spec_text
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
    assert conv.params == dict(out_channels=8, kernel_size=(5, 5), stride=(1, 1), padding=(0, 0),
                               dilation=(1, 1), groups=1, bias=True, activation="none")
    assert conv.loc.line == 4 and graph.node("fc1").loc.line == 7
    assert graph.node("pool1").params["stride"] == (2, 2)
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
    assert graph.node("c").params["kernel_size"] == (2, 2), "one canonical form: (h, w) pairs"
    assert "{name: c, op: conv, out_channels: 2, kernel_size: 2}" in spec_text(graph), \
        "written back compactly: equal halves as one int, defaults left out"


def test_seeded_weights_are_remembered_by_a_compiled_model(tmp_path):
    graph = load_spec(SPECS / "lenet.yaml")
    assert graph.meta["seeded_weights"]
    save_model(graph, tmp_path / "m")
    assert load_spec(tmp_path / "m").meta["seeded_weights"]


def test_save_model_takes_a_model_as_compile_model_does(tmp_path):
    """graphconv.save_model(model, dir) failed with an AttributeError ('Model' object has
    no attribute 'meta') where compile_model, run_passes and verify take a Model."""
    import graphconv
    model = graphconv.compile_model(SPECS / "lenet.yaml")
    graphconv.save_model(model, tmp_path / "m")
    x = np.random.default_rng(0).random((1, 1, 40, 36), dtype=np.float32)
    np.testing.assert_array_equal(graphconv.load(tmp_path / "m").run(x), model.run(x))
    with pytest.raises(GraphconvError, match="save_model saves a Model or a Graph, not str"):
        graphconv.save_model(str(SPECS / "lenet.yaml"), tmp_path / "n")
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("body,line,expected", [
    ("  - {name: a, op: convolution}\n", 3, "layer 'a': unknown op 'convolution'"),
    ("  - {name: a, op: conv, kernel_size: 3}\n", 3, "layer 'a': conv needs parameter 'out_channels'"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 3, kernal: 1}\n", 3, "unknown parameter ['kernal']"),
    ("  - {name: a, op: relu}\n  - {name: a, op: relu}\n", 4,
     "layer 'a': duplicate layer name: 'a' is a layer name used before"),
    ("  - {name: data, op: relu}\n", 3, "layer 'data': duplicate layer name: 'data' is the input's name"),
    ("  - {name: a, op: relu, inputs: [nowhere]}\n", 3, "input 'nowhere' is not the input or an earlier layer"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 0}\n", 3, "'kernel_size' must be an integer >= 1"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 3, padding: -1}\n", 3, "'padding' must be"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 3, bias: 1}\n", 3, "'bias' must be true or false"),
    ("  - {name: a, op: conv, out_channels: 2, kernel_size: 30}\n", 3, "layer 'a': kernel of 30x30"),
    ("  - {name: a, op: conv, out_channels: 3, kernel_size: 3, groups: 2}\n", 3, "groups=2 must divide"),
    ("  - {name: a, op: add}\n", 3, "add takes at least 2 inputs, got 1"),
    ("  - {name: a, op: maxpool, kernel_size: 2}\n  - {name: b, op: concat, inputs: [a, data]}\n", 4,
     "concat needs inputs of one spatial size"),
    ("  - {name: a, op: relu\n", 4, "invalid YAML"),
    ("\t- {name: a, op: relu}\n", 3, "found character '\\t' that cannot start any token (YAML indents with "
                                    "spaces, not tabs)"),
    ("  - just a string\n", 3, "each layer must be a mapping"),  # its own line, not the spec's first
])
def test_errors_name_file_line_and_layer(write_spec, body, line, expected):
    path = write_spec("input: {name: data, shape: [2, 8, 8]}\nlayers:\n" + body)
    with pytest.raises(GraphconvError) as err:
        load_spec(path)
    message = str(err.value)
    assert expected in message
    assert message.startswith(f"net.yaml:{line}:")


def test_an_input_shape_written_height_width_channels_is_told_so_where_it_fails(write_spec):
    """[32, 32, 3], a picture's shape as numpy holds it, is 32 channels of 32x3 to a spec."""
    path = write_spec("input: {name: data, shape: [32, 32, 3]}\nlayers:\n"
                      "  - {name: c1, op: conv, out_channels: 8, kernel_size: 5}\n", "hwc.yaml")
    with pytest.raises(GraphconvError, match=r"hwc.yaml:3: layer 'c1': kernel of 5x5 .* \(the input shape is "
                                             r"\[C, H, W\]: \[32, 32, 3\] is 32 channels of 32x3; for 3-channel "
                                             r"32x32 pictures write \[3, 32, 32\]\)"):
        load_spec(path)


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
    with pytest.raises(GraphconvError, match=r"net.yaml:\d+: weights file 'w.npz' not found: a spec's files are read "
                                             r"from its own folder .*--weights FILE"):
        load_spec(write_spec(spec))
    np.savez(tmp_path / "w.npz", **{"ghost.weight": np.zeros(3, np.float32)})
    with pytest.raises(GraphconvError, match="no layer 'ghost'"):
        load_spec(write_spec(spec))
    np.savez(tmp_path / "w.npz", **{"conv1.weight": np.array([object()], dtype=object)})
    with pytest.raises(GraphconvError, match="cannot read weights"):
        load_spec(write_spec(spec))


def tiny_weights(**extra) -> dict:
    """Weights that fit TINY, plus `extra` ("<layer>.<key>" -> array)."""
    return {"conv1.weight": np.zeros((8, 3, 5, 5), np.float32), "conv1.bias": np.zeros(8, np.float32),
            "fc1.weight": np.zeros((10, 2048), np.float32), "fc1.bias": np.zeros(10, np.float32), **extra}


def test_weights_for_a_layer_that_takes_none_are_refused_naming_the_file(write_spec, tmp_path):
    """A prelu written as relu, with its slopes in the file, must not run as a ReLU."""
    spec = write_spec(TINY.replace("layers:", "weights: w.npz\nlayers:"))
    np.savez(tmp_path / "w.npz", **tiny_weights())
    assert load_spec(spec).node("relu1").weights == {}
    np.savez(tmp_path / "w.npz", **tiny_weights(**{"relu1.weight": np.ones(3, np.float32)}))
    with pytest.raises(GraphconvError, match=r"^net.yaml:6: layer 'relu1': the weights file w.npz has "
                                             r"'relu1.weight', but a relu layer takes no weights"):
        load_spec(spec)
    np.savez(tmp_path / "given.npz", **tiny_weights(**{"conv1.gamma": np.ones(8, np.float32)}))
    with pytest.raises(GraphconvError, match=r"^net.yaml:5: layer 'conv1': the weights file given.npz has "
                                             r"'conv1.gamma', which conv does not use"):
        load_spec(spec, weights=tmp_path / "given.npz")



def test_weights_of_a_renamed_layer_name_the_layer_that_has_none(write_spec, tmp_path):
    """A layer renamed in the spec leaves its weights under the old name: the error says
    which layer they likely belong to (with its line), or which layers have none."""
    spec = write_spec(TINY.replace("name: fc1", "name: classifier").replace("layers:", "weights: w.npz\nlayers:"))
    np.savez(tmp_path / "w.npz", **tiny_weights())
    with pytest.raises(GraphconvError, match=r"w.npz: has weights 'fc1.weight' but the network has no layer "
                                             r"'fc1' \(the file has no weights for 'classifier'\)"):
        load_spec(spec)
    spec.write_text(spec.read_text().replace("name: classifier", "name: fc_1"))
    with pytest.raises(GraphconvError, match=r"no layer 'fc1': did you mean 'fc_1' \(net.yaml:8, fc\), which the "
                                             r"file has no weights for\?"):
        load_spec(spec)


def test_a_bias_in_the_file_of_a_layer_without_one_names_bias_false(write_spec, tmp_path):
    spec = write_spec(TINY.replace("out_features: 10}", "out_features: 10, bias: false}")
                      .replace("layers:", "weights: w.npz\nlayers:"))
    np.savez(tmp_path / "w.npz", **tiny_weights())
    with pytest.raises(GraphconvError, match=r"layer 'fc1': the weights file w.npz has 'fc1.bias', which the layer "
                                             r"does not use: it says bias: false"):
        load_spec(spec)


BATCHNORMED = """
name: bn
input: {shape: [2, 6, 6]}
weights: w.npz
layers:
  - {name: c, op: conv, out_channels: 4, kernel_size: 3}
  - {name: bn, op: batchnorm, eps: 0.001}
"""


@pytest.mark.parametrize("running_var,bad", [([1.0, -1.0, 2.0, -0.001], 2), ([0.0, 1.0, 1.0, 1.0], 0)])
def test_batchnorm_statistics_without_a_square_root_are_refused_at_load(write_spec, tmp_path, running_var, bad):
    """running_var + eps <= 0 would make the channel NaN (and exit 0); a variance of 0 is
    fine, eps keeps it positive."""
    np.savez(tmp_path / "w.npz", **{"c.weight": np.ones((4, 2, 3, 3), np.float32), "c.bias": np.zeros(4, np.float32),
                                    "bn.weight": np.ones(4, np.float32), "bn.bias": np.zeros(4, np.float32),
                                    "bn.running_mean": np.zeros(4, np.float32),
                                    "bn.running_var": np.array(running_var, np.float32)})
    spec = write_spec(BATCHNORMED)
    if not bad:
        graph = load_spec(spec)
        assert np.isfinite(graphconv_run(graph)).all()
        return
    with pytest.raises(GraphconvError, match=rf"^net.yaml:6: layer 'bn': running_var \+ eps must be positive "
                                             rf".* not in {bad} of 4 channels \(the first: channel 1, "
                                             r"running_var -1, eps 0.001\).*\(weights from w.npz\)$"):
        load_spec(spec)


def graphconv_run(graph) -> np.ndarray:
    from graphconv.model import Model
    return Model(graph).run(np.ones((2, 6, 6), np.float32))


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


# ---- hostile specs: every bad file is one clean line, bounded in time and memory ---------------

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from graphconv import memory  # noqa: E402
from graphconv.frontends.yaml import MAX_SPEC_BYTES, MAX_YAML_DEPTH  # noqa: E402

BASE = "input: {name: data, shape: [2, 8, 8]}\nlayers:\n  - {name: a, op: relu}\n"
LAUGHS = "".join([
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    *(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")),
])


def refused(path, match: str, line: int | None = None, seconds: float = 5.0, **kwargs) -> str:
    """`load_spec(path)` fails fast with one line that names the file (and `line`)."""
    start = time.perf_counter()
    with pytest.raises(GraphconvError) as err:
        load_spec(path, **kwargs)
    assert time.perf_counter() - start < seconds
    message = str(err.value)
    assert match in message, message
    assert "\n" not in message and len(message) <= 2000
    prefix = f"{shown_path(str(path))}:{line}:" if line else f"{shown_path(str(path))}:"
    assert message.startswith(prefix), message
    return message


def sparse_file(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


@pytest.fixture
def small_budget():
    memory.set_memory_limit("512M")
    yield
    memory.set_memory_limit(None)


def test_billion_laughs_is_refused_while_parsing(write_spec):
    assert len(LAUGHS) < 700
    refused(write_spec(LAUGHS + BASE), "more than 500000 values, each alias counted as all it stands for", line=6)


def test_a_spec_of_thousands_of_plain_layers_is_no_alias_bomb(write_spec):
    """12,000 layers were refused as "more than 50000 values ... (an alias bomb?)"."""
    layers = "".join(f"  - {{name: r{i}, op: relu}}\n" for i in range(12_000))
    assert len(load_spec(write_spec("input: {name: data, shape: [1, 4, 4]}\nlayers:\n" + layers)).layers()) == 12_000


@pytest.mark.parametrize("text,match,line", [
    # aliases expanded through the places that would copy or show them
    ("preprocess: &p {scale: 1}\ncompiled: {passes: *p}\n" + BASE, "compiled passes must be", 2),
    ("x: &a [y, y, y, y, y, y, y, y, y, y]\n" + "".join(
        f"{n}: &{n} {{<<: [{', '.join(['*' + p] * 2)}]}}\n" for p, n in zip("a" + "bcdefghijklmnopqrstu",
                                                                           "bcdefghijklmnopqrstuv")) + BASE,
     "could not", None),
    # nesting, direct and through aliases
    ("x: " + "[" * 1000 + "]" * 1000 + "\n" + BASE, f"nested more than {MAX_YAML_DEPTH} levels", 1),
    ("x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n" + BASE, f"nested more than {MAX_YAML_DEPTH} levels", 1),
    ("a: &a [[[[[[[[[[1]]]]]]]]]]\nb: &b [[[[[[[[[[*a]]]]]]]]]]\nc: &c [[[[[[[[[[*b]]]]]]]]]]\n"
     "d: [[[[[[[[[[*c]]]]]]]]]]\n" + BASE, "the alias *c nests the YAML more than 32 levels deep", 4),
    ("preprocess: &a {scale: *a}\n" + BASE, "the alias *a is inside the node it names", 1),
    ("x: &a [1, *a]\n" + BASE, "the alias *a is inside the node it names", 1),
    ("input: &i {name: data, shape: [2, 8, 8], x: *i}\nlayers: [{name: a, op: relu}]\n",
     "alias *i is inside the node it names", 1),
])
def test_yaml_bombs_and_deep_nesting_are_refused(write_spec, text, match, line):
    if match == "could not":  # a merge-key bomb: each level doubles what the next merges
        match = "each alias counted as all it stands for"
    refused(write_spec(text), match, line)


def test_aliases_within_bounds_still_work(write_spec):
    graph = load_spec(write_spec("""
        input: {shape: [2, 12, 12]}
        layers:
          - {name: a, op: conv, out_channels: 4, kernel_size: &k [3, 1]}
          - {name: b, op: conv, out_channels: 4, kernel_size: *k}
    """))
    assert graph.node("b").params["kernel_size"] == (3, 1)


@pytest.mark.parametrize("data,name,match", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "net.yaml", "not a YAML text file (a PNG image?)"),
    # ONNX files (a .onnx name, or protobuf bytes) go to the ONNX front end, which names damage
    (b"\x08\x07\x12\x07pytorch\x1a\x032.1:\xb5\x01\n\x99\x01\x12\x0bfc.weight\xff\xfe", "model.onnx",
     "is not a valid ONNX model"),
    (b"PK\x03\x04\x14\x00\x00\x00\x00\x00", "net.yaml", "not a YAML text file (a zip archive"),
    (b"\x08\x07\x12\x07pytorch\x1a\x032.1", "net.yaml", "not an ONNX model with a graph"),
    (b"ir_version: 7\n", "model.onnx", "is not a valid ONNX model"),
    (b"\x93NUMPY\x01\x00", "net.yaml", "not a YAML text file (a .npy array?)"),
    ("input: 1\n".encode("utf-16"), "net.yaml", "not a YAML text file (UTF-16 text?)"),
    (b"input: \xe9t\xe9\n", "net.yaml", "not a YAML text file (a binary file? it is not UTF-8)"),
    (b"input: {shape: [1, 2, 3]}\nlayers: \x01\n", "net.yaml", "control character #x0001"),
])
def test_binary_files_are_not_specs(tmp_path, data, name, match):
    (tmp_path / name).write_bytes(data)
    refused(tmp_path / name, match)


@pytest.mark.usefixtures("fails_if_it_hangs")
def test_specs_that_are_not_regular_files_are_never_read(tmp_path):
    (tmp_path / "folder").mkdir()
    refused(tmp_path / "folder", "a folder without a model.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    refused(tmp_path / "fifo.yaml", "not a regular file (a pipe or a device?)")
    refused("/dev/zero", "not a regular file")
    sparse_file(tmp_path / "huge.yaml", MAX_SPEC_BYTES + 1)
    refused(tmp_path / "huge.yaml", "the spec is over 4 MB")


@pytest.mark.parametrize("text,match,line", [
    ("{1: x, name: a}\n", "mapping keys must be strings, got 1", 1),
    ("input: {name: data, shape: [2, 8, 8]}\nlayers:\n  - {1: x, name: a, op: relu}\n",
     "mapping keys must be strings, got 1", 3),
    ("on: 1\n" + BASE, "got True (YAML reads yes/no/on/off as booleans: quote it)", 1),
    ("? [a, b]\n: 1\n" + BASE, "mapping keys must be strings, got a list", 1),
    ("null: 1\n" + BASE, "mapping keys must be strings, got None", 1),
])
def test_mapping_keys_must_be_strings(write_spec, text, match, line):
    refused(write_spec(text), match, line)


@pytest.mark.parametrize("text,match,line", [
    ("input: {name: data, shape: [2, 8, 8]}\nlayers:\n"
     "  - {name: c, op: conv, out_channels: 4, kernel_size: 3, kernel_size: 5}\n",
     "the key 'kernel_size' is given twice in one mapping (first on line 3)", 3),
    ("name: a\n" + BASE + "name: b\n", "the key 'name' is given twice in one mapping (first on line 1)", 5),
    ("input: {name: data, shape: [2, 8, 8]}\nlayers:\n  - name: c\n    op: conv\n    out_channels: 4\n"
     "    kernel_size: 3\n    out_channels: 8\n", "the key 'out_channels' is given twice", 7),
    ("input: {name: data, shape: [2, 8, 8]}\nlayers:\n  - {<<: {op: relu, op: sigmoid}, name: a}\n",
     "the key 'op' is given twice", 3),
])
def test_a_key_given_twice_is_refused_naming_it_and_its_line(write_spec, text, match, line):
    """YAML keeps the last of two equal keys, so a layer saying `kernel_size: 3` on the
    line that also says 5 would silently build a 5x5 conv."""
    refused(write_spec(text), match, line)


def test_keys_written_out_still_override_those_a_merge_brings_in(write_spec):
    graph = load_spec(write_spec("""
        input: {shape: [2, 12, 12]}
        layers:
          - &conv {name: a, op: conv, out_channels: 4, kernel_size: 3}
          - &b {<<: *conv, name: b, kernel_size: 1}
          - {<<: [*b, *conv], name: c, out_channels: 2}
          - {<<: *b, name: d}
    """))
    assert graph.node("b").params["kernel_size"] == (1, 1)
    assert graph.node("c").params["kernel_size"] == (1, 1) and graph.node("c").params["out_channels"] == 2
    assert graph.node("d").params["kernel_size"] == (1, 1), "a merged mapping used again is no repeat"


LAYER = "input: {name: data, shape: [2, 8, 8]}\nlayers:\n  - "


@pytest.mark.parametrize("layer,match", [
    ('{name: "a\\nb", op: relu}', r"the layer name 'a\nb' has a control or invisible character"),
    ('{name: "a\\x1b[2J", op: relu}', "has a control or invisible character"),
    ('{name: "a\\u202eb", op: relu}', "has a control or invisible character"),
    ('{name: "\\ud800", op: relu}', "has a control or invisible character"),
    ('{name: ' + "x" * 300 + ', op: relu}', "the layer name is 300 characters long, over 256"),
    ("{name: 12, op: relu}", "the layer name must be a string, got 12"),
    ("{name: [a], op: relu}", "the layer name must be a string, got ['a']"),
    ("{name: '', op: relu}", "the layer name is empty"),
    ("{name: a, op: [relu]}", "layer 'a': 'op' must be a string, got ['relu']"),
    ('{name: a, op: "re\\nlu"}', "layer 'a': 'op' 're\\nlu' has a control"),
    ('{name: a, op: relu, inputs: ["da\\nta"]}', "each of 'inputs' 'da\\nta' has a control"),
    ("{name: a, op: relu, inputs: [1]}", "each of 'inputs' must be a string, got 1"),
    ("{name: a, op: relu, inputs: {data: 1}}", "'inputs' must be a list of layer names"),
    ("{name: a, op: relu}\n  - {name: b, op: add, inputs: [a, a]}", "'inputs' lists 'a' twice"),
])
def test_names_are_short_printable_strings(write_spec, layer, match):
    message = refused(write_spec(LAYER + layer + "\n"), match)
    assert "\x1b" not in message and "\u202e" not in message


@pytest.mark.parametrize("spec_input,match", [
    ('{name: "da\\rta", shape: [2, 8, 8]}', "the input name 'da\\rta' has a control"),
    ("{name: 7, shape: [2, 8, 8]}", "the input name must be a string, got 7"),
    ("{shape: [2, 8, 8], size: 3}", "unknown key in 'input' ['size']"),
    ("{shape: [2, 8, true]}", "input shape must be [C, H, W] of positive ints, got [2, 8, True]"),
    ("{shape: [2, 8, 100000000000]}", "input shape must be [C, H, W] of positive ints"),
])
def test_the_input_is_checked_like_a_layer(write_spec, spec_input, match):
    refused(write_spec(f"input: {spec_input}\nlayers:\n  - {{name: a, op: relu}}\n"), match, 1)


@pytest.mark.parametrize("key,match", [
    ("preprocessing: {scale: 1}", "unknown top-level key ['preprocessing']; did you mean 'preprocess'? expected "
                                  "['input', 'input_name', 'labels', 'layers', 'name', 'output_layer', 'output_name', 'preprocess', "
                                  "'task', 'weights']"),
    ("colours: 3", "unknown top-level key ['colours']; expected ['input',"),
])
def test_an_unknown_top_level_key_offers_the_near_miss_of_the_keys_users_write(write_spec, key, match):
    """The keys compile writes into a model.yaml (compiled, seeded_weights) are still read,
    but a user writing a spec is not offered them."""
    refused(write_spec(f"{key}\n" + BASE), match, 1)


@pytest.mark.parametrize("param,match", [
    ("out_channels: true", "'out_channels' must be an integer >= 1 and <= 2147483647, got True"),
    ("out_channels: 4.0", "'out_channels' must be an integer >= 1 and <= 2147483647, got 4.0"),
    ("out_channels: '4'", "got '4'"),
    ("out_channels: " + "1" + "0" * 100, "got 1000000000000000000000"),
    ("out_channels: 0x" + "f" * 400, "an integer of 1600 bits; no number in a spec is that large"),
    ("out_channels: " + "9" * 5000, "Exceeds the limit (4300 digits)"),
    ("out_channels: 2, stride: [1, .nan]", "'stride' must be an integer >= 1 or a pair [h, w]"),
    ("out_channels: 2, padding: [0, false]", "'padding' must be an integer >= 0 or a pair"),
    ("out_channels: 2, activation: [relu]",
     "'activation' must be one of ['none', 'relu', 'silu', 'hardswish', 'gelu', 'relu6', 'mish'], got ['relu']"),
    ("out_channels: 2, bias: yes please", "'bias' must be true or false, got 'yes please'"),
])
def test_conv_numbers_are_checked(write_spec, param, match):
    refused(write_spec(f"{LAYER}{{name: a, op: conv, kernel_size: 1, {param}}}\n"), match, 3)


@pytest.mark.parametrize("value,match", [
    (".nan", "'alpha' must be a finite number, got nan"),
    ("-.inf", "got -inf"),
    ("true", "got True"),
    ("'1e-4'", "got '1e-4'"),
    ("1.0e+400", "got inf"),
])
def test_float_params_are_finite_numbers(write_spec, value, match):
    refused(write_spec(f"{LAYER}{{name: a, op: lrn, size: 3, alpha: {value}}}\n"), match, 3)


def test_yaml_values_python_cannot_build_are_located(write_spec):
    refused(write_spec("name: 2001-02-30\n" + BASE), "cannot read '2001-02-30': day is out of range", 1)


@pytest.mark.parametrize("pre,match", [
    ("[1, 2]", "'preprocess' must be a mapping"),
    ("{scale: .nan}", "preprocess scale must be a finite number, got nan"),
    ("{scale: .inf}", "got inf"),
    ("{scale: true}", "got True"),
    ("{scale: '1/255'}", "got '1/255'"),
    ("{mean: [0.5, .nan]}", "preprocess mean must be one finite number or list 2 finite numbers, one per channel, "
                            "got [0.5, nan]"),
    ("{mean: [0.5]}", "preprocess mean must be one finite number or list 2"),
    ("{mean: [true, false]}", "got [True, False]"),
    ("{std: [1, 0]}", "preprocess std must not be 0 (it divides)"),
    ("{std: 0}", "preprocess std must not be 0 (it divides), got [0, 0]"),
    ("{mean: .nan}", "preprocess mean must be one finite number or list 2"),
    ("{std: [1, -.inf]}", "preprocess std must be one finite number or list 2 finite numbers"),
    ("{scale: 1, shift: 2}", "'preprocess' takes mean, std (one number, or one per channel), scale and values, "
                             "not ['shift']"),
    ("{values: raw}", "preprocess values must be 0..255 or stored (pixels on 0..255, 16-bit ones divided by 257; "
                      "or the numbers the file stores), got 'raw'"),
])
def test_preprocess_is_checked_at_load(write_spec, pre, match):
    refused(write_spec(f"preprocess: {pre}\n" + BASE), match, 1)


def test_one_mean_and_std_are_every_channels(write_spec):
    """The README's "one number for all", as import's --mean 0.5 writes it out."""
    graph = load_spec(write_spec("preprocess: {scale: 0.00392157, mean: 0.5, std: 0.25}\n" + BASE))
    assert graph.meta["preprocess"] == {"scale": 0.00392157, "mean": [0.5, 0.5], "std": [0.25, 0.25]}


def test_preprocess_and_compiled_load_as_plain_values(write_spec):
    graph = load_spec(write_spec(
        "preprocess: {values: stored, scale: 1, mean: [0.5, 0.25], std: [2, 4]}\n"
        "compiled: {passes: fc-to-conv, output_stride: 4, stride_method: dilate}\n" + BASE))
    assert graph.meta["preprocess"] == {"values": "stored", "scale": 1, "mean": [0.5, 0.25], "std": [2, 4]}
    assert graph.meta["compiled"] == {"passes": "fc-to-conv", "output_stride": 4, "stride_method": "dilate"}


LENET_SHIFT = (SPECS / "lenet.yaml").read_text().replace(
    "layers:", "compiled: {output_stride: 2, stride_method: shift, stitch: {factor: [2, 2], step: 2}}\nlayers:")


def test_a_stitch_plan_that_splits_the_total_stride_loads_as_layers(write_spec):
    graph = load_spec(write_spec(LENET_SHIFT))
    assert "stitch" not in graph.meta["compiled"]
    first, last = graph.layers()[0], graph.layers()[-1]
    assert (first.op, first.params) == ("shift_copies", {"factor": (2, 2), "step": (2, 2)})
    assert (last.op, last.params) == ("interleave", {"factor": (2, 2)})


@pytest.mark.parametrize("compiled,match", [
    ("12", "'compiled' must be a mapping"),
    ("{passes: 1}", "compiled passes must be the pipeline as one line of text"),
    ('{passes: "a\\nb"}', "compiled passes must be"),
    ("{output_stride: 0}", "compiled output_stride must be an integer from 1 to 2147483647, got 0"),
    ("{output_stride: true}", "got True"),
    ("{stride_method: sideways}", "compiled stride_method must be one of ['auto', 'dilate', 'shift'], got 'sideways'"),
    ("{stitch: [2, 2]}", "compiled stitch must be {factor: [fy, fx], step: s}"),
    ("{stitch: {factor: [2, 2]}}", "compiled stitch must be {factor: [fy, fx], step: s}"),
    ("{stitch: {factor: [2, 2], step: 2, extra: 1}}", "compiled stitch must be"),
    ("{stitch: {factor: 2, step: 2}}", "compiled stitch factor must be [fy, fx], got 2"),
    ("{stitch: {factor: [0, 2], step: 2}}", "each stitch factor must be an integer from 1 to 1024, got 0"),
    ("{stitch: {factor: [2, 1000000000], step: 2}}", "each stitch factor must be an integer from 1 to 1024"),
    ("{stitch: {factor: [2, 2], step: -2}}", "the stitch step must be an integer from 1 to 2147483647, got -2"),
    ("{stitch: {factor: [2, 2], step: 2.0}}", "got 2.0"),
    ("{stitch: {factor: [2, 2], step: 1}}", "compiled stitch factor [2, 2] x step 1 does not make the "
                                            "network's total stride 4x4"),
    ("{optimised: true}", "unknown key in 'compiled' ['optimised']"),
    ("{undilated: [conv2]}", "compiled undilated must be {layer: {before: {stride: [sy, sx], ...}, after: {...}}}"),
    ("{undilated: {conv2: {before: {stride: 2}}}}", "compiled undilated 'conv2' must be {before: ..., after: ...}"),
    ("{undilated: {conv2: {before: {stride: 2}, after: {dilation: 2}}}}",
     "compiled undilated 'conv2': before and after must give the same params of ['ceil_mode', 'dilation', "
     "'padding', 'stride']"),
    ("{undilated: {conv2: {before: {stride: [-2, 2]}, after: {stride: [1, 1]}}}}", "(stride and dilation [y, x] "
     "from 1, padding [y, x] or [top, left, bottom, right] from 0, ceil_mode true or false)"),
    ("{undilated: {conv2: {before: {stride: [0, 2]}, after: {stride: [1, 1]}}}}", "stride and dilation [y, x]"),
    ("{undilated: {conv2: {before: {stride: 2}, after: {stride: [1, 1]}}}}", "stride and dilation [y, x]"),
    ("{undilated: {conv2: {before: {stride: [2, 2, 2]}, after: {stride: [1, 1]}}}}", "stride and dilation [y, x]"),
    ("{undilated: {conv2: {before: {ceil_mode: 1}, after: {ceil_mode: false}}}}", "ceil_mode true or false"),
    ("{undilated: {conv2: {before: {padding: [0, 0, 1]}, after: {padding: [0, 0]}}}}", "padding [y, x] or"),
    ("{undilated: {conv2: {before: {groups: 2}, after: {groups: 1}}}}", "before and after must give the same"),
])
def test_compiled_plans_are_checked_at_load(write_spec, compiled, match):
    text = (SPECS / "lenet.yaml").read_text().replace("layers:", f"compiled: {compiled}\nlayers:")
    refused(write_spec(text), match, text.splitlines().index(f"compiled: {compiled}") + 1)


# ---- the trust model: a spec's weights and labels stay beside it ---------------------------------

def test_spec_paths_may_not_leave_the_spec_folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("stolen\n")
    (folder / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (folder / "sub" / "labels.txt").write_text("cat\ndog\n")
    cases = {"/etc/passwd": "'labels' must be a path relative to the spec's folder, not the absolute path",
             "../outside.txt": "'labels' leads outside the spec's folder ('../outside.txt')",
             "sub/../../outside.txt": "leads outside the spec's folder",
             "escape.txt": "'labels' leads outside the spec's folder ('escape.txt')",
             "": "'labels' must be a file name, got ''",
             "a\x00b": "'labels' must be a file name"}
    for name, match in cases.items():
        (folder / "net.yaml").write_text(f"labels: {json.dumps(name)}\n" + BASE)
        message = refused(folder / "net.yaml", match, 1)
        assert "stolen" not in message
    (folder / "net.yaml").write_text("labels: 12\n" + BASE)
    refused(folder / "net.yaml", "'labels' must be a file name, got 12", 1)
    (folder / "net.yaml").write_text("weights: /etc/passwd\n" + BASE)
    refused(folder / "net.yaml", "--weights FILE", 1)
    (folder / "net.yaml").write_text("labels: sub/labels.txt\n" + BASE)
    assert load_spec(folder / "net.yaml").meta["labels"] == ["cat", "dog"]


def test_files_passed_explicitly_are_trusted_wherever_they_are(tmp_path, write_spec):
    (tmp_path / "elsewhere").mkdir()
    labels = tmp_path / "elsewhere" / "classes.txt"
    labels.write_text("n01 tench\tTinca tinca\n  goldfish  \n\n")
    np.savez(tmp_path / "elsewhere" / "w.npz", **{"c.weight": np.ones((3, 2, 1, 1), np.float32)})
    spec = write_spec("weights: /etc/passwd\nlabels: ../x\ninput: {shape: [2, 4, 4]}\n"
                      "layers: [{name: c, op: conv, out_channels: 3, kernel_size: 1, bias: false}]\n",
                      name="sub.yaml")
    graph = load_spec(spec, weights=tmp_path / "elsewhere" / "w.npz", labels=labels)
    assert graph.meta["labels"] == ["n01 tench\tTinca tinca", "goldfish"]
    assert not graph.meta.get("seeded_weights")
    np.testing.assert_array_equal(graph.node("c").weights["weight"], np.ones((3, 2, 1, 1)))


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "the labels file is not UTF-8 text (a PNG image?)"),
    (lambda p: p.write_bytes(b"cat\n\xff\xfe\x00dog\n"), "the labels file is not UTF-8 text (a binary file?"),
    (lambda p: p.write_bytes(b"cat\ndog\x00\x00\x00\n"), "a label must be a line of at most 1000 printable"),
    (lambda p: p.write_text("cat\n" + "x" * 1001 + "\n"), "a label must be a line of at most 1000"),
    (lambda p: p.write_text("cat\n\x1b[31mred\n"), "got '\\x1b[31mred'"),
    # one line to `wc -l` and every editor: str.splitlines read a form feed or U+2028 as two names
    (lambda p: p.write_text("cat\fdog\n"), "got 'cat\\x0cdog'"),
    (lambda p: p.write_text("cat\u2028dog\n"), "got 'cat\\u2028dog'"),
    (lambda p: sparse_file(p, (16 << 20) + 1), "the labels file is over 16 MB"),
    (lambda p: os.mkfifo(p), "not a regular file"),
])
@pytest.mark.usefixtures("fails_if_it_hangs")
def test_bad_labels_files_are_refused(write_spec, tmp_path, make, match):
    labels = tmp_path / "labels.txt"
    make(labels)
    with pytest.raises(GraphconvError) as err:
        load_spec(write_spec("labels: labels.txt\n" + BASE))
    message = str(err.value)
    assert match in message and message.startswith("labels.txt:") and "\n" not in message


def test_a_missing_labels_file_is_named_at_the_line_of_the_spec_naming_it(write_spec):
    with pytest.raises(FileNotFoundError) as err:
        load_spec(write_spec("labels: labels.txt\n" + BASE))
    assert str(err.value).startswith("net.yaml:1: labels file 'labels.txt' not found: a spec's files are read from")


def test_dev_zero_as_labels_is_never_read(write_spec):
    with pytest.raises(GraphconvError, match="not a regular file"):
        load_spec(write_spec(BASE), labels="/dev/zero")


def test_bad_weights_via_the_spec_name_the_weights_file(write_spec, tmp_path):
    spec = TINY.replace("layers:", "weights: w.npz\nlayers:")
    weights = {"conv1.weight": np.zeros((8, 3, 5, 5), np.float32), "conv1.bias": np.zeros(8, np.float32),
               "fc1.weight": np.zeros((10, 2048), np.float32), "fc1.bias": np.full(10, np.nan, np.float32)}
    np.savez(tmp_path / "w.npz", **weights)
    with pytest.raises(GraphconvError, match=r"^w.npz: weights 'fc1.bias' has NaN values, the first at \[0\]$"):
        load_spec(write_spec(spec))
    (tmp_path / "w.npz").write_bytes(b"\x93NUMPY")
    with pytest.raises(GraphconvError, match="a single .npy array, not an .npz archive"):
        load_spec(write_spec(spec))
    for key in ("no_dot", "../../evil", "conv1."):  # a path's dots are not a layer's
        np.savez(tmp_path / "w.npz", **{key: np.zeros(3, np.float32)})
        with pytest.raises(GraphconvError, match=rf"^w.npz: has an array named '{re.escape(key)}', which is not of "
                                                 "the form LAYER.PARAM"):
            load_spec(write_spec(spec))


# ---- sizes: nothing big is allocated for a small file -----------------------------------------

@pytest.mark.parametrize("text,match,line", [
    (LAYER + "{name: a, op: conv, out_channels: 1000000000, kernel_size: 1}\n",
     "layer 'a': its output for one crop (1000000000x8x8) needs about 238.4 GB, over the memory limit", 3),
    ("input: {shape: [3, 100000, 100000]}\nlayers:\n  - {name: fc, op: fc, out_features: 10}\n",
     "the input crop 3x100000x100000 needs about 111.8 GB", 1),
    ("input: {shape: [3, 1000, 1000]}\nlayers:\n  - {name: fc, op: fc, out_features: 100000}\n",
     "seeding random weights (the spec names no weights file; the largest array is 100000x3000000, in layer "
     "'fc') needs about", None),
    (LAYER + "{name: a, op: conv, out_channels: 64, kernel_size: 1, padding: 2147483647}\n",
     "layer 'a': its output for one crop", 3),
    (LAYER + "{name: a, op: conv, out_channels: 2147483647, kernel_size: 1, padding: 2147483647}\n"
     "  - {name: f, op: fc, out_features: 2147483647}\n", "its output for one crop", 3),
])
def test_huge_sizes_are_refused_before_allocating(write_spec, small_budget, text, match, line):
    refused(write_spec(text), match, line, seconds=2.0)


def test_task_segmentation_is_read_written_and_kept_by_compile(write_spec, tmp_path):
    """`task: segmentation` makes the map the network's whole output (Model.segmentation);
    a spec written back and a compiled model keep it; anything but the two tasks is refused."""
    from graphconv.compiler import compile_model
    from graphconv.model import Model

    text = """
    name: seg
    input: {shape: [2, 12, 12]}
    task: segmentation
    layers:
      - {name: c, op: conv, out_channels: 3, kernel_size: 3, padding: 1}
    """
    graph = load_spec(write_spec(text))
    assert graph.meta["task"] == "segmentation" and "task: segmentation" in spec_text(graph)
    compile_model(graph).save(tmp_path / "m")
    model = Model.load(tmp_path / "m")
    assert model.segmentation and model.map_size(20, 30) == (20, 30)
    classifier = Model.load(write_spec(text.replace("task: segmentation", "task: classification"), "c.yaml"))
    assert not classifier.segmentation and classifier.map_size(20, 30) == (9, 19)  # one cell per crop
    with pytest.raises(GraphconvError, match=r"net.yaml:3: 'task' must be one of \['classification', "
                                             r"'segmentation'\], got 'detection'"):
        load_spec(write_spec(text.replace("segmentation", "detection")))


BLOCK_STYLE = """
input:
  name: data
  shape: [3, 16, 16]
layers:
  - name: c1
    op: conv
    out_channels: 4
    kernel_size: 3

    stride: {stride}
  - name: c2
    op: conv
    out_channels: 4
    # a comment
    kernel_size: {kernel}
    pad: {pad}
"""


@pytest.mark.parametrize("stride,kernel,pad,line,expected", [
    (-2, 3, 0, 10, "layer 'c1': 'stride' must be an integer >= 1"),
    (1, 30, 0, 15, "layer 'c2': kernel of 30x30"),
    (1, 3, -1, 16, "layer 'c2': 'padding' must be"),  # a Caffe alias's own line
])
def test_an_error_about_one_parameter_points_at_its_line(write_spec, stride, kernel, pad, line, expected):
    """A block-style layer spans lines: 'stride: -2' on line 10 was reported at the layer's
    first line, 5, and a kernel that does not fit at its layer's too."""
    path = write_spec(BLOCK_STYLE.format(stride=stride, kernel=kernel, pad=pad).lstrip())
    with pytest.raises(GraphconvError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"net.yaml:{line}: ") and expected in str(err.value)


@pytest.mark.parametrize("op,hint", [("Conv", "conv"), ("max_pool", "maxpool"), ("linear", "fc"),
                                     ("InnerProduct", "fc"), ("Gemm", "fc"), ("MaxPool2d", "maxpool"),
                                     ("BatchNorm2d", "batchnorm"), ("maxpol", "maxpool"), ("GELU", "gelu"),
                                     ("Mul", "mul"), ("LeakyReLU", "leaky_relu"), ("LogSoftmax", "log_softmax"),
                                     ("DepthToSpace", "depth_to_space"), ("Multiply", "mul")])
def test_an_unknown_op_suggests_graphconvs_name(write_spec, op, hint):
    path = write_spec(f"input: {{shape: [2, 8, 8]}}\nlayers:\n  - {{name: a, op: {op}}}\n")
    with pytest.raises(GraphconvError) as err:
        load_spec(path)
    assert f"unknown op '{op}': did you mean '{hint}'? (known: " in str(err.value)


def test_every_op_alias_is_another_name_than_the_ops_own():
    """"gelu": "gelu" and "mul": "mul" did nothing: a name that is the op's own, in any case
    and with or without '_', is matched before the aliases are looked at."""
    from graphconv.ops.registry import OP_ALIASES, user_ops

    own = {op.replace("_", "") for op in user_ops()}
    assert not own & set(OP_ALIASES) and set(OP_ALIASES.values()) <= set(user_ops())


def test_the_known_ops_listed_are_those_a_spec_may_name(write_spec):
    """interleave and shift_copies are shift-and-stitch's halves, made by output-stride
    (and loaded back from compiled models), not ops to write by hand."""
    path = write_spec("input: {shape: [2, 8, 8]}\nlayers:\n  - {name: a, op: nonsense}\n")
    with pytest.raises(GraphconvError) as err:
        load_spec(path)
    known = str(err.value).split("(known: ")[1]
    assert "conv" in known and "interleave" not in known and "shift_copies" not in known
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize("written,value", [("-inf", -np.inf), ("-.inf", -np.inf), ("'-inf'", -np.inf),
                                           ("inf", np.inf), ("-Infinity", -np.inf)])
def test_infinity_written_as_text_is_taken_where_a_parameter_allows_it(write_spec, written, value):
    """YAML reads `-inf` as a string: the error said "must be a finite number or -inf or
    inf, got '-inf'"."""
    path = write_spec("input: {shape: [2, 8, 8]}\nlayers:\n"
                      f"  - {{name: p, op: pad, padding: 1, value: {written}}}\n"
                      "  - {name: m, op: maxpool, kernel_size: 3}\n")
    assert load_spec(path).node("p").params["value"] == value


def test_infinity_as_text_is_still_refused_where_a_parameter_must_be_finite(write_spec):
    path = write_spec("input: {shape: [2, 8, 8]}\nlayers:\n  - {name: c, op: clip, min: -inf}\n")
    with pytest.raises(GraphconvError, match=r"'min' must be a finite number, got '-inf'"):
        load_spec(path)


DEAD_BRANCH = """
name: deadbranch
input: {name: data, shape: [2, 12, 12]}
layers:
  - {name: c1, op: conv, out_channels: 3, kernel_size: 3}
  - {name: b1, op: maxpool, kernel_size: 2, inputs: [data]}
  - {name: b1c, op: conv, out_channels: 3, kernel_size: 2, padding: 1}
  - {name: fc, op: fc, out_features: 2, inputs: [c1]}
"""


def test_layers_that_reach_no_output_are_dropped_and_owe_no_weights(write_spec, tmp_path):
    """b1/b1c fed nothing, yet the weights file had to hold b1c's weights, and compile's
    padding note and verify spoke of b1c."""
    from graphconv.dense import padded_layers
    from graphconv.ops.registry import get_op
    from graphconv.params import normalize_params
    from graphconv.shapes import dropped_layers_note

    spec = write_spec(DEAD_BRANCH)
    live = load_spec(spec)
    assert "b1" not in live and "b1c" not in live and live.meta["dropped_layers"] == ["b1", "b1c"]
    assert "layers b1, b1c of deadbranch reach no output and are dropped" in dropped_layers_note(live)
    np.savez(tmp_path / "w.npz", **{"c1.weight": np.ones((3, 2, 3, 3), np.float32), "c1.bias": np.zeros(3, np.float32),
                                    "fc.weight": np.ones((2, 3 * 10 * 10), np.float32),
                                    "fc.bias": np.zeros(2, np.float32)})
    assert load_spec(spec, weights=tmp_path / "w.npz").find("conv")[0].name == "c1"  # no b1c weights needed
    built = live.copy()  # a graph built in Python keeps what it is given: its padding note ignores the dead
    built.add("dead", "conv", ["data"], normalize_params(get_op("conv"), {"out_channels": 1, "kernel_size": 3,
                                                                      "padding": 1}),
              {"weight": np.ones((1, 2, 3, 3), np.float32), "bias": np.zeros(1, np.float32)})
    assert padded_layers(built) == []


def test_a_blank_line_among_the_labels_is_refused_and_trailing_ones_ignored(write_spec, tmp_path):
    """A 5-line file with a blank third line was read as 4 labels, silently: every class
    after it would have had the next one's name."""
    from graphconv.frontends.yaml import labels_mismatch

    (tmp_path / "five.txt").write_text("a\nb\n\nd\ne\n")
    spec = write_spec("labels: five.txt\ninput: {shape: [2, 4, 4]}\n"
                      "layers: [{name: c, op: conv, out_channels: 4, kernel_size: 1}]\n")
    with pytest.raises(GraphconvError, match=r"five.txt:3: line 3 is blank: a labels file names one class per line"):
        load_spec(spec)
    (tmp_path / "five.txt").write_text("a\nb\nc\n\n\n")
    graph = load_spec(spec)
    assert graph.meta["labels"] == ["a", "b", "c"]
    error = labels_mismatch(graph, 4)
    assert str(error).startswith("five.txt: the labels file has 3 names (one per line), but the model has 4 classes")
    assert labels_mismatch(graph, 3) is None


def test_an_empty_spec_says_the_file_is_empty(write_spec):
    with pytest.raises(GraphconvError, match=r"net.yaml:1: the file is empty"):
        load_spec(write_spec("\n  \n"))


def test_numbers_with_an_exponent_are_floats_as_pytorch_prints_them(write_spec):
    """YAML 1.1 reads a float only with a dot and a signed exponent: `eps: 1e-5`, as
    PyTorch prints a batchnorm's, was text, refused as "must be a finite number, got
    '1e-5'"; so were `std: [1e-3]` and `1.0e38`."""
    graph = load_spec(write_spec("""
        preprocess: {scale: 1.0e0, mean: [0, 0], std: [1e-3, 2E-3]}
        input: {shape: [2, 4, 4]}
        layers:
          - {name: bn, op: batchnorm, eps: 1e-5}
    """))
    assert graph.node("bn").params["eps"] == 1e-5 and graph.meta["preprocess"]["std"] == [1e-3, 2e-3]


def test_a_name_that_reads_as_a_number_survives_the_round_trip(write_spec, tmp_path):
    """A layer named '1e5' (quoted in the spec) was written back unquoted, which the
    loader, reading numbers with an exponent as floats, took for 100000.0."""
    from graphconv.frontends.yaml import save_model

    graph = load_spec(write_spec("""
        input: {shape: [2, 4, 4]}
        layers:
          - {name: '1e5', op: conv, out_channels: 3, kernel_size: 1}
    """))
    save_model(graph, tmp_path / "m")
    assert [n.name for n in load_spec(tmp_path / "m").layers()] == ["1e5"]


def test_old_mac_line_endings_separate_labels(write_spec, tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"cat\rdog\rfish\r")
    graph = load_spec(write_spec("labels: labels.txt\ninput: {shape: [2, 4, 4]}\n"
                                 "layers: [{name: c, op: conv, out_channels: 3, kernel_size: 1}]\n"))
    assert graph.meta["labels"] == ["cat", "dog", "fish"]


def test_a_front_end_that_never_sets_the_output_is_told_at_finalize():
    """A new front end that forgot `graph.output = ...` had every layer dropped as dead and
    failed only when run: "the network has no layers"."""
    from graphconv.frontends import finalize
    from graphconv.ir import Graph

    graph = Graph("mine", "data", (1, 8, 8))
    graph.add("conv1", "conv", ["data"], params={"out_channels": 2, "kernel_size": 3})
    with pytest.raises(GraphconvError, match=r"^mine: its output is its input, 'data', so none of its 1 layer would "
                                             r"run: a front end sets graph.output"):
        finalize(graph, None, "mine")
    graph.output = "conv1"
    assert [n.name for n in finalize(graph, None, "mine").layers()] == ["conv1"]
