"""Each CUDA GEMM tile shape (graphconv/ops/gemm_cuda.py) on the layers that matter, against
cuDNN and cuBLAS in the same run: what `plan_launch` picks, what each tile would take,
and what that is as a share of the GPU's SGEMM rate. Its output is what the planner's
`_TILE_EFFICIENCY` guesses are to be replaced with (issue 21).

    python benchmarks/gpu_tiles.py [--repeats 20] [--markdown tiles.md] [--json tiles.json] [--write]
    ncu ... python benchmarks/gpu_tiles.py --profile "VGG conv3_2 @1024" "128x128 r128"  # one launch

Besides the planner's tiles it times its register-capped ones ("128x128 r128":
`Tile.max_registers`, more blocks an SM at the price of spills) without their cap. Times are
medians of CUDA-event-timed launches on device arrays (no host copies), TF32 off. Needs
a CUDA GPU. `--profile LAYER TILE` launches one layer with one tile (unsplit) three
times and exits, for Nsight Compute.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import write_section  # noqa: E402
from graphconv.ops.gemm_cuda import TILES  # noqa: E402

# (name, conv params, input (N, C, H, W)): VGG-16 and AlexNet-FCN layers at 384 and a
# classifier's fc6 as a conv over one position.
LAYERS = [
    ("VGG conv1_2 @384", dict(out_channels=64, kernel_size=3, padding=1), (1, 64, 384, 384)),
    ("VGG conv3_2 @384", dict(out_channels=256, kernel_size=3, padding=1), (1, 256, 96, 96)),
    ("VGG conv5_2 @384", dict(out_channels=512, kernel_size=3, padding=1), (1, 512, 24, 24)),
    ("VGG fc6 @384 (6x6 map)", dict(out_channels=4096, kernel_size=7), (1, 512, 12, 12)),
    ("VGG fc6, classifier batch 1", dict(out_channels=4096, kernel_size=7), (1, 512, 7, 7)),
    ("VGG fc6, classifier batch 8", dict(out_channels=4096, kernel_size=7), (8, 512, 7, 7)),
    ("AlexNet conv2 @384", dict(out_channels=256, kernel_size=5, padding=2, groups=2), (1, 96, 46, 46)),
    ("AlexNet fc7 @384 (1x1)", dict(out_channels=4096, kernel_size=1), (1, 4096, 6, 6)),
    ("VGG conv1_2 @1024", dict(out_channels=64, kernel_size=3, padding=1), (1, 64, 1024, 1024)),
    ("VGG conv3_2 @1024", dict(out_channels=256, kernel_size=3, padding=1), (1, 256, 256, 256)),
    ("VGG fc6 @1024 (26x26 map)", dict(out_channels=4096, kernel_size=7), (1, 512, 32, 32)),
]
# The planner's register-capped tiles without their cap, timed beside them: one block
# an SM instead of two (four for 128x32), no spills.
VARIANTS = tuple(replace(tile, max_registers=None) for tile in TILES if tile.max_registers)
# The largest tile with its kernel's choices overridden (`GemmLayer`'s keywords): the
# tap-table lookup per value that layers whose channels are not whole k-steps use (every
# layer here has whole steps), and 64-bit offsets into the input and weights, as for
# arrays of 2^31 elements or more.
KERNEL_CHOICES = {"per value": dict(one_tap=False), "64-bit": dict(narrow=False)}
SECTION_TITLE = "## Each CUDA GEMM tile on the layers that matter (`gpu_tiles.py`)\n\n"
BIG_GFLOP = 20  # layers this big are timed unsplit and split in two only: more splits never pay there


def event_ms(fn, repeats: int, cuda) -> float:
    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def tile_name(tile, choice: str = "") -> str:
    """"128x64", "128x128 r128" for a register-capped variant, "128x128 r128 per value"
    with a `KERNEL_CHOICES` override."""
    capped = f" r{tile.max_registers}" if tile.max_registers else ""
    return f"{tile.rows}x{tile.cols}{capped}" + f" {choice}" * bool(choice)


class LayerCase:
    """One conv layer of `LAYERS` on the GPU: its device arrays, cuDNN's time, and the
    time of any GEMM launch of it."""

    def __init__(self, name: str, raw: dict, in_shape: tuple, rng, torch, repeats: int):
        import numpy as np
        from numba import cuda
        from graphconv.backends import get_backend
        from graphconv.ops import get_op
        from graphconv.ops.registry import pair
        from graphconv.params import normalize_params
        conv = get_op("conv")
        backend = get_backend("cuda")
        self.name, self.repeats, self.cuda = name, repeats, cuda
        self.params = params = normalize_params(conv, raw)
        out_shape = (in_shape[0], *conv.shape(params, [in_shape[1:]]))
        weights = conv.seeded_weights(params, [in_shape[1:]], rng)
        x = rng.standard_normal(in_shape).astype(np.float32)
        self.gflop = conv.flops(params, [in_shape[1:]], out_shape[1:]) * in_shape[0] / 1e9
        self.groups = params["groups"]
        self.kernel = pair(params["kernel_size"])
        self.rows = out_shape[1] // self.groups
        self.positions = out_shape[0] * out_shape[2] * out_shape[3]
        self.k_total = in_shape[1] // self.groups * self.kernel[0] * self.kernel[1]
        self.prepared = backend.prepare_weights(conv, params, weights)
        self.x, self.out = backend.to_device(x), backend.empty(out_shape)
        if torch is not None:
            xt, wt = torch.from_numpy(x).cuda(), torch.from_numpy(weights["weight"]).cuda()
            bt, pad = torch.from_numpy(weights["bias"]).cuda(), pair(params["padding"])
            self.cudnn_ms = event_ms(lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=pad, groups=self.groups),
                                     repeats, cuda)

    def layer(self, launch, choice: str = ""):
        from graphconv.ops.gemm_cuda import GemmLayer
        from graphconv.ops.registry import pair
        p = self.params
        return GemmLayer(self.prepared["weight_t"], self.prepared["bias"], self.kernel, self.groups,
                         pair(p["stride"]), pair(p["padding"]), pair(p["dilation"]), planner=lambda *_: launch,
                         **KERNEL_CHOICES.get(choice, {}))

    def launch(self, tile, splits: int):
        from graphconv.ops.gemm_cuda import launch_for
        return launch_for(tile, splits, self.rows, self.positions, self.k_total, self.groups)

    def ms(self, launch, choice: str = "") -> float:
        layer = self.layer(launch, choice)
        return event_ms(lambda: layer([self.x], self.out), self.repeats, self.cuda)


def profile_one(name: str, tile_text: str) -> None:
    """Three launches of one layer with one tile, for Nsight Compute to pick from."""
    import numpy as np
    from numba import cuda
    from graphconv.ops.gemm_cuda import TILES
    tile, choice = next((t, c) for t in TILES + VARIANTS for c in ("", *KERNEL_CHOICES)
                        if tile_name(t, c) == tile_text)
    raw, in_shape = next((raw, shape) for layer, raw, shape in LAYERS if layer == name)
    case = LayerCase(name, raw, in_shape, np.random.default_rng(0), None, 1)
    layer = case.layer(case.launch(tile, 1), choice)
    for _ in range(3):
        layer([case.x], case.out)
    cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--markdown", help="also save the table to this file")
    parser.add_argument("--json", help="also save every timing (layer, tile, splits, ms) here, for the planner")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    parser.add_argument("--profile", nargs=2, metavar=("LAYER", "TILE"), help="launch one layer with one tile, for ncu")
    parser.add_argument("--only", help="only the layers whose name holds this text (\"@1024\")")
    args = parser.parse_args()
    if args.profile:
        return profile_one(*args.profile)
    import json
    import numpy as np
    from graphconv.ops.gemm_cuda import TILES, plan_launch, processors
    from gpu_vs_torch import float32_torch_on_gpu, sgemm_tflops

    torch = float32_torch_on_gpu()
    sgemm = sgemm_tflops(torch)
    tiles = [(tile, "") for tile in TILES + VARIANTS] + [(TILES[0], choice) for choice in KERNEL_CHOICES]
    header = "| layer | GFLOP | cuDNN ms | planned | " + " | ".join(tile_name(*t) for t in tiles) + " |"
    lines = [f"cuBLAS SGEMM {sgemm:.1f} TFLOP/s; each cell: ms (share of SGEMM), the best K split per tile "
             "(in brackets where K is split)", "", header, "|" + " --- |" * (4 + len(tiles))]
    timings = []
    rng = np.random.default_rng(0)
    for name, raw, in_shape in LAYERS:
        if args.only and args.only not in name:
            continue
        case = LayerCase(name, raw, in_shape, rng, torch, args.repeats)
        planned = plan_launch(case.rows, case.positions, case.k_total, case.groups, processors())
        cells = [f"{planned.describe()}: {cell(case.ms(planned), case.gflop, sgemm)}"]
        for tile, choice in tiles:
            splits = (1, 2) if case.gflop > BIG_GFLOP else (1, 2, 4, 8, 16)
            times = {}
            for wanted in splits:
                launch = case.launch(tile, wanted)
                if launch.splits not in times:
                    times[launch.splits] = case.ms(launch, choice)
                    timings.append(dict(layer=name, tile=tile_name(tile, choice), splits=launch.splits,
                                        ms=times[launch.splits], rows=case.rows, positions=case.positions,
                                        k_total=case.k_total, groups=case.groups))
            best = min(times, key=times.get)
            cells.append(cell(times[best], case.gflop, sgemm) + (f" [K/{best}]" if best > 1 else ""))
        lines.append(f"| {name} | {case.gflop:.2f} | {cell(case.cudnn_ms, case.gflop, sgemm)} | " + " | ".join(cells)
                     + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(sgemm_tflops=sgemm, timings=timings), f, indent=1)
    if args.write:
        write_section("gpu_tiles", SECTION_TITLE + text)


def cell(ms: float, gflop: float, sgemm: float) -> str:
    return f"{ms:.3f} ({gflop / ms / sgemm:.0%})"


if __name__ == "__main__":
    main()
