"""IR -> ONNX: `graphconv export`, so a compiled fully convolutional network can be
deployed with onnxruntime, TensorRT or anything else that reads ONNX.

The exported model's input has dynamic batch, height and width (`N x C x H x W`): that
is the point of a fully convolutional network. (A classifier exported as written, with
its fc or flatten layers, takes its crop alone and returns (N, K), as graphconv runs it:
`declared_dims`.) Each op writes itself through its OpDef's `onnx` function (the op's
folder, like its kernels and its PyTorch equivalent) using the small `OnnxWriter` below;
an op without one (the two halves of shift-and-stitch) is refused with what to do
instead. Every value stays 4-D, as in the
IR. The result is checked with onnx's own checker before it is written.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.frontends.onnx import require_onnx
from graphconv.ir import Graph, Node
from graphconv.shapes import FittingSizes, fitting_sizes, infer_shapes

if TYPE_CHECKING:  # onnx is an optional extra
    from onnx import GraphProto, TensorProto

    from graphconv.ops.registry import OpDef

EXPORT_OPSET = 19  # AveragePool takes dilations from 19 on (the dilated stride rewrite makes them)


@dataclass(frozen=True)
class ExportOptions:
    """What `graphconv export`'s options change in the file's interface; by default the
    network's own: float32 (N, C, H, W) input of dynamic N, H and W, the scores alone.

    `input_size` (H, W) and `batch` fix those dims (TensorRT engines and other static
    runtimes build for one shape); `pixels` makes the input uint8 (N, H, W, C) pixels as
    an image library decodes them, the model's preprocess applied inside the graph (a
    deployment then needs no normalisation code to get wrong); `argmax` adds an int64
    output of each cell's top class (CLASSES_OUTPUT)."""

    input_size: tuple[int, int] | None = None
    batch: int | None = None
    pixels: bool = False
    argmax: bool = False


CLASSES_OUTPUT = "classes"  # --argmax's output, unless the network has a value of that name
PIXELS_INPUT = ("uint8 (N, H, W, C) pixels as an image library decodes them (0..255, the channels in the model's "
                "order: RGB for an RGB model)")


class OnnxWriter:
    """What an op's `onnx` function writes with: nodes, the current layer's weights as
    initializers, and other constants. Value names are the IR's layer names. The
    initializers are kept as the arrays they hold (views of the graph's weights) until
    `add_initializers` writes them into the model, one at a time: a full copy of the
    weights as TensorProtos, copied into the graph and again into the model, took the
    export of a 0.54 GB model to 4.3 GB (EXPORT_COPIES)."""

    def __init__(self):
        onnx = require_onnx()
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes: list = []
        self.arrays: dict[str, np.ndarray] = {}
        self._layer, self._weights = "graph", {}
        self._counter = 0
        self.read_as: dict[str, str] = {}  # a value the layers read under another name (--pixels' input)
        self.shapes: dict[str, tuple] | None = None  # each value's (C, H, W) where the export's sizes are fixed
        self.input_shapes: list[tuple] | None = None  # the layer being written's inputs', from `shapes`

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        """Add one node; returns its output's name (a fresh one when not given). The node
        that makes the layer's value is named as the layer, so that importing the file
        again gives its layers their names back (not `norm1_LRN_4`)."""
        output = output or self._fresh(op_type)
        name = self._layer if output == self._layer else self._fresh(op_type)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def weight(self, key: str, shape: tuple[int, ...] | None = None) -> str:
        """The initializer holding the current layer's weight `key`, named `<layer>.<key>`,
        in `shape` where given (an initializer, not a Reshape of one, where an importer
        matching the node's pattern before it runs anything needs the weight as it is)."""
        name = f"{self._layer}.{key}"
        if name not in self.arrays:
            array = np.asarray(self._weights[key], np.float32)
            self.arrays[name] = array if shape is None else array.reshape(shape)
        return name

    def constant(self, array: np.ndarray) -> str:
        name = self._fresh("const")
        self.arrays[name] = np.asarray(array)
        return name

    @property
    def initializers(self) -> list[TensorProto]:
        """The initializers as TensorProtos (a copy of every weight: for small graphs)."""
        return [self.numpy_helper.from_array(array, name) for name, array in self.arrays.items()]

    def add_initializers(self, graph: GraphProto) -> None:
        """Write the initializers into the GraphProto `graph`, holding one extra copy of
        one weight at a time."""
        for name, array in self.arrays.items():
            graph.initializer.add().CopyFrom(self.numpy_helper.from_array(array, name))

    def _fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{self._layer}/{stem}_{self._counter}"

    def write_layer(self, node: Node) -> None:
        if node.opdef.onnx is None:
            raise node.error(_no_onnx_form(node.op))
        self.input_shapes = [self.shapes[i.name] for i in node.inputs] if self.shapes else None
        try:
            self.write(node.name, node.opdef, dict(node.params), dict(node.weights),
                       [self.read_as.get(i.name, i.name) for i in node.inputs])
        except GraphconvError as err:
            raise node.error(err.message) from None
        finally:
            self.input_shapes = None

    def write(self, layer: str, opdef: OpDef, params: dict, weights: dict, inputs: list[str]) -> None:
        """One layer's nodes: its output value is named `layer`."""
        self._layer, self._weights = layer, weights
        opdef.onnx(self, params, inputs, layer)
        self._layer, self._weights = "graph", {}


