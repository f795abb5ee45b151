"""The command line as a user drives it: outputs, exit codes, and nothing written on error."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from graphconv.cli import DOT_HEAD, main
from graphconv.errors import GraphconvError
from conftest import ROOT, SPECS, graphconv_in_process
from nets import GATED, UNPADDED_BEFORE_UPSAMPLE


def run_cli(*args):
    return main([str(a) for a in args])


def test_run_spec_on_array(tmp_path, capsys):
    np.save(tmp_path / "in.npy", np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--input", tmp_path / "in.npy", "--output", tmp_path / "out.npy") == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (2, 10) and np.allclose(out.sum(axis=1), 1, atol=1e-5)  # a classifier: vectors
    captured = capsys.readouterr()
    assert "seeded (random) weights" in captured.err and "seeded" not in captured.out


POOLED = """name: pooled
input: {name: data, shape: [1, 32, 32]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: pool, op: globalavgpool}
  - {name: fc, op: fc, out_features: 3}
"""


def test_a_classifier_as_written_on_a_larger_input_says_how_to_get_a_map(tmp_path, capsys):
    """Global pooling takes any size, so the classifier runs, pooled over the whole input;
    the note says how to get the map a user with a large image wants."""
    (tmp_path / "pooled.yaml").write_text(POOLED)
    for size, noted in ((48, True), (32, False)):
        np.save(tmp_path / "in.npy", np.zeros((1, 1, size, size), np.float32))
        assert run_cli("run", tmp_path / "pooled.yaml", "--input", tmp_path / "in.npy") == 0
        err = capsys.readouterr().err
        assert ("note: pooled is run as written: one vector per image, pooled over the whole 48x48 input. For its "
                "scores on every 32x32 crop: compile it" in err) == noted, err


def test_a_classifier_that_cannot_slide_is_pointed_at_crops_only(tmp_path, capsys):
    """A squeeze-and-excitation classifier cannot be compiled to slide: the note offered
    `graphconv compile`, which then failed; it offers --crops alone, naming the layer."""
    (tmp_path / "gated.yaml").write_text(GATED)
    np.save(tmp_path / "in.npy", np.zeros((1, 3, 30, 30), np.float32))
    assert run_cli("run", tmp_path / "gated.yaml", "--input", tmp_path / "in.npy") == 0
    err = capsys.readouterr().err
    assert "For its scores on every 12x12 crop: it cannot be compiled to slide (layer 'squeeze': graphconv " \
           "compile says why), so run it crop by crop with --crops" in err, err
    assert "graphconv compile " + str(tmp_path) not in err


def test_outputs_that_would_replace_the_input_are_refused_before_any_work(tmp_path, capsys):
    """The whole-image path wrote its .npy over the input picture when --output named it."""
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "page.png")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    before = (tmp_path / "page.png").read_bytes(), (tmp_path / "x.npy").read_bytes()
    for args, message in (
            (["--image", "page.png", "--output", "page.png"], "page.png: --output is the input image"),
            (["--image", "page.png", "--heatmap", "3", "--heatmap-out", "page.png"],
             "page.png: --heatmap-out is the input image"),
            (["--input", "x.npy", "--output", "x.npy"], "x.npy: --output is the input array"),
            (["--image", "page.png", "--output", "scores.png"], "--output writes the scores (.npy, .zarr, or .tif)"),
            (["--input", "x.npy", "--output", "scores.txt"], "scores.txt: --output writes the scores as .npy, .zarr "
                                                              "or .tif: name it so")):
        args = [str(tmp_path / a) if a.endswith((".png", ".npy", ".txt")) else a for a in args]
        assert run_cli("run", SPECS / "lenet.yaml", *args) == 2
        assert message in capsys.readouterr().err
    assert ((tmp_path / "page.png").read_bytes(), (tmp_path / "x.npy").read_bytes()) == before
    assert not (tmp_path / "scores.png").exists() and not (tmp_path / "scores.txt").exists()


def test_outputs_that_would_replace_the_model_s_own_files_are_refused(tmp_path, capsys):
    """`run digits.yaml --output digits.npz` replaced the trained weights with a score map
    (exit 0); `--output` over the spec's labels, `export -o` over its weights or into a
    compiled model's folder did the same. Every file the model is read from is spared
    (a run's --output, which must now be named as a map, for that reason too)."""
    for name in ("digits.yaml", "digits.npz", "digits.labels.txt"):
        (tmp_path / name).write_bytes((SPECS / name).read_bytes())
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    assert run_cli("compile", tmp_path / "digits.yaml", "-o", tmp_path / "m") == 0
    np.savez(tmp_path / "other.npz", **np.load(tmp_path / "digits.npz"))
    before = {p.name: p.read_bytes() for p in [*tmp_path.iterdir(), *(tmp_path / "m").iterdir()] if p.is_file()}
    spec = tmp_path / "digits.yaml"
    for command in (["run", spec, "--input", "x.npy", "--output", "digits.npz"],
                    ["run", spec, "--input", "x.npy", "--output", "digits.labels.txt"],
                    ["run", spec, "--weights", "other.npz", "--input", "x.npy", "--output", "other.npz"],
                    ["export", spec, "-o", "digits.npz"],
                    ["export", tmp_path / "m", "-o", "m/model.yaml"]):
        command = [tmp_path / a if str(a).endswith((".npz", ".txt", ".npy", ".yaml")) else a for a in command]
        capsys.readouterr()
        assert run_cli(*command) == 2
        err = capsys.readouterr().err
        assert any(reason in err for reason in ("which the model is read from; write it somewhere else",
                                                "would write into the model", "writes the scores as .npy",
                                                "export writes ONNX: name the file .onnx"))
    after = {p.name: p.read_bytes() for p in [*tmp_path.iterdir(), *(tmp_path / "m").iterdir()] if p.is_file()}
    assert after == before


def test_a_refused_tif_output_writes_no_heatmap_either(tmp_path, capsys):
    """A run that gives a vector cannot write a .tif map: refused before the heatmap is drawn."""
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "crop.png")
    assert run_cli("run", SPECS / "digits.yaml", "--image", tmp_path / "crop.png", "--output", tmp_path / "o.tif") == 2
    assert "a .tif or .zarr output holds a map; this run gives a vector" in capsys.readouterr().err
    assert run_cli("run", SPECS / "digits.yaml", "--image", tmp_path / "crop.png", "--heatmap", "3",
                   "--heatmap-out", tmp_path / "hm.png", "--output", tmp_path / "o.tif") == 2
    assert "--heatmap draws a map, and digits gives one class vector per image" in capsys.readouterr().err
    assert not (tmp_path / "hm.png").exists() and not (tmp_path / "o.tif").exists()


def test_many_images_spare_a_user_s_own_npy_beside_them(tmp_path, capsys):
    """--images --output-dir beside the images: an earlier run's map is replaced, a user's
    own array of the same name is not."""
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.arange(5.0))
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("run", tmp_path / "m", "--images", tmp_path / "*.png", "--output-dir", tmp_path) == 2
    assert "a.npy: is already there and holds float64 (5,), not this run's float32 (1, 11, 4, 4)" in \
        capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(5.0))
    (tmp_path / "a.npy").unlink()
    for _ in range(2):  # the second run replaces the first's map
        assert run_cli("run", tmp_path / "m", "--images", tmp_path / "*.png", "--output-dir", tmp_path) == 0
    assert np.load(tmp_path / "a.npy").ndim == 4


def top_line(out: str) -> dict[str, str]:
    """One image's --top, "top 2 classes by ...: 7 0.006866, 3 0.005145", as {label: score}."""
    line = next(line for line in out.splitlines() if line.startswith("top "))
    return dict(pair.rsplit(" ", 1) for pair in line.split(": ", 1)[1].split(", "))


def test_top_classes_of_a_map_kept_to_some_classes_are_named_as_those(tmp_path, capsys):
    """--classes 7,3 keeps two channels: --top names them 7 and 3, not 0 and 1."""
    tifffile = pytest.importorskip("tifffile")
    page = np.asarray(pytest.importorskip("PIL.Image").open(ROOT / "examples" / "digits_page.png").convert("L"))
    tifffile.imwrite(tmp_path / "page.tif", page, tile=(64, 64))
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("run", tmp_path / "m", "--image", tmp_path / "page.tif", "--top", "11") == 0
    everything = top_line(capsys.readouterr().out)
    assert run_cli("run", tmp_path / "m", "--image", tmp_path / "page.tif", "--top", "2", "--classes", "7,3") == 0
    kept = top_line(capsys.readouterr().out)
    assert set(kept) == {"7", "3"} and all(everything[label] == score for label, score in kept.items())


def test_compile_then_run_dense(tmp_path, capsys):
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--timings") == 0
    text = capsys.readouterr().out
    assert "fc-to-conv" in text and "output stride 4x4" in text
    np.save(tmp_path / "big.npy", np.random.default_rng(0).standard_normal((1, 40, 48)).astype(np.float32))
    assert run_cli("run", tmp_path / "m", "--input", tmp_path / "big.npy", "--output", tmp_path / "o.npy",
                   "--profile") == 0
    assert np.load(tmp_path / "o.npy").shape == (1, 10, 3, 5)
    assert "GFLOP/s" in capsys.readouterr().out


def test_inspect_and_passes(capsys):
    assert run_cli("inspect", SPECS / "alexnet.yaml") == 0
    text = capsys.readouterr().out
    assert "fc6" in text and "37,752,832" in text and "total" in text
    assert "offset: the input row and column of the top-left pixel of cell (0,0)'s field" in text  # says its terms
    assert run_cli("passes") == 0
    assert "fc-to-conv" in capsys.readouterr().out


def test_inspect_profile_shows_each_layer_s_median_over_several_runs(monkeypatch, capsys):
    """inspect --profile timed one run, whose times at small sizes are noise (a layer at
    13 ms in it, 1.4 ms its median): it times several after the warm-up and shows each
    layer's median, saying how many."""
    from graphconv import profiling

    clock = [0.0]
    monkeypatch.setattr(profiling, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    class Model:  # each run takes the seconds its layers are given, on the clock above
        def __init__(self, conv1_times):
            self.times = iter(conv1_times)

        def run(self, x, device, profile):
            profile["conv1"], profile["fc"] = next(self.times), 0.001
            clock[0] += profile["conv1"] + profile["fc"]

    profile, runs = profiling.median_profile(Model([0.4, 0.001, 0.002, 0.4, 0.3]), None, "cpu")
    assert runs == 5 and profile == {"conv1": 0.3, "fc": 0.001}  # past a second after the fifth, past 3 runs
    assert profiling.median_profile(Model([0.0001] * 30), None, "cpu")[1] == 25  # at most 25
    assert profiling.median_profile(Model([6.0] * 3), None, "cpu")[1] == 2  # past 10 s, fewer than 3 runs
    monkeypatch.undo()
    assert run_cli("inspect", SPECS / "lenet.yaml", "--profile", "--threads", "1") == 0
    out = capsys.readouterr().out
    runs = int(re.search(r"per-layer times on random input of 32x32: medians of (\d+) runs after a warm-up", out)[1])
    assert 3 <= runs <= 25 and "GFLOP/s" in out
    assert "after a warm-up, on 1 thread (--threads sets them" in out  # compared with onnxruntime's at as many


@pytest.mark.parametrize("spec, advised", [("lenet", True), ("gated", False)])
def test_inspect_at_another_size_advises_fc_to_conv_only_for_a_network_that_can_slide(write_spec, capsys, spec,
                                                                                      advised):
    """A squeeze-and-excitation classifier was told to compile with fc-to-conv, which it
    cannot (compile refuses it, and inspect had just said to use run --crops)."""
    path = SPECS / "lenet.yaml" if spec == "lenet" else write_spec(GATED)
    assert run_cli("inspect", path, "--input-size", 40, 44) == 0
    text = capsys.readouterr().out
    assert ("compile with fc-to-conv" in text) == advised
    if spec == "lenet":  # fc3 over the 16x7x8 map a 40x44 input gives has no output: its weights take 16x5x5
        rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
        assert rows["pool2"][2] == "16x7x8" and rows["fc3"][2:5] == ["n/a", "48,120", "n/a"]
        assert rows["prob"][2] == "n/a" and "from 'fc3' on, outputs and MFLOP at 40x44 are n/a" in text
        conv_part = sum(float(rows[name][4]) for name in ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2"))
        assert float(rows["total"][2]) == pytest.approx(conv_part, abs=0.2)


def test_inspect_of_a_side_the_branches_do_not_meet_on_shows_the_part_run_maps(write_spec, capsys, tmp_path):
    assert run_cli("compile", write_spec(UNPADDED_BEFORE_UPSAMPLE), "-o", tmp_path / "m") == 0
    capsys.readouterr()
    assert run_cli("inspect", tmp_path / "m", "--input-size", 60, 61) == 0
    out = capsys.readouterr().out
    assert "input 2x59x61" in out and "score map: 20x21 cells at output stride 2x2, computed on the image's top-left " \
        "59x61: the network's branches meet on that size, and the pixels past it lie in no cell's crop" in out


def test_run_maps_an_image_its_branches_do_not_meet_on_whole_or_tiled(write_spec, tmp_path, rng):
    """A photo of even sides for a classifier whose branches meet on odd ones: both runs
    map it (from its top-left 299x411), where both exited 2 with a shape error."""
    from PIL import Image
    Image.fromarray(rng.integers(0, 256, (300, 412, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    spec = write_spec(UNPADDED_BEFORE_UPSAMPLE.replace("shape: [2, 21, 21]", "shape: [3, 21, 21]"))
    assert run_cli("compile", spec, "-o", tmp_path / "m") == 0
    for name, tile in (("whole", []), ("tiled", ["--tile", 64])):
        assert run_cli("run", tmp_path / "m", "--image", tmp_path / "photo.png", "--output",
                       tmp_path / f"{name}.npy", *tile) == 0
    whole = np.load(tmp_path / "whole.npy")
    assert whole.shape == (1, 3, 140, 196)
    np.testing.assert_array_equal(np.load(tmp_path / "tiled.npy"), whole)


def test_inspect_of_an_image_of_billions_of_pixels_counts_exactly(tmp_path, capsys):
    """FLOP counts past int64 (a 4e9 x 4e9 image) overflowed to a negative count, whose
    logarithm crashed inspect with a traceback."""
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    capsys.readouterr()
    assert run_cli("inspect", tmp_path / "m", "--input-size", 4_000_000_000, 4_000_000_000) == 0
    out = capsys.readouterr().out
    assert "--output-stride 2: dilate" in out and "-" not in out.split("--output-stride 2: dilate")[1].split(",")[0]


def test_inspect_offers_every_finer_stride_of_a_network_strided_more_in_rows(write_spec, capsys, tmp_path):
    """A total stride of 4x2: --output-stride 2 makes the rows finer (2x2) and compiles;
    inspect listed only 1."""
    spec = write_spec("input: {shape: [1, 16, 16]}\nlayers:\n"
                      "  - {name: c1, op: conv, out_channels: 3, kernel_size: 3, stride: [4, 2]}\n"
                      "  - {name: c2, op: conv, out_channels: 2, kernel_size: 2}\n")
    assert run_cli("inspect", spec, "--input-size", 40, 40) == 0
    out = capsys.readouterr().out
    assert "score map: 7x13 cells at output stride 4x2" in out
    assert "--output-stride 2: dilate" in out and "--output-stride 1: dilate" in out
    assert run_cli("compile", spec, "-o", tmp_path / "m", "--output-stride", 2) == 0
    assert "output stride 2x2" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["dilate", "shift"])
def test_inspect_of_a_finer_model_shows_its_dilations_and_sends_to_the_original_for_finer_strides(
        tmp_path, capsys, method):
    """A dilated model's table showed no dilation (only --print-ir-after did), and its
    "finer output strides" were the costs of refining it again, not of the original."""
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--output-stride", 2,
                   "--stride-method", method) == 0
    capsys.readouterr()
    assert run_cli("inspect", tmp_path / "m", "--input-size", 64, 64) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    assert header.split()[-1] == ("dilation" if method == "dilate" else "offset")
    if method == "dilate":
        assert [line.split()[-1] for line in out.splitlines() if line.startswith("fc")] == ["2", "2", "2"]
    assert f"this model was made finer already ({method}); inspect the original model" in out
    assert "--output-stride 1:" not in out


def test_compile_with_plugin_and_print_ir(tmp_path, capsys):
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--plugin", ROOT / "examples/my_passes.py",
                   "--passes", "fc-to-conv,strip-softmax,count-ops", "--print-ir-after", "strip-softmax") == 0
    out = capsys.readouterr().out
    assert "// ----- IR after strip-softmax -----" in out and "ops: conv x5" in out
    assert "op: softmax" not in (tmp_path / "m" / "model.yaml").read_text()
    assert "left the graph as it was" not in capsys.readouterr().err  # count-ops is an analysis: it changes nothing


OP_PLUGIN = """
import numpy as np
from graphconv import register_pass
from graphconv.ops.registry import OpDef, Param, numel, register


register(OpDef(name="hardshrink", doc="x where |x| > lambd, else 0", params=(Param("lambd", "float", 0.5),),
               shape=lambda p, s: s[0], flops=lambda p, s, o: numel(o), package="shrink_kernels",
               reference=lambda p, w, i: np.where(np.abs(i[0]) > p["lambd"], i[0], 0).astype(np.float32)))


@register_pass("relu1-to-hardshrink", "relu1 becomes hardshrink")
def relu1_to_hardshrink(graph):
    graph.replace("relu1", "hardshrink", {"lambd": 0.25})
    return True
"""


def test_a_model_compiled_with_a_plugin_s_op_names_the_plugin_every_command_needs(tmp_path, capsys, monkeypatch):
    """An op a plugin registered compiled fine, but run, verify and inspect of the compiled
    folder then said only "unknown op 'hardshrink' (known: ...)", and inspect and export
    took no --plugin: the folder records its plugins, the error names them, and every
    command that reads a model takes --plugin."""
    from graphconv.ops import registry

    plugin = tmp_path / "shrink_plugin.py"
    plugin.write_text(OP_PLUGIN)
    (tmp_path / "shrink_kernels").mkdir()
    (tmp_path / "shrink_kernels" / "__init__.py").write_text("")
    (tmp_path / "shrink_kernels" / "cpu.py").write_text(
        "import numpy as np\n\n\ndef run_hardshrink(params, weights, inputs, out):\n"
        "    out[...] = np.where(np.abs(inputs[0]) > params['lambd'], inputs[0], 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m", "--plugin", plugin, "--passes",
                   "relu1-to-hardshrink,default") == 0
    assert "plugins:" in (tmp_path / "m" / "model.yaml").read_text()
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).random((1, 1, 40, 40), dtype=np.float32))
    capsys.readouterr()
    for command in (("run", tmp_path / "m", "--input", x), ("inspect", tmp_path / "m"),
                    ("verify", tmp_path / "m", "--input-size", 40, 40), ("export", tmp_path / "m", "-o", "m.onnx")):
        registry._REGISTRY.pop("hardshrink", None)  # as a new process, which has not loaded the plugin
        assert run_cli(*command) == 2
        err = capsys.readouterr().err
        assert (f"layer 'relu1': unknown op 'hardshrink': this model was compiled with ops a plugin registers, so "
                f"every command that reads it needs the same --plugin {plugin}") in err, err
    for command in (("inspect", tmp_path / "m"), ("run", tmp_path / "m", "--input", x, "--output", "out.npy")):
        assert run_cli(*command, "--plugin", plugin) == 0
        registry._REGISTRY.pop("hardshrink")
    assert "hardshrink" in capsys.readouterr().out
    assert run_cli("export", tmp_path / "m", "-o", tmp_path / "m.onnx", "--plugin", plugin) == 2
    assert "hardshrink" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()  # no ONNX form: said


