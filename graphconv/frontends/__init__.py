"""Front ends: where networks come from, behind one seam.

graphconv's own format is YAML: network specs and compiled model folders (yaml.py), which
any file no front end claims is read as. Every other kind of model file has a `FrontEnd`
(registered with `register_frontend`: ONNX here, more from a plugin), which reads a file
into an IR graph and its weights and nothing else; `finalize`, the one step every front
end shares, then attaches the weights (every name must match a layer), seeds the ones a
network lacks (deterministic, and recorded as `graph.meta["seeded_weights"]` so every
tool, and the compiled model, can say so), and infers and checks every shape, all within
the memory budget.

    yaml.py   network specs written as YAML (and compiled model folders)
    onnx.py   ONNX models exported from PyTorch, TensorFlow and other frameworks

`load_network` picks the front end for a path; `graphconv.load_spec` is this function.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from graphconv.arrays import load_npz
from graphconv.errors import (FrontEndError, GraphconvError, Location, ShapeError, counted, nearest, shown,
                              where_it_crashed)
from graphconv.ir import Graph
from graphconv.memory import check_fits
from graphconv.shapes import WEIGHTS_FILE, infer_shapes, init_weights

FLOAT32_BYTES = 4
SEED_DRAW_BYTES = 8  # seeded weights are drawn as float64, then stored as float32


def load_network(path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                 labels: str | os.PathLike | None = None, init_missing_weights: bool = True,
                 crop_size: tuple[int, int] | None = None, task: str | None = None,
                 activation: str | None = None) -> Graph:
    """Read a network (a spec file, a compiled model folder or an ONNX model) into a
    checked IR graph.

    `weights` (an .npz) and `labels` (a text file, one class name per line), when given,
    replace the ones the file names; unlike those they may be anywhere (see the trust
    model in graphconv/frontends/yaml.py). A network without weights gets deterministic
    seeded ones unless `init_missing_weights` is False. `crop_size` (H, W) is the
    training crop of an ONNX model whose input size is dynamic. `task`, when given,
    replaces the file's ("classification" or "segmentation": see `Model.segmentation`).
    `activation` ("softmax" or "sigmoid") ends a network exported giving logits in it
    (`end_in_activation`)."""
    graph = _read_network(path, weights, labels, init_missing_weights, crop_size)
    if task is not None:
        set_task(graph, task)
    if activation is not None:
        end_in_activation(graph, activation, path)
    return graph


def set_task(graph: Graph, task: str) -> None:
    """Mark the network a classifier (the default) or a segmentation network."""
    from graphconv.frontends.yaml import TASKS

    if task not in TASKS:
        raise GraphconvError(f"the task is one of {list(TASKS)}, not {task!r}")
    graph.meta.pop("task", None)
    if task == "segmentation":
        graph.meta["task"] = task


OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


def end_in_activation(graph: Graph, activation: str, path: str | os.PathLike) -> None:
    """Append `activation` to a network whose export gave logits: a classifier trained
    with CrossEntropyLoss (softmax) or BCEWithLogitsLoss (sigmoid: each class a finding of
    its own, several or none per crop) is usually exported without the loss's activation.
    graphconv reads what the scores are from the last layer (a heatmap's 0..1 scale, a
    multi-label model's calls at 0.5 in `cells`, `verify` and `--heatmap top`), and a
    sigmoid's "several labels" has no other place to be stated. A network already ending
    in it is left as it is (a spec an earlier import ended so)."""
    from graphconv.images import output_activation

    if activation not in OUTPUT_ACTIVATIONS:
        raise GraphconvError(f"the output activation is one of {list(OUTPUT_ACTIVATIONS)}, not {activation!r}")
    ends_in, last = output_activation(graph), graph.output
    if ends_in == activation:
        return
    if ends_in is not None or last.op == "log_softmax":
        raise GraphconvError(f"--activation {activation}: {graph.name} ends in a {ends_in or last.op} already (layer "
                             f"{last.name!r}): its scores are not logits", file=str(path))
    if activation == "softmax" and infer_shapes(graph, check_weights=False)[last.name][0] == 1:
        raise GraphconvError(f"--activation softmax: {graph.name} gives one score, and a softmax over one score is 1 "
                             "everywhere; a one-score model's logit becomes a probability by --activation sigmoid",
                             file=str(path))
    graph.output = graph.add(graph.fresh_name(activation), activation, [last])


TF2ONNX = "python -m tf2onnx.convert"
FOREIGN_MODELS = {  # a model file of another framework, by its suffix: what it is, and how to make it ONNX
    ".h5": ("a Keras model (HDF5)", f"{TF2ONNX} --keras MODEL.h5 --output model.onnx"),
    ".hdf5": ("a Keras model (HDF5)", f"{TF2ONNX} --keras MODEL.h5 --output model.onnx"),
    ".keras": ("a Keras 3 model", f"model.export('saved') in Keras, then {TF2ONNX} --saved-model saved "
                                  "--output model.onnx"),
    ".pb": ("a TensorFlow graph", f"{TF2ONNX} --saved-model DIR (its folder) --output model.onnx"),
    ".tflite": ("a TensorFlow Lite model", f"{TF2ONNX} --tflite MODEL.tflite --output model.onnx"),
    ".pt": ("a PyTorch file", "torch.onnx.export(model.eval(), torch.zeros(1, C, H, W), 'model.onnx')"),
    ".pth": ("a PyTorch file", "torch.onnx.export(model.eval(), torch.zeros(1, C, H, W), 'model.onnx')"),
}


def refuse_foreign_model(path: str | os.PathLike) -> None:
    """Refuse a model file of another framework that no front end reads (a Keras .h5, a
    TensorFlow SavedModel folder, a PyTorch .pt) naming it and the command that makes it
    ONNX, which graphconv reads: it was read as a spec ("not a YAML text file", "a folder
    without a model.yaml"), which said nothing of the way in."""
    path = Path(path)
    kind = FOREIGN_MODELS.get(path.suffix.lower())
    if kind is None and path.is_dir() and (path / "saved_model.pb").is_file():
        kind = ("a TensorFlow SavedModel", f"{TF2ONNX} --saved-model {path} --output model.onnx")
    if kind is not None:
        raise GraphconvError(f"is {kind[0]}: graphconv reads ONNX models and its own specs; convert it first: "
                             f"{kind[1]}", file=str(path))


@dataclass(frozen=True)
class FrontEnd:
    """One kind of model file graphconv reads besides its own YAML.

    name: the format, as messages name it ("ONNX").
    suffixes: the file names it claims, lower case (".onnx"); `import` and the notes on
        a model's preprocess know its files by them.
    read(path, crop_size) -> (graph, weights): the network as an IR graph (layers added
        with their params and locations, its output set; shapes need not be inferred,
        no weights attached) and its weights by "<layer>.<name>" (None: the file has
        none, and graphconv seeds them). `crop_size` is the user's --crop-size (H, W), or
        None: the training crop, for a format whose input size may be left open; refuse
        it where it means nothing. Raise GraphconvError naming the file (and line, layer)
        for what cannot be read (anything else it raises is taken for its own bug and
        said as one line naming its code's line). graphconv does the rest: --weights and --labels, the
        shapes, the weights attached and checked (`finalize`).
    sniff(head) -> whether a file's first 16 bytes are of its kind, for a file named
        otherwise; None: it knows its files by name only.
    states_preprocess: whether its files can say how pixels were normalised; where they
        cannot (ONNX), commands say that images go in as they are, 0..255.
    what: its file in a sentence ("an ONNX file"), for those notes (default "a NAME file").
    """

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path, tuple[int, int] | None], tuple[Graph, dict[str, np.ndarray] | None]]
    sniff: Callable[[bytes], bool] | None = None
    states_preprocess: bool = True
    what: str = ""

    def claims_name(self, path: str | os.PathLike) -> bool:
        return Path(path).suffix.lower() in self.suffixes

    @property
    def a_file(self) -> str:
        """Its file in a sentence: "an ONNX file"."""
        return self.what or f"a {self.name} file"


