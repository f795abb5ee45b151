"""global-pool-to-window: a globalavgpool becomes an avgpool whose window is its input at
the crop size, stride 1, so a ResNet-style classifier slides over larger images."""
import numpy as np
import pytest

import graphconv
from graphconv.cli import main
from graphconv.errors import GraphconvError
from graphconv.model import as_map
from graphconv.receptive import receptive_fields
from graphconv.runtime import Executor
from graphconv.torch_bridge import torch
from conftest import random_input
from nets import GATED

# a crop of 22x18: the global pool sees 5x4 (not square, so h and w cannot be swapped)
GLOBAL = """
name: global
input: {shape: [3, 22, 18]}
layers:
  - {name: c1, op: conv, out_channels: 6, kernel_size: 3, padding: 1, stride: 2}
  - {name: r1, op: relu}
  - {name: c2, op: conv, out_channels: 8, kernel_size: 3, padding: 1, stride: 2}
  - {name: gap, op: globalavgpool}
  - {name: fc, op: fc, out_features: 4}
"""
torch_only = pytest.mark.skipif(torch is None, reason="torch not installed")


def test_the_pool_becomes_a_window_of_its_crop_input(write_spec):
    graph = graphconv.compile_model(write_spec(GLOBAL), "global-pool-to-window").graph
    pool = graph.node("gap")
    assert pool.op == "avgpool" and pool.shape == (8, 1, 1)
    assert pool.params["kernel_size"] == (6, 5) and pool.params["stride"] == (1, 1)
    assert pool.params["padding"] == (0, 0) and pool.params["ceil_mode"] is False


def test_same_output_at_the_crop(write_spec, rng):
    classifier = graphconv.load(write_spec(GLOBAL))
    fcn = graphconv.compile_model(classifier.graph)
    assert not fcn.graph.find("globalavgpool") and not fcn.graph.find("fc")
    x = random_input(rng, (3, 3, 22, 18))
    np.testing.assert_allclose(fcn.run(x), as_map(classifier.run(x)), rtol=1e-5, atol=1e-6)


@torch_only
@pytest.mark.parametrize("extra", [(4, 0), (13, 9), (40, 31)])
def test_a_larger_image_gives_pytorchs_sliding_window(write_spec, rng, extra):
    """The dense map equals PyTorch running the classifier with its global pool replaced
    by avg_pool2d of the crop's window at stride 1 and the fc as the conv it is."""
    import torch.nn.functional as F
    classifier = graphconv.load(write_spec(GLOBAL))
    fcn = graphconv.compile_model(classifier.graph)
    x = random_input(rng, (2, 3, 22 + extra[0], 18 + extra[1]))
    w = {n.name: {k: torch.tensor(v) for k, v in n.weights.items()} for n in classifier.graph.layers()}
    with torch.no_grad():
        t = F.relu(F.conv2d(torch.from_numpy(x), w["c1"]["weight"], w["c1"]["bias"], stride=2, padding=1))
        t = F.conv2d(t, w["c2"]["weight"], w["c2"]["bias"], stride=2, padding=1)
        t = F.avg_pool2d(t, (6, 5), stride=1)
        t = F.conv2d(t, w["fc"]["weight"].reshape(4, 8, 1, 1), w["fc"]["bias"])
    want = t.numpy()
    got = Executor(fcn.graph).run(x)
    assert got.shape == want.shape and got.shape[2] > 1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    rows, cols = fcn.map_size(*x.shape[2:])
    np.testing.assert_allclose(fcn.run(x), want[:, :, :rows, :cols], rtol=1e-4, atol=1e-5)


def test_receptive_field_and_inspect(write_spec, tmp_path, capsys):
    spec = write_spec(GLOBAL)
    classifier = graphconv.load(spec)
    fields = receptive_fields(classifier.graph)
    assert fields["gap"].stride == (4, 4)  # the global pool's window is its whole input, stride 1
    fcn = graphconv.compile_model(spec)
    field = receptive_fields(fcn.graph)["fc"]
    assert field == fields["fc"]  # the same cell, now one of many
    assert fcn.output_stride == (4, 4) and field.size == (27, 23) and field.offset == (-3, -3)
    assert fcn.map_size(54, 50) == (9, 9)
    fcn.save(tmp_path / "m")
    assert main(["inspect", str(tmp_path / "m"), "--input-size", "54", "50"]) == 0
    text = capsys.readouterr().out
    assert "gap" in text and "avgpool" in text and "score map: 9x9 cells at output stride 4x4" in text