SHRINK_OP_PACKAGE = """
import numpy as np
from graphconv.ops.registry import OpDef, Param, numel, register

register(OpDef(name="{name}", doc="x where |x| > lambd, else 0", params=(Param("lambd", "float", 0.5),),
               shape=lambda p, s: s[0], flops=lambda p, s, o: numel(o), package=__name__,
               reference=lambda p, w, i: np.where(np.abs(i[0]) > p["lambd"], i[0], 0).astype(np.float32)))
"""
SHRINK_KERNEL = ("import numpy as np\n\n\ndef run_{name}(params, weights, inputs, out):\n"
                 "    out[...] = np.where(np.abs(inputs[0]) > params['lambd'], inputs[0], 0)\n")


def _op_package(folder, package: str, op: str) -> None:
    """An op of one's own as adding-an-op.md lays it out outside graphconv: a package
    `outer.inner` (`inner/__init__.py` registering it, `inner/cpu.py` its kernel)."""
    outer, inner = package.split(".")
    (folder / outer / inner).mkdir(parents=True)
    (folder / outer / "__init__.py").touch()
    (folder / outer / inner / "__init__.py").write_text(SHRINK_OP_PACKAGE.format(name=op))
    (folder / outer / inner / "cpu.py").write_text(SHRINK_KERNEL.format(name=op))


def test_a_plugin_file_imports_the_op_package_beside_it_and_the_model_names_it_from_anywhere(tmp_path, capsys,
                                                                                             monkeypatch):
    """`--plugin proj/ops_plugin.py` whose `import beside_ops.shrink` failed (ModuleNotFoundError) unless
    PYTHONPATH named its folder, where `python proj/ops_plugin.py` finds it; and the model
    recorded the plugin relative to where it was compiled, so the hint of a command run
    from another folder named a file not found there."""
    from graphconv.ops import registry

    project = tmp_path / "proj"
    _op_package(project, "beside_ops.shrink", "shrink_beside")
    (project / "ops_plugin.py").write_text(
        "import beside_ops.shrink\n\nfrom graphconv import register_pass\n\n\n"
        "@register_pass('relu1-to-shrink', 'relu1 becomes shrink_beside')\n"
        "def relu1_to_shrink(graph):\n"
        "    graph.replace('relu1', 'shrink_beside', {'lambd': 0.25})\n"
        "    return True\n")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", "m", "--plugin", "proj/ops_plugin.py", "--passes",
                   "relu1-to-shrink,default") == 0, capsys.readouterr().err
    assert "beside_ops" not in " ".join(sys.path)  # the folder was importable while the plugin loaded, not after
    np.save("x.npy", np.random.default_rng(0).random((1, 1, 40, 40), dtype=np.float32))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    registry._REGISTRY.pop("shrink_beside")  # as a new process, which has not loaded the plugin
    for module in ("beside_ops", "beside_ops.shrink", "beside_ops.shrink.cpu"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    capsys.readouterr()
    assert run_cli("run", tmp_path / "m", "--input", tmp_path / "x.npy") == 2
    assert f"needs the same --plugin {project / 'ops_plugin.py'}" in capsys.readouterr().err
    status = run_cli("run", tmp_path / "m", "--input", tmp_path / "x.npy", "--plugin", project / "ops_plugin.py")
    assert status == 0, capsys.readouterr().err


def test_a_model_of_an_op_a_script_imported_itself_names_its_module(tmp_path, monkeypatch):
    """An op package the user imported (no load_plugin) was recorded nowhere: a later
    command said only "unknown op" of the compiled folder."""
    import importlib

    _op_package(tmp_path, "own_ops.shrink", "shrink_own")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("own_ops.shrink")
    import graphconv

    graph = graphconv.load_network(SPECS / "digits.yaml")
    graph.replace("relu1", "shrink_own", {"lambd": 0.25})
    graphconv.compile_model(graph).save(tmp_path / "m")
    assert "plugins: [own_ops.shrink]" in (tmp_path / "m" / "model.yaml").read_text()


def test_inspect_draws_the_graph_as_dot_with_each_layer_s_shape(tmp_path, capsys):
    assert run_cli("inspect", SPECS / "tinydag.yaml", "--dot", tmp_path / "g.dot") == 0
    assert f"graph -> {tmp_path / 'g.dot'} (dot -Tsvg" in capsys.readouterr().out
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith(DOT_HEAD + 'digraph "tinydag"')
    assert '"stem" [label="stem\\nconv\\nout_channels=8 kernel_size=3 ' \
        'stride=2\\n8x13x11"];' in dot  # shapes at the crop, though a spec's graph holds none
    assert run_cli("inspect", SPECS / "tinydag.yaml", "--dot", tmp_path) == 2  # a folder: refused before the work
    assert "graph ->" not in capsys.readouterr().out


def test_inspect_dot_replaces_only_a_graph_it_drew(tmp_path, capsys):
    spec = tmp_path / "tinydag.yaml"
    spec.write_text((SPECS / "tinydag.yaml").read_text())
    for users_file in (spec, tmp_path / "notes.dot"):  # the spec inspected; someone's own drawing
        if not users_file.exists():
            users_file.write_text("digraph mine { a -> b; }\n")
        before = users_file.read_bytes()
        assert run_cli("inspect", spec, "--dot", users_file) == 2
        assert "is already there and is not a graph graphconv drew" in capsys.readouterr().err
        assert users_file.read_bytes() == before
    assert run_cli("inspect", spec, "--dot", tmp_path / "g.dot") == 0
    assert run_cli("inspect", spec, "--dot", tmp_path / "g.dot") == 0  # its own drawing, drawn again


def test_an_unknown_op_of_no_near_name_says_a_plugin_may_register_it(write_spec, tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text("input: {shape: [1, 8, 8]}\nlayers:\n  - {name: a, op: hardshrink}\n")
    assert run_cli("inspect", spec) == 2
    assert "an op a plugin registers needs that plugin: --plugin FILE)" in capsys.readouterr().err


def test_a_crashing_plugin_pass_is_one_line_that_names_the_option_for_its_traceback(tmp_path, capsys):
    plugin = tmp_path / "crashing.py"
    plugin.write_text("from graphconv import register_pass\n\n\n@register_pass('crashes', 'divides by zero')\n"
                      "def crashes(graph):\n    return 1 / 0\n")
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--plugin", plugin, "--passes",
                   "crashes") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "crashing.py:6 in crashes: ZeroDivisionError: division by zero" in err
    assert err.rstrip().endswith("(--traceback for the whole traceback)") and not (tmp_path / "m").exists()
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--plugin", plugin, "--passes",
                   "crashes", "--traceback") == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "return 1 / 0" in err
    assert err.rstrip().endswith("ZeroDivisionError: division by zero")  # not pointing at the option just given


@pytest.mark.parametrize("method", ["dilate", "shift"])
def test_a_pass_after_default_with_a_finer_stride_strips_the_softmax_or_is_said_idle(tmp_path, capsys, method):
    """With shift-and-stitch the output after `default` is the interleave: the docs'
    strip-softmax left the softmax in, silently, and compile said it had run."""
    plugin = ROOT / "examples/my_passes.py"
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--plugin", plugin, "--passes",
                   "default,strip-softmax", "--output-stride", 2, "--stride-method", method) == 0
    assert "op: softmax" not in (tmp_path / "m" / "model.yaml").read_text()
    assert "strip-softmax' left the graph" not in capsys.readouterr().err
    assert run_cli("compile", tmp_path / "m", "-o", tmp_path / "again", "--plugin", plugin, "--passes",
                   "strip-softmax") == 0
    assert ("note: pass 'strip-softmax' left the graph as it was (if it was to change it: where a pass stands "
            "decides what it sees, `--print-ir-before strip-softmax` shows the graph it got") in capsys.readouterr().err


@pytest.mark.parametrize("method, said", [("dilate", "dilated"), ("shift", "shift-and-stitch"),
                                          ("auto", "dilated")])
def test_verify_says_which_finer_stride_and_method_it_checked(capsys, method, said):
    assert run_cli("verify", SPECS / "lenet.yaml", "--input-size", 48, 48, "--output-stride", 2,
                   "--stride-method", method) == 0
    out = capsys.readouterr().out
    assert f"score map 1x10x9x9 at output stride 2x2, {said} (" in out
    assert "the first, middle and last rows and columns of the crop grid" in out


def test_compile_names_the_crop_each_cell_is_and_a_receptive_field_that_differs(write_spec, tmp_path, capsys):
    """"each cell sees 18x18 pixels" (the receptive field of a padded net) was read as
    its crop, 16x16."""
    spec = write_spec("""
        name: padded
        input: {name: data, shape: [1, 16, 16]}
        layers:
          - {name: conv1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
          - {name: pool1, op: maxpool, kernel_size: 2}
          - {name: fc2, op: fc, out_features: 3}
    """)
    assert run_cli("compile", spec, "-o", tmp_path / "padded") == 0
    assert ("output stride 2x2, each cell the classifier on a 16x16 crop (its receptive field: 18x18 pixels)"
            in capsys.readouterr().out)


def test_compile_says_whether_the_result_slides(tmp_path, capsys):
    """A pipeline without fc-to-conv leaves a classifier that takes only its crop: compile
    said "output stride 4x4, each cell sees 32x32 pixels" all the same."""
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "dense") == 0
    assert "output stride 4x4, each cell the classifier on a 32x32 crop\n" in capsys.readouterr().out
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "as-is", "--passes", "shape-inference") == 0
    assert "it still returns one class vector per 32x32 crop" in capsys.readouterr().out