_FRONTENDS: dict[str, FrontEnd] = {}


def register_frontend(frontend: FrontEnd) -> FrontEnd:
    """Make `frontend`'s files readable wherever a network is read (`graphconv.load`,
    compile, run, import: a plugin calls this when --plugin loads it, an installed one
    from its `graphconv.passes` entry point). Registering a name again replaces its front
    end (a plugin loaded twice)."""
    if not isinstance(frontend, FrontEnd):
        raise GraphconvError(f"register_frontend takes a graphconv.frontends.FrontEnd, not {shown(frontend)}")
    if not frontend.suffixes or any(not isinstance(s, str) or not s.startswith(".") or s != s.lower()
                                    for s in frontend.suffixes):
        raise GraphconvError(f"front end {frontend.name!r}: suffixes are lower-case file name endings such as "
                             f"'.onnx', got {shown(frontend.suffixes)}")
    for other in _FRONTENDS.values():
        taken = set(other.suffixes) & set(frontend.suffixes)
        if other.name != frontend.name and taken:
            raise GraphconvError(f"front end {frontend.name!r}: {', '.join(sorted(taken))} files are read by the "
                                 f"{other.name} front end already")
    _FRONTENDS[frontend.name] = frontend
    return frontend


def frontends() -> list[FrontEnd]:
    return list(_FRONTENDS.values())


