"""CPU fc: (batch x in) @ (in x out) with the bias (and nothing else) added.

Large weights at a small batch go through the weight-streaming product of
`gemm_cpu` (each weight is read once and used batch times, so BLAS's packing would
dominate); everything else is one BLAS SGEMM.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from graphconv.ops.gemm_cpu import prefers_stream, stream_matmul, stream_width


@njit(cache=True)
def _fc_stream(x2d, weight, bias):
    n, k = x2d.shape
    cols = np.zeros((k, stream_width(n)), np.float32)
    cols[:, :n] = x2d.T
    out = np.empty((n, weight.shape[0], 1), np.float32)
    stream_matmul(weight, bias, False, cols, n, 1, 0, out)
    return out


def _fc_blas(x2d, weight, bias):
    y = x2d @ weight.T
    y += bias
    return y


def run_fc(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    weight = weights["weight"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(weight.shape[0], np.float32)
    x2d = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    y = (_fc_stream if prefers_stream(x.shape[0], weight.size) else _fc_blas)(x2d, weight, bias)
    return y.reshape(x.shape[0], weight.shape[0], 1, 1)