def test_a_classifier_as_written_on_a_larger_picture_says_how_to_map_it_or_classify_it_whole(tmp_path, capsys):
    """The fc layer's shape error ("expects weight of shape [10, 1344]") was all a user with
    a photo and a classifier got; Python's classify answers by resizing."""
    page = ROOT / "examples" / "digits_page.png"
    assert run_cli("run", SPECS / "lenet.yaml", "--image", page) == 2
    err = capsys.readouterr().err
    assert "lenet takes only its 32x32 crop as written" in err and "compile it (graphconv compile" in err
    assert err.strip().endswith("or classify the picture resized to the crop: --resize 32 32")
    assert run_cli("run", SPECS / "lenet.yaml", "--image", page, "--resize", 32, 32, "--top", 1) == 0
    np.save(tmp_path / "big.npy", np.zeros((1, 1, 40, 40), np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--input", tmp_path / "big.npy") == 2
    assert "--resize" not in capsys.readouterr().err  # an array is not a picture


@pytest.mark.parametrize("args,message", [
    (["run", "missing.yaml", "--input", "x.npy"], "missing.yaml: cannot read spec"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/out", "--passes", "nope"], "unknown pass 'nope'"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/out", "--output-stride", "3"],
     "output stride 3 does not divide the network's total stride 4x4; choose one of 1, 2, 4"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/out", "--output-stride", "8"],  # MONAI's overlap 0.75
     "does not divide the network's total stride 4x4; choose one of 1, 2, 4; the map at stride 8 is the network's "
     "own with rows and columns left out: map[..., ::2, ::2]"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/out", "--output-stride", "6"],
     "choose one of 1, 2, 4; cells at any other step: run --crops 6 (the classifier on each crop)"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/out", "--output-stride=-4"],  # "-4 does not divide 4" it said
     "output stride -4 is no whole number of pixels from 1 to the network's total stride 4x4; choose one of 1, 2, 4"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/out", "--plugin", "{tmp}/nothere.py"], "plugin file not found"),
    (["run", SPECS / "lenet.yaml", "--input", "{tmp}/bad.npy", "--output", "{tmp}/out.npy"], "input must be (N, 1, H, W)"),
    (["run", SPECS / "lenet.yaml", "--input", "{tmp}/bad.npy", "--scheduler", "tcp://127.0.0.1:9"],  # was ignored
     "--tile, --workers, --scheduler, --reduce argmax and --classes apply to --image and --images runs"),
])
def test_user_errors_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((3, 32, 32), np.float32))
    code = run_cli(*[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("graphconv: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.npy").exists()


def test_bad_spec_error_names_file_and_line(write_spec, capsys, tmp_path):
    spec = write_spec("input: {shape: [1, 8, 8]}\nlayers:\n  - {name: a, op: relu}\n  - {name: b, op: convolution}\n")
    assert run_cli("compile", spec, "-o", tmp_path / "m") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphconv: net.yaml:4: layer 'b': unknown op 'convolution': did you mean 'conv'? (known: ")
    assert " conv, " in err


def test_failed_compile_keeps_the_previous_model(tmp_path):
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m") == 0
    before = (tmp_path / "m" / "model.yaml").read_text()
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", "--output-stride", "3") == 2
    assert (tmp_path / "m" / "model.yaml").read_text() == before


def test_console_script_has_no_traceback_for_user_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graphconv", "run", str(tmp_path / "nope.yaml"), "--input", "x.npy"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nope.yaml" in proc.stderr
    help_text = subprocess.run([sys.executable, "-m", "graphconv", "compile", "--help"],
                               capture_output=True, text=True).stdout
    assert "--output-stride" in help_text and "--plugin" in help_text


def test_run_on_image_writes_heatmap(tmp_path, capsys):
    pytest.importorskip("PIL")
    assert run_cli("compile", SPECS / "alexnet.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("run", tmp_path / "m", "--image", ROOT / "examples/scene.png", "--resize", 256, 288,
                   "--heatmap", 3, "--heatmap-out", tmp_path / "h.png", "--output", tmp_path / "s.npy") == 0
    from PIL import Image
    heatmap = Image.open(tmp_path / "h.png")  # the 400x300 scene's shape, not the 288x256 it was resized to
    assert heatmap.format == "PNG" and heatmap.size[0] > 341 and heatmap.size[1] > 256
    assert np.load(tmp_path / "s.npy").shape == (1, 1000, 2, 3)
    assert run_cli("inspect", tmp_path / "m", "--input-size", 384, 384) == 0
    assert "--output-stride 16: dilate" in capsys.readouterr().out


def test_outputs_may_go_to_folders_that_do_not_exist_yet(tmp_path):
    """The README's quick start writes to out/... in a fresh checkout."""
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "build" / "deep" / "m") == 0
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    assert run_cli("run", tmp_path / "build" / "deep" / "m", "--input", tmp_path / "in.npy",
                   "--output", tmp_path / "results" / "scores.npy") == 0
    assert np.load(tmp_path / "results" / "scores.npy").shape == (1, 10, 1, 1)


def test_a_failed_command_removes_the_folders_it_created(tmp_path, capsys):
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "build" / "m", "--output-stride", "3") == 2
    np.save(tmp_path / "bad.npy", np.zeros((3, 32, 32), np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--input", tmp_path / "bad.npy",
                   "--output", tmp_path / "results" / "out.npy") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


def test_an_output_below_a_file_is_refused_before_running(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--input", tmp_path / "in.npy",
                   "--output", tmp_path / "taken" / "sub" / "out.npy") == 2
    err = capsys.readouterr().err
    assert "cannot create the output's folder" in err and "is a file" in err


def graphconv_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "graphconv", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["verify", SPECS / "lenet.yaml", "--input-size", 40, 40, "--batch", 0], "--batch: expected an integer >= 1"),
    (["verify", SPECS / "lenet.yaml", "--input-size", 40, 40, "--seed", -1], "--seed: expected an integer >= 0"),
    (["verify", SPECS / "lenet.yaml", "--input-size", 40, 40, "--tolerance", "nan"], "--tolerance: expected a finite"),
    (["verify", SPECS / "lenet.yaml", "--input-size", 0, 40], "--input-size: expected an integer >= 1"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--top", -3], "--top: expected an integer >= 1"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--top", 0], "--top: expected an integer >= 1"),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--resize", 0, 0], "--resize: expected an integer >= 1"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--memory-limit", "lots"], "--memory-limit: expected a size"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/m", "--passes", "conv-to-fc{max_elements=abc}"],
     "option 'max_elements' of pass 'conv-to-fc' must be an integer, got 'abc'"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/m", "--bogus"],
     "compile: unrecognized arguments: --bogus (see graphconv compile --help)"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--stride", 16],  # said only "unrecognized arguments"
     "unrecognized arguments: --stride 16; --output-stride (for --stride?) is an option of graphconv compile and "
     "verify, not of run: the map's stride is compiled in (graphconv compile MODEL -o DIR --output-stride S, then "
     "run DIR)"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/m", "--stride", 8],  # argparse took it for --stride-method 8
     "unrecognized arguments: --stride 8; did you mean --output-stride?"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--thread", 1],  # no option is abbreviated
     "unrecognized arguments: --thread 1; did you mean --threads?"),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--heatmap", 1, "--heatmap-opactiy", 0.5],
     "unrecognized arguments: --heatmap-opactiy 0.5; did you mean --heatmap-opacity?"),
    (["compile", SPECS / "lenet.yaml", "-o", "{tmp}/m", "--tile", 256],
     "unrecognized arguments: --tile 256; --tile is an option of graphconv run and inspect, not of compile"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--plugin", ROOT / "examples/my_passes.py", "--passes",
      "default,strip-softmax"], "run takes no --passes: compile runs them (graphconv compile "),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--heatmap", 1, "--heatmap-out", "{tmp}/h.xyz"],
     "h.xyz: cannot tell the image format from '.xyz'; name the heatmap"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--heatmap", 1], "--heatmap draws over an image"),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--heatmap", "best"],
     "--heatmap 'best': the model has no labels to name classes by"),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--heatmap", 1, "--heatmap-range", "1,0"],
     "--heatmap-range: expected finite numbers LOW < HIGH"),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--heatmap", 1, "--heatmap-opacity", 0],
     "--heatmap-opacity: expected a number more than 0 and at most 1, got '0'"),
    (["run", SPECS / "lenet.yaml", "--image", "x.png", "--heatmap-opacity", 0.8],
     "--heatmap-out, --heatmap-range, --heatmap-opacity and --heatmap-bands go with --heatmap CLASS"),
    (["run", SPECS / "lenet.yaml", "--input", "x.npy", "--scales", 32, "--full-map"],
     "--full-map is for one image or array evaluated whole"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, args, message):
    result = graphconv_cli(*[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("graphconv: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_and_memory_limit_work_before_or_after_the_command(tmp_path, where):
    flags = ["--traceback", "--memory-limit", "1G"]
    command = ["run", tmp_path / "missing.yaml", "--input", "x.npy"]
    result = graphconv_cli(*(flags + command if where == "before" else command + flags))
    assert "Traceback (most recent call last)" in result.stderr
    assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith("graphconv: ")  # as without it


def test_piping_into_head_is_quiet():
    result = subprocess.run(f"{sys.executable} -m graphconv inspect {SPECS / 'vgg16.yaml'} | head -1",
                            shell=True, capture_output=True, text=True, timeout=300)
    assert result.stdout.startswith("vgg16:") and "Traceback" not in result.stderr
    assert result.stderr in ("", "note: vgg16 has no weights file; using deterministic seeded (random) weights\n")


def test_ops_lists_every_op_a_spec_may_name_and_describes_one(tmp_path, capsys):
    """A user adding a layer to a spec had no command naming the ops or their params."""
    from graphconv.ops.registry import user_ops

    assert run_cli("ops") == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert listed == user_ops()
    assert run_cli("ops", "maxpool") == 0
    text = capsys.readouterr().out
    assert text.startswith("maxpool: max over each window")
    assert "    stride       int or [h, w], each at least 1; default: as kernel_size" in text
    assert "    ceil_mode    true or false; default false: round the output size up" in text
    assert "  weights: none\n  kernels: cpu, cuda\n" in text
    assert run_cli("ops", "conv") == 0
    assert "  weights: weight (3, 2, 3, 3), bias (3,) (of a 2x6x5 input" in capsys.readouterr().out
    assert run_cli("ops", "Conv2d") == 2
    assert "unknown op 'Conv2d': did you mean 'conv'?" in capsys.readouterr().err
    plugin = tmp_path / "shrink_plugin.py"
    plugin.write_text(OP_PLUGIN)
    assert run_cli("ops", "hardshrink", "--plugin", plugin) == 0
    text = capsys.readouterr().out
    assert "    lambd  float; default 0.5\n" in text and "defined in: shrink_kernels" in text


def test_passes_lists_where_entry_points_come_from():
    result = graphconv_cli("passes")
    assert result.returncode == 0 and "'graphconv.passes' entry point are imported on every" in result.stdout


def test_a_broken_installed_plugin_is_named_and_the_built_in_passes_still_work(tmp_path):
    dist = tmp_path / "graphconv_broken-1.0.dist-info"  # found on `python -m`'s path, the working folder
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: graphconv-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[graphconv.passes]\nbroken = graphconv_broken_passes\n")
    (tmp_path / "graphconv_broken_passes.py").write_text("raise RuntimeError('half-installed')\n")
    listed = graphconv_cli("passes", cwd=tmp_path)
    assert listed.returncode == 0 and "fc-to-conv" in listed.stdout
    assert listed.stderr == ("note: plugin entry point 'broken' (graphconv_broken_passes, package graphconv-broken) "
                             "failed to import, its passes are missing: RuntimeError: half-installed\n")
    compiled = graphconv_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", cwd=tmp_path)
    assert compiled.returncode == 0 and "half-installed" in compiled.stderr


@pytest.mark.parametrize("args,message", [
    (["run", SPECS / "alexnet.yaml", "--image", ROOT / "examples/scene.png", "--resize", 100000, 100000],
     "scene.png: an image resized to 100000x100000 needs about"),
    (["run", "{tmp}/lenet-fcn", "--image", ROOT / "examples/scene.png", "--scales", 100000],  # compiled: it slides
     "scale 100000 (100000x133333) needs about"),
    (["verify", SPECS / "lenet.yaml", "--input-size", 100000, 100000], "the dense pass needs about"),
    (["inspect", SPECS / "vgg16.yaml", "--input-size", 30000, 30000, "--profile"], "profiling at 30000x30000"),
    (["run", "{tmp}/lenet-fcn", "--input", "{tmp}/x.npy", "--memory-limit", "1M"], "over the memory limit of 1.0 MB"),
])
def test_sizes_over_the_memory_limit_are_refused_before_allocating(tmp_path, args, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 300, 300), np.float32))
    if "{tmp}/lenet-fcn" in args:
        assert graphconv_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "lenet-fcn").returncode == 0
    result = graphconv_cli(*[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("stride,batch,hints", [
    (None, 1, ["run the image the array was made from with --image, which reads, preprocesses and runs it in tiles"]),
    (None, 3, ["run fewer images at a time"]),
    ("shift", 1, ["run the image the array was made from with --image",
                  "runs 16 shifted copies of the image at once (shift-and-stitch); "
                  "compiled with --stride-method dilate, where the network allows it, it runs one"]),
])
def test_a_whole_array_over_the_memory_limit_is_told_what_fits(tmp_path, capsys, stride, batch, hints):
    """An .npy cannot be read a tile at a time, so a run over the limit says how to get
    one that is (an --image TIFF/zarr runs in tiles), and a shift-and-stitch model names
    the method that holds one copy of the image, not fy x fx."""
    fine = ["--output-stride", 1, "--stride-method", stride] if stride else []
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m", *fine) == 0
    np.save(tmp_path / "x.npy", np.zeros((batch, 1, 200, 200), np.float32))
    capsys.readouterr()
    assert run_cli("run", tmp_path / "m", "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npy",
                   "--memory-limit", "2M") == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "over the memory limit of 2.0 MB" in message and all(hint in message for hint in hints), message
    assert ("shifted copies" in message) == (stride == "shift") and not (tmp_path / "o.npy").exists()


def test_a_grey_model_takes_an_image(tmp_path):
    """A 1-channel model gets the image as greyscale (images used to be RGB always)."""
    pytest.importorskip("PIL")
    result = graphconv_cli("run", SPECS / "lenet.yaml", "--image", ROOT / "examples/scene.png",
                           "--resize", 32, 32, "--output", tmp_path / "o.npy")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "o.npy").shape == (1, 10)


SEEDED_NOTE = "note: lenet has no weights file; using deterministic seeded (random) weights"


def test_seeded_weights_are_announced_once_on_stderr_by_every_command(tmp_path):
    """A spec without weights, and a model compiled from one (it records
    `seeded_weights: true`), say so once, on stderr, whatever the command."""
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    commands = [("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m"),
                ("run", SPECS / "lenet.yaml", "--input", tmp_path / "x.npy"),
                ("run", tmp_path / "m", "--input", tmp_path / "x.npy"),
                ("inspect", tmp_path / "m"),
                ("export", tmp_path / "m", "-o", tmp_path / "m.onnx")]
    if importlib.util.find_spec("onnx") is None:
        commands.pop()
    compiled_note = ("note: lenet was compiled from a spec without trained weights: its weights are the "
                     "deterministic seeded (random) ones")  # its folder has a weights file: "no weights file" misled
    for command in commands:
        result = graphconv_cli(*command)
        assert result.returncode == 0, result.stderr
        said = compiled_note if command[1] == tmp_path / "m" else SEEDED_NOTE
        assert result.stderr.count(said) == 1, (command, result.stderr)
        assert "note:" not in result.stdout, command  # (inspect's table header says it too)
    assert "seeded_weights: true" in (tmp_path / "m" / "model.yaml").read_text()
    trained = graphconv_cli("inspect", SPECS / "digits.yaml")
    assert trained.returncode == 0 and "seeded" not in trained.stderr + trained.stdout


def test_heatmaps_name_their_class_show_their_scale_and_take_the_format_of_their_name(tmp_path):
    """The digit model: a heatmap is named after the image by default (after the map
    with --output: two models' maps of one photo kept each other's heatmaps), says what its
    colours mean (probabilities on a fixed 0..1), and is a JPEG when called .jpg;
    `--heatmap top` draws the best class of each cell."""
    pytest.importorskip("PIL")
    from PIL import Image
    page = ROOT / "examples" / "digits_page.png"
    assert graphconv_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m").returncode == 0
    result = graphconv_cli("run", tmp_path / "m", "--image", page, "--heatmap", 10, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "heatmap of class 10: background (probability, fixed scale 0..1; its values run" in result.stdout
    assert Image.open(tmp_path / "digits_page-heatmap-10.png").format == "PNG"
    result = graphconv_cli("run", tmp_path / "m", "--image", page, "--heatmap", "top",
                           "--output", tmp_path / "out" / "scores.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out" / "scores-heatmap-top.png").size[0] > 400  # page + legend
    result = graphconv_cli("run", tmp_path / "m", "--image", page, "--heatmap", 7, "--heatmap-range", "map",
                           "--heatmap-out", tmp_path / "seven.jpg")
    assert result.returncode == 0, result.stderr
    assert "stretched to this map's min..max" in result.stdout
    assert Image.open(tmp_path / "seven.jpg").format == "JPEG"
    result = graphconv_cli("run", tmp_path / "m", "--image", page, "--heatmap", 7, "--heatmap-opacity", 1,
                           "--heatmap-out", tmp_path / "opaque.png")
    assert result.returncode == 0, result.stderr
    opaque = np.asarray(Image.open(tmp_path / "opaque.png"))
    bottom_colour = np.array([68, 1, 84])  # viridis at 0: at full opacity, the page no longer shows through
    assert (np.abs(opaque.astype(int) - bottom_colour).max(axis=2) <= 2).mean() > 0.5


def test_full_map_keeps_the_cells_whose_crop_would_run_off_the_image(tmp_path, write_spec):
    """A 37x37 classifier whose pool leaves its crop's last row unused: on a 40x41 image
    `run` returns the 2x3 crop grid, `run --full-map` the network's 3x3 map."""
    spec = write_spec("name: floor\ninput: {shape: [1, 37, 37]}\nlayers:\n"
                      "  - {name: conv1, op: conv, out_channels: 3, kernel_size: 5}\n"
                      "  - {name: pool1, op: maxpool, kernel_size: 2}\n"
                      "  - {name: fc1, op: fc, out_features: 4}\n")
    assert graphconv_cli("compile", spec, "-o", tmp_path / "m").returncode == 0
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 1, 40, 41)).astype(np.float32))
    for flags, shape in (((), (1, 4, 2, 3)), (("--full-map",), (1, 4, 3, 3))):
        out = tmp_path / f"o{len(flags)}.npy"  # maps of two shapes: two names (a .npy is replaced only by its shape)
        result = graphconv_cli("run", tmp_path / "m", "--input", tmp_path / "x.npy", "--output", out, *flags)
        assert result.returncode == 0, result.stderr
        assert np.load(out).shape == shape


def test_version_labels_and_folders(tmp_path):
    """--version; a labels file must have a line per class; an empty folder is named."""
    from graphconv import __version__
    version = graphconv_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"graphconv {__version__}"
    (tmp_path / "nine.txt").write_text("\n".join(f"digit {i}" for i in range(9)) + "\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    for command in (("run", SPECS / "lenet.yaml", "--input", tmp_path / "x.npy"), ("inspect", SPECS / "lenet.yaml"),
                    ("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m")):
        result = graphconv_cli(*command, "--labels", tmp_path / "nine.txt")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == ("graphconv: nine.txt: the labels file has 9 names (one per line), but the "
                                         "model has 10 classes (output "
                                         "'prob'): give one class name per line")
    assert not (tmp_path / "m").exists()
    (tmp_path / "empty").mkdir()
    result = graphconv_cli("run", tmp_path / "empty", "--input", tmp_path / "x.npy")
    assert result.returncode == 2 and result.stderr.startswith("graphconv: empty: a folder without a model.yaml")


def test_inspect_draws_no_seeded_weights():
    """The table needs shapes only: missing weights are zero-byte stand-ins of their shape."""
    import argparse
    from graphconv.cli import load_model_for_table
    model = load_model_for_table(argparse.Namespace(model=str(SPECS / "vgg16.yaml"), weights=None, labels=None,
                                                    crop_size=None, task=None, activation=None))
    fc6 = model.graph.node("fc6").weights["weight"]
    assert fc6.shape == (4096, 25088) and fc6.strides == (0, 0) and model.seeded_weights
    from graphconv.cost import layer_costs
    assert sum(row.params for row in layer_costs(model.graph)) == 138_357_544


# GATED (tests/nets.py): a squeeze-and-excitation classifier on 3x12x12 crops, which cannot slide


def test_run_crops_maps_a_network_that_cannot_slide(write_spec, tmp_path, capsys):
    """Cell (i, j) is the classifier on the crop at (i, j) times the stride: the network's
    own (2, from c1) by default, or the one given."""
    import graphconv
    spec = write_spec(GATED)
    x = np.random.default_rng(0).standard_normal((2, 3, 17, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    classifier = graphconv.load(spec)
    for stride, given in ((2, []), (5, [5])):
        assert run_cli("run", spec, "--input", tmp_path / "x.npy", "--crops", *given,
                       "--output", tmp_path / f"m{stride}.npy") == 0  # a map of another shape: another name
        scores = np.load(tmp_path / f"m{stride}.npy")
        rows, cols = (17 - 12) // stride + 1, (20 - 12) // stride + 1
        assert scores.shape == (2, 3, rows, cols)
        for i, j in ((0, 0), (rows - 1, cols - 1), (1, cols // 2)):
            crop = x[:, :, i * stride:i * stride + 12, j * stride:j * stride + 12]
            np.testing.assert_allclose(scores[:, :, i, j], classifier.run(crop), rtol=1e-5, atol=1e-6)
        assert f"{2 * rows * cols} crops of 12x12, {stride}x{stride} pixels apart" in capsys.readouterr().out


def test_run_crops_equals_the_dense_map_of_a_network_that_slides(tmp_path):
    """On an unpadded network the crop loop is what the compiled dense pass computes."""
    from nets import STRIDED
    spec = tmp_path / "strided.yaml"
    spec.write_text(STRIDED)
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((1, 2, 40, 37)).astype(np.float32))
    assert run_cli("compile", spec, "-o", tmp_path / "m") == 0
    assert run_cli("run", tmp_path / "m", "--input", tmp_path / "x.npy", "--output", tmp_path / "dense.npy") == 0
    assert run_cli("run", spec, "--input", tmp_path / "x.npy", "--crops", "--output", tmp_path / "crops.npy") == 0
    np.testing.assert_allclose(np.load(tmp_path / "crops.npy"), np.load(tmp_path / "dense.npy"), rtol=1e-5, atol=1e-5)


def test_run_crops_heatmap_places_cells_by_crop(write_spec, tmp_path):
    pytest.importorskip("PIL")
    spec = write_spec(GATED)
    assert run_cli("run", spec, "--image", ROOT / "examples/scene.png", "--resize", 30, 40, "--crops", 4,
                   "--heatmap", 1, "--heatmap-out", tmp_path / "h.png", "--output", tmp_path / "m.npy") == 0
    assert np.load(tmp_path / "m.npy").shape == (1, 3, 5, 8)
    assert (tmp_path / "h.png").stat().st_size > 0


@pytest.mark.parametrize("extra,message", [
    (["--crops", "--scales", "20"], "--crops runs the classifier on each crop of the image as it is"),
    (["--crops", "--profile"], "--crops runs the classifier on each crop of the image as it is"),
    (["--crops", "--tile", "40"], "--tile, --workers, --scheduler, --reduce argmax and --classes apply to --image"),
])
def test_run_crops_refuses_what_it_cannot_combine_with(write_spec, tmp_path, capsys, extra, message):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 20, 20), np.float32))
    assert run_cli("run", write_spec(GATED), "--input", tmp_path / "x.npy", *extra, "--output", tmp_path / "o.npy") == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o.npy").exists()


