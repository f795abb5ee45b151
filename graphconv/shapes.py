"""Shape propagation and weight checks: the one place that applies the ops' shape rules.

The `shape-inference` pass annotates nodes with what `infer_shapes` returns; the
verifier and the runtime call it directly for other input sizes.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from graphconv.errors import GraphconvError, ShapeError, SmallerThanTheCrop, agreeing, shown
from graphconv.ir import Graph, Node

Shape = tuple[int, int, int]
WEIGHTS_FILE = "weights_file"  # graph.meta: the file a front end read the weights from, for messages


def infer_shapes(graph: Graph, input_hw: tuple[int, int] | None = None,
                 check_weights: bool = True) -> dict[str, Shape]:
    """Output shape of every node for an input of `input_hw` (default: the spec's crop).

    Raises ShapeError naming the first layer that cannot be applied, and, when
    `check_weights`, the first layer whose attached weights do not fit its input."""
    c, h, w = graph.input_shape
    if input_hw is not None:
        h, w = input_hw
    try:
        return _propagate(graph, (c, h, w), check_weights, resized=input_hw is not None)
    except _Misfit as misfit:
        node, err, in_shapes = misfit.args
        if input_hw is not None:
            check_holds_a_crop(graph, (h, w))
        got = ", ".join(_fmt(s) for s in in_shapes)
        hint = _merge_hint(graph, (h, w)) if input_hw is not None and len(in_shapes) > 1 else ""
        raise node.error(f"{err.message} (input {got}){hint}", ShapeError, param=err.param) from None


class _Misfit(Exception):
    """(node, its ShapeError, its input shapes): the first layer whose shape rule refused."""


def _propagate(graph: Graph, input_shape: Shape, check_weights: bool, resized: bool) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {graph.input.name: input_shape}
    for node in graph.layers():
        in_shapes = [shapes[src.name] for src in node.inputs]
        try:
            shapes[node.name] = tuple(int(v) for v in node.opdef.shape(node.params, in_shapes))
        except ShapeError as err:
            raise _Misfit(node, err, in_shapes) from None
        if check_weights and (node.opdef.has_weights or node.weights):
            check_weights_fit(node, in_shapes, resized=resized)
    return shapes


@dataclass(frozen=True)
class FittingSizes:
    """The input sides on which a network's branches meet, per axis: those whose
    remainder modulo `period` is one of `remainders`. A map that went through strided
    layers has floor((side - a) / stride) + b cells, so two branches that took different
    ways there (an upsampled coarse branch meeting a fine one, a strided conv meeting a
    strided pool of another size) can have maps of one size on some sides and not on
    others; what decides it is the side modulo the strides, so it repeats every `period`
    pixels (`fitting_sizes`)."""
    period: tuple[int, int]
    remainders: tuple[frozenset[int], frozenset[int]]

    def fits(self, size: int, axis: int) -> bool:
        return size % self.period[axis] in self.remainders[axis]

    def next_fit(self, size: int, axis: int) -> int:
        """The least side of at least `size` pixels that fits."""
        return next(v for v in range(size, size + self.period[axis]) if self.fits(v, axis))

    def last_fit(self, size: int, axis: int) -> int:
        """The greatest side of at most `size` pixels that fits (below 1 where none does)."""
        return next(v for v in range(size, size - self.period[axis], -1) if self.fits(v, axis))

    def slack(self, axis: int) -> int:
        """The most pixels `next_fit` adds to a side."""
        return max(self.next_fit(v, axis) - v for v in range(self.period[axis]))

    def describe(self) -> str:
        """'whose height and width are multiples of 8x8 pixels', or each axis's sides as
        'ak+b' runs: 'of height 4k+1 or 4k+3 and width 6k to 6k+3 pixels (k whole)'."""
        if self.remainders == (frozenset({0}), frozenset({0})):
            return f"whose height and width are multiples of {self.period[0]}x{self.period[1]} pixels"
        height, width = (self._describe_axis(a) for a in (0, 1))
        return f"of height {height} and width {width} pixels (k whole)"

    def _describe_axis(self, axis: int) -> str:
        def side(r: int) -> str:
            return f"{self.period[axis]}k+{r}" if r else f"{self.period[axis]}k"

        runs: list[list[int]] = []
        for r in sorted(self.remainders[axis]):
            if runs and runs[-1][-1] == r - 1:
                runs[-1].append(r)
            else:
                runs.append([r])
        return " or ".join(side(run[0]) if len(run) == 1 else f"{side(run[0])} to {side(run[-1])}" for run in runs)


def fitting_sizes(graph: Graph) -> FittingSizes | None:
    """Which input sides the network's merges (add, concat, mul) meet on, or None where
    any side they take does (a chain, ResNet's blocks, a U-Net whose every stride divides
    evenly whatever the side). Found by trying one period of sides past the crop on each
    axis: analysing floor division through every branch by hand is what shape inference
    already does. Only a merge that refuses counts: a classifier's fc refusing every side
    but the crop's is not a merge's misfit. None too where maps of different strides meet
    (a pooled branch enlarged by the crop's factor): they meet on no period of sides."""
    from graphconv.receptive import partial_receptive_fields

    if all(len(node.inputs) < 2 for node in graph.layers()):
        return None
    fields, mixed = partial_receptive_fields(graph)
    if mixed is not None:  # maps of different strides meet: no period, and in general only at the crop
        return None
    period = [1, 1]
    for field in fields.values():
        for a in (0, 1):
            period[a] = math.lcm(period[a], Fraction(field.stride[a]).numerator)
    _, hc, wc = graph.input_shape
    remainders = (frozenset(h % period[0] for h in range(hc, hc + period[0]) if _branches_meet(graph, h, wc)),
                  frozenset(w % period[1] for w in range(wc, wc + period[1]) if _branches_meet(graph, hc, w)))
    if all(len(remainders[a]) == period[a] for a in (0, 1)):
        return None
    return FittingSizes((period[0], period[1]), remainders)


def _branches_meet(graph: Graph, h: int, w: int) -> bool:
    """Whether every merge of the network takes an h x w image (a misfit of a layer with
    one input, a classifier's fc past its crop, is not a merge's)."""
    try:
        _propagate(graph, (graph.input_shape[0], h, w), check_weights=False, resized=True)
    except _Misfit as misfit:
        return len(misfit.args[0].inputs) < 2
    return True


def batch_scales(graph: Graph) -> dict[str, Fraction]:
    """Images per input image of every value: 1 everywhere but between the two halves of
    shift-and-stitch, where each image is fy * fx shifted copies (OpDef.batch_scale).
    A layer whose inputs carry different numbers of copies is an error naming it."""
    scales = {graph.input.name: Fraction(1)}
    for node in graph.layers():
        incoming = {scales[src.name] for src in node.inputs}
        if len(incoming) > 1:
            raise node.error(f"joins values of {' and '.join(str(v) for v in sorted(incoming))} images "
                             "per input image (inside and outside shift-and-stitch)", ShapeError)
        scales[node.name] = incoming.pop() * Fraction(node.opdef.batch_scale(node.params))
    return scales


def check_weights_fit(node: Node, in_shapes: list[Shape], resized: bool = False) -> None:
    """The layer's weights are exactly those its op takes, of the shapes it expects for
    `in_shapes`, with values it can use. A weight the op does not take is refused rather
    than ignored: `relu1.weight` in a weights file means the layer was meant to be
    something else (a prelu written as relu would otherwise run as a ReLU), so ops
    without weights are checked too. Values: an op's `OpDef.weights_problem` says what in
    weights of the right shapes it cannot compute with (a batchnorm's running_var + eps
    <= 0)."""
    expected = node.opdef.weight_shapes(node.params, in_shapes) if node.opdef.has_weights else {}
    for key in sorted(set(node.weights) - set(expected)):
        raise node.error(_unused_weight(node, key))
    for key, want in expected.items():
        if key not in node.weights:
            raise node.error(f"has no '{key}' weights (expected shape {list(want)})", ShapeError)
        have = node.weights[key].shape
        if tuple(have) != tuple(want):
            message = (f"{node.op} expects {key} of shape {list(want)} for its input "
                       f"{_fmt(in_shapes[0])}, but its {key} has shape {list(have)}")
            if node.op == "fc" and resized:
                message += ("; an fc layer only accepts the crop size it was trained on "
                            "(compile with fc-to-conv to slide it over larger images)")
            raise node.error(message, ShapeError)
    if expected and node.opdef.weights_problem is not None:
        message = node.opdef.weights_problem(node.params, node.weights)
        if message is not None:
            raise node.error(f"{message}{_weights_from(node)}")


def _unused_weight(node: Node, key: str) -> str:
    """Why `node`'s weight `key` is refused, naming the weights file it came from when
    the front end recorded one (graph.meta[WEIGHTS_FILE])."""
    source = node.graph.meta.get(WEIGHTS_FILE)
    given = (f"the weights file {Path(source).name} has {shown(f'{node.name}.{key}')}" if source
             else f"has a weight {shown(key)}")
    if not node.opdef.has_weights:
        return (f"{given}, but a {node.op} layer takes no weights (is the layer's op the one the "
                "weights were trained for?)")
    if key == "bias" and node.params.get("bias") is False:
        return (f"{given}, which the layer does not use: it says bias: false (drop that, or the file's bias; a "
                "pass that sets bias: false removes the weight too: graph.set_weights(node, bias=None))")
    return f"{given}, which {node.op} does not use"


def _weights_from(node: Node) -> str:
    source = node.graph.meta.get(WEIGHTS_FILE)
    return f" (weights from {Path(source).name})" if source else ""


def init_weights(graph: Graph) -> list[str]:
    """Give every layer that needs weights deterministic seeded ones, made by its op's
    `init_weights` and seeded by the layer's name so they do not depend on layer order.
    Returns the names of the layers that got weights."""
    shapes = infer_shapes(graph, check_weights=False)
    initialised = []
    for node in graph.layers():
        if not node.opdef.has_weights or node.weights:
            continue
        in_shapes = [shapes[s.name] for s in node.inputs]
        rng = np.random.default_rng(zlib.crc32(node.name.encode()))
        try:
            arrays = node.opdef.seeded_weights(node.params, in_shapes, rng)
        except GraphconvError as err:
            raise node.error(f"{node.op}: {err.message}") from None
        graph.set_weights(node, **arrays)
        check_weights_fit(node, in_shapes)  # an op's own init_weights can get a shape wrong
        initialised.append(node.name)
    return initialised


def check_holds_a_crop(graph: Graph, image_hw: tuple[int, int]) -> None:
    """A classifier's map has a cell per crop inside the image, so an image smaller than
    its crop has none: the reason to give (`Model.run` before running, `infer_shapes`
    when a layer runs out of map), not the first layer whose window no longer fits. A
    segmentation network takes any size it fits."""
    _, hc, wc = graph.input_shape
    h, w = image_hw
    if graph.meta.get("task") != "segmentation" and (h < hc or w < wc):
        raise SmallerThanTheCrop(f"the input is {h}x{w}, smaller than the classifier's {hc}x{wc} crop")


def dropped_layers_note(graph: Graph) -> str | None:
    """The one note for a network whose spec has layers that reach no output: loading
    dropped them (`frontends.finalize`). None when there were none."""
    dropped = graph.meta.get("dropped_layers")
    if not dropped:
        return None
    named = ", ".join(dropped[:5]) + (f" and {len(dropped) - 5} more" if len(dropped) > 5 else "")
    return (f"note: {agreeing(len(dropped), 'layer', 'layers')} {named} of {graph.name} "
            f"{agreeing(len(dropped), 'reaches no output and is', 'reach no output and are')} dropped (their "
            f"weights are neither needed nor used)")


def narrow_weights_note(graph: Graph) -> str | None:
    """A float16 (or bfloat16) model's note: its weights are widened to float32 exactly,
    and its maps computed in float32 throughout, so they are the float32 network's on
    those weights, not what a float16 runtime returns (onnxruntime on a float16 model
    rounds every layer's output to float16's 11 significant bits: the two differ by about that)."""
    narrow = graph.meta.get("narrow_weights")
    if not narrow:
        return None
    return (f"note: {graph.name}'s weights are stored as {' and '.join(narrow)}; graphconv widens them to float32 "
            "(exactly) and computes in float32, so its scores differ from a half-precision runtime's by that "
            "runtime's rounding (about 1e-3 of each value)")


def map_output_note(graph: Graph) -> str | None:
    """What to tell the user of a network taken for a classifier whose output on its own
    crop is a map, not one cell: a network that predicts a map itself (a U-Net, an FCN
    head) imported without `--task segmentation`, whose run would keep one cell of each
    crop's map and drop the rest. None for a classifier, a segmentation network, and a
    compiled model (a finer stride can add cells at the crop for crops past the image's
    end, which the crop grid drops; what compiling changes is checked pass by pass,
    `pass_manager._check_cells_unchanged`)."""
    if graph.meta.get("task") == "segmentation" or "compiled" in graph.meta:
        return None
    channels, rows, cols = infer_shapes(graph, check_weights=False)[graph.output.name]
    if (rows, cols) == (1, 1):
        return None
    _, height, width = graph.input_shape
    return (f"note: on its {height}x{width} crop, {graph.name}'s output is a {channels}x{rows}x{cols} map, and "
            "it is taken for a classifier: one cell per crop, the rest of each crop's map dropped. If it "
            "predicts a map itself (a U-Net, an FCN), say so: --task segmentation (`task: segmentation` in a "
            "spec)")


def _merge_hint(graph: Graph, image_hw: tuple[int, int]) -> str:
    """What to do when a network's branches fail to meet on an image that is not the
    crop: crop or resize it to a side they meet on (`fitting_sizes`); `run --resize`
    resizes an --image only, so an array is told to crop. Branches that meet on the crop
    alone (a classifier as written whose global pool meets a pool of a fixed window:
    timm's catavgmax head as the exporters write it) have no such side: compiling
    makes both slide."""
    from graphconv.receptive import partial_receptive_fields

    sizes = fitting_sizes(graph)
    if sizes is None and partial_receptive_fields(graph)[1] is None:
        return ""
    fit = None if sizes is None else [max(sizes.next_fit(1, a), sizes.last_fit(image_hw[a], a)) for a in (0, 1)]
    if fit is None or not _branches_meet(graph, *fit):  # maps of different strides, or a whole-map pool's 1x1
        _, hc, wc = graph.input_shape
        return (f"; as written, this network's branches meet only on its {hc}x{wc} crop (they shrink the map "
                "at different rates, e.g. a pool over the whole map beside one that slides): compile it to "
                "slide over larger images (graphconv compile), or run it crop by crop (run --crops)")
    return (f"; this network's branches meet only on images {sizes.describe()}: crop the image to one (e.g. "
            f"its top-left {fit[0]}x{fit[1]}) or resize it (an --image: --resize {fit[0]} {fit[1]})")


def _fmt(shape: Shape) -> str:
    return "x".join(str(v) for v in shape)
