"""graphconv's CPU kernels against PyTorch on AlexNet and VGG-16, per network and per layer.

    python benchmarks/cpu_vs_torch.py [--threads 2] [--repeats 7] [--write]

Everything runs in this one process with the same thread count for numba, OpenBLAS
and PyTorch. graphconv and PyTorch evaluate the same graph with the same random
weights, alternating run by run so that a noisy neighbour slows both; times are
medians after one warm-up run (JIT compile excluded; start-up is measured on its own
in fresh processes). The SGEMM ceiling is the faster of numpy's and numba's BLAS on a
2048^3 product. Not a test: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, load_torch, machine, pin_threads, run_times, threads_text, write_section


@dataclass
class Case:
    title: str
    spec: str
    size: int
    target: str
    compile: dict  # compile_model options
    per_layer: bool = True


# A classifier stays a classifier (fc layers, no fc-to-conv) but gets the same clean-up
# and conv+ReLU fusion a user's `graphconv compile --passes ...` would give it.
CLASSIFIER = {"passes": "shape-inference,remove-dropout,dead-node-elimination,fuse-conv-activation"}
CASES = [
    Case("AlexNet classifier", "alexnet.yaml", 224, "<= 16 ms", CLASSIFIER),
    Case("AlexNet-FCN", "alexnet.yaml", 384, "<= 60 ms", {}),
    Case("AlexNet-FCN, stride 16 (dilate)", "alexnet.yaml", 384, "<= 1.5x stride 32",
         {"output_stride": 16, "stride_method": "dilate"}, per_layer=False),
    Case("VGG-16 classifier", "vgg16.yaml", 224, "<= 230 ms", CLASSIFIER),
    Case("VGG-16 FCN", "vgg16.yaml", 384, "<= 700 ms", {}),
]


@dataclass
class Timing:
    total: list[float] = field(default_factory=list)
    layers: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float, profile: dict[str, float]) -> None:
        self.total.append(seconds)
        for name, s in profile.items():
            self.layers.setdefault(name, []).append(s)

    def ms(self, layer: str | None = None) -> float:
        values = self.total if layer is None else self.layers.get(layer, [float("nan")])
        return statistics.median(values) * 1e3


def sgemm_ceiling() -> float:
    """GFLOP/s of a large SGEMM through numpy's BLAS (the one graphconv's kernels call):
    the best of 10 runs, so the ceiling is the machine's, and a noisy neighbour does not
    lower it."""
    import numpy as np

    n = 2048
    a, b = (np.random.default_rng(i).random((n, n), dtype=np.float32) for i in (0, 1))
    c = np.empty((n, n), np.float32)
    best = min(run_times(lambda: np.dot(a, b, c), 10))
    return 2 * n ** 3 / best / 1e9


def time_case(case: Case, repeats: int, torch):
    import numpy as np
    import graphconv
    from graphconv.torch_bridge import torch_forward

    spec = ROOT / "specs" / case.spec
    model = graphconv.compile_model(spec, **case.compile)
    x = np.random.default_rng(0).standard_normal((1, 3, case.size, case.size)).astype(np.float32)
    ours, theirs = Timing(), Timing()
    for _ in range(repeats + 1):  # the first round is the warm-up
        for timing, run in ((ours, lambda p: model.run(x, "cpu", p)),
                            (theirs, lambda p: torch_forward(model.graph, x, p) if torch else None)):
            profile: dict[str, float] = {}
            start = time.perf_counter()
            run(profile)
            timing.add(time.perf_counter() - start, profile)
    for timing in (ours, theirs):
        del timing.total[0]
        for values in timing.layers.values():
            del values[0]
    return model, x, ours, theirs if torch else None


def network_row(case, model, ours, theirs, ceiling, reference_ms):
    from graphconv.cost import total_flops

    hw = (case.size, case.size)
    gflop = total_flops(model.graph, hw) / 1e9  # shift-and-stitch's copies included
    ms = ours.ms()
    rate = gflop / ms * 1e3
    torch_ms = f"{theirs.ms():.1f}" if theirs else "-"
    speedup = f"{theirs.ms() / ms:.2f}x" if theirs else "-"
    note = case.target
    if reference_ms is not None:
        note += f" (is {ms / reference_ms:.2f}x)"
    rows, cols = model.map_size(*hw)
    return (f"| {case.title} | {case.size} | {rows}x{cols} | {gflop:.2f} | {ms:.1f} | {rate:.0f} | "
            f"{rate / ceiling:.0%} | {torch_ms} | {speedup} | {note} |")


def layer_table(case, model, x, ours, theirs, ceiling) -> list[str]:
    from graphconv.profiling import layer_timings

    lines = [f"#### {case.title} at {case.size}x{case.size}", "",
             "| layer | op (strategy) | output | GFLOP | ms | GFLOP/s | of ceiling | PyTorch ms | PyTorch / graphconv |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    medians = {name: ours.ms(name) / 1e3 for name in ours.layers}
    # the executor's graph: its channels-last marks decide the strategy each layer ran
    for row in layer_timings(model.executor("cpu").graph, medians, (case.size, case.size), x.shape[0]):
        op = f"{row.op} ({row.strategy})" if row.strategy else row.op
        ms = row.seconds * 1e3
        rate = row.gflops_per_second
        share = f"{rate / ceiling:.0%}" if row.op in ("conv", "fc") else ""
        t_ms = theirs.ms(row.name) if theirs else None
        lines.append(f"| {row.name} | {op} | {'x'.join(map(str, row.shape))} | {row.flops / 1e9:.3f} | {ms:.2f} | "
                     f"{rate:.1f} | {share} | {'-' if t_ms is None else f'{t_ms:.2f}'} | "
                     f"{'-' if t_ms is None else f'{t_ms / ms:.2f}x'} |")
    return lines + [""]


def startup_and_memory() -> list[str]:
    """Fresh processes: `graphconv run` with an empty numba cache (every kernel is
    JIT-compiled), then with the cache the first one left; and the peak resident
    memory of a run, against what the network itself needs."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba-cache"))
        np.save(tmp / "x.npy", np.random.default_rng(0).standard_normal((1, 3, 384, 384)).astype(np.float32))
        cli = [sys.executable, "-m", "graphconv"]
        subprocess.run(cli + ["compile", str(ROOT / "specs" / "alexnet.yaml"), "-o", str(tmp / "fcn")],
                       env=env, check=True, capture_output=True)
        run = cli + ["run", str(tmp / "fcn"), "--input", str(tmp / "x.npy"), "--output", str(tmp / "y.npy")]
        times = []
        for _ in range(4):
            start = time.perf_counter()
            subprocess.run(run, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        probes = {name: _peak_memory(env, str(path), size)
                  for name, path, size in (("lenet", ROOT / "specs" / "lenet.yaml", 32),
                                           ("alexnet", tmp / "fcn", 384))}
    base, alex = probes["lenet"]["peak_mb"], probes["alexnet"]
    need = alex["weights_mb"] + alex["two_largest_mb"]
    return [f"- `graphconv run` on AlexNet-FCN at 384x384, whole process: first with an empty numba cache "
            f"(JIT-compiles every kernel) {times[0]:.1f} s; later processes {statistics.median(times[1:]):.2f} s "
            f"(target < 2 s)",
            f"- peak resident memory of that run: {alex['peak_mb']:.0f} MB; weights {alex['weights_mb']:.0f} MB "
            f"+ two largest activations {alex['two_largest_mb']:.1f} MB = {need:.0f} MB "
            f"(ratio {alex['peak_mb'] / need:.2f}, target <= 1.5)",
            f"- of that, {base:.0f} MB is the runtime itself (Python, numba/LLVM, BLAS: the peak of the same "
            f"run on LeNet); the network adds {alex['peak_mb'] - base:.0f} MB "
            f"({(alex['peak_mb'] - base) / need:.2f}x what it needs)"]


def _peak_memory(env: dict, model: str, size: int) -> dict[str, float]:
    """The second of two runs: the first may JIT-compile kernels this size needs, and
    compiling costs memory that a normal run does not."""
    probe = ROOT / "benchmarks" / "peak_memory.py"
    for _ in range(2):
        result = subprocess.run([sys.executable, str(probe), model, str(size)], env=env, check=True,
                                capture_output=True, text=True)
    return {key: float(value) for key, value in (item.split("=") for item in result.stdout.split())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="threads for numba, BLAS and PyTorch (default: all cores)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", help="run the cases whose title contains this text, e.g. AlexNet (default: all)")
    parser.add_argument("--no-startup", action="store_true", help="skip the fresh-process start-up and memory runs")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    torch = load_torch(threads)

    ceiling = sgemm_ceiling()
    timed = []
    for case in CASES:
        if not args.only or args.only in case.title:
            timed.append((case, *time_case(case, args.repeats, torch)))
            print(f"{case.title}: {timed[-1][3].ms():.1f} ms", flush=True)
    ceiling = max(ceiling, sgemm_ceiling())  # measured again at the end; the better one counts
    header = [f"{os.cpu_count()} cores, {threads_text(threads)}, {machine()}, batch 1, medians of "
              f"{args.repeats}; SGEMM ceiling (2048^3, best of 10 through numpy's BLAS): **{ceiling:.0f} GFLOP/s**; "
              f"PyTorch {torch.__version__ if torch else 'not installed'}", "",
              "| network | input | map | GFLOP | graphconv ms | GFLOP/s | of ceiling | PyTorch ms | "
              "speed-up over PyTorch | target |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    layers, stride32_ms = [], None
    for case, model, x, ours, theirs in timed:
        reference = stride32_ms if case.compile and case.compile.get("output_stride") else None
        header.append(network_row(case, model, ours, theirs, ceiling, reference))
        if case.compile == {} and case.spec == "alexnet.yaml":
            stride32_ms = ours.ms()
        if case.per_layer:
            layers += layer_table(case, model, x, ours, theirs, ceiling)
    extra = [] if args.no_startup else ["", "Start-up and memory (fresh processes):", "", *startup_and_memory()]
    text = "\n".join(header + extra + ["", "### Per layer", ""] + layers)
    print(text)
    if args.write:
        write_section("cpu_vs_torch", "## graphconv vs PyTorch on the CPU (`cpu_vs_torch.py`)\n\n" + text)


if __name__ == "__main__":
    main()