def test_run_crops_stride_must_be_positive(write_spec, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("run", write_spec(GATED), "--input", tmp_path / "x.npy", "--crops", "0")
    assert exit_info.value.code == 2 and "--crops: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_run_crops_on_an_input_smaller_than_the_crop_is_exit_2(write_spec, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 10, 20), np.float32))
    assert run_cli("run", write_spec(GATED), "--input", tmp_path / "x.npy", "--crops", "--output", tmp_path / "o.npy") == 2
    assert "x.npy: --crops: the input is 10x20, smaller than the classifier's 12x12 crop" in capsys.readouterr().err


def test_import_replaces_only_an_unedited_spec_it_wrote_and_the_files_beside_it(tmp_path, capsys):
    """`import -o net.yaml` writes net.yaml, net.npz (and net.labels.txt): a user's own
    net.npz or labels beside it, or a spec they edited, stays; the import's own
    unedited output is replaced by a new import."""
    pytest.importorskip("onnx")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("export", tmp_path / "m", "-o", tmp_path / "d.onnx") == 0
    np.savez(tmp_path / "net.npz", precious=np.arange(5.0))
    assert run_cli("import", tmp_path / "d.onnx", "--crop-size", "28", "28", "-o", tmp_path / "net.yaml") == 2
    assert "net.npz: exists, and the import would replace it" in capsys.readouterr().err
    assert not (tmp_path / "net.yaml").exists() and list(np.load(tmp_path / "net.npz")) == ["precious"]
    (tmp_path / "net.npz").unlink()
    (tmp_path / "net.labels.txt").write_text("my notes\n")  # the export states labels: the import writes them
    assert run_cli("import", tmp_path / "d.onnx", "-o", tmp_path / "net.yaml") == 2
    assert "net.labels.txt: exists, and the import would replace it" in capsys.readouterr().err
    assert (tmp_path / "net.labels.txt").read_text() == "my notes\n"
    (tmp_path / "net.labels.txt").unlink()
    for _ in range(2):
        assert run_cli("import", tmp_path / "d.onnx", "--crop-size", "28", "28", "-o", tmp_path / "net.yaml") == 0
    with open(tmp_path / "net.yaml", "a") as spec:
        spec.write("preprocess: {scale: 0.00392}\n")
    edited = (tmp_path / "net.yaml").read_text()
    assert run_cli("import", tmp_path / "d.onnx", "--crop-size", "28", "28", "-o", tmp_path / "net.yaml") == 2
    assert "net.yaml: exists, and is not a spec graphconv imported and nobody edited since" in capsys.readouterr().err
    assert (tmp_path / "net.yaml").read_text() == edited


def test_an_import_that_cannot_write_its_spec_leaves_no_weights_either(tmp_path, capsys, monkeypatch):
    """The weights, labels and spec go to temporaries first: a full disk at the spec
    leaves nothing (it left net.npz behind)."""
    pytest.importorskip("onnx")
    from pathlib import Path

    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("export", tmp_path / "m", "-o", tmp_path / "d.onnx") == 0

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert run_cli("import", tmp_path / "d.onnx", "--crop-size", "28", "28", "-o", tmp_path / "net.yaml") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "m"]


def test_a_pipe_given_as_the_image_is_refused_not_waited_on(tmp_path):
    """Deciding whether to tile, the run read the image's header with Pillow, which
    waited forever on a pipe."""
    import os

    os.mkfifo(tmp_path / "page.png")
    proc = subprocess.run([sys.executable, "-m", "graphconv", "run", str(SPECS / "digits.yaml"), "--image",
                           str(tmp_path / "page.png")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "page.png: cannot read image: not a regular file" in proc.stderr


def test_images_that_all_fail_are_named_once_and_listed_with_their_errors(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"not a picture")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("run", tmp_path / "m", "--images", tmp_path / "*.png", "--output-dir", tmp_path / "x" / "maps") == 2
    err = capsys.readouterr().err
    assert "graphconv: a.png: " in err and err.count("a.png") == 1
    assert [p.name for p in (tmp_path / "x" / "maps").iterdir()] == ["graphconv-maps.csv"]  # each image's error


def test_a_stop_drops_what_llvmlite_raises_as_its_half_built_objects_are_freed(monkeypatch, capsys):
    """A SIGTERM while numba compiled a kernel (a cold cache's first run) left LLVM objects
    whose __del__ printed a traceback below "graphconv: terminated (...)" (seen once in
    CI): from the stop on, llvmlite's are dropped and every other one is still said."""
    from graphconv import cli

    said = []
    monkeypatch.setattr(sys, "unraisablehook", said.append)
    monkeypatch.setattr("atexit.register", lambda *_: None)
    cli._quiet_shutdown()

    def llvm_del():
        pass
    llvm_del.__module__ = "llvmlite.binding.ffi"
    sys.unraisablehook(SimpleNamespace(object=llvm_del))
    other = SimpleNamespace(object=test_a_terminated_tiled_run_leaves_no_partial_map)
    sys.unraisablehook(other)
    assert said == [other]
    installed = sys.unraisablehook
    cli._quiet_shutdown()  # a program calling main that is stopped twice
    assert sys.unraisablehook is installed, "wrapped once, not once a stop"


def test_a_terminated_tiled_run_leaves_no_partial_map(tmp_path):
    """SIGTERM (a job scheduler's kill) cleans up as Ctrl-C does: the partial map, the
    size of the whole one, was left for the next run in the folder to sweep."""
    import os
    import signal
    import time

    tifffile = pytest.importorskip("tifffile")
    # large enough that the run outlasts the half second below on a loaded machine (at 1500x1500 it once
    # finished in between, exit 0)
    tifffile.imwrite(tmp_path / "page.tif", np.random.default_rng(0).integers(0, 255, (4000, 4000), np.uint8),
                     tile=(64, 64))
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    (tmp_path / "maps").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "graphconv", "run", str(tmp_path / "m"), "--image",
                             str(tmp_path / "page.tif"), "--tile", "64", "--output", str(tmp_path / "maps" / "o.npy")],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((tmp_path / "maps").iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be terminated; give it a larger image"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    said = proc.stderr.read()
    assert "Traceback" not in said and "graphconv: terminated (what it was writing is removed)" in said
    assert list((tmp_path / "maps").iterdir()) == []


def test_import_takes_labels_already_where_it_writes_them(tmp_path, capsys):
    """`--labels net.labels.txt` beside `-o net.yaml` is the natural layout: the import
    rewrites the file with what it holds, where it refused to replace it."""
    pytest.importorskip("onnx")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("export", tmp_path / "m", "-o", tmp_path / "d.onnx") == 0
    labels = (SPECS / "digits.labels.txt").read_text()
    (tmp_path / "net.labels.txt").write_text(labels)
    assert run_cli("import", tmp_path / "d.onnx", "-o", tmp_path / "net.yaml", "--labels",
                   tmp_path / "net.labels.txt") == 0
    assert (tmp_path / "net.labels.txt").read_text() == labels


def test_a_whole_image_tif_map_says_where_its_cells_stand(tmp_path):
    """As tiled .tif maps do: cell (r, c) centred on the crop at (r, c) x stride, in the
    image's own pixels (with --resize, the original's)."""
    import json

    tifffile = pytest.importorskip("tifffile")
    page = ROOT / "examples" / "digits_page.png"
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    for extra, span in (([], 1.0), (["--resize", "150", "200"], 2.0), (["--resize", "150"], 2.0)):
        assert run_cli("run", tmp_path / "m", "--image", page, *extra, "--output", tmp_path / "w.tif") == 0
        stated = json.loads(tifffile.TiffFile(tmp_path / "w.tif").pages[0].description.split("\n", 1)[1])
        assert stated["first_cell_centre_yx"] == [14.0 * span] * 2 and stated["cell_step_yx"] == [4.0 * span] * 2
        assert stated["cell_area_hw"] == [28.0 * span] * 2  # each cell's crop, centred there: its pixels known


MAP_OUTPUT = """name: maps
input: {name: data, shape: [1, 16, 16]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: relu1, op: relu}
  - {name: head, op: conv, out_channels: 2, kernel_size: 1}
"""


def test_a_network_whose_output_on_its_crop_is_a_map_is_flagged_unless_it_is_segmentation(tmp_path, capsys):
    """A U-Net imported without --task segmentation would keep one cell of each crop's
    map: every command that reads it says so, once, on stderr; told the task, none does."""
    (tmp_path / "maps.yaml").write_text(MAP_OUTPUT)
    np.save(tmp_path / "x.npy", np.zeros((1, 16, 16), np.float32))
    for task, noted in ((None, True), ("segmentation", False)):
        extra = ("--task", task) if task else ()
        assert run_cli("run", tmp_path / "maps.yaml", "--input", tmp_path / "x.npy", *extra) == 0
        err = capsys.readouterr().err
        assert (err.count("note: on its 16x16 crop, maps's output is a 2x16x16 map, and it is taken for a "
                          "classifier") == 1) is noted, err
        assert ("--task segmentation" in err) is noted
    np.save(tmp_path / "page.npy", np.zeros((1, 29, 30), np.float32))
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "fcn", "--output-stride", "2") == 0
    assert run_cli("run", tmp_path / "fcn", "--input", tmp_path / "page.npy") == 0
    assert "taken for a classifier" not in capsys.readouterr().err, "a classifier, compiled or not, is not"


USERS_ARRAYS = {"scene.npy": np.zeros((4, 50, 60), np.uint16), "rgb.npy": np.zeros((3, 28, 28), np.float32),
                "grey.npy": np.zeros((300, 400), np.float32), "bands.npy": np.zeros((1, 4, 28, 28), np.uint16),
                "input.npy": np.ones((1, 1, 28, 28), np.float32),  # a preprocessed input: 4-D float32, as maps are
                "logits.npy": np.ones((1, 1000), np.float32),  # another model's reference vector
                "other-map.npy": np.ones((1, 11, 3, 4), np.float32)}  # a map of another picture


@pytest.mark.parametrize("name", sorted(USERS_ARRAYS))
@pytest.mark.parametrize("run", ["vector", "scales", "map", "crops", "tiled", "images"])
def test_an_output_that_exists_is_replaced_only_if_an_earlier_run_wrote_it(tmp_path, capsys, digits_fcn, name, run):
    """`--output scene.npy` replaced the user's own array with a score map; a float32 4-D
    array (their preprocessed input) or a 2-D one (a reference vector) was taken for a
    map and replaced, exit 0. A .npy is replaced only by a map of exactly its shape and
    type; an earlier run's result still is, as re-running a command expects."""
    pytest.importorskip("PIL")
    x = np.zeros((1, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    page = ROOT / "examples" / "digits_page.png"
    args = {"vector": ["run", SPECS / "digits.yaml", "--input", tmp_path / "x.npy"],
            "scales": ["run", digits_fcn, "--image", page, "--scales", "40"],
            "map": ["run", digits_fcn, "--image", page],
            "crops": ["run", SPECS / "digits.yaml", "--image", page, "--crops", "40"],
            "tiled": ["run", digits_fcn, "--image", page, "--tile", "200"]}.get(run)
    users = tmp_path / name
    np.save(users, USERS_ARRAYS[name])
    if run == "images":
        (tmp_path / "pages").mkdir()
        (tmp_path / "pages" / name.replace(".npy", ".png")).write_bytes(page.read_bytes())
        args = ["run", digits_fcn, "--images", tmp_path / "pages", "--output-dir", tmp_path]
    assert run_cli(*args, *(["--output", users] if run != "images" else [])) == 2
    err = capsys.readouterr().err
    assert f"{name}: is already there and holds {USERS_ARRAYS[name].dtype} {USERS_ARRAYS[name].shape}, not this " \
           "run's " in err and "graphconv replaces a .npy only with a map of the same shape" in err, err
    assert np.array_equal(np.load(users), USERS_ARRAYS[name]), "the user's array is untouched"
    users.unlink()
    for _ in range(2):  # this run's result, written and written again
        assert run_cli(*args, *(["--output", users] if run != "images" else [])) == 0, capsys.readouterr().err


def test_a_heatmap_out_that_exists_is_replaced_only_if_an_earlier_run_drew_it(tmp_path, capsys, digits_fcn):
    """`--heatmap-out holiday.png` replaced the user's photo, exit 0."""
    pytest.importorskip("PIL")
    page = ROOT / "examples" / "digits_page.png"
    photo = (tmp_path / "holiday.png")
    photo.write_bytes(page.read_bytes())
    args = ["run", digits_fcn, "--image", page, "--output", tmp_path / "m.npy", "--heatmap", "7"]
    assert run_cli(*args, "--heatmap-out", photo) == 2
    assert "holiday.png: is already there and is not a heatmap graphconv drew" in capsys.readouterr().err
    assert photo.read_bytes() == page.read_bytes()
    for _ in range(2):  # a map and its heatmap, drawn and drawn again
        assert run_cli(*args, "--heatmap-out", tmp_path / "h.png") == 0


def test_compile_says_once_when_padding_makes_cells_differ_from_their_crops(tmp_path, capsys):
    assert run_cli("compile", SPECS / "alexnet.yaml", "-o", tmp_path / "alex") == 0
    err = capsys.readouterr().err
    assert err.count("note: conv1, conv2, conv3 and 2 more pad: each crop is padded at its own border") == 1
    assert "graphconv verify" in err
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "lenet") == 0
    assert " pad: " not in capsys.readouterr().err, "an unpadded network is exact: nothing to say"


def test_import_takes_one_mean_and_std_for_every_channel(tmp_path, capsys):
    """torchvision-style Normalize(0.5, 0.5) on a multi-band model: one number each;
    without --scale on 0..255 pixels, which is noted (`images.preprocess_scale_note`)."""
    pytest.importorskip("onnx")
    from graphconv.frontends.onnx_export import save_onnx
    from graphconv.frontends import load_network
    save_onnx(load_network(SPECS / "tinydag.yaml"), tmp_path / "net.onnx")
    channels = load_network(SPECS / "tinydag.yaml").input_shape[0]
    assert channels > 1
    assert run_cli("import", tmp_path / "net.onnx", "-o", tmp_path / "net.yaml", "--mean", "0.5", "--std", "0.25") == 0
    preprocess = load_network(tmp_path / "net.yaml").meta["preprocess"]
    assert preprocess["mean"] == [0.5] * channels and preprocess["std"] == [0.25] * channels
    assert "did you mean scale 0.00392157" in capsys.readouterr().err
    assert run_cli("import", tmp_path / "net.onnx", "-o", tmp_path / "net.yaml", "--mean", "0.5", "--std", "0.25",
                   "--scale", "0.00392157") == 0
    assert "did you mean" not in capsys.readouterr().err


def test_import_with_activation_sigmoid_writes_a_multi_label_spec(tmp_path, write_spec, capsys):
    """A BCEWithLogitsLoss model exported as logits: `import --activation sigmoid` writes a
    spec ending in a sigmoid, whose scores are the logits' sigmoid; asked again of that
    spec's own export, nothing is added twice."""
    pytest.importorskip("onnx")
    import graphconv
    from graphconv.frontends import load_network
    from graphconv.frontends.onnx_export import save_onnx
    from graphconv.images import output_activation
    spec = write_spec("""
        name: logits
        input: {name: data, shape: [2, 8, 8]}
        layers:
          - {name: conv1, op: conv, out_channels: 4, kernel_size: 3}
          - {name: fc2, op: fc, out_features: 3}
        """, "logits.yaml")
    save_onnx(load_network(spec), tmp_path / "logits.onnx")
    assert run_cli("import", tmp_path / "logits.onnx", "-o", tmp_path / "plain.yaml") == 0
    assert "ends in raw scores (logits)" in capsys.readouterr().err
    assert run_cli("import", tmp_path / "logits.onnx", "-o", tmp_path / "net.yaml", "--activation", "sigmoid") == 0
    assert "raw scores" not in capsys.readouterr().err
    imported = load_network(tmp_path / "net.yaml")
    assert output_activation(imported) == "sigmoid" and imported.output.op == "sigmoid"
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(graphconv.load(tmp_path / "net.yaml").run(x),
                               1 / (1 + np.exp(-graphconv.load(spec).run(x))), rtol=1e-5, atol=1e-6)
    save_onnx(imported, tmp_path / "probs.onnx")
    assert run_cli("import", tmp_path / "probs.onnx", "-o", tmp_path / "again.yaml", "--activation", "sigmoid") == 0
    assert [node.op for node in load_network(tmp_path / "again.yaml").layers()].count("sigmoid") == 1


@pytest.fixture(scope="module")
def digits_fcn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fcn") / "digits-fcn"
    assert main(["compile", str(SPECS / "digits.yaml"), "-o", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_maps_the_upright_picture(digits_fcn, tmp_path, capsys, orientation):
    """A phone's portrait JPEG (stored landscape, EXIF Orientation 6) was mapped as stored:
    map, heatmap, --scales vector and --resize all of a picture lying on its side. Each of
    the 8 orientations now gives exactly the upright picture's results."""
    Image = pytest.importorskip("PIL.Image")
    from test_images import stored_with_orientation
    page = Image.open(ROOT / "examples" / "digits_page.png").convert("L").crop((10, 20, 130, 90))  # 70x120
    stored_with_orientation(page, 1, tmp_path / "upright.png")
    stored_with_orientation(page, orientation, tmp_path / "photo.png")
    for run, extra in enumerate(([], ["--scales", "40"], ["--resize", "50", "60"], ["--crops", "8"])):
        for name in ("upright", "photo"):
            assert run_cli("run", digits_fcn if extra[:1] != ["--crops"] else SPECS / "digits.yaml", "--image",
                           tmp_path / f"{name}.png", "--output", tmp_path / f"{name}{run}.npy", *extra,
                           *(["--heatmap", "top", "--heatmap-out", tmp_path / f"{name}-h.png"]
                             if not extra else [])) == 0
        np.testing.assert_array_equal(np.load(tmp_path / f"photo{run}.npy"), np.load(tmp_path / f"upright{run}.npy"))
    assert np.load(tmp_path / "photo3.npy").shape[2:] == ((70 - 28) // 8 + 1, (120 - 28) // 8 + 1)
    assert Image.open(tmp_path / "photo-h.png").tobytes() == Image.open(tmp_path / "upright-h.png").tobytes()
    (tmp_path / "upright.png").unlink()
    assert run_cli("run", digits_fcn, "--images", tmp_path / "photo.png", "--output-dir", tmp_path / "maps") == 0
    np.save(tmp_path / "whole.npy", np.load(tmp_path / "maps" / "photo.npy"))
    assert run_cli("run", digits_fcn, "--image", tmp_path / "photo.png", "--output", tmp_path / "one.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "whole.npy"), np.load(tmp_path / "one.npy"))


@pytest.mark.parametrize("tiled", [False, True])
def test_one_picture_says_what_its_bands_become_and_that_it_was_turned_upright(digits_fcn, tmp_path, capsys, tiled):
    """The notes an --images batch gives, for one --image too (whole or in tiles): an
    RGB photo for the grey model is fed luma, and a phone's photo is turned upright per
    its EXIF orientation; a grey upright picture gets neither note."""
    Image = pytest.importorskip("PIL.Image")
    from test_images import stored_with_orientation
    page = Image.open(ROOT / "examples" / "digits_page.png").convert("RGB").crop((10, 20, 130, 90))
    stored_with_orientation(page, 6, tmp_path / "photo.jpg")
    page.convert("L").save(tmp_path / "grey.png")
    tiles = ["--tile", "64"] if tiled else []
    capsys.readouterr()
    assert run_cli("run", digits_fcn, "--image", tmp_path / "photo.jpg", "--output", tmp_path / "p.npy", *tiles) == 0
    err = capsys.readouterr().err
    assert err.count("note: the image is RGB: converted to grey for the 1-channel model, each pixel its luma") == 1
    assert "save that band as a grey image" in err
    assert err.count("note: the picture is turned upright per its EXIF orientation") == 1
    assert run_cli("run", digits_fcn, "--image", tmp_path / "grey.png", "--output", tmp_path / "g.npy", *tiles) == 0
    err = capsys.readouterr().err
    assert "converted" not in err and "upright" not in err, err


@pytest.mark.parametrize("images", [False, True])
@pytest.mark.parametrize("heatmap", ["top", "3"])
def test_a_heatmap_of_a_classifier_as_written_is_refused_before_any_work(tmp_path, capsys, images, heatmap):
    """An uncompiled classifier gives one vector per image: --heatmap drew a fake 1-cell map
    over the picture (--image), or failed after the run with an internal ValueError and
    "0 of 1 image" though a map was written (--images)."""
    pytest.importorskip("PIL")
    page = ROOT / "examples" / "digits_page.png"
    source = ["--images", page, "--output-dir", tmp_path / "maps"] if images else ["--image", page]
    assert run_cli("run", SPECS / "digits.yaml", *source, "--heatmap", heatmap) == 2
    captured = capsys.readouterr()
    assert "--heatmap draws a map, and digits gives one class vector per image (a classifier as written): " \
           "compile it (graphconv compile " in captured.err and "output shape" not in captured.out, captured
    assert not (tmp_path / "maps").exists() and not list(tmp_path.glob("*.png"))


def test_many_images_through_a_classifier_as_written_say_so(tmp_path, capsys):
    """As one --image does: a globally pooled classifier gives each image one vector."""
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "pooled.yaml").write_text(POOLED)
    Image.fromarray(np.zeros((48, 60), np.uint8)).save(tmp_path / "page.png")
    assert run_cli("run", tmp_path / "pooled.yaml", "--images", tmp_path / "page.png", "--output-dir",
                   tmp_path / "v") == 0
    assert "note: pooled is run as written: one vector per image, pooled over the whole image. For its scores on " \
           "every 32x32 crop: compile it" in capsys.readouterr().err
    assert np.load(tmp_path / "v" / "page.npy").shape == (1, 3)
    assert run_cli("run", SPECS / "digits.yaml", "--images", tmp_path / "page.png", "--resize", 28, 28,
                   "--output-dir", tmp_path / "d") == 0  # no pool: each image is resized to the crop
    assert "note: digits is run as written: one vector per image, each image the crop's size. For its scores on " \
           "every 28x28 crop: compile it" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--images", "{page}", "--output-dir", "maps", "--profile"], "--output and --profile take one --image"),
    (["--image", "{page}", "--resize", "10", "20", "30"], "--resize takes S (the shorter side) or H W, not 3 numbers"),
    (["--image", "{page}", "--heatmap", "11"], "--heatmap 11: the model has 11 classes (0 to 10)"),
    (["--images", "{page}", "--output-dir", "maps", "--top", "3", "--reduce", "argmax"],
     "--top ranks the classes by their mean score over the map, and --reduce argmax keeps no scores"),  # said nothing
    (["--image", "{page}", "--heatmap", "1000", "--output", "m.npy"], "--heatmap 1000: the model has 11 classes"),
    (["--image", "{page}", "--classes", "12", "--output", "m.npy"], "--classes 12: the model has 11 classes"),
])
def test_options_a_run_cannot_honour_are_refused_before_it_runs(digits_fcn, tmp_path, capsys, args, message):
    """--profile with --images (it times one run) is refused, as --top was before a batch
    ranked each image; --heatmap 1000 on one image was refused only after the network
    had run."""
    page = str(ROOT / "examples" / "digits_page.png")
    assert run_cli("run", digits_fcn, *(a.format(page=page) for a in args)) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "output shape" not in captured.out, captured
    assert captured.err.count("\n") == 1, captured.err  # the one line (--classes came after the image: line)
    assert not list(tmp_path.iterdir())


def test_an_unquoted_glob_is_told_to_be_quoted(tmp_path, capsys, digits_fcn):
    """The shell expands --images photos/*.jpg; argparse said only "unrecognized
    arguments: photos/b.jpg ..."."""
    with pytest.raises(SystemExit) as exit_:
        run_cli("run", SPECS / "digits.yaml", "--images", tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg",
                "--output-dir", tmp_path / "maps")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--images takes one pattern" in err and "2 more paths followed" in err
    assert "Quote it, as in --images 'photos/*.jpg'" in err and err.count("\n") == 1
    folder = tmp_path / "lib"
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "digits_page.png", folder / "page.png")
    assert run_cli("run", "--images", f"{folder}/*.png", digits_fcn, "--output-dir", tmp_path / "m") == 0, \
        "a quoted pattern, then the model: the order argparse takes"


@pytest.mark.parametrize("image,message", [
    ("photos", "photos: cannot read image: it is a folder; --images maps each image of a folder or a quoted "
               "pattern, a map each in --output-dir: --images photos --output-dir MAPS"),
    ("photos/*.png", "photos/*.png: image not found: --image takes one image, and no pattern; --images maps each "
                     "image of a folder or a quoted pattern, a map each in --output-dir: --images 'photos/*.png' "
                     "--output-dir MAPS"),
    ("photos/none.png", "photos/none.png: image not found"),
])
def test_a_folder_or_a_pattern_given_to_image_points_at_images(tmp_path, capsys, monkeypatch, image, message):
    """A user with a folder of photos tried --image FOLDER and --image 'FOLDER/*.jpg' and
    was told "it is a folder" and "image not found", nothing of --images."""
    Image = pytest.importorskip("PIL.Image")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "photos" / "a.png")
    assert run_cli("run", SPECS / "digits.yaml", "--image", image, "--top", "2") == 2
    assert capsys.readouterr().err == f"graphconv: {message}\n"


@pytest.mark.parametrize("make,images,output_dir,message", [
    (["br/img[1].png"], "br/img[1].png", "maps", None),  # an existing file is taken literally, not as a glob class
    ([], "empty", "maps", "empty: holds no image graphconv reads (.png, .jpg, .jpeg,"),
    (["empty/2023/a.png", "empty/2023/b.png"], "empty", "maps",  # images in subfolders only: say so and how
     "empty: holds no image graphconv reads (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff, .svs, .ndpi, "
     ".btf, .tf8, .zarr) itself; 2 images are in its subfolders, which a folder does not take in: give --images 'empty/**/*.png'"),
    (["empty/2023/a.png", "empty/cam/b.JPG"], "empty", "maps",  # of several kinds: '**/*.png' would miss the .JPG
     "empty: holds no image graphconv reads (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff, .svs, .ndpi, "
     ".btf, .tf8, .zarr) itself; 2 images are in its subfolders, which a folder does not take in: give --images 'empty/**/*' (quoted;"),
    (["empty/notes.txt"], "empty/*", "maps", "--images 'empty/*' matches no image graphconv reads (.png,"),
    ([], "nothing/*.png", "maps", "--images 'nothing/*.png' matches no file"),
    (["br/a.png", "afile"], "br/a.png", "afile", "afile: is a file, not a folder: --output-dir names the folder"),
    (["br/a.png", "afile"], "br/a.png", "afile/sub", "afile/sub: cannot make --output-dir below afile, which is a "),
])
def test_many_images_messages_say_what_is_wrong(tmp_path, capsys, make, images, output_dir, message):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "empty").mkdir()
    for name in make:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        if name.endswith((".png", ".JPG")):
            Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / name, format=name.rsplit(".")[-1].upper()
                                                                .replace("JPG", "JPEG"))
        else:
            (tmp_path / name).write_text("a file")
    code = run_cli("run", SPECS / "digits.yaml", "--images", images, "--output-dir", output_dir)
    err = capsys.readouterr().err
    assert code == (0 if message is None else 2), err
    if message is None:
        assert (tmp_path / "maps" / "img[1].npy").exists()
    else:
        assert f"graphconv: {message}" in err, err
        assert not (tmp_path / "maps").exists()