def _no_onnx_form(op: str) -> str:
    return f"op '{op}' has no ONNX form"


def refuse_shift_and_stitch(graph: Graph) -> None:
    """Refuse a shift-and-stitch model (its interleave has no standard ONNX form), with
    the way out that works for this network: --stride-method dilate only where the
    output-stride pass can dilate it (tried on the network without the stitch layers:
    a ceil_mode pool hanging off the crop, a reflect pad or an upsample cannot be), and
    "the same map" only where nothing pads, since on a padded network each shifted copy
    is padded at its own border and the dilated map differs near them."""
    stitch = graph.find("shift_copies") + graph.find("interleave")
    if not stitch:
        return
    head = "a shift-and-stitch model cannot be exported to ONNX (its interleave has no standard form here)"
    from graphconv.strides import dilate_problem

    base, step = _unstitched(graph)
    refusal = dilate_problem(base, step)  # less the advice to use shift, which this model already does
    if refusal is not None:
        raise stitch[0].error(f"{head}, and --stride-method dilate cannot rewrite this network ({refusal}): export "
                              "it compiled without --output-stride (its map at the full stride), or run the "
                              "shift-and-stitch model with graphconv run")
    from graphconv.dense import padded_layers

    tensorrt = TENSORRT_POOLS if _dilates_pools(base, step) else ""
    if padded_layers(base):
        raise stitch[0].error(f"{head}; compile with --stride-method dilate for a network ONNX can hold (this one "
                              "pads, so its dilated map differs from shift-and-stitch's near the shifted copies' "
                              f"borders, where each copy is padded at its own: graphconv verify shows where){tensorrt}")
    raise stitch[0].error(f"{head}; compile with --stride-method dilate for the same map{tensorrt}")


# what the shift-and-stitch refusal adds where dilating would dilate pools: the way out it gives must
# not send a TensorRT user to a file TensorRT refuses (export_notes says the same of a written file)
TENSORRT_POOLS = ("; its pools are then dilated, which onnxruntime runs but TensorRT's ONNX parser refuses (it takes "
                  "pools without dilation): for TensorRT, export the network compiled without --output-stride")


def _dilates_pools(base: Graph, step: int) -> bool:
    """Whether --stride-method dilate, reaching stride `step` on `base`, gives a max or
    average pool a dilation (ONNX pools with dilations, which TensorRT refuses)."""
    from graphconv.ops.registry import pair
    from graphconv.strides import as_sliding, dilate

    dilated = as_sliding(base).copy()
    dilate(dilated, step)
    return any(node.op in ("maxpool", "avgpool") and pair(node.params["dilation"]) != (1, 1)
               for node in dilated.layers())


