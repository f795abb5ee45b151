"""Images in and out: loading photos as CHW arrays, the spec's preprocessing, heatmaps.

Pillow is an optional dependency (`pip install 'graphconv[images]'`); everything else
in graphconv works on arrays without it.
"""
from __future__ import annotations

import numpy as np

from graphconv.errors import GraphconvError
from graphconv.receptive import Field


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise GraphconvError("reading and writing images needs Pillow: pip install 'graphconv[images]'") from None
    return Image


def load_image(path: str, resize: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB image as float32 (3, H, W) with values 0..255, optionally resized to (H, W)."""
    image_mod = _pil()
    try:
        with image_mod.open(path) as img:
            img = img.convert("RGB")
            if resize:
                img = img.resize((resize[1], resize[0]), image_mod.BILINEAR)
            return np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy()
    except FileNotFoundError:
        raise GraphconvError("image not found", file=path) from None
    except OSError as err:
        raise GraphconvError(f"cannot read image: {err}", file=path) from None


def preprocess(image: np.ndarray, spec: dict | None) -> np.ndarray:
    """(image * scale - mean) / std per channel, as the spec's `preprocess` declares."""
    if not spec:
        return image
    x = image * float(spec.get("scale", 1.0))
    if "mean" in spec:
        x = x - np.asarray(spec["mean"], np.float32)[:, None, None]
    if "std" in spec:
        x = x / np.asarray(spec["std"], np.float32)[:, None, None]
    return x.astype(np.float32)


def cell_index_map(field: Field, rows: int, cols: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image row/column, the score-map row/column whose field is centred nearest."""
    def nearest(n_cells, size, stride, offset, length):
        centre = offset + (size - 1) / 2
        return np.clip(np.rint((np.arange(length) - centre) / stride), 0, n_cells - 1).astype(int)

    return (nearest(rows, field.size[0], field.stride[0], field.offset[0], height),
            nearest(cols, field.size[1], field.stride[1], field.offset[1], width))


def save_heatmap(image: np.ndarray, scores: np.ndarray, field: Field, path: str) -> None:
    """Blend one class's score map (rows, cols), placed by each cell's receptive field,
    over the (3, H, W) image and write it as a PNG."""
    image_mod = _pil()
    _, height, width = image.shape
    ys, xs = cell_index_map(field, scores.shape[0], scores.shape[1], height, width)
    values = scores[ys[:, None], xs[None, :]].astype(np.float64)
    span = values.max() - values.min()
    level = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    colour = np.stack([level, 1 - np.abs(2 * level - 1), 1 - level]) * 255  # blue -> green -> red
    base = np.clip(image, 0, 255)
    blended = (0.5 * base + 0.5 * colour).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
    image_mod.fromarray(blended).save(path, format="PNG")
