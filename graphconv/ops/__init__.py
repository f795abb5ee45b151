"""The op registry and every built-in op (one sub-package each)."""
from graphconv.ops.registry import OpDef, Param, Window, all_ops, get_op, pair, register
from graphconv.ops import conv, elementwise, fc, lrn, pool, softmax  # noqa: F401  (registers them)

__all__ = ["OpDef", "Param", "Window", "all_ops", "get_op", "pair", "register"]
