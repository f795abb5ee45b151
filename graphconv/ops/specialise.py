"""A kernel compiled once per register-tile width, from one source.

Why. The conv kernels take the width of their register tiles (8 or 16 lanes,
`vector_tile.OUTER_LANES`) as an argument, so that one source serves every machine and
the tests can force either. But a kernel compiled for a run-time width holds the tiles
of both, eight unrolled variants where a machine runs four, and LLVM optimises and
codes them all: in AlexNet-FCN's first run with an empty cache, the outer, Winograd
and pooling kernels took 40 of its 53 s. numba cannot make a function's code depend on
an argument's value and keep it cacheable (a dispatcher passed as an argument, or a
literal argument, is compiled again in every process), but it reads a function's
globals as constants when it compiles it. So each width gets a copy of the kernel's
Python function whose globals name that width's tiles (`vector_tile.OUTER_TILES`), or
that width's copy of the function it calls; LLVM then never sees the other width's
tiles. A copy has a name of its own (`_outer_thread_16`), so numba caches it in a file
of its own. The kernels keep their `lanes` argument for their arithmetic; the Python
side picks the copy for the same value.

The functions given here are plain Python functions, specialised once every name they
use is defined, at the end of their module or after the function where it uses only
imports (a copy's globals are the module's as they are when it is made).
"""
from __future__ import annotations

import types
from typing import Any, Callable

from numba import njit

LANE_WIDTHS = (8, 16)  # the register tiles' widths (`vector_tile.OUTER_LANES`)


def per_lane_width(function: Callable, options: dict, **names: dict[int, Any]) -> dict[int, Any]:
    """{lanes: `function` compiled with numba's `options`, each global in `names` bound to
    its value for that width}, for each width of LANE_WIDTHS."""
    return {lanes: specialised(function, f"_{lanes}", options, **{name: table[lanes] for name, table in names.items()})
            for lanes in LANE_WIDTHS}


def specialised(function: Callable, suffix: str, options: dict, **names: Any) -> Any:
    """`function` (a plain function, or a numba dispatcher's) compiled with numba's
    `options` as a copy named with `suffix`, each global in `names` bound to the value
    given: the same mechanism for any constant a kernel should be compiled for, such as
    the depthwise tile's channels a group (`conv.depthwise.CHANNELS_LAST_TAPS`)."""
    return njit(**options)(_copy(getattr(function, "py_func", function), suffix, names))


def _copy(function: Callable, suffix: str, names: dict[str, Any]) -> Callable:
    """`function` with the globals `names` replaced and `suffix` on its name."""
    copy = types.FunctionType(function.__code__, {**function.__globals__, **names}, function.__name__ + suffix,
                              function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__module__ = function.__module__
    copy.__doc__ = function.__doc__
    return copy
