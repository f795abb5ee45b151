"""CUDA batchnorm: one thread per element, a launch per input (a batchnorm over several
inputs writes each into its channels of the output). Each thread works out its
channel's scale gamma / sqrt(var + eps) itself: the op is bound by memory traffic, so a
square root per element is free, and the kernel needs no host-side preparation of the
weights."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from graphconv.ops.activations import fused_code
from graphconv.ops.activations.cuda import activate
from graphconv.ops.cuda_launch import grid_1d


@cuda.jit
def _batchnorm(x, mean, var, gamma, beta, eps, c0, channels, out_channels, plane, code, out):
    """x's channels normalised into out's channels c0 .. c0 + channels - 1."""
    i = cuda.grid(1)
    if i < x.size:
        image, within = i // (channels * plane), i % (channels * plane)
        ch = c0 + within // plane
        v = (x[i] - mean[ch]) * (gamma[ch] / math.sqrt(var[ch] + eps)) + beta[ch]
        out[(image * out_channels + c0) * plane + within] = activate(v, code)


def run_batchnorm(params: dict, weights: dict, inputs: list, out) -> None:
    _, out_channels, height, width = out.shape
    c0 = 0
    for x in inputs:
        blocks, threads = grid_1d(x.size)
        _batchnorm[blocks, threads](x.reshape(x.size), weights["running_mean"], weights["running_var"],
                                    weights["weight"], weights["bias"], np.float32(params["eps"]), c0, x.shape[1],
                                    out_channels, height * width, fused_code(params["activation"]),
                                    out.reshape(out.size))
        c0 += x.shape[1]
