"""A layer's call that works out once, for the arrays an Executor binds it to, what its
`run` function would work out on every call.

Between two kernels the Python a `run` function does (which storage, which kernel, the
thread count, views) runs with the caches cold from the kernel before: in ResNet-50 at
224 the global pool's `nhwc` took 13 us and `numba.get_num_threads` 37 us in the
network against 0.4 and 0.8 us on their own, 45 us of Python around a 27 us kernel. A
kernel module's `bind_<op>(params, weights)` may return a `BoundCall`, whose
`bind_values` the Executor calls once per plan (`runtime.Executor._bound_calls`), so a
run only calls the chosen kernel on its arguments. The conv has its own
(`conv/cpu.py`, `_BoundConv`), which also keeps its work per geometry.
"""
from __future__ import annotations

from typing import Any, Callable

Call = Callable[[], None]


class BoundCall:
    """`choose(inputs, out)` returns the call of no arguments that runs the layer on those
    very arrays; a plain call (`__call__`) chooses and runs at once."""

    def __init__(self, choose: Callable[[list, Any], Call]):
        self.choose = choose

    def __call__(self, inputs: list, out: Any) -> None:
        self.choose(inputs, out)()

    def bind_values(self, inputs: list, out: Any) -> Call:
        return self.choose(inputs, out)
