"""ONNX models -> IR: the front end for trained networks from PyTorch, TensorFlow and others.

ONNX is what every framework exports to (`torch.onnx.export`, both the TorchScript and the
`dynamo=True` exporter; tf2onnx; onnxmltools), so this one reader brings real classifiers
in. It turns a model's graph into graphconv layers plus their weights; `finalize` (shared
with the YAML front end) then checks shapes and attaches the weights.

How it works, in the manner of onnx2torch: `CONVERTERS` maps each supported ONNX op type
to one small function that turns one ONNX node into zero or more graphconv layers. Every
ONNX value is one of two kinds while the graph is read:

* a `Tensor`: computed at run time, i.e. a graphconv node, with its (C, H, W) shape and
  its ONNX rank (4 for N,C,H,W maps; 2 for N,F vectors after a Flatten or Gemm, which
  graphconv holds as F x 1 x 1);
* a constant numpy array: initializers, Constant nodes, and whatever is computed from
  them alone. Exporters build Reshape targets from Shape -> Gather -> Unsqueeze ->
  Concat chains; these are evaluated here (the input's shape is known), so the Reshape
  that flattens before a classifier's fc is recognised as a `flatten` layer.

Before the walk, `graphconv.frontends.onnx_patterns` puts one node in place of each group
of nodes that an exporter writes for one op (GELU before op set 20, LayerNorm written out,
nn.LocalResponseNorm, ECA's channel conv, Keras' PReLU), so that op is one layer.

Layer names come from the PyTorch module path where the file has it (the weight's
initializer `features.0.weight` names layer `features.0`; the TorchScript exporter's node
name `/layer1/layer1.0/relu/Relu` names `layer1.0.relu`), so weight files read the way
PyTorch's state_dict does. Padding that differs between the two sides of an axis
(TensorFlow's `padding="same"` with stride 2, tf2onnx's SAME_UPPER, explicit Pad nodes
from Keras' ZeroPadding2D or PyTorch's F.pad) becomes a `pad` layer: a Conv or pool
keeps the symmetric part of its padding and a pad layer named `<conv>.pad` before it adds
the rest (the `fold-pad` pass merges pads back where the sum is symmetric). What graphconv
cannot represent (an op it lacks, a wrap-mode Pad, an AveragePool that pads unevenly
and does not count its padding, a dynamic crop size without --crop-size) is refused with
one line naming the file, the ONNX node and its op type, before anything is written.

The `onnx` package is an optional extra (`pip install 'graphconv[onnx]'`).
"""
from __future__ import annotations

import importlib
import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from graphconv.arrays import open_regular_file
from graphconv.errors import GraphconvError, Location, shown, shown_path
from graphconv.frontends import onnx_patterns
from graphconv.frontends.onnx_patterns import CHANNEL_CONV, CHANNEL_NORM, TORCH_LRN
from graphconv.frontends.yaml import TASKS
from graphconv.ir import Graph
from graphconv.memory import check_fits
from graphconv.ops import get_op
from graphconv.ops.pad import MODES as PAD_MODES
from graphconv.params import normalize_params

if TYPE_CHECKING:  # onnx is an optional extra, imported when a model is read
    from onnx import NodeProto

MIN_OPSET, MAX_OPSET = 7, 23  # the main domain's versions whose op semantics are handled here
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_LAYER_NAME = 120
TRAINED_SIZE = ("the size it was trained on (a classifier's crop, a segmentation network's patch) with --crop-size H W "
                "(from Python, crop_size=(H, W))")
ONNX_LOAD_FACTOR = 3  # the protobuf bytes, the parsed message, and the numpy copies


def require_onnx():
    """The onnx module, or a clear message on how to get it."""
    from graphconv.errors import import_optional
    return import_optional("onnx", "ONNX models (import and export) need the onnx package: pip install "
                                   "'graphconv[onnx]' (from a checkout: pip install '.[onnx]')")


def looks_like_onnx(path: Path, head: bytes) -> bool:
    """ONNX files have no magic number: a `.onnx` name, or the protobuf bytes a ModelProto
    starts with (`looks_like_protobuf_model`)."""
    return path.suffix.lower() == ".onnx" or looks_like_protobuf_model(head)


def looks_like_protobuf_model(head: bytes) -> bool:
    """The bytes an ONNX ModelProto starts with: field 1, ir_version, as a small varint
    (0x08 then a small number), then another field. A spec is text and never starts with
    byte 0x08."""
    return len(head) >= 3 and head[0] == 0x08 and head[1] < 0x20 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x3A)


def read_onnx(path: str | os.PathLike, *, crop_size: Sequence[int] | None = None,
              ) -> tuple[Graph, dict[str, np.ndarray]]:
    """Read an ONNX model into a graph (no weights attached) and its weights
    ("<layer>.<name>" -> float32 array), for `graphconv.frontends.finalize`.

    `crop_size` (H, W) is the size the classifier was trained on; it is needed only when
    the model's input has dynamic height or width, and must agree with fixed ones."""
    model, external = _load_model(Path(path))
    _drop_the_classes_output(model)
    stated = _stated_metadata(model, str(path))
    _import_op_converters()
    graph, weights = Importer(model, str(path), crop_size, stated.pop("crop", None)).run()
    if "preprocess" in stated:
        from graphconv.frontends.yaml import checked_preprocess
        stated["preprocess"] = checked_preprocess(stated["preprocess"], graph.input_shape[0], Path(path),
                                                   Location(str(path)))
    graph.meta.update(stated)
    graph.meta["read_from"] = [str(file) for file in external]  # what no command may write over
    narrow = _narrow_weight_types(model)
    if narrow:
        graph.meta["narrow_weights"] = narrow
    return graph, weights


def _narrow_weight_types(model) -> list[str]:
    """The float types narrower than float32 that the model's weights are stored in
    (a model converted to float16 for deployment), for the note that says graphconv
    computes it in float32 (`narrow_weights_note`)."""
    onnx = require_onnx()
    arrays = [*model.graph.initializer, *(a.t for node in model.graph.node if node.op_type == "Constant"
                                           for a in node.attribute if a.name == "value")]
    narrow = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}
    return sorted({narrow[t.data_type] for t in arrays if t.data_type in narrow and math.prod(t.dims) > 1})


def _drop_the_classes_output(model) -> None:
    """Leave out the top-class output graphconv's `export --argmax` adds beside the scores
    (its metadata `classes_output` names it; the ArgMax that makes it goes too): graphconv
    computes the scores and takes the top class itself."""
    from graphconv.frontends.onnx_export import METADATA_PREFIX

    stated = next((prop.value for prop in model.metadata_props if prop.key == METADATA_PREFIX + "classes_output"), None)
    try:
        name = json.loads(stated) if stated else None
    except ValueError:  # not what graphconv's export writes: nothing is dropped, and the outputs are refused
        name = None
    makers = [node for node in model.graph.node if node.op_type == "ArgMax" and list(node.output) == [name]]
    if len(model.graph.output) < 2 or len(makers) != 1:
        return
    model.graph.node.remove(makers[0])
    model.graph.output.remove(next(out for out in model.graph.output if out.name == name))


def _stated_metadata(model, path: str) -> dict:
    """What graphconv's own export states in metadata_props (`onnx_export.stated_metadata`:
    crop, preprocess, labels, task, compiled, seeded_weights, input_sizes), each checked
    for its type; a file from elsewhere has none. The crop is used only where the input's
    height and width are dynamic. input_sizes is for other runtimes (graphconv works the
    rule out from the network itself), so it is checked and dropped."""
    from graphconv.frontends.onnx_export import METADATA_PREFIX
    from graphconv.frontends.yaml import label_problem

    stated = {}
    for prop in model.metadata_props:
        key = prop.key[len(METADATA_PREFIX):] if prop.key.startswith(METADATA_PREFIX) else None
        if key not in ("crop", "preprocess", "labels", "task", "compiled", "seeded_weights", "input_sizes"):
            continue
        try:
            value = json.loads(prop.value)
        except ValueError:
            value = None
        valid = {"crop": _is_size,
                 "preprocess": lambda v: isinstance(v, dict),
                 "labels": lambda v: isinstance(v, list) and all(isinstance(n, str) and not label_problem(n)
                                                                 for n in v),
                 "task": lambda v: v in TASKS,
                 "compiled": lambda v: isinstance(v, dict) and list(v) == ["passes"] and isinstance(v["passes"], str),
                 "seeded_weights": lambda v: v is True,
                 "input_sizes": _is_input_sizes}[key]
        if not valid(value):
            raise GraphconvError(f"its metadata {shown(prop.key)} is not what graphconv's export writes: "
                                 f"{shown(prop.value)}", file=path)
        stated[key] = value
    stated.pop("input_sizes", None)
    return stated


def _is_size(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(n) is int and n > 0 for n in value)


def _is_input_sizes(value) -> bool:
    """Whether `value` is an `onnx_export.input_sizes` rule: at_least [H, W], sides
    {period: [P, Q], remainders: [[...], [...]]} (each remainder below its period),
    pad_to_fit true, rules: strings. Keys of its own this version does not know are let
    be, so a later version's file that states more still imports (the rule is dropped
    after this check anyway: graphconv works it out from the network)."""
    if not isinstance(value, dict):
        return False
    sides = value.get("sides", {"period": [1, 1], "remainders": [[0], [0]]})
    return ((_is_size(value["at_least"]) if "at_least" in value else True)
            and value.get("pad_to_fit", True) is True
            and isinstance(value.get("rules", []), list) and all(isinstance(r, str) for r in value.get("rules", []))
            and isinstance(sides, dict) and set(sides) == {"period", "remainders"} and _is_size(sides["period"])
            and isinstance(sides["remainders"], list) and len(sides["remainders"]) == 2
            and all(isinstance(r, list) and all(type(n) is int and 0 <= n < p for n in r)
                    for r, p in zip(sides["remainders"], sides["period"])))


# ---- loading ------------------------------------------------------------------------------------

def _load_model(path: Path):
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    with open_regular_file(path, "ONNX model", not_found="no such ONNX model") as fp:
        size = os.fstat(fp.fileno()).st_size
        check_fits(ONNX_LOAD_FACTOR * size, f"loading this {size / 2**20:.0f} MB ONNX model", file=str(path))
        data = fp.read()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise GraphconvError(f"is not a valid ONNX model (damaged or truncated? {shown(str(err), 80)})",
                             file=str(path)) from None
    if not model.HasField("graph") or not model.graph.node:
        raise GraphconvError("is not an ONNX model with a graph (damaged or truncated?)", file=str(path))
    files = _load_external_data(model, path)
    return _with_local_functions_inlined(model, path), files


def _with_local_functions_inlined(model, path: Path):
    """A model whose nodes call functions it defines (torch.onnx.export's
    export_modules_as_functions: each Conv2d a call of 'torch.nn.modules.conv.Conv2d')
    as the same model with each call replaced by the function's nodes, which are standard
    ops: onnx's own inliner, as onnxruntime runs it."""
    if not model.functions:
        return model
    import onnx.inliner

    try:
        return onnx.inliner.inline_local_functions(model)
    except (RuntimeError, ValueError) as err:
        raise GraphconvError(f"its functions ({', '.join(shown(f.name) for f in model.functions[:3])}) cannot be "
                             f"inlined: {shown(str(err), 100)}", file=str(path)) from None


