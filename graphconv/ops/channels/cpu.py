"""CPU channel moves: each output channel a contiguous copy of its source channel (NCHW),
or each pixel's channels gathered from its own (channels-last)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.channels import source_rule
from graphconv.ops.channels_last import as_channels_last
from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, parallel=True)
def _gather_channels(x, groups, per_group, start, out):
    n, c = out.shape[0], out.shape[1]
    for job in prange(n * c):
        b = job // c
        ch = job % c
        out[b, ch] = x[b, (ch % groups) * per_group + ch // groups + start]


@njit(cache=True, parallel=True, boundscheck=False)
def _gather_channels_last(xh, sources, out_h):
    """out_h[n, y, x, c] = xh[n, y, x, sources[c]]: each pixel's channels gathered from
    its own, the source of each worked out once (`_sources`), not per pixel."""
    n, height, width, c_in = xh.shape
    c = out_h.shape[3]
    flat_x, flat_out = xh.reshape(-1), out_h.reshape(-1)
    for pixel in prange(n * height * width):
        for ch in range(c):
            flat_out[unsigned(pixel * c + ch)] = flat_x[unsigned(pixel * c_in + sources[ch])]


def _sources(groups: int, per_group: int, start: int, channels: int) -> np.ndarray:
    """The input channel each of `channels` output channels copies (`source_rule`'s)."""
    ch = np.arange(channels, dtype=np.int64)
    return (ch % groups) * per_group + ch // groups + start


def _gather(op: str, params: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    """Stored as `out` is (the input copied to match where it is not)."""
    rule = source_rule(op, params, inputs[0].shape[1])
    out_stored = nhwc(out)
    if out_stored is None:
        _gather_channels(np.ascontiguousarray(inputs[0]), *rule, out)
    else:
        _gather_channels_last(as_channels_last(inputs[0]), _sources(*rule, out.shape[1]), out_stored)


def run_channel_shuffle(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _gather("channel_shuffle", params, inputs, out)


def run_slice_channels(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _gather("slice_channels", params, inputs, out)
