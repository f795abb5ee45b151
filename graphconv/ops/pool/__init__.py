"""maxpool and avgpool: windowed reductions (torch.nn.MaxPool2d / AvgPool2d, floor mode).

avgpool counts padding in its divisor (PyTorch's default count_include_pad=True) and,
as a graphconv extension used by the dilated stride rewrite, accepts a dilation.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import (
    Example, NoTorchEquivalent, OpDef, Param, Window, numel, pair, register, window_output,
)


def window(params: dict, shapes) -> Window:
    return Window(pair(params["kernel_size"]), pair(params["stride"]), pair(params["padding"]),
                  pair(params["dilation"]))


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, _, _), = shapes
    win = window(params, shapes)
    for pad, extent in zip(win.padding, win.extent):
        if 2 * pad > extent:
            raise ShapeError(f"padding {pad} is more than half the pooling window ({extent})")
    return (c, *window_output(win, shapes[0], "pooling window"))


def flops(params: dict, shapes, out_shape) -> int:
    kh, kw = pair(params["kernel_size"])
    return numel(out_shape) * kh * kw


def _windows(params: dict, x: np.ndarray, fill: float):
    """Yield the strided input slice under each window tap (the padding filled with `fill`)."""
    win = window(params, [x.shape[1:]])
    _, _, ho, wo = (x.shape[0], *shape(params, [x.shape[1:]]))
    (ph, pw), (sh, sw), (dh, dw) = win.padding, win.stride, win.dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    for i in range(win.kernel[0]):
        for j in range(win.kernel[1]):
            yield xp[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]


def reference_max(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.max(np.stack(list(_windows(params, inputs[0], -np.inf))), axis=0).astype(np.float32)


def reference_avg(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    taps = np.stack(list(_windows(params, inputs[0].astype(np.float64), 0.0)))
    return taps.mean(axis=0).astype(np.float32)


def torch_max(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.max_pool2d(inputs[0], pair(params["kernel_size"]), pair(params["stride"]),
                        pair(params["padding"]), pair(params["dilation"]))


def torch_avg(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    if pair(params["dilation"]) != (1, 1):
        raise NoTorchEquivalent("PyTorch has no dilated average pooling")
    return F.avg_pool2d(inputs[0], pair(params["kernel_size"]), pair(params["stride"]),
                        pair(params["padding"]))


EXAMPLES = (
    Example(dict(kernel_size=2), [(2, 4, 5)]),
    Example(dict(kernel_size=3, stride=2, padding=1), [(2, 7, 6)]),
    Example(dict(kernel_size=[3, 2], stride=[1, 2], dilation=[2, 1]), [(2, 6, 7)]),
)


def _params(dilation_doc: str) -> tuple[Param, ...]:
    return (
        Param("kernel_size", "pair"),
        Param("stride", "pair", default_from="kernel_size"),
        Param("padding", "pair", 0, minimum=0),
        Param("dilation", "pair", 1, doc=dilation_doc),
    )


register(OpDef(
    name="maxpool", doc="max over each window (torch.nn.MaxPool2d)",
    params=_params(""), shape=shape, reference=reference_max, flops=flops,
    package=__name__, window=window, torch=torch_max, examples=EXAMPLES,
))
register(OpDef(
    name="avgpool", doc="mean over each window, padding counted (torch.nn.AvgPool2d)",
    params=_params("graphconv extension, used by the dilated stride rewrite"),
    shape=shape, reference=reference_avg, flops=flops, package=__name__, window=window,
    torch=torch_avg, examples=EXAMPLES,
))
