"""The ground truth for dense evaluation: the original classifier on every crop.

`crop_loop` is deliberately the slow, obvious thing: cut the image into crops at the
output stride and run the unconverted network on each. `verify` compares a compiled
model against it and explains any difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphconv.ir import Graph
from graphconv.model import Model, as_batch
from graphconv.ops import pair

CROPS_PER_BATCH = 64


def crop_loop(classifier: Model, image: np.ndarray, stride: int | tuple[int, int],
              device: str = "cpu") -> np.ndarray:
    """(N, K, rows, cols): the classifier on the crop at (i*stride, j*stride) of each image."""
    c, hc, wc = classifier.crop_shape
    x = as_batch(image, c)
    n, _, height, width = x.shape
    sy, sx = pair(stride)
    rows, cols = (height - hc) // sy + 1, (width - wc) // sx + 1
    origins = [(b, i, j) for b in range(n) for i in range(rows) for j in range(cols)]
    scores = []
    for start in range(0, len(origins), CROPS_PER_BATCH):
        crops = np.stack([x[b, :, i * sy:i * sy + hc, j * sx:j * sx + wc]
                          for b, i, j in origins[start:start + CROPS_PER_BATCH]])
        scores.append(classifier.run(crops, device).reshape(len(crops), -1))
    flat = np.concatenate(scores)
    return flat.reshape(n, rows, cols, -1).transpose(0, 3, 1, 2).copy()


def padded_layers(graph: Graph) -> list[str]:
    """Layers whose zero padding makes a crop differ from the same pixels seen densely."""
    return [n.name for n in graph.layers() if "padding" in n.params and pair(n.params["padding"]) != (0, 0)]


@dataclass
class VerifyReport:
    shape: tuple
    max_abs: float
    max_rel: float
    exact_by_construction: bool
    padded_layers: list[str]
    cells_differing: int
    cells: int
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return self.max_abs <= self.tolerance

    @property
    def passed(self) -> bool:
        return self.exact_by_construction and self.agrees

    def __str__(self) -> str:
        lines = [f"score map {'x'.join(map(str, self.shape))}: dense pass vs original on every crop",
                 f"  max abs difference  {self.max_abs:.3g}",
                 f"  max rel difference  {self.max_rel:.3g}",
                 f"  cells differing     {self.cells_differing} of {self.cells} (tolerance {self.tolerance:g})"]
        if self.exact_by_construction:
            lines.append("  exact by construction: no layer pads, so every cell equals its crop "
                         "up to float32 rounding")
        else:
            lines.append("  not exact by construction: zero padding in "
                         + ", ".join(self.padded_layers) + " pads each crop with zeros where the "
                         "dense pass sees the neighbouring pixels, so cells differ near crop borders")
        lines.extend(f"  {note}" for note in self.notes)
        lines.append("  result: " + ("PASS" if self.passed else
                                     "differs (expected: padded network)" if not self.exact_by_construction
                                     else "FAIL"))
        return "\n".join(lines)


def verify(original: Model, compiled: Model, image: np.ndarray, tolerance: float | None = None,
           device: str = "cpu") -> VerifyReport:
    """Run the compiled model once and the original on every crop; compare."""
    dense = compiled.run(image, device)
    expected = crop_loop(original, image, compiled.output_stride, device)
    if dense.shape != expected.shape:
        raise AssertionError(f"score map shape {dense.shape} != crop grid {expected.shape}")
    diff = np.abs(dense.astype(np.float64) - expected)
    scale = max(1.0, float(np.abs(expected).max()))
    tol = tolerance if tolerance is not None else 1e-4 * scale
    rel = diff / np.maximum(np.abs(expected), 1e-6 * scale)
    differing = int((diff > tol).any(axis=1).sum())
    pads = padded_layers(original.graph)
    return VerifyReport(dense.shape, float(diff.max()), float(rel.max()), not pads, pads, differing,
                        int(np.prod(dense.shape[:1] + dense.shape[2:])), tol)
