"""Receptive fields checked by poking pixels: every cell that changes must have the pixel
in its box, for every layer whose field is local; the layers `whole_crop_layers` names
are exactly those where that fails, because they see the whole crop."""
import numpy as np
import pytest

import graphconv
from conftest import random_input
from graphconv.receptive import receptive_fields, whole_crop_layers
from nets import DAG, GATED, STRIDED

GROUP_NORMED = """
name: group_normed
input: {shape: [2, 14, 14]}
layers:
  - {name: c1, op: conv, out_channels: 4, kernel_size: 3}
  - {name: gn, op: groupnorm, groups: 2}
  - {name: c2, op: conv, out_channels: 4, kernel_size: 3, stride: 2}
  - {name: head, op: globalavgpool}
"""

L2_GATED = """
name: l2_gated
input: {shape: [2, 12, 12]}
layers:
  - {name: c1, op: conv, out_channels: 3, kernel_size: 3}
  - {name: norms, op: global_l2norm}
  - {name: scaled, op: mul, inputs: [c1, norms]}
  - {name: c2, op: conv, out_channels: 2, kernel_size: 2}
"""


def layer_values(graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output through the numpy references."""
    values = {graph.input.name: x}
    for node in graph.layers():
        values[node.name] = node.opdef.reference(node.params, node.weights, [values[s.name] for s in node.inputs])
    return values


def cells_outside_their_field(graph, rng, pokes: int = 10) -> set[str]:
    """The layers with a cell that changed when a pixel outside its field's box changed."""
    fields = receptive_fields(graph)
    c, h, w = graph.input_shape
    image = random_input(rng, (1, c, h, w))
    base = layer_values(graph, image)
    unsound = set()
    for y, x in rng.integers(0, (h, w), size=(pokes, 2)):
        poked = image.copy()
        poked[0, :, y, x] += 10.0
        for name, value in layer_values(graph, poked).items():
            changed = np.abs(value - base[name]).max(axis=(0, 1)) > 0
            for i, j in zip(*np.nonzero(changed)):
                top, left, bottom, right = fields[name].box(i, j)
                if not (top <= y < bottom and left <= x < right):
                    unsound.add(name)
    return unsound


@pytest.mark.parametrize("spec,whole", [
    (STRIDED, set()),
    (DAG, set()),
    (GATED, {"excite", "head", "fc"}),
    (GROUP_NORMED, {"gn", "c2", "head"}),
    (L2_GATED, {"scaled", "c2"}),
])
def test_whole_crop_layers_are_those_a_local_field_misdescribes(write_spec, rng, spec, whole):
    graph = graphconv.load(write_spec(spec)).graph
    assert whole_crop_layers(graph) == whole
    unsound = cells_outside_their_field(graph, rng)
    assert unsound <= whole, f"local fields too small outside the whole-crop layers: {unsound - whole}"
    if whole:
        assert unsound, "no poke showed a whole-crop layer depending on pixels outside its local box"


def test_inspect_shows_the_crop_as_the_field_of_whole_crop_layers(write_spec):
    from graphconv.inspect_report import inspect_report

    report = inspect_report(graphconv.load(write_spec(GROUP_NORMED)))
    rows = {line.split()[0]: line.split() for line in report.splitlines()[2:] if line.split()}
    assert rows["c1"][-3:] == ["3", "1", "0"]
    assert rows["gn"][-3:] == ["crop", "1", "-"]
    assert rows["c2"][-3:] == ["crop", "2", "-"]
    assert "from layer 'gn' (groupnorm) on" in report and "--crops" in report


def test_shift_and_stitch_interleaves_local_fields_not_whole_crop_ones(rng):
    """At the crop, each shifted copy's score map is 1x1, and interleave lays the copies'
    cells side by side: a finer map (stride 1/f) whose cells each see one crop, not a
    value broadcast over the map. inspect used to call its field "crop" and blame
    whole-map statistics, although the model slides (tiled == untiled)."""
    from conftest import SPECS
    from graphconv.inspect_report import inspect_report

    model = graphconv.compile_model(SPECS / "lenet.yaml", output_stride=2, stride_method="shift")
    graph = model.graph
    assert graph.find("interleave") and whole_crop_layers(graph) == set()
    assert receptive_fields(graph)["interleave"] == model.field
    assert (model.field.size, model.field.stride, model.field.offset) == ((32, 32), (2, 2), (0, 0))
    report = inspect_report(model, (64, 64))
    rows = {line.split()[0]: line.split() for line in report.splitlines()[2:] if line.split()}
    assert rows["interleave"][-3:] == ["32", "2", "0"]
    assert "crop" not in rows["interleave"] and "statistics of a whole map" not in report
    # the field is sound: poking a pixel changes only cells whose box holds it
    image = random_input(rng, (1, 1, 44, 40))
    base = layer_values(graph, image)[graph.output.name]
    for y, x in rng.integers(0, (44, 40), size=(6, 2)):
        poked = image.copy()
        poked[0, :, y, x] += 10.0
        changed = np.abs(layer_values(graph, poked)[graph.output.name] - base).max(axis=(0, 1)) > 0
        assert changed.any()
        for i, j in zip(*np.nonzero(changed)):
            top, left, bottom, right = model.field.box(i, j)
            assert top <= y < bottom and left <= x < right


GLOBAL_POOLED = """
name: gapmap
input: {name: data, shape: [2, 11, 17]}
layers:
  - {name: c1, op: conv, out_channels: 5, kernel_size: 3, stride: 2}
  - {name: r, op: relu}
  - {name: gap, op: globalavgpool}
  - {name: c2, op: conv, out_channels: 3, kernel_size: 1}
"""


def test_inspects_stride_table_dilates_the_network_as_compile_does(write_spec):
    """The table dilated the graph with its global pool still in it and said 'dilate inf'
    where compile --stride-method dilate works (after global-pool-to-window)."""
    from graphconv.inspect_report import inspect_report

    report = inspect_report(graphconv.load(write_spec(GLOBAL_POOLED)), (30, 40))
    line = next(l for l in report.splitlines() if "--output-stride 1:" in l)
    assert "inf" not in line and "not possible" not in line and "(auto picks dilate)" in line
    graphconv.compile_model(write_spec(GLOBAL_POOLED), output_stride=1, stride_method="dilate")


def test_inspect_says_why_dilation_is_not_possible(write_spec):
    from graphconv.inspect_report import inspect_report

    spec = write_spec("""
        name: reflect
        input: {name: data, shape: [2, 12, 12]}
        layers:
          - {name: c1, op: conv, out_channels: 3, kernel_size: 2, stride: 2}
          - {name: p2, op: pad, padding: 1, mode: reflect}
          - {name: c2, op: conv, out_channels: 3, kernel_size: 3}
          - {name: fc, op: fc, out_features: 2}
    """)
    report = inspect_report(graphconv.compile_model(spec), (40, 40))
    line = next(l for l in report.splitlines() if "--output-stride 1:" in l)
    assert "dilate not possible (layer 'p2': a reflect pad cannot be dilated" in line and " inf" not in line


def test_the_finest_stride_takes_the_finer_branch_where_maps_of_different_strides_meet(write_spec):
    """`crop_stride`, what a mixed-stride classifier runs crop by crop at: each axis on
    its own, later strides multiplied in; a network whose maps line up gets its output
    stride."""
    from graphconv.receptive import crop_stride, finest_strides, total_stride

    mixed = graphconv.load(write_spec("""
        input: {name: data, shape: [3, 16, 16]}
        layers:
          - {name: a, op: conv, out_channels: 2, kernel_size: [2, 4], stride: [2, 4]}
          - {name: b, op: conv, out_channels: 2, kernel_size: [9, 4], stride: [1, 4], inputs: [data]}
          - {name: s, op: concat, inputs: [a, b]}
          - {name: pool, op: maxpool, kernel_size: 2}
          - {name: fc, op: fc, out_features: 3}
    """)).graph
    assert finest_strides(mixed) == (2, 8) and crop_stride(mixed) == (2, 8)
    strided = graphconv.load(write_spec(STRIDED)).graph
    assert crop_stride(strided) == total_stride(strided)


def test_a_cell_found_by_numpy_has_a_box_of_python_ints_and_a_centre():
    """A notebook finds its cell with np.argmax: the box came back as np.int64s, and the
    cell's centre (what `run`'s `cells:` line states) had to be worked out by hand."""
    from graphconv.receptive import Field

    field = Field((227, 227), (32, 32), (0, 0))
    row, col = np.unravel_index(np.argmax(np.arange(12).reshape(3, 4)), (3, 4))
    box = field.box(row, col)
    assert box == (64, 96, 291, 323) and all(type(v) is int for v in box)
    assert field.centre(row, col) == (177.5, 209.5)
    with pytest.raises(TypeError):
        field.box(1.5, 0)  # no cell between cells
