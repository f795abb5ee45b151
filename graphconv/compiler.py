"""`compile_graph` / `compile_model`: spec -> pass pipeline -> compiled graph or Model,
as `graphconv compile` does it."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from graphconv.errors import GraphconvError, agreeing, warn_caller
from graphconv.ir import Graph
from graphconv.model import LOAD_OPTIONS, Model, load_graph
from graphconv.strides import METHODS as STRIDE_METHODS
from graphconv.pass_manager import (CONVERTING_PASSES, DEFAULT_PIPELINE, PassManager, PassRecord, PipelineItem,
                                    format_pipeline, pipeline_items, plugins_of_ops)


def build_pipeline(passes: str | Sequence[str | PipelineItem] | None = None, output_stride: int | None = None,
                   stride_method: str = "auto") -> list[PipelineItem]:
    """The pipeline to run, with an output-stride step added right after the passes that
    make the classifier slide (`CONVERTING_PASSES`: global-pool-to-window,
    split-fc-over-concat, remove-flatten, fc-to-conv, keep-crop-cells) when a
    finer stride is asked for. `passes`: None for the standard one, a string as --passes
    takes it, or a list of pass names, "name{option=value}" strings or (name, options)
    pairs."""
    items = [(name, {}) for name in DEFAULT_PIPELINE] if passes is None else pipeline_items(passes)
    if output_stride is not None:
        step = ("output-stride", {"stride": output_stride, "method": stride_method})
        names = [name for name, _ in items]
        if "output-stride" in names:  # twice was a baffling "does not divide ... 1x1", or run twice
            given = format_pipeline([items[names.index("output-stride")]])
            raise GraphconvError(f"--output-stride {output_stride} and '{given}' in --passes both ask for an "
                                 "output stride: give one of them")
        last = max((names.index(name) for name in CONVERTING_PASSES if name in names), default=len(items) - 1)
        items.insert(last + 1, step)
    return items


def compile_graph(source: str | os.PathLike | Graph | Model, passes: str | Sequence[str | PipelineItem] | None = None,
                  *, output_stride: int | None = None, stride_method: str = "auto",
                  **options: Any) -> tuple[Graph, list[PassRecord]]:
    """Load `source` (a spec, model folder or ONNX path, a Graph or a Model), run the
    pipeline, and return the compiled graph with a record of every pass that ran (for
    `--timings`). `source` itself is never changed. `options`: `graphconv.load`'s
    (weights, labels, crop_size, task, preprocess), for a path; the rest go to
    `PassManager` (print_ir_before/after, verify_each, out...)."""
    _, compiled, records = _compiled(source, passes, output_stride, stride_method, options)
    return compiled, records


def _compiled(source: str | os.PathLike | Graph | Model, passes: str | Sequence[str | PipelineItem] | None,
              output_stride: int | None, stride_method: str, options: dict) -> tuple[Graph, Graph, list[PassRecord]]:
    """`compile_graph`'s work: (the graph as loaded, the compiled graph, the records)."""
    load_options = {key: options.pop(key) for key in LOAD_OPTIONS if key in options}
    _check_options(options, output_stride, stride_method)
    pipeline = build_pipeline(passes, output_stride, stride_method)  # a bad pipeline before a slow load
    manager = PassManager(pipeline, **options)
    graph = source_graph(source, **load_options)
    compiled = manager.run(graph)
    if not compiled.layers():
        raise GraphconvError(f"after the passes ({format_pipeline(pipeline)}) the network has no "
                             "layers left: its output would be its input", loc=graph.input.loc)
    check_can_slide(graph, compiled)
    refuse_whole_map_statistics(pipeline, compiled)
    refuse_flatten_left(pipeline, graph, compiled)
    record = compiled.meta.setdefault("compiled", {})
    if "passes" in record:  # compiled again: the passes that made it stay on record (a plugin's baked-in weights)
        record["earlier_passes"] = [*record.get("earlier_passes", []), record["passes"]]
    record["passes"] = format_pipeline(pipeline)
    if plugins := plugins_of_ops(compiled):  # its ops are not graphconv's: a later command needs them loaded
        record["plugins"] = plugins
    else:
        record.pop("plugins", None)
    record_unstated_preprocess_source(compiled)
    return graph, compiled, manager.records


