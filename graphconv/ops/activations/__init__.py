"""The smooth and piecewise activations of modern classifiers: hardsigmoid and hardswish
(MobileNetV3), silu (EfficientNet's swish: x * sigmoid(x)), gelu (ConvNeXt), leaky_relu
(Darknet and CSPDarknet backbones), prelu (leaky_relu with a learnt slope per
channel: face-recognition ResNets), mish (YOLOv4's CSPDarknet: x * tanh(softplus(x))),
and the elementwise functions PyTorch models bring through ONNX: tanh, softplus, abs,
pow (GeM pooling's x.pow(p) before its average pool and .pow(1 / p) after; x.sqrt() and
1 / x as its exponents 0.5 and -1) and the exponential linear units elu, selu and celu
(one formula, one kernel: scale * (x where x > 0, else alpha * (exp(x / beta) - 1))).

They share a folder because each kernel is the same one pass over memory with a
different formula; relu (in `elementwise`), clip and sigmoid came earlier and live elsewhere.
All are pointwise, so a converted network slides over a larger image as before,
and their CPU kernels are one pass over a value's memory however it is stored: between
ConvNeXt's or MobileNetV3's 1x1 convs, values stay channels-last.
"""
from __future__ import annotations

import math

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import REQUIRED, Example, OpDef, Param, numel, onnx_as, register

ONE_INPUT = (Example({}, [(3, 2, 4)]), Example({}, [(1, 1, 1)], batch=3))
TORCH_HARDSIGMOID = (1 / 6, 0.5)  # torch.nn.Hardsigmoid: relu6(x + 3) / 6


def _same_shape(params: dict, shapes):
    return shapes[0]


def _float64(inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0].astype(np.float64)


def hardsigmoid_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.clip(params["alpha"] * _float64(inputs) + params["beta"], 0.0, 1.0).astype(np.float32)


def hardswish_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = _float64(inputs)
    return (x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)).astype(np.float32)


def silu_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = _float64(inputs)
    return (x / (1.0 + np.exp(-x))).astype(np.float32)


def gelu_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = _float64(inputs)
    if params["approximate"] == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(np.float32)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)


def leaky_relu_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = _float64(inputs)
    return np.where(x >= 0, x, params["alpha"] * x).astype(np.float32)


def prelu_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = _float64(inputs)
    slope = np.asarray(weights["weight"], np.float64)[None, :, None, None]
    return np.where(x >= 0, x, slope * x).astype(np.float32)


def prelu_weight_shapes(params: dict, shapes) -> dict[str, tuple]:
    """One slope per channel (PyTorch's nn.PReLU(num_parameters=C); a single shared
    slope, nn.PReLU()'s default, comes in repeated per channel)."""
    return {"weight": (shapes[0][0],)}


def prelu_init_weights(params: dict, weight_shapes: dict[str, tuple], rng: np.random.Generator) -> dict:
    """Slopes around PyTorch's initial 0.25, some negative and some above 1 (both occur
    in trained networks, and both break a kernel that takes max(x, slope * x))."""
    return {"weight": rng.uniform(-0.5, 1.5, weight_shapes["weight"])}


def tanh_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.tanh(_float64(inputs)).astype(np.float32)


def softplus64(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), without overflow for large x."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def softplus_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return softplus64(_float64(inputs)).astype(np.float32)


def mish_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    x = _float64(inputs)
    return (x * np.tanh(softplus64(x))).astype(np.float32)


def abs_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.abs(inputs[0]).astype(np.float32)


SELU = (1.6732632423543772, 1.0507009873554805)  # PyTorch's (and ONNX's, to float32) alpha and scale


def exponential_linear(op: str, params: dict) -> tuple[float, float, float]:
    """(scale, alpha, beta) of elu, selu or celu as one formula: scale * (x where x > 0,
    else alpha * (exp(x / beta) - 1))."""
    if op == "selu":
        return params["gamma"], params["alpha"], 1.0
    return 1.0, params["alpha"], params["alpha"] if op == "celu" else 1.0


def _exponential_linear_reference(op: str):
    def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
        scale, alpha, beta = exponential_linear(op, params)
        x = _float64(inputs)
        below = alpha * np.expm1(np.minimum(x, 0.0) / beta)
        return (scale * np.where(x > 0, x, below)).astype(np.float32)
    return reference


def celu_shape(params: dict, shapes):
    if params["alpha"] == 0:
        raise ShapeError("celu's alpha must not be 0 (it divides by it)")
    return shapes[0]


