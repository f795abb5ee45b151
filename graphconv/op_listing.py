"""What `graphconv ops` prints: the registry's ops as a spec writer reads them, each from
its OpDef alone (its doc, params, weights, kernels), so a new op is listed as it lands."""
from __future__ import annotations

import importlib.util
import math

from graphconv.errors import shown
from graphconv.ops.registry import REQUIRED, OpDef, Param

DEVICES = ("cpu", "cuda")


def op_line(op: OpDef, width: int) -> str:
    """One line of the list: the op's name, what it does, and where it comes from."""
    return f"{op.name:<{width}}  {op.doc}  -- {origin(op)}"


def origin(op: OpDef) -> str:
    """"built-in" for graphconv's ops, else the package that registered the op (a plugin's)."""
    return "built-in" if op.package.startswith("graphconv.") else op.package


def describe_op(op: OpDef) -> str:
    """An op in full: inputs, each param (kind, default, meaning), weights, the kernels
    and PyTorch / ONNX forms it has, and a spec line of its first example."""
    lines = [f"{op.name}: {op.doc}", f"  inputs: {_inputs(op)}"]
    if op.params:
        width = max(len(p.name) for p in op.params)
        lines.append("  params:")
        lines += [f"    {p.name:<{width}}  {param_text(p)}" for p in op.params]
    else:
        lines.append("  params: none")
    lines.append(f"  weights: {_weights(op)}")
    kernels = [device for device in DEVICES if _has_kernel_module(op, device)]
    lines.append(f"  kernels: {', '.join(kernels) if kernels else 'none'}")
    lines.append(f"  PyTorch equivalent: {'yes' if op.torch else 'none'}; ONNX export: {'yes' if op.onnx else 'none'}")
    if op.examples:
        lines.append(f"  in a spec: - {{name: {op.name}1, op: {op.name}{_spec_params(op.examples[0].params)}}}")
    lines.append(f"  defined in: {origin(op)} ({op.package})")
    return "\n".join(lines)


def param_text(param: Param) -> str:
    """A param as `describe_op` lists it: "int or [h, w], each at least 1; default: as
    kernel_size", then its doc."""
    kind = {"int": f"int, at least {param.minimum}",
            "pair": f"int or [h, w], each at least {param.minimum}",
            "sides": f"int or [top, left, bottom, right], each at least {param.minimum}",
            "bool": "true or false",
            "choice": "one of " + ", ".join(map(str, param.choices))}.get(param.kind, param.kind)
    if param.kind == "float":
        kind = "float" + (f", at least {param.at_least:g}" if param.at_least is not None else "") + (
            ", -inf and inf allowed" if param.infinite else "")
    if param.default_from is not None:
        default = f"default: as {param.default_from}"
    elif param.default is REQUIRED:
        default = "required"
    else:
        default = f"default {_yaml_value(param.default)}"
    return f"{kind}; {default}" + (f": {param.doc}" if param.doc else "")


def _inputs(op: OpDef) -> str:
    low, high = op.arity
    if low == high:
        return str(low)
    return f"at least {low}" if high is None else f"{low} to {high}"


def _weights(op: OpDef) -> str:
    """The weight arrays a layer of the op holds, by the first example's shapes."""
    if not op.has_weights:
        return "none"
    if not op.examples:
        return "yes"
    from graphconv.params import normalize_params

    example = op.examples[0]
    shapes = op.weight_shapes(normalize_params(op, example.params), example.inputs)
    return ", ".join(f"{key} {tuple(shape)}" for key, shape in shapes.items()) + (
        f" (of a {'x'.join(map(str, example.inputs[0]))} input and the params in the spec line below)")


def _has_kernel_module(op: OpDef, device: str) -> bool:
    """Whether `<package>.<device>` exists, without importing it (a CUDA module needs numba-cuda)."""
    try:
        return importlib.util.find_spec(f"{op.package}.{device}") is not None
    except (ImportError, ValueError):
        return False


def _spec_params(params: dict) -> str:
    return "".join(f", {key}: {_yaml_value(value)}" for key, value in params.items())


def _yaml_value(value) -> str:
    """A param's value as a spec file writes it (true, [1, 2], -.inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if isinstance(value, (int, str)) else shown(value)
