"""The pad op and the uneven padding it brings into the window geometry: its parameters,
its kernels on sizes the examples do not reach, `window_output` with different amounts on
the two sides of an axis against the numpy references, and receptive fields of padded
networks against what each cell really reads.

(The registry-driven tests run the op's examples through the CPU kernel in every storage,
the CUDA kernel on the simulator, PyTorch and onnxruntime: tests/test_ops.py,
test_cuda.py, test_torch_bridge.py, test_frontends_onnx_export.py.)"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphconv
from graphconv.errors import GraphconvError, ShapeError
from graphconv.frontends.yaml import spec_text
from graphconv.ops import get_op
from graphconv.ops.registry import Window, describe_padding, sliding_output, window_output
from graphconv.params import compact_params, normalize_params
from graphconv.receptive import receptive_fields
from graphconv.runtime import run_reference

from test_ops import STORAGE_CHOICES, check_op

PAD = get_op("pad")


# ---- parameters ---------------------------------------------------------------------------------

def test_padding_is_four_sides_and_one_int_means_all_of_them():
    assert normalize_params(PAD, {"padding": 2}) == {"padding": (2, 2, 2, 2), "value": 0.0, "mode": "constant"}
    assert normalize_params(PAD, {"padding": [0, 1, 2, 3]})["padding"] == (0, 1, 2, 3)
    assert compact_params(PAD, normalize_params(PAD, {"padding": [1, 1, 1, 1]})) == {"padding": 1}
    assert compact_params(PAD, normalize_params(PAD, {"padding": [0, 0, 1, 1]})) == {"padding": (0, 0, 1, 1)}


@pytest.mark.parametrize("raw,message", [
    ({"padding": [1, 1]}, r"'padding' must be an integer >= 0 or a list \[top, left, bottom, right\]"),
    ({"padding": [0, -1, 0, 0]}, "'padding' must be an integer >= 0"),
    ({"padding": 1, "value": float("nan")}, r"'value' must be a finite number or -inf or inf \(YAML: -\.inf, "
                                            r"\.inf\), got nan"),
    ({"padding": 1, "value": "minus infinity"}, "'value' must be a finite number or -inf or inf"),
    ({}, "pad needs parameter 'padding'"),
    ({"padding": 1, "mode": "wrap"}, "'mode' must be one of"),
])
def test_bad_parameters_are_named(raw, message):
    with pytest.raises(GraphconvError, match=message):
        normalize_params(PAD, raw)


def test_infinite_values_are_only_for_params_that_allow_them():
    assert normalize_params(PAD, {"padding": 1, "value": -math.inf})["value"] == -math.inf
    with pytest.raises(GraphconvError, match="'p' must be a finite number, got -inf"):
        normalize_params(get_op("dropout"), {"p": -math.inf})


def test_a_spec_with_a_minus_inf_pad_is_written_and_read_back(write_spec, rng):
    spec = write_spec("""
        input: {shape: [2, 7, 6]}
        layers:
          - {name: p.pad, op: pad, padding: [0, 0, 1, 1], value: -.inf}
          - {name: p, op: maxpool, kernel_size: 2}
        """)
    graph = graphconv.load_spec(spec)
    assert graph.node("p.pad").params == {"padding": (0, 0, 1, 1), "value": -math.inf, "mode": "constant"}
    text = spec_text(graph, weights_file=None)
    assert "{name: p.pad, op: pad, padding: [0, 0, 1, 1], value: -.inf}" in text
    again = graphconv.load_spec(write_spec(text, "again.yaml"))
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    out = graphconv.Model(graph).run(x, full=True)
    np.testing.assert_array_equal(graphconv.Model(again).run(x, full=True), out)
    assert out.shape == (1, 2, 4, 3)  # 8x7 padded, pooled by 2


# ---- the kernels beyond the examples ---------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(top=st.integers(0, 3), left=st.integers(0, 3), bottom=st.integers(0, 3), right=st.integers(0, 3),
       c=st.integers(1, 9), h=st.integers(1, 6), w=st.integers(1, 6), batch=st.integers(1, 3),
       value=st.sampled_from([0.0, -math.inf, 1.5]), mode=st.sampled_from(["constant", "reflect", "edge"]),
       storage=st.sampled_from(STORAGE_CHOICES))
def test_pad_kernel_hypothesis(top, left, bottom, right, c, h, w, batch, value, mode, storage):
    """Every mix of sides (none, one, all), one-pixel maps, channel counts that are and are
    not a vector's, each mode (a reflection as wide as the map allows), with the input
    and output stored each way."""
    if mode == "reflect":
        top, bottom, left, right = min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1)
    check_op("pad", dict(padding=[top, left, bottom, right], value=value, mode=mode), [(c, h, w)],
             np.random.default_rng(h * 7 + w), batch=batch, storage=storage)


@pytest.mark.parametrize("padding, shape", [([2, 0, 0, 0], (1, 2, 5)), ([0, 0, 0, 3], (1, 4, 3))])
def test_a_reflection_wider_than_the_map_is_refused(padding, shape):
    opdef = get_op("pad")
    with pytest.raises(ShapeError, match="reflect pad .* a reflection adds fewer rows"):
        opdef.shape(normalize_params(opdef, dict(padding=padding, mode="reflect")), [shape])


# ---- window_output with uneven padding ------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), pads=st.lists(st.integers(0, 3), min_size=4, max_size=4),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)))
def test_window_output_with_uneven_padding_matches_the_numpy_references(h, w, pads, kernel, stride, dilation):
    """A window padded (top, left) before and (bottom, right) after the map gives the
    output of the pad op's reference followed by an unpadded conv's reference: the count
    of windows that fit, or a ShapeError when none does."""
    top, left, bottom, right = pads
    window = Window(kernel, stride, (top, left), dilation, padding_end=(bottom, right))
    x = np.random.default_rng(0).standard_normal((1, 1, h, w)).astype(np.float32)
    padded = PAD.reference(normalize_params(PAD, {"padding": pads}), {}, [x])
    conv = get_op("conv")
    params = normalize_params(conv, dict(out_channels=1, kernel_size=list(kernel), stride=list(stride),
                                         dilation=list(dilation)))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if extent[0] > padded.shape[2] or extent[1] > padded.shape[3]:
        with pytest.raises(ShapeError, match="does not fit"):
            window_output(window, (1, h, w), "kernel")
        return
    out = conv.reference(params, {"weight": np.ones((1, 1, *kernel), np.float32)}, [padded])
    assert window_output(window, (1, h, w), "kernel") == out.shape[2:]
    assert sliding_output(h, kernel[0], stride[0], top, dilation[0], bottom) == out.shape[2]


def test_a_symmetric_window_reads_as_before():
    window = Window((3, 3), (1, 1), (1, 2), (1, 1))
    assert window.padding_end == (1, 2) and window.symmetric and describe_padding(window) == "padding 1x2"
    uneven = Window((1, 1), (1, 1), (0, 0), (1, 1), padding_end=(1, 1))
    assert not uneven.symmetric
    assert describe_padding(uneven) == "padding top 0, left 0, bottom 1, right 1"


# ---- receptive fields: what a cell reads, by experiment --------------------------------------------

PADDED_NET = """
input: {{shape: [1, {h}, {w}]}}
layers:
  - {{name: p1, op: pad, padding: {p1}}}
  - {{name: c1, op: conv, out_channels: 1, kernel_size: {k}, stride: {s}, dilation: {d}, padding: {cp}, bias: false}}
  - {{name: p2, op: pad, padding: {p2}}}
  - {{name: a2, op: avgpool, kernel_size: 2, stride: {s2}}}