def _load_external_data(model, path: Path) -> set[Path]:
    """Weights stored beside the model (models over 2 GB, or saved that way) must live in
    the model's folder, as the YAML front end requires of a spec's files. Returns the
    files they were read from."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    folder = path.resolve().parent
    files: set[Path] = set()
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        target = (folder / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(folder):
            raise GraphconvError(f"initializer {shown(tensor.name)} names external data "
                                 f"{shown(location)} outside the model's folder", file=str(path))
        if not target.is_file():
            raise GraphconvError(f"initializer {shown(tensor.name)}: its external data file "
                                 f"{shown(location)} is missing (copy it beside the model)",
                                 file=str(path))
        check_fits(target.stat().st_size, f"external weights {location}", file=str(path))
        files.add(target)
    if not files:
        return files
    from onnx.external_data_helper import load_external_data_for_model
    try:
        load_external_data_for_model(model, str(folder))
    except (OSError, ValueError) as err:
        raise GraphconvError(f"cannot read its external weights: {shown(str(err), 120)}",
                             file=str(path)) from None
    return files


# ---- the conversion -------------------------------------------------------------------------------

NCHW, NHWC, GROUPED, FLAT, GROUP_RUNS, PATCHES, RADIX, SQUEEZED, CNHW, NWHC, ONE_CHANNEL, HWC_FEATURES, POSITIONS = (
    "NCHW", "NHWC", "grouped", "flat", "group runs", "patches", "radix", "squeezed", "CNHW", "NWHC", "one channel",
    "HWC features", "positions")
GREY_PLANE = "grey plane"  # a grey (N, H, W) input, its channel axis to come (an Unsqueeze or Reshape)
ONE_SCORE = "one score"  # (N,): a one-class head's (N, 1) with its class axis dropped (`_drop_the_class_axis`)
# a patch view's Transposes that space_to_depth follows, and the channel order each gives
PATCH_ORDERS = {(0, 3, 5, 1, 2, 4): "blocks", (0, 1, 3, 5, 2, 4): "channels"}
ANY_LAYOUT = (NCHW, NHWC)
POINTWISE_LAYOUTS = (*ANY_LAYOUT, ONE_SCORE)  # what an elementwise activation reads
# ops tf2onnx may put between an (N, H, W, C) input and its Transpose to (N, C, H, W), each
# converted on the channels-last view as it comes (`Importer._read_channels_last`)
BEFORE_THE_TRANSPOSE = ("Cast", "Mul", "Div", "Add", "Sub", "Pad", "Identity", "Slice")
# what a converter scaling or shifting by a constant takes
SCALED_LAYOUTS = (*ANY_LAYOUT, ONE_CHANNEL, GREY_PLANE, HWC_FEATURES, POSITIONS, ONE_SCORE)


@dataclass(frozen=True)
class Tensor:
    """A run-time value: the graphconv node holding it, its (C, H, W), its ONNX rank, and
    how ONNX sees that node's channels. graphconv keeps every map as (C, H, W); ONNX
    graphs also permute it to channels-last (ConvNeXt's LayerNorm and MatMuls: NHWC) or
    view it as (g, C/g, H, W) (ShuffleNet's channel shuffle: GROUPED, `swapped` once its
    two group axes are transposed), or as one flat vector (FLAT: the dynamo exporter's
    adaptive_avg_pool2d(1) is a Reshape to [-1] and a Gather of every element back), or
    as (N, C, 1), a 1x1 map with one of its axes squeezed or gathered away (SQUEEZED:
    x.squeeze(-1).squeeze(-1), x[:, :, 0, 0]), which the second such node flattens, or
    with its batch and channel axes swapped (CNHW: the dynamo exporter's x[:, [2, 1, 0]]
    is a Transpose, a GatherND of channels and the Transpose back), or with its channel
    and width axes swapped (NWHC: softmax(x, dim=1) exported before op set 13 is a
    Transpose [0, 3, 2, 1], a Softmax over the last axis and the Transpose back), or
    as the (N, H, W) of one channel taken with a scalar index (ONE_CHANNEL: torchvision's
    GoogLeNet and Inception-v3 re-normalise their input as x[:, k] * a + b per channel,
    then unsqueeze and concatenate them), or as (N, H*W*C) features of a channels-last
    map flattened in that order (HWC_FEATURES: a Keras Flatten before Dense, as tf2onnx
    writes it; graphconv's flatten keeps C*H*W order, and the fc reading it takes its
    weights' columns in that order: `_add_fc`), or as (N*H*W, C) rows, one per position,
    of a channels-last map (POSITIONS: a Keras Dense on a 4-D map, which tf2onnx writes
    as a Tensordot: that Reshape, a MatMul, and the Reshape back to (N, H, W, K)). Those
    views move no data: they change only how the next ONNX op's axes map onto
    graphconv's channels."""

    node: str
    shape: tuple[int, int, int]
    rank: int = 4
    layout: str = NCHW
    groups: int = 0
    swapped: bool = False
    perm: tuple[int, ...] = ()  # the Transpose of a PATCHES view (space-to-depth), once it has one
    hwc: tuple[int, int, int] = ()  # the (C, H, W) map a HWC_FEATURES view flattened


class Importer:
    """One conversion: walks the ONNX nodes in order, keeping `values` (ONNX name ->
    Tensor or constant array) and the graph being built.

    What a converter (`converts`) uses of it: `tensor(name, layouts)` (an input map, as
    ONNX may see it there: POINTWISE_LAYOUTS for an op that does the same to every
    value, the default NCHW for one that needs the channels), `constant(name, what)` and
    `optional_constant(node, index, what)` (initializers and folded values),
    `attributes(node)` (a missing required attribute is refused as a malformed node),
    `add_layer(node, op, inputs, params, weights)` (one graphconv layer for the node),
    `alias(node, value)` (none: the node changes nothing graphconv stores) and
    `error(message)` (the refusal, naming the file and node)."""

    def __init__(self, model, source: str, crop_size: Sequence[int] | None,
                 stated_crop: Sequence[int] | None = None):
        self.model = model
        self.source = source
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.stated_crop = stated_crop  # what graphconv's export stated (its crop, whatever size its input is fixed at)
        self.exported_batch = 1  # the input's fixed batch, where the exporter fixed one (_add_input)
        self.fixed_size = False  # whether the file fixes the input's height and width (_add_input)
        self.opset = self._opset()
        self.replaced: dict[str, np.ndarray] = {}  # constants a pattern gave new values (onnx_patterns.fused)
        self.nodes, self.replaced = onnx_patterns.fused(model.graph.node, self._initializer_or_constant,
                                                        self._refuse, self.opset,
                                                        [out.name for out in model.graph.output])
        self.values: dict[str, Tensor | np.ndarray] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.uses = self._count_uses()
        self.graph: Graph | None = None
        self.onnx_node = None
        self.position = 0  # of the node being converted, in self.nodes
        self.trimmed_to_blocks: dict[str, int] = {}  # value -> block: a Slice's rows and columns that fill patches

    def _refuse(self, node: NodeProto, message: str) -> None:
        """Raise the refusal of ONNX `node`, named as converters name theirs."""
        self.onnx_node = node
        raise self.error(message)

    # -- driving --
    def run(self) -> tuple[Graph, dict[str, np.ndarray]]:
        self._check_one_output()
        for init in self.model.graph.initializer:
            self.values[init.name] = self.read_tensor(init, f"initializer {shown(init.name)}")
        self.values.update(self.replaced)
        self._add_input()
        for self.position, node in enumerate(self.nodes):
            self.onnx_node = node
            converter = self._converter(node)
            if converter is None and not self._all_constant(node):  # on constants alone, any op is folded
                raise self.error(unsupported(node.op_type, self.model.producer_name))
            try:
                if converter is not _constant and self._all_constant(node):
                    self._fold_constant(node)
                else:
                    converter(self, node)
            except _MissingAttribute as err:
                raise self.error(f"{node.op_type} is malformed: it lacks its attribute {shown(err.args[0])}") from None
            except (IndexError, ValueError, TypeError) as err:
                # a well-formed protobuf can still lack what the op needs (an input, an
                # attribute of the right type): a damaged or hand-made file, reported as such.
                # A KeyError is not among them: the attributes' is _MissingAttribute, and
                # any other is graphconv's own bug, which keeps its traceback.
                raise self.error(f"{node.op_type} is malformed ({type(err).__name__}: "
                                 f"{shown(str(err), 80)})") from err
        self.onnx_node = None
        self._set_output()
        return self.graph, self.weights

    def _converter(self, node) -> Converter | None:
        """The converter of `node`'s op type: a standard one's, or one registered for its
        custom domain (a plugin op's); a custom op without one is refused here."""
        if node.domain in STANDARD_DOMAINS:
            return CONVERTERS.get(node.op_type)
        converter = CUSTOM_CONVERTERS.get((node.domain, node.op_type))
        if converter is None:
            raise self.error(f"op {node.domain}.{node.op_type} is from a custom domain; graphconv reads the standard "
                             f"ONNX ops{_custom_domain_words(node.domain)} (a plugin op's own: "
                             f"@converts({node.op_type!r}, domain={node.domain!r}) in graphconv.frontends.onnx)")
        return converter

    def _opset(self) -> int:
        versions = [o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        if not versions:
            raise GraphconvError("names no version of the standard ONNX op set", file=self.source)
        version = versions[0]
        if not MIN_OPSET <= version <= MAX_OPSET:
            raise GraphconvError(f"uses ONNX op set {version}; graphconv reads op sets "
                                 f"{MIN_OPSET} to {MAX_OPSET} (re-export with opset_version="
                                 f"{min(max(version, MIN_OPSET), MAX_OPSET)})", file=self.source)
        return version

    def _initializer_or_constant(self, name: str) -> np.ndarray | None:
        """A value known before the walk: an initializer or a Constant node's output (as a
        node pattern replaced it, once they have run)."""
        if name in self.replaced:
            return self.replaced[name]
        onnx = require_onnx()
        for init in self.model.graph.initializer:
            if init.name == name:
                return self.read_tensor(init, f"initializer {shown(init.name)}")
        for node in self.model.graph.node:
            if node.op_type == "Constant" and node.output[0] == name and node.attribute:
                value = onnx.helper.get_attribute_value(node.attribute[0])
                if node.attribute[0].name == "value":
                    return self.read_tensor(value, f"the value of Constant node {shown(node.name or name)}")
                return np.asarray(value)
        return None

    def read_tensor(self, tensor, what: str) -> np.ndarray:
        """A TensorProto as an array; when its data does not match its dims and type (a
        truncated raw_data: a damaged or hand-edited file), a GraphconvError naming the
        file and `what` ("initializer 'W'") rather than numpy's reshape error."""
        onnx = require_onnx()
        try:
            return _array(onnx, tensor)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise GraphconvError(f"{what} (dims {list(tensor.dims)}) cannot be read: "
                                 f"{shown(str(err), 100)[1:-1]} (a damaged or truncated file?)",
                                 file=self.source) from None

    def _why_other_inputs(self, inputs: list) -> str:
        """Why a file has inputs besides the image. Where it holds no weights, PyTorch's
        export_params=False made every parameter an input, read by the layers as their
        weights (a node's input past its first) and never as the map they work on. Where
        it holds them, the others are real inputs read at run time (a temperature, a
        flag): graphconv's network maps an image alone, so their values must be fixed."""
        read_as_map = {node.input[0] for node in self.nodes if node.input}
        parameters = [i for i in inputs if i.name not in read_as_map]
        if not parameters:
            return ""
        if len(parameters) == len(inputs) - 1 and not self._holds_weights():
            return ("; the others are read as weights: the file holds none (exported with export_params=False?), "
                    "export it again with its weights (torch.onnx.export's export_params=True, the default)")
        others = ", ".join(f"{shown(i.name)} ({_described_input(i)})" for i in parameters)
        return (f"; {others} {'is' if len(parameters) == 1 else 'are'} read at run time besides the image: fix "
                "the value in the model (export a wrapper whose forward(x) passes it as a constant), or make it "
                "an initializer of the file")

    def _holds_weights(self) -> bool:
        """Whether the file holds any float array of more than one number (an initializer
        or a Constant node): a network's weights, which export_params=False leaves out."""
        onnx = require_onnx()
        arrays = [*self.model.graph.initializer,
                  *(a.t for node in self.nodes if node.op_type == "Constant"
                    for a in node.attribute if a.name == "value")]
        floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
        return any(t.data_type in floats and math.prod(t.dims) > 1 for t in arrays)

    def _count_uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for node in self.nodes:
            for name in node.input:
                uses[name] = uses.get(name, 0) + 1
        for out in self.model.graph.output:
            uses[out.name] = uses.get(out.name, 0) + 1
        return uses

    def _graph_inputs(self) -> list:
        """The graph's inputs that no initializer gives (keep_initializers_as_inputs lists
        those too) and something reads: an input no node reads changes nothing graphconv
        computes, and is left out (onnxruntime still asks for a value)."""
        initialized = {init.name for init in self.model.graph.initializer}
        inputs = [i for i in self.model.graph.input if i.name not in initialized]
        read = [i for i in inputs if self.uses.get(i.name)]
        return read or inputs

    def _image_input_name(self) -> str:
        inputs = self._graph_inputs()
        return inputs[0].name if inputs else ""

    def _add_input(self) -> None:
        inputs = self._graph_inputs()
        if len(inputs) != 1:
            raise GraphconvError(f"has {len(inputs)} inputs ({', '.join(shown(i.name) for i in inputs)}); "
                                 f"graphconv reads classifiers with one image input{self._why_other_inputs(inputs)}",
                                 file=self.source)
        onnx_input = inputs[0]
        stated = onnx_input.type.tensor_type.HasField("shape")
        dims = list(onnx_input.type.tensor_type.shape.dim)
        if stated and len(dims) not in (3, 4):
            raise GraphconvError(f"input {shown(onnx_input.name)} has {len(dims)} dimensions; graphconv "
                                 "reads image classifiers with an (N, C, H, W) input (or a grey (N, H, W) one)",
                                 file=self.source)
        fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        invalid = [d.dim_value if d.HasField("dim_value") and d.dim_value <= 0 else None for d in dims]
        if not stated:  # read as (N, C, H, W): C what the first conv reads, H and W from --crop-size
            dims, fixed, invalid = [None] * 4, [None] * 4, [None] * 4
        if len(dims) == 3:  # Keras' MNIST input, grey without a channel axis: graphconv's (N, 1, H, W)
            fixed, invalid = [fixed[0], 1, *fixed[1:]], [invalid[0], None, *invalid[1:]]
        self.exported_batch = fixed[0] or 1
        grey_hw = tuple(fixed[1:3]) if len(dims) == 4 and fixed[3] == 1 and None not in fixed[1:3] else None
        layout = GREY_PLANE if len(dims) == 3 else NHWC if self._read_channels_last(onnx_input.name, grey_hw) else NCHW
        order = (3, 1, 2) if layout == NHWC else (1, 2, 3)
        channels, rows, cols = (fixed[i] for i in order)
        self.fixed_size = rows is not None and cols is not None
        if invalid[order[0]] is not None:
            raise GraphconvError(f"input {shown(onnx_input.name)} has an invalid channel count of "
                                 f"{invalid[order[0]]} (0 or negative)", file=self.source)
        if channels is None and layout != GREY_PLANE:
            channels = self._channels_the_first_conv_reads(onnx_input.name, layout == NHWC)
        if channels is None:
            shape = "states no shape" if not stated else "has no fixed channel count"
            stated_dims = "['N', 'H', 'W', 3]" if layout == NHWC else "['N', 3, 'H', 'W']"
            raise GraphconvError(f"input {shown(onnx_input.name)} {shape}, and no conv reading it says how many "
                                 "channels it has; state its shape in the file, with your channel count: "
                                 f"model.graph.input[{list(self.model.graph.input).index(onnx_input)}].CopyFrom("
                                 f"onnx.helper.make_tensor_value_info({shown(onnx_input.name)}, "
                                 f"onnx.TensorProto.FLOAT, {stated_dims}))", file=self.source)
        bad = [(axis, invalid[i]) for axis, i in zip(("height", "width"), order[1:]) if invalid[i] is not None]
        if bad and self.crop_size is None:
            sizes = " and ".join(f"{axis} {value}" for axis, value in bad)
            raise GraphconvError(f"input {shown(onnx_input.name)} has an invalid {sizes} (0 or negative); "
                                 f"give {TRAINED_SIZE}", file=self.source)
        height, width = self._crop(rows, cols, onnx_input.name)
        name = _clean_name(onnx_input.name) or "data"
        # the input's location is the file, so a crop over the memory budget names it (finalize)
        self.graph = Graph(Path(self.source).stem, name, (channels, height, width),
                           input_loc=Location(self.source))
        if name != onnx_input.name:  # tf2onnx's 'input:0': what a deployment feeds, which export names again
            self.graph.meta["input_name"] = onnx_input.name
        self.values[onnx_input.name] = Tensor(name, (channels, height, width), 3 if layout == GREY_PLANE else 4,
                                              layout)

    def _channels_the_first_conv_reads(self, name: str, channels_last: bool = False) -> int | None:
        """The channel count of input `name` where the file leaves it unstated (a symbolic
        'C', or no shape at all): that of the Conv reading it, maybe after an input
        normalisation (Sub, Div, Mul, Add, Cast, Identity), whose weights fix it. A
        `channels_last` input is followed through its Transpose to (N, C, H, W) and what
        tf2onnx puts before it (a Pad of the sides)."""
        for node in self.nodes:
            if not node.input or node.input[0] != name:
                continue
            if node.op_type == "Conv" and len(node.input) > 1 and not channels_last:
                weight = self._initializer_or_constant(node.input[1])
                groups = int(self.attributes(node).get("group", 1))
                return int(weight.shape[1]) * groups if weight is not None and weight.ndim == 4 else None
            if node.op_type in ("Sub", "Div", "Mul", "Add", "Cast", "Identity", *(("Pad",) if channels_last else ())):
                return self._channels_the_first_conv_reads(node.output[0], channels_last)
            if channels_last and node.op_type == "Transpose" and list(self.attributes(node).get("perm", [])) == [
                    0, 3, 1, 2]:
                return self._channels_the_first_conv_reads(node.output[0])
        return None

    def _read_channels_last(self, name: str, grey_hw: tuple[int, int] | None = None, depth: int = 0) -> bool:
        """Whether the input `name` is an (N, H, W, C) image that every reader first
        transposes to (N, C, H, W), as tf2onnx writes a Keras model by default, maybe
        after ops that read it as it is (`BEFORE_THE_TRANSPOSE`: Keras' Rescaling, a Cast
        of uint8 pixels, a Pad): then it is read as a channels-last view of graphconv's
        input, and those Transposes cost nothing. Of a grey (N, H, W, 1) image tf2onnx
        writes that Transpose as a Reshape to (N, 1, H, W), the same data. graphconv's
        network takes (N, C, H, W) arrays, as it always does."""
        readers = [node for node in self.nodes if name in node.input]
        return bool(readers) and all(
            (node.op_type == "Transpose" and [int(p) for p in self.attributes(node).get("perm", [])] == [0, 3, 1, 2])
            or self._grey_to_channels_first(node, grey_hw)
            or (node.op_type in BEFORE_THE_TRANSPOSE and depth < len(self.nodes)
                and self._read_channels_last(node.output[0], grey_hw, depth + 1))
            for node in readers)

    def _grey_to_channels_first(self, node, grey_hw: tuple[int, int] | None) -> bool:
        """Whether `node` is a Reshape of a grey channels-last input, (N, H, W, 1) with
        `grey_hw` its (H, W), to (N, 1, H, W): Keras' Input((28, 28, 1)) as tf2onnx
        writes its Transpose."""
        if grey_hw is None or node.op_type != "Reshape" or len(node.input) < 2:
            return False
        target = self._initializer_or_constant(node.input[1])
        return target is not None and target.size == 4 and [int(t) for t in target.ravel()[1:]] == [1, *grey_hw]

    def _crop(self, height: int | None, width: int | None, input_name: str) -> tuple[int, int]:
        if self.crop_size is None and self.stated_crop is not None:  # graphconv's export, maybe of a fixed size
            return tuple(self.stated_crop)                              # (export --input-size): its crop
        if self.crop_size is None:
            if height is None or width is None:
                raise GraphconvError(f"input {shown(input_name)} has a dynamic height or width: give {TRAINED_SIZE}",
                                     file=self.source)
            return height, width
        crop_h, crop_w = self.crop_size
        for fixed_size, given, axis in ((height, crop_h, "height"), (width, crop_w, "width")):
            if fixed_size is not None and fixed_size != given:
                keep = (f"leave out --crop-size to take {height}x{width} as the crop, or, " if height and width
                        else "")
                raise GraphconvError(f"--crop-size (crop_size=) gives {axis} {given}, but the model's input "
                                     f"{shown(input_name)} is fixed at {fixed_size}, the size it was exported at: "
                                     f"{keep}where the model was trained on {crop_h}x{crop_w} crops, export it "
                                     f"again with a dynamic height and width (torch.onnx.export(..., dynamic_axes={{"
                                     f"{input_name!r}: {{2: 'height', 3: 'width'}}}}))", file=self.source)
        return crop_h, crop_w

    def _check_one_output(self) -> None:
        """Before any node is read: a file of several outputs ((logits, probs), (logits,
        features)) is refused with the line that cuts it to one, not with an op of a branch
        the user does not want."""
        names = [o.name for o in self.model.graph.output]
        if len(names) > 1:
            raise GraphconvError(f"has {len(names)} outputs ({', '.join(shown(n) for n in names)}); graphconv reads "
                                 f"networks with one: keep the one you want with onnx.utils.extract_model("
                                 f"{shown_path(self.source)!r}, 'one.onnx', "
                                 f"[{shown(self._image_input_name())}], [{shown(names[0])}])", file=self.source)

    def _set_output(self) -> None:
        outputs = list(self.model.graph.output)
        if len(outputs) != 1:
            raise GraphconvError(f"has {len(outputs)} outputs; graphconv reads networks with one", file=self.source)
        value = self.values.get(outputs[0].name)
        if not isinstance(value, Tensor):
            raise GraphconvError(f"its output {shown(outputs[0].name)} does not depend on the input",
                                 file=self.source)
        if value.node == self.graph.input.name:
            raise GraphconvError("its output is its input: the network has no layers", file=self.source)
        if value.layout == HWC_FEATURES:  # graphconv's flatten gives them in (C, H, W) order: other numbers
            raise GraphconvError(f"its output {shown(outputs[0].name)} is a channels-last map flattened in (H, W, "
                                 "C) order; graphconv flattens in (C, H, W) order, and reorders such features "
                                 "only for a fully connected layer (Gemm, MatMul) reading them", file=self.source)
        self.graph.output = value.node
        self.graph.meta["output_name"] = outputs[0].name  # what a deployment calls it: export names it so
        self.graph.meta["output_layer"] = value.node  # while this layer gives the output (`onnx_export._output_named`)

    # -- helpers for converters --
    def error(self, message: str) -> GraphconvError:
        node = self.onnx_node
        where = f"node {shown(node.name or node.op_type)}{_whereabouts(node)}: " if node is not None else ""
        return GraphconvError(f"{where}{message}", file=self.source)

    def tensor(self, name: str, layouts: Sequence[str] = (NCHW,)) -> Tensor:
        """The feature map `name`, seen by ONNX in one of `layouts` (most ops read NCHW)."""
        value = self.values.get(name)
        if value is None:
            raise self.error(f"reads {shown(name)}, which no earlier node makes (is the graph sorted?)")
        if not isinstance(value, Tensor):
            raise self.error(f"{self.onnx_node.op_type} on a constant {shown(name)} where graphconv "
                             "expects the image's feature map")
        if value.layout not in layouts:
            op = self.onnx_node.op_type
            if value.layout in _VIEWS:
                seen, readers = _VIEWS[value.layout]
                raise self.error(f"{op} on the feature map seen as {seen}; graphconv reads it so only in "
                                 f"{readers}")
            wanted = " or ".join(_VIEWS[layout][0] for layout in layouts if layout in _VIEWS) or "other"
            raise self.error(f"{op} on the rank-{value.rank} {value.layout} feature map; graphconv reads {op} "
                             f"only on {wanted} views of it")
        return value

    def readers(self, tensor: Tensor) -> int:
        """How many ONNX inputs (and graph outputs) read graphconv layer `tensor.node`
        under any of its names (Identity, Transpose and Reshape views alias it)."""
        names = [n for n, v in self.values.items() if isinstance(v, Tensor) and v.node == tensor.node]
        return sum(self.uses.get(n, 0) for n in names)

    def readers_left(self, tensor: Tensor) -> int:
        """How many ONNX inputs from the node being converted on (and graph outputs) read
        graphconv layer `tensor.node` under any of its names: `readers`, less the nodes
        already converted (which a layer merged into its reader has had)."""
        names = {n for n, v in self.values.items() if isinstance(v, Tensor) and v.node == tensor.node}
        outputs = sum(1 for out in self.model.graph.output if out.name in names)
        return outputs + sum(name in names for node in self.nodes[self.position:] for name in node.input)

    def constant(self, name: str, what: str) -> np.ndarray:
        value = self.values.get(name)
        if not isinstance(value, np.ndarray):
            raise self.error(f"its {what} ({shown(name)}) must be a constant (an initializer)")
        return value

    def shape_target(self, name: str, what: str, rank: int | None = None) -> list[int]:
        """A constant target shape (Reshape's, Expand's) whose first axis is the batch, as
        for a batch of one. A model exported with a fixed batch of B (a data loader's
        batch as the example input; torch.onnx.export's dynamo exporter fixes it) writes
        B there where a dynamic export writes -1 or the batch it reads at run time:
        `x.view(x.size(0), -1)` is then Reshape(x, [B, -1]). graphconv's networks take
        any batch, so B means "the batch" as 1 does. The first axis is the batch in every
        Reshape target of more than one axis; an Expand target, only where it has the
        value's `rank` (a shorter one broadcasts from the right)."""
        target = [int(v) for v in self.constant(name, what).ravel()]
        batch_first = len(target) > 1 and (rank is None or len(target) == rank)
        if batch_first and self.exported_batch > 1 and target[0] == self.exported_batch:
            target[0] = 1
        return target

    def optional_constant(self, node: NodeProto, index: int, what: str) -> np.ndarray | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        return self.constant(node.input[index], what)

    def add_layer(self, node: NodeProto, op: str, inputs: Sequence[Tensor], params: dict | None = None,
                  weights: dict[str, np.ndarray] | None = None, rank: int | None = None,
                  name: str | None = None, output: str | None = None) -> Tensor:
        """Add one graphconv layer for ONNX `node`, bind its `output` (by default its
        first), return it. The value keeps the first input's rank (unless given) and layout."""
        opdef = get_op(op)
        problem = opdef.arity_problem(len(inputs))
        if problem:  # a converter's own slip, reported as one line rather than a spec its loader refuses
            raise self.error(problem)
        try:
            params = normalize_params(opdef, params or {})
            shape = opdef.shape(params, [t.shape for t in inputs])
        except GraphconvError as err:
            raise self.error(err.message) from None
        layer = self.graph.fresh_name(name or self._layer_name(node, weights))
        code = _python_line(node) if node is not None else None
        self.graph.add(layer, op, [t.node for t in inputs], params, loc=Location(self.source, code=code))
        for key, array in (weights or {}).items():
            stored = np.ascontiguousarray(array, dtype=np.float32)
            if not np.isfinite(stored).all():
                raise self.error(f"its {key} holds NaN or infinite values (after conversion to float32); "
                                 "they would turn every score into NaN")
            self.weights[f"{layer}.{key}"] = stored
        tensor = Tensor(layer, tuple(shape), rank if rank is not None else inputs[0].rank, inputs[0].layout,
                        hwc=inputs[0].hwc)
        self.values[output or node.output[0]] = tensor
        return tensor

    def alias(self, node: NodeProto, value: Tensor | np.ndarray) -> None:
        """Bind the node's output to an existing value (ops that change nothing graphconv
        stores: Identity, inference Dropout, a Reshape to the same shape)."""
        self.values[node.output[0]] = value

    def _layer_name(self, node: NodeProto, weights: dict | None) -> str:
        """The PyTorch module path where the file has one, else a cleaned node name."""
        for name in node.input[1:2]:
            if weights and name.endswith(".weight"):
                candidate = _clean_name(name[: -len(".weight")])
                if candidate:
                    return candidate
        if node.name.startswith("/"):
            candidate = _clean_name(_module_path(node.name))
            if candidate:
                return candidate
        return _clean_name(_scoped_name(node)) or _clean_name(node.name) or _clean_name(node.op_type.lower()) \
            or "layer"

    def _all_constant(self, node: NodeProto) -> bool:
        return bool(node.input) and all(not name or isinstance(self.values.get(name), np.ndarray)
                                        for name in node.input)

    def _fold_constant(self, node: NodeProto) -> None:
        """Evaluate a node whose inputs are all constants (shape arithmetic, weight
        transposes) with ONNX's own reference implementation."""
        from onnx.reference import ReferenceEvaluator
        onnx = require_onnx()
        inputs = [name for name in node.input if name]
        graph = onnx.helper.make_graph(
            [node], "fold", [onnx.helper.make_tensor_value_info(n, _elem_type(onnx, self.values[n]), None)
                             for n in inputs],
            [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
             for o in node.output if o])
        opset = max(self.opset, FOLDED_FROM_OPSET.get(node.op_type, 0))
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        try:
            results = ReferenceEvaluator(model).run(None, {n: self.values[n] for n in inputs})
        except Exception as err:  # the reference implementation raises whatever numpy raises
            raise self.error(f"cannot evaluate {node.op_type} on its constant inputs: "
                             f"{shown(str(err), 100)}") from None
        for name, value in zip([o for o in node.output if o], results):
            self.values[name] = np.asarray(value)

    def attributes(self, node: NodeProto) -> dict[str, Any]:
        """The node's attributes by name; a required one that is missing (attrs["size"])
        is reported as a malformed node naming it."""
        onnx = require_onnx()
        return _Attributes({a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})


class _MissingAttribute(Exception):
    """A converter asked for an attribute the node lacks: the file is malformed."""


class _Attributes(dict):
    def __missing__(self, key: str):
        raise _MissingAttribute(key)


FOLDED_FROM_OPSET = {"DequantizeLinear": 19, "QuantizeLinear": 19}
"""Ops whose constants ONNX's reference evaluator folds only from a later op set than the
file's, where that version computes what the file's does: DequantizeLinear and
QuantizeLinear past 13 only add types (float8, int4) and block_size, so a weight-only
int8 model of op set 13 to 18 (PyTorch's and onnxruntime's quantizers write those) is
folded as op set 19 (onnx 1.23 implements 19 on; op set 17 was refused)."""


_ONNXRUNTIME_S_OWN = ("ops are onnxruntime's own: its graph optimizer and quantizer write them; import the model as "
                      "it was exported, before those")
ORT = "com.microsoft"  # onnxruntime's op set: its optimizer's fused ops, some of which graphconv reads
_ONNXRUNTIME_DOMAINS = {ORT: "", f"{ORT}.nchwc": ": its 'all' level's layout for its own CPU kernels"}


def _custom_domain_words(domain: str) -> str:
    """What a refusal of an op from custom `domain` adds to "graphconv reads the standard
    ONNX ops": the domain's ops it does read (onnxruntime's fused ones, a plugin's), and
    where an onnxruntime domain's come from."""
    read = [op_type for op_domain, op_type in CUSTOM_CONVERTERS if op_domain == domain]
    words = ""
    if read:
        listed = read[0] if len(read) == 1 else ", ".join(read[:-1]) + " and " + read[-1]
        words = f" and {domain}'s {listed}"
    if domain in _ONNXRUNTIME_DOMAINS:
        words += f" ({domain} {_ONNXRUNTIME_S_OWN}{_ONNXRUNTIME_DOMAINS[domain]})"
    return words
QUANTIZED_OPERATORS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
_FLOAT_MODEL = "graphconv computes in float32: import the float model"
NOT_READ_BECAUSE = {
    **dict.fromkeys(QUANTIZED_OPERATORS,
                    "the model is quantized in operator form (QOperator), which computes in integers; " + _FLOAT_MODEL),
    "DynamicQuantizeLinear": "the model is quantized dynamically (onnxruntime's quantize_dynamic: its activations "
                             "are quantized as it runs, its weights stored in integers); " + _FLOAT_MODEL,
    **dict.fromkeys(("ArgMax", "ArgMin", "TopK"),
                    "the network ends in its decision; export it up to its class scores (graphconv's maps give "
                    "each cell's best class: `run --heatmap top`)"),
    **dict.fromkeys(("NonMaxSuppression", "RoiAlign", "MaxRoiPool"),
                    "it is a detector's post-processing; export the convolutional part without it"),
    **dict.fromkeys(("LSTM", "GRU", "RNN", "Attention", "Loop", "Scan", "If"),
                    "it is no convolutional network's op (recurrence, attention or control flow); graphconv slides "
                    "convolutional networks"),
}
"""Unsupported ops that say more about the model than a missing converter does: what the
model is, and what to give graphconv instead."""


def unsupported(op_type: str, producer: str = "") -> str:
    """The refusal of an ONNX op graphconv does not read: short, with why where the op says
    what kind of model this is (`NOT_READ_BECAUSE`), else the supported ops whose names are
    close (ReduceMin: ReduceMax, ReduceMean, ...), and where the whole list is. An op ONNX
    does not define at all is the exporter's leftover (tf2onnx writes a TensorFlow op it
    cannot convert as it is, StatefulPartitionedCall or Erfc, and exits 0), and is said to
    be so."""
    import difflib

    onnx = require_onnx()
    if isinstance(op_type, bytes):  # a damaged file's name that is no UTF-8: protobuf hands over its bytes
        op_type = op_type.decode("utf-8", "backslashreplace")
    if not onnx.defs.has(op_type):
        return (f"op {op_type} is no ONNX op: {producer or 'the exporter'} left it unconverted (an exporter may "
                "write an op it cannot convert as it is: tf2onnx does, and exits 0); rewrite that layer with "
                "ops the exporter converts, or export again with another op set")
    if op_type in NOT_READ_BECAUSE:
        return f"op {op_type} is not supported: {NOT_READ_BECAUSE[op_type]}"
    # names of one family (ReduceMin ~ ReduceMax, 0.78: a high cutoff and one first syllable), not chance
    # likeness (Sin ~ Min, Exp ~ Expand, Greater ~ Gather)
    close = [name for name in difflib.get_close_matches(op_type, sorted(n for n in CONVERTERS if "." not in n), n=4,
                                                        cutoff=0.76)
             if name[:3].lower() == op_type[:3].lower()]
    hint = f" (similar ones it reads: {', '.join(close)})" if close else ""
    return (f"op {op_type} is not supported{hint}; the ONNX ops graphconv reads are listed in its "
            "docs/onnx.md (an op a plugin reads needs that plugin: --plugin FILE)")


def _described_input(value_info) -> str:
    """An input's shape as a user would say it: "a scalar", "shape [1, 8]" ("?" where not fixed)."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return "shape unstated"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    return "a scalar" if not dims else f"shape {dims}".replace("'", "")


def _whereabouts(node) -> str:
    """For a node whose name does not say where it is (the dynamo exporter's 'n0' and
    'node_Reshape_7', or none): its output's name, and the line of the model's Python
    source the dynamo exporter recorded, as ' (output 'x', from model.py line 12: x =
    x.amax((2, 3)))'; else ''."""
    props = {p.key: p.value for p in node.metadata_props}
    if node.name and not any(key.startswith("pkg.torch.onnx") for key in props):
        return ""
    parts = [f"output {shown(node.output[0])}"] if node.output and node.output[0] else []
    code = _python_line(node)
    if code:
        parts.append(code)
    return f" ({', '.join(parts)})" if parts else ""


def _python_line(node) -> str | None:
    """'from model.py line 12: x = x.amax((2, 3))': the line of the model's Python
    source that made `node`, where the dynamo exporter recorded its stack trace; else
    None (TorchScript's exporter and others record none)."""
    trace = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.stack_trace"), "")
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    found = re.match(r'File "(.*)", line (\d+)', lines[-2]) if len(lines) >= 2 else None
    if not found:
        return None
    return f"from {Path(found.group(1)).name} line {found.group(2)}: {shown(lines[-1], 60)[1:-1]}"


def _array(onnx, tensor) -> np.ndarray:
    from onnx import numpy_helper
    return numpy_helper.to_array(tensor)


def _elem_type(onnx, array: np.ndarray) -> int:
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.asarray(array).dtype)
    except KeyError:  # a constant of a type ONNX has no number for (an object array)
        raise ValueError(f"a constant of numpy type {np.asarray(array).dtype}") from None


def _module_path(node_name: str) -> str:
    """The PyTorch module path in an exporter's node name: "/features/features.1/
    features.1.0/block/block.1/avgpool/GlobalAveragePool" is scope by scope, each scope
    its module's name within the one before, or that name again with a child's index
    added (a Sequential's), so the path is "features.1.0.block.1.avgpool"."""
    scopes = [p for p in node_name.split("/") if p][:-1]
    path: list[str] = []
    for scope in scopes:
        if path and scope.startswith(path[-1] + "."):
            path[-1] = scope
        else:
            path.append(scope)
    return ".".join(path)


def _scoped_name(node) -> str:
    """"blocks.0.0.se.mean": the module path the dynamo exporter records for a node
    (`pkg.torch.onnx.name_scopes`: ['', 'blocks.0.0', 'blocks.0.0.se', 'mean'], each
    module's full path, then the call), where the node's own name says nothing of where
    it is ('node_mean'); "" for a node outside every module, or without the record."""
    import ast

    record = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
    try:
        scopes = ast.literal_eval(record) if record else []
    except (ValueError, SyntaxError):
        return ""
    if not isinstance(scopes, list) or len(scopes) < 2 or not all(isinstance(v, str) for v in scopes) \
            or not scopes[-2]:
        return ""
    return f"{scopes[-2]}.{scopes[-1]}"


_NAME_OK = re.compile(r"[^A-Za-z0-9_.\-]+")


def _clean_name(name: str) -> str:
    """A layer name that reads well in a spec: letters, digits, `_.-`; others become `_`."""
    cleaned = _NAME_OK.sub("_", name).strip("_.")
    return cleaned[:MAX_LAYER_NAME]


_VIEWS = {  # what a view is called, and the ONNX ops that read it (NCHW: the map itself, every op)
    NHWC: ("channels-last (NHWC)", "Transpose back, Reshape and Flatten (Keras' Flatten before a Dense), "
                                   "ReduceMean, ReduceMax and ReduceL2 over H and W, Concat, Softmax and "
                                   "LogSoftmax over the channels, LayerNormalization, MatMul, Add, Mul, a Slice of "
                                   "the channels and pointwise activations"),
    GROUPED: ("grouped 5-D (N, g, C/g, H, W)", "the channel shuffle's Transpose and Reshape back, and split "
                                               "attention's and selective kernels' Concat, Mul, Softmax and "
                                               "ReduceSum over the groups"),
    FLAT: ("flattened", "a Gather of every element back into (N, C, H, W)"),
    GROUP_RUNS: ("(N, groups, -1) group", "InstanceNormalization (GroupNorm as exporters write it) and the "
                                          "Reshape back"),
    PATCHES: ("(N, C, H/b, b, W/b, b) patch", "the Transpose and Reshape of a space-to-depth (TResNet's stem)"),
    RADIX: ("(N, 1, radix, C) gate", "ResNeSt's Transpose, Softmax and Reshape back"),
    CNHW: ("(C, N, H, W)", "GatherND of channels and the Transpose back (x[:, [2, 1, 0]] as the dynamo "
                           "exporter writes it)"),
    SQUEEZED: ("(N, C, 1) (a 1x1 map with one axis squeezed)", "a Squeeze or Gather of its last axis, and "
                                                               "Flatten, which make it (N, C) features"),
    NWHC: ("(N, W, H, C)", "a Softmax or LogSoftmax over its last axis, and the Transpose back (softmax over "
                           "dim=1 as op sets before 13 write it)"),
    GREY_PLANE: ("grey (N, H, W) input", "an Unsqueeze or Reshape giving it its channel axis (N, H, W, 1) or "
                                         "(N, 1, H, W), Flatten, and elementwise ops with a constant (a "
                                         "3-dimensional input is read as a grey image: a model of 1-D signals, "
                                         "(N, C, L), is no image classifier)"),
    HWC_FEATURES: ("(N, H*W*C) features of a channels-last map", "Gemm and MatMul (a fully connected layer, "
                                                                 "whose weights graphconv reorders to its "
                                                                 "channels-first features), after an Identity, "
                                                                 "Dropout, or a scale and shift per feature (a "
                                                                 "BatchNormalization)"),
    ONE_SCORE: ("(N,) scores (a one-class head's (N, 1) with its class axis dropped)", "elementwise "
                "activations, Add, Sub, Mul and Div of one number, Identity, Cast, and an Unsqueeze of axis 1 back "
                "to (N, 1)"),
    POSITIONS: ("(N*H*W, C) per-position rows of a channels-last map", "MatMul (a Dense on each position: a 1x1 "
                                                                       "convolution), Add and Mul of a constant "
                                                                       "per channel, and the Reshape back to "
                                                                       "(N, H, W, C)"),
}


# ---- converters: one function per ONNX op type -------------------------------------------------------

Converter = Callable[[Importer, "NodeProto"], None]
CONVERTERS: dict[str, Converter] = {}  # standard ONNX op type -> its converter
CUSTOM_CONVERTERS: dict[tuple[str, str], Converter] = {}  # (custom domain, op type) -> its converter
STANDARD_DOMAINS = ("", "ai.onnx")
_OP_MODULES_TRIED: set[str] = set()  # the op packages whose onnx_import module was looked for


def converts(*op_types: str, domain: str = ""):
    """Register a function of `(imp: Importer, node)` as the converter of ONNX `op_types`:
    graphconv's own below, an op's own in its folder (`<package>.onnx_import`, which the
    importer imports for every registered op before it reads a file: `graphconv/ops/
    sigmoid/onnx_import.py`), a plugin op's the same way. `domain`: a custom op set's
    name, for an op a framework exported outside the standard one (PyTorch's
    `register_custom_op_symbolic("mydomain::op", ...)`: domain "mydomain"). A converter
    registered for an op type already converted replaces it."""
    def register(function: Converter) -> Converter:
        for op_type in op_types:
            if domain in STANDARD_DOMAINS:
                CONVERTERS[op_type] = function
            else:
                CUSTOM_CONVERTERS[(domain, op_type)] = function
        return function
    return register


def converters() -> dict[str, Converter]:
    """Every standard op type's converter, the ops' own (`<package>.onnx_import`) loaded."""
    _import_op_converters()
    return dict(CONVERTERS)


def _import_op_converters() -> None:
    """Import each registered op's `<package>.onnx_import` module where it has one (its
    converters register themselves), once per op package."""
    from graphconv.ops import all_ops

    for opdef in all_ops():
        if opdef.package in _OP_MODULES_TRIED:
            continue
        _OP_MODULES_TRIED.add(opdef.package)
        module_name = f"{opdef.package}.onnx_import"
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # no such module, or its package is not importable here
            if err.name is None or not (module_name == err.name or module_name.startswith(f"{err.name}.")):
                raise  # the module is there and imports something missing: a bug


def _spatial_attrs(imp: Importer, node, x: Tensor, kernel: Sequence[int]) -> tuple[dict, list[int]]:
    """kernel, stride, padding and dilation of a Conv or pooling node, with ONNX's
    `pads` (top, left, bottom, right) or `auto_pad` split into graphconv's symmetric
    padding (the smaller side of each axis) and what is left over on the other side,
    [top, left, bottom, right] with two of them 0: the converter puts a `pad` layer
    carrying that before the node (`_padded_input`). SAME_UPPER / SAME_LOWER are worked
    out for the crop's size, as the classifier saw it."""
    attrs = imp.attributes(node)
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    if len(kernel) != 2:
        raise imp.error(f"{node.op_type} over {len(kernel)} spatial dimensions; graphconv handles 2-D images")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else [0, 0, 0, 0]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(x.shape[1:], kernel, strides, dilations, auto_pad)
        if any(int(stride) > 1 for stride in strides):  # then its pads depend on the input's size
            imp.graph.meta.setdefault(SAME_PADDED_BY_SIZE, []).append(node.name or node.output[0])
    else:
        raise imp.error(f"unknown auto_pad {shown(auto_pad)}")
    top, left, bottom, right = (int(p) for p in pads)
    if min(top, left, bottom, right) < 0:
        raise imp.error(f"{node.op_type} pads {[top, left, bottom, right]} are negative; graphconv pads, it "
                        "does not crop")
    symmetric = (min(top, bottom), min(left, right))
    rest = [top - symmetric[0], left - symmetric[1], bottom - symmetric[0], right - symmetric[1]]
    params = dict(kernel_size=[int(k) for k in kernel], stride=[int(s) for s in strides],
                  padding=list(symmetric), dilation=[int(d) for d in dilations])
    return params, rest


def _padded_input(imp: Importer, node, x: Tensor, rest: list[int], value: float, layer: str) -> Tensor:
    """`x` itself, or, where `rest` pads one side of an axis more than the other, a `pad`
    layer of `value` adding that, named `<layer>.pad` after the conv or pool it feeds
    (so PyTorch-style weight names stay `<layer>.weight`)."""
    if not any(rest):
        return x
    return imp.add_layer(node, "pad", [x], dict(padding=rest, value=value), name=f"{layer}.pad",
                         output=f"{node.output[0]}/pad")


# graph.meta key: the strided layers whose SAME padding was worked out for the crop, where
# ONNX works it out for each input size (a classifier run as written on another size says so)
SAME_PADDED_BY_SIZE = "same_padded_for_the_crop"


def _same_pads(size: Sequence[int], kernel, strides, dilations, mode: str) -> list[int]:
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


@converts("Conv")
def _conv(imp: Importer, node) -> None:
    x = imp.tensor(node.input[0])
    weight = imp.constant(node.input[1], "weight")
    bias = imp.optional_constant(node, 2, "bias")
    if weight.ndim != 4:
        raise imp.error(f"Conv weight of {weight.ndim} dimensions; graphconv handles 2-D convolutions")
    attrs = imp.attributes(node)
    kernel = attrs.get("kernel_shape", weight.shape[2:])
    params, rest = _spatial_attrs(imp, node, x, kernel)
    params.update(out_channels=int(weight.shape[0]), groups=int(attrs.get("group", 1)), bias=bias is not None)
    weights = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    name = imp.graph.fresh_name(imp._layer_name(node, weights))
    x = _padded_input(imp, node, x, rest, 0.0, name)
    imp.add_layer(node, "conv", [x], params, weights, name=name)


@converts("MaxPool", "AveragePool")
def _pool(imp: Importer, node) -> None:
    """A pool padded more on one side of an axis than the other reads the extra padding
    from a `pad` layer before it: -inf before a MaxPool (no max picks it), 0 before an
    AveragePool that counts its padding (count_include_pad=1). Where it does not count
    it, a pad layer's zeros would be counted, so that is refused, and so is ceil_mode,
    whose last window ONNX and graphconv would then place differently. A padding wider
    than half the window, which graphconv's pools refuse, is all in the pad layer."""
    x = imp.tensor(node.input[0])
    if len(node.output) > 1 and node.output[1] and imp.uses.get(node.output[1]):
        raise imp.error("MaxPool's indices output is used; graphconv computes pooled values only")
    attrs = imp.attributes(node)
    params, rest = _spatial_attrs(imp, node, x, attrs["kernel_shape"])
    params["ceil_mode"] = bool(attrs.get("ceil_mode", 0))
    op = "avgpool" if node.op_type == "AveragePool" else "maxpool"
    if op == "avgpool":
        if params["dilation"] != [1, 1] and imp.opset < 19:  # graphconv's export writes them (op set 19)
            raise imp.error("AveragePool takes dilations from op set 19 on")
        params["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
    if any(rest):
        pads = _onnx_pads(params["padding"], rest)
        if op == "avgpool" and not params["count_include_pad"]:
            fix = ("in Keras, padding=\"valid\", or a crop size on which \"same\" pads both sides alike"
                   if imp.model.producer_name == "tf2onnx"
                   else "export with symmetric padding or count_include_pad=1")
            raise imp.error(f"AveragePool pads {pads} differ between the two sides of an axis and "
                            "count_include_pad=0: graphconv pads one side with a pad layer, whose zeros the "
                            f"average would count ({fix})")
        if params["ceil_mode"]:
            raise imp.error(f"{node.op_type} pads {pads} differ between the two sides of an axis and ceil_mode=1: "
                            "graphconv cannot place ceil mode's last window as ONNX does then (export with "
                            "symmetric padding or ceil_mode=0)")
    if _too_wide(params) and (op == "maxpool" or params["count_include_pad"]) and not params["ceil_mode"]:
        rest, params["padding"] = _onnx_pads(params["padding"], rest), [0, 0]
    name = imp.graph.fresh_name(imp._layer_name(node, None))
    x = _padded_input(imp, node, x, rest, -math.inf if op == "maxpool" else 0.0, name)
    imp.add_layer(node, op, [x], params, name=name)


def _too_wide(params: dict) -> bool:
    """Whether a pool's padding is more than half its window, which graphconv's pools (as
    PyTorch's) refuse and ONNX allows: a pad layer of the value the padding stands for
    then carries all of it, the same numbers outside ceil mode."""
    extents = [d * (k - 1) + 1 for k, d in zip(params["kernel_size"], params["dilation"])]
    return any(2 * p > e for p, e in zip(params["padding"], extents))


def _onnx_pads(symmetric: Sequence[int], rest: Sequence[int]) -> list[int]:
    """ONNX's [top, left, bottom, right] from `_spatial_attrs`' two parts, for messages."""
    return [symmetric[i % 2] + rest[i] for i in range(4)]


NO_WRAP = ("graphconv has no wrapping pad: a crop's far edge is not what lies beyond it in a larger image, so "
           "such a network could not slide")


@converts("Pad")
def _pad(imp: Importer, node) -> None:
    """A border around the map's rows and columns, constant, reflected or repeated: a
    `pad` layer. The amounts are the `pads` attribute before op set 11 and the `pads`
    input (and the optional constant_value and, from op set 18, axes inputs) after;
    negative amounts (a crop), amounts on the batch or channel axes and the wrap mode
    are refused, naming the node."""
    x = imp.tensor(node.input[0], ANY_LAYOUT)
    if x.rank != 4:
        raise imp.error(f"Pad of a rank-{x.rank} value; graphconv pads the rows and columns of (N, C, H, W) maps")
    attrs = imp.attributes(node)
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in PAD_MODES:
        raise imp.error(f"Pad mode {shown(mode)} is not supported; graphconv pads with a constant, a "
                        "reflection or the edge repeated (modes 'constant', 'reflect', 'edge')"
                        + (f"; 'wrap' is circular padding: {NO_WRAP}" if mode == "wrap" else ""))
    begin, end, value = _pad_amounts(imp, node, attrs)
    if x.layout == NHWC:  # (N, H, W, C) amounts, as graphconv's (N, C, H, W)
        begin, end = ([amounts[0], amounts[3], amounts[1], amounts[2]] for amounts in (begin, end))
    if min(begin + end) < 0:
        raise imp.error(f"Pad with negative pads {begin + end} crops the map; graphconv pads, it does not crop")
    if any(begin[:2]) or any(end[:2]):
        raise imp.error(f"Pad of the batch or channel axis (pads {begin + end}); graphconv pads rows and columns")
    if math.isnan(value):
        raise imp.error("Pad with a NaN constant_value would turn the scores it reaches into NaN")
    if not any(begin) and not any(end):
        imp.alias(node, x)
        return
    params = dict(padding=[begin[2], begin[3], end[2], end[3]], value=value if mode == "constant" else 0.0)
    imp.add_layer(node, "pad", [x], dict(params, mode=mode))


def _pad_amounts(imp: Importer, node, attrs: dict) -> tuple[list[int], list[int], float]:
    """(amounts before, amounts after, one per axis of N, C, H, W; the constant) of a Pad
    node in the form its op set writes."""
    if imp.opset < 11:
        pads, value, axes = [int(p) for p in attrs["pads"]], float(attrs.get("value", 0.0)), None
    else:
        pads = [int(p) for p in imp.constant(node.input[1], "pads").ravel()]
        constant = imp.optional_constant(node, 2, "constant_value")
        value = 0.0 if constant is None or constant.size == 0 else float(constant.ravel()[0])
        axes = imp.optional_constant(node, 3, "axes") if imp.opset >= 18 else None
    axes = list(range(4)) if axes is None else [int(a) % 4 for a in np.ravel(axes)]
    if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
        raise imp.error(f"Pad with {len(pads)} pads for axes {axes}; ONNX gives a begin and an end for each axis")
    begin, end = [0] * 4, [0] * 4
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[len(axes) + i]
    return begin, end, value


@converts("Resize", "Upsample")
def _resize(imp: Importer, node) -> None:
    """A whole-number enlargement of the rows and columns: an `upsample` layer. The
    scales come from the `scales` input (or attribute, Upsample before op set 9), or
    from constant `sizes` that are whole multiples of the map's. Nearest modes that pick
    cell p // factor (asymmetric with floor, as PyTorch's "nearest" writes it, or half-pixel
    with a round_prefer_* rounding: half-pixel with floor or ceil picks other cells) and
    linear with half-pixel coordinates (align_corners=False) or asymmetric ones (TF1's
    resize_bilinear; every linear Upsample, and Resize before op set 11) are what
    slides; linear with align_corners coordinates runs as written but cannot slide
    (`upsample`); the rest are refused, naming the node."""
    x = imp.tensor(node.input[0])
    if x.rank != 4:
        raise imp.error(f"{node.op_type} of a rank-{x.rank} value; graphconv resizes (N, C, H, W) maps")
    if _broadcast_to_a_map(imp, node, x, node.input[3] if len(node.input) > 3 else ""):
        return
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in imp.attributes(node).items()}
    factor = _resize_factor(imp, node, x, attrs)
    mode = attrs.get("mode", "nearest")
    coordinates = attrs.get("coordinate_transformation_mode",
                            "half_pixel" if node.op_type == "Resize" and imp.opset >= 11 else "asymmetric")
    if mode == "nearest":  # before op set 11 ONNX had no nearest_mode; onnxruntime floors
        old = node.op_type == "Upsample" or imp.opset < 11
        rounding = attrs.get("nearest_mode", "floor" if old else "round_prefer_floor")
        # output p samples input (p + 0.5) / f - 0.5 (half-pixel), whose distance from p // f
        # is under 0.5 for a whole f, or p / f (asymmetric), or (p + 0.5) / f (tf2onnx's
        # UpSampling2D), p // f only when floored
        repeats = ((coordinates in ("half_pixel", "pytorch_half_pixel") and rounding.startswith("round_prefer"))
                   or (coordinates in ("asymmetric", "tf_half_pixel_for_nn") and rounding == "floor"))
        if not repeats:
            raise imp.error(f"nearest {node.op_type} with coordinate_transformation_mode {shown(coordinates)} "
                            f"and nearest_mode {shown(rounding)}: graphconv repeats each cell (PyTorch's "
                            "'nearest': asymmetric or tf_half_pixel_for_nn with floor, or half_pixel with "
                            "round_prefer_floor or round_prefer_ceil)")
    elif mode == "linear":
        if node.op_type == "Upsample" or imp.opset < 11:
            coordinates = "asymmetric"  # what linear meant before op set 11 gave Resize its coordinate modes
        if coordinates not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
            raise imp.error(f"linear {node.op_type} with coordinate_transformation_mode {shown(coordinates)}: "
                            "graphconv interpolates with half-pixel coordinates (PyTorch's align_corners=False), "
                            "align_corners (align_corners=True) or asymmetric ones (TF1's resize_bilinear)")
        mode = "bilinear"
    else:
        raise imp.error(f"{node.op_type} mode {shown(mode)} is not supported (graphconv has nearest and linear)")
    if factor == (1, 1):
        imp.alias(node, x)
        return
    imp.add_layer(node, "upsample", [x], dict(factor=list(factor), mode=mode,
                                              align_corners=mode == "bilinear" and coordinates == "align_corners",
                                              asymmetric=mode == "bilinear" and coordinates == "asymmetric"))


def _broadcast_to_a_map(imp: Importer, node, x: Tensor, size: str) -> bool:
    """A 1 x 1 map resized or expanded to the size of another feature map (DeepLabV3's
    image pooling: `F.interpolate(pooled, size=feature.shape[-2:])`; `pooled.expand_as(
    feature)`): a `broadcast` layer over that map, so the branch fits every image size,
    where the crop's factor (16 at a 128 crop) would fit the crop alone. Any resize mode
    repeats a single value. `size` is the node's sizes or shape input; False where it
    was not computed from one map's Shape (then a fixed size, a factor or a refusal)."""
    if x.shape[1:] != (1, 1) or not size:
        return False
    target = imp.values.get(size)
    if not isinstance(target, np.ndarray) or target.size != 4 or tuple(int(v) for v in target.ravel()[2:]) == (1, 1):
        return False
    hw = tuple(int(v) for v in target.ravel()[2:])
    like = _shape_source(imp, size, node.input[0])
    if like is None or like.shape[1:] != hw:
        like = _map_the_size_follows(imp, size, x, hw)
    if like is None:
        return False
    imp.add_layer(node, "broadcast", [x, like])
    return True


def _map_the_size_follows(imp: Importer, size: str, x: Tensor, hw: tuple[int, int]) -> Tensor | None:
    """The map a 1 x 1 map is resized or expanded to the size of where that size is not
    taken from the map's own Shape: the dynamo exporter computes DeepLabV3's image-pooling
    size from the input's (`(H + 7) // 8` at stride 8), a static export writes the crop's
    as a constant. The nearest map before `x` of size `hw` at the crop, and, where the
    size is computed, of the size it computes on other images too (`_input_sized_value`);
    None where `x` is not 1 x 1 on every image (a global pool's branch), where the size
    is a constant in a file whose input takes any size (then it is a fixed size: the
    crop's factor is right), or where no map fits."""
    from graphconv.shapes import infer_shapes

    _, crop_h, crop_w = imp.graph.input_shape
    elsewhere = {}  # other input sizes -> every layer's shape there
    for other in ((2 * crop_h, 2 * crop_w), (crop_h + 7, crop_w + 13), (3 * crop_h + 5, 2 * crop_w + 3)):
        try:
            elsewhere[other] = infer_shapes(imp.graph, other, check_weights=False)
        except GraphconvError:
            continue
    if not elsewhere or any(shapes[x.node][1:] != (1, 1) for shapes in elsewhere.values()):
        return None
    sizes = {other: _input_sized_value(imp, size, shapes) for other, shapes in elsewhere.items()}
    if any(value is None for value in sizes.values()):
        return None
    computed = any(not np.array_equal(value, imp.values[size]) for value in sizes.values())
    if not computed and not imp.fixed_size:  # a constant size where the file takes any size: a fixed size
        return None
    at_crop = infer_shapes(imp.graph, check_weights=False)
    for name in _nearest_first(imp.graph, x.node):
        if len(at_crop[name]) == 3 and at_crop[name][1:] == hw and (not computed or all(
                elsewhere[other][name][1:] == tuple(int(v) for v in sizes[other].ravel()[2:]) for other in elsewhere)):
            return Tensor(name, at_crop[name])
    return None


def _nearest_first(graph: Graph, name: str) -> list[str]:
    """The nodes `name` reads from, directly or not, the nearest first (breadth first)."""
    order, queue = [], [name]
    while queue:
        for source in graph.node(queue.pop(0)).inputs:
            if source.name not in order:
                order.append(source.name)
                queue.append(source.name)
    return order


def _input_sized_value(imp: Importer, name: str, elsewhere: dict) -> np.ndarray | None:
    """The constant `name` as it would be on another input size, where each layer's
    shape is `elsewhere` (`infer_shapes` there): the shape arithmetic it comes from,
    re-evaluated from the Shapes of the maps it reads (the input's; TorchScript takes N
    and C from the resized map's own) with ONNX's reference implementation, as
    `_fold_constant`; None where it depends on anything else but constants."""
    from onnx.reference import ReferenceEvaluator
    onnx = require_onnx()

    producer = {out: n for n in imp.nodes for out in n.output}
    nodes, shapes, constants, stack = {}, {}, {}, [name]
    while stack:
        value = stack.pop()
        node = producer.get(value)
        if value in nodes or value in shapes or value in constants:
            continue
        if node is None or node.op_type == "Constant":
            if not isinstance(imp.values.get(value), np.ndarray):
                return None
            constants[value] = imp.values[value]
        elif node.op_type == "Shape":
            source = imp.values.get(node.input[0])
            if not isinstance(source, Tensor) or source.layout != NCHW or source.rank != 4 \
                    or len(elsewhere.get(source.node, ())) != 3:
                return None
            attrs = imp.attributes(node)
            full = np.array([1, *elsewhere[source.node]], np.int64)
            shapes[value] = full[attrs.get("start", 0):attrs.get("end", 4)]
        else:
            nodes[value] = node
            stack.extend(i for i in node.input if i)
    if not nodes:
        return imp.values.get(name) if name in constants else shapes.get(name)
    ordered = [n for n in imp.nodes if any(out in nodes for out in n.output)]
    feeds = {**shapes, **constants}
    graph = onnx.helper.make_graph(
        ordered, "size", [onnx.helper.make_tensor_value_info(n, _elem_type(onnx, v), None) for n, v in feeds.items()],
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", imp.opset)])
    try:
        return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])
    except Exception:  # the reference implementation raises whatever numpy raises
        return None