def _unstitched(graph: Graph) -> tuple[Graph, int]:
    """The network without its shift_copies and interleave layers (the layers between
    them are the network at its full stride), and the fine stride the copies stood for."""
    base = graph.copy()
    step = max(max(node.params["step"]) for node in base.find("shift_copies"))
    for node in base.find("shift_copies") + base.find("interleave"):
        base.remove(node)
    return base, step


def to_onnx_model(graph: Graph, checked: bool = True, options: ExportOptions = ExportOptions()):
    """The graph as an onnx.ModelProto, with dynamic N, H and W unless `options` fix them,
    checked by onnx's checker (`checked` False: the caller checks the file it writes,
    `save_onnx`)."""
    from graphconv import __version__

    onnx = require_onnx()
    helper = onnx.helper
    refuse_shift_and_stitch(graph)
    in_dims, out_dims = declared_dims(graph, options)
    writer = OnnxWriter()
    if all(isinstance(dim, int) for dim in in_dims[1:]):  # sizes fixed: the layers' shapes are known
        height, width = (in_dims[1:3] if options.pixels else in_dims[2:])
        writer.shapes = infer_shapes(graph, (height, width), check_weights=False)
    if options.pixels:
        _read_pixels(writer, graph)
    for node in graph.layers():
        writer.write_layer(node)
    if len(out_dims) == 2:
        _flatten_the_output(writer, graph.output.name)
    output = _output_named(writer, graph)
    pixel_type = onnx.TensorProto.UINT8 if options.pixels else onnx.TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(_input_named(writer, graph), pixel_type, in_dims)]
    outputs = [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, out_dims)]
    classes = _classes_named(writer, graph)
    if options.argmax:
        writer.node("ArgMax", [output], classes, axis=1, keepdims=0)
        outputs.append(helper.make_tensor_value_info(classes, onnx.TensorProto.INT64, [out_dims[0], *out_dims[2:]]))
    body = helper.make_graph(writer.nodes, graph.name, inputs, outputs)
    opsets = [helper.make_opsetid("", EXPORT_OPSET)]
    model = helper.make_model(body, opset_imports=opsets, producer_name="graphconv", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    writer.add_initializers(model.graph)  # after make_model, which copies the graph it is given
    sizes = input_sizes(graph)
    model.doc_string = _doc(graph, sizes, options)
    helper.set_model_props(model, stated_metadata(graph, sizes, options, classes))
    if checked:
        _check(model)
    return model


def _check(model) -> None:
    """onnx's full check (shape inference included) of a ModelProto or a file's path."""
    try:
        require_onnx().checker.check_model(model, full_check=True)
    except Exception as err:  # a bug in an op's writer, not bad input
        raise AssertionError(f"graphconv wrote an invalid ONNX model: {err}") from err


def _read_pixels(writer: OnnxWriter, graph: Graph) -> None:
    """--pixels: the nodes that make the network's input from uint8 (N, H, W, C) pixels,
    Cast, Transpose to (N, C, H, W), then the preprocess, (x * scale - mean) / std per
    channel, as graphconv applies it to the 0..255 pixels it reads (`images.preprocess`).
    Written before the layers, which read the network's input by its name: the pixels
    take that name and the layers read the normalised value (`OnnxWriter.read_as`)."""
    from graphconv.images import stores_values

    preprocess = graph.meta.get("preprocess") or {}
    if stores_values(preprocess):
        raise GraphconvError("--pixels: the file would take 8-bit pixels (uint8), but the model's preprocess takes "
                             "the values an image stores (values: stored: 16-bit or float rasters); export it "
                             "without --pixels and apply the preprocess before the runtime")
    writer._layer = "pixels"  # its nodes' names, as an import shows them
    value = writer.node("Cast", [graph.input.name], to=require_onnx().TensorProto.FLOAT)
    value = writer.node("Transpose", [value], perm=[0, 3, 1, 2])
    if float(preprocess.get("scale", 1.0)) != 1.0:
        value = writer.node("Mul", [value, writer.constant(np.float32(preprocess["scale"]))])
    for key, op in (("mean", "Sub"), ("std", "Div")):
        if key in preprocess:
            value = writer.node(op, [value, writer.constant(np.asarray(preprocess[key], np.float32).reshape(
                1, -1, 1, 1))])
    writer.read_as[graph.input.name] = value
    writer._layer = "graph"


def _classes_named(writer: OnnxWriter, graph: Graph) -> str:
    """--argmax's output: CLASSES_OUTPUT unless a value of the network is so named."""
    taken = {graph.input.name, *writer.arrays, *(name for node in writer.nodes for name in node.output)}
    return CLASSES_OUTPUT if CLASSES_OUTPUT not in taken else f"{graph.output.name}_{CLASSES_OUTPUT}"


def _output_named(writer: OnnxWriter, graph: Graph) -> str:
    """The export's output, named as the ONNX file the network came from named its own
    (`output_name`: a deployment's `sess.run(["logits"], ...)` keeps working), where no
    other value of the export has that name; else its last layer's name. Not where the
    layer that gave it (`output_layer`) is in the network but no longer its output: a
    softmax added to the imported spec after 'logits' gave probabilities named logits.
    (A pass that merged that layer into the one before leaves the name to the output.)"""
    imported_layer = graph.meta.get("output_layer")
    if imported_layer is not None and imported_layer in graph and imported_layer != graph.output.name:
        return graph.output.name
    return _named_as_imported(writer, graph, graph.meta.get("output_name"), graph.output.name)


def _input_named(writer: OnnxWriter, graph: Graph) -> str:
    """The export's input, named as the imported file named its own where graphconv's
    layer names could not keep it (`input_name`: tf2onnx's 'input:0' is graphconv's
    input_0, and a deployment feeds {"input:0": x})."""
    return _named_as_imported(writer, graph, graph.meta.get("input_name"), graph.input.name)


def _named_as_imported(writer: OnnxWriter, graph: Graph, wanted: str | None, written: str) -> str:
    """Value `written` of the export renamed `wanted` wherever the nodes read or make it,
    unless another value has that name."""
    taken = {graph.input.name, *writer.arrays, *(name for node in writer.nodes for name in node.output)}
    if not wanted or wanted == written or wanted in taken:
        return written
    for node in writer.nodes:
        node.input[:] = [wanted if name == written else name for name in node.input]
        node.output[:] = [wanted if name == written else name for name in node.output]
    return wanted


def declared_dims(graph: Graph, options: ExportOptions = ExportOptions()) -> tuple[list, list]:
    """The export's input and output dims: (N, C, H, W) -> (N, K, rows, cols) for a network
    that slides; the crop's fixed H and W for one that runs on its crop alone, and (N, K)
    for one whose `run` returns class vectors. `options` may fix N, H and W (the output's
    rows and columns follow) and make the input (N, H, W, C) pixels."""
    c, hc, wc = graph.input_shape
    batch = options.batch or "N"
    out_c, *out_hw = infer_shapes(graph, check_weights=False)[graph.output.name]
    vectors = _returns_vectors(graph) and out_hw == [1, 1]
    if options.input_size is not None:
        check_fixed_size(graph, options.input_size)
        (h, w), rows_cols = options.input_size, infer_shapes(graph, options.input_size,
                                                              check_weights=False)[graph.output.name][1:]
    else:
        (h, w), rows_cols = ("H", "W") if _takes_other_sizes(graph) else (hc, wc), ["rows", "cols"]
    in_dims = [batch, h, w, c] if options.pixels else [batch, c, h, w]
    return in_dims, [batch, out_c] if vectors else [batch, out_c, *rows_cols]


def check_fixed_size(graph: Graph, size: tuple[int, int]) -> None:
    """Refuse an --input-size the network cannot take: another than the crop for one that
    runs on its crop alone, one smaller than a classifier's crop, one outside its sides'
    rule (`input_sizes`), or one its layers' shapes refuse."""
    _, hc, wc = graph.input_shape
    h, w = size
    given = f"--input-size {h} {w}"
    if not _takes_other_sizes(graph) and (h, w) != (hc, wc):
        raise GraphconvError(f"{given}: {graph.name} takes its {hc}x{wc} crop alone (compile it first: graphconv "
                             "compile makes it slide over larger images)")
    sizes = input_sizes(graph)
    if "at_least" in sizes and (h < hc or w < wc):
        raise GraphconvError(f"{given}: smaller than {graph.name}'s {hc}x{wc} crop (a classifier's cells are its "
                             "crops)")
    sides = sizes.get("sides")
    if sides and not all(n % period in remainders for n, period, remainders in
                         zip((h, w), sides["period"], sides["remainders"])):
        raise GraphconvError(f"{given}: {sizes['rules'][-1]}")
    try:
        infer_shapes(graph, (h, w), check_weights=False)
    except GraphconvError as err:
        raise GraphconvError(f"{given}: {graph.name} cannot take it: {err.message}") from None


def _returns_vectors(graph: Graph) -> bool:
    """Whether `Model.run` returns (N, K) class vectors for the crop (a classifier as
    written, with fc or flatten layers, whose output is 1x1 there; not a segmentation
    network): its export returns (N, K) too, as the ONNX file it came from did, not
    (N, K, 1, 1)."""
    from graphconv.model import Model
    model = Model(graph)
    return model.returns_vectors and not model.segmentation


def _takes_other_sizes(graph: Graph) -> bool:
    """Whether the network runs on inputs other than its crop (a compiled network; an fc
    on a globally pooled vector): its export's H and W are then dynamic, else fixed at the
    crop, so onnxruntime refuses another size at the input instead of failing inside an fc.
    Two sizes are tried: an odd one, and twice the crop, which a network that takes only
    multiples of its stride (a U-Net's skips, a pyramid's sums) takes where its crop is one."""
    _, hc, wc = graph.input_shape
    for size in ((2 * hc + 1, 2 * wc + 1), (2 * hc, 2 * wc)):
        try:
            infer_shapes(graph, size, check_weights=True)
            return True
        except GraphconvError:
            pass
    return False


def _flatten_the_output(writer: OnnxWriter, output: str) -> None:
    """The output (N, K, 1, 1), as graphconv keeps every value, flattened to (N, K)."""
    last = next(node for node in reversed(writer.nodes) if output in node.output)
    last.output[list(last.output).index(output)] = map_value = f"{output}_map"
    writer.node("Flatten", [map_value], output, axis=1)


METADATA_PREFIX = "graphconv."  # metadata_props keys graphconv writes, and reads back on import


def stated_metadata(graph: Graph, sizes: dict | None = None, options: ExportOptions = ExportOptions(),
                    classes_output: str = CLASSES_OUTPUT) -> dict[str, str]:
    """What an ONNX file cannot otherwise say, as metadata_props strings: the training
    crop (its input's H and W are dynamic), the preprocess, the class names, the task,
    the passes that compiled it and whether its weights are seeded, so `graphconv import`
    (and `run` on the .onnx) gets the model back as it was; and the sizes its input must
    have (`input_sizes`, worked out when not given), which another runtime does not
    check. Other runtimes ignore them. With --pixels the preprocess is the graph's own
    (`pixels` says what it applies: stated as `preprocess`, an import would apply it
    twice); with --argmax, `classes_output` names the extra output (an import drops it)."""
    stated = {"crop": json.dumps(list(graph.input_shape[1:]))}
    for key in ("labels", "task") if options.pixels else ("preprocess", "labels", "task"):
        if key in graph.meta:
            stated[key] = json.dumps(graph.meta[key])
    if options.pixels:
        stated["pixels"] = json.dumps({"input": PIXELS_INPUT, "preprocess_in_graph": graph.meta.get("preprocess")})
    if options.argmax:
        stated["classes_output"] = json.dumps(classes_output)
    if graph.meta.get("compiled", {}).get("passes"):  # a compiled map may have extra cells at the crop
        stated["compiled"] = json.dumps({"passes": graph.meta["compiled"]["passes"]})
    if graph.meta.get("seeded_weights"):  # so `graphconv run FCN.onnx` says so, as for the model exported
        stated["seeded_weights"] = json.dumps(True)
    sizes = input_sizes(graph) if sizes is None else sizes
    if sizes:
        stated["input_sizes"] = json.dumps(sizes)
    if _takes_other_sizes(graph) and not _returns_vectors(graph):  # a pooled classifier's vector has no cells
        stated["cells"] = json.dumps(cells_stated(graph))
    return {METADATA_PREFIX + key: value for key, value in stated.items()}


def cells_stated(graph: Graph) -> dict:
    """Where the exported map's cells stand on the input, which the file cannot
    otherwise say: as a .tif or .zarr map states them (`georef.CellPlacement`), and which
    of them graphconv's own map keeps (`graphconv run`'s: a classifier's cells whose crop
    lies on the image; the export computes past them where the input's sides are not a
    whole number of strides past the crop)."""
    from graphconv.georef import cells_on_pixels
    from graphconv.model import Model

    model = Model(graph)
    placement = cells_on_pixels(model.cell_area)
    stated = {"first_cell_centre_yx": list(placement.first), "cell_step_yx": list(placement.step),
              "cell_area_hw": list(placement.area), "units": "input pixels, pixel k spanning k..k+1: cell (r, c) "
              "is centred on (first_cell_centre_yx[0] + cell_step_yx[0] r, first_cell_centre_yx[1] + "
              "cell_step_yx[1] c)"}
    if not model.segmentation:
        (_, hc, wc), (sy, sx) = graph.input_shape, model.output_stride
        stated["map_kept"] = (f"rows 0 .. (H - {hc}) // {sy} and columns 0 .. (W - {wc}) // {sx}: cell (r, c) is "
                              f"the classifier on the {hc}x{wc} crop at ({sy} r, {sx} c); rows and columns past "
                              "them read past the image's last whole crop")
    return stated


def _doc(graph: Graph, sizes: dict, options: ExportOptions = ExportOptions()) -> str:
    compiled = graph.meta.get("compiled", {})
    lines = [f"exported by graphconv from {graph.name}"]
    if compiled.get("passes"):
        lines.append(f"passes: {compiled['passes']}")
    if graph.meta.get("seeded_weights"):
        lines.append("weights: deterministic seeded (random) weights, not trained ones")
    if options.pixels:
        lines.append(f"input: {PIXELS_INPUT}; the graph applies the preprocess "
                     f"{graph.meta.get('preprocess') or '(none: pixels go in as they are)'}")
    elif "preprocess" in graph.meta:
        lines.append(f"preprocess: {graph.meta['preprocess']}")
    if options.argmax:
        lines.append("output classes: each cell's top class (int64), beside the scores")
    lines += [f"input sizes: {rule}" for rule in sizes.get("rules", [])]
    return "\n".join(lines)


# ---- the sizes the exported network takes -------------------------------------------------------
# graphconv checks an image's size before it runs a network, and pads one that a
# segmentation network needs padded (`Model.padded_hw`); onnxruntime and TensorRT check
# nothing: on another size a merge fails with a broadcast error, or the map comes out
# misaligned. So the export states the rule, in its metadata and doc string.

def input_sizes(graph: Graph) -> dict:
    """The rule on the exported network's input size, as `graphconv.input_sizes` states
    it: `at_least` [H, W] (a classifier's crop: graphconv refuses smaller images,
    `check_holds_a_crop`), `sides` {period, remainders} (the sides that work, per axis:
    those whose remainder modulo the period is listed), `pad_to_fit` (a segmentation
    network that gives one label per pixel on those sides only: pad an image with zeros
    at the bottom and right to the next such side and cut the map back, as `graphconv
    run` does) and `rules`, those in words. Empty for an input fixed at the crop, which
    the file's input states itself."""
    if not _takes_other_sizes(graph):
        return {}
    stated: dict = {}
    rules = []
    _, hc, wc = graph.input_shape
    if graph.meta.get("task") != "segmentation":
        stated["at_least"] = [hc, wc]
        rules.append(f"at least {hc}x{wc} pixels (the crop; graphconv refuses smaller images)")
    padded = _gives_a_label_per_pixel(graph)
    sides = _lined_up_sides(graph) if padded else fitting_sizes(graph)
    if sides is not None:
        stated["sides"] = {"period": list(sides.period), "remainders": [sorted(r) for r in sides.remainders]}
        stated.update({"pad_to_fit": True} if padded else {})
        rules.append(_sides_rule(graph, sides, padded))
    if rules:
        stated["rules"] = rules
    return stated


def _sides_rule(graph: Graph, sides: FittingSizes, padded: bool) -> str:
    if padded:
        return (f"{graph.name} gives one label per pixel only on images {sides.describe()}: pad each image with "
                "zeros at the bottom and right to the next such size, after the preprocess (the network's input, "
                "not the pixels), and cut the map back to the image's size (graphconv run does this itself); on "
                "other sizes the map is misaligned or the run fails")
    return (f"{graph.name}'s branches meet only on images {sides.describe()}: resize or crop each image to such "
            "a size (on others the run fails)")


def _gives_a_label_per_pixel(graph: Graph) -> bool:
    """A segmentation network whose map at its crop is the crop's size (a U-Net): graphconv
    pads the images on which it is not (`Model.padded_hw`)."""
    _, hc, wc = graph.input_shape
    out = infer_shapes(graph, check_weights=False)[graph.output.name]
    return graph.meta.get("task") == "segmentation" and tuple(out[1:]) == (hc, wc)


def _lined_up_sides(graph: Graph) -> FittingSizes | None:
    """The sides on which a network that gives one label per pixel does so (its branches
    meet and its map is the image's size), as `fitting_sizes` finds those its branches
    meet on: one period of sides past the crop per axis, the period the strides' least
    common multiple. None where every side does, or where no period holds (maps of
    different strides meet)."""
    from fractions import Fraction
    from math import lcm

    from graphconv.receptive import partial_receptive_fields

    fields, mixed = partial_receptive_fields(graph)
    if mixed is not None:
        return None
    period = [1, 1]
    for field in fields.values():
        period = [lcm(period[a], Fraction(field.stride[a]).numerator) for a in (0, 1)]
    _, hc, wc = graph.input_shape

    def lines_up(h: int, w: int) -> bool:
        try:
            return tuple(infer_shapes(graph, (h, w), check_weights=False)[graph.output.name][1:]) == (h, w)
        except GraphconvError:
            return False
    remainders = (frozenset(h % period[0] for h in range(hc, hc + period[0]) if lines_up(h, wc)),
                  frozenset(w % period[1] for w in range(wc, wc + period[1]) if lines_up(hc, w)))
    if all(len(remainders[a]) == period[a] for a in (0, 1)) or not all(remainders):
        return None
    return FittingSizes((period[0], period[1]), remainders)


def export_notes(model, path: str) -> list[str]:
    """What `graphconv export` tells the deployer of the ONNX `model` it wrote at `path`:
    the size rule it states, where it is more than "at least the crop" (a padding or a
    fitting rule another runtime does not apply), pools TensorRT refuses, and a preprocess
    it cannot state because the model has none (a deployment then guesses the pixels')."""
    notes = []
    stated = {prop.key[len(METADATA_PREFIX):] for prop in model.metadata_props}
    if "preprocess" not in stated and "pixels" not in stated:
        notes.append(f"note: {path} states no preprocess (the model has none: graphconv feeds it pixels as stored, "
                     "0..255 for 8-bit pictures); if it was trained on normalised pixels, state them (a spec's "
                     "`preprocess: {scale, mean, std}`; an ONNX model's: graphconv import MODEL.onnx -o NET.yaml "
                     "--scale ... --mean ... --std ...), compile and export again, so the file says how to feed it")
    sizes = stated_input_sizes(model)
    if sizes.get("sides"):
        rule = sizes["rules"][-1]  # the sides' rule, after the crop's
        notes.append(f"note: {path} states its input sizes (metadata graphconv.input_sizes, and its doc string): "
                     f"{rule}; onnxruntime, TensorRT and other runtimes do not check this")
    pools = sorted({node.op_type for node in model.graph.node if node.op_type in ("MaxPool", "AveragePool") and any(
        v != 1 for a in node.attribute if a.name == "dilations" for v in a.ints)})
    if pools:
        notes.append(f"note: {path} has {' and '.join(pools)} nodes with dilations (from --output-stride's dilate "
                     "method): onnxruntime runs them, but TensorRT's ONNX parser takes pools without dilation "
                     "only; for TensorRT, export the network compiled without --output-stride")
    return notes


def stated_input_sizes(model) -> dict:
    """The `graphconv.input_sizes` an exported ONNX model states ({} where none)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_PREFIX + "input_sizes":
            return json.loads(prop.value)
    return {}


def is_graphconv_export(path: str | os.PathLike) -> bool:
    """Whether the ONNX file at `path` is one graphconv's export wrote (its metadata or,
    from versions before the metadata, its doc string says so), and so one an export may
    replace: a user's own trained model of that name must not be."""
    try:
        model = require_onnx().load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all, unreadable, damaged: not ours either
        return False
    return (any(prop.key.startswith(METADATA_PREFIX) for prop in model.metadata_props)
            or model.doc_string.startswith("exported by graphconv"))


