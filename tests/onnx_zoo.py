"""Small PyTorch classifiers built like the torchvision architectures users bring
(AlexNet, VGG with batch norm, ResNet, SqueezeNet, MobileNetV2, DenseNet, GoogLeNet,
ConvNeXt, ShuffleNetV2, EfficientNet, MobileNetV3, Darknet, anti-aliased pooling,
HRNet, TResNet, PoolFormer, ConvNeXt V2, ResNeSt, SKNet, CBAM, ECA, GeM pooling, a
cosine-similarity head), for the ONNX import tests. torchvision is not needed: each keeps
the structure that matters to an importer (batch norm after conv and after concat, residual adds,
depthwise convs, ReLU6, LeakyReLU, PReLU, reflect and edge padding, ceil-mode pooling,
four-branch concats, global pooling, flatten, nearest and bilinear upsampling,
space-to-depth, GroupNorm, GRN, split attention and selective kernels, CBAM's channel and
spatial attention, F.normalize) at a size that exports and runs in well under a second.

EfficientNet and MobileNetV3 have squeeze-and-excitation gates, ResNeSt and SKNet
split-attention and selective-kernel gates, CBAM and ECA channel-attention gates, and PoolFormer and
ConvNeXt V2 normalise by statistics of whole maps, which cannot slide (see passes/global_pool_to_window.py): they
are in ZOO, for the classifier tests, but not in SLIDING, and have no `dense` form. Every model in SLIDING has a `dense` flag: False is the classifier as trained; True is the same
network converted by hand, in PyTorch, the way graphconv's passes convert it (global
average pooling -> average pooling with the crop's window at stride 1; each Linear ->
a convolution). The tests compare graphconv's compiled map against that."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so folding them is
    really exercised (fresh ones are the identity in eval mode), and every LayerNorm
    non-trivial affine terms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
            elif isinstance(module, nn.LayerNorm):  # ConvNeXt's, fresh: the identity too
                shape = module.normalized_shape
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
    return model.eval()


class Head(nn.Module):
    """Global average pooling, flatten, Linear: how modern classifiers end. Dense: an
    average pool of the crop's final map size at stride 1, and the Linear as a 1x1 conv."""

    def __init__(self, channels: int, classes: int, window: int, dropout: float = 0.0):
        super().__init__()
        self.window = window
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x, dense: bool = False):
        if dense:
            x = F.avg_pool2d(x, self.window, stride=1)
            return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


def linear_as_conv(fc: nn.Linear, x: torch.Tensor, in_shape) -> torch.Tensor:
    """A Linear over a C x H x W map as the convolution with an H x W kernel."""
    return F.conv2d(x, fc.weight.reshape(fc.out_features, *in_shape), fc.bias)


class AlexNetSmall(nn.Module):
    crop = 67

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(8, 12, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.map = (12, 3, 3)
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(12 * 3 * 3, 16), nn.ReLU(inplace=True),
                                        nn.Linear(16, classes))

    def forward(self, x, dense: bool = False):
        x = self.features(x)
        if dense:
            x = F.relu(linear_as_conv(self.classifier[1], x, self.map))
            return linear_as_conv(self.classifier[3], x, (16, 1, 1))
        return self.classifier(torch.flatten(x, 1))


