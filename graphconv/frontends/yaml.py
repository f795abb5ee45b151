"""YAML spec files <-> IR.

Loading keeps every layer's line number (from PyYAML's node marks) on its IR node, so
any later error can say `net.yaml:14: layer 'fc6': ...`. YAML is loaded with the safe
loader and weights with `allow_pickle=False`. Saving writes a spec plus `weights.npz`
that load back to the same graph.

A spec is untrusted input: whatever is wrong with it, loading ends in a one-line
GraphconvError naming the file and line, quickly and in little memory.

* Files: only regular files are read (never a FIFO or /dev/zero), at most
  MAX_SPEC_BYTES of spec text and MAX_LABELS_BYTES of labels, and both must be UTF-8
  text; a binary file given as a spec (an ONNX model, a PNG, weights) is called that.
* Aliases and nesting: the safe loader keeps YAML aliases shared, but anything that
  walks the document (copying `preprocess`, showing a value) expands them, so a
  600-byte "billion laughs" spec would become gigabytes. The composer therefore counts
  every node an alias stands for as if it were expanded, and refuses a document over
  MAX_YAML_NODES (a 1000-layer network is about 10,000; 4 MB of plain layers,
  MAX_SPEC_BYTES, about 500,000: a spec of 12,000 layers was refused) or nested deeper than
  MAX_YAML_DEPTH (a spec needs five levels; an alias counts at its full depth), and an
  alias inside the node it names (a recursive structure). Aliases within those bounds
  stay allowed: they are handy for parameters repeated across layers.
* Values: mapping keys must be strings; names must be short printable strings;
  numbers must be finite, integers at most MAX_INT; `preprocess` and `compiled` are
  checked here rather than when a run uses them; and the sizes a spec implies (each
  layer's output for one crop, the seeded weights) go through the memory budget
  (`graphconv.memory`) before anything is allocated.

Trust model for paths: a spec names its `weights` and `labels` relative to its own
folder and they must stay inside it (no absolute path, no `..` or symlink leading out),
so loading a downloaded spec cannot, say, read /etc/passwd as class names. Files passed
to `load_spec(..., weights=, labels=)` (the CLI's --weights/--labels) come from the user
directly: they are trusted wherever they are, and replace the spec's entries.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from graphconv.arrays import file_kind, open_regular_file
from graphconv.errors import GraphconvError, Location, MissingFile, agreeing, counted, nearest, shown, shown_path
from graphconv.ir import Graph
from graphconv.ops import get_op
from graphconv.ops.registry import OpDef
from graphconv.params import ALIASES, MAX_INT, compact_params, finite_number, is_int, normalize_params
from graphconv.shapes import WEIGHTS_FILE
from graphconv.strides import METHODS as STRIDE_METHODS

if TYPE_CHECKING:
    from graphconv.model import Model

LINE = "__line__"
KEY_LINES = "__key_lines__"
TOP_LEVEL_KEYS = {"name", "input", "weights", "layers", "preprocess", "labels", "compiled", "seeded_weights", "task",
                  "input_name", "output_name", "output_layer"}
WRITTEN_BY_GRAPHCONV = {"compiled", "seeded_weights"}  # what compile writes into a model.yaml, not a user's keys
TASKS = ("classification", "segmentation")  # `task`: see `graphconv.model.Model.segmentation`
INPUT_KEYS = {"name", "shape"}
PREPROCESS_KEYS = {"mean", "std", "scale", "values"}
# the first line `graphconv import` writes: the model it read, and the digest of the rest (edited since, or not)
IMPORTED = re.compile(r"# imported by graphconv from (.*); content ([0-9a-f]{16})\n")
IMPORTED_FROM = "imported_from"  # graph.meta: the file named in an imported spec's first line (an .onnx)
PIXEL_VALUES = ("0..255", "stored")  # preprocess `values`: the default, or as the file stores them
COMPILED_KEYS = {"passes", "earlier_passes", "output_stride", "stride_method", "stitch", "source", "undilated",
                 "plugins"}
UNDILATED_PARAMS = {"stride", "dilation", "padding", "ceil_mode"}  # what the dilate of output-stride changes
STITCH_KEYS = {"factor", "step"}
MODEL_SPEC = "model.yaml"
MODEL_WEIGHTS = "weights.npz"

MAX_SPEC_BYTES = 4 << 20  # PyYAML reads about 1 MB/s of layers: a bound in time as well
MAX_LABELS_BYTES = 16 << 20  # ImageNet-21k's labels are about 1 MB
MAX_YAML_NODES = 500_000
MAX_YAML_DEPTH = 32
MAX_INT_BITS = 1000  # beyond this an int cannot even become a float or be printed in full
MAX_NAME_CHARS = 256
MAX_LABEL_CHARS = 1000
MAX_PATH_CHARS = 4096
MAX_PASSES_CHARS = 4096
MAX_STITCH_FACTOR = 1024

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INVISIBLE = "\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ud800-\udfff"
_UNPRINTABLE = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")  # control, bidi, separators
_UNPRINTABLE_IN_LABEL = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_INVISIBLE}]")  # tabs allowed


class _LineLoader(yaml.SafeLoader):
    """The safe loader, plus the 1-based line of every mapping under the key `__line__`
    (and of each of its keys under `__key_lines__`), and the bounds of the module
    docstring, each refused with a GraphconvError naming the line."""

    def __init__(self, text: str, spec_file: str):
        super().__init__(text)
        self.spec_file = spec_file
        self._nodes = 0  # nodes composed so far, an alias counting as its whole subtree
        self._depth = 0
        self._extent: dict[int, tuple[int, int]] = {}  # id(finished node) -> (nodes, height)
        self._child_heights: list[int] = []
        self._keys_checked: set[int] = set()  # id() of mappings whose keys were checked for repeats

    def _refuse(self, message: str, mark) -> None:
        raise GraphconvError(message, loc=Location(self.spec_file, mark.line + 1))

    # ---- composing: counting nodes and depth, aliases expanded --------------------------
    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(parent, index, event)
        self._count(1, event.start_mark)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            self._refuse(f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep "
                         "(a spec needs about five)", event.start_mark)
        start = self._nodes
        self._child_heights.append(0)
        node = super().compose_node(parent, index)
        height = self._child_heights.pop() + 1
        self._depth -= 1
        self._extent[id(node)] = (self._nodes - start + 1, height)
        self._note_height(height)
        return node

    def _compose_alias(self, parent, index, event):
        node = super().compose_node(parent, index)
        extent = self._extent.get(id(node))
        if extent is None:
            self._refuse(f"the alias *{shown(event.anchor, 40)[1:-1]} is inside the node it names "
                         "(a recursive structure)", event.start_mark)
        nodes, height = extent
        self._count(nodes, event.start_mark)
        if self._depth + height > MAX_YAML_DEPTH:
            self._refuse(f"the alias *{shown(event.anchor, 40)[1:-1]} nests the YAML more than "
                         f"{MAX_YAML_DEPTH} levels deep", event.start_mark)
        self._note_height(height)
        return node

    def _count(self, nodes: int, mark) -> None:
        self._nodes += nodes
        if self._nodes > MAX_YAML_NODES:
            self._refuse(f"the YAML has more than {MAX_YAML_NODES} values, each alias counted as all "
                         "it stands for; a spec has far fewer (an alias bomb?)", mark)

    def _note_height(self, height: int) -> None:
        if self._child_heights:
            self._child_heights[-1] = max(self._child_heights[-1], height)

    # ---- constructing: string keys, line numbers, bounded ints ------------------------------
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self._refuse_repeated_keys(node)
            self.flatten_mapping(node)
            for key_node, _ in node.value:
                if key_node.tag != _STR_TAG:
                    self._refuse_key(key_node)
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE] = node.start_mark.line + 1
        mapping[KEY_LINES] = {key_node.value: key_node.start_mark.line + 1 for key_node, _ in node.value}
        return mapping

    def _refuse_repeated_keys(self, node) -> None:
        """Refuse a key written twice in one mapping: YAML would silently keep the last,
        so `{kernel_size: 3, kernel_size: 5}` would build a 5x5 conv from a line that
        also says 3. Checked before `flatten_mapping`, which legitimately lets a key
        written out override one brought in by a merge (`<<: *defaults`); the mappings
        merged in are checked the same way (once each: flattening rewrites them)."""
        if id(node) in self._keys_checked:
            return
        self._keys_checked.add(id(node))
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in merged:
                    if isinstance(source, yaml.MappingNode):
                        self._refuse_repeated_keys(source)
                continue
            if key_node.tag != _STR_TAG:
                continue  # refused as a key that is not a string
            key = key_node.value
            if key in first_line:
                self._refuse(f"the key {shown(key)} is given twice in one mapping (first on line "
                             f"{first_line[key]}); YAML would silently keep only the last: remove one",
                             key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1

    def _refuse_key(self, key_node) -> None:
        if isinstance(key_node, yaml.ScalarNode):
            key = self.construct_object(key_node)
            hint = " (YAML reads yes/no/on/off as booleans: quote it)" if isinstance(key, bool) else \
                   " (quote it to make it a name)"
            self._refuse(f"mapping keys must be strings, got {shown(key)}{hint}", key_node.start_mark)
        self._refuse("mapping keys must be strings, got a "
                     f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}",
                     key_node.start_mark)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as err:  # e.g. a date 2001-02-30, a 5000-digit int
            value = shown(node.value, 40) if isinstance(node, yaml.ScalarNode) else "a value"
            self._refuse(f"cannot read {value}: {shown(str(err), 120)[1:-1]}", node.start_mark)

    def construct_lined_sequence(self, node):
        """A list that knows each item's line (`LinedList`), for the errors about an
        item with no line of its own: `- conv` where a layer's mapping should be was
        said to be on the spec's first line."""
        items = LinedList()
        items.lines = [child.start_mark.line + 1 for child in node.value]
        yield items
        items.extend(self.construct_sequence(node))

    def construct_yaml_int(self, node):
        value = super().construct_yaml_int(node)
        if value.bit_length() > MAX_INT_BITS:
            self._refuse(f"an integer of {value.bit_length()} bits; no number in a spec is that large",
                         node.start_mark)
        return value


