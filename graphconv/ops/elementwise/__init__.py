"""Ops that need no window: relu, dropout (identity at inference), add, concat."""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import OpDef, numel, register, same_spatial
from graphconv.errors import ShapeError


def _add_shape(params: dict, shapes):
    if any(s != shapes[0] for s in shapes):
        raise ShapeError("add needs inputs of one shape, got "
                         + ", ".join("x".join(map(str, s)) for s in shapes))
    return shapes[0]


def _concat_shape(params: dict, shapes):
    same_spatial(shapes, "concat")
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _pointwise(name: str, doc: str, reference, shape=lambda p, s: s[0], arity=(1, 1), cost=1):
    register(OpDef(name=name, doc=doc, params=(), shape=shape, reference=reference,
                   flops=lambda params, shapes, out: cost * numel(out) * len(shapes),
                   package=__name__, arity=arity))


_pointwise("relu", "max(x, 0)", lambda p, w, xs: np.maximum(xs[0], 0))
_pointwise("dropout", "identity at inference", lambda p, w, xs: xs[0].copy(), cost=0)
_pointwise("add", "elementwise sum of its inputs",
           lambda p, w, xs: np.sum(np.stack(xs), axis=0, dtype=np.float64).astype(np.float32),
           shape=_add_shape, arity=(2, None))
_pointwise("concat", "stack inputs along channels",
           lambda p, w, xs: np.concatenate(xs, axis=1), shape=_concat_shape, arity=(2, None), cost=0)
