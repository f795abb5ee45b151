"""CPU maximum: one parallel pass over the inputs' memory, stored as the output is (an
input stored otherwise is copied to match)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels_last import as_stored_like, stored_memory


@njit(cache=True, parallel=True)
def _maximum(a, b, out):
    src_a, src_b, dst = a.ravel(), b.ravel(), out.reshape(-1)  # reshape: a view, never a copy
    for i in prange(dst.size):
        u, v = src_a[i], src_b[i]
        dst[i] = u if u >= v or u != u else v  # NaN in either gives NaN


@njit(cache=True, parallel=True)
def _maximum_into(total, x):
    dst, src = total.reshape(-1), x.ravel()
    for i in prange(dst.size):
        u, v = dst[i], src[i]
        dst[i] = u if u >= v or u != u else v


def run_maximum(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    first, second, *rest = (stored_memory(as_stored_like(x, out)) for x in inputs)
    result = stored_memory(out)
    _maximum(first, second, result)
    for x in rest:
        _maximum_into(result, x)
