"""CUDA kernels of the activations: one thread per element, on flat views."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from graphconv.ops.activations import exponential_linear
from graphconv.ops.cuda_launch import grid_1d
from graphconv.ops.fast_math import GELU, HARDSWISH, MISH, MISH_FLAT, RELU, RELU6, SILU, TWO

# float32 constants: a float literal would make numba compute in float64
ZERO, HALF, ONE, SIX, SIXTH = np.float32(0.0), np.float32(0.5), np.float32(1.0), np.float32(6.0), np.float32(1 / 6)
SQRT_HALF, TANH_SCALE, CUBIC = np.float32(math.sqrt(0.5)), np.float32(math.sqrt(2.0 / math.pi)), np.float32(0.044715)


@cuda.jit(device=True, inline=True)
def hardswish(v):
    return v * min(max(v * SIXTH + HALF, ZERO), ONE)


@cuda.jit(device=True, inline=True)
def silu(v):
    return v / (ONE + math.exp(-v))


@cuda.jit(device=True, inline=True)
def gelu(v):
    return HALF * v * (ONE + math.erf(v * SQRT_HALF))


@cuda.jit(device=True, inline=True)
def mish(v):
    """v tanh(softplus(v)) as v n / (n + 2), n = e^v (e^v + 2): `fast_math.mish32`'s
    formula, one exp."""
    e = math.exp(min(v, MISH_FLAT))
    n = e * (e + TWO)
    return v * (n / (n + TWO))


@cuda.jit(device=True, inline=True)
def activate(v, code):
    """v through a conv's fused activation, `code` one of `fast_math`'s named codes (as
    `activations.fused_code` numbers them): the epilogue of the implicit GEMM (and its
    split-K reduction), the depthwise conv and the batchnorm."""
    if code == RELU:
        return max(v, ZERO)
    if code == SILU:
        return silu(v)
    if code == HARDSWISH:
        return hardswish(v)
    if code == GELU:
        return gelu(v)
    if code == RELU6:
        return min(max(v, ZERO), SIX)
    if code == MISH:
        return mish(v)
    return v


@cuda.jit
def _hardsigmoid(x, alpha, beta, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = min(max(alpha * x[i] + beta, ZERO), ONE)


@cuda.jit
def _leaky_relu(x, alpha, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        out[i] = v if v >= ZERO else alpha * v


@cuda.jit(device=True)
def _c_pow(v, exponent):
    """C's pow, which CUDA's math.pow is, with its zeros, infinities and NaN spelled out:
    numba's simulator runs Python's math.pow, which raises for them instead. The power
    0.5 is a square root, as on the CPU (sqrt(-inf) is NaN where pow gives inf)."""
    if exponent == 0.5:
        return math.nan if v < 0.0 else math.sqrt(v)
    whole = exponent == math.floor(exponent)
    odd = whole and not math.isinf(exponent) and math.fmod(exponent, 2.0) != 0.0
    if (v == 0.0 or math.isinf(v)) and exponent != 0.0:  # a zero or infinite magnitude, signed by an odd power
        magnitude = math.inf if (exponent < 0.0) == (v == 0.0) else 0.0
        return math.copysign(magnitude, v) if odd else magnitude
    if v < 0.0 and not whole:
        return math.nan
    return math.pow(v, exponent)


@cuda.jit
def _power(x, exponent, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = _c_pow(float64(x[i]), exponent)


@cuda.jit
def _prelu(x, slope, channels, plane, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        out[i] = v if v >= ZERO else slope[(i // plane) % channels] * v


@cuda.jit
def _hardswish(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = hardswish(x[i])


@cuda.jit
def _silu(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = silu(x[i])


@cuda.jit
def _gelu(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = gelu(x[i])


@cuda.jit
def _gelu_tanh(x, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        out[i] = HALF * v * (ONE + math.tanh(TANH_SCALE * (v + CUBIC * v * v * v)))


@cuda.jit(device=True, inline=True)
def softplus(v):
    return max(v, ZERO) + math.log1p(math.exp(-abs(v)))


@cuda.jit
def _tanh(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = math.tanh(x[i])


@cuda.jit
def _softplus(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = softplus(x[i])


@cuda.jit
def _mish(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = mish(x[i])


@cuda.jit
def _abs(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = abs(x[i])


@cuda.jit
def _exponential_linear(x, scale, alpha, inverse_beta, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        out[i] = scale * (v if v > ZERO else alpha * math.expm1(v * inverse_beta))


def _launch(kernel, inputs: list, out, *scalars) -> None:
    x = inputs[0]
    blocks, threads = grid_1d(x.size)
    kernel[blocks, threads](x.reshape(x.size), *scalars, out.reshape(out.size))


def run_hardsigmoid(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_hardsigmoid, inputs, out, np.float32(params["alpha"]), np.float32(params["beta"]))


def run_leaky_relu(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_leaky_relu, inputs, out, np.float32(params["alpha"]))


def run_pow(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_power, inputs, out, np.float64(params["exponent"]))


def run_prelu(params: dict, weights: dict, inputs: list, out) -> None:
    _, channels, height, width = out.shape
    blocks, threads = grid_1d(out.size)
    _prelu[blocks, threads](inputs[0].reshape(out.size), weights["weight"], channels, height * width,
                            out.reshape(out.size))


def run_hardswish(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_hardswish, inputs, out)


def run_silu(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_silu, inputs, out)


def run_gelu(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_gelu_tanh if params["approximate"] == "tanh" else _gelu, inputs, out)


def run_tanh(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_tanh, inputs, out)


def run_softplus(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_softplus, inputs, out)


def run_mish(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_mish, inputs, out)


def run_abs(params: dict, weights: dict, inputs: list, out) -> None:
    _launch(_abs, inputs, out)


def _run_exponential_linear(op: str, params: dict, inputs: list, out) -> None:
    scale, alpha, beta = exponential_linear(op, params)
    _launch(_exponential_linear, inputs, out, np.float32(scale), np.float32(alpha), np.float32(1.0 / beta))


def run_elu(params: dict, weights: dict, inputs: list, out) -> None:
    _run_exponential_linear("elu", params, inputs, out)


def run_selu(params: dict, weights: dict, inputs: list, out) -> None:
    _run_exponential_linear("selu", params, inputs, out)


def run_celu(params: dict, weights: dict, inputs: list, out) -> None:
    _run_exponential_linear("celu", params, inputs, out)
