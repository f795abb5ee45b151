"""`graphconv inspect --profile --against onnxruntime`: the user's compiled model timed
beside onnxruntime running the same network, as graphconv exports it, on the same input
and the same number of threads. A CPU user choosing a runtime needs that comparison on
their own model, not on the benchmarks' (a review: the user wrote a harness of their own,
and could not match graphconv's fused layers to the rows of onnxruntime's node profile).

Each side runs as its users run it: graphconv's `Model.run`, onnxruntime's
InferenceSession with its graph optimisations on (it fuses layers and moves the big
convolutions to its blocked layout, adding Reorder nodes). Whole runs alternate between
the two, so that a machine's load falls on both; per-layer times come from onnxruntime's
own profiler, its nodes summed by the graphconv layer whose values they compute."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from graphconv.errors import GraphconvError, counted, import_optional
from graphconv.ir import FUSED_LAYERS, INPUT_OP
from graphconv.profiling import PROFILE_RUNS, PROFILE_SECONDS

AGAINST = ("onnxruntime",)  # what --against takes
NEEDS_ONNXRUNTIME = "--against onnxruntime needs the onnx and onnxruntime packages: pip install onnx onnxruntime"


@dataclass(frozen=True)
class Comparison:
    """onnxruntime beside graphconv on one input: per-layer medians in seconds (`layers`
    by graphconv layer, `own` for nodes of no layer, by op type: its layout reorders),
    whole-run medians over `runs` runs each, and how far the two outputs differ."""

    version: str
    threads: int
    layers: dict[str, float]
    own: dict[str, float]
    graphconv_run: float
    onnxruntime_run: float
    runs: int
    largest_difference: float
    largest_score: float
    untimed: tuple[str, ...]  # graphconv's layers it ran no node of

    def summary(self) -> list[str]:
        """The lines that follow the per-layer table."""
        ratio = self.graphconv_run / self.onnxruntime_run if self.onnxruntime_run > 0 else float("inf")
        return [
            f"onnxruntime {self.version} ran the model as graphconv exports it (its graph optimisations on), on the "
            f"same input, {self.threads} thread{'s' if self.threads != 1 else ''} each:",
            f"  whole runs, medians of {self.runs} each, taken in turn: graphconv {self.graphconv_run * 1e3:.2f} ms, "
            f"onnxruntime {self.onnxruntime_run * 1e3:.2f} ms: graphconv takes {ratio:.2f}x onnxruntime's time",
            f"  outputs differ by at most {self.largest_difference:.3g} (the largest output is "
            f"{self.largest_score:.3g} in size)",
        ] + ([f"  '-': onnxruntime ran no node of that layer's ({counted(len(self.untimed), 'layer')}): it fused "
              "the layer into a neighbour's node (a convolution and the activation after it, named after the "
              "activation) or dropped it; the x on the next row compares those layers' time and its own"]
             if self.untimed else [])


def compare_with_onnxruntime(model, x: np.ndarray, device: str, threads: int, file: str) -> Comparison:
    """Run `model` (a graphconv.Model) and onnxruntime on (1, C, H, W) input `x` with
    `threads` threads each; `file` names the model in errors."""
    import_optional("onnx", NEEDS_ONNXRUNTIME)
    ort = import_optional("onnxruntime", NEEDS_ONNXRUNTIME)
    onnx_bytes = _exported(model, x.shape[2:], file)
    session = _session(ort, onnx_bytes, threads)
    feed = {session.get_inputs()[0].name: x}
    ours = model.run(x, device, full=True)
    theirs = np.asarray(session.run(None, feed)[0])
    if theirs.size != ours.size:
        raise GraphconvError(f"onnxruntime's output of the exported model has shape {theirs.shape}, graphconv's "
                             f"{ours.shape}: they cannot be compared (a bug of the export: please report it)",
                             file=file)
    theirs = theirs.reshape(ours.shape)
    graphconv_run, onnxruntime_run, runs = _whole_runs(model, session, x, device)
    del session
    layers, own = _layer_times(_session(ort, onnx_bytes, threads, profiled=True), feed, runs, model.graph)
    ran = model.executor(device).graph
    layers = _onto_rows(layers, model.graph, ran)
    return Comparison(ort.__version__, threads, layers, own, graphconv_run, onnxruntime_run, runs,
                      float(np.abs(ours - theirs).max(initial=0)), float(np.abs(theirs).max(initial=0)),
                      tuple(node.name for node in ran.layers() if node.name not in layers))


def _onto_rows(seconds: dict[str, float], exported, ran) -> dict[str, float]:
    """onnxruntime's seconds per layer of the model as exported (`exported`) summed onto
    the layers graphconv ran (`ran`: the executor's graph, the profile's rows), where
    passes fused some: a block takes the layers it names (`FUSED_LAYERS`: an inverted
    residual's three convs), a pad folded into the layer after it goes to that one, any
    other layer gone (an activation, a batch norm or an add fused into the layer before
    it) to its first input's. A fused block's row compared its whole time with
    onnxruntime's for its last conv alone: 2.7x where the block takes 1.2x."""
    rows = {node.name for node in ran.layers()}
    into = {name: block.name for block in ran.layers() for name in block.annotations.get(FUSED_LAYERS, ())}

    def row_of(name: str, seen: frozenset = frozenset()) -> str | None:
        if name in rows or name in into or name in seen or name not in exported:
            return name if name in rows else into.get(name)
        node = exported.node(name)
        nearby = ([*node.users, *node.inputs] if node.op == "pad" else [*node.inputs, *node.users])
        return next((row for near in nearby if near.op != INPUT_OP
                     for row in [row_of(near.name, seen | {name})] if row is not None), None)

    onto: dict[str, float] = defaultdict(float)
    for name, spent in seconds.items():
        onto[row_of(name) or name] += spent
    return dict(onto)


def _exported(model, hw: tuple[int, int], file: str) -> bytes:
    """The model as `graphconv export --input-size H W --batch 1` writes it, as bytes."""
    from graphconv.frontends.onnx_export import ExportOptions, check_export_fits, to_onnx_model

    check_export_fits(model.graph, file)
    try:
        proto = to_onnx_model(model.graph, checked=False, options=ExportOptions(input_size=tuple(hw), batch=1))
    except GraphconvError as err:
        err.message = f"--against onnxruntime runs the model as graphconv exports it, and {err.message}"
        raise
    return proto.SerializeToString()


def _session(ort, onnx_bytes: bytes, threads: int, profiled: bool = False):
    """onnxruntime's CPU session of `onnx_bytes` as its users make one, on `threads`
    threads (intra-op; one inter-op: graphconv runs one layer at a time too); `profiled`:
    with its profiler on, writing into a folder of its own (`_layer_times` removes it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profiled:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="graphconv-onnxruntime-"), "profile")
    try:
        return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own errors have no common base class worth naming
        if profiled:
            shutil.rmtree(os.path.dirname(options.profile_file_prefix), ignore_errors=True)
        raise GraphconvError(f"onnxruntime could not load the model graphconv exports: {err}") from None


REST = 0.05  # seconds each runtime rests before its turn (`_rested_run`)


def _whole_runs(model, session, x: np.ndarray, device: str) -> tuple[float, float, int]:
    """Median seconds of whole runs, graphconv's and onnxruntime's taken in turn
    (`_rested_run`), and how many of each: as many as `median_profile` would take of
    graphconv's alone."""
    feed = {session.get_inputs()[0].name: x}
    ours, theirs = [], []
    spent = 0.0
    while len(ours) < PROFILE_RUNS[1] and spent < 2 * PROFILE_SECONDS[1] and (
            len(ours) < PROFILE_RUNS[0] or spent < 2 * PROFILE_SECONDS[0]):
        ours.append(_rested_run(lambda: model.run(x, device, full=True)))
        theirs.append(_rested_run(lambda: session.run(None, feed)))
        spent += ours[-1] + theirs[-1]
    return float(np.median(ours)), float(np.median(theirs)), len(ours)


def _rested_run(run) -> float:
    """Seconds of run() after a REST and one untimed run() of its own: the steady state
    of a runtime mapping tile after tile. Taken straight after onnxruntime's turn, whose
    worker threads spin on after a run (its default) and so held the cores, a 14 ms
    graphconv run measured 22-27 ms (2x onnxruntime, where it takes 1.1-1.7x); the
    untimed run wakes numba's workers, asleep after the rest."""
    time.sleep(REST)
    run()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _layer_times(session, feed: dict, runs: int, graph) -> tuple[dict[str, float], dict[str, float]]:
    """A profiled `session`'s per-node medians over `runs` runs (after a warm-up), summed
    by graphconv layer, and its nodes of no layer by op type. Its profiler's JSON file and
    folder are removed whatever happens."""
    folder = os.path.dirname(session.get_session_options().profile_file_prefix)
    try:
        for _ in range(runs + 1):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as fp:
            events = json.load(fp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _by_layer(_node_medians(events, runs), graph)


def _node_medians(events: list[dict], runs: int) -> dict[tuple[str, str], float]:
    """Each node's median kernel seconds over its last `runs` runs, by (value name, op):
    onnxruntime names a node's profile event after the value it makes."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            key = (event["name"].removesuffix("_kernel_time"), event.get("args", {}).get("op_name", "?"))
            times[key].append(event["dur"] / 1e6)
    return {key: float(np.median(durations[-runs:])) for key, durations in times.items()}


def _by_layer(medians: dict[tuple[str, str], float], graph) -> tuple[dict[str, float], dict[str, float]]:
    layers: dict[str, float] = defaultdict(float)
    own: dict[str, float] = defaultdict(float)
    names = _value_names(graph)
    for (value, op), seconds in medians.items():
        layer = layer_of(value, names)
        if layer is None:
            own[op] += seconds
        else:
            layers[layer] += seconds
    return dict(layers), dict(own)


def _value_names(graph) -> dict[str, str]:
    """Each graphconv layer's name, and the names the export may give its values instead
    (the output renamed as the imported file named it), to the layer's name."""
    names = {node.name: node.name for node in graph.layers()}
    for renamed in (graph.meta.get("output_name"),):
        if renamed and renamed not in names:
            names[renamed] = graph.output.name
    return names


def layer_of(value: str, names: dict[str, str]) -> str | None:
    """The graphconv layer an onnxruntime node's value belongs to, or None (a layout
    reorder of its own). The export names a layer's values `<layer>` and `<layer>/<Op>_<n>`;
    onnxruntime's optimiser adds suffixes (`conv1_nchwc`, `conv1/Conv_5_nchwc`): the
    longest layer name the value starts with, followed by nothing, '/' or '_', wins."""
    best = None
    for name, layer in names.items():
        if value == name or value.startswith((name + "/", name + "_")):
            if best is None or len(name) > len(best[0]):
                best = (name, layer)
    return best[1] if best else None
