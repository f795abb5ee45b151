"""The front-end seam (graphconv.frontends): a plugin's `FrontEnd` reads its own files
wherever a network is read (graphconv.load, compile, run, import), claimed by name or by
their first bytes, ahead of the refusal of other frameworks' files."""
import numpy as np
import pytest

import graphconv
from graphconv import frontends
from graphconv.dense import crop_loop
from graphconv.errors import GraphconvError
from conftest import graphconv_in_process, random_input

# A made-up format, one layer per line, as a plugin author would write its front end.
TINY_FRONTEND = '''
from pathlib import Path

from graphconv.errors import GraphconvError, Location
from graphconv.frontends import FrontEnd, register_frontend
from graphconv.ir import Graph

LAYERS = {"conv": ("out_channels", "kernel_size"), "relu": (), "maxpool": ("kernel_size",), "fc": ("out_features",)}


def read_tiny(path: Path, crop_size):
    lines = path.read_text().splitlines()
    if crop_size is not None:
        raise GraphconvError("a tiny net states its crop on its first line", file=str(path))
    c, h, w = (int(v) for v in lines[0].split()[1:])
    graph = Graph(path.stem, "data", (c, h, w), input_loc=Location(str(path), 1))
    last = "data"
    for number, line in enumerate(lines[1:], start=2):
        op, *values = line.split()
        if op not in LAYERS:
            raise GraphconvError(f"no layer {op!r}", loc=Location(str(path), number))
        params = dict(zip(LAYERS[op], (int(v) for v in values)))
        if op == "maxpool":
            params["stride"] = params["kernel_size"]
        last = graph.add(f"{op}{number}", op, [last], params, loc=Location(str(path), number)).name
    graph.output = last
    return graph, None  # no weights in the file: graphconv seeds them


register_frontend(FrontEnd("TinyNet", (".tiny", ".h5"), read_tiny, sniff=lambda head: head.startswith(b"input "),
                           states_preprocess=False))  # its notes say "a TinyNet file"
'''

TINY_NET = "input 1 12 12\nconv 4 3\nrelu\nmaxpool 2\nconv 6 3\nfc 3\n"


@pytest.fixture
def own_frontends(monkeypatch):
    """The front ends a test registers are forgotten after it."""
    monkeypatch.setattr(frontends, "_FRONTENDS", dict(frontends._FRONTENDS))


@pytest.fixture
def tiny(tmp_path, own_frontends):
    """The plugin file, and a net in its format."""
    plugin = tmp_path / "tiny_frontend.py"
    plugin.write_text(TINY_FRONTEND)
    net = tmp_path / "net.tiny"
    net.write_text(TINY_NET)
    return plugin, net


def test_a_plugin_s_front_end_reads_its_files_in_python_and_they_slide(tiny, rng):
    plugin, net = tiny
    graphconv.load_plugin(str(plugin))
    classifier = graphconv.load(net)
    assert [node.op for node in classifier.graph.layers()] == ["conv", "relu", "maxpool", "conv", "fc"]
    assert classifier.graph.meta["seeded_weights"] and classifier.graph.input_shape == (1, 12, 12)
    fcn = graphconv.compile_model(net)
    image = random_input(rng, (1, 1, 12 + 6, 12 + 4))
    np.testing.assert_allclose(fcn.run(image), crop_loop(classifier, image, 2), rtol=1e-4, atol=1e-5)


def test_a_plugin_s_front_end_reads_its_files_from_the_commands(tiny, rng, tmp_path):
    """compile and run read the plugin's format; import writes it as a spec and says its
    files state no preprocess, as run does for a model compiled from one."""
    plugin, net = tiny
    np.save(tmp_path / "x.npy", random_input(rng, (1, 1, 20, 20)))
    compiled = graphconv_in_process("compile", net, "-o", tmp_path / "fcn", "--plugin", plugin)
    assert compiled.returncode == 0, compiled.stderr
    ran = graphconv_in_process("run", tmp_path / "fcn", "--input", tmp_path / "x.npy", "--output",
                              tmp_path / "map.npy")
    assert ran.returncode == 0, ran.stderr
    assert np.load(tmp_path / "map.npy").shape == (1, 3, 5, 5)
    imported = graphconv_in_process("import", net, "-o", tmp_path / "net.yaml", "--plugin", plugin)
    assert imported.returncode == 0, imported.stderr
    assert "TinyNet files do not say how images were normalised" in imported.stderr
    assert graphconv.load(tmp_path / "net.yaml").graph.input_shape == (1, 12, 12)
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / "crop.png")
    said = graphconv_in_process("run", net, "--plugin", plugin, "--image", tmp_path / "crop.png", "--output",
                                tmp_path / "scores.npy")
    assert said.returncode == 0, said.stderr
    assert "net.tiny states no preprocess (a TinyNet file has no place for one)" in " ".join(said.stderr.split())


def test_a_front_end_claims_files_by_their_first_bytes_and_before_other_frameworks_are_refused(tiny, tmp_path):
    """A file under another name is read by the front end whose `sniff` knows its first
    bytes; a .h5 the plugin claims is read, not refused as a Keras model."""
    plugin, net = tiny
    renamed, keras_named = tmp_path / "net.txt", tmp_path / "net.h5"
    renamed.write_text(TINY_NET)
    keras_named.write_text(TINY_NET)
    with pytest.raises(GraphconvError, match="is a Keras model"):
        graphconv.load(keras_named)
    graphconv.load_plugin(str(plugin))
    assert frontends.frontend_for(renamed).name == frontends.frontend_for(keras_named).name == "TinyNet"
    assert graphconv.load(renamed).graph.input_shape == graphconv.load(keras_named).graph.input_shape == (1, 12, 12)
    with pytest.raises(GraphconvError, match="net.tiny: a tiny net states its crop on its first line"):
        graphconv.load(net, crop_size=(12, 12))
    bad = tmp_path / "bad.tiny"
    bad.write_text("input 1 8 8\nconv 2 3\nsoftplus\n")
    with pytest.raises(GraphconvError, match="bad.tiny:3: no layer 'softplus'"):
        graphconv.load(bad)


