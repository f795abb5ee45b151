"""Layer parameters: checked against the op's schema, stored in one canonical form.

Every front end (YAML specs, ONNX) and every pass that builds a layer goes through
`normalize_params`, so the IR holds parameters one way only: defaults filled in, and
every size-like parameter (kind "pair": kernel_size, stride, padding, dilation) as an
(h, w) tuple, whether the spec wrote `3` or `[3, 3]`. Equal networks then have equal IR,
and no code downstream needs to ask which form it got. The compact int form exists
only in text written for people (`compact_params`, used when writing YAML).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from graphconv.errors import GraphconvError, shown
from graphconv.ops.registry import REQUIRED, OpDef

MAX_INT = 2**31 - 1  # for sizes, strides and counts: anything larger is a mistake or an attack


def normalize_params(opdef: OpDef, raw: Mapping[str, Any]) -> dict:
    """Check a layer's parameters against its op's schema, fill in the defaults, and
    store pairs as (h, w) tuples. Raises GraphconvError (without a location: the
    caller knows the layer) naming the parameter."""
    known = {p.name: p for p in opdef.params}
    unknown = set(raw) - set(known)
    if unknown:
        raise GraphconvError(f"unknown parameter(s) {shown(sorted(unknown, key=str))} for op {opdef.name} "
                             f"(it takes: {', '.join(known) or 'none'})")
    params = {}
    for p in opdef.params:
        if p.name in raw:
            params[p.name] = check_value(p, raw[p.name])
        elif p.default_from is not None:
            params[p.name] = params[p.default_from]
        elif p.default is REQUIRED:
            raise GraphconvError(f"{opdef.name} needs parameter '{p.name}'")
        else:
            params[p.name] = check_value(p, p.default)
    return params


def compact_params(opdef: OpDef, params: Mapping[str, Any]) -> dict:
    """The parameters as a person would write them: defaults left out, and a pair with
    equal halves as one int."""
    compact = {}
    for p in opdef.params:
        value = params[p.name]
        if p.default_from is not None and value == params[p.default_from]:
            continue
        if p.default is not REQUIRED and p.default_from is None and value == check_value(p, p.default):
            continue
        if p.kind == "pair" and value[0] == value[1]:
            value = value[0]
        compact[p.name] = value
    return compact


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_number(value: Any) -> float | None:
    """`value` as a float if it is a finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_value(p, value):
    """One parameter's value in canonical form, or a GraphconvError naming it."""
    def in_range(v):
        return is_int(v) and p.minimum <= v <= MAX_INT

    if p.kind == "int":
        if not in_range(value):
            raise GraphconvError(f"'{p.name}' must be an integer >= {p.minimum} and <= {MAX_INT}, "
                                 f"got {shown(value)}")
        return value
    if p.kind == "pair":
        pair = [value, value] if is_int(value) else value
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(in_range(v) for v in pair):
            raise GraphconvError(f"'{p.name}' must be an integer >= {p.minimum} or a pair [h, w] of "
                                 f"them (each <= {MAX_INT}), got {shown(value)}")
        return (pair[0], pair[1])
    if p.kind == "float":
        number = finite_number(value)
        if number is None:
            raise GraphconvError(f"'{p.name}' must be a finite number, got {shown(value)}")
        return number
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise GraphconvError(f"'{p.name}' must be true or false, got {shown(value)}")
        return value
    if p.kind == "choice":
        if not isinstance(value, str) or value not in p.choices:
            raise GraphconvError(f"'{p.name}' must be one of {list(p.choices)}, got {shown(value)}")
        return value
    raise AssertionError(f"unknown parameter kind {p.kind}")
