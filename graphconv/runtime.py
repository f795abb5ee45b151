"""Executes an IR graph with the ops' compiled kernels: the runtime plans, kernels compute.

An `Executor` binds a graph to one backend (`graphconv/backends.py`): each layer's
kernel is looked up and its weights stored the backend's way once. For each input size
it then makes a `Plan` (`make_plan`, cached): every value's shape, from the ops' shape
rules through `infer_shapes` (the one place output sizes are worked out), every value's
last use, and where in one reusable arena each intermediate value lives. A run hands
every kernel its inputs and the arena's view to write its output into; kernels allocate
nothing but their own scratch. So activations cost no allocation (and no page faults)
after the first run of a size, and they take about the most bytes live at once, however
deep the network is.

A plan is shape arithmetic only, so `graphconv.memory` estimates a run from the same
plan the Executor runs. It is also what tiled evaluation stands on: a tile is a run of
a known input size whose output goes into a region of a larger map (`run(out=...)`).
"""
from __future__ import annotations

import math
import threading
import time
from fractions import Fraction
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphconv.allocator import release_freed_memory
from graphconv.backends import Backend, resolve_backend, resolve_device
from graphconv.errors import GraphconvError, ShapeError
from graphconv.ir import Graph, Node
from graphconv.ops import layout
from graphconv.ops.layout import stored_channels_last
from graphconv.pass_manager import get_pass
from graphconv.shapes import batch_scales, infer_shapes

# resolve_device is graphconv.backends', here too for callers that import it from here
__all__ = ["Executor", "Plan", "Step", "make_plan", "resolve_device", "run_reference"]

FLOAT_BYTES = 4
ALIGN_FLOATS = 16  # each value starts on a 64-byte cache line of the arena (`aligned.empty` aligns its start)
PLANS_KEPT = 4  # input sizes an Executor keeps plans for; see Executor.plan

Shape4 = tuple[int, int, int, int]


@dataclass(frozen=True)
class Plan:
    """How a batch of one input size runs. Value names are layer names (plus the input's).

    shapes: every value's (N, C, H, W); N is the input's batch times the value's
        `batch_scales` (fy * fx between the two halves of shift-and-stitch).
    last_use: for every value, the index in `graph.layers()` of the last layer that reads
        it (its own index when nothing does).
    offset_of: for every intermediate value (neither the input, which is the caller's,
        nor the output, which is returned), where in the arena it is written: its first
        float32 element (a multiple of ALIGN_FLOATS). Two values overlap there only when
        one's last reader has run before the other is written (`_place_values`).
    arena_floats: the arena's size in float32 elements.
    channels_last: the values the graph's `channels-last` pass marked, which a backend
        that `stores_channels_last` (the CPU) stores that way (same size, other order).
    """

    input: str
    output: str
    shapes: dict[str, Shape4]
    last_use: dict[str, int]
    offset_of: dict[str, int]
    arena_floats: int
    channels_last: frozenset[str] = frozenset()

    @property
    def output_shape(self) -> Shape4:
        return self.shapes[self.output]

    @property
    def buffer_bytes(self) -> int:
        """What the intermediate activations of a run take, all together: the arena."""
        return self.arena_floats * FLOAT_BYTES


def make_plan(graph: Graph, batch: int, input_hw: tuple[int, int], check_weights: bool = True) -> Plan:
    """The plan for `batch` images of `input_hw`. Raises the ShapeError of `infer_shapes`
    (naming the layer) when the input does not fit; `check_weights=False` plans a graph
    whose weights are not attached yet."""
    scales = batch_scales(graph)
    shapes = {name: (_images(batch, scales[name]), *shape)
              for name, shape in infer_shapes(graph, tuple(input_hw), check_weights).items()}
    layers = graph.layers()
    last_use = _last_uses(layers)
    offset_of, arena_floats = _place_values(layers, shapes, last_use, graph.output.name)
    return Plan(graph.input.name, graph.output.name, shapes, last_use, offset_of, arena_floats,
                stored_channels_last(graph))


def _images(batch: int, scale: Fraction) -> int:
    """A value's batch: the input's times its scale (shift-and-stitch's copies)."""
    images = batch * scale
    if images.denominator != 1:
        raise GraphconvError(f"a batch of {batch} cannot be split into {1 / scale} parts")
    return int(images)


def _last_uses(layers: list[Node]) -> dict[str, int]:
    last_use: dict[str, int] = {}
    for index, node in enumerate(layers):
        last_use[node.name] = index
        for src in node.inputs:
            last_use[src.name] = index
    return last_use


