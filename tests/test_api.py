"""The Python API as a notebook user meets it: what `graphconv.load`, `compile_model`
and `run_passes` take (paths, Models, Graphs, the load options), `Model.run` and
`run_tiled` on what users hand them, preprocessing set from Python and saved, and the
names exported at the top level."""
import contextlib
import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv import GraphconvError
from conftest import random_input

SMALL = """
name: small
input: {shape: [3, 12, 12]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool, kernel_size: 2}
  - {name: fc, op: fc, out_features: 3}
"""


@pytest.fixture
def small(write_spec):
    return write_spec(SMALL)


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """An ONNX classifier exported with a dynamic height and width (its crop is 32)."""
    pytest.importorskip("onnx")
    import onnx_zoo

    path = tmp_path_factory.mktemp("onnx") / "dyn.onnx"
    onnx_zoo.export(onnx_zoo.build("resnet"), path, dynamic_hw=True)
    return path


# ---- 1. what load, compile_model and run_passes take --------------------------------------------

def test_compile_model_takes_the_model_load_returns(small, rng):
    classifier = graphconv.load(small)
    version = classifier.graph.version
    fcn = graphconv.compile_model(classifier)
    image = random_input(rng, (1, 3, 20, 18))
    np.testing.assert_array_equal(fcn.run(image), graphconv.compile_model(small).run(image))
    assert classifier.graph.version == version and classifier.returns_vectors  # left as it was
    with pytest.raises(GraphconvError, match="crop_size: options for reading a model file"):
        graphconv.compile_model(classifier, crop_size=(12, 12))


def test_run_passes_takes_a_model_a_graph_or_a_path(small):
    model = graphconv.load(small)
    converted = graphconv.run_passes(model, "default")
    assert isinstance(converted, graphconv.Model) and not converted.returns_vectors
    assert model.returns_vectors
    assert isinstance(graphconv.run_passes(model.graph, "default"), graphconv.Graph)
    graph = graphconv.run_passes(str(small), "shape-inference,fc-to-conv")
    assert isinstance(graph, graphconv.Graph) and not graph.find("fc")


def test_compile_model_takes_loads_options(small, tmp_path):
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    fcn = graphconv.compile_model(small, labels=tmp_path / "names.txt", task="classification",
                                  preprocess={"scale": 0.5}, verify_each=False)
    assert fcn.graph.meta["labels"] == ["a", "b", "c"] and fcn.preprocess == {"scale": 0.5}


def test_a_model_s_labels_are_its_class_names_checked_against_its_classes(small, tmp_path):
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    fcn = graphconv.compile_model(small, labels=tmp_path / "names.txt")
    assert fcn.labels == ["a", "b", "c"] and graphconv.load(small).labels is None
    assert fcn.classify(np.zeros((12, 12, 3), np.uint8), top=1)[0].label in ("a", "b", "c")
    fcn.graph.meta["labels"] = ["a", "b"]  # set by hand in a notebook: classify said "class 2" for the third
    for use in (lambda: fcn.labels, lambda: fcn.classify(np.zeros((12, 12, 3), np.uint8))):
        with pytest.raises(GraphconvError, match=r"graph.meta\['labels'\] has 2 names, but the model has 3 "
                                                 "classes \\(output 'fc'\\): give one name per class"):
            use()


def test_a_dynamic_onnx_model_takes_its_crop_from_python(dynamic_onnx):
    with pytest.raises(GraphconvError, match=r"--crop-size H W \(from Python, crop_size=\(H, W\)\)"):
        graphconv.load(dynamic_onnx)
    assert graphconv.load(dynamic_onnx, crop_size=32).crop_shape == (3, 32, 32)
    assert graphconv.load(dynamic_onnx, crop_size=np.int64(32)).crop_shape == (3, 32, 32)
    fcn = graphconv.compile_model(dynamic_onnx, crop_size=(32, 32))
    assert fcn.crop_shape == (3, 32, 32) and not fcn.returns_vectors


