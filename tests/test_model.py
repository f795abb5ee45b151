"""The Python API's Model: what `run` returns (the crop grid, or the full map), output
shapes of classifiers and dense maps, classify() on what users have, cell_box."""
import re

import numpy as np
import pytest

import graphconv
from graphconv import GraphconvError
from graphconv.dense import crop_loop
from conftest import SPECS, random_input
from nets import FLOOR_SPEC


@pytest.fixture
def floor_models(write_spec):
    spec = write_spec(FLOOR_SPEC)
    return graphconv.load(spec), graphconv.compile_model(spec)


def test_run_keeps_the_crop_grid_and_full_keeps_every_cell(floor_models, rng):
    classifier, fcn = floor_models
    image = random_input(rng, (2, 1, 40, 41))
    assert fcn.map_size(40, 41) == (2, 3)
    grid = fcn.run(image)
    full = fcn.run(image, full=True)
    assert grid.shape == (2, 4, 2, 3) and full.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(full[:, :, :2, :3], grid)
    np.testing.assert_allclose(grid, crop_loop(classifier, image, 2), rtol=1e-4, atol=1e-5)
    # the extra row is a real classifier output over a field inside the image: the 37x37
    # crop at row 4 would need row 40, but the cell only reads rows 4..39
    top, _, bottom, _ = fcn.cell_box(2, 0)
    assert (top, bottom) == (4, 40)


# ---- output shapes: vectors for classifiers, maps for fully convolutional networks ----------------

NETS = {
    # fc at the end: a classifier as trained
    "fc": "  - {name: c, op: conv, out_channels: 3, kernel_size: 3}\n  - {name: f, op: fc, out_features: 4}\n",
    # global pool then flatten (SqueezeNet, ResNet without its fc): PyTorch returns (N, K)
    "flatten": "  - {name: c, op: conv, out_channels: 4, kernel_size: 3}\n  - {name: g, op: globalavgpool}\n"
               "  - {name: f, op: flatten}\n",
    # global pool without flatten: PyTorch's pooling returns N x K x 1 x 1
    "pool": "  - {name: c, op: conv, out_channels: 4, kernel_size: 3}\n  - {name: g, op: globalavgpool}\n",
    # convs only, 1x1 at the crop: a fully convolutional network
    "conv": "  - {name: c, op: conv, out_channels: 4, kernel_size: 6}\n",
}


@pytest.mark.parametrize("net,vectors", [("fc", True), ("flatten", True), ("pool", False), ("conv", False)])
def test_a_classifier_returns_vectors_and_a_dense_network_maps(write_spec, rng, net, vectors):
    model = graphconv.load(write_spec("input: {shape: [2, 6, 6]}\nlayers:\n" + NETS[net]))
    x = random_input(rng, (3, 2, 6, 6))
    assert model.returns_vectors is vectors
    assert model.run(x).shape == ((3, 4) if vectors else (3, 4, 1, 1))
    assert model.run(x, full=True).shape == (3, 4, 1, 1)  # what the network computed, as it did
    np.testing.assert_array_equal(model.run(x, full=True).reshape(3, 4), model.run(x).reshape(3, 4))
    fcn = graphconv.compile_model(model.graph)  # fc-to-conv, remove-flatten: always maps
    assert not fcn.returns_vectors and fcn.run(x).shape == (3, 4, 1, 1)
    np.testing.assert_allclose(fcn.run(x).reshape(3, 4), model.run(x).reshape(3, 4), rtol=1e-5, atol=1e-6)


def test_the_shape_rule_is_the_same_on_every_device(write_spec, rng):
    from graphconv.backends import get_backend
    if get_backend("cuda").status() is not None:
        pytest.skip(f"CUDA unusable: {get_backend('cuda').status()}")
    model = graphconv.load(write_spec("input: {shape: [2, 6, 6]}\nlayers:\n" + NETS["fc"]))
    x = random_input(rng, (2, 2, 6, 6))
    on_cuda = model.run(x, device="cuda")
    assert on_cuda.shape == model.run(x).shape == (2, 4)
    np.testing.assert_allclose(on_cuda, model.run(x), rtol=1e-5, atol=1e-6)


def test_a_flattened_network_on_a_larger_image_still_returns_vectors(write_spec, rng):
    """As in PyTorch, where a global pool and a flatten make any input size one vector."""
    model = graphconv.load(write_spec("input: {shape: [2, 6, 6]}\nlayers:\n" + NETS["flatten"]))
    assert model.run(random_input(rng, (1, 2, 10, 12))).shape == (1, 4)


