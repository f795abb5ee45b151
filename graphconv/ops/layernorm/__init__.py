"""layernorm: normalise each position's channel vector (ConvNeXt's LayerNorm).

y[:, c, i, j] = (x[:, c, i, j] - mean) / sqrt(var + eps) * weight[c] + bias[c], with the
mean and (biased) variance taken over the channels at position (i, j) alone. That is
PyTorch's LayerNorm over the last axis of a channels-last map (ConvNeXt's blocks) and
ConvNeXt's LayerNorm2d: it looks at one position, so, like a 1x1 conv, it slides over a
larger image unchanged. A LayerNorm over (C, H, W) together would see the whole crop and
is not this op.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import (Example, OpDef, Param, affine_weight_shapes, normalization_shape, numel,
                                    register, seeded_affine)


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    per_channel = {k: np.asarray(weights[k], np.float64)[None, :, None, None] for k in ("weight", "bias")}
    y = (x - mean) / np.sqrt(var + params["eps"]) * per_channel["weight"] + per_channel["bias"]
    return y.astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    x = inputs[0].permute(0, 2, 3, 1)
    y = F.layer_norm(x, (x.shape[-1],), weights["weight"], weights["bias"], params["eps"])
    return y.permute(0, 3, 1, 2)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    channels_last = writer.node("Transpose", inputs, perm=[0, 2, 3, 1])
    normed = writer.node("LayerNormalization", [channels_last, writer.weight("weight"), writer.weight("bias")],
                         axis=-1, epsilon=params["eps"])
    writer.node("Transpose", [normed], output, perm=[0, 3, 1, 2])


register(OpDef(
    name="layernorm", doc="normalise each position over its channels, then scale and shift per channel",
    params=(Param("eps", "float", 1e-5, doc="added to the variance before the square root"),),
    shape=normalization_shape, reference=reference,
    flops=lambda params, shapes, out: 8 * numel(out),  # two sums, a difference, a square, a scale and shift
    package=__name__, weight_shapes=affine_weight_shapes, init_weights=seeded_affine, torch=torch_equivalent,
    onnx=to_onnx, channels_last="like-input",
    examples=(
        Example({}, [(3, 2, 4)]),
        Example(dict(eps=1e-6), [(7, 3, 3)]),  # ConvNeXt's eps; an odd channel count
        Example(dict(eps=0.1), [(5, 1, 1)], batch=3),  # after a global pool (ConvNeXt's head)
        Example({}, [(1, 2, 2)]),  # one channel: every output is the bias
    ),
))