def test_a_plugin_front_end_that_crashes_is_one_line_naming_it_and_its_line(tiny, tmp_path):
    """A front end's own bug (int('four') on a value it did not check) is said in one
    line, status 2, naming the file read, the front end and the line of its code, as a
    crashed plugin pass is; --traceback shows the whole traceback."""
    plugin, _ = tiny
    bad = tmp_path / "bad.tiny"
    bad.write_text("input 1 8 8\nconv four 3\n")
    line = next(number for number, text in enumerate(TINY_FRONTEND.splitlines(), start=1)
                if "for v in values" in text)
    done = graphconv_in_process("compile", bad, "-o", tmp_path / "fcn", "--plugin", plugin)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"graphconv: bad.tiny: the TinyNet front end crashed in its read at tiny_frontend.py:{line} in <genexpr>: ValueError: "
        "invalid literal for int() with base 10: 'four' (--traceback for the whole traceback)"]
    assert not (tmp_path / "fcn").exists()
    shown = graphconv_in_process("compile", bad, "-o", tmp_path / "fcn", "--plugin", plugin, "--traceback")
    assert shown.returncode == 2 and "Traceback" in shown.stderr and "--traceback for" not in shown.stderr


def test_a_front_end_whose_sniff_crashes_is_named_when_a_file_is_read(own_frontends, tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: fc, op: fc, out_features: 2}\n")
    frontends.register_frontend(frontends.FrontEnd("Picky", (".picky",), lambda path, crop: None,
                                                   sniff=lambda head: head.decode("ascii")[20]))
    with pytest.raises(frontends.FrontEndError, match=r"net.yaml: the Picky front end crashed in its sniff at "
                                                      r".*test_frontends.py:\d+ in <lambda>: IndexError"):
        graphconv.load(spec)


def test_import_names_the_formats_it_reads_for_a_file_no_front_end_claims(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text("input: {shape: [1, 4, 4]}\nlayers:\n  - {name: fc, op: fc, out_features: 2}\n")
    done = graphconv_in_process("import", spec, "-o", tmp_path / "again.yaml")
    assert done.returncode == 2 and "import reads models of other formats (ONNX: .onnx); a spec is already a spec" \
        in done.stderr


@pytest.mark.parametrize("suffixes, message", [
    ((".onnx",), r"\.onnx files are read by the ONNX front end already"),
    (("tiny",), "suffixes are lower-case file name endings such as '.onnx'"),
    ((".TINY",), "suffixes are lower-case"),
    ((), "suffixes are lower-case"),
])
def test_register_frontend_refuses_suffixes_taken_or_malformed(own_frontends, suffixes, message):
    with pytest.raises(GraphconvError, match=message):
        frontends.register_frontend(frontends.FrontEnd("Other", suffixes, lambda path, crop: None))


LOGITS_NET = """name: logits
input: {name: data, shape: [2, 8, 8]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: relu1, op: relu}
  - {name: fc2, op: fc, out_features: OUT}
"""


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_a_logits_export_ends_in_the_activation_asked_and_its_scores_are_the_probabilities(
        write_spec, rng, activation):
    """A classifier trained with BCEWithLogitsLoss is exported without its sigmoid: nothing
    said it is multi-label (heatmap scale, calls at 0.5). `activation=` appends it; the
    scores are the logits' sigmoid (softmax) exactly, and a spec ending so is left alone."""
    from graphconv.images import output_activation
    spec = write_spec(LOGITS_NET.replace("OUT", "5"))
    x = random_input(rng, (1, 2, 8, 8))
    logits = graphconv.load(spec).run(x)
    model = graphconv.load(spec, activation=activation)
    assert output_activation(model.graph) == activation
    expected = 1 / (1 + np.exp(-logits)) if activation == "sigmoid" else np.exp(logits) / np.exp(logits).sum(1)
    np.testing.assert_allclose(model.run(x), expected, rtol=1e-5, atol=1e-6)
    again = frontends.load_network(spec, activation=activation)
    frontends.end_in_activation(again, activation, spec)
    assert [node.op for node in again.layers()].count(activation) == 1


def test_an_activation_is_refused_where_the_scores_are_not_logits(write_spec):
    """A sigmoid after a softmax (or over one score, a softmax: 1 everywhere) is a mistake
    that would run without a word."""
    ending_in_softmax = write_spec(LOGITS_NET.replace("OUT", "5") + "  - {name: prob, op: softmax}\n", "soft.yaml")
    with pytest.raises(GraphconvError, match="ends in a softmax already .layer 'prob'."):
        graphconv.load(ending_in_softmax, activation="sigmoid")
    one_score = write_spec(LOGITS_NET.replace("OUT", "1"), "one.yaml")
    with pytest.raises(GraphconvError, match="a softmax over one score is 1 everywhere.*--activation sigmoid"):
        graphconv.load(one_score, activation="softmax")
    with pytest.raises(GraphconvError, match="one of .'softmax', 'sigmoid'., not 'relu'"):
        graphconv.load(one_score, activation="relu")
