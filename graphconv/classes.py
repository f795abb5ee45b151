"""Classes by name and by rank: naming a class by its index or its label, and ranking
classes over a map.

A user names a class as the model's labels file does (`--heatmap tumour`, `--top-class
dog`, `Model.heatmap(image, "dog")`), or by its index; `class_index` turns either into
the index, matching but for case and Unicode form. `class_scores` ranks a map's classes
(each one's mean, or best, score over the computed cells), and `print_top` and friends
say the best of them as --top does. The Python API (`Model.heatmap`), `cells` (reading
a map's cells back) and the commands (`cli`, `tiled_cli`, `cluster`'s batches) all use
them, so they live here, below the command line, not in it.
"""
from __future__ import annotations

import unicodedata
from typing import Iterable

import numpy as np

from graphconv.errors import GraphconvError, nearest, shown


CLASSES_LISTED = 12  # class names an unknown name's error lists, where none is close


def class_index(name: int | str, labels: list[str] | None, flag: str,
                how_to_name: str = "or its labels with --labels FILE") -> int:
    """A class named as the model's labels name it (`name` an index stays one): an exact
    name, else one that matches but for case; `flag` and `how_to_name` for the error."""
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        return int(name)
    if not isinstance(name, str):
        raise GraphconvError(f"{flag} {name!r}: a class is its index (a whole number) or its name")
    if not labels:
        raise GraphconvError(f"{flag} {shown(name)}: the model has no labels to name classes by; give the "
                             f"class's index, {how_to_name}")
    exact = [i for i, label in enumerate(labels) if label == name]
    folded = exact or [i for i, label in enumerate(labels) if _folded(label) == _folded(name)]
    if len(folded) == 1:
        return folded[0]
    if folded:  # ImageNet's labels name two classes 'crane' (the bird, the machine): the first was taken
        raise GraphconvError(f"{flag} {shown(name)}: {len(folded)} classes have that name (indices "
                             f"{', '.join(map(str, folded))}): give the index")
    close = nearest(name, labels)
    some = ", ".join(map(repr, labels[:CLASSES_LISTED])) + (f", ... ({len(labels)} in all)"
                                                             if len(labels) > CLASSES_LISTED else "")
    hint = f": did you mean {', '.join(map(repr, close))}?" if close else f" (the model's classes: {some})"
    raise GraphconvError(f"{flag} {shown(name)}: no class of that name{hint}")


def rejoined_names(names: list[int | str], labels: list[str] | None) -> list[int | str]:
    """A comma-separated list of classes (`--classes`, `--top-class`) with the names that
    hold a comma put back together: BigEarthNet names 'Moors, heathland and
    sclerophyllous vegetation', which the list split in two, and no way of typing it was
    left. Consecutive names are joined (", " or ",") where the whole is a label, the
    longest first; the rest stay as given."""
    if not labels:
        return list(names)
    known = {_folded(label) for label in labels}

    def label_of(pieces: list) -> str | None:
        if len(pieces) < 2 or not all(isinstance(piece, str) for piece in pieces):
            return None
        return next((glue.join(pieces) for glue in (", ", ",") if _folded(glue.join(pieces)) in known), None)

    joined, i = [], 0
    while i < len(names):
        end = next((j for j in range(len(names), i + 1, -1) if label_of(names[i:j])), i + 1)
        joined.append(label_of(names[i:end]) if end > i + 1 else names[i])
        i = end
    return joined


def _folded(name: str) -> str:
    """A class name as compared but for case and Unicode form: a labels file written on a
    Mac holds 'Ä' as A and a combining diaeresis, which a name typed elsewhere is not."""
    return unicodedata.normalize("NFC", name).casefold()


def class_scores(scores, how: str | None = "mean") -> np.ndarray:
    """--top's ranking, (N, K): each class's mean score over the map's computed cells, or
    with `how` "max" (--top-by max) its best cell's; NaN for a map of no computed cell. A
    classifier's (N, K) vectors are one cell each (a map's axes raised numpy's AxisError)."""
    scores = np.asarray(scores)
    if scores.ndim == 2:
        scores = scores[:, :, None, None]
    computed = ~np.isnan(scores).all(axis=1, keepdims=True)
    counts = computed.sum(axis=(2, 3))
    if how == "max":
        summary = np.where(computed, scores, -np.inf).max(axis=(2, 3))
    else:
        summary = np.where(computed, scores, 0).sum(axis=(2, 3), dtype=np.float64) / np.maximum(counts, 1)
    return np.where(counts > 0, summary, np.nan)  # NaN for a map of no computed cell


def print_top(scores: np.ndarray, k: int, labels: list[str] | None, basis: str = "") -> None:
    """--top's lines: one image's classes on the line that says how they are ranked
    (`basis`, "by their mean score over its 22x31 cells"); a batch's one line an image
    after it. A bare 'image 0: fat 0.14' read as probabilities for a model that gives
    logits, and as one of several images where there was one."""
    if len(scores) == 1:
        print(f"top {k}{basis}: {top_text(scores[0], k, labels)}")
        return
    print(f"top {k}{basis}, image by image:")
    for index, vector in enumerate(scores):
        print(f"image {index}: {top_text(vector, k, labels)}")


def top_basis(scores: np.ndarray, how: str | None) -> str:
    """How `class_scores` ranked a run's output, as --top's line says it."""
    if scores.ndim != 4:
        return " classes by score"
    cells = f"{scores.shape[2]}x{scores.shape[3]} cells"
    return f" classes by their best score in its {cells}" if how == "max" else \
        f" classes by their mean score over its {cells}"


def top_text(vector: np.ndarray, k: int, labels: list[str] | None) -> str:
    """The K best classes of one score vector, 'cat 0.81, dog 0.1' (best first)."""
    from graphconv.scales import top_classes

    return ranked_text((label, score) for _, label, score in top_classes(vector, k, labels))


def ranked_text(ranked: Iterable[tuple[str, float]]) -> str:
    """Classes and their scores as --top says them, 'cat 0.81, dog 0.1'."""
    return ", ".join(f"{label} {score:.4g}" for label, score in ranked)
