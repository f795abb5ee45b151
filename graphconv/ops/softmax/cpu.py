"""CPU softmax and log_softmax over channels, parallel over (image, row), numerically
stable; a grouped softmax runs on the (N, g, C/g, H*W) view (`grouped_view`)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.softmax import grouped_view


@njit(cache=True, parallel=True)
def _softmax(x, out, log):
    """softmax over axis 1 of x, or with `log` its logarithm, (x - max) - log(sum)."""
    n, c, height, width = x.shape
    for job in prange(n * height):
        b = job // height
        y = job % height
        for xx in range(width):
            m = x[b, 0, y, xx]
            for ch in range(1, c):
                m = max(m, x[b, ch, y, xx])
            total = 0.0
            for ch in range(c):
                e = np.exp(x[b, ch, y, xx] - m)
                if not log:
                    out[b, ch, y, xx] = e
                total += e
            if log:
                shift = np.log(total)
                for ch in range(c):
                    out[b, ch, y, xx] = (x[b, ch, y, xx] - m) - shift
                continue
            inv = 1.0 / total
            for ch in range(c):
                out[b, ch, y, xx] *= inv


def run_softmax(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    groups = params["groups"]
    _softmax(grouped_view(np.ascontiguousarray(inputs[0]), groups), grouped_view(out, groups), False)


def run_log_softmax(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _softmax(np.ascontiguousarray(inputs[0]), out, True)
