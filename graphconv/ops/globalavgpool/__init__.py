"""globalavgpool: the mean of each channel over its whole map (torch adaptive_avg_pool2d to
1x1, ONNX GlobalAveragePool), how ResNet-style classifiers end.

Its output is (C, 1, 1) whatever the input size, so as it stands it would stop a network
from sliding over a larger image: the `global-pool-to-window` pass turns it into an
avgpool whose window is its input at the crop size, stride 1 (the FC->CONV idea for the
pool). Its `window` is the whole input for the same reason an fc's is: receptive-field
analysis must see that one output cell looks at every input cell.
"""
from __future__ import annotations

import numpy as np

from graphconv.ops.registry import Example, OpDef, Window, numel, onnx_as, register


def window(params: dict, shapes) -> Window:
    _, h, w = shapes[0]
    return Window((h, w), (1, 1), (0, 0), (1, 1))


def reference(params: dict, weights: dict, inputs: list[np.ndarray]) -> np.ndarray:
    return inputs[0].astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(np.float32)


def torch_equivalent(params: dict, weights: dict, inputs: list):
    import torch.nn.functional as F
    return F.adaptive_avg_pool2d(inputs[0], 1)


register(OpDef(
    name="globalavgpool", doc="mean of each channel over the whole map, output C x 1 x 1",
    params=(), shape=lambda params, shapes: (shapes[0][0], 1, 1), reference=reference,
    flops=lambda params, shapes, out: numel(shapes[0]) + numel(out),  # the sums, one divide each
    package=__name__, window=window, torch=torch_equivalent, onnx=onnx_as("GlobalAveragePool"),
    sees_whole_input=("global-pool-to-window", "a global pool averages the whole image into one cell"),
    channels_last="any",  # its C x 1 x 1 output is the same memory either way
    examples=(
        Example({}, [(3, 4, 5)]),
        Example({}, [(2, 9, 11)]),  # more pixels than a CUDA block has threads
        Example({}, [(4, 1, 1)], batch=1),
    ),
))