def hardsigmoid_torch(params: dict, weights: dict, inputs: list):
    import torch
    import torch.nn.functional as F
    if (params["alpha"], params["beta"]) == TORCH_HARDSIGMOID:
        return F.hardsigmoid(inputs[0])
    return torch.clamp(params["alpha"] * inputs[0] + params["beta"], 0.0, 1.0)


def pow_reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """In float64, as the kernels compute it: a negative value to a fractional power is
    NaN, 0 to a negative one inf, as in numpy and torch."""
    with np.errstate(all="ignore"):
        return np.power(_float64(inputs), params["exponent"]).astype(np.float32)


def pow_torch(params: dict, weights: dict, inputs: list):
    import torch
    return torch.pow(inputs[0], params["exponent"])


def pow_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("Pow", [inputs[0], writer.constant(np.array(params["exponent"], np.float32))], output)


def leaky_relu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.leaky_relu(inputs[0], params["alpha"])


def prelu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.prelu(inputs[0], weights["weight"])


def hardswish_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.hardswish(inputs[0])


def silu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.silu(inputs[0])


def gelu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.gelu(inputs[0], approximate=params["approximate"])


def tanh_torch(params: dict, weights: dict, inputs: list):
    import torch
    return torch.tanh(inputs[0])


def softplus_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.softplus(inputs[0])


def mish_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.mish(inputs[0])


def abs_torch(params: dict, weights: dict, inputs: list):
    import torch
    return torch.abs(inputs[0])


def elu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.elu(inputs[0], params["alpha"])


def selu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    if (params["alpha"], params["gamma"]) == SELU:
        return F.selu(inputs[0])
    return params["gamma"] * F.elu(inputs[0], params["alpha"])


