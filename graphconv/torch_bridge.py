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
from graphconv.ops import pair

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # optional: only the callers that need torch fail
    torch = None


def torch_forward(graph: Graph, x: np.ndarray, profile: dict[str, float] | None = None) -> np.ndarray:
    """The graph's output on x (N, C, H, W), every layer computed by torch on the CPU;
    `profile`, if given, collects seconds per layer like `Executor.run`."""
    return TorchRunner(graph).run(x, profile)


class TorchRunner:
    """A graph bound to a torch device, weights converted once (for timing on a GPU)."""

    def __init__(self, graph: Graph, device: str = "cpu"):
        if torch is None:
            raise GraphconvError("PyTorch is not installed (pip install 'graphconv[test]')")
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


def _tensor(a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a))


def _layer(node, w, args):
    p = node.params
    bias = w.get("bias")
    if node.op == "conv":
        y = F.conv2d(args[0], w["weight"], bias, stride=pair(p["stride"]),
                     padding=pair(p["padding"]), dilation=pair(p["dilation"]), groups=p["groups"])
        return F.relu(y) if p["activation"] == "relu" else y
    if node.op == "maxpool":
        return F.max_pool2d(args[0], pair(p["kernel_size"]), pair(p["stride"]), pair(p["padding"]),
                            pair(p["dilation"]))
    if node.op == "avgpool":
        if pair(p["dilation"]) != (1, 1):
            raise GraphconvError(f"layer '{node.name}': PyTorch has no dilated average pooling")
        return F.avg_pool2d(args[0], pair(p["kernel_size"]), pair(p["stride"]), pair(p["padding"]))
    if node.op == "fc":
        return F.linear(args[0].flatten(1), w["weight"], bias)[:, :, None, None]
    if node.op == "lrn":
        return F.local_response_norm(args[0], p["size"], p["alpha"], p["beta"], p["k"])
    if node.op == "relu":
        return F.relu(args[0])
    if node.op == "dropout":
        return args[0]
    if node.op == "softmax":
        return F.softmax(args[0], dim=1)
    if node.op == "concat":
        return torch.cat(args, dim=1)
    if node.op == "add":
        return sum(args[1:], args[0])
    raise GraphconvError(f"layer '{node.name}': no PyTorch equivalent for op '{node.op}'")
