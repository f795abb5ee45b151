"""How a value is stored, NCHW or channels-last: the annotation the `channels-last` pass
sets and the views the runtime makes of its buffers (`graphconv.ops.channels_last` says
why values are stored that way, and holds the kernels that convert between the two).

Plain Python and numpy, no kernel: the runtime, the profiler and the passes import it,
and importing them must not compile anything with numba, so that
`graphconv.configure_process()` can still set how numba compiles (graphconv/vector_width.py).
"""
from __future__ import annotations

import math

import numpy as np

LAYOUT = "layout"  # the node annotation the `channels-last` pass sets
CHANNELS_LAST = "channels-last"  # its value; a value without it is stored NCHW


def nhwc(a: np.ndarray) -> np.ndarray | None:
    """The C-contiguous (N, H, W, C) array behind `a`, an NCHW-shaped view of a value
    stored channels-last; None for any other array, including one that is NCHW as well
    (one channel, or one pixel per image: both orders are the same memory)."""
    if a.ndim != 4 or a.flags.c_contiguous:
        return None
    t = a.transpose(0, 2, 3, 1)
    return t if t.flags.c_contiguous else None


def is_channels_last(a: np.ndarray) -> bool:
    return nhwc(a) is not None


def stored_channels_last(graph) -> frozenset[str]:
    """The values of a `graphconv.ir.Graph` the pass marked, which the CPU runtime stores channels-last."""
    return frozenset(node.name for node in graph.layers() if node.annotations.get(LAYOUT) == CHANNELS_LAST)


def view(buffer: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """An NCHW-shaped view of the first N*C*H*W floats of a flat buffer, stored channels-last."""
    n, c, h, w = shape
    return buffer[:math.prod(shape)].reshape(n, h, w, c).transpose(0, 3, 1, 2)
