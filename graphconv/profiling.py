"""Per-layer timings joined with what each layer computes: one place for the rows that
`graphconv run --profile`, `graphconv inspect --profile` and the benchmarks print, and
for the medians `inspect --profile` takes of several runs."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from graphconv.backends import get_backend
from graphconv.cost import layer_costs
from graphconv.ir import Graph
from graphconv.ops.layout import stored_channels_last
from graphconv.shapes import infer_shapes
from graphconv.text_table import text_table


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
                   device: str = "cpu") -> str:
    """Per-layer ms, share and GFLOP/s, with the kernel strategy each layer ran with."""
    rows = layer_timings(graph, profile, input_hw, batch, device)
    total = sum(r.seconds for r in rows) or 1e-12
    cells = [[r.name, r.op, r.strategy or "-", f"{r.seconds * 1e3:.2f}", f"{r.seconds / total:.0%}",
              f"{r.gflops_per_second:.1f}"] for r in rows]
    cells.append(["total", "", "", f"{total * 1e3:.2f}"])
    lines = text_table(["layer", "op", "strategy", "ms", "share", "GFLOP/s"], cells, left=3)
    return "\n".join(lines)


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
