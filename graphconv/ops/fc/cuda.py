"""CUDA fc: the conv implicit-GEMM kernel with a kernel covering the whole input map."""
from __future__ import annotations

from graphconv.ops.conv.cuda import conv_on_device


def run_fc(params: dict, weights: dict, inputs: list, out) -> None:
    x = inputs[0]
    _, _, h, w = x.shape
    conv_on_device(x, weights["weight"], weights.get("bias"), h, w, 1, (1, 1), (0, 0), (1, 1), False, out)