class LinedList(list):
    """A YAML sequence, with `lines`: the 1-based line each item starts on."""

    lines: list[int]


_LineLoader.add_constructor("tag:yaml.org,2002:int", _LineLoader.construct_yaml_int)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_lined_sequence)
# YAML 1.1 (PyYAML) reads a float only with a dot and a signed exponent: 1e-5, as PyTorch
# prints a batchnorm's eps, and 1.0e38 were text, refused as "not a finite number". As
# YAML 1.2 does, a number with an exponent is a float, dot or not, sign or not; and the
# writer knows it too, so it quotes a name such as '1e5' that would read back as one.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _SpecDumper(yaml.SafeDumper):
    """The safe dumper, resolving plain scalars as `_LineLoader` does."""


for _resolving in (_LineLoader, _SpecDumper):
    _resolving.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


# ---- loading --------------------------------------------------------------------------------

def read_spec(path: Path, *, weights: str | os.PathLike | None = None,
              labels: str | os.PathLike | None = None) -> tuple[Graph, Path | None]:
    """Parse a spec file (or a compiled model folder) into an IR graph without weights,
    and the weights file to attach (`weights` when given, else the spec's own, which
    must lie beside it; None when there is none). `labels` replaces the spec's labels.
    `graphconv.frontends.finalize` does the rest."""
    path = _spec_file(path)
    doc, text = _read_yaml(path)
    graph = _build_graph(doc, path, labels)
    header = IMPORTED.match(text)
    if header:
        graph.meta[IMPORTED_FROM] = header.group(1)
    _check_stitch_matches(graph, doc, path)
    _stitch_as_layers(graph)
    weights_file = Path(weights) if weights is not None else _spec_relative_file(doc, "weights", path)
    if weights_file is not None:
        graph.meta[WEIGHTS_FILE] = str(weights_file)  # for messages about the weights (shapes.py)
    return graph, weights_file