def frontend_for(path: str | os.PathLike) -> FrontEnd | None:
    """The front end that reads `path`: by its name, else by its first bytes; None for a
    file none claims (a spec, a model folder: graphconv's YAML). Installed plugins are
    loaded first: their front ends may claim it."""
    from graphconv.pass_manager import load_builtin_passes

    load_builtin_passes()
    named = frontend_named(path)
    if named is not None:
        return named
    sniffing = [frontend for frontend in _FRONTENDS.values() if frontend.sniff is not None]
    if not sniffing or not Path(path).is_file():
        return None
    try:
        with open(path, "rb") as fp:
            head = fp.read(16)
    except OSError:
        return None
    return next((frontend for frontend in sniffing if _calling(frontend, "sniff", frontend.sniff, path, head)), None)


def frontend_named(path: str | os.PathLike) -> FrontEnd | None:
    """The front end whose files are named as `path` is (a name recorded in a model, whose
    file may be gone), or None."""
    return next((frontend for frontend in _FRONTENDS.values() if frontend.claims_name(path)), None)


def states_no_preprocess(path: str | os.PathLike) -> bool:
    """Whether a file named as `path` is of a format with no place for a preprocess
    (`FrontEnd.states_preprocess` False: ONNX), so its pixels go in as they are."""
    frontend = frontend_named(path) if path else None
    return frontend is not None and not frontend.states_preprocess


def _calling(frontend: FrontEnd, what: str, function: Callable, path, *args):
    """`function(*args)`, where a plugin front end's crash (its bug: an IndexError, a
    KeyError) is one line naming the front end, the line of its code and the file
    (`FrontEndError`), as a crashed plugin pass's is, not a traceback. Errors that bad
    input causes (GraphconvError, a file that cannot be opened) pass as they are, and so
    does every exception of graphconv's own front ends (a bug in graphconv keeps its
    traceback)."""
    try:
        return function(*args)
    except (GraphconvError, OSError, MemoryError, RecursionError):
        raise
    except Exception as err:
        if getattr(function, "__module__", "").startswith("graphconv."):
            raise
        raise FrontEndError(f"the {frontend.name} front end crashed in its {what}{where_it_crashed(err)}: "
                            f"{type(err).__name__}: {err}", file=str(path)) from err


def _read_onnx(path: Path, crop_size: tuple[int, int] | None):
    from graphconv.frontends.onnx import read_onnx
    return read_onnx(path, crop_size=crop_size)


def _sniff_onnx(head: bytes) -> bool:
    from graphconv.frontends.onnx import looks_like_protobuf_model
    return looks_like_protobuf_model(head)


