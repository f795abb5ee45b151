"""Reading fake_quantize from ONNX files: a QuantizeLinear of a feature map and the
DequantizeLinear after it, of the same scale and zero point, are one `fake_quantize`
layer (a QDQ model's quantized activation). The ONNX front end imports this module
(`<package>.onnx_import`) before it reads a file; a QuantizeLinear or DequantizeLinear of
constants (a quantized model's weights) never reaches it: the importer folds it."""
from __future__ import annotations

import numpy as np

from graphconv.errors import shown
from graphconv.frontends.onnx import NOT_READ_BECAUSE, POINTWISE_LAYOUTS, Importer, converts

INTEGER_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255),
                  np.dtype(np.int16): (-32768, 32767), np.dtype(np.uint16): (0, 65535)}
UINT8 = 2  # onnx.TensorProto.UINT8: QuantizeLinear's integers where it has no zero point or output_dtype


@converts("QuantizeLinear")
def quantize(imp: Importer, node) -> None:
    """Binds nothing: the DequantizeLinear that reads its integers makes the layer. One
    whose integers anything else reads is refused: an integer op's (a model quantized in
    operator form), or the network's output (integers, not scores)."""
    imp.tensor(node.input[0], POINTWISE_LAYOUTS)
    _grid(imp, node, None)  # a scale per channel is refused here, at its node
    others = [n.op_type for n in imp.nodes if node.output[0] in n.input and n.op_type != "DequantizeLinear"]
    if others:
        why = NOT_READ_BECAUSE.get(others[0], "graphconv computes in float32, and reads a quantized map only "
                                              "through the DequantizeLinear after its QuantizeLinear")
        raise imp.error(f"op QuantizeLinear, for {others[0]}, is not supported: {why}")
    if node.output[0] in [output.name for output in imp.model.graph.output]:
        raise imp.error("its integers are the network's output; graphconv's maps are float32: export the model up "
                        "to the DequantizeLinear after it")


@converts("DequantizeLinear")
def dequantize(imp: Importer, node) -> None:
    made_by = next((n for n in imp.nodes[:imp.position] if n.op_type == "QuantizeLinear" and node.input[0] in n.output),
                   None)
    if made_by is None:
        raise imp.error(f"DequantizeLinear of {shown(node.input[0])}, which no QuantizeLinear made; graphconv's maps "
                        "are float32 and turn into integers only in a QuantizeLinear")
    x = imp.tensor(made_by.input[0], POINTWISE_LAYOUTS)
    scale, zero, dtype = _grid(imp, made_by, None)
    dequantized = _grid(imp, node, dtype)
    if dequantized[:2] != (scale, zero):
        raise imp.error(f"it dequantizes with scale {dequantized[0]} and zero point {dequantized[1]} the integers "
                        f"QuantizeLinear {shown(made_by.name or made_by.output[0])} made with scale {scale} and "
                        f"zero point {zero}; graphconv reads a pair of the same (a quantized activation)")
    qmin, qmax = INTEGER_RANGES[dtype]
    imp.add_layer(node, "fake_quantize", [x], dict(scale=scale, zero_point=zero, qmin=qmin, qmax=qmax))


def _grid(imp: Importer, node, dtype: np.dtype | None) -> tuple[float, int, np.dtype]:
    """(scale, zero point, integer type) of a QuantizeLinear or DequantizeLinear: one
    scale for the whole map, its zero point's type (or, where it has none, `dtype`, the
    QuantizeLinear's output_dtype, or uint8)."""
    scale = np.asarray(imp.constant(node.input[1], "scale"))
    zero = imp.optional_constant(node, 2, "zero point")
    count = max(scale.size, 1 if zero is None else np.asarray(zero).size)
    if count != 1:
        raise imp.error(f"{node.op_type} with {count} scales (one per channel or per block); graphconv reads "
                        "one scale and zero point for the whole map, as quantizers write for activations")
    if zero is None:
        zero = np.zeros((), dtype if dtype is not None else _output_type(imp, node))
    zero = np.asarray(zero)
    if zero.dtype not in INTEGER_RANGES:
        raise imp.error(f"{node.op_type} to {zero.dtype} integers; graphconv reads 8- and 16-bit ones")
    if not np.float32(scale.ravel()[0]) > 0:
        raise imp.error(f"{node.op_type} of scale {float(scale.ravel()[0])}; a scale must be positive")
    return float(np.float32(scale.ravel()[0])), int(zero.ravel()[0]), zero.dtype


def _output_type(imp: Importer, node) -> np.dtype:
    """A QuantizeLinear's integer type where it has no zero point: its output_dtype (op
    set 21 on), else uint8."""
    from onnx.helper import tensor_dtype_to_np_dtype

    code = imp.attributes(node).get("output_dtype", 0) if node.op_type == "QuantizeLinear" else 0
    return np.dtype(tensor_dtype_to_np_dtype(code or UINT8))
