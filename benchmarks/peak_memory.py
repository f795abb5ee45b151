"""Run a model once in this fresh process and print its peak resident memory.

    python benchmarks/peak_memory.py MODEL SIZE

Prints `peak_mb=... weights_mb=... two_largest_mb=...` (MiB) for cpu_vs_torch.py.
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import graphconv  # noqa: E402
from graphconv.cost import layer_costs  # noqa: E402


def high_water_mark_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that
    over from the parent through fork and exec, so a child of a big process reports the
    parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def main(model_path: str, size: int) -> None:
    model = graphconv.load(model_path)
    c = model.graph.input_shape[0]
    model.run(np.zeros((1, c, size, size), np.float32))
    peak = high_water_mark_mb()
    weights = sum(w.nbytes for node in model.graph.layers() for w in node.weights.values())
    sizes = sorted((int(np.prod(row.shape)) * 4 for row in layer_costs(model.graph, (size, size))), reverse=True)
    print(f"peak_mb={peak:.1f} weights_mb={weights / 2**20:.1f} two_largest_mb={sum(sizes[:2]) / 2**20:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
