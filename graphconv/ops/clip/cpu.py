"""CPU clip: one parallel pass over memory. Written as two compares rather than
min(max(...)) so that NaN, which fails both, comes through as NaN as in PyTorch."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels_last import as_stored_like, stored_memory
from graphconv.ops.clip import bounds


@njit(cache=True, parallel=True)
def _clip(x, low, high, out):
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        v = src[i]
        if v < low:
            v = low
        elif v > high:
            v = high
        dst[i] = v


def run_clip(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    low, high = bounds(params)
    _clip(stored_memory(as_stored_like(inputs[0], out)), low, high, stored_memory(out))  # stored either way
