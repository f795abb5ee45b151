"""CPU channel moves: each output channel a contiguous copy of its source channel."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels import source_rule


@njit(cache=True, parallel=True)
def _gather_channels(x, groups, per_group, start, out):
    n, c = out.shape[0], out.shape[1]
    for job in prange(n * c):
        b = job // c
        ch = job % c
        out[b, ch] = x[b, (ch % groups) * per_group + ch // groups + start]


def _gather(op: str, params: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x = np.ascontiguousarray(inputs[0])
    _gather_channels(x, *source_rule(op, params, x.shape[1]), out)


def run_channel_shuffle(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _gather("channel_shuffle", params, inputs, out)


def run_slice_channels(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _gather("slice_channels", params, inputs, out)