def imported_spec_text(model_name: str, body: str) -> str:
    """The spec `graphconv import` writes of the model file `model_name`: a first line
    naming it, with the digest of the rest (`imported_unedited`), then `body`."""
    return f"# imported by graphconv from {model_name}; content {_digest(body)}\n{body}"


def imported_unedited(text: str) -> bool:
    """Whether a spec's text is one `graphconv import` wrote and nobody edited since."""
    header = IMPORTED.match(text)
    return bool(header) and header.group(2) == _digest(text[header.end():])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _spec_file(path: Path) -> Path:
    """The spec file itself: `path`, or the model.yaml of a model folder."""
    try:
        is_folder = stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return path  # reading it will say what is wrong
    if not is_folder:
        return path
    spec = path / MODEL_SPEC
    if not os.path.exists(spec):
        raise GraphconvError(f"a folder without a {MODEL_SPEC}: give a spec file, or a model folder "
                             "written by graphconv compile", file=str(path))
    return spec


def _read_yaml(path: Path) -> tuple[dict, str]:
    """The spec's mapping, and its text."""
    text = _read_text(path, "spec", MAX_SPEC_BYTES, "not a YAML text file",
                      not_found="cannot read spec: No such file or directory")
    loader = None
    try:
        loader = _LineLoader(text, str(path))
        doc = loader.get_single_data()
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        raise GraphconvError(f"not a YAML text file: it has the control character #x{err.character:04x} "
                             "(a binary file?)", loc=Location(str(path), line)) from None
    except yaml.YAMLError as err:
        raise GraphconvError(f"invalid YAML: {_yaml_problem(err)}",
                             loc=Location(str(path), _yaml_line(err))) from None
    finally:
        if loader is not None:
            loader.dispose()
    if doc is None and not text.strip():
        raise GraphconvError("the file is empty: a spec is a YAML mapping with 'input' and 'layers'",
                             loc=Location(str(path), 1))
    if not isinstance(doc, dict):
        raise GraphconvError("a spec must be a YAML mapping with 'input' and 'layers'",
                             loc=Location(str(path), 1))
    return doc, text


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    text = f"{context}: {problem}" if context else problem
    hint = " (YAML indents with spaces, not tabs)" if "'\\t'" in text else ""
    return text[:200] + hint  # its control characters are escaped as the error prints (errors.printable)


def _yaml_line(err: yaml.YAMLError) -> int | None:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def _read_text(path: Path, what: str, limit: int, not_text: str, not_found: str | None = None) -> str:
    """A small UTF-8 text file, read no further than `limit` bytes; `not_text` starts the
    message for a binary file, which names what it looks like."""
    with open_regular_file(path, what, not_found) as fp:
        data = fp.read(limit + 1)
    if len(data) > limit:
        raise GraphconvError(f"the {what} is over {limit >> 20} MB, more than any {what} needs",
                             file=str(path))
    kind = file_kind(data[:16]) or _onnx_kind(path, data[:3])
    if kind is None:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            pass
    hint = f"{kind}?" if kind else "a binary file? it is not UTF-8"
    raise GraphconvError(f"{not_text} ({hint})", file=str(path))


def _onnx_kind(path: Path, head: bytes) -> str | None:
    from graphconv.frontends.onnx import looks_like_onnx  # no onnx package needed for the check
    return "an ONNX model? graphconv reads network specs written as YAML" if looks_like_onnx(path, head) else None


