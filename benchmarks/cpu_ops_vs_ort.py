"""Single layers after a 1x1 conv, graphconv vs onnxruntime on the CPU: the slow paths a
sweep of ops and shapes found (session 41), kept measured.

    python benchmarks/cpu_ops_vs_ort.py [--threads 2] [--repeats 15] [--cases pad,elu,...] [--write]

Each case is a small PyTorch block (a 1x1 conv from 3 to C channels at 224x224, then the
layer, sometimes a 1x1 conv after it; a classifier's late depthwise layers on their 7x7
or 14x14 maps), exported with dynamic sides and imported by
graphconv as a segmentation network (every cell kept, as onnxruntime computes it). A layer
that ends the network writes the NCHW output callers get from a map the conv stored
channels-last: the edge where pad, upsample and depth_to_space read a cache line per
value before session 41 (7-13x onnxruntime). Outputs are checked to agree first; rounds
alternate between the two, each runtime running RUNS_IN_A_ROW times in a row after a
rest (`common.PAUSE`: onnxruntime's workers spin after a run) and a warm-up, as tile
after tile of a slide. A layer this small pays the threads' wake-up after the other
runtime's turn (docs/performance.md, sessions 27 and 41): timed after a rest
(`common.rested_run`, right for whole networks) a pad block took 4.7 ms where it takes
2.0 run after run, and 5 runs in a row still gave 4.2; 20 in a row give the steady state.
Not a test: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import PAUSE, machine, pin_threads, run_times, threads_text, write_section

SIZE = 224
RUNS_IN_A_ROW = 20  # each runtime's runs of a round, one after another


def blocks(nn) -> dict:
    """name -> (what it is, the module, its input's side): the layer after conv1x1 3 -> C,
    last or not, on 224x224 but for the late layers of a classifier (on 7x7 and 14x14
    maps, after a 3x3 conv: a 1x1 one would be fused with the depthwise layer)."""
    def after_conv(layer, channels=64, then=None):
        layers = [nn.Conv2d(3, channels, 1), layer] + ([then] if then is not None else [])
        return nn.Sequential(*layers)

    def depthwise(k, stride=1, inner=96, outer=96):
        return nn.Sequential(nn.Conv2d(3, outer, 1), nn.ReLU(), nn.Conv2d(outer, inner, 1), nn.ReLU(),
                             nn.Conv2d(inner, inner, k, stride, padding=k // 2, groups=inner), nn.ReLU(),
                             nn.Conv2d(inner, outer, 1))

    def small_map_depthwise(k, channels, out=None):
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.SiLU(),
                  nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)]
        return nn.Sequential(*layers, *([nn.SiLU(), nn.Conv2d(channels, out, 1)] if out else []))

    bilinear = dict(scale_factor=2, mode="bilinear", align_corners=False)
    cases = {
        "pad": ("zero pad 3, last (64 ch)", after_conv(nn.ZeroPad2d(3))),
        "reflect": ("reflection pad 3, last (64 ch)", after_conv(nn.ReflectionPad2d(3))),
        "nearest": ("upsample x2 nearest, last (64 ch)", after_conv(nn.Upsample(scale_factor=2))),
        "bilinear": ("upsample x2 bilinear, last (64 ch)", after_conv(nn.Upsample(**bilinear))),
        "bilinear_conv": ("upsample x2 bilinear, then conv1x1 64->8", after_conv(nn.Upsample(**bilinear),
                                                                               then=nn.Conv2d(64, 8, 1))),
        "pixelshuffle": ("PixelShuffle(2), last (64 ch)", after_conv(nn.PixelShuffle(2))),
        "elu": ("ELU, last (64 ch)", after_conv(nn.ELU())),
        "mish": ("Mish, last (64 ch)", after_conv(nn.Mish())),
        "softmax": ("softmax over 21 classes, last (a segmentation head)", after_conv(nn.Softmax(dim=1), 21)),
        "maxpool": ("max pool 3 stride 2, last (64 ch)", after_conv(nn.MaxPool2d(3, 2))),
        "maxpool_conv": ("max pool 3 stride 2, then conv1x1 64->64", after_conv(nn.MaxPool2d(3, 2),
                                                                              then=nn.Conv2d(64, 64, 1))),
        "dw3": ("1x1, depthwise 3x3, 1x1 (96 ch)", depthwise(3)),
        "dw5": ("1x1, depthwise 5x5, 1x1 (96 ch)", depthwise(5)),
        "dw7": ("1x1, depthwise 7x7, 1x1 (96 ch)", depthwise(7)),
        "dw3s2": ("1x1 24->96, depthwise 3x3 stride 2, 1x1 96->24 (MobileNetV2's features.2)",
                  depthwise(3, 2, 96, 24)),
        "dw3_144": ("1x1 24->144, depthwise 3x3, 1x1 144->24 (MobileNetV2's features.3, at 224)",
                    depthwise(3, 1, 144, 24)),
    }
    cases = {key: (title, model, SIZE) for key, (title, model) in cases.items()}
    cases["dw5_7x7"] = ("3x3 3->1152, depthwise 5x5, 1x1 1152->192, SiLUs, at 7x7 (EfficientNet-B0's features.13)",
                        small_map_depthwise(5, 1152, 192), 7)
    cases["dw7_14x14"] = ("3x3 3->384, depthwise 7x7, 1x1 384->384, SiLUs, at 14x14 (ConvNeXt-tiny's stage 3)",
                          small_map_depthwise(7, 384, 384), 14)
    cases["dw5_7x7_last"] = ("3x3 3->1152, SiLU, depthwise 5x5, last, at 7x7", small_map_depthwise(5, 1152), 7)
    cases["dw3_56_last"] = ("3x3 3->144, SiLU, depthwise 3x3, last, at 56x56", small_map_depthwise(3, 144), 56)
    return cases


def compare(title: str, model, size: int, folder: Path, torch, ort, options, repeats: int) -> str:
    """One table row: graphconv and onnxruntime on the same input, checked to agree, then
    timed alternating."""
    import numpy as np

    from graphconv.compiler import compile_model
    from graphconv.frontends import load_network

    path = folder / "block.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    network = compile_model(load_network(path, crop_size=(min(size, 64),) * 2, task="segmentation"))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)

    def run_graphconv():
        return network.executor("cpu").run(x)

    def run_ort():
        return session.run(None, {"x": x})[0]

    ours, theirs = run_graphconv(), run_ort()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max()))
    times = {"graphconv": [], "onnxruntime": []}
    for _ in range(repeats):
        for key, fn in (("graphconv", run_graphconv), ("onnxruntime", run_ort)):
            time.sleep(PAUSE)  # onnxruntime's workers spin after its runs, taking the cores from the next block
            times[key] += run_times(fn, RUNS_IN_A_ROW)
    med = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    ratio = med["graphconv"] / med["onnxruntime"]
    return f"| {title} | {med['graphconv']:.2f} | {med['onnxruntime']:.2f} | {ratio:.2f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cases", default=None, help="a comma-separated subset (default: all)")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/README.md")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    import onnxruntime as ort
    import torch

    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    cases = blocks(torch.nn)
    wanted = args.cases.split(",") if args.cases else list(cases)
    unknown = [key for key in wanted if key not in cases]
    if unknown:
        parser.error(f"--cases {','.join(unknown)}: no such case; the cases are {','.join(cases)}")
    folder = Path(tempfile.mkdtemp())
    rows = []
    for key in wanted:
        title, model, size = cases[key]
        rows.append(compare(title, model, size, folder, torch, ort, options, args.repeats))
        print(rows[-1], flush=True)
    text = "\n".join([
        "## Single layers vs onnxruntime on the CPU (`cpu_ops_vs_ort.py`)",
        "",
        f"{threads_text(threads)} everywhere, {machine()}, batch 1, float32, input 3x{SIZE}x{SIZE} unless the block "
        f"says otherwise, medians of "
        f"{args.repeats} alternating rounds of {RUNS_IN_A_ROW} runs in a row each; onnxruntime {ort.__version__}. "
        "Each block is a 1x1 conv from 3 channels, then the layer; 'last' layers write the NCHW output from the "
        "channels-last map the conv stored. Outputs agree (checked first).",
        "",
        "| block | graphconv ms | onnxruntime ms | graphconv / onnxruntime |",
        "| --- | ---: | ---: | ---: |",
        *rows,
    ])
    print(text)
    if args.write:
        write_section("cpu_ops_vs_ort", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
