"""CPU kernels for the pointwise ops; each is one parallel pass over memory."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _relu(x):
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in prange(flat.size):
        out[i] = max(flat[i], 0.0)
    return out.reshape(x.shape)


@njit(cache=True, parallel=True)
def _accumulate(total, x):
    a = total.ravel()
    b = x.ravel()
    for i in prange(a.size):
        a[i] += b[i]


@njit(cache=True, parallel=True)
def _copy_channels(src, dst, c0):
    n, c, height, width = src.shape
    for job in prange(n * c):
        b = job // c
        ch = job % c
        for y in range(height):
            for x in range(width):
                dst[b, c0 + ch, y, x] = src[b, ch, y, x]


def run_relu(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return _relu(np.ascontiguousarray(inputs[0]))


def run_dropout(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0]


def run_add(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    total = np.array(inputs[0], dtype=np.float32, copy=True, order="C")
    for x in inputs[1:]:
        _accumulate(total, np.ascontiguousarray(x))
    return total


def run_concat(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    n, _, height, width = inputs[0].shape
    out = np.empty((n, sum(x.shape[1] for x in inputs), height, width), np.float32)
    c0 = 0
    for x in inputs:
        _copy_channels(np.ascontiguousarray(x), out, c0)
        c0 += x.shape[1]
    return out
