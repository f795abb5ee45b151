"""Classifiers brought in from ONNX: graphconv vs PyTorch vs onnxruntime on the CPU.

    python benchmarks/onnx_models.py [--threads 2] [--repeats 7] [--networks resnet50,convnext_tiny,...] [--write]

torchvision-layout ResNet-50, ResNeXt-50 32x4d, ConvNeXt-tiny, EfficientNet-B0, MobileNetV2 and
DenseNet-121, and a U-Net segmentation network (built here, so torchvision is not needed) with random weights, randomised
batch-norm statistics and LayerNorm and layer-scale terms, are exported with
torch.onnx.export (TorchScript exporter, batch norm kept as nodes), then for each:

* classifier at 224: graphconv runs the imported network (batch norm folded, fuse
  passes, fc kept); PyTorch runs the module; onnxruntime runs the ONNX file;
* dense at 448: graphconv compiles it (global average pooling -> 7x7 average pooling
  at stride 1, fc -> 1x1 conv) and runs the 8x8 score map; PyTorch and onnxruntime run
  the same converted network (the ONNX file graphconv exports from it, and the module
  with its pooling and fc replaced the same way). EfficientNet-B0 has no dense row: its
  squeeze-and-excitation gates cannot slide; `run --crops` runs the classifier per crop,
  in batches (`dense.crops_per_batch`), so its second row is one such batch;
* the U-Net, exported with dynamic sides, at 512: its per-pixel map on all three
  (graphconv imports it with `--task segmentation`).

Same thread count everywhere (onnxruntime: intra_op_num_threads), batch 1 but for the crops row, float32,
runs alternating between the three, each timed run after a rest (`common.PAUSE`:
onnxruntime's workers spin after a run) and one untimed run of its own (`common.rested_run`:
the steady state), medians after a warm-up. Outputs are checked to
agree before anything is timed. Not a test: it asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import load_torch, machine, pin_threads, rested_run, threads_text, write_section


def resnet50(torch, groups: int = 1, width_per_group: int = 64):
    """torchvision's ResNet-50; with groups=32, width_per_group=4 its ResNeXt-50 32x4d,
    whose 3x3 convs are 32 groups of 4 to 32 channels."""
    nn, F = torch.nn, torch.nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride, downsample):
            super().__init__()
            width = planes * width_per_group // 64 * groups
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                             nn.BatchNorm2d(planes * 4)) if downsample else None)

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            cin, layers = 64, []
            for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                stage = [Bottleneck(cin, planes, stride, True)]
                stage += [Bottleneck(planes * 4, planes, 1, False) for _ in range(blocks - 1)]
                layers.append(nn.Sequential(*stage))
                cin = planes * 4
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)
            self.dense = False

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            if self.dense:  # the conversion graphconv's passes make, written by hand
                return F.conv2d(F.avg_pool2d(x, 7, stride=1), self.fc.weight[:, :, None, None], self.fc.bias)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    return randomised(torch, ResNet50())


def convnext_tiny(torch):
    nn, F = torch.nn, torch.nn.functional

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class Block(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

        def forward(self, x):
            y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
            y = self.pwconv2(F.gelu(self.pwconv1(y))).permute(0, 3, 1, 2)
            return x + self.layer_scale * y

    class ConvNeXtTiny(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Sequential(nn.Conv2d(3, 96, 4, 4), LayerNorm2d(96, eps=1e-6))]
            dims = (96, 192, 384, 768)
            for i, (dim, depth) in enumerate(zip(dims, (3, 3, 9, 3))):
                layers.append(nn.Sequential(*[Block(dim) for _ in range(depth)]))
                if i < 3:
                    layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, 2)))
            self.features = nn.Sequential(*layers)
            self.norm, self.fc = LayerNorm2d(768, eps=1e-6), nn.Linear(768, 1000)
            self.dense = False

        def forward(self, x):
            x = self.features(x)
            if self.dense:  # the conversion graphconv's passes make, written by hand
                x = self.norm(F.avg_pool2d(x, 7, stride=1))
                return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)
            return self.fc(torch.flatten(self.norm(F.adaptive_avg_pool2d(x, 1)), 1))

    torch.manual_seed(0)
    return randomised(torch, ConvNeXtTiny())


def efficientnet_b0(torch):
    nn, F = torch.nn, torch.nn.functional

    def conv_bn(cin, cout, kernel, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)

    class MBConv(nn.Module):
        def __init__(self, expand, kernel, stride, cin, cout):
            super().__init__()
            hidden = cin * expand
            self.expand = conv_bn(cin, hidden, 1) if expand != 1 else nn.Identity()
            self.dw = conv_bn(hidden, hidden, kernel, stride, hidden)
            squeezed = max(1, cin // 4)
            self.fc1, self.fc2 = nn.Conv2d(hidden, squeezed, 1), nn.Conv2d(squeezed, hidden, 1)
            self.project = conv_bn(hidden, cout, 1, act=False)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.dw(self.expand(x))
            y = y * torch.sigmoid(self.fc2(F.silu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
            y = self.project(y)
            return x + y if self.residual else y

    class EfficientNetB0(nn.Module):
        def __init__(self):
            super().__init__()
            blocks, cin = [conv_bn(3, 32, 3, 2)], 32
            for expand, kernel, stride, cout, repeats in ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
                                                           (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
                                                           (6, 3, 1, 320, 1)):
                for r in range(repeats):
                    blocks.append(MBConv(expand, kernel, stride if r == 0 else 1, cin, cout))
                    cin = cout
            blocks.append(conv_bn(320, 1280, 1))
            self.features = nn.Sequential(*blocks)
            self.fc = nn.Linear(1280, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    torch.manual_seed(0)
    return randomised(torch, EfficientNetB0())


def conv_bn_relu6(torch, cin, cout, kernel, stride=1, groups=1, act=True):
    nn = torch.nn
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


def dense_head(torch):
    """A mixin whose forward() ends a classifier whose `features` end in a 7x7 map at 224:
    global average pooling and `fc`, or with `dense` the conversion graphconv's passes
    make, by hand."""
    F = torch.nn.functional

    class DenseHead:
        def forward(self, x):
            x = self.features(x)
            if self.dense:
                return F.conv2d(F.avg_pool2d(x, 7, stride=1), self.fc.weight[:, :, None, None], self.fc.bias)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return DenseHead


def mobilenet_v2(torch):
    nn = torch.nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn_relu6(torch, cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn_relu6(torch, hidden, hidden, 3, stride, hidden),
                       conv_bn_relu6(torch, hidden, cout, 1, act=False)]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(dense_head(torch), nn.Module):
        def __init__(self):
            super().__init__()
            blocks, cin = [conv_bn_relu6(torch, 3, 32, 3, 2)], 32
            for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
                for r in range(repeats):
                    blocks.append(InvertedResidual(cin, cout, stride if r == 0 else 1, expand))
                    cin = cout
            blocks.append(conv_bn_relu6(torch, 320, 1280, 1))
            self.features = nn.Sequential(*blocks)
            self.fc = nn.Linear(1280, 1000)
            self.dense = False

    torch.manual_seed(0)
    return randomised(torch, MobileNetV2())


def densenet121(torch):
    """torchvision's layout: each dense layer concatenates all the block's maps so far
    (a Concat per layer, as its export has), then batch norm, ReLU, 1x1 conv, batch
    norm, ReLU, 3x3 conv; batch norm and ReLU before each transition and at the end."""
    nn, F = torch.nn, torch.nn.functional

    class DenseLayer(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 128, 1, bias=False)
            self.norm2, self.conv2 = nn.BatchNorm2d(128), nn.Conv2d(128, 32, 3, 1, 1, bias=False)

        def forward(self, x):
            return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))

    class DenseBlock(nn.Module):
        def __init__(self, layers, cin):
            super().__init__()
            self.layers = nn.ModuleList(DenseLayer(cin + 32 * i) for i in range(layers))

        def forward(self, x):
            maps = [x]
            for layer in self.layers:
                maps.append(layer(torch.cat(maps, 1)))
            return torch.cat(maps, 1)

    class DenseNet121(dense_head(torch), nn.Module):
        def __init__(self):
            super().__init__()
            layers, c = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1)], 64
            for i, count in enumerate((6, 12, 24, 16)):
                layers.append(DenseBlock(count, c))
                c += 32 * count
                if i < 3:
                    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False),
                               nn.AvgPool2d(2, 2)]
                    c //= 2
            self.features = nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            self.fc = nn.Linear(c, 1000)
            self.dense = False

    torch.manual_seed(0)
    return randomised(torch, DenseNet121())


def randomised(torch, model):
    """Batch-norm statistics, LayerNorm terms and layer scales away from their fresh
    values (the identity, or ConvNeXt's 1e-6 that would hide each block's branch)."""
    nn = torch.nn
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            if hasattr(m, "layer_scale"):
                m.layer_scale.uniform_(0.1, 0.5)
    return model.eval()


def resnext50(torch):
    return resnet50(torch, groups=32, width_per_group=4)


def unet(torch, base: int = 32):
    """A segmentation network: U-Net's five levels of two 3x3 conv + batch norm + ReLU,
    max pools down, ConvTranspose2d(kernel 2, stride 2) up, the skips concatenated, a 1x1
    head of 2 classes; every conv padded, so the map is the image's size."""
    nn = torch.nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [base * 2 ** i for i in range(5)]
            self.inc = block(3, widths[0])
            self.downs = nn.ModuleList([block(widths[i], widths[i + 1]) for i in range(4)])
            self.ups = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, 2) for i in reversed(range(4))])
            self.decs = nn.ModuleList([block(2 * widths[i], widths[i]) for i in reversed(range(4))])
            self.head = nn.Conv2d(widths[0], 2, 1)
            self.dense = False  # what `compare` sets; a segmentation network is dense already

        def forward(self, x):
            skips = [self.inc(x)]
            for down in self.downs:
                skips.append(down(torch.max_pool2d(skips[-1], 2)))
            x = skips.pop()
            for up, dec in zip(self.ups, self.decs):
                x = dec(torch.cat([up(x), skips.pop()], 1))
            return self.head(x)

    torch.manual_seed(0)
    return randomised(torch, UNet())