def celu_torch(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.celu(inputs[0], params["alpha"])


def elu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("Elu", inputs, output, alpha=params["alpha"])


def selu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("Selu", inputs, output, alpha=params["alpha"], gamma=params["gamma"])


def celu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("Celu", inputs, output, alpha=params["alpha"])


def mish_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """x * tanh(softplus(x)), as PyTorch's exporter writes it before op set 18 (ONNX's
    Mish node is newer than some runtimes); the ONNX front end reads it back as one mish."""
    gate = writer.node("Tanh", [writer.node("Softplus", inputs)])
    writer.node("Mul", [inputs[0], gate], output)


def hardsigmoid_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("HardSigmoid", inputs, output, alpha=params["alpha"], beta=params["beta"])


def leaky_relu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("LeakyRelu", inputs, output, alpha=params["alpha"])


def prelu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """The slopes as (C, 1, 1), which broadcast over an (N, C, H, W) input as PRelu needs."""
    slope = writer.node("Reshape", [writer.weight("weight"), writer.constant(np.array([-1, 1, 1], np.int64))])
    writer.node("PRelu", [inputs[0], slope], output)


def silu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    writer.node("Mul", [inputs[0], writer.node("Sigmoid", inputs)], output)


def gelu_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """Written out with Erf (or Tanh): ONNX's Gelu node needs op set 20, and graphconv
    exports op set 19 for the runtimes that stop there."""
    x = inputs[0]

    def const(value: float) -> str:
        return writer.constant(np.array(value, np.float32))

    if params["approximate"] == "tanh":
        cube = writer.node("Mul", [writer.node("Mul", [x, x]), x])
        inner = writer.node("Add", [x, writer.node("Mul", [cube, const(0.044715)])])
        phi = writer.node("Tanh", [writer.node("Mul", [inner, const(math.sqrt(2.0 / math.pi))])])
    else:
        phi = writer.node("Erf", [writer.node("Div", [x, const(math.sqrt(2.0))])])
    half_x = writer.node("Mul", [x, const(0.5)])
    writer.node("Mul", [half_x, writer.node("Add", [phi, const(1.0)])], output)


def _activation(name: str, doc: str, reference, torch, onnx, cost: int, params=(), examples=ONE_INPUT,
                shape=_same_shape, **weights) -> None:
    register(OpDef(name=name, doc=doc, params=params, shape=shape, reference=reference,
                   flops=lambda params, shapes, out: cost * numel(out), package=__name__,
                   torch=torch, onnx=onnx, examples=examples,
                   channels_last="like-input",  # one flat pass over memory stored either way
                   per_element=not weights, **weights))


_activation("hardsigmoid", "clamp(alpha * x + beta, 0, 1) elementwise (MobileNetV3's gate)",
            hardsigmoid_reference, hardsigmoid_torch, hardsigmoid_onnx, cost=3,
            params=(Param("alpha", "float", TORCH_HARDSIGMOID[0], doc="slope (PyTorch: 1/6; ONNX's default 0.2)"),
                    Param("beta", "float", TORCH_HARDSIGMOID[1], doc="offset")),
            examples=ONE_INPUT + (Example(dict(alpha=0.2, beta=0.5), [(2, 3, 3)]),))
_activation("hardswish", "x * clamp(x / 6 + 1/2, 0, 1) elementwise (MobileNetV3)",
            hardswish_reference, hardswish_torch, onnx_as("HardSwish"), cost=4)
_activation("silu", "x * sigmoid(x) elementwise (swish; EfficientNet)",
            silu_reference, silu_torch, silu_onnx, cost=5)
_activation("gelu", "x * Phi(x) elementwise, Phi the normal CDF (ConvNeXt); approximate: tanh form",
            gelu_reference, gelu_torch, gelu_onnx, cost=8,
            params=(Param("approximate", "choice", "none", choices=("none", "tanh"),
                          doc="'none': the exact erf form; 'tanh': the tanh approximation"),),
            examples=ONE_INPUT + (Example(dict(approximate="tanh"), [(2, 3, 3)]),))

_activation("tanh", "tanh(x) elementwise", tanh_reference, tanh_torch, onnx_as("Tanh"), cost=6)
_activation("softplus", "log(1 + exp(x)) elementwise (PyTorch's nn.Softplus() with beta 1)",
            softplus_reference, softplus_torch, onnx_as("Softplus"), cost=4)
_activation("mish", "x * tanh(softplus(x)) elementwise (YOLOv4's CSPDarknet)",
            mish_reference, mish_torch, mish_onnx, cost=10)
_activation("abs", "|x| elementwise", abs_reference, abs_torch, onnx_as("Abs"), cost=1)
_activation("elu", "x where x > 0, else alpha * (exp(x) - 1), elementwise",
            _exponential_linear_reference("elu"), elu_torch, elu_onnx, cost=4,
            params=(Param("alpha", "float", 1.0, doc="the value approached far below 0 is -alpha"),),
            examples=ONE_INPUT + (Example(dict(alpha=0.3), [(2, 3, 3)]),
                                  Example(dict(alpha=-1.5), [(2, 1, 1)], batch=3)))
_activation("selu", "gamma * (x where x > 0, else alpha * (exp(x) - 1)), elementwise (self-normalising nets)",
            _exponential_linear_reference("selu"), selu_torch, selu_onnx, cost=5,
            params=(Param("alpha", "float", SELU[0], doc="PyTorch's constant (ONNX's, to float32)"),
                    Param("gamma", "float", SELU[1], doc="the scale; PyTorch's constant")),
            examples=ONE_INPUT + (Example(dict(alpha=1.2, gamma=0.5), [(2, 3, 3)]),))
_activation("celu", "x where x > 0, else alpha * (exp(x / alpha) - 1), elementwise",
            _exponential_linear_reference("celu"), celu_torch, celu_onnx, cost=5, shape=celu_shape,
            params=(Param("alpha", "float", 1.0, doc="not 0"),),
            examples=ONE_INPUT + (Example(dict(alpha=0.4), [(2, 3, 3)]),
                                  Example(dict(alpha=2.5), [(2, 1, 1)], batch=3),
                                  Example(dict(alpha=-0.5), [(2, 3, 3)])))  # x / alpha > 0: libm's expm1
_activation("leaky_relu", "x where x >= 0, else alpha * x, elementwise (Darknet, CSPDarknet)",
            leaky_relu_reference, leaky_relu_torch, leaky_relu_onnx, cost=2,
            params=(Param("alpha", "float", 0.01, doc="the slope below 0 (PyTorch's negative_slope; "
                                                      "ONNX's and Keras' alpha)"),),
            examples=ONE_INPUT + (Example(dict(alpha=0.1), [(2, 3, 3)]), Example(dict(alpha=-0.5), [(2, 3, 3)]),
                                  Example(dict(alpha=1.5), [(2, 1, 1)], batch=3)))
_activation("pow", "x ** exponent elementwise (GeM pooling: x.pow(p), average pool, .pow(1 / p))",
            pow_reference, pow_torch, pow_onnx, cost=10,
            params=(Param("exponent", "float", REQUIRED, doc="the power: GeM's p, or 1 / p after its pool; 0.5 "
                                                             "is a square root, -1 a reciprocal"),),
            examples=(Example(dict(exponent=3.0), [(3, 2, 4)]), Example(dict(exponent=0.5), [(3, 2, 4)]),
                      Example(dict(exponent=-1.0), [(2, 3, 3)]), Example(dict(exponent=2.5), [(4, 1, 1)], batch=3)))
_activation("prelu", "x where x >= 0, else weight[c] * x, elementwise: a learnt slope per channel",
            prelu_reference, prelu_torch, prelu_onnx, cost=2,
            weight_shapes=prelu_weight_shapes, init_weights=prelu_init_weights,
            examples=(Example({}, [(3, 2, 4)]), Example({}, [(5, 1, 1)], batch=3), Example({}, [(16, 3, 2)])))


# ---- activations a conv applies itself (its `activation` param) -------------------------------

FUSED = ("none", "relu", "silu", "hardswish", "gelu", "relu6", "mish")
"""What a conv's `activation` can be, in the order of the codes its kernels take
(`fused_code`): the activations after convs in ReLU networks, EfficientNet (silu),
MobileNetV3 (hardswish), ConvNeXt (gelu), MobileNetV2 (relu6: a clip to [0, 6]) and
YOLOv4's CSPDarknet (mish). The
CUDA kernels apply each as they write the outputs; the CPU ones apply ReLU so, and the
others over each run of outputs just written, or in one pass over the output in place
right after (`conv/cpu.py`, `_writes_smooth_activation`). Either way a buffer and a pass
over the map fewer than a layer of its own: MobileNetV2 at 224 on 2 cores, its 35
ReLU6 layers fused, 5.5 -> 3.4 ms. "gelu" is the exact (erf) form."""

FUSED_FROM = ("relu", "silu", "hardswish", "gelu", "clip", "mish")
"""The ops whose layers `fusable` may fold into a conv (a gelu only in its exact form, a
clip only as ReLU6)."""

RELU6 = {"min": 0.0, "max": 6.0}  # the clip that is ReLU6


def fused_code(activation: str) -> int:
    """The number the CUDA kernels take for a conv's `activation` (0: none)."""
    return FUSED.index(activation)


def fused_activation_names() -> str:
    """FUSED past "none" as prose, "relu, silu, ... or relu6": for pass descriptions,
    which `graphconv passes` prints and which, written out by hand, miss a new entry."""
    names = [name for name in FUSED if name != "none"]
    return ", ".join(names[:-1]) + " or " + names[-1]


def fusable(node) -> str | None:
    """The conv `activation` that does what this layer does, or None. An op of no params
    in both FUSED_FROM and FUSED is its own activation, so a new one fuses once it is
    listed there; an op with params fuses only for the values the kernels compute (a
    gelu in its exact form, a clip to [0, 6]), so each such op has its own line here."""
    if node.op not in FUSED_FROM:
        return None
    if node.op == "gelu":
        return "gelu" if node.params["approximate"] == "none" else None
    if node.op == "clip":
        return "relu6" if dict(node.params) == RELU6 else None
    if node.op in FUSED and not node.params:
        return node.op
    return None


def fused_layer(activation: str) -> tuple[str, dict]:
    """The layer (op and all its params) a conv's `activation` does: what conv-to-fc puts back."""
    if activation == "relu6":
        return "clip", dict(RELU6)
    return activation, ({"approximate": "none"} if activation == "gelu" else {})


def _opdef(activation: str) -> tuple:
    """The op (and its params) of a fused activation: its definition stays there."""
    from graphconv.ops.registry import get_op

    op, params = fused_layer(activation)
    return get_op(op), params


def fused_reference(activation: str, y: np.ndarray) -> np.ndarray:
    """A conv's numpy reference output through its activation (as the op's own reference)."""
    if activation == "none":
        return y
    opdef, params = _opdef(activation)
    return opdef.reference(params, {}, [y])


def fused_torch(activation: str, y):
    if activation == "none":
        return y
    opdef, params = _opdef(activation)
    return opdef.torch(params, {}, [y])


def fused_flops(activation: str, out_shape) -> int:
    """What the activation costs, counted as its own layer counts it (so fusing it changes
    no FLOP total)."""
    if activation == "none":
        return 0
    opdef, params = _opdef(activation)
    return opdef.flops(params, [out_shape], out_shape)


def fused_onnx(writer, activation: str, y: str, output: str) -> None:
    opdef, params = _opdef(activation)
    opdef.onnx(writer, params, [y], output)
