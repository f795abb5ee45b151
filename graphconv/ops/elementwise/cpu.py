"""CPU kernels for the pointwise ops; each is one parallel pass over memory, stored NCHW
or channels-last as its output is (an input stored otherwise is copied to match)."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
from numba import njit, prange

from graphconv.ops.binding import BoundCall
from graphconv.ops.channel_stack import bind_stack, stack_channels
from graphconv.ops.channels_last import as_stored_like, stored_like, stored_memory
from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned


@njit(cache=True, parallel=True)
def _relu(x, out):
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        dst[i] = max(src[i], 0.0)


@njit(cache=True, parallel=True)
def _sum(a, b, out):
    src_a, src_b, dst = a.ravel(), b.ravel(), out.reshape(-1)
    for i in prange(dst.size):
        dst[i] = src_a[i] + src_b[i]


@njit(cache=True, parallel=True)
def _difference(a, b, out):
    src_a, src_b, dst = a.ravel(), b.ravel(), out.reshape(-1)
    for i in prange(dst.size):
        dst[i] = src_a[i] - src_b[i]


@njit(cache=True, parallel=True)
def _product(a, b, out):
    src_a, src_b, dst = a.ravel(), b.ravel(), out.reshape(-1)
    for i in prange(dst.size):
        dst[i] = src_a[i] * src_b[i]


@njit(cache=True, parallel=True)
def _divide(a, b, out):
    """out = a / b, b of a's shape or one value per position (N, 1, H, W), broadcast."""
    n, c, height, width = a.shape
    per_position = b.shape[1] == 1
    for job in prange(n * c):
        bi, ch = job // c, job % c
        divisor = b[bi, 0] if per_position else b[bi, ch]
        for y in range(height):
            for j in range(width):
                out[bi, ch, y, j] = a[bi, ch, y, j] / divisor[y, j]


@njit(cache=True, parallel=True)
def _scale_channels(x, factors, out):
    n, c, height, width = x.shape
    for job in prange(n * c):
        f = factors[job // c, job % c, 0, 0]
        src, dst = x[job // c, job % c], out[job // c, job % c]
        for y in range(height):
            for j in range(width):
                dst[y, j] = src[y, j] * f


@njit(cache=True, parallel=True, boundscheck=False)
def _scale_channels_last(xh, gate, out_h):
    """out_h[n, y, x, c] = xh[n, y, x, c] * gate[n, c]: each pixel's channels one run."""
    n, height, width, c = xh.shape
    flat_x, flat_out = xh.reshape(-1), out_h.reshape(-1)
    for job in prange(n * height):
        b = job // height
        for p in range(width):
            at = (job * width + p) * c
            for ch in range(c):
                flat_out[unsigned(at + ch)] = flat_x[unsigned(at + ch)] * gate[b, unsigned(ch)]


@njit(cache=True, parallel=True)
def _scale_positions(x, gate, out):
    """out[n, c, y, x] = x[n, c, y, x] * gate[n, 0, y, x]."""
    n, c, height, width = x.shape
    for job in prange(n * c):
        g, src, dst = gate[job // c, 0], x[job // c, job % c], out[job // c, job % c]
        for y in range(height):
            for j in range(width):
                dst[y, j] = src[y, j] * g[y, j]


@njit(cache=True, parallel=True, boundscheck=False)
def _scale_positions_channels_last(xh, gate, out_h):
    """out_h[n, y, x, c] = xh[n, y, x, c] * gate[n, y, x] (gate flat, N x H x W): each
    pixel's channels one run, times one value."""
    n, height, width, c = xh.shape
    flat_x, flat_out = xh.reshape(-1), out_h.reshape(-1)
    for job in prange(n * height):
        for p in range(width):
            g = gate[unsigned(job * width + p)]
            at = (job * width + p) * c
            for ch in range(c):
                flat_out[unsigned(at + ch)] = flat_x[unsigned(at + ch)] * g


@njit(cache=True, parallel=True)
def _accumulate(total, x):
    a = total.reshape(-1)
    b = x.ravel()
    for i in prange(a.size):
        a[i] += b[i]


def _memory_like_out(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`x`'s memory, flat, stored as `out` is (a copy where it is stored otherwise)."""
    return stored_memory(as_stored_like(x, out))


def run_relu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _relu(_memory_like_out(inputs[0], out), stored_memory(out))


def run_dropout(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    np.copyto(out, inputs[0])  # numpy follows both arrays' strides, stored either way


def run_add(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    first, second, *rest = (_memory_like_out(x, out) for x in inputs)
    total = stored_memory(out)
    _sum(first, second, total)
    for x in rest:
        _accumulate(total, x)


def run_sub(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    first, second = (_memory_like_out(x, out) for x in inputs)
    _difference(first, second, stored_memory(out))


def run_div(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _divide(np.ascontiguousarray(inputs[0]), np.ascontiguousarray(inputs[1]), out)


def run_mul(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _mul_call(inputs, out)()


def bind_mul(params: dict, weights: dict) -> BoundCall:
    return BoundCall(_mul_call)


def _mul_call(inputs: list[np.ndarray], out: np.ndarray) -> Callable[[], None]:
    """The kernel for these arrays, with its arguments. Stored either way: the map is read
    as `out` is stored (copied, on every call, where it is not); a second map the same;
    a C x 1 x 1 gate (a squeeze-and-excitation block's) and a 1 x H x W one (CBAM's
    spatial attention) are the same memory either way."""
    x, factor = inputs
    if not stored_like(x, out) or factor.shape == x.shape and not stored_like(factor, out) \
            or factor.shape != x.shape and not factor.flags.c_contiguous:
        return lambda: _multiply_copies(inputs, out)
    if factor.shape == x.shape:
        return partial(_product, stored_memory(x), stored_memory(factor), stored_memory(out))
    per_position = factor.shape[1] != x.shape[1]  # 1 x H x W; a one-channel map's 1 x 1 x 1 gate is per channel
    if nhwc(out) is None:
        return partial(_scale_positions if per_position else _scale_channels, x, factor, out)
    if per_position:
        return partial(_scale_positions_channels_last, nhwc(x), factor.reshape(-1), nhwc(out))
    return partial(_scale_channels_last, nhwc(x), factor.reshape(x.shape[0], x.shape[1]), nhwc(out))


def _multiply_copies(inputs: list[np.ndarray], out: np.ndarray) -> None:
    """`_mul_call`'s kernels on copies stored as `out` is."""
    x = as_stored_like(inputs[0], out)
    factor = as_stored_like(inputs[1], out) if inputs[1].shape == x.shape else np.ascontiguousarray(inputs[1])
    _mul_call([x, factor], out)()


def run_concat(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    stack_channels(inputs, out)


def bind_concat(params: dict, weights: dict) -> BoundCall:
    return BoundCall(bind_stack)