def _loc(path: Path, mapping: dict, key: str | None = None) -> Location:
    """Where `mapping` (or its `key`) is in the spec file."""
    line = mapping.get(KEY_LINES, {}).get(key) if key is not None else None
    return Location(str(path), line or mapping.get(LINE))


def _user_keys(mapping: dict) -> list[str]:
    return [key for key in mapping if key not in (LINE, KEY_LINES)]


def _refuse_unknown_keys(mapping: dict, allowed: set[str], what: str, loc: Location) -> None:
    """`what` names the keys, with {} where 'key' or 'keys' goes ("top-level {}")."""
    unknown = sorted(set(_user_keys(mapping)) - allowed)
    if unknown:
        offered = sorted(allowed - WRITTEN_BY_GRAPHCONV) if allowed is TOP_LEVEL_KEYS else sorted(allowed)
        close = nearest(str(unknown[0]), offered, n=1)
        guess = f"did you mean {shown(close[0])}? " if close else ""
        raise GraphconvError(f"unknown {what.format(agreeing(len(unknown), 'key', 'keys'))} {shown(unknown)}; "
                             f"{guess}expected {offered}", loc=loc)


def _build_graph(doc: dict, path: Path, labels: str | os.PathLike | None = None) -> Graph:
    where = _loc(path, doc)
    _refuse_unknown_keys(doc, TOP_LEVEL_KEYS, "top-level {}", where)
    input_name, shape, input_loc = _spec_input(doc, path)
    meta: dict[str, Any] = {}
    if "preprocess" in doc:
        meta["preprocess"] = checked_preprocess(doc["preprocess"], shape[0], path, _loc(path, doc, "preprocess"))
    if "compiled" in doc:
        meta["compiled"] = _checked_compiled(doc["compiled"], path, _loc(path, doc, "compiled"))
    if "task" in doc:
        if doc["task"] not in TASKS:
            raise GraphconvError(f"'task' must be one of {list(TASKS)}, got {shown(doc['task'])}",
                                 loc=_loc(path, doc, "task"))
        if doc["task"] == "segmentation":
            meta["task"] = "segmentation"
    if "seeded_weights" in doc:  # a compiled model remembers that its weights were seeded
        if not isinstance(doc["seeded_weights"], bool):
            raise GraphconvError("'seeded_weights' must be true or false", loc=_loc(path, doc, "seeded_weights"))
        meta["seeded_weights"] = doc["seeded_weights"]
    for key in ("input_name", "output_name", "output_layer"):  # an ONNX file's names, which export gives again
        if key in doc:
            if not isinstance(doc[key], str) or not doc[key]:
                raise GraphconvError(f"{shown(key)} must be a name, got {shown(doc[key])}", loc=_loc(path, doc, key))
            meta[key] = doc[key]
    labels_file = Path(labels) if labels is not None else _spec_relative_file(doc, "labels", path)
    if labels_file is not None:
        meta["labels"] = read_labels(labels_file)
        meta[LABELS_FILE] = str(labels_file)  # for messages about the labels (`labels_mismatch`)
        meta["read_from"] = [str(labels_file.resolve())]  # what no command may write over
    graph = Graph(_graph_name(doc, path), input_name, shape, meta, input_loc)
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise GraphconvError("'layers' must be a non-empty list", loc=_loc(path, doc, "layers"))
    previous = input_name
    lines = getattr(layers, "lines", None)
    for index, layer in enumerate(layers):
        previous = _add_layer(graph, layer, previous, path, Location(path, lines[index]) if lines else where)
    graph.output = previous
    return graph


def _spec_input(doc: dict, path: Path) -> tuple[str, list[int], Location]:
    spec_input = doc.get("input")
    if not isinstance(spec_input, dict):
        raise GraphconvError("'input' must be a mapping {name: ..., shape: [C, H, W]}",
                             loc=_loc(path, doc, "input"))
    loc = _loc(path, spec_input)
    _refuse_unknown_keys(spec_input, INPUT_KEYS, "{} in 'input'", loc)
    shape = spec_input.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(is_int(v) and 0 < v <= MAX_INT for v in shape)):
        raise GraphconvError(f"input shape must be [C, H, W] of positive ints, got {shown(shape)}", loc=loc)
    name = _checked_name(spec_input.get("name", "data"), "the input name", loc)
    return name, list(shape), loc


def _graph_name(doc: dict, path: Path) -> str:
    if "name" not in doc:
        return path.stem
    name = doc["name"]
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)
    return _checked_name(name, "the network's name", _loc(path, doc, "name"))


def _checked_name(value: Any, what: str, loc: Location, layer: str | None = None) -> str:
    """`value` if it is a name that prints on one line: a short string without control
    or invisible characters (a newline in a name could fake a line of output)."""
    if not isinstance(value, str):
        raise GraphconvError(f"{what} must be a string, got {shown(value)}", loc=loc, layer=layer)
    if not value:
        raise GraphconvError(f"{what} is empty", loc=loc, layer=layer)
    if len(value) > MAX_NAME_CHARS:
        raise GraphconvError(f"{what} is {len(value)} characters long, over {MAX_NAME_CHARS}: "
                             f"{shown(value, 40)}", loc=loc, layer=layer)
    if _UNPRINTABLE.search(value):
        raise GraphconvError(f"{what} {shown(value)} has a control or invisible character",
                             loc=loc, layer=layer)
    return value


