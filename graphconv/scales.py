"""Using score maps: evaluate at several scales (and mirrored), reduce to one class vector.

This is how converted networks are used in practice (OverFeat: 6 scales and flips):
resize the image so its shorter side is each scale, slide the network over it, reduce
every score map over positions, then over scales and flips.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.model import Model, as_batch, as_map

REDUCTIONS = ("mean", "max")


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, height, width) by `images.resize_planes`: Pillow's bilinear,
    antialiased when shrinking, on the float values (needs Pillow). The same resize as
    `run --resize`, so `--scales 224` and `--resize` to that size give the same scores
    (a numpy bilinear without antialiasing differed by up to 0.04 in probability on a
    photo shrunk 5x, and from torchvision's Resize by 0.03)."""
    from graphconv.images import resize_planes
    return resize_planes(x, height, width)


def scaled_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """The size whose shorter side is `shorter_side`, keeping the aspect ratio, the longer
    side cut down to a whole pixel as torchvision's Resize(S) cuts it (`int(S * long /
    short)`): rounded, a 300x428 photo at 224 was 224x320 where the pipeline the model
    was trained with makes 224x319, and its map another shape."""
    if width <= height:  # torchvision's test: a square's shorter side is its width
        return max(1, int(shorter_side * height / width)), shorter_side
    return shorter_side, max(1, int(shorter_side * width / height))


@dataclass
class MultiScaleResult:
    scores: np.ndarray                     # (N, classes): the reduced class vector per image
    maps: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict)  # (scale, flipped) -> map


def as_scales(scales) -> list[int]:
    """One shorter side (`scales=256`) or several, each a whole number >= 1."""
    many = [scales] if isinstance(scales, (int, np.integer)) else scales
    try:
        many = list(many)
    except TypeError:
        many = [many]
    if not many or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in many):
        raise GraphconvError(f"scales must be whole numbers >= 1 (each a shorter side in pixels), got {scales!r}")
    return [int(s) for s in many]


def reduce_map(score_map: np.ndarray, how: str) -> np.ndarray:
    """(N, K, rows, cols) -> (N, K)."""
    return score_map.mean(axis=(2, 3)) if how == "mean" else score_map.max(axis=(2, 3))


def multiscale(model: Model, x: np.ndarray, scales: int | Sequence[int], flip: bool = False,
               reduce: str = "mean", device: str = "cpu") -> MultiScaleResult:
    """Evaluate `model` on (N, C, H, W) `x` resized to each scale (shorter side), and its
    mirror image when `flip`; reduce each map over positions, then over all evaluations."""
    if reduce not in REDUCTIONS:
        raise GraphconvError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    scales = as_scales(scales)
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
            score_map = as_map(model._scores(image, device))
            result.maps[(scale, flipped)] = score_map
            vectors.append(reduce_map(score_map, reduce))
    stacked = np.stack(vectors)
    result.scores = stacked.mean(axis=0) if reduce == "mean" else stacked.max(axis=0)
    return result


def top_classes(scores: np.ndarray, k: int, labels: list[str] | None = None) -> list[tuple[int, str, float]]:
    """The k best (index, label, score) of one class vector."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), labels[i] if labels and i < len(labels) else f"class {i}", float(scores[i])) for i in order]


def kept_labels(labels: list[str] | None, classes: Sequence[int] | None) -> list[str] | None:
    """The names of a map's channels: with --classes, of the classes it kept, in order."""
    if not classes:
        return labels
    return [labels[c] if labels else f"class {c}" for c in classes]


class Prediction(NamedTuple):
    """One class of `classify`'s answer."""

    index: int
    label: str
    score: float


def classify(model: Model, image, *, scales: int | Sequence[int] | None = None, flip: bool = False,
             reduce: str = "mean", top: int | None = 5, device: str = "cpu") -> list[Prediction]:
    """The `top` best classes for one image, best first, from what users have: a file
    path, a Pillow image or a uint8 (H, W, C) array (`images.as_picture`), with the
    spec's `preprocess` applied.

    A classifier as trained (fc layers: `Model.returns_vectors`) sees one crop: the image
    resized so that it just covers the crop, then its centre (and its mirror image with
    `flip`, the two scores averaged). A compiled (fully convolutional) model slides over
    the image at each of `scales` (the shorter side resized to each; default: the image
    as it is, enlarged only if smaller than the crop), mirrored too with `flip`, and
    every score map is reduced (`reduce`: mean or max over positions, then over scales
    and flips), as `multiscale` does."""
    from graphconv import images

    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
        raise GraphconvError(f"top must be a whole number >= 1 (or None for every class), got {top!r}")
    if reduce not in REDUCTIONS:
        raise GraphconvError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    model.warn_if_pixels_unscaled()
    c, hc, wc = model.crop_shape
    preprocess = model.graph.meta.get("preprocess")
    x = images.preprocess(images.as_picture(image, c, images.stores_values(preprocess)), preprocess)[None]
    height, width = x.shape[2:]
    if isinstance(scales, (list, tuple)) and not scales:
        scales = None  # the default, as it always was
    if model.returns_vectors:
        if scales is not None:
            raise GraphconvError("scales slide the network over the image: compile the model first "
                                 "(graphconv.compile_model), a classifier with fc layers sees one crop")
        batch = centre_crop(x, hc, wc)
        if flip:
            batch = np.concatenate([batch, np.ascontiguousarray(batch[..., ::-1])])
        vectors = model._scores(batch, device).reshape(len(batch), -1)
        scores = vectors.mean(axis=0) if reduce == "mean" else vectors.max(axis=0)
    else:
        if scales is None:
            factor = max(1.0, hc / height, wc / width)
            scales = [int(np.ceil(min(height, width) * factor))]
        scores = multiscale(model, x, scales, flip, reduce, device).scores[0]
    k = len(scores) if top is None else top
    return [Prediction(*entry) for entry in top_classes(scores, k, model.labels)]


def centre_crop(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, C, H, W) resized (bilinear, aspect kept) to just cover height x width, then its
    centre height x width."""
    h, w = x.shape[2:]
    factor = max(height / h, width / w)
    size = (max(height, round(h * factor)), max(width, round(w * factor)))
    resized = resize_bilinear(x, *size) if size != (h, w) else x
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return np.ascontiguousarray(resized[:, :, top:top + height, left:left + width])
