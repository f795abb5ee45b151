"""upsample: each map made `factor` times larger, by repeating or interpolating its cells
(torch.nn.Upsample and F.interpolate with an integer scale factor, ONNX Resize).

`mode` "nearest" repeats each cell factor x factor times (PyTorch's "nearest" and
"nearest-exact", ONNX's asymmetric/floor and half-pixel nearest: for a whole factor they
pick the same cell). "bilinear" interpolates between the two nearest cells of each axis,
with the half-pixel rule of PyTorch's `align_corners=False` and ONNX's `half_pixel`:
output position p samples the input at (p + 0.5) / factor - 0.5, clamped to the map,
so the first and last rows and columns are repeated past its edges. `align_corners`
(bilinear only; PyTorch's `align_corners=True`, ONNX's `align_corners` coordinates)
puts output p at p * (size - 1) / (size * factor - 1), the corner cells on the corner
cells: its sampling points depend on the map's size, so a larger image moves every one
of them. Such a layer is `whole_map`: the network runs as written (a classifier on its
crop, a segmentation network on the whole image, `run --crops`), but cannot slide or be
tiled, and the passes that would make it slide refuse it, saying why. `asymmetric`
(bilinear only; TF1's `resize_bilinear` and `UpSampling2D` before half-pixel centres,
ONNX's `asymmetric` coordinates and linear Upsample before op set 11) samples output
position p at p / factor: the first row and column sit on the map's, the last factor - 1
repeat its last one. It slides, as half-pixel does.

Why it slides: output cell p reads input cells near floor(p / factor), whatever the
map's size, so a tile aligned to the input's stride sees the same values as the whole
image. For receptive fields it is a floored window of stride 1/factor (`Window.floored`):
one cell for nearest, three (the nearest cell and its two neighbours, which cover both
interpolation taps wherever p falls) for bilinear, whose clamped edges `verify` reports
like padding (the two taps of each position, `Window.half_pixel`: a 2x upsample's first
and last rows and columns read past the map, the others do not); two (floor(p / factor)
and the next) for asymmetric, whose last rows and columns alone read past the map
(`Window.asymmetric`).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from graphconv.errors import ShapeError
from graphconv.ops.registry import Example, OpDef, Param, Window, numel, register

MODES = ("nearest", "bilinear")
NEAREST, HALF_PIXEL, ALIGN_CORNERS, ASYMMETRIC = 0, 1, 2, 3  # how output positions sample the input: `sampling`


def sampling(params: dict) -> int:
    """The number the kernels take for a layer's mode, align_corners and asymmetric."""
    if params["mode"] == "nearest":
        return NEAREST
    if params["asymmetric"]:
        return ASYMMETRIC
    return ALIGN_CORNERS if params["align_corners"] else HALF_PIXEL


def source(p: int, factor: int, size: int, sampled: int) -> tuple[int, int, float]:
    """(first input cell, second input cell, weight of the second) that output position
    `p` of an axis of `size` input cells reads (`sampled` as `sampling` numbers it):
    nearest reads one cell, p // factor, with weight 0. Both kernels compile this one
    function."""
    if sampled == NEAREST:
        cell = p // factor
        return cell, cell, 0.0
    if sampled == ALIGN_CORNERS:
        x = p * (size - 1) / (size * factor - 1) if size * factor > 1 else 0.0
    elif sampled == ASYMMETRIC:
        x = p / factor
    else:
        x = max((p + 0.5) / factor - 0.5, 0.0)
    first = int(x)
    second = min(first + 1, size - 1)
    return first, second, x - first


def shape(params: dict, shapes) -> tuple[int, int, int]:
    (c, h, w), = shapes
    for flag in ("align_corners", "asymmetric"):
        if params[flag] and params["mode"] == "nearest":
            raise ShapeError(f"{flag} applies to bilinear interpolation, not nearest"
                             + (" (as in PyTorch)" if flag == "align_corners" else ""))
    if params["align_corners"] and params["asymmetric"]:
        raise ShapeError("align_corners and asymmetric are two ways to place the samples: give one")
    fy, fx = params["factor"]
    return c, h * fy, w * fx


def window(params: dict, shapes) -> Window:
    fy, fx = params["factor"]
    stride = (Fraction(1, fy), Fraction(1, fx))
    if params["mode"] == "nearest":
        return Window((1, 1), stride, (0, 0), (1, 1), floored=True)
    if params["asymmetric"]:
        return Window((2, 2), stride, (0, 0), (1, 1), padding_end=(1, 1), floored=True, asymmetric=True,
                      beyond="interpolation")
    return Window((3, 3), stride, (1, 1), (1, 1), floored=True, half_pixel=not params["align_corners"],
                  beyond="interpolation")