@pytest.mark.parametrize("crop_size", ["32", (32,), (32, 0), (32.0, 32), True, (32, 32, 3)])
def test_a_bad_crop_size_is_one_clear_error(dynamic_onnx, crop_size):
    with pytest.raises(GraphconvError, match="crop_size is the training crop"):
        graphconv.load(dynamic_onnx, crop_size=crop_size)


def test_load_refuses_what_is_not_a_path():
    with pytest.raises(GraphconvError, match="a model to load is a path.*not bytes"):
        graphconv.load(b"\x08\x01")


# ---- 5. preprocessing from Python, and a save that loads back ---------------------------------------

def test_a_broken_link_is_said_to_be_one(tmp_path):
    (tmp_path / "page.png").symlink_to("moved/page.png")
    with pytest.raises(FileNotFoundError, match="page.png: is a broken link: what it points to, moved/page.png, is "
                                                "not there"):
        graphconv.load_image(tmp_path / "page.png")


@pytest.mark.parametrize("load, name", [(graphconv.load, "net.yaml"), (graphconv.load, "net.onnx"),
                                        (graphconv.load_image, "page.png")])
def test_a_missing_file_is_a_file_not_found_error_too(tmp_path, load, name):
    """A notebook's `except FileNotFoundError:` around a load catches graphconv's as it
    catches open()'s; the command still prints it as one line."""
    missing = tmp_path / name
    with pytest.raises(FileNotFoundError) as caught:
        load(missing)
    assert isinstance(caught.value, GraphconvError)
    assert caught.value.filename == str(missing) and caught.value.errno == 2
    assert str(caught.value).startswith(f"{name}: ") and "\n" not in str(caught.value)  # run in tmp_path


def test_preprocess_is_set_from_python_checked_as_a_specs_block(small):
    model = graphconv.load(small, preprocess={"scale": np.float32(0.5), "mean": 0.5, "std": (1, 2, 4)})
    assert model.preprocess == {"scale": 0.5, "mean": [0.5, 0.5, 0.5], "std": [1, 2, 4]}
    model.preprocess = {"std": np.array([1.0, 1.0, 2.0])}
    assert model.graph.meta["preprocess"] == {"std": [1.0, 1.0, 2.0]}
    for bad, message in (({"mean": [0.5, 0.5]}, "preprocess mean must be one finite number or list 3 finite number"),
                         ({"std": [1, 0, 1]}, "std must not be 0"),
                         ({"sclae": 2}, "'preprocess' takes mean, std"),
                         ([0.5], "'preprocess' must be a mapping")):
        with pytest.raises(GraphconvError, match=message):
            model.preprocess = bad
        with pytest.raises(GraphconvError, match=message):
            graphconv.load(small, preprocess=bad)
    assert model.preprocess == {"std": [1.0, 1.0, 2.0]}  # a refused block changes nothing
    model.preprocess = None
    assert model.preprocess is None and "preprocess" not in model.graph.meta