# name, builder, and what it is: a classifier that slides, one that does not (EfficientNet's
# squeeze-and-excitation gates: its second row is `run --crops`, the classifier per crop), or a
# segmentation network (one row: its map at SEGMENTATION_SIZE, imported with `--task segmentation`)
NETWORKS = {"resnet50": ("ResNet-50", resnet50, "slides"), "resnext50": ("ResNeXt-50 32x4d", resnext50, "slides"),
            "convnext_tiny": ("ConvNeXt-tiny", convnext_tiny, "slides"),
            "efficientnet_b0": ("EfficientNet-B0", efficientnet_b0, "gated"),
            "mobilenet_v2": ("MobileNetV2", mobilenet_v2, "slides"),
            "densenet121": ("DenseNet-121", densenet121, "slides"), "unet": ("U-Net (base 32)", unet, "segmentation")}
SEGMENTATION_SIZE = 512


def compare(title, size, gc_model, onnx_file, dense_mode, model, torch, ort, options, repeats, batch=1) -> str:
    """One table row: the three on the same input, checked to agree, then timed alternating."""
    import numpy as np
    from graphconv.cost import total_flops

    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model.dense = dense_mode
    tx = torch.from_numpy(x)

    def run_graphconv():
        return gc_model.executor("cpu").run(x)

    def run_torch():
        with torch.no_grad():
            return model(tx).numpy()

    def run_ort():
        return session.run(None, {name: x})[0]

    outs = [run_graphconv(), run_torch(), run_ort()]
    ref = outs[1].reshape(outs[0].shape)
    for other in (outs[0], outs[2].reshape(outs[0].shape)):
        np.testing.assert_allclose(other, ref, rtol=2e-3, atol=2e-3 * float(np.abs(ref).max()))
    times = {"graphconv": [], "PyTorch": [], "onnxruntime": []}
    for _ in range(repeats):
        for key, fn in (("graphconv", run_graphconv), ("PyTorch", run_torch), ("onnxruntime", run_ort)):
            times[key].append(rested_run(fn))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    gflop = batch * total_flops(gc_model.graph, (size, size)) / 1e9
    return (f"| {title} | {size} | {'x'.join(map(str, outs[0].shape[2:]))} | {gflop:.2f} | "
            f"{med['graphconv']:.1f} | {med['PyTorch']:.1f} | {med['onnxruntime']:.1f} | "
            f"{med['graphconv'] / med['PyTorch']:.2f} | {med['graphconv'] / med['onnxruntime']:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"any of {', '.join(NETWORKS)}")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/README.md")
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    torch = load_torch(threads)
    import onnxruntime as ort

    from graphconv.compiler import compile_model
    from graphconv.dense import MOST_CROPS_PER_BATCH, crops_per_batch
    from graphconv.frontends import load_network
    from graphconv.pass_manager import CLASSIFIER_PIPELINE
    from graphconv.frontends.onnx_export import save_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    folder = Path(tempfile.mkdtemp())
    rows = []
    for key in args.networks.split(","):
        name, build, kind = NETWORKS[key]
        model = build(torch)
        onnx_path = folder / f"{key}.onnx"
        axes = {0: "n", 2: "h", 3: "w"} if kind == "segmentation" else {0: "n"}
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(onnx_path), dynamo=False,
                              opset_version=17, input_names=["x"], dynamic_axes={"x": axes},
                              do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
        if kind == "segmentation":
            mapper = compile_model(load_network(onnx_path, crop_size=(224, 224), task="segmentation"))
            cases = [(f"{name} segmentation", SEGMENTATION_SIZE, mapper, onnx_path, False, 1)]
        else:
            classifier = compile_model(load_network(onnx_path), CLASSIFIER_PIPELINE)
            cases = [(f"{name} classifier", 224, classifier, onnx_path, False, 1)]
        if kind == "slides":
            dense = compile_model(onnx_path)
            dense_onnx = folder / f"{key}_fcn.onnx"
            save_onnx(dense.graph, dense_onnx)
            cases.append((f"{name} dense (FCN)", 448, dense, dense_onnx, True, 1))
        elif kind == "gated":
            batch = crops_per_batch(classifier, MOST_CROPS_PER_BATCH)
            cases.append((f"{name} crops ({batch} a batch)", 224, classifier, onnx_path, False, batch))
        for title, size, gc_model, onnx_file, dense_mode, batch in cases:
            rows.append(compare(title, size, gc_model, onnx_file, dense_mode, model, torch, ort, options, args.repeats,
                                batch))
            print(rows[-1], flush=True)

    text = "\n".join([
        "## Classifiers from ONNX: graphconv vs PyTorch vs onnxruntime (`onnx_models.py`)",
        "",
        f"{threads_text(threads)} everywhere, {machine()}, batch 1 (but for the crops row), float32, medians of "
        f"{args.repeats} "
        f"alternating runs; PyTorch {torch.__version__}, onnxruntime {ort.__version__}. The dense rows run "
        "the network graphconv compiled (batch norm and layer scales folded, global pooling -> 7x7 window, "
        "fc -> conv); "
        "PyTorch runs the same conversion written by hand, onnxruntime the ONNX file `graphconv export` "
        "wrote from it. The segmentation row runs the network as exported (dynamic sides) on all three, "
        "graphconv's imported with `--task segmentation`. Outputs agree (checked first).",
        "",
        "| network | input | map | GFLOP | graphconv ms | PyTorch ms | onnxruntime ms | graphconv / PyTorch | "
        "graphconv / onnxruntime |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ])
    print(text)
    if args.write:
        write_section("onnx_models", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
