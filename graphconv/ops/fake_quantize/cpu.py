"""CPU fake_quantize: one parallel pass over a value's memory, however it is stored."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels_last import memory_stored_alike
from graphconv.ops.fake_quantize import grid


@njit(cache=True, parallel=True)
def _fake_quantize(x, out, scale, least, most):
    """No fastmath: x / scale must stay a division (ONNX's), not a multiply by 1 / scale."""
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        steps = np.rint(src[i] / scale)  # half to even; NaN fails both compares and stays NaN
        if steps < least:
            steps = least
        elif steps > most:
            steps = most
        dst[i] = steps * scale


def run_fake_quantize(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _fake_quantize(*memory_stored_alike(inputs[0], out), *grid(params))
