"""Per-layer timings joined with what each layer computes: one place for the rows that
`graphconv run --profile`, `graphconv inspect --profile` and the benchmarks print."""
from __future__ import annotations

from dataclasses import dataclass

from graphconv.backends import get_backend
from graphconv.cost import layer_costs
from graphconv.ir import Graph
from graphconv.ops.layout import stored_channels_last
from graphconv.shapes import infer_shapes


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
    stored = stored_channels_last(graph) if get_backend(device).stores_channels_last else frozenset()
    rows = []
    for name, seconds in profile.items():
        node = graph.node(name)
        in_shape = (batch, *shapes[node.inputs[0].name])
        channels_last = name in stored or any(src.name in stored for src in node.inputs)
        rows.append(LayerTiming(name, node.op, node.opdef.variant(device, node.params, in_shape, channels_last),
                                costs[name].shape, costs[name].flops * batch, seconds))
    return rows


def format_profile(graph: Graph, profile: dict[str, float], input_hw: tuple[int, int], batch: int,
                   device: str = "cpu") -> str:
    """Per-layer ms, share and GFLOP/s, with the kernel strategy each layer ran with."""
    rows = layer_timings(graph, profile, input_hw, batch, device)
    total = sum(r.seconds for r in rows) or 1e-12
    name_width = max([16, *(len(r.name) + 1 for r in rows)])  # ConvNeXt's "features.5.4.block.4"
    op_width = max([9, *(len(r.op) + 1 for r in rows)])
    lines = [f"{'layer':<{name_width}}{'op':<{op_width}}{'strategy':<11}{'ms':>9}{'share':>7}{'GFLOP/s':>9}"]
    for r in rows:
        lines.append(f"{r.name:<{name_width}}{r.op:<{op_width}}{r.strategy or '-':<11}{r.seconds * 1e3:>9.2f}"
                     f"{r.seconds / total:>7.0%}{r.gflops_per_second:>9.1f}")
    lines.append(f"{'total':<{name_width + op_width + 11}}{total * 1e3:>9.2f}")
    return "\n".join(lines)
