"""CPU sigmoid: one parallel pass over memory."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _sigmoid(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in prange(flat.size):
        out[i] = 1.0 / (1.0 + math.exp(-flat[i]))
    return out.reshape(x.shape)


def run_sigmoid(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _sigmoid(np.ascontiguousarray(inputs[0]))