def axis_weights(size: int, factor: int, sampled: int) -> np.ndarray:
    """(size * factor, size) float64 matrix: row p holds output position p's weights on
    the input cells of one axis."""
    matrix = np.zeros((size * factor, size))
    for p in range(size * factor):
        first, second, weight = source(p, factor, size, sampled)
        matrix[p, first] += 1.0 - weight
        matrix[p, second] += weight
    return matrix


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    """Both axes as matrix products in float64: rows, then columns."""
    (fy, fx), sampled = params["factor"], sampling(params)
    x = inputs[0].astype(np.float64)
    rows = axis_weights(x.shape[2], fy, sampled)
    cols = axis_weights(x.shape[3], fx, sampled)
    return np.einsum("ph,nchw,qw->ncpq", rows, x, cols).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    """PyTorch has no asymmetric bilinear: it is align_corners on the map with its last
    row and column repeated once more, which puts output p of the (size * factor + 1)
    samples at p / factor, then cut back to size * factor."""
    import torch.nn.functional as F
    fy, fx = params["factor"]
    if params["mode"] == "nearest":
        return F.interpolate(inputs[0], scale_factor=(fy, fx), mode="nearest")
    if params["asymmetric"]:
        h, w = inputs[0].shape[2:]
        edged = F.pad(inputs[0], (0, 1, 0, 1), mode="replicate")
        return F.interpolate(edged, size=(h * fy + 1, w * fx + 1), mode="bilinear",
                             align_corners=True)[:, :, :h * fy, :w * fx]
    return F.interpolate(inputs[0], scale_factor=(fy, fx), mode="bilinear", align_corners=params["align_corners"])


def onnx_resize(writer, params: dict, inputs: list[str], output: str) -> None:
    """One Resize node with constant scales (op set 11 and later)."""
    fy, fx = params["factor"]
    scales = writer.constant(np.array([1.0, 1.0, fy, fx], np.float32))
    if params["mode"] == "nearest":
        writer.node("Resize", [inputs[0], "", scales], output, mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        coordinates = "asymmetric" if params["asymmetric"] else (
            "align_corners" if params["align_corners"] else "half_pixel")
        writer.node("Resize", [inputs[0], "", scales], output, mode="linear",
                    coordinate_transformation_mode=coordinates)


def flops(params: dict, shapes, out) -> int:
    """Three two-flop interpolations per bilinear output value; nearest only copies."""
    return 6 * numel(out) if params["mode"] == "bilinear" else 0


def moves_with_the_map(params: dict) -> str | None:
    """Why an align_corners layer cannot slide (`OpDef.whole_map`); None for the others."""
    if params["align_corners"]:
        return ("interpolates with align_corners, whose sampling points are spread over its whole map, so on a "
                "larger image every one of them moves")
    return None


register(OpDef(
    name="upsample", doc="each map `factor` times larger: cells repeated (nearest) or interpolated "
                         "(bilinear: half-pixel, or asymmetric) (nn.Upsample, ONNX Resize)",
    params=(Param("factor", "pair", doc="how many times larger, per axis (fy, fx)"),
            Param("mode", "choice", "nearest", choices=MODES,
                  doc="nearest: each cell repeated; bilinear: interpolated, half-pixel (align_corners=False)"),
            Param("align_corners", "bool", False,
                  doc="bilinear with PyTorch's align_corners=True: runs as written, cannot slide"),
            Param("asymmetric", "bool", False,
                  doc="bilinear sampling output p at p / factor (TF1's resize_bilinear, ONNX's asymmetric "
                      "coordinates): the last factor - 1 rows and columns repeat the map's last")),
    shape=shape, reference=reference, window=window, flops=flops, package=__name__, whole_map=moves_with_the_map,
    torch=torch_equivalent, onnx=onnx_resize,
    # stored as its input is: where its output must be NCHW (an FCN head's last resize),
    # the map before it is too, so any transposing write is the producer's, at the smaller size
    channels_last="like-input",
    examples=(
        Example({"factor": 2}, [(3, 2, 3)]),
        Example({"factor": [3, 2]}, [(2, 2, 2)], batch=1),
        Example({"factor": 1}, [(2, 2, 3)], batch=1),
        Example({"factor": 2, "mode": "bilinear"}, [(2, 3, 4)]),
        Example({"factor": [1, 3], "mode": "bilinear"}, [(1, 4, 2)], batch=3),
        Example({"factor": [4, 3], "mode": "bilinear"}, [(2, 2, 2)], batch=1),
        Example({"factor": 2, "mode": "bilinear"}, [(3, 1, 1)]),
        Example({"factor": 2, "mode": "bilinear", "align_corners": True}, [(2, 3, 4)]),
        Example({"factor": [3, 2], "mode": "bilinear", "align_corners": True}, [(1, 5, 2)], batch=3),
        Example({"factor": 2, "mode": "bilinear", "align_corners": True}, [(2, 1, 1)], batch=1),
        Example({"factor": 2, "mode": "bilinear", "asymmetric": True}, [(2, 3, 4)]),
        Example({"factor": [3, 4], "mode": "bilinear", "asymmetric": True}, [(1, 4, 2)], batch=3),
        Example({"factor": 2, "mode": "bilinear", "asymmetric": True}, [(3, 1, 1)], batch=1),
    ),
))
