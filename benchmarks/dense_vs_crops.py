"""Dense evaluation vs the crop loop, and finer output strides, on AlexNet at 384x384.

    python benchmarks/dense_vs_crops.py [--repeats 5] [--write benchmarks/README.md]

Times are medians over --repeats runs after one warm-up (JIT compile excluded), all in
this process with the same thread count; PyTorch (if installed) runs the same converted
network as a reference point. Not a test: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import os

from common import ROOT, load_torch, machine, median_ms, pin_threads, threads_text, write_section


def torch_time(graph, image, repeats, threads):
    if load_torch(threads) is None:
        return None
    from graphconv.torch_bridge import TorchRunner
    runner = TorchRunner(graph)
    return median_ms(lambda: runner.run(image), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--threads", type=int, help="threads for numba, BLAS and PyTorch (default: all cores)")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    import numpy as np
    import graphconv
    from graphconv.cost import total_flops
    from graphconv.dense import crop_loop, crops_per_batch

    spec = ROOT / "specs" / "alexnet.yaml"
    classifier = graphconv.load(spec)
    image = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    fcn = graphconv.compile_model(spec)
    rows = []
    hw = (args.size, args.size)
    dense_ms = median_ms(lambda: fcn.run(image), args.repeats)
    cells = int(np.prod(fcn.map_size(*hw)))
    crop_flops = cells * total_flops(classifier.graph)
    dense_flops = total_flops(fcn.graph, hw)
    loop_ms = median_ms(lambda: crop_loop(classifier, image, 32), max(1, args.repeats // 2))
    rows.append(("dense, stride 32 (one pass)", fcn.map_size(*hw), dense_ms, dense_flops))
    batch = crops_per_batch(classifier, cells)
    rows.append((f"crop loop, stride 32 ({cells} crops, {batch} a batch)", fcn.map_size(*hw), loop_ms, crop_flops))
    for stride in (16, 8):
        for method in ("dilate", "shift"):
            fine = graphconv.compile_model(spec, output_stride=stride, stride_method=method)
            ms = median_ms(lambda: fine.run(image), args.repeats)
            rows.append((f"stride {stride}, {method}", fine.map_size(*hw), ms, total_flops(fine.graph, hw)))
    torch_ms = torch_time(fcn.graph, image, args.repeats, threads)
    lines = [f"AlexNet at {args.size}x{args.size}, batch 1, {os.cpu_count()} cores, {threads_text(threads)}, "
             f"{machine()}, medians of {args.repeats}",
             "", "| what | score map | ms | GFLOP | GFLOP/s |", "| --- | --- | ---: | ---: | ---: |"]
    for name, size, ms, flops in rows:
        lines.append(f"| {name} | {size[0]}x{size[1]} | {ms:.1f} | {flops / 1e9:.2f} | {flops / ms / 1e6:.1f} |")
    lines.append("")
    lines.append(f"- crop loop / dense time ratio: **{loop_ms / dense_ms:.1f}x**; FLOP ratio the two should "
                 f"have: **{crop_flops / dense_flops:.1f}x**")
    if torch_ms is not None:
        lines.append(f"- PyTorch {__import__('torch').__version__} on the same converted network, same threads: "
                     f"{torch_ms:.1f} ms (graphconv/PyTorch time ratio {dense_ms / torch_ms:.2f})")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("dense_vs_crops", "## Dense evaluation vs the crop loop, and finer strides "
                      "(`dense_vs_crops.py`)\n\n" + text)


if __name__ == "__main__":
    main()
