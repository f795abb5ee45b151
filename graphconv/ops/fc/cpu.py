"""CPU fc: a single SGEMM (batch x in) @ (in x out) through BLAS, bias added in place."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _fc(x2d, weight, bias):
    y = np.dot(x2d, weight.T)
    y += bias
    return y


def run_fc(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    weight = weights["weight"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(weight.shape[0], np.float32)
    y = _fc(np.ascontiguousarray(x).reshape(x.shape[0], -1), weight, bias)
    return y.reshape(x.shape[0], weight.shape[0], 1, 1)
