"""CUDA fc: the implicit GEMM (`graphconv.ops.gemm_cuda.GemmLayer`) on the input seen as
an (N, C*H*W, 1, 1) map, where an fc is a 1x1 conv."""
from __future__ import annotations

import math

from graphconv.ops.cuda_launch import BoundLaunches, KernelCall
from graphconv.ops.gemm_cuda import GemmLayer, on_device, on_host, plan_launch, prepared_weights, processors


def prepare_fc(params: dict, weights: dict) -> dict:
    return prepared_weights(weights["weight"], weights.get("bias"), 1)


def describe_fc(params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
    """The tile and K split the layer launches with on this GPU (a 1x1 conv's)."""
    n = in_shape[0]
    return plan_launch(params["out_features"], n, math.prod(in_shape[1:]), 1, processors()).describe()


def bind_fc(params: dict, weights: dict) -> BoundLaunches:
    """The 1x1 conv's `GemmLayer` on the input flattened to (N, C*H*W, 1, 1)."""
    prepared = weights if "weight_t" in weights else on_device(prepare_fc(params, on_host(weights)))
    layer = GemmLayer(prepared["weight_t"], prepared["bias"])

    def launches(inputs: list, out) -> list[KernelCall]:
        x = inputs[0]
        return layer.kernel_launches([x.reshape(x.shape[0], x.size // x.shape[0], 1, 1)], out)
    return BoundLaunches(launches)


def run_fc(params: dict, weights: dict, inputs: list, out) -> None:
    bind_fc(params, weights)(inputs, out)
