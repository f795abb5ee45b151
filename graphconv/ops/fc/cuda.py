"""CUDA fc: the implicit GEMM (`graphconv.ops.gemm_cuda.GemmLayer`) on the input seen as
an (N, C*H*W, 1, 1) map, where an fc is a 1x1 conv."""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphconv.ops.gemm_cuda import GemmLayer, on_device, on_host, plan_launch, prepared_weights, processors


def prepare_fc(params: dict, weights: dict) -> dict:
    return prepared_weights(weights["weight"], weights.get("bias"), 1)


def describe_fc(params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
    """The tile and K split the layer launches with on this GPU (a 1x1 conv's)."""
    n = in_shape[0]
    return plan_launch(params["out_features"], n, int(np.prod(in_shape[1:])), 1, processors()).describe()


class FcLayer:
    """An fc layer bound to the GPU: the 1x1 conv's `GemmLayer` on the flattened input."""

    def __init__(self, layer: GemmLayer):
        self.layer = layer

    def __call__(self, inputs: list, out) -> None:
        self.bind_values(inputs, out)()

    def bind_values(self, inputs: list, out) -> Callable[[], None]:
        x = inputs[0]
        return self.layer.bind_values([x.reshape(x.shape[0], x.size // x.shape[0], 1, 1)], out)


def bind_fc(params: dict, weights: dict) -> FcLayer:
    prepared = weights if "weight_t" in weights else on_device(prepare_fc(params, on_host(weights)))
    return FcLayer(GemmLayer(prepared["weight_t"], prepared["bias"]))


def run_fc(params: dict, weights: dict, inputs: list, out) -> None:
    bind_fc(params, weights)(inputs, out)
