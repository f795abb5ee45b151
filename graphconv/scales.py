"""Using score maps: evaluate at several scales (and mirrored), reduce to one class vector.

This is how converted networks are used in practice (OverFeat: 6 scales and flips):
resize the image so its shorter side is each scale, slide the network over it, reduce
every score map over positions, then over scales and flips.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.model import Model, as_batch, as_map

REDUCTIONS = ("mean", "max")


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, height, width), bilinear with half-pixel centres
    (PyTorch's align_corners=False), in plain numpy so arrays need no Pillow."""
    n, c, h, w = x.shape

    def axis(out_len, in_len):
        pos = np.clip((np.arange(out_len) + 0.5) * in_len / out_len - 0.5, 0, in_len - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, in_len - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    top = x[:, :, y0][..., x0] * (1 - fx) + x[:, :, y0][..., x1] * fx
    bottom = x[:, :, y1][..., x0] * (1 - fx) + x[:, :, y1][..., x1] * fx
    return (top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(np.float32)


def scaled_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """The size whose shorter side is `shorter_side`, keeping the aspect ratio."""
    if height <= width:
        return shorter_side, max(1, round(width * shorter_side / height))
    return max(1, round(height * shorter_side / width)), shorter_side


@dataclass
class MultiScaleResult:
    scores: np.ndarray                     # (N, classes): the reduced class vector per image
    maps: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict)  # (scale, flipped) -> map


def reduce_map(score_map: np.ndarray, how: str) -> np.ndarray:
    """(N, K, rows, cols) -> (N, K)."""
    return score_map.mean(axis=(2, 3)) if how == "mean" else score_map.max(axis=(2, 3))


def multiscale(model: Model, x: np.ndarray, scales: list[int], flip: bool = False,
               reduce: str = "mean", device: str = "cpu") -> MultiScaleResult:
    """Evaluate `model` on (N, C, H, W) `x` resized to each scale (shorter side), and its
    mirror image when `flip`; reduce each map over positions, then over all evaluations."""
    if reduce not in REDUCTIONS:
        raise GraphconvError(f"--reduce must be one of {', '.join(REDUCTIONS)}, got '{reduce}'")
    x = as_batch(x, model.crop_shape[0])
    _, hc, wc = model.crop_shape
    result = MultiScaleResult(np.empty(0))
    vectors = []
    for scale in scales:
        h, w = scaled_size(x.shape[2], x.shape[3], scale)
        if h < hc or w < wc:
            raise GraphconvError(f"scale {scale} makes a {h}x{w} image, smaller than the {hc}x{wc} crop")
        resized = resize_bilinear(x, h, w) if (h, w) != x.shape[2:] else x
        for flipped in ((False, True) if flip else (False,)):
            image = np.ascontiguousarray(resized[..., ::-1]) if flipped else resized
            score_map = as_map(model.run(image, device))
            result.maps[(scale, flipped)] = score_map
            vectors.append(reduce_map(score_map, reduce))
    stacked = np.stack(vectors)
    result.scores = stacked.mean(axis=0) if reduce == "mean" else stacked.max(axis=0)
    return result


def top_classes(scores: np.ndarray, k: int, labels: list[str] | None = None) -> list[tuple[int, str, float]]:
    """The k best (index, label, score) of one class vector."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), labels[i] if labels and i < len(labels) else f"class {i}", float(scores[i])) for i in order]