def test_save_refuses_what_load_would_refuse_before_writing(small, tmp_path):
    model = graphconv.load(small)
    model.graph.meta["preprocess"] = {"scale": 1 / 255, "mean": [0.5, 0.5], "std": [0.25]}  # edited by hand
    with pytest.raises(GraphconvError, match="cannot save the model: preprocess mean must be one finite number or "
                                             "list 3"):
        model.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    model.graph.meta["preprocess"] = {"scale": 1 / 255}
    model.graph.meta["labels"] = ["a", "b"]
    with pytest.raises(GraphconvError, match="cannot save the model: has 2 labels, but the model has 3 classes"):
        model.save(tmp_path / "out")
    with pytest.raises(GraphconvError, match="cannot save the model: has 2 labels"):  # the graph-level API too
        graphconv.save_model(model.graph, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    model.graph.meta["labels"] = ["a", "b", "c"]
    model.preprocess = {"mean": 1, "std": 2}
    model.save(tmp_path / "out")
    assert graphconv.load(tmp_path / "out").preprocess == {"mean": [1.0] * 3, "std": [2.0] * 3}


# ---- 3, 4. run_tiled: out= checked before any tile, inputs checked as run checks them -------------------

@pytest.fixture
def tiled(small, rng):
    fcn = graphconv.compile_model(small)
    image = random_input(rng, (2, 3, 40, 36))
    return fcn, image, fcn.run(image)


def test_run_tiled_checks_out_before_any_tile_runs(tiled, monkeypatch):
    from graphconv.tiling import DenseGrid, map_transform

    fcn, image, whole = tiled
    out = np.zeros(whole.shape, np.float32)
    assert fcn.run_tiled(image, 20, out=out) is out
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-6)
    argmax, _, dtype = map_transform(reduce="argmax")
    classes = np.zeros((2, 1, *whole.shape[2:]), dtype)
    fcn.run_tiled(image, 20, out=classes, transform=argmax)  # integers where the run writes classes
    np.testing.assert_array_equal(classes[:, 0], whole.argmax(1))
    monkeypatch.setattr(DenseGrid, "run", lambda *a: pytest.fail("a tile ran"))
    for bad, message in ((np.zeros((2, 5, 10, 10), np.float32), r"out= has shape \(2, 5, 10, 10\), but the map is "
                                                                 r"\(2, 3, 15, 13\)"),
                         (np.zeros(whole.shape[1:], np.float32), "out= has shape"),
                         (np.zeros(whole.shape, np.int32), "out= is int32, but the map holds scores"),
                         ([0.0], "out= is where the map is written"),
                         (np.broadcast_to(np.float32(0), whole.shape), "out= is read-only")):
        with pytest.raises(GraphconvError, match=message):
            fcn.run_tiled(image, 20, out=bad)


def test_run_tiled_into_float16_warns_that_the_scores_are_rounded(tiled):
    """A float16 out= (a map stored at half the size) was taken without a word, and the
    scores came back rounded to 3 digits where the user relied on tiled == whole."""
    from graphconv.errors import GraphconvWarning
    fcn, image, whole = tiled
    out = np.zeros(whole.shape, np.float16)
    with pytest.warns(GraphconvWarning, match="out= is float16: each score is kept to about 3 significant digits "
                                              r"\(and one beyond 65504 becomes inf\)") as said:
        fcn.run_tiled(image, 20, out=out)
    assert said[0].filename == __file__
    np.testing.assert_allclose(out, whole, rtol=2e-3, atol=1e-3)


