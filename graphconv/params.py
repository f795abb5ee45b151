"""Layer parameters: checked against the op's schema, stored in one canonical form.

Every front end (YAML specs, ONNX) and every pass that builds a layer goes through
`normalize_params`, so the IR holds parameters one way only: defaults filled in, and
every size-like parameter (kind "pair": kernel_size, stride, padding, dilation) as an
(h, w) tuple, whether the spec wrote `3` or `[3, 3]` (a pad layer's four amounts, kind
"sides", as a (top, left, bottom, right) tuple). Equal networks then have equal IR,
and no code downstream needs to ask which form it got. The compact int form exists
only in text written for people (`compact_params`, used when writing YAML).

Names people bring from other frameworks: Caffe's `pad`, `num_output` (conv's
out_channels, fc's out_features) and `dropout_ratio` are accepted as aliases (ALIASES)
and stored under graphconv's name, so a spec written back uses graphconv's names; giving
both spellings is an error. Any other unknown name is refused with the nearest known
one suggested (`kernel` -> did you mean 'kernel_size'?).
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

import numpy as np

from graphconv.errors import GraphconvError, agreeing, shown
from graphconv.ops.registry import REQUIRED, OpDef

MAX_INT = 2**31 - 1  # for sizes, strides and counts: anything larger is a mistake or an attack
# other frameworks' parameter names -> graphconv's, for the ops that have them (Caffe's prototxt names)
ALIASES = {"pad": ("padding",), "num_output": ("out_channels", "out_features"), "dropout_ratio": ("p",)}


class ParamError(GraphconvError):
    """A GraphconvError about one parameter (`param`), so a front end can point at the
    line that gives it rather than the layer's first line."""

    def __init__(self, message: str, param: str | None = None, **where: Any):
        super().__init__(message, param=param, **where)


INFINITY_WORDS = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
                  "+infinity": math.inf, "-infinity": -math.inf}
"""How people write infinity where YAML reads text: YAML's own spelling is `.inf` / `-.inf`,
and `-inf` is a string to it, which a parameter that allows infinity takes as meant."""


def normalize_params(opdef: OpDef, raw: Mapping[str, Any]) -> dict:
    """Check a layer's parameters against its op's schema, fill in the defaults, and
    store pairs as (h, w) tuples. Raises GraphconvError (without a location: the
    caller knows the layer) naming the parameter."""
    raw = resolve_aliases(opdef, raw)
    refuse_unknown_params(opdef, raw)
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


def refuse_unknown_params(opdef: OpDef, params: Mapping[str, Any]) -> None:
    """A ParamError for names the op does not take, with the near misses' right names
    (`strid`: did you mean 'stride'?) and every name it takes."""
    known = {p.name: p for p in opdef.params}
    unknown = set(params) - set(known)
    if unknown:
        names = sorted(unknown, key=str)
        hints = [hint for hint in (suggestion(name, known) for name in names) if hint]
        raise ParamError(f"unknown {agreeing(len(names), 'parameter', 'parameters')} {shown(names)} for op "
                         f"{opdef.name}"
                         + (f": {'; '.join(hints)}" if hints else "")
                         + f" (it takes: {', '.join(known) or 'none'})", param=names[0])


def resolve_aliases(opdef: OpDef, raw: Mapping[str, Any]) -> dict:
    """`raw` with every alias (ALIASES) the op understands renamed to graphconv's name;
    an alias given beside its name is an error."""
    names = {p.name for p in opdef.params}
    out = dict(raw)
    for alias, targets in ALIASES.items():
        target = next((t for t in targets if t in names), None)
        if alias not in out or target is None or alias in names:
            continue
        if target in out:
            raise GraphconvError(f"'{alias}' is Caffe's name for '{target}': give one of them, not both")
        out[target] = out.pop(alias)
    return out


def suggestion(name: Any, known: Mapping[str, Any]) -> str | None:
    """A hint like `'kernel': did you mean 'kernel_size'?` for a near miss of a known
    parameter, else None."""
    if not isinstance(name, str):
        return None
    lowered = name.lower()
    close = difflib.get_close_matches(lowered, list(known), n=1, cutoff=0.6)
    if not close:  # `kernel` for kernel_size, `out` for out_channels: a known name's first word
        close = [k for k in known if k.split("_")[0] == lowered.split("_")[0] and len(lowered) >= 3][:1]
    return f"{shown(name)}: did you mean '{close[0]}'?" if close else None


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
        if p.kind in ("pair", "sides") and len(set(value)) == 1:
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


def _is_infinity(value: Any) -> bool:
    """Whether `value` is the float -inf or inf (not NaN, not a bool or a string)."""
    return isinstance(value, float) and math.isinf(value)


def check_value(p, value):
    """One parameter's value in canonical form, or a ParamError naming it."""
    try:
        return _checked_value(p, value)
    except ParamError:
        raise
    except GraphconvError as err:
        raise ParamError(err.message, param=p.name) from None


def _checked_value(p, value):
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
    if p.kind == "sides":
        sides = [value] * 4 if is_int(value) else value
        if not isinstance(sides, (list, tuple)) or len(sides) != 4 or not all(in_range(v) for v in sides):
            raise GraphconvError(f"'{p.name}' must be an integer >= {p.minimum} or a list [top, left, "
                                 f"bottom, right] of them (each <= {MAX_INT}), got {shown(value)}")
        return tuple(sides)
    if p.kind == "float":
        number = finite_number(value)
        if number is None and p.infinite and _is_infinity(value):
            return float(value)
        if number is None and p.infinite and isinstance(value, str) and value.strip().lower() in INFINITY_WORDS:
            return INFINITY_WORDS[value.strip().lower()]
        if number is None:
            raise GraphconvError(f"'{p.name}' must be a finite number"
                                 f"{' or -inf or inf (YAML: -.inf, .inf)' if p.infinite else ''}, "
                                 f"got {shown(value)}")
        if p.at_least is not None and number < p.at_least:
            raise GraphconvError(f"'{p.name}' must be at least {p.at_least:g}, got {shown(value)}")
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


def size_pair(value, refusal: str) -> tuple[int, int]:
    """A size as (H, W) whole numbers, each 1 or more: one number for a square, or two
    (a tile, a training crop); anything else is refused with `refusal`, followed by
    what was given."""
    sizes = [value, value] if isinstance(value, (int, np.integer)) else value
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = []
    if len(sizes) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                  for v in sizes):
        raise GraphconvError(f"{refusal}; got {shown(value)}")
    return int(sizes[0]), int(sizes[1])