def test_a_terminated_run_of_many_images_removes_the_folders_it_made(tmp_path):
    """A SIGTERM during --images left the empty --output-dir it had made."""
    import os
    import signal
    import time

    tifffile = pytest.importorskip("tifffile")
    # large enough that the run outlasts the half second below on a loaded machine (at 1500x1500 it once
    # finished in between, exit 0)
    tifffile.imwrite(tmp_path / "page.tif", np.random.default_rng(0).integers(0, 255, (4000, 4000), np.uint8),
                     tile=(64, 64))
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    proc = subprocess.Popen([sys.executable, "-m", "graphconv", "run", str(tmp_path / "m"), "--images",
                             str(tmp_path / "page.tif"), "--tile", "64", "--output-dir",
                             str(tmp_path / "out" / "maps")],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "maps").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be terminated; give it a larger image"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM and "Traceback" not in proc.stderr.read()
    assert not (tmp_path / "out").exists()


def test_a_segmentation_network_without_a_field_writes_its_map_at_its_crop(write_spec, tmp_path):
    """A pooled branch enlarged by the crop's factor meets the map at another stride: the
    network runs at its crop, but has no receptive field, which the run asked for after
    computing, to place the cells (exit 2, nothing written). A label per pixel stands on
    its pixel."""
    spec = write_spec("name: pooled\ntask: segmentation\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                      "  - {name: c, op: conv, out_channels: 2, kernel_size: 3, padding: 1}\n"
                      "  - {name: g, op: globalavgpool}\n"
                      "  - {name: up, op: upsample, factor: 16}\n"
                      "  - {name: cat, op: concat, inputs: [c, up]}\n")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32))
    assert run_cli("run", spec, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy") == 0
    assert np.load(tmp_path / "y.npy").shape == (1, 4, 16, 16)


def test_inspect_shows_a_segmentation_network_on_a_size_it_pads_as_run_runs_it(write_spec, capsys):
    """A U-Net of one 2x2 pool takes even sides: run pads a 17x20 image to 18x20, but
    inspect --input-size 17 20 refused it at the concat, advising a crop or resize."""
    spec = write_spec("name: unet\ntask: segmentation\ninput: {shape: [1, 16, 16]}\nlayers:\n"
                      "  - {name: c, op: conv, out_channels: 2, kernel_size: 3, padding: 1}\n"
                      "  - {name: p, op: maxpool, kernel_size: 2}\n"
                      "  - {name: up, op: upsample, factor: 2}\n"
                      "  - {name: cat, op: concat, inputs: [c, up]}\n")
    assert run_cli("inspect", spec, "--input-size", 17, 20, "--tile", 12) == 0
    out, err = capsys.readouterr()
    assert "unet: input 1x18x20" in out and re.search(r"\ncat +concat +4x18x20 ", out) and "tile" in out, out
    assert "the 17x20 image was padded with zeros (after the preprocess) to 18x20" in err
    assert re.search(r"score map: 17x20 cells at output stride 1x1 \(of the 18x20 computed on the padded input, cut "
                     r"back to the image\)", out), out
    from graphconv import GraphconvWarning, load
    with pytest.warns(GraphconvWarning, match=r"the 17x20 image was padded with zeros"):  # Python's run too
        assert load(spec).run(np.zeros((1, 17, 20), np.float32)).shape == (1, 4, 17, 20)


def test_a_dead_branch_is_noted_and_a_labels_count_names_the_labels_file(write_spec, tmp_path, capsys):
    """Layers that reach no output were dropped without a word; a labels file of the wrong
    length was blamed on the spec, which holds no labels."""
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    spec = write_spec("input: {shape: [1, 8, 8]}\nlabels: three.txt\nlayers:\n"
                      "  - {name: a, op: conv, out_channels: 2, kernel_size: 8}\n"
                      "  - {name: dead, op: relu, inputs: [data]}\n  - {name: out, op: relu, inputs: [a]}\n")
    (tmp_path / "three.txt").write_text("cat\ndog\nbird\n")
    assert run_cli("run", spec, "--input", tmp_path / "x.npy") == 2
    assert "three.txt: the labels file has 3 names (one per line), but the model has 2 classes" in capsys.readouterr().err
    (tmp_path / "three.txt").write_text("cat\ndog\n")
    assert run_cli("run", spec, "--input", tmp_path / "x.npy") == 0
    assert "note: layer dead of net reaches no output and is dropped" in capsys.readouterr().err


def test_a_class_name_matches_in_another_unicode_form(tmp_path, capsys):
    """A labels file from a Mac holds 'Äpfel' decomposed (A + combining diaeresis): the
    name typed was refused with "did you mean 'Äpfel'?", the two looking the same."""
    import unicodedata
    (tmp_path / "labels.txt").write_text("\n".join([unicodedata.normalize("NFD", "Äpfel"), *map(str, range(1, 10))]),
                                          encoding="utf-8")
    from PIL import Image
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "x.png")
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m") == 0
    out = tmp_path / "o.npy"
    assert run_cli("run", tmp_path / "m", "--image", tmp_path / "x.png", "--labels", tmp_path / "labels.txt",
                   "--classes", unicodedata.normalize("NFC", "äpfel") + ",3", "--output", out) == 0
    assert np.load(out).shape[:2] == (1, 2)


def test_a_best_class_heatmap_of_some_classes_says_which(digits_fcn, tmp_path, capsys):
    """With --classes 3,7 every cell shows 3 or 7, however small both scores: the title
    said "best class of each cell" as if all had been compared."""
    pytest.importorskip("PIL")
    page = ROOT / "examples" / "digits_page.png"
    for tile in ((), ("--tile", "200")):
        assert run_cli("run", digits_fcn, "--image", page, *tile, "--classes", "3,7", "--heatmap", "top",
                       "--heatmap-out", tmp_path / "top.png", "--output", tmp_path / f"m{len(tile)}.npy") == 0
        assert "heatmap of the best class of each cell among 3, 7 ->" in capsys.readouterr().out


def test_a_class_name_two_labels_share_is_refused_naming_both():
    """ImageNet's labels name two classes 'crane' (the bird, the machine): `--heatmap crane`
    took the first without a word."""
    from graphconv.classes import class_index

    labels = ["bird", "crane", "dog", "Crane", "crane"]
    assert class_index("dog", labels, "--heatmap") == 2 and class_index(4, labels, "--heatmap") == 4
    with pytest.raises(GraphconvError, match=r"^--heatmap 'crane': 2 classes have that name \(indices 1, 4\): "
                                             r"give the index$"):
        class_index("crane", labels, "--heatmap")
    assert class_index("Crane", labels, "--heatmap") == 3  # an exact name, though another differs only by case
    with pytest.raises(GraphconvError, match=r"'CRANE': 3 classes have that name \(indices 1, 3, 4\)"):
        class_index("CRANE", labels, "--heatmap")


def test_a_run_that_keeps_nothing_says_how_to_keep_the_map(digits_fcn, tmp_path, capsys):
    """`run MODEL --image x.png` computed the map, printed its shape and kept nothing,
    with no word of --output (a newcomer's first run)."""
    page = ROOT / "examples" / "digits_page.png"
    assert run_cli("run", digits_fcn, "--image", page) == 0
    assert "the map was not saved: --output MAP.npy writes it" in capsys.readouterr().err
    for keeps in (["--output", tmp_path / "m.npy"], ["--top", "3"]):
        assert run_cli("run", digits_fcn, "--image", page, *keeps) == 0
        assert "not saved" not in capsys.readouterr().err


def test_classes_are_named_as_the_labels_file_names_them(digits_fcn, tmp_path, capsys):
    """--heatmap tumour and --classes tumour,stroma were refused ('expected an integer')
    though the model's labels were loaded; a misspelt name is told the nearest."""
    pytest.importorskip("PIL")
    page = ROOT / "examples" / "digits_page.png"
    for heatmap, classes in (("10", "10,7"), ("Background", "background,7")):
        assert run_cli("run", digits_fcn, "--image", page, "--tile", "200", "--classes", classes,
                       "--heatmap", heatmap, "--output", tmp_path / f"{heatmap}.npy") == 0
    assert np.array_equal(np.load(tmp_path / "10.npy"), np.load(tmp_path / "Background.npy"))
    assert run_cli("run", digits_fcn, "--image", page, "--heatmap", "background", "--output", tmp_path / "m.npy") == 0
    assert (tmp_path / "m-heatmap-background.png").exists(), "named by the label, as the labels file spells it"
    capsys.readouterr()
    assert run_cli("run", digits_fcn, "--image", page, "--heatmap", "backgruond") == 2
    assert "--heatmap 'backgruond': no class of that name: did you mean 'background'?" in capsys.readouterr().err
    assert run_cli("run", digits_fcn, "--image", page, "--heatmap", "seven") == 2
    assert "no class of that name (the model's classes: '0', '1', '2'," in capsys.readouterr().err
    assert run_cli("run", digits_fcn, "--image", page, "--tile", "200", "--classes", "background,10") == 2
    assert "--classes names a class twice: 10,10" in capsys.readouterr().err
    assert run_cli("run", digits_fcn, "--image", page, "--tile", "200", "--classes", "7,3", "--heatmap",
                   "background") == 2  # said "--heatmap 10: ... --classes 7,3": indices the user never typed
    assert "--heatmap 10 (background): that class is not among --classes 7,3" in capsys.readouterr().err
    assert run_cli("run", SPECS / "alexnet.yaml", "--image", page, "--heatmap", "cat") == 2
    assert "the model has no labels to name classes by" in capsys.readouterr().err


