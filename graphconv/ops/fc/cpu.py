"""CPU fc: (batch x in) @ (in x out) with the bias (and nothing else) added.

Large weights at a small batch go through the weight-streaming product of
`gemm_cpu` (each weight is read once and used batch times, so BLAS's packing would
dominate); everything else is one BLAS SGEMM.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from graphconv.ops import vector_tile
from graphconv.ops.gemm_cpu import prefers_stream, stream_matmul, stream_width


@njit(cache=True)
def _fc_stream(x2d, weight, bias, out2d, wide, lanes):
    n, k = x2d.shape
    cols = np.zeros((k, stream_width(n)), np.float32)
    cols[:, :n] = x2d.T
    stream_matmul(weight, bias, False, cols, n, 1, 0, out2d.reshape(n, weight.shape[0], 1), False, wide, lanes)


def _fc_blas(x2d, weight, bias, out2d):
    np.matmul(x2d, weight.T, out=out2d)
    out2d += bias


def run_fc(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x = inputs[0]
    weight = weights["weight"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(weight.shape[0], np.float32)
    x2d = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    out2d = out.reshape(x.shape[0], weight.shape[0])  # a view: out is C-contiguous
    if prefers_stream(x.shape[0], weight.size):
        _fc_stream(x2d, weight, bias, out2d, vector_tile.WIDE_TILES, vector_tile.STREAM_LANES)
    else:
        _fc_blas(x2d, weight, bias, out2d)