def _add_layer(graph: Graph, layer: Any, previous: str, path: Path, where: Location) -> str:
    """Add one layer of the spec (`where`: its line, for a layer that is no mapping)."""
    if not isinstance(layer, dict):
        raise GraphconvError(f"each layer must be a mapping, got {shown(layer)}", loc=where)
    loc = _loc(path, layer)
    if "name" not in layer:
        raise GraphconvError("layer without a 'name'", loc=loc)
    name = _checked_name(layer["name"], "the layer name", loc)
    if name in graph:
        clash = "the input's name" if name == graph.input.name else "a layer name used before"
        raise GraphconvError(f"duplicate layer name: {shown(name)} is {clash}", loc=loc, layer=name)
    if "op" not in layer:
        raise GraphconvError("layer without an 'op'", loc=loc, layer=name)
    op_name = _checked_name(layer["op"], "'op'", loc, layer=name)
    try:
        opdef = get_op(op_name)
    except GraphconvError as err:
        raise GraphconvError(_plugins_needed(graph, op_name) or err.message, loc=loc, layer=name) from None
    inputs = _layer_inputs(graph, layer, previous, opdef, loc, name)
    raw = {key: layer[key] for key in _user_keys(layer) if key not in ("name", "op", "inputs")}
    lines = _param_lines(opdef, layer)
    try:
        params = normalize_params(opdef, raw)
    except GraphconvError as err:
        line = lines.get(err.param) or layer.get(KEY_LINES, {}).get(err.param)
        raise GraphconvError(err.message, loc=Location(loc.file, line) if line else loc, layer=name) from None
    graph.add(name, op_name, inputs, params, loc=loc, param_lines=lines)
    return name


def _param_lines(opdef: OpDef, layer: dict) -> dict[str, int]:
    """The line of each parameter the layer gives, under graphconv's name (a Caffe alias's
    line under the name it stands for): errors about one parameter point at its line, not
    at the layer's first (a block-style layer spans many)."""
    key_lines = layer.get(KEY_LINES, {})
    names = {p.name for p in opdef.params}
    lines = {key: line for key, line in key_lines.items() if key in names}
    for alias, targets in ALIASES.items():
        target = next((t for t in targets if t in names), None)
        if alias in key_lines and target is not None and alias not in names:
            lines.setdefault(target, key_lines[alias])
    return lines


def _layer_inputs(graph: Graph, layer: dict, previous: str, opdef: OpDef, loc: Location,
                  name: str) -> list[str]:
    """The layer's checked `inputs` (default: the layer before it). Each must be a
    different earlier layer: the IR has one edge per pair of nodes, so `add: [a, a]`
    could not be represented."""
    inputs = layer.get("inputs", [previous])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list):
        raise GraphconvError(f"'inputs' must be a list of layer names, got {shown(inputs)}",
                             loc=loc, layer=name)
    for source in inputs:
        _checked_name(source, "each of 'inputs'", loc, layer=name)
        if source not in graph:
            raise GraphconvError(f"input {shown(source)} is not the input or an earlier layer",
                                 loc=loc, layer=name)
    if len(set(inputs)) != len(inputs):
        twice = next(source for source in inputs if inputs.count(source) > 1)
        raise GraphconvError(f"'inputs' lists {shown(twice)} twice; each input must be a different layer (to use "
                             "one value twice, as in x + x, read it once through an identity layer: "
                             "{name: x_again, op: identity, inputs: [x]})",
                             loc=loc, layer=name)
    problem = opdef.arity_problem(len(inputs))
    if problem:
        raise GraphconvError(problem, loc=loc, layer=name)
    return inputs


# ---- preprocess, compiled, labels, weights ---------------------------------------------------

def checked_preprocess(pre: Any, channels: int, path: Path, loc: Location) -> dict:
    """`preprocess` with every number finite and every std non-zero, checked now rather
    than when a run divides by it."""
    if not isinstance(pre, dict):
        raise GraphconvError("'preprocess' must be a mapping {scale: s, mean: [...], std: [...]}", loc=loc)
    loc = _loc(path, pre)
    unknown = sorted(set(_user_keys(pre)) - PREPROCESS_KEYS)
    if unknown:
        raise GraphconvError("'preprocess' takes mean, std (one number, or one per channel), scale and values, "
                             f"not {shown(unknown)}", loc=loc)
    checked = {}
    for key in _user_keys(pre):
        value = pre[key]
        if key == "values":
            if value not in PIXEL_VALUES:
                raise GraphconvError(f"preprocess values must be {' or '.join(PIXEL_VALUES)} (pixels on 0..255, "
                                     f"16-bit ones divided by 257; or the numbers the file stores), got "
                                     f"{shown(value)}", loc=_loc(path, pre, key))
        elif key == "scale":
            if finite_number(value) is None:
                raise GraphconvError(f"preprocess scale must be a finite number, got {shown(value)}",
                                     loc=_loc(path, pre, key))
        else:
            value = _per_channel(key, value, channels, _loc(path, pre, key))
        checked[key] = list(value) if isinstance(value, list) else value
    return checked