def compile_notes(classifier: Graph, compiled: Graph, output_stride: int | None) -> list[str]:
    """What to know of a compiled classifier's map that compiling cannot mend (the
    command's notes, Python's GraphconvWarnings): where its padding makes cells differ
    from the classifier on their crop (`dense.padding_note`) and, of shift-and-stitch,
    where its shifted copies read padding inside the image and why dilation was not
    taken (`strides.shift_cut_padding`), and of dilation, what its ceil_mode pools leave
    out (`strides.dilated_ceil_note`). A model compiled again (no `output_stride`)
    said the second the first time."""
    from graphconv.dense import padding_note
    from graphconv.strides import dilate_problem, dilated_ceil_note, shift_cut_padding

    notes = [padding_note(classifier)]
    if output_stride is not None:
        notes.append(dilated_ceil_note(compiled))
    if output_stride is not None and compiled.find("shift_copies"):
        notes.append(shift_cut_padding(compiled, dilate_problem(classifier, output_stride)))
    if output_stride is not None and classifier.find("shift_copies"):
        notes.append(_shifted_again_note(compiled))
    return [said for said in notes if said]


def _shifted_again_note(compiled: Graph) -> str:
    """A model made finer by shift-and-stitch, compiled finer again: its shifted copies
    are shifted again (the earlier copies' work times the new ones', 33x dilation's on a
    VGG-like net at output stride 2), where the original model compiled once at the
    stride wanted may take dilation."""
    copies = len(compiled.find("shift_copies"))
    return (f"this model was made finer by shift-and-stitch already; compiled finer again it computes shifted "
            f"copies of its shifted copies ({copies} layers of copies): compiling the original model (its spec "
            "or ONNX file) with this --output-stride costs less, often far less (dilation, where it applies)")


def record_unstated_preprocess_source(compiled: Graph) -> None:
    """Name the file a compiled graph was read from in its `compiled` block where its
    format has no place for a preprocess (ONNX: `FrontEnd.states_preprocess`), so a run
    of the compiled folder knows its pixels' preprocess was never stated
    (`cli.note_pixels_as_they_are`). The file is where the graph's input was read (an
    ONNX path, or a Graph loaded from one), or the one the spec it was read from was
    imported from (its first line); a recompiled folder keeps the name it has. Other
    sources are not named: a folder graphconv wrote is then readable by versions that do
    not know the key."""
    from graphconv.frontends import states_no_preprocess
    from graphconv.frontends.yaml import IMPORTED_FROM

    where = compiled.input.loc.file if compiled.input.loc is not None else ""
    if states_no_preprocess(where):
        compiled.meta["compiled"].setdefault("source", os.path.basename(os.path.abspath(where)))
    elif states_no_preprocess(compiled.meta.get(IMPORTED_FROM, "")) and "preprocess" not in compiled.meta:
        compiled.meta["compiled"].setdefault("source", compiled.meta[IMPORTED_FROM])


MANAGER_OPTIONS = tuple(f.name for f in dataclasses.fields(PassManager) if f.name not in ("pipeline", "records"))


def _check_options(options: dict, output_stride: int | None, stride_method: str) -> None:
    """A misspelt keyword is named as compile_model's (a TypeError from PassManager's
    constructor, which the user never called, said nothing of which call), and a stride
    method without a stride, which would be ignored, is refused."""
    unknown = sorted(set(options) - set(MANAGER_OPTIONS))
    if unknown:
        raise TypeError(f"compile_model got unexpected keyword "
                        f"{agreeing(len(unknown), 'argument', 'arguments')} {', '.join(map(repr, unknown))}; it takes "
                        f"passes, output_stride, stride_method, {', '.join(LOAD_OPTIONS)} and "
                        f"{', '.join(MANAGER_OPTIONS)}")
    if stride_method not in STRIDE_METHODS:
        raise GraphconvError(f"stride_method is one of {', '.join(STRIDE_METHODS)}, got {stride_method!r}")
    if stride_method != "auto" and output_stride is None:
        raise GraphconvError(f"stride_method (--stride-method) {stride_method!r} says how to reach a finer output "
                             "stride: give output_stride (--output-stride) too")


def source_graph(source: str | os.PathLike | Graph | Model, **load_options: Any) -> Graph:
    """The graph to compile: a path loaded with `load_options` (`Model.load`'s), a Model's
    graph, or a Graph as given; a loaded one takes no load options (they say how to read
    a file)."""
    if isinstance(source, (Graph, Model)):
        given = [key for key, value in load_options.items() if value is not None]
        if given:
            raise GraphconvError(f"{', '.join(given)}: options for reading a model file; this "
                                 f"{type(source).__name__} is loaded already (give the path instead, or "
                                 "graphconv.load(path, ...) first)")
        return source.graph if isinstance(source, Model) else source
    return load_graph(source, **load_options)


