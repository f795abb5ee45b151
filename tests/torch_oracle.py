"""Evaluate an IR graph with PyTorch's own ops: the independent oracle for whole networks."""
import numpy as np

from graphconv.ops import pair

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def torch_forward(graph, x: np.ndarray) -> np.ndarray:
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    values = {graph.input.name: t(x)}
    for node in graph.layers():
        p, w = node.params, node.weights
        args = [values[i.name] for i in node.inputs]
        if node.op == "conv":
            y = F.conv2d(args[0], t(w["weight"]), t(w["bias"]) if "bias" in w else None,
                         stride=pair(p["stride"]), padding=pair(p["padding"]),
                         dilation=pair(p["dilation"]), groups=p["groups"])
            y = F.relu(y) if p["activation"] == "relu" else y
        elif node.op == "maxpool":
            y = F.max_pool2d(args[0], pair(p["kernel_size"]), pair(p["stride"]), pair(p["padding"]),
                             pair(p["dilation"]))
        elif node.op == "avgpool":
            assert pair(p["dilation"]) == (1, 1)
            y = F.avg_pool2d(args[0], pair(p["kernel_size"]), pair(p["stride"]), pair(p["padding"]))
        elif node.op == "fc":
            y = F.linear(args[0].flatten(1), t(w["weight"]), t(w["bias"]) if "bias" in w else None)[:, :, None, None]
        elif node.op == "lrn":
            y = F.local_response_norm(args[0], p["size"], p["alpha"], p["beta"], p["k"])
        elif node.op == "relu":
            y = F.relu(args[0])
        elif node.op == "dropout":
            y = args[0]
        elif node.op == "softmax":
            y = F.softmax(args[0], dim=1)
        elif node.op == "concat":
            y = torch.cat(args, dim=1)
        elif node.op == "add":
            y = sum(args[1:], args[0])
        else:
            raise NotImplementedError(node.op)
        values[node.name] = y
    return values[graph.output.name].numpy()