def _shapes_read_by(imp: Importer, name: str) -> set[str]:
    """The values whose Shape the value `name` is computed from (Shape, then Slice,
    Gather, Cast, Concat, arithmetic), a dozen nodes back at most."""
    producer = {out: n for n in imp.nodes for out in n.output}
    found, seen, stack = set(), set(), [(name, 0)]
    while stack:
        value, depth = stack.pop()
        node = producer.get(value)
        if node is None or value in seen or depth > 12:
            continue
        seen.add(value)
        if node.op_type == "Shape":
            found.add(node.input[0])
        else:
            stack.extend((i, depth + 1) for i in node.input if i)
    return found


def _shape_source(imp: Importer, name: str, resized: str) -> Tensor | None:
    """The one rank-4 feature map other than `resized` whose Shape the value `name` is
    computed from (TorchScript takes N and C from the resized value's own Shape); None
    where there is no such map, or more than one."""
    found = _shapes_read_by(imp, name)
    found.discard(resized)
    if len(found) != 1:
        return None
    source = imp.values.get(found.pop())
    return source if isinstance(source, Tensor) and source.rank == 4 and source.layout == NCHW else None


def _on_every_axis(imp: Importer, node, values: np.ndarray, unchanged: np.ndarray, axes) -> np.ndarray:
    """A Resize's scales or sizes for all four axes: as given, or (op set 18's `axes`)
    those of the axes named, the others `unchanged`."""
    if axes is None:
        return values
    axes = [int(a) % 4 for a in axes]
    if len(axes) != values.size or len(set(axes)) != len(axes):
        raise imp.error(f"{node.op_type} with axes {list(axes)} and {values.size} scales or sizes")
    full = unchanged.copy()
    full[axes] = values.ravel()
    return full


