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
from dataclasses import dataclass
from fractions import Fraction

from graphconv.errors import GraphconvError
from graphconv.ir import Graph
from graphconv.shapes import batch_scales, infer_shapes


@dataclass(frozen=True)
class Field:
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, of cell (i, j) in input pixels."""
        top = self.offset[0] + i * self.stride[0]
        left = self.offset[1] + j * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def pixels_at(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Cell (0, 0)'s box cut to an image of height x width: the pixels it really
        reads there (padding reaching outside the image is not a pixel)."""
        top, left, bottom, right = self.box(0, 0)
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
    shapes = infer_shapes(graph, check_weights=False)
    fields = {graph.input.name: Field((1, 1), (1, 1), (0, 0))}
    first_mixed = None
    for node in graph.layers():
        if any(s.name not in fields for s in node.inputs):
            continue  # after a merge of mixed strides
        sources = [fields[s.name] for s in node.inputs]
        window = node.opdef.window(node.params, [shapes[s.name] for s in node.inputs])
        if window is not None:  # a windowed op slides over its first input (a conv's residual joins after)
            sources[0] = _through_window(sources[0], window)
        if len({f.stride for f in sources}) > 1:
            first_mixed = first_mixed or (node, sources)
            continue
        fields[node.name] = _union(node, sources)
    if first_mixed is None:
        return fields, None
    node, sources = first_mixed
    return fields, node.error(_mixed_strides_message(node, sources, crop_stride(graph, shapes)), MixedStridesError)


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


def _through_window(field: Field, window) -> Field:
    """The field of one cell of a window slid over a map whose cells have `field`: the
    near-side padding (top, left) shifts it, the far side's (padding_end) does not.

    A floored window (an upsample's) starts cell p's window at floor(p * stride), up to
    (1 - stride) input cells before p * stride: the box reaches that much further back,
    so it still holds every pixel the cell depends on."""
    stride = field.stride
    lag = [(1 - window.stride[a]) * stride[a] if window.floored else 0 for a in (0, 1)]
    return Field(tuple(_whole(field.size[a] + (window.extent[a] - 1) * stride[a] + lag[a]) for a in (0, 1)),
                 tuple(_whole(stride[a] * window.stride[a]) for a in (0, 1)),
                 tuple(_whole(field.offset[a] - window.padding[a] * stride[a] - lag[a]) for a in (0, 1)))


def _union(node, sources: list[Field]) -> Field:
    """The field covering every source's (an add or concat sees all its inputs' pixels);
    the sources' cells line up (one stride: `partial_receptive_fields` checks)."""
    top = min(f.offset[0] for f in sources)
    left = min(f.offset[1] for f in sources)
    bottom = max(f.offset[0] + f.size[0] for f in sources)
    right = max(f.offset[1] + f.size[1] for f in sources)
    return Field((bottom - top, right - left), sources[0].stride, (top, left))


def _mixed_strides_message(node, sources: list[Field], crops: tuple[int, int]) -> str:
    """Which inputs arrive at which stride, what that means for sliding, and the crop
    loop to run instead, at the classifier's finest stride (`crop_stride`)."""
    arriving = ", ".join(f"'{src.name}' at stride {_stride_text(f.stride)}"
                         for src, f in zip(node.inputs, sources))
    stride = min(crops)
    return (f"merges maps of different strides ({arriving}); their cells do not line up on an image larger "
            "than the crop (at the crop the maps may be the same size, so the classifier runs), so the network "
            f"cannot slide: run it on every crop with `run --crops {stride}` instead (crops {stride} pixel(s) "
            "apart: the finest stride its branches sample the image at)")


def _stride_text(stride) -> str:
    return f"{stride[0]}x{stride[1]}"


def _whole(value):
    """A stride as an int once it is one: a Fraction window stride (interleave's 1/f)
    divides a stride made of whole pixels."""
    return int(value) if getattr(value, "denominator", 1) == 1 else value


def total_stride(graph: Graph) -> tuple[int, int]:
    """The network's output stride in input pixels (32 for AlexNet and VGG-16)."""
    return receptive_fields(graph)[graph.output.name].stride


def upsampling_multiple(graph: Graph) -> tuple[int, int] | None:
    """The least common multiple of the input strides of the layers that make their map
    finer by repeating windows (upsample), per axis; None if there are none. On images
    whose sides are multiples of it, every enlarged map is exactly as large as the
    branch it was made for."""
    shapes = infer_shapes(graph, check_weights=False)
    fields, multiple = receptive_fields(graph), None
    for node in graph.layers():
        window = node.opdef.window(node.params, [shapes[s.name] for s in node.inputs])
        if window is not None and window.floored:
            stride = fields[node.inputs[0].name].stride
            multiple = tuple(math.lcm(int(a), int(b)) for a, b in zip(multiple or (1, 1), stride))
    return multiple


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
        if (any(src.name in whole for src in node.inputs)
                or many_cells and (node.opdef.whole_map or any(cells(src.name) == 1 for src in node.inputs))):
            whole.add(node.name)
    return whole
