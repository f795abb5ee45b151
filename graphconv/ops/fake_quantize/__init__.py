"""fake_quantize: round to a grid of `scale` steps, clamp to an integer range, and back to
float32: what an ONNX QuantizeLinear followed by a DequantizeLinear of the same scale and
zero point computes on a feature map (a QDQ model's quantized activations, as
onnxruntime's quantize_static and PyTorch's quantization-aware training export them).

    y = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale

with round half to even, as ONNX rounds, and x / scale a float32 division, as ONNX
divides (PyTorch's own fake_quantize multiplies by 1 / scale, which rounds some ties the
other way). A QDQ model's constant weights are dequantized when it is read; its
activations go through layers of this op, so its score maps are the quantized model's,
computed in float32. NaN stays NaN.
"""
from __future__ import annotations

import math

import numpy as np

from graphconv.errors import GraphconvError, ShapeError
from graphconv.ops.registry import Example, OpDef, Param, numel, register

INT_RANGE = -(1 << 31)  # the least an integer parameter may be: zero points and ranges may be negative


def shape(params: dict, shapes) -> tuple[int, int, int]:
    if not 0.0 < params["scale"] < math.inf:
        raise ShapeError(f"scale {params['scale']} must be a positive number")
    if params["qmin"] > params["qmax"]:
        raise ShapeError(f"qmin {params['qmin']} is greater than qmax {params['qmax']}")
    return shapes[0]


def grid(params: dict) -> tuple[np.float32, np.float32, np.float32]:
    """(scale, least, most): the float32 scale and the range of round(x / scale) that
    survives the clamp, qmin - zero_point .. qmax - zero_point (exact integers in float32
    for every 16-bit range and less)."""
    zero = params["zero_point"]
    return np.float32(params["scale"]), np.float32(params["qmin"] - zero), np.float32(params["qmax"] - zero)


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    scale, least, most = grid(params)
    steps = np.rint(inputs[0].astype(np.float32) / scale)  # numpy's rint rounds half to even
    return (np.clip(steps, least, most) * scale).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch
    scale, least, most = (float(v) for v in grid(params))
    return torch.clamp(torch.round(inputs[0] / scale), least, most) * scale  # torch.round: half to even


EIGHT_BITS = {(-128, 127): np.int8, (0, 255): np.uint8}  # the integer types QuantizeLinear takes in op set 19


def eight_bit_type(params: dict) -> type | None:
    """int8 or uint8, whichever holds the layer's range and zero point (its own range
    first), or None where neither does."""
    inside = [(span != (params["qmin"], params["qmax"]), dtype) for span, dtype in EIGHT_BITS.items()
              if span[0] <= min(params["qmin"], params["zero_point"])
              and max(params["qmax"], params["zero_point"]) <= span[1]]
    return min(inside, key=lambda entry: entry[0])[1] if inside else None


def to_onnx(writer, params: dict, inputs: list[str], output: str) -> None:
    """A QuantizeLinear and a DequantizeLinear, as quantizers write them; a range
    narrower than its 8-bit type (int4's -8..7) clamps after, at the float32 values of
    its ends, which is the same: (q - zero_point) * scale grows with q."""
    dtype = eight_bit_type(params)
    if dtype is None:
        raise GraphconvError(f"fake_quantize of range {params['qmin']}..{params['qmax']} (zero point "
                             f"{params['zero_point']}) needs integers wider than 8 bits, which ONNX's "
                             "QuantizeLinear takes from op set 21 on; graphconv writes op set 19")
    scale, zero = writer.constant(np.array(params["scale"], np.float32)), writer.constant(np.array(
        params["zero_point"], dtype))
    steps = writer.node("QuantizeLinear", [inputs[0], scale, zero])
    info = np.iinfo(dtype)
    if (params["qmin"], params["qmax"]) == (info.min, info.max):
        writer.node("DequantizeLinear", [steps, scale, zero], output)
        return
    step, least, most = grid(params)
    ends = [writer.constant(np.array(end * step, np.float32)) for end in (least, most)]
    writer.node("Clip", [writer.node("DequantizeLinear", [steps, scale, zero]), *ends], output)


register(OpDef(
    name="fake_quantize",
    doc="quantize to integers and back (ONNX QuantizeLinear then DequantizeLinear): a quantized activation",
    params=(Param("scale", "float", doc="the step between neighbouring integers, > 0"),
            Param("zero_point", "int", 0, minimum=INT_RANGE, doc="the integer that stands for 0.0"),
            Param("qmin", "int", -128, minimum=INT_RANGE, doc="the least integer (int8: -128, uint8: 0)"),
            Param("qmax", "int", 127, minimum=INT_RANGE, doc="the greatest integer (int8: 127, uint8: 255)")),
    shape=shape, reference=reference,
    flops=lambda params, shapes, out: 5 * numel(out),  # divide, round, two compares, multiply
    package=__name__, torch=torch_equivalent, onnx=to_onnx, channels_last="like-input", per_element=True,
    examples=(
        Example(dict(scale=0.05), [(3, 2, 4)]),  # int8, symmetric: -6.4 .. 6.35, which standard normal inputs stay in
        Example(dict(scale=0.02, zero_point=128, qmin=0, qmax=255), [(2, 3, 3)]),  # uint8 around 0: -2.56 .. 2.54
        Example(dict(scale=0.01, qmin=0, qmax=255), [(2, 2, 3)]),  # uint8 from 0: negatives to 0, past 2.55 clamp
        Example(dict(scale=0.25, zero_point=-3, qmin=-8, qmax=7), [(1, 3, 2)], batch=2),  # int4, offset
        Example(dict(scale=1e-4, qmin=-32768, qmax=32767), [(2, 2, 2)]),  # int16
    ),
))