def _resize_factor(imp: Importer, node, x: Tensor, attrs: dict) -> tuple[int, int]:
    """(fy, fx) of a Resize or Upsample node, checked to leave N and C alone and to be
    whole numbers. From op set 18 the scales or sizes may name some axes only (`axes`):
    the others keep their size."""
    if node.op_type == "Upsample" and imp.opset < 9:
        scales = np.asarray(attrs["scales"], np.float64)
    elif node.op_type == "Upsample" or imp.opset < 11:
        scales = imp.constant(node.input[1], "scales").astype(np.float64)
    else:
        scales = imp.optional_constant(node, 2, "scales")
        sizes = imp.optional_constant(node, 3, "sizes")
        if scales is not None and scales.size:
            scales = _on_every_axis(imp, node, scales.astype(np.float64), np.ones(4), attrs.get("axes"))
        elif sizes is not None:  # sizes instead: N, C, H, W (the batch's is ignored)
            sizes = _on_every_axis(imp, node, sizes.astype(np.float64), np.array([1.0, *x.shape]), attrs.get("axes"))
        if scales is None or scales.size == 0:
            if sizes is None or sizes.size != 4:
                raise imp.error("Resize without 4 constant scales or sizes; graphconv resizes (N, C, H, W) maps "
                                "by fixed factors")
            scales = np.array([1.0, *(sizes[1:] / np.array(x.shape))])
    if scales.size != 4 or scales[1] != 1.0 or scales[0] != 1.0:
        raise imp.error(f"{node.op_type} with scales {scales.tolist()}: graphconv enlarges rows and columns "
                        "only (scales [1, 1, fy, fx])")
    factor = tuple(int(s) for s in scales[2:])
    if any(s != f or f < 1 for s, f in zip(scales[2:], factor)):
        raise imp.error(f"{node.op_type} by {scales[2]:g} x {scales[3]:g}: graphconv enlarges by whole "
                        "numbers (a fractional scale would sample differently across a larger image)")
    return factor


@converts("GlobalAveragePool")
def _global_average_pool(imp: Importer, node) -> None:
    imp.add_layer(node, "globalavgpool", [imp.tensor(node.input[0])])


@converts("GlobalMaxPool")
def _global_max_pool(imp: Importer, node) -> None:
    """A max over the whole crop's map is a max pool with that map's size as its window:
    the same numbers at the crop, and a dense map on larger images."""
    x = imp.tensor(node.input[0])
    imp.add_layer(node, "maxpool", [x], dict(kernel_size=list(x.shape[1:]), stride=1))


def _reduced_axes(imp: Importer, node, x: Tensor, input_since: int) -> tuple[list[int] | None, bool]:
    """A Reduce node's axes (None: all of them, ONNX's default) and keepdims; the axes are
    an input from op set `input_since` (13 for ReduceSum, 18 for the others), an
    attribute before."""
    attrs = imp.attributes(node)
    if imp.opset >= input_since:
        axes = imp.optional_constant(node, 1, "axes")
        axes = None if axes is None or axes.size == 0 else [int(a) for a in axes.ravel()]
    else:
        axes = attrs.get("axes")
        axes = None if axes is None else [int(a) for a in axes]
    return axes, bool(attrs.get("keepdims", 1))


def _spatial_reduction(x: Tensor, axes: list[int] | None) -> bool:
    """Whether `axes` are exactly the height and width of `x` (a channels-last view's
    too)."""
    spatial = [1, 2] if x.layout == NHWC else [2, 3]
    return x.rank == 4 and axes is not None and sorted(a % 4 for a in axes) == spatial


OVER_CHANNELS = {"ReduceMean": "channel_mean", "ReduceL2": "channel_l2norm", "ReduceMax": "channel_max"}


@converts("ReduceMean", "ReduceL2", "ReduceMax")
def _reduce(imp: Importer, node) -> None:
    """ReduceMean over H and W is global average pooling (the dynamo exporter writes
    adaptive_avg_pool2d(1) and x.mean((2, 3)) this way); over the channels, with the
    channel axis kept, it is a channel_mean; ReduceL2 over H and W is global_l2norm
    (ConvNeXt V2's GRN, which writes both), over the channels a channel_l2norm
    (F.normalize(x, dim=1)); ReduceMax over H and W (x.amax((2, 3)), and
    AdaptiveMaxPool2d(1) as the dynamo exporter writes it) is a max pool with the crop's
    map as its window, as GlobalMaxPool, over the channels a channel_max (CBAM's spatial
    attention). A channels-last map's axes are read as such."""
    x = imp.tensor(node.input[0], ANY_LAYOUT)
    axes, keepdims = _reduced_axes(imp, node, x, 18)
    channel = [3] if x.layout == NHWC else [1]
    rank = 4 if keepdims else 2
    pooled = x if keepdims else replace(x, layout=NCHW)  # (N, C) features whichever view was pooled
    if _spatial_reduction(x, axes) and node.op_type == "ReduceMax":
        imp.add_layer(node, "maxpool", [pooled], dict(kernel_size=list(x.shape[1:]), stride=1), rank=rank)
    elif _spatial_reduction(x, axes):
        imp.add_layer(node, "globalavgpool" if node.op_type == "ReduceMean" else "global_l2norm", [pooled],
                      rank=rank)
    elif x.rank in (2, 4) and axes is not None and sorted(a % x.rank for a in axes) == channel and keepdims \
            and node.op_type in OVER_CHANNELS:
        imp.add_layer(node, OVER_CHANNELS[node.op_type], [x], rank=x.rank)
    else:
        what = {"ReduceMean": "mean", "ReduceL2": "L2 norm", "ReduceMax": "max"}[node.op_type]
        raise imp.error(f"{node.op_type} over axes {'all' if axes is None else axes} of a rank-{x.rank} "
                        f"{x.layout} value (keepdims={int(keepdims)}); graphconv reduces over height and width, "
                        f"and takes the {what} over the channels keeping their axis")


@converts("Expand")
def _expand(imp: Importer, node) -> None:
    """A feature map expanded to a shape it broadcasts to anyway. F.normalize(x, dim=1)
    expands its 1 x H x W norm to x's shape before its Div, and graphconv's div takes
    one value per position as it is; so the map goes on unexpanded, and its reader's
    shape rule says whether it takes it (div does; mul takes one value per channel). A
    (C, 1, 1) gate expanded to the map's height and width for a Mul (SENet's
    `x * y.expand_as(x)`) goes on unexpanded too: mul takes one value per channel. A
    1 x 1 map expanded to the shape of another map for any other reader is a
    `broadcast` layer (`_broadcast_to_a_map`)."""
    x = imp.tensor(node.input[0])
    if not isinstance(imp.values.get(node.input[1]), np.ndarray):
        raise imp.error("Expand to a shape computed from the feature map; graphconv expands to constant shapes")
    have = (1, *x.shape) if x.rank == 4 else (1, x.shape[0])  # as ONNX sees it: a map, or a vector (N, C)
    target = imp.shape_target(node.input[1], "target shape", rank=len(have))
    try:
        shape = np.broadcast_shapes(have, tuple(target))
    except ValueError:
        raise imp.error(f"Expand of a {'x'.join(map(str, have))} map to {target}, "
                        "a shape it does not broadcast to") from None
    readers = {n.op_type for n in imp.nodes if node.output[0] in n.input}
    gate = x.rank == 4 and have[2:] == (1, 1) and readers == {"Mul"} and shape[1] == have[1]
    if not gate and x.rank == 4 and _broadcast_to_a_map(imp, node, x, node.input[1]):
        return
    if len(shape) != len(have) or shape[0] != 1 or (shape[2:] != have[2:] and not gate):
        raise imp.error(f"Expand of a {'x'.join(map(str, have))} map to {list(shape)}; graphconv expands a map "
                        "only across its channels (one value per position, as F.normalize's norm)")
    imp.alias(node, x)


@converts("ReduceSum")
def _reduce_sum(imp: Importer, node) -> None:
    """The sum over H and W (x.sum((2, 3))): a global average pooling scaled by the crop's
    map size, H * W. On a larger image the pooling becomes a window of that size (the
    global-pool-to-window pass), so each cell is the sum over its crop's map, as the
    classifier computes it; a max or a sum over the image's whole map would not be.
    Or the sum over the group axis of a (N, g, C/g, H, W) view, the axis dropped:
    ResNeSt adding its radix branches. A group_sum layer."""
    x = imp.tensor(node.input[0], (*ANY_LAYOUT, GROUPED))
    if x.layout != GROUPED:
        axes, keepdims = _reduced_axes(imp, node, x, 13)
        if not _spatial_reduction(x, axes):
            raise imp.error(f"ReduceSum over axes {'all' if axes is None else axes} of a rank-{x.rank} {x.layout} "
                            "value; graphconv adds over height and width (a global pooling times their size)")
        pooled = imp.add_layer(node, "globalavgpool", [x], rank=4 if keepdims else 2,
                               output=f"{node.output[0]}/mean")
        area = x.shape[1] * x.shape[2]
        _affine(imp, node, pooled, np.full(x.shape[0], float(area)), np.zeros(x.shape[0]))
        return
    attrs = imp.attributes(node)
    axes = imp.optional_constant(node, 1, "axes") if imp.opset >= 13 else attrs.get("axes")
    axes = [] if axes is None else [int(a) % 5 for a in np.ravel(axes)]
    if axes != [1] or attrs.get("keepdims", 1) or x.swapped:
        raise imp.error(f"ReduceSum over axes {axes} of a grouped view (keepdims={attrs.get('keepdims', 1)}); "
                        "graphconv adds the groups of an (N, g, C/g, H, W) view, that axis dropped")
    imp.add_layer(node, "group_sum", [replace(x, layout=NCHW, groups=0)], dict(groups=x.groups))


@converts("Relu")
def _relu(imp: Importer, node) -> None:
    imp.add_layer(node, "relu", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)])


@converts("LeakyRelu")
def _leaky_relu(imp: Importer, node) -> None:
    alpha = float(imp.attributes(node).get("alpha", 0.01))
    imp.add_layer(node, "leaky_relu", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)], dict(alpha=alpha))


@converts("PRelu")
def _prelu(imp: Importer, node) -> None:
    """A slope per channel ((C, 1, 1) from PyTorch's nn.PReLU(C), (C,) after a flatten) or
    one for all (nn.PReLU()'s (1,)), stored as graphconv's one per channel. Keras' PReLU,
    which tf2onnx writes as two Relus, comes here fused (`onnx_patterns`)."""
    x = imp.tensor(node.input[0], POINTWISE_LAYOUTS)
    slope = np.asarray(imp.constant(node.input[1], "slope"), np.float32)
    channels = x.shape[0]
    per_channel = _per_channel(slope, x)  # ONNX broadcasts from the last axis: (C,) on NCHW is per column
    if per_channel is None:
        raise imp.error(f"PRelu slope of shape {list(slope.shape)} on a {channels}-channel value; graphconv "
                        "takes one slope, or one per channel ((C, 1, 1) on a map)")
    imp.add_layer(node, "prelu", [x], weights={"weight": per_channel.astype(np.float32)})


@converts("Tanh", "Softplus", "Softsign", "Mish", "Abs")
def _pointwise(imp: Importer, node) -> None:
    """Elementwise ops of no attributes, each graphconv's op of the same name."""
    op = {"Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign", "Mish": "mish", "Abs": "abs"}[node.op_type]
    imp.add_layer(node, op, [imp.tensor(node.input[0], POINTWISE_LAYOUTS)])


@converts("Pow", "Sqrt", "Reciprocal")
def _power(imp: Importer, node) -> None:
    """A map to one constant power, a `pow` layer: GeM pooling (x.clamp(min=eps).pow(p),
    an average pool, .pow(1 / p); p learnt or fixed, 1 / p folded from it as a constant);
    Sqrt and Reciprocal of a map as the powers 0.5 and -1. A power per channel, or a
    constant to the map's power, is refused."""
    x = imp.tensor(node.input[0], POINTWISE_LAYOUTS)
    if node.op_type == "Pow":
        exponent = imp.values.get(node.input[1])
        if not isinstance(exponent, np.ndarray) or exponent.size != 1:
            what = "another feature map" if not isinstance(exponent, np.ndarray) else f"{exponent.size} exponents"
            raise imp.error(f"Pow of a map by {what}; graphconv raises a map to one constant power")
        power = float(exponent.reshape(()))
    else:
        power = 0.5 if node.op_type == "Sqrt" else -1.0
    imp.add_layer(node, "pow", [x], dict(exponent=power))


