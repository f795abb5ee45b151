"""fuse-concat-batchnorm: a batchnorm after a concat reads the concat's inputs itself and
the concat goes, with the same map (slid over a larger image, stored either way,
exported to ONNX, saved as a spec); a concat something else reads, or that is the
network's output, stays."""
import numpy as np
import pytest

import graphconv
from graphconv.frontends.onnx_export import to_onnx_model
from graphconv.runtime import Executor, run_reference
from conftest import random_input

# DenseNet's block: every layer normalises the concatenation of all the maps before it.
# `side` reads cat2 besides its batchnorm, and cat3 is the network's output.
DENSE_BLOCK = """
name: dense_block
input: {shape: [4, 11, 9]}
layers:
  - {name: stem, op: conv, out_channels: 6, kernel_size: 3, padding: 1}
  - {name: f1, op: conv, out_channels: 3, kernel_size: 3, padding: 1}
  - {name: cat1, op: concat, inputs: [stem, f1]}
  - {name: bn1, op: batchnorm}
  - {name: relu1, op: relu}
  - {name: f2, op: conv, out_channels: 3, kernel_size: 3, padding: 1}
  - {name: cat2, op: concat, inputs: [stem, f1, f2]}
  - {name: bn2, op: batchnorm, eps: 0.001}
  - {name: relu2, op: relu}
  - {name: f3, op: conv, out_channels: 3, kernel_size: 1}
  - {name: side, op: maxpool, kernel_size: 1, inputs: [cat2]}
  - {name: cat3, op: concat, inputs: [side, f3]}
"""


def _compiled(write_spec):
    model = graphconv.load(write_spec(DENSE_BLOCK))
    return model, graphconv.compile_model(model.graph)


def test_the_concats_only_a_batchnorm_reads_go(write_spec):
    _, compiled = _compiled(write_spec)
    graph = compiled.graph
    assert sorted(n.name for n in graph.find("concat")) == ["cat2", "cat3"]
    assert [i.name for i in graph.node("bn1").inputs] == ["stem", "f1"]
    assert [i.name for i in graph.node("bn2").inputs] == ["cat2"]
    assert {n.name: n.params["activation"] for n in graph.find("batchnorm")} == {"bn1": "relu", "bn2": "relu"}
    assert not graph.find("relu")


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_fused_network_slides_to_the_same_map(write_spec, rng, monkeypatch, channels_last):
    from graphconv.passes import channels_last as layout_pass
    monkeypatch.setattr(layout_pass, "ENABLED", channels_last)
    model, compiled = _compiled(write_spec)
    x = random_input(rng, (2, 4, 23, 20))
    want = run_reference(model.graph, x)
    np.testing.assert_allclose(run_reference(compiled.graph, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Executor(compiled.graph).run(x), want, rtol=1e-4, atol=1e-5)


def test_a_fused_network_exports_to_onnx_and_runs_there(write_spec, rng):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, compiled = _compiled(write_spec)
    x = random_input(rng, (1, 4, 11, 9))
    session = ort.InferenceSession(to_onnx_model(compiled.graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


def test_a_saved_fused_network_loads_back_the_same(write_spec, tmp_path, rng):
    model, compiled = _compiled(write_spec)
    compiled.save(tmp_path / "fused.yaml")
    loaded = graphconv.load(tmp_path / "fused.yaml")
    assert [i.name for i in loaded.graph.node("bn1").inputs] == ["stem", "f1"]
    x = random_input(rng, (1, 4, 11, 9))
    np.testing.assert_allclose(loaded.run(x, full=True), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


def test_a_batchnorm_may_read_the_network_input_among_its_inputs(write_spec, rng):
    """The input is not one of the plan's buffers, so that layer is called unbound: the
    same map either way, batch after batch."""
    model = graphconv.load(write_spec("""
        name: with_input
        input: {shape: [3, 9, 9]}
        layers:
          - {name: c1, op: conv, out_channels: 5, kernel_size: 3, padding: 1}
          - {name: cat, op: concat, inputs: [data, c1]}
          - {name: bn, op: batchnorm}
          - {name: act, op: hardswish}
          - {name: c2, op: conv, out_channels: 4, kernel_size: 1}
    """))
    compiled = graphconv.compile_model(model.graph)
    assert [i.name for i in compiled.graph.node("bn").inputs] == ["data", "c1"]
    assert compiled.graph.node("bn").params["activation"] == "hardswish"
    executor = Executor(compiled.graph)
    for batch in (1, 3, 1):
        x = random_input(rng, (batch, 3, 14, 12))
        np.testing.assert_allclose(executor.run(x), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)
