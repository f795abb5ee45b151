"""graphconv vs onnxruntime vs PyTorch on the CPU, per network and per layer, with the
machine's measured float32 peak.

    python benchmarks/cpu_vs_ort.py [--threads 2] [--repeats 7] [--only VGG] [--write]

Everything runs in this one process with the same thread count for numba, OpenBLAS,
PyTorch and onnxruntime (intra_op_num_threads, CPU execution provider, default graph
optimisations: onnxruntime fuses Conv+Relu and switches convs to its NCHWc blocked
layout with MLAS kernels). All three evaluate the same network: onnxruntime runs the
ONNX file `graphconv.frontends.onnx_export.to_onnx_model` writes from the compiled
graph, except for the classifiers PyTorch exported (ResNet-50, MobileNetV2), where it
runs the file PyTorch wrote, as a user would (onnxruntime ran ResNet-50's 2.5-3% faster
than graphconv's re-export of it, alternating on a quiet machine; their dense networks
are graphconv's conversion, so onnxruntime gets those as graphconv exports them). PyTorch runs the compiled graph op by op
(`graphconv.torch_bridge`). Runs alternate graphconv,
onnxruntime, onnxruntime with profiling, PyTorch, round after round, so a noisy
neighbour slows all of them; each timed run follows a rest and one untimed run of the
same runtime (`common.rested_run`: the steady state, as tile after tile), and times are
medians after one warm-up round.

Per-layer times: graphconv's and PyTorch's from their per-layer profiles;
onnxruntime's from a second session of the same model with `enable_profiling` (its
JSON trace: each node's kernel time). onnxruntime names the nodes it fuses after the
first one ("conv1_nchwc" is conv1's Conv+Relu in NCHWc); each node is mapped to the
layer whose name it starts with, and its layout reorders ("ReorderInput/Output") get a
row of their own. A layer onnxruntime fused into another shows "-".

Peak: a register-blocked FMA loop (`fma_peak`: 12 independent <8 x float> or <16 x float>
fused multiply-adds per iteration, whichever runs faster: 16 lanes on a core with two
512-bit FMA units, where 8-lane FMAs reach only half its peak; emitted as LLVM IR so
nothing but the FMAs is in the loop) on every thread: cores x FMA units x vector width x
2 x clock, measured. The
SGEMM figure is numpy's OpenBLAS on a 2048^3 product. Not a test: it asserts nothing
about speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from common import PAUSE, ROOT, load_torch, machine, pin_threads, rested_run, run_times, threads_text, write_section


@dataclass
class Case:
    title: str
    source: str  # a spec under specs/, or a network of onnx_models.NETWORKS ("resnet50"), exported by PyTorch
    size: int
    target: float  # graphconv / onnxruntime time ratio the issue asks for
    classifier: bool = False  # the classifier (CLASSIFIER_PIPELINE), else the fully convolutional network


CASES = [
    Case("AlexNet classifier", "alexnet.yaml", 224, 0.9, classifier=True),
    Case("AlexNet-FCN", "alexnet.yaml", 384, 0.9),
    Case("VGG-16 classifier", "vgg16.yaml", 224, 0.9, classifier=True),
    Case("VGG-16 FCN", "vgg16.yaml", 384, 0.9),
    Case("ResNet-50 classifier", "resnet50", 224, 1.0, classifier=True),
    Case("ResNet-50 dense", "resnet50", 448, 1.0),
    Case("MobileNetV2 classifier", "mobilenet_v2", 224, 1.0, classifier=True),
    Case("MobileNetV2 dense", "mobilenet_v2", 448, 1.0),
]


# ---- the machine's peak -----------------------------------------------------------------

def _fma_loop(lanes: int):
    """An njit function running `iterations` x 12 independent `lanes`-lane FMAs on every thread."""
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    accumulators = 12
    vector = ir.VectorType(ir.FloatType(), lanes)

    @intrinsic
    def fma_chain(typingctx, iterations, a, b):
        def codegen(context, builder, signature, args):
            n, a_value, b_value = args
            i64 = ir.IntType(64)
            fmuladd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fmuladd.v{lanes}f32")

            def splat(scalar):
                undef = ir.Constant(vector, ir.Undefined)
                one = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
                return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                                      [0] * lanes))
            av, bv = splat(a_value), splat(b_value)
            before = builder.block
            loop = builder.append_basic_block("fma.loop")
            done = builder.append_basic_block("fma.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(ir.Constant(i64, 0), before)
            accs = [builder.phi(vector) for _ in range(accumulators)]
            new = [builder.call(fmuladd, [acc, av, bv]) for acc in accs]
            for j, acc in enumerate(accs):
                acc.add_incoming(ir.Constant(vector, [float(j)] * lanes), before)
                acc.add_incoming(new[j], loop)
            k_next = builder.add(k, ir.Constant(i64, 1))
            k.add_incoming(k_next, loop)
            builder.cbranch(builder.icmp_signed("<", k_next, n), loop, done)
            builder.position_at_end(done)
            total = new[0]
            for v in new[1:]:
                total = builder.fadd(total, v)
            return builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
        return types.float32(types.int64, types.float32, types.float32), codegen

    @njit(parallel=True)
    def run(iterations, threads, out):
        for t in prange(threads):
            out[t] = fma_chain(iterations, 0.9999999, 1e-7)

    return run, accumulators * lanes * 2


def fma_peak(threads: int) -> tuple[float, float, int]:
    """GFLOP/s of the FMA loop on one thread and on `threads` threads (best of 15 each),
    with the vector width (8 or 16 lanes) that ran faster on one thread."""
    import numpy as np
    from numba import set_num_threads

    iterations = 10_000_000
    out = np.zeros(threads, np.float32)
    best_result: tuple[float, float, int] = (0.0, 0.0, 0)
    for lanes in (8, 16):
        run, flops_per_iteration = _fma_loop(lanes)
        result = []
        for t in (1, threads):
            set_num_threads(t)
            best = min(run_times(lambda: run(iterations, t, out), 15))
            result.append(t * iterations * flops_per_iteration / best / 1e9)
        if result[0] > best_result[0]:
            best_result = (result[0], result[1], lanes)
    set_num_threads(threads)
    return best_result


def sgemm_rate() -> float:
    import numpy as np

    n = 2048
    a, b = (np.random.default_rng(i).random((n, n), dtype=np.float32) for i in (0, 1))
    c = np.empty((n, n), np.float32)
    return 2 * n ** 3 / min(run_times(lambda: np.dot(a, b, c), 10)) / 1e9


# ---- the networks -----------------------------------------------------------------------

def build(case: Case, torch, folder: Path):
    """(the compiled model, the ONNX file onnxruntime times where the user has one, else None)."""
    import graphconv
    from graphconv.frontends import load_network
    from graphconv.pass_manager import CLASSIFIER_PIPELINE

    from onnx_models import NETWORKS

    passes = CLASSIFIER_PIPELINE if case.classifier else None
    if case.source not in NETWORKS:
        return graphconv.compile_model(ROOT / "specs" / case.source, passes), None
    path = folder / f"{case.source}.onnx"
    if not path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(NETWORKS[case.source][1](torch), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                              opset_version=17, input_names=["x"], do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL)
    if case.classifier:  # at the size PyTorch exported it for
        return graphconv.compile_model(load_network(path), passes), path
    return graphconv.compile_model(path), None


def ort_sessions(model, original: Path | None, threads: int, folder: Path, tag: str):
    """(the timed session: on `original` where given, else on graphconv's export of the
    model; the profiled one: on the export, whose node names are graphconv's layers)."""
    import onnxruntime as ort
    from graphconv.frontends.onnx_export import to_onnx_model

    exported = to_onnx_model(model.graph).SerializeToString()

    def session(profile: bool):
        data = exported if profile or original is None else original.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(folder / f"ort-{tag}")
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session(False), session(True)


LAYOUT = "(onnxruntime layout reorders)"


def ort_layer_times(trace: str, layers: list[str], skip: int, step: int = 1) -> dict[str, list[float]]:
    """Seconds per layer per run from onnxruntime's profile: runs skip, skip + step, ..."""
    events = json.loads(Path(trace).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    per_run = [dict() for _ in runs]
    by_length = sorted(layers, key=len, reverse=True)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][:-len("_kernel_time")]
        layer = next((name for name in by_length
                      if node == name or node.startswith(name + "/") or node.startswith(name + "_")),
                     LAYOUT if node.startswith("Reorder") else node)
        run = next((i for i, (a, b) in enumerate(runs) if a <= e["ts"] <= b), None)
        if run is not None:
            per_run[run][layer] = per_run[run].get(layer, 0.0) + e["dur"] * 1e-6
    times: dict[str, list[float]] = {}
    for run in per_run[skip::step]:
        for layer, seconds in run.items():
            times.setdefault(layer, []).append(seconds)
    return times


@dataclass
class Timing:
    total: list[float] = field(default_factory=list)
    layers: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float, profile: dict[str, float] | None) -> None:
        self.total.append(seconds)
        for name, s in (profile or {}).items():
            self.layers.setdefault(name, []).append(s)

    def ms(self, layer: str | None = None) -> float | None:
        values = self.total if layer is None else self.layers.get(layer)
        return statistics.median(values) * 1e3 if values else None