class VGGBNSmall(nn.Module):
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        layers, channels = [], 3
        for width in (8, "M", 16, "M", 16, 16, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.map = (16, 4, 4)
        self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 24), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(24, classes))

    def forward(self, x, dense: bool = False):
        x = self.features(x)
        if dense:
            x = F.relu(linear_as_conv(self.classifier[0], x, self.map))
            return linear_as_conv(self.classifier[3], x, (24, 1, 1))
        return self.classifier(x.view(x.size(0), -1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetSmall(nn.Module):
    crop = 64

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.layer3 = nn.Sequential(BasicBlock(16, 16, 2))
        self.head = Head(16, classes, window=4)

    def forward(self, x, dense: bool = False):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.head(self.layer3(self.layer2(self.layer1(x))), dense)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNetSmall(nn.Module):
    """SqueezeNet 1.1's shape: ceil-mode max pooling, Fire concats, a conv classifier."""

    crop = 47

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(8, 4, 8), Fire(16, 4, 8), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 6, 12))
        self.final_conv = nn.Conv2d(24, classes, 1)
        self.window = 5

    def forward(self, x, dense: bool = False):
        x = F.relu(self.final_conv(self.features(x)))
        if dense:
            return F.avg_pool2d(x, self.window, stride=1)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Small(nn.Module):
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)),
            InvertedResidual(8, 8, 1, 2), InvertedResidual(8, 12, 2, 3), InvertedResidual(12, 12, 1, 3),
            nn.Sequential(nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU6(inplace=True)))
        self.head = Head(24, classes, window=8, dropout=0.2)

    def forward(self, x, dense: bool = False):
        return self.head(self.features(x), dense)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseNetSmall(nn.Module):
    """DenseNet's shape: batch norm right after a concat (it cannot fold into a conv)."""

    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.norm0 = nn.BatchNorm2d(8)
        self.layers1 = nn.ModuleList([DenseLayer(8, 4), DenseLayer(12, 4)])
        self.transition = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                        nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2, 2))
        self.layers2 = nn.ModuleList([DenseLayer(8, 4), DenseLayer(12, 4)])
        self.norm5 = nn.BatchNorm2d(16)
        self.head = Head(16, classes, window=8)

    @staticmethod
    def block(layers, x):
        features = [x]
        for layer in layers:
            features.append(layer(features))
        return torch.cat(features, 1)

    def forward(self, x, dense: bool = False):
        x = F.relu(self.norm0(self.conv0(x)))
        x = self.block(self.layers2, self.transition(self.block(self.layers1, x)))
        return self.head(F.relu(self.norm5(x)), dense)


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int):
        super().__init__()
        self.branch1 = nn.Conv2d(cin, c1, 1)
        self.branch2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(True), nn.Conv2d(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(True), nn.Conv2d(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, pool, 1))

    def forward(self, x):
        return F.relu(torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1))