# ---- inputs run refuses: nothing to run, or no whole crop ------------------------------------------

@pytest.mark.parametrize("shape,message", [
    ((0, 1, 40, 40), r"the input of shape \(0, 1, 40, 40\) is empty: no images \(a batch of 0\)"),
    ((2, 1, 40, 0), r"the input of shape \(2, 1, 40, 0\) is empty: an image of no pixels"),
    ((1, 0, 40), r"the input of shape \(1, 1, 0, 40\) is empty"),
])
def test_an_empty_input_is_refused_before_it_reaches_the_kernels(floor_models, shape, message):
    """A batch of 0 used to reach the conv's work division: ZeroDivisionError."""
    _, fcn = floor_models
    with pytest.raises(graphconv.GraphconvError, match=message):
        fcn.run(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape, hint", [((32, 40, 3), r"for an \(H, W, C\) image, x.transpose\(2, 0, 1\)"),
                                         ((2, 32, 40, 3), r"for an \(N, H, W, C\) batch \(Keras' layout\), "
                                                          r"x.transpose\(0, 3, 1, 2\)")])
def test_a_channels_last_input_is_told_how_to_transpose_it(shape, hint):
    from graphconv.model import as_batch
    with pytest.raises(graphconv.GraphconvError, match=hint):
        as_batch(np.zeros(shape, np.float32), 3)


@pytest.mark.parametrize("x, hint", [(np.zeros((32, 40), np.float32), r"for an \(H, W\) grey image, x\[None\]$"),
                                     (np.array("photo.png"), r"got <U9; for an image file, Model.run_image\(path\)")])
def test_a_grey_image_or_a_file_name_given_to_run_is_told_what_to_do(x, hint):
    from graphconv.model import as_batch
    with pytest.raises(graphconv.GraphconvError, match=hint):
        as_batch(x, 1)


def test_as_batch_names_the_file_it_is_given():
    from graphconv.model import as_batch
    with pytest.raises(graphconv.GraphconvError, match=r"^/data/n0.npy: the input of shape \(0, 3, 8, 8\) is empty"):
        as_batch(np.zeros((0, 3, 8, 8), np.float32), 3, file="/data/n0.npy")


@pytest.mark.parametrize("compiled", [False, True])
def test_an_input_smaller_than_a_classifiers_crop_says_so(floor_models, rng, compiled):
    """Not "layer 'pool1': window ... does not fit in its 1x1 input": the image is smaller
    than the crop, whichever layer would run out of map first, on either axis."""
    model = floor_models[compiled]
    for size in ((5, 5), (36, 80), (80, 20)):
        with pytest.raises(graphconv.GraphconvError) as err:
            model.run(random_input(rng, (1, 1, *size)))
        assert str(err.value) == f"the input is {size[0]}x{size[1]}, smaller than the classifier's 37x37 crop"
    from graphconv.runtime import make_plan  # what `graphconv run` checks first, sizing the run
    with pytest.raises(graphconv.GraphconvError, match=r"^the input is 5x5, smaller than the classifier's 37x37 crop$"):
        make_plan(model.graph, 1, (5, 5))


