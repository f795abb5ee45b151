"""CPU depth_to_space: one output plane per parallel job, each pixel copied from the
input channel `source_channel` names for its offset in its patch."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import depth_to_space

source_channel = njit(cache=True, inline="always")(depth_to_space.source_channel)


@njit(cache=True, parallel=True)
def _depth_to_space(x, block, channels_first, out):
    n, c_out, rows, cols = out.shape
    for job in prange(n * c_out):
        b, oc = job // c_out, job % c_out
        for y in range(rows):
            for j in range(cols):
                ic = source_channel(oc, y % block, j % block, c_out, block, channels_first)
                out[b, oc, y, j] = x[b, ic, y // block, j // block]


def run_depth_to_space(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _depth_to_space(np.ascontiguousarray(inputs[0]), params["block"], params["order"] == "channels", out)