class GoogLeNetSmall(nn.Module):
    crop = 48

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(8, 4, 4, 6, 2, 4, 4)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(18, 6, 4, 8, 2, 4, 4)
        self.head = Head(22, classes, window=6, dropout=0.2)

    def forward(self, x, dense: bool = False):
        x = self.maxpool1(F.relu(self.conv1(x)))
        x = self.inception4a(self.maxpool3(self.inception3a(x)))
        return self.head(x, dense)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: a LayerNorm over each position's channels."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.layer_scale = nn.Parameter(torch.rand(channels, 1, 1) + 0.5)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXtSmall(nn.Module):
    """Channels-last LayerNorms and Linears, GELU, layer scale; a LayerNorm2d head."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), LayerNorm2d(8, eps=1e-6))
        self.stage1 = ConvNeXtBlock(8)
        self.downsample = nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, 2))
        self.stage2 = ConvNeXtBlock(16)
        self.norm = LayerNorm2d(16, eps=1e-6)
        self.fc = nn.Linear(16, classes)

    def forward(self, x, dense: bool = False):
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        if dense:
            x = self.norm(F.avg_pool2d(x, 4, stride=1))
            return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)
        return self.fc(torch.flatten(self.norm(F.adaptive_avg_pool2d(x, 1)), 1))


def channel_shuffle(x, groups: int, flatten: bool = False):
    """As torchvision writes it (the exporter's Reshape, Transpose, Reshape), or with
    `.flatten(1, 2)` back (TorchScript computes that Reshape's target from the Shape of
    the transposed 5-D view)."""
    n, c, h, w = x.size()
    grouped = x.view(n, groups, c // groups, h, w).transpose(1, 2)
    return grouped.flatten(1, 2) if flatten else grouped.contiguous().view(n, -1, h, w)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(True)) if relu else nn.Sequential(*layers)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, flatten_shuffle: bool = False):
        super().__init__()
        self.stride, self.flatten_shuffle = stride, flatten_shuffle
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, 2, cin, relu=False), conv_bn(cin, half, 1))
        inner = cin if stride == 2 else half
        self.branch2 = nn.Sequential(conv_bn(inner, half, 1), conv_bn(half, half, 3, stride, half, relu=False),
                                     conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2, self.flatten_shuffle)


class ShuffleNetSmall(nn.Module):
    """Channel shuffles (torchvision's, and one flattened back), chunks and a mean over H and W."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = conv_bn(3, 8, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1, flatten_shuffle=True))
        self.conv5 = conv_bn(16, 24, 1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x, dense: bool = False):
        x = self.conv5(self.stage2(self.maxpool(self.conv1(x))))
        if dense:
            return linear_as_conv(self.fc, F.avg_pool2d(x, 4, stride=1), (24, 1, 1))
        return self.fc(x.mean([2, 3]))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int, activation: nn.Module, gate: nn.Module):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation, self.gate = activation, gate

    def forward(self, x):
        return x * self.gate(self.fc2(self.activation(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class EfficientNetSmall(nn.Module):
    """SiLU everywhere, MBConv blocks with sigmoid squeeze-and-excitation gates."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2, relu=False), nn.SiLU())
        self.block1 = nn.Sequential(conv_bn(8, 16, 1, relu=False), nn.SiLU(),
                                    conv_bn(16, 16, 3, 1, 16, relu=False), nn.SiLU(),
                                    SqueezeExcite(16, 4, nn.SiLU(), nn.Sigmoid()), conv_bn(16, 8, 1, relu=False))
        self.block2 = nn.Sequential(conv_bn(8, 24, 1, relu=False), nn.SiLU(),
                                    conv_bn(24, 24, 3, 2, 24, relu=False), nn.SiLU(),
                                    SqueezeExcite(24, 6, nn.SiLU(), nn.Sigmoid()), conv_bn(24, 12, 1, relu=False))
        self.head = nn.Sequential(conv_bn(12, 16, 1, relu=False), nn.SiLU())
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.block2(x + self.block1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1))


class MobileNetV3Small(nn.Module):
    """Hardswish, squeeze-and-excitation gates with a Hardsigmoid, a two-Linear head."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2, relu=False), nn.Hardswish())
        self.block1 = nn.Sequential(conv_bn(8, 8, 3, 2, 8), SqueezeExcite(8, 4, nn.ReLU(), nn.Hardsigmoid()),
                                    conv_bn(8, 8, 1, relu=False))
        self.block2 = nn.Sequential(conv_bn(8, 16, 1, relu=False), nn.Hardswish(),
                                    conv_bn(16, 16, 3, 1, 16, relu=False), nn.Hardswish(),
                                    SqueezeExcite(16, 8, nn.ReLU(), nn.Hardsigmoid()), conv_bn(16, 8, 1, relu=False))
        self.head = nn.Sequential(conv_bn(8, 16, 1, relu=False), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(16, 20), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(20, classes))

    def forward(self, x):
        x = self.block1(self.stem(x))
        x = self.head(x + self.block2(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DarknetSmall(nn.Module):
    """Darknet/CSPDarknet's conv-bn-LeakyReLU(0.1) with residual blocks and a cross-stage
    concat, and PReLU (face-recognition ResNets): one slope per channel on a map, one
    shared slope after the first Linear."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()

        def conv_leaky(cin, cout, kernel, stride=1):
            return nn.Sequential(conv_bn(cin, cout, kernel, stride, relu=False), nn.LeakyReLU(0.1))

        self.stem = conv_leaky(3, 8, 3, 2)
        self.split1, self.split2 = conv_leaky(8, 8, 1), conv_leaky(8, 8, 1)
        self.block = nn.Sequential(conv_leaky(8, 4, 1), conv_leaky(4, 8, 3))
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.PReLU(16))
        self.fc1, self.act, self.fc2 = nn.Linear(16, 12), nn.PReLU(), nn.Linear(12, classes)
        with torch.no_grad():  # away from PyTorch's initial 0.25, some negative
            self.down[1].weight.uniform_(-0.5, 1.0)
            self.act.weight.fill_(-0.3)

    def forward(self, x, dense: bool = False):
        x = self.stem(x)
        a = self.split1(x)
        x = self.down(torch.cat([a + self.block(a), self.split2(x)], 1))
        if dense:
            x = F.avg_pool2d(x, self.crop // 4, stride=1)
            x = self.act(F.conv2d(x, self.fc1.weight[:, :, None, None], self.fc1.bias))
            return F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(self.act(self.fc1(x)))


class AntiAliasedSmall(nn.Module):
    """Anti-aliased pooling (Zhang 2019, `antialiased-cnns`): a max pool at stride 1, then
    a fixed [1, 2, 1] x [1, 2, 1] blur at stride 2 after a ReflectionPad2d; and a
    ReplicationPad2d before a conv."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 1)
        self.pool = nn.MaxPool2d(2, 1)
        self.blur_pad = nn.ReflectionPad2d(1)
        taps = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("blur", (taps[:, None] * taps[None, :] / 16).expand(8, 1, 3, 3).contiguous())
        self.edge_pad = nn.ReplicationPad2d((1, 2, 1, 2))
        self.conv = nn.Conv2d(8, 12, 3, 2)
        self.fc = nn.Linear(12, classes)

    def forward(self, x, dense: bool = False):
        x = self.pool(self.stem(x))
        x = F.conv2d(self.blur_pad(x), self.blur, stride=2, groups=8)
        x = F.relu(self.conv(self.edge_pad(x)))
        if dense:
            x = F.avg_pool2d(x, 9, stride=1)
            return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class HRNetSmall(nn.Module):
    """HRNet's shape: a high- and a low-resolution branch, the low one enlarged and added
    to the high one, by nn.Upsample's nearest (as timm's HRNet fuses its branches) and by
    bilinear interpolation (F.interpolate, align_corners=False). Its images must be a
    multiple of 4 pixels, so that the enlarged low branch meets the high one."""
    crop = 32
    multiple = 4

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2)
        self.low = nn.Sequential(conv_bn(8, 16, 3, 2), conv_bn(16, 16, 3))
        self.high = conv_bn(8, 8, 3)
        self.fuse_nearest = nn.Sequential(conv_bn(16, 8, 1, relu=False), nn.Upsample(scale_factor=2))
        self.fuse_bilinear = nn.Conv2d(16, 8, 1)
        self.final = conv_bn(8, 16, 3, 2)
        self.head = Head(16, classes, window=8)

    def forward(self, x, dense: bool = False):
        x = self.stem(x)
        low = self.low(x)
        bilinear = F.interpolate(self.fuse_bilinear(low), scale_factor=2, mode="bilinear", align_corners=False)
        x = F.relu(self.high(x) + self.fuse_nearest(low) + bilinear)
        return self.head(self.final(x), dense)


class PoolFormerSmall(nn.Module):
    """PoolFormer's shape (and BiT's normalisation): GroupNorm over whole maps, the
    exporters' Reshape/InstanceNormalization/Reshape/Mul/Add, and a token mixer that
    subtracts a map from its average pool. GroupNorm's statistics are the crop's, so the
    network cannot slide: a classifier only."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.GroupNorm(2, 8))
        self.norm1, self.norm2 = nn.GroupNorm(1, 8), nn.GroupNorm(1, 8)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp = nn.Sequential(nn.Conv2d(8, 16, 1), nn.GELU(), nn.Conv2d(16, 8, 1))
        self.head = Head(8, classes, window=8)
        with torch.no_grad():  # away from the fresh identity affine
            for norm in (self.stem[1], self.norm1, self.norm2):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm1(x)
        x = x + self.pool(y) - y
        return self.head(x + self.mlp(self.norm2(x)))


class TResNetSmall(nn.Module):
    """TResNet's space-to-depth stem as timm writes it (view, permute, view: each 4x4
    patch as 48 channels, blocks first), and the channels-first order pixel_unshuffle
    computes, written as such a view too. Its images must be a multiple of 8 pixels, as
    PyTorch's views need."""
    crop = 32
    multiple = 8

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(48, 16, 3)
        self.down = conv_bn(64, 16, 1)
        self.head = Head(16, classes, window=4)

    def forward(self, x, dense: bool = False):
        x = self.stem(self.space_to_depth(x, 4, (0, 3, 5, 1, 2, 4)))
        return self.head(self.down(self.space_to_depth(x, 2, (0, 1, 3, 5, 2, 4))), dense)

    @staticmethod
    def space_to_depth(x, block: int, perm):
        n, c, h, w = x.shape
        patches = x.view(n, c, h // block, block, w // block, block).permute(*perm)
        return patches.reshape(n, c * block * block, h // block, w // block)


class SplitAttention(nn.Module):
    """ResNeSt's split-attention conv as timm writes it: radix branches from one grouped
    conv, added, pooled, two 1x1 convs, a softmax across the branches (rSoftMax's view,
    transpose and flatten), and the branches added again, each weighted channel by channel."""

    def __init__(self, channels: int, radix: int = 2):
        super().__init__()
        self.radix = radix
        self.conv = conv_bn(channels, channels * radix, 3, groups=radix)
        self.fc1, self.fc2 = nn.Conv2d(channels, channels // 2, 1), nn.Conv2d(channels // 2, channels * radix, 1)

    def forward(self, x):
        x = self.conv(x)
        n, rc, h, w = x.shape
        x = x.reshape(n, self.radix, rc // self.radix, h, w)
        gap = x.sum(dim=1).mean((2, 3), keepdim=True)
        attn = self.fc2(F.relu(self.fc1(gap))).view(n, 1, self.radix, -1).transpose(1, 2)
        attn = F.softmax(attn, dim=1).reshape(n, -1).view(n, -1, 1, 1)
        return (x * attn.reshape(n, self.radix, rc // self.radix, 1, 1)).sum(dim=1)


class ResNeStSmall(nn.Module):
    """A ResNeSt bottleneck around one split-attention conv. Its attention is a gate of
    each crop's own averages, as squeeze-and-excitation's: a classifier only."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.block1 = SplitAttention(16)
        self.head = Head(16, classes, window=16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.block1(x))


class SelectiveKernel(nn.Module):
    """SKNet's selective kernel as timm writes it: two paths (a 3x3 and a dilated 3x3
    conv) stacked on a new axis, summed, pooled, two 1x1 convs, a softmax across the
    paths, and the paths weighted and summed."""

    def __init__(self, channels: int):
        super().__init__()
        self.paths = nn.ModuleList([conv_bn(channels, channels, 3), nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(channels), nn.ReLU())])
        self.fc_reduce = nn.Conv2d(channels, channels // 2, 1)
        self.fc_select = nn.Conv2d(channels // 2, 2 * channels, 1, bias=False)

    def forward(self, x):
        stacked = torch.stack([path(x) for path in self.paths], dim=1)
        attn = self.fc_select(F.relu(self.fc_reduce(stacked.sum(dim=1).mean((2, 3), keepdim=True))))
        attn = F.softmax(attn.view(x.shape[0], 2, x.shape[1], 1, 1), dim=1)
        return (stacked * attn).sum(dim=1)


class SKNetSmall(nn.Module):
    """A residual block around a selective kernel: a gate of each crop's own averages, so
    a classifier only."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.block1 = SelectiveKernel(16)
        self.head = Head(16, classes, window=16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.block1(x))


class GRN(nn.Module):
    """ConvNeXt V2's global response normalisation on a channels-last map, as written in
    its reference code: each channel's L2 norm over the map, over their mean."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(1, 1, 1, channels) + 0.5)
        self.beta = nn.Parameter(torch.randn(1, 1, 1, channels) * 0.1)

    def forward(self, x):
        norms = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        return self.gamma * (x * (norms / (norms.mean(dim=-1, keepdim=True) + 1e-6))) + self.beta + x


class ConvNeXtV2Small(nn.Module):
    """ConvNeXt V2's block: ConvNeXt's, with GRN after the GELU. GRN's norms are the crop's,
    so, like a squeeze-and-excitation gate, it makes the network a classifier only."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), LayerNorm2d(8, eps=1e-6))
        self.dwconv = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8, eps=1e-6)
        self.pwconv1, self.grn, self.pwconv2 = nn.Linear(8, 32), GRN(32), nn.Linear(32, 8)
        self.head = Head(8, classes, window=8)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(y)))).permute(0, 3, 1, 2)
        return self.head(x + y)


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: each position's max and mean over the channels, a 7x7
    conv of the two, and the map times its sigmoid. `amax` exports one ReduceMax;
    `x.max(dim=1)[0]` (CBAM's reference code) a ReduceMax too, with an ArgMax no one reads
    under the dynamo exporter."""

    def __init__(self, amax: bool = False):
        super().__init__()
        self.amax = amax
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x):
        most = x.amax(dim=1, keepdim=True) if self.amax else x.max(dim=1, keepdim=True)[0]
        return x * torch.sigmoid(self.conv(torch.cat([most, x.mean(dim=1, keepdim=True)], dim=1)))


class CBAMSmall(nn.Module):
    """A residual block with CBAM (channel attention from the map's average and max pooled
    through one MLP, then spatial attention): the channel gate is the crop's, so a
    classifier only."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.block1 = nn.Sequential(conv_bn(16, 16, 3), ChannelAttention(16), SpatialAttention())
        self.head = Head(16, classes, window=16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.block1(x))


class ChannelAttention(nn.Module):
    """CBAM's channel attention: one MLP on the average and on the max pooled map, summed."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, channels // 4, 1), nn.ReLU(), nn.Conv2d(channels // 4, channels, 1))

    def forward(self, x):
        return x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))


class ECA(nn.Module):
    """ECA attention: the pooled vector of channels convolved by a Conv1d across them,
    its sigmoid gating the map. `timm`: timm's EcaModule (a view to (N, 1, C), the conv,
    the sigmoid, a view back); else ECA's reference code (squeeze, transpose, conv,
    transpose, unsqueeze, then the sigmoid)."""

    def __init__(self, kernel: int = 3, timm: bool = True):
        super().__init__()
        self.timm = timm
        self.conv = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x):
        if self.timm:
            y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
            return x * torch.sigmoid(y).view(x.shape[0], -1, 1, 1).expand_as(x)
        y = self.conv(F.adaptive_avg_pool2d(x, 1).squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y).expand_as(x)


class ECASmall(nn.Module):
    """ECA-ResNet's blocks, one with each form of ECA: the gate is the crop's, so a
    classifier only."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.block1 = nn.Sequential(conv_bn(16, 16, 3), ECA(3))
        self.block2 = nn.Sequential(conv_bn(16, 16, 3), ECA(5, timm=False))
        self.head = Head(16, classes, window=16)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block1(x)
        return self.head(x + self.block2(x))


class SpatialAttentionSmall(nn.Module):
    """Convs gated by CBAM's spatial attention alone: each gate is of one position's
    channels and its 7x7 neighbourhood, so the network slides (the gate's 7x7 conv is
    padded: near the crop's border it sees zeros, as any padded conv)."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3), SpatialAttention(), nn.MaxPool2d(2), conv_bn(8, 16, 3),
                                      SpatialAttention(amax=True), nn.MaxPool2d(2))
        self.head = Head(16, classes, window=8)

    def forward(self, x, dense: bool = False):
        return self.head(self.features(x), dense=dense)


class GeMSmall(nn.Module):
    """Generalised-mean pooling (retrieval and pathology heads, timm's GeM): each value
    clamped above 0, to a learnt power p, average pooled, to the power 1 / p. Pointwise
    powers around a window pool: it slides as an average pool does."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 16, 3, 2))
        self.p = nn.Parameter(torch.tensor(3.0))
        self.fc = nn.Linear(16, classes)

    def forward(self, x, dense: bool = False):
        x = self.features(x).clamp(min=1e-6).pow(self.p)
        x = F.avg_pool2d(x, 8, stride=1) if dense else F.adaptive_avg_pool2d(x, 1)
        x = x.pow(1.0 / self.p)
        return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias) if dense else self.fc(x.flatten(1))


class CosineSmall(nn.Module):
    """A metric-learning classifier: each position's features scaled to unit length
    (F.normalize(x, dim=1): ReduceL2 over the channels, Clip, Expand, Div), pooled, scaled
    to unit length again and scored by cosine similarity with each class's normalised
    weight vector. A norm over the channels looks at one position, so it slides."""
    crop = 32

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = Head(16, classes, window=8)

    def forward(self, x, dense: bool = False):
        x = F.normalize(self.features(x), dim=1)
        if dense:
            x = F.normalize(F.avg_pool2d(x, self.head.window, stride=1), dim=1)
            return F.conv2d(x, F.normalize(self.head.fc.weight, dim=1)[:, :, None, None]) * 10.0
        x = F.normalize(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), dim=1)
        return F.linear(x, F.normalize(self.head.fc.weight, dim=1)) * 10.0


class UNetSmall(nn.Module):
    """A segmentation network, not a classifier: U-Net's two levels (conv, pool, conv, a
    ConvTranspose2d(kernel 2, stride 2) back up, the skip concatenated, conv, a 1x1 head),
    every conv padded, so its output is its input's size: one score vector per pixel."""
    crop = 32

    def __init__(self, classes: int = 3, up_kernel: int = 2):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, up_kernel, stride=2, padding=(up_kernel - 2) // 2)  # 2, or 4 overlapping
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        skip = self.enc1(x)
        deep = self.enc2(F.max_pool2d(skip, 2))
        return self.head(self.dec(torch.cat([self.up(deep), skip], dim=1)))


def randomize_features_norm(norm: nn.BatchNorm1d, seed: int = 0) -> nn.BatchNorm1d:
    """A BatchNorm1d with statistics and affine terms far from the identity, so a fold
    that dropped or misplaced one changes the scores."""
    generator = torch.Generator().manual_seed(seed)
    c = norm.num_features
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
        norm.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
        norm.weight.copy_(torch.rand(c, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(c, generator=generator) * 0.3)
    return norm


class FlatScaleSmall(nn.Module):
    """A per-feature constant scale between the flatten and the Linear (x.flatten(1) * w,
    w of C*H*W values, over a 4x6x6 map), which the importer makes a batchnorm over the
    flattened features: an unpadded network, so every cell of its map is its crop's."""
    crop = 15
    stride = 2

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=2)
        self.fc = nn.Linear(144, classes)
        self.register_buffer("scale", torch.linspace(0.5, 2, 144))

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1) * self.scale)


class FastaiHeadSmall(nn.Module):
    """fastai's create_head over an unpadded backbone: AdaptiveConcatPool2d (max and
    average pooled to 1x1, concatenated), Flatten, BatchNorm1d, Dropout, Linear, ReLU,
    BatchNorm1d, Dropout, Linear. The second BatchNorm1d follows a ReLU, so it can only
    fold into the Linear after it."""
    crop = 15
    stride = 2

    def __init__(self, classes: int = 5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), randomize_features_norm(nn.BatchNorm1d(16), 1), nn.Dropout(0.25),
                                  nn.Linear(16, 12), nn.ReLU(), randomize_features_norm(nn.BatchNorm1d(12), 2),
                                  nn.Dropout(0.5), nn.Linear(12, classes))

    def forward(self, x):
        x = self.body(x)
        pooled = torch.cat([F.adaptive_max_pool2d(x, 1), F.adaptive_avg_pool2d(x, 1)], dim=1)
        return self.head(pooled)


