"""Each CUDA GEMM tile shape (graphconv/ops/gemm_cuda.py) on the layers that matter, against
cuDNN and cuBLAS in the same run: what `plan_launch` picks, what each tile would take,
and what that is as a share of the GPU's SGEMM rate. Its output is what the planner's
`_TILE_EFFICIENCY` guesses are to be replaced with (issue 21).

    python benchmarks/gpu_tiles.py [--repeats 20] [--markdown tiles.md]

Times are medians of CUDA-event-timed launches on device arrays (no host copies), TF32
off. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import statistics

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
]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--markdown", help="also save the table to this file")
    args = parser.parse_args()
    import numpy as np
    from numba import cuda
    from graphconv.backends import get_backend
    from graphconv.ops import get_op
    from graphconv.ops.gemm_cuda import TILES, GemmLayer, launch_for, plan_launch, processors
    from graphconv.ops.registry import pair
    from graphconv.params import normalize_params
    from gpu_vs_torch import float32_torch_on_gpu, sgemm_tflops

    torch = float32_torch_on_gpu()
    sgemm = sgemm_tflops(torch)
    backend = get_backend("cuda")
    conv = get_op("conv")
    header = "| layer | GFLOP | cuDNN ms | planned | " + " | ".join(f"{t.rows}x{t.cols}" for t in TILES) + " |"
    lines = [f"cuBLAS SGEMM {sgemm:.1f} TFLOP/s; each cell: ms (share of SGEMM), best K split per tile", "",
             header, "|" + " --- |" * (4 + len(TILES))]
    rng = np.random.default_rng(0)
    for name, raw, in_shape in LAYERS:
        params = normalize_params(conv, raw)
        out_shape = (in_shape[0], *conv.shape(params, [in_shape[1:]]))
        weights = conv.seeded_weights(params, [in_shape[1:]], rng)
        x = rng.standard_normal(in_shape).astype(np.float32)
        gflop = conv.flops(params, [in_shape[1:]], out_shape[1:]) * in_shape[0] / 1e9
        xt = torch.from_numpy(x).cuda()
        wt = torch.from_numpy(weights["weight"]).cuda()
        bt = torch.from_numpy(weights["bias"]).cuda()
        pad, groups = pair(params["padding"]), params["groups"]
        cudnn = event_ms(lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=pad, groups=groups), args.repeats,
                         cuda)
        prepared = backend.prepare_weights(conv, params, weights)
        xd, outd = backend.to_device(x), backend.empty(out_shape)
        rows = out_shape[1] // groups
        positions = out_shape[0] * out_shape[2] * out_shape[3]
        kh, kw = pair(params["kernel_size"])
        k_total = in_shape[1] // groups * kh * kw
        planned = plan_launch(rows, positions, k_total, groups, processors())
        def timed(launch) -> float:
            layer = GemmLayer(prepared["weight_t"], prepared["bias"], (kh, kw), groups,
                                        pair(params["stride"]), pair(params["padding"]), pair(params["dilation"]),
                                        planner=lambda *_: launch)
            return event_ms(lambda: layer([xd], outd), args.repeats, cuda)

        cells = []
        for ms in [timed(planned)] + [min(timed(launch_for(tile, splits, rows, positions, k_total, groups))
                                          for splits in (1, 2, 4, 8, 16)) for tile in TILES]:
            cells.append(f"{ms:.3f} ({gflop / ms / sgemm:.0%})")
        lines.append(f"| {name} | {gflop:.2f} | {cudnn:.3f} ({gflop / cudnn / sgemm:.0%}) | "
                     f"{planned.describe()}: {cells[0]} | " + " | ".join(cells[1:]) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