register_frontend(FrontEnd("ONNX", (".onnx",), _read_onnx, sniff=_sniff_onnx, states_preprocess=False,
                           what="an ONNX file"))


def _read_network(path, weights, labels, init_missing_weights: bool, crop_size) -> Graph:
    from graphconv.frontends import yaml as yaml_frontend

    frontend = frontend_for(path)
    if frontend is not None:
        graph, arrays = _calling(frontend, "read", frontend.read, path, Path(path), crop_size)
        if labels is not None:
            graph.meta["labels"] = yaml_frontend.read_labels(Path(labels))
            graph.meta[yaml_frontend.LABELS_FILE] = str(labels)
        if weights is not None:
            arrays = load_npz(weights)
            graph.meta[WEIGHTS_FILE] = str(weights)  # for messages about the weights (shapes.py)
        _note_read_from(graph, path, weights, labels)
        return finalize(graph, arrays, str(weights or path), init_missing_weights)
    refuse_foreign_model(path)
    if crop_size is not None:
        raise GraphconvError("--crop-size (crop_size=) is for ONNX models with a dynamic input size; a spec "
                             "states its crop in 'input: {shape: [C, H, W]}'", file=str(path))
    graph, weights_file = yaml_frontend.read_spec(Path(path), weights=weights, labels=labels)
    arrays = load_npz(weights_file) if weights_file is not None else None
    _note_read_from(graph, path, weights_file, labels)
    try:
        return finalize(graph, arrays, str(weights_file or path), init_missing_weights)
    except ShapeError as err:
        _hint_at_channels_last(err, graph.input_shape)
        raise


def _hint_at_channels_last(err: ShapeError, shape: tuple[int, int, int]) -> None:
    """Add to a shape error of a spec whose input shape reads as [H, W, C] (a picture's
    height, width and colours, as numpy and PIL give them) what a spec states: [C, H, W]."""
    channels, height, width = shape
    if width in (1, 3, 4) and channels > 4 and height > 4:
        err.message += (f" (the input shape is [C, H, W]: {list(shape)} is {channels} channels of {height}x{width}; "
                        f"for {width}-channel {channels}x{height} pictures write [{width}, {channels}, {height}])")
        err.args = (err.message,)


def _note_read_from(graph: Graph, *paths) -> None:
    """Add the files (or a compiled model's folder) the network was read from to
    `graph.meta["read_from"]` (absolute paths; a front end may have put more there: a
    spec's labels file, an ONNX model's external data), which no command may write over."""
    read_from = graph.meta.setdefault("read_from", [])
    read_from += [str(Path(p).resolve()) for p in paths if p is not None and str(Path(p).resolve()) not in read_from]


def finalize(graph: Graph, weights: dict[str, np.ndarray] | None, source: str,
             init_missing_weights: bool = True) -> Graph:
    """What every front end does last: shapes checked against the memory budget, then
    `weights` ("<layer>.<name>" -> array) attached and checked against the shapes, or,
    when there are none, seeded weights. `source` names the weights' file in errors."""
    _check_output_set(graph)
    shapes = _checked_shapes(graph)
    if weights is not None:
        _attach_weights(graph, weights, source)
        _drop_dead_layers(graph)
        infer_shapes(graph, check_weights=True)
    else:
        _drop_dead_layers(graph)
    if weights is None and init_missing_weights:
        _check_seeded_weights_fit(graph, shapes, source)
        init_weights(graph)
        graph.meta["seeded_weights"] = True
    return graph


def _check_output_set(graph: Graph) -> None:
    """A graph whose output is still its input (a new `Graph`'s) but that has layers: a
    front end that never set `graph.output`, whose every layer was then dropped as dead
    and whose network failed only when run ("the network has no layers")."""
    if graph.output.name == graph.input.name and graph.layers():
        raise GraphconvError(f"{graph.name}: its output is its input, {graph.input.name!r}, so none of its "
                             f"{counted(len(graph.layers()), 'layer')} would run: a front end sets graph.output "
                             "to the layer the network returns")