def test_an_onnx_file_run_on_an_image_says_its_pixels_go_in_as_they_are(tmp_path, capsys):
    """An ONNX file states no preprocess, so a photo's 0..255 pixels went into a model
    trained on normalised ones, and its map was nonsense without a word."""
    pytest.importorskip("onnx")
    pytest.importorskip("PIL")
    from graphconv.frontends import load_network
    from graphconv.frontends.onnx_export import save_onnx
    graph = load_network(SPECS / "digits.yaml")
    del graph.meta["preprocess"]
    save_onnx(graph, tmp_path / "digits.onnx")
    page = ROOT / "examples" / "digits_page.png"
    assert run_cli("run", tmp_path / "digits.onnx", "--image", page, "--resize", "28", "28") == 0
    assert "digits.onnx states no preprocess" in capsys.readouterr().err
    assert run_cli("import", tmp_path / "digits.onnx", "-o", tmp_path / "net.yaml", "--scale", "0.00392157") == 0
    assert run_cli("run", tmp_path / "net.yaml", "--image", page, "--resize", "28", "28") == 0
    assert "states no preprocess" not in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_whole_image_run_writes_tif_and_zarr_maps_that_say_what_they_hold(digits_fcn, tmp_path, suffix):
    """A whole-image run's .tif map said where its cells stand but not what its bands
    hold (a tiled run's did), and --output map.zarr wrote an .npy file under that name."""
    tifffile = pytest.importorskip("tifffile")
    zarr = pytest.importorskip("zarr")
    import json
    page = np.random.default_rng(0).random((1, 1, 60, 70)).astype(np.float32)
    np.save(tmp_path / "page.npy", page)
    output = tmp_path / f"map{suffix}"
    for _ in range(2):  # written, then replaced as a map graphconv wrote
        assert run_cli("run", digits_fcn, "--input", tmp_path / "page.npy", "--output", output) == 0
    if suffix == ".zarr":
        stored = zarr.open_array(str(output), mode="r")
        scores, stated = stored[:], dict(stored.attrs)["graphconv"]
    else:
        scores = tifffile.imread(output)[None]
        stated = json.loads(tifffile.TiffFile(output).pages[0].description.split("\n", 1)[1])
    from graphconv.model import Model
    np.testing.assert_allclose(scores, Model.load(digits_fcn).run(page), rtol=1e-6, atol=1e-7)
    assert stated["classes"] == list(range(11)) and stated["labels"][10] == "background"
    assert stated["image"] == str(tmp_path / "page.npy")
    assert {key: stated[key] for key in ("level", "downsample", "bands")} == {"level": 0, "downsample": 1.0,
                                                                               "bands": None}


@pytest.mark.parametrize("pad", [[], ["--pad-image", "reflect"]])
def test_a_whole_image_map_states_how_it_was_read_as_a_tiled_one_does(digits_fcn, tmp_path, pad):
    """A picture's whole-image .tif stated no "level", "downsample", "bands" or
    "pad_image" (its tiled run's did): the two now state the same."""
    tifffile = pytest.importorskip("tifffile")
    Image = pytest.importorskip("PIL.Image")
    import json
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 61), np.uint8)).save(tmp_path / "page.png")
    stated = {}
    for how in ([], ["--tile", "40"]):
        output = tmp_path / f"map{len(how)}.tif"
        assert run_cli("run", digits_fcn, "--image", tmp_path / "page.png", "--output", output, *pad, *how) == 0
        description = json.loads(tifffile.TiffFile(output).pages[0].description.split("\n", 1)[1])
        stated[len(how)] = {key: description.get(key) for key in ("level", "downsample", "bands", "pad_image")}
    assert stated[0] == stated[2] == {"level": 0, "downsample": 1.0, "bands": None,
                                      "pad_image": pad[1] if pad else None}


PADDED_GREY = """
name: padded
input: {shape: [1, 16, 16]}
layers:
  - {name: conv1, op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: pool1, op: maxpool, kernel_size: 2}
  - {name: conv2, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
"""


def test_a_dense_run_of_a_padded_network_says_once_how_to_measure_what_padding_does(tmp_path, capsys):
    """A padded ResNet-18 called every tissue cell background while the crop loop did not,
    and run said nothing: one note per run (and per --images batch) names verify --image
    and --crops; the crop loop itself, and an unpadded network such as digits, say none."""
    pil = pytest.importorskip("PIL.Image")
    (tmp_path / "padded.yaml").write_text(PADDED_GREY)
    assert run_cli("compile", tmp_path / "padded.yaml", "-o", tmp_path / "fcn") == 0
    (tmp_path / "pages").mkdir()
    for name in ("a.png", "b.png"):
        pil.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36), dtype=np.uint8)).save(tmp_path / "pages" / name)
    capsys.readouterr()
    page = tmp_path / "pages" / "a.png"
    note = "note: padded pads in 1 layer, so its cells can differ from the classifier on each crop"
    assert run_cli("run", tmp_path / "fcn", "--image", page, "--output", tmp_path / "m.npy") == 0
    err = capsys.readouterr().err
    assert err.count(note) == 1 and f"`graphconv verify {tmp_path / 'fcn'} --image {page}` measures" in err
    assert "--crops gives the exact crop loop" in err
    assert run_cli("run", tmp_path / "fcn", "--image", page, "--downsample", "1.5", "--output", tmp_path / "d.npy") == 0
    # the image read as the map was made (verify read the full resolution, another map, without it)
    assert f"`graphconv verify {tmp_path / 'fcn'} --image {page} --downsample 1.5` measures" in capsys.readouterr().err
    for method in ("shift", "dilate"):  # a finer map pads as much (a shift model was left unsaid)
        assert run_cli("compile", tmp_path / "padded.yaml", "-o", tmp_path / method, "--output-stride", "1",
                       "--stride-method", method) == 0
        capsys.readouterr()
        assert run_cli("run", tmp_path / method, "--image", page, "--output", tmp_path / f"{method}.npy") == 0
        assert capsys.readouterr().err.count(note) == 1, method
    assert run_cli("run", tmp_path / "fcn", "--images", tmp_path / "pages", "--output-dir", tmp_path / "maps") == 0
    err = capsys.readouterr().err
    assert err.count(note) == 1 and f"`graphconv verify {tmp_path / 'fcn'} --image IMAGE`" in err
    assert run_cli("run", tmp_path / "padded.yaml", "--image", page, "--crops", "--output", tmp_path / "c.npy") == 0
    assert "pads in" not in capsys.readouterr().err
    assert run_cli("run", ROOT / "specs" / "digits.yaml", "--image", page, "--crops") == 0
    assert run_cli("compile", ROOT / "specs" / "digits.yaml", "-o", tmp_path / "digits") == 0
    capsys.readouterr()
    assert run_cli("run", tmp_path / "digits", "--image", ROOT / "examples" / "digits_page.png") == 0
    assert "pads in" not in capsys.readouterr().err


def test_a_ceil_mode_pool_hanging_off_the_map_is_named_as_such_in_the_padding_notes(tmp_path, capsys):
    """A network that pads nowhere but whose ceil_mode pool hangs its last window off the
    crop's map was said to pad, which its spec contradicts."""
    (tmp_path / "ceil.yaml").write_text("""
name: ceilnet
input: {shape: [3, 32, 32]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: p1, op: maxpool, kernel_size: 3, stride: 2, ceil_mode: true}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 3}
  - {name: fc, op: fc, out_features: 3}
""")
    assert run_cli("compile", tmp_path / "ceil.yaml", "-o", tmp_path / "fcn") == 0
    assert "note: ceil_mode pool p1 hangs a last window off the map: each crop's is cut at its own border" in \
        capsys.readouterr().err
    np.save(tmp_path / "in.npy", np.zeros((1, 3, 40, 40), np.float32))
    assert run_cli("run", tmp_path / "fcn", "--input", tmp_path / "in.npy") == 0
    assert ("note: ceilnet hangs a ceil_mode pool's last window off the map in 1 layer, so its cells can differ "
            "from the classifier on each crop (each crop is cut at its own border") in capsys.readouterr().err
    (tmp_path / "both.yaml").write_text((tmp_path / "ceil.yaml").read_text().replace(
        "kernel_size: 3}\n  - {name: fc", "kernel_size: 3, padding: 1}\n  - {name: fc"))
    assert run_cli("compile", tmp_path / "both.yaml", "-o", tmp_path / "fcn3") == 0
    assert ("note: p1, c2 pad (p1: a ceil_mode pool's last window hanging off the map): each crop"
            in capsys.readouterr().err)
    (tmp_path / "even.yaml").write_text((tmp_path / "ceil.yaml").read_text().replace("32, 32", "31, 31"))
    assert run_cli("compile", tmp_path / "even.yaml", "-o", tmp_path / "fcn2") == 0
    assert "note: p1" not in capsys.readouterr().err  # 29 - 3 is even: no window hangs


def test_an_upsample_interpolating_against_the_edge_is_named_as_such_in_the_padding_notes(tmp_path, capsys):
    """A bilinear upsample reads copies of its map's edge rows and columns: the notes said
    it padded, which no layer of its spec does."""
    (tmp_path / "up.yaml").write_text("""
name: upnet
input: {shape: [3, 32, 32]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: up, op: upsample, factor: 2, mode: bilinear}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: fc, op: fc, out_features: 3}
""")
    assert run_cli("compile", tmp_path / "up.yaml", "-o", tmp_path / "fcn") == 0
    assert ("note: up interpolates against the map's edge: each crop's map is interpolated against copies of its "
            "own edge rows and columns, the sliding network's only at the image's") in capsys.readouterr().err
    np.save(tmp_path / "in.npy", np.zeros((1, 3, 40, 40), np.float32))
    assert run_cli("run", tmp_path / "fcn", "--input", tmp_path / "in.npy") == 0
    assert ("note: upnet interpolates against the map's edge in 1 layer, so its cells can differ from the "
            "classifier on each crop (each crop is interpolated at its own border") in capsys.readouterr().err
    (tmp_path / "padded.yaml").write_text((tmp_path / "up.yaml").read_text().replace("stride: 2}", "stride: 2, "
                                                                                                  "padding: 1}"))
    assert run_cli("compile", tmp_path / "padded.yaml", "-o", tmp_path / "fcn2") == 0
    assert "note: c1, up, c2 pad (up: interpolating against the map's edge): each crop" in capsys.readouterr().err
    assert run_cli("run", tmp_path / "fcn2", "--input", tmp_path / "in.npy") == 0
    assert "note: upnet pads in 3 layers (up: interpolating against the map's edge), so" in capsys.readouterr().err


def test_padded_layers_named_by_numbers_are_quoted_in_the_padding_note(tmp_path, capsys):
    """PyTorch Sequential names its layers "0", "1": the note read "note: 0 pad"."""
    (tmp_path / "seq.yaml").write_text("""
name: seq
input: {shape: [3, 16, 16]}
layers:
  - {name: "0", op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: "1.2", op: conv, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: fc, op: fc, out_features: 3}
""")
    assert run_cli("compile", tmp_path / "seq.yaml", "-o", tmp_path / "fcn") == 0
    assert "note: '0', '1.2' pad: each crop" in capsys.readouterr().err


def test_a_second_ctrl_c_during_the_cleanup_does_not_cut_it_short(tmp_path, monkeypatch, capsys):
    """Ctrl-C twice: the second, landing while the first one's cleanup removed the .zarr
    map's temporary folder, stopped the removal (the folder left, chunks and all, under
    a message saying what it was writing is removed). A later signal is ignored while
    the command stops."""
    import signal

    from graphconv import files

    pytest.importorskip("zarr")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    (tmp_path / "maps").mkdir()

    def ctrl_c_before_the_rename(tmp, target, unchanged=None):
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C, as the map is complete

    real_rmtree = files.shutil.rmtree

    def ctrl_c_again_then_rmtree(path, *args, **kwargs):
        # the second, as its temporary folder is removed; only for it: the patch is the
        # process's shutil, whose rmtree anything else in the process (a Dask cluster's
        # cleanup, left by an earlier test in this worker) may call, a Ctrl-C at another
        # moment: the likeliest cause of the two full runs in which this left the folder
        # (sessions 36 and 37; never alone)
        if threading.current_thread() is threading.main_thread() and str(path).startswith(str(tmp_path / "maps")):
            signal.raise_signal(signal.SIGINT)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(files, "move_into_place", ctrl_c_before_the_rename)
    monkeypatch.setattr(files.shutil, "rmtree", ctrl_c_again_then_rmtree)
    capsys.readouterr()
    before = signal.getsignal(signal.SIGINT)  # Python's own handler; SIG_IGN in a job a shell started in the background
    assert run_cli("run", tmp_path / "m", "--image", ROOT / "examples" / "digits_page.png", "--tile", "64",
                   "--output", tmp_path / "maps" / "o.zarr") == 130
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1] == "graphconv: interrupted (what it was writing is removed)" and said.count(said[-1]) == 1
    assert list((tmp_path / "maps").iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is before  # put back as the command found it


def console(*args, script=None, env=None, **popen):
    """The `graphconv` command as installed (graphconv.console.main), in a subprocess;
    `script`: Python run first, in the process, to inject a fault."""
    import os

    code = f"{script or ''}\nimport sys, graphconv.console\nsys.argv[1:] = {list(map(str, args))!r}\n" \
           "sys.exit(graphconv.console.main())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **{"timeout": 300, **popen})


def test_the_entry_point_imports_nothing_heavy_before_its_checks():
    """graphconv.console is inside the package: importing it runs graphconv/__init__.py,
    which must import nothing (numba and networkx are the second the entry point answers
    a Ctrl-C or a bad NUMBA_NUM_THREADS in)."""
    code = "import sys, graphconv.console; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('numba', 'networkx', 'numpy') or m.startswith('graphconv.') and m != 'graphconv.console'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_python_m_graphconv_checks_numba_num_threads_too():
    import os

    done = subprocess.run([sys.executable, "-m", "graphconv", "passes"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_NUM_THREADS": "0"})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("graphconv: NUMBA_NUM_THREADS='0': ") and done.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-2", "abc", ""])
def test_a_bad_numba_num_threads_is_one_line_before_numba_loads(value):
    """numba read it on import: 0 was a traceback (ValueError, exit 1), 'abc' a warning
    with a traceback in it, and the command ran."""
    done = console("passes", env={"NUMBA_NUM_THREADS": value})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"graphconv: NUMBA_NUM_THREADS={value!r}: it must be a whole number of threads, 1 or "
                           "more (unset it for one per core)\n")


@pytest.mark.parametrize("env, said", [
    ({"NUMBA_DISABLE_JIT": "1"}, "graphconv: NUMBA_DISABLE_JIT='1': graphconv's kernels run only compiled by numba"),
    ({"NUMBA_NUM_THREADS": "100000"}, "graphconv: NUMBA_NUM_THREADS='100000': more threads than this machine can use"),
    ({"NUMBA_THREADING_LAYER": "bogus"}, "graphconv: NUMBA_THREADING_LAYER='bogus': numba could not start its threads: "
                                         "The threading layer requested 'bogus' is unknown to Numba."),
])
def test_numba_settings_it_cannot_run_under_are_one_line(tmp_path, env, said):
    """A JIT turned off was a traceback from the first kernel; 40000 threads a libgomp
    error, 65536 a segfault; a threading layer not installed (tbb) a traceback."""
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    done = console("run", SPECS / "digits.yaml", "--input", tmp_path / "x.npy", env=env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1].startswith(said) and "Traceback" not in done.stderr


INTERRUPT_ON_IMPORT = """
import signal, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "networkx":
            signal.raise_signal(signal.{})
sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize("signame, said, code", [("SIGINT", "interrupted", 130), ("SIGTERM", "terminated", 143)])
def test_a_signal_while_graphconv_loads_is_one_line(signame, said, code):
    """A Ctrl-C in the first second (the imports: numba, networkx) was a traceback
    through them."""
    done = console("passes", script=INTERRUPT_ON_IMPORT.format(signame))
    assert (done.returncode, done.stdout, done.stderr) == (code, "", f"graphconv: {said} (nothing was written)\n")


def test_ctrl_c_again_as_the_command_stops_or_after_it_ended_is_ignored():
    """The second Ctrl-C, landing as the 'interrupted' line was being made, escaped as a
    traceback through main, the process dying by SIGINT."""
    script = """
import signal
import graphconv.cli as cli
real = cli._what_is_left
def ctrl_c_again(args):
    signal.raise_signal(signal.SIGINT)
    return real(args)
def ctrl_c(args):
    signal.raise_signal(signal.SIGINT)
cli._what_is_left = ctrl_c_again
cli.cmd_passes = ctrl_c
real_main = cli.console_main
def and_after(*a):
    code = real_main(*a)
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGTERM)
    return code
