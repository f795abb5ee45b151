"""Several inputs written side by side along channels in ONE parallel loop: the CPU
kernel of concat, and of a batchnorm over several inputs (the normalisation of their
concatenation, which `fuse-concat-batchnorm` makes of DenseNet's concat + batchnorm).

Why one loop for all the inputs: a parallel loop per input costs a launch each (waking
the workers, splitting the work), and DenseNet-121's 58 concats read 590 inputs
between them, most of them maps of 32 channels at 14x14 or 7x7, where that launch is
most of the copy. The inputs reach the kernel as a table of their memories'
addresses (`float_array` makes each an array again): one type whatever their number,
so one compiled kernel serves 2 inputs or 33, where a tuple would compile a kernel for
every count, and a numba typed List costs every process 0.3 s to build its first.

Each output channel is either copied (concat) or normalised, (x - mean) * scale + beta
per channel as the batchnorm kernel computes it, then put through a fused activation
(`activations.FUSED`): ReLU in the store loop, the smoother ones over each run just
written (`fast_math.activate_run`).
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from graphconv.ops.channels_last import as_stored_like, stored_like, stored_memory
from graphconv.ops.fast_math import RELU, activate_run
from graphconv.ops.layout import nhwc
from graphconv.ops.unsigned_index import unsigned

NO_TERMS = np.zeros(0, np.float32)  # the per-channel terms of a plain copy (concat)


def stack_channels(inputs: list[np.ndarray], out: np.ndarray, terms: tuple | None = None,
                   activation: int = 0) -> None:
    """out = the inputs side by side along channels, stored as `out` is (an input stored
    otherwise is copied to match); with `terms` = (mean, scale, beta), float32 arrays of
    out's channels, each channel normalised, then through activation `activation` (a
    `fused_code`)."""
    bind_stack(inputs, out, terms, activation)()


def bind_stack(inputs: list[np.ndarray], out: np.ndarray, terms: tuple | None = None, activation: int = 0):
    """`stack_channels` for these very arrays, as a call of no arguments: the table of
    the inputs' addresses is made once and reused by every run of a plan
    (`binding.BoundCall`); the call keeps the arrays alive. An input stored otherwise
    than `out` is copied to match on every call, never once here: its values change
    from run to run."""
    if not all(stored_like(x, out) for x in inputs):
        return lambda: bind_stack([as_stored_like(x, out) for x in inputs], out, terms, activation)()
    memories = [stored_memory(x) for x in inputs]
    addresses = np.array([memory.ctypes.data for memory in memories], np.int64)
    offsets = np.cumsum([0] + [x.shape[1] for x in inputs]).astype(np.int64)
    mean, scale, beta = terms if terms is not None else (NO_TERMS,) * 3
    normalise, flat_out = terms is not None, stored_memory(out)
    n, c, height, width = out.shape
    if nhwc(out) is None:
        owner = np.repeat(np.arange(len(inputs), dtype=np.int64), np.diff(offsets))

        def call():
            _stack_nchw(addresses, offsets, owner, mean, scale, beta, normalise, activation, flat_out, n,
                        height * width)
    else:
        def call():
            _stack_channels_last(addresses, offsets, mean, scale, beta, normalise, activation, flat_out,
                                 n * height, width)
    call.inputs = memories  # what `addresses` points into, alive as long as the call
    return call


@intrinsic
def _float_pointer(typingctx, address):
    """The int64 `address` as a float32 pointer, for `carray`."""
    if address != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float32)))
    return types.CPointer(types.float32)(types.int64), codegen


@njit(cache=True, inline="always")
def float_array(address, size):
    """The `size` float32 values at `address` (an input's `ctypes.data`) as a 1-D array."""
    return carray(_float_pointer(address), (size,))


@njit(cache=True, parallel=True, boundscheck=False)
def _stack_nchw(addresses, offsets, owner, mean, scale, beta, normalise, activation, flat_out, n, plane):
    """One job per output channel of each image: a contiguous plane from its input (the
    `owner` of each output channel, an int64 table)."""
    c = owner.size
    for job in prange(n * c):
        b, ch = job // c, job % c
        i = owner[ch]
        channels = offsets[i + 1] - offsets[i]
        src = float_array(addresses[i], n * channels * plane)
        s0, d0 = (b * channels + ch - offsets[i]) * plane, job * plane
        if not normalise:
            for j in range(plane):
                flat_out[unsigned(d0 + j)] = src[unsigned(s0 + j)]
            continue
        m, k, t = mean[ch], scale[ch], beta[ch]
        if activation == RELU:
            for j in range(plane):
                flat_out[unsigned(d0 + j)] = max((src[unsigned(s0 + j)] - m) * k + t, np.float32(0.0))
        else:
            for j in range(plane):
                flat_out[unsigned(d0 + j)] = (src[unsigned(s0 + j)] - m) * k + t
            activate_run(flat_out, d0, plane, activation)


@njit(cache=True, parallel=True, boundscheck=False)
def _stack_channels_last(addresses, offsets, mean, scale, beta, normalise, activation, flat_out, rows, width):
    """One job per row of pixels (over all images): each input's channels of each pixel
    are one contiguous run, written into their place among the pixel's."""
    c = offsets[offsets.size - 1]
    for row in prange(rows):
        for i in range(addresses.size):
            c0 = offsets[i]
            channels = offsets[i + 1] - c0
            src = float_array(addresses[i], rows * width * channels)
            for p in range(width):
                pixel = row * width + p
                s0, d0 = pixel * channels, pixel * c + c0
                if normalise:
                    _normalise_run(src, s0, flat_out, d0, channels, mean, scale, beta, c0, activation)
                else:
                    for j in range(channels):
                        flat_out[unsigned(d0 + j)] = src[unsigned(s0 + j)]


@njit(cache=True, inline="always")
def _normalise_run(src, s0, flat_out, d0, count, mean, scale, beta, c0, activation):
    """flat_out[d0 + j] = act((src[s0 + j] - mean[c0 + j]) * scale[c0 + j] + beta[c0 + j])."""
    if activation == RELU:
        for j in range(count):
            v = (src[unsigned(s0 + j)] - mean[unsigned(c0 + j)]) * scale[unsigned(c0 + j)] + beta[unsigned(c0 + j)]
            flat_out[unsigned(d0 + j)] = max(v, np.float32(0.0))
    else:
        for j in range(count):
            flat_out[unsigned(d0 + j)] = ((src[unsigned(s0 + j)] - mean[unsigned(c0 + j)]) * scale[unsigned(c0 + j)]
                                          + beta[unsigned(c0 + j)])
        activate_run(flat_out, d0, count, activation)
