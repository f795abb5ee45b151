"""CPU space_to_depth: one output plane per parallel job, copied from the input channel
and patch offset `source_channel` names (a strided walk of the input plane)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import space_to_depth

source_channel = njit(cache=True, inline="always")(space_to_depth.source_channel)


@njit(cache=True, parallel=True)
def _space_to_depth(x, block, channels_first, out):
    n, c_out, rows, cols = out.shape
    c = x.shape[1]
    for job in prange(n * c_out):
        b, oc = job // c_out, job % c_out
        ic, dy, dx = source_channel(oc, c, block, channels_first)
        for y in range(rows):
            for j in range(cols):
                out[b, oc, y, j] = x[b, ic, y * block + dy, j * block + dx]


def run_space_to_depth(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _space_to_depth(np.ascontiguousarray(inputs[0]), params["block"], params["order"] == "channels", out)