def test_a_segmentation_network_takes_inputs_smaller_than_its_patch(write_spec, rng):
    model = graphconv.load(write_spec("task: segmentation\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                                      "  - {name: c, op: conv, out_channels: 2, kernel_size: 3}\n"))
    assert model.run(random_input(rng, (1, 1, 5, 7))).shape == (1, 2, 3, 5)
    with pytest.raises(graphconv.GraphconvError, match="layer 'c': kernel of 3x3") as err:
        model.run(random_input(rng, (1, 1, 2, 7)))
    assert "crop" not in str(err.value)


def test_cli_run_refuses_an_empty_or_too_small_input_in_one_line(tmp_path, rng):
    import subprocess
    import sys
    from conftest import SPECS
    np.save(tmp_path / "n0.npy", np.zeros((0, 1, 40, 40), np.float32))
    np.save(tmp_path / "small.npy", random_input(rng, (1, 1, 5, 5)))
    for name, message in (("n0.npy", "n0.npy: input array of shape 0x1x40x40 is empty (an axis of size 0)"),
                          ("small.npy", "the input is 5x5, smaller than the classifier's 28x28 crop")):
        result = subprocess.run([sys.executable, "-m", "graphconv", "run", SPECS / "digits.yaml", "--input",
                                 tmp_path / name, "--output", tmp_path / "out.npy"], capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "out.npy").exists()


# ---- classify(): what users have, the spec's preprocess applied -------------------------------------

def digit_crops():
    """28x28 uint8 crops of the example page centred on digits, with their labels."""
    import json
    from conftest import ROOT
    from PIL import Image
    page = np.asarray(Image.open(ROOT / "examples" / "digits_page.png").convert("L"))
    about = json.loads((ROOT / "examples" / "digits_page.json").read_text())
    crops = []
    for digit in about["digits"]:
        cy, cx = (int(round(v)) for v in digit["centre"])
        top, left = cy - 14, cx - 14
        if 0 <= top and top + 28 <= page.shape[0] and 0 <= left and left + 28 <= page.shape[1]:
            crops.append((page[top:top + 28, left:left + 28], digit["label"]))
    return crops


def test_classify_takes_a_path_a_pillow_image_or_a_uint8_array(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    from conftest import SPECS
    classifier = graphconv.load(SPECS / "digits.yaml")
    fcn = graphconv.compile_model(SPECS / "digits.yaml")
    crops = digit_crops()[:8]
    right = 0
    for index, (crop, label) in enumerate(crops):
        Image.fromarray(crop).save(tmp_path / f"{index}.png")
        rgb = np.repeat(crop[:, :, None], 3, axis=2)  # a colour array for a grey model: converted
        answers = [classifier.classify(crop, top=3), classifier.classify(Image.fromarray(crop), top=3),
                   classifier.classify(tmp_path / f"{index}.png", top=3), classifier.classify(rgb, top=3)]
        assert all([p.index for p in a] == [p.index for p in answers[0]] for a in answers)
        np.testing.assert_allclose([p.score for p in answers[1]], [p.score for p in answers[0]], rtol=1e-6)
        best = answers[0][0]
        assert best.label == classifier.graph.meta["labels"][best.index] and len(answers[0]) == 3
        dense = fcn.classify(crop, top=1)[0]  # the compiled model on the crop: the same class and score
        assert dense.index == best.index and abs(dense.score - best.score) < 1e-4
        right += best.label == str(label)
    assert right >= 7


def test_classify_with_scales_and_flips_on_a_compiled_model(rng):
    from conftest import SPECS
    from graphconv.scales import multiscale
    from graphconv import images
    fcn = graphconv.compile_model(SPECS / "digits.yaml")
    page = rng.integers(0, 256, (40, 52), dtype=np.uint8)
    got = fcn.classify(page, scales=[32, 40], flip=True, top=None)
    x = images.preprocess(images.as_picture(page, 1), fcn.graph.meta["preprocess"])[None]
    want = multiscale(fcn, x, [32, 40], flip=True).scores[0]
    assert len(got) == 11 and [p.index for p in got] == list(np.argsort(-want, kind="stable"))
    np.testing.assert_allclose([p.score for p in got], np.sort(want)[::-1], rtol=1e-6)
    with pytest.raises(graphconv.GraphconvError, match="compile the model first"):
        graphconv.load(SPECS / "digits.yaml").classify(page, scales=[32])


@pytest.mark.parametrize("image,message", [
    (np.zeros((28, 28), np.float32), "must hold uint8 or uint16 pixels"),
    (np.zeros((28, 28), np.int16), "must hold uint8 or uint16 pixels"),
    (np.zeros((28, 28, 2), np.uint8), "with C = 1, 3 or 4"),
    ([[0, 1]], "a file path, a Pillow image or a uint8"),
])
def test_classify_refuses_what_it_cannot_read(image, message):
    from conftest import SPECS
    with pytest.raises(graphconv.GraphconvError, match=message):
        graphconv.load(SPECS / "digits.yaml").classify(image)


# ---- cell_box checks its indices ---------------------------------------------------------------

def test_cell_box_checks_its_indices(floor_models, rng):
    from graphconv.model import CellIndexError
    _, fcn = floor_models
    assert fcn.cell_box(5, 7) == (10, 14, 46, 50)  # no image yet: any cell of an unbounded map
    for bad in ((-1, 0), (0, 1.5), (True, 0)):
        with pytest.raises(CellIndexError, match="must be a whole number >= 0"):
            fcn.cell_box(*bad)
    with pytest.raises(IndexError, match=r"cell \(2, 0\) is outside the 2x3 score map of a 40x41 image"):
        fcn.cell_box(2, 0, image_size=(40, 41))
    fcn.run(random_input(rng, (1, 1, 40, 41)))
    assert fcn.cell_box(1, 2) == (2, 4, 38, 40)
    with pytest.raises(graphconv.GraphconvError, match=r"outside the 2x3 score map that run returned last "
                                                       r"\(rows 0\.\.1, columns 0\.\.2\)"):
        fcn.cell_box(1, 3)
    fcn.run(random_input(rng, (1, 1, 40, 41)), full=True)
    assert fcn.cell_box(2, 2) == (4, 4, 40, 40)  # the full map's extra row
    assert fcn.cell_box(np.int64(1), np.int64(0)) == (2, 0, 38, 36)


def test_run_tiled_warns_of_a_tile_whose_halos_are_most_of_the_work(digits_fcn, rng):
    """AlexNet over a 1000x1000 image with tile=400 (one cell a tile among 355-pixel
    halos) ran 60x slower than whole, without a word; the command said so, Python did not."""
    import warnings

    x = random_input(rng, (1, 1, 300, 400))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiled = digits_fcn.run_tiled(x, 32)
        digits_fcn.run_tiled(x, 120)
    assert [str(w.message) for w in caught] == [
        "tiles of 32x32 compute 13.99x the image's pixels (each tile's halo again); the whole image fits in one tile "
        "(model.run evaluates it whole), within the memory budget"]
    assert caught[0].filename == __file__
    np.testing.assert_allclose(tiled, digits_fcn.run(x), atol=1e-5)


def test_cell_box_keeps_to_the_users_map_through_graphconv_s_own_runs(floor_models, rng):
    """verify's crop loop, classify's scales and a tiled run's tiles each ran the model:
    cell_box then checked a cell of the user's map against whatever ran last (a 1x1
    map), and refused it."""
    from graphconv.tiling import map_transform
    original, fcn = floor_models
    x = random_input(rng, (1, 1, 60, 61))
    rows, cols = fcn.run(x).shape[2:]
    graphconv.verify(original, fcn, x)
    assert fcn.cell_box(rows - 1, cols - 1) == fcn.field.box(rows - 1, cols - 1)
    tiled = fcn.run_tiled(random_input(rng, (1, 1, 40, 41)), 38, transform=map_transform(reduce="argmax")[0])
    assert tiled.shape[2:] == (2, 3) and tiled.dtype == np.uint16
    with pytest.raises(graphconv.GraphconvError, match=r"outside the 2x3 score map that run returned last"):
        fcn.cell_box(rows - 1, cols - 1)
    with pytest.raises(graphconv.GraphconvError, match=r"pass map_transform\(...\)\[0\]"):
        fcn.run_tiled(x, 38, transform=map_transform(reduce="argmax"))


def test_a_model_that_ran_pickles_and_deep_copies(rng):
    """What it derived (executors, plans, buffers) is dropped and rebuilt on the next
    run, so it can go to a spawn pool, joblib or Dask after running."""
    import copy
    import pickle
    model = graphconv.compile_model(SPECS / "lenet.yaml")
    x = random_input(rng, (1, 1, 40, 40))
    want = model.run(x)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(twin.run(x), want)
        assert twin.graph is not model.graph
    np.testing.assert_array_equal(model.run(x), want)


def test_weights_edited_in_place_raise_and_set_weights_takes_effect(rng):
    model = graphconv.compile_model(SPECS / "lenet.yaml")
    x = random_input(rng, (1, 1, 32, 32))
    before = model.run(x).copy()
    weight = model.graph.node("conv1").weights["weight"]
    with pytest.raises(ValueError, match="read-only"):
        weight[...] = 0
    model.graph.set_weights("conv1", weight=np.zeros_like(weight))
    after = model.run(x)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, graphconv.Model(model.graph.copy()).run(x))


def test_running_a_model_leaves_the_callers_graph_as_it_was(rng):
    """The CPU's channels-last marks belong to the executor's copy, not to the graph the
    caller gave and may print or edit."""
    graph = graphconv.compile_model(SPECS / "lenet.yaml").graph
    text, version = str(graph), graph.version
    graphconv.Model(graph).run(random_input(rng, (1, 1, 40, 40)))
    assert str(graph) == text and graph.version == version
    assert not any("layout" in node.annotations for node in graph.layers())


BATCHNORM_NET = """
name: bn
task: segmentation
input: {shape: [3, 16, 16]}
layers:
  - {name: pad, op: pad, padding: 1}
  - {name: conv, op: conv, out_channels: 6, kernel_size: 3}
  - {name: bn, op: batchnorm}
  - {name: relu, op: relu}
  - {name: out, op: conv, out_channels: 2, kernel_size: 1}
"""


def test_a_model_not_compiled_runs_after_the_passes_that_keep_its_function(write_spec, rng):
    """As onnxruntime optimises a model it loads: pad and batch norm folded, the relu
    fused; the caller's graph untouched, the output that of the layers as written; a
    compiled model and one made `as_written` (verify's reference) run their own graph."""
    model = graphconv.load(write_spec(BATCHNORM_NET))
    model.graph.set_weights("bn", running_mean=rng.standard_normal(6).astype(np.float32),
                            running_var=rng.uniform(0.5, 2, 6).astype(np.float32))
    as_written = graphconv.Model(model.graph, as_written=True)
    assert [node.op for node in model.runnable_graph().layers()] == ["conv", "conv"]
    assert [node.op for node in model.graph.layers()] == ["pad", "conv", "batchnorm", "relu", "conv"]
    assert as_written.runnable_graph() is model.graph
    x = random_input(rng, (2, 3, 23, 19))
    np.testing.assert_allclose(model.run(x), as_written.run(x), rtol=1e-5, atol=1e-5)
    compiled = graphconv.compile_model(model.graph, passes="shape-inference")
    assert compiled.runnable_graph() is compiled.graph
    import pickle
    assert pickle.loads(pickle.dumps(as_written)).as_written


# ---- memory: run refuses what does not fit, before allocating ---------------------------------------

@pytest.fixture
def memory_limit():
    yield graphconv.set_memory_limit
    graphconv.set_memory_limit(None)


def test_run_refuses_an_image_over_the_memory_limit_before_allocating(floor_models, memory_limit, monkeypatch):
    """The refusal names the tile run_tiled takes, with the map it holds in memory beside
    it (the tile that fit alone was then refused by run_tiled), or, where the map alone
    is over the limit, says to write it to a file."""
    classifier, fcn = floor_models
    memory_limit("256M")
    slide = np.broadcast_to(np.float64(0), (1, 1, 6000, 6000))  # no memory of its own; float32 would be 137 MB
    monkeypatch.setattr(type(fcn), "executor", lambda *a, **k: pytest.fail("the run started"))
    with pytest.raises(GraphconvError) as err:
        fcn.run(slide)
    message = str(err.value)
    assert message.startswith("running floor on 1 image of 6000x6000 needs about ") and "\n" not in message
    assert "over the memory limit of 256.0 MB (raise it with --memory-limit, or graphconv.set_memory_limit" in message
    tile = int(re.search(r"Model.run_tiled\(x, tile\) computes the same map tile by tile in bounded memory "
                         r"\(tile=(\d+) fits beside the map it holds in memory \(out=None\)\)$", message).group(1))
    with pytest.raises(GraphconvError, match=r"a tile of 4000x4000 pixels needs about .* over the memory limit of "
                                             rf"256.0 MB .*; a smaller tile: tile={tile} fits beside the map"):
        fcn.run_tiled(slide, 4000)  # run_tiled checked nothing: the hint sent users into any tile's run
    with pytest.raises(pytest.fail.Exception, match="the run started"):  # the tile named is taken, map and all
        fcn.run_tiled(slide, tile)
    memory_limit("64M")  # less than the 2982x2982 map of 4 classes
    with pytest.raises(GraphconvError, match=r"in bounded memory \(its 2982x2982 map alone takes 135.7 MB in memory: "
                                             r"pass out= a np.memmap or zarr array to write it to\)$"):
        fcn.run(slide)
    crops = np.broadcast_to(np.float32(0), (20000, 1, 37, 37))
    with pytest.raises(GraphconvError, match=r"running floor on 20000 images of 37x37 .*; run fewer images at "
                                             "a time$"):
        classifier.run(crops)


@pytest.mark.parametrize("load", [graphconv.load, graphconv.compile_model], ids=["load", "compile_model"])
def test_a_labels_file_that_does_not_name_every_class_is_refused_from_python_too(load, tmp_path):
    """The CLI refused it; graphconv.load took it, and classify named the classes past
    its last line 'class 9' (compile_model then blamed the passes)."""
    (tmp_path / "nine.txt").write_text("\n".join(f"digit {i}" for i in range(9)) + "\n")
    with pytest.raises(GraphconvError, match=r"the labels file has 9 names \(one per line\), but the model has 10 "
                                             r"classes") as caught:
        load(SPECS / "lenet.yaml", labels=tmp_path / "nine.txt")
    assert str(caught.value).startswith("nine.txt: ")


def test_map_size_takes_whole_numbers_and_run_a_tensor_that_requires_grad(floor_models, rng):
    """map_size(50.5, 60) gave a row count of 6.0; a tensor a torch model hands back
    (requires_grad) raised torch's own 'Can't call numpy()'."""
    torch = pytest.importorskip("torch")
    _, fcn = floor_models
    with pytest.raises(GraphconvError, match="map_size: the height is a whole number of pixels, got 50.5"):
        fcn.map_size(50.5, 60)
    x = random_input(rng, (1, 1, 40, 41))
    np.testing.assert_array_equal(fcn.run(torch.from_numpy(x).requires_grad_()), fcn.run(x))


@pytest.mark.parametrize("load", [graphconv.load, graphconv.compile_model], ids=["load", "compile_model"])
def test_labels_given_as_a_list_of_names_or_set_on_the_model(load):
    """A notebook's labels are a list: load(..., labels=[...]) raised os.fspath's
    TypeError, and `model.labels = [...]` had no setter."""
    names = [f"digit {i}" for i in range(10)]
    model = load(SPECS / "lenet.yaml", labels=names)
    assert model.labels == names
    model.labels = tuple(reversed(names))
    assert model.labels == names[::-1] and model.graph.meta["labels"] == names[::-1]
    model.labels = None
    assert model.labels is None
    for bad, message in ((names[:9], r"9 class names for 10 classes"), ("labels.txt", r"a labels file is read by"),
                         ([1, 2], r"labels must be a list of class names \(strings\)"), (3, r"not int")):
        with pytest.raises(GraphconvError, match=message):
            model.labels = bad
    with pytest.raises(GraphconvError, match=r"9 class names for 10 classes"):
        load(SPECS / "lenet.yaml", labels=names[:9])


@pytest.fixture(scope="module")
def digits_fcn():
    return graphconv.compile_model(SPECS / "digits.yaml")


@pytest.mark.parametrize("klass", ["7", "top", "background"])
def test_heatmap_from_python_is_the_picture_the_command_draws(digits_fcn, tmp_path, klass):
    """A notebook had no way to draw a map but the CLI (or images.render_heatmap, given
    the cells' geometry by hand)."""
    from PIL import Image
    from conftest import ROOT, graphconv_in_process

    page = ROOT / "examples" / "digits_page.png"
    model_dir = tmp_path / "fcn"
    digits_fcn.save(model_dir)
    drawn = tmp_path / "cli.png"
    result = graphconv_in_process("run", model_dir, "--image", page, "--heatmap", klass, "--heatmap-out", drawn)
    assert result.returncode == 0, result.stderr
    index = int(klass) if klass.isdigit() else klass
    computed = digits_fcn.heatmap(str(page), index)
    given = digits_fcn.heatmap(Image.open(page), index, scores=digits_fcn.run_image(page))
    for picture in (computed, given):
        assert picture.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(picture), np.asarray(Image.open(drawn).convert("RGB")))


@pytest.mark.parametrize("call, message", [
    (lambda m, page: m.heatmap(page, "seven"), r"heatmap: class 'seven': no class of that name"),
    (lambda m, page: m.heatmap(page, 11), r"heatmap: class 11: the model has 11 classes \(0 to 10\)"),
    (lambda m, page: m.heatmap(page, 3.0), r"heatmap: class 3.0: a class is its index \(a whole number\) or its name"),
    (lambda m, page: m.heatmap(page, 3, opacity=0), r"opacity is more than 0 and at most 1, got 0"),
    (lambda m, page: m.heatmap(page, 3, scores=np.zeros((1, 11, 68, 94), np.float32)),
     r"scores of shape \(1, 11, 68, 94\) are not this picture's map: run_image gives \(1, 11, 69, 94\) for its "
     r"300x400 pixels"),
    (lambda m, page: graphconv.load(SPECS / "digits.yaml").heatmap(page, 3),
     r"digits as written gives one class vector per image, not a map to draw"),
])
def test_heatmap_from_python_refuses_what_it_cannot_draw(digits_fcn, call, message):
    from conftest import ROOT
    with pytest.raises(GraphconvError, match=message):
        call(digits_fcn, ROOT / "examples" / "digits_page.png")


def test_export_writes_the_file_graphconv_export_writes_and_refuses_a_model_of_yours(tmp_path, rng):
    """A notebook user had no Python function for `graphconv export`."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from conftest import graphconv_in_process

    fcn = graphconv.compile_model(SPECS / "lenet.yaml")
    fcn.save(tmp_path / "fcn")
    (said,) = fcn.export(tmp_path / "py.onnx")  # lenet states no preprocess: the file cannot either
    assert "py.onnx states no preprocess" in said
    assert graphconv_in_process("export", tmp_path / "fcn", "-o", tmp_path / "cli.onnx").returncode == 0
    assert (tmp_path / "py.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    session = ort.InferenceSession(str(tmp_path / "py.onnx"), providers=["CPUExecutionProvider"])
    x = random_input(rng, (2, *fcn.crop_shape[:1], 40, 44))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0],
                               fcn.executor("cpu").run(x), rtol=1e-4, atol=1e-5)
    (tmp_path / "trained.onnx").write_bytes(b"a model of the user's")
    with pytest.raises(GraphconvError, match="trained.onnx: is already there and is not an ONNX file graphconv"):
        fcn.export(tmp_path / "trained.onnx")
    assert (tmp_path / "trained.onnx").read_bytes() == b"a model of the user's"
    with pytest.raises(GraphconvError, match="path would write over"):
        graphconv.load(tmp_path / "fcn").export(tmp_path / "fcn" / "model.yaml")


def test_run_on_raw_pixels_of_a_model_with_a_preprocess_warns(rng):
    """run takes the network's input, preprocessed; 0..255 pixels given to digits (whose
    preprocess inverts them onto 1..0) mapped nonsense without a word."""
    import warnings
    from graphconv.errors import GraphconvWarning
    fcn = graphconv.compile_model(SPECS / "digits.yaml")
    pixels = rng.integers(0, 256, (1, 1, 40, 40)).astype(np.float32)
    with pytest.warns(GraphconvWarning, match=r"the input's values reach 25\d, but this model's preprocess puts "
                                              r"pixels \(0..255\) in 0..1: run takes input already preprocessed; "
                                              r"for pixels, run_image\(x\)") as said:
        fcn.run(pixels)
    assert said[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphconvWarning)
        fcn.run_image(pixels[0, 0].astype(np.uint8))  # read and preprocessed: nothing to say
        fcn.run(fcn.prepare_image(pixels[0, 0].astype(np.uint8)))


def test_heatmap_top_of_a_multi_label_model_leaves_clear_the_cells_calling_no_class(write_spec, rng):
    """Findings of their own (a sigmoid over 3 classes): a cell whose best probability
    is 0.1 was coloured as its best finding; it is left as the picture, and the legend
    counts it."""
    model = graphconv.load(write_spec("name: findings\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                                      "  - {name: c1, op: conv, out_channels: 4, kernel_size: 5, stride: 2}\n"
                                      "  - {name: c2, op: conv, out_channels: 3, kernel_size: 6}\n"
                                      "  - {name: p, op: sigmoid}\n"))
    page = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    scores = model.run_image(page)
    scores[:] = 0.1
    rows, cols = scores.shape[2:]
    scores[0, 1, :, cols // 2:] = 0.9  # the right half calls class 1, the left half nothing
    drawn = model.heatmap(page, "top", scores=scores)
    assert f"no class at 0.5: the picture as it is ({rows * (cols // 2)} cells)" in drawn.info["legend"]
    left, top, right, bottom = drawn.info["panel_box"]
    panel = np.asarray(drawn)[top:bottom, left:right]
    scale = panel.shape[0] // page.shape[0]  # a small picture is drawn larger
    band = slice(20 * scale, 40 * scale)
    clear, coloured = panel[band, 12 * scale:20 * scale], panel[band, 60 * scale:70 * scale]
    assert (clear[..., 0] == clear[..., 1]).all() and (clear[..., 1] == clear[..., 2]).all()  # the grey picture
    assert not (coloured[..., 0] == coloured[..., 2]).all()
