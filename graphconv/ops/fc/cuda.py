"""CUDA fc: the conv implicit-GEMM kernel with a kernel covering the whole input map."""
from __future__ import annotations

from graphconv.ops.conv.cuda import conv_on_device


def run_fc(params: dict, weights: dict, inputs: list) -> object:
    x = inputs[0]
    _, c, h, w = x.shape
    return conv_on_device(x, weights["weight"], weights.get("bias"), h, w, 1, (1, 1), (0, 0), (1, 1), False)
