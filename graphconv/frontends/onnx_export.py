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

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.frontends.onnx import require_onnx
from graphconv.ir import Graph, Node
from graphconv.shapes import infer_shapes

EXPORT_OPSET = 19  # AveragePool takes dilations from 19 on (the dilated stride rewrite makes them)


class OnnxWriter:
    """What an op's `onnx` function writes with: nodes, the current layer's weights as
    initializers, and other constants. Value names are the IR's layer names."""

    def __init__(self):
        onnx = require_onnx()
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._layer, self._weights = "graph", {}
        self._counter = 0

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        """Add one node; returns its output's name (a fresh one when not given). The node
        that makes the layer's value is named as the layer, so that importing the file
        again gives its layers their names back (not `norm1_LRN_4`)."""
        output = output or self._fresh(op_type)
        name = self._layer if output == self._layer else self._fresh(op_type)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def weight(self, key: str) -> str:
        """The initializer holding the current layer's weight `key`, named `<layer>.<key>`."""
        name = f"{self._layer}.{key}"
        if not any(init.name == name for init in self.initializers):
            self.initializers.append(self.numpy_helper.from_array(
                np.asarray(self._weights[key], np.float32), name))
        return name

    def constant(self, array: np.ndarray) -> str:
        name = self._fresh("const")
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def _fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{self._layer}/{stem}_{self._counter}"

    def write_layer(self, node: Node) -> None:
        if node.opdef.onnx is None:
            raise node.error(_no_onnx_form(node.op))
        try:
            self.write(node.name, node.opdef, dict(node.params), dict(node.weights),
                       [i.name for i in node.inputs])
        except GraphconvError as err:
            raise node.error(err.message) from None

    def write(self, layer: str, opdef, params: dict, weights: dict, inputs: list[str]) -> None:
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

    if padded_layers(base):
        raise stitch[0].error(f"{head}; compile with --stride-method dilate for a network ONNX can hold (this one "
                              "pads, so its dilated map differs from shift-and-stitch's near the shifted copies' "
                              "borders, where each copy is padded at its own: graphconv verify shows where)")
    raise stitch[0].error(f"{head}; compile with --stride-method dilate for the same map")


def _unstitched(graph: Graph) -> tuple[Graph, int]:
    """The network without its shift_copies and interleave layers (the layers between
    them are the network at its full stride), and the fine stride the copies stood for."""
    base = graph.copy()
    step = max(max(node.params["step"]) for node in base.find("shift_copies"))
    for node in base.find("shift_copies") + base.find("interleave"):
        base.remove(node)
    return base, step


def to_onnx_model(graph: Graph):
    """The graph as a checked onnx.ModelProto with dynamic N, H and W."""
    from graphconv import __version__

    onnx = require_onnx()
    helper = onnx.helper
    refuse_shift_and_stitch(graph)
    writer = OnnxWriter()
    for node in graph.layers():
        writer.write_layer(node)
    in_dims, out_dims = declared_dims(graph)
    if len(out_dims) == 2:
        _flatten_the_output(writer, graph.output.name)
    inputs = [helper.make_tensor_value_info(graph.input.name, onnx.TensorProto.FLOAT, in_dims)]
    outputs = [helper.make_tensor_value_info(graph.output.name, onnx.TensorProto.FLOAT, out_dims)]
    body = helper.make_graph(writer.nodes, graph.name, inputs, outputs, writer.initializers)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)],
                              producer_name="graphconv", producer_version=__version__)
    model.doc_string = _doc(graph)
    helper.set_model_props(model, stated_metadata(graph))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # a bug in an op's writer, not bad input
        raise AssertionError(f"graphconv wrote an invalid ONNX model: {err}") from err
    return model


def declared_dims(graph: Graph) -> tuple[list, list]:
    """The export's input and output dims: (N, C, H, W) -> (N, K, rows, cols) for a network
    that slides; the crop's fixed H and W for one that runs on its crop alone, and (N, K)
    for one whose `run` returns class vectors."""
    c, hc, wc = graph.input_shape
    out_c, *out_hw = infer_shapes(graph, check_weights=False)[graph.output.name]
    in_dims = ["N", c, "H", "W"] if _takes_other_sizes(graph) else ["N", c, hc, wc]
    out_dims = ["N", out_c] if _returns_vectors(graph) and out_hw == [1, 1] else ["N", out_c, "rows", "cols"]
    return in_dims, out_dims


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


def stated_metadata(graph: Graph) -> dict[str, str]:
    """What an ONNX file cannot otherwise say, as metadata_props strings: the training
    crop (its input's H and W are dynamic), the preprocess, the class names, the task
    and the passes that compiled it, so `graphconv import` (and `run` on the .onnx) gets the model back as it was. Other
    runtimes ignore them."""
    stated = {"crop": json.dumps(list(graph.input_shape[1:]))}
    for key in ("preprocess", "labels", "task"):
        if key in graph.meta:
            stated[key] = json.dumps(graph.meta[key])
    if graph.meta.get("compiled", {}).get("passes"):  # a compiled map may have extra cells at the crop
        stated["compiled"] = json.dumps({"passes": graph.meta["compiled"]["passes"]})
    return {METADATA_PREFIX + key: value for key, value in stated.items()}


def _doc(graph: Graph) -> str:
    compiled = graph.meta.get("compiled", {})
    lines = [f"exported by graphconv from {graph.name}"]
    if compiled.get("passes"):
        lines.append(f"passes: {compiled['passes']}")
    if graph.meta.get("seeded_weights"):
        lines.append("weights: deterministic seeded (random) weights, not trained ones")
    if "preprocess" in graph.meta:
        lines.append(f"preprocess: {graph.meta['preprocess']}")
    return "\n".join(lines)


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


def save_onnx(graph: Graph, path: str | os.PathLike) -> None:
    """Write `graph` as ONNX at `path`, atomically (graphconv.files)."""
    from graphconv.files import atomic_write

    model = to_onnx_model(graph)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise GraphconvError("the model is over ONNX's 2 GB limit for one file", file=str(path))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fp:
            fp.write(data)
    atomic_write(path, write, suffix=".onnx")
