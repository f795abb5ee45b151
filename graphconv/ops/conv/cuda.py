"""CUDA conv: the register-tiled implicit GEMM of `graphconv.ops.gemm_cuda`, with bias,
residual and ReLU in its epilogue (or in the pass that adds up split-K partial sums).

`prepare_conv` stores the weights as the kernel reads them, once per network: transposed
to (groups, K, O/groups). `bind_conv` makes the layer's call, which works out each input
shape's launch (tile, grid, K split, the table of where each k reads the input, the
geometry array, the workspace) once and reuses it on every later run.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
from numba import config, cuda

from graphconv.ops.cuda_launch import grid_1d
from graphconv.ops.gemm_cuda import DIMS, Launch, gemm_kernel, plan_launch, reduce_splits, window_taps
from graphconv.ops.registry import pair


def transposed_weights(weight: np.ndarray, groups: int) -> np.ndarray:
    """(O, C/groups, kh, kw) (or an fc's (O, K)) as (groups, K, O/groups), contiguous:
    consecutive output channels of one k side by side, as a block loads them."""
    out_c = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(groups, out_c // groups, -1).transpose(0, 2, 1), np.float32)


def prepare_conv(params: dict, weights: dict) -> dict:
    w = weights["weight"]
    return {"weight_t": transposed_weights(w, params["groups"]),
            "bias": weights["bias"] if "bias" in weights else np.zeros(w.shape[0], np.float32)}


class GemmLayer:
    """A conv (or fc) layer bound to the GPU: its prepared weights and geometry, and one
    launch per input shape, planned on first sight of that shape."""

    def __init__(self, weight_t, bias, kernel: tuple[int, int] = (1, 1), groups: int = 1,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                 dilation: tuple[int, int] = (1, 1), relu: bool = False,
                 planner: Callable[[int, int, int, int, int], Launch] | None = None):
        """`planner(rows, positions, k_total, groups, processors)` picks each input
        shape's launch: `plan_launch` unless given (a benchmark forcing one tile)."""
        self.weight_t, self.bias = weight_t, bias
        self.kernel, self.groups, self.stride, self.padding, self.dilation = kernel, groups, stride, padding, dilation
        self.relu, self.planner = relu, planner
        self.rows = weight_t.shape[2]
        self.k_total = weight_t.shape[1]
        self._flat_weights = weight_t.reshape(weight_t.size)
        self._launches: dict[tuple, tuple[Launch, Any, Any, Any]] = {}

    def __call__(self, inputs: list, out) -> None:
        self.bind_values(inputs, out)()

    def bind_values(self, inputs: list, out) -> Callable[[], None]:
        """The layer's launches on these very arrays, with their configurations and
        argument lists made once (the Executor keeps one per plan): a run then pays only
        for numba-cuda's marshalling of the arguments."""
        x = inputs[0]
        residual = inputs[1] if len(inputs) == 2 else None
        launch, taps, dims, work = self._launch(tuple(x.shape), tuple(out.shape), residual is not None)
        flat_out = out.reshape(out.size)
        flat_res = flat_out if residual is None else residual.reshape(residual.size)  # unread without one
        gemm = gemm_kernel(launch.tile)[launch.grid, launch.tile.threads]
        gemm_args = (x.reshape(x.size), self._flat_weights, taps, self.bias, flat_res,
                     flat_out if work is None else work, dims)
        if work is None:
            return partial(gemm, *gemm_args)
        reduce = reduce_splits[grid_1d(out.size)]
        reduce_args = (work, launch.splits, self.bias, flat_res, residual is not None, self.relu, out.shape[1],
                       out.shape[2] * out.shape[3], flat_out)

        def gemm_then_reduce() -> None:
            gemm(*gemm_args)
            reduce(*reduce_args)
        return gemm_then_reduce

    def _launch(self, in_shape: tuple, out_shape: tuple, residual: bool) -> tuple[Launch, Any, Any, Any]:
        key = (in_shape, out_shape, residual)
        if key not in self._launches:
            self._launches[key] = self._plan(in_shape, out_shape, residual)
        return self._launches[key]

    def _plan(self, in_shape: tuple, out_shape: tuple, residual: bool) -> tuple[Launch, Any, Any, Any]:
        n, channels, height, width = in_shape
        _, out_c, ho, wo = out_shape
        positions = n * ho * wo
        launch = (self.planner or plan_launch)(self.rows, positions, self.k_total, self.groups, processors())
        values = dict(channels=channels, height=height, width=width, out_height=ho, out_width=wo,
                      stride_y=self.stride[0], stride_x=self.stride[1], pad_y=self.padding[0],
                      pad_x=self.padding[1], rows=self.rows, groups=self.groups,
                      group_channels=channels // self.groups, k_total=self.k_total, k_chunk=launch.k_chunk,
                      relu=self.relu, residual=residual, positions=positions, partial=launch.splits > 1)
        dims = cuda.to_device(np.array([values[name] for name in DIMS], np.int64))
        taps = cuda.to_device(window_taps(channels // self.groups, self.kernel, self.dilation, height, width))
        work = cuda.device_array(launch.splits * n * out_c * ho * wo, np.float32) if launch.splits > 1 else None
        return launch, taps, dims, work


def processors() -> int:
    """The GPU's SM count (what the launch plan fills in waves); 1 on numba's simulator,
    which runs one block at a time (so the plan there keeps padding, not waves, small)."""
    if config.ENABLE_CUDASIM:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def describe_conv(params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
    """The tile and K split the layer launches with on this GPU, for an (N, C, H, W) input."""
    from graphconv.ops.conv import shape
    n, channels = in_shape[0], in_shape[1]
    out_c, ho, wo = shape(params, [in_shape[1:]])
    kh, kw = pair(params["kernel_size"])
    groups = params["groups"]
    return plan_launch(out_c // groups, n * ho * wo, channels // groups * kh * kw, groups, processors()).describe()


def bind_conv(params: dict, weights: dict) -> GemmLayer:
    prepared = weights if "weight_t" in weights else on_device(prepare_conv(params, on_host(weights)))
    return GemmLayer(prepared["weight_t"], prepared["bias"], pair(params["kernel_size"]), params["groups"],
                     pair(params["stride"]), pair(params["padding"]), pair(params["dilation"]),
                     params["activation"] == "relu")


def run_conv(params: dict, weights: dict, inputs: list, out) -> None:
    """One call of the bound layer (the Executor binds once; this is for callers that
    hold weights as the spec gives them or as `prepare_conv` left them)."""
    bind_conv(params, weights)(inputs, out)


def on_host(weights: dict) -> dict:
    return {key: value.copy_to_host() if hasattr(value, "copy_to_host") else np.asarray(value)
            for key, value in weights.items()}


def on_device(weights: dict) -> dict:
    return {key: cuda.to_device(np.ascontiguousarray(value)) for key, value in weights.items()}
