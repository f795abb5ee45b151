"""Receptive fields: which input pixels each output cell of each layer looks at.

For every node: the field's size, the cumulative stride between neighbouring cells
and the offset of cell (0, 0)'s field (negative where padding reaches outside the
image), per axis (h, w). The score map of a converted classifier has cell (i, j)
looking at the box [offset + i*stride, offset + i*stride + size) on each axis.

A pool's `ceil_mode` changes none of this: its windows start where floor mode's do, it
only adds a last window hanging off the map's end, whose box reaches past the image just
as a padded layer's first box reaches before it. Layers that see their whole input
(fc, globalavgpool, flatten) have a window of the input's size at the crop, stride 1.

Padding on the far side of an axis (a `pad` layer's bottom and right, `Window.padding_end`)
changes none of it either, for the same reason: only the top and left padding moves cell
(0, 0), and a window that reads the far side's padding is one more cell at the map's end
whose box reaches past the image.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from graphconv.errors import GraphconvError, counted
from graphconv.ir import Graph
from graphconv.shapes import batch_scales, infer_shapes


@dataclass(frozen=True)
class Field:
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, of cell (i, j) in input pixels
        (numpy's integers taken as Python's: a cell found by `np.argmax` gave np.int64s)."""
        i, j = operator.index(i), operator.index(j)
        top = self.offset[0] + i * self.stride[0]
        left = self.offset[1] + j * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def centre(self, i: int, j: int) -> tuple[float, float]:
        """(y, x) of the centre of cell (i, j)'s box, in pixel coordinates where pixel k
        spans k..k+1 (the `cells:` line of `run` states the same centres)."""
        top, left, bottom, right = self.box(i, j)
        return float(top + bottom) / 2, float(left + right) / 2

    def starts(self, axis: int, first: int, stop: int) -> np.ndarray:
        """The first pixel row (axis 0) or column (1) of the fields of cells first..stop - 1
        on that axis, as int64: a stride of a fraction of a pixel (an upsampling
        network's) puts a cell's field at the pixel its start falls in."""
        return np.floor(self.offset[axis] + np.arange(first, stop) * float(self.stride[axis])).astype(np.int64)


