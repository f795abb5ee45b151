"""CPU kernels of the activations: one parallel pass over memory each, in float32 (the
tests hold them to the float64 references within float32 rounding), with erf, tanh and
sigmoid, softplus, mish and the exponential linear units' expm1 from `fast_math`, which
vectorise where numba's libm calls do not (a CELU of negative alpha keeps libm's expm1)."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from graphconv.ops.activations import exponential_linear, fused_code
from graphconv.ops.channels_last import memory_stored_alike, stored_memory
from graphconv.ops.fast_math import (CONTRACT, HALF, ONE, SIX, ZERO, activate32, expm1_nonpositive32, gelu32,
                                     hardswish32, mish32, silu32, softplus32, tanh32)
from graphconv.ops.layout import is_channels_last

# float32 constants: a float literal would make numba compute in float64
TANH_SCALE, CUBIC = np.float32(math.sqrt(2.0 / math.pi)), np.float32(0.044715)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _hardsigmoid(x, alpha, beta, out):
    src, dst = x.ravel(), out.reshape(-1)  # reshape: a view, or an error, never a copy
    for i in prange(src.size):
        dst[i] = min(max(alpha * src[i] + beta, ZERO), ONE)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _leaky_relu(x, alpha, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        v = src[i]
        dst[i] = v if v >= ZERO else alpha * v


@njit(cache=True, parallel=True)
def _power(x, exponent, out):
    """In float64, rounded once to float32 (libm's pow: NaN for a negative value to a
    fractional power, as numpy and torch give; the power 0.5 is a square root, as they
    take it: sqrt(-inf) is NaN where pow gives inf)."""
    src, dst = x.ravel(), out.reshape(-1)
    root = exponent == 0.5
    for i in prange(src.size):
        v = np.float64(src[i])
        dst[i] = math.sqrt(v) if root else math.pow(v, exponent)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _prelu_planes(x, slope, channels, plane, out):
    """NCHW memory: each channel's plane is one run with one slope."""
    for job in prange(x.size // plane):
        s, start = slope[job % channels], job * plane
        for i in range(start, start + plane):
            v = x[i]
            out[i] = v if v >= ZERO else s * v


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _prelu_pixels(x, slope, channels, out):
    """Channels-last memory: each pixel's channels lie side by side, one slope each."""
    for pixel in prange(x.size // channels):
        start = pixel * channels
        for c in range(channels):
            v = x[start + c]
            out[start + c] = v if v >= ZERO else slope[c] * v


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _hardswish(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = hardswish32(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _silu(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = silu32(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _gelu(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = gelu32(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _gelu_tanh(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        v = src[i]
        dst[i] = HALF * v * (ONE + tanh32(TANH_SCALE * (v + CUBIC * v * v * v)))


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _tanh(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = tanh32(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _softplus(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = softplus32(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _mish(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = mish32(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _abs(x, out):
    src, dst = x.ravel(), out.reshape(-1)
    for i in prange(src.size):
        dst[i] = abs(src[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _exponential_linear(x, scale, alpha, inverse_beta, out):
    """elu, selu and celu: scale * (v where v > 0, else alpha * expm1(v / beta)), with
    the vectorised `expm1_nonpositive32` where beta > 0 (v / beta <= 0), libm's expm1
    where a celu's negative alpha makes v / beta positive."""
    src, dst = x.ravel(), out.reshape(-1)
    if inverse_beta > ZERO:
        for i in prange(src.size):
            v = src[i]
            dst[i] = scale * (v if v > ZERO else alpha * expm1_nonpositive32(min(v, ZERO) * inverse_beta))
        return
    for i in prange(src.size):
        v = src[i]
        dst[i] = scale * (v if v > ZERO else alpha * np.float32(math.expm1(v * inverse_beta)))


def run_hardsigmoid(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x, y = memory_stored_alike(inputs[0], out)
    _hardsigmoid(x, np.float32(params["alpha"]), np.float32(params["beta"]), y)


def run_leaky_relu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x, y = memory_stored_alike(inputs[0], out)
    _leaky_relu(x, np.float32(params["alpha"]), y)


def run_pow(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x, y = memory_stored_alike(inputs[0], out)
    _power(x, np.float64(params["exponent"]), y)


def run_prelu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    x, y = memory_stored_alike(inputs[0], out)
    slope = np.ascontiguousarray(weights["weight"], np.float32)
    _, channels, height, width = out.shape
    if is_channels_last(out):
        _prelu_pixels(x, slope, channels, y)
    else:
        _prelu_planes(x, slope, channels, height * width, y)


def run_hardswish(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _hardswish(*memory_stored_alike(inputs[0], out))


def run_silu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _silu(*memory_stored_alike(inputs[0], out))


def run_gelu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    (_gelu_tanh if params["approximate"] == "tanh" else _gelu)(*memory_stored_alike(inputs[0], out))


def run_tanh(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _tanh(*memory_stored_alike(inputs[0], out))


def run_softplus(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _softplus(*memory_stored_alike(inputs[0], out))


def run_mish(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _mish(*memory_stored_alike(inputs[0], out))


def run_abs(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _abs(*memory_stored_alike(inputs[0], out))


def _run_exponential_linear(op: str, params: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    scale, alpha, beta = exponential_linear(op, params)
    x, y = memory_stored_alike(inputs[0], out)
    _exponential_linear(x, np.float32(scale), np.float32(alpha), np.float32(1.0 / beta), y)


def run_elu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _run_exponential_linear("elu", params, inputs, out)


def run_selu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _run_exponential_linear("selu", params, inputs, out)


def run_celu(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray) -> None:
    _run_exponential_linear("celu", params, inputs, out)


# ---- a conv's fused activation past relu, over its output in place -----------------------------

@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _silu_in_place(values):
    for i in prange(values.size):
        values[i] = silu32(values[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _hardswish_in_place(values):
    for i in prange(values.size):
        values[i] = hardswish32(values[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _gelu_in_place(values):
    for i in prange(values.size):
        values[i] = gelu32(values[i])


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _relu6_in_place(values):
    for i in prange(values.size):
        values[i] = min(max(values[i], ZERO), SIX)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _mish_in_place(values):
    for i in prange(values.size):
        values[i] = mish32(values[i])


_IN_PLACE = {"silu": _silu_in_place, "hardswish": _hardswish_in_place, "gelu": _gelu_in_place,
             "relu6": _relu6_in_place, "mish": _mish_in_place}
SERIAL_VALUES = 4096  # up to this many, one thread: starting a parallel loop costs more (a gate's 48-1152)


@njit(cache=True, fastmath=CONTRACT)
def _activate_serially(values, code):
    """`_IN_PLACE[...]` on one thread, for a few values; `code` as `fused_code` gives it."""
    for i in range(values.size):
        values[i] = activate32(values[i], code)


def apply_in_place(activation: str, out: np.ndarray) -> None:
    """A conv's fused activation past relu (`activations.FUSED`: the smooth ones, relu6)
    over its output, in place, however it is stored. One array, not the kernels above
    with the output as both source and destination: LLVM's check that those do not
    overlap then fails, and its loop runs scalar (EfficientNet-B0 ran 2x slower overall)."""
    values = stored_memory(out)
    if values.size <= SERIAL_VALUES:
        _activate_serially(values, fused_code(activation))
    else:
        _IN_PLACE[activation](values)