def _per_channel(key: str, value: Any, channels: int, loc: Location) -> list:
    """A preprocess mean or std as one number per channel: one number is every channel's
    (as import's `--mean 0.5`)."""
    if finite_number(value) is not None:
        value = [value] * channels
    if not isinstance(value, list) or len(value) != channels or any(finite_number(v) is None for v in value):
        raise GraphconvError(f"preprocess {key} must be one finite number or list "
                             f"{counted(channels, 'finite number')}, one per channel, got {shown(value)}", loc=loc)
    if key == "std" and any(v == 0 for v in value):
        raise GraphconvError(f"preprocess std must not be 0 (it divides), got {shown(value)}", loc=loc)
    return value


def _checked_compiled(block: Any, path: Path, loc: Location) -> dict:
    """The plan a compiled model folder records (see passes/output_stride.py): checked at
    load, since a bad value would otherwise fail deep inside a run."""
    if not isinstance(block, dict):
        raise GraphconvError(f"'compiled' must be a mapping of {sorted(COMPILED_KEYS)}, got {shown(block)}",
                             loc=loc)
    _refuse_unknown_keys(block, COMPILED_KEYS, "{} in 'compiled'", _loc(path, block))
    checked: dict[str, Any] = {}
    for key in _user_keys(block):
        value, where = block[key], _loc(path, block, key)
        if key == "passes":
            checked[key] = _checked_passes(value, where)
        elif key == "earlier_passes":  # a compiled model compiled again: what made the model it was compiled from
            if not isinstance(value, list):
                raise GraphconvError(f"compiled earlier_passes must be a list of pipelines, got {shown(value)}",
                                     loc=where)
            checked[key] = [_checked_passes(pipeline, where) for pipeline in value]
        elif key == "output_stride":
            checked[key] = _checked_int(value, "compiled output_stride", 1, MAX_INT, where)
        elif key == "stride_method":
            if not isinstance(value, str) or value not in STRIDE_METHODS:
                raise GraphconvError(f"compiled stride_method must be one of {list(STRIDE_METHODS)}, "
                                     f"got {shown(value)}", loc=where)
            checked[key] = value
        elif key == "source":
            if not isinstance(value, str) or not value:
                raise GraphconvError(f"compiled source must be the name of the file compiled, got {shown(value)}",
                                     loc=where)
            checked[key] = value
        elif key == "undilated":
            checked[key] = _checked_undilated(value, path, where)
        elif key == "plugins":  # the --plugins whose ops the model uses (`pass_manager.plugins_of_ops`)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise GraphconvError(f"compiled plugins must be a list of the plugins it was compiled with, got "
                                     f"{shown(value)}", loc=where)
            checked[key] = value
        else:
            checked[key] = _checked_stitch(value, path, where)
    return checked


def _plugins_needed(graph: Graph, op_name: str) -> str | None:
    """For an unknown op of a model compiled with plugins that register ops: which to load."""
    plugins = graph.meta.get("compiled", {}).get("plugins")
    if not plugins:
        return None
    given = " ".join(f"--plugin {shlex.quote(plugin)}" for plugin in plugins)
    return (f"unknown op {shown(op_name)}: this model was compiled with ops a plugin registers, so every command "
            f"that reads it needs the same {given}")


def _checked_undilated(block: Any, path: Path, loc: Location) -> dict:
    """What output-stride's dilate changed, {layer: {before: {param: value}, after: {...}}}
    (`strides.at_its_own_stride` puts `before` back for the crop loop)."""
    form = "{layer: {before: {stride: [sy, sx], ...}, after: {...}}}"
    if not isinstance(block, dict):
        raise GraphconvError(f"compiled undilated must be {form}, got {shown(block)}", loc=loc)
    checked = {}
    for name in _user_keys(block):
        change, where = block[name], _loc(path, block, name)
        if not isinstance(change, dict) or set(_user_keys(change)) != {"before", "after"}:
            raise GraphconvError(f"compiled undilated {shown(name)} must be {{before: ..., after: ...}}, "
                                 f"got {shown(change)}", loc=where)
        sides = {side: change[side] for side in ("before", "after")}
        if any(not isinstance(params, dict) or not set(_user_keys(params)) <= UNDILATED_PARAMS
               or not all(_undilated_value(key, params[key]) for key in _user_keys(params))
               for params in sides.values()) or set(_user_keys(sides["before"])) != set(_user_keys(sides["after"])):
            raise GraphconvError(f"compiled undilated {shown(name)}: before and after must give the same "
                                 f"params of {sorted(UNDILATED_PARAMS)} (stride and dilation [y, x] from 1, "
                                 f"padding [y, x] or [top, left, bottom, right] from 0, ceil_mode true or false), "
                                 f"got {shown(change)}", loc=where)
        checked[str(name)] = {side: {key: params[key] for key in _user_keys(params)} for side, params in sides.items()}
    return checked


