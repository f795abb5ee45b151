"""Fit the CUDA GEMM planner's prices (graphconv/ops/gemm_cuda.py: `_TILE_EFFICIENCY`,
`LOAD_FLOAT_FMAS`, `WORKSPACE_FLOAT_FMAS`) to timings measured on a GPU.

    python benchmarks/gpu_tiles.py --json tiles.json     # on the GPU
    python benchmarks/fit_planner.py tiles.json          # anywhere: prints the prices to paste

`plan_launch` picks, per layer, the tile and K split of least `estimated_cost`; that
estimate is a model with one speed per tile and two transfer prices. This finds the
prices under which the model's times are closest to the measured ones (least squares
of the log ratio, over every timed tile and split of the planner's own tiles, by
coordinate descent: there are ten numbers and a few hundred timings), then shows, per
layer, what the planner would pick and how far that is from the fastest measured launch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from graphconv.ops import gemm_cuda  # noqa: E402
from gpu_tiles import tile_name  # noqa: E402

FACTORS = (0.5, 0.7, 0.85, 0.95, 1.05, 1.2, 1.4, 2.0)


def set_prices(efficiency: list[float], load: float, workspace: float) -> None:
    gemm_cuda._TILE_EFFICIENCY.update(zip(gemm_cuda.TILES, efficiency))
    gemm_cuda.LOAD_FLOAT_FMAS, gemm_cuda.WORKSPACE_FLOAT_FMAS = load, workspace


def model_cost(timing: dict, processors: int) -> float:
    tile = next(t for t in gemm_cuda.TILES if tile_name(t) == timing["tile"])
    launch = gemm_cuda.launch_for(tile, timing["splits"], timing["rows"], timing["positions"], timing["k_total"],
                                  timing["groups"])
    return gemm_cuda.estimated_cost(launch, timing["rows"], timing["positions"], timing["groups"], processors)


def misfit(prices: list, timings: list[dict], processors: int) -> float:
    """Squared log error of the model's times (its costs over the best single scale)."""
    set_prices(*prices)
    logs = [math.log(model_cost(t, processors)) - math.log(t["ms"]) for t in timings]
    scale = sum(logs) / len(logs)
    return sum((x - scale) ** 2 for x in logs)


def fit(timings: list[dict], processors: int, rounds: int = 30) -> list:
    prices = [[gemm_cuda._TILE_EFFICIENCY[t] for t in gemm_cuda.TILES], gemm_cuda.LOAD_FLOAT_FMAS,
              gemm_cuda.WORKSPACE_FLOAT_FMAS]
    best = misfit(prices, timings, processors)
    for _ in range(rounds):
        for which in range(len(gemm_cuda.TILES) + 2):
            for factor in FACTORS:
                trial = [list(prices[0]), prices[1], prices[2]]
                if which < len(gemm_cuda.TILES):
                    trial[0][which] *= factor
                else:
                    trial[which - len(gemm_cuda.TILES) + 1] *= factor
                error = misfit(trial, timings, processors)
                if error < best:
                    best, prices = error, trial
    top = prices[0][0]
    return [[e / top for e in prices[0]], prices[1] / top, prices[2] / top]  # the largest tile's speed is 1


def picks(timings: list[dict], processors: int) -> list[str]:
    """Per layer: the planner's pick, its measured time where it was timed, and the best."""
    lines = []
    for layer in dict.fromkeys(t["layer"] for t in timings):
        mine = [t for t in timings if t["layer"] == layer]
        first = mine[0]
        launch = gemm_cuda.plan_launch(first["rows"], first["positions"], first["k_total"], first["groups"],
                                       processors)
        best = min(mine, key=lambda t: t["ms"])
        picked = [t["ms"] for t in mine if t["tile"] == tile_name(launch.tile) and t["splits"] == launch.splits]
        timed = f"{picked[0]:.3f} ms, {picked[0] / best['ms']:.2f}x the best" if picked else "not timed"
        lines.append(f"{layer}: picks {launch.describe()} ({timed}); best {best['tile']} K/{best['splits']} "
                     f"{best['ms']:.3f} ms")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("timings", help="gpu_tiles.py --json's output")
    parser.add_argument("--processors", type=int, default=132, help="the GPU's SMs (an H100 or H200: 132)")
    args = parser.parse_args()
    names = {tile_name(t) for t in gemm_cuda.TILES}
    timings = [t for t in json.loads(Path(args.timings).read_text())["timings"] if t["tile"] in names]
    print("with the current prices:", *picks(timings, args.processors), sep="\n  ")
    efficiency, load, workspace = fit(timings, args.processors)
    set_prices(efficiency, load, workspace)
    print("fitted:", *picks(timings, args.processors), sep="\n  ")
    print(f"_TILE_EFFICIENCY = dict(zip(TILES, ({', '.join(f'{e:.2f}' for e in efficiency)})))")
    print(f"LOAD_FLOAT_FMAS = {load:.2g}\nWORKSPACE_FLOAT_FMAS = {workspace:.3g}")


if __name__ == "__main__":
    main()