def time_case(case: Case, repeats: int, torch, threads: int, folder: Path):
    import numpy as np
    from graphconv.torch_bridge import torch_forward

    model, original = build(case, torch, folder)
    x = np.random.default_rng(0).standard_normal((1, 3, case.size, case.size)).astype(np.float32)
    plain, profiled = ort_sessions(model, original, threads, folder, case.title.replace(" ", "_"))
    name = plain.get_inputs()[0].name
    ours, ort_t, torch_t = Timing(), Timing(), Timing()
    ref = model.run(x, "cpu")
    got = plain.run(None, {name: x})[0].reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * float(np.abs(ref).max()))

    def timed(timing, fn, profile=None):
        def once():
            if profile is not None:
                profile.clear()  # so it holds the timed run's layers, not the untimed one's too
            fn(profile)
        timing.add(rested_run(once), profile)

    for _ in range(repeats + 1):  # the first round is the warm-up
        timed(ours, lambda p: model.run(x, "cpu", p), {})
        timed(ort_t, lambda p: plain.run(None, {name: x}))
        time.sleep(PAUSE)
        profiled.run(None, {name: x})  # untimed, as `rested_run`'s first: only every second run's profile counts
        profiled.run(None, {name: x})
        if torch is not None:
            timed(torch_t, lambda p: torch_forward(model.graph, x, p), {})
    for timing in (ours, ort_t, torch_t):
        del timing.total[:1]
        for values in timing.layers.values():
            del values[:1]
    ort_t.layers = ort_layer_times(profiled.end_profiling(), [n.name for n in model.graph.nodes()], 3, 2)
    return model, x, ours, ort_t, torch_t if torch is not None else None


