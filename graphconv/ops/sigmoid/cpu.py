"""CPU sigmoid: one parallel pass over memory, with `fast_math`'s vectorisable form."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
from numba import njit, prange

from graphconv.ops.binding import BoundCall
from graphconv.ops.fast_math import sigmoid32


@njit(cache=True, parallel=True)
def _sigmoid(x, out):
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        dst[i] = sigmoid32(src[i])


def run_sigmoid(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _sigmoid(np.ascontiguousarray(inputs[0]), out)


def bind_sigmoid(params: dict, weights: dict) -> BoundCall:
    return BoundCall(_sigmoid_call)


def _sigmoid_call(inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
    x = inputs[0]
    if x.flags.c_contiguous:
        return partial(_sigmoid, x, out)
    return partial(run_sigmoid, {}, {}, inputs, out)
