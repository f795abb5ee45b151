"""graphconv's CUDA kernels against PyTorch (cuDNN) on a GPU, per network and per layer.

    python benchmarks/gpu_vs_torch.py [--repeats 20] [--markdown gpu.md] [--write]

Both sides get the image from host memory and hand the score map back to it on every
run (that is what `graphconv run --device cuda` does), with weights already on the
device. TF32 is switched off in PyTorch so both compute in plain float32, and the
outputs are compared as well as timed. Needs a CUDA GPU; it says so and stops
without one.
"""
from __future__ import annotations

import argparse
import statistics

from common import ROOT, median_ms, write_section

CASES = [("AlexNet classifier", "alexnet.yaml", 224, False), ("AlexNet-FCN", "alexnet.yaml", 384, True),
         ("VGG-16 classifier", "vgg16.yaml", 224, False), ("VGG-16 FCN", "vgg16.yaml", 384, True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--markdown", help="also save the tables to this file")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    args = parser.parse_args()
    import numpy as np
    import graphconv
    from graphconv.profiling import format_profile
    from graphconv.backends import get_backend

    problem = get_backend("cuda").status()
    if problem:
        raise SystemExit(f"no GPU to benchmark: {problem}")
    import torch
    from numba import cuda
    from graphconv.torch_bridge import TorchRunner

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    gpu = cuda.get_current_device().name
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    lines = [f"{gpu}, batch 1, medians of {args.repeats}, host-to-host (input copied in, scores copied "
             f"out); PyTorch {torch.__version__} with cuDNN, TF32 off", "",
             "| network | input | GFLOP | graphconv ms | GFLOP/s | PyTorch ms | PyTorch / graphconv | "
             "max abs diff vs PyTorch | vs graphconv CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    profiles = []
    for title, spec, size, convert in CASES:
        path = ROOT / "specs" / spec
        model = graphconv.compile_model(path) if convert else graphconv.load(path)
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        runner = TorchRunner(model.graph, "cuda")
        ours = median_ms(lambda: model.run(x, "cuda"), args.repeats)
        theirs = median_ms(lambda: runner.run(x), args.repeats)
        got = model.run(x, "cuda")
        diff_torch = float(np.abs(got - runner.run(x).reshape(got.shape)).max())  # a classifier's (N, K)
        diff_cpu = float(np.abs(got - model.run(x, "cpu")).max())
        from graphconv.cost import total_flops
        gflop = total_flops(model.graph, (size, size)) / 1e9
        lines.append(f"| {title} | {size} | {gflop:.2f} | {ours:.2f} | {gflop / ours * 1e3:.0f} | {theirs:.2f} | "
                     f"{theirs / ours:.2f}x | {diff_torch:.1e} | {diff_cpu:.1e} |")
        print(lines[-1], flush=True)
        if convert:
            runs = []
            for _ in range(5):
                profile: dict[str, float] = {}
                model.run(x, "cuda", profile)
                runs.append(profile)
            median = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
            profiles += ["", f"`graphconv inspect --profile --device cuda` view of {title} at {size}x{size}:", "",
                         "```", format_profile(model.graph, median, (size, size), 1, "cuda"), "```"]
    text = "\n".join(lines + profiles)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.write:
        write_section("gpu_vs_torch", "## graphconv vs PyTorch on a GPU (`gpu_vs_torch.py`)\n\n" + text)


if __name__ == "__main__":
    main()
