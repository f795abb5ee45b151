"""YAML spec files <-> IR.

Loading keeps every layer's line number (from PyYAML's node marks) on its IR node, so
any later error can say `net.yaml:14: layer 'fc6': ...`. YAML is loaded with the safe
loader and weights with `allow_pickle=False`. Saving writes a spec plus `weights.npz`
that load back to the same graph.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from graphconv.errors import GraphconvError, Location
from graphconv.ir import Graph
from graphconv.ops import get_op
from graphconv.ops.registry import REQUIRED, OpDef
from graphconv.shapes import infer_shapes, init_weights

LINE = "__line__"
TOP_LEVEL_KEYS = {"name", "input", "weights", "layers", "preprocess", "labels", "compiled"}
MODEL_SPEC = "model.yaml"
MODEL_WEIGHTS = "weights.npz"


class _LineLoader(yaml.SafeLoader):
    """The safe loader, plus the 1-based line of every mapping under the key `__line__`."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE] = node.start_mark.line + 1
        return mapping


def load_spec(path: str | os.PathLike, *, init_missing_weights: bool = True) -> Graph:
    """Parse a spec file (or a compiled model directory) into a checked IR graph.

    A spec without `weights` gets deterministic seeded weights, recorded as
    `graph.meta["seeded_weights"] = True` so tools can say so."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_SPEC
    doc = _read_yaml(path)
    graph = _build_graph(doc, path)
    weights_file = doc.get("weights")
    if weights_file is not None:
        if not isinstance(weights_file, str):
            raise GraphconvError("'weights' must be a file name", loc=Location(str(path), doc[LINE]))
        _attach_weights(graph, path.parent / weights_file)
    infer_shapes(graph, check_weights=weights_file is not None)
    if weights_file is None and init_missing_weights:
        init_weights(graph)
        graph.meta["seeded_weights"] = True
    return graph


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise GraphconvError(f"cannot read spec: {err.strerror}", file=str(path)) from None
    try:
        doc = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise GraphconvError(f"invalid YAML: {problem}", loc=Location(str(path), line)) from None
    if not isinstance(doc, dict):
        raise GraphconvError("a spec must be a YAML mapping with 'input' and 'layers'",
                             loc=Location(str(path), 1))
    return doc


def _build_graph(doc: dict, path: Path) -> Graph:
    where = Location(str(path), doc[LINE])
    unknown = set(doc) - TOP_LEVEL_KEYS - {LINE}
    if unknown:
        raise GraphconvError(f"unknown top-level key(s) {sorted(unknown)}; expected "
                             f"{sorted(TOP_LEVEL_KEYS)}", loc=where)
    spec_input = doc.get("input")
    if not isinstance(spec_input, dict):
        raise GraphconvError("'input' must be a mapping {name: ..., shape: [C, H, W]}", loc=where)
    input_loc = Location(str(path), spec_input[LINE])
    shape = spec_input.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise GraphconvError(f"input shape must be [C, H, W] of positive ints, got {shape!r}",
                             loc=input_loc)
    input_name = spec_input.get("name", "data")
    if not isinstance(input_name, str):
        raise GraphconvError("input name must be a string", loc=input_loc)
    meta = {key: _strip_lines(doc[key]) for key in ("preprocess", "compiled") if key in doc}
    if "labels" in doc:
        meta["labels"] = _read_labels(path.parent, doc["labels"], where)
    _check_preprocess(meta.get("preprocess"), shape[0], where)
    graph = Graph(str(doc.get("name", path.stem)), input_name, shape, meta, input_loc)
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise GraphconvError("'layers' must be a non-empty list", loc=where)
    previous = input_name
    for layer in layers:
        previous = _add_layer(graph, layer, previous, path, where)
    graph.output = previous
    return graph


def _add_layer(graph: Graph, layer: Any, previous: str, path: Path, where: Location) -> str:
    if not isinstance(layer, dict):
        raise GraphconvError(f"each layer must be a mapping, got {layer!r}", loc=where)
    loc = Location(str(path), layer[LINE])
    name = layer.get("name")
    if not isinstance(name, str) or not name:
        raise GraphconvError("layer without a 'name'", loc=loc)
    if name in graph:
        raise GraphconvError("duplicate layer name", loc=loc, layer=name)
    op_name = layer.get("op")
    if not isinstance(op_name, str):
        raise GraphconvError("layer without an 'op'", loc=loc, layer=name)
    try:
        opdef = get_op(op_name)
    except GraphconvError as err:
        raise GraphconvError(err.message, loc=loc, layer=name) from None
    inputs = layer.get("inputs", [previous])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise GraphconvError("'inputs' must be a list of layer names", loc=loc, layer=name)
    for source in inputs:
        if source not in graph:
            raise GraphconvError(f"input '{source}' is not the input or an earlier layer",
                                 loc=loc, layer=name)
    low, high = opdef.arity
    if len(inputs) < low or (high is not None and len(inputs) > high):
        expected = str(low) if low == high else f"at least {low}"
        raise GraphconvError(f"{op_name} takes {expected} input(s), got {len(inputs)}", loc=loc, layer=name)
    raw = {k: v for k, v in layer.items() if k not in ("name", "op", "inputs", LINE)}
    try:
        params = normalize_params(opdef, raw)
    except GraphconvError as err:
        raise GraphconvError(err.message, loc=loc, layer=name) from None
    graph.add(name, op_name, inputs, params, loc=loc)
    return name


def normalize_params(opdef: OpDef, raw: dict) -> dict:
    """Check a layer's parameters against its op's schema and fill in the defaults.
    Pairs given as [h, w] with h == w become a single int, so equal specs give equal IR."""
    known = {p.name: p for p in opdef.params}
    unknown = set(raw) - set(known)
    if unknown:
        raise GraphconvError(f"unknown parameter(s) {sorted(unknown)} for op {opdef.name} "
                             f"(it takes: {', '.join(known) or 'none'})")
    params = {}
    for p in opdef.params:
        if p.name in raw:
            params[p.name] = _check_value(p, raw[p.name])
        elif p.default_from is not None:
            params[p.name] = params[p.default_from]
        elif p.default is REQUIRED:
            raise GraphconvError(f"{opdef.name} needs parameter '{p.name}'")
        else:
            params[p.name] = p.default
    return params


def _check_value(p, value):
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if p.kind == "int":
        if not is_int(value) or value < p.minimum:
            raise GraphconvError(f"'{p.name}' must be an integer >= {p.minimum}, got {value!r}")
        return value
    if p.kind == "pair":
        pair = [value, value] if is_int(value) else value
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(is_int(v) and v >= p.minimum for v in pair)):
            raise GraphconvError(f"'{p.name}' must be an integer >= {p.minimum} or a pair "
                                 f"[h, w] of them, got {value!r}")
        return pair[0] if pair[0] == pair[1] else (pair[0], pair[1])
    if p.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GraphconvError(f"'{p.name}' must be a number, got {value!r}")
        return float(value)
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise GraphconvError(f"'{p.name}' must be true or false, got {value!r}")
        return value
    if p.kind == "choice":
        if value not in p.choices:
            raise GraphconvError(f"'{p.name}' must be one of {list(p.choices)}, got {value!r}")
        return value
    raise AssertionError(f"unknown parameter kind {p.kind}")


def _attach_weights(graph: Graph, path: Path) -> None:
    arrays = load_npz(path)
    for key, array in arrays.items():
        layer, _, what = key.rpartition(".")
        if layer not in graph or graph.node(layer).op == "input":
            raise GraphconvError(f"has weights '{key}' but the spec has no layer '{layer}'", file=str(path))
        if not np.issubdtype(array.dtype, np.floating):
            raise GraphconvError(f"'{key}' must be a float array, not {array.dtype}", file=str(path))
        graph.set_weights(layer, **{what: array})


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise GraphconvError("weights file not found", file=str(path)) from None
    except (OSError, ValueError) as err:
        raise GraphconvError(f"cannot read weights: {err}", file=str(path)) from None


def _read_labels(folder: Path, name: Any, where: Location) -> list[str]:
    if not isinstance(name, str):
        raise GraphconvError("'labels' must be a file name", loc=where)
    try:
        return [line.strip() for line in (folder / name).read_text().splitlines() if line.strip()]
    except OSError as err:
        raise GraphconvError(f"cannot read labels file: {err.strerror}", file=str(folder / name)) from None


def _check_preprocess(pre: Any, channels: int, where: Location) -> None:
    if pre is None:
        return
    if not isinstance(pre, dict) or set(pre) - {"mean", "std", "scale"}:
        raise GraphconvError("'preprocess' takes mean, std (one number per channel) and scale",
                             loc=where)
    for key in ("mean", "std"):
        values = pre.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != channels
                                   or not all(isinstance(v, (int, float)) for v in values)):
            raise GraphconvError(f"preprocess {key} must list {channels} numbers", loc=where)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != LINE}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


# ---- writing ------------------------------------------------------------------------------

def spec_text(graph: Graph, weights_file: str | None = MODEL_WEIGHTS,
              labels_file: str = "labels.txt") -> str:
    """The graph as spec YAML: one flow-style line per layer, non-default params only."""
    header: dict[str, Any] = {"name": graph.name,
                              "input": {"name": graph.input.name, "shape": list(graph.input_shape)}}
    if weights_file:
        header["weights"] = weights_file
    for key in ("preprocess", "compiled"):
        if key in graph.meta:
            header[key] = graph.meta[key]
    if "labels" in graph.meta:
        header["labels"] = labels_file
    out = io.StringIO()
    out.write(f"# written by graphconv from {graph.name}; loads back to the same graph\n")
    yaml.safe_dump(_plain(header), out, sort_keys=False, default_flow_style=None)
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
        for p in node.opdef.params:
            value = node.params[p.name]
            if p.default_from is not None and value == node.params[p.default_from]:
                continue
            if p.default is not REQUIRED and p.default_from is None and value == p.default:
                continue
            entry[p.name] = value
        line = yaml.safe_dump(_plain(entry), default_flow_style=True, sort_keys=False, width=1 << 16)
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


def save_model(graph: Graph, directory: str | os.PathLike) -> Path:
    """Write a model folder (model.yaml + weights + labels) that loads back to `graph`;
    all or nothing, never touching files graphconv did not write (graphconv.files)."""
    from graphconv.files import save_model_folder

    spec_text(graph)  # raises what rendering can raise, before the first byte is written
    text = lambda weights_file, labels_file: spec_text(graph, weights_file, labels_file)
    return save_model_folder(directory, text, weight_arrays(graph), graph.meta.get("labels"))
