"""batchnorm: inference-form batch normalisation (torch.nn.BatchNorm2d in eval mode).

y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, per channel, with the
statistics frozen at training time. Most batchnorms sit right after a conv (or fc) and
the `fold-batchnorm` pass merges them into its weights, so at run time they cost
nothing; this op is for the rest (after a concat or a pooling, as in DenseNet, or after
a conv whose output something else reads too), and it is the oracle fold-batchnorm is
tested against.

Two graphconv extensions, which passes set so that DenseNet's pre-activation runs as one
pass over memory instead of three (concat, batchnorm, ReLU):
- several inputs: the batchnorm normalises their concatenation along channels, which
  it never writes out (`fuse-concat-batchnorm`);
- `activation`: one of a conv's fused activations, applied as it writes
  (`fuse-batchnorm-activation`).
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import counted
from graphconv.ops.activations import FUSED, fused_flops, fused_onnx, fused_reference, fused_torch
from graphconv.ops.registry import Example, OpDef, Param, normalization_shape, numel, register, same_spatial

WEIGHT_NAMES = ("weight", "bias", "running_mean", "running_var")


def shape(params: dict, shapes) -> tuple:
    """A normalisation's shape rule, over the inputs stacked along channels."""
    normalization_shape(params, shapes)
    same_spatial(shapes, "batchnorm")
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def weight_shapes(params: dict, shapes) -> dict[str, tuple]:
    """PyTorch's names and layout: four per-channel vectors (of all the inputs' channels)."""
    c = sum(s[0] for s in shapes)
    return {name: (c,) for name in WEIGHT_NAMES}


def init_weights(params: dict, weight_shapes: dict[str, tuple], rng: np.random.Generator) -> dict:
    """Random statistics rather than the identity (mean 0, var 1, weight 1, bias 0): a
    seeded network then really exercises every term, and a pass that dropped one (or
    folded it wrongly) changes the output. running_var is drawn in 0.5..2 since it is
    square-rooted; the order of the draws is fixed (the seed is the layer's name)."""
    (c,) = weight_shapes["running_var"]
    return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.uniform(-0.5, 0.5, c),
            "running_mean": rng.uniform(-0.5, 0.5, c), "running_var": rng.uniform(0.5, 2.0, c)}


def weights_problem(params: dict, weights: dict) -> str | None:
    """What makes statistics unusable (OpDef.weights_problem): a
    running_var + eps that is not positive has no real square root, so every value of
    its channels would be NaN (and fold-batchnorm would fold NaN into the conv before
    it). A trained network never has one; a damaged file or an ONNX model edited by
    hand can."""
    total = np.asarray(weights["running_var"], np.float64) + params["eps"]
    bad = np.flatnonzero(~(total > 0))
    if not bad.size:
        return None
    first = int(bad[0])
    return (f"running_var + eps must be positive (it is square-rooted), but is not in {bad.size} of "
            f"{counted(total.size, 'channel')} (the first: channel {first}, running_var "
            f"{float(weights['running_var'][first]):g}, eps {params['eps']:g}); their outputs would be NaN")


def channel_scale(params: dict, weights: dict) -> np.ndarray:
    """weight / sqrt(running_var + eps) per channel, in float64."""
    return (np.asarray(weights["weight"], np.float64)
            / np.sqrt(np.asarray(weights["running_var"], np.float64) + params["eps"]))


def scale_and_shift(params: dict, weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 with y = x * scale + shift per channel: what the
    fold-batchnorm pass multiplies into a conv's weight and bias."""
    scale = channel_scale(params, weights)
    shift = np.asarray(weights["bias"], np.float64) - np.asarray(weights["running_mean"], np.float64) * scale
    return scale, shift


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = np.concatenate(inputs, axis=1).astype(np.float64)
    per_channel = {k: np.asarray(weights[k], np.float64)[None, :, None, None] for k in WEIGHT_NAMES}
    y = ((x - per_channel["running_mean"]) / np.sqrt(per_channel["running_var"] + params["eps"])
         * per_channel["weight"] + per_channel["bias"])
    return fused_reference(params["activation"], y.astype(np.float32))


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    import torch.nn.functional as F
    x = torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0]
    y = F.batch_norm(x, weights["running_mean"], weights["running_var"], weights["weight"],
                     weights["bias"], training=False, eps=params["eps"])
    return fused_torch(params["activation"], y)


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """BatchNormalization, after a Concat of several inputs and before the activation."""
    x = writer.node("Concat", inputs, axis=1) if len(inputs) > 1 else inputs[0]
    activation = params["activation"] != "none"
    y = writer.node("BatchNormalization", [x, *(writer.weight(key) for key in WEIGHT_NAMES)],
                    None if activation else output, epsilon=params["eps"])
    if activation:
        fused_onnx(writer, params["activation"], y, output)


register(OpDef(
    name="batchnorm", doc="inference batch normalisation with frozen statistics (torch.nn.BatchNorm2d, eval)",
    params=(Param("eps", "float", 1e-5, doc="added to running_var before the square root"),
            Param("activation", "choice", "none", choices=FUSED,
                  doc="graphconv extension: the activation the batchnorm applies itself")),
    shape=shape, reference=reference, arity=(1, None),
    flops=lambda params, shapes, out: 2 * numel(out) + fused_flops(params["activation"], out),
    package=__name__, weight_shapes=weight_shapes, init_weights=init_weights, torch=torch_equivalent,
    onnx=to_onnx, channels_last="like-input", weights_problem=weights_problem,
    examples=(
        Example({}, [(3, 2, 4)]),
        Example(dict(eps=0.1), [(5, 1, 1)], batch=3),  # after a global pool or an fc; a large eps
        Example(dict(eps=0.0), [(2, 3, 3)]),
        Example(dict(activation="relu"), [(3, 4, 2)]),  # pre-activation: BN + ReLU
        Example(dict(activation="relu"), [(2, 3, 3), (3, 3, 3), (1, 3, 3)]),  # DenseNet's, concat included
        Example(dict(activation="silu", eps=0.01), [(4, 2, 2), (1, 2, 2)], batch=2),
        Example(dict(activation="relu6"), [(5, 1, 1), (2, 1, 1)]),
    ),
))