def _drop_dead_layers(graph: Graph) -> None:
    """Erase the layers that reach no output (an unused branch), after their weights were
    matched by name (a weights file may hold them) and before weights are required: they
    compute nothing the network returns, so no note about padding, no verify section and
    no weights are owed to them. Their names stay in graph.meta["dropped_layers"], for the
    one note that says so (`shapes.dropped_layers_note`)."""
    dead = graph.erase_dead_layers()
    if dead:
        graph.meta["dropped_layers"] = dead


def _attach_weights(graph: Graph, arrays: dict[str, np.ndarray], source: str) -> None:
    for key, array in arrays.items():
        layer, _, what = key.rpartition(".")
        if not layer or not what.isidentifier():
            raise GraphconvError(f"has an array named {shown(key)}, which is not of the form LAYER.PARAM "
                                 "(e.g. 'conv1.weight'): every array in a weights file is a layer's parameter",
                                 file=source)
        if layer not in graph or graph.node(layer).op == "input":
            raise GraphconvError(f"has weights {shown(key)} but the network has no layer {shown(layer)}"
                                 + _layers_without_weights(graph, layer, arrays), file=source)
        graph.set_weights(layer, **{what: array})


def _layers_without_weights(graph: Graph, layer: str, arrays: dict[str, np.ndarray]) -> str:
    """The layers that take weights and have none in the file, the likeliest first: a
    layer renamed in the spec leaves its weights under the old name, and the error then
    names where they belong, not only where they are not."""
    named = {key.rpartition(".")[0] for key in arrays}
    missing = [node.name for node in graph.layers() if node.opdef.has_weights and node.name not in named]
    if not missing:
        return ""
    close = nearest(layer, missing, n=1)
    if close:
        node = graph.node(close[0])
        where = f"{node.loc}, " if node.loc is not None else ""
        return f": did you mean {shown(close[0])} ({where}{node.op}), which the file has no weights for?"
    listed = ", ".join(shown(name) for name in missing[:5])
    if len(missing) > 5:
        listed += f" and {len(missing) - 5} more"
    return f" (the file has no weights for {listed})"


def _checked_shapes(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Every node's shape for the spec's own crop, each checked against the memory budget:
    a network whose input or any one layer's output for a single crop is over it can
    never run, and this bounds every size computed from the shapes after it."""
    _fits(FLOAT32_BYTES * math.prod(graph.input_shape),
          f"the input crop {_fmt_shape(graph.input_shape)}", graph.input.loc)
    shapes = infer_shapes(graph, check_weights=False)
    for node in graph.layers():
        shape = shapes[node.name]
        _fits(FLOAT32_BYTES * math.prod(shape), f"its output for one crop ({_fmt_shape(shape)})",
              node.loc, node.name)
    return shapes


def _check_seeded_weights_fit(graph: Graph, shapes: dict, source: str) -> None:
    """Refuse seeded weights over the memory budget before drawing them: all of them as
    float32, plus the float64 draw of the largest array before it is converted."""
    total, largest = 0, (0, "", ())
    for node in graph.layers():
        if not node.opdef.has_weights or node.weights:
            continue
        expected = node.opdef.weight_shapes(node.params, [shapes[s.name] for s in node.inputs])
        for shape in expected.values():
            count = math.prod(int(v) for v in shape)
            total += FLOAT32_BYTES * count
            largest = max(largest, (count, node.name, tuple(int(v) for v in shape)), key=lambda t: t[0])
    count, name, shape = largest
    check_fits(total + SEED_DRAW_BYTES * count,
               f"seeding random weights (the spec names no weights file; the largest array is "
               f"{_fmt_shape(shape)}, in layer {shown(name)})", file=source)


def _fits(nbytes: int, what: str, loc: Location | None, layer: str | None = None) -> None:
    try:
        check_fits(nbytes, what)
    except GraphconvError as err:
        raise GraphconvError(err.message, loc=loc, layer=layer) from None


def _fmt_shape(shape) -> str:
    return "x".join(str(v) for v in shape)
