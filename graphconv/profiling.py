"""Per-layer timings joined with what each layer computes: one place for the rows that
`graphconv run --profile`, `graphconv inspect --profile` and the benchmarks print, and
for the medians `inspect --profile` takes of several runs."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from graphconv.backends import get_backend
from graphconv.cost import layer_costs
from graphconv.ir import Graph
from graphconv.ops.layout import stored_channels_last
from graphconv.shapes import infer_shapes
from graphconv.text_table import text_table

if TYPE_CHECKING:
    from graphconv.against_onnxruntime import Comparison


@dataclass(frozen=True)
class LayerTiming:
    name: str
    op: str
    strategy: str            # the kernel variant the layer ran with ("" when it has one)
    shape: tuple[int, int, int]
    flops: int               # for the whole batch
    seconds: float

    @property
    def gflops_per_second(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


def layer_timings(graph: Graph, profile: dict[str, float], input_hw: tuple[int, int], batch: int,
                  device: str = "cpu") -> list[LayerTiming]:
    """One row per layer of `graph` that `profile` (seconds per layer) timed, in run order."""
    costs = {row.name: row for row in layer_costs(graph, tuple(input_hw))}
    shapes = infer_shapes(graph, tuple(input_hw), check_weights=False)
    backend = get_backend(device)
    stored = stored_channels_last(graph) if backend.stores_channels_last else frozenset()
    rows = []
    for name, seconds in profile.items():
        node = graph.node(name)
        in_shape = (batch, *shapes[node.inputs[0].name])
        channels_last = name in stored or any(src.name in stored for src in node.inputs)
        rows.append(LayerTiming(name, node.op, backend.variant(node.opdef, node.params, in_shape, channels_last),
                                costs[name].shape, costs[name].flops * batch, seconds))
    return rows


def format_profile(graph: Graph, profile: dict[str, float], input_hw: tuple[int, int], batch: int,
                   device: str = "cpu", against: Comparison | None = None) -> str:
    """Per-layer ms, share and GFLOP/s, with the kernel strategy each layer ran with;
    `against`: with onnxruntime's ms per layer beside them, and graphconv's time over it."""
    rows = layer_timings(graph, profile, input_hw, batch, device)
    total = sum(r.seconds for r in rows) or 1e-12
    cells = [[r.name, r.op, r.strategy or "-", f"{r.seconds * 1e3:.2f}", f"{r.seconds / total:.0%}",
              f"{r.gflops_per_second:.1f}"] for r in rows]
    headers = ["layer", "op", "strategy", "ms", "share", "GFLOP/s"]
    if against is not None:
        headers += ["onnxruntime ms", "x", ""]
        cells = _beside_onnxruntime(cells, rows, against)
    cells.append(["total", "", "", f"{total * 1e3:.2f}"] + (_against_total(total, against) if against else []))
    return "\n".join(text_table(headers, cells, left=3))


def _beside_onnxruntime(cells: list[list[str]], rows: list[LayerTiming], against: Comparison) -> list[list[str]]:
    """Each layer's row with onnxruntime's ms, and a row for its nodes of no layer (its
    layout reorders). onnxruntime fuses a convolution and the activation after it into
    one node named after the activation: a layer it ran no node of shows '-', and the
    next row it did run one for compares its time with those layers' and its own
    (`x (with 1 above)`)."""
    out, pending, above = [], 0.0, 0
    for row, timing in zip(cells, rows):
        theirs = against.layers.get(timing.name, 0.0)
        if theirs <= 0:
            out.append(row + ["-", ""])
            pending, above = pending + timing.seconds, above + 1
            continue
        out.append(row + [f"{theirs * 1e3:.2f}", f"{(pending + timing.seconds) / theirs:.2f}"]
                   + ([f"(with {above} above)"] if above else []))
        pending, above = 0.0, 0
    if against.own:
        out.append([f"(onnxruntime's own: {', '.join(sorted(against.own))})", "", "", "", "", "",
                    f"{sum(against.own.values()) * 1e3:.2f}", ""])
    return out


def _against_total(total: float, against: Comparison) -> list[str]:
    theirs = sum(against.layers.values()) + sum(against.own.values())
    return ["", "", f"{theirs * 1e3:.2f}", f"{total / theirs:.2f}" if theirs > 0 else ""]


PROFILE_RUNS = (3, 25)  # the fewest and the most runs `median_profile` times
PROFILE_SECONDS = (1.0, 10.0)  # it stops past the first once it has the fewest runs, past the second in any case


def median_profile(model, x: np.ndarray, device: str) -> tuple[dict[str, float], int]:
    """Each layer's median seconds over several timed runs, and how many: a single run's
    times are noise at small sizes (a review: MobileNetV2's first conv at 768x768 showed
    13.0 ms, 34% of the run, where its median over 9 runs was 1.4)."""
    runs: list[dict[str, float]] = []
    spent = 0.0
    while len(runs) < PROFILE_RUNS[1] and spent < PROFILE_SECONDS[1] and (
            len(runs) < PROFILE_RUNS[0] or spent < PROFILE_SECONDS[0]):
        profile: dict[str, float] = {}
        start = time.perf_counter()
        model.run(x, device, profile)
        spent += time.perf_counter() - start
        runs.append(profile)
    return {name: float(np.median([run[name] for run in runs])) for name in runs[0]}, len(runs)