def check_can_slide(source: Graph, compiled: Graph) -> None:
    """Refuse a compiled network that slides (returns maps) where maps of different
    strides meet: it would fail, or be wrong, on any image larger than the crop. The
    error names the layer of the network as written (the add, not the conv a fusing pass
    merged it into), worked out on `source`, which runs at its crop."""
    from graphconv.receptive import MixedStridesError, partial_receptive_fields, receptive_fields

    try:
        receptive_fields(compiled)
    except MixedStridesError as compiled_error:
        if Model(compiled).returns_vectors:
            return  # still a classifier on its crop (no fc-to-conv): it never slides
        _, mixed = partial_receptive_fields(source)
        raise (mixed or compiled_error) from None


def refuse_whole_map_statistics(pipeline: Sequence[PipelineItem], compiled: Graph) -> None:
    """A pipeline that converts, on a classifier that returns maps with nothing for it to
    convert (no fc, no global pool): a layer of whole-map statistics (an InstanceNorm) is
    refused as the converting passes refuse it, since the dense map would be normalised
    over the whole image, not each crop. (`run --crops` compiles without converting, and
    runs each crop alone.)"""
    from graphconv.pass_manager import CONVERTING_PASSES
    from graphconv.strides import PREDICTS_A_MAP, refuse_whole_map_layers

    converts = bool({name for name, _ in pipeline} & set(CONVERTING_PASSES))
    if converts and compiled.meta.get("task") != "segmentation" and not Model(compiled).returns_vectors:
        refuse_whole_map_layers(compiled, PREDICTS_A_MAP)


def refuse_flatten_left(pipeline: Sequence[PipelineItem], source: Graph, compiled: Graph) -> None:
    """A pipeline that converts (remove-flatten and fc-to-conv ran) yet left a flatten
    made a network that takes its crop alone: the flatten's C*H*W features would be a
    map's channels on a larger image, and run or verify failed there on an internal
    weight-shape error. Refuse it here, naming the layer (as written) that reads the
    flattened features where only an fc can (a batchnorm or dropout before the fc folds
    into it or goes), or the flatten itself where it is the output."""
    names = {name for name, _ in pipeline}
    left = [node.name for node in compiled.find("flatten")]
    if not left or not {"remove-flatten", "fc-to-conv"} <= names or not Model(compiled).returns_vectors:
        return
    from graphconv.shapes import infer_shapes
    from graphconv.strides import CROPS_INSTEAD

    flatten = source.node(left[0])
    c, h, w = infer_shapes(source, check_weights=False)[flatten.inputs[0].name]
    blocking = _first_reader_not_per_element(compiled.node(left[0]))
    reader = source.node(blocking) if blocking in source else compiled.node(blocking)  # a pass's new layer
    if reader.name == flatten.name:
        reader = flatten
    what = (f"this {reader.op} reads the {c * h * w} features of flatten '{flatten.name}' (its {c}x{h}x{w} map) "
            "before any fc" if reader != flatten else
            f"this flatten's {c * h * w} features (its {c}x{h}x{w} map) are the network's output")
    raise (reader.error(f"{what}: on a larger image they would be each cell's channels, not those features, so "
                        "the flatten cannot be removed and the network cannot be compiled to slide (only an fc may "
                        "read a flatten, after per-element layers such as a relu, or a per-feature scale and shift "
                        f"that folds into it); {CROPS_INSTEAD}"))


def _first_reader_not_per_element(flatten) -> str:
    """The name of the first layer after `flatten` (in the compiled graph, where a
    batchnorm before an fc has folded into it) that is neither an fc nor per-element
    (`OpDef.per_element`), or the flatten's own where there is none."""
    queue = list(flatten.users)
    while queue:
        node = queue.pop(0)
        if node.op != "fc" and not node.opdef.per_element:
            return node.name
        if node.op != "fc":
            queue.extend(node.users)
    return flatten.name


def compile_model(source: str | os.PathLike | Graph | Model, passes: str | Sequence[str | PipelineItem] | None = None,
                  *, output_stride: int | None = None, stride_method: str = "auto", **options: Any) -> Model:
    """`compile_graph`, as a runnable Model: `source` is a path (read with `graphconv.load`'s
    options: weights, labels, crop_size, task, preprocess, activation), a Model or a Graph."""
    classifier, compiled, _ = _compiled(source, passes, output_stride, stride_method, options)
    model = Model(compiled)
    if not model.returns_vectors:  # a network that slides: what its map is, as `graphconv compile` notes
        for said in compile_notes(classifier, compiled, output_stride):
            warn_caller(said)
    return model