def network_row(case, model, ours, ort_t, torch_t, peak) -> str:
    from graphconv.cost import total_flops

    gflop = total_flops(model.graph, (case.size, case.size)) / 1e9
    ms, o_ms = ours.ms(), ort_t.ms()
    t_ms = torch_t.ms() if torch_t else None
    ratio = ms / o_ms
    verdict = "met" if ratio <= case.target else "not met"
    rows, cols = model.map_size(case.size, case.size)
    low, high = round_ratios(ours, ort_t)
    sure_low, sure_high = ratio_interval(ours, ort_t)
    return (f"| {case.title} | {case.size} | {rows}x{cols} | {gflop:.2f} | {ms:.1f} | "
            f"{gflop / ms * 1e3 / peak:.0%} | {o_ms:.1f} | {gflop / o_ms * 1e3 / peak:.0%} | "
            f"{'-' if t_ms is None else f'{t_ms:.1f}'} | **{ratio:.2f}** | {sure_low:.2f}-{sure_high:.2f} | "
            f"{low:.2f}-{high:.2f} | <= {case.target} ({verdict}) |")


def ratio_interval(ours: Timing, ort_t: Timing, resamples: int = 2000) -> tuple[float, float]:
    """A 90% bootstrap interval of the reported ratio (median time over median time):
    the rounds resampled with replacement, each round's pair of times kept together.
    Where it straddles a target, this run cannot say on which side of it the two are."""
    import numpy as np

    pairs = np.array([ours.total, ort_t.total])
    picks = np.random.default_rng(0).integers(0, pairs.shape[1], (resamples, pairs.shape[1]))
    ratios = np.median(pairs[0][picks], axis=1) / np.median(pairs[1][picks], axis=1)
    low, high = np.quantile(ratios, [0.05, 0.95])
    return float(low), float(high)


def round_ratios(ours: Timing, ort_t: Timing) -> tuple[float, float]:
    """The 10th and 90th percentiles of graphconv / onnxruntime within each round (the two
    ran back to back there): how far one round's ratio strays from the median's on this
    machine, i.e. how much a single run can be trusted near a target."""
    ratios = [a / b for a, b in zip(ours.total, ort_t.total)]
    if len(ratios) < 2:
        return ratios[0], ratios[0]
    cuts = statistics.quantiles(ratios, n=10, method="inclusive")
    return cuts[0], cuts[-1]