def test_a_finer_output_stride_dilates_the_window(write_spec, rng):
    """After the rewrite the pool is an ordinary stride-1 avgpool: output-stride 2 dilates
    it (by 2) like any other window, and shift-and-stitch agrees away from the padding."""
    spec = write_spec(GLOBAL)
    dilated = graphconv.compile_model(spec, output_stride=2, stride_method="dilate")
    assert dilated.graph.node("gap").params["dilation"] == (2, 2)
    shifted = graphconv.compile_model(spec, output_stride=2, stride_method="shift")
    x = random_input(rng, (1, 3, 40, 36))
    a, b = dilated.run(x), shifted.run(x)
    assert a.shape == b.shape == (1, 4, 10, 10)


def test_output_stride_before_the_rewrite_is_refused(write_spec):
    with pytest.raises(GraphconvError, match="layer 'gap' is still globalavgpool: run global-pool-to-window first"):
        graphconv.compile_model(write_spec(GLOBAL), "shape-inference,fc-to-conv", output_stride=2)


def test_inspect_of_an_unconverted_global_pool(write_spec, capsys):
    """inspect's table of finer strides does not fail on a graph whose nodes carry no
    shape annotations, and costs dilation as compile dilates it: after the global pool's
    rewrite (it said 'dilate inf', impossible, where compile dilates)."""
    spec = write_spec(GLOBAL.replace("  - {name: fc, op: fc, out_features: 4}\n", ""))
    assert main(["inspect", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "--output-stride 2: dilate 0.0" in out and "inf" not in out and "not possible" not in out



def test_a_squeeze_and_excitation_gate_is_refused_naming_the_pool_and_the_product(write_spec):
    with pytest.raises(GraphconvError) as err:
        graphconv.compile_model(write_spec(GATED))
    message = str(err.value)
    assert "layer 'squeeze'" in message and "'excite' (mul)" in message and "6x5x5 map 'c1'" in message
    assert "squeeze-and-excitation" in message and ".yaml:" in message


def test_a_gated_network_still_runs_as_a_classifier_on_its_crop(write_spec, rng):
    model = graphconv.load(write_spec(GATED))
    x = random_input(rng, (2, 3, 12, 12))
    assert model.run(x).shape == (2, 3)


def test_compiling_a_gated_network_is_exit_2_and_writes_nothing(write_spec, tmp_path, capsys):
    out = tmp_path / "compiled"
    assert main(["compile", str(write_spec(GATED)), "-o", str(out)]) == 2
    assert not out.exists()
    assert "squeeze-and-excitation" in capsys.readouterr().err


def test_a_gate_on_a_1x1_map_is_still_exact_and_compiles(write_spec):
    """At a 1x1 map the crop's average is the position itself: the rewritten pool is the
    identity, so the gate slides like any pointwise product."""
    spec = GATED.replace("stride: 2}", "stride: 2}\n  - {name: shrink, op: maxpool, kernel_size: 5}"
                         ).replace("inputs: [c1, gate]", "inputs: [shrink, gate]")
    graph = graphconv.compile_model(write_spec(spec)).graph
    assert not graph.find("globalavgpool")


# fastai's AdaptiveConcatPool2d as TorchScript exports it: the max pool a 4x3 window of
# stride 4x3 over the 4x3 map, the average pool a window of stride 1 (what GlobalAveragePool
# becomes); unpadded convs, so every cell must equal the classifier on its crop exactly
CONCAT_POOL = """
name: concatpool
input: {shape: [3, 22, 18]}
layers:
  - {name: c1, op: conv, out_channels: 6, kernel_size: 3, stride: 2}
  - {name: r1, op: relu}
  - {name: c2, op: conv, out_channels: 8, kernel_size: 3, stride: 2}
  - {name: mx, op: maxpool, kernel_size: [4, 3]}
  - {name: av, op: avgpool, kernel_size: [4, 3], stride: 1, inputs: [c2]}
  - {name: both, op: concat, inputs: [mx, av]}
  - {name: fc, op: fc, out_features: 4}
"""


def test_a_strided_pool_over_its_whole_input_slides_at_the_networks_stride(write_spec, rng):
    """It was kept at stride 4x3, so the map was 4x3 times coarser than the network's
    stride, and beside a stride-1 pool compile refused: 'merges maps of different
    strides'. Each cell must be the classifier on its crop."""
    classifier = graphconv.load(write_spec(CONCAT_POOL))
    fcn = graphconv.compile_model(classifier.graph)
    assert fcn.graph.node("mx").params["stride"] == (1, 1) and fcn.output_stride == (4, 4)
    x = random_input(rng, (1, 3, 38, 30))
    dense = fcn.run(x)
    assert dense.shape[2:] == (5, 4)
    for i in range(dense.shape[2]):
        for j in range(dense.shape[3]):
            crop = x[:, :, 4 * i:4 * i + 22, 4 * j:4 * j + 18]
            np.testing.assert_allclose(dense[:, :, i, j], classifier.run(crop), rtol=1e-5, atol=1e-6)
