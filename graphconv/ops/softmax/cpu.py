"""CPU softmax and log_softmax over channels, parallel over (image, row), numerically
stable; a grouped softmax runs on the (N, g, C/g, H*W) view (`grouped_view`)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops.fast_math import CONTRACT, exp32
from graphconv.ops.softmax import grouped_view
from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, parallel=True, fastmath=CONTRACT, boundscheck=False, error_model="numpy")
def _softmax(x, out, log):
    """softmax over axis 1 of x, or with `log` its logarithm, (x - max) - log(sum), one
    image row at a time: each step is a loop over the row's contiguous pixels for one
    channel (the max, e^(x - max) and its sum, the scale), so it vectorises, with
    `fast_math.exp32`. Walking each pixel's channels a plane apart with libm's exp took
    6.7x PyTorch's time (1000 classes over 64x64 cells, one thread). The sums are kept
    in float64: a thousand classes add up without float32's drift."""
    n, c, height, width = x.shape
    plane = height * width
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)  # no array views made inside the loop
    for job in prange(n * height):
        b, y = job // height, job % height
        first = b * c * plane + y * width
        peak = np.empty(width, np.float32)
        total = np.zeros(width, np.float64)
        for i in range(width):
            peak[unsigned(i)] = flat_x[unsigned(first + i)]
        for ch in range(1, c):
            row = first + ch * plane
            for i in range(width):
                peak[unsigned(i)] = np.maximum(peak[unsigned(i)], flat_x[unsigned(row + i)])
        for ch in range(c):
            row = first + ch * plane
            if log:
                for i in range(width):
                    total[unsigned(i)] += exp32(flat_x[unsigned(row + i)] - peak[unsigned(i)])
            else:
                for i in range(width):
                    e = exp32(flat_x[unsigned(row + i)] - peak[unsigned(i)])
                    flat_out[unsigned(row + i)] = e
                    total[unsigned(i)] += e
        if log:
            _subtract_peak_and_log_total(flat_x, flat_out, first, c, plane, peak, total)
        else:
            _scale_by_inverse_total(flat_out, first, c, plane, total)


@njit(cache=True, inline="always")
def _subtract_peak_and_log_total(flat_x, flat_out, first, c, plane, peak, total):
    """log_softmax's row: (x - max) - log(sum), log taken once a pixel."""
    shift = np.empty(peak.size, np.float32)
    for i in range(peak.size):
        shift[unsigned(i)] = np.float32(np.log(total[unsigned(i)]))
    for ch in range(c):
        row = first + ch * plane
        for i in range(peak.size):
            flat_out[unsigned(row + i)] = (flat_x[unsigned(row + i)] - peak[unsigned(i)]) - shift[unsigned(i)]


@njit(cache=True, inline="always")
def _scale_by_inverse_total(flat_out, first, c, plane, total):
    """softmax's row: each e^(x - max) over its pixel's sum (times 1 / sum, once a pixel)."""
    inverse = np.empty(total.size, np.float32)
    for i in range(total.size):
        inverse[unsigned(i)] = np.float32(1.0 / total[unsigned(i)])
    for ch in range(c):
        row = first + ch * plane
        for i in range(total.size):
            flat_out[unsigned(row + i)] *= inverse[unsigned(i)]


def run_softmax(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    groups = params["groups"]
    _softmax(grouped_view(np.ascontiguousarray(inputs[0]), groups), grouped_view(out, groups), False)


def run_log_softmax(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _softmax(np.ascontiguousarray(inputs[0]), out, True)
