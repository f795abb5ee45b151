"""Evaluate an IR graph with PyTorch's own ops.

This is the independent oracle the tests compare whole networks against, and the
baseline the benchmarks time graphconv against. PyTorch is never a dependency of
graphconv: this module needs it (`pip install 'graphconv[test]'`) and raises a
clear error when it is missing.
"""
from __future__ import annotations

import time

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.ir import Graph
from graphconv.ops import OpDef

try:
    import torch
except ImportError:  # optional: only the callers that need torch fail
    torch = None


def torch_forward(graph: Graph, x: np.ndarray, profile: dict[str, float] | None = None) -> np.ndarray:
    """The graph's output on x (N, C, H, W), every layer computed by torch on the CPU;
    `profile`, if given, collects seconds per layer like `Executor.run`."""
    return TorchRunner(graph).run(x, profile)


class TorchRunner:
    """A graph bound to a torch device, weights converted once (for timing on a GPU)."""

    def __init__(self, graph: Graph, device: str = "cpu"):
        _require_torch()
        self.graph, self.device = graph, torch.device(device)
        self.weights = {node.name: {k: _tensor(v).to(self.device) for k, v in node.weights.items()}
                        for node in graph.layers()}

    def run(self, x: np.ndarray, profile: dict[str, float] | None = None) -> np.ndarray:
        values = {self.graph.input.name: _tensor(x).to(self.device)}
        with torch.no_grad():
            for node in self.graph.layers():
                start = time.perf_counter()
                values[node.name] = _layer(node, self.weights[node.name],
                                           [values[i.name] for i in node.inputs])
                if profile is not None:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
                    profile[node.name] = profile.get(node.name, 0.0) + time.perf_counter() - start
        return values[self.graph.output.name].cpu().numpy()


def op_forward(opdef: OpDef, params: dict, weights: dict[str, np.ndarray],
               inputs: list[np.ndarray]) -> np.ndarray:
    """One op's PyTorch equivalent on numpy arrays: the per-op oracle the tests hold each
    op's numpy reference to."""
    _require_torch()
    with torch.no_grad():
        out = _equivalent(opdef)(params, {k: _tensor(v) for k, v in weights.items()},
                                 [_tensor(x) for x in inputs])
    return out.numpy()


def _require_torch() -> None:
    if torch is None:
        raise GraphconvError("PyTorch is not installed (pip install 'graphconv[test]')")


def _tensor(a: np.ndarray):
    """A tensor of its own: the graph's weights are read-only, which torch.from_numpy
    warns about (torch tensors are writable)."""
    return torch.tensor(np.ascontiguousarray(a))


def _layer(node, weights: dict, args: list):
    try:
        return _equivalent(node.opdef)(node.params, weights, args)
    except GraphconvError as err:
        raise node.error(err.message, type(err)) from None


def _equivalent(opdef: OpDef):
    if opdef.torch is None:
        raise GraphconvError(f"no PyTorch equivalent for op '{opdef.name}'")
    return opdef.torch
