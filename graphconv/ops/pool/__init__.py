"""maxpool and avgpool: windowed reductions (torch.nn.MaxPool2d / AvgPool2d).

Both round their output size down by default, as PyTorch does; `ceil_mode` rounds up
instead, with PyTorch's rule: one more window whenever part of one is left over, unless
that window would start in the right padding or beyond. Such a last window hangs off
the end of the (padded) input; its taps past the end are left out of a max and, in an
average, count as nothing, in the sum and in the divisor.

avgpool divides by the taps in the image and its padding (`count_include_pad`, PyTorch's
default) or by the taps in the image alone (ONNX's default, and what many exported
classifiers ask for). As a graphconv extension used by the dilated stride rewrite it also
accepts a dilation; a dilated window with no tap in the image averages to 0.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import GraphconvError, ShapeError
from graphconv.ops.registry import (
    Example, NoTorchEquivalent, OpDef, Param, Window, numel, onnx_window_attrs, pair, register,
    window_output,
)


def window(params: dict, shapes) -> Window:
    """The window of either pool: the taps past the edge are left out of a max, and of an
    average's count unless it counts the padding (`count_include_pad`, zeros)."""
    counted = params.get("count_include_pad", False)
    return Window(pair(params["kernel_size"]), pair(params["stride"]), pair(params["padding"]),
                  pair(params["dilation"]), beyond="zeros" if counted else "ignored")


