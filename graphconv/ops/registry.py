"""The op registry: one `OpDef` per op holds everything graphconv knows about it.

Adding an op means adding one folder under `graphconv/ops/` whose `__init__.py`
calls `register(OpDef(...))`; its CPU and CUDA kernels live beside it in `cpu.py`
and `cuda.py` and are imported only when a network actually runs on that device
(numba-cuda is optional). Tests are parametrised over `all_ops()`, so a new op is
checked against its numpy reference automatically.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from graphconv.errors import GraphconvError, ShapeError

Shape = tuple[int, int, int]  # (C, H, W); the batch dimension is implicit everywhere in the IR
REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One spec parameter: its name, its kind and its default (REQUIRED if none).

    Kinds: "int" (>= minimum), "pair" (an int or [h, w], each >= minimum), "float",
    "bool", "choice" (one of `choices`).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    minimum: int = 1
    choices: tuple = ()
    doc: str = ""
    default_from: str | None = None  # e.g. a pool's stride defaults to its kernel_size


@dataclass(frozen=True)
class Window:
    """The sliding window of a spatial op, per axis (h, w): what receptive-field
    analysis and the stride passes need to know about conv and pool layers."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def extent(self) -> tuple[int, int]:
        """Input pixels one output pixel spans: dilation * (kernel - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))


@dataclass(frozen=True)
class OpDef:
    """Everything about one op.

    shape(params, input_shapes) -> output shape, raising ShapeError(msg) when impossible.
    weight_shapes(params, input_shapes) -> {"weight": shape, "bias": shape} it expects.
    reference(params, weights, inputs) -> output: plain numpy, written for clarity, used by tests.
    flops(params, input_shapes, output_shape) -> floating point operations per image.
    window(params, input_shapes) -> Window for spatial ops; None when the op is pointwise.
    The kernels are `run(params, weights, inputs) -> output` in `<package>.cpu` / `<package>.cuda`.
    """

    name: str
    doc: str
    params: tuple[Param, ...]
    shape: Callable[[dict, list[Shape]], Shape]
    reference: Callable[[dict, dict, list[np.ndarray]], np.ndarray]
    flops: Callable[[dict, list[Shape], Shape], int]
    package: str
    arity: tuple[int, int | None] = (1, 1)
    weight_shapes: Callable[[dict, list[Shape]], dict[str, tuple]] | None = None
    window: Callable[[dict, list[Shape]], Window | None] = lambda params, shapes: None
    kernel_name: str | None = None
    _kernels: dict = field(default_factory=dict, compare=False, repr=False)

    def kernel(self, device: str) -> Callable:
        """The `run` function of this op's kernel for `device` ("cpu" or "cuda")."""
        if device not in self._kernels:
            module = importlib.import_module(f"{self.package}.{device}")
            self._kernels[device] = getattr(module, self.kernel_name or f"run_{self.name}")
        return self._kernels[device]

    def variant(self, device: str, params: dict, in_shape: tuple[int, ...]) -> str:
        """Which of its strategies the kernel picks for an (N, C, H, W) input ("" when it
        has one): a kernel module may define `describe_<name>(params, in_shape) -> str`."""
        module = importlib.import_module(f"{self.package}.{device}")
        describe = getattr(module, f"describe_{self.kernel_name or self.name}", None)
        return describe(params, in_shape) if describe else ""

    def prepare(self, device: str, params: dict, weights: dict[str, np.ndarray]) -> dict:
        """The weights as this op's `device` kernel wants them stored, computed once when a
        network is bound to a device (e.g. a conv's taps reordered for the direct
        strategy): a kernel module may define `prepare_<name>(params, weights) -> dict`.
        The kernel must still accept the weights as the spec gives them."""
        module = importlib.import_module(f"{self.package}.{device}")
        prepare = getattr(module, f"prepare_{self.kernel_name or self.name}", None)
        return prepare(params, weights) if prepare else weights

    @property
    def has_weights(self) -> bool:
        return self.weight_shapes is not None


_REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in _REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    _REGISTRY[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GraphconvError(f"unknown op '{name}' (known: {', '.join(sorted(_REGISTRY))})") from None


def all_ops() -> list[OpDef]:
    return list(_REGISTRY.values())


# ---- small helpers shared by the op definitions -------------------------------------------

def pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def sliding_output(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a window sliding over `size` inputs; rounds down like PyTorch."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def window_output(window: Window, in_shape: Shape, what: str) -> tuple[int, int]:
    """Output (H, W) of a window over in_shape, or a ShapeError saying why none fits."""
    _, h, w = in_shape
    out = []
    for axis, size in zip((0, 1), (h, w)):
        extent = window.extent[axis]
        padded = size + 2 * window.padding[axis]
        if extent > padded:
            raise ShapeError(
                f"{what} of {window.kernel[0]}x{window.kernel[1]} (dilation {window.dilation[0]}x"
                f"{window.dilation[1]}, padding {window.padding[0]}x{window.padding[1]}) does not "
                f"fit in its {h}x{w} input")
        out.append(sliding_output(size, window.kernel[axis], window.stride[axis],
                                  window.padding[axis], window.dilation[axis]))
    return out[0], out[1]


def same_spatial(shapes: list[Shape], what: str) -> None:
    first = shapes[0][1:]
    for s in shapes[1:]:
        if s[1:] != first:
            raise ShapeError(f"{what} needs inputs of one spatial size, got "
                             + ", ".join(f"{a}x{b}" for _, a, b in shapes))


def numel(shape: Shape) -> int:
    return int(np.prod(shape))
