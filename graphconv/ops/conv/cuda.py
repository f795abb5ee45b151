"""CUDA conv: the register-tiled implicit GEMM of `graphconv.ops.gemm_cuda`, with bias,
residual and activation in its epilogue (or in the pass that adds up split-K partial sums);
depthwise layers (one input channel per group) one thread per output instead
(`cuda_depthwise`).

`prepare_conv` stores the weights as the kernel reads them, once per network: transposed
to (groups, K, O/groups) for the GEMM, (O, kh, kw) for a depthwise layer. `bind_conv`
makes the layer's call, a `GemmLayer` (which works out each input shape's launch once and
reuses it on every later run) or a `DepthwiseLayer`.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.activations import fused_code
from graphconv.ops.conv import is_depthwise
from graphconv.ops.conv.cuda_depthwise import DepthwiseLayer
from graphconv.ops.gemm_cuda import GemmLayer, on_device, on_host, plan_launch, prepared_weights, processors
from graphconv.ops.registry import pair


def prepare_conv(params: dict, weights: dict) -> dict:
    weight, bias = weights["weight"], weights.get("bias")
    if is_depthwise(params, weight.shape[1] * params["groups"]):
        return {"weight_dw": np.ascontiguousarray(weight[:, 0], np.float32),
                "bias": bias if bias is not None else np.zeros(weight.shape[0], np.float32)}
    return prepared_weights(weight, bias, params["groups"])


def describe_conv(params: dict, in_shape: tuple[int, ...], channels_last: bool = False) -> str:
    """The tile and K split the layer launches with on this GPU, for an (N, C, H, W) input."""
    from graphconv.ops.conv import shape
    n, channels = in_shape[0], in_shape[1]
    out_c, ho, wo = shape(params, [in_shape[1:]])
    kh, kw = pair(params["kernel_size"])
    groups = params["groups"]
    if is_depthwise(params, channels):
        return "depthwise"
    return plan_launch(out_c // groups, n * ho * wo, channels // groups * kh * kw, groups, processors()).describe()


def bind_conv(params: dict, weights: dict) -> GemmLayer | DepthwiseLayer:
    prepared = weights if "weight_t" in weights or "weight_dw" in weights else on_device(
        prepare_conv(params, on_host(weights)))
    if "weight_dw" in prepared:
        return DepthwiseLayer(prepared["weight_dw"], prepared["bias"], pair(params["stride"]),
                              pair(params["padding"]), pair(params["dilation"]), fused_code(params["activation"]))
    return GemmLayer(prepared["weight_t"], prepared["bias"], pair(params["kernel_size"]), params["groups"],
                     pair(params["stride"]), pair(params["padding"]), pair(params["dilation"]),
                     fused_code(params["activation"]))


def run_conv(params: dict, weights: dict, inputs: list, out) -> None:
    """One call of the bound layer (the Executor binds once; this is for callers that
    hold weights as the spec gives them or as `prepare_conv` left them)."""
    bind_conv(params, weights)(inputs, out)