def export_model(model, path: str | os.PathLike, *, flag: str = "path",
                 options: ExportOptions = ExportOptions()) -> list[str]:
    """Write the graphconv.Model `model` as ONNX at `path`, as `graphconv export` does
    (`Model.export`), its interface as `options` say; returns the notes for the deployer
    (`export_notes`). Refused where
    `path` is a file the model was read from, or an existing file that is not an ONNX
    file graphconv exported (a trained model of the user's: it must not be replaced);
    `flag` names `path` in those messages."""
    from graphconv.files import spare_the_model

    path = os.fspath(path)
    spare_the_model(model, [(flag, path)])
    if os.path.exists(path) and not is_graphconv_export(path):
        raise GraphconvError("is already there and is not an ONNX file graphconv exported (a model of yours?): "
                             "graphconv replaces only its own exports; choose another name", file=path)
    declared_dims(model.graph, options)  # an --input-size it cannot take: refused before anything is built
    return export_notes(save_onnx(model.graph, path, options), path)


ONNX_FILE_LIMIT = 2**31  # bytes: a protobuf message's limit, and so one .onnx file's
EXPORT_COPIES = 4  # the weights held at once by an export: the graph's, the ModelProto's, and its serialisation,
# twice while protobuf makes it (measured: a 0.54 GB model peaked 1.95 GB over the process's 0.8 GB before the export)