cli.console_main = and_after
"""
    done = console("passes", script=script)
    assert (done.returncode, done.stderr) == (130, "graphconv: interrupted (what it was writing is removed)\n")


def test_ctrl_c_while_the_process_hangs_on_its_way_out_ends_it_with_the_commands_status():
    """After the command, a signal was ignored until the process exited: one that hung
    there (a library's exit handler, a thread it waits for) could only be killed -9.
    Now the signal ends it at once, with the status the command returned."""
    script = """
import atexit, os, signal, threading, time
atexit.register(time.sleep, 120)  # the hang: exit handlers run after the command has returned
atexit.register(lambda: threading.Timer(1, os.kill, (os.getpid(), signal.SIGINT)).start())  # runs first
"""
    started = time.monotonic()
    done = console("passes", script=script, timeout=60)
    assert done.returncode == 0 and "fuse-conv-activation" in done.stdout, done.stderr
    assert done.stderr == "" and time.monotonic() - started < 60


def test_a_signal_as_the_interpreter_tears_down_after_the_command_keeps_its_status():
    """Python puts the default handlers back as it tears down: a scheduler's SIGTERM in
    that last quarter second killed a finished run, exit 143 and nothing said."""
    script = """
import os, signal, time, builtins
class Late:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
builtins._late = Late()  # collected at the very end of the teardown
"""
    done = console("passes", script=script, timeout=60)
    assert (done.returncode, done.stderr) == (0, "") and "fuse-conv-activation" in done.stdout


def test_python_m_graphconv_cli_keeps_the_notes_other_modules_make(tmp_path):
    """`python -m graphconv.cli` ran cli.py as __main__, a second copy of the module:
    the notes other modules gave graphconv.cli's list were never printed."""
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    done = subprocess.run([sys.executable, "-m", "graphconv.cli", "run", SPECS / "lenet.yaml", "--input",
                           tmp_path / "in.npy", "--output", tmp_path / "out.npy"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "seeded (random) weights" in done.stderr


def test_a_ctrl_c_as_import_renames_its_files_leaves_the_spec_and_its_weights_a_pair(tmp_path, monkeypatch,
                                                                                    capsys):
    """import writes net.labels.txt, net.npz, net.yaml by three renames: a Ctrl-C right
    after the .npz's left the new weights beside the old spec (which still passed as
    'imported, unedited'), under 'what it was writing is removed'."""
    import os
    import signal

    pytest.importorskip("onnx")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    assert run_cli("export", tmp_path / "m", "-o", tmp_path / "d.onnx") == 0
    assert run_cli("import", tmp_path / "d.onnx", "-o", tmp_path / "net.yaml", "--std", "0.5") == 0
    real_replace = os.replace

    def ctrl_c_after_the_weights(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if str(dst).endswith(".npz"):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", ctrl_c_after_the_weights)
    capsys.readouterr()
    assert run_cli("import", tmp_path / "d.onnx", "-o", tmp_path / "net.yaml", "--std", "0.25") == 130
    monkeypatch.undo()
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith("graphconv: interrupted (it had written ") and "net.yaml" in said and "net.npz" in said
    assert "std: [0.25]" in (tmp_path / "net.yaml").read_text()  # the new spec, beside the new weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "m", "net.labels.txt", "net.npz", "net.yaml"]


def test_a_zarr_output_in_a_folder_that_refuses_files_names_the_output(tmp_path, monkeypatch, capsys):
    """A read-only folder: the error named the stand-in file the check probes with,
    'ro/probe.npy: cannot write in .../ro', not the user's ro/o.zarr."""
    import errno

    from graphconv import files

    pytest.importorskip("zarr")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    (tmp_path / "ro").mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    capsys.readouterr()
    output = tmp_path / "ro" / "o.zarr"
    assert run_cli("run", tmp_path / "m", "--image", ROOT / "examples" / "digits_page.png", "--tile", "64",
                   "--output", output, "--resume") == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith("graphconv: ") and "ro/o.zarr: cannot write in " in said
    assert said.endswith("Read-only file system")
    assert "probe" not in said


def test_an_input_smaller_than_the_crop_is_named(tmp_path, capsys):
    np.save(tmp_path / "tiny.npy", np.zeros((1, 1, 5, 5), np.float32))
    assert run_cli("run", SPECS / "digits.yaml", "--input", tmp_path / "tiny.npy", "--output", tmp_path / "o.npy") == 2
    assert capsys.readouterr().err.strip().endswith(
        "tiny.npy: the input is 5x5, smaller than the classifier's 28x28 crop")
    assert not (tmp_path / "o.npy").exists()
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "fcn") == 0
    capsys.readouterr()
    assert run_cli("run", tmp_path / "fcn", "--input", tmp_path / "tiny.npy") == 2  # a map: --pad-image makes one
    assert capsys.readouterr().err.strip().endswith(
        "smaller than the classifier's 28x28 crop: --pad-image reflect (or constant) pads its border, so that crops "
        "fit and the map reaches its edges")
    assert run_cli("run", tmp_path / "fcn", "--input", tmp_path / "tiny.npy", "--pad-image", "reflect") == 0


def test_a_weights_array_not_named_layer_dot_param_says_so(tmp_path, capsys):
    """An array 'extra' was 'has weights 'extra' but the network has no layer '''."""
    np.savez(tmp_path / "w.npz", extra=np.zeros(3, np.float32))
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--weights", tmp_path / "w.npz", "--input", tmp_path / "in.npy",
                   "--output", tmp_path / "o.npy") == 2
    assert capsys.readouterr().err.strip().endswith(
        "w.npz: has an array named 'extra', which is not of the form LAYER.PARAM (e.g. 'conv1.weight'): every array "
        "in a weights file is a layer's parameter")


def test_a_map_past_the_file_size_limit_says_why_and_how_big(tmp_path):
    """numpy's short write hides the OS's reason: 'b.npy: cannot write: 1274196
    requested and 25568 written'."""
    import resource

    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "graphconv", "run", "m", "--image",
                           str(ROOT / "examples" / "digits_page.png"), "--output", "b.npy"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, preexec_fn=limited)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "graphconv: b.npy: cannot write: File too large (over the file size limit, ulimit -f, of 100.0 KB); it needs ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_the_commands_graphconv_suggests_keep_the_model_options_given(tmp_path, capsys):
    """verify's `graphconv run ... --crops` and run's `graphconv verify SPEC --image ...`
    dropped --weights (the suggestion ran seeded random weights), --labels, --crop-size
    and --task."""
    import argparse

    from graphconv.cli import _crops_command

    args = argparse.Namespace(spec="my spec.yaml", image="a b.png", level=0, downsample=1, mpp=None, bands=None,
                              weights="trained.npz", labels="it's.txt", task=None, crop_size=[224, 224])
    assert _crops_command(args) == ("graphconv run 'my spec.yaml' --image 'a b.png' --weights trained.npz "
                                    "--labels 'it'\"'\"'s.txt' --crop-size 224 224 --crops")
    pil = pytest.importorskip("PIL.Image")
    (tmp_path / "padded.yaml").write_text(PADDED_GREY)
    pil.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36), dtype=np.uint8)).save(tmp_path / "a.png")
    capsys.readouterr()
    assert run_cli("compile", tmp_path / "padded.yaml", "-o", tmp_path / "fcn") == 0
    assert run_cli("run", tmp_path / "fcn", "--image", tmp_path / "a.png", "--task", "classification",
                   "--output", tmp_path / "m.npy") == 0
    assert f"`graphconv verify {tmp_path / 'fcn'} --image {tmp_path / 'a.png'} --task classification` measures" \
        in capsys.readouterr().err


def test_verify_s_default_region_over_no_data_is_centred_on_a_cell_with_data():
    """A scene whose data is a ring (a swath around a hole of no-data): the centre of the
    data's bounding box is in the hole, so verify's default region is centred on the data
    cell nearest it instead."""
    from graphconv.background import CellBlocks
    from graphconv.cli import _data_centre

    yy, xx = np.mgrid[:21, :21]
    blank = ~((abs(np.hypot(yy - 10, xx - 10) - 8)) < 1.5)  # data only on a ring of radius 8
    y, x = _data_centre(CellBlocks.of(blank), crop=(16, 16), stride=(4, 4))
    cell = (round((y - 8) / 4), round((x - 8) / 4))
    assert not blank[cell] and np.hypot(cell[0] - 10, cell[1] - 10) > 6
    assert _data_centre(CellBlocks.of(np.ones((3, 3), bool)), (16, 16), (4, 4)) is None


@pytest.mark.parametrize("args, said", [
    (["--image", ""], "argument --image: an empty path"),
    (["--images", "", "--output-dir", "maps"], "argument --images: an empty path"),
    (["--input", "IN", "--output", ""], "argument --output/-o: an empty path"),
    (["--input", "IN", "--heatmap-out", " "], "argument --heatmap-out: an empty path"),
    (["--input", "IN", "--output-dir", "maps"], "--output-dir is where --images writes its maps"),
    (["--input", "IN", "--classes", "1,,2"], "argument --classes: expected a class index or name"),
    (["--images", "a/*.jpg", "--images", "b", "--output-dir", "maps"],
     "argument --images: given twice ('a/*.jpg', then 'b'): give one"),  # 'a/*.jpg' was dropped silently
    (["--image", "IN", "--image", "IN"], "argument --image: given twice"),
])
def test_options_left_empty_or_without_their_mode_are_one_line(tmp_path, capsys, args, said):
    """`--image ''` (an unset shell variable) fell through to the --input path and crashed
    with a traceback; `--output ''` computed and wrote nothing; `--output-dir` without
    --images, `--classes 1,,2` and a second --images were taken quietly."""
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    args = [str(tmp_path / "in.npy") if a == "IN" else a for a in args]
    try:
        code = run_cli("run", SPECS / "lenet.yaml", *args)
    except SystemExit as stop:  # argparse's own errors leave main this way
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npy"]


def test_a_quoted_tilde_is_the_home_folder(tmp_path, monkeypatch, capsys):
    """`--output '~/x.npy'` (quoted, or from a config file) made a folder named ~ in the
    current one and said `-> ~/x.npy`; `--image '~/p.png'` was "not found"."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    np.save(tmp_path / "home" / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--input", "~/in.npy", "--output", "~/out.npy") == 0
    assert (tmp_path / "home" / "out.npy").exists() and not (tmp_path / "~").exists()
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", "~/lenet-fcn") == 0
    assert run_cli("run", "~/lenet-fcn", "--input", "~/in.npy") == 0
    assert str(tmp_path / "home" / "out.npy") in capsys.readouterr().out


def test_images_refuse_to_write_their_maps_into_the_model_being_run(tmp_path, capsys):
    """--output refused a path inside the compiled model's folder; --output-dir did not,
    and put the maps among the model's files."""
    from PIL import Image
    assert run_cli("compile", SPECS / "lenet.yaml", "-o", tmp_path / "m") == 0
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "p.png")
    capsys.readouterr()
    assert run_cli("run", tmp_path / "m", "--images", tmp_path / "p.png", "--output-dir", tmp_path / "m") == 2
    assert "--output-dir would write over m, which the model is read from" in capsys.readouterr().err
    assert not (tmp_path / "m" / "p.npy").exists()


def test_scores_that_overflowed_are_said_to_have(tmp_path, capsys):
    """Finite inputs near float32's limit overflow inside the network: a map of NaN was
    written with exit 0 and no word."""
    np.save(tmp_path / "big.npy", np.full((1, 1, 32, 32), 3e38, np.float32))
    np.save(tmp_path / "fine.npy", np.ones((1, 1, 32, 32), np.float32))
    assert run_cli("run", SPECS / "lenet.yaml", "--input", tmp_path / "big.npy", "--output", tmp_path / "o.npy") == 0
    assert "output values are NaN or infinite: float32 overflowed inside the network on" in capsys.readouterr().err
    assert run_cli("run", SPECS / "lenet.yaml", "--input", tmp_path / "fine.npy", "--output", tmp_path / "p.npy") == 0
    assert "overflowed" not in capsys.readouterr().err


def test_a_stop_silences_asyncio_s_pending_tasks_below_its_one_line(caplog):
    """SIGTERM during a zarr read: asyncio logged "Task was destroyed but it is pending!"
    (and Python warned of a coroutine never awaited) after `graphconv: terminated (...)`."""
    import asyncio
    import gc
    import logging
    import warnings

    from graphconv import cli

    async def pending():
        await asyncio.sleep(3600)

    def abandon_a_task():
        loop = asyncio.new_event_loop()
        loop.create_task(pending())
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()  # the task still pending, as a stop leaves zarr's
        gc.collect()

    before = logging.getLogger("asyncio").level
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            abandon_a_task()
        assert "Task was destroyed but it is pending" in caplog.text  # what the user saw
        caplog.clear()
        with warnings.catch_warnings():
            cli._silence_asyncio()  # what a stop registers for the exit (`_quiet_shutdown`)
            abandon_a_task()
        assert "Task was destroyed" not in caplog.text
    finally:
        logging.getLogger("asyncio").setLevel(before)


def test_a_missing_optional_package_is_one_error_before_any_work(tmp_path, monkeypatch, capsys):
    """Without tifffile a .tif map was computed first and refused after; an --images batch
    to .tif said it once per image; without Pillow an --images batch of photos raised
    ModuleNotFoundError from the heatmap check."""
    import sys

    pil = pytest.importorskip("PIL.Image")
    assert run_cli("compile", SPECS / "digits.yaml", "-o", tmp_path / "m") == 0
    (tmp_path / "photos").mkdir()
    for name in ("a", "b"):
        pil.open(ROOT / "examples" / "digits_page.png").save(tmp_path / "photos" / f"{name}.png")
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "tifffile", None)
    assert run_cli("run", tmp_path / "m", "--image", tmp_path / "photos" / "a.png", "--output", tmp_path / "m.tif") == 2
    out, err = capsys.readouterr()
    assert "output shape" not in out and err.strip() == "graphconv: this needs the tifffile package: pip install " \
                                                         "'graphconv[scale]'"
    assert run_cli("run", tmp_path / "m", "--images", tmp_path / "photos", "--output-dir", tmp_path / "maps",
                   "--output-format", "tif") == 2
    assert capsys.readouterr().err.count("tifffile") == 1 and not (tmp_path / "maps").exists()
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert run_cli("run", tmp_path / "m", "--images", tmp_path / "photos", "--output-dir", tmp_path / "maps") == 2
    err = capsys.readouterr().err
    assert err.startswith("graphconv: ") and "needs Pillow: pip install 'graphconv[images]'" in err
    assert len(err.strip().splitlines()) == 1


def test_a_command_started_without_stderr_keeps_its_notes_out_of_stdout(tmp_path):
    """`2>&-`: Python then has no sys.stderr, and print(file=None) wrote the notes into
    standard output among the report; the first direct write ended the command, exit 1,
    with a traceback no one saw. The notes now go nowhere, the report stays whole."""
    command = [sys.executable, "-m", "graphconv", "inspect", str(SPECS / "lenet.yaml")]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(2))
    assert result.returncode == 0
    assert "note:" not in result.stdout and result.stdout.startswith("lenet:")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_standard_output_that_cannot_be_written_is_named(tmp_path):
    """A full disk under `> report.txt` (here /dev/full) said "No space left on device"
    alone, read as the map's disk; and an error at the last flush, as the process
    left, was passed over with exit 0 and the report lost."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "graphconv", "inspect", str(SPECS / "lenet.yaml")],
                                stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "graphconv: standard output: No space left on device"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("stdout", ["full", "closed pipe"])
def test_a_run_whose_standard_output_fails_still_writes_all_its_outputs(digits_fcn, tmp_path, stdout):
    """Standard output that fails mid-command (`> /dev/full`, `| true`) stopped `run` after
    its map was in place: exit 2 (or 141) with the map written and the heatmap not,
    though nothing is written unless a command succeeds. The run now finishes, writes
    both, exits 0 and says on stderr what was lost."""
    pytest.importorskip("PIL")
    page = ROOT / "examples/digits_page.png"
    command = [sys.executable, "-m", "graphconv", "run", str(digits_fcn), "--image", str(page), "--output",
               str(tmp_path / "o.npy"), "--heatmap", "3", "--heatmap-out", str(tmp_path / "h.png")]
    if stdout == "full":
        with open("/dev/full", "w") as full:
            result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True)
    else:
        read, write = os.pipe()
        os.close(read)  # no reader: the first write fails with EPIPE
        result = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True)
        os.close(write)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "o.npy").shape[:2] == (1, 11) and (tmp_path / "h.png").stat().st_size > 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("graphconv: note: standard output could not be written (") and "o.npy" in last \
        and "h.png" in last


def test_inspect_into_a_pipe_its_reader_left_exits_as_a_unix_tool_does(tmp_path):
    """`graphconv inspect ... | head`: what it printed is its whole product, so a reader
    that left ends it with 141, as SIGPIPE ends a Unix tool, and nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    result = subprocess.run([sys.executable, "-m", "graphconv", "inspect", str(SPECS / "lenet.yaml")], stdout=write,
                            stderr=subprocess.PIPE, text=True)
    os.close(write)
    assert result.returncode == 141 and "graphconv:" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("crops", [False, True])
def test_a_batch_of_two_to_a_tif_map_is_refused_before_the_run_naming_the_tif(digits_fcn, tmp_path, capsys, crops):
    """`--input batch.npy --output map.tif` with two images ran the network and then named
    a hidden temporary file (".graphconv-tmp-...-map.tif") in its refusal."""
    np.save(tmp_path / "batch.npy", np.zeros((2, 1, 40, 40), np.float32))
    asked = ["--crops", "4"] if crops else []
    assert run_cli("run", digits_fcn, "--input", tmp_path / "batch.npy", "--output", tmp_path / "map.tif",
                   *asked) == 2
    out, err = capsys.readouterr()
    assert "map.tif: a TIFF map holds one image's map, and batch.npy holds 2 images" in err
    assert "output shape" not in out and ".graphconv-tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.npy"]


OFF_CENTRE = """name: off_centre
input: {shape: [1, 16, 16]}
layers:
  - {name: c1, op: conv, out_channels: 3, kernel_size: 3, stride: 2, padding: 1}
  - {name: r1, op: relu}
  - {name: c2, op: conv, out_channels: 3, kernel_size: 3, stride: 2, padding: 1}
  - {name: r2, op: relu}
  - {name: fc, op: fc, out_features: 2}
"""


def test_a_heatmap_draws_each_cell_on_its_crop_where_the_map_s_georeference_puts_it(write_spec, tmp_path,
                                                                                    monkeypatch, capsys):
    """A padded network's receptive field (19 px from -3) sits 1.5 px up and left of its
    16 px crop's centre: the heatmap drew cells around the field's centre while the .tif's
    metadata, --skip-background and --mask put them at the crop's (up to half a cell
    apart on a ResNet). Every pixel now takes the cell whose crop is centred nearest."""
    pil = pytest.importorskip("PIL.Image")
    from graphconv import images

    rng = np.random.default_rng(3)
    pil.fromarray(rng.integers(0, 256, (64, 80), dtype=np.uint8)).save(tmp_path / "pic.png")
    assert run_cli("compile", write_spec(OFF_CENTRE), "-o", tmp_path / "m") == 0
    drawn = []
    save = images.save_picture
    monkeypatch.setattr(images, "save_picture", lambda picture, path, fmt=None, settings=None: save(picture, path, fmt, settings)
                        or drawn.append(picture))
    assert run_cli("run", tmp_path / "m", "--image", tmp_path / "pic.png", "--output", tmp_path / "map.npy",
                   "--heatmap", 0, "--heatmap-range", "map", "--heatmap-opacity", 1) == 0
    scores = np.load(tmp_path / "map.npy")[0, 0]
    assert scores.shape == (13, 17)  # crops at 4 r, 4 c: centres 8 + 4 r, as a whole-image run now says too
    assert "cells: cell (r, c) of the map is centred at (y, x) = (8 + 4 r, 8 + 4 c)" in capsys.readouterr().err
    left, top, right, bottom = drawn[0].info["panel_box"]
    factor = (bottom - top) // 64
    panel = np.asarray(drawn[0])[top:bottom:factor, left:right:factor].astype(int)  # one pixel of each image pixel

    def cell(pixel, cells):  # the cell whose crop's centre 8 + 4 r is nearest the pixel's centre; a tie: the later
        return np.clip(np.floor((pixel + 0.5 - 8) / 4 + 0.5), 0, cells - 1).astype(int)

    level = (scores - scores.min()) / (scores.max() - scores.min())
    colours = images._colours(level).transpose(1, 2, 0)
    expected = colours[cell(np.arange(64), 13)[:, None], cell(np.arange(80), 17)[None, :]].astype(np.uint8)
    grey = np.asarray(pil.open(tmp_path / "pic.png"))[..., None].repeat(3, 2)
    rows, cols = np.arange(64)[:, None], np.arange(80)[None, :]
    edge = (rows < 6) | (rows >= 6 + 13 * 4) | (cols < 6) | (cols >= 6 + 17 * 4)  # outside every cell's square
    expected = np.where(edge[..., None], grey, expected)
    assert np.abs(panel - expected).max() <= 1


