"""inverted_residual: a 1x1 expand conv, a depthwise conv and a 1x1 project conv as one
layer (MobileNetV2's and EfficientNet's blocks without their squeeze-and-excitation).

The CPU backend makes it where it binds a network (`passes/fuse_inverted_residual.py`):
the three convs then run row band by row band (`cpu.py`), so the expanded map, six
times the block's channels, is never written to memory whole. Spec writers never name
it (`internal`): what it computes is exactly the three `conv` layers it replaces, each
stage's params and activation as that conv's, which is how its reference, its PyTorch
form, its shape rule and its FLOPs are written (`stages`).

The output is the project conv's, plus, where `add_input` is set, the block's own input
(MobileNetV2's residual `x + block(x)`), or a second input's values, before `activation`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.activations import FUSED
from graphconv.ops.registry import Example, OpDef, Param, Window, get_op, he_normal_weights, numel, pair, register

STAGES = ("expand", "depthwise", "project")


def stages(params: dict, in_channels: int) -> list[dict]:
    """The three convs' params, as `conv` layers would have them (bias always: the pass
    gives a conv without one zeros)."""
    hidden = params["hidden_channels"]
    plain = dict(stride=1, padding=0, dilation=1, bias=True)
    return [dict(plain, out_channels=hidden, kernel_size=1, groups=1, activation=params["expand_activation"]),
            dict(out_channels=hidden, kernel_size=params["kernel_size"], stride=params["stride"],
                 padding=params["padding"], dilation=params["dilation"], groups=hidden, bias=True,
                 activation=params["depthwise_activation"]),
            dict(plain, out_channels=params["out_channels"], kernel_size=1, groups=1, activation=params["activation"])]


def stage_weights(weights: dict, stage: str) -> dict:
    """One stage's weights under the names a `conv` gives them."""
    return {"weight": weights[f"{stage}_weight"], "bias": weights[f"{stage}_bias"]}


def _conv():
    return get_op("conv")


def _stage_shapes(params: dict, shapes) -> list[tuple[int, int, int]]:
    """Each stage's input shape, then the output's."""
    conv = _conv()
    out = [tuple(shapes[0])]
    for stage in stages(params, shapes[0][0]):
        out.append(conv.shape(stage, [out[-1]]))
    return out


def shape(params: dict, shapes) -> tuple[int, int, int]:
    out = _stage_shapes(params, shapes)[-1]
    if params["add_input"] and len(shapes) == 2:
        raise ShapeError("add_input adds the block's input: a second input to add as well is one too many")
    added = shapes[0] if params["add_input"] else shapes[1] if len(shapes) == 2 else None
    if added is not None and tuple(added) != out:
        raise ShapeError(f"the input added to the output must be {'x'.join(map(str, out))}, "
                         f"got {'x'.join(map(str, added))}")
    return out


def weight_shapes(params: dict, shapes) -> dict[str, tuple]:
    conv, expected = _conv(), {}
    for name, stage, stage_in in zip(STAGES, stages(params, shapes[0][0]), _stage_shapes(params, shapes)):
        for key, value in conv.weight_shapes(stage, [stage_in]).items():
            expected[f"{name}_{key}"] = value
    return expected


def init_weights(params: dict, weight_shapes: dict[str, tuple], rng: np.random.Generator) -> dict:
    """Each stage's weights as a conv's are seeded (`registry.he_normal_weights`)."""
    arrays = {}
    for name in STAGES:
        stage = he_normal_weights({}, {"weight": weight_shapes[f"{name}_weight"],
                                       "bias": weight_shapes[f"{name}_bias"]}, rng)
        arrays.update({f"{name}_{key}": value for key, value in stage.items()})
    return arrays


def flops(params: dict, shapes, out_shape) -> int:
    conv, stage_shapes = _conv(), _stage_shapes(params, shapes)
    total = sum(conv.flops(stage, [stage_in], stage_out)
                for stage, stage_in, stage_out in zip(stages(params, shapes[0][0]), stage_shapes, stage_shapes[1:]))
    return total + (numel(out_shape) if params["add_input"] or len(shapes) == 2 else 0)


def window(params: dict, shapes) -> Window:
    """The depthwise conv's: the 1x1 convs around it add nothing to a pixel's window."""
    return Window(pair(params["kernel_size"]), pair(params["stride"]), pair(params["padding"]),
                  pair(params["dilation"]))


def added_input(params: dict, inputs: list):
    """The values added to the output before `activation`, or None."""
    return inputs[0] if params["add_input"] else inputs[1] if len(inputs) == 2 else None


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """The three convs' references one after another, the added input with the last."""
    return _through_stages(_conv().reference, params, weights, inputs)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    return _through_stages(_conv().torch, params, weights, inputs)


def _through_stages(conv_form: Callable, params: dict, weights: dict, inputs: list):
    """`inputs` through the three convs in `conv_form` (the conv's reference, or its PyTorch form)."""
    y = inputs[0]
    expand, depthwise, project = stages(params, y.shape[1])
    y = conv_form(expand, stage_weights(weights, "expand"), [y])
    y = conv_form(depthwise, stage_weights(weights, "depthwise"), [y])
    added = added_input(params, inputs)
    return conv_form(project, stage_weights(weights, "project"), [y] + ([added] if added is not None else []))


register(OpDef(
    name="inverted_residual", internal=True,
    doc="1x1 expand conv, depthwise conv, 1x1 project conv as one layer (made by the CPU backend)",
    params=(
        Param("out_channels", "int"),
        Param("hidden_channels", "int", doc="the expand conv's output channels"),
        Param("kernel_size", "pair", doc="the depthwise conv's"),
        Param("stride", "pair", 1),
        Param("padding", "pair", 0, minimum=0),
        Param("dilation", "pair", 1),
        Param("expand_activation", "choice", "none", choices=FUSED),
        Param("depthwise_activation", "choice", "none", choices=FUSED),
        Param("activation", "choice", "none", choices=FUSED, doc="the project conv's (after the added input)"),
        Param("add_input", "bool", False, doc="add the block's input to the output (MobileNetV2's residual)"),
    ),
    shape=shape, reference=reference, flops=flops, package=__name__, arity=(1, 2), weight_shapes=weight_shapes,
    init_weights=init_weights, window=window, torch=torch_equivalent, channels_last="any",
    examples=(
        Example(dict(out_channels=3, hidden_channels=12, kernel_size=3, padding=1, expand_activation="relu6",
                     depthwise_activation="relu6", add_input=True), [(3, 6, 5)]),  # MobileNetV2's
        Example(dict(out_channels=4, hidden_channels=8, kernel_size=3, stride=2, padding=1,
                     expand_activation="silu", depthwise_activation="silu"), [(2, 7, 6)]),  # EfficientNet's
        Example(dict(out_channels=5, hidden_channels=16, kernel_size=[5, 3], padding=[1, 2], dilation=[1, 2],
                     expand_activation="relu", activation="relu"), [(3, 6, 7), (5, 4, 7)]),  # + a second input
        Example(dict(out_channels=2, hidden_channels=3, kernel_size=3, stride=[1, 2]), [(4, 3, 5)]),
    ),
))
