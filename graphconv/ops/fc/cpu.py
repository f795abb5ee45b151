"""CPU fc: (batch x in) @ (in x out) with the bias (and nothing else) added.

Three strategies, by shape (`choose_strategy`, shown per layer by `--profile`):

* "stream": up to STREAM_MAX_POSITIONS rows (a classifier's batch of crops) and
  GROUP_ROWS outputs or more, the weight-streaming product of `gemm_cpu`: each weight
  read once and used batch times, where BLAS's packing copy would cost about as much as
  the arithmetic. One row (a classifier on one crop) is its matrix-vector product,
  called directly: the same code, without compiling the streaming tiles (a first run's
  fc 7.3 s, EfficientNet-B0's classifier with an empty cache);
* "dots": as few rows and fewer outputs (a fine-tuned head: 2048 features -> 2 classes),
  one vectorised dot product per output. The streaming tiles fill a group of GROUP_ROWS
  output rows, so with 10 outputs at 64 rows they took 0.26-0.29 ms where this takes 0.03;
* "blas": more rows, one SGEMM through numpy's OpenBLAS.

None of the first two calls BLAS. That matters beyond their own speed: OpenBLAS's
worker threads spin for about 2^28 cycles after a threaded call and take a core from
numba's next parallel loops. On 2 cores, timm's CSPDarknet-53 classifier (a 1024 ->
1000 fc, then an SGEMM) run back to back from a script that had not called
`configure_process` took 82-86 ms a run, and 39-42 ms with the fc streaming.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from graphconv.ops import vector_tile
from graphconv.ops.gemm_cpu import (GROUP_ROWS, STREAM_MATMUL, STREAM_MAX_POSITIONS, STREAM_TILE_LANES, matrix_vector,
                                    stream_matmul, stream_width)
from graphconv.ops.specialise import per_lane_width


def _fc_stream(x2d, weight, bias, out2d, wide):
    n, k = x2d.shape
    cols = np.zeros((k, stream_width(n, STREAM_TILE_LANES)), np.float32)
    cols[:, :n] = x2d.T
    stream_matmul(weight, bias, False, cols, n, 1, 0, out2d.reshape(n, weight.shape[0], 1), False, wide)


FC_STREAM = per_lane_width(_fc_stream, dict(cache=True), stream_matmul=STREAM_MATMUL,  # per stream tile width
                           STREAM_TILE_LANES={8: 8, 16: 16})


@njit(cache=True, parallel=True, fastmath=True)
def _fc_dots(x2d, weight, bias, out2d):
    """out2d[i, j] = x2d[i] . weight[j] + bias[j], one (row, output) pair a job."""
    rows, k = x2d.shape
    outputs = weight.shape[0]
    for job in prange(rows * outputs):
        i, j = job // outputs, job % outputs
        total = np.float32(0.0)
        for t in range(k):
            total += x2d[i, t] * weight[j, t]
        out2d[i, j] = total + bias[j]


def _fc_blas(x2d, weight, bias, out2d):
    np.matmul(x2d, weight.T, out=out2d)
    out2d += bias


STRATEGIES = ("stream", "dots", "blas")


def choose_strategy(rows: int, outputs: int) -> str:
    """The strategy for `rows` input rows (the batch) and `outputs` output features."""
    if rows > STREAM_MAX_POSITIONS:
        return "blas"
    return "stream" if outputs >= GROUP_ROWS else "dots"


def describe_fc(params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
    """The strategy `run_fc` takes for an (N, ...) input: what `--profile` shows."""
    return choose_strategy(in_shape[0], params["out_features"])


def run_fc(params: dict, weights: dict, inputs: list[np.ndarray], out: np.ndarray,
           strategy: str | None = None) -> None:
    """The layer into `out`; `strategy` overrides the choice (tests force each one)."""
    x = inputs[0]
    weight = weights["weight"]
    bias = weights.get("bias")
    if bias is None:
        bias = np.zeros(weight.shape[0], np.float32)
    x2d = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    out2d = out.reshape(x.shape[0], weight.shape[0])  # a view: out is C-contiguous
    strategy = strategy or choose_strategy(x.shape[0], weight.shape[0])
    if strategy == "stream" and x2d.shape[0] == 1:  # what the streaming tiles would call, without compiling them
        matrix_vector(weight, x2d[0], bias, False, 0, out2d.reshape(1, weight.shape[0], 1))
    elif strategy == "stream":
        FC_STREAM[vector_tile.STREAM_LANES](x2d, weight, bias, out2d, vector_tile.WIDE_TILES)
    elif strategy == "dots":
        _fc_dots(x2d, weight, bias, out2d)
    else:
        _fc_blas(x2d, weight, bias, out2d)