@pytest.mark.parametrize("given,parsed", [
    (["--nodata", "-1e30"], ["--nodata=-1e30"]),  # argparse: "--nodata: expected one argument"
    (["--mean", "-0.5,0.1", "--std", "-.5"], ["--mean=-0.5,0.1", "--std", "-.5"]),  # -.5: argparse's own
    (["--nodata", "-9999"], ["--nodata", "-9999"]),
    (["--nodata=-1e3", "-2/3"], ["--nodata=-1e3", "-2/3"]),
    (["--", "-1e3"], ["--", "-1e3"]), (["-h"], ["-h"]),
])
def test_option_values_starting_with_a_minus_reach_the_option(given, parsed):
    from graphconv.cli import _negative_values_joined

    assert _negative_values_joined(given) == parsed


@pytest.mark.parametrize("factor, shift, own", [(1 / 255, 0.0, True), (1 / 127.5, -1.0, True), (1.0, 0.0, False),
                                                (1 / 58.0, -2.0, True), (1 / 40.0, -3.0, False)])
def test_import_of_a_network_that_scales_its_own_pixels_says_so_and_warns_of_scaling_twice(
        tmp_path, capsys, factor, shift, own):
    """A Keras model with Rescaling(1/255) inside imports as a first batchnorm; import said
    "add a preprocess block ... --scale", and doing so scaled the pixels twice (a review's
    map 0.115 off, silently). Such a network takes 0..255: its spec says `scale: 1`, and
    --scale on top is noted. So does one that normalises 0..255 as ImageNet's mean and
    std do (/ 58 - 2: EfficientNetV2's Rescaling and Normalization, folded into one;
    a review found it advised --scale/--mean/--std). A first layer spreading 0..255 over
    6.4 units is not taken for one."""
    onnx = pytest.importorskip("onnx")
    from test_frontends_onnx import onnx_file
    from graphconv.frontends import load_network

    weights = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [onnx.helper.make_node("Mul", ["x", "factor"], ["scaled"]),
             onnx.helper.make_node("Add", ["scaled", "shift"], ["shifted"]),
             onnx.helper.make_node("Conv", ["shifted", "w"], ["y"])]
    path = onnx_file(tmp_path / "keras.onnx", nodes, {"factor": np.float32(factor), "shift": np.float32(shift),
                                                      "w": weights})
    assert run_cli("import", path, "-o", tmp_path / "net.yaml") == 0
    err = capsys.readouterr().err
    said = "note: the network scales its pixels itself: its first layer"
    assert (said in err) == own and ("ONNX files do not say how images were normalised" in err) == (not own)
    assert load_network(tmp_path / "net.yaml").meta.get("preprocess") == ({"scale": 1.0} if own else None)
    assert run_cli("import", path, "-o", tmp_path / "twice.yaml", "--scale", "0.00392157") == 0
    err = capsys.readouterr().err
    assert ("and --scale 0.00392157 scales them before it: twice" in err) == own
    assert run_cli("import", path, "-o", tmp_path / "normalised.yaml", "--mean", "0.5", "--std", "0.2") == 0
    err = capsys.readouterr().err
    assert ("and --mean and --std normalise them before it does: twice" in err) == own


def test_the_note_on_a_network_s_own_normalisation_gives_its_factor_per_channel_and_the_range_it_maps_onto(
        tmp_path, capsys):
    """ImageNet's mean and std over 0..255 pixels, in the model: the note said "multiplies
    them by 0.0175", one of its three factors, and nothing of the shift."""
    onnx = pytest.importorskip("onnx")
    from test_frontends_onnx import onnx_file

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    inits = {"mean": (255 * mean).reshape(1, 3, 1, 1).astype(np.float32),
             "std": (255 * std).reshape(1, 3, 1, 1).astype(np.float32),
             "w": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)}
    nodes = [onnx.helper.make_node("Sub", ["x", "mean"], ["centred"]),
             onnx.helper.make_node("Div", ["centred", "std"], ["normalised"]),
             onnx.helper.make_node("Conv", ["normalised", "w"], ["y"])]
    path = onnx_file(tmp_path / "normalising.onnx", nodes, inits)
    assert run_cli("import", path, "-o", tmp_path / "net.yaml") == 0
    err = capsys.readouterr().err
    assert "multiplies them by 0.0171 to 0.0175 (per channel) and shifts them, taking 0..255 onto -2.12..2.64" in err


def test_a_network_that_reverses_its_channels_before_scaling_its_pixels_still_takes_them_as_they_are(
        tmp_path, capsys):
    """Caffe-style preprocessing inside a Keras model (x[..., ::-1] / 255): the flip, a 1x1
    conv picking channels, comes before the scaling; import advised --scale again."""
    onnx = pytest.importorskip("onnx")
    from test_frontends_onnx import onnx_file
    from graphconv.frontends import load_network

    inits = {"starts": np.array([-1]), "ends": np.array([-2 ** 63]), "axes": np.array([1]), "steps": np.array([-1]),
             "factor": np.float32(1 / 255),
             "w": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)}
    nodes = [onnx.helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["bgr"]),
             onnx.helper.make_node("Mul", ["bgr", "factor"], ["scaled"]),
             onnx.helper.make_node("Conv", ["scaled", "w"], ["y"])]
    path = onnx_file(tmp_path / "keras.onnx", nodes, inits)
    assert run_cli("import", path, "-o", tmp_path / "net.yaml") == 0
    err = capsys.readouterr().err
    assert "note: the network scales its pixels itself: after reordering its channels, its layer" in err
    assert load_network(tmp_path / "net.yaml").meta.get("preprocess") == {"scale": 1.0}


CAFFE_MEAN = [103.939, 116.779, 123.68]


@pytest.mark.parametrize("form, mean, own", [("conv", CAFFE_MEAN, True), ("slice-sub", CAFFE_MEAN, True),
                                             ("sub", CAFFE_MEAN, True), ("conv", [0.485, 0.456, 0.406], False),
                                             ("conv", [300.0, 116.779, 123.68], False)])
def test_a_network_that_takes_off_a_mean_of_0_to_255_pixels_takes_them_as_they_are(tmp_path, capsys, form, mean,
                                                                                     own):
    """Keras' caffe mode inside the model (resnet50.preprocess_input as a Lambda: RGB to
    BGR and the mean in pixel units off, no scaling), which tf2onnx folds into one 1x1
    conv of 0s and 1s with a bias: import advised --scale/--mean/--std, and following it
    squeezed the pixels into 0..1 before a mean of 100 came off. A mean of 0..255 pixels
    says the network takes them as they are; one of 0..1 pixels (0.485) does not, nor
    one no 8-bit pixel has (300)."""
    onnx = pytest.importorskip("onnx")
    from test_frontends_onnx import onnx_file
    from graphconv.frontends import load_network

    inits = {"w": np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32),
             "flip": np.eye(3, dtype=np.float32)[::-1].reshape(3, 3, 1, 1).copy(),
             "minus_mean": -np.array(mean, np.float32), "mean": np.array(mean, np.float32).reshape(1, 3, 1, 1),
             "starts": np.array([-1]), "ends": np.array([-2 ** 63]), "axes": np.array([1]), "steps": np.array([-1])}
    nodes = {"conv": [onnx.helper.make_node("Conv", ["x", "flip", "minus_mean"], ["bgr"])],
             "slice-sub": [onnx.helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["flipped"]),
                           onnx.helper.make_node("Sub", ["flipped", "mean"], ["bgr"])],
             "sub": [onnx.helper.make_node("Sub", ["x", "mean"], ["bgr"])]}[form]
    path = onnx_file(tmp_path / "keras.onnx", nodes + [onnx.helper.make_node("Conv", ["bgr", "w"], ["y"])], inits)
    assert run_cli("import", path, "-o", tmp_path / "net.yaml") == 0
    err = capsys.readouterr().err
    said = "note: the network normalises its pixels itself: "
    assert (said in err) == own and ("ONNX files do not say how images were normalised" in err) == (not own)
    if own:
        assert "subtracts a mean of 103.939, 116.779, 123.68 (pixel units, 0..255), so it takes pixels in 0..255" in err
    assert load_network(tmp_path / "net.yaml").meta.get("preprocess") == ({"scale": 1.0} if own else None)
    assert run_cli("import", path, "-o", tmp_path / "scaled.yaml", "--scale", "0.00392157") == 0
    err = capsys.readouterr().err
    assert ("and --scale 0.00392157 scales them onto 0..1 before it takes that mean off" in err) == own


@pytest.mark.parametrize("name, said", [
    ("model.h5", "is a Keras model (HDF5): graphconv reads ONNX models and its own specs; convert it first: "
                 "python -m tf2onnx.convert --keras MODEL.h5"),
    ("model.keras", "is a Keras 3 model: graphconv reads ONNX"),
    ("model.tflite", "is a TensorFlow Lite model"),
    ("resnet.pth", "is a PyTorch file: graphconv reads ONNX models and its own specs; convert it first: "
                   "torch.onnx.export("),
    ("saved", "is a TensorFlow SavedModel: graphconv reads ONNX models and its own specs; convert it first: "
              "python -m tf2onnx.convert --saved-model"),
])
@pytest.mark.parametrize("command", ["import", "compile", "run", "inspect"])
def test_a_model_of_another_framework_is_refused_with_the_way_to_onnx(tmp_path, capsys, name, said, command):
    """A Keras .h5 given to import was "a spec is already a spec", to run "not a YAML text
    file", a SavedModel folder "a folder without a model.yaml"."""
    path = tmp_path / name
    if name == "saved":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"\x08\x01")
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    args = {"import": ("-o", tmp_path / "net.yaml"), "compile": ("-o", tmp_path / "fcn"),
            "run": ("--input", tmp_path / "x.npy"), "inspect": ()}[command]
    assert run_cli(command, path, *args) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "net.yaml").exists() and not (tmp_path / "fcn").exists()


def test_every_help_example_parses_and_names_files_the_checkout_has(capsys):
    """Each command's --help ends with examples a newcomer pastes; they ran when written
    (all exit 0 in a checkout after the quick start), and a renamed flag or file must
    not leave one behind."""
    import shlex
    from graphconv.cli import EXAMPLES, build_parser

    parser = build_parser()
    for command, lines in EXAMPLES.items():
        for line in lines:
            words = shlex.split(line)
            assert words[:2] == ["graphconv", command], line
            parser.parse_args(words[1:])
            named = [w for w in words if w.startswith(("specs/", "examples"))]
            assert all((ROOT / w).exists() for w in named), line
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--help"])
    assert EXAMPLES["run"][0] in capsys.readouterr().out


ONE_SCORE_NET = """
name: bin
input: {shape: [1, 16, 16]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 5, stride: 2}
  - {name: r1, op: relu}
  - {name: c2, op: conv, out_channels: 1, kernel_size: 6}
  - {name: p, op: sigmoid}
"""


def test_heatmap_top_of_one_score_is_refused_for_its_scores(write_spec, tmp_path, rng):
    """A one-sigmoid tumour model's --heatmap top labelled every cell 'tumour', glass
    included (one class is every cell's best, whatever its score), without the note
    --reduce argmax gives; CLI and Python refuse it, naming the scores' heatmap."""
    from PIL import Image

    from graphconv import load
    from graphconv.errors import GraphconvError

    spec = write_spec(ONE_SCORE_NET)
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(tmp_path / "page.png")
    refused = graphconv_in_process("run", spec, "--image", tmp_path / "page.png", "--heatmap", "top",
                                   "--heatmap-out", tmp_path / "h.png")
    assert refused.returncode == 2 and not (tmp_path / "h.png").exists()
    assert "--heatmap top: bin gives one score per cell (a sigmoid's probability?), so every cell's best class is " \
           "that one class, whatever its score: draw its scores, --heatmap 0" in refused.stderr
    assert graphconv_in_process("run", spec, "--image", tmp_path / "page.png", "--heatmap", "0",
                                "--heatmap-out", tmp_path / "h.png").returncode == 0
    with pytest.raises(GraphconvError, match="heatmap: 'top' of bin, which gives one score per cell"):
        load(spec).heatmap(tmp_path / "page.png")


def test_heatmap_top_of_a_multi_label_model_says_what_it_colours(write_spec, tmp_path, rng):
    """Three findings ending in a sigmoid: the top map colours each cell by its best
    finding whatever its probability (a cell may call none, or several), which read as
    'the best class of each cell' of a model that picks one; a note says so, once."""
    from PIL import Image

    spec = write_spec(ONE_SCORE_NET.replace("out_channels: 1, kernel_size: 6", "out_channels: 3, kernel_size: 6"))
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(tmp_path / "page.png")
    drawn = graphconv_in_process("run", spec, "--image", tmp_path / "page.png", "--heatmap", "top",
                                 "--heatmap-out", tmp_path / "h.png")
    assert drawn.returncode == 0 and (tmp_path / "h.png").exists()
    assert drawn.stderr.count("note: bin ends in a sigmoid, each class a finding of its own: --heatmap top colours "
                              "each cell by its highest-scoring class where that one's probability is at least 0.5, "
                              "and leaves clear the cells calling none") == 1
    tiled = graphconv_in_process("run", spec, "--image", tmp_path / "page.png", "--heatmap", "top", "--tile", "24",
                                 "--heatmap-out", tmp_path / "tiled.png")
    assert tiled.returncode == 0, tiled.stderr
    with Image.open(tmp_path / "h.png") as whole, Image.open(tmp_path / "tiled.png") as by_tiles:
        assert np.array_equal(np.asarray(whole), np.asarray(by_tiles))  # the same cells left clear
    one = graphconv_in_process("run", spec, "--image", tmp_path / "page.png", "--heatmap", "1",
                               "--heatmap-out", tmp_path / "h1.png")
    assert one.returncode == 0 and "each class a finding of its own" not in one.stderr


@pytest.mark.parametrize("output, kind", [("map.ome.tif", "plain TIFF"), ("map.ome.zarr", "plain zarr array")])
def test_a_map_named_ome_says_it_is_written_plain(digits_fcn, tmp_path, output, kind):
    """`--output map.ome.tif` was written as graphconv's plain TIFF without a word: a
    viewer expecting OME metadata (physical size, pyramid) found none."""
    if output.endswith(".zarr"):
        pytest.importorskip("zarr")
    result = graphconv_in_process("run", digits_fcn, "--image", ROOT / "examples/digits_page.png", "--tile", "256",
                                  "--output", output, "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"{output} is written as graphconv's maps are, a {kind}" in result.stderr and "not as OME" in result.stderr
    plain = graphconv_in_process("run", digits_fcn, "--image", ROOT / "examples/digits_page.png", "--tile", "256",
                                 "--output", output.replace(".ome", ""), "--quiet")
    assert plain.returncode == 0 and "not as OME" not in plain.stderr


def test_threads_runs_the_cpu_kernels_on_that_many_and_gives_the_same_map(tmp_path, capsys, monkeypatch, digits_fcn):
    """--threads N: numba's pool was sized by the cores alone, NUMBA_NUM_THREADS (set before
    the command started) the only way to fewer, which a benchmark against onnxruntime's
    intra_op_num_threads needs."""
    import numba

    from graphconv import threads
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((1, 1, 60, 72)).astype(np.float32))
    assert run_cli("run", digits_fcn, "--input", tmp_path / "x.npy", "--output", tmp_path / "all.npy") == 0
    seen = []
    counted = threads.kernel_threads
    monkeypatch.setattr(threads, "kernel_threads", lambda: seen.append(counted()) or seen[-1])
    assert run_cli("run", digits_fcn, "--input", tmp_path / "x.npy", "--output", tmp_path / "one.npy",
                   "--threads", 1) == 0
    assert seen and set(seen) == {1}  # the run's memory estimate, sized for the threads the kernels run on
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), np.load(tmp_path / "all.npy"), rtol=1e-5, atol=1e-5)
    assert numba.get_num_threads() == threads.pool_threads()  # the notebook's next run has them all again


@pytest.mark.parametrize("extra, message", [
    (("--threads", "1", "--scheduler", "tcp://127.0.0.1:1"), "a running cluster's workers keep their own"),
    (("--threads", "1", "--device", "cuda"), "--device cuda runs them on the GPU"),
    (("--threads", "0"), "argument --threads: expected an integer >= 1"),
])
def test_threads_where_it_cannot_apply_is_refused(tmp_path, digits_fcn, extra, message):
    from conftest import graphconv_in_process
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 40, 40), np.float32))
    result = graphconv_in_process("run", digits_fcn, "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npy",
                                  *extra)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "o.npy").exists()


def test_threads_with_workers_is_each_worker_s(monkeypatch):
    """--workers 2 --threads 3: each worker process's numba pool has 3 (their environment;
    without --threads the cores are split between them)."""
    distributed = pytest.importorskip("distributed")
    from graphconv import cluster

    made = []

    class Refused(Exception):
        pass

    def local_cluster(**options):
        made.append(options["env"])
        raise Refused

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    for threads in (3, None):
        with pytest.raises(Refused), cluster.client_for(2, None, threads):
            pass
    from graphconv.threads import usable_cores
    assert made == [{"NUMBA_NUM_THREADS": "3"}, {"NUMBA_NUM_THREADS": str(max(1, usable_cores() // 2))}]


def test_run_input_of_raw_pixels_for_a_model_with_a_preprocess_is_noted(tmp_path):
    """--input takes the network's input; a .npy of the picture's 0..255 pixels ran through
    a model whose preprocess brings them to 0..1, and its map was nonsense without a word."""
    pixels = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    out = graphconv_in_process("run", SPECS / "digits.yaml", "--input", tmp_path / "pixels.npy")
    assert out.returncode == 0, out.stderr
    assert re.search(r"note: pixels.npy's values reach 25\d, but the model's preprocess puts pixels \(0..255\) in "
                     r"0..1: --input takes the network's input already preprocessed; --image reads a picture",
                     out.stderr), out.stderr
    np.save(tmp_path / "input.npy", pixels / 255)
    assert "values reach" not in graphconv_in_process("run", SPECS / "digits.yaml", "--input",
                                                      tmp_path / "input.npy").stderr
