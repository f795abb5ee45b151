"""`compile_graph` / `compile_model`: spec -> pass pipeline -> compiled graph or Model,
as `graphconv compile` does it."""
from __future__ import annotations

import os
from typing import Any, Sequence

from graphconv.errors import GraphconvError
from graphconv.ir import Graph
from graphconv.model import Model
from graphconv.pass_manager import (DEFAULT_PIPELINE, PassManager, PassRecord, PipelineItem, format_pipeline,
                                    pipeline_items)
from graphconv.frontends import load_network as load_spec


def build_pipeline(passes: str | Sequence[str | PipelineItem] | None = None, output_stride: int | None = None,
                   stride_method: str = "auto") -> list[PipelineItem]:
    """The pipeline to run, with an output-stride step added right after fc-to-conv when a
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
        at = names.index("fc-to-conv") + 1 if "fc-to-conv" in names else len(items)
        items.insert(at, step)
    return items


def compile_graph(source: str | os.PathLike | Graph, passes: str | Sequence[str | PipelineItem] | None = None, *,
                  output_stride: int | None = None, stride_method: str = "auto",
                  **manager_options: Any) -> tuple[Graph, list[PassRecord]]:
    """Load `source` (a spec path or a Graph), run the pipeline, and return the compiled
    graph with a record of every pass that ran (for `--timings`). `source` itself is
    never changed. manager_options go to `PassManager` (print_ir_before/after,
    verify_each, out...)."""
    pipeline = build_pipeline(passes, output_stride, stride_method)  # a bad pipeline before a slow load
    graph = source if isinstance(source, Graph) else load_spec(source)
    manager = PassManager(pipeline, **manager_options)
    compiled = manager.run(graph)
    if not compiled.layers():
        raise GraphconvError(f"after the passes ({format_pipeline(pipeline)}) the network has no "
                             "layers left: its output would be its input", loc=graph.input.loc)
    check_can_slide(graph, compiled)
    compiled.meta.setdefault("compiled", {})["passes"] = format_pipeline(pipeline)
    return compiled, manager.records


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


def compile_model(source: str | os.PathLike | Graph, passes: str | Sequence[str | PipelineItem] | None = None, *,
                  output_stride: int | None = None, stride_method: str = "auto",
                  **manager_options: Any) -> Model:
    """`compile_graph`, as a runnable Model."""
    compiled, _ = compile_graph(source, passes, output_stride=output_stride,
                                stride_method=stride_method, **manager_options)
    return Model(compiled)
