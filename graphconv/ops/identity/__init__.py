"""identity: the input, unchanged (torch.nn.Identity, ONNX Identity): what an importer
maps those to, and a named point in a DAG that several layers can read."""
from __future__ import annotations

from graphconv.ops.registry import Example, OpDef, onnx_as, register


register(OpDef(
    name="identity", doc="the input, unchanged",
    params=(), shape=lambda params, shapes: shapes[0],
    reference=lambda params, weights, inputs: inputs[0].copy(),
    flops=lambda params, shapes, out: 0,
    package=__name__, torch=lambda params, weights, inputs: inputs[0], onnx=onnx_as("Identity"),
    per_element=True, keeps_values=True,
    examples=(Example({}, [(2, 3, 2)]),),
))