def ceil_output(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Windows along one axis in ceil mode, PyTorch's rule: round the window count up,
    then drop the last window if it would start in the right padding or past it (it
    would see no pixel of the image)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = -(-span // stride) + 1  # ceil, also for a negative span (a window longer than the input)
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def output_hw(params: dict, in_shape) -> tuple[int, int]:
    """Output (H, W) of the pooling; a ShapeError when no window fits."""
    win = window(params, [in_shape])
    for pad, extent in zip(win.padding, win.extent):
        if 2 * pad > extent:
            raise ShapeError(f"padding {pad} is more than half the pooling window ({extent})")
    if not params["ceil_mode"]:
        return window_output(win, in_shape, "pooling window")
    _, h, w = in_shape
    out = tuple(ceil_output(size, *(getattr(win, k)[axis] for k in ("kernel", "stride", "padding", "dilation")))
                for axis, size in enumerate((h, w)))
    if min(out) < 1:
        raise ShapeError(f"pooling window of {win.kernel[0]}x{win.kernel[1]} (dilation {win.dilation[0]}x"
                         f"{win.dilation[1]}, padding {win.padding[0]}x{win.padding[1]}, stride "
                         f"{win.stride[0]}x{win.stride[1]}) leaves no window in its {h}x{w} input, even "
                         "in ceil mode")
    return out


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, _, _), = shapes
    return (c, *output_hw(params, shapes[0]))


def flops(params: dict, shapes, out_shape) -> int:
    kh, kw = pair(params["kernel_size"])
    return numel(out_shape) * kh * kw


def _taps(params: dict, x: np.ndarray, pad_value: float, beyond_value: float):
    """Yield the strided slice of `x` under each window tap, `x` padded with `pad_value`
    in its padding and with `beyond_value` past it, where ceil mode's last windows hang."""
    win = window(params, [x.shape[1:]])
    _, ho, wo = shape(params, [x.shape[1:]])
    (ph, pw), (sh, sw), (dh, dw) = win.padding, win.stride, win.dilation
    _, _, h, w = x.shape
    past_h = max(0, (ho - 1) * sh + win.extent[0] - (h + 2 * ph))
    past_w = max(0, (wo - 1) * sw + win.extent[1] - (w + 2 * pw))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    xp = np.pad(xp, ((0, 0), (0, 0), (0, past_h), (0, past_w)), constant_values=beyond_value)
    for i in range(win.kernel[0]):
        for j in range(win.kernel[1]):
            yield xp[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]


def reference_max(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return np.max(np.stack(list(_taps(params, inputs[0], -np.inf, -np.inf))), axis=0).astype(np.float32)


def reference_avg(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """The sum of the taps over the number of taps that count: an image of ones padded
    with ones (count_include_pad) or zeros, and zeros past the padding, summed the same way."""
    x = inputs[0]
    total = sum(_taps(params, x.astype(np.float64), 0.0, 0.0))
    ones = np.ones((1, 1, *x.shape[2:]))
    count = sum(_taps(params, ones, 1.0 if params["count_include_pad"] else 0.0, 0.0))
    mean = np.divide(total, count, out=np.zeros(total.shape), where=count > 0)
    return mean.astype(np.float32)


def torch_max(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.max_pool2d(inputs[0], pair(params["kernel_size"]), pair(params["stride"]),
                        pair(params["padding"]), pair(params["dilation"]), ceil_mode=params["ceil_mode"])


def torch_avg(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    if pair(params["dilation"]) != (1, 1):
        raise NoTorchEquivalent("PyTorch has no dilated average pooling")
    return F.avg_pool2d(inputs[0], pair(params["kernel_size"]), pair(params["stride"]),
                        pair(params["padding"]), ceil_mode=params["ceil_mode"],
                        count_include_pad=params["count_include_pad"])


EXAMPLES = (
    Example(dict(kernel_size=2), [(2, 4, 5)]),
    Example(dict(kernel_size=3, stride=2, padding=1), [(2, 7, 6)]),
    Example(dict(kernel_size=[3, 2], stride=[1, 2], dilation=[2, 1]), [(2, 6, 7)]),
    # ceil mode: the last window hangs past the right padding (rows) or the image (columns)
    Example(dict(kernel_size=3, stride=2, padding=[1, 0], ceil_mode=True), [(2, 6, 6)]),
    # a window longer than the input; and a last window that would start in the padding, dropped
    Example(dict(kernel_size=[4, 2], stride=[2, 3], padding=[0, 1], ceil_mode=True), [(1, 3, 4)]),
    Example(dict(kernel_size=2, stride=2, dilation=[2, 1], ceil_mode=True), [(2, 6, 5)]),
)
AVG_EXAMPLES = (
    Example(dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), [(2, 5, 6)]),
    Example(dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), [(2, 6, 5)]),
    # dilated taps straddling the image: the middle row of windows sees none of it
    Example(dict(kernel_size=2, dilation=[4, 3], stride=1, padding=[2, 1], count_include_pad=False),
            [(1, 3, 4)]),
)


def _params(dilation_doc: str, *extra: Param) -> tuple[Param, ...]:
    return (
        Param("kernel_size", "pair"),
        Param("stride", "pair", default_from="kernel_size"),
        Param("padding", "pair", 0, minimum=0),
        Param("dilation", "pair", 1, doc=dilation_doc),
        Param("ceil_mode", "bool", False, doc="round the output size up (PyTorch's rule)"),
        *extra,
    )


def onnx_max(writer, params: dict, inputs: list[str], output: str) -> None:
    source, attrs = _onnx_padded(writer, params, inputs[0], -np.finfo(np.float32).max)
    writer.node("MaxPool", [source], output, ceil_mode=_onnx_ceil_mode(writer, params), **attrs)


def onnx_avg(writer, params: dict, inputs: list[str], output: str) -> None:
    source, attrs = _onnx_padded(writer, params, inputs[0], 0.0 if params["count_include_pad"] else None)
    writer.node("AveragePool", [source], output, ceil_mode=_onnx_ceil_mode(writer, params),
                count_include_pad=int(params["count_include_pad"]), **attrs)


def _onnx_ceil_mode(writer, params: dict) -> int:
    """ONNX's ceil_mode for the pool. PyTorch's ceil mode drops a last window that would
    start in the end padding (`ceil_output`); ONNX's shape inference keeps it, so at fixed
    sizes (--input-size, an uncompiled classifier) such a pool's ONNX output had a column
    more than the layer after it takes, and the export failed onnx's check. There PyTorch's
    count is floor mode's, so it is written as floor mode, the same windows; ceil mode
    where each axis keeps ceil's extra window. An axis dropping one beside an axis
    keeping one has no ONNX pool. Sizes not fixed: ceil mode (onnxruntime drops it too)."""
    if not params["ceil_mode"] or writer.input_shapes is None:
        return int(params["ceil_mode"])
    (_, h, w), = writer.input_shapes
    win = window(params, [(0, h, w)])
    pytorch = output_hw(params, (0, h, w))
    if pytorch == output_hw({**params, "ceil_mode": False}, (0, h, w)):
        return 0
    kept = tuple(-(-(size + 2 * pad - extent) // stride) + 1
                 for size, pad, extent, stride in zip((h, w), win.padding, win.extent, win.stride))
    if pytorch == kept:
        return 1
    raise GraphconvError(f"a ceil_mode pool of a {h}x{w} map whose last window PyTorch drops on one axis (it would "
                         "start in the padding) and keeps on the other has no ONNX form; export it at another "
                         "--input-size, or compiled, at sizes not fixed")


def _onnx_padded(writer, params: dict, source: str, pad_value: float | None) -> tuple[str, dict]:
    """The pool's input and window attributes. onnxruntime refuses padding as wide as the
    window (which the dilated stride rewrite makes); then an explicit Pad with the value
    the padding stands for comes first, where that keeps the numbers the same."""
    attrs = onnx_window_attrs(params)
    if all(p < k for p, k in zip(attrs["pads"][:2], attrs["kernel_shape"])):
        return source, attrs
    if pad_value is None or params["ceil_mode"]:
        raise GraphconvError("a pooling window narrower than its padding has no ONNX form that "
                             "onnxruntime runs (here with ceil_mode or count_include_pad=false)")
    ph, pw = attrs["pads"][:2]
    pads = writer.constant(np.array([0, 0, ph, pw, 0, 0, ph, pw], np.int64))
    padded = writer.node("Pad", [source, pads, writer.constant(np.array(pad_value, np.float32))])
    return padded, {**attrs, "pads": [0, 0, 0, 0]}


register(OpDef(
    name="maxpool", doc="max over each window (torch.nn.MaxPool2d)",
    params=_params(""), shape=shape, reference=reference_max, flops=flops,
    package=__name__, window=window, torch=torch_max, onnx=onnx_max, examples=EXAMPLES, channels_last="into-planes",
    padding_value=lambda params: None if params["ceil_mode"] else float("-inf"),
))
register(OpDef(
    name="avgpool", doc="mean over each window (torch.nn.AvgPool2d)",
    params=_params("graphconv extension, used by the dilated stride rewrite",
                   Param("count_include_pad", "bool", True,
                         doc="divide by the taps in the image and its padding (else: in the image)")),
    shape=shape, reference=reference_avg, flops=flops, package=__name__, window=window,
    torch=torch_avg, onnx=onnx_avg, examples=EXAMPLES + AVG_EXAMPLES, channels_last="into-planes",
    padding_value=lambda params: 0.0 if params["count_include_pad"] and not params["ceil_mode"] else None,
))