def check_export_fits(graph: Graph, file: str, copies: int = EXPORT_COPIES) -> None:
    """Refuse, before building anything, an export whose weights pass ONNX's 2 GiB limit
    for one file or would not fit the memory budget `copies` times over."""
    from graphconv.memory import check_fits, format_size

    weights = sum(array.nbytes for node in graph.layers() for array in node.weights.values())
    if weights >= ONNX_FILE_LIMIT:  # protobuf's: serialising raised EncodeError, a traceback
        raise GraphconvError(f"the model's weights take {weights / 2**30:.2f} GiB, over ONNX's 2 GiB limit for one "
                             "file (graphconv does not write ONNX's external data)", file=file)
    check_fits(copies * weights, f"exporting {format_size(weights)} of weights (held {copies} times at once: the "
               "model's, the ONNX model's, and its bytes twice while protobuf makes them)", file=file)


def save_onnx(graph: Graph, path: str | os.PathLike, options: ExportOptions = ExportOptions()):
    """Write `graph` as ONNX at `path`, atomically (graphconv.files), and check the file
    written; returns the model written (`export_notes` reads it). Refused before
    building anything where the weights pass ONNX's 2 GiB limit for one file or the
    export would not fit the memory budget (EXPORT_COPIES copies of them)."""
    from graphconv.files import atomic_write

    check_export_fits(graph, str(path))
    model = to_onnx_model(graph, checked=False, options=options)

    def write(tmp: str) -> None:
        data = model.SerializeToString()
        if len(data) >= ONNX_FILE_LIMIT:
            raise GraphconvError("the model is over ONNX's 2 GiB limit for one file", file=str(path))
        with open(tmp, "wb") as fp:
            fp.write(data)
        del data
        _check(tmp)
    atomic_write(path, write, suffix=".onnx")
    return model