def _undilated_value(param: str, value: Any) -> bool:
    """Whether `value` is one `dilate` records for `param` (as the layer's own param takes it)."""
    if param == "ceil_mode":
        return isinstance(value, bool)
    lowest = 0 if param == "padding" else 1
    lengths = (2, 4) if param == "padding" else (2,)
    return (isinstance(value, list) and len(value) in lengths
            and all(is_int(v) and lowest <= v <= MAX_INT for v in value))


def _checked_passes(value: Any, loc: Location) -> str:
    if not isinstance(value, str) or len(value) > MAX_PASSES_CHARS or _UNPRINTABLE.search(value):
        raise GraphconvError(f"compiled passes must be the pipeline as one line of text (at most "
                             f"{MAX_PASSES_CHARS} characters), got {shown(value)}", loc=loc)
    return value


def _checked_int(value: Any, what: str, low: int, high: int, loc: Location) -> int:
    if not is_int(value) or not low <= value <= high:
        raise GraphconvError(f"{what} must be an integer from {low} to {high}, got {shown(value)}", loc=loc)
    return value


def _checked_stitch(stitch: Any, path: Path, loc: Location) -> dict:
    """A shift-and-stitch plan: {factor: [fy, fx], step: s}, fy * fx shifted copies of
    the image s pixels apart, as models compiled before it became layers recorded it."""
    if not isinstance(stitch, dict) or set(_user_keys(stitch)) != STITCH_KEYS:
        raise GraphconvError(f"compiled stitch must be {{factor: [fy, fx], step: s}}, got {shown(stitch)}",
                             loc=loc)
    factor = stitch["factor"]
    if not isinstance(factor, list) or len(factor) != 2:
        raise GraphconvError(f"compiled stitch factor must be [fy, fx], got {shown(factor)}",
                             loc=_loc(path, stitch, "factor"))
    checked = {}
    for key in _user_keys(stitch):
        if key == "factor":
            checked[key] = [_checked_int(v, "each stitch factor", 1, MAX_STITCH_FACTOR,
                                         _loc(path, stitch, key)) for v in factor]
        else:
            checked[key] = _checked_int(stitch[key], "the stitch step", 1, MAX_INT, _loc(path, stitch, key))
    return checked


def _stitch_as_layers(graph: Graph) -> None:
    """A model compiled before shift-and-stitch became layers has a `stitch` plan in its
    `compiled` block: it becomes the two layers the output-stride pass now inserts."""
    stitch = graph.meta.get("compiled", {}).pop("stitch", None)
    if stitch is not None:
        from graphconv.strides import insert_stitch  # strides needs the IR and shapes loaded first

        insert_stitch(graph, tuple(stitch["factor"]), stitch["step"])


def _check_stitch_matches(graph: Graph, doc: dict, path: Path) -> None:
    """A stitch plan only makes sense as the network's total stride split into `factor`
    steps of `step` pixels; any other plan would interleave maps that do not line up."""
    stitch = graph.meta.get("compiled", {}).get("stitch")
    if stitch is None:
        return
    from graphconv.receptive import total_stride  # receptive imports shapes, which needs the IR

    total = total_stride(graph)
    planned = tuple(f * stitch["step"] for f in stitch["factor"])
    if planned != tuple(total):
        raise GraphconvError(f"compiled stitch factor {stitch['factor']} x step {stitch['step']} does not "
                             f"make the network's total stride {total[0]}x{total[1]}",
                             loc=_loc(path, doc, "compiled"))


def _spec_relative_file(doc: dict, key: str, path: Path) -> Path | None:
    """The file the spec's `key` names, resolved, which must lie inside the spec's
    folder (the trust model of the module docstring); None when the spec names none."""
    name = doc.get(key)
    if name is None:
        return None
    loc = _loc(path, doc, key)
    elsewhere = f"a file elsewhere can be given explicitly (--{key} FILE)"
    if (not isinstance(name, str) or not name or len(name) > MAX_PATH_CHARS
            or _UNPRINTABLE.search(name)):
        raise GraphconvError(f"'{key}' must be a file name, got {shown(name)}", loc=loc)
    if Path(name).is_absolute():
        raise GraphconvError(f"'{key}' must be a path relative to the spec's folder, not the absolute "
                             f"path {shown(name)}; {elsewhere}", loc=loc)
    folder = path.parent.resolve()
    try:
        target = (folder / name).resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop
        raise GraphconvError(f"'{key}': cannot resolve {shown(name)} ({err})", loc=loc) from None
    if not target.is_relative_to(folder):
        raise GraphconvError(f"'{key}' leads outside the spec's folder ({shown(name)}); a spec may only "
                             f"name files beside it; {elsewhere}", loc=loc)
    if not target.exists():
        raise MissingFile(f"{key} file {shown(name)} not found: a spec's files are read from its own folder "
                          f"({shown_path(str(folder))}); {elsewhere}", file=str(target), loc=loc)
    return target


