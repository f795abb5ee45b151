"""CUDA depthwise convs (one input channel per group: MobileNet, EfficientNet, ConvNeXt):
one thread per output element, its taps summed in registers.

The implicit GEMM (`gemm_cuda`) runs a grouped conv group by group, in tiles of 64
output channels or more, so a depthwise layer (one output channel a group) would fill
one row of each tile and leave the rest idle. A depthwise output reads only kh x kw
inputs: there is no reuse for a GEMM to exploit, and neighbouring threads (neighbouring
columns) read neighbouring inputs, so the loads coalesce.
"""
from __future__ import annotations

from numba import cuda

from graphconv.ops.activations.cuda import activate
from graphconv.ops.cuda_launch import BoundLaunches, KernelCall, grid_1d, unravel_nchw


@cuda.jit
def _depthwise(x, w, bias, sh, sw, ph, pw, dh, dw, residual, act, res, out):
    i = cuda.grid(1)
    n, c, height, width = x.shape
    _, o, ho, wo = out.shape
    if i >= n * o * ho * wo:
        return
    b, oc, oy, ox = unravel_nchw(i, o, ho, wo)
    ci = oc // (o // c)
    kh, kw = w.shape[1], w.shape[2]
    acc = bias[oc]
    for ky in range(kh):
        iy = oy * sh - ph + ky * dh
        if 0 <= iy < height:
            for kx in range(kw):
                ix = ox * sw - pw + kx * dw
                if 0 <= ix < width:
                    acc += w[oc, ky, kx] * x[b, ci, iy, ix]
    if residual:
        acc += res[b, oc, oy, ox]
    out[b, oc, oy, ox] = activate(acc, act)


class DepthwiseLayer(BoundLaunches):
    """A depthwise conv bound to the GPU: weights as (O, kh, kw), bias, geometry."""

    def __init__(self, weight_dw, bias, stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], act: int):
        super().__init__(self.kernel_launches)
        self.weight_dw, self.bias, self.act = weight_dw, bias, act
        self.geometry = (*stride, *padding, *dilation)

    def kernel_launches(self, inputs: list, out) -> list[KernelCall]:
        residual = inputs[1] if len(inputs) == 2 else out  # unread without one
        return [(_depthwise, grid_1d(out.size),
                 (inputs[0], self.weight_dw, self.bias, *self.geometry, len(inputs) == 2, self.act, residual, out))]
