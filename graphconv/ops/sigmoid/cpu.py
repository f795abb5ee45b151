"""CPU sigmoid: one parallel pass over memory."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _sigmoid(x, out):
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        dst[i] = 1.0 / (1.0 + math.exp(-src[i]))


def run_sigmoid(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _sigmoid(np.ascontiguousarray(inputs[0]), out)