class FlatNormSmall(nn.Module):
    """Flatten, BatchNorm1d, Linear over a 6x4x4 map (a plain conv stack, no global pool):
    the batchnorm's 96 features are each channel at each of the 16 positions."""
    crop = 10
    stride = 2

    def __init__(self, classes: int = 5, relu_before_fc: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), randomize_features_norm(nn.BatchNorm1d(96)),
                                  nn.ReLU() if relu_before_fc else nn.Identity(), nn.Linear(96, classes))

    def forward(self, x):
        return self.head(self.body(x))


class CaffeAlexNetSmall(nn.Module):
    """The original (Caffe) AlexNet's layout: conv, ReLU, nn.LocalResponseNorm, max pool,
    twice, then convs and the Linear head; unpadded, so every cell of the map is its
    crop's. Neither exporter writes ONNX's LRN: both write F.local_response_norm out."""
    crop = 27
    stride = 8

    def __init__(self, classes: int = 5, size: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.LocalResponseNorm(size, alpha=0.02, beta=0.75, k=2.0),
            nn.MaxPool2d(2), nn.Conv2d(8, 12, 3), nn.ReLU(), nn.LocalResponseNorm(size - 1, alpha=0.5, k=1.5),
            nn.MaxPool2d(2, ceil_mode=False))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(12 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


ZOO = {cls.__name__.removesuffix("Small").lower(): cls
       for cls in (AlexNetSmall, VGGBNSmall, ResNetSmall, SqueezeNetSmall, MobileNetV2Small,
                   DenseNetSmall, GoogLeNetSmall, ConvNeXtSmall, ShuffleNetSmall, EfficientNetSmall,
                   MobileNetV3Small, DarknetSmall, AntiAliasedSmall, HRNetSmall, PoolFormerSmall,
                   ConvNeXtV2Small, TResNetSmall, ResNeStSmall, SKNetSmall, CosineSmall, CBAMSmall,
                   SpatialAttentionSmall, GeMSmall, ECASmall)}
# SE, split attention, selective kernel, CBAM's channel attention, ECA: classifiers only
GATED = ("efficientnet", "mobilenetv3", "resnest", "sknet", "cbam", "eca")
WHOLE_MAP = ("poolformer", "convnextv2")  # statistics of whole maps: classifiers only
SLIDING = [name for name in ZOO if name not in GATED + WHOLE_MAP]


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(ZOO[name](), seed)


def export(model: nn.Module, path, *, dynamo: bool = False, batch: int = 1, fold: bool = True,
           dynamic_hw: bool = False, opset: int = 17, dynamic_batch: bool = True) -> None:
    """torch.onnx.export through either exporter. `fold=False` keeps BatchNormalization
    nodes (TorchScript exporter: no constant folding), so graphconv's own folding is tested.
    The dynamo exporter fixes the batch at `batch`; the TorchScript one only without
    `dynamic_batch`."""
    import warnings

    x = torch.randn(batch, 3, model.crop, model.crop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dynamic = {"x": {2: "height", 3: "width"}} if dynamic_hw else None
            torch.onnx.export(Wrapped(model), (x,), str(path), dynamo=True, verbose=False,
                              input_names=["x"], dynamic_shapes=dynamic)
        else:
            axes = {"x": {**({0: "batch"} if dynamic_batch else {}), **({2: "height", 3: "width"} if dynamic_hw
                                                                          else {})}}
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["x"], output_names=["scores"], dynamic_axes=axes,
                              do_constant_folding=fold,
                              training=torch.onnx.TrainingMode.EVAL)


class Wrapped(nn.Module):
    """The classifier with a plain forward(x) (the dynamo exporter traces every argument)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)