def read_labels(path: Path) -> list[str]:
    """One class name per line, each printable and at most MAX_LABEL_CHARS. Blank lines
    after the last name are ignored; a blank line before it is refused, naming it: the
    names after it would shift by one channel (a 5-line file with one blank line was read
    as 4 labels, silently)."""
    text = _read_text(path, "labels file", MAX_LABELS_BYTES, "the labels file is not UTF-8 text")
    # lines end at \n, \r\n or \r, as editors show them: str.splitlines also splits at form
    # feeds and U+2028, which would add names the file does not show
    lines = re.split(r"\r\n|\r|\n", text)
    while lines and not lines[-1].strip():
        lines.pop()
    labels = []
    for number, line in enumerate(lines, 1):
        label = line.strip()
        if not label:
            raise GraphconvError(f"line {number} is blank: a labels file names one class per line, in the order "
                                 f"of the output's channels, so a blank line would give every class after it the "
                                 f"next one's name; remove it, or name that class", loc=Location(str(path), number))
        problem = label_problem(label)
        if problem:
            raise GraphconvError(f"{problem} (a binary file?)", loc=Location(str(path), number))
        labels.append(label)
    return labels


def label_problem(label: str) -> str | None:
    """What is wrong with a class name, wherever it comes from (a labels file, a spec, an
    ONNX file's metadata), or None: names are printed to the terminal and written one a
    line, so each is a non-blank line of at most MAX_LABEL_CHARS printable characters."""
    if not label.strip():
        return "a label must not be blank"
    if len(label) > MAX_LABEL_CHARS or _UNPRINTABLE_IN_LABEL.search(label):
        return f"a label must be a line of at most {MAX_LABEL_CHARS} printable characters, got {shown(label)}"
    return None


# ---- writing ------------------------------------------------------------------------------

LABELS_FILE = "labels_file"  # graph.meta key: the file the labels came from, for messages


def labels_mismatch(graph: Graph, classes: int) -> GraphconvError | None:
    """The error for labels that do not name the output's `classes` channels, naming the
    labels file and how many names it has (None when they match): the count was reported
    against the spec, which holds no labels."""
    labels = graph.meta.get("labels")
    if labels is None or len(labels) == classes:
        return None
    source = graph.meta.get(LABELS_FILE)
    where = f"the labels file has {len(labels)} names (one per line)" if source else f"has {len(labels)} labels"
    return GraphconvError(f"{where}, but the model has {classes} classes (output {graph.output.name!r}): give "
                          "one class name per line", file=source)


def spec_text(graph: Graph, weights_file: str | None = MODEL_WEIGHTS,
              labels_file: str = "labels.txt") -> str:
    """The graph as spec YAML: one flow-style line per layer, non-default params only."""
    header: dict[str, Any] = {"name": graph.name,
                              "input": {"name": graph.input.name, "shape": list(graph.input_shape)}}
    if weights_file:
        header["weights"] = weights_file
    for key in ("task", "preprocess", "compiled", "input_name", "output_name", "output_layer"):
        if key in graph.meta:
            header[key] = graph.meta[key]
    if "labels" in graph.meta:
        header["labels"] = labels_file
    if graph.meta.get("seeded_weights"):
        header["seeded_weights"] = True
    out = io.StringIO()
    out.write(f"# written by graphconv from {graph.name}; loads back to the same graph\n")
    yaml.dump(_plain(header), out, Dumper=_SpecDumper, sort_keys=False, default_flow_style=None)
    out.write("layers:\n")
    previous = graph.input.name
    layers = graph.layers()
    if layers[-1].name != graph.output.name:
        raise GraphconvError(f"cannot write the spec: the output {graph.output.name!r} is not the "
                             "last layer; run dead-node-elimination first")
    for node in layers:
        entry: dict[str, Any] = {"name": node.name, "op": node.op}
        inputs = [i.name for i in node.inputs]
        if inputs != [previous]:
            entry["inputs"] = inputs
        entry.update(compact_params(node.opdef, node.params))
        line = yaml.dump(_plain(entry), Dumper=_SpecDumper, default_flow_style=True, sort_keys=False, width=1 << 16)
        out.write(f"  - {line.strip()}\n")
        previous = node.name
    return out.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def weight_arrays(graph: Graph) -> dict[str, np.ndarray]:
    return {f"{node.name}.{key}": array for node in graph.layers() for key, array in node.weights.items()}


def save_model(graph: Graph | Model, directory: str | os.PathLike) -> Path:
    """Write a model folder (model.yaml + weights + labels) that loads back to `graph` (a
    Graph, or a Model: its graph, as `Model.save`); all or nothing, never touching files
    graphconv did not write (graphconv.files). What the graph's meta says (preprocess,
    task, labels) is checked first, as loading will check it: a block that `load` would
    refuse is refused here, before anything is written."""
    from graphconv.files import save_model_folder
    from graphconv.model import Model, check_meta

    if isinstance(graph, Model):  # compile_model, run_passes and verify take either
        graph = graph.graph
    if not isinstance(graph, Graph):
        raise GraphconvError(f"save_model saves a Model or a Graph, not {type(graph).__name__}")
    check_meta(graph, "cannot save the model: ")
    spec_text(graph)  # raises what rendering can raise, before the first byte is written
    text = lambda weights_file, labels_file: spec_text(graph, weights_file, labels_file)
    return save_model_folder(directory, text, weight_arrays(graph), graph.meta.get("labels"))
