"""graphconv's CUDA kernels against PyTorch (cuDNN) on a GPU, per network and per layer.

    python benchmarks/gpu_vs_torch.py [--repeats 20] [--quick] [--markdown gpu.md] [--write]

Both sides get the image from host memory and hand the score map back to it on every
run (that is what `graphconv run --device cuda` does), with weights already on the
device. TF32 is switched off in PyTorch so both compute in plain float32, and the
outputs are compared as well as timed. The GPU's float32 SGEMM rate is measured in the
same run (cuBLAS through PyTorch, 8192^3, TF32 off): issue 21 asks the big conv layers
for half of it, and each conv layer's share is in the per-layer tables. Needs a CUDA
GPU; it says so and stops without one. `--quick` runs the issue's three targets only.
"""
from __future__ import annotations

import argparse
import statistics

from common import ROOT, median_ms, write_section

# (title, spec, input size, converted to an FCN, batch, target: graphconv / PyTorch at most)
CASES = [("AlexNet classifier", "alexnet.yaml", 224, False, 1, None),
         ("AlexNet-FCN", "alexnet.yaml", 384, True, 1, 1.5),
         ("AlexNet-FCN", "alexnet.yaml", 384, True, 8, 1.5),
         ("VGG-16 classifier", "vgg16.yaml", 224, False, 1, None),
         ("VGG-16 FCN", "vgg16.yaml", 384, True, 1, 1.5),
         ("VGG-16 FCN", "vgg16.yaml", 384, True, 8, 1.5),
         ("VGG-16 FCN", "vgg16.yaml", 1024, True, 1, 1.3)]
PROFILED = {("AlexNet-FCN", 384, 1), ("VGG-16 FCN", 384, 1), ("VGG-16 FCN", 1024, 1)}


def float32_torch_on_gpu():
    """PyTorch set to compute in plain float32 on the GPU as graphconv does (TF32 off,
    cuDNN picking its fastest algorithms); SystemExit when no GPU can run graphconv."""
    from graphconv.backends import get_backend
    problem = get_backend("cuda").status()
    if problem:
        raise SystemExit(f"no GPU to benchmark: {problem}")
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch


def sgemm_tflops(torch, n: int = 8192, repeats: int = 10) -> float:
    """cuBLAS's float32 rate on this GPU: the median of `repeats` n^3 products."""
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    times = []
    for _ in range(repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n ** 3 / statistics.median(times[1:]) / 1e12


def layer_table(model, x, size: int, batch: int, sgemm: float, runs: int = 5) -> list[str]:
    """Median per-layer times of `runs` profiled runs: every layer, and for the GEMM
    layers their TFLOP/s and share of the measured SGEMM rate."""
    from graphconv.profiling import layer_timings
    profiles = []
    for _ in range(runs):
        profile: dict[str, float] = {}
        model.run(x, "cuda", profile)
        profiles.append(profile)
    median = {name: statistics.median(p[name] for p in profiles) for name in profiles[0]}
    rows = layer_timings(model.graph, median, (size, size), batch, "cuda")
    total = sum(r.seconds for r in rows)
    lines = ["| layer | op | tile / K splits | ms | share of run | TFLOP/s | of SGEMM |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        gemm = r.op in ("conv", "fc")
        rate = f"{r.gflops_per_second / 1e3:.2f}" if gemm else ""
        share = f"{r.gflops_per_second / 1e3 / sgemm:.0%}" if gemm else ""
        lines.append(f"| {r.name} | {r.op} | {r.strategy or ''} | {r.seconds * 1e3:.3f} | "
                     f"{r.seconds / total:.0%} | {rate} | {share} |")
    lines.append(f"| total | | | {total * 1e3:.2f} | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="only the cases issue 21 sets targets for, batch 1")
    parser.add_argument("--markdown", help="also save the tables to this file")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    args = parser.parse_args()
    import numpy as np
    import graphconv
    from graphconv.cost import total_flops

    torch = float32_torch_on_gpu()
    from numba import cuda
    from graphconv.torch_bridge import TorchRunner

    gpu = cuda.get_current_device().name
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    sgemm = sgemm_tflops(torch)
    lines = [f"{gpu}, medians of {args.repeats}, host-to-host (input copied in, scores copied out); "
             f"PyTorch {torch.__version__} with cuDNN, TF32 off; cuBLAS SGEMM (8192^3, TF32 off): "
             f"**{sgemm:.1f} TFLOP/s**", "",
             "| network | input | batch | GFLOP | graphconv ms | TFLOP/s | PyTorch ms | graphconv / PyTorch | target | "
             "max abs diff vs PyTorch | vs graphconv CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    print(lines[0], flush=True)
    profiles = []
    for title, spec, size, convert, batch, target in CASES:
        if args.quick and (target is None or batch != 1):
            continue
        path = ROOT / "specs" / spec
        model = graphconv.compile_model(path) if convert else graphconv.load(path)
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        runner = TorchRunner(model.graph, "cuda")
        ours = median_ms(lambda: model.run(x, "cuda"), args.repeats)
        theirs = median_ms(lambda: runner.run(x), args.repeats)
        got = model.run(x, "cuda")
        diff_torch = float(np.abs(got - runner.run(x).reshape(got.shape)).max())  # a classifier's (N, K)
        # The CPU run's JIT compile costs a fresh GPU machine a minute or more: not in --quick.
        cpu_check = size < 1024 and not args.quick
        diff_cpu = float(np.abs(got - model.run(x, "cpu")).max()) if cpu_check else float("nan")
        gflop = total_flops(model.graph, (size, size)) * batch / 1e9
        verdict = "" if target is None else f"<= {target} ({'met' if ours / theirs <= target else 'not met'})"
        lines.append(f"| {title} | {size} | {batch} | {gflop:.2f} | {ours:.2f} | {gflop / ours:.2f} | {theirs:.2f} | "
                     f"{ours / theirs:.2f} | {verdict} | {diff_torch:.1e} | {diff_cpu:.1e} |")
        print(lines[-1], flush=True)
        if (title, size, batch) in PROFILED:
            profiles += ["", f"Per layer, {title} at {size}x{size}, batch {batch} (a synchronize after each "
                             "layer, so the sum is above the plain run's time):", ""]
            profiles += layer_table(model, x, size, batch, sgemm)
            print("\n".join(profiles[-3:]), flush=True)
    text = "\n".join(lines + profiles)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.write:
        write_section("gpu_vs_torch", "## graphconv vs PyTorch on a GPU (`gpu_vs_torch.py`)\n\n" + text)


if __name__ == "__main__":
    main()
