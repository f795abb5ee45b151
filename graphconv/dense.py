"""The ground truth for dense evaluation: the original classifier on every crop.

`crop_loop` is deliberately the slow, obvious thing: cut the image into crops at the
output stride and run the unconverted network on each. `verify` checks a compiled
model against the classifier in two separate ways, because they fail for different
reasons:

(a) the conversion: the converted network on the classifier's own crop must give the
    classifier's output, up to float32 rounding, for any network. A difference is a bug.
(b) the sliding evaluation: the converted network on a larger image against the crop
    loop. For a network without padding they are equal by construction. A padded layer
    pads each crop at the crop's own border (with zeros, a reflection, edge copies or a
    constant; a pool may ignore what lies past the map instead, as a ceil_mode max pool's
    last windows do), where the sliding network sees the neighbouring pixels (it pads
    only at the image's border), so near crop borders
    the two legitimately differ. `verify` then says which padded layers do it: for each,
    the positions of its map (per crop) that read padding, how much they differ from the
    sliding network's, and whether every position clear of padding agrees, which is what
    shows the conversion is right and the difference is the padding alone.

The same effect is why `--stride-method dilate` and `shift` can disagree on a padded
network: shift-and-stitch evaluates shifted copies, each padded at its own border.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import networkx as nx
import numpy as np

from graphconv.errors import GraphconvError, agreeing, counted
from graphconv.ir import Graph
from graphconv.model import Model, as_batch
from graphconv.ops import pair
from graphconv.ops.registry import describe_padding
from graphconv.runtime import Executor
from graphconv.receptive import partial_receptive_fields, partial_sliding_periods
from graphconv.shapes import infer_shapes

MOST_CROPS_PER_BATCH = 64
CROP_ACTIVATION_BUDGET = 64 << 20  # bytes of activations a crop batch may hold when its weights are fewer
SAMPLE_ROWS = 3  # verify's per-layer look: crops at the first, middle and last row and column
TOLERANCE = 1e-4  # of the largest score: float32 rounding, different kernels per size
ROUNDING = 1e-5
"""Of the largest score: what float32 sums of the same products in other orders (another
kernel, another map width, the crop loop's batch) differ by; measured up to 2e-6 (digits
and AlexNet: tiles, dilate against shift, the crop loop). A --tolerance under it, 0 for
bit-for-bit equality, fails on such differences, which the report then calls rounding,
not a bug: graphconv's maps equal the crop loop to float32 rounding, not bit for bit."""


@dataclass(frozen=True)
class AskedAs:
    """How verify's report names the options it points at: the command's flags, or
    `verify`'s keywords to a Python caller (a notebook was told of "--tolerance" and
    "run --crops", flags it has no command line for)."""

    tolerance: str  # what sets both tolerances
    strict: str     # what demands equality where padding reaches
    on_yours: str   # how to measure on the user's own image, from random pixels
    crop_loop: str  # how to get the classifier's own map of the whole image, crop by crop


COMMAND_ASKED = AskedAs("--tolerance", "--strict", "verify measures with --image IMAGE",
                        "graphconv run MODEL --image IMAGE --crops")
PYTHON_ASKED = AskedAs("tolerance=", "strict=True", "verify on one of your images measures it",
                       "graphconv.dense.crop_loop(classifier, image, stride)")


ROUNDING_ONLY = (" by float32 rounding only (the two sum the same products in other orders), over the tolerance "
                 "asked: graphconv equals the crop loop to rounding, not bit for bit")


def crop_loop(classifier: Model, image: np.ndarray, stride: int | tuple[int, int],
              device: str = "cpu", progress: Callable[[int, int], None] | None = None,
              skip: np.ndarray | None = None) -> np.ndarray:
    """(N, K, rows, cols): the classifier on the crop at (i*stride, j*stride) of each image,
    in equal batches of `crops_per_batch` (the last one filled out with zeros), so that a
    single plan, and a single set of activation buffers, serves every batch. `progress`
    hears (crops done, crops in all) after each batch: on a real image's region (verify
    --image) the loop is the slow part, seconds (10-20 ms a crop for a ResNet-18 at 224
    on 2 cores). `skip`, (rows, cols) bool: cells not computed (NaN), in every image:
    those `run` leaves out for no-data."""
    c, hc, wc = classifier.crop_shape
    x = as_batch(image, c)
    n, _, height, width = x.shape
    sy, sx = pair(stride)
    rows, cols = (height - hc) // sy + 1, (width - wc) // sx + 1
    origins = [(b, i, j) for b in range(n) for i in range(rows) for j in range(cols) if skip is None or not skip[i, j]]
    batch = np.zeros((crops_per_batch(classifier, len(origins)), c, hc, wc), np.float32)
    out = None
    for start in range(0, len(origins), len(batch)):
        chunk = origins[start:start + len(batch)]
        for k, (b, i, j) in enumerate(chunk):
            batch[k] = x[b, :, i * sy:i * sy + hc, j * sx:j * sx + wc]
        batch[len(chunk):] = 0
        scores = classifier._scores(batch, device).reshape(len(batch), -1)[:len(chunk)]
        if out is None:
            out = np.full((n, scores.shape[1], rows, cols), np.nan, np.float32)
        where = tuple(np.array(chunk).T)
        out[where[0], :, where[1], where[2]] = scores
        if progress is not None:
            progress(start + len(chunk), len(origins))
    if out is None:  # every cell skipped
        out = np.full((n, classifier.output_channels, rows, cols), np.nan, np.float32)
    return out


def _timed_crop_loop(classifier: Model, image: np.ndarray, stride, device: str,
                     progress: Callable[[int, int], None] | None, skip: np.ndarray | None) -> tuple[np.ndarray, float]:
    """`crop_loop`'s map, and the seconds it takes for all its crops at the pace of its
    batches after the first: the first may compile kernels (a review: "39 ms a crop here"
    after 20 s for the first 8 crops of a fresh install). One batch: its own time."""
    first: list[tuple[float, int]] = []

    def heard(done: int, total: int) -> None:
        if not first:
            first.append((time.perf_counter(), done))
        if progress is not None:
            progress(done, total)
    start = time.perf_counter()
    expected = crop_loop(classifier, image, stride, device, heard, skip)
    end = time.perf_counter()
    crops = expected.shape[0] * (expected[0, 0].size - (0 if skip is None else int(np.count_nonzero(skip))))
    if not first or first[0][1] >= crops:
        return expected, end - start
    at, done = first[0]
    return expected, (end - at) / (crops - done) * crops