@dataclass(frozen=True)
class FirstCell:
    """Output cell (0, 0) exactly (a Field's box holds every cell's, each phase's), and
    the lattice: its cells' stride and the period the network slides at
    (`sliding_periods`). What the pass manager checks every pass keeps."""
    box: tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive
    stride: tuple
    period: tuple

    def pixels_at(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The box cut to an image of height x width: the pixels the cell really reads
        there (padding reaching outside the image is not a pixel)."""
        top, left, bottom, right = self.box
        return max(top, 0), max(left, 0), min(bottom, height), min(right, width)


class MixedStridesError(GraphconvError):
    """A layer merges maps whose cells are different distances apart. At the crop the
    maps may be the same size (a classifier that runs), but on any larger image their
    cells stop lining up, so the network cannot slide: it has no receptive field."""


def receptive_fields(graph: Graph) -> dict[str, Field]:
    """The receptive field of every node (the input's is one pixel); a
    MixedStridesError naming the layer where maps of different strides meet."""
    fields, mixed = partial_receptive_fields(graph)
    if mixed is not None:
        raise mixed
    return fields


def partial_receptive_fields(graph: Graph) -> tuple[dict[str, Field], MixedStridesError | None]:
    """The fields of every node that has one, and the error of the first layer where maps
    of different strides meet (None if none does): that layer and every layer after it
    have no field. `inspect` shows a classifier such as this, which runs on its crop, with
    the fields it has, instead of failing."""
    phases, mixed = _phases_of_nodes(graph)
    fields = {name: _as_field(axes) for name, axes in phases.items()}
    if mixed is None:
        return fields, None
    node, sources = mixed
    sources = [_as_field(axes) for axes in sources]
    shapes = infer_shapes(graph, check_weights=False)
    return fields, node.error(_mixed_strides_message(node, sources, crop_stride(graph, shapes)), MixedStridesError)


def first_cell_fields(graph: Graph) -> dict[str, tuple[Field, int]]:
    """For each node that has a field (`partial_receptive_fields`): cell (0, 0)'s own
    field, with the map's stride, and how many kinds of cells its map has (1 but after an
    upsample, whose cells repeat or interpolate a coarser map's: the `_Phases`). Where
    there are several, one Field for all (`partial_receptive_fields`') holds every kind's
    box, wider than any cell's own and reaching before the crop where nothing pads:
    `inspect` shows cell (0, 0)'s instead, exact (a classifier's output, one cell at its
    crop: the crop itself)."""
    phases, _ = _phases_of_nodes(graph)
    cells = {}
    for name, (h, w) in phases.items():
        (top, bottom), (left, right) = h.box(0), w.box(0)
        field = Field((_whole(bottom - top), _whole(right - left)), (_whole(h.stride), _whole(w.stride)),
                      (_whole(top), _whole(left)))
        cells[name] = field, len(h.boxes) * len(w.boxes)
    return cells


@dataclass(frozen=True)
class _Phases:
    """One axis of a node's map, cell by cell: cells `stride` input pixels apart, and
    cell i's box [i * stride + lo, i * stride + hi) with (lo, hi) = boxes[i % len(boxes)].
    A map sampled on a coarser lattice than its stride (after an upsample: `Window.floored`)
    has cells of several kinds, its phases; the period, len(boxes) * stride, is the least
    shift of the image that moves the map by whole cells (`sliding_periods`)."""
    stride: Fraction
    boxes: tuple[tuple[Fraction, Fraction], ...]

    @property
    def period(self) -> Fraction:
        return len(self.boxes) * self.stride

    def box(self, cell: int) -> tuple[Fraction, Fraction]:
        """Cell `cell`'s box in input pixels (any integer: the map's phases repeat)."""
        lo, hi = self.boxes[cell % len(self.boxes)]
        return cell * self.stride + lo, cell * self.stride + hi


_PIXEL = _Phases(Fraction(1), ((Fraction(0), Fraction(1)),))


def _phases_of_nodes(graph: Graph) -> tuple[dict[str, tuple[_Phases, _Phases]], tuple | None]:
    """Every node's (h, w) `_Phases`, and (node, its sources' phases) of the first layer
    where maps of different strides meet, or None: that layer and every one after it
    have none."""
    shapes = infer_shapes(graph, check_weights=False)
    phases = {graph.input.name: (_PIXEL, _PIXEL)}
    first_mixed = None
    for node in graph.layers():
        if any(s.name not in phases for s in node.inputs):
            continue  # after a merge of mixed strides
        sources = [phases[s.name] for s in node.inputs]
        window = node.opdef.window(node.params, [shapes[s.name] for s in node.inputs])
        if window is not None:  # a windowed op slides over its first input (a conv's residual joins after)
            sources[0] = tuple(_through_window(sources[0][a], window, a) for a in (0, 1))
        if len({(h.stride, w.stride) for h, w in sources}) > 1:
            first_mixed = first_mixed or (node, sources)
            continue
        phases[node.name] = tuple(_union([axes[a] for axes in sources]) for a in (0, 1))
    return phases, first_mixed


def _through_window(axis: _Phases, window, a: int) -> _Phases:
    """One axis of the map a window slides over `axis`'s map: output cell i's window
    starts at input cell i * stride - padding (floor(i * stride) for a floored window, an
    upsample's, whose output cells share windows) and its box holds every box the window
    reads (`Window.taps`: a bilinear upsample's cell, the two cells its interpolation
    weighs, not the three its window holds for every phase). A floored window keeps the
    input's period (a repeated value sits on its lattice). Shift-and-stitch's interleave
    (stride 1/f, not floored) gives each cell its copy's cell's box; its shifted copies
    make a map of one phase slide at the finer stride, one of several (a segmentation
    network's) only at its period."""
    step = Fraction(window.stride[a])
    stride = axis.stride * step
    if step < 1 and not window.floored:  # interleave: output cell i*f + c is copy c's cell i
        # copy c is the network on the image shifted by c * stride, so relative to its own
        # place the cell keeps its copy's box; a copy of one phase slides at the finer
        # stride, one of several only at its period, every phase taken f times over
        factor = _whole(1 / step)
        phases = len(axis.boxes)
        return _Phases(stride, axis.boxes if phases == 1 else
                       tuple(axis.boxes[(cell // factor) % phases] for cell in range(factor * phases)))
    period = axis.period if window.floored else _lcm(axis.period, stride)
    boxes = []
    for cell in range(_whole(period / stride)):
        reads = [axis.box(tap) for tap in window.taps(a, cell)]  # a bilinear upsample's: the two it weighs
        origin = cell * stride
        boxes.append((min(lo for lo, _ in reads) - origin, max(hi for _, hi in reads) - origin))
    return _Phases(stride, tuple(boxes))


def _union(sources: list[_Phases]) -> _Phases:
    """The axis of a layer that sees every source's cell i (an add, a concat; a conv's
    residual): of one stride (`_phases_of_nodes` checks), cell i's box covering theirs."""
    count = math.lcm(*(len(src.boxes) for src in sources))
    stride = sources[0].stride
    boxes = []
    for cell in range(count):
        reads = [src.box(cell) for src in sources]
        boxes.append((min(lo for lo, _ in reads) - cell * stride, max(hi for _, hi in reads) - cell * stride))
    return _Phases(stride, tuple(boxes))


def _as_field(axes: tuple[_Phases, _Phases]) -> Field:
    """The box that holds every cell's (each phase's) box, as one Field."""
    lo = [min(b[0] for b in axis.boxes) for axis in axes]
    hi = [max(b[1] for b in axis.boxes) for axis in axes]
    return Field(tuple(_whole(hi[a] - lo[a]) for a in (0, 1)), tuple(_whole(axis.stride) for axis in axes),
                 tuple(_whole(lo[a]) for a in (0, 1)))


def finest_strides(graph: Graph, shapes: dict | None = None) -> tuple:
    """The output's stride in input pixels, per axis, where maps of different strides
    meeting take the finer (each axis apart): how finely the classifier's branches sample
    the image. The output stride itself where no such maps meet."""
    shapes = shapes if shapes is not None else infer_shapes(graph, check_weights=False)
    strides = {graph.input.name: (1, 1)}
    for node in graph.layers():
        sources = [strides[s.name] for s in node.inputs]
        window = node.opdef.window(node.params, [shapes[s.name] for s in node.inputs])
        if window is not None:  # as `_through_window`: over its first input
            sources[0] = tuple(sources[0][a] * window.stride[a] for a in (0, 1))
        strides[node.name] = tuple(min(s[a] for s in sources) for a in (0, 1))
    return strides[graph.output.name]


def crop_stride(graph: Graph, shapes: dict | None = None) -> tuple[int, int]:
    """The stride, in whole pixels (at least 1), at which to run a classifier whose
    branches meet at different strides on every crop (`run --crops`): its finest stride
    (`finest_strides`). Such a network has no output stride; taking its crop for one
    (16 crops 16 pixels apart on a 64x64 image, for a 16x16 crop) was far coarser than
    either branch."""
    return tuple(max(1, math.floor(s)) for s in finest_strides(graph, shapes))


def _mixed_strides_message(node, sources: list[Field], crops: tuple[int, int]) -> str:
    """Which inputs arrive at which stride, what that means for sliding, and the crop
    loop to run instead, at the classifier's finest stride (`crop_stride`)."""
    arriving = ", ".join(f"'{src.name}' at stride {_stride_text(f.stride)}"
                         for src, f in zip(node.inputs, sources))
    stride = min(crops)
    return (f"merges maps of different strides ({arriving}); their cells do not line up on an image larger "
            "than the crop (at the crop the maps may be the same size, so the classifier runs), so the network "
            f"cannot slide: run it on every crop with `run --crops {stride}` instead (crops "
            f"{counted(stride, 'pixel')} apart: the finest stride its branches sample the image at)")


def _stride_text(stride) -> str:
    return f"{stride[0]}x{stride[1]}"


def _whole(value):
    """A stride as an int once it is one: a Fraction window stride (interleave's 1/f)
    divides a stride made of whole pixels."""
    return int(value) if getattr(value, "denominator", 1) == 1 else value


def total_stride(graph: Graph) -> tuple[int, int]:
    """The network's output stride in input pixels (32 for AlexNet and VGG-16)."""
    return receptive_fields(graph)[graph.output.name].stride


def sliding_periods(graph: Graph) -> dict[str, tuple]:
    """Per node and axis, the least shift of the image, in input pixels, that shifts its
    map by whole cells: a conv of stride 2 sees the image on a lattice of 2 pixels, so
    shifting the image by 1 gives other values, not the same ones moved. A map's period
    is usually its stride. A layer that makes the map finer by repeating (upsample, pixel
    shuffle: `Window.floored`) divides the stride but keeps the period; shift-and-stitch's
    interleave, whose shifted copies hold every phase, divides both. Where the output's
    period is a multiple of its stride, only every (period / stride)-th cell is a crop of
    the classifier (`crop_cell_step`)."""
    return _periods(_every_phase(graph))


def partial_sliding_periods(graph: Graph) -> dict[str, tuple]:
    """`sliding_periods` of the nodes that have one, as `partial_receptive_fields` gives
    fields: those before a layer where maps of different strides meet."""
    return _periods(_phases_of_nodes(graph)[0])


def _periods(phases: dict[str, tuple[_Phases, _Phases]]) -> dict[str, tuple]:
    return {name: tuple(_whole(axis.period) for axis in axes) for name, axes in phases.items()}


def crop_cell_step(graph: Graph) -> tuple[int, int]:
    """Every how many cells of the output map, per axis, a cell is the classifier on its
    crop: (1, 1) but where the map is made finer than the strides before it let it
    slide (`sliding_periods`); the cells between are the network on no crop of the image."""
    return tuple(len(axis.boxes) for axis in _every_phase(graph)[graph.output.name])


def cells_off_the_lattice_note(graph: Graph) -> str | None:
    """What to tell the user of a classifier compiled without keep-crop-cells (a pipeline
    of their own, a model compiled before the pass) or not compiled at all, whose map is
    finer than its strides let it slide: only every k-th cell is the classifier on its
    crop. None where every cell is one, and for a segmentation network."""
    if graph.meta.get("task") == "segmentation":
        return None
    step = crop_cell_step(graph)
    if step == (1, 1):
        return None
    return (f"note: {graph.name} makes its map finer than its strides let it slide (an upsample after a stride): "
            f"only every {step[0]}x{step[1]}-th cell is the classifier on its crop, the cells between are on no "
            "crop; compile it with the default passes (keep-crop-cells) for a map of those alone")


def first_output_cell(graph: Graph) -> FirstCell:
    """Output cell (0, 0)'s box, stride and period; a MixedStridesError where the
    network has no field."""
    h, w = _every_phase(graph)[graph.output.name]
    (top, bottom), (left, right) = h.box(0), w.box(0)
    return FirstCell(tuple(_whole(v) for v in (top, left, bottom, right)), (_whole(h.stride), _whole(w.stride)),
                     (_whole(h.period), _whole(w.period)))


def _every_phase(graph: Graph) -> dict[str, tuple[_Phases, _Phases]]:
    """`_phases_of_nodes` of a graph where every node has them; a MixedStridesError naming
    the layer where maps of different strides meet otherwise."""
    phases, mixed = _phases_of_nodes(graph)
    if mixed is not None:
        receptive_fields(graph)  # raises, with the message that layer gets everywhere
    return phases


def _lcm(a, b) -> Fraction:
    """The least common multiple of two rationals: the least value both divide."""
    a, b = Fraction(a), Fraction(b)
    return Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))


def whole_crop_layers(graph: Graph) -> set[str]:
    """The layers whose values depend on statistics of a whole map, not on a box that
    slides with each cell: a `whole_map` op (groupnorm, global_l2norm), a map scaled or
    shifted by a one-cell value broadcast over it (a squeeze-and-excitation gate pooled
    over the crop), and every layer after them. `receptive_fields` gives them the box of
    their local path only; what their cells really see is the whole crop (at the crop
    size), which is why such networks run as classifiers or crop by crop, and why
    `inspect` says so.

    Cells are counted per input image: between the two halves of shift-and-stitch a
    value is fy * fx shifted copies (`batch_scales`), so at the crop each copy's 1x1 map
    is fy * fx cells of different crops, which `interleave` lays out side by side (a
    finer map, stride 1/f: its field is local), not one value broadcast over a map."""
    shapes = infer_shapes(graph, check_weights=False)
    copies = batch_scales(graph)

    def cells(name: str) -> Fraction:
        return shapes[name][1] * shapes[name][2] * copies[name]

    whole: set[str] = set()
    for node in graph.layers():
        many_cells = cells(node.name) > 1  # one cell's window is its whole input: that field is true
        broadcast = any(cells(src.name) == 1 for src in node.inputs)  # a gate pooled over the crop
        if (any(src.name in whole for src in node.inputs)
                or many_cells and (node.opdef.whole_map_reason(node.params) or broadcast)):
            whole.add(node.name)
    return whole
