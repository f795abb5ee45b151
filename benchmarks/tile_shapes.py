"""The conv's register tile shapes against each other, in one process, with onnxruntime
and PyTorch in the same rounds for scale.

    python benchmarks/tile_shapes.py [--threads 2] [--rounds 20] [--shapes 16x4,8x4,8x3] [--write]

Why in one process. The "outer" and "winograd" kernels take the tile's shape (lanes per
vector x vectors per block: `vector_tile.OUTER_LANES`, `OUTER_VECTORS`) as arguments,
and a model packs its weights for the shape in force when it first runs. So one model
per shape can live in one process, and the rounds alternate between them (the order
reversed every other round, each run after the same rest as in `cpu_vs_ort.py`).
Separate processes on a shared 2-core machine differ from each other by more than the
shapes do (10-20% here). The outputs of all shapes are checked equal first: the sums
run in the same order whatever the shape.

What it answers: on this machine, is the shape `vector_tile` picks (16x4 where the CPU
has AVX-512, 8x3 elsewhere) the fastest one? The "paired" column is the median over
rounds of each shape's time over the machine's own choice in the same round. A 16-lane
tile on a CPU without AVX-512 runs as pairs of 8-lane halves and spills: slow, exact.
Not a test: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from functools import partial
from pathlib import Path

from common import ROOT, load_torch, machine, pin_threads, rested_run, threads_text, write_section

def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'16x4,8x3' -> [(16, 4), (8, 3)]: lanes x vectors."""
    return [tuple(int(n) for n in item.split("x")) for item in text.split(",")]


def networks(torch, folder: Path):
    """(title, input size, a function building a fresh model, the ONNX bytes onnxruntime runs)."""
    import graphconv
    from graphconv.frontends import load_network
    from graphconv.pass_manager import CLASSIFIER_PIPELINE
    from graphconv.frontends.onnx_export import to_onnx_model

    cases = []
    if torch is not None:
        from onnx_models import resnet50
        path = folder / "resnet50.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(resnet50(torch), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                              opset_version=17, input_names=["x"], do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL)
        cases.append(("ResNet-50 classifier", 224, lambda: graphconv.compile_model(load_network(path),
                                                                                   CLASSIFIER_PIPELINE),
                      path.read_bytes()))
    vgg = lambda: graphconv.compile_model(ROOT / "specs" / "vgg16.yaml")  # noqa: E731
    cases.append(("VGG-16 FCN", 384, vgg, to_onnx_model(vgg().graph).SerializeToString()))
    return cases


def time_shapes(build, onnx_bytes: bytes, size: int, shapes, rounds: int, threads: int, torch):
    """Seconds per round for each shape's model, onnxruntime and PyTorch, alternating."""
    import numpy as np
    import onnxruntime as ort
    from graphconv.ops import vector_tile
    from graphconv.torch_bridge import torch_forward

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    models, reference = {}, None
    for shape in shapes:
        vector_tile.OUTER_LANES, vector_tile.OUTER_VECTORS = shape
        models[shape] = build()
        y = models[shape].run(x, "cpu")  # packs the weights for this shape
        if reference is None:
            reference = y
        np.testing.assert_array_equal(y, reference)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    def run_shape(shape):
        vector_tile.OUTER_LANES, vector_tile.OUTER_VECTORS = shape  # the kernels read it at each call
        models[shape].run(x, "cpu")

    runners = {shape: partial(run_shape, shape) for shape in shapes}
    runners["onnxruntime"] = lambda: session.run(None, {name: x})
    if torch is not None:
        graph = models[shapes[0]].graph
        runners["PyTorch"] = lambda: torch_forward(graph, x)
    times = {key: [] for key in runners}
    order = list(runners)
    for r in range(rounds + 1):  # the first round is the warm-up
        for key in order if r % 2 == 0 else order[::-1]:
            seconds = rested_run(runners[key])
            if r:
                times[key].append(seconds)
    return times


def table(title: str, size: int, times: dict, shapes, native) -> list[str]:
    base = times[native]
    lines = [f"#### {title} at {size}x{size}", "",
             "| runner | median ms | / machine's choice | paired, per round |", "| --- | ---: | ---: | ---: |"]
    for key, values in times.items():
        label = f"graphconv {key[0]}x{key[1]}" + (" (machine's choice)" if key == native else "") \
            if isinstance(key, tuple) else key
        paired = statistics.median(a / b for a, b in zip(values, base))
        lines.append(f"| {label} | {statistics.median(values) * 1e3:.1f} | "
                     f"{statistics.median(values) / statistics.median(base):.3f} | {paired:.3f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shapes", default="16x4,8x4,8x3", help="lanes x vectors, comma-separated")
    parser.add_argument("--write", action="store_true", help="update this section of benchmarks/README.md")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    torch = load_torch(threads)
    from graphconv.ops import vector_tile

    native = (vector_tile.OUTER_LANES, vector_tile.OUTER_VECTORS)
    shapes = [native] + [s for s in parse_shapes(args.shapes) if s != native]
    lines = ["## Register tile shapes, one process (`tile_shapes.py`)", "",
             f"{threads_text(threads)}, {machine()}, batch 1, float32, medians of {args.rounds} alternating "
             f"rounds; this machine picks {native[0]}x{native[1]} (lanes x vectors). All shapes' outputs are "
             "equal (checked first).", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for title, size, build, onnx_bytes in networks(torch, Path(tmp)):
            times = time_shapes(build, onnx_bytes, size, shapes, args.rounds, threads, torch)
            lines += table(title, size, times, shapes, native)
            print("\n".join(lines[-len(times) - 5:]), flush=True)
    vector_tile.OUTER_LANES, vector_tile.OUTER_VECTORS = native
    if args.write:
        write_section("tile_shapes", "\n".join(lines))


if __name__ == "__main__":
    main()