@converts("Elu", "Celu", "Selu")
def _exponential_linear(imp: Importer, node) -> None:
    """elu, celu (alpha 1.0 by default) and selu (ONNX's defaults are PyTorch's
    constants rounded to float32)."""
    attrs = imp.attributes(node)
    x = imp.tensor(node.input[0], POINTWISE_LAYOUTS)
    if node.op_type == "Selu":
        from graphconv.ops.activations import SELU
        params = dict(alpha=float(attrs.get("alpha", SELU[0])), gamma=float(attrs.get("gamma", SELU[1])))
        if np.float32(params["alpha"]) == np.float32(SELU[0]) and np.float32(params["gamma"]) == np.float32(SELU[1]):
            params = dict(alpha=SELU[0], gamma=SELU[1])  # ONNX's float32 of PyTorch's: PyTorch's
    else:
        params = dict(alpha=float(attrs.get("alpha", 1.0)))
        if node.op_type == "Celu" and params["alpha"] == 0:
            raise imp.error("Celu with alpha 0 divides by 0")
    imp.add_layer(node, node.op_type.lower(), [x], params)


@converts("HardSigmoid")
def _hard_sigmoid(imp: Importer, node) -> None:
    attrs = imp.attributes(node)
    imp.add_layer(node, "hardsigmoid", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)],
                  dict(alpha=float(attrs.get("alpha", 0.2)), beta=float(attrs.get("beta", 0.5))))


@converts("HardSwish")
def _hard_swish(imp: Importer, node) -> None:
    imp.add_layer(node, "hardswish", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)])


@converts("Gelu")
def _gelu(imp: Importer, node) -> None:
    approximate = imp.attributes(node).get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    imp.add_layer(node, "gelu", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)], dict(approximate=approximate))


@converts("Erf")
def _erf(imp: Importer, node) -> None:
    raise imp.error("Erf on the feature map outside a GELU graphconv recognises (x * 0.5 * (1 + erf(x / "
                    "sqrt(2))), as op sets before 20 write it); re-export with opset_version=20 or later, "
                    "which writes GELU as one Gelu node")


@converts("Clip")
def _clip(imp: Importer, node) -> None:
    x = imp.tensor(node.input[0], POINTWISE_LAYOUTS)
    if imp.opset < 11:
        attrs = imp.attributes(node)
        low, high = attrs.get("min", -FLOAT32_MAX), attrs.get("max", FLOAT32_MAX)
    else:
        low_array = imp.optional_constant(node, 1, "min")
        high_array = imp.optional_constant(node, 2, "max")
        low = -FLOAT32_MAX if low_array is None else float(low_array)
        high = FLOAT32_MAX if high_array is None else float(high_array)
    low, high = max(float(low), -FLOAT32_MAX), min(float(high), FLOAT32_MAX)
    if low == 0.0 and high == FLOAT32_MAX:
        imp.add_layer(node, "relu", [x])
    else:
        imp.add_layer(node, "clip", [x], {"min": low, "max": high})


@converts("BatchNormalization")
def _batch_norm(imp: Importer, node) -> None:
    x = imp.tensor(node.input[0])
    attrs = imp.attributes(node)
    if attrs.get("training_mode", 0) or any(imp.uses.get(o) for o in node.output[1:] if o):
        raise imp.error("BatchNormalization in training mode; export the model in eval() mode")
    names = ("weight", "bias", "running_mean", "running_var")
    weights = {key: imp.constant(name, key) for key, name in zip(names, node.input[1:5])}
    name = None
    scale_name = node.input[1]
    if scale_name.endswith(".weight"):
        name = _clean_name(scale_name[: -len(".weight")]) or None
    imp.add_layer(node, "batchnorm", [x], {"eps": float(attrs.get("epsilon", 1e-5))}, weights, name=name)


@converts("LRN")
def _lrn(imp: Importer, node) -> None:
    attrs = imp.attributes(node)
    if attrs["size"] % 2 == 0:
        raise imp.error(f"LRN of even size {attrs['size']}: ONNX centres an even window one channel "
                        "later than graphconv's lrn (PyTorch's and Caffe's), so it is not imported")
    imp.add_layer(node, "lrn", [imp.tensor(node.input[0])],
                  dict(size=int(attrs["size"]), alpha=float(attrs.get("alpha", 1e-4)),
                       beta=float(attrs.get("beta", 0.75)), k=float(attrs.get("bias", 1.0))))


@converts(TORCH_LRN)
def _torch_lrn(imp: Importer, node) -> None:
    """nn.LocalResponseNorm as PyTorch's exporters write it (`_with_lrns_fused`): graphconv's
    lrn, whose window and alpha / size are PyTorch's, for any size."""
    attrs = imp.attributes(node)
    imp.add_layer(node, "lrn", [imp.tensor(node.input[0])],
                  dict(size=int(attrs["size"]), alpha=float(attrs["alpha"]), beta=float(attrs["beta"]),
                       k=float(attrs["k"])))


@converts("Identity", "Dropout")
def _identity(imp: Importer, node) -> None:
    """Nothing, as a Dropout is at inference; one exported in training mode (a model left
    in train()) drops values at random and is refused, as such a BatchNormalization is."""
    if node.op_type == "Dropout":
        if len(node.output) > 1 and node.output[1] and imp.uses.get(node.output[1]):
            raise imp.error("Dropout's mask output is used; graphconv runs networks for inference")
        training = imp.optional_constant(node, 2, "training_mode")
        ratio = imp.optional_constant(node, 1, "ratio")
        if training is not None and bool(np.ravel(training)[0]) and (ratio is None or float(np.ravel(ratio)[0]) > 0):
            raise imp.error("Dropout in training mode (training_mode=True) drops values at random; export the "
                            "model in eval() mode")
    imp.alias(node, imp.tensor(node.input[0], (NCHW, NHWC, GROUPED, HWC_FEATURES, GREY_PLANE, ONE_SCORE)))


FLOAT_TYPES = {"FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE"}


@converts("Cast")
def _cast(imp: Importer, node) -> None:
    """A Cast of the feature map between float types, as a model converted to float16
    with float32 inputs and outputs writes at its ends (onnxconverter-common's
    keep_io_types): graphconv computes in float32 throughout, so both are no-ops. A cast
    to integers would round the map, which graphconv does not do."""
    onnx = require_onnx()
    to = onnx.TensorProto.DataType.Name(imp.attributes(node).get("to", 0))
    if to not in FLOAT_TYPES:
        raise imp.error(f"Cast of the image's feature map to {to}; graphconv computes in float32 and casts "
                        "only between float types")
    imp.alias(node, imp.tensor(node.input[0], (NCHW, NHWC, GROUPED, GREY_PLANE, ONE_SCORE)))


@converts("CastLike")
def _cast_like(imp: Importer, node) -> None:
    """CastLike(value, like): `value` cast to `like`'s type. PyTorch's dynamo exporter
    (optimize=False) casts constants like the feature map: a bias-free conv's zero bias,
    ReLU6's bounds. graphconv's maps are float32, so such a constant becomes float32; a
    map cast like a float is Cast's no-op. (Both constants: folded before this.)"""
    value, like = imp.values.get(node.input[0]), imp.values.get(node.input[1])
    if isinstance(like, np.ndarray) and not np.issubdtype(like.dtype, np.floating):
        raise imp.error(f"CastLike of the image's feature map to {like.dtype}; graphconv computes in float32 and "
                        "casts only between float types")
    if isinstance(value, np.ndarray):
        imp.values[node.output[0]] = value.astype(np.float32)
        return
    imp.alias(node, imp.tensor(node.input[0], (NCHW, NHWC, GROUPED, GREY_PLANE, ONE_SCORE)))


@converts("Flatten")
def _flatten(imp: Importer, node) -> None:
    x = imp.tensor(node.input[0], (NCHW, SQUEEZED, NHWC, GREY_PLANE))
    axis = imp.attributes(node).get("axis", 1)
    if axis % x.rank != 1:
        raise imp.error(f"Flatten at axis {axis}; graphconv keeps the batch axis and flattens the rest (axis 1)")
    if x.rank == 2:
        imp.alias(node, x)
    else:
        _features(imp, node, x)


def _features(imp: Importer, node, x: Tensor) -> None:
    """The map `x` (or its SQUEEZED view) as (N, C*H*W) features: a flatten layer. Of a
    channels-last view, ONNX's features run in (H, W, C) order: the flatten's output is
    then seen as HWC_FEATURES (1x1 maps aside, whose features are one order)."""
    flat = imp.add_layer(node, "flatten", [replace(x, layout=NCHW)], rank=2)
    if x.layout == NHWC and x.shape[1:] != (1, 1):
        imp.alias(node, replace(flat, layout=HWC_FEATURES, hwc=x.shape))


@converts("Squeeze")
def _squeeze(imp: Importer, node) -> None:
    """The Squeeze of H and W after a global pooling (tf2onnx writes Keras'
    GlobalAveragePooling2D as GlobalAveragePool then Squeeze): a map of C x 1 x 1 becomes
    (N, C) features, as a Flatten would make them. The two axes may go one Squeeze at a
    time (x.squeeze(-1).squeeze(-1)): the first leaves a SQUEEZED view, the second flattens."""
    x = imp.tensor(node.input[0], (NCHW, SQUEEZED))
    if imp.opset >= 13:
        axes = imp.optional_constant(node, 1, "axes")
        axes = None if axes is None else [int(a) for a in np.ravel(axes)]
    else:
        axes = imp.attributes(node).get("axes")
    spatial = [2] if x.layout == SQUEEZED else [2, 3]
    squeezed = None if axes is None else sorted({int(a) % x.rank for a in axes})
    if _drop_the_class_axis(imp, node, x, squeezed in (None, [1])):
        return
    if x.rank in (3, 4) and x.shape[1:] == (1, 1) and squeezed == spatial:
        _features(imp, node, x)
    elif x.rank == 4 and x.shape[1:] == (1, 1) and squeezed in ([2], [3]):
        imp.alias(node, replace(x, layout=SQUEEZED, rank=3))
    else:
        shape = "x".join(map(str, x.shape))
        value = f"(N, {x.shape[0]}) features" if x.rank == 2 else f"rank-{x.rank} {shape} map"
        every = x.rank == 4 and axes is None and x.shape[1:] == (1, 1)  # x.mean((2, 3), keepdim=True).squeeze()
        raise imp.error(f"Squeeze of {'every axis of size 1' if axes is None else f'axes {axes}'} of a {value}; "
                        "graphconv squeezes only the 1x1 height and width after a global pooling (axes [2, 3], "
                        "together or one at a time), and the class axis of a one-class head"
                        + ("; a squeeze of every axis drops the batch axis of a batch of one too: write "
                           "x.flatten(1) or x.squeeze((2, 3))" if every else ""))


def _drop_the_class_axis(imp: Importer, node, x: Tensor, drops_axis_1: bool) -> bool:
    """A one-class head's (N, 1) scores made (N,): the binary classifier's
    `fc(x).squeeze(1)`, `.view(-1)` or `.flatten()` before BCEWithLogitsLoss. graphconv's
    map keeps its class axis, (N, 1, rows, cols), so the value is only seen as ONE_SCORE,
    which elementwise ops read and an Unsqueeze of axis 1 makes (N, 1) again."""
    if not (drops_axis_1 and x.layout == NCHW and x.rank == 2 and x.shape == (1, 1, 1)):
        return False
    imp.alias(node, replace(x, layout=ONE_SCORE, rank=1))
    return True


@converts("Reshape")
def _reshape(imp: Importer, node) -> None:
    """The Reshapes exporters write before a classifier's fc: (N, -1), (N, C*H*W), or
    (-1, C*H*W); a reshape to the same shape changes nothing; the channel shuffle's
    pair: (N, C, H, W) -> (N, g, C/g, H, W) and, after its Transpose, back; GroupNorm's
    (N, groups, -1) and back; space-to-depth's patch view and, after its Transpose, its
    end; a batch-1 map flattened to [-1] (see `_gather`); and graphconv's own flatten as
    its export writes it, (N, C*H*W, 1, 1)."""
    x = imp.tensor(node.input[0], (NCHW, GROUPED, GROUP_RUNS, PATCHES, RADIX, NHWC, GREY_PLANE, POSITIONS))
    target = imp.shape_target(node.input[1], "target shape")
    if x.layout == GREY_PLANE:
        _, h, w = x.shape
        given = _reshaped(target, [1, h, w])
        if given == [1, h * w] and target[0] in (0, 1, -1):  # Keras' MLP on MNIST: its one channel's features
            _features(imp, node, replace(x, layout=NCHW, rank=4))
            return
        if given not in ([1, h, w, 1], [1, 1, h, w]) or target[0] not in (0, 1, -1):
            raise imp.error(f"Reshape of a grey {h}x{w} input to {target}; graphconv gives it its channel axis, "
                            f"(N, {h}, {w}, 1) or (N, 1, {h}, {w}), or flattens it, (N, {h * w})")
        imp.alias(node, replace(x, layout=NHWC if given[-1] == 1 and given != [1, 1, h, w] else NCHW, rank=4))
        return
    if x.layout in (NHWC, POSITIONS):
        _channels_last_reshape(imp, node, x, target)
        return
    if x.layout == GROUPED or len(target) == 5:
        _channel_groups(imp, node, x, target)
        return
    if _group_runs(imp, node, x, target) or _patches(imp, node, x, target) or _radix(imp, node, x, target):
        return
    if _drop_the_class_axis(imp, node, x, len(target) == 1 and _reshaped(target, [1, 1]) == [1]):
        return
    if len(target) == 1 and x.rank == 4 and _reshaped(target, [1, *x.shape]) == [math.prod(x.shape)]:
        imp.alias(node, replace(x, layout=FLAT, rank=1))
        return
    features = math.prod(x.shape)
    current = [1, *x.shape] if x.rank == 4 else [1, features]
    if len(target) == 2 and target[0] in (0, 1, -1) and target[1] in (-1, features) and target != [-1, -1]:
        if x.rank == 2:
            imp.alias(node, x)
        else:
            imp.add_layer(node, "flatten", [x], rank=2)
        return
    resolved = [current[i] if v == 0 else v for i, v in enumerate(target)]
    if len(resolved) == x.rank and all(v in (c, -1) for v, c in zip(resolved[1:], current[1:])):
        imp.alias(node, x)
        return
    if x.rank == 4 and len(target) == 4 and _reshaped(target, current) == [1, features, 1, 1]:
        imp.add_layer(node, "flatten", [x])  # graphconv's flatten as its export writes it: (N, C*H*W, 1, 1)
        return
    if x.rank == 4 and _reshaped(target, current) == [1, x.shape[0], x.shape[1] * x.shape[2]]:
        raise imp.error(f"Reshape of a {'x'.join(map(str, current))} map to {target}: its pixels made a sequence "
                        "of tokens, as a vision transformer's patch embedding (ViT, LeViT) or an attention block "
                        "makes them; attention reads every token at once where a convolution reads a window, so "
                        "such a network does not slide (graphconv reads convolutional networks; onnxruntime runs "
                        "this one as it is, on its crop)")
    raise imp.error(f"Reshape of a {'x'.join(map(str, current))} value to {target}; graphconv "
                    "recognises the flatten before a classifier's fully connected layer and the views of a "
                    "channel shuffle, GroupNorm, space-to-depth and split attention (an attention block's "
                    "reshapes are not among them)")


def _channels_last_reshape(imp: Importer, node, x: Tensor, target: list[int]) -> None:
    """A Reshape of a channels-last view: to (N, -1) (or (N, H*W*C)), Keras' Flatten
    before its Dense as tf2onnx writes it (`_features`); to (N*H*W, C), one row per
    position, and (after the MatMul) back to (N, H, W, K), Keras' Dense on a 4-D map as
    tf2onnx writes it (POSITIONS); to its own (N, H, W, C), nothing (a 1x1 map's
    [-1, 1, 1, C] in Keras' MobileNet head)."""
    c, h, w = x.shape
    current = [1, h, w, c]
    if x.layout == POSITIONS:
        if _reshaped(target, [h * w, c]) not in ([1, h, w, c], [h * w, c]):
            raise imp.error(f"Reshape of the {h * w}x{c} per-position rows of a channels-last map to {target}; "
                            f"graphconv reads them back as the (N, {h}, {w}, {c}) map they came from")
        imp.alias(node, replace(x, layout=NHWC if len(target) == 4 else POSITIONS, rank=len(target)))
    elif _reshaped(target, current) == [1, h * w * c] and target[0] in (0, 1, -1):
        _features(imp, node, x)
    elif _reshaped(target, current) == [h * w, c] and (h, w) != (1, 1):
        imp.alias(node, replace(x, layout=POSITIONS, rank=2))
    elif c == 1 and _reshaped(target, current) == [1, 1, h, w] and target[0] in (0, 1, -1):
        imp.alias(node, replace(x, layout=NCHW))  # a grey map's Transpose to channels-first, as tf2onnx writes it
    elif _reshaped(target, current) == current and target[0] in (0, 1, -1):
        imp.alias(node, x)
    else:
        raise imp.error(f"Reshape of a channels-last (NHWC) {'x'.join(map(str, current))} view to {target}; "
                        "graphconv reads the flatten before a fully connected layer (N, -1), the rows of a Dense "
                        "on each position (N*H*W, C), and a reshape to the same shape")


