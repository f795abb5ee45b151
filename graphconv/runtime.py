"""Executes an IR graph with the ops' compiled kernels.

Kernels and (for CUDA) device-resident weights are resolved once per `Executor`;
a run then walks the layers in topological order, handing each kernel its inputs
and dropping every intermediate after its last use so memory stays near the two
largest live activations. On CUDA, activations never leave the device: one copy in,
one copy out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.ir import Graph
from graphconv.ops import OpDef
from graphconv.shapes import infer_shapes

DEVICES = ("cpu", "cuda", "auto")


def cuda_status() -> str | None:
    """None when CUDA kernels can run (a GPU, or numba's simulator); else why not."""
    try:
        from numba import cuda
    except ImportError:
        return "numba-cuda is not installed (pip install 'graphconv[cuda]')"
    try:
        if cuda.is_available():
            return None
    except Exception as err:  # the driver itself can fail to load
        return f"the CUDA driver failed: {err}"
    return ("no CUDA GPU was found (set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels "
            "on numba's simulator)")


def resolve_device(device: str) -> str:
    """Map 'auto' to 'cuda' when a GPU is usable, else 'cpu'; reject an unusable 'cuda'."""
    if device not in DEVICES:
        raise GraphconvError(f"unknown device '{device}' (choose from {', '.join(DEVICES)})")
    if device == "cpu":
        return "cpu"
    problem = cuda_status()
    if device == "auto":
        return "cpu" if problem else "cuda"
    if problem:
        raise GraphconvError(f"--device cuda: {problem}")
    return "cuda"


@dataclass
class Step:
    name: str
    opdef: OpDef
    kernel: Callable
    params: dict
    weights: dict[str, Any]
    inputs: list[str]
    frees: list[str]  # values whose last use is this step


class Executor:
    """A graph bound to one device, ready to run on inputs of any batch and size."""

    def __init__(self, graph: Graph, device: str = "cpu"):
        self.graph = graph
        self.device = resolve_device(device)
        if self.device == "cuda":
            from graphconv import cuda_backend
            self._backend = cuda_backend
        else:
            self._backend = None
        self.steps = self._plan()
        self._shapes_checked: set[tuple] = set()

    def _plan(self) -> list[Step]:
        layers = self.graph.layers()
        output = self.graph.output.name
        last_use: dict[str, int] = {}
        for index, node in enumerate(layers):
            for src in node.inputs:
                last_use[src.name] = index
        steps = []
        for index, node in enumerate(layers):
            if self._backend is not None:
                weights = self._backend.upload_weights(node.weights)
            else:  # kernels reshape weights; a contiguous array makes that free on every run
                weights = {k: np.ascontiguousarray(v, np.float32) for k, v in node.weights.items()}
                weights = node.opdef.prepare(self.device, node.params, weights)
            frees = [name for name, last in last_use.items() if last == index and name != output]
            steps.append(Step(node.name, node.opdef, node.opdef.kernel(self.device), node.params,
                              weights, [i.name for i in node.inputs], frees))
        return steps

    def check_input(self, x: np.ndarray) -> None:
        """Reject arrays the network cannot take, naming the layer that cannot fit them."""
        c = self.graph.input_shape[0]
        if x.ndim != 4 or x.shape[1] != c:
            raise GraphconvError(f"input must be (N, {c}, H, W) or ({c}, H, W) float32, got shape "
                                 f"{tuple(x.shape)}")
        key = tuple(x.shape[2:])
        if key not in self._shapes_checked:
            try:
                infer_shapes(self.graph, key)
            except GraphconvError as err:
                raise GraphconvError(f"input of {key[0]}x{key[1]} does not fit the network: {err}") from None
            self._shapes_checked.add(key)

    def run(self, x: np.ndarray, profile: dict[str, float] | None = None) -> np.ndarray:
        """Run on (N, C, H, W) float32; `profile`, if given, collects seconds per layer."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        if self._backend is not None:
            x = self._backend.to_device(x)
        values: dict[str, Any] = {self.graph.input.name: x}
        for step in self.steps:
            start = time.perf_counter() if profile is not None else 0.0
            values[step.name] = step.kernel(step.params, step.weights, [values[i] for i in step.inputs])
            if profile is not None:
                if self._backend is not None:
                    self._backend.synchronize()
                profile[step.name] = profile.get(step.name, 0.0) + time.perf_counter() - start
            for name in step.frees:
                del values[name]
        result = values[self.graph.output.name]
        return self._backend.to_host(result) if self._backend is not None else result


def run_reference(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The whole network through the ops' numpy references: the oracle for kernel tests."""
    values = {graph.input.name: np.asarray(x, dtype=np.float32)}
    for node in graph.layers():
        values[node.name] = node.opdef.reference(node.params, node.weights,
                                                 [values[i.name] for i in node.inputs])
    return values[graph.output.name]