"""


@settings(max_examples=25, deadline=None)
@given(h=st.integers(6, 10), w=st.integers(6, 10), p1=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       p2=st.lists(st.integers(0, 2), min_size=4, max_size=4), k=st.integers(1, 3), s=st.integers(1, 2),
       d=st.integers(1, 2), cp=st.integers(0, 1), s2=st.integers(1, 2))
def test_a_cells_field_box_bounds_exactly_the_pixels_it_reads(tmp_path_factory, h, w, p1, p2, k, s, d, cp, s2):
    """One image per input pixel, that pixel 1 and the rest 0, through a network of pads,
    a conv of positive weights and an average pool (so nothing cancels): a cell is
    nonzero exactly for the pixels it reads. Every such pixel lies in the cell's field
    box, and where the box starts or ends inside the image a pixel it reads is there (the
    box is no larger than it must be): only the top and left padding move boxes."""
    spec = tmp_path_factory.mktemp("field") / "net.yaml"
    spec.write_text(PADDED_NET.format(h=h, w=w, p1=p1, p2=p2, k=k, s=s, d=d, cp=cp, s2=s2))
    try:
        graph = graphconv.load_spec(spec)
    except GraphconvError:
        return  # no window fits this input
    graph.set_weights("c1", weight=np.full((1, 1, k, k), 1.0, np.float32))
    impulses = np.eye(h * w, dtype=np.float32).reshape(h * w, 1, h, w)
    out = run_reference(graph, impulses)  # (pixel, 1, rows, cols)
    field = receptive_fields(graph)["a2"]
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            top, left, bottom, right = field.box(i, j)
            rows, cols = np.divmod(np.flatnonzero(out[:, 0, i, j] > 0), w)
            if rows.size == 0:
                continue  # a cell of padding alone
            assert top <= rows.min() and rows.max() < bottom and left <= cols.min() and cols.max() < right
            if 0 <= top and bottom <= h:
                assert rows.min() == top and rows.max() == bottom - 1, (i, j, field)
            if 0 <= left and right <= w:
                assert cols.min() == left and cols.max() == right - 1, (i, j, field)
