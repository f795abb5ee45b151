"""CPU softsign: one parallel pass over a value's memory, however it is stored."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels_last import memory_stored_alike
from graphconv.ops.fast_math import CONTRACT, ONE


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _softsign(x, out):
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        v = src[i]
        dst[i] = v / (ONE + abs(v))


def run_softsign(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _softsign(*memory_stored_alike(inputs[0], out))
