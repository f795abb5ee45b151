"""groupnorm: normalise each group of channels over the whole map (GroupNorm, InstanceNorm).

The channels are split into `groups` runs of C / groups; each run is normalised over all
its values, every channel and position together, with its mean and (biased) variance,
then scaled and shifted per channel. groups=1 normalises the whole map (PoolFormer's
GroupNorm(1)); groups=C is InstanceNorm2d. The statistics are the whole crop's, so
a larger image changes them: a network with this op cannot slide, and the passes that
make networks slide refuse it (`whole_map`). `graphconv run --crops` computes its exact
map crop by crop, as for squeeze-and-excitation networks.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import (Example, OpDef, Param, affine_weight_shapes, normalization_shape, numel,
                                    register, seeded_affine)


def shape(params: dict, shapes) -> tuple[int, int, int]:
    c = shapes[0][0]
    if c % params["groups"]:
        raise ShapeError(f"{c} channels do not split into {params['groups']} groups of equal size")
    return normalization_shape(params, shapes)


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0].astype(np.float64)
    n, c, h, w = x.shape
    grouped = x.reshape(n, params["groups"], -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=2, keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + params["eps"])).reshape(n, c, h, w)
    per_channel = {k: np.asarray(weights[k], np.float64)[None, :, None, None] for k in ("weight", "bias")}
    return (normed * per_channel["weight"] + per_channel["bias"]).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.group_norm(inputs[0], params["groups"], weights["weight"], weights["bias"], params["eps"])


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """As PyTorch's exporter writes GroupNorm for every op set: the groups as (N, G, -1),
    an InstanceNormalization of each, the map's shape back, then the per-channel affine
    (ONNX's GroupNormalization scales per group before op set 21)."""
    groups = params["groups"]
    grouped = writer.node("Reshape", [inputs[0], writer.constant(np.array([0, groups, -1], np.int64))])
    normed = writer.node("InstanceNormalization", [grouped, writer.constant(np.ones(groups, np.float32)),
                                                   writer.constant(np.zeros(groups, np.float32))],
                         epsilon=params["eps"])
    back = writer.node("Reshape", [normed, writer.node("Shape", [inputs[0]])])
    axes = writer.constant(np.array([1, 2], np.int64))
    scaled = writer.node("Mul", [back, writer.node("Unsqueeze", [writer.weight("weight"), axes])])
    writer.node("Add", [scaled, writer.node("Unsqueeze", [writer.weight("bias"), axes])], output)


def whole_map(params: dict) -> str:
    """Why no groupnorm slides, naming the PyTorch layer it came from (ONNX's
    InstanceNormalization is a groupnorm of one channel a group)."""
    return ("(a GroupNorm or InstanceNorm) takes statistics of its whole map, so on a larger image they are the "
            "image's, not each crop's")


register(OpDef(
    name="groupnorm", doc="normalise each group of channels over the whole map, then scale and shift per "
                          "channel (GroupNorm; InstanceNorm with groups = channels)",
    params=(Param("groups", "int", doc="how many runs of channels are normalised apart"),
            Param("eps", "float", 1e-5, doc="added to the variance before the square root")),
    shape=shape, reference=reference,
    flops=lambda params, shapes, out: 7 * numel(out),  # two sums, a difference, a square, a scale and shift
    package=__name__, weight_shapes=affine_weight_shapes, init_weights=seeded_affine, torch=torch_equivalent,
    onnx=to_onnx, whole_map=whole_map, channels_last="like-input",
    examples=(
        Example({"groups": 2}, [(4, 3, 5)]),
        Example({"groups": 1, "eps": 1e-6}, [(3, 2, 2)]),  # PoolFormer's GroupNorm(1)
        Example({"groups": 5, "eps": 0.1}, [(5, 4, 3)], batch=1),  # InstanceNorm2d
        Example({"groups": 3}, [(6, 1, 1)], batch=3),  # one position: each group of two normalised
    ),
))