def crops_per_batch(classifier: Model, crops: int) -> int:
    """How many crops the crop loop runs at once, out of `crops` in all.

    A batch shares each weight read among its crops, which a classifier with big fully
    connected layers needs (AlexNet, 61M weights, on 2 cores: 12.1 ms a crop alone, 4.6
    at 64 a batch). But every crop adds its activations to the batch's memory, and once
    those outgrow the caches a bigger batch is only slower: EfficientNet-B0 took 7.5 ms
    a crop at 4 a batch (84 MB) and 9.0 at 64 (830 MB), ResNet-50 24.8 at 8 and 25.8
    at 32. So a batch grows while its activations stay within the larger of the
    weights' size and CROP_ACTIVATION_BUDGET, doubling up to MOST_CROPS_PER_BATCH
    (worked out once per model: it plans the run at each batch size, 0.2 s for
    EfficientNet-B0); and the crops are then spread evenly, so that the last batch is
    not a near-empty one."""
    crops = max(crops, 1)
    most = min(crops, classifier.derived("most_crops_per_batch", lambda: _most_crops_per_batch(classifier)))
    batches = -(-crops // most)
    return -(-crops // batches)


def _most_crops_per_batch(classifier: Model) -> int:
    from graphconv.memory import run_peak_bytes, weight_bytes
    from graphconv.runtime import make_plan

    graph = classifier.graph

    def activation_bytes(batch: int) -> int:
        return run_peak_bytes(graph, make_plan(graph, batch, tuple(graph.input_shape[1:]), check_weights=False))

    limit = max(CROP_ACTIVATION_BUDGET, weight_bytes(graph))
    most = 1
    while most < MOST_CROPS_PER_BATCH and activation_bytes(min(2 * most, MOST_CROPS_PER_BATCH)) <= limit:
        most = min(2 * most, MOST_CROPS_PER_BATCH)
    return most


def padded_layers(graph: Graph) -> list[str]:
    """Layers whose windows reach outside their input at the crop (zero padding, or a
    ceil_mode pool's last window hanging off the map): what makes a crop differ from the
    same pixels seen densely."""
    return padding_reach(graph)[1]


def edge_kinds(graph: Graph, names: list[str]) -> dict[str, str]:
    """`padding_kind` of each of `padded_layers` (at the crop's size): the notes name
    apart the pools that pad nothing but hang a ceil_mode window off the map's end and
    the upsamples that interpolate against its edge, which they called padding (a
    network with no padding anywhere was said to pad)."""
    shapes = infer_shapes(graph, check_weights=False)
    return {name: padding_kind(node, [shapes[s.name] for s in node.inputs])
            for name in names for node in [graph.node(name)]}


def edge_asides(kinds: dict[str, str]) -> str:
    """' (p1: a ceil_mode pool's last window hanging off the map; up: interpolating
    against the map's edge)' for the layers of `edge_kinds` that do not pad, or nothing."""
    hanging = [name for name, kind in kinds.items() if kind == "ceil_mode"]
    interpolating = [name for name, kind in kinds.items() if kind == "interpolation"]
    asides = [f"{listed_layers(hanging)}: a ceil_mode pool's last window hanging off the map"] if hanging else []
    asides += [f"{listed_layers(interpolating)}: interpolating against the map's edge"] if interpolating else []
    return f" ({'; '.join(asides)})" if asides else ""


def crop_edge(kinds: dict[str, str]) -> str:
    """What the layers of `edge_kinds` do at each crop's border: 'cut' (ceil_mode pools
    alone), 'interpolated' (upsamples alone, against copies of the crop's edge), else
    'padded'."""
    if all(kind == "ceil_mode" for kind in kinds.values()):
        return "cut"
    if all(kind == "interpolation" for kind in kinds.values()):
        return "interpolated"
    return "padded"


def padding_note(classifier: Graph) -> str | None:
    """Why a compiled classifier's map can differ from the classifier on each crop, said
    once at compile (the command's note, Python's GraphconvWarning): each crop is padded
    at its own border, the sliding network only at the image's (`graphconv verify` shows
    where, and by how much). Read from the network as written: compiling changes no
    padding (fold-pad only moves it into the conv), and a shift-and-stitch graph's finer
    strides are no grid to trace it on. None for a network that pads nowhere, and for a
    segmentation network, whose map is per pixel, no crops."""
    if classifier.meta.get("task") == "segmentation":
        return None
    padded = padded_layers(classifier)
    if not padded:
        return None
    kinds = edge_kinds(classifier, padded)
    one = len(padded) == 1
    if crop_edge(kinds) == "cut":
        pools = "ceil_mode pool " if one else "ceil_mode pools "
        return (f"{pools}{listed_layers(padded)} hang{'s' if one else ''} a last window off the map: "
                "each crop's is cut at its own border, the sliding network's only at the image's, so cells differ "
                "from the classifier on their crop where those windows reach; `graphconv verify` shows where and "
                "by how much")
    if crop_edge(kinds) != "padded":
        return (f"{listed_layers(padded)} interpolate{'s' if one else ''} against the map's edge: each crop's map is "
                "interpolated against copies of its own edge rows and columns, the sliding network's only at the "
                "image's, so cells differ from the classifier on their crop where that reaches; `graphconv verify` "
                "shows where and by how much")
    return (f"{listed_layers(padded)} pad{edge_asides(kinds)}: each crop is padded at its own border, the "
            "sliding network only at the image's, so cells differ from the classifier on their crop where that "
            "padding reaches (as in any fully convolutional use of such a network); `graphconv verify` shows "
            "where and by how much")


def listed_layers(names: list[str]) -> str:
    """The first layer names and how many more; a number (PyTorch Sequential's "0") in
    quotes, which "note: 0 pad" read as no layer at all."""
    shown = [f"'{name}'" if name.replace(".", "").isdigit() else name for name in names[:3]]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# ---- where a crop's padding reaches ---------------------------------------------------------

def padding_reach(graph: Graph) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """For each layer, per axis (rows, columns) of its map at the crop, whether that
    position's value depends on a window reaching outside its input anywhere upstream
    (zero padding, or a ceil_mode pool's window hanging off the map); and the layers
    where such windows start. A position that reads no padding depends on the crop's
    pixels alone, so it must equal the sliding network's value at the same place.
    Windows start `padding` (top, left) before the input; those that reach past its end
    (a `pad` layer's bottom and right, `Window.padding_end`) read padding too: the map's
    size, from the shape rule, says how far they go."""
    shapes = infer_shapes(graph, check_weights=False)
    reach = {graph.input.name: tuple(np.zeros(n, bool) for n in shapes[graph.input.name][1:])}
    sources, dead = [], {node.name for node in graph.dead_layers()}
    for node in graph.layers():
        ins = [reach[s.name] for s in node.inputs]
        out_hw = shapes[node.name][1:]
        window = node.opdef.window(node.params, [shapes[s.name] for s in node.inputs])
        if window is None:  # pointwise: same positions, any input's reach
            reach[node.name] = tuple(np.logical_or.reduce([r[a] for r in ins]) if len(ins) > 1 else ins[0][a].copy()
                                     for a in (0, 1))
            continue
        axes, pads = [], False
        for a in (0, 1):
            size = len(ins[0][a])
            touched = np.zeros(out_hw[a], bool)
            for p in range(out_hw[a]):
                taps = window.taps(a, p)
                outside = any(t < 0 or t >= size for t in taps)
                pads |= outside
                touched[p] = outside or any(ins[0][a][t] for t in taps if 0 <= t < size)
            axes.append(touched)
        if pads and node.name not in dead:  # a layer that reaches no output changes no cell
            sources.append(node.name)
        for extra in ins[1:]:  # a conv's residual input, at the output's positions
            axes = [axes[a] | extra[a] for a in (0, 1)]
        reach[node.name] = tuple(axes)
    return reach, sources


def _prefix(graph: Graph, last: str) -> Graph:
    """The network up to layer `last` (sharing its weights), with `last` as output."""
    keep = nx.ancestors(graph.nx, last) | {last}
    prefix = Graph(graph.name, graph.input.name, graph.input_shape)
    for node in graph.layers():
        if node.name in keep:
            prefix.add(node.name, node.op, [s.name for s in node.inputs], dict(node.params), dict(node.weights))
    prefix.output = last
    return prefix


@dataclass
class LayerPadding:
    """What one layer's padding does to a crop, measured on sampled crops."""

    name: str
    why: str                  # "padding 2x2", "ceil_mode"
    map_hw: tuple[int, int]   # its map for one crop
    border: tuple[int, int, int, int]  # rows at the top and bottom, columns left and right, that read padding
    reached: int              # positions of its map (per crop) that read padding, here or upstream
    differing: int            # of those, how many differ from the sliding network (any sampled crop)
    max_abs: float            # their largest finite difference
    clear_max_abs: float      # the largest difference where no padding reaches (float rounding only)
    tolerance: float
    crops: int
    fill: str = "zero padding"  # what its padding holds ("padding of -inf": a pad layer's other value)
    infinite: int = 0         # of `differing`, those infinite or NaN on one side only (a -inf pad's border)

    @property
    def clear_agrees(self) -> bool:
        return self.clear_max_abs <= self.tolerance

    def line(self) -> str:
        h, w = self.map_hw
        top, bottom, left, right = self.border
        text = (f"{self.name} ({self.why}): of its {h}x{w} map per crop, {self.reached} positions read "
                f"{self.fill} (here or upstream: {counted(top, 'row')} at the top, {bottom} at the bottom, "
                f"{counted(left, 'column')} at the left, {right} at the right); {self.differing} of them differ "
                f"from the sliding network, by up to {self.max_abs:.3g}")
        if self.infinite:
            text += f" where both are finite ({self.infinite} hold an infinity, the padding's, or NaN in one only)"
        clear = h * w - self.reached
        if clear:
            text += (f"; the {clear} others agree (max {self.clear_max_abs:.2g})" if self.clear_agrees
                     else f"; the {clear} others DIFFER by up to {self.clear_max_abs:.3g} (a bug)")
        return text


@dataclass
class VerifyReport:
    shape: tuple
    max_abs: float
    max_rel: float
    exact_by_construction: bool
    padded_layers: list[str]
    cells_differing: int
    cells: int
    tolerance: float  # (b)'s: the sliding map against the crop loop
    conversion_max_abs: float = 0.0
    conversion_crops: int = 0
    finer_stride: str = ""  # "output stride 2x2, dilated": what --output-stride compiled, to say which was checked
    layers: list[LayerPadding] = field(default_factory=list)
    strict: bool = False
    notes: list[str] = field(default_factory=list)
    scale: float = 1.0  # the largest score's magnitude, which the tolerance and max_rel are relative to
    pass_changes: list[PassChange] = field(default_factory=list)  # passes that changed the crop's output
    conversion_tolerance: float | None = None  # (a)'s, which also names the passes (None: `tolerance`)
    conversion_scale: float = 1.0  # the classifier's largest score on (a)'s crops, which it is relative to
    tolerance_given: bool = False  # both tolerances are the user's (--tolerance), not relative to a score
    padding_kinds: dict[str, str] = field(default_factory=dict)  # padded layer -> `padding_kind` (absent: zeros)
    top: TopClasses | None = None  # on a real image (verify --image): what the padding does to the answer
    compiled_given: bool = False  # the classifier given was compiled to slide: (a) compares it with itself
    asked: AskedAs = PYTHON_ASKED  # the options named as the caller sets them
    # (N, rows, cols): each cell's largest difference over its classes, dense map vs crop loop (NaN: left out),
    # to draw where the two differ (a padded network's border, a ceil_mode pool's edge)
    cell_differences: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.conversion_tolerance is None:
            self.conversion_tolerance = self.tolerance

    @property
    def conversion_exact(self) -> bool:
        """(a): the converted network gives the classifier's output on its crop, within
        (a)'s own tolerance: the one `changing_passes` named the passes by, so a pass
        named as changing the scores is always a difference here (and a failure)."""
        return self.conversion_max_abs <= self.conversion_tolerance

    @property
    def conversion_rounding(self) -> bool:
        """(a) differs over the tolerance asked (a --tolerance of 0), by rounding only."""
        return not self.conversion_exact and self.conversion_max_abs <= ROUNDING * self.conversion_scale

    @property
    def sliding_rounding(self) -> bool:
        """(b) differs over the tolerance asked, by rounding only."""
        return not self.agrees and self.max_abs <= ROUNDING * self.scale

    @property
    def converted_by_plugins(self) -> list[str]:
        """The user's passes that rewrote fc or flatten layers and changed the scores on
        the crop: a conversion of their own, which must keep them."""
        return [change.name for change in self.pass_changes if change.converts and not change.builtin]

    @property
    def changed_by_plugins(self) -> bool:
        """(a) differs because passes that are not graphconv's changed what the classifier
        computes (strip-softmax, say): the user's choice, not a conversion bug. (b) then
        compares against the classifier as the passes left it."""
        return bool(self.pass_changes) and not any(change.builtin for change in self.pass_changes)


    @property
    def agrees(self) -> bool:
        """(b): the sliding evaluation equals the crop loop everywhere."""
        return self.max_abs <= self.tolerance

    @property
    def edge_kinds(self) -> set[str]:
        """What reaches past the crop's maps, by `EDGE_EFFECTS`' names: "padding", or ceil_mode
        pools' last windows or an upsample's clamped interpolation, which read no padding
        (the report said "padding" of networks with none)."""
        return {EDGE_EFFECTS.get(self.padding_kinds.get(name, "zeros"), "padding") for name in self.padded_layers}

    @property
    def only_hanging_windows(self) -> bool:
        return self.edge_kinds == {EDGE_EFFECTS["ceil_mode"]}

    @property
    def edge(self) -> str:
        """What makes a crop differ from the same pixels seen densely, as the report names it."""
        return " and ".join(sorted(self.edge_kinds, key=EDGE_ORDER.index)) or "padding"

    def _at_the_image_border(self) -> str:
        """Where the sliding network meets what each crop meets at its own border."""
        if self.edge_kinds == {EDGE_EFFECTS["interpolation"]}:
            return "it interpolates against copied edges only at the image's border"
        return "its windows hang only at the image's border" if self.only_hanging_windows else \
            "it pads only at the image's border"

    @property
    def padding_explains(self) -> bool:
        """For a padded network: every position no padding reaches agrees."""
        return all(layer.clear_agrees for layer in self.layers)

    @property
    def passed(self) -> bool:
        """The exit status: the conversion must be exact; the sliding evaluation must equal
        the crop loop on an unpadded network (or when `strict`), and on a padded one
        differ only where padding reaches, without changing the top class of more than
        TOP_CLASS_SHARE of the cells of the user's image."""
        if not self.conversion_exact:  # the user's passes changing the scores fail too: verify cannot
            return False                # know they meant to; the report says whose doing it is
        if self.agrees:
            return True
        return (not self.exact_by_construction and not self.strict and self.padding_explains
                and not self.changes_answers)

    @property
    def changes_answers(self) -> bool:
        """On the user's image (verify --image), the edge effect changes the top class of
        more than TOP_CLASS_SHARE of the cells: a FAIL, since scripts read the verdict and
        such a map is not the classifier's answer (random pixels cannot say this)."""
        return self.top is not None and self.top.changes_answers

    def __repr__(self) -> str:
        """What a notebook shows: the verdict and the report's text (the fields are its
        attributes), not a dump of every field."""
        return f"<VerifyReport: {'passed' if self.passed else 'FAILED'}\n{self}>"

    def __str__(self) -> str:
        n, k, rows, cols = self.shape
        reference = "the classifier as your passes left it" if self.changed_by_plugins else "the classifier"
        stride = f" at {self.finer_stride}" if self.finer_stride else ""
        tolerances = (f"(tolerance {self.tolerance:.3g}, from {self.asked.tolerance})" if self.tolerance_given
                      else f"(tolerances: 1e-4 of the largest score, unless {self.asked.tolerance})")
        lines = [f"score map {n}x{k}x{rows}x{cols}{stride} {tolerances}",
                 self._conversion_line(),
                 f"(b) sliding evaluation vs {reference} on every crop: {self.cells_differing} of "
                 f"{self.cells} cells differ by more than the tolerance, max abs {self.max_abs:.3g} "
                 f"({self.max_rel:.2%} of the largest score, {self.scale:.3g}; {self._sliding_tolerance_text()})"]
        lines.extend(self._edge_lines())
        lines.extend(f"    {note}" for note in self.notes)
        if self.top is not None:
            lines.extend(self.top.lines())
        elif not self.exact_by_construction:
            lines.append(f"    (these are random pixels: whether {self.edge} changes the top class on your images, "
                         f"{self.asked.on_yours})")
        lines.append("result: " + self._verdict())
        return "\n".join(lines)

    def _edge_lines(self) -> list[str]:
        """Why cells differ from their crops: no layer pads (then they may not), or the
        padded layers, each with how far its differences reach and how large they are."""
        if self.exact_by_construction:
            return ["    no layer pads, so every cell equals its crop by construction"
                    + ("" if self.agrees else ", here to float32 rounding" if self.sliding_rounding
                       else ": this difference is a bug")]
        lines = [f"    {self._padding_headline()}, where the sliding network sees the neighbouring "
                 f"pixels ({self._at_the_image_border()})"]
        listed, rest = self._listed_layers()
        lines.extend(f"    - {layer.line()}" for layer in listed)
        if rest:
            kind = "ceil_mode" if self.only_hanging_windows else "padded"
            lines.append(f"    - and {len(rest)} more {kind} {agreeing(len(rest), 'layer', 'layers')} "
                         f"between them, whose positions that read "
                         f"{self.edge} differ by up to {max(layer.max_abs for layer in rest):.3g} and whose "
                         "positions clear of it, if any, agree")
        if self.layers:
            lines.append(f"    (per layer: {counted(self.layers[0].crops, 'sampled crop')}, each layer's map "
                         "on the crop against the sliding network's at the same place)")
        if self.finer_stride and self.edge_kinds == {"padding"}:  # dilate takes no other edge effect
            lines.append("    the stride methods dilate and shift disagreeing near the image's edges on such a "
                         "network is this same effect: shifted copies are padded at their own borders")
        return lines

    def _verdict(self) -> str:
        """The result line's words: PASS or FAIL (and of what), first reason first."""
        converted = ("the conversion was not checked (a compiled model)" if self.conversion_unchecked
                     else "the conversion is exact")
        if self.changed_by_plugins:
            return self._verdict_after_plugins()
        if self.conversion_rounding and (self.agrees or self.sliding_rounding):
            return f"FAIL ({self.asked.tolerance}): the scores differ" + ROUNDING_ONLY
        if not self.conversion_exact:
            return "FAIL: the conversion is wrong"
        if self.agrees and any(layer.differing for layer in self.layers):
            return (f"PASS: {converted} and the sliding evaluation equals the crop loop on these "
                    "pixels, within the tolerance; but " + self.edge + " makes the layers listed above differ, so "
                    "on other images the scores can differ" + (f" ({self.asked.on_yours})" if self.top is None
                                                               else ""))
        if self.agrees:
            return f"PASS: {converted} and the sliding evaluation equals the crop loop"
        if self.exact_by_construction and self.sliding_rounding:
            return f"FAIL ({self.asked.tolerance}): the sliding evaluation differs" + ROUNDING_ONLY
        if self.exact_by_construction:
            return "FAIL: an unpadded network must equal the crop loop"
        if not self.padding_explains:
            return f"FAIL: positions that {self.edge} does not reach differ"
        if self.changes_answers:
            changes = "the top class of" if self.top.cut is None else f"some class's {self.top.call} in"
            return (f"FAIL ({'top class' if self.top.cut is None else 'calls'}): {converted}, but on this image "
                    f"{self.edge} changes {changes} {self.top.share:.1%} of the cells (more than "
                    f"{TOP_CLASS_SHARE:.0%}): the dense map is not the classifier's answer here; see the WARNING "
                    "above")
        if self.strict:
            return f"FAIL ({self.asked.strict}): {converted}, but {self.edge} makes the sliding evaluation differ"
        top = "" if self.top is None else (f", {'the top class' if self.top.cut is None else 'a call'} in "
                                           f"{self.top.changed} of {self.top.cells}")
        return (f"PASS: {converted}; the sliding evaluation differs from the crop loop in "
                f"{self.cells_differing} of {counted(self.cells, 'cell')} (by up to {self.max_abs:.3g}{top}), "
                f"only where {self.edge} reaches ({self.asked.strict} demands equality)")

    def _padding_headline(self) -> str:
        """What the padded layers put at each crop's border, one clause per kind present
        ("zero padding in c1, c2: each crop is padded with zeros at its own border;
        reflection padding in p: ..."): a network padded by reflection alone was said to
        pad with zeros, and a ceil_mode max pool, which reads no zeros at all, too."""
        by_kind: dict[str, list[str]] = {}
        for name in self.padded_layers:
            by_kind.setdefault(self.padding_kinds.get(name, "zeros"), []).append(name)
        return "; ".join(f"{label} in {_names(names)}: {how}"
                         for label, how, names in ((*padding_words(kind), names) for kind, names in by_kind.items()))

    def _conversion_tolerance_text(self) -> str:
        if self.tolerance_given:
            return f"tolerance {self.conversion_tolerance:.3g}"
        return (f"tolerance {self.conversion_tolerance:.3g}: 1e-4 of the classifier's largest score on "
                f"them, {self.conversion_scale:.3g}")

    def _listed_layers(self) -> tuple[list[LayerPadding], list[LayerPadding]]:
        """The padded layers the report gives a line each: all of a few; of many (DenseNet-
        121 has 60), the first and last ones and every one whose positions clear of
        padding differ (a bug). The rest, which only repeat the same effect, are summed up."""
        if len(self.layers) <= LISTED_LAYERS:
            return self.layers, []
        ends = {layer.name for layer in self.layers[:LISTED_LAYERS // 2] + self.layers[-(LISTED_LAYERS // 2):]}
        listed = [layer for layer in self.layers if layer.name in ends or not layer.clear_agrees]
        return listed, [layer for layer in self.layers if layer not in listed]

    def _sliding_tolerance_text(self) -> str:
        if self.tolerance_given:
            return f"tolerance {self.tolerance:.3g}"
        if self.tolerance > TOLERANCE * self.scale:
            return f"tolerance {self.tolerance:.3g}: (a)'s, which is larger than 1e-4 of it"
        return f"tolerance {self.tolerance:.3g}: 1e-4 of it"

    @property
    def conversion_unchecked(self) -> bool:
        """(a) compared the model given with itself: it was compiled to slide already, and
        compiling it again changed nothing (passes of the user's that change its scores
        are still said, by name)."""
        return self.compiled_given and self.conversion_exact and not self.pass_changes

    def _conversion_line(self) -> str:
        if self.conversion_unchecked:
            return ("(a) conversion: not checked: the model given is already compiled, so the classifier verify "
                    "runs on each crop is the converted network itself; verify the spec it was compiled from "
                    "to check the conversion")
        return (f"(a) conversion: the converted network vs the classifier on "
                f"{counted(self.conversion_crops, 'crop')} (the first, middle and last rows and columns of the crop "
                f"grid): max abs difference {self.conversion_max_abs:.3g} ({self._conversion_tolerance_text()}): "
                + self._conversion_verdict())

    def _conversion_verdict(self) -> str:
        """(a)'s verdict, naming the passes that changed the crop's output and whose they are."""
        if self.conversion_exact:
            return "exact"
        if self.conversion_rounding and not self.changed_by_plugins:
            return "DIFFERENT by float32 rounding only, over the tolerance asked"
        if not self.pass_changes:
            return "DIFFERENT: the conversion is wrong (a bug)"
        changes = "; ".join(change.line() for change in self.pass_changes)
        if self.converted_by_plugins:
            return f"DIFFERENT: {changes}: the conversion is wrong (a bug in your pass, which rewrote fc layers)"
        if self.changed_by_plugins:
            return f"{changes} (the pipeline's own doing, not the conversion's)"
        return f"DIFFERENT: {changes}: the conversion is wrong (a graphconv bug in a built-in pass)"

    def _verdict_after_plugins(self) -> str:
        """The verdict when the user's passes changed what the classifier computes: a FAIL
        (verify cannot know it was meant: strip-softmax means it, a wrong weight does not),
        saying whose change it is and whether the sliding evaluation is right for the
        network as changed."""
        named = ", ".join(f"'{change.name}'" for change in self.pass_changes)
        if self.converted_by_plugins:
            converting = ", ".join(f"'{name}'" for name in self.converted_by_plugins)
            return (f"FAIL: the conversion is wrong: {converting} rewrote fc or flatten layers and changed what the "
                    "classifier computes on its crop, which a conversion must keep (an fc over a CxHxW map becomes "
                    "a conv of HxW kernel, its weight (K, C*H*W) reshaped to (K, C, H, W) in the flatten's order)")
        head = (f"FAIL: {named} changed what the classifier computes (graphconv's own passes keep it); "
                "if that is what your pass is for, the sliding evaluation ")
        if self.agrees:
            return head + "is right: it equals the crop loop of the network as changed"
        if self.exact_by_construction or self.strict or not self.padding_explains:
            return head + "is wrong: it differs from the crop loop of the network as changed"
        return head + f"is right: it differs from the crop loop of the network as changed only where {self.edge} reaches"


TOP_CLASS_SHARE = 0.01  # a share of cells whose top class may change before verify --image fails


@dataclass
class TopClasses:
    """What a user decides on, measured on their own image's region (verify --image): in
    how many cells the dense map's top class differs from the crop loop's, and how many
    cells each class gets from each. On random pixels a padded ResNet-18's cells agreed
    within tolerance 63 times in 64, while on a slide every tissue cell flipped to
    background: only real pixels say whether the padding changes the answer.

    With `cut` (`decision_cut`: a model ending in a sigmoid, each class a finding of its
    own, or giving one score) the answer is each class's call, its score at least `cut`:
    `changed` counts the cells where any class's call differs, and the counts are the
    cells calling each class. The top class of 14 independent findings said "differs in 0
    of 192 cells, PASS" where one finding's call at 0.5 flipped in 126 of 228."""

    where: str                 # the region, as the user reads it
    changed: int               # cells whose top class differs
    cells: int
    crop_counts: np.ndarray    # (K,): cells whose top class it is, in the crop loop
    dense_counts: np.ndarray   # the same in the dense map
    max_abs: float
    mean_abs: float
    crop_seconds: float        # the crop loop's time over the region (`_timed_crop_loop`: at its steady pace)
    crops: int                 # its crops
    labels: list[str] | None = None
    image_crops: int | None = None  # the crops of the whole image at this resolution (the cost of run --crops)
    command: str = PYTHON_ASKED.crop_loop  # how to get the crop loop's map of the whole image
    edge: str = "padding"  # what makes crops differ, as `VerifyReport.edge` names it
    exact: bool = False  # nothing makes them differ (`VerifyReport.exact_by_construction`): no cell elsewhere can
    cut: float | None = None  # each class called where its score is at least this (`decision_cut`), or the top class

    @property
    def answer(self) -> str:
        """What the user reads off a cell, as the report names it."""
        return "the top class" if self.cut is None else f"a class's {self.call}"

    @property
    def call(self) -> str:
        """How a class is called, "call (its probability >= 0.5)": with `cut` only."""
        return f"call (its {'probability' if self.cut else 'score, a logit'} >= {self.cut:g})"

    @property
    def share(self) -> float:
        return self.changed / max(self.cells, 1)

    @property
    def changes_answers(self) -> bool:
        return self.share > TOP_CLASS_SHARE

    def lines(self) -> list[str]:
        counted_as = "per top class" if self.cut is None else "calling each class"
        lines = [f"on your image ({self.where}): {self.answer} differs between the dense map and the crop loop "
                 f"in {self.changed} of {self.cells} cells ({self.share:.1%}); scores differ by up to "
                 f"{self.max_abs:.3g}, {self.mean_abs:.3g} on average",
                 f"    cells {counted_as}, crop loop vs dense map: " + (self._counts() or "none")]
        if self.changes_answers:
            answers = "top class is" if self.cut is None else "calls are"
            lines.append(f"WARNING: on this image the dense map's {answers} not the classifier's in "
                         f"{self.share:.1%} of the cells: {self.edge} changes the answer, not only the scores. "
                         f"For the classifier's own map, run it on every crop: `{self.command}` ({self._cost()}); or "
                         f"use a network without {self.edge}")
        else:  # image_crops: the region is part of an image (verify --image), not all of it (an image from Python)
            cells = ("this region's cells" if self.image_crops else "the cells") if self.changed else \
                ("cell of this region" if self.image_crops else "cell")
            share = f"{1 - self.share:.1%} of" if self.changed else "every"
            elsewhere = ("" if not self.image_crops else " (and in the rest of the image: nothing in this network "
                         "makes a crop differ from the dense pass)" if self.exact else
                         " (other parts of the image may differ: --region picks another)")
            agrees = "the top class agrees" if self.cut is None else "every class's call agrees"
            lines.append(f"    {agrees} in {share} {cells}{elsewhere}")
        return lines

    def _counts(self) -> str:
        shown = np.flatnonzero((self.crop_counts > 0) | (self.dense_counts > 0))
        order = sorted(shown, key=lambda k: -max(self.crop_counts[k], self.dense_counts[k]))
        return ", ".join(f"{self._name(k)} {self.crop_counts[k]} vs {self.dense_counts[k]}" for k in order)

    def _name(self, k: int) -> str:
        return self.labels[k] if self.labels and k < len(self.labels) else f"class {k}"

    def _cost(self) -> str:
        """What the crop loop costs, from its time here: per crop, and for the whole image."""
        each = self.crop_seconds / max(self.crops, 1)
        text = f"the crop loop took {_duration(each)} a crop here"
        if self.image_crops:
            text += f", so about {_duration(each * self.image_crops)} for the {self.image_crops} crops of the whole image"
        return text + ", against one shared pass for the dense map"


def _duration(seconds: float) -> str:
    """A time in 2-3 significant figures ("0.42 ms", "3.7 s", "12 min"): a small network's
    crop took "0 ms", and its whole image "about 0 s"."""
    if seconds < 1:
        return f"{seconds * 1e3:.2g} ms" if seconds * 1e3 < 10 else f"{seconds * 1e3:.0f} ms"
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h" if seconds < 36000 else f"{seconds / 3600:.0f} h"


def top_classes(dense: np.ndarray, expected: np.ndarray, where: str, seconds: float,
                labels: list[str] | None = None, image_crops: int | None = None, command: str | None = None,
                cut: float | None = None) -> TopClasses:
    """`TopClasses` of a dense map against the crop loop's (both (N, K, rows, cols)): by
    each cell's top class, or with `cut` by each class's call (score >= cut)."""
    k = dense.shape[1]
    diff = _abs_difference(dense, expected)
    if cut is None:
        dense_top, crop_top = dense.argmax(axis=1), expected.argmax(axis=1)
        changed = dense_top != crop_top
        crop_counts, dense_counts = (np.bincount(top.ravel(), minlength=k) for top in (crop_top, dense_top))
    else:
        dense_calls, crop_calls = dense >= cut, expected >= cut
        changed = (dense_calls != crop_calls).any(axis=1)
        crop_counts, dense_counts = (calls.sum(axis=(0, 2, 3)) for calls in (crop_calls, dense_calls))
    return TopClasses(where, int(changed.sum()), int(changed.size), crop_counts, dense_counts, float(diff.max()),
                      float(diff.mean()), seconds, int(changed.size), labels, image_crops,
                      **({"command": command} if command else {}), cut=cut)


def decision_cut(graph: Graph, classes: int) -> float | None:
    """Where a class is called, for a model whose classes are not picked one per cell: a
    model ending in a sigmoid gives each class a probability of its own (findings on an
    X-ray, labels of a satellite tile: several can hold, or none), called at 0.5; a model
    giving one score (a sigmoid's probability, or the logit before it) is called at 0.5
    or 0. None for the rest: a softmax's, or logits', top class is the answer."""
    from graphconv.images import output_activation

    activation = output_activation(graph)
    if activation == "sigmoid":
        return 0.5
    if classes == 1 and activation is None:
        return 0.0
    return None


@dataclass
class PassChange:
    """A pass after which the network's output on the classifier's crop changed."""

    name: str
    origin: str
    max_abs: float
    converts: bool = False  # it rewrote fc or flatten layers: it is (a part of) the conversion

    @property
    def builtin(self) -> bool:
        return self.origin.startswith("built-in")

    def line(self) -> str:
        return (f"pass '{self.name}' ({self.origin}) changed what the classifier computes on its crop: max diff "
                f"{self.max_abs:.3g}")


def changing_passes(classifier: Model, pipeline: str, crops: np.ndarray, tolerance: float,
                    device: str = "cpu") -> list[PassChange]:
    """Rerun `pipeline` a pass at a time on the classifier (at its crop, where it is cheap)
    and name each pass after which the output on `crops` differs from what it was before
    that pass by more than `tolerance`: which pass made (a) differ, and whether it is one
    of graphconv's (a bug) or the user's (strip-softmax changes the scores by design)."""
    from graphconv.pass_manager import PassManager, get_pass, parse_pipeline

    changes: list[PassChange] = []
    graph, before = classifier.graph, _flat(classifier, crops, device)
    for name, options in parse_pipeline(pipeline):
        whole_input_layers = _whole_input_layers(graph)
        graph = PassManager([(name, options)]).run(graph)
        model = Model(graph, as_written=True)
        after = _flat(model, _as_its_input(model, classifier, crops), device)
        diff = float(_abs_difference(after, before).max()) if after.shape == before.shape else float("inf")
        if diff > tolerance:
            changes.append(PassChange(get_pass(name).name, get_pass(name).origin, diff,
                                      converts=_whole_input_layers(graph) < whole_input_layers))
        before = after
    return changes


def _whole_input_layers(graph: Graph) -> int:
    """The fc and flatten layers: what the conversion rewrites, so that a user's pass
    leaving fewer is the user's own conversion (a lab's fc-to-conv), whose change of the
    scores is its bug, not a change meant."""
    return len(graph.find("fc")) + len(graph.find("flatten"))


def _preprocess_words(block: dict | None) -> str:
    """'scale 0.00392, mean [0.5, 0.4, 0.3]', or 'none'."""
    return ", ".join(f"{key} {value:.6g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in (block or {}).items()) or "none"


def _as_its_input(model: Model, classifier: Model, x: np.ndarray) -> np.ndarray:
    """`x`, the classifier's input, as `model` takes the same pixels: another array only
    where a pass changed the preprocess (folded it into the first conv)."""
    from graphconv.images import same_pixels

    return same_pixels(x, classifier.preprocess, model.preprocess)


def _as_given(model: Model, classifier: Model, x: np.ndarray) -> np.ndarray:
    """`x` as it is: `_as_its_input` where the preprocess blocks differ but no pass moved
    one into the network (`_preprocess_moved`)."""
    return x


def _preprocess_moved(classifier: Model, compiled: Model, x: np.ndarray, device: str) -> bool:
    """Whether `compiled`'s preprocess differs from the classifier's because a pass moved
    the normalisation into its network: then it agrees with the classifier on the same
    pixels (`_as_its_input`), not on the same tensor. A preprocess set on one model alone
    (`compiled.preprocess = {...}` in a notebook) changes no network: given the same
    pixels, verify called a correct conversion 'wrong (a bug)'. Told on the first crop."""
    if compiled.preprocess == classifier.preprocess:
        return False
    crop = _crops(classifier, x, [(0, 0, 0)])
    on_crop = _flat(classifier, crop, device)
    tensor = float(_abs_difference(_flat(compiled, crop, device), on_crop).max())
    pixels = float(_abs_difference(_flat(compiled, _as_its_input(compiled, classifier, crop), device), on_crop).max())
    return not tensor < pixels


def _flat(model: Model, crops: np.ndarray, device: str) -> np.ndarray:
    """The model's outputs on a batch of crops, one row per crop."""
    return model._scores(crops, device).reshape(len(crops), -1)


def verify(original: Model, compiled: Model, image: np.ndarray, tolerance: float | None = None,
           device: str = "cpu", strict: bool = False, *, dense: np.ndarray | None = None,
           where: str | None = "the image given", progress: Callable[[int, int], None] | None = None,
           image_crops: int | None = None, command: str | None = None, left_out: np.ndarray | None = None,
           left_out_why: str | None = None, asked: AskedAs = PYTHON_ASKED) -> VerifyReport:
    """Check `compiled` (the converted network) against `original` (the classifier) on
    `image`: (a) on the classifier's crop, (b) slid over the image against the crop loop,
    and, for a padded network, where padding makes (b) differ. See the module docstring.

    `where` names the real image or its region (verify --image names the region): the
    report also says what the difference does to each cell's top class (`TopClasses`;
    `image_crops`, the whole image's crops, prices `run --crops`), and fails where it
    changes that of more than TOP_CLASS_SHARE of the cells. None for random pixels
    (verify --input-size), whose top classes say nothing of a user's images. `dense` is
    the sliding map of `image`'s cells when computed with the image around the region, as
    `run` sees them; `progress` hears
    the crop loop's. `left_out`, (rows, cols) bool: the cells `run` leaves out (no-data),
    neither computed by the crop loop nor compared, and said (`left_out_why`). Each model
    may be given as `compile_model` takes one: a path, a Graph or a Model. `asked`: how
    the report names the options it points at (the command gives COMMAND_ASKED, its
    flags; `command`, the crop loop's command with the user's own files)."""
    original, compiled = _same_network(original, compiled)
    _refuse_a_model_returning_vectors(compiled)
    x = as_batch(image, original.crop_shape[0])
    feed = _as_its_input if _preprocess_moved(original, compiled, x, device) else _as_given
    compared = _Compared(original, compiled, x, feed, device)
    dense = compiled._scores(feed(compiled, original, x), device) if dense is None else dense
    conversion = _conversion_checked(compared, dense.shape[2:], tolerance)  # (a)
    expected, seconds = _timed_reference_crop_loop(compared, conversion.changes, progress, left_out)
    sliding = _sliding_compared(dense, expected, left_out, tolerance, conversion.tolerance)  # (b)
    report = _verify_report(compared, conversion, sliding, tolerance, strict)
    report.asked = asked
    _note_the_cells_left_out_and_the_preprocess(report, compared, left_out_why)
    if where is not None:
        report.top = top_classes(sliding.dense, sliding.expected, where, seconds, original.graph.meta.get("labels"),
                                 image_crops, command or asked.crop_loop, decision_cut(original.graph, dense.shape[1]))
        report.top.edge, report.top.exact = report.edge, report.exact_by_construction
    if report.padded_layers or not report.agrees:
        _say_where_padding_makes_them_differ(report, original, x, device)
    return report


def _refuse_a_model_returning_vectors(compiled: Model) -> None:
    """A second model that still returns one vector per image is no dense form to check:
    most often the classifier given twice, or the compiled model's path mistaken."""
    if compiled.returns_vectors:
        raise GraphconvError(f"verify compares a classifier with its dense form, but the second model, "
                             f"{compiled.graph.name}, returns one vector per image (its fc, flatten or global "
                             "pool still sees the whole input): give the compiled model (graphconv.compile_model)")


@dataclass(frozen=True)
class _Compared:
    """The two networks verify compares, on `device`, and the image `x` as a batch; `feed`
    gives each the classifier's input as it takes it (the same pixels where a pass moved
    the preprocess into the network, else the same tensor: `_preprocess_moved`)."""
    original: Model
    compiled: Model
    x: np.ndarray
    feed: Callable[[Model, Model, np.ndarray], np.ndarray]
    device: str

    def given(self, model: Model, x: np.ndarray) -> np.ndarray:
        """`x`, the classifier's input, as `model` is given it."""
        return self.feed(model, self.original, x)


@dataclass(frozen=True)
class _ConversionCheck:
    """(a) as `_conversion_checked` measured it: on `crops` crops, the classifier's largest
    score (`scale`), the `tolerance` it is relative to, the converted network's largest
    difference (`max_abs`), and the passes that changed the scores (`changes`)."""
    crops: int
    scale: float
    tolerance: float
    max_abs: float
    changes: list[PassChange]


def _conversion_checked(compared: _Compared, map_hw: tuple[int, ...], tolerance: float | None) -> _ConversionCheck:
    """(a): the converted network against the classifier on a few crops of the grid (its
    first, middle and last rows and columns), where the two must agree to rounding for
    any network. Over (a)'s tolerance, the compile's passes are run again one at a time
    to name those that changed the scores: a bug of graphconv's, or a user's pass."""
    original, compiled, device = compared.original, compared.compiled, compared.device
    rows, cols = map_hw
    origins = _sample_origins(compared.x.shape[0], rows, cols, compiled.output_stride)
    crops = _crops(original, compared.x, origins)
    on_crops = _flat(original, crops, device)
    crop_scale = _finite_scale(on_crops)
    crop_tol = tolerance if tolerance is not None else TOLERANCE * crop_scale  # (a)'s, and the passes'
    conversion = float(_abs_difference(_flat(compiled, compared.given(compiled, crops), device), on_crops).max())
    changes = []
    if conversion > crop_tol and compiled.graph.meta.get("compiled", {}).get("passes"):
        changes = changing_passes(original, compiled.graph.meta["compiled"]["passes"], crops, crop_tol, device)
    return _ConversionCheck(len(crops), crop_scale, crop_tol, conversion, changes)


def _timed_reference_crop_loop(compared: _Compared, changes: list[PassChange],
                               progress: Callable[[int, int], None] | None,
                               left_out: np.ndarray | None) -> tuple[np.ndarray, float]:
    """The crop loop (b) is checked against, and its time: the classifier's, or, where only
    the user's own passes changed the scores (meant: strip-softmax), the network as they
    left it, on each crop, so that (b) checks the sliding alone."""
    reference = compared.original
    if changes and not any(change.builtin for change in changes):
        reference = compared.compiled  # the user's passes changed the scores: the network as they left it, on each crop
    return _timed_crop_loop(reference, compared.given(reference, compared.x), compared.compiled.output_stride,
                            compared.device, progress, left_out)


@dataclass(frozen=True)
class _SlidingCheck:
    """(b) as `_sliding_compared` measured it: the map's `shape`, the cells compared of the
    sliding map (`dense`) and the crop loop (`expected`), each cell's largest difference
    (`cell_differences`), the largest score (`scale`), (b)'s `tolerance`, the largest
    difference (`max_abs`) and the cells differing by more."""
    shape: tuple[int, ...]
    dense: np.ndarray
    expected: np.ndarray
    cell_differences: np.ndarray
    scale: float
    tolerance: float
    max_abs: float
    differing: int


def _sliding_compared(dense: np.ndarray, expected: np.ndarray, left_out: np.ndarray | None,
                      tolerance: float | None, crop_tol: float) -> _SlidingCheck:
    """(b): the sliding map against the crop loop, cell by cell, on the cells `run`
    computes (those it leaves out are neither compared nor counted), within float32
    rounding of the largest score, and never tighter than (a)'s tolerance (or --tolerance)."""
    if dense.shape != expected.shape:
        raise AssertionError(f"score map shape {dense.shape} != crop grid {expected.shape}")
    shape = dense.shape
    cell_differences = _abs_difference(dense, expected).max(axis=1)
    if left_out is not None:  # the cells compared, as (N, K, cells, 1)
        cell_differences[:, left_out] = np.nan
        dense, expected = dense[:, :, ~left_out][..., None], expected[:, :, ~left_out][..., None]
    scale = _finite_scale(expected)
    tol = tolerance if tolerance is not None else max(crop_tol, TOLERANCE * scale)  # (b)'s
    diff = _abs_difference(dense, expected)
    differing = int((diff > tol).any(axis=1).sum())
    return _SlidingCheck(shape, dense, expected, cell_differences, scale, tol, float(diff.max()), differing)


def _verify_report(compared: _Compared, conversion: _ConversionCheck, sliding: _SlidingCheck,
                   tolerance: float | None, strict: bool) -> VerifyReport:
    """(a) and (b) as one report, with the classifier's padded layers (none: (b) is exact by
    construction) and what each pads with, which say why (b) may differ."""
    original, compiled = compared.original, compared.compiled
    pads = padded_layers(original.graph)
    kinds = edge_kinds(original.graph, pads)
    return VerifyReport(sliding.shape, sliding.max_abs, sliding.max_abs / sliding.scale, not pads, pads,
                        sliding.differing, int(np.prod(sliding.dense.shape[:1] + sliding.dense.shape[2:])),
                        sliding.tolerance, conversion_max_abs=conversion.max_abs, conversion_crops=conversion.crops,
                        strict=strict, scale=sliding.scale, pass_changes=conversion.changes,
                        conversion_tolerance=conversion.tolerance, conversion_scale=conversion.scale,
                        tolerance_given=tolerance is not None, padding_kinds=kinds,
                        compiled_given=_compiled_to_slide(original), finer_stride=_finer_stride(compiled),
                        cell_differences=sliding.cell_differences)


def _note_the_cells_left_out_and_the_preprocess(report: VerifyReport, compared: _Compared,
                                                left_out_why: str | None) -> None:
    """Say what the check was not given as the user may think: the cells left out
    (`left_out_why`), and, where the two models' preprocess blocks differ, what each
    network was given, and whether that is a pass's doing or a setting to fix."""
    original, compiled = compared.original, compared.compiled
    if left_out_why:
        report.notes.append(left_out_why)
    if compiled.preprocess != original.preprocess:
        differ = (f"the compiled model's preprocess ({_preprocess_words(compiled.preprocess)}) is not the "
                  f"classifier's ({_preprocess_words(original.preprocess)})")
        report.notes.append(f"{differ}: a pass moved it into the network, so each is given the same pixels as its "
                            "own preprocess makes them" if compared.feed is _as_its_input else
                            f"{differ}, though their networks take the same input (no pass moved it into the "
                            "network): each is given the same input, as the networks are what is checked; an image "
                            "run through each is normalised differently: give both the same preprocess "
                            "(classifier.preprocess = compiled.preprocess) unless that is meant")


def _say_where_padding_makes_them_differ(report: VerifyReport, classifier: Model, x: np.ndarray,
                                         device: str) -> None:
    """For a padded network, or one whose map differs: each padded layer's effect on the
    crops against the sliding map (`_padding_effects`), which shows whether the padding
    alone explains (b); and where every cell of the score depends on padding, that any
    cell may differ, and how many still agree."""
    report.layers, notes = _padding_effects(classifier, x, device)
    report.notes.extend(notes)
    rows, cols = padding_reach(classifier.graph)[0][classifier.graph.output.name]
    if rows.all() and cols.all() and report.layers:
        report.notes.append(f"the score: every cell depends on positions {report.edge} reaches (the layers after "
                            f"{report.layers[-1].name} read its whole map), so any cell may differ; "
                            f"{report.cells - report.cells_differing} of {report.cells} agree within the "
                            "tolerance")


def _compiled_to_slide(model: Model) -> bool:
    """Whether the classifier given to verify is a compiled model that slides already (a
    compiled folder's): compiling it again changes nothing, so (a) compares it with
    itself. A classifier compiled with passes that leave it returning vectors
    (CLASSIFIER_PIPELINE, --passes without fc-to-conv) is still converted, and (a) holds."""
    return "compiled" in model.graph.meta and not model.returns_vectors


def _finer_stride(compiled: Model) -> str:
    """What an output-stride pass made of `compiled` ("output stride 2x2, dilated"), or ""."""
    method = compiled.graph.meta.get("compiled", {}).get("stride_method")
    if method is None:
        return ""
    sy, sx = pair(compiled.output_stride)
    return f"output stride {sy}x{sx}, {'shift-and-stitch' if method == 'shift' else 'dilated'}"


def _sample_origins(n: int, rows: int, cols: int, stride) -> list[tuple[int, int, int]]:
    """(image, top, left) of a few crops of the grid: first, middle and last rows and columns."""
    def picks(count):
        return sorted({0, count // 2, count - 1})[:SAMPLE_ROWS]

    sy, sx = pair(stride)
    return [(b, i * sy, j * sx) for b in range(n) for i in picks(rows) for j in picks(cols)]


def _crops(classifier: Model, x: np.ndarray, origins) -> np.ndarray:
    _, hc, wc = classifier.crop_shape
    return np.stack([x[b, :, top:top + hc, left:left + wc] for b, top, left in origins])


def _padding_effects(classifier: Model, x: np.ndarray, device: str) -> tuple[list[LayerPadding], list[str]]:
    """For each layer whose windows reach outside its input at the crop: its map on
    sampled crops against the sliding network's map (the same layers run on the whole
    image) at the same places, split into positions padding reaches and the rest.

    The layers up to the last such layer run once on the whole image and once on the
    crops for each stride among them, every such layer's map taken on the way
    (`Executor.run`'s taps). One network prefix per layer, each run whole, made `verify`
    of DenseNet-121 at 288x256 take 100 s (its 60 padded layers each ran the ones before
    them again); now 11 s."""
    graph = classifier.graph
    reach, sources = padding_reach(graph)
    fields, mixed = partial_receptive_fields(graph)
    if mixed is not None and any(name not in fields for name in sources):
        raise mixed
    context = _PaddingContext(classifier, x, device, reach, fields, partial_sliding_periods(graph),
                              infer_shapes(graph, check_weights=False))
    measured, notes = {}, []
    for last, group in _prefix_groups(graph, sources):
        measured.update(_measure_group(context, last, group, notes))
    return [measured[name] for name in sources if name in measured], notes


@dataclass
class _PaddingContext:
    """What `_padding_effects` measures every layer with."""

    classifier: Model
    x: np.ndarray
    device: str
    reach: dict
    fields: dict
    periods: dict
    shapes: dict


def _prefix_groups(graph: Graph, sources: list[str]) -> list[tuple[str, list[str]]]:
    """The padded layers in groups that one network prefix computes: each group's last
    layer, and the layers among `sources` upstream of it (in most networks, one group)."""
    order = {node.name: i for i, node in enumerate(graph.layers())}
    left, groups = sorted(sources, key=order.__getitem__), []
    while left:
        last = left[-1]
        upstream = nx.ancestors(graph.nx, last)
        groups.append((last, [name for name in left if name == last or name in upstream]))
        left = [name for name in left if name not in groups[-1][1]]
    return groups[::-1]


def _measure_group(context: _PaddingContext, last: str, group: list[str], notes: list[str]) -> dict:
    """`LayerPadding` of each layer of `group`, from the prefix ending at `last`; a group
    whose prefix cannot run on the whole image is measured a layer at a time, so that
    only the layers that cannot are left out (with a note)."""
    # every layer a step of its own, fused blocks' inner layers too: each is tapped
    executor = Executor(_prefix(context.classifier.graph, last), context.device, fuse_blocks=False)
    whole = dict.fromkeys(group)
    try:
        executor.run(context.x, taps=whole)
    except GraphconvError as err:
        if len(group) > 1:
            return {name: padding for one in group
                    for name, padding in _measure_group(context, one, [one], notes).items()}
        notes.append(f"({last}: its layers cannot run on the whole image ({err.message}); not compared)")
        return {}
    measured = {}
    for stride, period in sorted({(context.fields[name].stride, context.periods[name]) for name in group}):
        layers = [name for name in group if (context.fields[name].stride, context.periods[name]) == (stride, period)]
        # crops at multiples of the period line up with the maps: of the stride, after an upsample, need not
        _, hc, wc = context.classifier.crop_shape
        origins = _sample_origins(context.x.shape[0], (context.x.shape[2] - hc) // period[0] + 1,
                                  (context.x.shape[3] - wc) // period[1] + 1, period)
        on_crops = dict.fromkeys(layers)
        executor.run(_crops(context.classifier, context.x, origins), taps=on_crops)
        for name in layers:
            measured[name] = _layer_padding(context, name, whole[name], on_crops[name], origins, stride)
    return measured


def _layer_padding(context: _PaddingContext, name: str, whole: np.ndarray, on_crops: np.ndarray, origins,
                   stride) -> LayerPadding:
    """One padded layer's maps on the crops against the whole image's at the same places."""
    node = context.classifier.graph.node(name)
    _, h, w = context.shapes[name]
    rows_reach, cols_reach = context.reach[name]
    mask = rows_reach[:, None] | cols_reach[None, :]
    reached_diff, clear_diff, differing, infinite = 0.0, 0.0, np.zeros((h, w), bool), np.zeros((h, w), bool)
    tol = TOLERANCE * _finite_scale(whole)
    for crop_map, (b, top, left) in zip(on_crops, origins):
        i0, j0 = top // stride[0], left // stride[1]
        region = whole[b, :, i0:i0 + h, j0:j0 + w]
        hh, ww = region.shape[1:]
        d = _abs_difference(crop_map[:, :hh, :ww], region).max(axis=0)
        m = mask[:hh, :ww]
        finite = np.isfinite(d)
        if (m & finite).any():
            reached_diff = max(reached_diff, float(d[m & finite].max()))
        infinite[:hh, :ww] |= m & ~finite
        if (~m).any():
            clear_diff = max(clear_diff, float(d[~m].max()))
        differing[:hh, :ww] |= d > tol
    in_shapes = [context.shapes[s.name] for s in node.inputs]
    why, fill = _why_padded(node, in_shapes), _padding_fill(node, in_shapes)
    border = (_run_length(rows_reach), _run_length(rows_reach[::-1]),
              _run_length(cols_reach), _run_length(cols_reach[::-1]))
    return LayerPadding(name, why, (h, w), border, int(mask.sum()), int((differing & mask).sum()),
                        reached_diff, clear_diff, tol, len(origins), fill, int(infinite.sum()))


LISTED_LAYERS = 6  # a padded network's layers given a line each in verify's report (`_listed_layers`)


def _names(names: list[str], shown: int = LISTED_LAYERS) -> str:
    """Layer names for one line: all of a few, or the first ones and how many more."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown // 2])} and {len(names) - shown // 2} more"


def _finite_scale(values: np.ndarray) -> float:
    """The largest finite magnitude in `values` (1 when there is none, or all are 0): what
    a tolerance scales with. Not at least 1: softmax probabilities of 1000 classes are
    around 1e-3, and a tolerance of 1e-4 took a difference of 5% of every score for
    rounding. A map a -inf pad wrote holds -inf in its border, which must not make every
    difference look small."""
    finite = np.abs(values[np.isfinite(values)])
    largest = float(finite.max()) if finite.size else 0.0
    return largest if largest > 0 else 1.0


NOTHING_TO_VERIFY_IN_SEGMENTATION = (
    "verify checks a classifier against the dense network compiled from it; a segmentation network is dense "
    "already (compare its tiled and whole-image maps with run --tile instead)")


def _same_network(original, compiled) -> tuple[Model, Model]:
    """The two models verify compares, loaded where given as paths or Graphs; two that
    cannot be one network before and after compiling (another crop or class count) are
    refused (a numpy shape error came out of the comparison)."""
    from graphconv.compiler import source_graph
    original, compiled = (m if isinstance(m, Model) else Model(source_graph(m)) for m in (original, compiled))
    original = Model(original.graph, as_written=True)  # the reference the passes are checked against
    if original.segmentation or compiled.segmentation:
        raise GraphconvError(NOTHING_TO_VERIFY_IN_SEGMENTATION)
    for what, before, after in (("crops", original.crop_shape, compiled.crop_shape),
                                ("class counts", original.output_channels, compiled.output_channels)):
        if before != after:
            raise GraphconvError(f"verify compares a classifier with the network compiled from it, but their "
                                 f"{what} differ ({original.graph.name}: {before}, {compiled.graph.name}: {after})")
    return original, compiled


def _abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in float64, 0 where the two are equal (the same infinity in both: a -inf
    pad's border seen alike by the crop and the whole image; NaN in both: NaN pixels of
    the image reach both alike), inf where only one is infinite or NaN."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.where(a == b, 0.0, np.abs(a - b))
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))


def _why_padded(node, in_shapes) -> str:
    """"padding 2x2", "padding top 0, left 0, bottom 1, right 1" (a pad layer, or any
    window padded unevenly; "... of -inf" for a pad of another value than 0), "ceil_mode"
    for a pool whose windows reach past its input without padding, or "interpolation at
    the edges" for an upsample that clamps its samples to the map."""
    kind = padding_kind(node, in_shapes)
    if kind == "interpolation":
        return "interpolation at the edges"
    if kind == "ceil_mode":
        return "ceil_mode"
    window = node.opdef.window(node.params, in_shapes)
    return describe_padding(window) if kind in ("zeros", "ignored") else f"{describe_padding(window)} of {kind}"


def _padding_fill(node, in_shapes) -> str:
    """What the positions outside a layer's input hold, as the report's line per layer
    says it ("N positions read ...")."""
    kind = padding_kind(node, in_shapes)
    if kind == "interpolation":
        return "the map's edge rows and columns (repeated)"
    if kind in ("ceil_mode", "ignored"):
        return "beyond the map's edge, which the pool ignores"
    return "zero padding" if kind == "zeros" else f"padding of {kind}"


EDGE_EFFECTS = {"ceil_mode": "the overhang of ceil_mode windows", "interpolation": "interpolation at the edges"}
"""What verify calls the edge effects that are not padding (`padding_kind`'s names)."""
EDGE_ORDER = ["padding", *EDGE_EFFECTS.values()]


def padding_kind(node, in_shapes) -> str:
    """What a padded layer's windows find past its input: "zeros" (a conv's padding, an
    average pool that counts it), a pad layer's fill ("reflection", "edge copies", "-inf",
    "the value 0.5"), "ignored" (a max pool's padding, an average pool's that it does not
    count), "ceil_mode" (a pool's last windows hanging off an unpadded map, which it
    ignores too) or "interpolation" (an upsample clamping its samples to the map): the
    op's window says which (`Window.beyond`)."""
    window = node.opdef.window(node.params, in_shapes)
    unpadded = not any(window.padding) and not any(window.padding_end)
    if unpadded and window.beyond in ("zeros", "ignored"):  # padded all the same: ceil_mode's overhang
        return "ceil_mode"
    return window.beyond


def padding_words(kind: str) -> tuple[str, str]:
    """(label, what it does to each crop) for a `padding_kind`, as verify's headline says it."""
    fixed = {
        "zeros": ("zero padding", "each crop is padded with zeros at its own border"),
        "reflection": ("reflection padding", "each crop is padded with its own rows and columns mirrored at its "
                                             "border"),
        "edge copies": ("edge padding", "each crop is padded with copies of its own edge rows and columns"),
        "ignored": ("pool padding that the pool ignores", "at each crop's border the windows reach past its map "
                                                           "and ignore the positions there (they read no zeros)"),
        "ceil_mode": ("ceil_mode pools", "their last windows reach past each crop's map and ignore the positions "
                                         "there (they read no zeros)"),
        "interpolation": ("interpolation at the edges", "each crop's map is interpolated against copies of its own "
                                                        "edge rows and columns")}
    return fixed.get(kind, (f"padding of {kind}", f"each crop is padded with {kind} at its own border"))


def _run_length(flags: np.ndarray) -> int:
    """How many leading entries are True."""
    false = np.flatnonzero(~flags)
    return int(false[0]) if false.size else len(flags)