def _channel_groups(imp: Importer, node, x: Tensor, target: list[int]) -> None:
    """(N, C, H, W) viewed as (N, g, C/g, H, W), or such a view back to (N, C, H, W):
    unchanged if its group axes were not swapped, a channel_shuffle layer if they were."""
    c, h, w = x.shape
    if x.layout == NCHW and x.rank == 4 and len(target) == 5:
        dims = _reshaped(target, [1, c, h, w])
        groups = dims[1] if dims else 0
        if groups > 0 and dims == [1, groups, c // groups, h, w] and c % groups == 0:
            imp.alias(node, replace(x, layout=GROUPED, groups=groups, swapped=False))
            return
    if x.layout == GROUPED and len(target) in (2, 4):
        inner = [x.groups, c // x.groups][::-1 if x.swapped else 1]
        flattened = len(target) == 2 and _reshaped(target, [1, c * h * w]) == [1, c * h * w]
        if flattened or _reshaped(target, [1, *inner, h, w]) == [1, c, h, w]:
            back = replace(x, layout=NCHW, groups=0, swapped=False)
            if x.swapped:
                back = imp.add_layer(node, "channel_shuffle", [back], dict(groups=x.groups))
            else:
                imp.alias(node, back)
            if flattened:  # the dynamo exporter's one Reshape for the view back and a flatten(1) after it
                imp.add_layer(node, "flatten", [back], rank=2)
            return
    view = "x".join(map(str, [1, c, h, w])) if x.layout == NCHW else f"{x.groups}-group view of {c}x{h}x{w}"
    raise imp.error(f"Reshape of a {view} value to {target}; graphconv recognises the flatten before a "
                    "classifier's fully connected layer and the channel shuffle's (N, g, C/g, H, W) views")


def _group_runs(imp: Importer, node, x: Tensor, target: list[int]) -> bool:
    """(N, C, H, W) viewed as (N, groups, C/groups * H * W), the form in which exporters
    write GroupNorm (an InstanceNormalization of each run, which must be what reads it),
    or such a view back; False when the Reshape is neither."""
    c, h, w = x.shape
    readers = [n.op_type for n in imp.nodes if node.output[0] in n.input]
    if x.layout == NCHW and x.rank == 4 and len(target) == 3 and readers == ["InstanceNormalization"]:
        dims = _reshaped(target, [1, c, h, w])
        if dims and c % dims[1] == 0 and dims == [1, dims[1], c // dims[1] * h * w]:
            imp.alias(node, replace(x, layout=GROUP_RUNS, rank=3, groups=dims[1]))
            return True
    if x.layout == GROUP_RUNS and _reshaped(target, [1, x.groups, c // x.groups * h * w]) == [1, c, h, w]:
        imp.alias(node, replace(x, layout=NCHW, rank=4, groups=0))
        return True
    return False


def _patches(imp: Importer, node, x: Tensor, target: list[int]) -> bool:
    """Space-to-depth as exporters write it (TResNet): (N, C, H, W) viewed as (N, C, H/b,
    b, W/b, b), a Transpose of the patch axes (PATCH_ORDERS), and a Reshape to (N, C*b*b,
    H/b, W/b), which is the space_to_depth layer; False when the Reshape is no step of it."""
    c, h, w = x.shape
    if x.layout == NCHW and x.rank == 4 and len(target) == 6:
        dims = _reshaped(target, [1, c, h, w])
        b = dims[3] if dims else 0
        if b > 1 and dims == [1, c, h // b, b, w // b, b] and dims[5] == b:
            imp.alias(node, replace(x, layout=PATCHES, rank=6, groups=b))
            return True
    if x.layout == PATCHES and x.perm in PATCH_ORDERS:
        b = x.groups
        flattened = len(target) == 2 and _reshaped(target, [1, c * h * w]) == [1, c * h * w]
        if flattened or _reshaped(target, [1, c * b * b, h // b, w // b]) == [1, c * b * b, h // b, w // b]:
            params = dict(block=b, order=PATCH_ORDERS[x.perm])
            patches = imp.add_layer(node, "space_to_depth", [replace(x, layout=NCHW, rank=4, groups=0, perm=())],
                                    params)
            if flattened:  # the dynamo exporter's one Reshape for the patches and a flatten(1) after them
                imp.add_layer(node, "flatten", [patches], rank=2)
            return True
    if x.layout == PATCHES:
        raise imp.error(f"Reshape of a {x.groups}x{x.groups} patch view to {target}; graphconv follows "
                        "space-to-depth's Transpose of the patch axes and its Reshape to (N, C*b*b, H/b, W/b)")
    return False


def _radix(imp: Importer, node, x: Tensor, target: list[int]) -> bool:
    """ResNeSt's split-attention gate (rSoftMax): a C x 1 x 1 value viewed as (N,
    cardinality, radix, -1), its two middle axes swapped, a Softmax over the radix, and
    flattened back; then (N, -1) seen as (N, C, 1, 1) again. With a cardinality of 1 the
    swap moves no channel, so the Softmax is a softmax across `radix` runs of channels.
    False when the Reshape is none of these."""
    c, h, w = x.shape
    if (h, w) != (1, 1):
        return False
    if x.layout == NCHW and x.rank == 4 and len(target) == 4:
        dims = _reshaped(target, [1, c, 1, 1])
        if dims and dims[0] == 1 and dims[1] * dims[2] * dims[3] == c and dims[2] > 1 and dims[1:] != [c, 1, 1]:
            if dims[1] != 1:
                raise imp.error(f"split attention with a cardinality of {dims[1]}: graphconv follows ResNeSt's "
                                "radix softmax for a cardinality of 1")
            imp.alias(node, replace(x, layout=RADIX, groups=dims[2]))
            return True
    if x.layout == RADIX and x.swapped and _reshaped(target, [1, c]) == [1, c]:
        imp.alias(node, replace(x, layout=NCHW, rank=2, groups=0, swapped=False))
        return True
    if x.layout == NCHW and x.rank == 2 and _reshaped(target, [1, c]) == [1, c, 1, 1]:
        imp.alias(node, replace(x, rank=4))
        return True
    return False


def _reshaped(target: list[int], current: list[int]) -> list[int] | None:
    """ONNX Reshape's target with its 0s (copy that input axis) and -1 (the rest)
    resolved against `current`; None when it does not fit."""
    dims = [current[i] if v == 0 and i < len(current) else v for i, v in enumerate(target)]
    if dims.count(-1) > 1 or any(d < -1 or d == 0 for d in dims):
        return None
    known = math.prod(d for d in dims if d != -1)
    total = math.prod(current)
    if -1 in dims:
        if total % known:
            return None
        dims[dims.index(-1)] = total // known
    return dims if math.prod(dims) == total else None


@converts("Gather")
def _gather(imp: Importer, node) -> None:
    """Constant indices into the feature map:

    * along the channels (axis 1), a list of them (x[:, [2, 1, 0]], RGB to BGR at the
      input; a subset, a repeat): a 1x1 conv whose weights pick each output's channel,
      which is exact (each output adds one input times 1 and the others times 0); one of
      them by a scalar index (x[:, 0]), the same, seen as the ONE_CHANNEL view;
    * along H or W of a 1x1 map, the one cell (x[:, :, 0, 0] after a global pooling): a
      scalar index drops the axis, which leaves a SQUEEZED view, and the second drop is
      a flatten to (N, C) features; a list of it, [0], changes nothing;
    * of a flattened map, every element back: indices 0..C*H*W-1 shaped (1, C, H, W), as
      the dynamo exporter writes adaptive_avg_pool2d(1) (a strided view of the mean);
      of a batch of B exported with that batch fixed, 0..B*C*H*W-1 shaped (B, C, H, W).

    Rows and columns of a larger map, the batch axis, or indices computed at run time
    cannot slide, and are refused by name."""
    x = imp.tensor(node.input[0], (NCHW, FLAT, SQUEEZED))
    indices = np.asarray(imp.constant(node.input[1], "indices"))
    axis = int(imp.attributes(node).get("axis", 0))
    if x.layout == FLAT:
        whole = (1, *x.shape)
        if (axis != 0 or indices.shape not in (whole, (imp.exported_batch, *x.shape))
                or not np.array_equal(indices.ravel(), np.arange(indices.size))):
            raise imp.error(f"Gather from a flattened {'x'.join(map(str, x.shape))} map with indices of shape "
                            f"{list(indices.shape)}; graphconv reads only the gather of every element back "
                            f"into {list(whole)} (or the exported batch's, [B, ...])")
        imp.alias(node, replace(x, layout=NCHW, rank=4))
        return
    if indices.dtype.kind not in "iu":
        raise imp.error(f"Gather with indices of type {indices.dtype}; ONNX indexes with integers")
    if not -x.rank <= axis < x.rank:
        raise imp.error(f"Gather along axis {axis} of a rank-{x.rank} value")
    axis %= x.rank
    size = (1, x.shape[0], *x.shape[1:x.rank - 1])[axis] if x.layout == SQUEEZED else (1, *x.shape)[axis]
    if np.any(indices < -size) or np.any(indices >= size):
        raise imp.error(f"Gather of indices {_listed(indices)} along axis {axis}, of size {size}: out of range")
    picked = np.where(indices < 0, indices + size, indices).astype(np.int64)
    shape = "x".join(map(str, x.shape))
    if axis == 1 and picked.ndim == 1:
        _pick_channels(imp, node, x, picked)
    elif axis == 1 and picked.ndim == 0 and x.layout == NCHW and x.rank == 4:
        _pick_channels(imp, node, x, picked.reshape(1))
        imp.alias(node, replace(imp.values[node.output[0]], layout=ONE_CHANNEL, rank=3))
    elif axis >= 2 and x.shape[1:] == (1, 1) and picked.ndim == 0:
        if x.layout == SQUEEZED:
            _features(imp, node, x)
        else:
            imp.alias(node, replace(x, layout=SQUEEZED, rank=3))
    elif axis >= 2 and x.shape[1:] == (1, 1) and picked.ndim == 1 and picked.size == 1:
        imp.alias(node, x)
    else:
        raise imp.error(f"Gather of indices {_listed(indices)} along axis {axis} of a rank-{x.rank} {shape} value; "
                        "graphconv gathers a list of channels (axis 1), or the one cell of a 1x1 map "
                        "(x[:, :, 0, 0] after a global pooling)")


@converts("GatherND")
def _gather_nd(imp: Importer, node) -> None:
    """Channels picked from a (C, N, H, W) view by constant (k, 1) indices: the dynamo
    exporter's x[:, [2, 1, 0]] (a Transpose [1, 0, 2, 3] before it and after). The same
    1x1 conv as a Gather of channels."""
    x = imp.tensor(node.input[0], (CNHW,))
    indices = np.asarray(imp.constant(node.input[1], "indices"))
    channels = x.shape[0]
    if (int(imp.attributes(node).get("batch_dims", 0)) != 0 or indices.ndim != 2 or indices.shape[1] != 1
            or indices.dtype.kind not in "iu" or np.any(indices < -channels) or np.any(indices >= channels)):
        raise imp.error(f"GatherND of indices of shape {list(indices.shape)} from a (C, N, H, W) view of "
                        f"{channels} channels; graphconv reads a list of channels, indices of shape (k, 1)")
    picked = indices[:, 0].astype(np.int64) % channels
    _pick_channels(imp, node, x, picked)
    imp.alias(node, replace(imp.values[node.output[0]], layout=CNHW))


def _listed(indices: np.ndarray) -> str:
    text = str(indices.tolist())
    return text if len(text) <= 40 else text[:37] + "..."


def _pick_channels(imp: Importer, node, x: Tensor, picked: np.ndarray) -> None:
    """Output channel i is input channel picked[i]: nothing, where that is every channel
    in order; else a 1x1 conv of 0s and 1s, no bias (a map's layout and rank kept)."""
    channels = x.shape[0]
    if np.array_equal(picked, np.arange(channels)):
        imp.alias(node, x)
        return
    weight = np.zeros((picked.size, channels, 1, 1), np.float32)
    weight[np.arange(picked.size), picked, 0, 0] = 1.0
    imp.add_layer(node, "conv", [replace(x, layout=NCHW)], dict(out_channels=int(picked.size), kernel_size=1,
                                                                bias=False), {"weight": weight})
    if x.layout in (SQUEEZED, NHWC):
        imp.alias(node, replace(imp.values[node.output[0]], layout=x.layout))


@converts("Gemm")
def _gemm(imp: Importer, node) -> None:
    """Y = alpha * A @ op(B) + beta * C with A the (N, F) features: an fc layer."""
    x = imp.tensor(node.input[0], (NCHW, HWC_FEATURES))
    attrs = imp.attributes(node)
    if attrs.get("transA", 0):
        raise imp.error("Gemm with transA=1 transposes the batch; graphconv reads Gemm as a fully "
                        "connected layer (transA=0)")
    if x.rank != 2:
        raise imp.error(f"Gemm on a rank-{x.rank} value")
    b = imp.constant(node.input[1], "weight")
    weight = b if attrs.get("transB", 0) else b.T  # a view: a VGG fc6's 400 MB is copied once, when stored
    if float(attrs.get("alpha", 1.0)) != 1.0:
        weight = weight.astype(np.float64) * float(attrs["alpha"])
    c = imp.optional_constant(node, 2, "bias")
    bias = None
    if c is not None:
        if c.size not in (1, weight.shape[0]) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
            raise imp.error(f"Gemm bias of shape {list(c.shape)}; graphconv's fc adds one bias per output")
        bias = np.broadcast_to(c.astype(np.float64).reshape(-1) * float(attrs.get("beta", 1.0)),
                               (weight.shape[0],))
    _add_fc(imp, node, x, weight, bias)


@converts("MatMul")
def _matmul(imp: Importer, node) -> None:
    """A @ B with a constant (F, K) B: an fc layer without bias (the Add after it, if
    any, becomes its bias); on a channels-last map (ConvNeXt's pointwise Linears) or its
    per-position rows (Keras' Dense on a map), a 1x1 convolution."""
    x = imp.tensor(node.input[0], (*ANY_LAYOUT, HWC_FEATURES, POSITIONS))
    if x.layout in (NHWC, POSITIONS):
        weight = imp.constant(node.input[1], "weight")
        if weight.ndim != 2 or weight.shape[0] != x.shape[0]:
            raise imp.error(f"MatMul weight of shape {list(weight.shape)} for {x.shape[0]} channels")
        imp.add_layer(node, "conv", [x], dict(out_channels=int(weight.shape[1]), kernel_size=1, bias=False),
                      {"weight": weight.T[:, :, None, None]})
        return
    if x.rank != 2:
        raise imp.error(f"MatMul on a rank-{x.rank} value; graphconv reads MatMul as a fully "
                        "connected layer on (N, F) features")
    b = imp.constant(node.input[1], "weight")
    if b.ndim != 2:
        raise imp.error(f"MatMul weight of shape {list(b.shape)}")
    _add_fc(imp, node, x, b.T, None)


def _add_fc(imp: Importer, node, x: Tensor, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """An fc layer of (K, F) `weight` on `x`'s features; of HWC_FEATURES, its columns
    reordered from (H, W, C) to the (C, H, W) order graphconv's flatten gives."""
    features = math.prod(x.shape)
    if weight.shape[1] != features:
        crop = "" if imp.fixed_size else (f" (the input's height and width are not fixed in the file: is "
                                          f"{'x'.join(map(str, imp.graph.input_shape[1:]))} the crop it was "
                                          "trained on? --crop-size H W, crop_size= from Python)")
        raise imp.error(f"weight of shape {list(weight.shape)} for {features} input features{crop}")
    if x.layout == HWC_FEATURES:
        c, h, w = x.hwc
        weight = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape)
        x = replace(x, layout=NCHW, hwc=())
    weights = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    imp.add_layer(node, "fc", [x], dict(out_features=int(weight.shape[0]), bias=bias is not None),
                  weights, rank=2)


# ---- onnxruntime's fused ops ---------------------------------------------------------------
# What its "extended" optimisation level (a session's optimized_model_filepath) writes in
# place of a conv or Gemm and its activation, and of GELU and SiLU: read back as the
# standard ops they fuse. Its "all" level's com.microsoft.nchwc layout is refused.

@converts("FusedConv", domain=ORT)
def _fused_conv(imp: Importer, node) -> None:
    """activation(Conv(X, W, B) + Z): the conv, an add of the optional Z (a residual
    onnxruntime fused in), the activation its attributes name."""
    _conv(imp, node)
    out = imp.values[node.output[0]]
    if len(node.input) > 3 and node.input[3]:
        out = imp.add_layer(node, "add", [out, imp.tensor(node.input[3])])
    attrs = imp.attributes(node)
    _fused_activation(imp, node, out, attrs, [float(v) for v in attrs.get("activation_params", [])])


@converts("FusedGemm", domain=ORT)
def _fused_gemm(imp: Importer, node) -> None:
    """activation(Gemm(A, B, C)): the fc layer, then the activation (its parameters in
    activation_alpha and activation_beta)."""
    _gemm(imp, node)
    attrs = imp.attributes(node)
    params = [float(attrs[key]) for key in ("activation_alpha", "activation_beta") if key in attrs]
    _fused_activation(imp, node, imp.values[node.output[0]], attrs, params)


def _fused_activation(imp: Importer, node, x: Tensor, attrs: dict, params: list[float]) -> None:
    """The layer of a fused op's `activation` attribute (none where it has none), its
    parameters as onnxruntime orders them: LeakyRelu's alpha, Clip's min and max,
    HardSigmoid's alpha and beta."""
    activation = attrs.get("activation", b"")
    activation = activation.decode() if isinstance(activation, bytes) else activation
    if not activation:
        return
    layers = {"Relu": ("relu", {}), "Tanh": ("tanh", {}), "Sigmoid": ("sigmoid", {}), "HardSwish": ("hardswish", {}),
              "LeakyRelu": ("leaky_relu", dict(zip(["alpha"], params or [0.01]))),
              "HardSigmoid": ("hardsigmoid", dict(zip(["alpha", "beta"], params or [0.2, 0.5]))),
              "Clip": ("clip", dict(zip(["min", "max"], params or [-FLOAT32_MAX, FLOAT32_MAX])))}
    if activation not in layers:
        raise imp.error(f"{node.op_type} with activation {shown(activation)}; graphconv reads {', '.join(layers)}")
    op, layer_params = layers[activation]
    if op == "clip" and layer_params == {"min": 0.0, "max": FLOAT32_MAX}:
        op, layer_params = "relu", {}
    imp.add_layer(node, op, [x], layer_params)


@converts("Gelu", domain=ORT)
def _ort_gelu(imp: Importer, node) -> None:
    imp.add_layer(node, "gelu", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)], dict(approximate="none"))


@converts("QuickGelu", domain=ORT)
def _quick_gelu(imp: Importer, node) -> None:
    """x * sigmoid(alpha * x): onnxruntime writes SiLU (x * sigmoid(x)) as one of alpha 1."""
    alpha = float(imp.attributes(node).get("alpha", 1.702))
    if alpha != 1.0:
        raise imp.error(f"QuickGelu with alpha {alpha:g}: graphconv reads it as SiLU, x * sigmoid(x) (alpha 1)")
    imp.add_layer(node, "silu", [imp.tensor(node.input[0], POINTWISE_LAYOUTS)])


@converts("Add", "Sum")
def _add(imp: Importer, node) -> None:
    tensors, constants = _operands(imp, node, SCALED_LAYOUTS)
    if len(tensors) == 1 and not constants:  # Sum of one input: itself
        imp.alias(node, tensors[0])
        return
    if not constants:
        _refuse_maps_of_different_shapes(imp, tensors, "adds")
        imp.add_layer(node, "add", tensors)
        return
    if len(tensors) == 1 and len(constants) == 1:
        _add_constant(imp, node, tensors[0], constants[0])
        return
    raise imp.error("Add with several constants")


def _operands(imp: Importer, node, layouts: Sequence[str] = ANY_LAYOUT) -> tuple[list[Tensor], list[np.ndarray]]:
    """The node's feature-map inputs (in `layouts`) and its constant ones."""
    operands = [imp.values.get(name) for name in node.input]
    constants = [v for v in operands if isinstance(v, np.ndarray)]
    tensors = [imp.tensor(name, layouts) for name, v in zip(node.input, operands)
               if not isinstance(v, np.ndarray)]
    return tensors, constants


def _refuse_maps_of_different_shapes(imp: Importer, tensors: list[Tensor], verb: str) -> None:
    """An elementwise op of several maps needs them of one shape and layout: graphconv
    does not broadcast ("Add of maps of different shapes 3x5x7, 3x1x1; graphconv adds
    maps of one shape")."""
    if len({(t.shape, t.layout) for t in tensors}) != 1:
        per_position = any(t.shape[0] == 1 and t.shape[1:] != (1, 1) for t in tensors) and len(tensors) == 2
        raise imp.error(f"{imp.onnx_node.op_type} of maps of different shapes "
                        + ", ".join("x".join(map(str, t.shape)) for t in tensors)
                        + f"; graphconv {verb} maps of one shape (no broadcasting)"
                        + ("; one value per position across the channels is a statistic over them, such as a "
                           "LayerNorm's mean, in a form graphconv does not recognise" if per_position else ""))


def _add_constant(imp: Importer, node, x: Tensor, constant: np.ndarray) -> None:
    """x + constant. Where x comes from an fc or conv read by nothing else, the constant
    joins that layer's bias (MatMul + Add is how some exporters write Linear); anywhere
    else (input normalisation written into the model) it is a per-channel shift layer."""
    shift = _per_channel(constant, x)
    if shift is None:
        raise imp.error(f"{node.op_type} of a feature map and a constant of shape {list(constant.shape)}; "
                        "graphconv adds one number, or one per channel")
    layer = imp.graph.node(x.node)
    if layer.op in ("fc", "conv") and imp.readers(x) == 1:
        bias_key = f"{layer.name}.bias"
        old = imp.weights.get(bias_key, np.zeros(x.shape[0], np.float32)).astype(np.float64)
        imp.weights[bias_key] = (old + shift).astype(np.float32)
        imp.graph.set_params(layer, bias=True)
        imp.alias(node, x)
    else:
        _affine(imp, node, x, np.ones(x.shape[0]), shift)


def _affine(imp: Importer, node, x: Tensor, scale: np.ndarray, shift: np.ndarray) -> None:
    """x * scale + shift per channel: a batchnorm with the identity's statistics (mean 0,
    variance 1, eps 0), which fold-batchnorm merges into a conv right before it."""
    c = x.shape[0]
    layer = imp.graph.node(x.node)
    if (layer.op == "batchnorm" and imp.readers_left(x) == 1 and not layer.users
            and _is_affine(imp, layer.name, layer.params)):
        # another scale or shift of an affine layer only this reads (x.sum((2, 3)) / 100): one layer;
        # not when a layer made earlier reads it too (sigmoid(y) + y * 3), whose values would change
        old_scale, old_shift = (imp.weights[f"{layer.name}.{key}"].astype(np.float64) for key in ("weight", "bias"))
        imp.weights[f"{layer.name}.weight"] = (old_scale * scale).astype(np.float32)
        imp.weights[f"{layer.name}.bias"] = (old_shift * scale + shift).astype(np.float32)
        imp.alias(node, x)
        return
    weights = {"weight": scale, "bias": shift, "running_mean": np.zeros(c), "running_var": np.ones(c)}
    imp.add_layer(node, "batchnorm", [x], {"eps": 0.0}, weights)


def _is_affine(imp: Importer, layer: str, params) -> bool:
    """Whether batchnorm `layer` is x * weight + bias: eps 0 and the identity's statistics."""
    if params.get("eps") != 0.0 or params.get("activation", "none") != "none":
        return False
    mean, var = imp.weights.get(f"{layer}.running_mean"), imp.weights.get(f"{layer}.running_var")
    return mean is not None and var is not None and not mean.any() and bool((var == 1).all())


@converts("Sub")
def _sub(imp: Importer, node) -> None:
    """x - constant, or constant - x (input normalisation written into the model), or one
    map minus another of its shape (PoolFormer's pool(x) - x)."""
    first, second = (imp.values.get(name) for name in node.input)
    if isinstance(second, np.ndarray):
        _add_constant(imp, node, imp.tensor(node.input[0], SCALED_LAYOUTS), -np.asarray(second, np.float64))
        return
    if isinstance(first, np.ndarray):
        x = imp.tensor(node.input[1], SCALED_LAYOUTS)
        shift = _per_channel(first, x)
        if shift is None:
            raise imp.error(f"Sub of a feature map from a constant of shape {list(first.shape)}; graphconv "
                            "subtracts one number, or one per channel")
        _affine(imp, node, x, -np.ones(x.shape[0]), shift)
        return
    tensors = [imp.tensor(name) for name in node.input]
    _refuse_maps_of_different_shapes(imp, tensors, "subtracts")
    imp.add_layer(node, "sub", tensors)


@converts("Max")
def _max(imp: Importer, node) -> None:
    """The elementwise maximum of maps of one shape (FReLU's max(x, bn(dwconv(x))),
    maxout): a maximum layer; of one map and numbers (torch.maximum(x, torch.tensor(c)),
    Keras's tf.maximum(x, 0)): a clip from below (a relu for 0)."""
    _extremum(imp, node, largest=True)


@converts("Min")
def _min(imp: Importer, node) -> None:
    """Min of one map and numbers: a clip from above (tf2onnx writes Keras's
    ReLU(max_value=6) as Max with 0, then Min with 6)."""
    _extremum(imp, node, largest=False)


def _extremum(imp: Importer, node, largest: bool) -> None:
    tensors, constants = _operands(imp, node)
    if len(tensors) == 1 and not constants:  # of one input: itself
        imp.alias(node, tensors[0])
        return
    if not constants and largest:
        _refuse_maps_of_different_shapes(imp, tensors, "takes the maximum of")
        imp.add_layer(node, "maximum", tensors)
        return
    if not constants:
        raise imp.error("Min of feature maps; graphconv takes the minimum of one map and numbers (a clip "
                        "from above), and the maximum of maps (Max)")
    if len(tensors) == 1 and all(c.size == 1 for c in constants):
        numbers = [float(c.ravel()[0]) for c in constants]
        if not largest:
            imp.add_layer(node, "clip", [tensors[0]], {"min": -FLOAT32_MAX, "max": min(min(numbers), FLOAT32_MAX)})
        elif max(numbers) == 0.0:
            imp.add_layer(node, "relu", [tensors[0]])
        else:
            imp.add_layer(node, "clip", [tensors[0]], {"min": max(max(numbers), -FLOAT32_MAX), "max": FLOAT32_MAX})
        return
    shapes = ", ".join(str(list(c.shape)) for c in constants if c.size != 1)
    what = (f"{len(tensors)} feature maps and constants" if len(tensors) > 1
            else f"a feature map and a constant of shape {shapes}")
    raise imp.error(f"{node.op_type} of {what}; graphconv takes the {'maximum' if largest else 'minimum'} of one "
                    "map and numbers, or the maximum of maps of one shape")


@converts("Neg")
def _neg(imp: Importer, node) -> None:
    """-x (a constant's is folded before): a scale by -1, which fold-batchnorm merges into
    a conv before it."""
    x = imp.tensor(node.input[0], SCALED_LAYOUTS)
    _affine(imp, node, x, -np.ones(x.shape[0]), np.zeros(x.shape[0]))


@converts("Div")
def _div(imp: Importer, node) -> None:
    """x / constant: a per-channel scale by its reciprocal; x / (|x| + 1) (nn.Softsign as
    exporters write it): one softsign layer; x / map, of x's shape or one value per
    position (ConvNeXt V2's norms over their channel mean)."""
    divisor = imp.values.get(node.input[1])
    x = imp.tensor(node.input[0], SCALED_LAYOUTS if isinstance(divisor, np.ndarray) else ANY_LAYOUT)
    if not isinstance(divisor, np.ndarray):
        d = imp.tensor(node.input[1], ANY_LAYOUT)
        absolute = _softsign_abs(imp, x, d)
        if absolute is not None:  # x / (|x| + 1): the abs layer becomes softsign, the + 1 goes
            shift = imp.graph.node(d.node)
            imp.graph.erase(shift)
            for key in ("weight", "bias", "running_mean", "running_var"):
                imp.weights.pop(f"{shift.name}.{key}", None)
            layer = imp.graph.replace(imp.graph.node(absolute.node), "softsign")
            imp.alias(node, replace(absolute, node=layer.name))
            return
        imp.add_layer(node, "div", [x, d])
        return
    factors = _per_channel(divisor, x)
    if factors is None or not np.all(factors != 0):
        raise imp.error(f"Div of a feature map by a constant of shape {list(divisor.shape)}; graphconv "
                        "divides by one non-zero number, or one per channel")
    _affine(imp, node, x, 1.0 / factors, np.zeros(x.shape[0]))


def _softsign_abs(imp: Importer, x: Tensor, divisor: Tensor) -> Tensor | None:
    """The abs(x) in `divisor` = abs(x) + 1 (nn.Softsign as PyTorch's exporters write it,
    x / (1 + |x|), the + 1 a shift layer `_affine` made), when nothing but this Div reads
    either."""
    shift = imp.graph.node(divisor.node)
    if shift.op != "batchnorm" or imp.readers(divisor) != 1 or not _is_affine(imp, shift.name, shift.params):
        return None
    if not ((imp.weights[f"{shift.name}.weight"] == 1).all() and (imp.weights[f"{shift.name}.bias"] == 1).all()):
        return None
    absolute = shift.inputs[0]
    if absolute.op != "abs" or absolute.inputs[0].name != x.node or len(absolute.users) != 1:
        return None
    found = [v for v in imp.values.values() if isinstance(v, Tensor) and v.node == absolute.name]
    return found[0] if found and imp.readers(found[0]) == 1 and found[0].layout == x.layout else None


def _per_channel(constant: np.ndarray, x: Tensor) -> np.ndarray | None:
    """The constant as one value per channel of `x`, if it broadcasts that way onto
    x's (N, C), (N, C, H, W) or channels-last (N, H, W, C)."""
    channels = x.shape[0]
    c = np.asarray(constant, dtype=np.float64)
    if c.size == 1:
        return np.full(channels, float(c.ravel()[0]))
    shape = list(c.shape)
    while shape and shape[0] == 1:
        shape.pop(0)
    if shape != [channels] and (x.rank == 2 or x.layout == NHWC):
        return None
    if x.layout == HWC_FEATURES:  # one value per feature in (H, W, C) order; graphconv's flatten is (C, H, W)
        depth, h, w = x.hwc
        return c.reshape(h, w, depth).transpose(2, 0, 1).reshape(channels)
    if x.rank == 2 or x.layout == NHWC:
        return c.reshape(channels)
    return c.reshape(channels) if shape == [channels, 1, 1] else None


@converts("Mul")
def _mul(imp: Importer, node) -> None:
    """x * sigmoid(x) (swish, as exporters write SiLU): one silu layer; map * map of one
    shape, map * a per-channel gate (squeeze-and-excitation) or a per-position one (CBAM's
    spatial attention), either written first: a mul layer; map * a
    constant per channel (ConvNeXt's layer scale): a per-channel scale (`_affine`). Two
    grouped views of one grouping multiply as their channels do (ResNeSt's branches by
    their radix-softmax weights), the result still so viewed."""
    tensors, constants = _operands(imp, node, (*SCALED_LAYOUTS, GROUPED))
    if len(tensors) == 1 and len(constants) == 1:
        if tensors[0].layout == GROUPED:
            raise imp.error("Mul of a grouped 5-D view by a constant; graphconv multiplies such views by each other")
        _scale(imp, node, tensors[0], constants[0])
        return
    a, b = tensors
    if (a.layout, a.groups, a.swapped) != (b.layout, b.groups, b.swapped):
        raise imp.error(f"Mul of differently viewed feature maps ({a.layout} and {b.layout})")
    if a.layout == GROUPED:
        a, b = (a, b) if b.shape[1:] == (1, 1) else (b, a)
        product = imp.add_layer(node, "mul", [a, b])
        imp.alias(node, replace(product, groups=a.groups))
        return
    swish = _swish_input(imp, a, b) or _swish_input(imp, b, a)
    if swish is not None:
        layer = imp.graph.replace(imp.graph.node(swish.node), "silu")
        imp.alias(node, replace(swish, node=layer.name))
        return
    softplus = _mish_softplus(imp, a, b) or _mish_softplus(imp, b, a)
    if softplus is not None:  # x * tanh(softplus(x)): the softplus layer becomes mish, the tanh goes
        imp.graph.erase(imp.graph.node(softplus.node).users[0])
        layer = imp.graph.replace(imp.graph.node(softplus.node), "mish")
        imp.alias(node, replace(softplus, node=layer.name))
        return
    if a.shape[1:] == (1, 1) and b.shape[1:] != (1, 1) or a.shape[0] == 1 < b.shape[0] and a.shape[1:] == b.shape[1:]:
        a, b = b, a  # the map first, its gate (per channel, or per position: CBAM's) second, as mul takes them
    imp.add_layer(node, "mul", [a, b])  # both views alike: an (N, 1, 1, C) gate is per channel in NHWC too


def _swish_input(imp: Importer, x: Tensor, gate: Tensor) -> Tensor | None:
    """`gate` itself when it is sigmoid(x) and this Mul is its only reader."""
    layer = imp.graph.node(gate.node)
    if layer.op == "sigmoid" and layer.inputs[0].name == x.node and imp.readers(gate) == 1:
        return gate
    return None


def _mish_softplus(imp: Importer, x: Tensor, gate: Tensor) -> Tensor | None:
    """The softplus(x) in `gate` = tanh(softplus(x)) (nn.Mish as exporters before op set 18
    write it), when nothing but this Mul reads either."""
    tanh = imp.graph.node(gate.node)
    if tanh.op != "tanh" or imp.readers(gate) != 1:
        return None
    softplus = tanh.inputs[0]
    if softplus.op != "softplus" or softplus.inputs[0].name != x.node or len(softplus.users) != 1:
        return None
    found = [v for v in imp.values.values() if isinstance(v, Tensor) and v.node == softplus.name]
    return found[0] if found and imp.readers(found[0]) == 1 else None


def _scale(imp: Importer, node, x: Tensor, constant: np.ndarray) -> None:
    factors = _per_channel(constant, x)
    if factors is None and constant.size == math.prod(x.shape) > x.shape[0] and constant.ndim >= 3:
        raise imp.error(f"Mul of a feature map by a constant of shape {list(constant.shape)}, a number for each "
                        "position of the crop's map: weights tied to positions cannot slide over a larger image "
                        "(Keras' PReLU learns its alpha so; PReLU(shared_axes=[1, 2]) learns one per channel, "
                        "which graphconv reads)")
    if factors is None:
        raise imp.error(f"Mul of a feature map by a constant of shape {list(constant.shape)}; graphconv "
                        "multiplies by one number, or by one per channel")
    _affine(imp, node, x, factors, np.zeros(x.shape[0]))


@converts("Transpose")
def _transpose(imp: Importer, node) -> None:
    """The permutations that only change how ONNX sees the channels: to and from
    channels-last, the swap of a grouped view's two group axes, and the patch axes of a
    space-to-depth's view (which its Reshape then makes a layer)."""
    x = imp.tensor(node.input[0], (NCHW, NHWC, GROUPED, PATCHES, RADIX, CNHW, NWHC))
    perm = [int(p) for p in imp.attributes(node).get("perm", [])]
    if x.layout == PATCHES and not x.perm and tuple(perm) in PATCH_ORDERS:
        imp.alias(node, replace(x, perm=tuple(perm)))
    elif x.layout == RADIX and perm == [0, 2, 1, 3]:
        imp.alias(node, replace(x, swapped=not x.swapped))
    elif x.layout == NCHW and x.rank == 4 and perm == [0, 2, 3, 1]:
        imp.alias(node, replace(x, layout=NHWC))
    elif x.layout == NHWC and perm == [0, 3, 1, 2]:
        imp.alias(node, replace(x, layout=NCHW))
    elif x.layout in (NCHW, CNHW) and x.rank == 4 and perm == [1, 0, 2, 3]:
        imp.alias(node, replace(x, layout=CNHW if x.layout == NCHW else NCHW))
    elif x.layout == GROUPED and perm == [0, 2, 1, 3, 4]:
        imp.alias(node, replace(x, swapped=not x.swapped))
    elif x.layout in (NCHW, NWHC) and x.rank == 4 and perm == [0, 3, 2, 1]:
        imp.alias(node, replace(x, layout=NWHC if x.layout == NCHW else NCHW))
    else:
        raise imp.error(f"Transpose {perm} of a feature map; graphconv follows only the ones between NCHW "
                        "and channels-last (NHWC), the channel shuffle's swap of its group axes, "
                        "space-to-depth's of its patch axes, and the swap of N and C around a GatherND")


@converts("LayerNormalization")
def _layer_norm(imp: Importer, node) -> None:
    """A LayerNorm over the channels alone, at each position: over the last axis of a
    channels-last map (ConvNeXt), or of (N, C) features."""
    x = imp.tensor(node.input[0], ANY_LAYOUT)
    attrs = imp.attributes(node)
    axis = int(attrs.get("axis", -1)) % (x.rank if x.layout == NCHW else 4)
    per_position = (x.layout == NHWC and axis == 3) or (x.rank == 2 and axis == 1)
    if not per_position:
        raise imp.error(f"LayerNormalization from axis {attrs.get('axis', -1)} of a {x.layout} value normalises "
                        "over more than the channels at one position; graphconv's layernorm normalises "
                        "each position's channels (LayerNorm over the last axis of a channels-last map)")
    c = x.shape[0]
    weight = imp.constant(node.input[1], "scale")
    bias = imp.optional_constant(node, 2, "bias")
    weights = {"weight": np.broadcast_to(weight, (c,)),
               "bias": np.zeros(c) if bias is None else np.broadcast_to(bias, (c,))}
    name = _clean_name(node.input[1][: -len(".weight")]) if node.input[1].endswith(".weight") else None
    imp.add_layer(node, "layernorm", [x], {"eps": float(attrs.get("epsilon", 1e-5))}, weights, name=name or None)


@converts(CHANNEL_CONV)
def _channel_conv(imp: Importer, node) -> None:
    """A 1-D convolution across the channels (`_with_channel_convs_fused`): of a vector
    of channels, (N, C) or a 1x1 map, in ECA's views (on a larger map they would
    flatten its positions into the channels), or of every position of a map in
    graphconv's own export."""
    x = imp.tensor(node.input[0])
    attrs = imp.attributes(node)
    into, back = (list(np.ravel(imp.constant(name, "shape"))) if name else None for name in node.input[3:5])
    rank = int(attrs["rank"]) or (len(back) if back is not None else 0)
    taps = imp.constant(node.input[1], "weight").reshape(-1).astype(np.float32)
    out_c = x.shape[0] + 2 * int(attrs["padding"]) - taps.size + 1

    def one_vector_an_image(shape: list | None, axis: int, channels: int) -> bool:
        """Whether a Reshape to `shape` keeps each image's `channels` values one run on
        `axis`: that many there, or -1 beside a batch axis (0, 1 or the export's batch)."""
        batch = shape is None or shape[0] in (0, 1, imp.exported_batch) or shape[axis] == channels
        return shape is None or batch and shape[axis] in (-1, channels)

    if not attrs["per_position"] and (x.shape[1:] != (1, 1) or into is not None and (len(into) != 3 or into[1] != 1)
                                      or rank not in (2, 4) or back is not None and back[2:] not in ([], [1, 1])
                                      or not one_vector_an_image(into, 2, x.shape[0])
                                      or not one_vector_an_image(back, 1, out_c)):
        views = f" (viewed as {into} and back as {back})" if into is not None else ""
        raise imp.error(f"a Conv1d across the channels of a {'x'.join(map(str, x.shape))} value{views}; graphconv "
                        "convolves the channels of a pooled vector viewed as (N, 1, C) and back as (N, C, 1, 1) "
                        "or (N, C) (ECA)")
    weights = {"weight": taps}
    if node.input[2]:
        weights["bias"] = imp.constant(node.input[2], "bias").reshape(1).astype(np.float32)
    stem = node.input[1][: -len(".weight")] if node.input[1].endswith(".weight") else ""
    imp.add_layer(node, "channel_conv", [x], dict(kernel_size=taps.size, padding=int(attrs["padding"]),
                                                   bias="bias" in weights),
                  weights, rank=rank, name=_clean_name(stem) or None)


@converts(CHANNEL_NORM)
def _channel_layer_norm(imp: Importer, node) -> None:
    """A LayerNorm written out (`_with_layer_norms_fused`) over the channels alone: the
    last axis of a channels-last map, axis 1 of an (N, C, H, W) one (ConvNeXt's
    channels_first LayerNorm), or (N, C) features; a weight and bias of one value per
    channel (shaped (C,), or (C, 1, 1) over axis 1), or none."""
    x = imp.tensor(node.input[0], ANY_LAYOUT)
    attrs = imp.attributes(node)
    axis = int(attrs["axis"]) % (4 if x.layout == NHWC else x.rank)
    if len(node.input) > 3 and node.input[3]:
        _check_batch_norm_views(imp, x, *(imp.shape_target(name, "shape") for name in node.input[3:5]))
    if len(node.input) > 5 and node.input[5]:
        _check_mean_view(imp, x, axis, imp.shape_target(node.input[5], "shape"))
    if not ((x.layout == NHWC and axis == 3) or (x.layout == NCHW and axis == 1)):
        raise imp.error(f"a LayerNorm written out (x - mean, over the root of the mean square plus eps) over axis "
                        f"{attrs['axis']} of a rank-{x.rank} {x.layout} value; graphconv's layernorm normalises "
                        "each position's channels")
    c = x.shape[0]
    weights = {}
    for key, name, default in (("weight", node.input[1], 1.0), ("bias", node.input[2], 0.0)):
        value = _per_channel(imp.constant(name, key), x) if name else np.full(c, default)
        if value is None:  # (C,) over axis 1 of (N, C, H, W) broadcasts along W, not the channels
            raise imp.error(f"a LayerNorm's {key} of shape {list(imp.constant(name, key).shape)} is not one value "
                            f"per channel of the {x.layout} map; graphconv scales each channel")
        weights[key] = value
    name = _clean_name(node.input[1][: -len(".weight")]) if node.input[1].endswith(".weight") else None
    imp.add_layer(node, "layernorm", [x], {"eps": float(attrs["epsilon"])}, weights, name=name or None)


def _check_batch_norm_views(imp: Importer, x: Tensor, into: list[int], back: list[int]) -> None:
    """tf2onnx's LayerNormalization (`_with_batch_norm_layer_norms_fused`) normalises each
    position's channels only where it reshapes the channels-last map (1, H, W, C) to
    (1, H*W, C, 1), one BatchNormalization channel per position, and back."""
    c, h, w = x.shape
    if x.layout != NHWC or _reshaped(into, [1, h, w, c]) != [1, h * w, c, 1] \
            or _reshaped(back, [1, h * w, c, 1]) != [1, h, w, c]:
        layout = "channels-last" if x.layout == NHWC else "channels-first"
        raise imp.error(f"a LayerNorm written as a BatchNormalization of a {layout} {c}x{h}x{w} map viewed as "
                        f"{into} and back as {back}; graphconv reads Keras' LayerNormalization over the channels, "
                        f"a channels-last map viewed as (1, H*W, C, 1) and back")


def _check_mean_view(imp: Importer, x: Tensor, axis: int, view: list[int]) -> None:
    """tf2onnx's moments (`_with_moment_layer_norms_fused`) reshape the mean, one value per
    position, to a target written for the crop it was exported at: it is the mean itself
    only where that target keeps the mean's shape there."""
    dims = ([1, *x.shape] if x.layout == NCHW else [1, x.shape[1], x.shape[2], x.shape[0]])[:x.rank]
    dims[axis] = 1
    if _reshaped(view, dims) != dims:
        raise imp.error(f"a LayerNorm's mean, of shape {dims} at the crop, reshaped to {view}; graphconv reads "
                        "a LayerNorm whose mean keeps its shape")


@converts("InstanceNormalization")
def _instance_norm(imp: Importer, node) -> None:
    """Each channel normalised over its map (InstanceNorm2d), or each run of a (N, groups,
    -1) view (GroupNorm as exporters write it): a groupnorm layer, its per-group scale and
    bias given to each channel of the group. The view stays until the Reshape back."""
    x = imp.tensor(node.input[0], (NCHW, GROUP_RUNS))
    if x.layout == NCHW and x.rank != 4:
        raise imp.error(f"InstanceNormalization of a rank-{x.rank} value; graphconv normalises (N, C, H, W) maps")
    groups = x.groups if x.layout == GROUP_RUNS else x.shape[0]
    per_group = x.shape[0] // groups
    weights = {key: np.repeat(np.broadcast_to(imp.constant(node.input[i], key), (groups,)), per_group)
               for i, key in ((1, "weight"), (2, "bias"))}
    eps = float(imp.attributes(node).get("epsilon", 1e-5))
    normed = imp.add_layer(node, "groupnorm", [x], dict(groups=groups, eps=eps), weights)
    imp.alias(node, replace(normed, groups=x.groups))  # still the group view, if it was one


@converts("GroupNormalization")
def _group_norm(imp: Importer, node) -> None:
    """ONNX's own GroupNorm (op set 18 on): its scale and bias are per group before op
    set 21 and per channel from it."""
    x = imp.tensor(node.input[0])
    attrs = imp.attributes(node)
    groups, c = int(attrs["num_groups"]), x.shape[0]
    if groups < 1 or c % groups:
        raise imp.error(f"GroupNormalization of {c} channels into {groups} groups; they must split evenly")
    per_group = 1 if imp.opset >= 21 else c // groups
    weights = {key: np.repeat(imp.constant(node.input[i], key).ravel(), per_group)
               for i, key in ((1, "weight"), (2, "bias"))}
    if any(w.shape != (c,) for w in weights.values()):
        raise imp.error(f"GroupNormalization's scale and bias must have {c // per_group} values for {c} channels "
                        f"in op set {imp.opset}")
    imp.add_layer(node, "groupnorm", [x], dict(groups=groups, eps=float(attrs.get("epsilon", 1e-5))), weights)


@converts("SpaceToDepth")
def _space_to_depth(imp: Importer, node) -> None:
    x = imp.tensor(node.input[0])
    block = int(imp.attributes(node)["blocksize"])
    if any(side % block for side in x.shape[1:]) and imp.trimmed_to_blocks.get(node.input[0]) != block:
        raise imp.error(f"SpaceToDepth of a {x.shape[1]}x{x.shape[2]} map by blocks of {block}: ONNX needs sides "
                        "that are multiples of the block")
    imp.add_layer(node, "space_to_depth", [x], dict(block=block))


@converts("DepthToSpace")
def _depth_to_space(imp: Importer, node) -> None:
    attrs = imp.attributes(node)
    mode = attrs.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("DCR", "CRD"):
        raise imp.error(f"DepthToSpace mode {shown(mode)}; ONNX defines DCR and CRD")
    imp.add_layer(node, "depth_to_space", [imp.tensor(node.input[0])],
                  dict(block=int(attrs["blocksize"]), order="blocks" if mode == "DCR" else "channels"))


@converts("ConvTranspose")
def _conv_transpose(imp: Importer, node) -> None:
    """A transposed convolution of stride s is a conv and `depth_to_space`: each output
    pixel of phase (a, b) (its position modulo s) gathers the taps of a few neighbouring
    input pixels, the same few for every pixel of that phase. So a conv computes all s²
    phases of each input pixel as s² times the channels, from the input pixels at the
    offsets any phase reads (`_transpose_taps`), and depth_to_space (blocks order, where a
    phase's channels are one run, which channels-last storage copies whole) puts each
    phase's pixel in its place. Its window is then a conv's, then a floored one:
    the network still slides and tiles exactly. This holds where the output is exactly s
    times the input (kernel - 2 * pad + output_padding == stride: U-Net's kernel 2 stride
    2, and kernel 4 stride 2 pad 1, kernel 3 stride 2 pad 1 output_padding 1); other
    sizes and dilations are refused by name; groups are one conv (`_ungrouped_transpose_weight`)."""
    x = imp.tensor(node.input[0])
    weight = imp.constant(node.input[1], "weight")  # (C_in, C_out, kh, kw)
    bias = imp.optional_constant(node, 2, "bias")
    attrs = imp.attributes(node)
    kernel = [int(k) for k in attrs.get("kernel_shape", weight.shape[2:])]
    strides = [int(v) for v in attrs.get("strides", [1, 1])]
    pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    extra = [int(v) for v in attrs.get("output_padding", [0, 0])]
    if not _enlarges_by_its_stride(attrs, weight, kernel, strides, pads, extra):
        others = {k: v.decode() if isinstance(v, bytes) else v for k, v in sorted(attrs.items())
                  if k not in ("kernel_shape", "strides", "pads", "output_padding", "group")}
        raise imp.error(f"ConvTranspose with kernel {kernel}, strides {strides}, pads {pads}, output_padding "
                        f"{extra}" + "".join(f", {k} {v}" for k, v in others.items())
                        + "; graphconv takes the upsampling kind, whose output is stride times its input: "
                        "kernel - 2 * pad + output_padding == stride, symmetric pads, no dilation "
                        "(ConvTranspose2d(kernel_size=2, stride=2), or kernel 4, stride 2, padding 1)")
    weight = _ungrouped_transpose_weight(weight, int(attrs.get("group", 1)))
    block = strides[0]
    conv_weight, before, after = _transpose_taps(weight, block, pads[:2])
    weights = {"weight": conv_weight}
    if bias is not None:
        weights["bias"] = np.tile(bias.ravel(), block * block)
    name = imp.graph.fresh_name(imp._layer_name(node, weights))
    symmetric = [min(b, a) for b, a in zip(before, after)]
    rest = [before[0] - symmetric[0], before[1] - symmetric[1], after[0] - symmetric[0], after[1] - symmetric[1]]
    x = _padded_input(imp, node, x, rest, 0.0, name)
    patches = imp.add_layer(node, "conv", [x], dict(out_channels=conv_weight.shape[0], kernel_size=list(
        conv_weight.shape[2:]), padding=symmetric, bias=bias is not None), weights, name=name,
        output=f"{node.output[0]}/phases")
    imp.add_layer(node, "depth_to_space", [patches], dict(block=block, order="blocks"), name=f"{name}.to_pixels")


def _ungrouped_transpose_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped ConvTranspose's (C_in, C_out / groups, kh, kw) weight as one group's
    (C_in, C_out, kh, kw), zero between groups (FCN's bilinear upsampling is one group per
    class): the same output, computed as one conv."""
    if groups == 1:
        return weight
    c_in, per_group = weight.shape[:2]
    dense = np.zeros((c_in, per_group * groups, *weight.shape[2:]), weight.dtype)
    per_input = c_in // groups
    for g in range(groups):
        rows = slice(g * per_input, (g + 1) * per_input)
        dense[rows, g * per_group:(g + 1) * per_group] = weight[rows]
    return dense


def _enlarges_by_its_stride(attrs: dict, weight: np.ndarray, kernel: list[int], strides: list[int],
                            pads: list[int], extra: list[int]) -> bool:
    """Whether a ConvTranspose is the kind `_conv_transpose` takes: 2-D, no dilation, no
    explicit output shape, the same stride on both axes, symmetric pads, and an output
    exactly stride times its input."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return (weight.ndim == 4 and len(kernel) == 2
            and list(attrs.get("dilations", [1, 1])) == [1, 1] and "output_shape" not in attrs
            and auto_pad in ("NOTSET", "VALID") and strides[0] == strides[1] and pads[:2] == pads[2:]
            and all(k - 2 * p + e == strides[0] for k, p, e in zip(kernel, pads[:2], extra)))


def _transpose_taps(weight: np.ndarray, block: int, pads: Sequence[int]) -> tuple[np.ndarray, list, list]:
    """A ConvTranspose's (C_in, C_out, kh, kw) weights of stride `block` as a conv's:
    (block² * C_out, C_in, th, tw), output channel (a, b, o) the phase (a, b) of output
    channel o (depth_to_space's blocks order), and the conv's padding before and after on
    each axis. Output pixel
    block * i + a reads input pixel i + d with tap k = a + pad - block * d, where
    0 <= k < kernel; the conv's taps are the offsets d that any phase reads."""
    c_in, c_out = weight.shape[:2]
    axes = []
    for axis, pad in enumerate(pads):
        size = weight.shape[2 + axis]
        reads = [(a, d, a + pad - block * d) for a in range(block)
                 for d in range(-size, size + 1) if 0 <= a + pad - block * d < size]
        first = min(d for _, d, _ in reads)
        axes.append((reads, first, max(d for _, d, _ in reads)))
    (rows, top, bottom), (cols, left, right) = axes
    taps = np.zeros((block, block, c_out, c_in, bottom - top + 1, right - left + 1), np.float32)
    for a, dy, ky in rows:
        for b, dx, kx in cols:
            taps[a, b, :, :, dy - top, dx - left] = weight[:, :, ky, kx].T
    return taps.reshape(block * block * c_out, c_in, *taps.shape[4:]), [-top, -left], [bottom, right]


@converts("Slice")
def _slice(imp: Importer, node) -> None:
    """Channels picked by a slice: a range of them (ShuffleNet's chunk, written as two
    Slices), every other one, or all reversed (RGB to BGR: x.flip(1), or Keras'
    x[..., ::-1] on a channels-last input, as caffe-style preprocessing does). Axes
    sliced whole (the batch, a full height or width) change nothing."""
    x = imp.tensor(node.input[0], ANY_LAYOUT)
    if imp.opset < 10:  # starts, ends and axes were attributes then, and there were no steps
        attrs = imp.attributes(node)
        starts, ends = np.asarray(attrs["starts"]), np.asarray(attrs["ends"])
        axes, steps = (np.asarray(attrs["axes"]) if "axes" in attrs else None), None
    else:
        starts, ends = (imp.constant(node.input[i], what).ravel() for i, what in ((1, "starts"), (2, "ends")))
        axes = imp.optional_constant(node, 3, "axes")
        steps = imp.optional_constant(node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else [int(a) % x.rank for a in axes.ravel()]
    steps = [1] * len(axes) if steps is None else [int(v) for v in steps.ravel()]
    if _trims_to_blocks(imp, node, x, axes, starts, ends, steps):
        return
    channel_axis = 3 if x.layout == NHWC else 1
    cuts = [(axis, int(start), int(end), step) for axis, start, end, step in zip(axes, starts, ends, steps)
            if not _whole(x.shape[0] if axis == channel_axis else None, int(start), int(end), step)]
    if any(axis != channel_axis for axis, *_ in cuts):
        if _wraps_around(imp, node, [axis for axis, *_ in cuts]):
            raise imp.error("circular padding (padding_mode='circular', F.pad(mode='circular'): as TorchScript's "
                            f"export writes it, Slices of the map's edges concatenated to its other side); {NO_WRAP}")
        view = "channels-last (NHWC) " if x.layout == NHWC else ""
        raise imp.error(f"Slice along axes {sorted({axis for axis, *_ in cuts})} of a {view}map; graphconv slices "
                        f"the channels (axis {channel_axis}), and any axis from its start to its end")
    if not cuts:
        imp.alias(node, x)
        return
    _, start, end, step = cuts[0]
    picked = np.arange(x.shape[0])[start:end:step]
    if picked.size == 0:
        raise imp.error(f"Slice of channels {start}:{end}:{step} of {x.shape[0]} keeps none")
    if step == 1:
        _slice_channels(imp, node, x, int(picked[0]), int(picked[-1]) + 1, node.output[0])
    else:
        _pick_channels(imp, node, x, picked)


def _wraps_around(imp: Importer, node, axes: list[int]) -> bool:
    """Whether Slice `node` of a map's height or width is the start of circular padding:
    a Concat along that axis reads both the slice and the map it was cut from."""
    for reader in imp.nodes[imp.position + 1:]:
        if reader.op_type == "Concat" and node.output[0] in reader.input and node.input[0] in reader.input:
            return int(imp.attributes(reader).get("axis", 0)) % 4 in axes
    return False


def _whole(size: int | None, start: int, end: int, step: int) -> bool:
    """Whether a Slice of one axis keeps all of it in order: of the channels (`size`),
    up to their count; of the batch, height or width (size None: they change with the
    image), only up to an end past any size (tf2onnx's 1e9, PyTorch's INT64_MAX); a
    height's end of the crop's own size would crop a larger image."""
    if step != 1 or start != 0:
        return False
    return end >= (10 ** 9 if size is None else size)


@converts("Split")
def _split(imp: Importer, node) -> None:
    """Channels split into consecutive ranges: one slice_channels layer per output."""
    x = imp.tensor(node.input[0])
    attrs = imp.attributes(node)
    if int(attrs.get("axis", 0)) % x.rank != 1:
        raise imp.error(f"Split along axis {attrs.get('axis', 0)}; graphconv splits channels only (axis 1)")
    outputs = list(node.output)
    sizes = imp.optional_constant(node, 1, "split") if imp.opset >= 13 else attrs.get("split")
    c = x.shape[0]
    if sizes is None:
        parts = int(attrs.get("num_outputs", len(outputs)))
        step = -(-c // parts)
        sizes = [min(step, c - i * step) for i in range(parts)]
    sizes = [int(v) for v in np.ravel(sizes)]
    if sum(sizes) != c or len(sizes) != len(outputs):
        raise imp.error(f"Split of {c} channels into {sizes}")
    start = 0
    for size, output in zip(sizes, outputs):
        read = output and (any(output in n.input for n in imp.nodes) or
                           any(out.name == output for out in imp.model.graph.output))
        if read and size == 0:
            raise imp.error(f"Split part {shown(output)} of no channels is read; graphconv's maps have channels")
        if read:
            _slice_channels(imp, node, x, start, start + size, output)
        start += size


def _trims_to_blocks(imp: Importer, node, x: Tensor, axes: list[int], starts, ends, steps) -> bool:
    """A Slice that cuts H and W down to multiples of the block of the SpaceToDepth (or
    SpaceToDepths) alone reading it, as graphconv's export writes a space_to_depth layer
    (ONNX's SpaceToDepth refuses other sides; the layer leaves those rows and columns
    out itself, so that the network slides): no layer of its own, only the value marked
    so `_space_to_depth` takes it. True when it is that Slice."""
    output = node.output[0]
    readers = [n for n in imp.nodes[imp.position + 1:] if output in n.input]
    blocks = {int(imp.attributes(n).get("blocksize", 0)) if n.op_type == "SpaceToDepth" else 0 for n in readers}
    if len(blocks) != 1 or any(output == out.name for out in imp.model.graph.output):
        return False
    b = blocks.pop()
    if (b < 1 or x.layout != NCHW or x.rank != 4 or sorted(axes) != [2, 3] or any(int(v) for v in starts)
            or any(step != 1 for step in steps)):
        return False
    sides = {2: x.shape[1], 3: x.shape[2]}
    if any(min(int(end), sides[axis]) != sides[axis] // b * b for axis, end in zip(axes, ends)):
        return False
    ends_input = node.input[2] if len(node.input) > 2 else ""  # before op set 10: an attribute, a constant
    if not imp.fixed_size and node.input[0] not in _shapes_read_by(imp, ends_input):
        return False  # constant ends where the file takes any size: a fixed crop, not a trim to the blocks
    imp.values[node.output[0]] = x
    imp.trimmed_to_blocks[node.output[0]] = b
    return True


def _slice_channels(imp: Importer, node, x: Tensor, start: int, stop: int, output: str) -> None:
    if (start, stop) == (0, x.shape[0]):
        imp.values[output] = x
    else:
        imp.add_layer(node, "slice_channels", [x], dict(start=start, stop=stop), output=output)


@converts("Unsqueeze")
def _unsqueeze(imp: Importer, node) -> None:
    """A map made (N, 1, C, H, W): one branch of SKNet's stack, a grouped view of one
    group, which a Concat along axis 1 joins to the others; or an fc's (N, K) made the
    (N, K, 1, 1) map graphconv holds anyway, as graphconv's export writes an fc layer.
    The two axes may come one Unsqueeze at a time (y[:, :, None, None] and
    y.unsqueeze(-1).unsqueeze(-1), as a squeeze-and-excitation gate is written): the
    first leaves a SQUEEZED (N, K, 1) view, the second makes the map.
    (On constants, shape arithmetic, it is folded before this is called.)"""
    x = imp.tensor(node.input[0], (NCHW, SQUEEZED, ONE_CHANNEL, GREY_PLANE, ONE_SCORE))
    axes = imp.optional_constant(node, 1, "axes") if imp.opset >= 13 else imp.attributes(node).get("axes")
    axes = [] if axes is None else [int(a) for a in np.ravel(axes)]
    if x.layout == ONE_SCORE:
        if [a % 2 for a in axes] != [1]:
            raise imp.error(f"Unsqueeze of axes {axes} of a one-class head's (N,) scores; graphconv gives them "
                            "their class axis again (axis 1)")
        imp.alias(node, replace(x, layout=NCHW, rank=2))
        return
    if x.layout == GREY_PLANE:
        if [a % 4 for a in axes] not in ([1], [3]):
            raise imp.error(f"Unsqueeze of axes {axes} of a grey (N, H, W) input; graphconv gives it its channel "
                            "axis, 1 (N, 1, H, W) or 3 (N, H, W, 1)")
        imp.alias(node, replace(x, layout=NCHW if axes[0] % 4 == 1 else NHWC, rank=4))  # its channel axis
        return
    if x.layout == ONE_CHANNEL and [a % 4 for a in axes] == [1]:  # x[:, k] made (N, 1, H, W) again
        imp.alias(node, replace(x, layout=NCHW, rank=4))
        return
    if x.rank == 2 and sorted(a % 4 for a in axes) == [2, 3]:  # graphconv's own export of an fc: (N, K, 1, 1)
        imp.alias(node, replace(x, rank=4))
        return
    if x.rank == 2 and [a % 3 for a in axes] == [2]:
        imp.alias(node, replace(x, layout=SQUEEZED, rank=3))
        return
    if x.layout == SQUEEZED and x.shape[1:] == (1, 1) and [a % 4 for a in axes] == [3]:
        imp.alias(node, replace(x, layout=NCHW, rank=4))
        return
    if x.rank != 4 or [a % 5 for a in axes] != [1]:
        raise imp.error(f"Unsqueeze of axes {axes} of a rank-{x.rank} feature map; graphconv follows only the "
                        "(N, 1, C, H, W) view of stacked branches (axis 1)")
    imp.alias(node, replace(x, layout=GROUPED, groups=1, swapped=False))


@converts("Concat")
def _concat(imp: Importer, node) -> None:
    """Channels (axis 1) of maps, or of channels-last views (axis 3: tf2onnx's Keras
    Concatenate, its Transposes not moved away); or grouped views of one group size along
    their group axis (SKNet's stacked branches), which is the same concatenation of channels."""
    axis = imp.attributes(node).get("axis", 1)
    tensors = [imp.tensor(name, (NCHW, GROUPED, NHWC)) for name in node.input]
    if any(t.layout == NHWC for t in tensors):
        _concat_channels_last(imp, node, tensors, axis)
        return
    grouped = tensors[0].layout == GROUPED
    if grouped and any(t.layout != GROUPED or t.swapped or t.shape[0] // t.groups != tensors[0].shape[0] //
                       tensors[0].groups for t in tensors):
        raise imp.error("Concat of grouped views of different group sizes; graphconv stacks branches alike")
    if axis % (5 if grouped else tensors[0].rank) != 1:
        raise imp.error(f"Concat along axis {axis}; graphconv concatenates channels (axis 1)")
    if len(tensors) == 1:
        imp.alias(node, tensors[0])
        return
    joined = imp.add_layer(node, "concat", tensors)
    if grouped:
        imp.alias(node, replace(joined, groups=sum(t.groups for t in tensors)))


def _concat_channels_last(imp: Importer, node, tensors: list[Tensor], axis: int) -> None:
    if any(t.layout != NHWC for t in tensors):
        raise imp.error("Concat of a channels-last (NHWC) map with a channels-first one; graphconv concatenates "
                        "maps seen alike")
    if axis % 4 != 3:
        raise imp.error(f"Concat along axis {axis} of channels-last (NHWC) maps; graphconv concatenates channels "
                        "(axis 3 there)")
    maps = [replace(t, layout=NCHW) for t in tensors]
    imp.alias(node, replace(imp.add_layer(node, "concat", maps) if len(maps) > 1 else maps[0], layout=NHWC))


@converts("Softmax")
def _softmax(imp: Importer, node) -> None:
    x = imp.tensor(node.input[0], (NCHW, RADIX, GROUPED, NWHC, NHWC))
    axis = imp.attributes(node).get("axis", 1 if imp.opset < 13 else -1)
    if x.layout in (NWHC, NHWC):
        _over_swapped_channels(imp, node, x, axis, "softmax")
        return
    if x.layout == GROUPED:  # SKNet: across the stacked branches
        if x.swapped or axis % 5 != 1:
            raise imp.error(f"Softmax over axis {axis} of a grouped view; graphconv takes it across the groups")
        normed = imp.add_layer(node, "softmax", [x], dict(groups=x.groups))
        imp.alias(node, replace(normed, groups=x.groups))
        return
    if x.layout == RADIX:
        if not x.swapped or axis % 4 != 1:
            raise imp.error(f"Softmax over axis {axis} of a split-attention gate; graphconv follows ResNeSt's "
                            "softmax over the radix")
        normed = imp.add_layer(node, "softmax", [x], dict(groups=x.groups))
        imp.alias(node, replace(normed, groups=x.groups, swapped=True))
        return
    _check_over_channels(imp, x, axis)
    imp.add_layer(node, "softmax", [x])


@converts("LogSoftmax")
def _log_softmax(imp: Importer, node) -> None:
    """The log of a softmax over the channels (nn.LogSoftmax(dim=1), which classifiers
    trained with NLLLoss end in): a log_softmax layer."""
    x = imp.tensor(node.input[0], (NCHW, NWHC, NHWC))
    axis = imp.attributes(node).get("axis", 1 if imp.opset < 13 else -1)
    if x.layout in (NWHC, NHWC):
        _over_swapped_channels(imp, node, x, axis, "log_softmax")
        return
    _check_over_channels(imp, x, axis)
    imp.add_layer(node, "log_softmax", [x])


def _over_swapped_channels(imp: Importer, node, x: Tensor, axis: int, op: str) -> None:
    """A Softmax or LogSoftmax over the last axis of an NWHC or NHWC view (a Keras
    classifier's softmax on its channels-last map), which is the channels at each position
    in every op set (before 13, from the last axis on is that axis alone); the result
    keeps the view, for the Transpose back."""
    if axis % 4 != 3:
        seen = "its channel and width axes swapped" if x.layout == NWHC else "its channels last (NHWC)"
        raise imp.error(f"{node.op_type} over axis {axis} of a map with {seen}; graphconv takes it over the "
                        "channels (the last axis there)")
    imp.alias(node, replace(imp.add_layer(node, op, [replace(x, layout=NCHW)]), layout=x.layout))


def _check_over_channels(imp: Importer, x: Tensor, axis: int) -> None:
    """Refuse a Softmax or LogSoftmax node that is not over the channels at each
    position: axis 1 (or -1 of an (N, F) value). Before op set 13 these ops flatten
    their input from `axis` on, so axis 1 of an (N, C, H, W) map is over C * H * W
    values together: over the channels only where the map is 1 x 1."""
    op = imp.onnx_node.op_type
    layer_op = {"Softmax": "softmax", "LogSoftmax": "log_softmax"}[op]
    if axis % x.rank != 1:
        raise imp.error(f"{op} over axis {axis} of a rank-{x.rank} value; graphconv's {layer_op} is "
                        "over channels (axis 1)")
    if imp.opset < 13 and math.prod(x.shape[1:]) != 1:
        raise imp.error(f"{op} over axis {axis} of a {'x'.join(map(str, x.shape))} map in op set {imp.opset}, "
                        "which takes it over the channels, rows and columns together; graphconv's is over the "
                        "channels at each position (re-export with opset_version=13 or later)")


@converts("Constant")
def _constant(imp: Importer, node) -> None:
    onnx = require_onnx()
    attribute = node.attribute[0]
    value = onnx.helper.get_attribute_value(attribute)
    what = f"the value of Constant node {shown(node.name or node.output[0])}"
    imp.values[node.output[0]] = imp.read_tensor(value, what) if attribute.name == "value" else np.asarray(value)


@converts("Shape")
def _shape(imp: Importer, node) -> None:
    """The input's shape is known once the crop is: batch 1 (a Reshape target computed
    from it still means 'keep the batch'), then C, H, W (H, W, C of a channels-last view:
    tf2onnx's Flatten computes its target so; g, C/g, H, W of a channel shuffle's grouped
    view: TorchScript's `.flatten(1, 2)` back computes its target so)."""
    x = imp.tensor(node.input[0], (*ANY_LAYOUT, GREY_PLANE, GROUPED, POSITIONS))
    c, h, w = x.shape
    if x.layout == GROUPED:
        dims = [*[x.groups, c // x.groups][::-1 if x.swapped else 1], h, w]
    elif x.layout == POSITIONS:
        dims = [c]  # after the rows' count, which is H*W for a batch of one
    elif x.rank >= 3:
        dims = [h, w] if x.layout == GREY_PLANE else [c, h, w] if x.layout == NCHW else [h, w, c]
    else:
        dims = [math.prod(x.shape)]
    full = np.array([h * w if x.layout == POSITIONS else 1, *dims], dtype=np.int64)
    attrs = imp.attributes(node)
    start, end = attrs.get("start", 0), attrs.get("end", len(full))
    imp.values[node.output[0]] = full[start:end]


# Ops that only ever compute on constants (shape arithmetic, weight preparation): they are
# evaluated by `_fold_constant` before their converter would be called.
def _constant_only(imp: Importer, node) -> None:
    raise imp.error(f"{node.op_type} on the image's feature map is not supported; graphconv "
                    "evaluates it only on constants (shape arithmetic)")


for _op in ("ConstantOfShape",
            "Range", "Equal", "Where", "Floor", "Ceil", "ReduceProd"):
    CONVERTERS[_op] = _constant_only
