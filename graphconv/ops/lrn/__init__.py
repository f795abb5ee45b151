"""lrn: cross-channel local response normalisation (torch.nn.functional.local_response_norm).

b_c = a_c / (k + alpha / size * sum of a_j^2 over j in [c - size//2, c + (size-1)//2]) ** beta
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.ops.registry import Example, OpDef, Param, numel, register


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    size = params["size"]
    sq = np.pad(x * x, ((0, 0), (size // 2, (size - 1) // 2), (0, 0), (0, 0)))
    window_sum = sum(sq[:, j:j + x.shape[1]] for j in range(size))
    return (x / (params["k"] + params["alpha"] / size * window_sum) ** params["beta"]).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.local_response_norm(inputs[0], params["size"], params["alpha"], params["beta"],
                                 params["k"])


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """ONNX's LRN centres an even window one channel later than PyTorch's (and Caffe's),
    and onnxruntime refuses even sizes, so only odd sizes export."""
    if params["size"] % 2 == 0:
        raise GraphconvError(f"lrn of even size {params['size']} has no ONNX form (ONNX centres "
                             "even windows differently)")
    writer.node("LRN", inputs, output, size=params["size"], alpha=params["alpha"], beta=params["beta"],
                bias=params["k"])


register(OpDef(
    name="lrn", doc="local response normalisation across channels",
    params=(Param("size", "int"), Param("alpha", "float", 1e-4), Param("beta", "float", 0.75),
            Param("k", "float", 1.0)),
    shape=lambda params, shapes: shapes[0],
    reference=reference,
    flops=lambda params, shapes, out: numel(out) * (params["size"] + 4),
    package=__name__, torch=torch_equivalent, onnx=to_onnx,
    examples=(
        Example(dict(size=3, alpha=0.1, beta=0.75, k=2.0), [(5, 3, 2)]),
        Example(dict(size=2, alpha=0.5, beta=1.0), [(4, 2, 3)]),  # even: reaches one channel further back
        Example(dict(size=5), [(3, 2, 2)]),  # a window wider than the channels
    ),
))