def _place_values(layers: list[Node], shapes: dict[str, Shape4], last_use: dict[str, int],
                  output: str) -> tuple[dict[str, int], int]:
    """Each intermediate value's offset in one arena, and the arena's size (floats).

    A value lives from the layer that writes it to its last reader, both included, so
    no layer writes over one of its inputs; two values may share memory only where
    their lives do not meet. Greedy by size (Pisarchyk and Lee, 2020, as TFLite's arena
    planner): the largest value first, each into the smallest gap between the values
    already placed whose lives meet its own, or above them all. The buffers this
    replaced, each reused whole by the next value that fitted, let DenseNet's 32-channel
    outputs each hold a freed map several times their size until their block ended:
    its plan at 2048x2048 took 2692 MB where 576 MB are live at once (now 608)."""
    values = sorted(((index, node.name) for index, node in enumerate(layers) if node.name != output),
                    key=lambda value: (-_size(shapes[value[1]]), value[0]))
    first, last, offset, size = (np.zeros(len(values), np.int64) for _ in range(4))
    offset_of: dict[str, int] = {}
    for placed, (index, name) in enumerate(values):
        need = -(-_size(shapes[name]) // ALIGN_FLOATS) * ALIGN_FLOATS
        meets = (first[:placed] <= last_use[name]) & (last[:placed] >= index)
        offset_of[name] = _smallest_gap(offset[:placed][meets], size[:placed][meets], need)
        first[placed], last[placed], offset[placed], size[placed] = index, last_use[name], offset_of[name], need
    return offset_of, int((offset + size).max(initial=0))


def _smallest_gap(offsets: np.ndarray, sizes: np.ndarray, need: int) -> int:
    """Where `need` floats go among blocks at `offsets` of `sizes` (which may overlap one
    another): the start of the smallest free gap that holds them, else above the highest."""
    best, best_size, reached = None, 0, 0
    order = np.argsort(offsets, kind="stable")
    for at, length in zip(offsets[order].tolist(), sizes[order].tolist()):
        if at - reached >= need and (best is None or at - reached < best_size):
            best, best_size = reached, at - reached
        reached = max(reached, at + length)
    return reached if best is None else best


@dataclass
class Step:
    """One layer bound to the backend: its call (`Backend.bind`: the kernel with the layer's
    params and its weights as the kernel keeps them) and the values it reads."""

    name: str
    call: Callable[[list, Any], None]
    weights: dict[str, Any]
    inputs: list[str]


class Executor:
    """A graph bound to one device, ready to run on inputs of any batch and size.

    It owns the activation arena its plans share, so one Executor runs one batch at a
    time: a lock makes concurrent calls wait rather than share them."""

    def __init__(self, graph: Graph, device: str = "cpu", fuse_blocks: bool = True):
        """`fuse_blocks`: let the CPU backend run chains of layers as one
        (`passes/fuse_inverted_residual.py`), on a copy of `graph`; their inner layers
        are then no steps of their own, which a run's `taps` cannot name."""
        self.backend: Backend = resolve_backend(device)
        self.backend.check_process()
        self.graph = self._bound_graph(graph, fuse_blocks)
        self.steps = [self._bind(node) for node in self._layers()]
        self._plans: OrderedDict[tuple[int, int, int], Plan] = OrderedDict()
        self._arena: Any = None  # every plan's intermediate values (`Plan.offset_of`), as large as the largest asks
        self._replaced_arenas = 0  # by larger ones, over the Executor's life
        self._bound: dict[tuple[int, int, int], tuple[Any, dict[str, Any], list]] = {}  # see `_bound_calls`
        self._run_values: dict[tuple[int, int, int], tuple[Any, Any]] = {}  # see `_input_and_output`
        self._lock = threading.RLock()  # run holds it while it asks plan

    def _bound_graph(self, graph: Graph, fuse_blocks: bool) -> Graph:
        """The graph this backend runs: a copy of `graph` (the caller's keeps its layers and
        annotations, and may be edited after; weights are shared: 0.5 ms for VGG-16), its
        `binding_passes` run on it, on the CPU fusing inverted-residual blocks and marking
        the values stored channels-last. Without `fuse_blocks`, no blocks are fused: a
        run's `taps` name their inner layers."""
        bound = graph.copy()
        for name in self.backend.binding_passes:
            if fuse_blocks or name != "fuse-inverted-residual":
                get_pass(name).run(bound)
        return bound

    @property
    def device(self) -> str:
        return self.backend.name

    def _layers(self) -> list[Node]:
        layers = self.graph.layers()
        if not layers:
            raise GraphconvError("the network has no layers: its output would be its input")
        return layers

    def _bind(self, node: Node) -> Step:
        try:
            self.backend.kernel(node.opdef)  # an op with no kernel here is the user's error, named at the layer
            weights = self.backend.prepare_weights(node.opdef, node.params, node.weights)
            call = self.backend.bind(node.opdef, node.params, weights)
        except GraphconvError as err:
            raise node.error(err.message) from None
        return Step(node.name, call, weights, [src.name for src in node.inputs])

    def plan(self, batch: int, height: int, width: int) -> Plan:
        """The plan for `batch` images of height x width, made on first use.

        Plans for the PLANS_KEPT most recently run sizes are kept: callers alternate
        between a few (a multi-scale pyramid, shift-and-stitch's batch, tiles and the
        edge tiles), and making a plan again costs little (0.4 ms for AlexNet, 0.6 ms
        for VGG-16: a shape inference), but a server fed images of every size must not
        keep a plan per size forever.
        The arena is not the plans': every plan shares the Executor's, grown to the
        largest size any plan asked of it."""
        key = (batch, height, width)
        with self._lock:
            if key in self._plans:
                self._plans.move_to_end(key)
                return self._plans[key]
            try:
                plan = make_plan(self.graph, batch, (height, width))
            except ShapeError as err:
                raise GraphconvError(f"input of {height}x{width} does not fit the network: {err}") from None
            self._plans[key] = plan
            if len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
            return plan

    def run(self, x: np.ndarray, profile: dict[str, float] | None = None, out: Any = None,
            taps: dict[str, np.ndarray | None] | None = None) -> Any:
        """Run on (N, C, H, W) float32 input; `profile`, if given, collects seconds per layer.

        The output goes into `out` when given (and `out` is returned): a host array of
        the planned output shape, any strides (a view into a larger map), or an array of
        this device's. Otherwise it is a new host array, the caller's to keep.

        `taps`, if given, names layers (its keys) whose values this run also returns in
        it, as host NCHW copies: their memory in the arena is overwritten later in the
        run, and `verify` compares many layers' maps at once (`dense._padding_effects`)."""
        x = self._checked_input(x)
        self.backend.check_process()
        self._check_taps(taps)
        with self._lock:
            key = (x.shape[0], x.shape[2], x.shape[3])
            plan = self.plan(*key)
            if out is not None:
                self._check_out(out, plan.output_shape)
            views, calls = self._bound_calls(key, plan)
            values = dict(views)
            values[plan.input], values[plan.output] = self._input_and_output(key, plan, x, out)
            for step, call in zip(self.steps, calls):
                start = time.perf_counter() if profile is not None else 0.0
                if call is None:
                    step.call([values[i] for i in step.inputs], values[step.name])
                else:
                    call()
                if profile is not None:
                    self.backend.synchronize()
                    profile[step.name] = profile.get(step.name, 0.0) + time.perf_counter() - start
                if taps is not None and step.name in taps:
                    taps[step.name] = self.backend.to_host(values[step.name],
                                                           np.empty(plan.shapes[step.name], np.float32))
            result = values[plan.output]
        return out if result is out else self.backend.to_host(result, out)

    def _input_and_output(self, key: tuple[int, int, int], plan: Plan, x: np.ndarray, out: Any) -> tuple[Any, Any]:
        """The run's input on the device and the array its last layer writes: `out`
        itself where the kernels can write into it; else a new array the caller keeps
        (the CPU's); or, where the backend copies a run's values in and out (the GPU),
        one input and one output array kept per plan, so a run allocates nothing."""
        direct = out is not None and self.backend.can_write_into(out)
        if not self.backend.copies_run_values:
            return self.backend.to_device(x), out if direct else self.backend.empty(plan.output_shape)
        if key not in self._run_values:
            self._run_values = {k: v for k, v in self._run_values.items() if k in self._plans}
            self._run_values[key] = (self.backend.empty(x.shape), self.backend.empty(plan.output_shape))
        staged_input, staged_output = self._run_values[key]
        return self.backend.to_device(x, into=staged_input), out if direct else staged_output

    def _check_taps(self, taps: dict | None) -> None:
        """A tapped layer must be a step: not one that runs inside a fused block."""
        missing = sorted(set(taps or ()) - {step.name for step in self.steps})
        if missing:
            raise ValueError(f"no layer {missing[0]!r} runs in this Executor (a layer fused into a block is no step "
                             "of its own: make it with fuse_blocks=False to tap it)")

    def _checked_input(self, x: np.ndarray) -> np.ndarray:
        """The input as contiguous float32, or a GraphconvError for arrays of the wrong rank
        or channel count (sizes the network cannot take are `plan`'s to reject)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        c = self.graph.input_shape[0]
        if x.ndim != 4 or x.shape[1] != c:
            raise GraphconvError(f"input must be (N, {c}, H, W) or ({c}, H, W) float32, got shape "
                                 f"{tuple(x.shape)}")
        return x

    def _check_out(self, out: Any, shape: Shape4) -> None:
        if tuple(getattr(out, "shape", ())) != shape or getattr(out, "dtype", None) != np.float32:
            raise GraphconvError(f"out must be a float32 array of shape {shape}, got "
                                 f"{getattr(out, 'dtype', type(out).__name__)} "
                                 f"{tuple(getattr(out, 'shape', ()))}")
        if not (self.backend.can_write_into(out)
                or isinstance(out, np.ndarray) and out.flags.writeable):
            raise GraphconvError(f"out must be a writable numpy array or a C-contiguous "
                                 f"{self.device} array")

    def _bound_calls(self, key: tuple[int, int, int],
                     plan: Plan) -> tuple[dict[str, Any], list[Callable[[], None] | None]]:
        """The plan's arena views (every intermediate value, as its layer writes it) and,
        per layer, its call bound to them: made once per plan, for the layers whose call
        has `bind_values` (the CPU conv's: its views, job split and thread count worked
        out once, not per run; on the GPU, `BoundLaunches`': the configured launches and
        their arguments) and that read and write only the arena (not the caller's
        input, not the output); None for the others, which run `Step.call` each time.
        Kept while the arena and the backend's `binding_state` (the CPU's thread
        count) stay what they were."""
        state = self.backend.binding_state()
        kept = self._bound.get(key)
        if kept is not None and kept[0] == state:
            return kept[1], kept[2]
        replaced = self._replaced_arenas
        arena = self._arena_of(plan.arena_floats)
        views = {name: self._stored(arena[offset:], plan, name) for name, offset in plan.offset_of.items()}
        if self._replaced_arenas > replaced:
            release_freed_memory()  # the arena replaced, and the smaller runs' scratch (allocator.py)
        calls = [self._bind_values(step, views) for step in self.steps]
        self._bound = {k: v for k, v in self._bound.items() if k in self._plans}
        self._bound[key] = (state, views, calls)
        return views, calls

    @staticmethod
    def _bind_values(step: Step, views: dict[str, Any]) -> Callable[[], None] | None:
        bind_values = getattr(step.call, "bind_values", None)
        if bind_values is None or not all(name in views for name in (*step.inputs, step.name)):
            return None
        return bind_values([views[name] for name in step.inputs], views[step.name])

    def _stored(self, buffer: Any, plan: Plan, name: str) -> Any:
        """Value `name` at the start of `buffer` (the arena from the value's offset): an NCHW
        array, or an NCHW-shaped view of channels-last storage where the plan says so and
        this backend stores values that way."""
        shape = plan.shapes[name]
        if self.backend.stores_channels_last and name in plan.channels_last:
            return layout.view(buffer, shape)
        return buffer[:_size(shape)].reshape(shape)

    def release_memory(self) -> bool:
        """Let go of the arena and the values bound to it (the next run makes them again),
        unless a run holds them now (False): a Dask worker that outlives its runs kept the
        largest tile's activations of each model it ran (`cluster.memory_held_between_runs`)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._arena, self._run_values = None, {}
            self._bound.clear()
        finally:
            self._lock.release()
        return True

    def _arena_of(self, floats: int) -> Any:
        """The arena, made (or remade larger) on first need and kept for later runs. The
        one it replaces is let go first: made while the old one was still held, a tiled
        run's tile of 4080x4032 pixels after one of 4032x4080 held both arenas at once,
        380 MB over its memory budget."""
        if self._arena is None or self._arena.size < floats:
            if self._arena is not None:
                self._replaced_arenas += 1
            self._arena = None
            self._bound.clear()  # their calls hold views of the arena this replaces
            self._arena = self.backend.empty((max(floats, 1),))
        return self._arena


def _size(shape: Shape4) -> int:
    return math.prod(shape)  # np.prod costs microseconds per call


def run_reference(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The whole network through the ops' numpy references: the oracle for kernel tests."""
    values = {graph.input.name: np.asarray(x, dtype=np.float32)}
    for node in graph.layers():
        values[node.name] = node.opdef.reference(node.params, node.weights,
                                                 [values[i.name] for i in node.inputs])
    return values[graph.output.name]