def test_run_tiled_refuses_a_zarr_array_opened_read_only_before_any_tile(tiled, tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    from graphconv.tiling import DenseGrid

    fcn, image, whole = tiled
    zarr.open_array(tmp_path / "map.zarr", mode="w", shape=whole.shape, dtype="f4")
    monkeypatch.setattr(DenseGrid, "run", lambda *a: pytest.fail("a tile ran"))
    with pytest.raises(GraphconvError, match="out= is read-only"):
        fcn.run_tiled(image, 20, out=zarr.open_array(tmp_path / "map.zarr", mode="r"))


def test_run_tiled_checks_what_a_transform_makes_before_writing_it(tiled):
    fcn, image, whole = tiled
    out = np.zeros((2, 2, *whole.shape[2:]), np.int64)
    with pytest.raises(GraphconvError, match="out= is int64, but the map holds scores"):
        fcn.run_tiled(image, 20, out=out, transform=lambda block: block[:, :2])
    assert not out.any()
    with pytest.raises(GraphconvError, match=r"out= has shape \(2, 3, 15, 13\), but the map is \(2, 2, 15, 13\)"):
        fcn.run_tiled(image, 20, out=np.zeros(whole.shape, np.float32), transform=lambda block: block[:, :2])


def test_run_tiled_takes_and_refuses_inputs_as_run_does(tiled):
    fcn, image, whole = tiled
    np.testing.assert_allclose(fcn.run_tiled(image.tolist(), 20), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fcn.run_tiled(image[0].astype(np.float64), (20, 24)), whole[:1], rtol=1e-5, atol=1e-6)
    for bad in ((image * 10).astype(np.uint8), image[:, :2], image[0].transpose(1, 2, 0), image[0, 0]):
        with pytest.raises(GraphconvError) as whole_run:
            fcn.run(bad)
        with pytest.raises(GraphconvError) as tiled_run:
            fcn.run_tiled(bad, 20)
        assert str(tiled_run.value) == str(whole_run.value)
    with pytest.raises(GraphconvError, match=r"got shape \(40, 36, 3\); for an \(H, W, C\) image, x.transpose"):
        fcn.run_tiled(image[0].transpose(1, 2, 0), 20)
    for run in (fcn.run, lambda x: fcn.run_tiled(x, 20)):  # numpy's "inhomogeneous shape" ValueError came out
        with pytest.raises(GraphconvError, match="a list of images of different sizes cannot be one batch"):
            run([image[0], image[0, :, :30, :30]])


@pytest.mark.parametrize("tile", [0, -5, 128.0, "128", True, (20,), (20, 0)])
def test_a_bad_tile_is_one_clear_error(tiled, tile):
    fcn, image, _ = tiled
    with pytest.raises(GraphconvError, match=r"a tile is a whole number of input pixels >= 1 \(a square\), or "
                                             r"\(H, W\) of them; got "):
        fcn.run_tiled(image, tile)


def test_a_reader_returning_the_wrong_block_is_told_so(tiled):
    fcn, image, whole = tiled

    class Reader:
        height, width, channels = 40, 36, 3

        def __init__(self, block):
            self.block = block

        def read(self, top, left, bottom, right):
            return self.block(top, left, bottom, right)

    good = Reader(lambda t, l, b, r: image[0, :, t:b, l:r])
    np.testing.assert_allclose(fcn.run_tiled(good, np.int64(20)), whole[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphconvError, match=r"^the reader returned an array of shape \(3, 10, 10\) for the box "
                                             r"\(top, left, bottom, right\) = \(0, 0, 20, 20\): it was asked for "
                                             r"\(3, 20, 20\), 20x20 pixels$"):
        fcn.run_tiled(Reader(lambda *box: np.zeros((3, 10, 10), np.float32)), 20)
    with pytest.raises(GraphconvError, match=r"the reader's block for the box .*: input must be a floating-point "
                                             r"array \(float32; float16 and float64 are converted\), got uint8"):
        fcn.run_tiled(Reader(lambda t, l, b, r: np.zeros((3, b - t, r - l), np.uint8)), 20)


# ---- 6. verify, load_image and run_image at the top level -------------------------------------------

def test_verify_and_load_image_are_at_the_top_level(small, rng):
    import subprocess
    import sys

    code = "import graphconv; print(graphconv.verify.__module__, graphconv.load_image.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # nothing else imported
    assert done.stdout.split() == ["graphconv.dense", "graphconv.images"], done.stderr
    report = graphconv.verify(graphconv.load(small), graphconv.compile_model(small), random_input(rng, (1, 3, 20, 18)))
    assert report.passed and report.conversion_exact


def test_dir_lists_the_public_names_only():
    """A notebook's tab completion offered `importlib` and `TYPE_CHECKING` among them."""
    names = dir(graphconv)
    assert set(graphconv.__all__) <= set(names)
    assert not {"importlib", "TYPE_CHECKING"} & set(names) and not any(name.startswith("_") for name in names)


def test_the_names_type_checkers_see_are_the_names_graphconv_exports():
    """Each name `graphconv.<name>` gives (`_EXPORTS`, imported on first use) is the one
    the TYPE_CHECKING block imports for type checkers and IDEs, from the same module:
    a name added to one and not the other was an error only an IDE would show."""
    import ast

    tree = ast.parse(Path(graphconv.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "_TYPE_CHECKING")
    imported = {alias.asname or alias.name: (node.module, alias.name)
                for node in block.body for alias in node.names}
    assert imported == {name: where for name, where in graphconv._EXPORTS.items() if name != "install_kernel_cache"}
    assert graphconv.__all__ == sorted({*imported, "load"})
    for name, (module, attribute) in graphconv._EXPORTS.items():
        assert getattr(graphconv, name) is getattr(importlib.import_module(module), attribute)


def test_run_image_reads_and_preprocesses_a_picture(small, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = (np.random.default_rng(0).random((30, 26, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    fcn = graphconv.compile_model(small, preprocess={"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": 0.25})
    expected = fcn.run(graphconv.images.preprocess(graphconv.load_image(tmp_path / "photo.png"), fcn.preprocess))
    assert expected.shape == (1, 3, 10, 8)
    for image in (tmp_path / "photo.png", str(tmp_path / "photo.png"), pixels, Image.fromarray(pixels)):
        np.testing.assert_array_equal(fcn.run_image(image), expected)
    manual = (pixels.transpose(2, 0, 1) / 255 - np.array([0.5, 0.4, 0.3])[:, None, None]) / 0.25
    np.testing.assert_allclose(expected, fcn.run(manual.astype(np.float32)), rtol=1e-5, atol=1e-5)
    prepared = fcn.prepare_image(pixels)  # what a notebook's own crop loop and verify take
    assert prepared.shape == (1, 3, 30, 26) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared[0], manual, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(fcn.run(prepared), expected)
    resized = fcn.run(graphconv.images.preprocess(graphconv.load_image(tmp_path / "photo.png", (27, 24)),
                                                 fcn.preprocess))
    for image in (tmp_path / "photo.png", pixels, Image.fromarray(pixels)):  # run --resize 24 (30x26: 27x24, cut
        np.testing.assert_array_equal(fcn.run_image(image, resize=24), resized)  # as torchvision's Resize(24))
        np.testing.assert_array_equal(fcn.run_image(image, resize=(27, 24)), resized)
    with pytest.raises(graphconv.GraphconvError, match="resize takes a height and a width in pixels"):
        fcn.run_image(pixels, resize=(24, 21, 3))


# ---- 8. a Model says what it is -----------------------------------------------------------------------

def test_a_model_s_summary_is_inspect_s_table(small):
    """print(model) in a notebook gave the one-line repr only; the layer table was the
    command's (`graphconv inspect`)."""
    from graphconv.inspect_report import inspect_report

    fcn = graphconv.compile_model(small)
    assert fcn.summary() == inspect_report(fcn) and fcn.summary((24, 30)) == inspect_report(fcn, (24, 30))
    assert fcn.summary((24, 30)).startswith("small: input 3x24x30 (trained crop 3x12x12)")


def test_a_model_has_a_short_repr_that_says_what_run_returns(small):
    assert repr(graphconv.load(small)) == ("<graphconv.Model 'small': input 3x12x12, 3 output channels, 4 layers, "
                                           "a classifier (returns class vectors)>")
    assert repr(graphconv.compile_model(small)) == ("<graphconv.Model 'small': input 3x12x12, 3 output channels, "
                                                    "3 layers, compiled>")
    slides = graphconv.run_passes(graphconv.load(small), "fc-to-conv")  # a map on any size, not compiled
    assert repr(slides).endswith("3 output channels, 4 layers, returns maps, not compiled>")


def test_a_notebook_cell_ending_in_a_graph_a_node_a_pass_or_a_report_shows_what_it_is(small):
    from graphconv.pass_manager import get_pass

    compiled = graphconv.compile_model(small)
    assert repr(compiled.graph) == ("<graphconv.Graph 'small': input 3x12x12, 3 layers, output %fc 3x1x1; "
                                    "print() it for the IR>")
    assert repr(compiled.graph.node("fc")) == "Node('fc', op='conv', shape=3x1x1)"
    assert repr(get_pass("fc-to-conv")) == ("PassInfo('fc-to-conv', 'rewrite every fc layer as the equivalent "
                                            "convolution', origin='built-in (passes/fc_to_conv.py)')")
    report = graphconv.verify(graphconv.load(small), compiled, np.zeros((1, 3, 16, 16), np.float32))
    assert repr(report) == f"<VerifyReport: passed\n{report}>"



# ---- 9. what the command says as notes, Python says as warnings -----------------------------------------

@contextlib.contextmanager
def no_graphconv_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, graphconv.GraphconvWarning)], caught


def test_a_network_on_seeded_weights_warns_at_the_callers_line(small, tmp_path):
    with pytest.warns(graphconv.GraphconvWarning, match="small .*net.yaml. has no trained weights.*seeded") as caught:
        seeded = graphconv.load(small)
    assert caught[0].filename == __file__  # the user's line, not graphconv's
    with pytest.warns(graphconv.GraphconvWarning, match="seeded") as caught:
        graphconv.compile_model(small)
    assert caught[0].filename == __file__
    np.savez(tmp_path / "w.npz", **{f"{n.name}.{k}": v for n in seeded.graph.layers() for k, v in n.weights.items()})
    with no_graphconv_warning():
        graphconv.compile_model(graphconv.load(small, weights=tmp_path / "w.npz"))


def test_an_onnx_model_fed_unscaled_pixels_warns(dynamic_onnx, tmp_path):
    pixels = (np.random.default_rng(0).random((40, 36, 3)) * 255).astype(np.uint8)
    with pytest.warns(graphconv.GraphconvWarning) as caught:
        fcn = graphconv.compile_model(dynamic_onnx, crop_size=32)
    assert [" pad: each crop is padded" in str(w.message) for w in caught] == [True]  # its weights are in the file
    for feed in (fcn.run_image, fcn.classify, graphconv.load(dynamic_onnx, crop_size=32).classify):
        with pytest.warns(graphconv.GraphconvWarning, match="dyn.onnx states no preprocess.*0..255") as caught:
            feed(pixels)
        assert caught[0].filename == __file__
    fcn.save(tmp_path / "fcn")  # compiled from the ONNX file: still fed as they are
    with pytest.warns(graphconv.GraphconvWarning, match="dyn.onnx states no preprocess"):
        graphconv.load(tmp_path / "fcn").run_image(pixels)
    fcn.preprocess = {"scale": 1 / 255, "mean": 0.5, "std": 0.25}
    with no_graphconv_warning():
        fcn.run_image(pixels)
        fcn.classify(pixels)


def test_a_loop_over_picture_files_warns_once_per_line(dynamic_onnx, tmp_path):
    """Python's once-per-line record is reset by every warnings.catch_warnings, which
    reading each picture enters: a loop over 8 PNG paths warned 8 times (once, given the
    same pixels as arrays). A filter of the user's ("always") still has its way."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = [tmp_path / f"p{i}.png" for i in range(3)]
    for path in paths:
        Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(path)
    fcn = graphconv.compile_model(dynamic_onnx, crop_size=32)
    for action, expected in (("default", 1), ("always", 3)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter(action)
            for path in paths:
                fcn.run_image(path)
        assert [str(w.message).startswith("dyn.onnx states no preprocess") for w in caught] == [True] * expected


def test_the_command_says_notes_not_warnings(small, tmp_path, capsys):
    from graphconv.cli import main

    np.save(tmp_path / "x.npy", np.zeros((3, 12, 12), np.float32))
    with no_graphconv_warning():
        assert main(["run", str(small), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]) == 0
    assert "seeded (random) weights" in capsys.readouterr().err
