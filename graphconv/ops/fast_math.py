"""erf, tanh and exp in float32 arithmetic that LLVM vectorises, and the activations built on
them, per value and over a run, for the CPU activation kernels and the conv kernels'
epilogues.

numba's `math.erf`, `math.tanh` and `math.exp` are a libm call per element: no SIMD.
These are Eigen's float32 rational approximations (x P(x^2) / Q(x^2) on a clamped
range), plain multiply-adds and one division: GELU over 1536x28x28 values went from
5.3 to 0.29 ms (2 threads), SiLU over the same from 2.4 to 0.32 ms. Accuracy, checked
against float64 over [-30, 30]: erf within 4.2e-7, tanh within 3.3e-7, so sigmoid
(0.5 + 0.5 tanh(x / 2)) within 2.3e-7 absolute: float32 rounding of the results the
networks compute with, though not of the tiny sigmoid values far below -15, which come
out as 0 (2e-7 or less away). exp is Cephes' expf (a polynomial on [-ln2/2, ln2/2]
scaled by 2^n built from its bits), within an ulp; softplus and mish are built on it.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from graphconv.ops.activations import fused_code
from graphconv.ops.unsigned_index import unsigned

# Multiply-adds fused into FMAs and nothing else of fastmath (no reassociation, NaNs kept),
# for the kernels that use these: the rational approximations are mostly multiply-adds,
# and SiLU over 1.2M values took 245 instead of 310 us (GELU 260 instead of 360), results
# within 3e-6 of the unfused on values up to 16 (float32 rounding).
CONTRACT = {"contract"}

ZERO, HALF, ONE, SIX, SIXTH = np.float32(0.0), np.float32(0.5), np.float32(1.0), np.float32(6.0), np.float32(1 / 6)
SQRT_HALF = np.float32(math.sqrt(0.5))
TWO, MISH_FLAT = np.float32(2.0), np.float32(20.0)
# log1p(u) = 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = u / (2 + u) <= 1/3 for u <= 1
ATANH_SERIES = tuple(np.float32(1 / (2 * k + 1)) for k in reversed(range(8)))

# erf(x) = x P(x^2) / Q(x^2) on [-4, 4], +-1 (to float32) beyond
ERF_LIMIT = np.float32(4.0)
ERF_NUMERATOR = tuple(np.float32(a) for a in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02))
ERF_DENOMINATOR = tuple(np.float32(b) for b in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02))

# tanh(x) = x P(x^2) / Q(x^2) on [-7.905, 7.905], +-1 (to float32) beyond
TANH_LIMIT = np.float32(7.90531110763549805)
TANH_NUMERATOR = tuple(np.float32(a) for a in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
TANH_DENOMINATOR = tuple(np.float32(b) for b in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


@njit(cache=True, inline="always")
def _odd_rational(x, limit, numerator, denominator):
    x = min(max(x, -limit), limit)
    x2 = x * x
    p = numerator[0]
    for a in numerator[1:]:
        p = p * x2 + a
    q = denominator[0]
    for b in denominator[1:]:
        q = q * x2 + b
    return x * p / q


@njit(cache=True, inline="always")
def erf32(x):
    """Clamped to [-1, 1]: near +-4 the rational overshoots by an ulp."""
    return min(max(_odd_rational(x, ERF_LIMIT, ERF_NUMERATOR, ERF_DENOMINATOR), -ONE), ONE)


@njit(cache=True, inline="always")
def tanh32(x):
    return _odd_rational(x, TANH_LIMIT, TANH_NUMERATOR, TANH_DENOMINATOR)


@njit(cache=True, inline="always")
def sigmoid32(x):
    return HALF + HALF * tanh32(HALF * x)

# exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r is exact)
EXP_LOW, EXP_HIGH = np.float32(-87.0), np.float32(88.0)  # 2^n stays a normal float32
LOG2E = np.float32(1.44269504088896341)
LN2_HIGH, LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)
EXP_POLYNOMIAL = tuple(np.float32(c) for c in (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bits are the low 32 of the integer `bits` (LLVM's bitcast,
    which vectorises; numba widens int32 arithmetic to int64)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth < 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0],
                               ir.FloatType())
    return types.float32(bits), codegen


@njit(cache=True, inline="always")
def exp32(x):
    """exp(x) for x up to 88, clamped there (exp(88) = 1.65e38 stands for anything
    larger: the callers clamp their arguments well below); 0 below -87, where exp is
    under 1.65e-38, about float32's smallest normal number: so softplus and mish are 0
    there too, where theirs are 1e-36 or less (softmax's e^(x - max) likewise)."""
    if x < EXP_LOW:
        return ZERO
    x = min(x, EXP_HIGH)
    n = np.floor(x * LOG2E + HALF)
    r = x - n * LN2_HIGH - n * LN2_LOW
    p = EXP_POLYNOMIAL[0]
    for c in EXP_POLYNOMIAL[1:]:
        p = p * r + c
    return (p * r * r + r + ONE) * _float32_from_bits((np.int64(n) + 127) << 23)


@njit(cache=True, inline="always")
def expm1_nonpositive32(x):
    """exp(x) - 1 for x <= 0 (the exponential linear units' negative side), as
    2 tanh(x/2) / (1 - tanh(x/2)): vectorised where libm's expm1 is a call per value
    (ELU 3.5-5x onnxruntime). No cancellation: 1 - tanh(x/2) lies in [1, 2)."""
    t = tanh32(HALF * x)
    return (t + t) / (ONE - t)


# ---- the activations, per value: the CPU activation kernels and every conv epilogue ----------

@njit(cache=True, inline="always")
def hardswish32(v):
    return v * min(max(v * SIXTH + HALF, ZERO), ONE)


@njit(cache=True, inline="always")
def silu32(v):
    return v * sigmoid32(v)


@njit(cache=True, inline="always")
def gelu32(v):
    return HALF * v * (ONE + erf32(v * SQRT_HALF))


@njit(cache=True, inline="always")
def softplus32(v):
    """log(1 + e^v) as max(v, 0) + log1p(e^-|v|), log1p by its atanh series (8 terms
    reach float32 rounding for s <= 1/3): no overflow for large v, no libm call."""
    u = exp32(-abs(v))
    s = u / (TWO + u)
    s2 = s * s
    p = ATANH_SERIES[0]
    for c in ATANH_SERIES[1:]:
        p = p * s2 + c
    return max(v, ZERO) + (s + s) * p


@njit(cache=True, inline="always")
def mish32(v):
    """v tanh(softplus(v)) = v n / (n + 2) with n = e^v (e^v + 2): one exp, no log, no
    cancellation (n / (n + 2) is 1 to float32 from v = 9 on, so v is clamped at 20)."""
    e = exp32(min(v, MISH_FLAT))
    n = e * (e + TWO)
    return v * (n / (n + TWO))


# ---- a conv's fused activation, in the kernels' epilogues ---------------------------------------

# Each entry of `activations.FUSED` by name (its upper-case name), as the number the kernels
# take: `activate32`, `_activate_smooth_run` and the CUDA `activations/cuda.activate` compare
# a code against these, never against a literal. numba reads them as constants. A new entry
# of FUSED gets its line here (tests/test_fast_math.py checks that every entry has one).
NONE = fused_code("none")
RELU = fused_code("relu")
SILU = fused_code("silu")
HARDSWISH = fused_code("hardswish")
GELU = fused_code("gelu")
RELU6 = fused_code("relu6")
MISH = fused_code("mish")


@njit(cache=True, inline="always")
def activate32(v, code):
    """v through a conv's fused activation, numbered as `activations.fused_code` numbers
    them: per value, where a store is scalar anyway."""
    if code == RELU:
        return max(v, ZERO)
    if code == SILU:
        return silu32(v)
    if code == HARDSWISH:
        return hardswish32(v)
    if code == GELU:
        return gelu32(v)
    if code == RELU6:
        return min(max(v, ZERO), SIX)
    if code == MISH:
        return mish32(v)
    return v


@njit(cache=True, inline="always")
def activate_run(values, start, count, code):
    """values[start:start + count] through a fused activation past relu (every entry of
    `activations.FUSED` after it) in place; nothing for none and relu, which the store
    loops apply as they write. For a run a kernel has just written, still in L1: one loop per activation, so
    that each vectorises (per value in the store loop, behind a branch on the code, it
    would not), and no second pass over the whole map from memory."""
    if code > RELU:
        _activate_smooth_run(values, start, count, code)


@njit(cache=True, boundscheck=False, fastmath=CONTRACT, error_model="numpy")
def _activate_smooth_run(values, start, count, code):
    """`activate_run`'s loops, compiled once as a function of their own that every
    kernel calls, not inlined into each: their vectorised exp and erf took most of the
    conv kernels' compile time (`outer` with an empty cache: 15.4 s with them inlined
    at its six call sites, 9.8 s calling this). A call costs nanoseconds; a run is a
    job's outputs or a pixel's channels. error_model="numpy" keeps each division free
    of a zero check, or the SiLU loop does not vectorise."""
    if code == SILU:
        for j in range(count):
            values[unsigned(start + j)] = silu32(values[unsigned(start + j)])
    elif code == HARDSWISH:
        for j in range(count):
            values[unsigned(start + j)] = hardswish32(values[unsigned(start + j)])
    elif code == GELU:
        for j in range(count):
            values[unsigned(start + j)] = gelu32(values[unsigned(start + j)])
    elif code == RELU6:
        for j in range(count):
            values[unsigned(start + j)] = min(max(values[unsigned(start + j)], ZERO), SIX)
    elif code == MISH:
        for j in range(count):
            values[unsigned(start + j)] = mish32(values[unsigned(start + j)])