def layer_table(case, model, ours, ort_t, torch_t, peak) -> list[str]:
    from graphconv.profiling import layer_timings

    lines = [f"#### {case.title} at {case.size}x{case.size}", "",
             "| layer | op (strategy) | output | GFLOP | graphconv ms | of peak | onnxruntime ms | of peak | "
             "PyTorch ms | graphconv / onnxruntime |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    medians = {name: ours.ms(name) / 1e3 for name in ours.layers}
    fmt = (lambda v: "-" if v is None else f"{v:.2f}")
    # the executor's graph: its channels-last marks decide the strategy each layer ran
    for row in layer_timings(model.executor("cpu").graph, medians, (case.size, case.size), 1):
        ms, o_ms = row.seconds * 1e3, ort_t.ms(row.name)
        t_ms = torch_t.ms(row.name) if torch_t else None
        big = row.op in ("conv", "fc")
        share = f"{row.flops / row.seconds / 1e9 / peak:.0%}" if big and row.seconds > 0 else ""
        o_share = f"{row.flops / o_ms / 1e6 / peak:.0%}" if big and o_ms else ""
        op = f"{row.op} ({row.strategy})" if row.strategy else row.op
        lines.append(f"| {row.name} | {op} | {'x'.join(map(str, row.shape))} | {row.flops / 1e9:.3f} | {ms:.2f} | "
                     f"{share} | {fmt(o_ms)} | {o_share} | {fmt(t_ms)} | "
                     f"{'-' if not o_ms else f'{ms / o_ms:.2f}'} |")
    known = set(medians)
    for layer in sorted(set(ort_t.layers) - known):
        lines.append(f"| {layer} | | | | | | {ort_t.ms(layer):.2f} | | | |")
    total_gc = sum(medians.values()) * 1e3
    total_ort = sum(ort_t.ms(k) for k in ort_t.layers)
    lines.append(f"| sum of layers | | | | {total_gc:.1f} | | {total_ort:.1f} | | | |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", help="run the cases whose title contains this text (default: all)")
    parser.add_argument("--no-layers", action="store_true", help="network totals only")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    torch = load_torch(threads)
    sys.path.insert(0, str(Path(__file__).parent))
    import onnxruntime as ort

    one_core, peak, lanes = fma_peak(threads)
    sgemm = sgemm_rate()
    folder = Path(tempfile.mkdtemp())
    timed = []
    for case in CASES:
        if args.only and args.only not in case.title:
            continue
        timed.append((case, *time_case(case, args.repeats, torch, threads, folder)))
        _, model, _, ours, ort_t, _ = timed[-1]
        print(f"{case.title}: graphconv {ours.ms():.1f} ms, onnxruntime {ort_t.ms():.1f} ms", flush=True)
    one_core2, peak2, lanes2 = fma_peak(threads)  # again at the end; the better one counts
    lanes = lanes if one_core >= one_core2 else lanes2
    one_core, peak, sgemm = max(one_core, one_core2), max(peak, peak2), max(sgemm, sgemm_rate())
    # The peak is cores x one core's rate: a run on every thread at once is lowered by
    # whatever else the machine runs (shared 2-core machines), one thread much less.
    peak = max(peak, one_core * min(threads, os.cpu_count() or threads))

    text = [f"{os.cpu_count()} cores, {threads_text(threads)} everywhere, {machine()}, batch 1, float32, "
            f"medians of {args.repeats} alternating rounds; onnxruntime {ort.__version__} (CPU provider), "
            f"PyTorch {torch.__version__ if torch else 'not installed'}.",
            "",
            f"Measured float32 peak (12 independent {lanes}-lane FMAs per loop iteration, the faster of 8 and "
            f"16 lanes, `fma_peak`; the better of all threads at once and threads x one thread): "
            f"**{peak:.0f} GFLOP/s** on {threads_text(threads)} ({one_core:.1f} on one: "
            f"{one_core / (4 * lanes):.2f} G FMA-instructions x {4 * lanes} FLOP per cycle at "
            f"~{one_core / (4 * lanes):.2f} GHz if 2 FMA units x {lanes} lanes); OpenBLAS SGEMM 2048^3: "
            f"{sgemm:.0f} GFLOP/s ({sgemm / peak:.0%} of peak). "
            f"'of peak' below is a layer's GFLOP/s over that peak, its GFLOP counted as a direct convolution's: "
            f"graphconv's `winograd` layers do 2.25x fewer multiply-adds, so their share can pass 100%.",
            "",
            "'90% interval' is a bootstrap interval of the ratio over the rounds (`ratio_interval`): how far "
            "this run's noise lets the ratio move. 'per round' is the 10th-90th percentile of graphconv / "
            "onnxruntime within single rounds (`round_ratios`), the spread one run of each would show.",
            "",
            "| network | input | map | GFLOP | graphconv ms | of peak | onnxruntime ms | of peak | PyTorch ms | "
            "graphconv / onnxruntime | 90% interval | per round | target |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    layers = []
    for case, model, x, ours, ort_t, torch_t in timed:
        text.append(network_row(case, model, ours, ort_t, torch_t, peak))
        if not args.no_layers:
            layers += layer_table(case, model, ours, ort_t, torch_t, peak)
    if layers:
        text += ["", "### Per layer", "",
                 "onnxruntime's per-layer times come from a profiled second session (its trace adds a little "
                 "per node), so their sum can differ from its network time.", "", *layers]
    body = "\n".join(text)
    print(body)
    if args.write:
        write_section("cpu_vs_ort", "## graphconv vs onnxruntime vs PyTorch on the CPU (`cpu_vs_ort.py`)\n\n" + body)


if __name__ == "__main__":
    main()
