"""How CPU conv strategies end: a run of sums to the NCHW output with bias, residual and ReLU."""
from __future__ import annotations

import numpy as np
from numba import njit

from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, inline="always")
def store_run(sums, at, step, bias_value, flat_res, flat_out, dst, count, residual, relu):
    """flat_out[dst + j] = act(sums[at + j * step] + bias_value (+ flat_res[dst + j])) for j <
    count: one output channel's run of pixels, the way `pointwise` and `outer` write their
    per-job sums (`winograd`'s runs are 2 pixels long; written this way they were slower). Flat arrays and unsigned indices, where the 3-d output indexed
    with a signed pixel index kept the loop scalar; `pointwise` on ResNet-50's residual
    layers, alternating in one process: 64->256 at 56x56 1.48 -> 0.91 ms, 128->512 at 28x28
    0.98 -> 0.73, 256->1024 at 14x14 0.78 -> 0.66 (the others level)."""
    if residual:
        for j in range(count):
            v = sums[unsigned(at + j * step)] + bias_value + flat_res[unsigned(dst + j)]
            flat_out[unsigned(dst + j)] = max(v, np.float32(0.0)) if relu else v
    else:
        for j in range(count):
            v = sums[unsigned(at + j * step)] + bias_value
            flat_out[unsigned(dst + j)] = max(v, np.float32(0.0)) if relu else v
